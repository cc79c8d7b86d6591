"""Training the sentence embedding itself, beside the heads.

Embedding tasks
    `sentence_similarity` and `retrieval` tasks have no head: their loss is computed from the model's
    `sentence_embedding` of each text with sentence-transformers' own losses (`CoSENTLoss`, `CosineSimilarityLoss`,
    `MultipleNegativesRankingLoss`), through their `compute_loss_from_embeddings`: the losses' `forward` would run a
    SentenceTransformer on each column, while MTST embeds a batch's columns in one forward pass of its own model (one
    forward per backward under DDP). Under DDP, the retrieval loss gathers the other processes' embeddings, so its
    in-batch negatives grow with the world size (every process trains the same task at the same step).

Embedding preservation
    While heads train, the sentence embedding of each training text is kept close to the one the model gave before
    training (the model as loaded: the backbone, or the trained model being grown): `weight x (1 - cosine)` (or the
    mean squared difference) added to each head task's batch loss. The starting model's embeddings are computed once,
    before the first step, stored with the tokenized training data and saved beside the checkpoints
    (`teacher_embeddings.safetensors`), so resuming uses the same ones; no second model runs during training.
"""

from __future__ import annotations

import logging
import math
import os
import time

import datasets
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader
from transformers import DataCollatorWithPadding

from mtst.data.collator import MultiTaskDataset
from mtst.remote.configuration_mtst import RETRIEVAL, SENTENCE_SIMILARITY
from mtst.training.arguments import MultiTaskTrainingError, option
from mtst.training.sampler import task_mapping

logger = logging.getLogger(__name__)

__all__ = [
    "TEACHER_FILE",
    "EmbeddingTaskLosses",
    "add_teacher_embeddings",
    "attach_embedding_adapter",
    "preservation_loss",
    "preservation_weights",
    "with_teacher_embeddings",
]

TEACHER_FILE = "teacher_embeddings.safetensors"
PRESERVATION_LOSSES = ("cosine", "mse")


def _sentence_transformers_losses():
    try:  # sentence-transformers >= 6: the losses of SentenceTransformer models live here
        from sentence_transformers.sentence_transformer import losses
    except ImportError:  # older layout
        from sentence_transformers import losses
    return losses


class EmbeddingTaskLosses:
    """The loss of each embedding task of a model config, from the embeddings of a batch's columns."""

    def __init__(self, config, world_size: int = 1):
        losses = _sentence_transformers_losses()
        self.losses = {}
        for task in config.task_names:
            spec = config.tasks[task]
            if spec["type"] == SENTENCE_SIMILARITY:
                kind = losses.CoSENTLoss if spec["loss"] == "cosent" else losses.CosineSimilarityLoss
                self.losses[task] = kind(model=None)
            elif spec["type"] == RETRIEVAL:
                gather = world_size > 1
                self.losses[task] = losses.MultipleNegativesRankingLoss(model=None, gather_across_devices=gather)

    def __call__(self, task: str, embeddings: torch.Tensor, columns: int, labels: torch.Tensor | None):
        """`embeddings` `[columns * B, D]`: the first texts of the batch, then the second ones (then negatives)."""
        parts = list(embeddings.float().chunk(columns))
        return self.losses[task].compute_loss_from_embeddings(parts, labels)


def preservation_weights(args, config, tasks=None) -> dict[str, float]:
    """`{head task: embedding preservation weight}` of `config`'s head tasks (those in `tasks`, the tasks a run
    trains, when given): `embedding_preservation`, overridden per task by `embedding_preservation_weights` (which
    needs preservation on), then divided by the number of those tasks with a weight above 0 when
    `embedding_preservation_shared` is on; every weight is 0 when preservation is off."""
    weight = float(option(args, "embedding_preservation"))
    named = task_mapping(
        "embedding_preservation_weights", option(args, "embedding_preservation_weights"), list(config.task_names)
    )
    embedding = [t for t in named if config.is_embedding_task(t)]
    if embedding:
        raise MultiTaskTrainingError(
            f"`embedding_preservation_weights` names the embedding task(s) {', '.join(embedding)}: preservation acts "
            "on head tasks' texts only (an embedding task's own loss trains the embedding); leave them out."
        )
    bad = {t: w for t, w in named.items() if not (w >= 0 and math.isfinite(w))}
    if bad:
        raise MultiTaskTrainingError(f"`embedding_preservation_weights` must be numbers >= 0 (0: off); got {bad}.")
    if named and weight <= 0:
        raise MultiTaskTrainingError(
            "`embedding_preservation_weights` sets weights with embedding preservation off (embedding_preservation "
            f"{weight:g}); set embedding_preservation to the weight of the tasks it does not name (for example 1, "
            "with 0 for the tasks whose texts should stay free)."
        )
    heads = [t for t in config.head_task_names if tasks is None or t in tasks]
    return shared_weights({t: named.get(t, weight) for t in heads}, option(args, "embedding_preservation_shared"))


def shared_weights(weights: dict[str, float], shared: bool) -> dict[str, float]:
    """`{task: weight}` divided by the number of tasks above 0 when `shared` (`embedding_preservation_shared`)."""
    kept = sum(w > 0 for w in weights.values())
    return {t: w / kept for t, w in weights.items()} if shared and kept > 1 else dict(weights)


def attach_embedding_adapter(model, args, trained=None) -> None:
    """With embedding preservation on, a trained encoder and `embedding_preservation_adapter`, give a model whose
    run trains head tasks an embedding adapter (the identity until trained: no output changes); an adapter nothing
    would train (no preservation, no embedding task) is frozen, since DDP with one task expects every trainable
    weight to be used. `trained`: the tasks this run trains (default: all the model's; a grown model may keep tasks
    it does not train, and `--embedding_tasks_first` trains the embedding tasks in a run of their own). The one-stage
    warning is left out when `args` are the command line's with `embedding_tasks_first` on: run_multitask.py has
    then trained the embedding tasks alone before this trainer (it decides when to stage with these conditions)."""
    encoder_trains = option(args, "freeze") not in ("all", "encoder")
    trained = set(model.config.task_names if trained is None else trained)
    embedding_tasks = [t for t in model.config.tasks_of_type(SENTENCE_SIMILARITY, RETRIEVAL) if t in trained]
    head_tasks = [t for t in model.config.head_task_names if t in trained]
    preserving = any(w > 0 for w in preservation_weights(args, model.config, trained).values())
    if preserving and encoder_trains and option(args, "embedding_preservation_adapter") and head_tasks:
        model.add_embedding_adapter()
    staged_before = getattr(args, "embedding_tasks_first", False)  # ScriptTrainingArguments only
    if preserving and encoder_trains and embedding_tasks and head_tasks and not staged_before and args.should_log:
        logger.warning(
            "Embedding task(s) %s train next to head tasks with embedding preservation, in one stage: on MTST's "
            "three-task benchmark (STS-B next to CoNLL-2003 and AG News) this returned a worse embedding than "
            "training the embedding task(s) alone first and then every task, with preservation toward the model they "
            "left (README, 'Sentence embeddings after training'): run_multitask.py --embedding_tasks_first true "
            "(its default), or two runs, the second growing the first's model. If this model's embedding task(s) "
            "already trained alone (this is that second run), nothing is wrong.",
            ", ".join(embedding_tasks),
        )
    only_heads = len(model.config.head_task_names) == len(model.config.task_names)
    if model.embedding_adapter is not None and not preserving and only_heads:
        model.embedding_adapter.requires_grad_(False)


def preservation_loss(embedding: torch.Tensor, teacher: torch.Tensor, kind: str = "cosine") -> torch.Tensor:
    """How far a batch's embeddings moved from the starting model's: mean `1 - cosine`, or mean squared error."""
    embedding, teacher = embedding.float(), teacher.to(embedding.device, torch.float32)
    if kind == "mse":
        return F.mse_loss(embedding, teacher)
    return (1.0 - F.cosine_similarity(embedding, teacher, dim=-1)).mean()


@torch.no_grad()
def _embed_dataset(model, dataset, pad, batch_size: int, device) -> torch.Tensor:
    """The model's `sentence_embedding` of every row of a tokenized head-task dataset, in order (`pad`: a padding
    collator such as transformers' `DataCollatorWithPadding`)."""
    columns = [c for c in ("input_ids", "attention_mask", "token_type_ids") if c in dataset.column_names]
    loader = DataLoader(dataset.select_columns(columns), batch_size=batch_size, collate_fn=pad)
    was_training = model.training
    model.eval()
    chunks = []
    try:
        for batch in loader:
            # the padding collator adds the attention mask when the dataset has none (MTST's collator does the same)
            batch = {k: v.to(device) for k, v in batch.items() if k in (*columns, "attention_mask")}
            chunks.append(model(**batch).sentence_embedding.float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(chunks) if chunks else torch.empty(0)


def add_teacher_embeddings(model, datasets: dict, pad, batch_size: int, device, folder: str | None) -> dict:
    """`{task: dataset}` with a `teacher_embedding` column on the head tasks' datasets: the starting model's
    embeddings, read from `folder/TEACHER_FILE` when it holds them for these datasets (a resumed run), else
    computed with `model` now (and saved there)."""
    path = os.path.join(folder, TEACHER_FILE) if folder else None
    saved = load_file(path) if path and os.path.isfile(path) else {}
    out, computed = dict(datasets), {}
    for task, dataset in datasets.items():
        if model.config.is_embedding_task(task) or "teacher_embedding" in dataset.column_names:
            continue
        teacher = saved.get(task)
        if teacher is None or len(teacher) != len(dataset):
            teacher = computed[task] = _embed_dataset(model, dataset, pad, batch_size, device)
        out[task] = dataset.add_column("teacher_embedding", teacher.numpy().tolist())
    if computed and path is not None:
        os.makedirs(folder, exist_ok=True)
        save_file({**saved, **{t: v.contiguous() for t, v in computed.items()}}, path + ".tmp")
        os.replace(path + ".tmp", path)
    if computed:
        logger.info("Embedding preservation: the starting model's embeddings of %s computed.", ", ".join(computed))
    return out


def with_teacher_embeddings(model, dataset: MultiTaskDataset, tokenizer, args, weights=None) -> MultiTaskDataset:
    """The training set with the starting model's embedding of each head-task row (`add_teacher_embeddings`, kept
    in the output folder); unchanged when it has no head task. Tasks whose weight is 0 get none (`weights`: the
    trainer's `{head task: weight}`, by default `preservation_weights` of the set's in-memory tasks)."""
    if all(model.config.is_embedding_task(t) for t in dataset.datasets):
        return dataset
    streams = [t for t, d in dataset.datasets.items() if hasattr(d, "next_rows")]
    if streams and args.should_log:
        logger.warning(
            "Embedding preservation leaves out the streaming task(s) %s: their rows are read while training, so no "
            "starting embedding is computed for them.",
            ", ".join(streams),
        )
    if weights is None:
        weights = preservation_weights(args, model.config, [t for t in dataset.datasets if t not in streams])
    free = [t for t in dataset.datasets if weights.get(t, 1.0) == 0]
    in_memory = {t: d for t, d in dataset.datasets.items() if t not in streams and t not in free}
    if tokenizer is None or not all(isinstance(d, datasets.Dataset) for d in in_memory.values()):
        raise MultiTaskTrainingError(
            "embedding_preservation needs the tokenizer (processing_class) and datasets.Dataset training sets; "
            "set embedding_preservation=0 to train without it."
        )
    start = time.time()
    folder = args.output_dir if args.should_save else None
    pad = DataCollatorWithPadding(tokenizer)
    tasks = add_teacher_embeddings(model, in_memory, pad, args.per_device_eval_batch_size, args.device, folder)
    if args.should_log:
        weight = option(args, "embedding_preservation")
        preserved = [t for t, w in weights.items() if w > 0]
        differ = any(w != weight for w in weights.values())
        logger.info(
            "Embedding preservation: weight %g%s%s (%s) against the starting model's embeddings (%.1f s).%s",
            weight,
            f", shared by the {len(preserved)} head tasks it keeps"
            if option(args, "embedding_preservation_shared") and len(preserved) > 1
            else "",
            f" (each task's batches: {', '.join(f'{t}={w:.4g}' for t, w in weights.items())})" if differ else "",
            option(args, "embedding_preservation_loss"),
            time.time() - start,
            f" The texts of {', '.join(free)} are not preserved (weight 0)." if free else "",
        )
    return MultiTaskDataset({t: tasks.get(t, d) for t, d in dataset.datasets.items()})
