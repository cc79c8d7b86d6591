"""The Python API as a user meets it: the README's "Python API" snippet run as it stands, raw datasets per task
(label names, ClassLabel ids, other column names) tokenized by the trainer as a task config's files are, and one
tiny job trained through the Python API and through the command line to the same weights."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import torch
from reliability_helpers import make_tiny
from safetensors.torch import load_file
from transformers import AutoTokenizer, set_seed

import run_multitask
from mtst import MTSTModel, MultiTaskTrainer, MultiTaskTrainingArguments, TaskConfigError, TaskDataError, TaskSpec

ROOT = Path(__file__).resolve().parent.parent


def readme_snippet(heading: str = "## Python API") -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split(f"\n{heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow  # trains the real backbone (about 80 s): .ci/run runs it by name, beside the default suite
def test_the_readme_python_api_snippet_runs_as_it_stands(tmp_path):
    (tmp_path / "data").symlink_to(ROOT / "data")
    (tmp_path / "snippet.py").write_text(readme_snippet(), encoding="utf-8")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "snippet.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = eval(result.stdout.strip().splitlines()[-1])  # the dict print() shows
    assert metrics["eval_topic_accuracy"] >= 0.9 and metrics["eval_ner_f1"] >= 0.8, metrics
    out = tmp_path / "outputs" / "python-api"
    assert {"config.json", "model.safetensors", "modeling_mtst.py", "tokenizer.json"} <= set(os.listdir(out))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny(tmp_path_factory.mktemp("tiny"))


def rows(path) -> list[dict]:
    return [json.loads(line) for line in open(path, encoding="utf-8")]


def tiny_model(tiny, seed: int = 0):
    torch.manual_seed(seed)
    tasks = {
        "topic": {"type": "sequence_classification", "labels": ["World", "Sports", "Business", "Sci/Tech"]},
        "ner": {"type": "token_classification", "labels": ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]},
    }
    return MTSTModel.from_backbone(tiny["backbone"], tasks=tasks)


def quick_args(tmp_path, **kwargs):
    kwargs = {"num_train_epochs": 1, "save_strategy": "no", "use_cpu": True, "disable_tqdm": True, **kwargs}
    kwargs.setdefault("max_seq_length", 64)  # the tiny backbone's positions
    return MultiTaskTrainingArguments(output_dir=str(tmp_path / "out"), **kwargs)


def test_raw_datasets_with_names_classlabels_and_other_columns_train_and_evaluate(tiny, tmp_path):
    data = Path(tiny["data"])
    topic = datasets.Dataset.from_list(rows(data / "topic" / "train.jsonl")).rename_column("text", "sentence")
    topic = topic.class_encode_column("label")  # ClassLabel ids, in the feature's own order
    ner = datasets.DatasetDict(
        train=datasets.Dataset.from_list(rows(data / "ner" / "train.jsonl")),
        validation=datasets.Dataset.from_list(rows(data / "ner" / "validation.jsonl")),
    )
    topic_eval = datasets.Dataset.from_list(rows(data / "topic" / "validation.jsonl")).rename_column(
        "text", "sentence"
    )
    tokenizer = AutoTokenizer.from_pretrained(tiny["backbone"])
    trainer = MultiTaskTrainer(
        model=tiny_model(tiny),
        args=quick_args(tmp_path),
        train_dataset={"topic": topic, "ner": ner},
        eval_dataset={"topic": topic_eval, "ner": ner},
        processing_class=tokenizer,
        task_specs=[TaskSpec(name="topic", type="sequence_classification", text_column="sentence")],
    )
    # ClassLabel ids became the model's label ids by name, not by position
    names = topic.features["label"].names
    first = trainer.train_dataset.datasets["topic"][0]["labels"]
    assert ["World", "Sports", "Business", "Sci/Tech"][first] == names[topic[0]["label"]]
    trainer.train()
    metrics = trainer.evaluate()
    assert {"eval_topic_accuracy", "eval_ner_f1", "eval_average"} <= set(metrics)
    raw_test = {"topic": topic_eval.select(range(4))}
    assert trainer.predict(raw_test).predictions["topic"].shape == (4, 4)


def test_a_raw_dataset_with_a_label_outside_the_models_set_names_task_split_row_and_value(tiny, tmp_path):
    data = Path(tiny["data"])
    topic = rows(data / "topic" / "train.jsonl")
    topic[3]["label"] = "Weather"
    tokenizer = AutoTokenizer.from_pretrained(tiny["backbone"])
    with pytest.raises(TaskDataError) as err:
        MultiTaskTrainer(
            model=tiny_model(tiny),
            args=quick_args(tmp_path),
            train_dataset={"topic": datasets.Dataset.from_list(topic)},
            processing_class=tokenizer,
        )
    message = str(err.value)
    assert "task 'topic', train split, row 4" in message and "'Weather'" in message, message
    with pytest.raises(TaskDataError, match="has no column 'text'"):
        MultiTaskTrainer(
            model=tiny_model(tiny),
            args=quick_args(tmp_path),
            train_dataset={"topic": datasets.Dataset.from_list(topic).rename_column("text", "body")},
            processing_class=tokenizer,
        )
    with pytest.raises(TaskConfigError, match="needs a tokenizer"):
        MultiTaskTrainer(
            model=tiny_model(tiny),
            args=quick_args(tmp_path),
            train_dataset={"topic": datasets.Dataset.from_list(topic)},
        )


def test_the_python_api_and_the_cli_train_the_same_weights(tiny, tmp_path):
    """The same tiny job with each one's defaults (the one recipe): the command line on the task config, the Python
    API on the same files loaded with `datasets`, tokenized by the trainer. Identical weights."""
    cli_out = tmp_path / "cli"
    argv = ["--model_name_or_path", tiny["backbone"], "--tasks_config", tiny["tasks"], "--output_dir", str(cli_out)]
    argv += ["--num_train_epochs", "1", "--save_strategy", "no", "--use_cpu", "true", "--max_seq_length", "64"]
    assert run_multitask.main(argv) == 0

    set_seed(42)  # as the command line does before building the model
    data = Path(tiny["data"])
    load = {
        task: datasets.load_dataset(
            "json",
            data_files={s: str(data / task / f"{s}.jsonl") for s in ("train", "validation")},
            cache_dir=str(tmp_path / "cache"),
        )
        for task in ("topic", "ner")
    }
    config = json.loads((cli_out / "config.json").read_text())
    tasks = {t["name"]: {"type": t["type"], "labels": t["labels"]} for t in config["tasks"]}
    model = MTSTModel.from_backbone(tiny["backbone"], tasks=tasks)
    args = MultiTaskTrainingArguments(
        output_dir=str(tmp_path / "api"), num_train_epochs=1, save_strategy="no", use_cpu=True
    )
    trainer = MultiTaskTrainer(
        model=model,
        args=args,
        train_dataset={t: d["train"] for t, d in load.items()},
        eval_dataset={t: d["validation"] for t, d in load.items()},
        processing_class=AutoTokenizer.from_pretrained(tiny["backbone"]),
    )
    trainer.train()
    trainer.save_model()
    cli_weights = load_file(cli_out / "model.safetensors")
    api_weights = load_file(tmp_path / "api" / "model.safetensors")
    assert set(cli_weights) == set(api_weights)
    for name, tensor in cli_weights.items():
        assert torch.equal(tensor, api_weights[name]), name
