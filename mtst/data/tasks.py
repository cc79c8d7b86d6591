"""Tasks for MTST: task specs read from a task config, and tokenization with sub-word label alignment.

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

Data flows ``load_task_specs`` (this module) -> ``mtst.data.loading.load_task_data`` (raw splits, validated, labels
as ids into ``spec.labels``) -> ``tokenize_task`` (this module: ``input_ids``, ``attention_mask``, ``labels``) ->
``mtst.data.collator.MultiTaskDataset`` -> ``mtst.data.collator.MultiTaskCollator``.

A bad task config raises ``TaskConfigError`` (a ``ValueError``) with one paragraph that names the config file, the
task and every problem found, before any data is read.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mtst.data.config_files import ConfigFileError, read_config_file
from mtst.data.errors import TaskConfigError, paragraph, short
from mtst.data.formats import FORMATS, file_format
from mtst.data.tags import TAG_SCHEMES, is_int, split_tag
from mtst.data.task_rules import (
    DEFAULT_BUFFER_SIZE,
    embedding_problems,
    fraction_problem,
    labels_problem_of,
    streaming_problems,
    target_problems,
)
from mtst.remote.configuration_mtst import (
    EMBEDDING_LOSSES,
    EMBEDDING_TASK_TYPES,
    HEAD_DEFAULTS,
    MULTI_LABEL_CLASSIFICATION,
    REGRESSION,
    RETRIEVAL,
    SENTENCE_SIMILARITY,
    TASK_TYPES,
    MTSTConfigError,
    check_head_options,
    labels_problem,
    loss_weight_problem,
    score_range_problem,
    task_name_problem,
)
from mtst.remote.configuration_mtst import SEQUENCE_CLASSIFICATION as SEQUENCE
from mtst.remote.configuration_mtst import TOKEN_CLASSIFICATION as TOKEN

logger = logging.getLogger(__name__)

__all__ = ["SPLITS", "TaskSpec", "load_task_specs"]

SPLITS = ("train", "validation", "test")
# The Hub's automatic parquet export of a dataset: one folder per config, {config}/{split}/NNNN.parquet.
PARQUET_EXPORT_REVISION = "refs/convert/parquet"
HEAD_OPTIONS = tuple(HEAD_DEFAULTS)


# ----------------------------------------------------------------------------------------------------------------
# Task specs
# ----------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class TaskSpec:
    """One task: where its data lives, which columns hold what, its labels and its per-task options.

    Args:
        name: Task name (letters, digits, ``_`` and ``-``; used as head name and metric prefix).
        type: ``"sequence_classification"``, ``"token_classification"``, ``"multi_label_classification"`` (zero or
            more labels per text), ``"regression"`` (a number per text), or an embedding task (no head, no labels):
            ``"sentence_similarity"`` (a score per text pair) or ``"retrieval"`` (query and positive pairs).
        dataset: Hub dataset id (exclusive with ``data_files``).
        dataset_config: Hub dataset config name.
        revision: Hub revision: a branch, tag or commit sha, or ``refs/convert/parquet`` (the Hub's parquet
            export, where ``dataset_config`` names the export's folder of that config).
        data_files: ``{split: path or [paths]}`` with splits ``train`` (required), ``validation``, ``test``.
        text_column, text_pair_column, label_column: sentence task columns (the label column of a multi-label task
            holds a list of label names, of a regression task a number); for embedding tasks the two texts of a
            pair (both required) and, for sentence_similarity, the score.
        label_separator: multi-label tasks: the separator of label names in a string (CSV/TSV), e.g. ``"|"``.
        threshold: multi-label tasks: the probability from which a label is predicted (default 0.5).
        tune_threshold: multi-label tasks: after training, each label's threshold is the one that maximises its F1
            on the validation split (logged and saved in the model's config).
        pos_weight: multi-label tasks: weigh each label's positive rows by its negatives / positives in train.
        negative_column: retrieval tasks: an optional column of hard negatives (one text per row).
        score_range: sentence_similarity tasks: ``[low, high]`` of the scores (``None``: the train split's, logged);
            scores are scaled to [0, 1] with it.
        loss: embedding tasks: ``cosent`` (default) or ``cosine_mse`` for sentence_similarity,
            ``multiple_negatives_ranking`` for retrieval.
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
        score_mean, score_std: regression tasks: the train split's mean and standard deviation (``load_task_data``).
        pos_weight_values: multi-label tasks with ``pos_weight``: the weight per label (``load_task_data``).
        streaming: read the train split as a stream while training (``mtst.data.streaming``), never whole.
        num_examples: a streaming task's train rows per epoch (default: the Hub dataset's metadata).
        buffer_size: a streaming task's rows read, shuffled and length-grouped at a time (default 4096).
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
    negative_column: str | None = None
    score_range: list[float] | None = None
    loss: str | None = None
    base_dir: str | None = None
    dropped: dict[str, int] = dataclasses.field(default_factory=dict)
    repaired: dict[str, int] = dataclasses.field(default_factory=dict)
    truncated: dict[str, int] = dataclasses.field(default_factory=dict)
    labels_inferred: bool = False
    label_separator: str | None = None
    threshold: float = 0.5
    tune_threshold: bool = False
    pos_weight: bool = False
    score_mean: float | None = None
    score_std: float | None = None
    pos_weight_values: list[float] | None = None
    streaming: bool = False
    num_examples: int | None = None
    buffer_size: int = DEFAULT_BUFFER_SIZE

    def __post_init__(self):
        """The rules a task config's entry is checked by (`load_task_specs`), for specs built in Python too."""
        problems = [problem] if (problem := task_name_problem(self.name)) else []
        if self.type not in TASK_TYPES:
            problems.append(f"unknown task type {short(self.type)}; allowed types: {', '.join(TASK_TYPES)}")
        if self.labels is not None and (problem := labels_problem_of(self.type, self.labels)):
            problems.append(problem)
        problems += target_problems(self)
        if problem := loss_weight_problem(self.loss_weight):
            problems.append(problem)
        if self.type in EMBEDDING_TASK_TYPES:
            problems += embedding_problems(self)
        unknown = sorted(set(self.head) - set(HEAD_OPTIONS))
        problems += (
            [f"unknown head option(s) {short(unknown, 200)}; allowed: {', '.join(HEAD_OPTIONS)}"] if unknown else []
        )
        problems += _head_problems({k: v for k, v in self.head.items() if k in HEAD_OPTIONS}, "head option")
        problems += streaming_problems(self)
        if problems:
            raise TaskConfigError(f"Task {short(self.name)}: " + "; ".join(problems) + ".")

    @property
    def is_token_task(self) -> bool:
        return self.type == TOKEN

    @property
    def is_embedding_task(self) -> bool:
        """A sentence_similarity or retrieval task: it trains the sentence embedding (pairs of texts, no head)."""
        return self.type in EMBEDDING_TASK_TYPES

    @property
    def uses_iob(self) -> bool:
        return self.is_token_task and self.tag_scheme in ("iob2", "bio", "iob1")

    @property
    def num_labels(self) -> int:
        if self.type == REGRESSION:
            return 1
        if self.labels is None:
            raise TaskConfigError(f"Task '{self.name}': labels are not known yet; call load_task_data first.")
        return len(self.labels)

    def to_model_task(self) -> dict[str, Any]:
        """The entry of ``MTSTConfig.tasks`` for this task: type, labels, head options and loss weight (an
        embedding task: type, loss, score range and loss weight)."""
        if self.is_embedding_task:
            task = {"type": self.type, "loss": self.loss, "loss_weight": self.loss_weight}
            if self.type == SENTENCE_SIMILARITY:
                task["score_range"] = list(self.score_range) if self.score_range is not None else None
            return task
        if self.type == REGRESSION:
            stats = {"score_mean": self.score_mean or 0.0, "score_std": self.score_std or 1.0}
            return {"type": self.type, **dict(self.head), "loss_weight": self.loss_weight, **stats}
        if self.labels is None:
            raise TaskConfigError(
                f"Task '{self.name}': labels are not known yet (none in the config); call load_task_data first, "
                "which infers them from the train split."
            )
        task = {"type": self.type, "labels": list(self.labels), **dict(self.head), "loss_weight": self.loss_weight}
        if self.type == MULTI_LABEL_CLASSIFICATION:
            task.update(thresholds=[self.threshold] * len(self.labels), pos_weight=self.pos_weight_values)
        return task

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
    "streaming",
    "num_examples",
    "buffer_size",
)
_SENTENCE_KEYS = ("text_column", "text_pair_column", "label_column")
_TYPE_KEYS = {
    SEQUENCE: _SENTENCE_KEYS,
    MULTI_LABEL_CLASSIFICATION: (*_SENTENCE_KEYS, "label_separator", "threshold", "tune_threshold", "pos_weight"),
    REGRESSION: _SENTENCE_KEYS,
    TOKEN: ("tokens_column", "tags_column", "tag_scheme", "strict_iob", "conll_columns"),
    SENTENCE_SIMILARITY: (*_SENTENCE_KEYS, "score_range", "loss"),
    RETRIEVAL: ("text_column", "text_pair_column", "negative_column", "loss"),
}
# Keys of head tasks only: embedding tasks have no labels and no head.
_HEAD_ONLY_KEYS = ("labels", "head")


def _allowed_keys(task_type: str | None) -> tuple[str, ...]:
    if task_type in EMBEDDING_TASK_TYPES:
        return tuple(k for k in _COMMON_KEYS if k not in _HEAD_ONLY_KEYS) + _TYPE_KEYS[task_type]
    if task_type in _TYPE_KEYS:
        return _COMMON_KEYS + _TYPE_KEYS[task_type]
    return tuple(dict.fromkeys(_COMMON_KEYS + sum(_TYPE_KEYS.values(), ())))


def _suggest(key: str, allowed: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(allowed), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _head_problems(head: Mapping[str, Any], where: str) -> list[str]:
    """What is wrong with these head options, by the model config's rules (``configuration_mtst``)."""
    try:
        check_head_options(head, where)
    except MTSTConfigError as err:
        return [str(err).rstrip(".")]
    return []


def _check_label_list(where: str, labels: Any, type_: str, tag_scheme: str, problems: list[str]) -> list[str] | None:
    """The label names (integers in a config are names too), checked by the model config's rule
    (`labels_problem`) and, for IOB tag schemes, as IOB tags."""
    if isinstance(labels, (list, tuple)) and all(is_int(label) for label in labels):
        labels = [str(label) for label in labels]
    problem = labels_problem_of(type_, labels) if type_ in TASK_TYPES else labels_problem(labels)
    if problem:
        problems.append(f"{where}: {problem}")
        return None
    names = list(labels)
    if type_ == TOKEN and tag_scheme in ("iob2", "bio", "iob1"):
        bad = [n for n in names if split_tag(n)[0] is None]
        if bad:
            problems.append(
                f"{where}: labels {short(bad, 200)} are not IOB tags (O, B-<type>, I-<type>) but tag_scheme is "
                f"'{tag_scheme}'; use tag_scheme: none for plain tags"
            )
    return names


_STRING_KEYS = (
    "dataset",
    "dataset_config",
    "revision",
    "text_column",
    "text_pair_column",
    "label_column",
    "tokens_column",
    "tags_column",
    "negative_column",
    "loss",
    "label_separator",
)


def _check_keys(entry: Mapping, where: str, type_: str | None, problems: list[str]) -> None:
    allowed = _allowed_keys(type_)
    for key in entry:
        if key not in allowed:
            problems.append(
                f"{where}: unknown key {short(key)}{_suggest(str(key), allowed)}; allowed keys"
                f"{' for ' + type_ + ' tasks' if type_ else ''}: {', '.join(allowed)}"
            )


def _parse_strings(entry: Mapping, where: str, type_: str | None, problems: list[str]) -> dict[str, Any]:
    """The string options, the tag scheme and the file format."""
    kwargs: dict[str, Any] = {}
    for key in _STRING_KEYS:
        if key in entry and entry[key] is not None:
            if not isinstance(entry[key], str) or not entry[key]:
                problems.append(f"{where}: {key!r} must be a non-empty string, got {short(entry[key])}")
            else:
                kwargs[key] = entry[key]
    tag_scheme = entry.get("tag_scheme", "iob2")
    if tag_scheme not in TAG_SCHEMES:
        problems.append(f"{where}: unknown tag_scheme {short(tag_scheme)}; allowed: {', '.join(TAG_SCHEMES)}")
        tag_scheme = "iob2"
    kwargs["tag_scheme"] = tag_scheme
    fmt = entry.get("format")
    if fmt is not None:
        if fmt not in FORMATS:
            problems.append(f"{where}: unknown format {short(fmt)}; allowed formats: {', '.join(FORMATS)}")
        elif fmt == "conll" and type_ not in (TOKEN, None):
            problems.append(f"{where}: format 'conll' is only for token_classification tasks")
        else:
            kwargs["format"] = fmt
    return kwargs


def _is_paths(value: Any) -> bool:
    return isinstance(value, (str, os.PathLike)) or (
        isinstance(value, list) and all(isinstance(p, (str, os.PathLike)) for p in value)
    )


def _parse_data_files(data_files: Any, where: str, fmt: str | None, type_: str | None, problems: list[str]):
    """`{split: [paths]}` from the `data_files` entry (a path or a list of paths is the train split)."""
    if _is_paths(data_files):
        data_files = {"train": data_files}
    if not isinstance(data_files, Mapping):
        problems.append(f"{where}: 'data_files' must be a mapping {{train: path, validation: path, test: path}}")
        return None
    files: dict[str, list[str]] = {}
    for split, paths in data_files.items():
        if split not in SPLITS:
            problems.append(
                f"{where}: unknown split {short(split)} in 'data_files'{_suggest(str(split), SPLITS)}; "
                f"allowed splits: {', '.join(SPLITS)}"
            )
            continue
        paths = [paths] if isinstance(paths, (str, os.PathLike)) else paths
        if not isinstance(paths, list) or not paths or not _is_paths(paths):
            problems.append(f"{where}: data_files[{short(split)}] must be a path or a non-empty list of paths")
            continue
        files[split] = [os.fspath(p) for p in paths]
        for path in files[split]:
            try:
                file_format(path, fmt, type_)
            except TaskConfigError as err:
                problems.append(f"{where}: {err}")
    if files and "train" not in files:
        problems.append(
            f"{where}: 'data_files' has no 'train' split (it has {', '.join(files)}); a train split is required"
        )
    return files


def _parse_numbers(entry: Mapping, where: str, problems: list[str]) -> dict[str, Any]:
    """Sample limits, batch size, loss weight, validation fraction, the yes/no options and the threshold."""
    kwargs: dict[str, Any] = {}
    for key in ("max_train_samples", "max_eval_samples", "batch_size", "num_examples", "buffer_size"):
        value = entry.get(key)
        if value is not None:
            if not is_int(value) or value <= 0:
                problems.append(f"{where}: {key!r} must be a positive integer, got {short(value)}")
            else:
                kwargs[key] = value
    if entry.get("loss_weight") is not None:
        problem = loss_weight_problem(entry["loss_weight"])
        if problem:
            problems.append(f"{where}: {problem}")
        else:
            kwargs["loss_weight"] = float(entry["loss_weight"])
    for key in ("validation_fraction", "threshold"):
        if entry.get(key) is not None:
            if problem := fraction_problem(key, entry[key]):
                problems.append(f"{where}: {problem}")
            else:
                kwargs[key] = float(entry[key])
    for key in ("strict_iob", "tune_threshold", "pos_weight", "streaming"):
        if key in entry:
            if not isinstance(entry[key], bool):
                problems.append(f"{where}: {key!r} must be true or false, got {short(entry[key])}")
            else:
                kwargs[key] = entry[key]
    return kwargs


def _parse_conll_columns(columns: Any, kwargs: Mapping, where: str, problems: list[str]) -> list[str] | None:
    if not isinstance(columns, list) or len(columns) < 2 or not all(isinstance(c, str) and c for c in columns):
        problems.append(f"{where}: 'conll_columns' must be a list of at least two column names, got {short(columns)}")
        return None
    tokens_column, tags_column = kwargs.get("tokens_column", "tokens"), kwargs.get("tags_column", "ner_tags")
    missing = [c for c in (tokens_column, tags_column) if c not in columns]
    if missing:
        problems.append(f"{where}: 'conll_columns' {short(columns, 200)} lacks the token/tag column(s) {missing}")
        return None
    return list(columns)


def _parse_head(head: Any, where: str, problems: list[str]) -> dict[str, Any] | None:
    if not isinstance(head, Mapping):
        problems.append(f"{where}: 'head' must be a mapping of head options ({', '.join(HEAD_OPTIONS)})")
        return None
    for key, value in head.items():
        if key not in HEAD_OPTIONS:
            problems.append(
                f"{where}: unknown head option {short(key)}{_suggest(str(key), HEAD_OPTIONS)}; "
                f"allowed head options: {', '.join(HEAD_OPTIONS)}"
            )
        else:
            problems.extend(_head_problems({key: value}, f"{where}: head option"))
    return dict(head)


def _parse_embedding(entry: Mapping, where: str, type_: str, kwargs: dict, problems: list[str]) -> None:
    """An embedding task's pair columns, loss and score range."""
    if not kwargs.get("text_pair_column"):
        problems.append(f"{where}: a {type_} task needs 'text_pair_column' (the second text of each pair)")
    losses = EMBEDDING_LOSSES[type_]
    if kwargs.get("loss") is not None and kwargs["loss"] not in losses:
        problems.append(f"{where}: unknown loss {kwargs['loss']!r}; allowed for {type_}: {', '.join(losses)}")
    if entry.get("score_range") is not None:
        if problem := score_range_problem(entry["score_range"]):
            problems.append(f"{where}: {problem}")
        else:
            kwargs["score_range"] = [float(v) for v in entry["score_range"]]


def _parse_task(entry: Any, index: int, source: str, base_dir: str | None, problems: list[str]) -> TaskSpec | None:
    """One task entry of a config as a `TaskSpec`, or None with every problem found appended to `problems`."""
    label = f"task #{index + 1}"
    if not isinstance(entry, Mapping):
        problems.append(f"{label}{source} must be a mapping of keys, got {type(entry).__name__} {short(entry)}")
        return None
    name = entry.get("name")
    if isinstance(name, str) and name:
        label = f"task {short(name)}"
    where = f"{label}{source}"
    n_before = len(problems)

    if task_name_problem(name):
        problems.append(f"{where}: 'name': {task_name_problem(name)}")
    type_ = entry.get("type")
    if type_ not in TASK_TYPES:
        problems.append(f"{where}: unknown task type {short(type_)}; allowed types: {', '.join(TASK_TYPES)}")
        type_ = None
    _check_keys(entry, where, type_, problems)
    kwargs = _parse_strings(entry, where, type_, problems)
    has_dataset, has_files = "dataset" in kwargs, entry.get("data_files") is not None
    if has_dataset == has_files:
        problems.append(f"{where}: give exactly one of 'dataset' (a Hub id) or 'data_files' ({{split: path}})")
    if has_files:
        files = _parse_data_files(entry["data_files"], where, kwargs.get("format"), type_, problems)
        if files is not None:
            kwargs["data_files"] = files
    if "labels" in entry and entry["labels"] is not None:
        kwargs["labels"] = _check_label_list(where, entry["labels"], type_, kwargs["tag_scheme"], problems)
    kwargs.update(_parse_numbers(entry, where, problems))
    if entry.get("conll_columns") is not None:
        kwargs["conll_columns"] = _parse_conll_columns(entry["conll_columns"], kwargs, where, problems)
    if entry.get("head") is not None:
        kwargs["head"] = _parse_head(entry["head"], where, problems)
    if type_ in EMBEDDING_TASK_TYPES:
        _parse_embedding(entry, where, type_, kwargs, problems)

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
            data = read_config_file(path)
        except ConfigFileError as err:
            raise TaskConfigError(f"Task config {source} {err}.") from err
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
            f"Task config {source}: unknown top-level key(s) {short(unknown, 200)}; the only allowed top-level key is "
            "'tasks'."
        )
    tasks = data.get("tasks")
    if not isinstance(tasks, list) or not tasks:
        raise TaskConfigError(f"Task config {source}: 'tasks' must be a non-empty list of tasks, got {short(tasks)}.")

    problems: list[str] = []
    in_source = f" in {source}" if isinstance(path_or_mapping, (str, os.PathLike)) else ""
    specs = [_parse_task(entry, i, in_source, base, problems) for i, entry in enumerate(tasks)]
    names = [entry.get("name") for entry in tasks if isinstance(entry, Mapping)]
    duplicates = sorted({str(n) for n in names if names.count(n) > 1})
    if duplicates:
        problems.append(f"duplicate task name(s) {short(duplicates, 200)}{in_source}; task names must be unique")
    if problems:
        raise TaskConfigError(paragraph(f"Task config {source} is invalid:", problems))
    return [spec for spec in specs if spec is not None]
