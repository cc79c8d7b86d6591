"""Publishing through a Hub server on 127.0.0.1 (tests/hub_server.py): push a tiny trained MTST with its card, then
load it by repo id in a fresh process (AutoModel, the multitask pipeline, a per-task pipeline, sentence-transformers,
the endpoints handler and the card's own snippets), at `main` and at a pinned commit. The second commit pushes other
model code (`SECOND_CODE`), so the load pinned to the first commit shows that it runs the first commit's code.

huggingface_hub reads HF_ENDPOINT at import, so every client runs in a fresh subprocess (`hub_server.run_client`).
"""

import json
import os

import pytest
import torch
from conftest import NER_LABELS, TASKS, tiny_mtst_config
from huggingface_hub import metadata_load
from huggingface_hub.repocard_data import model_index_to_eval_results
from test_modelcard import BASE_TAGS, CARD_HEADINGS, card_headings

from mtst.hub.card import MODEL_ID_PLACEHOLDER, push_to_hub, write_model_card
from mtst.hub.card_data import MTSTCardData
from mtst.remote.modeling_mtst import MTSTModel

pytest_plugins = ["hub_server"]  # the `hub_server` fixture

TEXTS = ["John Smith opened a new office in Paris.", "The match ended in a dull draw.", "Shares fell sharply today."]
TRAIN = {
    "topic": [("The striker scored twice in the final.", "Sports"), ("Shares of the bank rose sharply.", "Business")],
    "sentiment": [("I loved this film, it was wonderful.", "positive"), ("This was a terrible day.", "negative")],
    "ner": [
        (["John", "lives", "in", "Paris", "."], ["B-PER", "O", "O", "B-LOC", "O"]),
        (["Acme", "Corp", "hired", "Mary", "."], ["B-ORG", "I-ORG", "O", "B-PER", "O"]),
    ],
}
EXPECTED_FILES = {
    ".gitattributes",
    "README.md",
    "config.json",
    "config_sentence_transformers.json",
    "configuration_mtst.py",
    "handler.py",
    "loss_curve.svg",
    "model.safetensors",
    "modeling_mtst.py",
    "modules.json",
    "pipeline_mtst.py",
    "heads_mtst.py",
    "sentence_bert_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
}


def assert_close_answers(got, expected, tol=1e-5):
    """The same keys, labels and entity spans; every number (scores, embeddings) equal to `tol`."""
    if isinstance(expected, dict):
        assert isinstance(got, dict) and set(got) == set(expected)
        for key in expected:
            assert_close_answers(got[key], expected[key], tol)
    elif isinstance(expected, list):
        assert isinstance(got, list) and len(got) == len(expected)
        for a, b in zip(got, expected):
            assert_close_answers(a, b, tol)
    elif isinstance(expected, float):
        assert got == pytest.approx(expected, abs=tol)
    else:
        assert got == expected


def _batch(tokenizer, config, task, rows):
    if config.task_type(task) == "sequence_classification":
        enc = tokenizer([text for text, _ in rows], padding=True, return_tensors="pt")
        labels = torch.tensor([config.task_labels(task).index(label) for _, label in rows])
        return enc, labels
    enc = tokenizer([words for words, _ in rows], is_split_into_words=True, padding=True, return_tensors="pt")
    labels = torch.full(enc["input_ids"].shape, -100)
    for i, (_, tags) in enumerate(rows):
        previous = None
        for pos, word in enumerate(enc.word_ids(i)):
            if word is not None and word != previous:
                labels[i, pos] = config.task_labels(task).index(tags[word])
            previous = word
    return enc, labels


def train_tiny(tokenizer, steps: int = 9):
    """A tiny random MTST after a few AdamW steps (tasks in turn), its log history and real per-task metrics."""
    from seqeval.metrics import f1_score, precision_score, recall_score

    torch.manual_seed(0)
    model = MTSTModel(tiny_mtst_config(embedding_dim=16, normalize="l2"))
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    batches = {task: _batch(tokenizer, model.config, task, rows) for task, rows in TRAIN.items()}
    log_history = []
    model.train()
    for step in range(1, steps + 1):
        task = list(TRAIN)[(step - 1) % len(TRAIN)]
        enc, labels = batches[task]
        loss = model(**enc, task=task, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        log_history.append({"loss": round(loss.item(), 4), "step": step, "epoch": step / len(TRAIN)})
    model.eval()
    metrics, losses = {}, []
    with torch.no_grad():
        for task, (enc, labels) in batches.items():
            out = model(**enc, task=task, labels=labels)
            losses.append(float(out.loss))
            metrics[f"eval_{task}_loss"] = float(out.loss)
            predictions = out.logits.argmax(-1)
            if task == "ner":
                names = model.config.task_labels(task)
                gold = [[names[g] for g in row if g != -100] for row in labels.tolist()]
                pred = [
                    [names[p] for p, g in zip(prow, grow) if g != -100]
                    for prow, grow in zip(predictions.tolist(), labels.tolist())
                ]
                metrics["eval_ner_f1"] = f1_score(gold, pred, mode="strict", zero_division=0)
                metrics["eval_ner_precision"] = precision_score(gold, pred, mode="strict", zero_division=0)
                metrics["eval_ner_recall"] = recall_score(gold, pred, mode="strict", zero_division=0)
                mask = labels != -100
                metrics["eval_ner_accuracy"] = float((predictions[mask] == labels[mask]).float().mean())
            else:
                metrics[f"eval_{task}_accuracy"] = float((predictions == labels).float().mean())
    metrics["eval_loss"] = sum(losses) / len(losses)
    log_history.append({**metrics, "step": steps, "epoch": steps / len(TRAIN)})
    return model, log_history, metrics


def save_with_card(model, tokenizer, folder, log_history=(), metrics=None):
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    data = MTSTCardData(language="en", license="apache-2.0")
    data.set_task_specs([{"name": "topic", "dataset": "fancyzhx/ag_news"}, {"name": "sentiment", "data_files": {}}])
    data.set_task_specs([{"name": "ner", "dataset": "eriktks/conll2003", "dataset_config": "conll2003"}])
    data.set_widget_examples(TEXTS)
    data.set_log_history(log_history)
    if metrics:
        data.set_eval_results(metrics)
    write_model_card(folder, model, data, tokenizer)
    return data


def _outputs(model, tokenizer, texts):
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**batch)
    return {"logits": dict(out.task_logits), "embedding": out.sentence_embedding}


# Appended to the second version's modeling_mtst.py: a marker, and every task's logits shifted by a constant.
LOGIT_SHIFT = 1.0
SECOND_CODE = f"""

# --- the second version of this file (tests/test_publishing.py): every task's logits shifted by LOGIT_SHIFT ---
MTST_CODE_VERSION = "second"
LOGIT_SHIFT = {LOGIT_SHIFT!r}
_first_forward = MTSTModel.forward


def _shifted_forward(self, *args, **kwargs):
    output = _first_forward(self, *args, **kwargs)
    output.task_logits = {{name: logits + LOGIT_SHIFT for name, logits in output.task_logits.items()}}
    if output.logits is not None:
        output.logits = output.logits + LOGIT_SHIFT
    return output


MTSTModel.forward = _shifted_forward
"""

PUSH = r"""
import json, sys
from transformers import AutoModel, AutoTokenizer
from mtst.hub.card import push_to_hub

first_dir, second_dir = sys.argv[1:3]
first = push_to_hub(first_dir, "user/mtst-tiny", commit_message="First version")
# the second version is pushed from the model object (saved to a temporary folder with its tokenizer and a card),
# loaded with its own, changed, code: save_pretrained copies that code
model = AutoModel.from_pretrained(second_dir, trust_remote_code=True)
assert sys.modules[type(model).__module__].MTST_CODE_VERSION == "second"
tokenizer = AutoTokenizer.from_pretrained(second_dir, trust_remote_code=True)
second = push_to_hub(model, "user/mtst-tiny", tokenizer=tokenizer)
private = push_to_hub(first_dir, "user/mtst-private", private=True, revision="dev")
print(json.dumps({"first": first.oid, "second": second.oid, "private": private.oid}))
"""

# A fresh process per starting revision: "first" (the pinned commit; also the per-task pipeline, sentence-transformers,
# the endpoints handler, and then `main` in the same process) or "main" (also every python snippet of the card).
LOAD = r"""
import json, re, sys
import torch
from huggingface_hub import hf_hub_download, snapshot_download
from sentence_transformers import SentenceTransformer
from transformers import AutoModel, AutoTokenizer, pipeline

repo, which, first, out_path, texts = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], json.loads(sys.argv[5])
kwargs = {"revision": first} if which == "first" else {}
tokenizer = AutoTokenizer.from_pretrained(repo, trust_remote_code=True, **kwargs)
model = AutoModel.from_pretrained(repo, trust_remote_code=True, **kwargs).eval()
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
module = sys.modules[type(model).__module__]
batch = tokenizer(texts, padding=True, return_tensors="pt")
with torch.no_grad():
    out = model(**batch)
multitask = pipeline(model=repo, trust_remote_code=True, **kwargs)
result = {
    "logits": dict(out.task_logits),
    "embedding": out.sentence_embedding,
    "pipeline": multitask(texts, return_embedding=True, return_all_scores=True),
    "code_version": getattr(module, "MTST_CODE_VERSION", None),
    "code": open(module.__file__, encoding="utf-8").read(),
}
if which == "main":
    # every python snippet of the pushed card runs as written (against `main`)
    readme = open(hf_hub_download(repo, "README.md"), encoding="utf-8").read()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {"__name__": "__card__"})
    result["snippets"] = len(blocks)
    torch.save(result, out_path)
    print("LOADED")
    sys.exit(0)
sentiment = pipeline("text-classification", model=repo, trust_remote_code=True, revision=first,
                     model_kwargs={"default_task": "sentiment"})
result["sentiment_pipeline"] = sentiment(texts)
st = SentenceTransformer(repo, trust_remote_code=True, revision=first, device="cpu")
result["sentence_transformers"] = st.encode(texts, convert_to_tensor=True)

# then `main` in the same process: each revision runs its own code (the pinned one loaded first must not stick)
later = AutoModel.from_pretrained(repo, trust_remote_code=True).eval()
result["main_after_first"] = getattr(sys.modules[type(later).__module__], "MTST_CODE_VERSION", None)

path = snapshot_download(repo, revision=first)
sys.path.insert(0, path)
from mtst.remote.handler import EndpointHandler
handler = EndpointHandler(path)
result["handler"] = handler({"inputs": texts, "parameters": {"return_embedding": True, "return_all_scores": True}})
torch.save(result, out_path)
print("LOADED")
"""

ANONYMOUS = r"""
from huggingface_hub import HfApi
from huggingface_hub.errors import RepositoryNotFoundError, HfHubHTTPError
try:
    HfApi().model_info("user/mtst-private", revision="dev")
except (RepositoryNotFoundError, HfHubHTTPError) as err:
    print("DENIED", type(err).__name__)
else:
    print("READABLE")
"""


def test_push_then_load_by_repo_id_in_a_fresh_process(hub_server, tokenizer, tmp_path):
    model, log_history, metrics = train_tiny(tokenizer)
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    save_with_card(model, tokenizer, first_dir, log_history, metrics)
    # training leftovers that must stay local
    (first_dir / "training_args.bin").write_bytes(b"local " + str(tmp_path).encode())
    (first_dir / "trainer_state.json").write_text(json.dumps({"best_model_checkpoint": str(tmp_path)}))
    (first_dir / "checkpoint-3").mkdir()
    (first_dir / "checkpoint-3" / "config.json").write_text("{}")
    # a second version: the same model with shifted head biases
    with torch.no_grad():
        for head in model.heads.values():
            head.classifier.bias.add_(0.5)
    model.save_pretrained(second_dir)
    tokenizer.save_pretrained(second_dir)
    first_code = (first_dir / "modeling_mtst.py").read_text()
    second_code = first_code + SECOND_CODE  # ... with other model code: logits shifted by LOGIT_SHIFT
    (second_dir / "modeling_mtst.py").write_text(second_code)
    expected_main = _outputs(model, tokenizer, TEXTS)
    expected_main["logits"] = {task: logits + LOGIT_SHIFT for task, logits in expected_main["logits"].items()}
    first_model = MTSTModel.from_pretrained(first_dir).eval()
    expected_first = _outputs(first_model, tokenizer, TEXTS)
    from transformers import pipeline

    local_answers = pipeline(model=str(first_dir), trust_remote_code=True)(
        TEXTS, return_embedding=True, return_all_scores=True
    )
    threads = {"OMP_NUM_THREADS": str(torch.get_num_threads())}  # same float reductions in the client

    pushed = hub_server.run_client(PUSH, tmp_path, args=[first_dir, second_dir], env=threads)
    shas = json.loads(next(line for line in pushed.stdout.splitlines() if line.startswith("{")))
    assert hub_server.commits("user/mtst-tiny")[:2] == [shas["second"], shas["first"]]
    assert set(hub_server.list_files("user/mtst-tiny", revision=shas["first"])) == EXPECTED_FILES
    # the second version has no training log: its commit removes the first version's loss curve
    assert set(hub_server.list_files("user/mtst-tiny")) == EXPECTED_FILES - {"loss_curve.svg"}
    assert hub_server.read_file("user/mtst-tiny", "modeling_mtst.py", revision=shas["first"]).decode() == first_code
    assert hub_server.read_file("user/mtst-tiny", "modeling_mtst.py").decode() == second_code

    result, loaded = {}, []
    for which in ("first", "main"):  # each in a fresh process; the pinned one first
        args = ["user/mtst-tiny", which, shas["first"], tmp_path / f"{which}.pt", json.dumps(TEXTS)]
        loaded.append(hub_server.run_client(LOAD, tmp_path, args=args, env=threads))
        assert "LOADED" in loaded[-1].stdout
        result[which] = torch.load(tmp_path / f"{which}.pt")
    # the pinned load ran the first commit's code, `main` the second's (a marker, and logits shifted: below)
    assert (result["first"]["code_version"], result["first"]["code"]) == (None, first_code)
    assert (result["main"]["code_version"], result["main"]["code"]) == ("second", second_code)
    assert result["first"]["main_after_first"] == "second"  # a later load of `main` in that process runs main's code
    for name, expected in (("main", expected_main), ("first", expected_first)):
        for task in TASKS:
            assert torch.equal(result[name]["logits"][task], expected["logits"][task]), (name, task)
        assert torch.equal(result[name]["embedding"], expected["embedding"]), name
    assert not torch.equal(result["main"]["logits"]["topic"], result["first"]["logits"]["topic"])
    assert result["first"]["pipeline"] == local_answers  # the multitask pipeline, pinned to the first commit
    # the endpoints handler answers every task the same way (it batches a request's texts: padding moves floats ~1e-7)
    assert_close_answers(result["first"]["handler"], local_answers)
    assert all(set(answer) == {"topic", "sentiment", "ner", "embedding"} for answer in result["first"]["handler"])
    probabilities = expected_first["logits"]["sentiment"].softmax(-1)
    for answer, probs in zip(result["first"]["sentiment_pipeline"], probabilities):
        assert answer["label"] == ["negative", "neutral", "positive"][int(probs.argmax())]
        assert answer["score"] == pytest.approx(float(probs.max()), abs=1e-6)
    st = result["first"]["sentence_transformers"]
    assert torch.allclose(st, expected_first["embedding"], atol=1e-6)
    assert result["main"]["snippets"] == 5

    # the card: valid YAML, one model-index result per Hub task with the real numbers, the repo id in the snippets
    readme = hub_server.read_file("user/mtst-tiny", "README.md", revision=shas["first"]).decode()
    (tmp_path / "README.md").write_text(readme)
    meta = metadata_load(tmp_path / "README.md")
    assert meta["pipeline_tag"] == "text-classification" and meta["library_name"] == "transformers"
    assert "base_model" not in meta  # a random encoder: no base model
    _, results = model_index_to_eval_results(meta["model-index"])
    per_task = {}
    for r in results:
        per_task.setdefault(r.task_name, {})[r.metric_type] = r.metric_value
    assert per_task == {
        "Text Classification (topic)": {"accuracy": metrics["eval_topic_accuracy"]},
        # sentiment: no Hub dataset, so no model-index result (the card's results table has it)
        "Token Classification (ner)": {
            "f1": metrics["eval_ner_f1"],
            "precision": metrics["eval_ner_precision"],
            "recall": metrics["eval_ner_recall"],
            "accuracy": metrics["eval_ner_accuracy"],
        },
    }
    assert 'pipeline(model="user/mtst-tiny", trust_remote_code=True' in readme
    assert MODEL_ID_PLACEHOLDER not in readme and "your-mtst-model" not in readme
    assert meta["model-index"][0]["name"] == "mtst-tiny"
    for label in NER_LABELS:
        assert f"`{label}`" in readme
    config = json.loads(hub_server.read_file("user/mtst-tiny", "config.json"))
    assert config["auto_map"]["AutoModel"] == "modeling_mtst.MTSTModel" and "multitask" in config["custom_pipelines"]

    # nothing local and no token in any pushed file, request log aside, or in the clients' output
    assert hub_server.files_containing(hub_server.token) == []
    for fragment in (str(tmp_path), "/tmp/pytest", "/root", "/work", "site-packages", str(os.getcwd())):
        assert hub_server.files_containing(fragment) == [], fragment
    for proc in (pushed, *loaded):
        assert hub_server.token not in proc.stdout + proc.stderr

    # the private repo, pushed to a new branch: readable with the token only
    assert hub_server.head("user/mtst-private", "dev") == shas["private"]
    assert hub_server.list_files("user/mtst-private") == [".gitattributes"]
    anonymous = hub_server.run_client(ANONYMOUS, tmp_path, token=None)
    assert "DENIED" in anonymous.stdout


def test_push_to_hub_checks_its_input_before_any_request(tmp_path, tiny_model):
    with pytest.raises(ValueError, match="Hub repo id"):
        push_to_hub(tmp_path, "not a repo id")
    with pytest.raises(ValueError, match="no config.json"):
        push_to_hub(tmp_path, "user/x")
    tiny_model.save_pretrained(tmp_path / "model")
    for weights in (tmp_path / "model").glob("*.safetensors"):
        weights.unlink()
    with pytest.raises(ValueError, match="no safetensors weights"):
        push_to_hub(tmp_path / "model", "user/x")
    with pytest.raises(TypeError, match="model folder or a model"):
        push_to_hub(object(), "user/x")


CLI_LOAD = r"""
import json, sys
import torch
from transformers import AutoModel, AutoTokenizer, pipeline

repo, local, texts = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
hub = AutoModel.from_pretrained(repo, trust_remote_code=True).eval()
mine = AutoModel.from_pretrained(local, trust_remote_code=True).eval()
tokenizer = AutoTokenizer.from_pretrained(repo, trust_remote_code=True)
batch = tokenizer(texts, padding=True, return_tensors="pt")
with torch.no_grad():
    a, b = hub(**batch), mine(**batch)
for task in hub.config.task_names:
    assert torch.equal(a.task_logits[task], b.task_logits[task]), task
assert torch.equal(a.sentence_embedding, b.sentence_embedding)
answers = pipeline(model=repo, trust_remote_code=True)(texts)
assert answers == pipeline(model=local, trust_remote_code=True)(texts)
print("CLI MODEL OK", json.dumps(sorted(answers[0])))
"""


def test_run_multitask_push_to_hub_publishes_a_loadable_repo(hub_server, tokenizer, tmp_path):
    """`run_multitask.py ... --push_to_hub --hub_model_id user/cli-model`: tiny backbone, 16 examples per task."""
    from conftest import save_tiny_backbone
    from trainer_helpers import NER_LABELS as CLI_NER_LABELS
    from trainer_helpers import TOPIC_LABELS as CLI_TOPIC_LABELS
    from trainer_helpers import write_task_files

    backbone = save_tiny_backbone(tmp_path / "tiny-backbone")
    tasks_config = write_task_files(tmp_path / "data", n_train=16, n_eval=8)
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "run_multitask.py")
    output_dir = tmp_path / "out"
    trained = hub_server.run_client(
        __import__("pathlib").Path(script),
        tmp_path,
        args=[
            "--model_name_or_path", backbone, "--tasks_config", tasks_config, "--output_dir", output_dir,
            "--do_train", "--do_eval", "--do_predict", "--max_steps", "4", "--per_device_train_batch_size", "4",
            "--logging_steps", "1", "--save_strategy", "no", "--eval_strategy", "no", "--use_cpu",
            "--push_to_hub", "--hub_model_id", "user/cli-model",
        ],
    )  # fmt: skip
    assert hub_server.token not in trained.stdout + trained.stderr
    files = set(hub_server.list_files("user/cli-model"))
    assert EXPECTED_FILES <= files
    assert not files & {"training_args.bin", "trainer_state.json", "all_results.json", "predictions_topic.jsonl"}
    assert len(hub_server.commits("user/cli-model")) == 2  # the repo's first commit, then one upload

    loaded = hub_server.run_client(CLI_LOAD, tmp_path, args=["user/cli-model", output_dir, json.dumps(TEXTS)])
    assert "CLI MODEL OK" in loaded.stdout and '"ner"' in loaded.stdout and '"topic"' in loaded.stdout

    readme = hub_server.read_file("user/cli-model", "README.md").decode()
    (tmp_path / "README.md").write_text(readme)
    meta = metadata_load(tmp_path / "README.md")
    assert meta["pipeline_tag"] == "text-classification" and "generated_from_trainer" in meta["tags"]
    # the header and sections of the card of a run_multitask run, as they were before issue 13's rewrite
    # local files: no Hub dataset for a model-index result to link to, so no model-index (the results table has them)
    assert list(meta) == ["library_name", "pipeline_tag", "tags", "metrics", "widget"]
    assert meta["tags"] == BASE_TAGS + ["generated_from_trainer"]
    assert meta["metrics"] == ["accuracy", "f1", "precision", "recall"]
    assert card_headings(readme) == ["# cli-model", *CARD_HEADINGS[1:]]  # the repo's name as the title
    assert "base_model" not in meta and "datasets" not in meta  # a local backbone and local files: not named
    assert len(meta["widget"]) == 3
    with open(output_dir / "all_results.json") as f:
        results = json.load(f)
    assert f"{results['predict_topic_accuracy']:.4f}" in readme and f"{results['predict_ner_f1']:.4f}" in readme
    for label in CLI_TOPIC_LABELS + CLI_NER_LABELS:
        assert f"`{label}`" in readme
    assert 'pipeline(model="user/cli-model", trust_remote_code=True' in readme
    assert "| `max_steps` | 4 |" in readme and "**Task sampling:** `balanced`" in readme
    assert "![Training and validation loss](loss_curve.svg)" in readme
    assert hub_server.files_containing(hub_server.token) == []
    for fragment in (str(tmp_path), "/tmp/pytest", "/root", "/work", "site-packages"):
        assert hub_server.files_containing(fragment) == [], fragment


PYTHON_PUSH = """
import sys
import datasets, torch
from transformers import AutoTokenizer, BertConfig, BertModel
from mtst import MTSTModel, MultiTaskTrainer, MultiTaskTrainingArguments

backbone, out = sys.argv[1], sys.argv[2]
tokenizer = AutoTokenizer.from_pretrained(backbone)
torch.manual_seed(0)
tasks = {"topic": {"type": "sequence_classification", "labels": ["Sports", "Business"]}}
model = MTSTModel.from_backbone(backbone, tasks=tasks)
texts, labels = ["The striker scored.", "Shares rose."] * 4, ["Sports", "Business"] * 4
topic = datasets.Dataset.from_dict({"text": texts, "label": labels})
args = MultiTaskTrainingArguments(output_dir=out, max_steps=2, use_cpu=True, hub_model_id="user/trainer-push",
                                  save_strategy="no", report_to="none", max_seq_length=32)
trainer = MultiTaskTrainer(model=model, args=args, train_dataset={"topic": topic}, eval_dataset={"topic": topic},
                           processing_class=tokenizer)
trainer.train()
print("TRAINER", trainer.push_to_hub().oid)
print("MODEL", model.push_to_hub("user/model-push", tokenizer=tokenizer).oid)
"""


def test_trainer_and_model_push_to_hub_upload_the_mtst_card_and_handler(hub_server, tokenizer, tmp_path):
    """`trainer.push_to_hub()` and `model.push_to_hub(repo, tokenizer=...)` from Python upload what the command line
    does: the code files, `handler.py`, the tokenizer and MTST's full card (not transformers' generic one)."""
    from conftest import save_tiny_backbone

    backbone = save_tiny_backbone(tmp_path / "tiny-backbone")
    pushed = hub_server.run_client(PYTHON_PUSH, tmp_path, args=[backbone, tmp_path / "out"])
    assert "TRAINER" in pushed.stdout and "MODEL" in pushed.stdout, pushed.stderr[-2000:]
    for repo in ("user/trainer-push", "user/model-push"):
        files = set(hub_server.list_files(repo))
        assert {"handler.py", "modeling_mtst.py", "configuration_mtst.py", "tokenizer.json", "README.md"} <= files
        assert not files & {"training_args.bin", "trainer_state.json"}, files
        readme = hub_server.read_file(repo, "README.md").decode()
        assert {"## Tasks", "## Usage", "### Inference Endpoints (custom handler)"} <= set(readme.splitlines())
        assert repo in readme and "your-username/your-mtst-model" not in readme


def test_a_local_path_about_to_be_uploaded_stops_the_upload_naming_file_and_field(tmp_path, tiny_model, monkeypatch):
    """A field that still holds a local path (here a custom one in config.json) stops the upload before any request,
    naming the file and the field; before, it was uploaded with a warning."""
    from mtst.hub import publish

    folder = tmp_path / "model"
    tiny_model.save_pretrained(folder)
    write_model_card(folder, tiny_model)
    config = json.loads((folder / "config.json").read_text())
    config["my_data_folder"] = str(tmp_path / "private" / "data")
    (folder / "config.json").write_text(json.dumps(config))
    requests = []
    monkeypatch.setattr("huggingface_hub.HfApi.create_repo", lambda *a, **k: requests.append(a))
    with pytest.raises(publish.UploadRefusedError) as err:
        publish.upload_folder(folder, "user/x", token="hf_" + "x" * 30)
    message = str(err.value)
    assert "config.json (field my_data_folder)" in message and "nothing was sent" in message, message
    assert requests == []
