"""The optimizer and the learning-rate schedule of `MultiTaskTrainer`: the Trainer's own optimizer given MTST's
parameter groups (per block: each head, each encoder layer, the embeddings, the loss weights; layer-wise decay and
the heads' own rates), and the standard schedule gated per group for gradual unfreezing."""

from __future__ import annotations

import logging
import math
from functools import partial

import torch
from transformers import Trainer

try:  # transformers >= 5.x with optimizer factories (Muon, Dion, ...)
    from transformers.trainer_optimizer import is_optimizer_factory
except ImportError:  # older releases: optimizer handlers return optimizer classes only

    def is_optimizer_factory(optimizer_cls_or_factory) -> bool:
        return False


from mtst.training.arguments import MultiTaskTrainingError, option
from mtst.training.freezing import format_parameter_summary, gated_lambda, parameter_blocks, parameter_groups
from mtst.training.sampler import task_mapping

logger = logging.getLogger(__name__)

__all__ = ["MultiTaskOptimizerMixin", "head_learning_rates"]


def head_learning_rates(args, task_names: list[str]) -> dict[str, float]:
    """`{task: peak learning rate}` of the heads set outright (`head_learning_rate` for every head, then
    `head_learning_rates` per task); the other heads train at `head_learning_rate_factor` x the learning rate."""
    every_head = option(args, "head_learning_rate")
    rates = {t: every_head for t in task_names} if every_head is not None else {}
    rates |= task_mapping("head_learning_rates", option(args, "head_learning_rates"), task_names)
    bad = {t: lr for t, lr in rates.items() if not (lr > 0 and math.isfinite(lr))}
    if bad:
        raise MultiTaskTrainingError(f"`head_learning_rate(s)` must be positive numbers; got {bad}.")
    return rates


class MultiTaskOptimizerMixin:
    """`create_optimizer` and `create_scheduler` of [`MultiTaskTrainer`] (a [`Trainer`] with `task_names`,
    `head_learning_rates`, `loss_weighting_module` and the train batch sampler)."""

    def _unfreeze_every_steps_value(self) -> int:
        every = option(self.args, "gradual_unfreeze_every")
        if not every:
            return 0
        if option(self.args, "gradual_unfreeze_unit") == "steps":
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
        blocks = parameter_blocks(unwrapped, option(self.args, "layerwise_lr_decay"))
        gradual = bool(option(self.args, "gradual_unfreeze_every"))
        every_steps = self._unfreeze_every_steps_value() if gradual else 0
        self._unfreeze_every_steps = every_steps
        base_lr = self.args.learning_rate
        heads = {t: base_lr * option(self.args, "head_learning_rate_factor") for t in self.task_names}
        head_factor = option(self.args, "head_learning_rate_factor")
        groups, summary = parameter_groups(
            blocks,
            decay_names,
            self.args.weight_decay,
            base_lr,
            every_steps,
            heads | self.head_learning_rates,
            adapter_learning_rate=base_lr * head_factor,
        )
        if self.loss_weighting_module is not None:
            lr = option(self.args, "loss_weighting_lr") or base_lr
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

    def _get_learning_rate(self) -> float:
        """The encoder's learning rate (the Trainer reports its first parameter group's, a head's at 10x); the heads'
        rates of the same step are kept for `log`."""
        first = super()._get_learning_rate()
        rates = {g.get("mtst_block"): float(g["lr"]) for g in getattr(self.optimizer, "param_groups", ())}
        self._head_rates = {b[len("head.") :]: r for b, r in rates.items() if b and b.startswith("head.")}
        encoder = [r for b, r in rates.items() if b and (b.startswith("encoder.") or b == "embeddings")]
        rest = [r for b, r in rates.items() if b in ("projection", "other")]  # the encoder frozen: its schedule
        return max(encoder or rest or [first])

    def add_head_learning_rates(self, logs: dict[str, float]) -> None:
        """Next to `learning_rate` (the encoder's): `learning_rate_heads`, or `learning_rate_heads_<task>` when the
        heads' rates differ."""
        heads = getattr(self, "_head_rates", None)
        if "learning_rate" in logs and heads:
            if len(set(heads.values())) == 1:
                logs["learning_rate_heads"] = next(iter(heads.values()))
            else:
                logs.update({f"learning_rate_heads_{task}": rate for task, rate in heads.items()})

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
                optimizer, [gated_lambda(fn, start) for fn, start in zip(base, gated)]
            )
        return self.lr_scheduler
