"""Multi-label classification and regression tasks: their data (JSON lists, delimited strings, ClassLabel lists,
numbers) with one-paragraph errors, their losses and metrics, threshold tuning and standardised scores, and every
entry point: the command line (train, evaluate, predict files), the fresh-process remote-code round trip, the standard
and the multitask pipelines, mtst-predict, mtst-label, growing, ONNX, the handler and the app."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import datasets
import numpy as np
import pytest
import torch
from reliability_helpers import ENV, cli_args, error_paragraph, make_tiny, write_config
from trainer_helpers import write_jsonl
from transformers import AutoTokenizer

from mtst import MTSTModel, MultiTaskTrainer, MultiTaskTrainingArguments, TaskSpec
from mtst.cli import label as label_cli
from mtst.cli import predict as predict_cli
from mtst.cli import train as run_multitask
from mtst.data.errors import TaskDataError
from mtst.data.loading import load_task_data
from mtst.data.tasks import load_task_specs
from mtst.metrics import multi_label_metrics, regression_metrics, tune_thresholds

EMOTIONS = ["anger", "fear", "joy"]
ROWS = [
    ("i am so angry about this", ["anger"]),
    ("what a happy and lovely day", ["joy"]),
    ("scary news made me furious", ["anger", "fear"]),
    ("the train leaves at noon", []),
]
RATED = [("a great film", 4.5), ("an awful film", 1.0), ("an ordinary film", 3.0), ("a fine film", 3.5)]


def ml_rows(n: int = 6) -> list[dict]:
    return [{"text": f"{text} ({i})", "labels": labels} for i in range(n) for text, labels in ROWS]


def reg_rows(n: int = 6) -> list[dict]:
    return [{"text": f"{text} ({i})", "score": score} for i in range(n) for text, score in RATED]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny backbone, and a task config with a multi-label (JSON lists, tuned thresholds, pos_weight) and a
    regression task (CSV scores) besides the usual topic and ner tasks."""
    folder = tmp_path_factory.mktemp("targets")
    tiny = make_tiny(folder)
    data = folder / "data"
    for split, n in (("train", 8), ("validation", 3), ("test", 3)):
        write_jsonl(data / "emotions" / f"{split}.jsonl", ml_rows(n))
        lines = ["text,score", *(f'"{r["text"]}",{r["score"]}' for r in reg_rows(n))]
        (data / "rating").mkdir(parents=True, exist_ok=True)
        (data / "rating" / f"{split}.csv").write_text("\n".join(lines) + "\n")
    with open(tiny["tasks"]) as f:
        tasks = json.load(f)["tasks"]
    tasks += [
        {
            "name": "emotions",
            "type": "multi_label_classification",
            "data_files": {s: str(data / "emotions" / f"{s}.jsonl") for s in ("train", "validation", "test")},
            "label_column": "labels",
            "tune_threshold": True,
            "pos_weight": True,
        },
        {
            "name": "rating",
            "type": "regression",
            "data_files": {s: str(data / "rating" / f"{s}.csv") for s in ("train", "validation", "test")},
            "label_column": "score",
        },
    ]
    tiny["tasks"] = write_config(data / "tasks_targets.json", tasks)  # beside the task files its paths name
    out = folder / "model"
    args = cli_args(
        tiny, out, "--num_train_epochs", "3", "--do_train", "--do_eval", "--do_predict", "--save_strategy", "no"
    )
    assert run_multitask.main(args) == 0
    return {**tiny, "model": out}


# ------------------------------------------------------------------------------------------------------------- data
def spec_for(tmp_path, rows, name="t", type="multi_label_classification", fmt="jsonl", **options) -> TaskSpec:
    path = tmp_path / f"{name}.{fmt}"
    if fmt == "jsonl":
        write_jsonl(path, rows)
    else:
        path.write_text(rows)
    entry = {"name": name, "type": type, "data_files": {"train": str(path)}, "validation_fraction": 0.25, **options}
    return load_task_specs({"tasks": [entry]})[0]


def test_multi_label_data_from_lists_delimited_strings_and_class_labels(tmp_path, caplog):
    spec = spec_for(tmp_path, ml_rows(2), label_column="labels", pos_weight=True)
    with caplog.at_level("INFO"):
        data = load_task_data(spec)
    assert spec.labels == EMOTIONS and spec.labels_inferred  # sorted names of the train split
    assert "have no label" in caplog.text and "inferred 3 labels" in caplog.text
    train, rows = list(data["train"]["label"]), list(data["train"]["label"]) + list(data["validation"]["label"])
    assert sorted(map(tuple, rows)) == sorted(tuple(EMOTIONS.index(x) for x in labels) for _, labels in ROWS * 2)
    counts = [sum(i in ids for ids in train) for i in range(3)]  # of the train split only, not the carved validation
    assert spec.pos_weight_values == pytest.approx([(len(train) - c) / c if c else 1.0 for c in counts])
    assert spec.to_model_task()["pos_weight"] == spec.pos_weight_values

    csv = "text,tags\n" + "".join(f'"{t}",{"|".join(labels)}\n' for t, labels in ROWS * 2)  # an empty cell: no label
    spec = spec_for(tmp_path, csv, name="c", fmt="csv", label_column="tags", label_separator="|", labels=EMOTIONS)
    data = load_task_data(spec)
    assert sum(len(ids) for split in ("train", "validation") for ids in data[split]["label"]) == 8
    assert sum(not ids for split in ("train", "validation") for ids in data[split]["label"]) == 2

    feature = datasets.Features(
        {"text": datasets.Value("string"), "labels": datasets.List(datasets.ClassLabel(names=EMOTIONS))}
    )
    given = datasets.Dataset.from_dict({"text": ["a", "b"], "labels": [[0, 2], []]}, features=feature)
    spec = TaskSpec(name="m", type="multi_label_classification", label_column="labels")
    data = load_task_data(spec, data={"train": given, "validation": given})
    assert spec.labels == EMOTIONS and list(data["train"]["label"]) == [[0, 2], []]


@pytest.mark.parametrize(
    "rows, options, message",
    [
        ([{"text": "a", "labels": ["anger", "envy"]}], {}, r"t\.jsonl, line 1.*label 'envy' is not in the label set"),
        (
            [{"text": "a", "labels": "anger,joy"}],
            {},
            r"line 1.*are a string, not a list.*declare the task's label_separator",
        ),
        ([{"text": "a", "labels": None}], {}, r"line 1: missing labels"),
        ([{"text": "", "labels": ["joy"]}], {}, r"line 1: empty text"),
        ([{"text": "a", "labels": [1.5]}], {}, r"label 1\.5 in \[1\.5\] is not a label name"),
    ],
)
def test_bad_multi_label_rows_name_file_row_and_value(tmp_path, rows, options, message):
    spec = spec_for(tmp_path, rows + ml_rows(1), label_column="labels", labels=EMOTIONS, **options)
    with pytest.raises(TaskDataError, match=message):
        load_task_data(spec)


@pytest.mark.parametrize(
    "rows, message",
    [
        ([{"text": "a", "score": "high"}], r"t\.jsonl, line 1: score 'high' in column 'score' is not a number"),
        ([{"text": "a", "score": [1, 2]}], r"line 1: score \[1, 2\] .* is a list, not a number.*multi_label"),
        ([{"text": "a", "score": None}], r"line 1: score None in column 'score' is not a number"),
    ],
)
def test_bad_regression_rows_name_file_row_and_value(tmp_path, rows, message):
    spec = spec_for(tmp_path, rows + reg_rows(1), type="regression", label_column="score")
    with pytest.raises(TaskDataError, match=message):
        load_task_data(spec)


def test_regression_scores_are_standardised_with_the_train_split(tmp_path):
    spec = spec_for(tmp_path, reg_rows(4), type="regression", label_column="score", validation_fraction=None)
    spec.data_files["validation"] = spec.data_files["train"]
    load_task_data(spec)
    scores = [s for _, s in RATED]
    assert (spec.score_mean, spec.score_std) == pytest.approx((np.mean(scores), np.std(scores)))
    assert spec.to_model_task()["score_mean"] == pytest.approx(3.0)
    constant = spec_for(
        tmp_path, [{"text": f"t{i}", "score": 2} for i in range(6)], name="k", type="regression", label_column="score"
    )
    with pytest.raises(TaskDataError, match="scores are all 2.0; a regression task needs scores that vary"):
        load_task_data(constant)


def test_task_config_options_of_the_new_types_are_checked():
    base = {"name": "t", "data_files": {"train": "t.jsonl"}}
    with pytest.raises(ValueError, match="regression task predicts one number and takes no 'labels'"):
        load_task_specs([{**base, "type": "regression", "labels": ["a", "b"]}])
    with pytest.raises(ValueError, match="'threshold' must be a number between 0 and 1"):
        load_task_specs([{**base, "type": "multi_label_classification", "threshold": 1.5}])
    with pytest.raises(ValueError, match="unknown key 'label_separator'"):
        load_task_specs([{**base, "type": "sequence_classification", "label_separator": "|"}])
    spec = load_task_specs([{**base, "type": "multi_label_classification", "labels": ["only"], "threshold": 0.3}])[0]
    assert spec.to_model_task()["thresholds"] == [0.3]  # one label: a yes/no decision


# ---------------------------------------------------------------------------------------------------------- metrics
def test_multi_label_and_regression_metrics_by_hand():
    gold = np.array([[1, 0, 0], [0, 1, 1], [0, 0, 0]])
    logits = np.log(
        np.array([[0.9, 0.2, 0.1], [0.6, 0.7, 0.4], [0.1, 0.1, 0.1]])
        / (1 - np.array([[0.9, 0.2, 0.1], [0.6, 0.7, 0.4], [0.1, 0.1, 0.1]]))
    )
    m = multi_label_metrics(logits, gold, EMOTIONS)
    # predicted {0}, {0, 1}, {}: tp 2, fp 1, fn 1
    assert m["micro_f1"] == pytest.approx(2 / 3) and m["subset_accuracy"] == pytest.approx(2 / 3)
    assert m["jaccard"] == pytest.approx((1 + 1 / 3 + 1) / 3)  # an empty row predicted empty counts 1
    assert (m["anger_f1"], m["fear_f1"], m["joy_f1"]) == pytest.approx((2 / 3, 1.0, 0.0))
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1) / 3)
    assert multi_label_metrics(logits, gold, EMOTIONS, [0.5, 0.5, 0.35])["joy_f1"] == pytest.approx(1.0)
    assert tune_thresholds(logits, gold, [0.5, 0.5, 0.5]) == pytest.approx([0.65, 0.5, 0.4])
    r = regression_metrics([1.0, 2.0, 3.5], [1.0, 2.0, 3.0])
    assert r["spearman"] == pytest.approx(1.0) and r["rmse"] == pytest.approx(np.sqrt(0.25 / 3))


# ------------------------------------------------------------------------------------------- training, saving, loading
def test_the_command_line_trains_evaluates_and_predicts_both_types(tiny):
    out = tiny["model"]
    results = json.loads((out / "all_results.json").read_text())
    for key in (
        "eval_emotions_micro_f1",
        "eval_emotions_macro_f1",
        "eval_emotions_jaccard",
        "eval_emotions_joy_f1",
        "eval_rating_spearman",
        "eval_rating_pearson",
        "eval_rating_rmse",
        "predict_rating_spearman",
    ):
        assert key in results, sorted(results)
    config = json.loads((out / "config.json").read_text())
    tasks = {t["name"]: t for t in config["tasks"]}
    assert tasks["rating"]["score_mean"] == pytest.approx(3.0) and tasks["rating"]["score_std"] > 0
    assert len(tasks["emotions"]["pos_weight"]) == 3 and len(tasks["emotions"]["thresholds"]) == 3
    assert all(t in np.round(np.arange(0.05, 0.951, 0.05), 2) for t in tasks["emotions"]["thresholds"])  # tuned
    first = json.loads((out / "predictions_emotions.jsonl").read_text().splitlines()[0])
    assert set(first) >= {"text", "labels", "predictions", "scores"} and set(first["scores"]) == set(EMOTIONS)
    first = json.loads((out / "predictions_rating.jsonl").read_text().splitlines()[0])
    assert isinstance(first["prediction"], float) and isinstance(first["label"], float)
    card = (out / "README.md").read_text()
    assert "Multi-label Text Classification" in card and "Text Regression" in card and "**Micro F1**" in card


RELOAD = r"""
import json, sys, torch
from transformers import AutoModel, AutoTokenizer, pipeline
path, texts = sys.argv[1], json.loads(sys.argv[2])
model = AutoModel.from_pretrained(path, trust_remote_code=True).eval()
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
tokenizer = AutoTokenizer.from_pretrained(path)
with torch.no_grad():
    out = model(**tokenizer(texts, padding=True, return_tensors="pt"))
logits = {t: out.task_logits[t].tolist() for t in ("emotions", "rating")}
multi = pipeline("text-classification", model=path, trust_remote_code=True, top_k=None,
                 model_kwargs={"default_task": "emotions"})(texts[:1])[0]  # every label's sigmoid
rating = pipeline("text-classification", model=path, trust_remote_code=True, model_kwargs={"default_task": "rating"})
answers = pipeline(model=path, trust_remote_code=True)(texts, return_all_scores=True)
print("RESULT", json.dumps({"logits": logits, "multi": multi, "rating": rating(texts[0]), "answers": answers}))
"""


def test_a_saved_model_answers_the_same_in_a_fresh_process_through_every_pipeline(tiny, tmp_path):
    texts = ["i am so angry about this", "a great film"]
    model = MTSTModel.from_pretrained(tiny["model"]).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny["model"])
    with torch.no_grad():
        out = model(**tokenizer(texts, padding=True, return_tensors="pt"))
    env = {**ENV, "PYTHONPATH": "", "HF_HOME": str(tmp_path / "hf")}
    result = subprocess.run(
        [sys.executable, "-c", RELOAD, str(tiny["model"]), json.dumps(texts)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    got = json.loads(result.stdout.rsplit("RESULT ", 1)[1])
    for task in ("emotions", "rating"):
        torch.testing.assert_close(torch.tensor(got["logits"][task]), out.task_logits[task], atol=1e-5, rtol=0)
    probs = torch.sigmoid(out.task_logits["emotions"][0])
    assert {d["label"]: d["score"] for d in got["multi"]} == pytest.approx(
        dict(zip(EMOTIONS, probs.tolist())), abs=1e-5
    )
    assert got["rating"][0]["score"] == pytest.approx(float(out.task_logits["rating"][0, 0]), abs=1e-5)
    assert got["rating"][0]["score"] > 1.0  # on the data's scale (1 - 4.5), not standardised
    thresholds = model.config.tasks["emotions"]["thresholds"]
    for answer, row in zip(got["answers"], torch.sigmoid(out.task_logits["emotions"])):
        chosen = [e["label"] for e in answer["emotions"]["labels"]]
        assert sorted(chosen) == sorted(n for n, p, t in zip(EMOTIONS, row.tolist(), thresholds) if p >= t)
        assert set(answer["emotions"]["scores"]) == set(EMOTIONS) and set(answer["rating"]) == {"score"}


def test_mtst_predict_and_mtst_label_answer_both_types(tiny, tmp_path, capsys):
    # in-process entry points (main(argv) returns the exit code); their real processes are tested in test_predict.py
    # and test_bad_inputs.py
    assert predict_cli.main(["--model", str(tiny["model"]), "--format", "jsonl", "a great film"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert set(answer["emotions"]) == {"labels"} and isinstance(answer["rating"]["score"], float)
    assert predict_cli.main(["--model", str(tiny["model"]), "--format", "table", "a great film"]) == 0
    assert "rating" in capsys.readouterr().out

    (tmp_path / "in.txt").write_text("i am so angry\na great film\n")
    common = ["--model", str(tiny["model"]), "--input", str(tmp_path / "in.txt")]
    assert label_cli.main([*common, "--task", "emotions", "--output", str(tmp_path / "ml.jsonl")]) == 0
    rows = [json.loads(line) for line in (tmp_path / "ml.jsonl").read_text().splitlines()]
    assert all(
        isinstance(r["label"], list) and set(r["label"]) <= set(EMOTIONS) and 0.5 <= r["score"] <= 1 for r in rows
    )
    assert label_cli.main([*common, "--task", "rating", "--output", str(tmp_path / "reg.jsonl")]) == 0
    assert all(isinstance(json.loads(x)["label"], float) for x in (tmp_path / "reg.jsonl").read_text().splitlines())
    capsys.readouterr()
    refused = [*common, "--task", "rating", "--output", str(tmp_path / "r2.jsonl"), "--min_score", "0.5"]
    assert label_cli.main(refused) == 2
    error = error_paragraph(capsys.readouterr().err, "mtst-label: error: ")
    assert "the regression task 'rating' has no score" in error
    # the silver multi-label file trains a task as it is
    spec = load_task_specs(
        [
            {
                "name": "silver",
                "type": "multi_label_classification",
                "labels": EMOTIONS,
                "data_files": {"train": str(tmp_path / "ml.jsonl")},
                "validation_fraction": 0.5,
            }
        ]
    )[0]
    assert len(load_task_data(spec)["train"]) == 1


def test_grow_adds_a_multi_label_and_a_regression_task(tiny, tmp_path):
    with open(tiny["tasks"]) as f:
        entries = {e["name"]: e for e in json.load(f)["tasks"]}
    for entry in entries.values():  # absolute paths: these configs are written elsewhere
        entry["data_files"] = {s: os.path.join(tiny["data"], p) for s, p in entry["data_files"].items()}
    base = tmp_path / "base"
    args = cli_args({**tiny, "tasks": write_config(tmp_path / "base.json", [entries["topic"]])}, base)
    assert run_multitask.main([*args, "--num_train_epochs", "1", "--save_strategy", "no"]) == 0
    grown = {
        **tiny,
        "backbone": str(base),
        "tasks": write_config(tmp_path / "grow.json", [entries["emotions"], entries["rating"]]),
    }
    out = tmp_path / "grown"
    assert run_multitask.main([*cli_args(grown, out), "--num_train_epochs", "1", "--save_strategy", "no"]) == 0
    model = MTSTModel.from_pretrained(out)
    assert model.config.task_names == ["topic", "emotions", "rating"]
    assert model.heads["rating"].classifier.out_features == 1 and model.heads["emotions"].classifier.out_features == 3


def test_onnx_handler_and_app_answer_both_types(tiny, tmp_path):
    pytest.importorskip("onnxruntime")
    from mtst.inference import export_onnx, load_model

    model = MTSTModel.from_pretrained(tiny["model"]).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny["model"])
    export_onnx(model, str(tmp_path / "onnx"), tokenizer=tokenizer)
    onnx = load_model(str(tmp_path / "onnx"), backend="onnx")
    batch = tokenizer(["i am so angry", "a great film"], padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = model(**batch).task_logits
    got = onnx(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).task_logits
    for task in ("emotions", "rating"):
        torch.testing.assert_close(got[task], expected[task], atol=1e-4, rtol=0)

    sys.path.insert(0, str(tiny["model"]))
    try:
        from handler import EndpointHandler
    finally:
        sys.path.remove(str(tiny["model"]))
    answer = EndpointHandler(str(tiny["model"]))({"inputs": "a great film"})
    assert "labels" in answer["emotions"] and isinstance(answer["rating"]["score"], float)

    from transformers import pipeline

    import app

    values = dict(
        zip(
            app.head_tasks(model.config),
            app.predict(pipeline(model=str(tiny["model"]), trust_remote_code=True), "a great film"),
        )
    )
    assert set(values["emotions"]) == set(EMOTIONS) and isinstance(values["rating"], float)


def test_python_api_trains_raw_datasets_and_keeps_the_train_statistics(tmp_path):
    from conftest import save_tiny_backbone

    backbone = save_tiny_backbone(tmp_path / "bb", max_position_embeddings=64)
    tasks = {"emotions": {"type": "multi_label_classification", "labels": EMOTIONS}, "rating": {"type": "regression"}}
    model = MTSTModel.from_backbone(backbone, tasks=tasks)
    emo = datasets.Dataset.from_list(ml_rows(4)).rename_column("labels", "label")
    rating = datasets.Dataset.from_list(reg_rows(4)).rename_column("score", "label")
    args = MultiTaskTrainingArguments(
        output_dir=str(tmp_path / "out"),
        num_train_epochs=2,
        use_cpu=True,
        max_seq_length=32,
        per_device_train_batch_size=8,
        save_strategy="no",
        report_to="none",
        learning_rate=1e-3,
    )
    spec = TaskSpec(name="emotions", type="multi_label_classification", pos_weight=True)
    trainer = MultiTaskTrainer(
        model=model,
        args=args,
        train_dataset={"emotions": emo, "rating": rating},
        eval_dataset={"emotions": emo, "rating": rating},
        processing_class=AutoTokenizer.from_pretrained(backbone),
        task_specs=[spec],
    )
    trainer.train()
    assert model.config.tasks["rating"]["score_mean"] == pytest.approx(3.0)
    assert model.config.tasks["emotions"]["pos_weight"] == pytest.approx([1.0, 3.0, 3.0])  # anger 8 of 16 rows
    tuned = trainer.tune_thresholds(["emotions"])
    assert model.config.tasks["emotions"]["thresholds"] == tuned["emotions"]
    metrics = trainer.evaluate()
    assert {"eval_emotions_micro_f1", "eval_rating_spearman", "eval_average"} <= set(metrics)


def test_tune_threshold_without_validation_data_stops_before_training(tmp_path):
    from conftest import save_tiny_backbone

    from mtst.data.errors import TaskConfigError

    backbone = save_tiny_backbone(tmp_path / "bb", max_position_embeddings=64)
    model = MTSTModel.from_backbone(
        backbone, tasks={"emotions": {"type": "multi_label_classification", "labels": EMOTIONS}}
    )
    emo = datasets.Dataset.from_list(ml_rows(2)).rename_column("labels", "label")
    args = MultiTaskTrainingArguments(output_dir=str(tmp_path / "out"), use_cpu=True, report_to="none")
    spec = TaskSpec(name="emotions", type="multi_label_classification", tune_threshold=True)
    with pytest.raises(TaskConfigError, match=r"\['emotions'\] ask for tune_threshold.*pass their evaluation data"):
        MultiTaskTrainer(
            model=model,
            args=args,
            train_dataset={"emotions": emo},
            processing_class=AutoTokenizer.from_pretrained(backbone),
            task_specs=[spec],
        )


def test_distillation_soft_losses_of_the_new_types():
    from mtst.training.distill import soft_loss

    teacher = torch.tensor([[2.0, -1.0, 0.0]])
    student = torch.tensor([[0.5, 0.5, 0.5]])
    expected = torch.nn.functional.binary_cross_entropy_with_logits(student, torch.sigmoid(teacher))
    assert soft_loss({"type": "multi_label_classification"}, student, teacher, None) == pytest.approx(float(expected))
    assert soft_loss({"type": "multi_label_classification"}, teacher, teacher, None) < float(expected)
    spec = {"type": "regression", "score_std": 2.0}
    assert soft_loss(spec, torch.tensor([[3.0], [1.0]]), torch.tensor([[1.0], [1.0]]), None) == pytest.approx(0.5)
