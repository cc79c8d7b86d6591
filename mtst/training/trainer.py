"""Multi-task training for MTST: `MultiTaskTrainer`, loss weighting, freezing, layer-wise learning-rate decay and
gradual unfreezing. The other parts of training have modules of their own: the options and their error in
`mtst.training.arguments`, the task-aware batch sampler in `mtst.training.sampler`, the per-task metrics and prediction
files in `mtst.metrics`, the checkpoint checks in `mtst.training.checkpoints`, the parameter blocks behind freezing and
the learning-rate groups in `mtst.training.freezing`, evaluation and prediction per task in
`mtst.training.evaluation`.

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

import copy
import logging
import math
import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader
from transformers import Trainer, TrainingArguments
from transformers.trainer_callback import TrainerState
from transformers.trainer_utils import (
    PREFIX_CHECKPOINT_DIR,
    IntervalStrategy,
    TrainOutput,
    seed_worker,
)

from mtst.data.collator import MultiTaskCollator, MultiTaskDataset
from mtst.data.prepare import check_threshold_tuning, keep_train_statistics, prepare_task_datasets, task_specs_for
from mtst.data.streaming import load_stream_states, save_stream_states, stream_counters
from mtst.data.tasks import TaskSpec
from mtst.training.arguments import (
    MultiTaskTrainingArguments,
    MultiTaskTrainingError,
    check_options,
    option,
    settle_trainer_arguments,
)
from mtst.training.callbacks import MultiTaskCallback
from mtst.training.checkpoints import (
    LOSS_WEIGHTING_FILE,
    TASK_OPTIMIZER_FILE,
    TRAINER_STATE_NAME,
    check_resume_checkpoint,
    checkpoint_files,
    choose_kept_model,
    finished_training,
    kept_model,
    last_complete_checkpoint,
    staging_folder,
    swap_in_saved_model,
)
from mtst.training.distill import TaskTeachers, distilled_loss
from mtst.training.embeddings import (
    EmbeddingTaskLosses,
    attach_embedding_adapter,
    preservation_loss,
    preservation_weights,
    with_teacher_embeddings,
)
from mtst.training.evaluation import MultiTaskEvaluationMixin, per_task
from mtst.training.freezing import (
    apply_static_freezing,
)
from mtst.training.optimization import MultiTaskOptimizerMixin, head_learning_rates
from mtst.training.sampler import MultiTaskBatchSampler, example_lengths
from mtst.training.weighting import GradientProjection, TaskOptimizerStates, UncertaintyLossWeighting

__all__ = ["MultiTaskTrainer"]

logger = logging.getLogger(__name__)
# One line per training micro-batch (rank, step, task) when `log_task_per_step` or MTST_LOG_TASK_PER_STEP=1.
step_logger = logging.getLogger(__name__ + ".steps")


# ---------------------------------------------------------------------------------------------------------------------
# Trainer
# ---------------------------------------------------------------------------------------------------------------------


def _step_logging(args) -> bool:
    """Whether to log one line per training micro-batch (`log_task_per_step` or MTST_LOG_TASK_PER_STEP=1); sets up
    `step_logger` (to stderr, not propagated) when so."""
    enabled = bool(option(args, "log_task_per_step")) or os.environ.get("MTST_LOG_TASK_PER_STEP", "").lower() in (
        "1",
        "true",
        "yes",
    )
    if enabled:
        step_logger.setLevel(logging.INFO)
        if not step_logger.handlers:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("%(message)s"))
            step_logger.addHandler(handler)
            step_logger.propagate = False
    return enabled


class MultiTaskTrainer(MultiTaskOptimizerMixin, MultiTaskEvaluationMixin, Trainer):
    """
    [`Trainer`] for [`MTSTModel`]: single-task batches from [`MultiTaskBatchSampler`] (the same task on every
    rank at every step), per-task loss weighting, per-task training losses in the logs (`loss_<task>`), per-task
    evaluation and prediction (`eval_<task>_<metric>` and `eval_average`), freezing, layer-wise learning-rate decay,
    gradual unfreezing, and MTST's model card and upload (`push_to_hub`). Options come from
    [`MultiTaskTrainingArguments`], whose defaults are MTST's recipe.

    Args:
        model ([`MTSTModel`]): the model to train; its config names the tasks, their types and labels.
        args ([`MultiTaskTrainingArguments`], *optional*): the options (not changed by the trainer, which works on
            a copy).
        train_dataset (`dict[str, Dataset]` or `MultiTaskDataset`, *optional*): `{task: dataset}`. A raw
            `datasets.Dataset` (text and label columns, labels as names or `ClassLabel` ids), or the `train` split
            of a `DatasetDict`, is checked, converted and tokenized as a task config's files are; a dataset with
            `input_ids` and `labels` is used as it is.
        eval_dataset (`dict[str, Dataset]`, *optional*): `{task: dataset}` as above (a `DatasetDict`'s
            `validation` split); without it, nothing is evaluated during training.
        processing_class (tokenizer, *optional*): the tokenizer; needed for raw datasets and the default collator.
        task_batch_sizes (`dict[str, int]`, *optional*): per-task batch sizes instead of the per-device one.
        task_specs (`dict[str, TaskSpec]` or `list[TaskSpec]`, *optional*): the columns of raw datasets whose names
            differ from the defaults (`text`, `text_pair`, `label`; `tokens`, `ner_tags`).
        kwargs: passed to [`Trainer`] (`data_collator`, `callbacks`, `compute_metrics`, ...).
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
        task_specs: Mapping[str, TaskSpec] | Sequence[TaskSpec] | None = None,
        **kwargs,
    ):
        if args is None:
            args = MultiTaskTrainingArguments(output_dir="trainer_output")
        check_options(args)  # MultiTaskTrainingArguments checks them when made; args may have changed since
        args = copy.copy(args)  # what the trainer settles below must not change the caller's arguments
        if eval_dataset is None and args.eval_strategy != IntervalStrategy.NO:
            logger.info(
                "No eval_dataset: no evaluation during training (eval_strategy %s is set to no).", args.eval_strategy
            )
            args.eval_strategy = IntervalStrategy.NO
        if model is None:
            raise MultiTaskTrainingError("MultiTaskTrainer needs an MTST model (model_init is not supported).")
        self.task_names = list(model.config.task_names)
        if not self.task_names:
            raise MultiTaskTrainingError("The model has no task heads to train.")
        # the tasks this run trains: none without training data (a trainer made to evaluate or predict)
        trained = train_dataset.datasets if isinstance(train_dataset, MultiTaskDataset) else train_dataset
        trained = trained if isinstance(trained, Mapping) else [] if train_dataset is None else None
        attach_embedding_adapter(model, args, trained)
        # Static freezes: before the model is wrapped (DDP never sees these parameters as trainable).
        self.frozen_parameters = apply_static_freezing(
            model, option(args, "freeze"), option(args, "freeze_layers"), option(args, "freeze_heads")
        )
        self.head_learning_rates = head_learning_rates(args, self.task_names)
        settle_trainer_arguments(args, len(self.task_names))
        # The model kept at the end: the best checkpoint when evaluation and saving line up (None: decide here).
        self.best_model_reason = choose_kept_model(args, eval_dataset is not None)
        self.kept_model: dict[str, Any] | None = None  # set by train(): which model training ended with
        # Raw datasets per task are checked, converted and tokenized as a task config's files are.
        self.task_specs = task_specs_for(model.config, task_specs)
        train_dataset = self._prepare(train_dataset, "train", processing_class, args)
        keep_train_statistics(model.config, self.task_specs)
        check_threshold_tuning(self.task_specs, eval_dataset)
        eval_dataset = self._prepare(eval_dataset, "validation", processing_class, args)
        if isinstance(train_dataset, Mapping):
            train_dataset = MultiTaskDataset(train_dataset)
        if isinstance(eval_dataset, (Mapping, MultiTaskDataset)):
            # One single-task MultiTaskDataset per task: its items carry "task", and get_eval_dataloader(task) works.
            eval_dataset = per_task(eval_dataset)
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
        # one slot per task, and a last one for embedding preservation
        self._task_loss_sums = torch.zeros(len(self.task_names) + 1, dtype=torch.float64, device=self.args.device)
        self._task_loss_counts = torch.zeros(len(self.task_names) + 1, dtype=torch.float64, device=self.args.device)
        self._grad_hooks: list = []
        self._unfreeze_every_steps = 0
        self._log_steps = _step_logging(args)
        self._micro_step = (-1, 0)
        self._init_loss_combination(model, processing_class)
        self._step_task: str | None = None
        self._streams_trained: dict[str, int] = {}  # batches trained per streaming task (this process)
        self.add_callback(MultiTaskCallback(self))

    def _prepare(self, data, split: str, tokenizer=None, args=None):
        """`{task: dataset}` with its raw `datasets.Dataset`s (or the `split` of `DatasetDict`s) tokenized for the
        task of that name (`task_specs` gives their columns); anything else is returned as it is."""
        if not isinstance(data, Mapping):
            return data
        args = args if args is not None else self.args
        return prepare_task_datasets(
            data,
            split,
            self.task_specs,
            tokenizer if tokenizer is not None else getattr(self, "processing_class", None),
            option(args, "max_seq_length"),
            option(args, "label_all_tokens"),
        )

    def _init_loss_combination(self, model, processing_class) -> None:
        """The optional parts of how task losses combine: learned uncertainty weights, gradient projection, per-task
        optimizer states and distillation teachers (None when not used)."""
        args, several = self.args, len(self.task_names) > 1
        self.loss_weighting_module = None
        if option(args, "loss_weighting") == "uncertainty":
            self.loss_weighting_module = UncertaintyLossWeighting(self.task_names).to(args.device)
        self.gradient_projection = None
        if option(args, "gradient_surgery") == "pcgrad" and several:
            self.gradient_projection = GradientProjection(
                model.named_parameters(), option(args, "gradient_surgery_decay")
            )
        self.task_optimizer_states = None
        if option(args, "optimizer_state") == "per_task" and several:
            self.task_optimizer_states = TaskOptimizerStates()
        teachers = option(args, "teacher_models")
        self.teachers = TaskTeachers(teachers, model, processing_class) if teachers else None
        self.embedding_losses = EmbeddingTaskLosses(model.config, args.world_size)
        self.preservation_weight = float(option(args, "embedding_preservation"))
        self.preservation_weights = preservation_weights(args, model.config, self._preserved_tasks())

    # -- data ---------------------------------------------------------------------------------------------------------

    def get_train_sampler(self, dataset: MultiTaskDataset | None = None) -> MultiTaskBatchSampler:
        """The task-aware batch sampler for the training set (yields the batches of all ranks)."""
        dataset = dataset if dataset is not None else self.train_dataset
        batch_sizes = {t: b for t, b in self.task_batch_sizes.items() if t in dataset.task_sizes}
        group = bool(option(self.args, "group_by_length"))
        return MultiTaskBatchSampler.from_dataset(
            dataset,
            self._train_batch_size,
            strategy=option(self.args, "sampling_strategy"),
            task_batch_sizes=batch_sizes,
            temperature=option(self.args, "temperature"),
            temperature_cap=option(self.args, "temperature_cap"),
            weights=option(self.args, "task_weights"),
            seed=self.args.data_seed if self.args.data_seed is not None else self.args.seed,
            world_size=max(1, self.args.world_size),
            gradient_accumulation_steps=self.args.gradient_accumulation_steps,
            drop_last=self.args.dataloader_drop_last,
            lengths=example_lengths(dataset) if group else None,
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
        self._streams_trained = stream_counters(dataset, self.args.dataloader_num_workers)
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

    # -- loss ---------------------------------------------------------------------------------------------------------

    def _weighted(self, task: str, loss: torch.Tensor) -> torch.Tensor:
        if self.loss_weighting_module is not None:
            return self.loss_weighting_module(task, loss)
        return loss * self.model.config.loss_weights[task]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Run the batch's task and weight its unweighted loss (static loss_weight or learned uncertainty); an
        embedding task's loss comes from its texts' embeddings; embedding preservation adds its penalty."""
        task = inputs.get("task")
        if model.training and task in self._streams_trained:  # where a checkpoint's stream position is
            self._streams_trained[task] += 1
        columns, teacher = inputs.pop("columns", None), inputs.pop("teacher_embedding", None)
        if columns is not None:  # an embedding task: no head, its loss is computed from the embeddings
            labels = inputs.pop("labels", None)
            outputs = model(**inputs)
            losses = {task: self.embedding_losses(task, outputs.sentence_embedding, columns, labels)}
        else:
            outputs = model(**inputs)
            distil = partial(distilled_loss, self.teachers if model.training else None, self.state, inputs)
            if task is not None:
                losses = {task: distil(task, outputs.logits, inputs.get("labels"), outputs.loss)}
            else:  # joint examples: labels {task: tensor}
                labels, logits = inputs["labels"], outputs.task_logits
                losses = {t: distil(t, logits[t], labels[t], v) for t, v in (outputs.task_losses or {}).items()}
        loss = sum(self._weighted(t, value) for t, value in losses.items())
        weight = self.preservation_weights.get(task, self.preservation_weight)  # joint examples: the global one
        if teacher is not None and model.training and weight > 0:
            kind = option(self.args, "embedding_preservation_loss")
            kept = preservation_loss(outputs.sentence_embedding, teacher, kind)
            loss = loss + weight * kept
            self._task_loss_sums[-1] += kept.detach().to(self._task_loss_sums)
            self._task_loss_counts[-1] += 1
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
        """Add `loss_<task>` (mean unweighted loss of each task since the last log), learned task weights and, next
        to `learning_rate` (the encoder's), the heads' rates (`add_head_learning_rates`)."""
        self.add_head_learning_rates(logs)
        if "loss" in logs and self._task_loss_counts is not None:
            stats = torch.stack([self._task_loss_sums, self._task_loss_counts])
            if self.accelerator.num_processes > 1:
                stats = self.accelerator.reduce(stats, reduction="sum")
            for i, task in enumerate(self.task_names):
                if stats[1, i] > 0:
                    logs[f"loss_{task}"] = float(stats[0, i] / stats[1, i])
            if stats[1, -1] > 0:  # the last slot: embedding preservation's (1 - cosine), before its weight
                logs["loss_embedding_preservation"] = float(stats[0, -1] / stats[1, -1])
            self._task_loss_sums.zero_()
            self._task_loss_counts.zero_()
            if self.loss_weighting_module is not None:
                for task, w in self.loss_weighting_module.weights().items():
                    logs[f"loss_weight_{task}"] = w
            if self.gradient_projection is not None:
                for task, rate in self.gradient_projection.pop_rates().items():
                    logs[f"gradient_conflict_{task}"] = rate
        super().log(logs, start_time)

    def _train_nothing(self, checkpoint: str, step: int, target: int) -> TrainOutput:
        """Resuming a checkpoint that already trained as far as asked: load its weights and state (and the best
        checkpoint's weights with `load_best_model_at_end`) instead of letting the Trainer take one more step."""
        logger.warning(
            "%s already trained %d of the %d steps this run asks for: nothing left to train, so no step is taken. "
            "Raise --max_steps or --num_train_epochs to train on, or start afresh elsewhere.",
            checkpoint,
            step,
            target,
        )
        self._load_from_checkpoint(checkpoint)
        self.state = TrainerState.load_from_json(os.path.join(checkpoint, TRAINER_STATE_NAME))
        best = self.state.best_model_checkpoint
        if self.args.load_best_model_at_end and best and os.path.isdir(best):
            self._load_best_model()
        return TrainOutput(self.state.global_step, float("nan"), {"epoch": self.state.epoch})

    def learned_loss_weights(self) -> dict[str, float] | None:
        """exp(-s_t) per task with uncertainty weighting, else None."""
        return self.loss_weighting_module.weights() if self.loss_weighting_module is not None else None

    # -- checkpoints --------------------------------------------------------------------------------------------------

    def train(self, resume_from_checkpoint: str | bool | None = None, trial=None, ignore_keys_for_eval=None, **kwargs):
        """Check the checkpoint (complete; same tasks, labels and shapes; `True` picks the last complete one) and
        restore the learned uncertainty weights from it before resuming."""
        required = checkpoint_files(self.args)
        if resume_from_checkpoint is True:
            resume_from_checkpoint = last_complete_checkpoint(self.args.output_dir, required)
            if resume_from_checkpoint is None:
                raise MultiTaskTrainingError(f"No complete checkpoint to resume from in {self.args.output_dir}.")
        finished = None
        if resume_from_checkpoint:
            check_resume_checkpoint(resume_from_checkpoint, self.model, required)
            self._load_loss_weighting(resume_from_checkpoint)
            finished = finished_training(resume_from_checkpoint, self.args)
        if finished is not None:
            output = self._train_nothing(resume_from_checkpoint, *finished)
        else:
            self._add_teacher_embeddings()
            output = super().train(
                resume_from_checkpoint=resume_from_checkpoint,
                trial=trial,
                ignore_keys_for_eval=ignore_keys_for_eval,
                **kwargs,
            )
        self.kept_model = kept_model(self.args, self.state, self.best_model_reason)
        self.tune_thresholds()  # the multi-label tasks whose spec asks for it
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

    def _preserved_tasks(self) -> list[str]:
        """The tasks whose texts embedding preservation can keep: those of the training set, less the streaming
        ones (read while training, so they have no starting embedding); every task of the model without a
        `MultiTaskDataset` training set."""
        dataset = self.train_dataset
        if not isinstance(dataset, MultiTaskDataset):
            return list(self.task_names)
        return [t for t, d in dataset.datasets.items() if not hasattr(d, "next_rows")]

    def _add_teacher_embeddings(self) -> None:
        """For embedding preservation: the starting model's embeddings of every head task's training text, computed
        once (or read back from the output folder when resuming) and stored with the training data."""
        self.preservation_weights = preservation_weights(self.args, self.model.config, self._preserved_tasks())
        preserving = any(w > 0 for w in self.preservation_weights.values())
        if preserving and isinstance(self.train_dataset, MultiTaskDataset):
            self.train_dataset = with_teacher_embeddings(
                self.model, self.train_dataset, self.processing_class, self.args, self.preservation_weights
            )

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
        save_stream_states(self.train_dataset, self._streams_trained, output_dir, self.args.process_index)
        if self.task_optimizer_states is not None and self.args.should_save:
            self.task_optimizer_states.save(os.path.join(output_dir, TASK_OPTIMIZER_FILE), self.optimizer)

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint:
            self._streams_trained.update(load_stream_states(self.train_dataset, checkpoint, self.args.process_index))
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
        complete. Any other save (the final model) is written into a staging folder beside the target and swapped in
        when complete (`swap_in_saved_model`), so a kill or a full disk mid-save leaves the earlier model whole."""
        folder = output_dir or self.args.output_dir
        name = os.path.basename(os.path.normpath(folder))
        if not (_internal_call and name == f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"):
            if self.is_deepspeed_enabled or self.is_fsdp_enabled:  # sharded saves: written in place, as the Trainer
                return super().save_model(output_dir, _internal_call)
            stage = staging_folder(folder) if self.args.should_save else None
            try:
                super().save_model(stage or folder, _internal_call=True)  # the push (if any) follows the swap
            except BaseException:
                if stage is not None:
                    shutil.rmtree(stage, ignore_errors=True)
                raise
            if stage is not None:
                swap_in_saved_model(stage, folder)
            if self.args.push_to_hub and not _internal_call:
                self.push_to_hub(commit_message="Model save", revision=self.args.hub_revision)
            return
        super().save_model(output_dir, _internal_call)
        if self.args.should_save and self.loss_weighting_module is not None:
            weights = {k: v.detach().contiguous() for k, v in self.loss_weighting_module.state_dict().items()}
            path = os.path.join(folder, LOSS_WEIGHTING_FILE)
            save_file(weights, path + ".tmp")
            os.replace(path + ".tmp", path)
        for callback in self.callback_handler.callbacks:
            write = getattr(callback, "write_checkpoint_files", None)
            if callable(write):
                write(self.args, self.state, folder, model=self.model, processing_class=self.processing_class)

    # -- the model card and the Hub -----------------------------------------------------------------------------------

    def create_model_card(
        self, language: str | None = None, license: str | None = None, tags: str | list[str] | None = None, **kwargs
    ):
        """MTST's model card (tasks and labels, every task's results, the training options and log, usage) written
        into `output_dir`, instead of the Trainer's generic one; returns the `ModelCard`."""
        from mtst.hub.callback import card_data_from_trainer
        from mtst.hub.card import write_model_card

        card_data = card_data_from_trainer(self)
        if language:
            card_data.language = [language] if isinstance(language, str) else list(language)
        card_data.license = license or card_data.license
        if tags:
            card_data.tags = [*(card_data.tags or []), *([tags] if isinstance(tags, str) else tags)]
        return write_model_card(self.args.output_dir, self.model, card_data, self.processing_class)

    def push_to_hub(
        self,
        commit_message: str | None = "End of training",
        blocking: bool = True,
        token: str | None = None,
        revision: str | None = None,
        private: bool | None = None,
        **kwargs,
    ):
        """Save the model into `output_dir` with MTST's card (`create_model_card`), then upload it as
        `mtst.push_to_hub` does (the code files and `handler.py`, the tokenizer, no training state, no local path) to
        `hub_model_id` (default: the output folder's name). Returns the `CommitInfo` (on the main process)."""
        from mtst.hub.card import push_to_hub

        self.save_model(_internal_call=True)
        if not self.is_world_process_zero():
            return None
        kwargs.pop("model_name", None)
        self.create_model_card(**kwargs)
        repo_id = self.args.hub_model_id or Path(self.args.output_dir).absolute().name
        return push_to_hub(
            self.args.output_dir,
            repo_id,
            token=token if token is not None else self.args.hub_token,
            private=bool(self.args.hub_private_repo if private is None else private),
            revision=revision if revision is not None else self.args.hub_revision,
            commit_message=commit_message or "Upload MTST model",
        )
