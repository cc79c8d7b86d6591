"""The documentation that is generated or quoted: docs/API.md matches the public API's docstrings, and every public
name is documented."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import mtst

ROOT = Path(__file__).resolve().parent.parent


def test_the_api_reference_is_up_to_date():
    result = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "make_api_reference.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_every_public_name_is_importable_and_documented():
    for name in mtst.__all__:
        obj = getattr(mtst, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert (obj.__doc__ or "").strip(), f"mtst.{name} has no docstring"
    assert sorted(dir(mtst)) == sorted(mtst.__all__)


def test_import_mtst_loads_no_torch():
    code = "import sys, mtst; print(mtst.__version__); assert not {'torch', 'transformers'} & set(sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == mtst.__version__
