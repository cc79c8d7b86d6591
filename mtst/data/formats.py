"""Data file formats: which format a file is read as (its extension, or the task's `format`), and compression."""

from __future__ import annotations

import bz2
import gzip
import lzma
import os

from datasets.packaged_modules import _EXTENSION_TO_MODULE

from mtst.data.errors import TaskConfigError
from mtst.remote.configuration_mtst import TOKEN_CLASSIFICATION as TOKEN

__all__ = ["COMPRESSIONS", "EXTENSIONS", "FORMATS", "file_format", "strip_compression"]

FORMATS = ("json", "csv", "tsv", "parquet", "conll")


def _known_extensions() -> dict[str, str]:
    """{extension: format}: datasets' own table (``.json``, ``.jsonl``, ``.csv``, ``.tsv``, ``.parquet``, ``.conll``,
    ...) for the formats we read as they are, plus the extensions it lacks or gives to another builder (``.txt`` is
    plain text to datasets; to a token task it is a CoNLL file, as are ``.iob`` and ``.bio``)."""
    known = {}
    for ext, (module, kwargs) in _EXTENSION_TO_MODULE.items():
        fmt = "tsv" if (module, kwargs) == ("csv", {"sep": "\t"}) else module
        if fmt in FORMATS and (not kwargs or fmt == "tsv"):  # not .conllu, whose comment lines need a builder option
            known[ext.lower()] = fmt
    return {**known, ".tab": "tsv", ".pq": "parquet", ".txt": "conll", ".iob": "conll", ".bio": "conll"}


EXTENSIONS = _known_extensions()


COMPRESSIONS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}


def strip_compression(path: str) -> tuple[str, str | None]:
    lower = path.lower()
    for ext in COMPRESSIONS:
        if lower.endswith(ext):
            return path[: -len(ext)], ext
    return path, None


def file_format(path: str, fmt: str | None, task_type: str | None) -> str:
    """The format of a data file: the task's ``format`` or the file's extension (a .gz/.bz2/.xz suffix is ignored)."""
    if fmt is not None:
        return fmt
    stem, _ = strip_compression(path)
    ext = os.path.splitext(stem)[1].lower()
    found = EXTENSIONS.get(ext)
    if found == "conll" and task_type not in (TOKEN, None):  # CoNLL files hold tokens and tags
        found = None
    if found is None:
        known = sorted(e for e, f in EXTENSIONS.items() if task_type in (TOKEN, None) or f != "conll")
        raise TaskConfigError(
            f"data file {path} has an unknown extension {ext or '(none)'!r}; known extensions: {', '.join(known)} "
            f"(optionally compressed: {', '.join(COMPRESSIONS)}), or set 'format' ({', '.join(FORMATS)})"
        )
    return found
