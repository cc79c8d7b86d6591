"""Sentence embeddings that can be trained and are kept: sentence_similarity and retrieval tasks (no head, losses from
the embeddings, sentence-transformers' CoSENT / cosine MSE / multiple-negatives ranking), and embedding preservation
(the starting model's embeddings of the training texts, computed once, kept close while heads train)."""

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
from conftest import save_tiny_backbone
from safetensors.torch import load_file
from transformers import AutoTokenizer

from mtst import MTSTConfig, MTSTConfigError, MTSTModel, MultiTaskTrainer, MultiTaskTrainingArguments, TaskSpec
from mtst.data.errors import TaskConfigError, TaskDataError
from mtst.data.loading import load_task_data
from mtst.data.tasks import load_task_specs
from mtst.training.arguments import MultiTaskTrainingError
from mtst.training.embeddings import TEACHER_FILE

ROOT = Path(__file__).resolve().parent.parent
TOPICS = ["Sports", "Business"]
PAIRS = [
    ("a cat sits on the mat", "a cat is sitting on a mat", 4.8),
    ("the striker scored a goal", "shares of the bank fell", 0.2),
    ("the sun is shining today", "it is a sunny day", 4.0),
    ("rain falls on the city", "the market closed higher", 0.5),
]


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    return save_tiny_backbone(tmp_path_factory.mktemp("backbone") / "bb", max_position_embeddings=64)


def tiny_tasks(backbone, **extra):
    tasks = {
        "topic": {"type": "sequence_classification", "labels": TOPICS},
        "sts": {"type": "sentence_similarity", "score_range": [0, 5], **extra},
        "qa": {"type": "retrieval"},
    }
    torch.manual_seed(0)
    return MTSTModel.from_backbone(backbone, tasks=tasks)


def data(n: int = 8):
    topic = datasets.Dataset.from_dict({"text": ["the match was won", "shares fell today"] * n, "label": TOPICS * n})
    sts = datasets.Dataset.from_dict(
        {"s1": [a for a, _, _ in PAIRS] * n, "s2": [b for _, b, _ in PAIRS] * n, "score": [s for *_, s in PAIRS] * n}
    )
    qa = datasets.Dataset.from_dict({"text": [f"question {i} about item {i}" for i in range(4 * n)]})
    qa = qa.add_column("text_pair", [f"the answer on item {i}" for i in range(4 * n)])
    return {"topic": topic, "sts": sts, "qa": qa}


STS_COLUMNS = {"text_column": "s1", "text_pair_column": "s2", "label_column": "score"}
STS_SPEC = TaskSpec(name="sts", type="sentence_similarity", **STS_COLUMNS)


def args(tmp_path, **kwargs):
    defaults = dict(num_train_epochs=2, use_cpu=True, max_seq_length=32, per_device_train_batch_size=8)
    defaults.update(save_strategy="no", logging_steps=2, disable_tqdm=True, learning_rate=1e-3)
    defaults.update(kwargs)
    return MultiTaskTrainingArguments(output_dir=str(tmp_path / "out"), **defaults)


def test_embedding_task_entries_follow_the_model_configs_rules():
    tasks = MTSTConfig(tasks={"sts": {"type": "sentence_similarity"}, "qa": {"type": "retrieval"}}).tasks
    assert tasks["sts"] == {"type": "sentence_similarity", "loss": "cosent", "score_range": None, "loss_weight": 1.0}
    assert tasks["qa"]["loss"] == "multiple_negatives_ranking"
    with pytest.raises(MTSTConfigError, match="do not apply to a sentence_similarity task"):
        MTSTConfig(tasks={"sts": {"type": "sentence_similarity", "labels": ["a", "b"]}})
    with pytest.raises(MTSTConfigError, match="unknown loss 'triplet'"):
        MTSTConfig(tasks={"sts": {"type": "sentence_similarity", "loss": "triplet"}})
    with pytest.raises(MTSTConfigError, match="score_range"):
        MTSTConfig(tasks={"sts": {"type": "sentence_similarity", "score_range": [5, 0]}})
    with pytest.raises(TaskConfigError, match="needs 'text_pair_column'"):
        load_task_specs([{"name": "qa", "type": "retrieval", "data_files": {"train": "a.jsonl"}}])


def test_bad_pair_data_names_the_row_and_what_is_wrong():
    rows = [{**row, "score": str(row["score"])} for row in data(1)["sts"].to_list()]  # scores as a CSV gives them
    rows[1]["score"], rows[2]["score"], rows[3]["s2"] = "high", "7.5", "  "
    spec = TaskSpec(name="sts", type="sentence_similarity", score_range=[0, 5], **STS_COLUMNS)
    with pytest.raises(TaskDataError) as err:
        load_task_data(spec, data={"train": datasets.Dataset.from_list(rows), "validation": data(1)["sts"]})
    message = str(err.value)
    assert "row 2: score 'high' in column 'score' is not a number" in message, message
    assert "row 3: score 7.5 is outside the score range [0, 5]" in message and "row 4: empty text" in message
    no_column = datasets.Dataset.from_list([{k: v for k, v in r.items() if k != "s2"} for r in rows])
    with pytest.raises(TaskDataError, match="has no column 's2'"):
        load_task_data(spec, data=no_column)


def test_similarity_and_retrieval_tasks_train_with_the_heads_and_report_their_metrics(backbone, tmp_path):
    model = tiny_tasks(backbone)
    trainer = MultiTaskTrainer(
        model=model,
        args=args(tmp_path),
        train_dataset=data(),
        eval_dataset=data(2),
        processing_class=AutoTokenizer.from_pretrained(backbone),
        task_specs=[STS_SPEC],
    )
    before = trainer.evaluate()
    trainer.train()
    after = trainer.evaluate()
    for key in ("eval_sts_spearman", "eval_sts_pearson", "eval_qa_mrr_at_10", "eval_qa_recall_at_1", "eval_average"):
        assert key in after, sorted(after)
    qa = [log["loss_qa"] for log in trainer.state.log_history if "loss_qa" in log]
    sts = [log["loss_sts"] for log in trainer.state.log_history if "loss_sts" in log]
    assert qa[-1] < qa[0] and sts[-1] < sts[0], trainer.state.log_history  # their losses trained the embedding
    assert after["eval_qa_mrr_at_10"] >= before["eval_qa_mrr_at_10"]
    assert model.config.tasks["sts"]["score_range"] == [0.0, 5.0] and "sts" not in model.heads


def test_embedding_preservation_keeps_the_embeddings_near_the_starting_model(backbone, tmp_path):
    """Heads trained hard (high learning rate): with preservation the sentence embeddings stay much closer to the
    starting model's than without it; the starting embeddings are computed once and kept in the output folder."""
    tokenizer = AutoTokenizer.from_pretrained(backbone)
    texts = ["the match was won", "shares fell today", "a new phone was released"]

    def trained(weight):
        model = MTSTModel.from_backbone(
            backbone, tasks={"topic": {"type": "sequence_classification", "labels": TOPICS}}
        )
        start = model.encode(texts, tokenizer=tokenizer)
        out = tmp_path / f"w{weight}"
        trainer = MultiTaskTrainer(
            model=model,
            args=args(out, embedding_preservation=weight, learning_rate=3e-3, num_train_epochs=4),
            train_dataset={"topic": data()["topic"]},
            processing_class=tokenizer,
        )
        trainer.train()
        moved = torch.nn.functional.cosine_similarity(model.encode(texts, tokenizer=tokenizer), start).mean()
        return float(moved), trainer, out / "out"

    free, _, free_dir = trained(0.0)
    kept, trainer, kept_dir = trained(10.0)
    assert kept > free + 0.05 and kept > 0.9, (kept, free)
    assert (kept_dir / TEACHER_FILE).is_file() and not (free_dir / TEACHER_FILE).exists()
    assert any("loss_embedding_preservation" in log for log in trainer.state.log_history)


def test_a_task_at_preservation_weight_0_trains_its_texts_free(backbone, tmp_path):
    """`embedding_preservation_weights`: a head task at 0 gets no starting embeddings and no preservation term (a
    run whose only head task is at 0 trains exactly as one without preservation, and gets no adapter); the other
    tasks keep the global weight. Bad weights are refused before training, naming the option."""
    tokenizer = AutoTokenizer.from_pretrained(backbone)
    texts = ["the match was won", "shares fell today", "a new phone was released"]
    tone = datasets.Dataset.from_dict({"text": ["what a great day", "this is awful"] * 8, "label": ["up", "down"] * 8})

    def trained(name, tasks, **options):
        torch.manual_seed(0)
        model = MTSTModel.from_backbone(
            backbone, tasks={t: {"type": "sequence_classification"} | spec for t, spec in tasks.items()}
        )
        start = model.encode(texts, tokenizer=tokenizer)
        trainer = MultiTaskTrainer(
            model=model,
            args=args(tmp_path / name, learning_rate=3e-3, num_train_epochs=1, seed=0, **options),
            train_dataset={"topic": data()["topic"], "tone": tone} if "tone" in tasks else {"topic": data()["topic"]},
            processing_class=tokenizer,
        )
        trainer.train()
        moved = torch.nn.functional.cosine_similarity(model.encode(texts, tokenizer=tokenizer), start).mean()
        return float(moved), model, trainer, tmp_path / name / "out"

    topic = {"topic": {"labels": TOPICS}}
    free, _, _, _ = trained("off", topic, embedding_preservation=0.0)
    zero, model, trainer, out = trained(
        "zero", topic, embedding_preservation=10.0, embedding_preservation_weights="topic=0"
    )
    assert zero == pytest.approx(free, abs=1e-6) and model.embedding_adapter is None
    assert not (out / TEACHER_FILE).exists() and trainer.preservation_weights == {"topic": 0.0}
    assert not any("loss_embedding_preservation" in log for log in trainer.state.log_history)

    both = {**topic, "tone": {"labels": ["up", "down"]}}
    _, model, trainer, out = trained("one", both, embedding_preservation=10.0, embedding_preservation_weights="tone=0")
    assert trainer.preservation_weights == {"topic": 10.0, "tone": 0.0} and model.embedding_adapter is not None
    assert set(load_file(out / TEACHER_FILE)) == {"topic"}  # the starting embeddings of the preserved task only
    assert any("loss_embedding_preservation" in log for log in trainer.state.log_history)

    model = tiny_tasks(backbone)
    for options, message in (
        ({"embedding_preservation_weights": "nre=0"}, r"unknown task\(s\) \['nre'\]"),
        ({"embedding_preservation_weights": "sts=1"}, "names the embedding task"),
        ({"embedding_preservation_weights": "topic=-1"}, "must be numbers >= 0"),
        (
            {"embedding_preservation_weights": "topic=1", "embedding_preservation": 0.0},
            "with embedding preservation off",
        ),
    ):
        with pytest.raises(MultiTaskTrainingError, match=message):
            MultiTaskTrainer(
                model=model,
                args=args(tmp_path, **options),
                train_dataset={"topic": data()["topic"]},
                processing_class=tokenizer,
            )


def test_the_embedding_adapter_starts_as_the_identity_and_preservation_trains_it(backbone, tmp_path):
    """`add_embedding_adapter` changes no output; training with preservation (the default) gives the model an adapter
    that training moves, and the heads keep reading the vector before it; without preservation, or with
    `embedding_preservation_adapter=False`, the model gets none. Configs saved before the option load without one."""
    tokenizer = AutoTokenizer.from_pretrained(backbone)
    texts = ["the match was won", "shares fell today", "a new phone was released"]
    model = tiny_tasks(backbone).eval()
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    before, embedded = model(**batch, task="topic"), model.encode(texts, tokenizer=tokenizer)
    model.add_embedding_adapter()
    after = model(**batch, task="topic")
    assert model.config.embedding_adapter is True and model.config.to_dict()["embedding_adapter"] is True
    torch.testing.assert_close(after.sentence_embedding, before.sentence_embedding, atol=0, rtol=0)
    torch.testing.assert_close(model.encode(texts, tokenizer=tokenizer), embedded, atol=0, rtol=0)
    with torch.no_grad():
        model.embedding_adapter.weight.normal_(0, 0.5)
    moved = model(**batch, task="topic")
    torch.testing.assert_close(moved.logits, before.logits, atol=0, rtol=0)  # heads read the vector before it
    assert not torch.allclose(moved.sentence_embedding, before.sentence_embedding)
    old = {k: v for k, v in model.config.to_dict().items() if k != "embedding_adapter"}
    assert MTSTModel(MTSTConfig(**old)).embedding_adapter is None

    def trained(**options):
        model = MTSTModel.from_backbone(
            backbone, tasks={"topic": {"type": "sequence_classification", "labels": TOPICS}}
        )
        trainer = MultiTaskTrainer(
            model=model,
            args=args(tmp_path / str(len(options)), **options),
            train_dataset={"topic": data()["topic"]},
            processing_class=tokenizer,
        )
        trainer.train()
        return model

    adapted = trained()
    assert adapted.config.embedding_adapter and adapted.embedding_adapter.weight.abs().max() > 0
    assert trained(embedding_preservation_adapter=False).embedding_adapter is None
    assert trained(embedding_preservation=0.0, embedding_preservation_adapter=True).embedding_adapter is None


def test_the_preservation_weight_is_shared_by_the_head_tasks_a_run_trains(backbone, tmp_path, caplog):
    """`embedding_preservation_shared` (the default): with k head tasks kept, each task's batches carry weight / k,
    so a run of two head tasks at 1 trains exactly as one at 0.5 without sharing; tasks at 0, embedding tasks and
    tasks the run does not train do not count; the log says how the weight was shared."""
    tokenizer = AutoTokenizer.from_pretrained(backbone)
    tone = datasets.Dataset.from_dict({"text": ["what a great day", "this is awful"] * 8, "label": ["up", "down"] * 8})
    tasks = {
        "topic": {"type": "sequence_classification", "labels": TOPICS},
        "tone": {"type": "sequence_classification", "labels": ["up", "down"]},
        "sts": {"type": "sentence_similarity", "score_range": [0, 5]},
    }

    def trainer(name, train=("topic", "tone"), **options):
        torch.manual_seed(0)
        model = MTSTModel.from_backbone(backbone, tasks=tasks)
        sts = data()["sts"].rename_columns({"s1": "text", "s2": "text_pair", "score": "label"})
        train_sets = {"topic": data()["topic"], "tone": tone, "sts": sts}
        return MultiTaskTrainer(
            model=model,
            args=args(tmp_path / name, learning_rate=3e-3, num_train_epochs=1, seed=0, **options),
            train_dataset={t: train_sets[t] for t in train},
            processing_class=tokenizer,
        )

    def trained(name, **options):
        run = trainer(name, **options)
        with caplog.at_level("INFO", logger="mtst.training.embeddings"):
            run.train()
        return run, torch.cat([p.detach().flatten() for p in run.model.parameters()])

    caplog.clear()
    shared, shared_weights = trained("shared", embedding_preservation=1.0)
    assert shared.preservation_weights == {"topic": 0.5, "tone": 0.5}
    assert any("weight 1, shared by the 2 head tasks it keeps" in r.getMessage() for r in caplog.records)
    half, half_weights = trained("half", embedding_preservation=0.5, embedding_preservation_shared=False)
    assert half.preservation_weights == {"topic": 0.5, "tone": 0.5}
    assert torch.equal(shared_weights, half_weights)
    full, full_weights = trained("full", embedding_preservation=1.0, embedding_preservation_shared=False)
    assert full.preservation_weights == {"topic": 1.0, "tone": 1.0}
    assert not torch.allclose(shared_weights, full_weights)

    # a task at 0 is not kept, so it does not share: the other keeps the whole weight
    assert trainer("zero", embedding_preservation_weights="tone=0").preservation_weights == {"topic": 1.0, "tone": 0}
    # an embedding task and a task the run does not train (a grown model's kept task) do not count
    assert trainer("sts", train=("topic", "sts")).preservation_weights == {"topic": 1.0}
    assert trainer("three", train=("topic", "tone", "sts")).preservation_weights == {"topic": 0.5, "tone": 0.5}


def test_an_embedding_task_next_to_heads_with_preservation_is_warned_about(backbone, tmp_path, caplog):
    """The measured case where preservation makes a jointly trained embedding task worse than alone is logged, naming
    the embedding tasks, with or without the adapter; a run of head tasks only, or without preservation, is not."""
    from mtst.training.embeddings import attach_embedding_adapter

    def warnings(model, **options):
        caplog.clear()
        with caplog.at_level("WARNING", logger="mtst.training.embeddings"):
            attach_embedding_adapter(model, args(tmp_path, **options))
        return [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]

    joint = warnings(tiny_tasks(backbone))
    assert len(joint) == 1 and "sts, qa" in joint[0] and "three-task" in joint[0]
    heads_only = MTSTModel.from_backbone(
        backbone, tasks={"topic": {"type": "sequence_classification", "labels": TOPICS}}
    )
    assert warnings(heads_only) == []
    assert len(warnings(tiny_tasks(backbone), embedding_preservation_adapter=False)) == 1
    assert warnings(tiny_tasks(backbone), embedding_preservation=0.0) == []
    # a grown model that keeps its embedding tasks without training them (the staged recipe) is not warned about
    caplog.clear()
    with caplog.at_level("WARNING", logger="mtst.training.embeddings"):
        attach_embedding_adapter(tiny_tasks(backbone), args(tmp_path), trained=["topic"])
    assert [r for r in caplog.records if r.levelname == "WARNING"] == []
    # nor is a trainer made to evaluate or predict (no training data): it trains nothing, so it adds no adapter
    model = tiny_tasks(backbone)
    caplog.clear()
    with caplog.at_level("WARNING", logger="mtst.training.embeddings"):
        MultiTaskTrainer(model=model, args=args(tmp_path), processing_class=AutoTokenizer.from_pretrained(backbone))
    embedding_warnings = [r for r in caplog.records if r.name == "mtst.training.embeddings" and r.levelno >= 30]
    assert embedding_warnings == [] and model.embedding_adapter is None


def test_the_pipeline_answers_an_embedding_task_with_the_embedding(backbone, tmp_path):
    """An embedding task named in `tasks` answers through the embedding; the heads answer as before."""
    from transformers import pipeline

    model = tiny_tasks(backbone).eval()
    model.save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(backbone).save_pretrained(tmp_path)
    pipe = pipeline("multitask", model=str(tmp_path), trust_remote_code=True, device="cpu")
    text = "the striker scored a goal"
    every = pipe(text)
    assert set(every) == {"topic"}
    asked = pipe(text, tasks=["sts"])
    assert set(asked) == {"embedding"}
    expected = model.encode([text], AutoTokenizer.from_pretrained(backbone))[0]
    torch.testing.assert_close(torch.tensor(asked["embedding"]), expected, atol=1e-5, rtol=0)
    assert set(pipe(text, tasks=["topic", "qa"])) == {"topic", "embedding"}
    assert pipe(text, tasks=[], return_embedding=True).keys() == {"embedding"}


def test_a_model_with_embedding_tasks_reloads_with_the_same_embeddings_in_a_fresh_process(backbone, tmp_path):
    model = tiny_tasks(backbone).eval()
    with torch.no_grad():  # a trained embedding adapter travels with the weights
        model.add_embedding_adapter().weight.normal_(0, 0.2)
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(backbone).save_pretrained(folder)
    texts = [a for a, _, _ in PAIRS]
    expected = model.encode(texts, tokenizer=AutoTokenizer.from_pretrained(folder)).tolist()
    code = (
        "import json, sys\n"
        "from transformers import AutoModel, AutoTokenizer\n"
        "from sentence_transformers import SentenceTransformer\n"
        "path, texts = sys.argv[1], json.loads(sys.argv[2])\n"
        "model = AutoModel.from_pretrained(path, trust_remote_code=True).eval()\n"
        "assert model.config.task_names == ['topic', 'sts', 'qa'] and list(model.heads) == ['topic']\n"
        "a = model.encode(texts, tokenizer=AutoTokenizer.from_pretrained(path)).tolist()\n"
        "b = SentenceTransformer(path, trust_remote_code=True, device='cpu').encode(texts).tolist()\n"
        "print('RESULT', json.dumps([a, b]))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": "", "HF_HOME": str(tmp_path / "hf")}
    result = subprocess.run(
        [sys.executable, "-c", code, str(folder), json.dumps(texts)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    a, b = json.loads(result.stdout.rsplit("RESULT ", 1)[1])
    assert torch.allclose(torch.tensor(a), torch.tensor(expected), atol=1e-5)
    assert torch.allclose(torch.tensor(b), torch.tensor(expected), atol=1e-4)


GATHER_RUN = r"""
import os, sys
from mtst.training import embeddings

init = embeddings.EmbeddingTaskLosses.__init__
def patched(self, config, world_size=1):
    init(self, config, world_size)
    loss = self.losses.get("qa")
    if loss is not None:
        cos = loss.similarity_fct
        def recorded(a, b):
            rank = os.environ.get("RANK")
            print(f"[mtst-mnrl] rank={rank} scores={a.shape[0]}x{b.shape[0]}", flush=True)
            return cos(a, b)
        loss.similarity_fct = recorded
embeddings.EmbeddingTaskLosses.__init__ = patched
from mtst.cli import train
sys.exit(train.main(sys.argv[1:]))
"""


def test_retrieval_negatives_are_gathered_across_two_processes(backbone, tmp_path):
    """Under DDP (2 processes, gloo) every process's retrieval loss scores its queries against the positives of both
    processes: world size x batch candidates."""
    folder = tmp_path / "data"
    folder.mkdir()
    rows = [{"query": f"question {i} about item {i}", "passage": f"the answer on item {i}"} for i in range(48)]
    (folder / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    files = {"train": "qa.jsonl", "validation": "qa.jsonl"}
    task = {
        "name": "qa",
        "type": "retrieval",
        "data_files": files,
        "text_column": "query",
        "text_pair_column": "passage",
    }
    config = {"tasks": [task]}
    (folder / "tasks.json").write_text(json.dumps(config))
    script = tmp_path / "gather.py"
    script.write_text(GATHER_RUN)
    argv = ["--model_name_or_path", backbone, "--tasks_config", str(folder / "tasks.json"), "--output_dir"]
    argv += [str(tmp_path / "out"), "--max_steps", "2", "--per_device_train_batch_size", "4", "--max_seq_length"]
    argv += ["32", "--save_strategy", "no", "--eval_strategy", "no", "--do_train", "--report_to", "none"]
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    command += ["--num_machines", "1", "--main_process_port", str(29500 + os.getpid() % 1000), str(script), *argv]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    shapes = set(re.findall(r"\[mtst-mnrl\] rank=(\d) scores=(\d+)x(\d+)", result.stdout + result.stderr))
    assert {rank for rank, _, _ in shapes} == {"0", "1"}, shapes
    assert all((int(q), int(c)) == (4, 8) for _, q, c in shapes), shapes  # 4 queries x (2 processes x 4 positives)


def test_embedding_tasks_first_trains_both_stages_under_two_processes(backbone, tmp_path):
    """--embedding_tasks_first (the default) under DDP (2 processes, gloo): the second stage wraps the model the
    first stage trained and both finish; the result holds the preservation targets and the adapter."""
    folder = tmp_path / "data"
    folder.mkdir()
    pairs = [{"s1": a, "s2": b, "score": s} for a, b, s in PAIRS * 6]
    topic = [{"text": "the match was won", "label": "Sports"}, {"text": "shares fell", "label": "Business"}]
    (folder / "sts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pairs))
    (folder / "topic.jsonl").write_text("".join(json.dumps(r) + "\n" for r in topic * 12))
    tasks = [
        {"name": "topic", "type": "sequence_classification", "data_files": {"train": "topic.jsonl"}, "labels": TOPICS},
        {"name": "sts", "type": "sentence_similarity", "data_files": {"train": "sts.jsonl"}, **STS_COLUMNS},
    ]
    (folder / "tasks.json").write_text(json.dumps({"tasks": tasks}))
    out = tmp_path / "out"
    argv = ["run_multitask.py", "--model_name_or_path", backbone, "--tasks_config", str(folder / "tasks.json")]
    argv += ["--output_dir", str(out), "--max_steps", "3", "--per_device_train_batch_size", "4", "--max_seq_length"]
    argv += ["32", "--save_strategy", "no", "--eval_strategy", "no", "--do_train", "--report_to", "none"]
    argv += ["--use_cpu"]  # --embedding_tasks_first is the default
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    command += ["--num_machines", "1", "--main_process_port", str(29700 + os.getpid() % 1000), *argv]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    assert "Embedding stage: sts alone" in log
    assert json.loads((out / "all_results.json").read_text())["embedding_stage_train_steps_per_second"] > 0
    assert json.loads((out / "config.json").read_text())["embedding_adapter"] is True
    assert (out / TEACHER_FILE).is_file()
