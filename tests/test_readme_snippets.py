"""The README's Python snippets that load a trained model folder, run as a user runs them: in a fresh process whose
stdin is a terminal (a pseudo-terminal), where a "Do you wish to run the custom code? [y/N]" prompt would wait."""

import os
import pty
import re
import subprocess
import sys
from pathlib import Path

from conftest import save_tiny_mtst

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "Do you wish to run the custom code"
TYPE_WARNING = "You are using a model of type"


def readme_block(heading: str) -> str:
    """The first ```python block of the README section under `heading`."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split(f"## {heading}\n", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def run_in_terminal(code: str, cwd: Path, timeout: float = 240) -> tuple[int, str]:
    """Run `code` with a pseudo-terminal on stdin (nothing is ever typed into it); returns (exit code, output)."""
    leader, follower = pty.openpty()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"}
    try:
        done = subprocess.run(
            [sys.executable, "-c", code],
            stdin=follower,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            timeout=timeout,
            text=True,
        )
    finally:
        os.close(follower)
        os.close(leader)
    return done.returncode, done.stdout


def test_use_the_trained_model_snippet_runs_without_prompt_or_warning(tmp_path):
    model = save_tiny_mtst(tmp_path / "model")
    code = readme_block("Use the trained model")
    assert 'path = "outputs/mtst-default"' in code
    code = code.replace('path = "outputs/mtst-default"', f"path = {str(model)!r}")
    code += "\nprint('SNIPPET-DONE', len(embeddings))\n"
    rc, out = run_in_terminal(code, tmp_path)
    assert rc == 0, out
    assert "SNIPPET-DONE 2" in out, out
    assert PROMPT not in out, out
    assert TYPE_WARNING not in out, out
