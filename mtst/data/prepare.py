"""Datasets given to the trainer in Python: raw `datasets.Dataset` / `DatasetDict` objects per task are checked,
converted and tokenized exactly as a task config's files are (`mtst.data.loading`, `mtst.data.tokenization`), with
the task's type and labels taken from the model; datasets that are already tokenized pass through unchanged."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import datasets

from mtst.data.errors import TaskConfigError
from mtst.data.files import Locator
from mtst.data.loading import convert_splits
from mtst.data.targets import finish_targets
from mtst.data.tasks import TaskSpec
from mtst.data.tokenization import tokenize_task
from mtst.remote.configuration_mtst import MULTI_LABEL_CLASSIFICATION, REGRESSION

logger = logging.getLogger(__name__)

__all__ = ["check_threshold_tuning", "is_raw", "keep_train_statistics", "prepare_task_datasets", "task_specs_for"]


def is_raw(dataset: Any) -> bool:
    """Whether `dataset` still needs tokenizing: a `datasets.Dataset` or `DatasetDict` without `input_ids`."""
    if isinstance(dataset, datasets.DatasetDict):
        return any(is_raw(split) for split in dataset.values())
    return isinstance(dataset, datasets.Dataset) and "input_ids" not in dataset.column_names


def task_specs_for(config, task_specs: Mapping[str, TaskSpec] | Sequence[TaskSpec] | None = None) -> dict:
    """`{task: TaskSpec}` for the model's tasks: the given specs (their columns), or the default columns; each has
    the model's type and labels, and a given spec that says otherwise is an error."""
    given = dict(task_specs) if isinstance(task_specs, Mapping) else {s.name: s for s in task_specs or ()}
    unknown = sorted(set(given) - set(config.task_names))
    if unknown:
        raise TaskConfigError(f"task_specs for unknown task(s) {unknown}; the model's tasks: {config.task_names}.")
    specs = {}
    for task in config.task_names:
        embedding = config.is_embedding_task(task)
        default = {"text_pair_column": "text_pair"} if embedding else {}  # pairs: columns text and text_pair
        spec = given.get(task) or TaskSpec(name=task, type=config.task_type(task), **default)
        if spec.name != task or spec.type != config.task_type(task):
            raise TaskConfigError(
                f"task_specs[{task!r}] is {spec.name!r} of type {spec.type!r}; the model's task {task!r} is of type "
                f"{config.task_type(task)!r}."
            )
        if embedding:  # the model's loss and score range (None: inferred from the train split, then kept)
            spec.loss = spec.loss or config.tasks[task]["loss"]
            spec.score_range = spec.score_range or config.tasks[task].get("score_range")
            specs[task] = spec
            continue
        labels = config.task_labels(task)
        if spec.labels is not None and list(spec.labels) != labels:
            raise TaskConfigError(
                f"Task '{task}': task_specs lists the labels {list(spec.labels)}, the model's head has {labels}."
            )
        spec.labels = labels or None  # a regression task has none
        specs[task] = spec
    return specs


def keep_train_statistics(config, specs: Mapping[str, TaskSpec]) -> None:
    """What a raw train split decided and the model's config left open stays with the model: a similarity task's
    inferred score range, a regression task's mean and standard deviation (where the config has the defaults 0 and
    1), a multi-label task's positive-row weights (`pos_weight`)."""
    for task, spec in specs.items():
        entry = config.tasks[task]
        if spec.score_range is not None and entry.get("score_range", []) is None:
            entry["score_range"] = list(spec.score_range)
        if spec.score_std is not None and (entry.get("score_mean"), entry.get("score_std")) == (0.0, 1.0):
            entry["score_mean"], entry["score_std"] = spec.score_mean, spec.score_std
            logger.info("Task '%s': the model predicts scores standardised with the train split's.", task)
        if spec.pos_weight_values is not None and entry.get("pos_weight", []) is None:
            entry["pos_weight"] = list(spec.pos_weight_values)


def check_threshold_tuning(specs: Mapping[str, TaskSpec], eval_dataset) -> None:
    """Before training: a task whose spec asks for `tune_threshold` needs validation data to tune on (else the run
    would end without the thresholds it asked for)."""
    given = eval_dataset.task_names if hasattr(eval_dataset, "task_names") else list(eval_dataset or ())
    missing = [t for t, spec in specs.items() if spec.tune_threshold and t not in given]
    if missing:
        raise TaskConfigError(
            f"Task(s) {missing} ask for tune_threshold, which tunes on the validation split: pass their evaluation "
            "data (eval_dataset; with run_multitask.py, --do_eval), or leave tune_threshold out."
        )


def prepare_task_datasets(
    data: Mapping[str, Any],
    split: str,
    specs: Mapping[str, TaskSpec],
    tokenizer,
    max_seq_length: int = 128,
    label_all_tokens: bool = False,
) -> dict[str, Any]:
    """`{task: dataset}` with every raw dataset of `data` (a `Dataset`, or the `split` of a `DatasetDict`) checked,
    converted and tokenized; tokenized datasets are kept as they are."""
    prepared = {}
    for task, dataset in data.items():
        if not is_raw(dataset):
            prepared[task] = dataset
            continue
        if task not in specs:
            raise TaskConfigError(f"Data for unknown task {task!r}; the model's tasks: {', '.join(specs)}.")
        if isinstance(dataset, datasets.DatasetDict):
            if split not in dataset:
                raise TaskConfigError(
                    f"Task '{task}': its DatasetDict has no {split!r} split (it has {', '.join(dataset)}); pass that "
                    "split's Dataset itself."
                )
            dataset = dataset[split]
        if tokenizer is None:
            raise TaskConfigError(
                f"Task '{task}': a raw dataset needs a tokenizer to be tokenized; pass processing_class=tokenizer."
            )
        spec = specs[task]
        origin = f"task '{task}', {split} split"
        converted = convert_splits(spec, {split: [(dataset, Locator(None, "memory", origin))]})
        if split == "train" and spec.type in (MULTI_LABEL_CLASSIFICATION, REGRESSION):
            finish_targets(spec, converted["train"])
        tokenized = tokenize_task(spec, datasets.DatasetDict(converted), tokenizer, max_seq_length, label_all_tokens)
        prepared[task] = tokenized[split]
    return prepared
