"""Multi-task training for MTST: task-aware batch sampling, `MultiTaskTrainer`, loss weighting, per-task metrics,
freezing, layer-wise learning-rate decay and gradual unfreezing.

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

Loss
    Each batch's loss is the model's unweighted loss for the batch's task (mean over the batch's labelled units:
    sentences for sequence tasks, labelled sub-tokens for token tasks), multiplied by the task's `loss_weight`
    (`loss_weighting="static"`), or `exp(-s_t) * L_t + s_t / 2` with a learned `s_t = log σ_t²` per task
    (`"uncertainty"`, Kendall, Gal & Cipolla 2018, classification form). `num_items_in_batch` is not used:
    token counts and sentence counts must not be mixed, so the Trainer divides each micro-batch loss by the number
    of accumulation steps instead (`model_accepts_loss_kwargs = False`, `loss_is_scaled_for_ga = False`).

Metrics (`eval_<task>_<metric>`, plus `eval_average` and `eval_loss`)
    - sequence tasks: `accuracy`, `macro_f1`, `macro_precision`, `macro_recall` (macro over the labels that occur in
      gold or predictions); headline metric: `accuracy`.
    - token tasks: entity-level `precision`, `recall`, `f1` with seqeval in `mode="strict"` and scheme IOB2 (IOBES
      when the labels use E-/S- prefixes; plain tags without prefixes are read as IO: `X` -> `I-X`, default mode),
      `accuracy` over labelled (sub-)tokens and `<TYPE>_f1` per entity type; headline metric: `f1`.
    - `eval_average`: the mean of the tasks' headline metrics, usable as `metric_for_best_model="average"`;
      `eval_loss`: the mean of the tasks' (unweighted) losses.

Checkpoints and the saved model
    A checkpoint is complete once `trainer_state.json` is in it: the Trainer writes that file last, and MTST writes its
    own files (the uncertainty weights `mtst_loss_weighting.safetensors`, the card, the code files and the cleaned
    `config.json`) right after the weights, before it (`MultiTaskTrainer.save_model`). Resuming skips or refuses a
    checkpoint without it, with truncated weights or config, or without a file the run needs. When evaluation and
    saving line up (`best_model_selection`), `load_best_model_at_end=None` turns into True: the model left after
    training, and saved, is the best checkpoint by `metric_for_best_model` (`eval_average` in run_multitask.py); else
    the last model is kept and the log says why. `MultiTaskTrainer.kept_model` says which one was kept.

Freezing
    Static freezes (`freeze`, `freeze_layers`, `freeze_heads`) set `requires_grad=False` before the model is wrapped.
    Gradual unfreezing never touches `requires_grad`: a block waits with learning rate 0 (and zeroed gradients) until
    its stage, via per-group factors in the LR schedule, which is safe under DDP.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader, Sampler
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import (
    PREFIX_CHECKPOINT_DIR,
    EvalPrediction,
    PredictionOutput,
    seed_worker,
    speed_metrics,
)

try:  # transformers >= 5.x with optimizer factories (Muon, Dion, ...)
    from transformers.trainer_optimizer import is_optimizer_factory
except ImportError:  # older releases: optimizer handlers return optimizer classes only

    def is_optimizer_factory(optimizer_cls_or_factory) -> bool:
        return False


from configuration_mtst import MTSTLoadError
from modeling_mtst import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME, check_weights, check_weights_file
from tasks_mtst import MultiTaskCollator, MultiTaskDataset

__all__ = [
    "MultiTaskBatchSampler",
    "MultiTaskTrainer",
    "MultiTaskTrainingArguments",
    "MultiTaskTrainingError",
    "UncertaintyLossWeighting",
    "apply_static_freezing",
    "best_model_selection",
    "check_resume_checkpoint",
    "checkpoint_files",
    "checkpoint_problem",
    "last_complete_checkpoint",
    "parameter_blocks",
    "sequence_classification_metrics",
    "token_classification_metrics",
    "task_metrics",
    "write_predictions",
    "format_parameter_summary",
]

logger = logging.getLogger(__name__)
# One line per training micro-batch (rank, step, task) when `log_task_per_step` or MTST_LOG_TASK_PER_STEP=1.
step_logger = logging.getLogger(__name__ + ".steps")

SAMPLING_STRATEGIES = ("round_robin", "proportional", "temperature", "weights")
LOSS_WEIGHTINGS = ("static", "uncertainty")
FREEZE_OPTIONS = ("none", "all", "encoder", "embeddings")
UNFREEZE_UNITS = ("steps", "epochs")
HEADLINE_METRICS = {"sequence_classification": "accuracy", "token_classification": "f1"}
LOSS_WEIGHTING_FILE = "mtst_loss_weighting.safetensors"
TRAINER_STATE_NAME = "trainer_state.json"
IGNORE_INDEX = -100


class MultiTaskTrainingError(ValueError):
    """A multi-task training option is invalid; the message names the option and the allowed values."""


# ---------------------------------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------------------------------

_CHECKPOINT_RE = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")


def checkpoint_files(args) -> tuple[str, ...]:
    """The MTST files that a checkpoint of a run with these arguments must hold to be resumed from."""
    return (LOSS_WEIGHTING_FILE,) if _option(args, "loss_weighting") == "uncertainty" else ()


def checkpoint_problem(folder: str, required: Sequence[str] = ()) -> str | None:
    """Why `folder` is not a complete checkpoint (None when it is). The Trainer writes a checkpoint in place (no
    temporary folder), trainer_state.json last, and MTST writes its own files before that one (see
    `MultiTaskTrainer.save_model`), so a save cut short by a kill lacks trainer_state.json or has truncated files.
    `required` names further files the run needs (`checkpoint_files`)."""
    if not os.path.isdir(folder):
        return "it does not exist"
    state = os.path.join(folder, TRAINER_STATE_NAME)
    if not os.path.isfile(state):
        return f"it has no {TRAINER_STATE_NAME} (the Trainer writes it last, so the save was interrupted)"
    try:
        with open(state, encoding="utf-8") as f:
            json.load(f)
    except (OSError, ValueError) as err:
        return f"its {TRAINER_STATE_NAME} is truncated or invalid ({err})"
    try:
        with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
            json.load(f)
    except (OSError, ValueError) as err:
        return f"its config.json is missing, truncated or invalid ({err})"
    if not any(os.path.isfile(os.path.join(folder, name)) for name in (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME)):
        return f"it has no {SAFE_WEIGHTS_NAME}"
    try:
        check_weights(folder)
    except MTSTLoadError as err:
        return f"its weights are truncated or corrupt ({err.__cause__ or err})"
    for name in required:
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            what = " (the learned uncertainty loss weights)" if name == LOSS_WEIGHTING_FILE else ""
            return f"it has no {name}{what}, which this run needs: it was saved without it or the save was interrupted"
        if name.endswith(".safetensors"):
            try:
                check_weights_file(path)
            except MTSTLoadError as err:
                return f"its {name} is truncated or corrupt ({err.__cause__ or err})"
    return None


def last_complete_checkpoint(output_dir: str, required: Sequence[str] = ()) -> str | None:
    """The complete checkpoint-N folder of `output_dir` with the highest N (None if there is none); incomplete ones
    (a run killed while saving leaves one behind) are skipped with a warning. `required`: see `checkpoint_problem`."""
    if not os.path.isdir(output_dir):
        return None
    steps = sorted(
        ((int(m.group(1)), name) for name in os.listdir(output_dir) if (m := _CHECKPOINT_RE.match(name))),
        reverse=True,
    )
    for _, name in steps:
        folder = os.path.join(output_dir, name)
        problem = checkpoint_problem(folder, required)
        if problem is None:
            return folder
        logger.warning("Skipping the incomplete checkpoint %s: %s.", folder, problem)
    return None


def check_resume_checkpoint(checkpoint: str, model: nn.Module, required: Sequence[str] = ()) -> None:
    """Raise `MultiTaskTrainingError` unless `checkpoint` is complete (with the `required` files) and holds exactly
    `model`'s tasks, labels and weight shapes: otherwise the Trainer fails with a size mismatch, or quietly resumes
    with missing heads."""
    problem = checkpoint_problem(checkpoint, required)
    if problem is not None:
        parent = os.path.dirname(os.path.normpath(checkpoint))
        other = (
            last_complete_checkpoint(parent, required) if _CHECKPOINT_RE.match(os.path.basename(checkpoint)) else None
        )
        hint = f" The last complete checkpoint there is {other}." if other else ""
        raise MultiTaskTrainingError(f"Cannot resume from {checkpoint}: {problem}.{hint}")
    try:
        with open(os.path.join(checkpoint, "config.json"), encoding="utf-8") as f:
            saved = json.load(f)
        saved_tasks = {t["name"]: (t["type"], list(t["labels"])) for t in saved.get("tasks") or []}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise MultiTaskTrainingError(
            f"Cannot resume from {checkpoint}: its config.json is not an MTST config ({err})."
        ) from err
    config = model.config
    tasks = {t: (config.task_type(t), config.task_labels(t)) for t in config.task_names}
    problems = [f"task '{t}' is not in the checkpoint" for t in tasks if t not in saved_tasks]
    problems += [f"the checkpoint has task '{t}', which this model lacks" for t in saved_tasks if t not in tasks]
    problems += [
        f"task '{t}' is {kind} with labels {labels} here but {saved_tasks[t][0]} with labels {saved_tasks[t][1]} in "
        "the checkpoint"
        for t, (kind, labels) in tasks.items()
        if t in saved_tasks and saved_tasks[t] != (kind, labels)
    ]
    weights = os.path.join(checkpoint, SAFE_WEIGHTS_NAME)
    if not problems and os.path.isfile(weights):
        with safe_open(weights, framework="pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        mine = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        differ = sorted(k for k in mine.keys() | shapes.keys() if mine.get(k) != shapes.get(k))
        if differ:
            problems.append(
                f"{len(differ)} weight(s) differ in name or shape (e.g. {differ[0]}: {shapes.get(differ[0])} there, "
                f"{mine.get(differ[0])} here; another backbone?)"
            )
    if problems:
        raise MultiTaskTrainingError(
            f"Cannot resume from {checkpoint}: it was trained for other tasks or another model: "
            f"{'; '.join(problems)}. Resume with the tasks and backbone it was trained with, or start afresh in "
            "another output folder."
        )


def best_model_selection(args, has_eval_dataset: bool = True) -> str | None:
    """Why the best checkpoint by `metric_for_best_model` cannot be the model kept at the end of training with these
    arguments, or None when it can: a metric is set, and evaluation and saving line up (the same strategy, and
    `save_steps` a multiple of `eval_steps`, or `save_strategy="best"`), so every checkpoint has its evaluation."""

    def value(strategy) -> str:
        return str(getattr(strategy, "value", strategy))

    save, evaluate = value(args.save_strategy), value(args.eval_strategy)
    if not args.metric_for_best_model:
        return "no --metric_for_best_model is set"
    if save == "no":
        return "no checkpoint is saved (--save_strategy no)"
    if evaluate == "no" or not has_eval_dataset:
        return "nothing is evaluated during training (--eval_strategy no, or no evaluation data)"
    if save == "best":
        return None
    if save != evaluate:
        return f"evaluation (--eval_strategy {evaluate}) and saving (--save_strategy {save}) do not line up"
    if save == "steps":
        every, saved = args.eval_steps or 0, args.save_steps or 0
        if every >= 1 and saved >= 1:
            aligned = saved % every == 0
        else:  # ratios of the total steps, as TrainingArguments compares them
            aligned = every > 0 and every < 1 and 0 < saved < 1 and round(saved * 1e6) % round(every * 1e6) == 0
        if not aligned:
            return (
                f"--save_steps {saved:g} is not a multiple of --eval_steps {every:g}, so some checkpoints have no "
                "evaluation"
            )
    return None


# ---------------------------------------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------------------------------------


def _task_mapping(name: str, value, tasks: Sequence[str], kind=float) -> dict:
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
    Yields lists of indices into a [`tasks_mtst.MultiTaskDataset`]; every batch holds one task, and the
    `gradient_accumulation_steps * world_size` batches of an optimizer step share their task (see the module
    docstring for the exact epoch definition of each strategy).

    Args:
        task_sizes (`Mapping[str, int]`): examples per task, in task order (`MultiTaskDataset.task_sizes`).
        batch_size (`int`): batch size per device.
        strategy (`str`): one of `round_robin`, `proportional`, `temperature`, `weights`.
        offsets (`Mapping[str, int]`, *optional*): global index of each task's first example (default: cumulative
            sizes in task order, as in `MultiTaskDataset.offsets`).
        task_batch_sizes (`Mapping[str, int]`, *optional*): per-task batch sizes overriding `batch_size`.
        temperature (`float`): T of the `temperature` strategy.
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
        for t, b in _task_mapping("task_batch_sizes", task_batch_sizes, self.tasks, int).items():
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
        self.epoch = 0

        self.lengths = None
        if lengths is not None:
            if isinstance(lengths, Mapping):
                self.lengths = {t: np.asarray(lengths[t], dtype=np.int64) for t in self.tasks}
            else:
                lengths = np.asarray(lengths, dtype=np.int64)
                self.lengths = {t: lengths[self.offsets[t] : self.offsets[t] + self.task_sizes[t]] for t in self.tasks}
            for t in self.tasks:
                if len(self.lengths[t]) != self.task_sizes[t]:
                    raise MultiTaskTrainingError(
                        f"`lengths` of task {t!r} has {len(self.lengths[t])} entries for {self.task_sizes[t]} "
                        "examples."
                    )
        if group_by_length and self.lengths is None:
            raise MultiTaskTrainingError("`group_by_length` needs the example `lengths`.")

        # Probability of drawing each task at a step (temperature / weights).
        self.probabilities = None
        if strategy == "temperature":
            if not isinstance(temperature, (int, float)) or not temperature > 0:
                raise MultiTaskTrainingError(f"`temperature` must be a positive number; got {temperature!r}.")
            if temperature_cap is not None and (not isinstance(temperature_cap, int) or temperature_cap < 1):
                raise MultiTaskTrainingError(f"`temperature_cap` must be a positive integer; got {temperature_cap!r}.")
            sizes = np.array([self.task_sizes[t] for t in self.tasks], dtype=np.float64)
            if temperature_cap is not None:
                sizes = np.minimum(sizes, temperature_cap)
            raw = sizes ** (1.0 / temperature)
            self.probabilities = {t: float(p) for t, p in zip(self.tasks, raw / raw.sum())} if raw.sum() > 0 else None
        elif strategy == "weights":
            if weights is None:
                raise MultiTaskTrainingError(
                    f"The `weights` sampling strategy needs `task_weights` for the tasks {', '.join(self.tasks)}."
                )
            parsed = _task_mapping("task_weights", weights, self.tasks)
            missing = [t for t in self.tasks if t not in parsed]
            if missing:
                raise MultiTaskTrainingError(
                    f"`task_weights` has no weight for task(s) {missing}; give one for every task "
                    f"({', '.join(self.tasks)}), 0 to never sample a task."
                )
            raw = np.array([parsed[t] for t in self.tasks], dtype=np.float64)
            if (raw < 0).any() or not np.isfinite(raw).all() or raw.sum() <= 0:
                raise MultiTaskTrainingError(
                    f"`task_weights` must be finite, non-negative and not all 0; got {parsed}."
                )
            self.probabilities = {t: float(p) for t, p in zip(self.tasks, raw / raw.sum())}

        # Steps per pass over each task, and the epoch length.
        G = self.batches_per_step
        self.task_steps = {}
        for t in self.tasks:
            n, b = self.task_sizes[t], self.batch_sizes[t]
            full, rest = divmod(n, b * G)
            self.task_steps[t] = full + int(not drop_last and rest >= G)
        for t in self.tasks:
            sampled = self.probabilities is None or self.probabilities[t] > 0
            if sampled and self.task_steps[t] == 0:
                need = self.batch_sizes[t] * G if drop_last else G
                raise MultiTaskTrainingError(
                    f"Task {t!r} has {self.task_sizes[t]} training examples, fewer than the {need} that one optimizer "
                    f"step needs (gradient_accumulation_steps={gradient_accumulation_steps} x world_size={world_size}"
                    f" batches{' of ' + str(self.batch_sizes[t]) if drop_last else ''}, all from one task). Add data, "
                    "lower those settings, or remove the task."
                )
        self.steps_per_epoch = sum(self.task_steps.values())
        if self.steps_per_epoch == 0:
            raise MultiTaskTrainingError("The training data gives no batch at all.")

    @classmethod
    def from_dataset(cls, dataset: MultiTaskDataset, batch_size: int = 32, **kwargs) -> MultiTaskBatchSampler:
        """A sampler over a `MultiTaskDataset` (its `task_sizes` and `offsets`)."""
        return cls(dataset.task_sizes, batch_size, offsets=dataset.offsets, **kwargs)

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
        if self.strategy == "proportional":
            order = np.repeat(np.arange(len(self.tasks)), [self.task_steps[t] for t in self.tasks])
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


# ---------------------------------------------------------------------------------------------------------------------
# Training arguments
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class MultiTaskTrainingArguments(TrainingArguments):
    """[`TrainingArguments`] plus the multi-task options of [`MultiTaskTrainer`]."""

    sampling_strategy: str = field(
        default="proportional",
        metadata={
            "help": "How optimizer steps are spread over tasks: round_robin (tasks in turn), proportional (each "
            "example once per epoch, steps in random task order), temperature (p ~ min(size, cap)^(1/T)), weights "
            "(p ~ task_weights).",
            "choices": list(SAMPLING_STRATEGIES),
        },
    )
    temperature: float = field(default=2.0, metadata={"help": "T of the temperature sampling strategy."})
    temperature_cap: int | None = field(
        default=None, metadata={"help": "Task sizes are capped at this many examples before the temperature."}
    )
    task_weights: str | None = field(
        default=None,
        metadata={"help": "Sampling weights of the weights strategy: 'task=w,task=w' or a JSON object."},
    )
    group_by_length: bool = field(
        default=False,
        metadata={"help": "Inside each task, batch examples of similar length together (less padding)."},
    )
    loss_weighting: str = field(
        default="static",
        metadata={
            "help": "static: each task's loss times its loss_weight; uncertainty: learned per-task log-variances "
            "(Kendall et al. 2018).",
            "choices": list(LOSS_WEIGHTINGS),
        },
    )
    loss_weighting_lr: float | None = field(
        default=1e-2,
        metadata={"help": "Learning rate of the uncertainty log-variances (None: the model's learning rate)."},
    )
    freeze: str = field(
        default="none",
        metadata={
            "help": "Freeze from the start: none; all (encoder and projection: only the heads train); encoder; "
            "embeddings.",
            "choices": list(FREEZE_OPTIONS),
        },
    )
    freeze_layers: int = field(default=0, metadata={"help": "Freeze the embeddings and the lowest N encoder layers."})
    freeze_heads: list[str] | None = field(default=None, metadata={"help": "Task heads to freeze."})
    gradual_unfreeze_every: int = field(
        default=0,
        metadata={
            "help": "Gradual unfreezing: start with only heads and projection training, then unfreeze one encoder "
            "layer (top first, embeddings last) every N units. 0 turns it off."
        },
    )
    gradual_unfreeze_unit: str = field(
        default="epochs",
        metadata={"help": "Unit of gradual_unfreeze_every.", "choices": list(UNFREEZE_UNITS)},
    )
    layerwise_lr_decay: float = field(
        default=1.0,
        metadata={
            "help": "Encoder layer k from the top (top = 0) trains at lr * decay^k, the embeddings at "
            "lr * decay^num_layers; heads and projection at lr. 1.0 turns it off."
        },
    )
    log_task_per_step: bool = field(
        default=False,
        metadata={"help": "Log one line per training micro-batch with the rank, the step and the task (debugging)."},
    )
    remove_unused_columns: bool = field(
        default=False,
        metadata={"help": "Kept False: the data layer gives only model columns, and 'task' must reach the model."},
    )


_OPTION_DEFAULTS = {
    f.name: f.default
    for f in MultiTaskTrainingArguments.__dataclass_fields__.values()
    if f.name not in TrainingArguments.__dataclass_fields__
}


def _option(args, name: str):
    return getattr(args, name, _OPTION_DEFAULTS.get(name))


# ---------------------------------------------------------------------------------------------------------------------
# Loss weighting
# ---------------------------------------------------------------------------------------------------------------------


class UncertaintyLossWeighting(nn.Module):
    """Homoscedastic uncertainty weighting (Kendall, Gal & Cipolla 2018), classification form:
    `L = exp(-s_t) * L_t + s_t / 2` with a learned `s_t = log σ_t²` per task (initialised to 0, i.e. weight 1)."""

    def __init__(self, tasks: Sequence[str]):
        super().__init__()
        self.tasks = list(tasks)
        self.index = {t: i for i, t in enumerate(self.tasks)}
        self.log_vars = nn.Parameter(torch.zeros(len(self.tasks)))

    def forward(self, task: str, loss: torch.Tensor) -> torch.Tensor:
        s = self.log_vars[self.index[task]]
        return torch.exp(-s) * loss + 0.5 * s

    def weights(self) -> dict[str, float]:
        """The current effective weight exp(-s_t) of every task."""
        return {t: float(torch.exp(-self.log_vars[i].detach())) for t, i in self.index.items()}


# ---------------------------------------------------------------------------------------------------------------------
# Freezing and parameter groups
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class ParameterBlock:
    """A named set of parameters sharing a learning-rate scale and an unfreezing stage."""

    name: str
    params: list[tuple[str, nn.Parameter]]
    lr_scale: float = 1.0
    stage: int = 0  # gradual unfreezing: trainable from step stage * every (0 = from the start)


def parameter_blocks(model: nn.Module, layerwise_lr_decay: float = 1.0) -> list[ParameterBlock]:
    """Split an MTST model into blocks: heads, projection, other non-encoder parameters, encoder layers (top first),
    other encoder parameters, embeddings. Encoder layer k from the top has `lr_scale = decay**k` and stage k + 1;
    the embeddings `decay**num_layers` and stage num_layers + 1."""
    layers = model.encoder_layers()
    embeddings = model.embeddings_module()
    owner: dict[int, str] = {}
    for name, p in embeddings.named_parameters():
        owner[id(p)] = "embeddings"
    for i, layer in enumerate(layers):
        for p in layer.parameters():
            owner[id(p)] = f"encoder.layer.{i}"
    for task, head in model.heads.items():
        for p in head.parameters():
            owner[id(p)] = f"head.{task}"
    if getattr(model, "projection", None) is not None:
        for p in model.projection.parameters():
            owner[id(p)] = "projection"
    encoder_ids = {id(p) for p in model.encoder.parameters()}

    num_layers = len(layers)
    blocks: dict[str, ParameterBlock] = {}
    for task in model.heads:
        blocks[f"head.{task}"] = ParameterBlock(f"head.{task}", [])
    blocks["projection"] = ParameterBlock("projection", [])
    blocks["other"] = ParameterBlock("other", [])
    blocks["encoder.other"] = ParameterBlock("encoder.other", [], 1.0, 1)
    for k in range(num_layers):  # k = depth from the top
        i = num_layers - 1 - k
        blocks[f"encoder.layer.{i}"] = ParameterBlock(f"encoder.layer.{i}", [], layerwise_lr_decay**k, k + 1)
    blocks["embeddings"] = ParameterBlock("embeddings", [], layerwise_lr_decay**num_layers, num_layers + 1)
    seen = set()
    for name, p in model.named_parameters():
        if id(p) in seen:  # tied weights
            continue
        seen.add(id(p))
        block = owner.get(id(p)) or ("encoder.other" if id(p) in encoder_ids else "other")
        blocks[block].params.append((name, p))
    return [b for b in blocks.values() if b.params]


def apply_static_freezing(
    model: nn.Module, freeze: str = "none", freeze_layers: int = 0, freeze_heads: Sequence[str] | None = None
) -> list[str]:
    """Set `requires_grad=False` (call before the model is wrapped for DDP). Returns the frozen parameter names.

    `freeze`: `none`, `all` (encoder and projection: only the heads train), `encoder` (the backbone),
    `embeddings`. `freeze_layers=N`: the embeddings and the lowest N encoder layers. `freeze_heads`: task heads.
    """
    if freeze not in FREEZE_OPTIONS:
        raise MultiTaskTrainingError(f"Unknown freeze option {freeze!r}; allowed values: {', '.join(FREEZE_OPTIONS)}.")
    layers = model.encoder_layers()
    if isinstance(freeze_layers, bool) or not isinstance(freeze_layers, int) or not 0 <= freeze_layers <= len(layers):
        raise MultiTaskTrainingError(
            f"`freeze_layers` must be an integer from 0 to {len(layers)} (the encoder's layers); "
            f"got {freeze_layers!r}."
        )
    heads = list(freeze_heads or [])
    unknown = [h for h in heads if h not in model.heads]
    if unknown:
        raise MultiTaskTrainingError(f"`freeze_heads`: unknown task(s) {unknown}; tasks: {', '.join(model.heads)}.")
    modules: list[nn.Module] = []
    if freeze in ("all", "encoder"):
        modules.append(model.encoder)
    if freeze == "all" and getattr(model, "projection", None) is not None:
        modules.append(model.projection)
    if freeze == "embeddings" or freeze_layers:
        modules.append(model.embeddings_module())
    modules.extend(layers[:freeze_layers])
    modules.extend(model.heads[h] for h in heads)
    frozen = set()
    for module in modules:
        for p in module.parameters():
            p.requires_grad_(False)
            frozen.add(id(p))
    if not any(p.requires_grad for p in model.parameters()):
        raise MultiTaskTrainingError("The freeze options leave no trainable parameter.")
    return [n for n, p in model.named_parameters() if id(p) in frozen]


def _gated_lambda(base, start_step: int):
    def lr_lambda(step: int) -> float:
        return base(step) if step >= start_step else 0.0

    return lr_lambda


# ---------------------------------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------------------------------


def _metric_name(text: str) -> str:
    return re.sub(r"[^0-9A-Za-z]+", "_", str(text)).strip("_") or "type"


def sequence_classification_metrics(predictions, label_ids, label_names: Sequence[str] | None = None) -> dict:
    """accuracy, macro_f1, macro_precision, macro_recall (macro over the labels present in gold or predictions, 0 for
    an undefined ratio: the same numbers as scikit-learn's `average="macro", zero_division=0`)."""
    predictions = np.asarray(predictions)
    if predictions.ndim == 2:
        predictions = predictions.argmax(-1)
    label_ids = np.asarray(label_ids).reshape(-1)
    keep = label_ids != IGNORE_INDEX
    y_true, y_pred = label_ids[keep], predictions.reshape(-1)[keep]
    if y_true.size == 0:
        return {}
    precisions, recalls, f1s = [], [], []
    for label in np.union1d(y_true, y_pred):
        tp = np.sum((y_pred == label) & (y_true == label))
        predicted, actual = np.sum(y_pred == label), np.sum(y_true == label)
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        precisions.append(precision)
        recalls.append(recall)
        f1s.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    return {
        "accuracy": float(np.mean(y_true == y_pred)),
        "macro_f1": float(np.mean(f1s)),
        "macro_precision": float(np.mean(precisions)),
        "macro_recall": float(np.mean(recalls)),
    }


def _tag_scheme(label_names: Sequence[str]) -> str:
    """iob2 / iobes when every non-O label has a B-/I-(/E-/S-) prefix, else io (plain tags)."""
    tags = [label for label in label_names if label != "O"]
    if tags and all(re.match(r"^[BI]-.", t) for t in tags):
        return "iob2"
    if tags and all(re.match(r"^[BIES]-.", t) for t in tags):
        return "iobes"
    return "io"


def token_classification_metrics(predictions, label_ids, label_names: Sequence[str]) -> dict:
    """Entity-level precision/recall/f1 (seqeval, mode="strict", scheme IOB2 or IOBES; plain tags read as IO),
    accuracy over labelled tokens, and `<TYPE>_f1` per entity type."""
    from seqeval.metrics import classification_report
    from seqeval.scheme import IOB2, IOBES

    predictions = np.asarray(predictions)
    if predictions.ndim == 3:
        predictions = predictions.argmax(-1)
    label_ids = np.asarray(label_ids)
    scheme = _tag_scheme(label_names)
    names = list(label_names) if scheme != "io" else [n if n == "O" else f"I-{n}" for n in label_names]
    y_true, y_pred = [], []
    correct = total = 0
    for pred_row, gold_row in zip(predictions, label_ids):
        keep = gold_row != IGNORE_INDEX
        gold, pred = gold_row[keep], pred_row[: len(gold_row)][keep]
        correct += int((gold == pred).sum())
        total += int(keep.sum())
        y_true.append([names[i] for i in gold])
        y_pred.append([names[i] if 0 <= i < len(names) else "O" for i in pred])
    if total == 0:
        return {}
    kwargs = {"mode": "strict", "scheme": IOB2 if scheme == "iob2" else IOBES} if scheme != "io" else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = classification_report(y_true, y_pred, output_dict=True, zero_division=0, **kwargs)
    micro = report.get("micro avg", {})
    metrics = {
        "precision": float(micro.get("precision", 0.0)),
        "recall": float(micro.get("recall", 0.0)),
        "f1": float(micro.get("f1-score", 0.0)),
        "accuracy": correct / total,
    }
    for entity, values in report.items():
        if entity not in ("micro avg", "macro avg", "weighted avg"):
            metrics[f"{_metric_name(entity)}_f1"] = float(values["f1-score"])
    return metrics


def task_metrics(task_type: str, predictions, label_ids, label_names: Sequence[str]) -> dict:
    """Metrics of one task (see the module docstring for names and headline metrics)."""
    if task_type == "token_classification":
        return token_classification_metrics(predictions, label_ids, label_names)
    return sequence_classification_metrics(predictions, label_ids, label_names)


def _softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits - logits.max(-1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(-1, keepdims=True)


def _jsonable(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def write_predictions(
    path: str,
    task_type: str,
    label_names: Sequence[str],
    logits: np.ndarray,
    label_ids: np.ndarray | None = None,
    raw_dataset=None,
    word_ids: Sequence[Sequence[int | None]] | None = None,
) -> int:
    """Write one JSON line per example: the input (`text`/`text_pair` or `tokens` from `raw_dataset`), the gold label
    names (when known), the predicted label names and their probabilities. Returns the number of lines.

    Token tasks are written per word: a word's prediction is that of its first sub-token (`word_ids` from the
    tokenizer; without them, the labelled positions of `label_ids` are taken as the words' first sub-tokens). Words cut
    off by truncation get no prediction (`null`)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    names = list(label_names)
    n = len(logits)
    count = 0
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            row = raw_dataset[i] if raw_dataset is not None else {}
            record: dict[str, Any] = {}
            if task_type == "token_classification":
                tokens = list(row.get("tokens", [])) if row else None
                probs = _softmax(np.asarray(logits[i], dtype=np.float64))
                if word_ids is not None:
                    positions: dict[int, int] = {}
                    for pos, w in enumerate(word_ids[i]):
                        if w is not None and w not in positions:
                            positions[w] = pos
                    num_words = len(tokens) if tokens is not None else (max(positions) + 1 if positions else 0)
                    firsts = [positions.get(w) for w in range(num_words)]
                else:
                    firsts = [int(p) for p in np.nonzero(np.asarray(label_ids[i]) != IGNORE_INDEX)[0]]
                    if tokens is not None:
                        firsts = (firsts + [None] * len(tokens))[: len(tokens)]
                preds, scores = [], []
                for pos in firsts:
                    if pos is None or pos >= len(probs):
                        preds.append(None)
                        scores.append(None)
                    else:
                        k = int(probs[pos].argmax())
                        preds.append(names[k])
                        scores.append(round(float(probs[pos][k]), 6))
                if tokens is not None:
                    record["tokens"] = tokens
                if row and "tags" in row:
                    record["labels"] = [names[t] for t in row["tags"]]
                elif label_ids is not None and word_ids is None:
                    record["labels"] = [names[int(label_ids[i][p])] if p is not None else None for p in firsts]
                record["predictions"] = preds
                record["scores"] = scores
            else:
                probs = _softmax(np.asarray(logits[i], dtype=np.float64).reshape(-1))
                k = int(probs.argmax())
                for key in ("text", "text_pair"):
                    if row and key in row:
                        record[key] = row[key]
                gold = row.get("label") if row else None
                if gold is None and label_ids is not None:
                    gold = int(label_ids[i])
                if gold is not None and gold != IGNORE_INDEX:
                    record["label"] = names[int(gold)]
                record["prediction"] = names[k]
                record["score"] = round(float(probs[k]), 6)
                record["scores"] = {name: round(float(p), 6) for name, p in zip(names, probs)}
            f.write(json.dumps({k: _jsonable(v) for k, v in record.items()}, ensure_ascii=False) + "\n")
            count += 1
    return count


# ---------------------------------------------------------------------------------------------------------------------
# Trainer
# ---------------------------------------------------------------------------------------------------------------------


def _per_task(datasets) -> dict[str, MultiTaskDataset]:
    """`{task: MultiTaskDataset({task: dataset})}` from a mapping or a `MultiTaskDataset`."""
    if isinstance(datasets, MultiTaskDataset):
        datasets = datasets.datasets if len(datasets.task_names) > 1 else {datasets.task_names[0]: datasets}
    return {
        task: ds if isinstance(ds, MultiTaskDataset) and ds.task_names == [task] else MultiTaskDataset({task: ds})
        for task, ds in datasets.items()
    }


class _MultiTaskCallback(TrainerCallback):
    """Keeps the sampler's epoch and the uncertainty weights' gradients in step with training."""

    def __init__(self, trainer: MultiTaskTrainer):
        self.trainer = trainer

    def on_epoch_begin(self, args, state, control, **kwargs):
        # The Trainer's own set_epoch does not reach a sampler wrapped in SkipBatchSampler(BatchSamplerShard(...))
        # when resuming under DDP; state.epoch (restored from the checkpoint) always gives the epoch being started.
        sampler = self.trainer._train_batch_sampler
        if sampler is not None:
            sampler.set_epoch(int(math.floor((state.epoch or 0.0) + 1e-9)))

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        weighting = self.trainer.loss_weighting_module
        if weighting is not None and self.trainer.accelerator.num_processes > 1:
            p = weighting.log_vars
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            p.grad.copy_(self.trainer.accelerator.reduce(p.grad, reduction="mean"))

    def on_optimizer_step(self, args, state, control, **kwargs):
        # The log-variances live outside the model, so the Trainer's model.zero_grad() does not reset them.
        weighting = self.trainer.loss_weighting_module
        if weighting is not None:
            weighting.zero_grad(set_to_none=True)


class MultiTaskTrainer(Trainer):
    """
    [`Trainer`] for [`modeling_mtst.MTSTModel`]: single-task batches from [`MultiTaskBatchSampler`], per-task loss
    weighting, per-task training losses in the logs (`loss_<task>`), per-task evaluation and prediction, freezing,
    layer-wise learning-rate decay and gradual unfreezing. Options come from [`MultiTaskTrainingArguments`].

    `train_dataset` is a `{task: Dataset}` mapping (or a `MultiTaskDataset`) of tokenized datasets; `eval_dataset` a
    `{task: Dataset}` mapping. `task_batch_sizes` overrides the per-device batch size for some tasks.
    """

    # Each micro-batch loss is a mean over that batch; the Trainer divides it by the accumulation steps.
    loss_is_scaled_for_ga = False

    def __init__(
        self,
        model=None,
        args: TrainingArguments | None = None,
        data_collator=None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        task_batch_sizes: Mapping[str, int] | None = None,
        **kwargs,
    ):
        if args is None:
            args = MultiTaskTrainingArguments(output_dir="trainer_output")
        for option, allowed in (
            ("sampling_strategy", SAMPLING_STRATEGIES),
            ("loss_weighting", LOSS_WEIGHTINGS),
            ("freeze", FREEZE_OPTIONS),
            ("gradual_unfreeze_unit", UNFREEZE_UNITS),
        ):
            if _option(args, option) not in allowed:
                raise MultiTaskTrainingError(
                    f"Unknown {option} {_option(args, option)!r}; allowed values: {', '.join(allowed)}."
                )
        decay = _option(args, "layerwise_lr_decay")
        if not isinstance(decay, (int, float)) or not 0 < decay <= 1:
            raise MultiTaskTrainingError(f"`layerwise_lr_decay` must be in (0, 1]; got {decay!r}.")
        every = _option(args, "gradual_unfreeze_every")
        if isinstance(every, bool) or not isinstance(every, int) or every < 0:
            raise MultiTaskTrainingError(f"`gradual_unfreeze_every` must be an integer >= 0; got {every!r}.")
        temperature, cap = _option(args, "temperature"), _option(args, "temperature_cap")
        if not isinstance(temperature, (int, float)) or not (temperature > 0 and math.isfinite(temperature)):
            raise MultiTaskTrainingError(f"`temperature` must be a positive number; got {temperature!r}.")
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
            raise MultiTaskTrainingError(f"`temperature_cap` must be a positive integer; got {cap!r}.")
        if model is not None:
            self.task_names = list(model.config.task_names)
            if not self.task_names:
                raise MultiTaskTrainingError("The model has no task heads to train.")
            # Static freezes: before the model is wrapped (DDP never sees these parameters as trainable).
            self.frozen_parameters = apply_static_freezing(
                model, _option(args, "freeze"), _option(args, "freeze_layers"), _option(args, "freeze_heads")
            )
        if model is None:
            raise MultiTaskTrainingError("MultiTaskTrainer needs an MTST model (model_init is not supported).")
        if getattr(args, "train_sampling_strategy", "random") != "random":
            # MultiTaskBatchSampler replaces the Trainer's sampler; the Trainer's length grouping would also reorder
            # evaluation sets (and so misalign prediction files).
            if args.train_sampling_strategy == "group_by_length" and hasattr(args, "group_by_length"):
                args.group_by_length = True
            logger.warning(
                "train_sampling_strategy=%r is ignored: MultiTaskTrainer samples with MultiTaskBatchSampler "
                "(use sampling_strategy, and group_by_length for length grouping inside each task).",
                args.train_sampling_strategy,
            )
            args.train_sampling_strategy = "random"
        if len(self.task_names) > 1 and args.ddp_find_unused_parameters is None:
            # Single-task batches leave the other tasks' heads out of every step's graph (the same heads on every
            # rank, so DDP keeps their gradients None and the optimizer skips them, exactly as in one process).
            args.ddp_find_unused_parameters = True
        # The model kept at the end: the best checkpoint when evaluation and saving line up (None: decide here).
        self.best_model_reason = best_model_selection(args, eval_dataset is not None)
        keep_best = getattr(args, "load_best_model_at_end", False)
        if keep_best is None:
            args.load_best_model_at_end = self.best_model_reason is None
        elif keep_best:
            self.best_model_reason = None
        else:
            self.best_model_reason = "--load_best_model_at_end is false"
        if args.should_log:
            metric = _metric_key(args)
            if args.load_best_model_at_end:
                logger.info(
                    "The model kept at the end of training is the best checkpoint by %s (evaluation and saving line "
                    "up; --load_best_model_at_end false keeps the last one).",
                    metric,
                )
            elif keep_best is None:
                logger.warning(
                    "The model kept at the end of training is the last one, not the best checkpoint by %s: %s. "
                    "Evaluate and save with the same strategy (--save_steps a multiple of --eval_steps) to keep the "
                    "best one.",
                    metric,
                    self.best_model_reason,
                )
        self.kept_model: dict[str, Any] | None = None  # set by train(): which model training ended with
        if isinstance(train_dataset, Mapping):
            train_dataset = MultiTaskDataset(train_dataset)
        if isinstance(eval_dataset, (Mapping, MultiTaskDataset)):
            # One single-task MultiTaskDataset per task: its items carry "task", and get_eval_dataloader(task) works.
            eval_dataset = _per_task(eval_dataset)
        if data_collator is None and processing_class is not None:
            data_collator = MultiTaskCollator(processing_class)
        self._user_compute_metrics = kwargs.pop("compute_metrics", None)
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            compute_metrics=self._compute_metrics,
            **kwargs,
        )
        # The model's forward takes **kwargs, so the Trainer would pass num_items_in_batch and count label tokens
        # across a mixed set of units; each MTST loss is already a mean over its own batch.
        self.model_accepts_loss_kwargs = False
        self.task_batch_sizes = dict(task_batch_sizes or {})
        self._train_batch_sampler: MultiTaskBatchSampler | None = None
        self._eval_task: str | None = None
        self._task_loss_sums = torch.zeros(len(self.task_names), dtype=torch.float64, device=self.args.device)
        self._task_loss_counts = torch.zeros(len(self.task_names), dtype=torch.float64, device=self.args.device)
        self._grad_hooks: list = []
        self._unfreeze_every_steps = 0
        self._log_steps = bool(_option(args, "log_task_per_step")) or os.environ.get(
            "MTST_LOG_TASK_PER_STEP", ""
        ).lower() in ("1", "true", "yes")
        if self._log_steps:
            step_logger.setLevel(logging.INFO)
            if not step_logger.handlers:
                handler = logging.StreamHandler(sys.stderr)
                handler.setFormatter(logging.Formatter("%(message)s"))
                step_logger.addHandler(handler)
                step_logger.propagate = False
        self._micro_step = (-1, 0)
        self.loss_weighting_module = None
        if _option(args, "loss_weighting") == "uncertainty":
            self.loss_weighting_module = UncertaintyLossWeighting(self.task_names).to(self.args.device)
        self.add_callback(_MultiTaskCallback(self))

    # -- data ---------------------------------------------------------------------------------------------------------

    def _train_lengths(self, dataset: MultiTaskDataset) -> dict[str, list[int]]:
        lengths = {}
        for task, ds in dataset.datasets.items():
            column = ds["input_ids"] if hasattr(ds, "column_names") else [row["input_ids"] for row in ds]
            lengths[task] = [len(ids) for ids in column]
        return lengths

    def get_train_sampler(self, dataset: MultiTaskDataset | None = None) -> MultiTaskBatchSampler:
        """The task-aware batch sampler for the training set (yields the batches of all ranks)."""
        dataset = dataset if dataset is not None else self.train_dataset
        batch_sizes = {t: b for t, b in self.task_batch_sizes.items() if t in dataset.task_sizes}
        group = bool(_option(self.args, "group_by_length"))
        return MultiTaskBatchSampler.from_dataset(
            dataset,
            self._train_batch_size,
            strategy=_option(self.args, "sampling_strategy"),
            task_batch_sizes=batch_sizes,
            temperature=_option(self.args, "temperature"),
            temperature_cap=_option(self.args, "temperature_cap"),
            weights=_option(self.args, "task_weights"),
            seed=self.args.data_seed if self.args.data_seed is not None else self.args.seed,
            world_size=max(1, self.args.world_size),
            gradient_accumulation_steps=self.args.gradient_accumulation_steps,
            drop_last=self.args.dataloader_drop_last,
            lengths=self._train_lengths(dataset) if group else None,
            group_by_length=group,
        )

    def get_train_dataloader(self) -> DataLoader:
        """Single-task batches from `MultiTaskBatchSampler`, sharded by Accelerate with `even_batches` off."""
        if self.train_dataset is None:
            raise ValueError("MultiTaskTrainer: training requires a train_dataset.")
        dataset = self.train_dataset
        if isinstance(dataset, Mapping):
            dataset = self.train_dataset = MultiTaskDataset(dataset)
        sampler = self._train_batch_sampler = self.get_train_sampler(dataset)
        params = {
            "batch_sampler": sampler,
            "collate_fn": self.data_collator,
            "num_workers": self.args.dataloader_num_workers,
            "pin_memory": self.args.dataloader_pin_memory,
            "persistent_workers": self.args.dataloader_persistent_workers,
            "worker_init_fn": partial(
                seed_worker, num_workers=self.args.dataloader_num_workers, rank=self.args.process_index
            ),
        }
        if self.args.dataloader_num_workers > 0:
            params["prefetch_factor"] = self.args.dataloader_prefetch_factor
            params["multiprocessing_context"] = self.args.dataloader_multiprocessing_context
        # The sampler already emits a multiple of world_size batches, grouped per step; even_batches would pad the
        # last group with batches of another task. Evaluation keeps even_batches on (gather_for_metrics needs it).
        even_batches = self.accelerator.even_batches
        self.accelerator.even_batches = False
        try:
            return self.accelerator.prepare(DataLoader(dataset, **params))
        finally:
            self.accelerator.even_batches = even_batches

    def _eval_datasets(self, eval_dataset) -> dict[str, MultiTaskDataset]:
        datasets = eval_dataset if eval_dataset is not None else self.eval_dataset
        if not isinstance(datasets, (Mapping, MultiTaskDataset)):
            raise ValueError("MultiTaskTrainer evaluates a {task: Dataset} mapping (one evaluation set per task).")
        datasets = _per_task(datasets)
        unknown = [t for t in datasets if t not in self.task_names]
        if unknown:
            raise ValueError(f"Evaluation data for unknown task(s) {unknown}; tasks: {', '.join(self.task_names)}.")
        return datasets

    # -- loss ---------------------------------------------------------------------------------------------------------

    def _weighted(self, task: str, loss: torch.Tensor) -> torch.Tensor:
        if self.loss_weighting_module is not None:
            return self.loss_weighting_module(task, loss)
        return loss * self.model.config.loss_weights[task]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Run the batch's task and weight its unweighted loss (static loss_weight or learned uncertainty)."""
        task = inputs.get("task")
        outputs = model(**inputs)
        if task is not None:
            losses = {task: outputs.loss}
            loss = self._weighted(task, outputs.loss)
        else:  # joint examples: labels {task: tensor}
            losses = dict(outputs.task_losses or {})
            loss = sum(self._weighted(t, value) for t, value in losses.items())
        if model.training:
            self._check_finite(losses, loss)
            for t, value in losses.items():
                i = self.task_names.index(t)
                self._task_loss_sums[i] += value.detach().to(self._task_loss_sums)
                self._task_loss_counts[i] += 1
            if self._log_steps:
                step = self.state.global_step
                micro = self._micro_step[1] + 1 if self._micro_step[0] == step else 0
                self._micro_step = (step, micro)
                step_logger.info(
                    "[mtst-step] rank=%d step=%d micro=%d task=%s batch=%d",
                    self.args.process_index,
                    step,
                    micro,
                    task if task is not None else "joint",
                    inputs["input_ids"].shape[0],
                )
        return (loss, outputs) if return_outputs else loss

    def _check_finite(self, losses: dict[str, torch.Tensor], loss: torch.Tensor) -> None:
        """Stop with a `MultiTaskTrainingError` naming the task and the step when a training loss is NaN or inf,
        before its backward pass: the Trainer would otherwise train on (and only hide from its logs) a loss that
        turns every weight into NaN. Under DDP the check is agreed by all processes, so all of them stop."""
        bad = ~torch.isfinite(loss.detach()).reshape(1)
        if self.accelerator.num_processes > 1:
            bad = self.accelerator.reduce(bad.to(torch.float32), reduction="sum") > 0
        if not bool(bad):
            return
        step = self.state.global_step + 1
        values = {t: float(v.detach()) for t, v in losses.items() if not math.isfinite(float(v.detach()))}
        if not values and not math.isfinite(float(loss.detach())):
            values = {t: float(loss.detach()) for t in losses}  # finite task losses, non-finite weighted sum
        which = ", ".join(f"task '{t}' is {v}" for t, v in values.items()) or "a loss on another process is not finite"
        raise MultiTaskTrainingError(
            f"Training stopped at step {step} of {self.state.max_steps} (epoch {self.state.epoch or 0.0:.2f}): the "
            f"training loss of {which}. Training on would turn the weights into NaN. Lower the learning rate "
            f"(now {self.args.learning_rate:g}), keep gradient clipping on (max_grad_norm, now "
            f"{self.args.max_grad_norm:g}), and check the starting weights for NaN/inf and that task's data."
            + (" Checkpoints saved before this step are complete." if self.args.save_strategy != "no" else "")
        )

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add `loss_<task>` (mean unweighted loss of each task since the last log) and learned task weights."""
        if "loss" in logs and self._task_loss_counts is not None:
            stats = torch.stack([self._task_loss_sums, self._task_loss_counts])
            if self.accelerator.num_processes > 1:
                stats = self.accelerator.reduce(stats, reduction="sum")
            for i, task in enumerate(self.task_names):
                if stats[1, i] > 0:
                    logs[f"loss_{task}"] = float(stats[0, i] / stats[1, i])
            self._task_loss_sums.zero_()
            self._task_loss_counts.zero_()
            if self.loss_weighting_module is not None:
                for task, w in self.loss_weighting_module.weights().items():
                    logs[f"loss_weight_{task}"] = w
        super().log(logs, start_time)

    def learned_loss_weights(self) -> dict[str, float] | None:
        """exp(-s_t) per task with uncertainty weighting, else None."""
        return self.loss_weighting_module.weights() if self.loss_weighting_module is not None else None

    # -- optimizer and schedule ---------------------------------------------------------------------------------------

    def _unfreeze_every_steps_value(self) -> int:
        every = _option(self.args, "gradual_unfreeze_every")
        if not every:
            return 0
        if _option(self.args, "gradual_unfreeze_unit") == "steps":
            return every
        sampler = self._train_batch_sampler
        if sampler is not None:
            steps_per_epoch = sampler.steps_per_epoch
        else:
            steps_per_epoch = max(1, math.ceil(self.state.max_steps / max(1.0, self.args.num_train_epochs)))
        return every * steps_per_epoch

    def create_optimizer(self, model=None):
        """One parameter group per block (head, layer, embeddings, loss weights) with layer-wise LR; logs a table."""
        if self.optimizer is not None:
            return super().create_optimizer(model)
        opt_model = self.model if model is None else model
        unwrapped = self.accelerator.unwrap_model(opt_model)
        decay_names = set(self.get_decay_parameter_names(unwrapped))
        blocks = parameter_blocks(unwrapped, _option(self.args, "layerwise_lr_decay"))
        gradual = bool(_option(self.args, "gradual_unfreeze_every"))
        every_steps = self._unfreeze_every_steps_value() if gradual else 0
        self._unfreeze_every_steps = every_steps
        base_lr = self.args.learning_rate
        groups, summary = [], []
        for block in blocks:
            trainable = [(n, p) for n, p in block.params if p.requires_grad]
            start = block.stage * every_steps if gradual else 0
            summary.append(
                {
                    "group": block.name,
                    "parameters": sum(p.numel() for _, p in block.params),
                    "trainable": sum(p.numel() for _, p in trainable),
                    "lr": base_lr * block.lr_scale,
                    "unfreeze_step": start if trainable else None,
                }
            )
            for wd, params in (
                (self.args.weight_decay, [p for n, p in trainable if n in decay_names]),
                (0.0, [p for n, p in trainable if n not in decay_names]),
            ):
                if params:
                    groups.append(
                        {
                            "params": params,
                            "weight_decay": wd,
                            "lr": base_lr * block.lr_scale,
                            "mtst_block": block.name,
                            "mtst_unfreeze_step": start,
                        }
                    )
        if self.loss_weighting_module is not None:
            lr = _option(self.args, "loss_weighting_lr") or base_lr
            groups.append(
                {
                    "params": [self.loss_weighting_module.log_vars],
                    "weight_decay": 0.0,
                    "lr": lr,
                    "mtst_block": "loss_weighting",
                    "mtst_unfreeze_step": 0,
                }
            )
            n = self.loss_weighting_module.log_vars.numel()
            summary.append({"group": "loss_weighting", "parameters": n, "trainable": n, "lr": lr, "unfreeze_step": 0})
        self.parameter_summary = summary
        if self.optimizer_cls_and_kwargs is not None:
            optimizer_cls, optimizer_kwargs = self.optimizer_cls_and_kwargs
        else:
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        if is_optimizer_factory(optimizer_cls) or any(
            k in optimizer_kwargs for k in ("params", "model", "optimizer_dict")
        ):
            raise MultiTaskTrainingError(
                f"The optimizer {self.args.optim!r} builds its own parameter groups; MultiTaskTrainer needs a "
                "standard torch optimizer (e.g. adamw_torch) for its per-block groups."
            )
        self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        if gradual:
            self._install_gradient_gates()
        if self.args.should_log:
            logger.info("Trainable parameters per group:\n%s", format_parameter_summary(summary))
        return self.optimizer

    def _install_gradient_gates(self) -> None:
        """Zero the gradients of blocks that are not unfrozen yet (their lr is 0 too), so they do not count in
        gradient clipping or the optimizer's moments. Tensor hooks never change requires_grad: safe under DDP."""
        for handle in self._grad_hooks:
            handle.remove()
        self._grad_hooks = []
        for group in self.optimizer.param_groups:
            start = group.get("mtst_unfreeze_step", 0)
            if start <= 0:
                continue
            for p in group["params"]:
                self._grad_hooks.append(p.register_hook(partial(self._gate_gradient, start)))

    def _gate_gradient(self, start: int, grad: torch.Tensor) -> torch.Tensor:
        return grad if self.state.global_step >= start else torch.zeros_like(grad)

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        """The standard schedule, times a per-group gate for gradual unfreezing (lr 0 until the group's step)."""
        created = self.lr_scheduler is None
        scheduler = super().create_scheduler(num_training_steps, optimizer)
        optimizer = optimizer or self.optimizer
        gated = [g.get("mtst_unfreeze_step", 0) for g in optimizer.param_groups]
        if created and any(gated):
            if not isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
                raise MultiTaskTrainingError(
                    f"Gradual unfreezing needs a LambdaLR schedule (linear, cosine, constant, ...); "
                    f"{self.args.lr_scheduler_type!r} gives {type(scheduler).__name__}."
                )
            base = list(scheduler.lr_lambdas)
            for group in optimizer.param_groups:  # undo the first step of the base scheduler
                group["lr"] = group["initial_lr"]
            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
                optimizer, [_gated_lambda(fn, start) for fn, start in zip(base, gated)]
            )
        return self.lr_scheduler

    # -- evaluation and prediction ------------------------------------------------------------------------------------

    def _compute_metrics(self, eval_pred: EvalPrediction) -> dict:
        task = self._eval_task
        if task is None:
            return {}
        config = self.accelerator.unwrap_model(self.model).config
        metrics = task_metrics(
            config.task_type(task), eval_pred.predictions, eval_pred.label_ids, config.task_labels(task)
        )
        if self._user_compute_metrics is not None:
            metrics.update(self._user_compute_metrics(eval_pred) or {})
        return metrics

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Return the (unweighted) loss, the task's logits and the labels: no hidden states or per-task dicts."""
        inputs = self._prepare_inputs(inputs)
        labels = inputs.get("labels")
        with torch.no_grad(), self.compute_loss_context_manager():
            outputs = model(**inputs)
        loss = outputs.loss.detach().mean() if outputs.loss is not None else None
        if prediction_loss_only:
            return loss, None, None
        logits = outputs.logits.detach() if outputs.logits is not None else None
        if isinstance(labels, Mapping):
            labels = None
        return loss, logits, labels

    def _run_task_loop(self, task: str, dataset, description: str, prefix: str, ignore_keys=None):
        """The standard evaluation loop over one task's set (`dataset=None`: the task's own eval set)."""
        self._eval_task = task
        try:
            if dataset is None:
                dataloader = self.get_eval_dataloader(task)
            else:  # not cached under the Trainer's shared "eval" key
                dataloader = self.get_test_dataloader(dataset)
            return self.evaluation_loop(
                dataloader, description=description, ignore_keys=ignore_keys, metric_key_prefix=prefix
            )
        finally:
            self._eval_task = None

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """Run the standard loop per task; adds `<prefix>_average` and `<prefix>_loss`; logs all tasks at once."""
        datasets = self._eval_datasets(eval_dataset)
        self._memory_tracker.start()
        start_time = time.time()
        metrics: dict[str, float] = {}
        headline, losses, num_samples, num_steps = [], [], 0, 0
        config = self.accelerator.unwrap_model(self.model).config
        for task, dataset in datasets.items():
            prefix = f"{metric_key_prefix}_{task}"
            own = eval_dataset is None
            output = self._run_task_loop(task, None if own else dataset, f"Evaluation ({task})", prefix, ignore_keys)
            task_values = {k: v for k, v in output.metrics.items() if not k.endswith(("_runtime", "_per_second"))}
            metrics.update(task_values)
            key = f"{prefix}_{HEADLINE_METRICS[config.task_type(task)]}"
            if key in task_values:
                headline.append(task_values[key])
            if f"{prefix}_loss" in task_values:
                losses.append(task_values[f"{prefix}_loss"])
            num_samples += output.num_samples
            num_steps += math.ceil(output.num_samples / (self.args.eval_batch_size * self.args.world_size))
        if headline:
            metrics[f"{metric_key_prefix}_average"] = float(np.mean(headline))
        if losses:
            metrics[f"{metric_key_prefix}_loss"] = float(np.mean(losses))
        metrics.update(speed_metrics(metric_key_prefix, start_time, num_samples=num_samples, num_steps=num_steps))
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        self._memory_tracker.stop_and_update_metrics(metrics)
        return metrics

    def predict(
        self,
        test_dataset,
        ignore_keys=None,
        metric_key_prefix: str = "test",
        raw_datasets: Mapping[str, Any] | None = None,
        output_dir: str | None = None,
        max_seq_length: int | None = None,
    ) -> PredictionOutput:
        """Predict every task's `{task: Dataset}` set; with `output_dir`, write `predictions_<task>.jsonl` (inputs
        from `raw_datasets`, gold and predicted label names, probabilities). Returns a `PredictionOutput` whose
        `predictions`/`label_ids` are `{task: array}` and whose metrics are `<prefix>_<task>_<metric>` and
        `<prefix>_average`."""
        datasets = self._eval_datasets(test_dataset)
        config = self.accelerator.unwrap_model(self.model).config
        predictions, label_ids, metrics, headline = {}, {}, {}, []
        start_time = time.time()
        num_samples = 0
        for task, dataset in datasets.items():
            prefix = f"{metric_key_prefix}_{task}"
            output = self._run_task_loop(task, dataset, f"Prediction ({task})", prefix, ignore_keys)
            predictions[task], label_ids[task] = output.predictions, output.label_ids
            values = {k: v for k, v in output.metrics.items() if not k.endswith(("_runtime", "_per_second"))}
            metrics.update(values)
            key = f"{prefix}_{HEADLINE_METRICS[config.task_type(task)]}"
            if key in values:
                headline.append(values[key])
            num_samples += output.num_samples
            if output_dir is not None and self.is_world_process_zero() and output.predictions is not None:
                raw = raw_datasets.get(task) if raw_datasets else None
                word_ids = None
                if config.task_type(task) == "token_classification" and raw is not None:
                    word_ids = self._word_ids(raw, max_seq_length)
                path = os.path.join(output_dir, f"predictions_{task}.jsonl")
                write_predictions(
                    path,
                    config.task_type(task),
                    config.task_labels(task),
                    output.predictions,
                    output.label_ids,
                    raw,
                    word_ids,
                )
                logger.info("Wrote %s", path)
        if headline:
            metrics[f"{metric_key_prefix}_average"] = float(np.mean(headline))
        metrics.update(speed_metrics(metric_key_prefix, start_time, num_samples=num_samples))
        self.control = self.callback_handler.on_predict(self.args, self.state, self.control, metrics)
        return PredictionOutput(predictions=predictions, label_ids=label_ids, metrics=metrics)

    def _word_ids(self, raw_dataset, max_seq_length: int | None):
        tokenizer = self.processing_class
        if tokenizer is None or not getattr(tokenizer, "is_fast", False) or "tokens" not in raw_dataset.column_names:
            return None
        kwargs = {"truncation": True}
        if max_seq_length:
            kwargs["max_length"] = max_seq_length
        enc = tokenizer(list(raw_dataset["tokens"]), is_split_into_words=True, **kwargs)
        return [enc.word_ids(i) for i in range(len(raw_dataset))]

    # -- checkpoints --------------------------------------------------------------------------------------------------

    def train(self, resume_from_checkpoint: str | bool | None = None, trial=None, ignore_keys_for_eval=None, **kwargs):
        """Check the checkpoint (complete; same tasks, labels and shapes; `True` picks the last complete one) and
        restore the learned uncertainty weights from it before resuming."""
        required = checkpoint_files(self.args)
        if resume_from_checkpoint is True:
            resume_from_checkpoint = last_complete_checkpoint(self.args.output_dir, required)
            if resume_from_checkpoint is None:
                raise MultiTaskTrainingError(f"No complete checkpoint to resume from in {self.args.output_dir}.")
        if resume_from_checkpoint:
            check_resume_checkpoint(resume_from_checkpoint, self.model, required)
            self._load_loss_weighting(resume_from_checkpoint)
        output = super().train(
            resume_from_checkpoint=resume_from_checkpoint,
            trial=trial,
            ignore_keys_for_eval=ignore_keys_for_eval,
            **kwargs,
        )
        self.kept_model = self._kept_model()
        if self.args.should_log:
            kept = self.kept_model
            if kept["selection"] == "best":
                logger.info(
                    "Kept the best checkpoint by %s: %s (step %d, %s %.4f); training ran to step %d.",
                    kept["metric"],
                    kept["checkpoint"],
                    kept["step"],
                    kept["metric"],
                    kept["value"],
                    kept["last_step"],
                )
            else:
                logger.info(
                    "Kept the last model (step %d), not the best checkpoint by %s: %s.",
                    kept["step"],
                    kept["metric"],
                    kept["reason"],
                )
        return output

    def _kept_model(self) -> dict[str, Any]:
        """Which model training ended with: `{"selection": "best", "checkpoint", "step", "metric", "value",
        "last_step"}` for the best checkpoint, or `{"selection": "last", "step", "metric", "reason"}`."""
        state, metric = self.state, _metric_key(self.args)
        best = state.best_model_checkpoint
        if self.args.load_best_model_at_end and best and checkpoint_problem(best) is None:
            match = _CHECKPOINT_RE.match(os.path.basename(os.path.normpath(best)))
            step = getattr(state, "best_global_step", None) or (int(match.group(1)) if match else state.global_step)
            return {
                "selection": "best",
                "checkpoint": os.path.basename(os.path.normpath(best)),
                "step": int(step),
                "metric": metric,
                "value": float(state.best_metric) if state.best_metric is not None else None,
                "last_step": state.global_step,
            }
        reason = self.best_model_reason
        if reason is None:
            reason = (
                "no evaluated checkpoint was found"
                if best is None
                else f"the best checkpoint {os.path.basename(os.path.normpath(best))} is missing or incomplete"
            )
        return {"selection": "last", "step": state.global_step, "metric": metric, "reason": reason}

    def _load_loss_weighting(self, checkpoint: str) -> None:
        """Restore the learned uncertainty weights (they live outside the model) from `checkpoint`, when used."""
        if self.loss_weighting_module is not None:
            path = os.path.join(checkpoint, LOSS_WEIGHTING_FILE)
            if os.path.isfile(path):
                self.loss_weighting_module.load_state_dict(load_file(path, device=str(self.args.device)))

    def _load_best_model(self) -> None:
        """The standard load of the best checkpoint's weights, plus its learned uncertainty weights."""
        super()._load_best_model()
        self._load_loss_weighting(self.state.best_model_checkpoint)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """The standard save. Into a checkpoint folder, MTST's own files (the uncertainty weights, then the card, the
        code files and the cleaned config.json of `write_checkpoint_files` callbacks) follow the weights at once, so
        they are all there before the Trainer writes trainer_state.json, last: a checkpoint that has that file is
        complete."""
        super().save_model(output_dir, _internal_call)
        folder = output_dir or self.args.output_dir
        name = os.path.basename(os.path.normpath(folder))
        if not (_internal_call and name == f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"):
            return
        if self.args.should_save and self.loss_weighting_module is not None:
            weights = {k: v.detach().contiguous() for k, v in self.loss_weighting_module.state_dict().items()}
            path = os.path.join(folder, LOSS_WEIGHTING_FILE)
            save_file(weights, path + ".tmp")
            os.replace(path + ".tmp", path)
        for callback in self.callback_handler.callbacks:
            write = getattr(callback, "write_checkpoint_files", None)
            if callable(write):
                write(self.args, self.state, folder, model=self.model, processing_class=self.processing_class)


def _metric_key(args) -> str:
    """`metric_for_best_model` as the Trainer reads it (`average` -> `eval_average`)."""
    metric = args.metric_for_best_model or "loss"
    return metric if metric.startswith("eval_") else f"eval_{metric}"


def format_parameter_summary(rows: Sequence[Mapping[str, Any]]) -> str:
    """A fixed-width table of `parameter_summary` rows (group, parameters, trainable, lr, unfreeze step)."""
    header = f"{'group':<24} {'parameters':>12} {'trainable':>12} {'lr':>10} {'unfreeze at step':>17}"
    lines = [header, "-" * len(header)]
    for row in rows:
        start = "-" if row["unfreeze_step"] is None else str(row["unfreeze_step"])
        lines.append(
            f"{row['group']:<24} {row['parameters']:>12,} {row['trainable']:>12,} {row['lr']:>10.3g} {start:>17}"
        )
    total = sum(r["parameters"] for r in rows)
    trainable = sum(r["trainable"] for r in rows)
    lines.append(f"{'total':<24} {total:>12,} {trainable:>12,}")
    return "\n".join(lines)
