"""The rules a task spec's own options are checked by (`TaskSpec.__post_init__`, also for specs built in Python):
labels, fractions, the options of multi-label, embedding and streaming tasks. Each returns what is wrong, as
sentences for one error paragraph (empty when nothing is)."""

from __future__ import annotations

from typing import Any

from mtst.data.errors import short
from mtst.data.tags import is_int
from mtst.remote.configuration_mtst import (
    EMBEDDING_LOSSES,
    MULTI_LABEL_CLASSIFICATION,
    REGRESSION,
    SENTENCE_SIMILARITY,
    labels_problem,
    min_labels,
    score_range_problem,
)
from mtst.remote.configuration_mtst import SEQUENCE_CLASSIFICATION as SEQUENCE
from mtst.remote.configuration_mtst import TOKEN_CLASSIFICATION as TOKEN

__all__ = [
    "DEFAULT_BUFFER_SIZE",
    "embedding_problems",
    "fraction_problem",
    "labels_problem_of",
    "streaming_problems",
    "target_problems",
]

DEFAULT_BUFFER_SIZE = 4096  # rows a streaming task reads, checks and tokenizes at a time


def labels_problem_of(task_type: str, labels) -> str | None:
    if task_type == REGRESSION:
        return "a regression task predicts one number and takes no 'labels'" if labels else None
    return labels_problem(labels, min_labels(task_type))


def fraction_problem(key: str, value: Any) -> str | None:
    """A number strictly between 0 and 1 (`validation_fraction`, `threshold`)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        return f"{key!r} must be a number between 0 and 1, got {short(value)}"
    return None


def target_problems(spec) -> list[str]:
    """What is wrong with a multi-label task's own options."""
    problems = []
    if spec.label_separator is not None and (not isinstance(spec.label_separator, str) or not spec.label_separator):
        problems.append(f"'label_separator' must be a non-empty string; got {short(spec.label_separator)}")
    if problem := fraction_problem("threshold", spec.threshold):
        problems.append(problem)
    for key in ("tune_threshold", "pos_weight"):
        if not isinstance(getattr(spec, key), bool):
            problems.append(f"{key!r} must be true or false; got {short(getattr(spec, key))}")
    return problems


def embedding_problems(spec) -> list[str]:
    """What is wrong with an embedding task's own options (the model config's rules)."""
    problems = []
    if spec.labels is not None or spec.head:
        problems.append(f"a {spec.type} task trains the sentence embedding and takes no 'labels' or 'head'")
    if not spec.text_pair_column:
        problems.append(f"a {spec.type} task needs 'text_pair_column' (the second text of each pair)")
    losses = EMBEDDING_LOSSES[spec.type]
    if spec.loss is not None and spec.loss not in losses:
        problems.append(f"unknown loss {spec.loss!r}; allowed for {spec.type}: {', '.join(losses)}")
    if spec.score_range is not None and (problem := score_range_problem(spec.score_range)):
        problems.append(problem)
    return problems


def streaming_problems(spec) -> list[str]:
    """What a streaming task cannot have: whatever needs its whole train split before training."""
    sizes = {"num_examples": spec.num_examples, "buffer_size": spec.buffer_size}
    problems = [
        f"{key!r} must be a positive integer, got {short(value)}"
        for key, value in sizes.items()
        if value is not None and (not is_int(value) or value < 1)
    ]
    if not spec.streaming:
        if spec.num_examples is not None or spec.buffer_size != DEFAULT_BUFFER_SIZE:
            problems.append("'num_examples' and 'buffer_size' are for streaming tasks (streaming: true)")
        return problems
    needs = {
        "labels": spec.labels is None and spec.type in (SEQUENCE, TOKEN, MULTI_LABEL_CLASSIFICATION),
        "score_range": spec.score_range is None and spec.type == SENTENCE_SIMILARITY,
    }
    problems += [
        f"a streaming task needs '{key}' in its config (a stream is not read before training)"
        for key, needed in needs.items()
        if needed
    ]
    refused = {
        "type regression": spec.type == REGRESSION,  # its scores are standardised with the train split's statistics
        "pos_weight": spec.pos_weight,
        "max_train_samples (use num_examples)": spec.max_train_samples is not None,
    }
    problems += [f"a streaming task cannot have {key}" for key, found in refused.items() if found]
    return problems
