"""Reading a task's data for MTST: its files or Hub dataset, validation with clear errors, labels as ids.

``load_task_data(spec)`` reads the splits of a ``mtst.data.tasks.TaskSpec`` with ``datasets``' builders (``json``,
``csv``, ``parquet`` and ``conll``), checks every row and returns a ``DatasetDict`` whose sequence tasks have
``text`` (``text_pair``) and ``label`` and whose token tasks have ``tokens`` and ``tags``, labels as ids into
``spec.labels``. Bad data raises ``TaskDataError`` (a ``ValueError``) with one paragraph that names the task, the
file, the row and the offending value, unless ``drop_invalid=True``, which drops the bad rows, logs how many and
records the count in ``spec.dropped``.

The builders parse the files. This module reads a file itself only to check it before a builder sees it (UTF-8,
NUL bytes, empty), to count the columns of a CoNLL file, and, when there is a problem to report, to turn a row
index into a line number (``_Locator``) and to find the line where a JSON file breaks.
"""

from __future__ import annotations

import codecs
import csv
import difflib
import io
import json
import logging
import lzma
import os
import re
from pathlib import Path
from typing import Any

import datasets
import pyarrow.compute as pc

from mtst.data.tasks import (
    _COMPRESSIONS,
    PARQUET_EXPORT_REVISION,
    SPLITS,
    TaskConfigError,
    TaskDataError,
    TaskFileNotFoundError,
    TaskSpec,
    _file_format,
    _is_int,
    _one_line,
    _paragraph,
    _short,
    _split_tag,
    _strip_compression,
    repair_iob2,
    sort_labels,
)

logger = logging.getLogger(__name__)

__all__ = ["load_task_data"]

_CHECK_LIMIT = 64 * 1024 * 1024  # bytes of (decompressed) text checked for NUL bytes and UTF-8 before loading


# ----------------------------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------------------------


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
    _, compression = _strip_compression(str(path))
    return _COMPRESSIONS[compression](path, "rb") if compression else open(path, "rb")


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


class _Locator:
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


def _root_cause(err: BaseException) -> BaseException:
    seen = set()
    while id(err) not in seen:
        seen.add(id(err))
        nxt = err.__cause__ or err.__context__
        if nxt is None:
            break
        err = nxt
    return err


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
            return f"line {number}: {err.msg} (column {err.colno}) in {_short(line, 60)}"
        if not isinstance(record, dict):
            return f"line {number}: a JSON {type(record).__name__}, not an object of column values"
    return None


class _DropBuilderErrors(logging.Filter):
    """The json/csv builders log an error before raising it; the raised error is reported once, as TaskDataError."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR


_BUILDER_LOGGERS = ("datasets.packaged_modules.json.json", "datasets.packaged_modules.csv.csv")


def _load_file(spec: TaskSpec, path: Path, fmt: str, cache_dir: str | None) -> tuple[datasets.Dataset, _Locator]:
    _check_file(spec, path, fmt)
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
    quiet = _DropBuilderErrors()
    for name in _BUILDER_LOGGERS:
        logging.getLogger(name).addFilter(quiet)
    try:
        ds = datasets.load_dataset(
            builder, data_files={"train": str(path)}, split="train", cache_dir=cache_dir, **kwargs
        )
    except Exception as err:  # a builder's error, e.g. JSON parse error, ragged CSV, unreadable parquet
        cause = _root_cause(err)
        if "corresponds to no data" in str(cause):
            raise TaskDataError(f"Task '{spec.name}': data file {path} contains no examples.") from err
        where = _json_problem(path) if fmt == "json" else None
        reason = where if where else f"{type(cause).__name__}: {_one_line(cause)}"
        raise TaskDataError(f"Task '{spec.name}': data file {path} could not be read as {fmt}: {reason}.") from err
    finally:
        for name in _BUILDER_LOGGERS:
            logging.getLogger(name).removeFilter(quiet)
    if len(ds) == 0:
        raise TaskDataError(f"Task '{spec.name}': data file {path} contains no examples.")
    locator = _Locator(path, fmt, f"file {path}", csv_sep="\t" if fmt == "tsv" else ",")
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
        except Exception:  # the listing is a courtesy; the missing revision is the error
            exists = ""
        return (
            f"{head} has no revision '{spec.revision}' on the Hub ({constants.ENDPOINT}).{exists} Set `revision:` "
            "to a branch, a tag or a commit sha of the dataset."
        )
    if any(isinstance(e, (RepositoryNotFoundError, datasets.exceptions.DatasetNotFoundError)) for e in chain):
        return (
            f"{head}{at} was not found on the Hub ({constants.ENDPOINT}): {_one_line(chain[-1])} Check the "
            "`dataset:` value (`owner/name`); a private or gated dataset needs a token with access (log in with "
            "`hf auth login` or set HF_TOKEN)."
        )
    cause = chain[-1]
    return f"{head}{at} could not be loaded: {type(cause).__name__}: {_one_line(cause)}"


def _load_raw(spec: TaskSpec, cache_dir: str | None) -> dict[str, list[tuple[datasets.Dataset, _Locator]]]:
    """{split: [(raw dataset, locator) per file]} for the task's files or Hub dataset."""
    raw: dict[str, list[tuple[datasets.Dataset, _Locator]]] = {}
    if spec.data_files is not None:
        for split in SPLITS:
            for path in spec.data_files.get(split, []):
                fmt = _file_format(path, spec.format, spec.type)
                resolved = _resolve_path(spec, path)
                raw.setdefault(split, []).append(_load_file(spec, resolved, fmt, cache_dir))
        return raw
    name = spec.dataset + (f" ({spec.dataset_config})" if spec.dataset_config else "")
    at = f" at revision {spec.revision}" if spec.revision else ""
    config, kwargs = spec.dataset_config, {}
    if spec.revision == PARQUET_EXPORT_REVISION and spec.dataset_config:
        # The Hub's parquet export keeps each config in a folder of its own ({config}/{split}/NNNN.parquet) and no
        # card naming the configs, so datasets sees one 'default' config there: read the config's folder instead.
        config, kwargs = None, {"data_dir": spec.dataset_config}
    try:
        dsd = datasets.load_dataset(spec.dataset, config, revision=spec.revision, cache_dir=cache_dir, **kwargs)
    except Exception as err:
        raise TaskDataError(_hub_load_problem(spec, name, at, err)) from err
    if "train" not in dsd:
        raise TaskDataError(
            f"Task '{spec.name}': dataset {name}{at} has no 'train' split (it has {', '.join(dsd)}); a train split "
            "is required."
        )
    for split in SPLITS:
        if split in dsd:
            raw[split] = [(dsd[split], _Locator(None, "hub", f"dataset {name}, split '{split}'"))]
    return raw


# ----------------------------------------------------------------------------------------------------------------
# Validation and conversion
# ----------------------------------------------------------------------------------------------------------------


def _label_feature(ds: datasets.Dataset, column: str, token: bool) -> list[str] | None:
    """Names of a ClassLabel column (or of the ClassLabel inside a list column), else None."""
    feature = ds.features.get(column)
    if token:
        feature = getattr(feature, "feature", None)
    return list(feature.names) if isinstance(feature, datasets.ClassLabel) else None


def _require_columns(spec: TaskSpec, ds: datasets.Dataset, locator: _Locator) -> None:
    if spec.is_token_task:
        needed = [("tokens_column", spec.tokens_column), ("tags_column", spec.tags_column)]
    else:
        needed = [("text_column", spec.text_column), ("label_column", spec.label_column)]
        if spec.text_pair_column:
            needed.append(("text_pair_column", spec.text_pair_column))
    missing = [(key, column) for key, column in needed if column not in ds.column_names]
    if missing:
        hints = []
        for key, column in missing:
            close = difflib.get_close_matches(column, ds.column_names, n=1)
            hints.append(f"{column!r} ({key}{'; did you mean ' + repr(close[0]) + '?' if close else ''})")
        raise TaskDataError(
            f"Task '{spec.name}': {locator.origin} has no column {', '.join(hints)}; columns present: "
            f"{', '.join(ds.column_names)}. Set the task's column keys to the right names."
        )


def _unique_values(ds: datasets.Dataset, column: str, token: bool) -> list[Any]:
    col = ds.data.column(column)
    if token:
        col = pc.list_flatten(col)
    return pc.unique(col).to_pylist()


def _infer_labels(spec: TaskSpec, train: list[tuple[datasets.Dataset, _Locator]]) -> None:
    token = spec.is_token_task
    column = spec.tags_column if token else spec.label_column
    names = [_label_feature(ds, column, token) for ds, _ in train]
    if names and all(n is not None for n in names) and all(n == names[0] for n in names):
        labels, how = names[0], "from the ClassLabel feature of the train split"
    else:
        values: set[Any] = set()
        for ds, _ in train:
            class_names = _label_feature(ds, column, token)
            for value in _unique_values(ds, column, token):
                if class_names is not None and _is_int(value):
                    value = class_names[value] if 0 <= value < len(class_names) else None
                if isinstance(value, float) and value.is_integer():
                    value = int(value)
                values.add(value)
        labels = sort_labels(values, iob=spec.uses_iob)
        order = "'O' first, then B-/I- per entity type" if spec.uses_iob else "sorted"
        how = f"from the values of the train split ({order})"
        logger.warning(
            "Task '%s': no labels in the config; inferred %d labels %s: %s. List them under 'labels' to fix the "
            "order.",
            spec.name,
            len(labels),
            how,
            labels,
        )
    if len(labels) < 2:
        raise TaskDataError(
            f"Task '{spec.name}': found fewer than two labels ({labels}) {how}; a classification task needs at least "
            "two labels."
        )
    spec.labels = list(labels)
    spec.labels_inferred = True


class _LabelMapper:
    """Maps a raw label value (name, ClassLabel id, plain int id) to an id into ``spec.labels``; None if invalid."""

    def __init__(self, spec: TaskSpec, class_names: list[str] | None):
        self.labels = list(spec.labels)
        self.index = {name: i for i, name in enumerate(self.labels)}
        self.class_names = class_names
        # Plain ints (no ClassLabel) are label names when every label name is an integer ("1".."4"), else ids.
        self.ints_are_names = all(re.fullmatch(r"-?\d+", name) for name in self.labels)

    def name(self, value: Any) -> Any:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if _is_int(value):
            if self.class_names is not None:
                return self.class_names[value] if 0 <= value < len(self.class_names) else value
            if self.ints_are_names:
                return str(value)
            return self.labels[value] if 0 <= value < len(self.labels) else value
        return value

    def __call__(self, value: Any) -> int | None:
        return self.index.get(self.name(value)) if value is not None else None

    def label_set(self) -> str:
        return str(self.labels if len(self.labels) <= 50 else self.labels[:50] + ["..."])


def _sequence_converter(spec: TaskSpec, mapper: _LabelMapper):
    text_col, pair_col, label_col = spec.text_column, spec.text_pair_column, spec.label_column

    def convert(batch: dict[str, list]) -> dict[str, list]:
        out: dict[str, list] = {"text": [], "label": [], "__error__": [], "__repaired__": []}
        if pair_col:
            out["text_pair"] = []
        pairs = batch[pair_col] if pair_col else [None] * len(batch[text_col])
        for text, pair, label in zip(batch[text_col], pairs, batch[label_col]):
            problems = []
            text = "" if text is None else text if isinstance(text, str) else str(text)
            if not text.strip():
                problems.append(f"empty text {text!r} in column '{text_col}'")
            if pair_col:
                pair = "" if pair is None else pair if isinstance(pair, str) else str(pair)
                if not pair.strip():
                    problems.append(f"empty text {pair!r} in column '{pair_col}'")
                out["text_pair"].append(pair)
            label_id = mapper(label)
            if label is None or label == "":
                problems.append(f"missing label in column '{label_col}'")
            elif label_id is None:
                problems.append(f"label {_short(mapper.name(label))} is not in the label set")
            out["text"].append(text)
            out["label"].append(-1 if label_id is None else label_id)
            out["__error__"].append("; ".join(problems))
            out["__repaired__"].append(0)
        return out

    features = {"text": datasets.Value("string")}
    if pair_col:
        features["text_pair"] = datasets.Value("string")
    features["label"] = datasets.ClassLabel(names=mapper.labels)
    return convert, features


def _token_converter(spec: TaskSpec, mapper: _LabelMapper):
    tokens_col, tags_col = spec.tokens_column, spec.tags_column
    scheme, strict = spec.tag_scheme, spec.strict_iob
    iob = spec.uses_iob

    def convert(batch: dict[str, list]) -> dict[str, list]:
        out: dict[str, list] = {"tokens": [], "tags": [], "__error__": [], "__repaired__": []}
        for tokens, tags in zip(batch[tokens_col], batch[tags_col]):
            problems: list[str] = []
            ids: list[int] = []
            repaired = 0
            if tokens is None or len(tokens) == 0:
                problems.append(f"empty token list {tokens!r} in column '{tokens_col}'")
                tokens = []
            if tags is None:
                problems.append(f"missing tags in column '{tags_col}'")
                tags = []
            if tokens and len(tokens) != len(tags):
                problems.append(
                    f"tokens and tags have different lengths ({len(tokens)} tokens, {len(tags)} tags; tokens "
                    f"{_short(list(tokens))}, tags {_short(list(tags))})"
                )
            bad_tokens = [i for i, t in enumerate(tokens) if not isinstance(t, str) or not t.strip()]
            if bad_tokens:
                problems.append(f"empty token {tokens[bad_tokens[0]]!r} at position {bad_tokens[0] + 1}")
            if not problems:
                names = [mapper.name(t) for t in tags]
                missing = [i for i, t in enumerate(names) if t is None or t == ""]
                if missing:
                    i = missing[0]
                    problems.append(f"missing tag {names[i]!r} at position {i + 1} (token {tokens[i]!r})")
                elif iob:
                    bad = [(i, t) for i, t in enumerate(names) if _split_tag(t)[0] is None]
                    if bad:
                        i, t = bad[0]
                        problems.append(
                            f"tag {_short(t)} at position {i + 1} (token {tokens[i]!r}) is not an IOB tag (O, "
                            f"B-<type>, I-<type>) but tag_scheme is '{scheme}'"
                        )
                    else:
                        fixed, repaired = repair_iob2(names)
                        if repaired and strict and scheme != "iob1":
                            i = next(i for i, (a, b) in enumerate(zip(names, fixed)) if a != b)
                            prev = f"follows {names[i - 1]!r}" if i else "starts the sentence"
                            problems.append(
                                f"invalid IOB2 sequence: {names[i]!r} at position {i + 1} (token {tokens[i]!r}) {prev}"
                                f" (strict_iob is on; {repaired} invalid I- tag(s) in this row)"
                            )
                        names = fixed
                        if scheme == "iob1":
                            repaired = 0
                if not problems:
                    for i, name in enumerate(names):
                        label_id = mapper.index.get(name) if name is not None else None
                        if label_id is None:
                            problems.append(
                                f"tag {_short(name)} at position {i + 1} (token {tokens[i]!r}) is not in the label set"
                            )
                            break
                        ids.append(label_id)
            if problems:
                repaired = 0
            out["tokens"].append([str(t) for t in tokens] if not problems else [])
            out["tags"].append(ids if not problems else [])
            out["__error__"].append("; ".join(problems))
            out["__repaired__"].append(repaired)
        return out

    features = {
        "tokens": datasets.List(datasets.Value("string")),
        "tags": datasets.List(datasets.ClassLabel(names=mapper.labels)),
    }
    return convert, features


def _convert_file(spec: TaskSpec, ds: datasets.Dataset, split: str) -> datasets.Dataset:
    token = spec.is_token_task
    column = spec.tags_column if token else spec.label_column
    mapper = _LabelMapper(spec, _label_feature(ds, column, token))
    convert, features = (_token_converter if token else _sequence_converter)(spec, mapper)
    features = datasets.Features(
        {**features, "__error__": datasets.Value("string"), "__repaired__": datasets.Value("int32")}
    )
    return ds.map(
        convert,
        batched=True,
        remove_columns=ds.column_names,
        features=features,
        desc=f"Validating {spec.name}/{split}",
    )


def load_task_data(
    spec: TaskSpec,
    seed: int = 42,
    validation_fraction: float = 0.1,
    drop_invalid: bool = False,
    cache_dir: str | None = None,
) -> datasets.DatasetDict:
    """Load, validate and convert a task's splits.

    Returns a ``DatasetDict`` with ``train``, ``validation`` (carved from train with ``seed`` when missing; the
    task's ``validation_fraction`` overrides the argument) and ``test`` (when given). Columns: sequence tasks
    ``text``, optional ``text_pair``, ``label`` (id into ``spec.labels``); token tasks ``tokens``, ``tags`` (ids into
    ``spec.labels``). ``spec.labels`` is filled in when inferred. Invalid rows raise one ``TaskDataError`` listing the
    first problems with file, row and value, or with ``drop_invalid=True`` are dropped, logged and counted in
    ``spec.dropped``.
    """
    raw = _load_raw(spec, cache_dir)
    for files in raw.values():
        for ds, locator in files:
            _require_columns(spec, ds, locator)
    if spec.labels is None:
        _infer_labels(spec, raw["train"])

    problems: list[str] = []
    converted: dict[str, datasets.Dataset] = {}
    spec.dropped, spec.repaired = {}, {}
    for split, files in raw.items():
        parts = []
        n_bad = n_repaired = 0
        for ds, locator in files:
            out = _convert_file(spec, ds, split)
            errors = out.data.column("__error__").to_pylist()
            bad = [i for i, e in enumerate(errors) if e]
            for i in bad:
                problems.append(f"{locator(i)}: {errors[i]}")
            n_repaired += pc.sum(out.data.column("__repaired__")).as_py() or 0  # invalid rows count 0
            if bad:
                bad_set = set(bad)
                out = out.select([i for i in range(len(out)) if i not in bad_set])
            n_bad += len(bad)
            parts.append(out.remove_columns(["__error__", "__repaired__"]))
        if n_bad:
            spec.dropped[split] = n_bad
        if n_repaired:
            spec.repaired[split] = n_repaired
            logger.warning(
                "Task '%s', split %s: repaired %d invalid IOB2 tag(s) (I-X after O or after another type, turned "
                "into B-X); set strict_iob: true to make this an error.",
                spec.name,
                split,
                n_repaired,
            )
        converted[split] = parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)

    if problems:
        if not drop_invalid:
            spec.dropped = {}
            raise TaskDataError(
                _paragraph(
                    f"Task '{spec.name}' ({spec.type}) has invalid data:",
                    problems,
                    f"Label set of task '{spec.name}': {_LabelMapper(spec, None).label_set()}. Fix the data, or "
                    "pass drop_invalid=True to drop invalid rows (they are counted and logged).",
                )
            )
        logger.warning(
            "Task '%s': dropped %d invalid row(s) (%s). First problems: %s",
            spec.name,
            len(problems),
            ", ".join(f"{s}: {n}" for s, n in spec.dropped.items()),
            "; ".join(problems[:3]),
        )
    for split, ds in converted.items():
        if len(ds) == 0:
            raise TaskDataError(f"Task '{spec.name}': the {split} split has no valid rows left.")

    if "validation" not in converted:
        fraction = spec.validation_fraction if spec.validation_fraction is not None else validation_fraction
        train = converted["train"]
        if len(train) < 2 or not 0 < fraction < 1:
            raise TaskDataError(
                f"Task '{spec.name}': no validation split, and {len(train)} train rows cannot be split with "
                f"validation_fraction={fraction}."
            )
        try:
            parts = train.train_test_split(
                test_size=fraction, seed=seed, stratify_by_column=None if spec.is_token_task else "label"
            )
        except ValueError:  # a class too small to stratify
            parts = train.train_test_split(test_size=fraction, seed=seed)
        converted["train"], converted["validation"] = parts["train"], parts["test"]
        logger.info(
            "Task '%s': no validation split; carved %d of %d train rows (%.0f%%, seed %d) as validation.",
            spec.name,
            len(parts["test"]),
            len(train),
            fraction * 100,
            seed,
        )

    result = datasets.DatasetDict()
    for split in SPLITS:
        if split not in converted:
            continue
        ds = converted[split]
        limit = spec.max_train_samples if split == "train" else spec.max_eval_samples
        if limit is not None and len(ds) > limit:
            ds = ds.select(range(limit))
        result[split] = ds
    return result
