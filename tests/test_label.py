"""mtst-label (label_mtst): silver labels from an MTST head or a transformers classifier, written in the format a
task config reads; low-confidence texts dropped and counted; bad input exits 2 with one paragraph; the written file
trains a joint topic + NER model through data/tasks/silver_topic_ner.yaml with no conversion step."""

import json
import os

import pytest
import torch
import yaml
from conftest import NER_LABELS, save_tiny_mtst
from reliability_helpers import cli_args, error_paragraph, make_tiny
from trainer_helpers import backbone_path

from mtst.cli import label as label_mtst
from mtst.cli import train as run_multitask

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE_TOPIC = os.path.join(ROOT, "data", "sample", "topic", "train.jsonl")
EXAMPLE_CONFIG = os.path.join(ROOT, "data", "tasks", "silver_topic_ner.yaml")


@pytest.fixture(scope="module")
def mtst(tmp_path_factory):
    return str(save_tiny_mtst(tmp_path_factory.mktemp("label") / "mtst"))


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    """The first 60 AG News-like sample texts (text, label and sometimes sentiment)."""
    path = tmp_path_factory.mktemp("texts") / "texts.jsonl"
    with open(SAMPLE_TOPIC, encoding="utf-8") as f:
        path.write_text("".join(f.readlines()[:60]), encoding="utf-8")
    return path


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in open(path, encoding="utf-8")]


def test_words_and_iob2():
    assert label_mtst.split_words("Volkswagen cut 12,000 jobs in O'Neill's U.S. plant.")[0] == [
        "Volkswagen",
        "cut",
        "12,000",
        "jobs",
        "in",
        "O'Neill's",
        "U.S",
        ".",
        "plant",
        ".",
    ]
    assert label_mtst.to_iob2(["I-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-ORG"]) == [
        "B-PER",
        "I-PER",
        "O",
        "B-LOC",
        "B-LOC",
        "B-ORG",
    ]
    assert label_mtst.to_iob2(["PER", "PER", "O", "S-LOC", "B-ORG", "E-ORG", "E-ORG"]) == [
        "B-PER",
        "I-PER",
        "O",
        "B-LOC",
        "B-ORG",
        "I-ORG",
        "B-ORG",
    ]


def test_ner_silver_labels_train_a_joint_topic_ner_model(mtst, texts, tmp_path, capsys):
    everything = tmp_path / "all.jsonl"
    assert label_mtst.main(["--model", mtst, "--task", "ner", "--input", str(texts), "--output", str(everything)]) == 0
    rows = read_jsonl(everything)
    source = read_jsonl(texts)
    assert len(rows) == 60
    for row, original in zip(rows, source):
        assert row["text"] == original["text"] and row["label"] == original["label"]  # the input's fields stay
        assert len(row["tokens"]) == len(row["ner_tags"]) > 0 and " ".join(row["tokens"]).replace(" ", "") == row[
            "text"
        ].replace(" ", "")
        assert set(row["ner_tags"]) <= set(NER_LABELS) and 0 < row["ner_score"] <= 1
        for previous, tag in zip(["O", *row["ner_tags"]], row["ner_tags"]):  # valid IOB2
            assert not tag.startswith("I-") or previous[2:] == tag[2:], row["ner_tags"]
    # --min_score drops (and counts) exactly the texts whose least sure word is under it
    scores = sorted(row["ner_score"] for row in rows)
    threshold = scores[len(scores) // 2]
    expected = sum(score >= threshold for score in scores)
    capsys.readouterr()
    silver = tmp_path / "silver.jsonl"
    args = ["--model", mtst, "--task", "ner", "--input", str(texts), "--output", str(silver)]
    assert label_mtst.main([*args, "--min_score", str(threshold)]) == 0
    assert len(read_jsonl(silver)) == expected
    err = capsys.readouterr().err
    assert f"wrote {expected} of 60 texts" in err and f"dropped {60 - expected} under --min_score {threshold}" in err

    # the example config reads the file as it is: topic from text/label, ner from tokens/ner_tags
    config = yaml.safe_load(open(EXAMPLE_CONFIG, encoding="utf-8"))
    for entry in config["tasks"]:
        assert entry["data_files"] == {"train": "silver.jsonl"}
        entry["data_files"] = {"train": str(silver)}
    (tmp_path / "joint.yaml").write_text(yaml.safe_dump(config))
    tiny = make_tiny(tmp_path / "tiny")
    out = tmp_path / "joint"
    args = cli_args(tiny, out, "--tasks_config", str(tmp_path / "joint.yaml"), "--num_train_epochs", "1")
    assert run_multitask.main([*args, "--save_strategy", "no", "--validation_fraction", "0.25"]) == 0
    results = json.loads((out / "all_results.json").read_text())
    assert "eval_topic_accuracy" in results and "eval_ner_f1" in results
    assert json.loads((out / "config.json").read_text())["tasks"][1]["labels"] == NER_LABELS


def test_sentence_task_and_plain_transformers_models(mtst, texts, tmp_path):
    from conftest import tiny_encoder_config
    from transformers import AutoTokenizer, BertForSequenceClassification, BertForTokenClassification

    out = tmp_path / "topic.jsonl"
    args = ["--model", mtst, "--task", "topic", "--input", str(texts), "--output", str(out)]
    assert label_mtst.main(args) == 0
    rows = read_jsonl(out)
    assert len(rows) == 60 and {"text", "label", "score"} <= set(rows[0])
    assert all(row["label"] in ("World", "Sports", "Business", "Sci/Tech") for row in rows)

    tokenizer = AutoTokenizer.from_pretrained(backbone_path())
    torch.manual_seed(0)
    plain = ["O", "PER", "LOC"]  # IO tags: written as IOB2
    config = tiny_encoder_config(num_hidden_layers=1, id2label=dict(enumerate(plain)))
    BertForTokenClassification(config).save_pretrained(tmp_path / "bert-ner")
    tokenizer.save_pretrained(tmp_path / "bert-ner")
    txt = tmp_path / "texts.txt"
    txt.write_text("John Smith lives in Paris.\n\nMary went to London on Monday.\n")
    ner_out = tmp_path / "plain_ner.jsonl"
    assert label_mtst.main(["--model", str(tmp_path / "bert-ner"), "--input", str(txt), "--output", str(ner_out)]) == 0
    rows = read_jsonl(ner_out)
    assert [row["tokens"][:2] for row in rows] == [["John", "Smith"], ["Mary", "went"]]
    assert all(set(row["ner_tags"]) <= {"O", "B-PER", "I-PER", "B-LOC", "I-LOC"} for row in rows)

    sentiment = ["negative", "positive"]
    config = tiny_encoder_config(num_hidden_layers=1, id2label=dict(enumerate(sentiment)))
    BertForSequenceClassification(config).save_pretrained(tmp_path / "bert-cls")
    tokenizer.save_pretrained(tmp_path / "bert-cls")
    cls_out = tmp_path / "plain_cls.jsonl"
    assert label_mtst.main(["--model", str(tmp_path / "bert-cls"), "--input", str(txt), "--output", str(cls_out)]) == 0
    assert [row["label"] in sentiment for row in read_jsonl(cls_out)] == [True, True]


@pytest.mark.parametrize(
    "case, expected",
    [
        ("missing_column", "has no 'body' field"),
        ("missing_file", "does not exist"),
        ("bad_score", "--min_score must be between 0 and 1"),
        ("no_task", "pick one with --task"),
        ("unknown_task", "has no task 'pos'"),
        ("no_folder", "the folder"),
        ("not_a_model", "Model folder"),
        ("output_is_input", "is the --input file"),
        ("output_is_input_overwrite", "is the --input file"),
        ("output_exists", "already exists; pass --overwrite"),
    ],
)
def test_bad_input_exits_2_with_one_paragraph(mtst, texts, tmp_path, capsys, case, expected):
    args = {"--model": mtst, "--task": "ner", "--input": str(texts), "--output": str(tmp_path / "o.jsonl")}
    extra = []
    if case == "missing_column":
        extra = ["--text_column", "body"]
    elif case == "missing_file":
        args["--input"] = str(tmp_path / "nope.csv")
    elif case == "bad_score":
        extra = ["--min_score", "80"]
    elif case == "no_task":
        del args["--task"]
    elif case == "unknown_task":
        args["--task"] = "pos"
    elif case == "no_folder":
        args["--output"] = str(tmp_path / "missing" / "o.jsonl")
    elif case == "not_a_model":
        args["--model"] = str(tmp_path / "no-model/")
    elif case.startswith("output_is_input"):  # the same file under another spelling
        args["--output"] = os.path.join(str(texts.parent), ".", texts.name)
        extra = ["--overwrite"] if case.endswith("overwrite") else []
    elif case == "output_exists":
        (tmp_path / "o.jsonl").write_text("{}\n")
    before = texts.read_bytes()
    argv = [item for pair in args.items() for item in pair] + extra
    assert label_mtst.main(argv) == 2
    message = error_paragraph(capsys.readouterr().err, prefix="mtst-label: error: ")
    assert expected in message and "\n" not in message
    assert (tmp_path / "o.jsonl").exists() == (case == "output_exists") and texts.read_bytes() == before
    if case == "output_exists":
        assert (tmp_path / "o.jsonl").read_text() == "{}\n"
        assert label_mtst.main([*argv, "--overwrite"]) == 0 and len(read_jsonl(tmp_path / "o.jsonl")) == 60
