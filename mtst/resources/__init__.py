"""The files MTST reads at run time besides its code: the model card template (`model_card.md`), the task configs
(`data/tasks/*.yaml`) and the sample data the default training run uses (`data/sample/<task>/...`).

They are package data of `mtst` (this folder), under the paths they have in a checkout, so every installation finds
them next to the installed code, never through the current folder. In a checkout, the design card's top-level names
`model_card.md`, `data/tasks` and `data/sample` are links to these files. The Inference Endpoints handler is code
that travels with the weights and lives with that code in `mtst/remote/`.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["DIRECTORY", "ResourceNotFoundError", "find", "path"]

DIRECTORY = Path(__file__).resolve().parent


class ResourceNotFoundError(FileNotFoundError):
    """A file that MTST ships is missing from this installation."""


def find(name: str) -> Path | None:
    """The shipped file `name` (its path in a checkout, e.g. `data/tasks/default.yaml`), or None when missing."""
    found = DIRECTORY / name
    return found if found.is_file() else None


def path(name: str) -> Path:
    """The shipped file `name`; a missing file raises `ResourceNotFoundError` naming where it was looked for."""
    found = find(name)
    if found is None:
        raise ResourceNotFoundError(
            f"The MTST file {name} is missing from this installation: looked for {DIRECTORY / name}. The mtst "
            "package ships it as package data; reinstall mtst (`pip install .` from the repository, or the wheel) to "
            "restore it."
        )
    return found
