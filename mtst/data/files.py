"""Reading a task's raw data: its local files (checked for UTF-8, NUL bytes and emptiness before a `datasets` builder
parses them) or its Hub dataset, with errors naming the file, the line and the problem. `Locator` turns a row index
into a file and line number for the validation errors of `mtst.data.loading`.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import logging
import lzma
import os
from pathlib import Path
from typing import Any

import datasets

from mtst.data.errors import (
    HUB_ERRORS,
    TaskConfigError,
    TaskDataError,
    TaskFileNotFoundError,
    is_data_error,
    one_line,
    root_cause,
    short,
)
from mtst.data.formats import COMPRESSIONS, file_format, strip_compression
from mtst.data.tasks import PARQUET_EXPORT_REVISION, SPLITS, TaskSpec

logger = logging.getLogger(__name__)

__all__ = ["Locator", "load_raw", "open_stream"]

_CHECK_LIMIT = 64 * 1024 * 1024  # bytes of (decompressed) text checked for NUL bytes and UTF-8 before loading


def _resolve_path(spec: TaskSpec, path: str) -> Path:
    """Resolve a data file: as given (absolute, or relative to the current directory), else relative to the config
    file's folder. A missing file raises ``TaskFileNotFoundError`` naming every path tried."""
    candidate = Path(path).expanduser()
    tried = [candidate.absolute()]
    if candidate.exists():
        return candidate
    if not candidate.is_absolute() and spec.base_dir is not None:
        other = Path(os.path.normpath(Path(spec.base_dir) / candidate))
        if other.exists():
            return other
        tried.append(other.absolute())
    raise TaskFileNotFoundError(
        f"Task '{spec.name}': data file {path!r} not found; tried {', '.join(str(t) for t in tried)}. Relative paths "
        "are resolved against the current directory, then against the task config's folder."
    )


def _open_binary(path: Path):
    _, compression = strip_compression(str(path))
    return COMPRESSIONS[compression](path, "rb") if compression else open(path, "rb")


def _check_file(spec: TaskSpec, path: Path, fmt: str) -> None:
    """Refuse directories, empty, binary and non-UTF-8 files before a builder sees them."""
    where = f"Task '{spec.name}': data file {path}"
    if path.is_dir():
        raise TaskDataError(f"{where} is a directory, not a file.")
    if path.stat().st_size == 0:
        raise TaskDataError(f"{where} is empty (0 bytes).")
    if fmt == "parquet":
        with open(path, "rb") as f:
            head = f.read(4)
            f.seek(max(0, path.stat().st_size - 4))
            tail = f.read(4)
        if path.stat().st_size < 12 or head != b"PAR1" or tail != b"PAR1":
            raise TaskDataError(f"{where} is not a parquet file (the PAR1 magic bytes are missing); unreadable.")
        return
    decoder = codecs.getincrementaldecoder("utf-8")()
    seen, line, nonblank = 0, 1, False
    try:
        with _open_binary(path) as f:
            while seen < _CHECK_LIMIT:
                chunk = f.read(1 << 20)
                if not chunk:
                    try:
                        decoder.decode(b"", final=True)
                    except UnicodeDecodeError as err:
                        raise TaskDataError(f"{where} is not valid UTF-8 (it ends inside a character).") from err
                    break
                if b"\x00" in chunk:
                    at = seen + chunk.index(b"\x00")
                    line += chunk[: chunk.index(b"\x00")].count(b"\n")
                    raise TaskDataError(
                        f"{where} looks binary (NUL byte at offset {at}, line {line}); expected a UTF-8 {fmt} file."
                    )
                try:
                    text = decoder.decode(chunk)
                except UnicodeDecodeError as err:
                    line += chunk[: err.start].count(b"\n")
                    raise TaskDataError(
                        f"{where} is not valid UTF-8 (byte {chunk[err.start : err.start + 1]!r} at offset "
                        f"{seen + err.start}, line {line}); re-encode it as UTF-8."
                    ) from err
                nonblank = nonblank or bool(text.strip())
                line += chunk.count(b"\n")
                seen += len(chunk)
    except (OSError, EOFError, lzma.LZMAError) as err:
        raise TaskDataError(f"{where} could not be read: {err}.") from err
    if not nonblank and seen < _CHECK_LIMIT:
        raise TaskDataError(f"{where} is empty (no text besides whitespace).")


def _sniff_conll_columns(path: Path) -> int:
    with _open_binary(path) as raw, io.TextIOWrapper(raw, encoding="utf-8") as f:
        for line in f:
            if line.strip() and not line.startswith("-DOCSTART-"):
                return len(line.split())
    return 0


class Locator:
    """Maps a 0-based example index of a file to a place a person can find: 'line 7', 'row 3', 'sentence 2 (line 9)'.

    Line numbers are computed lazily (only when there is a problem to report) by scanning the file the same way the
    builder splits it; the file is never parsed here."""

    def __init__(self, path: Path | None, fmt: str, origin: str, csv_sep: str = ","):
        self.path, self.fmt, self.origin, self.csv_sep = path, fmt, origin, csv_sep
        self._lines: list[int] | None = None
        self._kind: str | None = None

    def _scan(self) -> None:
        self._lines, self._kind = [], "row"
        if self.path is None or self.fmt == "parquet":
            return
        try:
            with _open_binary(self.path) as raw, io.TextIOWrapper(raw, encoding="utf-8", newline="") as f:
                if self.fmt == "json":
                    first = ""
                    lines = []
                    for number, line in enumerate(f, 1):
                        if line.strip():
                            first = first or line.lstrip()[:1]
                            lines.append(number)
                    if first == "[":
                        self._kind = "record"
                    else:
                        self._lines, self._kind = lines, "line"
                elif self.fmt in ("csv", "tsv"):
                    reader = csv.reader(f, delimiter=self.csv_sep)
                    header, prev = True, 0
                    for row in reader:
                        start, prev = prev + 1, reader.line_num
                        if not row:
                            continue
                        if header:
                            header = False
                            continue
                        self._lines.append(start)
                    self._kind = "line"
                elif self.fmt == "conll":
                    inside = False
                    for number, line in enumerate(f, 1):
                        if not line.strip():
                            inside = False
                        elif line.startswith("-DOCSTART-"):
                            continue
                        elif not inside:
                            self._lines.append(number)
                            inside = True
                    self._kind = "sentence"
        except (OSError, UnicodeDecodeError, csv.Error):
            self._lines, self._kind = [], "row"

    def __call__(self, index: int) -> str:
        if self._kind is None:
            self._scan()
        if self._kind == "sentence":
            line = f" (line {self._lines[index]})" if index < len(self._lines) else ""
            return f"{self.origin}, sentence {index + 1}{line}"
        if self._kind == "line" and index < len(self._lines):
            return f"{self.origin}, line {self._lines[index]}"
        return f"{self.origin}, {self._kind if self._kind != 'line' else 'row'} {index + 1}"


def _json_problem(path: Path) -> str | None:
    """Where a JSON or JSON-lines file breaks, as 'line N: <reason>' (parsed line by line; error path only)."""
    try:
        with _open_binary(path) as raw, io.TextIOWrapper(raw, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError, EOFError, lzma.LZMAError):
        return None
    lines = [(number, line) for number, line in enumerate(text.splitlines(), 1) if line.strip()]
    if lines and lines[0][1].lstrip().startswith("["):
        try:  # one JSON array per line (JSON lines), or one array of records spread over lines
            json.loads(lines[0][1])
        except json.JSONDecodeError:
            try:
                json.loads(text)
            except json.JSONDecodeError as err:
                return f"line {err.lineno}: {err.msg} (column {err.colno})"
            return None
    for number, line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            return f"line {number}: {err.msg} (column {err.colno}) in {short(line, 60)}"
        if not isinstance(record, dict):
            return f"line {number}: a JSON {type(record).__name__}, not an object of column values"
    return None


class _DropBuilderErrors(logging.Filter):
    """The json/csv builders log an error before raising it; the raised error is reported once, as TaskDataError."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR


_BUILDER_LOGGERS = ("datasets.packaged_modules.json.json", "datasets.packaged_modules.csv.csv")


def _builder(spec: TaskSpec, path: Path, fmt: str) -> tuple[str, dict[str, Any]]:
    """The `datasets` builder reading a file of this format, and its arguments."""
    kwargs: dict[str, Any] = {}
    builder = fmt
    if fmt in ("csv", "tsv"):
        builder = "csv"
        kwargs.update(sep="\t" if fmt == "tsv" else ",", keep_default_na=False, na_filter=False)
    elif fmt == "conll":
        if "conll" not in getattr(datasets.packaged_modules, "_PACKAGED_DATASETS_MODULES", {"conll": None}):
            raise TaskConfigError(
                f"Task '{spec.name}': reading CoNLL file {path} needs the `conll` builder of datasets, which datasets "
                f"{datasets.__version__} lacks; upgrade datasets (5.2 has it) or convert the file to jsonl."
            )
        columns = spec.conll_columns
        if columns is None:
            n = _sniff_conll_columns(path)
            if n < 2:
                raise TaskDataError(
                    f"Task '{spec.name}': CoNLL file {path} has {n} column(s) on its first line; expected a token "
                    "column and a tag column (set conll_columns to name them)."
                )
            middle = ["pos_tags", "chunk_tags"] if n == 4 else [f"column_{i}" for i in range(1, n - 1)]
            columns = [spec.tokens_column, *middle, spec.tags_column]
        kwargs["column_names"] = list(columns)
    return builder, kwargs


def _load_file(spec: TaskSpec, path: Path, fmt: str, cache_dir: str | None) -> tuple[datasets.Dataset, Locator]:
    _check_file(spec, path, fmt)
    builder, kwargs = _builder(spec, path, fmt)
    quiet = _DropBuilderErrors()
    for name in _BUILDER_LOGGERS:
        logging.getLogger(name).addFilter(quiet)
    try:
        ds = datasets.load_dataset(
            builder, data_files={"train": str(path)}, split="train", cache_dir=cache_dir, **kwargs
        )
    except Exception as err:  # a builder's error, e.g. JSON parse error, ragged CSV, unreadable parquet
        if not is_data_error(err):  # a bug (ours or the library's) keeps its traceback
            raise
        cause = root_cause(err)
        if "corresponds to no data" in str(cause):
            raise TaskDataError(f"Task '{spec.name}': data file {path} contains no examples.") from err
        where = _json_problem(path) if fmt == "json" else None
        reason = where if where else f"{type(cause).__name__}: {one_line(cause)}"
        raise TaskDataError(f"Task '{spec.name}': data file {path} could not be read as {fmt}: {reason}.") from err
    finally:
        for name in _BUILDER_LOGGERS:
            logging.getLogger(name).removeFilter(quiet)
    if len(ds) == 0:
        raise TaskDataError(f"Task '{spec.name}': data file {path} contains no examples.")
    locator = Locator(path, fmt, f"file {path}", csv_sep="\t" if fmt == "tsv" else ",")
    return ds, locator


def _hub_load_problem(spec: TaskSpec, name: str, at: str, err: BaseException) -> str:
    """Why a Hub dataset could not be loaded, in one paragraph: a missing repo or revision says where it looked and
    which revisions exist; anything else gives the underlying error."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    chain: list[BaseException] = []  # err and its causes, as Python would print them (`from None` ends it)
    while err is not None and all(err is not e for e in chain):
        chain.append(err)
        err = err.__cause__ if err.__cause__ is not None or err.__suppress_context__ else err.__context__
    head = f"Task '{spec.name}': dataset {name}"
    if any(isinstance(e, RevisionNotFoundError) for e in chain):
        try:
            refs = HfApi().list_repo_refs(spec.dataset, repo_type="dataset")
            groups = [("branches", refs.branches), ("tags", refs.tags), ("parquet export", refs.converts)]
            exists = "; ".join(f"{kind}: {', '.join(r.name for r in found)}" for kind, found in groups if found)
            exists = f" It has {exists}." if exists else ""
        except HUB_ERRORS:  # the listing is a courtesy; the missing revision is the error
            exists = ""
        return (
            f"{head} has no revision '{spec.revision}' on the Hub ({constants.ENDPOINT}).{exists} Set `revision:` "
            "to a branch, a tag or a commit sha of the dataset."
        )
    if any(isinstance(e, (RepositoryNotFoundError, datasets.exceptions.DatasetNotFoundError)) for e in chain):
        return (
            f"{head}{at} was not found on the Hub ({constants.ENDPOINT}): {one_line(chain[-1])} Check the "
            "`dataset:` value (`owner/name`); a private or gated dataset needs a token with access (log in with "
            "`hf auth login` or set HF_TOKEN)."
        )
    cause = chain[-1]
    return f"{head}{at} could not be loaded: {type(cause).__name__}: {one_line(cause)}"


def _hub_names(spec: TaskSpec) -> tuple[str, str, str | None, dict[str, Any]]:
    """(the dataset's name for messages, ' at revision ...', the config to load, extra load_dataset arguments)."""
    name = spec.dataset + (f" ({spec.dataset_config})" if spec.dataset_config else "")
    at = f" at revision {spec.revision}" if spec.revision else ""
    config, kwargs = spec.dataset_config, {}
    if spec.revision == PARQUET_EXPORT_REVISION and spec.dataset_config:
        # The Hub's parquet export keeps each config in a folder of its own ({config}/{split}/NNNN.parquet) and no
        # card naming the configs, so datasets sees one 'default' config there: read the config's folder instead.
        config, kwargs = None, {"data_dir": spec.dataset_config}
    return name, at, config, kwargs


def open_stream(spec: TaskSpec, split: str, cache_dir: str | None) -> datasets.IterableDataset | None:
    """A split of the task's files or Hub dataset as a `datasets` stream (nothing downloaded or held beyond what is
    read); None when the task has no such split."""
    try:
        if spec.data_files is not None:
            paths = [_resolve_path(spec, path) for path in spec.data_files.get(split, [])]
            if not paths:
                return None
            fmts = {file_format(str(path), spec.format, spec.type) for path in paths}
            if len(fmts) > 1 or "conll" in fmts:
                raise TaskConfigError(
                    f"Task '{spec.name}': a streamed split needs files of one format among json, csv, tsv and "
                    f"parquet; its {split} files are {', '.join(sorted(fmts))} (convert CoNLL files to jsonl)."
                )
            for path in paths:
                _check_file(spec, path, next(iter(fmts)))
            builder, kwargs = _builder(spec, paths[0], next(iter(fmts)))
            files = {split: [str(path) for path in paths]}
            return datasets.load_dataset(builder, data_files=files, split=split, streaming=True, **kwargs)
        name, at, config, kwargs = _hub_names(spec)
        splits = datasets.get_dataset_split_names(spec.dataset, config, revision=spec.revision, **kwargs)
        if split not in splits:
            return None
        return datasets.load_dataset(
            spec.dataset, config, split=split, revision=spec.revision, streaming=True, cache_dir=cache_dir, **kwargs
        )
    except Exception as err:
        if not is_data_error(err) or spec.data_files is not None:
            raise
        raise TaskDataError(_hub_load_problem(spec, name, at, err)) from err


def _streamed_eval_splits(spec: TaskSpec, splits, cache_dir: str | None) -> dict[str, list]:
    """A streaming Hub task's evaluation splits, read through its stream into memory (they are the small ones)."""
    raw = {}
    for split in splits:
        stream = open_stream(spec, split, cache_dir)
        if stream is not None:
            ds = datasets.Dataset.from_list(list(stream), features=stream.features)
            name, _, _, _ = _hub_names(spec)
            raw[split] = [(ds, Locator(None, "hub", f"dataset {name}, split '{split}'"))]
    return raw


def load_raw(
    spec: TaskSpec, cache_dir: str | None, splits=SPLITS
) -> dict[str, list[tuple[datasets.Dataset, Locator]]]:
    """{split: [(raw dataset, locator) per file]} for the task's files or Hub dataset (of `splits` only)."""
    raw: dict[str, list[tuple[datasets.Dataset, Locator]]] = {}
    if spec.data_files is not None:
        for split in splits:
            for path in spec.data_files.get(split, []):
                fmt = file_format(path, spec.format, spec.type)
                resolved = _resolve_path(spec, path)
                raw.setdefault(split, []).append(_load_file(spec, resolved, fmt, cache_dir))
        return raw
    if "train" not in splits:
        return _streamed_eval_splits(spec, splits, cache_dir)
    name, at, config, kwargs = _hub_names(spec)
    try:
        dsd = datasets.load_dataset(spec.dataset, config, revision=spec.revision, cache_dir=cache_dir, **kwargs)
    except Exception as err:
        if not is_data_error(err):  # a bug (ours or the library's) keeps its traceback
            raise
        raise TaskDataError(_hub_load_problem(spec, name, at, err)) from err
    if "train" not in dsd:
        raise TaskDataError(
            f"Task '{spec.name}': dataset {name}{at} has no 'train' split (it has {', '.join(dsd)}); a train split "
            "is required."
        )
    for split in SPLITS:
        if split in dsd:
            raw[split] = [(dsd[split], Locator(None, "hub", f"dataset {name}, split '{split}'"))]
    return raw
