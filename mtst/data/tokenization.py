"""Tokenization of a task's splits with sub-word label alignment: `tokenize_task`."""

from __future__ import annotations

import logging
import os

import datasets

from mtst.data.errors import TaskConfigError
from mtst.data.tags import continuation_ids
from mtst.data.tasks import TaskSpec
from mtst.remote.configuration_mtst import IGNORE_INDEX, MULTI_LABEL_CLASSIFICATION, REGRESSION

logger = logging.getLogger(__name__)

__all__ = ["batch_tokenizer", "tokenize_task"]


def _truncated_flags(tokenizer, enc, texts, pairs, is_split: bool, max_length: int) -> list[bool]:
    encodings = getattr(enc, "encodings", None)
    if encodings:
        return [bool(e.overflowing) for e in encodings]
    # Tokenizers without a Rust backend: compare with the untruncated length.
    full = tokenizer(texts, pairs, is_split_into_words=is_split, truncation=False)
    return [len(ids) > max_length for ids in full["input_ids"]]


def _checked_max_length(spec: TaskSpec, tokenizer, max_seq_length: int) -> int:
    """`max_seq_length`, capped at the tokenizer's limit; an error when it leaves no room for text or when a token
    task has no fast tokenizer."""
    model_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(model_max, int) and 0 < model_max < 1_000_000 and max_seq_length > model_max:
        logger.warning(
            "max_seq_length %d is longer than the tokenizer's model_max_length %d; using %d.",
            max_seq_length,
            model_max,
            model_max,
        )
        max_seq_length = model_max
    token = spec.is_token_task
    if token and not getattr(tokenizer, "is_fast", False):
        raise TaskConfigError(
            f"Task '{spec.name}' is a token_classification task and needs a fast tokenizer (word_ids() for label "
            f"alignment); {type(tokenizer).__name__} is not fast. Load it with AutoTokenizer.from_pretrained(..., "
            "use_fast=True) or use a checkpoint with a tokenizer.json."
        )
    pair = (
        bool(spec.text_pair_column) and not token and not spec.is_embedding_task
    )  # embedding tasks: one text at a time
    count_special = getattr(tokenizer, "num_special_tokens_to_add", None)
    special = count_special(pair=pair) if callable(count_special) else 0
    needed = special + (2 if pair else 1)
    if isinstance(max_seq_length, bool) or not isinstance(max_seq_length, int) or max_seq_length < needed:
        raise TaskConfigError(
            f"Task '{spec.name}': max_seq_length={max_seq_length!r} leaves no room for text: the tokenizer adds "
            f"{special} special token(s){' to a text pair' if pair else ''}, so max_seq_length must be at least "
            f"{needed} (128 is a common choice)."
        )
    return max_seq_length


def _align_labels(enc, batch_tags: list, cont: list[int], label_all_tokens: bool) -> tuple[list, list]:
    """(labels per sub-token, words lost per example): the word's label on its first sub-token, -100 on special
    tokens and continuations (or the continuation label); lost words produced no sub-token before the cut."""
    labels, lost = [], []
    for i, tags in enumerate(batch_tags):
        word_ids = enc.word_ids(i)
        row, prev = [], None
        for w in word_ids:
            if w is None:
                row.append(IGNORE_INDEX)
            elif w != prev:
                row.append(tags[w])
            else:
                row.append(cont[tags[w]] if label_all_tokens else IGNORE_INDEX)
            prev = w
        labels.append(row)
        kept = {w for w in word_ids if w is not None}
        last = max(kept) if kept else -1
        # words before the truncation point that produced no sub-token (e.g. only control characters)
        lost.append(last + 1 - len(kept))
    return labels, lost


def _log_counts(spec: TaskSpec, split: str, n_examples: int, n_truncated: int, n_lost: int, max_length: int):
    if n_truncated:
        logger.warning(
            "Task '%s', split %s: %d of %d examples were truncated to max_seq_length=%d.",
            spec.name,
            split,
            n_truncated,
            n_examples,
            max_length,
        )
    else:
        logger.info("Task '%s', split %s: no example was truncated (max_seq_length=%d).", spec.name, split, max_length)
    if n_lost:
        logger.warning(
            "Task '%s', split %s: %d word(s) produced no sub-token (e.g. only control characters) and carry no label.",
            spec.name,
            split,
            n_lost,
        )


PARALLEL_ROWS = 20_000  # from this many rows, a split is tokenized by several processes (default `num_proc`)


def default_num_proc(rows: int) -> int:
    """Processes for tokenizing `rows` rows: one per core (at most 8) from `PARALLEL_ROWS` rows, else 1 (starting
    processes costs more than it saves on a small split)."""
    return min(os.cpu_count() or 1, 8) if rows >= PARALLEL_ROWS else 1


def _map_splits(spec: TaskSpec, dataset_dict: datasets.DatasetDict, tokenize, max_length: int, num_proc=None):
    """Every split through `tokenize` (batched, by `num_proc` processes; None: `default_num_proc`); its
    `__truncated__` flags (and `__lost__` word counts, when it gives them) are counted, logged, kept in
    `spec.truncated` and dropped."""
    result = datasets.DatasetDict()
    spec.truncated = {}
    for split, ds in dataset_dict.items():
        procs = min(num_proc if num_proc is not None else default_num_proc(len(ds)), len(ds))
        out = ds.map(
            tokenize,
            batched=True,
            remove_columns=ds.column_names,
            num_proc=procs if procs > 1 else None,
            desc=f"Tokenizing {spec.name}/{split}",
        )
        spec.truncated[split] = sum(out["__truncated__"])
        helpers = [c for c in ("__truncated__", "__lost__") if c in out.column_names]
        lost = sum(out["__lost__"]) if "__lost__" in helpers else 0
        _log_counts(spec, split, len(out), spec.truncated[split], lost, max_length)
        result[split] = out.remove_columns(helpers)
    return result


# The texts of an embedding task's rows and the prefix of their tokenized columns (`input_ids`, `pair_input_ids`, ...).
PAIR_COLUMNS = {"text": "", "text_pair": "pair_", "negative": "negative_"}


def _pair_tokenizer(tokenizer, max_length: int):
    """An embedding task's texts, each tokenized on its own (a bi-encoder: never as a text pair): `input_ids` ...
    of the first text, `pair_input_ids` ... of the second, `negative_...` of a hard negative, and `labels` (the
    scaled score) for similarity tasks."""
    names = ("input_ids", "attention_mask", "token_type_ids")

    def tokenize(batch: dict[str, list]) -> dict[str, list]:
        out: dict[str, list] = {"__truncated__": [False] * len(batch["text"])}
        for column, prefix in PAIR_COLUMNS.items():
            if column not in batch:
                continue
            enc = tokenizer(batch[column], truncation=True, max_length=max_length)
            out.update({prefix + k: enc[k] for k in names if k in enc})
            cut = _truncated_flags(tokenizer, enc, batch[column], None, False, max_length)
            out["__truncated__"] = [a or b for a, b in zip(out["__truncated__"], cut)]
        if "label" in batch:
            out["labels"] = [float(x) for x in batch["label"]]
        return out

    return tokenize


def batch_tokenizer(spec: TaskSpec, tokenizer, max_seq_length: int = 128, label_all_tokens: bool = False):
    """(tokenize, max_length): the batched function `tokenize_task` maps over a split of converted rows (columns
    as `load_task_data` returns them), and the length it truncates to. Its output has the model's columns plus
    `__truncated__` flags (and `__lost__` word counts for token tasks); streaming tasks apply it chunk by chunk."""
    max_seq_length = _checked_max_length(spec, tokenizer, max_seq_length)
    if spec.is_embedding_task:
        return _pair_tokenizer(tokenizer, max_seq_length), max_seq_length
    if spec.labels is None and spec.type != REGRESSION:
        raise TaskConfigError(f"Task '{spec.name}': labels are not known; call load_task_data before tokenize_task.")
    token = spec.is_token_task
    multi_hot = spec.type == MULTI_LABEL_CLASSIFICATION
    cont = continuation_ids(spec.labels) if token else []
    input_names = ("input_ids", "attention_mask", "token_type_ids")

    def tokenize(batch: dict[str, list]) -> dict[str, list]:
        if token:
            texts, pairs = batch["tokens"], None
        else:
            texts, pairs = batch["text"], batch.get("text_pair")
        enc = tokenizer(texts, pairs, is_split_into_words=token, truncation=True, max_length=max_seq_length)
        out = {k: enc[k] for k in input_names if k in enc}
        out["__truncated__"] = _truncated_flags(tokenizer, enc, texts, pairs, token, max_seq_length)
        if token:
            out["labels"], out["__lost__"] = _align_labels(enc, batch["tags"], cont, label_all_tokens)
        elif multi_hot:  # a multi-label row's label ids -> one float per label
            out["labels"] = [[float(i in set(ids)) for i in range(len(spec.labels))] for ids in batch["label"]]
            out["__lost__"] = [0] * len(texts)
        else:  # a class id, or a regression score
            out["labels"], out["__lost__"] = list(batch["label"]), [0] * len(texts)
        return out

    return tokenize, max_seq_length


def tokenize_task(
    spec: TaskSpec,
    dataset_dict: datasets.DatasetDict,
    tokenizer,
    max_seq_length: int = 128,
    label_all_tokens: bool = False,
    num_proc: int | None = None,
) -> datasets.DatasetDict:
    """Tokenize a task's splits and align labels (by `num_proc` processes; default: `default_num_proc`).

    Output columns: ``input_ids``, ``attention_mask``, ``token_type_ids`` (only if the tokenizer returns them) and
    ``labels``: an int for sequence tasks, one float per label (1.0: the row has it) for multi-label tasks, the
    score for regression tasks; for token tasks a list with the word's label on its first sub-token,
    ``-100`` on special tokens and on the other sub-tokens (or, with ``label_all_tokens=True``, the word's label with
    ``B-X`` turned into ``I-X``). Truncated examples are counted per split, logged and stored in ``spec.truncated``.
    """
    tokenize, max_length = batch_tokenizer(spec, tokenizer, max_seq_length, label_all_tokens)
    return _map_splits(spec, dataset_dict, tokenize, max_length, num_proc)
