"""Streaming train splits: a task's train rows read from its files or Hub dataset while it trains, never held whole.

A task with ``streaming: true`` keeps its validation and test splits in memory (``load_task_data``) and reads its
train split through ``datasets``' streaming (``mtst.data.files.open_stream``). ``StreamingTrainSplit`` stands where
an in-memory task's tokenized train split stands (in ``MultiTaskDataset``): it has ``num_examples`` rows per epoch,
so the task-aware sampler plans the task's steps as it does for any task (every optimizer step one task on every
rank); the indices the sampler draws for the task only say how many rows a batch takes, and the rows are the next
ones of the stream.

Reading
    Each process reads its own shard of the stream (``datasets.distributed.split_dataset_by_node``), ``buffer_size``
    rows at a time (a *chunk*). A chunk's rows are checked and converted by the in-memory tasks' rules
    (``row_converter``), tokenized (``batch_tokenizer``), then shuffled inside the chunk or, with
    ``group_by_length``, sorted by length and cut into batches whose order is shuffled. Memory holds at most two
    chunks, whatever the size of the corpus. Tokenization runs on the chunk, not as an ``IterableDataset.map``, so
    that the start of a chunk is an exact ``state_dict()`` of the raw stream. When the stream ends, the next pass
    starts again from its first row (an epoch is ``num_examples`` rows, not a pass over the files).

Resuming
    The state is (passes done, the raw stream's state at the start of the oldest chunk still being served, its chunk
    number, the rows served from it). The DataLoader fetches ahead of training, so the split keeps the state before
    each of its recent takes, and the trainer saves the one after the batches it trained (``state_dict(taken)``),
    one file per process in the checkpoint; ``load_state_dict`` reads the chunk again and skips the rows served: the
    resumed run sees exactly the rows the uninterrupted one would have.
"""

from __future__ import annotations

import collections
import copy
import json
import logging
import os
from typing import Any

import numpy as np

from mtst.data.errors import TaskConfigError, TaskDataError, paragraph
from mtst.data.files import open_stream
from mtst.data.loading import row_converter
from mtst.data.tasks import TaskSpec
from mtst.data.tokenization import batch_tokenizer

logger = logging.getLogger(__name__)

__all__ = [
    "STATE_FILE",
    "StreamingTrainSplit",
    "load_stream_states",
    "open_train_stream",
    "save_stream_states",
    "stream_counters",
    "streaming_splits",
]

STATE_FILE = "stream_state_rank{rank}.json"  # in a checkpoint: {task: state} of one process's streams
_HISTORY = 256  # takes whose starting state is kept (the DataLoader's look-ahead is a few batches)
_MAX_PROBLEMS = 10


def _declared_size(spec: TaskSpec, stream) -> int:
    """The task's `num_examples`, else the Hub dataset's train row count; an error naming the option when neither."""
    if spec.num_examples is not None:
        return spec.num_examples
    splits = getattr(getattr(stream, "info", None), "splits", None) or {}
    found = getattr(splits.get("train"), "num_examples", None)
    if found:
        logger.info("Task '%s': streaming %d train rows per epoch (the dataset's metadata).", spec.name, found)
        return int(found)
    raise TaskConfigError(
        f"Task '{spec.name}' streams its train split, and its data does not say how many rows it has: set "
        "`num_examples:` in its config (the train rows per epoch; the sampling strategies weigh tasks by it)."
    )


class StreamingTrainSplit:
    """A task's train split read from a `datasets.IterableDataset` while training (see the module docstring).

    Args:
        spec (`TaskSpec`): the task (labels declared; `buffer_size` rows per chunk).
        stream (`datasets.IterableDataset`): the raw train rows, in the columns the spec names.
        tokenizer: the model's tokenizer.
        max_seq_length, label_all_tokens: as for `tokenize_task`.
        num_examples (`int`, *optional*): rows per epoch (default: `spec.num_examples`, else the stream's metadata).
        batch_size (`int`): the task's batch size per device (the unit `group_by_length` sorts into).
        group_by_length (`bool`): sort each chunk by length and serve batches of similar length.
        seed (`int`): with the process rank and the chunk number, determines the order inside each chunk.
        rank, world_size (`int`): this process and the number of processes; each reads its own shard.
        drop_invalid (`bool`): skip invalid rows (counted in `dropped`) instead of stopping with an error.
    """

    def __init__(
        self,
        spec: TaskSpec,
        stream,
        tokenizer,
        max_seq_length: int = 128,
        label_all_tokens: bool = False,
        *,
        num_examples: int | None = None,
        batch_size: int = 32,
        group_by_length: bool = False,
        seed: int = 42,
        rank: int = 0,
        world_size: int = 1,
        drop_invalid: bool = False,
    ):
        self.spec = spec
        self.num_examples = int(num_examples if num_examples is not None else _declared_size(spec, stream))
        if world_size > 1:
            from datasets.distributed import split_dataset_by_node

            stream = split_dataset_by_node(stream, rank=rank, world_size=world_size)
        self.stream = stream
        self._start = copy.deepcopy(stream.state_dict())
        self._convert, _ = row_converter(spec, stream)
        self._tokenize, self.max_length = batch_tokenizer(spec, tokenizer, max_seq_length, label_all_tokens)
        self.batch_size, self.group_by_length = int(batch_size), bool(group_by_length)
        self.seed, self.rank, self.world_size, self.drop_invalid = int(seed), int(rank), int(world_size), drop_invalid
        self.dropped = self.truncated = 0  # rows of this process's shard skipped as invalid / truncated so far
        self.taken = 0  # batches served
        self._history: collections.deque = collections.deque(maxlen=_HISTORY)
        self._restart(passes=0, chunk=0, row=0, stream_state=self._start)

    def __len__(self) -> int:
        return self.num_examples

    def __repr__(self) -> str:
        return (
            f"StreamingTrainSplit(task={self.spec.name!r}, num_examples={self.num_examples}, "
            f"buffer_size={self.spec.buffer_size}, rank={self.rank}/{self.world_size})"
        )

    # -- reading --------------------------------------------------------------------------------------------------

    def _restart(self, passes: int, chunk: int, row: int, stream_state: dict) -> None:
        self.stream.load_state_dict(copy.deepcopy(stream_state))
        self._iterator = iter(self.stream)
        self._passes, self._chunk, self._row = passes, chunk, row
        self._queue: collections.deque = collections.deque()  # [chunk state, rows, rows served]

    def _where(self, row: int) -> str:
        shard = f" of process {self.rank}'s shard ({self.world_size} processes)" if self.world_size > 1 else ""
        return f"task '{self.spec.name}', train stream row {row + 1}{shard}"

    def _read_raw(self, n: int) -> list[tuple[int, dict]]:
        """The next `n` raw rows with their row numbers, starting a new pass over the stream when it ends."""
        rows: list[tuple[int, dict]] = []
        while len(rows) < n:
            try:
                rows.append((self._row, next(self._iterator)))
                self._row += 1
            except StopIteration:
                if self._row == 0:
                    raise TaskDataError(f"Task '{self.spec.name}': its train stream has no rows.") from None
                share = self.num_examples / self.world_size  # the rows an epoch reads from this process's shard
                if self._passes == 0 and self._row < share:
                    logger.warning(
                        "Task '%s': the train stream%s has %d rows, fewer than the %d an epoch reads (num_examples "
                        "%d): an epoch reads some rows more than once.",
                        self.spec.name,
                        f" (process {self.rank}'s shard)" if self.world_size > 1 else "",
                        self._row,
                        round(share),
                        self.num_examples,
                    )
                logger.info("Task '%s': pass %d over the train stream ended after %d rows.", *self._pass_end())
                self.stream.load_state_dict(copy.deepcopy(self._start))
                self._iterator, self._passes, self._row = iter(self.stream), self._passes + 1, 0
        return rows

    def _pass_end(self) -> tuple[str, int, int]:
        return self.spec.name, self._passes + 1, self._row

    def _valid(self, raw: list[tuple[int, dict]]) -> dict[str, list]:
        """The chunk's rows converted; invalid ones raise one `TaskDataError`, or are counted and skipped."""
        columns = {key: [row.get(key) for _, row in raw] for key in raw[0][1]}
        converted = self._convert(columns)
        errors = converted.pop("__error__")
        converted.pop("__repaired__", None)
        bad = [i for i, error in enumerate(errors) if error]
        if bad and not self.drop_invalid:
            problems = [f"{self._where(raw[i][0])}: {errors[i]}" for i in bad[:_MAX_PROBLEMS]]
            raise TaskDataError(
                paragraph(
                    f"Task '{self.spec.name}' ({self.spec.type}) has invalid rows in its train stream:",
                    problems,
                    "Fix the data, or pass drop_invalid=True (--drop_invalid) to skip invalid rows (they are "
                    "counted and logged).",
                )
            )
        if bad:
            self.dropped += len(bad)
            logger.warning("%s: skipped (invalid): %s", self._where(raw[bad[0]][0]), errors[bad[0]])
            keep = [i for i, error in enumerate(errors) if not error]
            converted = {key: [values[i] for i in keep] for key, values in converted.items()}
        return converted

    def _order(self, rows: list[dict], chunk: int) -> list[int]:
        rng = np.random.default_rng([self.seed, self.rank, chunk])
        if not self.group_by_length:
            return rng.permutation(len(rows)).tolist()
        lengths = np.asarray([len(row["input_ids"]) for row in rows])
        by_length = np.argsort(-lengths, kind="stable")
        batches = [by_length[i : i + self.batch_size] for i in range(0, len(rows), self.batch_size)]
        return [int(i) for b in rng.permutation(len(batches)) for i in batches[b]]

    def _fill(self) -> None:
        """Read, check, tokenize and order the next chunk (at least one valid row) into the queue."""
        state = {
            "passes": self._passes,
            "chunk": self._chunk,
            "row": self._row,
            "stream": copy.deepcopy(self.stream.state_dict()),
        }
        rows: list[dict] = []
        for _ in range(1000):  # chunks of invalid rows only are skipped; a stream of nothing valid is an error
            converted = self._valid(self._read_raw(self.spec.buffer_size))
            if converted and next(iter(converted.values())):
                tokenized = self._tokenize(converted)
                self.truncated += sum(tokenized.pop("__truncated__"))
                tokenized.pop("__lost__", None)
                rows = [dict(zip(tokenized, values)) for values in zip(*tokenized.values())]
                break
        if not rows:
            raise TaskDataError(f"Task '{self.spec.name}': no valid row in its train stream's first chunks.")
        order = self._order(rows, self._chunk)
        self._chunk += 1
        self._queue.append([state, [rows[i] for i in order], 0])

    def _pop(self, n: int) -> list[dict]:
        out: list[dict] = []
        while len(out) < n:
            if not self._queue:
                self._fill()
            entry = self._queue[0]
            rows, served = entry[1], entry[2]
            k = min(n - len(out), len(rows) - served)
            out.extend(rows[served : served + k])
            entry[2] += k
            if entry[2] == len(rows):
                self._queue.popleft()
        return out

    def next_rows(self, n: int) -> list[dict[str, Any]]:
        """The next `n` tokenized rows (one batch's worth)."""
        self._history.append((self.taken, self._state()))
        rows = self._pop(int(n))
        self.taken += 1
        return [dict(row) for row in rows]

    # -- state ----------------------------------------------------------------------------------------------------

    def _state(self) -> dict:
        if self._queue:
            state, _, served = self._queue[0]
            return {**state, "served": served}
        return {
            "passes": self._passes,
            "chunk": self._chunk,
            "row": self._row,
            "stream": copy.deepcopy(self.stream.state_dict()),
            "served": 0,
        }

    def state_dict(self, taken: int | None = None) -> dict:
        """The state after the first `taken` batches (default: all served so far), JSON-serialisable."""
        taken = self.taken if taken is None else int(taken)
        if taken == self.taken:
            state = self._state()
        else:
            found = [state for number, state in self._history if number == taken]
            if not found:
                raise RuntimeError(
                    f"Task '{self.spec.name}': the stream's state after {taken} batches is no longer known "
                    f"({self.taken} served; the last {len(self._history)} kept)."
                )
            state = found[0]
        return {**copy.deepcopy(state), "taken": taken, "dropped": self.dropped, "truncated": self.truncated}

    def load_state_dict(self, state: dict) -> None:
        """Continue from `state` (from `state_dict`): the rows after it are the ones that followed it."""
        self._restart(state["passes"], state["chunk"], state["row"], state["stream"])
        self._pop(state["served"])
        self.taken, self._history = int(state["taken"]), collections.deque(maxlen=_HISTORY)
        self.dropped, self.truncated = int(state.get("dropped", 0)), int(state.get("truncated", 0))


def open_train_stream(
    spec: TaskSpec, tokenizer, training_args, max_seq_length: int = 128, *, drop_invalid=False, cache_dir=None
) -> StreamingTrainSplit:
    """The streaming task's train split for this process of a run with `training_args` (its rank, world size,
    seed, batch size and `group_by_length`)."""
    stream = open_stream(spec, "train", cache_dir)
    if stream is None:
        raise TaskDataError(f"Task '{spec.name}': it has no train split to stream.")
    return StreamingTrainSplit(
        spec,
        stream,
        tokenizer,
        max_seq_length,
        bool(getattr(training_args, "label_all_tokens", False)),
        num_examples=min(_declared_size(spec, stream), spec.max_train_samples or float("inf")),
        batch_size=spec.batch_size or training_args.per_device_train_batch_size,
        group_by_length=bool(training_args.group_by_length),
        seed=training_args.data_seed if training_args.data_seed is not None else training_args.seed,
        rank=training_args.process_index,
        world_size=max(1, training_args.world_size),
        drop_invalid=drop_invalid,
    )


def streaming_splits(dataset) -> dict[str, StreamingTrainSplit]:
    """`{task: split}` of the streaming tasks of a `MultiTaskDataset` (empty for anything else)."""
    return {t: ds for t, ds in getattr(dataset, "datasets", {}).items() if isinstance(ds, StreamingTrainSplit)}


def stream_counters(dataset, num_workers: int) -> dict[str, int]:
    """`{task: 0}`: the batches each streaming task of `dataset` has trained, to count from; an error when DataLoader
    workers would read the streams (each worker a copy of the reader, reading the same rows again)."""
    counters = {task: 0 for task in streaming_splits(dataset)}
    if counters and num_workers > 0:
        raise TaskConfigError(
            f"Streaming task(s) {', '.join(counters)} read their stream in the training process: set "
            "dataloader_num_workers to 0 (each worker would read the stream again)."
        )
    return counters


def save_stream_states(dataset, trained: dict[str, int], folder: str, rank: int) -> None:
    """Write this process's streaming tasks' states after the `trained[task]` batches they trained (a checkpoint's
    `STATE_FILE`); nothing when no task streams."""
    streams = streaming_splits(dataset)
    if streams:
        states = {task: split.state_dict(trained.get(task, 0)) for task, split in streams.items()}
        os.makedirs(folder, exist_ok=True)  # another process may not have made it yet
        path = os.path.join(folder, STATE_FILE.format(rank=rank))
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            json.dump(states, f)
        os.replace(path + ".tmp", path)


def load_stream_states(dataset, folder: str, rank: int) -> dict[str, int]:
    """Restore this process's streaming tasks from a checkpoint; `{task: batches trained}`. A checkpoint without
    the file (saved by another world size, or before the task streamed) is an error naming it."""
    streams = streaming_splits(dataset)
    if not streams:
        return {}
    path = os.path.join(folder, STATE_FILE.format(rank=rank))
    if not os.path.isfile(path):
        raise TaskDataError(
            f"Checkpoint {folder} has no {os.path.basename(path)}: it holds no position in the train stream of "
            f"{', '.join(streams)} for process {rank} (it was saved by a run with fewer processes or without "
            "streaming). Resume with the run's own settings, or start a new run."
        )
    with open(path, encoding="utf-8") as f:
        states = json.load(f)
    for task, split in streams.items():
        if task in states:
            split.load_state_dict(states[task])
    return {task: int(states[task]["taken"]) for task in streams if task in states}
