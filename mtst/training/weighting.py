"""How the tasks' losses, gradients and optimizer statistics are combined in multi-task training: learned uncertainty
weights (Kendall, Gal & Cipolla 2018), PCGrad-style projection of conflicting gradients (Yu et al. 2020) and per-task
optimizer states. Static per-task weights need no code of their own (`loss_weight` in the task config, applied by
`mtst.training.trainer.MultiTaskTrainer`)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn


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


class GradientProjection:
    """PCGrad-style projection of conflicting task gradients (Yu et al. 2020) for single-task steps.

    PCGrad needs every task's gradient at the same step; MTST's steps hold one task each, so the other tasks are
    represented by an exponential moving average of their recent gradients on the shared parameters (encoder and
    projection; heads are never shared). At a step of task t, for every other task s with an average `e_s`: when
    `g · e_s < 0`, `g <- g - (g · e_s / |e_s|²) e_s`, removing the component that would undo task s's progress.
    `e_t` is then updated with t's unprojected gradient: `e_t <- decay * e_t + (1 - decay) * g`. The averages live in
    memory only (a resumed run rebuilds them within a few steps); under DDP gradients are already synchronised, so
    every process projects alike. The trainer applies it after gradient clipping, so it only ever shortens a step.
    """

    def __init__(self, named_parameters, decay: float = 0.9):
        self.params = [p for name, p in named_parameters if p.requires_grad and not name.startswith("heads.")]
        self.decay = float(decay)
        self.averages: dict[str, torch.Tensor] = {}
        self.steps: dict[str, int] = {}
        self.projected: dict[str, int] = {}

    @torch.no_grad()
    def __call__(self, task: str) -> None:
        if not self.params:
            return
        grad = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in self.params])
        grad = grad.float()
        original = grad.clone()
        conflicted = False
        for other, average in self.averages.items():
            if other == task:
                continue
            dot = torch.dot(grad, average)
            if dot < 0:
                grad.sub_(average, alpha=float(dot / average.dot(average).clamp_min(1e-30)))
                conflicted = True
        self.steps[task] = self.steps.get(task, 0) + 1
        self.projected[task] = self.projected.get(task, 0) + int(conflicted)
        if task in self.averages:
            self.averages[task].mul_(self.decay).add_(original, alpha=1 - self.decay)
        else:
            self.averages[task] = original
        if conflicted:
            offset = 0
            for p in self.params:
                n = p.numel()
                if p.grad is not None:
                    p.grad.copy_(grad[offset : offset + n].view_as(p.grad))
                offset += n

    def pop_rates(self) -> dict[str, float]:
        """Share of each task's steps since the last call whose gradient was projected."""
        rates = {t: self.projected.get(t, 0) / n for t, n in self.steps.items() if n}
        self.steps.clear()
        self.projected.clear()
        return rates


class TaskOptimizerStates:
    """One set of optimizer statistics per task (`--optimizer_state per_task`).

    MTST's optimizer steps hold one task each. With one shared optimizer, Adam's moment estimates for the shared
    parameters mix the tasks: the second moment of a task with large gradients shrinks the other tasks' steps, and the
    first moment carries one task's gradients into the next task's steps. Here, before each step of task t, the
    optimizer's per-parameter state is switched to t's own (created empty, i.e. freshly initialised, at t's first
    step), so every task is optimised as if it were trained alone on the shared weights. Learning rates and the
    schedule stay shared. Memory: one optimizer state per task. `state_dict()` holds every task's states by parameter
    position, for checkpoints.
    """

    def __init__(self):
        self.states: dict[str, dict[torch.Tensor, dict]] = {}

    @staticmethod
    def _params(optimizer) -> list[torch.Tensor]:
        return [p for group in optimizer.param_groups for p in group["params"]]

    def activate(self, optimizer, task: str) -> None:
        """Point `optimizer.state` at `task`'s statistics (optimizer: a torch optimizer, or a wrapper with one in
        `.optimizer`, as Accelerate's)."""
        optimizer = getattr(optimizer, "optimizer", optimizer)
        own = self.states.setdefault(task, {})
        for p in self._params(optimizer):
            optimizer.state[p] = own.setdefault(p, {})

    def state_dict(self, optimizer) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """Every task's states by parameter position, as safetensors' (tensors, metadata): the tensors under keys
        `"0"`, `"1"`, ..., and in the metadata `"entries"`, a JSON list of `[task, position, name, tensor key or
        None, value]` (the value for what is not a tensor, e.g. a step count kept as a number)."""
        params = self._params(getattr(optimizer, "optimizer", optimizer))
        index = {id(p): i for i, p in enumerate(params)}
        tensors, entries = {}, []
        for task, own in self.states.items():
            for p, state in own.items():
                if id(p) not in index:
                    continue
                for name, value in state.items():
                    if torch.is_tensor(value):
                        key = str(len(tensors))
                        tensors[key] = value.detach().contiguous()
                        entries.append([task, index[id(p)], name, key, None])
                    else:
                        entries.append([task, index[id(p)], name, None, value])
        return tensors, {"entries": json.dumps(entries)}

    def load_state_dict(self, optimizer, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
        """Restore `state_dict()`'s result onto `optimizer`'s parameters (same parameter order), tensors moved to
        each parameter's device; 0-dimensional step counters stay on the CPU unless the parameter's group is `fused`
        or `capturable`, as torch's own `Optimizer.load_state_dict` does."""
        optimizer = getattr(optimizer, "optimizer", optimizer)
        params = self._params(optimizer)
        on_device = {
            id(p)
            for group in optimizer.param_groups
            if group.get("fused") or group.get("capturable")
            for p in group["params"]
        }
        self.states = {}
        for task, position, name, key, value in json.loads(metadata["entries"]):
            p = params[int(position)]
            if key is not None:
                value = tensors[key]
                if value.dim() > 0 or id(p) in on_device:
                    value = value.to(p.device)
            self.states.setdefault(task, {}).setdefault(p, {})[name] = value

    def save(self, path: str, optimizer) -> None:
        """Write `state_dict()` to a safetensors file at `path` (through a temporary file: whole or absent)."""
        tensors, metadata = self.state_dict(optimizer)
        save_file(tensors, path + ".tmp", metadata=metadata)
        os.replace(path + ".tmp", path)

    def load(self, path: str, optimizer) -> None:
        """Read a file written by `save` back onto `optimizer`'s parameters."""
        with safe_open(path, framework="pt") as handle:
            metadata, tensors = handle.metadata(), {key: handle.get_tensor(key) for key in handle.keys()}
        self.load_state_dict(optimizer, tensors, metadata)
