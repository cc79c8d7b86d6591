"""Freezing and learning-rate groups of MTST models: the parameter blocks (heads, projection, encoder layers,
embeddings) with their layer-wise learning-rate scale and gradual-unfreezing stage, static freezing, and the table of
groups that `MultiTaskTrainer` logs.

    Static freezes (`freeze`, `freeze_layers`, `freeze_heads`) set `requires_grad=False` before the model is wrapped.
    Gradual unfreezing never touches `requires_grad`: a block waits with learning rate 0 (and zeroed gradients) until
    its stage, via per-group factors in the LR schedule, which is safe under DDP.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from mtst.training.arguments import FREEZE_OPTIONS, MultiTaskTrainingError

__all__ = [
    "ParameterBlock",
    "apply_static_freezing",
    "format_parameter_summary",
    "parameter_blocks",
    "parameter_groups",
]


@dataclass
class ParameterBlock:
    """A named set of parameters sharing a learning-rate scale and an unfreezing stage."""

    name: str
    params: list[tuple[str, nn.Parameter]]
    lr_scale: float = 1.0
    stage: int = 0  # gradual unfreezing: trainable from step stage * every (0 = from the start)


def encoder_layers(model) -> list[nn.Module]:
    """The transformer blocks of an MTST model's backbone, bottom to top."""
    for path in ("encoder.layer", "transformer.layer", "layers", "layer", "encoder.layers", "block"):
        module = model.encoder
        for part in path.split("."):
            module = getattr(module, part, None)
            if module is None:
                break
        if isinstance(module, nn.ModuleList):
            return list(module)
    raise MultiTaskTrainingError(f"Cannot find the transformer layers of {type(model.encoder).__name__}.")


def parameter_blocks(model: nn.Module, layerwise_lr_decay: float = 1.0) -> list[ParameterBlock]:
    """Split an MTST model into blocks: heads, projection, other non-encoder parameters, encoder layers (top first),
    other encoder parameters, embeddings. Encoder layer k from the top has `lr_scale = decay**k` and stage k + 1;
    the embeddings `decay**num_layers` and stage num_layers + 1."""
    layers = encoder_layers(model)
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
    if getattr(model, "embedding_adapter", None) is not None:
        for p in model.embedding_adapter.parameters():
            owner[id(p)] = "embedding_adapter"
    encoder_ids = {id(p) for p in model.encoder.parameters()}

    num_layers = len(layers)
    blocks: dict[str, ParameterBlock] = {}
    for task in model.heads:
        blocks[f"head.{task}"] = ParameterBlock(f"head.{task}", [])
    blocks["projection"] = ParameterBlock("projection", [])
    blocks["embedding_adapter"] = ParameterBlock("embedding_adapter", [])
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


def parameter_groups(
    blocks: Sequence[ParameterBlock],
    decay_names: set[str],
    weight_decay: float,
    learning_rate: float,
    unfreeze_every_steps: int = 0,
    head_learning_rates: Mapping[str, float] | None = None,
    adapter_learning_rate: float | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The optimizer's parameter groups of `blocks` (for each block, its trainable parameters in `decay_names` with
    `weight_decay`, the others without, at `learning_rate * lr_scale`, tagged `mtst_block` and `mtst_unfreeze_step`
    = `stage * unfreeze_every_steps`), and one summary row per block for `format_parameter_summary`.
    `head_learning_rates` ({task: lr}) sets the learning rate of those tasks' heads instead, and
    `adapter_learning_rate` that of the embedding adapter."""
    head_learning_rates = head_learning_rates or {}
    groups, summary = [], []
    for block in blocks:
        trainable = [(n, p) for n, p in block.params if p.requires_grad]
        start = block.stage * unfreeze_every_steps
        lr = learning_rate * block.lr_scale
        if block.name.startswith("head.") and block.name[len("head.") :] in head_learning_rates:
            lr = head_learning_rates[block.name[len("head.") :]]
        if block.name == "embedding_adapter" and adapter_learning_rate is not None:
            lr = adapter_learning_rate
        summary.append(
            {
                "group": block.name,
                "parameters": sum(p.numel() for _, p in block.params),
                "trainable": sum(p.numel() for _, p in trainable),
                "lr": lr,
                "unfreeze_step": start if trainable else None,
            }
        )
        for wd, params in (
            (weight_decay, [p for n, p in trainable if n in decay_names]),
            (0.0, [p for n, p in trainable if n not in decay_names]),
        ):
            if params:
                groups.append(
                    {
                        "params": params,
                        "weight_decay": wd,
                        "lr": lr,
                        "mtst_block": block.name,
                        "mtst_unfreeze_step": start,
                    }
                )
    return groups, summary


def apply_static_freezing(
    model: nn.Module, freeze: str = "none", freeze_layers: int = 0, freeze_heads: Sequence[str] | None = None
) -> list[str]:
    """Set `requires_grad=False` (call before the model is wrapped for DDP). Returns the frozen parameter names.

    `freeze`: `none`, `all` (encoder and projection: only the heads train), `encoder` (the backbone; with either,
    the embedding adapter too),
    `embeddings`. `freeze_layers=N`: the embeddings and the lowest N encoder layers. `freeze_heads`: task heads.
    """
    if freeze not in FREEZE_OPTIONS:
        raise MultiTaskTrainingError(f"Unknown freeze option {freeze!r}; allowed values: {', '.join(FREEZE_OPTIONS)}.")
    layers = encoder_layers(model)
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
        if getattr(model, "embedding_adapter", None) is not None:  # it follows the encoder: nothing to follow
            modules.append(model.embedding_adapter)
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


def gated_lambda(base, start_step: int):
    def lr_lambda(step: int) -> float:
        return base(step) if step >= start_step else 0.0

    return lr_lambda


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
