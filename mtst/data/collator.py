"""The multi-task dataset and collator of MTST: per-task tokenized datasets side by side, batches of one task.

``MultiTaskDataset`` puts each task's tokenized split (``mtst.data.tasks.tokenize_task``) after the other's, so a
task-aware batch sampler can draw every batch from one task; ``MultiTaskCollator`` pads such a batch and adds
its task name for ``MTSTModel.forward(task=...)``.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from typing import Any

import datasets
import torch
from transformers import DataCollatorForTokenClassification, DataCollatorWithPadding

from mtst.remote.configuration_mtst import IGNORE_INDEX

__all__ = ["MultiTaskDataset", "MultiTaskCollator"]


class MultiTaskDataset(torch.utils.data.Dataset):
    """Concatenation of per-task datasets; item ``i`` is the row's features plus ``task=<name>``.

    ``task_sizes`` is ``{task: len}``, ``offsets`` is ``{task: index of the task's first item}`` (both in task
    order), so the items of task ``t`` are ``range(offsets[t], offsets[t] + task_sizes[t])`` (``indices(t)``).
    A streaming task's split (``mtst.data.streaming.StreamingTrainSplit``, which has ``next_rows(n)``) answers any
    ``n`` of its indices with its next ``n`` rows.
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
        ds = self.datasets[task]
        item = dict(ds.next_rows(1)[0] if hasattr(ds, "next_rows") else ds[local])
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
            if hasattr(ds, "next_rows"):  # a streaming task: its next rows, whatever the indices
                rows[task] = ds.next_rows(len(locals_))
            elif isinstance(ds, datasets.Dataset):
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
    for sequence tasks, ``[B, T]`` padded with -100 for token tasks; a FloatTensor ``[B, L]`` of multi-hot rows for
    multi-label tasks, ``[B]`` for regression) and ``task`` (the batch's task name). A batch
    mixing tasks is a ``ValueError``. Joint examples, whose ``labels`` is a dict ``{task: label}``, give ``labels``
    as ``{task: tensor}`` (a missing label is -100) and ``task=None``. Feature keys other than the model inputs,
    ``labels`` and ``task`` are ignored.

    The padding is transformers' own: ``DataCollatorWithPadding`` for the inputs of sequence tasks and of joint
    examples, ``DataCollatorForTokenClassification`` for token tasks (labels padded on the tokenizer's side).

    An embedding task's batch (features with ``pair_input_ids``, and ``negative_input_ids`` when it has hard
    negatives) holds its texts as one padded batch, the first texts, then the second ones, then the negatives, so
    the model embeds them in one forward pass; ``columns`` says how many texts each example has, and ``labels`` is
    the float score of similarity tasks. ``teacher_embedding`` (embedding preservation) is stacked into
    ``[B, D]``.
    """

    def __init__(self, tokenizer, pad_to_multiple_of: int | None = None, label_pad_token_id: int = IGNORE_INDEX):
        self.tokenizer = tokenizer
        self.pad_to_multiple_of = pad_to_multiple_of
        self.label_pad_token_id = label_pad_token_id
        names = set(getattr(tokenizer, "model_input_names", None) or ())
        self.input_names = names | {"input_ids", "attention_mask", "token_type_ids"}
        self.pad_inputs = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=pad_to_multiple_of)
        self.pad_token_task = DataCollatorForTokenClassification(
            tokenizer, pad_to_multiple_of=pad_to_multiple_of, label_pad_token_id=label_pad_token_id
        )

    def _joint_labels(self, rows: list[Any], length: int) -> torch.Tensor:
        """One task's labels of a joint batch: a missing label is ``label_pad_token_id``; token label rows are padded
        to ``length`` on the tokenizer's padding side, as ``DataCollatorForTokenClassification`` does."""
        pad = self.label_pad_token_id
        if not any(isinstance(row, (list, tuple)) for row in rows):
            return torch.tensor([pad if row is None else int(row) for row in rows], dtype=torch.long)
        rows = [[] if row is None else list(row) for row in rows]
        if getattr(self.tokenizer, "padding_side", "right") == "left":
            rows = [[pad] * (length - len(row)) + row for row in rows]
        else:
            rows = [row + [pad] * (length - len(row)) for row in rows]
        return torch.tensor(rows, dtype=torch.long)

    def _embedding_batch(self, features: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        prefixes = [p for p in ("", "pair_", "negative_") if f"{p}input_ids" in features[0]]
        rows = [
            {name: _as_list(feature[prefix + name]) for name in self.input_names if prefix + name in feature}
            for prefix in prefixes
            for feature in features
        ]
        batch = dict(self.pad_inputs(rows))
        batch["columns"] = len(prefixes)
        if features[0].get("labels") is not None:
            batch["labels"] = torch.tensor([float(_as_list(f["labels"])) for f in features], dtype=torch.float32)
        return batch

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        if not features:
            raise ValueError("MultiTaskCollator got an empty batch.")
        if "pair_input_ids" in features[0]:
            tasks = {feature.get("task") for feature in features}
            if len(tasks) > 1:
                raise ValueError(f"MultiTaskCollator: the batch mixes tasks {sorted(map(str, tasks))}.")
            return {**self._embedding_batch(features), "task": tasks.pop(), **_teacher(features)}
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
        if joint:
            batch = dict(self.pad_inputs(inputs))
            length = batch["input_ids"].shape[1]
            names = []
            for label in labels:
                names.extend(t for t in label if t not in names)
            batch["labels"] = {
                t: self._joint_labels([_as_list(label.get(t)) for label in labels], length) for t in names
            }
            batch["task"] = None
        elif all(has_labels) and isinstance(labels[0], (list, tuple)) and not _floats(labels[0]):
            batch = dict(self.pad_token_task([{**x, "labels": label} for x, label in zip(inputs, labels)]))
            batch["task"] = tasks[0]
        else:
            batch = dict(self.pad_inputs(inputs))
            if all(has_labels) and _floats(labels[0]):  # multi-hot rows `[B, L]`, or regression scores `[B]`
                batch["labels"] = torch.tensor(labels, dtype=torch.float32)
            elif all(has_labels):
                batch["labels"] = torch.tensor([int(label) for label in labels], dtype=torch.long)
            batch["task"] = tasks[0]
        return {**batch, **_teacher(features)}


def _floats(label) -> bool:
    """Whether a label is a float or a list of floats (multi-label and regression targets; class ids are ints)."""
    return isinstance(label, float) or (
        isinstance(label, (list, tuple)) and bool(label) and isinstance(label[0], float)
    )


def _teacher(features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
    """`{"teacher_embedding": [B, D]}` when the features carry the starting model's embeddings, else `{}`."""
    if features[0].get("teacher_embedding") is None:
        return {}
    return {
        "teacher_embedding": torch.tensor([_as_list(f["teacher_embedding"]) for f in features], dtype=torch.float32)
    }
