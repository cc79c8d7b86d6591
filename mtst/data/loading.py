"""Reading a task's data for MTST: its files or Hub dataset, validation with clear errors, labels as ids.

``load_task_data(spec)`` reads the splits of a ``mtst.data.tasks.TaskSpec`` with ``datasets``' builders (``json``,
``csv``, ``parquet`` and ``conll``), checks every row and returns a ``DatasetDict`` whose sequence tasks have
``text`` (``text_pair``) and ``label`` and whose token tasks have ``tokens`` and ``tags``, labels as ids into
``spec.labels``. Bad data raises ``TaskDataError`` (a ``ValueError``) with one paragraph that names the task, the
file, the row and the offending value, unless ``drop_invalid=True``, which drops the bad rows, logs how many and
records the count in ``spec.dropped``.

The builders parse the files (``mtst.data.files``, which also checks each file before a builder sees it and turns a
row index into a line number for the errors of this module).
"""

from __future__ import annotations

import difflib
import json
import logging
import re
from collections.abc import Mapping
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.compute as pc

from mtst.data.errors import TaskDataError, paragraph, short
from mtst.data.files import Locator, load_raw
from mtst.data.pairs import infer_score_range, pair_columns, pair_converter
from mtst.data.tags import is_int, repair_iob2, sort_labels, split_tag
from mtst.data.targets import finish_targets, infer_multi_labels, target_converter
from mtst.data.tasks import SPLITS, TaskSpec
from mtst.remote.configuration_mtst import MULTI_LABEL_CLASSIFICATION, REGRESSION, SENTENCE_SIMILARITY
from mtst.remote.configuration_mtst import SEQUENCE_CLASSIFICATION as SEQUENCE

logger = logging.getLogger(__name__)

__all__ = ["convert_splits", "in_memory_splits", "load_task_data", "row_converter"]


# ----------------------------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------------------------
# Validation and conversion
# ----------------------------------------------------------------------------------------------------------------


def _label_feature(ds: datasets.Dataset, column: str, token: bool) -> list[str] | None:
    """Names of a ClassLabel column (or of the ClassLabel inside a list column), else None."""
    feature = (ds.features or {}).get(column)
    if token:
        feature = getattr(feature, "feature", None)
    return list(feature.names) if isinstance(feature, datasets.ClassLabel) else None


def _require_columns(spec: TaskSpec, ds: datasets.Dataset, locator: Locator) -> None:
    if spec.is_embedding_task:
        needed = pair_columns(spec)
    elif spec.is_token_task:
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
    try:
        return pc.unique(col).to_pylist()
    except pa.ArrowNotImplementedError:  # lists, mappings or mixed JSON values: no arrow kernel, Python does it
        values = [t for tags in ds[column] for t in tags] if token else ds[column]
        return list({json.dumps(v, sort_keys=True, default=str): v for v in values}.values())


def _label_kind_problem(value: Any) -> str | None:
    """Why `value` cannot be the one label of a sequence_classification row, naming the task type its data is for
    (None when it can be: a name, a class id, or missing)."""
    if isinstance(value, (list, tuple)):
        return (
            f"label {short(value)} is a list: a sequence_classification row has one label, and a list of labels per "
            f"row is data for task type multi_label_classification"
        )
    if isinstance(value, Mapping):
        return f"label {short(value)} is a mapping, not a label name or class id"
    if isinstance(value, float) and not value.is_integer():
        return (
            f"label {value!r} is a fractional number, not a label name or class id: numbers as targets are data for "
            f"task type regression (or, for the similarity of two texts' embeddings, sentence_similarity)"
        )
    return None


def _infer_labels(spec: TaskSpec, train: list[tuple[datasets.Dataset, Locator]]) -> None:
    token = spec.is_token_task
    column = spec.tags_column if token else spec.label_column
    names = [_label_feature(ds, column, token) for ds, _ in train]
    if names and all(n is not None for n in names) and all(n == names[0] for n in names):
        labels, how = names[0], "from the ClassLabel feature of the train split"
    else:
        values: set[Any] = set()
        refused = None  # (file, problem) of the first value that is no label; the conversion names each row
        for ds, locator in train:
            class_names = _label_feature(ds, column, token)
            for value in _unique_values(ds, column, token):
                if not token and _label_kind_problem(value):
                    refused = refused or (ds, locator)
                    continue
                if class_names is not None and is_int(value):
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
            + (f" Other rows hold values that are no label: {_first_refused(refused, column)}." if refused else "")
        )
    spec.labels = list(labels)
    spec.labels_inferred = True


def _first_refused(where: tuple[datasets.Dataset, Locator], column: str) -> str:
    """'<file, line>: <why>' for the first row of the file whose label value no sequence task takes."""
    ds, locator = where
    for index, value in enumerate(ds[column]):
        if problem := _label_kind_problem(value):
            return f"{locator(index)}: {problem}"
    return "(none found)"


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
        if is_int(value):
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
            refused = _label_kind_problem(label)
            label_id = None if refused else mapper(label)
            if label is None or label == "":
                problems.append(f"missing label in column '{label_col}'")
            elif refused:
                problems.append(refused)
            elif label_id is None:
                problems.append(f"label {short(mapper.name(label))} is not in the label set")
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
                    f"{short(list(tokens))}, tags {short(list(tags))})"
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
                    bad = [(i, t) for i, t in enumerate(names) if split_tag(t)[0] is None]
                    if bad:
                        i, t = bad[0]
                        problems.append(
                            f"tag {short(t)} at position {i + 1} (token {tokens[i]!r}) is not an IOB tag (O, "
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
                                f"tag {short(name)} at position {i + 1} (token {tokens[i]!r}) is not in the label set"
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


def row_converter(spec: TaskSpec, ds):
    """(convert, features): the batched function that checks raw rows of `ds` (a `Dataset` or `IterableDataset`,
    whose features name its `ClassLabel`s) and turns them into the canonical columns, a row's problems in
    `__error__` (empty when valid); and the features of its valid output (without the helper columns)."""
    token = spec.is_token_task
    column = spec.tags_column if token else spec.label_column
    if spec.is_embedding_task:
        return pair_converter(spec)
    if spec.type in (MULTI_LABEL_CLASSIFICATION, REGRESSION):
        return target_converter(spec, ds)
    mapper = _LabelMapper(spec, _label_feature(ds, column, token))
    return (_token_converter if token else _sequence_converter)(spec, mapper)


def _convert_file(spec: TaskSpec, ds: datasets.Dataset, split: str) -> datasets.Dataset:
    convert, features = row_converter(spec, ds)
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


def _convert_split(spec: TaskSpec, split: str, files: list, problems: list[str]) -> datasets.Dataset:
    """One split's files converted and concatenated; invalid rows are removed and described in `problems`, and the
    dropped and repaired counts recorded in the spec."""
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
    return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)


def _report_invalid_rows(spec: TaskSpec, problems: list[str], drop_invalid: bool) -> None:
    """Raise `TaskDataError` listing the problems, or (drop_invalid) log how many rows were dropped."""
    if not drop_invalid:
        spec.dropped = {}
        known = (
            ""
            if spec.is_embedding_task or spec.type == REGRESSION
            else f"Label set of task '{spec.name}': {_LabelMapper(spec, None).label_set()}. "
        )
        raise TaskDataError(
            paragraph(
                f"Task '{spec.name}' ({spec.type}) has invalid data:",
                problems,
                f"{known}Fix the data, or pass drop_invalid=True to drop invalid rows (they are counted and logged).",
            )
        )
    logger.warning(
        "Task '%s': dropped %d invalid row(s) (%s). First problems: %s",
        spec.name,
        len(problems),
        ", ".join(f"{s}: {n}" for s, n in spec.dropped.items()),
        "; ".join(problems[:3]),
    )


def _carve_validation(spec: TaskSpec, train: datasets.Dataset, seed: int, validation_fraction: float):
    """(train, validation): a stratified (when it can be) share of train, for a task without a validation split."""
    fraction = spec.validation_fraction if spec.validation_fraction is not None else validation_fraction
    if len(train) < 2 or not 0 < fraction < 1:
        raise TaskDataError(
            f"Task '{spec.name}': no validation split, and {len(train)} train rows cannot be split with "
            f"validation_fraction={fraction}."
        )
    try:
        parts = train.train_test_split(
            test_size=fraction, seed=seed, stratify_by_column="label" if spec.type == SEQUENCE else None
        )
    except ValueError:  # a class too small to stratify
        parts = train.train_test_split(test_size=fraction, seed=seed)
    logger.info(
        "Task '%s': no validation split; carved %d of %d train rows (%.0f%%, seed %d) as validation.",
        spec.name,
        len(parts["test"]),
        len(train),
        fraction * 100,
        seed,
    )
    return parts["train"], parts["test"]


def in_memory_splits(spec: TaskSpec, data) -> dict[str, list[tuple[datasets.Dataset, Locator]]]:
    """`{split: [(dataset, locator)]}` for data given in memory: a `datasets.Dataset` (the train split), a
    `DatasetDict` or a mapping `{split: Dataset}` with the splits train (required), validation and test."""
    if isinstance(data, datasets.Dataset):
        data = {"train": data}
    if isinstance(data, datasets.IterableDataset) or not isinstance(data, Mapping):
        raise TaskDataError(
            f"Task '{spec.name}': its data must be a datasets.Dataset (the train split), a DatasetDict or a mapping "
            f"{{split: Dataset}}; got {type(data).__name__}."
        )
    unknown = [split for split in data if split not in SPLITS]
    if unknown:
        raise TaskDataError(
            f"Task '{spec.name}': unknown split(s) {unknown} in its data; allowed splits: {', '.join(SPLITS)}."
        )
    raw = {}
    for split in SPLITS:
        if split not in data:
            continue
        ds = data[split]
        if not isinstance(ds, datasets.Dataset):
            raise TaskDataError(
                f"Task '{spec.name}': its {split} split must be a datasets.Dataset; got {type(ds).__name__}."
            )
        raw[split] = [(ds, Locator(None, "memory", f"task '{spec.name}', {split} split"))]
    return raw


def convert_splits(spec: TaskSpec, raw: Mapping[str, list], drop_invalid: bool = False) -> dict[str, datasets.Dataset]:
    """Every split checked (columns, labels: inferred from train when the spec has none) and converted to the
    canonical columns with labels as ids; invalid rows raise one `TaskDataError`, or are dropped (`drop_invalid`)."""
    for files in raw.values():
        for ds, locator in files:
            _require_columns(spec, ds, locator)
    if spec.is_embedding_task:
        if spec.score_range is None and spec.type == SENTENCE_SIMILARITY and "train" not in raw:
            raise TaskDataError(
                f"Task '{spec.name}': no score_range is given and there is no train split to infer it."
            )
        infer_score_range(spec, raw.get("train", []))
    elif spec.labels is None and spec.type != REGRESSION:
        if "train" not in raw:
            raise TaskDataError(f"Task '{spec.name}': no labels are given and there is no train split to infer them.")
        (infer_multi_labels if spec.type == MULTI_LABEL_CLASSIFICATION else _infer_labels)(spec, raw["train"])
    problems: list[str] = []
    spec.dropped, spec.repaired = {}, {}
    converted = {split: _convert_split(spec, split, files, problems) for split, files in raw.items()}
    if problems:
        _report_invalid_rows(spec, problems, drop_invalid)
    for split, ds in converted.items():
        if len(ds) == 0:
            raise TaskDataError(f"Task '{spec.name}': the {split} split has no valid rows left.")
    return converted


def load_task_data(
    spec: TaskSpec,
    seed: int = 42,
    validation_fraction: float = 0.1,
    drop_invalid: bool = False,
    cache_dir: str | None = None,
    data=None,
) -> datasets.DatasetDict:
    """Load, validate and convert a task's splits.

    Returns a ``DatasetDict`` with ``train``, ``validation`` (carved from train with ``seed`` when missing; the
    task's ``validation_fraction`` overrides the argument) and ``test`` (when given). Columns: sequence tasks
    ``text``, optional ``text_pair``, ``label`` (id into ``spec.labels``); token tasks ``tokens``, ``tags`` (ids into
    ``spec.labels``). ``spec.labels`` is filled in when inferred. Invalid rows raise one ``TaskDataError`` listing the
    first problems with file, row and value, or with ``drop_invalid=True`` are dropped, logged and counted in
    ``spec.dropped``.

    ``data`` gives the task's splits in memory instead of its files or Hub dataset: a ``datasets.Dataset`` (the train
    split), a ``DatasetDict`` or ``{split: Dataset}``, with labels as names or ``ClassLabel`` ids, in the columns the
    spec names; they are checked and converted exactly as files are.
    """
    if spec.streaming and data is not None:
        raise TaskDataError(
            f"Task '{spec.name}' streams its train split from its files or Hub dataset; data given in memory is not "
            "streamed (leave out `streaming: true`, or pass the train split as a StreamingTrainSplit)."
        )
    splits = ("validation", "test") if spec.streaming else SPLITS  # the train split streams while training
    raw = load_raw(spec, cache_dir, splits) if data is None else in_memory_splits(spec, data)
    if spec.streaming and "validation" not in raw:
        raise TaskDataError(
            f"Task '{spec.name}' streams its train split, so no validation split can be carved from it: give one "
            "(data_files: validation, or a Hub dataset with a validation split)."
        )
    converted = convert_splits(spec, raw, drop_invalid)
    if "validation" not in converted:
        converted["train"], converted["validation"] = _carve_validation(
            spec, converted["train"], seed, validation_fraction
        )
    if spec.type in (MULTI_LABEL_CLASSIFICATION, REGRESSION) and not spec.streaming:  # what train decides
        finish_targets(spec, converted["train"])

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
