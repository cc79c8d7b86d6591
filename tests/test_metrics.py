"""metrics_mtst: sequence and token classification metrics, prediction files without the raw data."""

import json

import numpy as np
import pytest

from mtst.metrics import sequence_classification_metrics, token_classification_metrics, write_predictions


def test_sequence_metrics():
    logits = np.array([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0]])
    metrics = sequence_classification_metrics(logits, np.array([0, 1, 2, 2]))
    assert metrics["accuracy"] == pytest.approx(0.75)
    # per class f1: 1, 2/3, 2/3
    assert metrics["macro_f1"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    assert metrics["macro_precision"] == pytest.approx((1 + 0.5 + 1) / 3)
    assert metrics["macro_recall"] == pytest.approx((1 + 1 + 0.5) / 3)


def test_token_metrics_are_strict_iob2():
    names = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    gold = np.array([[-100, 1, 2, 0, 3, -100], [-100, 0, 3, 4, 0, -100]])
    # row 0: PER correct, LOC correct; row 1: the LOC starts with I- (invalid in strict IOB2: no entity)
    pred = np.array([[0, 1, 2, 0, 3, 0], [0, 0, 4, 4, 0, 0]])
    metrics = token_classification_metrics(pred, gold, names)
    assert metrics["precision"] == pytest.approx(1.0)
    assert metrics["recall"] == pytest.approx(2 / 3)
    assert metrics["accuracy"] == pytest.approx(7 / 8)
    assert metrics["PER_f1"] == pytest.approx(1.0)
    assert metrics["LOC_f1"] == pytest.approx(2 / 3)
    plain = token_classification_metrics(np.array([[0, 1, 1, 0]]), np.array([[0, 1, 1, 0]]), ["O", "PER"])
    assert plain["f1"] == pytest.approx(1.0) and "PER_f1" in plain  # plain tags read as IO


def test_write_predictions_without_raw_data(tmp_path):
    path = tmp_path / "p.jsonl"
    logits = np.array([[[0.0, 5.0], [5.0, 0.0], [0.0, 5.0]]])
    write_predictions(str(path), "token_classification", ["O", "B-X"], logits, np.array([[-100, 1, 0]]))
    row = json.loads(path.read_text())
    assert row["predictions"] == ["O", "B-X"] and row["labels"] == ["B-X", "O"]
