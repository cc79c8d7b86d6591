"""Tasks and data for MTST: task specs, loading, validation, tokenization and the task-aware collator.

A task config (YAML or JSON) has one top-level key, ``tasks``, a list with one entry per task::

    tasks:
      - name: topic
        type: sequence_classification
        data_files: {train: ../sample/topic/train.jsonl, validation: ../sample/topic/validation.jsonl}
        labels: [World, Sports, Business, Sci/Tech]
      - name: ner
        type: token_classification
        dataset: eriktks/conll2003
        revision: refs/convert/parquet

Data flows ``load_task_specs`` -> ``load_task_data`` (raw splits, validated, labels as ids into ``spec.labels``) ->
``tokenize_task`` (``input_ids``, ``attention_mask``, ``labels``) -> ``MultiTaskDataset`` -> ``MultiTaskCollator``.

Every file is read by a ``datasets`` builder (``json``, ``csv``, ``parquet`` and ``conll``); nothing is parsed by
hand. Bad data raises ``TaskDataError`` (a ``ValueError``) with one paragraph that names the task, the file, the row
and the offending value, unless ``drop_invalid=True``, which drops the bad rows, logs how many and records the count
in ``spec.dropped``.
"""

from __future__ import annotations

import bisect
import bz2
import codecs
import copy
import csv
import dataclasses
import difflib
import gzip
import io
import json
import logging
import lzma
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets
import pyarrow.compute as pc
import torch
import yaml

logger = logging.getLogger(__name__)

__all__ = [
    "TaskConfigError",
    "TaskDataError",
    "TaskFileNotFoundError",
    "TaskSpec",
    "load_task_specs",
    "load_task_data",
    "tokenize_task",
    "MultiTaskDataset",
    "MultiTaskCollator",
    "iob1_to_iob2",
    "repair_iob2",
    "sort_labels",
    "TASK_TYPES",
    "TAG_SCHEMES",
]

TASK_TYPES = ("sequence_classification", "token_classification")
SEQUENCE, TOKEN = TASK_TYPES
# "bio" is accepted as a name for iob2, "io" as a name for plain tags ("none").
TAG_SCHEMES = ("iob2", "bio", "iob1", "none", "io")
SPLITS = ("train", "validation", "test")
# The Hub's automatic parquet export of a dataset: one folder per config, {config}/{split}/NNNN.parquet.
PARQUET_EXPORT_REVISION = "refs/convert/parquet"
HEAD_OPTIONS = ("dropout", "layer_norm", "activation", "hidden_size")
FORMATS = ("json", "csv", "tsv", "parquet", "conll")
IGNORE_INDEX = -100
MAX_LISTED_PROBLEMS = 20

_EXTENSIONS = {
    ".json": "json",
    ".jsonl": "json",
    ".ndjson": "json",
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".conll": "conll",
    ".txt": "conll",
    ".iob": "conll",
    ".bio": "conll",
}
_COMPRESSIONS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
_CHECK_LIMIT = 64 * 1024 * 1024  # bytes of (decompressed) text checked for NUL bytes and UTF-8 before loading
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")


class TaskConfigError(ValueError):
    """A task config is invalid: unknown key, bad value, duplicate task name, unknown task type..."""


class TaskDataError(ValueError):
    """A task's data is invalid: unreadable file, missing column, label outside the label set..."""


class TaskFileNotFoundError(TaskDataError, FileNotFoundError):
    """A data file of a task does not exist; the message names every path that was tried."""


# ----------------------------------------------------------------------------------------------------------------
# Task specs
# ----------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class TaskSpec:
    """One task: where its data lives, which columns hold what, its labels and its per-task options.

    Args:
        name: Task name (letters, digits, ``_`` and ``-``; used as head name and metric prefix).
        type: ``"sequence_classification"`` or ``"token_classification"``.
        dataset: Hub dataset id (exclusive with ``data_files``).
        dataset_config: Hub dataset config name.
        revision: Hub revision: a branch, tag or commit sha, or ``refs/convert/parquet`` (the Hub's parquet
            export, where ``dataset_config`` names the export's folder of that config).
        data_files: ``{split: path or [paths]}`` with splits ``train`` (required), ``validation``, ``test``.
        text_column, text_pair_column, label_column: sequence task columns.
        tokens_column, tags_column, tag_scheme: token task columns and tag scheme (``iob2``/``bio``, ``iob1``
            (converted to iob2), ``none``/``io`` for plain tags).
        labels: label names in id order; ``None`` until inferred by ``load_task_data``.
        max_train_samples, max_eval_samples: keep only the first N rows of train / of validation and test.
        loss_weight: weight of this task's loss (> 0).
        batch_size: per-task batch size (``None``: the trainer's).
        head: head options (``dropout``, ``layer_norm``, ``activation``, ``hidden_size``).
        strict_iob: invalid IOB2 sequences (``I-X`` after ``O`` or after ``B-Y``) are an error instead of repaired.
        validation_fraction: fraction of train carved out as validation when there is no validation split
            (``None``: the ``load_task_data`` argument).
        format: file format for every data file (``json``, ``csv``, ``tsv``, ``parquet``, ``conll``) instead of
            guessing it from the extension.
        conll_columns: names of the whitespace-separated columns of CoNLL files (default: the token column first,
            the tag column last, e.g. ``[tokens, pos_tags, chunk_tags, ner_tags]`` for CoNLL-2003 files).
        base_dir: folder of the config file, used to resolve relative ``data_files`` paths.
        dropped: ``{split: rows dropped}`` filled by ``load_task_data(drop_invalid=True)``.
        repaired: ``{split: I- tags repaired}`` filled by ``load_task_data`` for non-strict IOB2 data.
        truncated: ``{split: examples truncated}`` filled by ``tokenize_task``.
        labels_inferred: whether ``labels`` were inferred from the data.
    """

    name: str
    type: str
    dataset: str | None = None
    dataset_config: str | None = None
    revision: str | None = None
    data_files: dict[str, list[str]] | None = None
    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str = "label"
    tokens_column: str = "tokens"
    tags_column: str = "ner_tags"
    tag_scheme: str = "iob2"
    labels: list[str] | None = None
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    loss_weight: float = 1.0
    batch_size: int | None = None
    head: dict[str, Any] = dataclasses.field(default_factory=dict)
    strict_iob: bool = False
    validation_fraction: float | None = None
    format: str | None = None
    conll_columns: list[str] | None = None
    base_dir: str | None = None
    dropped: dict[str, int] = dataclasses.field(default_factory=dict)
    repaired: dict[str, int] = dataclasses.field(default_factory=dict)
    truncated: dict[str, int] = dataclasses.field(default_factory=dict)
    labels_inferred: bool = False

    @property
    def is_token_task(self) -> bool:
        return self.type == TOKEN

    @property
    def uses_iob(self) -> bool:
        return self.is_token_task and self.tag_scheme in ("iob2", "bio", "iob1")

    @property
    def num_labels(self) -> int:
        if self.labels is None:
            raise TaskConfigError(f"Task '{self.name}': labels are not known yet; call load_task_data first.")
        return len(self.labels)

    def to_model_task(self) -> dict[str, Any]:
        """The entry of ``MTSTConfig.tasks`` for this task: type, labels, head options and loss weight."""
        if self.labels is None:
            raise TaskConfigError(
                f"Task '{self.name}': labels are not known yet (none in the config); call load_task_data first, "
                "which infers them from the train split."
            )
        return {"type": self.type, "labels": list(self.labels), **dict(self.head), "loss_weight": self.loss_weight}

    def to_dict(self) -> dict[str, Any]:
        """The task as a config entry (only the keys a config file may hold, defaults left out)."""
        out = {"name": self.name, "type": self.type}
        defaults = TaskSpec(name=self.name, type=self.type)
        for key in _allowed_keys(self.type):
            if key in out:
                continue
            value = getattr(self, key)
            if value != getattr(defaults, key):
                out[key] = copy.deepcopy(value)
        return out


_COMMON_KEYS = (
    "name",
    "type",
    "dataset",
    "dataset_config",
    "revision",
    "data_files",
    "format",
    "labels",
    "max_train_samples",
    "max_eval_samples",
    "loss_weight",
    "batch_size",
    "head",
    "validation_fraction",
)
_TYPE_KEYS = {
    SEQUENCE: ("text_column", "text_pair_column", "label_column"),
    TOKEN: ("tokens_column", "tags_column", "tag_scheme", "strict_iob", "conll_columns"),
}


def _allowed_keys(task_type: str | None) -> tuple[str, ...]:
    if task_type in _TYPE_KEYS:
        return _COMMON_KEYS + _TYPE_KEYS[task_type]
    return _COMMON_KEYS + _TYPE_KEYS[SEQUENCE] + _TYPE_KEYS[TOKEN]


def _suggest(key: str, allowed: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(allowed), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _paragraph(head: str, problems: Sequence[str], tail: str = "") -> str:
    """One paragraph: a head sentence, up to MAX_LISTED_PROBLEMS problems and the total count."""
    shown = list(problems[:MAX_LISTED_PROBLEMS])
    text = f"{head} {len(problems)} problem(s): " + "; ".join(shown)
    if len(problems) > len(shown):
        text += f"; ... and {len(problems) - len(shown)} more (first {len(shown)} of {len(problems)} shown)"
    text += "."
    if tail:
        text += " " + tail
    return text


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_label_list(where: str, labels: Any, type_: str, tag_scheme: str, problems: list[str]) -> list[str] | None:
    if not isinstance(labels, (list, tuple)) or not labels:
        problems.append(f"{where}: 'labels' must be a non-empty list of label names, got {labels!r}")
        return None
    names = []
    for label in labels:
        if isinstance(label, bool) or not isinstance(label, (str, int)):
            problems.append(f"{where}: label {label!r} in 'labels' is not a string")
            return None
        names.append(str(label))
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        problems.append(f"{where}: 'labels' lists {duplicates} more than once")
    if len(names) < 2:
        problems.append(f"{where}: a task needs at least two labels, 'labels' has {names}")
    if type_ == TOKEN and tag_scheme in ("iob2", "bio", "iob1"):
        bad = [n for n in names if _split_tag(n)[0] is None]
        if bad:
            problems.append(
                f"{where}: labels {bad} are not IOB tags (O, B-<type>, I-<type>) but tag_scheme is '{tag_scheme}'; "
                "use tag_scheme: none for plain tags"
            )
    return names


def _parse_task(entry: Any, index: int, source: str, base_dir: str | None, problems: list[str]) -> TaskSpec | None:
    label = f"task #{index + 1}"
    if not isinstance(entry, Mapping):
        problems.append(f"{label}{source} must be a mapping of keys, got {type(entry).__name__} {entry!r}")
        return None
    name = entry.get("name")
    if isinstance(name, str) and name:
        label = f"task '{name}'"
    where = f"{label}{source}"
    n_before = len(problems)

    if not isinstance(name, str) or not _NAME_RE.match(name):
        problems.append(
            f"{where}: 'name' must be a non-empty string of letters, digits, '_' and '-' starting with a letter or "
            f"'_', got {name!r}"
        )
    type_ = entry.get("type")
    if type_ not in TASK_TYPES:
        problems.append(f"{where}: unknown task type {type_!r}; allowed types: {', '.join(TASK_TYPES)}")
        type_ = None
    allowed = _allowed_keys(type_)
    for key in entry:
        if key not in allowed:
            problems.append(
                f"{where}: unknown key {key!r}{_suggest(str(key), allowed)}; allowed keys"
                f"{' for ' + type_ + ' tasks' if type_ else ''}: {', '.join(allowed)}"
            )

    kwargs: dict[str, Any] = {}
    for key in (
        "dataset",
        "dataset_config",
        "revision",
        "text_column",
        "text_pair_column",
        "label_column",
        "tokens_column",
        "tags_column",
    ):
        if key in entry and entry[key] is not None:
            if not isinstance(entry[key], str) or not entry[key]:
                problems.append(f"{where}: {key!r} must be a non-empty string, got {entry[key]!r}")
            else:
                kwargs[key] = entry[key]

    tag_scheme = entry.get("tag_scheme", "iob2")
    if tag_scheme not in TAG_SCHEMES:
        problems.append(f"{where}: unknown tag_scheme {tag_scheme!r}; allowed: {', '.join(TAG_SCHEMES)}")
        tag_scheme = "iob2"
    kwargs["tag_scheme"] = tag_scheme

    fmt = entry.get("format")
    if fmt is not None:
        if fmt not in FORMATS:
            problems.append(f"{where}: unknown format {fmt!r}; allowed formats: {', '.join(FORMATS)}")
        elif fmt == "conll" and type_ == SEQUENCE:
            problems.append(f"{where}: format 'conll' is only for token_classification tasks")
        else:
            kwargs["format"] = fmt

    has_dataset, has_files = "dataset" in kwargs, entry.get("data_files") is not None
    if has_dataset == has_files:
        problems.append(f"{where}: give exactly one of 'dataset' (a Hub id) or 'data_files' ({{split: path}})")
    if has_files:
        data_files = entry["data_files"]
        if isinstance(data_files, (str, os.PathLike)) or (
            isinstance(data_files, list) and all(isinstance(p, (str, os.PathLike)) for p in data_files)
        ):
            data_files = {"train": data_files}
        if not isinstance(data_files, Mapping):
            problems.append(f"{where}: 'data_files' must be a mapping {{train: path, validation: path, test: path}}")
        else:
            files: dict[str, list[str]] = {}
            for split, paths in data_files.items():
                if split not in SPLITS:
                    problems.append(
                        f"{where}: unknown split {split!r} in 'data_files'{_suggest(str(split), SPLITS)}; "
                        f"allowed splits: {', '.join(SPLITS)}"
                    )
                    continue
                paths = [paths] if isinstance(paths, (str, os.PathLike)) else paths
                if (
                    not isinstance(paths, list)
                    or not paths
                    or not all(isinstance(p, (str, os.PathLike)) for p in paths)
                ):
                    problems.append(f"{where}: data_files[{split!r}] must be a path or a non-empty list of paths")
                    continue
                files[split] = [os.fspath(p) for p in paths]
                for path in files[split]:
                    try:
                        _file_format(path, kwargs.get("format"), type_)
                    except TaskConfigError as err:
                        problems.append(f"{where}: {err}")
            if files and "train" not in files:
                problems.append(
                    f"{where}: 'data_files' has no 'train' split (it has {', '.join(files)}); a train split is "
                    "required"
                )
            kwargs["data_files"] = files

    if "labels" in entry and entry["labels"] is not None:
        kwargs["labels"] = _check_label_list(where, entry["labels"], type_, tag_scheme, problems)

    for key in ("max_train_samples", "max_eval_samples", "batch_size"):
        value = entry.get(key)
        if value is not None:
            if not _is_int(value) or value <= 0:
                problems.append(f"{where}: {key!r} must be a positive integer, got {value!r}")
            else:
                kwargs[key] = value
    if entry.get("loss_weight") is not None:
        weight = entry["loss_weight"]
        if (
            isinstance(weight, bool)
            or not isinstance(weight, (int, float))
            or not math.isfinite(weight)
            or weight <= 0
        ):
            problems.append(f"{where}: 'loss_weight' must be a number > 0, got {weight!r}")
        else:
            kwargs["loss_weight"] = float(weight)
    if entry.get("validation_fraction") is not None:
        fraction = entry["validation_fraction"]
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
            problems.append(f"{where}: 'validation_fraction' must be a number between 0 and 1, got {fraction!r}")
        else:
            kwargs["validation_fraction"] = float(fraction)
    if "strict_iob" in entry:
        if not isinstance(entry["strict_iob"], bool):
            problems.append(f"{where}: 'strict_iob' must be true or false, got {entry['strict_iob']!r}")
        else:
            kwargs["strict_iob"] = entry["strict_iob"]
    if entry.get("conll_columns") is not None:
        columns = entry["conll_columns"]
        if not isinstance(columns, list) or len(columns) < 2 or not all(isinstance(c, str) and c for c in columns):
            problems.append(f"{where}: 'conll_columns' must be a list of at least two column names, got {columns!r}")
        else:
            tokens_column, tags_column = kwargs.get("tokens_column", "tokens"), kwargs.get("tags_column", "ner_tags")
            missing = [c for c in (tokens_column, tags_column) if c not in columns]
            if missing:
                problems.append(f"{where}: 'conll_columns' {columns} lacks the token/tag column(s) {missing}")
            else:
                kwargs["conll_columns"] = list(columns)

    head = entry.get("head")
    if head is not None:
        if not isinstance(head, Mapping):
            problems.append(f"{where}: 'head' must be a mapping of head options ({', '.join(HEAD_OPTIONS)})")
        else:
            for key, value in head.items():
                if key not in HEAD_OPTIONS:
                    problems.append(
                        f"{where}: unknown head option {key!r}{_suggest(str(key), HEAD_OPTIONS)}; "
                        f"allowed head options: {', '.join(HEAD_OPTIONS)}"
                    )
                elif key == "dropout" and (
                    isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1
                ):
                    problems.append(f"{where}: head 'dropout' must be a number in [0, 1), got {value!r}")
                elif key == "layer_norm" and not isinstance(value, bool):
                    problems.append(f"{where}: head 'layer_norm' must be true or false, got {value!r}")
                elif key == "activation" and (not isinstance(value, str) or not value):
                    problems.append(f"{where}: head 'activation' must be a name such as 'gelu', got {value!r}")
                elif key == "hidden_size" and value is not None and (not _is_int(value) or value <= 0):
                    problems.append(f"{where}: head 'hidden_size' must be a positive integer or null, got {value!r}")
            kwargs["head"] = dict(head)

    if len(problems) > n_before or type_ is None or not isinstance(name, str):
        return None
    return TaskSpec(name=name, type=type_, base_dir=base_dir, **kwargs)


def load_task_specs(path_or_mapping: Any, base_dir: str | os.PathLike | None = None) -> list[TaskSpec]:
    """Read task specs from a YAML/JSON file, a mapping ``{"tasks": [...]}`` or a list of task mappings.

    Relative ``data_files`` paths are resolved later (by ``load_task_data``) against the current directory when the
    file exists there, else against the config file's folder (``base_dir`` for a mapping; default: the current
    directory). Raises ``TaskConfigError`` listing every problem found (unknown keys, bad values, duplicate names).
    """
    if isinstance(path_or_mapping, (str, os.PathLike)):
        path = Path(path_or_mapping)
        source = str(path)
        if not path.is_file():
            raise TaskConfigError(f"Task config {source} does not exist (current directory: {os.getcwd()}).")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise TaskConfigError(f"Task config {source} could not be read: {err}.") from err
        try:
            data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
        except (json.JSONDecodeError, yaml.YAMLError) as err:
            raise TaskConfigError(
                f"Task config {source} is not valid {path.suffix.lstrip('.') or 'YAML'}: {_one_line(err)}"
            ) from err
        base = str(base_dir) if base_dir is not None else str(path.resolve().parent)
    else:
        data, source = path_or_mapping, "(given as a mapping)"
        base = str(base_dir) if base_dir is not None else None

    if isinstance(data, (list, tuple)):
        data = {"tasks": list(data)}
    if not isinstance(data, Mapping):
        raise TaskConfigError(
            f"Task config {source} must be a mapping with a top-level key 'tasks' (a list), got {type(data).__name__}."
        )
    unknown = [k for k in data if k != "tasks"]
    if unknown:
        raise TaskConfigError(
            f"Task config {source}: unknown top-level key(s) {unknown}; the only allowed top-level key is 'tasks'."
        )
    tasks = data.get("tasks")
    if not isinstance(tasks, list) or not tasks:
        raise TaskConfigError(f"Task config {source}: 'tasks' must be a non-empty list of tasks, got {tasks!r}.")

    problems: list[str] = []
    in_source = f" in {source}" if isinstance(path_or_mapping, (str, os.PathLike)) else ""
    specs = [_parse_task(entry, i, in_source, base, problems) for i, entry in enumerate(tasks)]
    names = [entry.get("name") for entry in tasks if isinstance(entry, Mapping)]
    duplicates = sorted({str(n) for n in names if names.count(n) > 1})
    if duplicates:
        problems.append(f"duplicate task name(s) {duplicates}{in_source}; task names must be unique")
    if problems:
        raise TaskConfigError(_paragraph(f"Task config {source} is invalid:", problems))
    return [spec for spec in specs if spec is not None]


# ----------------------------------------------------------------------------------------------------------------
# IOB helpers
# ----------------------------------------------------------------------------------------------------------------


def _split_tag(tag: Any) -> tuple[str | None, str | None]:
    """("O", None) for O, ("B"/"I", type) for B-/I- tags, (None, None) for anything else."""
    if tag == "O":
        return "O", None
    if isinstance(tag, str) and len(tag) > 2 and tag[1] == "-" and tag[0] in "BI":
        return tag[0], tag[2:]
    return None, None


def repair_iob2(tags: Sequence[str]) -> tuple[list[str], int]:
    """Turn every ``I-X`` that does not continue an ``X`` entity (after ``O``, at the start, after ``B-Y``/``I-Y``)
    into ``B-X``. This is also exactly the IOB1 -> IOB2 conversion. Returns the new tags and how many changed."""
    out: list[str] = []
    changed = 0
    prev_type = None
    for tag in tags:
        prefix, typ = _split_tag(tag)
        if prefix == "I" and prev_type != typ:
            tag = "B-" + typ
            changed += 1
        out.append(tag)
        prev_type = typ
    return out, changed


def iob1_to_iob2(tags: Sequence[str]) -> list[str]:
    """IOB1 (``I-`` starts an entity, ``B-`` only between two adjacent entities of a type) -> IOB2 (BIO)."""
    return repair_iob2(tags)[0]


def sort_labels(values: Iterable[Any], iob: bool = False) -> list[str]:
    """Label order used when labels are inferred: sorted; for IOB tags ``O`` first, then ``B-X``, ``I-X`` for each
    entity type X in sorted order (both are listed for every type seen)."""
    values = [v for v in values if v is not None and v != ""]
    if iob:
        types = sorted({_split_tag(v)[1] for v in values if _split_tag(v)[0] in ("B", "I")})
        return ["O"] + [f"{p}-{t}" for t in types for p in ("B", "I")]
    if values and all(_is_int(v) for v in values):
        return [str(v) for v in sorted(set(values))]
    names = sorted({str(v) for v in values})
    if "O" in names:
        names.remove("O")
        names.insert(0, "O")
    return names


# ----------------------------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------------------------


def _strip_compression(path: str) -> tuple[str, str | None]:
    lower = path.lower()
    for ext in _COMPRESSIONS:
        if lower.endswith(ext):
            return path[: -len(ext)], ext
    return path, None


def _file_format(path: str, fmt: str | None, task_type: str | None) -> str:
    """The format of a data file: the task's ``format`` or the file's extension (a .gz/.bz2/.xz suffix is ignored)."""
    if fmt is not None:
        return fmt
    stem, _ = _strip_compression(path)
    ext = os.path.splitext(stem)[1].lower()
    found = _EXTENSIONS.get(ext)
    if found == "conll" and task_type == SEQUENCE:
        found = None
    if found is None:
        known = sorted(e for e, f in _EXTENSIONS.items() if task_type != SEQUENCE or f != "conll")
        raise TaskConfigError(
            f"data file {path} has an unknown extension {ext or '(none)'!r}; known extensions: {', '.join(known)} "
            f"(optionally compressed: {', '.join(_COMPRESSIONS)}), or set 'format' ({', '.join(FORMATS)})"
        )
    return found


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


def _one_line(text: Any) -> str:
    """An error message on one line (builders' messages may span several)."""
    return " ".join(str(text).split())


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


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


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


# ----------------------------------------------------------------------------------------------------------------
# Tokenization
# ----------------------------------------------------------------------------------------------------------------


def _continuation_ids(labels: list[str]) -> list[int]:
    """For label_all_tokens: the id a continuation sub-token gets for each word label (B-X -> I-X when it exists)."""
    index = {name: i for i, name in enumerate(labels)}
    out = []
    for i, name in enumerate(labels):
        prefix, typ = _split_tag(name)
        out.append(index.get(f"I-{typ}", i) if prefix == "B" else i)
    return out


def _truncated_flags(tokenizer, enc, texts, pairs, is_split: bool, max_length: int) -> list[bool]:
    encodings = getattr(enc, "encodings", None)
    if encodings:
        return [bool(e.overflowing) for e in encodings]
    # Tokenizers without a Rust backend: compare with the untruncated length.
    full = tokenizer(texts, pairs, is_split_into_words=is_split, truncation=False)
    return [len(ids) > max_length for ids in full["input_ids"]]


def tokenize_task(
    spec: TaskSpec,
    dataset_dict: datasets.DatasetDict,
    tokenizer,
    max_seq_length: int = 128,
    label_all_tokens: bool = False,
) -> datasets.DatasetDict:
    """Tokenize a task's splits and align labels.

    Output columns: ``input_ids``, ``attention_mask``, ``token_type_ids`` (only if the tokenizer returns them) and
    ``labels``: an int for sequence tasks; for token tasks a list with the word's label on its first sub-token,
    ``-100`` on special tokens and on the other sub-tokens (or, with ``label_all_tokens=True``, the word's label with
    ``B-X`` turned into ``I-X``). Truncated examples are counted per split, logged and stored in ``spec.truncated``.
    """
    if spec.labels is None:
        raise TaskConfigError(f"Task '{spec.name}': labels are not known; call load_task_data before tokenize_task.")
    model_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(model_max, int) and 0 < model_max < 1_000_000 and max_seq_length > model_max:
        logger.warning(
            "max_seq_length %d is longer than the tokenizer's model_max_length %d; using %d.",
            max_seq_length,
            model_max,
            model_max,
        )
        max_seq_length = model_max
    token = spec.is_token_task
    if token and not getattr(tokenizer, "is_fast", False):
        raise TaskConfigError(
            f"Task '{spec.name}' is a token_classification task and needs a fast tokenizer (word_ids() for label "
            f"alignment); {type(tokenizer).__name__} is not fast. Load it with AutoTokenizer.from_pretrained(..., "
            "use_fast=True) or use a checkpoint with a tokenizer.json."
        )
    pair = bool(spec.text_pair_column) and not token
    count_special = getattr(tokenizer, "num_special_tokens_to_add", None)
    special = count_special(pair=pair) if callable(count_special) else 0
    needed = special + (2 if pair else 1)
    if isinstance(max_seq_length, bool) or not isinstance(max_seq_length, int) or max_seq_length < needed:
        raise TaskConfigError(
            f"Task '{spec.name}': max_seq_length={max_seq_length!r} leaves no room for text: the tokenizer adds "
            f"{special} special token(s){' to a text pair' if pair else ''}, so max_seq_length must be at least "
            f"{needed} (128 is a common choice)."
        )
    cont = _continuation_ids(spec.labels)
    input_names = ("input_ids", "attention_mask", "token_type_ids")

    def tokenize(batch: dict[str, list]) -> dict[str, list]:
        if token:
            texts, pairs = batch["tokens"], None
        else:
            texts, pairs = batch["text"], batch.get("text_pair")
        enc = tokenizer(texts, pairs, is_split_into_words=token, truncation=True, max_length=max_seq_length)
        out = {k: enc[k] for k in input_names if k in enc}
        out["__truncated__"] = _truncated_flags(tokenizer, enc, texts, pairs, token, max_seq_length)
        if not token:
            out["labels"] = list(batch["label"])
            out["__lost__"] = [0] * len(texts)
            return out
        labels, lost = [], []
        for i, tags in enumerate(batch["tags"]):
            word_ids = enc.word_ids(i)
            row, prev = [], None
            for w in word_ids:
                if w is None:
                    row.append(IGNORE_INDEX)
                elif w != prev:
                    row.append(tags[w])
                else:
                    row.append(cont[tags[w]] if label_all_tokens else IGNORE_INDEX)
                prev = w
            labels.append(row)
            kept = {w for w in word_ids if w is not None}
            last = max(kept) if kept else -1
            # words before the truncation point that produced no sub-token (e.g. only control characters)
            lost.append(last + 1 - len(kept))
        out["labels"] = labels
        out["__lost__"] = lost
        return out

    result = datasets.DatasetDict()
    spec.truncated = {}
    for split, ds in dataset_dict.items():
        out = ds.map(tokenize, batched=True, remove_columns=ds.column_names, desc=f"Tokenizing {spec.name}/{split}")
        n_truncated = sum(out["__truncated__"])
        n_lost = sum(out["__lost__"])
        spec.truncated[split] = n_truncated
        if n_truncated:
            logger.warning(
                "Task '%s', split %s: %d of %d examples were truncated to max_seq_length=%d.",
                spec.name,
                split,
                n_truncated,
                len(out),
                max_seq_length,
            )
        else:
            logger.info(
                "Task '%s', split %s: no example was truncated (max_seq_length=%d).", spec.name, split, max_seq_length
            )
        if n_lost:
            logger.warning(
                "Task '%s', split %s: %d word(s) produced no sub-token (e.g. only control characters) and carry no "
                "label.",
                spec.name,
                split,
                n_lost,
            )
        result[split] = out.remove_columns(["__truncated__", "__lost__"])
    return result


# ----------------------------------------------------------------------------------------------------------------
# Multi-task dataset and collator
# ----------------------------------------------------------------------------------------------------------------


class MultiTaskDataset(torch.utils.data.Dataset):
    """Concatenation of per-task datasets; item ``i`` is the row's features plus ``task=<name>``.

    ``task_sizes`` is ``{task: len}``, ``offsets`` is ``{task: index of the task's first item}`` (both in task
    order), so the items of task ``t`` are ``range(offsets[t], offsets[t] + task_sizes[t])`` (``indices(t)``).
    """

    def __init__(self, datasets_by_task: Mapping[str, Any]):
        if not datasets_by_task:
            raise ValueError("MultiTaskDataset needs at least one task dataset.")
        self.datasets = dict(datasets_by_task)
        self.task_names = list(self.datasets)
        self.task_sizes = {task: len(ds) for task, ds in self.datasets.items()}
        self.offsets = {}
        total = 0
        for task in self.task_names:
            self.offsets[task] = total
            total += self.task_sizes[task]
        self._starts = [self.offsets[t] for t in self.task_names]
        self._len = total

    def __len__(self) -> int:
        return self._len

    def indices(self, task: str) -> range:
        if task not in self.offsets:
            raise ValueError(f"Unknown task {task!r}; tasks: {', '.join(self.task_names)}")
        return range(self.offsets[task], self.offsets[task] + self.task_sizes[task])

    def locate(self, index: int) -> tuple[str, int]:
        """(task, index inside that task's dataset) of a global index."""
        if index < 0:
            index += self._len
        if not 0 <= index < self._len:
            raise IndexError(f"index {index} out of range for MultiTaskDataset of length {self._len}")
        position = bisect.bisect_right(self._starts, index) - 1
        while self.task_sizes[self.task_names[position]] == 0:  # skip empty tasks sharing an offset
            position += 1
        task = self.task_names[position]
        return task, index - self.offsets[task]

    def __getitem__(self, index: int) -> dict[str, Any]:
        task, local = self.locate(int(index))
        item = dict(self.datasets[task][local])
        item["task"] = task
        return item

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        """Batched fetch (used by DataLoader): one columnar read per task."""
        located = [self.locate(int(i)) for i in indices]
        by_task: dict[str, list[int]] = {}
        for task, local in located:
            by_task.setdefault(task, []).append(local)
        rows: dict[str, list[dict[str, Any]]] = {}
        for task, locals_ in by_task.items():
            ds = self.datasets[task]
            if isinstance(ds, datasets.Dataset):
                columns = ds[locals_]
                keys = list(columns)
                rows[task] = [{k: columns[k][j] for k in keys} for j in range(len(locals_))]
            else:
                rows[task] = [dict(ds[j]) for j in locals_]
        cursor = {task: 0 for task in rows}
        out = []
        for task, _ in located:
            item = dict(rows[task][cursor[task]])
            cursor[task] += 1
            item["task"] = task
            out.append(item)
        return out


def _as_list(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if hasattr(value, "tolist") and not isinstance(value, (list, tuple)):
        return value.tolist()
    return value


class MultiTaskCollator:
    """Pads a single-task batch and adds its task name.

    Returns ``input_ids``, ``attention_mask`` (``token_type_ids`` when present), ``labels`` (a LongTensor ``[B]``
    for sequence tasks, ``[B, T]`` padded with -100 for token tasks) and ``task`` (the batch's task name). A batch
    mixing tasks is a ``ValueError``. Joint examples, whose ``labels`` is a dict ``{task: label}``, give ``labels``
    as ``{task: tensor}`` (a missing label is -100) and ``task=None``. Feature keys other than the model inputs,
    ``labels`` and ``task`` are ignored.
    """

    def __init__(self, tokenizer, pad_to_multiple_of: int | None = None, label_pad_token_id: int = IGNORE_INDEX):
        self.tokenizer = tokenizer
        self.pad_to_multiple_of = pad_to_multiple_of
        self.label_pad_token_id = label_pad_token_id
        names = set(getattr(tokenizer, "model_input_names", None) or ())
        self.input_names = names | {"input_ids", "attention_mask", "token_type_ids"}

    def _pad_labels(self, rows: list[Any], length: int) -> torch.Tensor:
        pad = self.label_pad_token_id
        left = getattr(self.tokenizer, "padding_side", "right") == "left"
        out = torch.full((len(rows), length), pad, dtype=torch.long)
        for i, row in enumerate(rows):
            if row is None:
                continue
            row = list(row)[:length]
            if row:
                if left:
                    out[i, length - len(row) :] = torch.tensor(row, dtype=torch.long)
                else:
                    out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        return out

    def _labels_tensor(self, rows: list[Any], length: int) -> torch.Tensor:
        present = [r for r in rows if r is not None]
        if present and isinstance(present[0], (list, tuple)):
            return self._pad_labels(rows, length)
        return torch.tensor([self.label_pad_token_id if r is None else int(r) for r in rows], dtype=torch.long)

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        if not features:
            raise ValueError("MultiTaskCollator got an empty batch.")
        tasks = []
        labels = []
        inputs = []
        for feature in features:
            tasks.append(feature.get("task"))
            labels.append(_as_list(feature.get("labels")))
            inputs.append({k: _as_list(v) for k, v in feature.items() if k in self.input_names})
        has_labels = [label is not None for label in labels]
        if any(has_labels) and not all(has_labels):
            raise ValueError("MultiTaskCollator: some features of the batch have 'labels' and others do not.")
        joint = any(isinstance(label, Mapping) for label in labels)
        if joint and not all(isinstance(label, Mapping) for label in labels):
            raise ValueError("MultiTaskCollator: a batch mixes joint examples (labels dict) with single-task ones.")
        if not joint and len(set(tasks)) > 1:
            raise ValueError(
                f"MultiTaskCollator: the batch mixes tasks {sorted(set(map(str, tasks)))}; every batch must hold one "
                "task (use a task-aware batch sampler)."
            )
        batch = dict(
            self.tokenizer.pad(inputs, padding=True, pad_to_multiple_of=self.pad_to_multiple_of, return_tensors="pt")
        )
        length = batch["input_ids"].shape[1]
        if joint:
            names = []
            for label in labels:
                names.extend(t for t in label if t not in names)
            batch["labels"] = {
                t: self._labels_tensor([_as_list(label.get(t)) for label in labels], length) for t in names
            }
            batch["task"] = None
        else:
            if all(has_labels):
                batch["labels"] = self._labels_tensor(labels, length)
            batch["task"] = tasks[0]
        return batch
