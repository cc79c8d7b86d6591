"""Per-task metrics of MTST and the prediction files.

Metrics (`eval_<task>_<metric>`, plus `eval_average` and `eval_loss`)
    - sequence tasks: `accuracy`, `macro_f1`, `macro_precision`, `macro_recall` (macro over the labels that occur in
      gold or predictions); headline metric: `accuracy`.
    - token tasks: entity-level `precision`, `recall`, `f1` with seqeval in `mode="strict"` and scheme IOB2 (IOBES
      when the labels use E-/S- prefixes; plain tags without prefixes are read as IO: `X` -> `I-X`, default mode),
      `accuracy` over labelled (sub-)tokens and `<TYPE>_f1` per entity type; headline metric: `f1`.
    - sentence_similarity tasks: `spearman` and `pearson` correlation of the cosine of the two texts' embeddings
      with the gold scores; headline metric: `spearman`.
    - multi_label_classification tasks: a label is predicted where its sigmoid reaches the task's threshold for it:
      `micro_f1`, `micro_precision`, `micro_recall`, `macro_f1` (over every label), `jaccard` (per row, |gold and
      predicted| / |gold or predicted|, 1 when both are empty), `subset_accuracy` (every label right) and `<label>_f1`
      per label; headline metric: `micro_f1`.
    - regression tasks: `pearson` and `spearman` correlation of the predictions with the gold scores, `rmse` (on the
      scores' own scale); headline metric: `spearman`.
    - retrieval tasks: each query ranks every positive (and hard negative) of the evaluation set by cosine:
      `mrr_at_10`, `recall_at_1`, `recall_at_10`; headline metric: `mrr_at_10`.
    - `eval_average`: the mean of the tasks' headline metrics, usable as `metric_for_best_model="average"`;
      `eval_loss`: the mean of the tasks' (unweighted) losses.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from mtst.remote.configuration_mtst import IGNORE_INDEX, MULTI_LABEL_CLASSIFICATION, REGRESSION, RETRIEVAL
from mtst.remote.configuration_mtst import SENTENCE_SIMILARITY as SIMILARITY
from mtst.remote.configuration_mtst import SEQUENCE_CLASSIFICATION as SEQUENCE
from mtst.remote.configuration_mtst import TOKEN_CLASSIFICATION as TOKEN
from mtst.remote.pipeline_mtst import softmax

__all__ = [
    "HEADLINE_METRICS",
    "multi_label_metrics",
    "regression_metrics",
    "retrieval_metrics",
    "sequence_classification_metrics",
    "similarity_metrics",
    "task_metrics",
    "token_classification_metrics",
    "tune_thresholds",
    "write_predictions",
]

# The metric that stands for a task: in `eval_average`, in the card's headline columns, in mtst.training.grow's
# comparison.
HEADLINE_METRICS = {
    SEQUENCE: "accuracy",
    TOKEN: "f1",
    SIMILARITY: "spearman",
    RETRIEVAL: "mrr_at_10",
    MULTI_LABEL_CLASSIFICATION: "micro_f1",
    REGRESSION: "spearman",
}


def _metric_name(text: str) -> str:
    return re.sub(r"[^0-9A-Za-z]+", "_", str(text)).strip("_") or "type"


def sequence_classification_metrics(predictions, label_ids, label_names: Sequence[str] | None = None) -> dict:
    """accuracy, macro_f1, macro_precision, macro_recall (macro over the labels present in gold or predictions, 0 for
    an undefined ratio: the same numbers as scikit-learn's `average="macro", zero_division=0`)."""
    predictions = np.asarray(predictions)
    if predictions.ndim == 2:
        predictions = predictions.argmax(-1)
    label_ids = np.asarray(label_ids).reshape(-1)
    keep = label_ids != IGNORE_INDEX
    y_true, y_pred = label_ids[keep], predictions.reshape(-1)[keep]
    if y_true.size == 0:
        return {}
    precisions, recalls, f1s = [], [], []
    for label in np.union1d(y_true, y_pred):
        tp = np.sum((y_pred == label) & (y_true == label))
        predicted, actual = np.sum(y_pred == label), np.sum(y_true == label)
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        precisions.append(precision)
        recalls.append(recall)
        f1s.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    return {
        "accuracy": float(np.mean(y_true == y_pred)),
        "macro_f1": float(np.mean(f1s)),
        "macro_precision": float(np.mean(precisions)),
        "macro_recall": float(np.mean(recalls)),
    }


def _tag_scheme(label_names: Sequence[str]) -> str:
    """iob2 / iobes when every non-O label has a B-/I-(/E-/S-) prefix, else io (plain tags)."""
    tags = [label for label in label_names if label != "O"]
    if tags and all(re.match(r"^[BI]-.", t) for t in tags):
        return "iob2"
    if tags and all(re.match(r"^[BIES]-.", t) for t in tags):
        return "iobes"
    return "io"


def token_classification_metrics(predictions, label_ids, label_names: Sequence[str]) -> dict:
    """Entity-level precision/recall/f1 (seqeval, mode="strict", scheme IOB2 or IOBES; plain tags read as IO),
    accuracy over labelled tokens, and `<TYPE>_f1` per entity type."""
    from seqeval.metrics import classification_report
    from seqeval.scheme import IOB2, IOBES

    predictions = np.asarray(predictions)
    if predictions.ndim == 3:
        predictions = predictions.argmax(-1)
    label_ids = np.asarray(label_ids)
    scheme = _tag_scheme(label_names)
    names = list(label_names) if scheme != "io" else [n if n == "O" else f"I-{n}" for n in label_names]
    y_true, y_pred = [], []
    correct = total = 0
    for pred_row, gold_row in zip(predictions, label_ids):
        keep = gold_row != IGNORE_INDEX
        gold, pred = gold_row[keep], pred_row[: len(gold_row)][keep]
        correct += int((gold == pred).sum())
        total += int(keep.sum())
        y_true.append([names[i] for i in gold])
        y_pred.append([names[i] if 0 <= i < len(names) else "O" for i in pred])
    if total == 0:
        return {}
    kwargs = {"mode": "strict", "scheme": IOB2 if scheme == "iob2" else IOBES} if scheme != "io" else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = classification_report(y_true, y_pred, output_dict=True, zero_division=0, **kwargs)
    micro = report.get("micro avg", {})
    metrics = {
        "precision": float(micro.get("precision", 0.0)),
        "recall": float(micro.get("recall", 0.0)),
        "f1": float(micro.get("f1-score", 0.0)),
        "accuracy": correct / total,
    }
    for entity, values in report.items():
        if entity not in ("micro avg", "macro avg", "weighted avg"):
            metrics[f"{_metric_name(entity)}_f1"] = float(values["f1-score"])
    return metrics


def sigmoid(logits) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))


def _f1(tp, fp, fn) -> np.ndarray:
    """F1 per column of counts (0 where undefined, scikit-learn's `zero_division=0`)."""
    tp, fp, fn = (np.asarray(x, dtype=np.float64) for x in (tp, fp, fn))
    denominator = 2 * tp + fp + fn
    return np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)


def multi_label_metrics(logits, label_ids, label_names: Sequence[str], thresholds=None) -> dict:
    """micro/macro F1 (and micro precision, recall), Jaccard per row, subset accuracy and `<label>_f1`, with a label
    predicted where its sigmoid reaches its threshold (0.5 by default)."""
    gold = np.asarray(label_ids, dtype=np.float64) > 0.5
    if gold.size == 0:
        return {}
    predicted = sigmoid(logits).reshape(gold.shape) >= np.asarray(0.5 if thresholds is None else thresholds)
    tp, fp, fn = (predicted & gold).sum(0), (predicted & ~gold).sum(0), (~predicted & gold).sum(0)
    union = (predicted | gold).sum(1)
    metrics = {
        "micro_f1": float(_f1(tp.sum(), fp.sum(), fn.sum())),
        "micro_precision": float(tp.sum() / max(1, tp.sum() + fp.sum())),
        "micro_recall": float(tp.sum() / max(1, tp.sum() + fn.sum())),
        "macro_f1": float(_f1(tp, fp, fn).mean()),
        "jaccard": float(np.where(union > 0, (predicted & gold).sum(1) / np.maximum(union, 1), 1.0).mean()),
        "subset_accuracy": float((predicted == gold).all(1).mean()),
    }
    for name, value in zip(label_names, _f1(tp, fp, fn)):
        metrics[f"{_metric_name(name)}_f1"] = float(value)
    return metrics


def tune_thresholds(logits, label_ids, default: Sequence[float]) -> list[float]:
    """Per label, the threshold in 0.05, 0.10, ..., 0.95 with the best F1 on these rows (ties: the one closest to the
    default); a label these rows never have keeps its default."""
    probs, gold = sigmoid(logits), np.asarray(label_ids, dtype=np.float64) > 0.5
    grid = np.round(np.arange(0.05, 0.951, 0.05), 2)
    tuned = []
    for j, start in enumerate(default):
        if not gold[:, j].any():
            tuned.append(float(start))
            continue
        predicted = probs[:, j][:, None] >= grid[None, :]
        actual = gold[:, j][:, None]
        f1 = _f1((predicted & actual).sum(0), (predicted & ~actual).sum(0), (~predicted & actual).sum(0))
        best = np.flatnonzero(f1 == f1.max())
        tuned.append(float(grid[best[np.argmin(np.abs(grid[best] - start))]]))
    return tuned


def regression_metrics(predictions, scores) -> dict:
    """Pearson and Spearman correlation of the predictions with the gold scores, and the root mean squared error."""
    from scipy.stats import pearsonr, spearmanr

    predicted = np.asarray(predictions, dtype=np.float64).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if scores.size == 0:
        return {}
    rmse = float(np.sqrt(np.mean((predicted - scores) ** 2)))
    if len(scores) < 2 or np.ptp(predicted) == 0 or np.ptp(scores) == 0:
        return {"pearson": 0.0, "spearman": 0.0, "rmse": rmse}
    return {
        "pearson": float(pearsonr(predicted, scores)[0]),
        "spearman": float(spearmanr(predicted, scores)[0]),
        "rmse": rmse,
    }


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def similarity_metrics(embeddings: np.ndarray, scores: np.ndarray) -> dict:
    """Spearman and Pearson correlation of the cosine of each pair `embeddings[i, 0]`, `embeddings[i, 1]` (shape
    `[N, 2, D]`) with the gold `scores`. sentence-transformers' EmbeddingSimilarityEvaluator computes the same
    numbers, but from raw texts it encodes itself: here the embeddings come from the trainer's own evaluation loop
    (its tokenization and, under DDP, every process's share)."""
    from scipy.stats import pearsonr, spearmanr

    unit = _unit(np.asarray(embeddings, dtype=np.float64))
    cosine = (unit[:, 0] * unit[:, 1]).sum(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(cosine) < 2 or np.ptp(cosine) == 0 or np.ptp(scores) == 0:
        return {"spearman": 0.0, "pearson": 0.0}
    return {"spearman": float(spearmanr(cosine, scores)[0]), "pearson": float(pearsonr(cosine, scores)[0])}


def retrieval_metrics(embeddings: np.ndarray) -> dict:
    """MRR@10, recall@1 and recall@10 of each query `embeddings[i, 0]` finding its positive `embeddings[i, 1]` among
    every positive and hard negative (`embeddings[:, 2:]`) of the set, by cosine (as sentence-transformers'
    InformationRetrievalEvaluator, on the embeddings of the trainer's evaluation loop)."""
    unit = _unit(np.asarray(embeddings, dtype=np.float64))
    queries, corpus = unit[:, 0], unit[:, 1:].transpose(1, 0, 2).reshape(-1, unit.shape[-1])
    scores = queries @ corpus.T  # [N, N * (columns - 1)]; positives first, at column i
    positive = scores[np.arange(len(queries)), np.arange(len(queries))]
    rank = 1 + (scores > positive[:, None]).sum(1)  # ties count in the query's favour
    return {
        "mrr_at_10": float(np.where(rank <= 10, 1.0 / rank, 0.0).mean()),
        "recall_at_1": float((rank <= 1).mean()),
        "recall_at_10": float((rank <= 10).mean()),
    }


def task_metrics(task_type: str, predictions, label_ids, label_names: Sequence[str], thresholds=None) -> dict:
    """Metrics of one task (see the module docstring for names and headline metrics); `thresholds`: a multi-label
    task's decision threshold per label."""
    if task_type == MULTI_LABEL_CLASSIFICATION:
        return multi_label_metrics(predictions, label_ids, label_names, thresholds)
    if task_type == REGRESSION:
        return regression_metrics(predictions, label_ids)
    if task_type == SIMILARITY:
        return similarity_metrics(predictions, label_ids)
    if task_type == RETRIEVAL:
        return retrieval_metrics(predictions)
    if task_type == TOKEN:
        return token_classification_metrics(predictions, label_ids, label_names)
    return sequence_classification_metrics(predictions, label_ids, label_names)


def _jsonable(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def write_predictions(
    path: str,
    task_type: str,
    label_names: Sequence[str],
    logits: np.ndarray,
    label_ids: np.ndarray | None = None,
    raw_dataset=None,
    word_ids: Sequence[Sequence[int | None]] | None = None,
    thresholds: Sequence[float] | None = None,
) -> int:
    """Write one JSON line per example: the input (`text`/`text_pair` or `tokens` from `raw_dataset`), the gold label
    names (when known), the predicted label names and their probabilities. Returns the number of lines.

    Token tasks are written per word: a word's prediction is that of its first sub-token (`word_ids` from the
    tokenizer; without them, the labelled positions of `label_ids` are taken as the words' first sub-tokens). Words cut
    off by truncation get no prediction (`null`). Embedding tasks write their texts and the cosine of each pair
    (similarity: with the gold score, scaled to [0, 1]; retrieval: with the rank of the positive). Multi-label tasks
    write the gold and predicted label lists (a label from its threshold on) and every label's probability;
    regression tasks the gold and predicted scores."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if task_type in (SIMILARITY, RETRIEVAL):
        return _write_pair_predictions(path, task_type, logits, label_ids, raw_dataset)
    if task_type in (MULTI_LABEL_CLASSIFICATION, REGRESSION):
        return _write_target_predictions(path, label_names, logits, label_ids, raw_dataset, thresholds)
    names = list(label_names)
    n = len(logits)
    count = 0
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            row = raw_dataset[i] if raw_dataset is not None else {}
            record: dict[str, Any] = {}
            if task_type == TOKEN:
                tokens = list(row.get("tokens", [])) if row else None
                probs = softmax(np.asarray(logits[i], dtype=np.float64))
                if word_ids is not None:
                    positions: dict[int, int] = {}
                    for pos, w in enumerate(word_ids[i]):
                        if w is not None and w not in positions:
                            positions[w] = pos
                    num_words = len(tokens) if tokens is not None else (max(positions) + 1 if positions else 0)
                    firsts = [positions.get(w) for w in range(num_words)]
                else:
                    firsts = [int(p) for p in np.nonzero(np.asarray(label_ids[i]) != IGNORE_INDEX)[0]]
                    if tokens is not None:
                        firsts = (firsts + [None] * len(tokens))[: len(tokens)]
                preds, scores = [], []
                for pos in firsts:
                    if pos is None or pos >= len(probs):
                        preds.append(None)
                        scores.append(None)
                    else:
                        k = int(probs[pos].argmax())
                        preds.append(names[k])
                        scores.append(round(float(probs[pos][k]), 6))
                if tokens is not None:
                    record["tokens"] = tokens
                if row and "tags" in row:
                    record["labels"] = [names[t] for t in row["tags"]]
                elif label_ids is not None and word_ids is None:
                    record["labels"] = [names[int(label_ids[i][p])] if p is not None else None for p in firsts]
                record["predictions"] = preds
                record["scores"] = scores
            else:
                probs = softmax(np.asarray(logits[i], dtype=np.float64).reshape(-1))
                k = int(probs.argmax())
                for key in ("text", "text_pair"):
                    if row and key in row:
                        record[key] = row[key]
                gold = row.get("label") if row else None
                if gold is None and label_ids is not None:
                    gold = int(label_ids[i])
                if gold is not None and gold != IGNORE_INDEX:
                    record["label"] = names[int(gold)]
                record["prediction"] = names[k]
                record["score"] = round(float(probs[k]), 6)
                record["scores"] = {name: round(float(p), 6) for name, p in zip(names, probs)}
            f.write(json.dumps({k: _jsonable(v) for k, v in record.items()}, ensure_ascii=False) + "\n")
            count += 1
    return count


def _write_target_predictions(path: str, names, logits, label_ids, raw_dataset, thresholds) -> int:
    """Multi-label (`names` given) or regression predictions, one JSON line per row."""
    names = list(names)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(len(logits)):
            row = raw_dataset[i] if raw_dataset is not None else {}
            record: dict[str, Any] = {key: row[key] for key in ("text", "text_pair") if row and key in row}
            gold = row.get("label") if row else (label_ids[i] if label_ids is not None else None)
            if not names:  # regression: one number
                if gold is not None:
                    record["label"] = float(np.asarray(gold).reshape(-1)[0])
                record["prediction"] = round(float(np.asarray(logits[i]).reshape(-1)[0]), 6)
            else:
                probs = sigmoid(logits[i]).reshape(-1)
                if gold is not None:  # label ids (a raw row) or a multi-hot row (label_ids)
                    ids = gold if row else np.flatnonzero(np.asarray(gold) > 0.5)
                    record["labels"] = [names[int(j)] for j in ids]
                limits = thresholds if thresholds is not None else [0.5] * len(names)
                record["predictions"] = [name for name, p, t in zip(names, probs, limits) if p >= t]
                record["scores"] = {name: round(float(p), 6) for name, p in zip(names, probs)}
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return len(logits)


def _write_pair_predictions(path: str, task_type: str, embeddings, scores, raw_dataset) -> int:
    unit = _unit(np.asarray(embeddings, dtype=np.float64))
    cosine = (unit[:, 0] * unit[:, 1]).sum(-1)
    if task_type == RETRIEVAL:
        corpus = unit[:, 1:].transpose(1, 0, 2).reshape(-1, unit.shape[-1])
        ranks = 1 + ((unit[:, 0] @ corpus.T) > cosine[:, None]).sum(1)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(len(unit)):
            row = raw_dataset[i] if raw_dataset is not None else {}
            record = {key: row[key] for key in ("text", "text_pair", "negative") if key in row}
            if task_type == SIMILARITY and scores is not None:
                record["score"] = round(float(scores[i]), 6)
            record["cosine"] = round(float(cosine[i]), 6)
            if task_type == RETRIEVAL:
                record["rank"] = int(ranks[i])
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return len(unit)
