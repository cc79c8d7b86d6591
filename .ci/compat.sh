#!/usr/bin/env bash
# Compatibility check (issue 11): a model saved with the installed stack loads, with the same logits, through
# AutoModel and the multitask pipeline on other transformers releases (throwaway venvs over the installed torch), and
# training runs on the minimum versions declared in setup.cfg. Everything, pip's cache included, lives in one
# temporary folder that is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
work="$(mktemp -d "${TMPDIR:-/tmp}/mtst-compat.XXXXXX")"
trap 'rm -rf "$work"' EXIT
export PIP_CACHE_DIR="$work/pip-cache" HF_HOME="$work/hf-home" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export HF_HUB_DISABLE_PROGRESS_BARS=1 TRANSFORMERS_VERBOSITY=error
start=$SECONDS
python tests/compat/check_remote_code.py --workdir "$work/run" "$@"
rm -rf "$work"
echo "compat.sh: $((SECONDS - start)) s in all, the removal of the venvs included"
