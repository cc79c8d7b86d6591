"""Task-aware batch sampling for MTST: `MultiTaskBatchSampler`.

Sampling (`MultiTaskBatchSampler`)
    Every batch holds examples of one task. Batches come in *steps*: the `gradient_accumulation_steps * world_size`
    consecutive batches of one optimizer step all belong to the same task, and each of them holds different examples.
    The sampler yields the batches of every rank (rank r's batch of micro-step m is batch `m * world_size + r` of
    the step); Accelerate's `BatchSamplerShard` hands rank r every world_size-th batch, so under DDP every rank
    trains the same task at every micro-step and every optimizer step. The stream is a pure function of
    `(seed, epoch)`: `set_epoch` selects the epoch, and a run resumed from a checkpoint (the Trainer skips the
    batches already seen in the resumed epoch) continues exactly the same stream.

    One epoch has `steps_per_epoch = sum over tasks of steps(task)` steps, where a task of `n` examples with batch
    size `b` and `G = gradient_accumulation_steps * world_size` batches per step has `n // (b * G)` full steps plus one
    tail step when `n % (b * G) >= G` (the rest split into G batches of nearly equal size; with `drop_last` there is
    no tail step). The examples left over (fewer than G) are skipped for that pass; when `G == 1` nothing is skipped.
    `len(sampler) == steps_per_epoch * G` batches, and iteration yields exactly that many.

    - `round_robin`: one step of each task in turn (task order as given); a task that has run out leaves the cycle.
      Each example at most once per epoch.
    - `proportional`: the steps of all tasks in a random order, so a task's share of steps is proportional to its
      size (in batches). Each example at most once per epoch (exactly once when `G == 1`).
    - `temperature`: every step draws its task independently with `p(t) ∝ min(n_t, cap) ** (1 / T)` (n_t in
      examples; `cap=None` means no cap). `weights`: `p(t) ∝ weight(t)`. A task's steps come from a shuffled pass
      over its examples; when the pass is used up a new, differently shuffled pass starts (sampling of steps with
      replacement across passes, without replacement inside a pass). Epoch length as above.
    - `balanced`: every task gets at least one full pass per epoch and small tasks are upsampled towards the
      temperature share: with `p(t) ∝ min(n_t, cap) ** (1 / T)`, the epoch has the fewest steps `L` for which
      `p(t) * L >= steps(t)` for every task, and task t gets `max(steps(t), round(p(t) * L))` steps, in a random
      order. No task trains on less than it would alone; a task whose temperature share exceeds its size share runs
      extra passes (new shuffles). Epoch length: the sum of those steps (longer than `proportional`'s).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
from torch.utils.data import Sampler

from mtst.training.arguments import SAMPLING_STRATEGIES, MultiTaskTrainingError, check_temperature

if TYPE_CHECKING:  # the sampler needs only the dataset's task_sizes and offsets
    from mtst.data.collator import MultiTaskDataset

__all__ = ["SAMPLING_STRATEGIES", "MultiTaskBatchSampler", "example_lengths"]


def example_lengths(dataset: MultiTaskDataset) -> dict[str, list[int]]:
    """`{task: [length of each example]}` of a `MultiTaskDataset`'s in-memory tasks (for `group_by_length`; a
    streaming task's reader groups its own buffer by length)."""
    lengths = {}
    for task, ds in dataset.datasets.items():
        if hasattr(ds, "next_rows"):
            continue
        column = ds["input_ids"] if hasattr(ds, "column_names") else [row["input_ids"] for row in ds]
        lengths[task] = [len(ids) for ids in column]
    return lengths


class _StreamPass:
    """A streaming task's pass as `_task_pass` gives it, computed per step: its rows come in the order its reader
    serves them, so a batch's indices only say how many rows it takes (no index list the size of the corpus)."""

    def __init__(self, n: int, batch_size: int, batches_per_step: int, drop_last: bool, offset: int):
        self.batch_size, self.G, self.offset = batch_size, batches_per_step, offset
        self.full, self.rest = divmod(n, batch_size * batches_per_step)
        self.tail = not drop_last and self.rest >= batches_per_step

    def __len__(self) -> int:
        return self.full + int(self.tail)

    def __getitem__(self, step: int) -> list[list[int]]:
        start = self.offset + step * self.batch_size * self.G
        if step < self.full:
            sizes = [self.batch_size] * self.G
        else:
            sizes = [len(part) for part in np.array_split(np.arange(self.rest), self.G)]
        bounds = np.cumsum([0, *sizes]).tolist()
        return [list(range(start + bounds[i], start + bounds[i + 1])) for i in range(self.G)]


def task_mapping(name: str, value, tasks: Sequence[str], kind=float) -> dict:
    """Parse `{task: value}` given as a mapping, a list aligned with `tasks`, JSON, or "a=1,b=2"."""
    if value is None:
        return {}
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("{") or text.startswith("["):
            value = json.loads(text)
        else:
            pairs = {}
            for part in filter(None, (p.strip() for p in text.split(","))):
                key, sep, number = part.partition("=")
                if not sep:
                    raise MultiTaskTrainingError(f"`{name}`: expected 'task=value' entries; got {part!r} in {text!r}.")
                pairs[key.strip()] = number.strip()
            value = pairs
    if isinstance(value, (list, tuple)):
        if len(value) != len(tasks):
            raise MultiTaskTrainingError(
                f"`{name}`: got {len(value)} values for {len(tasks)} tasks ({', '.join(tasks)})."
            )
        value = dict(zip(tasks, value))
    if not isinstance(value, Mapping):
        raise MultiTaskTrainingError(f"`{name}` must map task names to values; got {value!r}.")
    unknown = sorted(set(value) - set(tasks))
    if unknown:
        raise MultiTaskTrainingError(f"`{name}`: unknown task(s) {unknown}; tasks: {', '.join(tasks)}.")
    try:
        return {task: kind(v) for task, v in value.items()}
    except (TypeError, ValueError) as err:
        raise MultiTaskTrainingError(f"`{name}`: every value must be a {kind.__name__}; got {dict(value)!r}.") from err


class MultiTaskBatchSampler(Sampler[list[int]]):
    """
    Yields lists of indices into a [`mtst.data.tasks.MultiTaskDataset`]; every batch holds one task, and the
    `gradient_accumulation_steps * world_size` batches of an optimizer step share their task (see the module
    docstring for the exact epoch definition of each strategy).

    Args:
        task_sizes (`Mapping[str, int]`): examples per task, in task order (`MultiTaskDataset.task_sizes`).
        batch_size (`int`): batch size per device.
        strategy (`str`): one of `round_robin`, `proportional`, `temperature`, `balanced`, `weights`.
        offsets (`Mapping[str, int]`, *optional*): global index of each task's first example (default: cumulative
            sizes in task order, as in `MultiTaskDataset.offsets`).
        task_batch_sizes (`Mapping[str, int]`, *optional*): per-task batch sizes overriding `batch_size`.
        temperature (`float`): T of the `temperature` and `balanced` strategies.
        temperature_cap (`int`, *optional*): sizes are capped at this many examples before the temperature.
        weights (`Mapping[str, float]` or list): sampling weights of the `weights` strategy (non-negative).
        seed (`int`): with the epoch, determines the whole stream.
        world_size (`int`): number of data-parallel processes.
        gradient_accumulation_steps (`int`): micro-batches per optimizer step.
        drop_last (`bool`): only full batches (no tail step per task pass).
        lengths (`Sequence[int]` or `Mapping[str, Sequence[int]]`, *optional*): example lengths (global order, or
            per task), needed by `group_by_length`.
        group_by_length (`bool`): inside a task, sort mega-batches of `megabatch_mult` steps by length (longest
            first) before cutting them into batches, so a batch holds examples of similar length; step order inside
            the task is then shuffled.
        megabatch_mult (`int`): steps per mega-batch for `group_by_length`.
        streaming_tasks (`Sequence[str]`): tasks whose examples come from a stream in the reader's order (its
            batches are planned as any task's, their indices say only how many examples each takes).
    """

    def __init__(
        self,
        task_sizes: Mapping[str, int],
        batch_size: int = 32,
        strategy: str = "proportional",
        *,
        offsets: Mapping[str, int] | None = None,
        task_batch_sizes: Mapping[str, int] | None = None,
        temperature: float = 2.0,
        temperature_cap: int | None = None,
        weights: Mapping[str, float] | Sequence[float] | str | None = None,
        seed: int = 42,
        world_size: int = 1,
        gradient_accumulation_steps: int = 1,
        drop_last: bool = False,
        lengths: Sequence[int] | Mapping[str, Sequence[int]] | None = None,
        group_by_length: bool = False,
        megabatch_mult: int = 50,
        streaming_tasks: Sequence[str] = (),
    ):
        if strategy not in SAMPLING_STRATEGIES:
            raise MultiTaskTrainingError(
                f"Unknown sampling strategy {strategy!r}; allowed values: {', '.join(SAMPLING_STRATEGIES)}."
            )
        if not task_sizes:
            raise MultiTaskTrainingError("MultiTaskBatchSampler needs at least one task.")
        self.tasks = list(task_sizes)
        self.task_sizes = {t: int(task_sizes[t]) for t in self.tasks}
        if offsets is None:
            offsets, total = {}, 0
            for t in self.tasks:
                offsets[t], total = total, total + self.task_sizes[t]
        self.offsets = {t: int(offsets[t]) for t in self.tasks}
        for name, value in (
            ("batch_size", batch_size),
            ("world_size", world_size),
            ("gradient_accumulation_steps", gradient_accumulation_steps),
            ("megabatch_mult", megabatch_mult),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise MultiTaskTrainingError(f"`{name}` must be a positive integer; got {value!r}.")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise MultiTaskTrainingError(f"`seed` must be a non-negative integer; got {seed!r}.")
        self.batch_sizes = {t: batch_size for t in self.tasks}
        for t, b in task_mapping("task_batch_sizes", task_batch_sizes, self.tasks, int).items():
            if b < 1:
                raise MultiTaskTrainingError(f"`task_batch_sizes`: task {t!r} needs a positive batch size; got {b}.")
            self.batch_sizes[t] = b
        self.strategy = strategy
        self.seed = seed
        self.world_size = world_size
        self.gradient_accumulation_steps = gradient_accumulation_steps
        self.drop_last = drop_last
        self.group_by_length = group_by_length
        self.megabatch_mult = megabatch_mult
        self.streaming_tasks = frozenset(streaming_tasks)
        self.epoch = 0
        self.lengths = self._task_lengths(lengths)
        if group_by_length and self.lengths is None:
            raise MultiTaskTrainingError("`group_by_length` needs the example `lengths`.")
        # Probability of drawing each task at a step (temperature / weights).
        self.probabilities = self._probabilities(temperature, temperature_cap, weights)
        self._count_steps()

    def _task_lengths(self, lengths) -> dict[str, np.ndarray] | None:
        """`{task: example lengths}` from per-task lengths or lengths in the global order."""
        if lengths is None:
            return None
        if isinstance(lengths, Mapping):  # a task left out (a streaming one) is grouped by its own reader
            found = {t: np.asarray(lengths[t], dtype=np.int64) for t in self.tasks if t in lengths}
        else:
            lengths = np.asarray(lengths, dtype=np.int64)
            found = {t: lengths[self.offsets[t] : self.offsets[t] + self.task_sizes[t]] for t in self.tasks}
        for t in found:
            if len(found[t]) != self.task_sizes[t]:
                raise MultiTaskTrainingError(
                    f"`lengths` of task {t!r} has {len(found[t])} entries for {self.task_sizes[t]} examples."
                )
        return found

    def _probabilities(self, temperature, temperature_cap, weights) -> dict[str, float] | None:
        """The probability of each task at a step for the temperature, balanced and weights strategies (None for the
        others, which fix the steps of each task per epoch)."""
        if self.strategy in ("temperature", "balanced"):
            check_temperature(temperature, temperature_cap)
            sizes = np.array([self.task_sizes[t] for t in self.tasks], dtype=np.float64)
            if temperature_cap is not None:
                sizes = np.minimum(sizes, temperature_cap)
            raw = sizes ** (1.0 / temperature)
            return {t: float(p) for t, p in zip(self.tasks, raw / raw.sum())} if raw.sum() > 0 else None
        if self.strategy != "weights":
            return None
        if weights is None:
            raise MultiTaskTrainingError(
                f"The `weights` sampling strategy needs `task_weights` for the tasks {', '.join(self.tasks)}."
            )
        parsed = task_mapping("task_weights", weights, self.tasks)
        missing = [t for t in self.tasks if t not in parsed]
        if missing:
            raise MultiTaskTrainingError(
                f"`task_weights` has no weight for task(s) {missing}; give one for every task "
                f"({', '.join(self.tasks)}), 0 to never sample a task."
            )
        raw = np.array([parsed[t] for t in self.tasks], dtype=np.float64)
        if (raw < 0).any() or not np.isfinite(raw).all() or raw.sum() <= 0:
            raise MultiTaskTrainingError(f"`task_weights` must be finite, non-negative and not all 0; got {parsed}.")
        return {t: float(p) for t, p in zip(self.tasks, raw / raw.sum())}

    def _count_steps(self) -> None:
        """Steps per pass over each task (`task_steps`), steps of each task in one epoch (`epoch_task_steps`) and the
        epoch length (`steps_per_epoch`)."""
        G = self.batches_per_step
        self.task_steps = {}
        for t in self.tasks:
            n, b = self.task_sizes[t], self.batch_sizes[t]
            full, rest = divmod(n, b * G)
            self.task_steps[t] = full + int(not self.drop_last and rest >= G)
        for t in self.tasks:
            sampled = self.probabilities is None or self.probabilities[t] > 0
            if sampled and self.task_steps[t] == 0:
                need = self.batch_sizes[t] * G if self.drop_last else G
                raise MultiTaskTrainingError(
                    f"Task {t!r} has {self.task_sizes[t]} training examples, fewer than the {need} that one optimizer "
                    f"step needs (gradient_accumulation_steps={self.gradient_accumulation_steps} x "
                    f"world_size={self.world_size} batches"
                    f"{' of ' + str(self.batch_sizes[t]) if self.drop_last else ''}, all from one task). Add data, "
                    "lower those settings, or remove the task."
                )
        # Steps of each task in one epoch (proportional / round_robin / balanced; drawn per step otherwise).
        self.epoch_task_steps = dict(self.task_steps)
        if self.strategy == "balanced":
            length = max(self.task_steps[t] / self.probabilities[t] for t in self.tasks)
            self.epoch_task_steps = {
                t: max(self.task_steps[t], int(round(self.probabilities[t] * length))) for t in self.tasks
            }
        self.steps_per_epoch = sum(self.epoch_task_steps.values())
        if self.steps_per_epoch == 0:
            raise MultiTaskTrainingError("The training data gives no batch at all.")

    @classmethod
    def from_dataset(cls, dataset: MultiTaskDataset, batch_size: int = 32, **kwargs) -> MultiTaskBatchSampler:
        """A sampler over a `MultiTaskDataset` (its `task_sizes` and `offsets`)."""
        streaming = [task for task, ds in getattr(dataset, "datasets", {}).items() if hasattr(ds, "next_rows")]
        return cls(dataset.task_sizes, batch_size, offsets=dataset.offsets, streaming_tasks=streaming, **kwargs)

    @property
    def batches_per_step(self) -> int:
        """Consecutive batches that share a task: gradient_accumulation_steps * world_size."""
        return self.gradient_accumulation_steps * self.world_size

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose stream `__iter__` yields."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.steps_per_epoch * self.batches_per_step

    def _rng(self, *key: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, *key])

    def _task_pass(self, task_index: int, pass_index: int) -> list[list[list[int]]]:
        """One shuffled pass over a task: a list of steps, each a list of G batches of global indices."""
        task = self.tasks[task_index]
        n, b, G = self.task_sizes[task], self.batch_sizes[task], self.batches_per_step
        if task in self.streaming_tasks:
            return _StreamPass(n, b, G, self.drop_last, self.offsets[task])
        rng = self._rng(0, task_index, pass_index)
        order = rng.permutation(n)
        per_step = b * G
        if self.group_by_length:
            lengths = self.lengths[task]
            mega = per_step * self.megabatch_mult
            order = np.concatenate(
                [chunk[np.argsort(-lengths[chunk], kind="stable")] for chunk in np.split(order, range(mega, n, mega))]
            )
        full, rest = divmod(n, per_step)
        steps = [order[i * per_step : (i + 1) * per_step].reshape(G, b) for i in range(full)]
        if not self.drop_last and rest >= G:
            steps.append(np.array_split(order[full * per_step :], G))
        if self.group_by_length and len(steps) > 1:
            steps = [steps[i] for i in rng.permutation(len(steps))]
        offset = self.offsets[task]
        return [[(batch + offset).tolist() for batch in step] for step in steps]

    def _step_tasks(self) -> list[int]:
        """The task (index) of every step of the current epoch."""
        if self.strategy == "round_robin":
            remaining = [self.task_steps[t] for t in self.tasks]
            order = []
            while any(remaining):
                for i, left in enumerate(remaining):
                    if left:
                        order.append(i)
                        remaining[i] -= 1
            return order
        if self.strategy in ("proportional", "balanced"):
            order = np.repeat(np.arange(len(self.tasks)), [self.epoch_task_steps[t] for t in self.tasks])
            return self._rng(1).permutation(order).tolist()
        p = np.array([self.probabilities[t] for t in self.tasks])
        return self._rng(1).choice(len(self.tasks), size=self.steps_per_epoch, p=p).tolist()

    def task_schedule(self, epoch: int | None = None) -> list[str]:
        """Task name of every optimizer step of an epoch (default: the current one)."""
        if epoch is not None:
            self.set_epoch(epoch)
        return [self.tasks[i] for i in self._step_tasks()]

    def iter_steps(self):
        """Yield `(task, [G batches])` for every step of the current epoch."""
        passes: dict[int, list] = {}
        cursor: dict[int, tuple[int, int]] = {}  # task index -> (pass index, step inside the pass)
        for i in self._step_tasks():
            pass_index, position = cursor.get(i, (0, 0))
            if i not in passes or position >= len(passes[i]):
                if i in passes:
                    pass_index, position = pass_index + 1, 0
                passes[i] = self._task_pass(i, pass_index)
            cursor[i] = (pass_index, position + 1)
            yield self.tasks[i], passes[i][position]

    def __iter__(self):
        for _, step in self.iter_steps():
            yield from step
