"""The files MTST reads at run time besides its modules: the model card template, the Inference Endpoints handler,
the task configs and the sample data that the default training run uses.

Their single source is the repository root (`model_card.md`, `handler.py`, `data/tasks/`, `data/sample/`). A built
package (`pip install .`, `pip install git+...`, a wheel from `python -m build`) carries copies of them inside this
package, made by `setup.py` at build time, under the same relative paths (`mtst_resources/data/tasks/default.yaml`).
In a source checkout (an editable install, or the modules on `PYTHONPATH`) this package holds no copies and the files
are read from the checkout itself. Either way they are found from the installed code, never from the current folder.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

__all__ = ["RESOURCES", "ResourceNotFoundError", "candidates", "find", "path"]

# What a built package carries (glob patterns relative to the repository root); setup.py copies these, MANIFEST.in
# puts them in the sdist.
RESOURCES = ("model_card.md", "handler.py", "data/tasks/*.yaml", "data/sample/*/*")

_PACKAGE_DIR = Path(str(importlib.resources.files(__name__)))
_SOURCE_ROOT = _PACKAGE_DIR.parent


class ResourceNotFoundError(FileNotFoundError):
    """A file that MTST ships is missing from this installation."""


def _is_source_checkout() -> bool:
    """This package sits in a source checkout (next to setup.cfg and the modules), not in site-packages."""
    return (_SOURCE_ROOT / "setup.cfg").is_file() and (_SOURCE_ROOT / "modelcard_mtst.py").is_file()


def candidates(name: str) -> list[Path]:
    """Where `name` (a path relative to the repository root, e.g. `data/tasks/default.yaml`) is looked for, in
    order: the copy inside this package (built installs), then the source checkout this package belongs to."""
    found = [_PACKAGE_DIR / name]
    if _is_source_checkout():
        found.append(_SOURCE_ROOT / name)
    return found


def find(name: str) -> Path | None:
    """The shipped file `name` (relative to the repository root), or None when this installation lacks it."""
    return next((candidate for candidate in candidates(name) if candidate.is_file()), None)


def path(name: str) -> Path:
    """The shipped file `name`; a missing file raises `ResourceNotFoundError` naming every place looked in."""
    found = find(name)
    if found is None:
        raise ResourceNotFoundError(
            f"The MTST file {name} is missing from this installation: looked in "
            f"{' and '.join(str(c) for c in candidates(name))}. A built mtst package ships it in its mtst_resources "
            "folder and a source checkout has it at the repository root; reinstall mtst (`pip install .` from the "
            "repository, or the wheel) to restore it."
        )
    return found
