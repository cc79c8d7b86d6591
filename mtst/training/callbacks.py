"""The callback `MultiTaskTrainer` adds to every run: it keeps the task sampler's epoch, the gradient projection,
the per-task optimizer states and the uncertainty weights' gradients in step with the Trainer's loop."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from transformers import TrainerCallback

if TYPE_CHECKING:
    from mtst.training.trainer import MultiTaskTrainer

__all__ = ["MultiTaskCallback"]


class MultiTaskCallback(TrainerCallback):
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
