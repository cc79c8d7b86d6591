"""Multi-task training for MTST: `MultiTaskTrainer`, loss weighting, freezing, layer-wise learning-rate decay and
gradual unfreezing. The other parts of training have modules of their own: the options and their error in
`mtst.training.arguments`, the task-aware batch sampler in `mtst.training.sampler`, the per-task metrics and prediction
files in `mtst.metrics`, the checkpoint checks in `mtst.training.checkpoints`, the parameter blocks behind freezing and
the learning-rate groups in `mtst.training.freezing`; this module re-exports their public names.

Loss
    Each batch's loss is the model's unweighted loss for the batch's task (mean over the batch's labelled units:
    sentences for sequence tasks, labelled sub-tokens for token tasks), multiplied by the task's `loss_weight`
    (`loss_weighting="static"`), or `exp(-s_t) * L_t + s_t / 2` with a learned `s_t = log σ_t²` per task
    (`"uncertainty"`, Kendall, Gal & Cipolla 2018, classification form). `num_items_in_batch` is not used:
    token counts and sentence counts must not be mixed, so the Trainer divides each micro-batch loss by the number
    of accumulation steps instead (`model_accepts_loss_kwargs = False`, `loss_is_scaled_for_ga = False`).

Checkpoints and the saved model
    `save_model` writes MTST's own files into a checkpoint right after the weights, before the Trainer's
    `trainer_state.json`, so a checkpoint that has that file is complete; `train` checks the checkpoint it resumes
    from, and `kept_model` says whether the model left after training is the best checkpoint or the last model (see
    `mtst.training.checkpoints` for the rules).
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Mapping
from functools import partial
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader
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


from mtst.data.collator import MultiTaskCollator, MultiTaskDataset
from mtst.metrics import (
    HEADLINE_METRICS,
    sequence_classification_metrics,
    task_metrics,
    token_classification_metrics,
    write_predictions,
)
from mtst.remote.configuration_mtst import TOKEN_CLASSIFICATION
from mtst.training.arguments import (
    MultiTaskTrainingArguments,
    MultiTaskTrainingError,
    _option,
    check_options,
)
from mtst.training.checkpoints import (
    _CHECKPOINT_RE,
    LOSS_WEIGHTING_FILE,
    TASK_OPTIMIZER_FILE,
    _metric_key,
    best_model_selection,
    check_resume_checkpoint,
    checkpoint_files,
    checkpoint_problem,
    last_complete_checkpoint,
)
from mtst.training.distill import TaskTeachers, distilled_loss
from mtst.training.freezing import (
    _gated_lambda,
    apply_static_freezing,
    format_parameter_summary,
    parameter_blocks,
    parameter_groups,
)
from mtst.training.sampler import MultiTaskBatchSampler, _task_mapping
from mtst.training.weighting import GradientProjection, TaskOptimizerStates, UncertaintyLossWeighting

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
        projection, task = self.trainer.gradient_projection, self.trainer._step_task
        if projection is not None and task is not None:
            projection(task)
        states = self.trainer.task_optimizer_states
        if states is not None and task is not None:
            states.activate(self.trainer.optimizer, task)
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
        check_options(args)  # MultiTaskTrainingArguments checks them when made; args may have changed since
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
        every_head = _option(args, "head_learning_rate")
        self.head_learning_rates = {t: every_head for t in self.task_names} if every_head is not None else {}
        self.head_learning_rates |= _task_mapping(
            "head_learning_rates", _option(args, "head_learning_rates"), self.task_names
        )
        bad = {t: lr for t, lr in self.head_learning_rates.items() if not (lr > 0 and math.isfinite(lr))}
        if bad:
            raise MultiTaskTrainingError(f"`head_learning_rate(s)` must be positive numbers; got {bad}.")
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
        # The Trainer's first six parameters (transformers >= 4.46), by position.
        super().__init__(
            model,
            args,
            data_collator,
            train_dataset,
            eval_dataset,
            processing_class,
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
        self.gradient_projection = None
        if _option(args, "gradient_surgery") == "pcgrad" and len(self.task_names) > 1:
            self.gradient_projection = GradientProjection(
                model.named_parameters(), _option(args, "gradient_surgery_decay")
            )
        self.task_optimizer_states = None
        if _option(args, "optimizer_state") == "per_task" and len(self.task_names) > 1:
            self.task_optimizer_states = TaskOptimizerStates()
        teachers = _option(args, "teacher_models")
        self.teachers = TaskTeachers(teachers, model, processing_class) if teachers else None
        self._step_task: str | None = None
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
        distil = partial(distilled_loss, self.teachers if model.training else None, self.state, inputs)
        if task is not None:
            losses = {task: distil(task, outputs.logits, inputs.get("labels"), outputs.loss)}
        else:  # joint examples: labels {task: tensor}
            labels, logits = inputs["labels"], outputs.task_logits
            losses = {t: distil(t, logits[t], labels[t], value) for t, value in (outputs.task_losses or {}).items()}
        loss = sum(self._weighted(t, value) for t, value in losses.items())
        if model.training:
            self._step_task = task
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
            if self.gradient_projection is not None:
                for task, rate in self.gradient_projection.pop_rates().items():
                    logs[f"gradient_conflict_{task}"] = rate
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
        """The Trainer's own optimizer, given MTST's groups (per block: head, layer, embeddings, loss weights) as its
        kwargs' "params", which it uses instead of its two groups; logs a table of the groups."""
        # transformers 5.0's create_optimizer takes no model argument; later releases added one.
        trainer_create = partial(super().create_optimizer, *([] if model is None else [model]))
        if self.optimizer is not None:
            return trainer_create()
        opt_model = self.model if model is None else model
        unwrapped = self.accelerator.unwrap_model(opt_model)
        decay_names = set(self.get_decay_parameter_names(unwrapped))
        blocks = parameter_blocks(unwrapped, _option(self.args, "layerwise_lr_decay"))
        gradual = bool(_option(self.args, "gradual_unfreeze_every"))
        every_steps = self._unfreeze_every_steps_value() if gradual else 0
        self._unfreeze_every_steps = every_steps
        base_lr = self.args.learning_rate
        heads = {t: base_lr * _option(self.args, "head_learning_rate_factor") for t in self.task_names}
        groups, summary = parameter_groups(
            blocks, decay_names, self.args.weight_decay, base_lr, every_steps, heads | self.head_learning_rates
        )
        if self.loss_weighting_module is not None:
            lr = _option(self.args, "loss_weighting_lr") or base_lr
            block = {"weight_decay": 0.0, "lr": lr, "mtst_block": "loss_weighting", "mtst_unfreeze_step": 0}
            groups.append({"params": [self.loss_weighting_module.log_vars], **block})
            n = self.loss_weighting_module.log_vars.numel()
            summary.append({"group": "loss_weighting", "parameters": n, "trainable": n, "lr": lr, "unfreeze_step": 0})
        self.parameter_summary = summary
        given = self.optimizer_cls_and_kwargs
        optimizer_cls, optimizer_kwargs = (
            given if given is not None else Trainer.get_optimizer_cls_and_kwargs(self.args, opt_model)
        )
        if is_optimizer_factory(optimizer_cls) or any(
            k in optimizer_kwargs for k in ("params", "model", "optimizer_dict")
        ):
            raise MultiTaskTrainingError(
                f"The optimizer {self.args.optim!r} builds its own parameter groups; MultiTaskTrainer needs a "
                "standard torch optimizer (e.g. adamw_torch) for its per-block groups."
            )
        self.optimizer_cls_and_kwargs = (optimizer_cls, {**optimizer_kwargs, "params": groups})
        try:
            trainer_create()
        finally:
            self.optimizer_cls_and_kwargs = given
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

    def _evaluate_tasks(self, datasets, own: bool, description: str, metric_key_prefix: str, ignore_keys=None):
        """`_run_task_loop` over every task (`own`: the tasks' own eval sets): `{task: EvalLoopOutput}` and the tasks'
        metrics (no speed metrics) plus `<prefix>_average`, the mean of the tasks' headline metrics."""
        config = self.accelerator.unwrap_model(self.model).config
        outputs, metrics, headline = {}, {}, []
        for task, dataset in datasets.items():
            prefix = f"{metric_key_prefix}_{task}"
            output = self._run_task_loop(
                task, None if own else dataset, f"{description} ({task})", prefix, ignore_keys
            )
            outputs[task] = output
            values = {k: v for k, v in output.metrics.items() if not k.endswith(("_runtime", "_per_second"))}
            metrics.update(values)
            key = f"{prefix}_{HEADLINE_METRICS[config.task_type(task)]}"
            if key in values:
                headline.append(values[key])
        if headline:
            metrics[f"{metric_key_prefix}_average"] = float(np.mean(headline))
        return outputs, metrics

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """Run the standard loop per task; adds `<prefix>_average` and `<prefix>_loss`; logs all tasks at once."""
        datasets = self._eval_datasets(eval_dataset)
        self._memory_tracker.start()
        start_time = time.time()
        own = eval_dataset is None
        outputs, metrics = self._evaluate_tasks(datasets, own, "Evaluation", metric_key_prefix, ignore_keys)
        losses = [
            o.metrics[f"{metric_key_prefix}_{t}_loss"]
            for t, o in outputs.items()
            if f"{metric_key_prefix}_{t}_loss" in o.metrics
        ]
        if losses:
            metrics[f"{metric_key_prefix}_loss"] = float(np.mean(losses))
        per_step = self.args.eval_batch_size * self.args.world_size
        num_samples = sum(o.num_samples for o in outputs.values())
        num_steps = sum(math.ceil(o.num_samples / per_step) for o in outputs.values())
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
        start_time = time.time()
        outputs, metrics = self._evaluate_tasks(datasets, False, "Prediction", metric_key_prefix, ignore_keys)
        num_samples = sum(o.num_samples for o in outputs.values())
        metrics.update(speed_metrics(metric_key_prefix, start_time, num_samples=num_samples))
        if output_dir is not None and self.is_world_process_zero():
            config = self.accelerator.unwrap_model(self.model).config
            for task, output in outputs.items():
                if output.predictions is None:
                    continue
                kind, raw = config.task_type(task), (raw_datasets.get(task) if raw_datasets else None)
                word_ids = (
                    self._word_ids(raw, max_seq_length) if kind == TOKEN_CLASSIFICATION and raw is not None else None
                )
                path = os.path.join(output_dir, f"predictions_{task}.jsonl")
                labels = config.task_labels(task)
                write_predictions(path, kind, labels, output.predictions, output.label_ids, raw, word_ids)
                logger.info("Wrote %s", path)
        self.control = self.callback_handler.on_predict(self.args, self.state, self.control, metrics)
        predictions = {task: output.predictions for task, output in outputs.items()}
        return PredictionOutput(predictions, {task: output.label_ids for task, output in outputs.items()}, metrics)

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

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        """The standard save, plus every task's optimizer states with `--optimizer_state per_task` (the optimizer's own
        file holds only the last step's task)."""
        super()._save_optimizer_and_scheduler(output_dir)
        if self.task_optimizer_states is not None and self.args.should_save:
            self.task_optimizer_states.save(os.path.join(output_dir, TASK_OPTIMIZER_FILE), self.optimizer)

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        super()._load_optimizer_and_scheduler(checkpoint)
        path = os.path.join(checkpoint or "", TASK_OPTIMIZER_FILE)
        if checkpoint and self.task_optimizer_states is not None and os.path.isfile(path):
            self.task_optimizer_states.load(path, self.optimizer)

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
