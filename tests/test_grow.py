"""Growing a trained MTST (grow_mtst, run_multitask.py --model_name_or_path <MTST>): a third task added with
--freeze encoder leaves the first two tasks' logits unchanged to the bit; with rehearsal the old tasks' metrics
before and after training are in all_results.json; label mismatches and --reset_heads; the grown model still loads
through AutoModel (remote code), the standard pipelines and SentenceTransformer."""

import json
import os
import subprocess
import sys

import pytest
import torch
from reliability_helpers import ENV, cli_args, error_paragraph, make_tiny, write_config
from safetensors.torch import load_file
from trainer_helpers import topic_rows, write_jsonl

from mtst.cli import train as run_multitask
from mtst.remote.modeling_mtst import MTSTModel

TEXTS = ["john smith met mary in paris", "football match today", "the bank profit report", "tokyo robot chip"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny MTST (with a projection, which sentence heads read) trained on topic + ner, and a third task's data
    (polarity: sports or not)."""
    folder = tmp_path_factory.mktemp("grow")
    tiny = make_tiny(folder)
    out = folder / "base"
    args = cli_args(tiny, out, "--num_train_epochs", "1", "--save_strategy", "no", "--embedding_dim", "16")
    assert run_multitask.main(args) == 0
    for split, n, seed in (("train", 40, 5), ("validation", 12, 15)):
        rows = [
            {"text": r["text"], "label": "sports" if r["label"] == "Sports" else "other"} for r in topic_rows(n, seed)
        ]
        write_jsonl(folder / "data" / "polarity" / f"{split}.jsonl", rows)
    return {**tiny, "base": out}


def task_entries(tiny, *names) -> list[dict]:
    with open(tiny["tasks"]) as f:
        entries = {e["name"]: e for e in json.load(f)["tasks"]}
    data = tiny["data"]
    entries["polarity"] = {
        "name": "polarity",
        "type": "sequence_classification",
        "data_files": {s: f"polarity/{s}.jsonl" for s in ("train", "validation")},
    }
    chosen = [dict(entries[n]) for n in names]
    for entry in chosen:  # absolute paths: the configs are written elsewhere
        entry["data_files"] = {s: os.path.join(data, p) for s, p in entry["data_files"].items()}
    return chosen


def outputs(path) -> dict:
    from transformers import AutoTokenizer

    model = MTSTModel.from_pretrained(path).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    with torch.no_grad():
        out = model(**tokenizer(TEXTS, padding=True, return_tensors="pt"))
    return {**out.task_logits, "embedding": out.sentence_embedding}


def grow(trained, tmp_path, names, *extra, output="grown"):
    config = write_config(tmp_path / "new.json", task_entries(trained, *names))
    out = tmp_path / output
    args = cli_args(trained, out, "--model_name_or_path", str(trained["base"]), "--tasks_config", config)
    return run_multitask.main([*args, "--num_train_epochs", "1", "--save_strategy", "no", *extra]), out


def test_add_a_task_with_frozen_encoder_keeps_old_outputs_bit_identical(trained, tmp_path, capsys):
    # topic continues (data for evaluation only), ner is left out (kept), polarity is new
    code, out = grow(trained, tmp_path, ["topic", "polarity"], "--freeze", "encoder", "--embedding_dim", "8")
    printed = capsys.readouterr().out
    assert code == 0
    before, after = outputs(trained["base"]), outputs(out)
    assert set(after) == {"topic", "ner", "polarity", "embedding"}
    for name in ("topic", "ner", "embedding"):
        assert torch.equal(before[name], after[name]), name
    old, new = load_file(trained["base"] / "model.safetensors"), load_file(out / "model.safetensors")
    assert all(torch.equal(old[k], new[k]) for k in old), [k for k in old if not torch.equal(old[k], new[k])]
    config = json.loads((out / "config.json").read_text())
    assert [t["name"] for t in config["tasks"]] == ["topic", "ner", "polarity"]
    assert config["embedding_dim"] == 16  # the saved model's settings win over the backbone options
    results = json.loads((out / "all_results.json").read_text())
    assert results["eval_before_topic_accuracy"] == results["eval_topic_accuracy"]
    assert "eval_polarity_accuracy" in results and "eval_ner_f1" not in results
    assert "kept, not trained: ner" in printed and "continued (frozen): topic" in printed
    card = (out / "README.md").read_text()
    assert "(kept, not trained)" in card and "`ner`" in card
    # the folder as a Hub repo would receive it: no checkpoints or training state, the repo id in the card
    from mtst.hub import card as modelcard_mtst

    files = modelcard_mtst.export_for_hub(out, tmp_path / "hub", repo_id="you/grown")
    assert {"config.json", "model.safetensors", "modeling_mtst.py", "README.md", "tokenizer.json"} <= set(files)
    assert "training_args.bin" not in files and "all_results.json" not in files
    assert "you/grown" in (tmp_path / "hub" / "README.md").read_text()
    assert torch.equal(outputs(tmp_path / "hub")["polarity"], after["polarity"])


def test_rehearsal_reports_old_task_metrics_before_and_after(trained, tmp_path):
    code, out = grow(trained, tmp_path, ["topic", "ner", "polarity"], "--sampling_strategy", "round_robin")
    assert code == 0
    results = json.loads((out / "all_results.json").read_text())
    for key in ("topic_accuracy", "ner_f1", "ner_precision", "topic_macro_f1"):
        assert isinstance(results[f"eval_before_{key}"], float) and isinstance(results[f"eval_{key}"], float), key
    assert "eval_before_polarity_accuracy" not in results and "eval_polarity_accuracy" in results
    before = json.loads((out / "eval_before_results.json").read_text())
    assert before["eval_before_topic_accuracy"] == results["eval_before_topic_accuracy"]
    old, new = load_file(trained["base"] / "model.safetensors"), load_file(out / "model.safetensors")
    changed = [k for k in old if not torch.equal(old[k], new[k])]  # full fine-tuning: encoder and old heads moved
    assert any(k.startswith("encoder.") for k in changed) and any(k.startswith("heads.ner.") for k in changed)
    # the grown folder loads through remote code, the standard pipelines and sentence-transformers
    code = f"""
import torch
from transformers import AutoModel, AutoTokenizer, pipeline
from sentence_transformers import SentenceTransformer
path = {str(out)!r}
model = AutoModel.from_pretrained(path, trust_remote_code=True)
assert type(model).__name__ == "MTSTModel" and model.config.task_names == ["topic", "ner", "polarity"]
tok = AutoTokenizer.from_pretrained(path)
assert pipeline("text-classification", model=path, trust_remote_code=True,
                model_kwargs={{"default_task": "polarity"}})("football")[0]["label"] in ("sports", "other")
assert isinstance(pipeline("token-classification", model=path, trust_remote_code=True)("john smith"), list)
answer = pipeline(model=path, trust_remote_code=True)("john smith in paris")
assert set(answer) == {{"topic", "ner", "polarity"}}, answer
st = SentenceTransformer(path, trust_remote_code=True, device="cpu").encode(["a text"], convert_to_tensor=True)
own = model.encode(["a text"], tokenizer=tok)
assert torch.allclose(st.cpu(), own, atol=1e-5)
print("ok")
"""
    loaded = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={**ENV, "PYTHONPATH": ""},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert loaded.returncode == 0 and "ok" in loaded.stdout, loaded.stderr[-3000:]


def test_changed_labels_are_an_error_unless_the_head_is_reset(trained, tmp_path, capsys):
    entries = task_entries(trained, "topic", "polarity")
    saved = list(entries[0]["labels"])
    entries[0]["labels"] = saved[::-1]
    config = write_config(tmp_path / "changed.json", entries)
    base = cli_args(trained, tmp_path / "o", "--model_name_or_path", str(trained["base"]), "--tasks_config", config)
    args = [*base, "--num_train_epochs", "1", "--save_strategy", "no"]
    assert run_multitask.main(args) == 2
    message = error_paragraph(capsys.readouterr().err)
    assert "task 'topic'" in message and str(saved) in message and str(saved[::-1]) in message
    assert "--reset_heads topic" in message
    assert not (tmp_path / "o").exists()

    assert run_multitask.main([*args, "--reset_heads", "topic"]) == 0
    config = json.loads((tmp_path / "o" / "config.json").read_text())
    assert [t["name"] for t in config["tasks"]] == ["topic", "ner", "polarity"]
    assert config["tasks"][0]["labels"] == saved[::-1]
    results = json.loads((tmp_path / "o" / "all_results.json").read_text())
    assert "eval_before_topic_accuracy" not in results  # a reset head has no "before"

    assert run_multitask.main([*base, "--reset_heads", "sentiment", "--output_dir", str(tmp_path / "p")]) == 2
    assert "--reset_heads names 'sentiment'" in error_paragraph(capsys.readouterr().err)


def test_frozen_growth_with_nothing_new_is_an_error(trained, tmp_path, capsys):
    code, _ = grow(trained, tmp_path, ["topic"], "--freeze", "encoder")
    assert code == 2
    assert "Nothing to train" in error_paragraph(capsys.readouterr().err)


def test_continued_task_without_labels_uses_the_saved_order(trained, tmp_path):
    from mtst.data.tasks import load_task_specs
    from mtst.training.grow import plan_growth, saved_mtst_config, use_saved_labels

    entries = task_entries(trained, "topic", "polarity")
    del entries[0]["labels"]
    specs = load_task_specs(write_config(tmp_path / "t.json", entries))
    config = saved_mtst_config(str(trained["base"]))
    use_saved_labels(specs, config)
    assert specs[0].labels == config.task_labels("topic") and specs[1].labels is None
    specs[1].labels = ["other", "sports"]
    plan = plan_growth(config, specs, "base")
    assert (plan.continued, plan.new, plan.kept, plan.trained) == (
        ["topic"],
        ["polarity"],
        ["ner"],
        ["topic", "polarity"],
    )
    assert saved_mtst_config(trained["backbone"]) is None


def test_grow_adds_an_embedding_task_and_preserves_the_grown_models_embeddings(trained, tmp_path):
    """A similarity task added to a trained model: it gets no head; the embeddings that preservation keeps are the
    loaded model's (not the backbone's), computed for the head task's training texts."""
    from transformers import AutoTokenizer

    pairs = [("the match was won", "the team won the game", 4.5), ("shares fell", "a robot chip", 0.5)] * 6
    rows = [{"a": a, "b": b, "score": s} for a, b, s in pairs]
    write_jsonl(tmp_path / "sts.jsonl", rows)
    sts = {"name": "sts", "type": "sentence_similarity", "text_column": "a", "text_pair_column": "b"}
    sts.update(label_column="score", score_range=[0, 5], data_files={"train": str(tmp_path / "sts.jsonl")})
    config = write_config(tmp_path / "new.json", [*task_entries(trained, "topic"), sts])
    out = tmp_path / "grown"
    args = cli_args(trained, out, "--model_name_or_path", str(trained["base"]), "--tasks_config", config)
    one_stage = ["--embedding_tasks_first", "false"]  # the loaded model's embeddings are the targets
    assert run_multitask.main([*args, "--num_train_epochs", "1", "--save_strategy", "no", *one_stage]) == 0
    grown = json.loads((out / "config.json").read_text())
    assert [(t["name"], t["type"]) for t in grown["tasks"]][-1] == ("sts", "sentence_similarity")
    assert not any(k.startswith("heads.sts.") for k in load_file(out / "model.safetensors"))
    assert "eval_sts_spearman" in json.loads((out / "all_results.json").read_text())
    teacher = load_file(out / "teacher_embeddings.safetensors")
    assert set(teacher) == {"topic"}  # the head task's texts only; the embedding task trains the embedding
    with open(task_entries(trained, "topic")[0]["data_files"]["train"]) as f:
        texts = [json.loads(line)["text"] for line in f]
    base = MTSTModel.from_pretrained(trained["base"]).eval()
    expected = base.encode(texts, tokenizer=AutoTokenizer.from_pretrained(trained["base"]))
    torch.testing.assert_close(teacher["topic"], expected, atol=1e-5, rtol=0)  # padded rows too, in file order
    assert "preserved" in (out / "README.md").read_text()

    # grown again with the head task only: the embedding task is kept (it has no head to freeze), and its
    # embedding is the one preservation starts from
    config = write_config(tmp_path / "topic.json", task_entries(trained, "topic"))
    again = tmp_path / "again"
    args = cli_args(trained, again, "--model_name_or_path", str(out), "--tasks_config", config)
    assert run_multitask.main([*args, "--num_train_epochs", "1", "--save_strategy", "no"]) == 0
    assert [t["name"] for t in json.loads((again / "config.json").read_text())["tasks"]] == ["topic", "ner", "sts"]
    assert "`sts`" in (again / "README.md").read_text().split("Kept, not trained:")[1].splitlines()[0]


def test_embedding_tasks_first_trains_the_embedding_task_then_keeps_its_embedding(
    trained, tmp_path, monkeypatch, caplog
):
    """--embedding_tasks_first (the default): the similarity task trains alone first; the head task then trains with
    preservation toward the model that stage left (its targets are that model's embeddings, not the backbone's), with
    the adapter, and the similarity task trains again next to it (--rehearse_embedding_tasks, the default; false: the
    head task alone); the results and the card say so, and the stage leaves no folder behind. Set false: one stage."""
    pairs = [("the match was won", "the team won the game", 4.5), ("shares fell", "a robot chip", 0.5)] * 6
    write_jsonl(tmp_path / "sts.jsonl", [{"a": a, "b": b, "score": s} for a, b, s in pairs])
    sts = {"name": "sts", "type": "sentence_similarity", "text_column": "a", "text_pair_column": "b"}
    sts.update(label_column="score", score_range=[0, 5], data_files={"train": str(tmp_path / "sts.jsonl")})
    topic = task_entries(trained, "topic")
    config = write_config(tmp_path / "both.json", [*topic, sts])
    with open(topic[0]["data_files"]["train"]) as f:
        texts = [json.loads(line)["text"] for line in f]
    after_stage = {}
    original = run_multitask.train_embedding_stage

    def stage(model, tokenizer, *args):
        metrics = original(model, tokenizer, *args)
        assert model.embedding_adapter is None  # the stage trains the encoder, no adapter
        after_stage["embeddings"] = model.encode(texts, tokenizer=tokenizer)
        return metrics

    monkeypatch.setattr(run_multitask, "train_embedding_stage", stage)

    one_stage_warnings = {}

    def run(name, *extra):
        out = tmp_path / name
        args = cli_args(trained, out, "--tasks_config", config, "--num_train_epochs", "2", "--save_strategy", "no")
        caplog.clear()
        with caplog.at_level("WARNING", logger="mtst.training.embeddings"):
            assert run_multitask.main([*args, *extra]) == 0
        one_stage_warnings[name] = [r for r in caplog.records if "in one stage" in r.getMessage()]
        return out, load_file(out / "teacher_embeddings.safetensors")["topic"]

    staged, targets = run("staged")  # the default
    torch.testing.assert_close(targets, after_stage["embeddings"], atol=1e-5, rtol=0)
    results = json.loads((staged / "all_results.json").read_text())
    assert results["embedding_stage_train_runtime"] > 0 and "eval_sts_spearman" in results
    assert not (staged / "embedding_stage").exists()
    assert json.loads((staged / "config.json").read_text())["embedding_adapter"] is True
    # the second stage rehearses the similarity task (the pairs less those held out for validation)
    assert len(texts) < results["train_samples"] <= len(texts) + len(pairs)
    card = (staged / "README.md").read_text()
    assert "`sts` trained first, alone (`embedding_tasks_first`), then again next to the head tasks" in card

    after_stage.clear()
    heads_only, heads_only_targets = run("heads_only", "--rehearse_embedding_tasks", "false")
    torch.testing.assert_close(heads_only_targets, after_stage["embeddings"], atol=1e-5, rtol=0)
    assert json.loads((heads_only / "all_results.json").read_text())["train_samples"] == len(texts)
    card = (heads_only / "README.md").read_text()
    assert "`sts` trained first, alone (`embedding_tasks_first`), and" in card

    after_stage.clear()
    one, one_targets = run("one", "--embedding_tasks_first", "false")
    assert after_stage == {}  # one stage
    assert MTSTModel.from_pretrained(one).config.task_names == MTSTModel.from_pretrained(staged).config.task_names
    assert (targets - one_targets).abs().max() > 1e-3  # staged targets are the trained embedding's, not the backbone's
    assert "trained first" not in (one / "README.md").read_text()
    # the one-stage warning is for one stage only (the rehearsed second stage trains the same tasks after the first)
    assert one_stage_warnings == {"staged": [], "heads_only": [], "one": one_stage_warnings["one"]}
    assert len(one_stage_warnings["one"]) == 1
