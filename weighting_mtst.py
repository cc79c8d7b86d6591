"""How the tasks' losses are combined in multi-task training: learned uncertainty weights (Kendall, Gal & Cipolla
2018). Static per-task weights need no code of their own (`loss_weight` in the task config, applied by
`trainer_mtst.MultiTaskTrainer`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
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
