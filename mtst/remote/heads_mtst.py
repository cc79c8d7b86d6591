"""MTST's layers on top of the shared encoder: pooling, the embedding adapter, the task heads, and their losses.

This file travels to the Hub with the weights (``trust_remote_code``): it imports only torch and the config module.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

try:  # a package module: trust_remote_code copies the files that these relative imports name side by side
    from .configuration_mtst import IGNORE_INDEX, MULTI_LABEL_CLASSIFICATION, REGRESSION
except ImportError:  # a saved copy imported as a top-level module (its folder on sys.path)
    from configuration_mtst import IGNORE_INDEX, MULTI_LABEL_CLASSIFICATION, REGRESSION

_ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "tanh": nn.Tanh, "silu": nn.SiLU, "none": nn.Identity}


class Pooling(nn.Module):
    """Turns token states `(B, T, H)` and an attention mask `(B, T)` into one vector per sentence `(B, H)`."""

    def __init__(self, mode: str):
        super().__init__()
        self.mode = mode

    def forward(self, token_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.mode == "cls":
            return token_states[:, 0]
        mask = attention_mask.unsqueeze(-1).to(token_states.dtype)
        if self.mode == "max":
            masked = token_states.masked_fill(mask == 0, torch.finfo(token_states.dtype).min)
            return masked.max(dim=1).values
        summed = (token_states * mask).sum(dim=1)
        return summed / mask.sum(dim=1).clamp(min=1e-9)


class EmbeddingAdapter(nn.Module):
    """`x + x W^T + b`, with `W` and `b` starting at zero: the identity until embedding preservation trains it."""

    def __init__(self, size: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(size, size))
        self.bias = nn.Parameter(torch.zeros(size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + F.linear(x, self.weight, self.bias)


class TaskHead(nn.Module):
    """dropout -> [dense to hidden_size] -> LayerNorm -> activation -> linear projection to the task's labels."""

    def __init__(
        self,
        input_size: int,
        num_labels: int,
        dropout=0.1,
        layer_norm=True,
        activation="gelu",
        hidden_size=None,
        layer_norm_eps: float = 1e-12,
    ):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        width = hidden_size or input_size
        self.dense = nn.Linear(input_size, width) if hidden_size else None
        self.layer_norm = nn.LayerNorm(width, eps=layer_norm_eps) if layer_norm else None
        self.activation = _ACTIVATIONS[activation]()
        self.classifier = nn.Linear(width, num_labels)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.dropout(features)
        if self.dense is not None:
            x = self.dense(x)
        if self.layer_norm is not None:
            x = self.layer_norm(x)
        return self.classifier(self.activation(x))


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over positions whose label is not -100 (0 when a batch has none, never NaN)."""
    logits = logits.reshape(-1, logits.shape[-1])
    labels = labels.reshape(-1).to(logits.device)
    if not (labels != IGNORE_INDEX).any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX)


def head_output(spec: dict, logits: torch.Tensor) -> torch.Tensor:
    """A head's answer: a regression head predicts standardised scores, answered on the data's own scale."""
    if spec["type"] == REGRESSION:
        return logits * spec["score_std"] + spec["score_mean"]
    return logits


def task_loss(spec: dict, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The unweighted loss of one task's batch: cross-entropy (sequence and token tasks); binary cross-entropy per
    label of the multi-hot `labels` `[B, L]` (with the task's `pos_weight`) for multi-label tasks; the mean squared
    error of standardised scores for regression (`logits` `[B, 1]` on the data's scale, `labels` `[B]`)."""
    if spec["type"] == MULTI_LABEL_CLASSIFICATION:
        weight = spec.get("pos_weight")
        weight = torch.tensor(weight, device=logits.device) if weight else None
        return F.binary_cross_entropy_with_logits(logits.float(), labels.to(logits.device).float(), pos_weight=weight)
    if spec["type"] == REGRESSION:
        error = (logits.float().reshape(-1) - labels.to(logits.device).float().reshape(-1)) / spec["score_std"]
        return error.pow(2).mean()
    return cross_entropy(logits, labels)
