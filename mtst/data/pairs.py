"""The data of embedding tasks (sentence_similarity, retrieval): pairs of texts, checked and converted as the other
tasks' rows are. A similarity task's score is a number within its score range (declared, or the train split's,
logged), scaled to [0, 1]; a retrieval task's rows are a query, its positive and optionally a hard negative."""

from __future__ import annotations

import logging
import math
from typing import Any

import datasets

from mtst.data.errors import TaskDataError, short
from mtst.data.tasks import TaskSpec
from mtst.remote.configuration_mtst import SENTENCE_SIMILARITY

logger = logging.getLogger(__name__)

__all__ = ["infer_score_range", "number", "pair_columns", "pair_converter"]


def pair_columns(spec: TaskSpec) -> list[tuple[str, str]]:
    """`[(option, column)]` an embedding task's files must have."""
    needed = [("text_column", spec.text_column), ("text_pair_column", spec.text_pair_column)]
    if spec.negative_column:
        needed.append(("negative_column", spec.negative_column))
    if spec.type == SENTENCE_SIMILARITY:
        needed.append(("label_column", spec.label_column))
    return needed


def number(value: Any) -> float | None:
    """A score as a finite float (numbers, or text holding one, as CSV files give them); None otherwise."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def infer_score_range(spec: TaskSpec, train: list[tuple[datasets.Dataset, Any]]) -> None:
    """Set a similarity task's `score_range` from its train split's scores when it declares none (logged)."""
    if spec.type != SENTENCE_SIMILARITY or spec.score_range is not None:
        return
    scores = [s for ds, _ in train for s in map(number, ds[spec.label_column]) if s is not None]
    if len(set(scores)) < 2:
        raise TaskDataError(
            f"Task '{spec.name}': the train split's '{spec.label_column}' column has fewer than two distinct numeric "
            "scores, so no score range can be inferred; declare `score_range: [low, high]`."
        )
    spec.score_range = [min(scores), max(scores)]
    logger.warning(
        "Task '%s': no score_range in the config; using the train split's, [%g, %g] (scores are scaled to [0, 1] "
        "with it). Declare score_range to fix it.",
        spec.name,
        *spec.score_range,
    )


def _text(value: Any, column: str, problems: list[str]) -> str:
    text = "" if value is None else value if isinstance(value, str) else str(value)
    if not text.strip():
        problems.append(f"empty text {short(text)} in column '{column}'")
    return text


def pair_converter(spec: TaskSpec):
    """(convert, features) for `Dataset.map`: canonical `text`, `text_pair` (`negative`) and, for similarity tasks,
    `label` (the score scaled to [0, 1]); a row's problems go to `__error__`."""
    similarity = spec.type == SENTENCE_SIMILARITY
    low, high = spec.score_range if similarity else (0.0, 1.0)
    columns = {"text": spec.text_column, "text_pair": spec.text_pair_column}
    if spec.negative_column:
        columns["negative"] = spec.negative_column

    def convert(batch: dict[str, list]) -> dict[str, list]:
        n = len(batch[spec.text_column])
        out: dict[str, list] = {key: [] for key in (*columns, "label", "__error__", "__repaired__")}
        for i in range(n):
            problems: list[str] = []
            for key, column in columns.items():
                out[key].append(_text(batch[column][i], column, problems))
            if similarity:
                raw = batch[spec.label_column][i]
                score = number(raw)
                if score is None:
                    problems.append(f"score {short(raw)} in column '{spec.label_column}' is not a number")
                elif not low <= score <= high:
                    problems.append(f"score {score:g} is outside the score range [{low:g}, {high:g}]")
                out["label"].append((score - low) / (high - low) if score is not None else 0.0)
            out["__error__"].append("; ".join(problems))
            out["__repaired__"].append(0)
        if not similarity:
            del out["label"]
        return out

    features = {key: datasets.Value("string") for key in columns}
    if similarity:
        features["label"] = datasets.Value("float32")
    return convert, features
