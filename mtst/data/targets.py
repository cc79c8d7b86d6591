"""The data of multi-label and regression tasks: checked and converted as the other tasks' rows are.

A multi_label_classification row holds zero or more label names: a list (JSON files, Hub datasets, a `ClassLabel`
list), or a string cut at the task's `label_separator` (CSV/TSV). Its labels are the config's `labels`, or the names
found in the train split (sorted, logged); a row with no label is allowed and counted. `label` becomes the list of
their ids. `pos_weight: true` weighs each label's positive rows by `negatives / positives` of the train split.

A regression row holds one number (or text holding one, as CSV gives it). The train split's mean and standard deviation
standardise the scores for the loss; they are kept with the task (`score_mean`, `score_std`) and the model's output
is on the data's own scale.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import datasets
import numpy as np

from mtst.data.errors import TaskDataError, short
from mtst.data.pairs import number
from mtst.data.tags import is_int
from mtst.data.tasks import TaskSpec
from mtst.remote.configuration_mtst import MULTI_LABEL_CLASSIFICATION, REGRESSION

logger = logging.getLogger(__name__)

__all__ = ["finish_targets", "infer_multi_labels", "target_converter"]


def _class_names(ds: datasets.Dataset, column: str) -> list[str] | None:
    """The names of a list-of-ClassLabel column, else None."""
    feature = getattr((ds.features or {}).get(column), "feature", None)
    return list(feature.names) if isinstance(feature, datasets.ClassLabel) else None


def _names(spec: TaskSpec, value: Any, class_names: list[str] | None) -> tuple[list | None, str | None]:
    """(the label names of one multi-label cell, None) or (None, what is wrong with it)."""
    if value is None and spec.label_separator is not None:  # an empty CSV/TSV cell: a row with no label
        return [], None
    if value is None:
        return None, f"missing labels in column '{spec.label_column}' (an empty list [] is a row with no label)"
    if isinstance(value, str):
        if spec.label_separator is None:
            return None, (
                f"labels {short(value)} are a string, not a list of label names; for delimited strings (CSV, TSV) "
                "declare the task's label_separator"
            )
        return [part.strip() for part in value.split(spec.label_separator) if part.strip()], None
    if isinstance(value, Mapping) or not isinstance(value, (list, tuple)):
        return None, f"labels {short(value)} are not a list of label names"
    names = []
    for item in value:
        if class_names is not None and is_int(item):
            item = class_names[item] if 0 <= item < len(class_names) else item
        if not isinstance(item, str) or not item.strip():
            return None, f"label {short(item)} in {short(list(value))} is not a label name"
        names.append(item)
    return names, None


def infer_multi_labels(spec: TaskSpec, train: list[tuple[datasets.Dataset, Any]]) -> None:
    """A multi-label task's labels: the names of its train split's `ClassLabel` list feature, else the values found
    there, sorted (logged); rows with problems are left to the conversion, which names them."""
    named = [_class_names(ds, spec.label_column) for ds, _ in train]
    if named and named[0] is not None and all(n == named[0] for n in named):
        spec.labels, spec.labels_inferred = named[0], True
        return
    found: set[str] = set()
    for ds, _ in train:
        class_names = _class_names(ds, spec.label_column)
        for value in ds[spec.label_column]:
            names, _ = _names(spec, value, class_names)
            found.update(names or ())
    if not found:
        raise TaskDataError(
            f"Task '{spec.name}': the train split's '{spec.label_column}' column holds no label name, so no labels "
            "can be inferred; list them under 'labels'."
        )
    spec.labels = sorted(found)
    spec.labels_inferred = True
    logger.warning(
        "Task '%s': no labels in the config; inferred %d labels from the values of the train split (sorted): %s. List "
        "them under 'labels' to fix the order.",
        spec.name,
        len(spec.labels),
        spec.labels,
    )


def _text_columns(spec: TaskSpec) -> dict[str, str]:
    columns = {"text": spec.text_column}
    if spec.text_pair_column:
        columns["text_pair"] = spec.text_pair_column
    return columns


def target_converter(spec: TaskSpec, ds: datasets.Dataset):
    """(convert, features) for `Dataset.map`: `text` (`text_pair`) and `label`, the label ids of a multi-label row or
    the score of a regression row; a row's problems go to `__error__`."""
    multi = spec.type == MULTI_LABEL_CLASSIFICATION
    index = {name: i for i, name in enumerate(spec.labels or ())}
    class_names = _class_names(ds, spec.label_column) if multi else None
    columns = _text_columns(spec)

    def label(value: Any, problems: list[str]):
        if not multi:
            if isinstance(value, (list, tuple, Mapping)):
                problems.append(
                    f"score {short(value)} in column '{spec.label_column}' is a {type(value).__name__}, not a number "
                    "(a list of labels per row is data for multi_label_classification)"
                )
                return 0.0
            score = number(value)
            if score is None:
                problems.append(f"score {short(value)} in column '{spec.label_column}' is not a number")
            return 0.0 if score is None else score
        names, problem = _names(spec, value, class_names)
        if problem:
            problems.append(problem)
            return []
        unknown = [name for name in names if name not in index]
        if unknown:
            problems.append(f"label {short(unknown[0])} is not in the label set")
            return []
        return sorted({index[name] for name in names})

    def convert(batch: dict[str, list]) -> dict[str, list]:
        out: dict[str, list] = {key: [] for key in (*columns, "label", "__error__", "__repaired__")}
        for i, value in enumerate(batch[spec.label_column]):
            problems: list[str] = []
            for key, column in columns.items():
                text = batch[column][i]
                text = "" if text is None else text if isinstance(text, str) else str(text)
                if not text.strip():
                    problems.append(f"empty text {short(text)} in column '{column}'")
                out[key].append(text)
            out["label"].append(label(value, problems))
            out["__error__"].append("; ".join(problems))
            out["__repaired__"].append(0)
        return out

    features = {key: datasets.Value("string") for key in columns}
    features["label"] = datasets.List(datasets.Value("int32")) if multi else datasets.Value("float32")
    return convert, features


def finish_targets(spec: TaskSpec, train: datasets.Dataset) -> None:
    """What the train split decides for the task: a regression task's mean and standard deviation (its scores are
    standardised with them); a multi-label task's rows without a label (logged) and, with `pos_weight: true`, each
    label's `negatives / positives` weight (a label the train split never has gets 1)."""
    if spec.type == REGRESSION:
        scores = np.asarray(train["label"], dtype=np.float64)
        std = float(scores.std())
        if len(scores) < 2 or not std > 0:
            raise TaskDataError(
                f"Task '{spec.name}': the train split's scores are all {short(float(scores[0]))}; a regression task "
                "needs scores that vary."
            )
        spec.score_mean, spec.score_std = float(scores.mean()), std
        logger.info(
            "Task '%s': scores standardised with the train split's mean %.6g and standard deviation %.6g.",
            spec.name,
            spec.score_mean,
            spec.score_std,
        )
        return
    counts = np.zeros(len(spec.labels), dtype=np.int64)
    empty = 0
    for ids in train["label"]:
        counts[ids] += 1
        empty += not ids
    if empty:
        logger.info("Task '%s': %d of %d train rows have no label.", spec.name, empty, len(train))
    never = [spec.labels[i] for i in np.nonzero(counts == 0)[0]]
    if never:
        logger.warning("Task '%s': label(s) %s occur in no train row.", spec.name, never)
    if spec.pos_weight:
        negatives = len(train) - counts
        spec.pos_weight_values = [float(n / c) if c else 1.0 for n, c in zip(negatives, counts)]
        logger.info("Task '%s': positive-row weights per label: %s", spec.name, spec.pos_weight_values)
