"""Model card: metadata and model-index, body, unknown facts, loss curve, and the handler.

Everything here runs in-process on tiny random models (no Hub); the Trainer callback is tested in
test_cardcallback.py, the round trips through a Hub server in test_publishing.py.
"""

import json
import logging
import os
import re
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch
from conftest import NER_LABELS, SENTIMENT_LABELS, TASKS, TOPIC_LABELS, backbone_path, tiny_mtst_config
from huggingface_hub import ModelCard, metadata_load
from huggingface_hub.repocard_data import model_index_to_eval_results

from mtst.hub import card as modelcard_mtst
from mtst.hub import publish as publish_mtst
from mtst.hub.card import loss_curve_svg, write_model_card
from mtst.hub.card_data import MTSTCardData
from mtst.hub.publish import MODEL_ID_PLACEHOLDER, finalize_model_dir, resolve_base_model, scrub
from mtst.remote.modeling_mtst import MTSTModel

METRICS = {
    "eval_topic_accuracy": 0.75,
    "eval_topic_macro_f1": 0.7,
    "eval_topic_loss": 0.9,
    "eval_sentiment_accuracy": 0.5,
    "eval_sentiment_macro_f1": 0.45,
    "eval_ner_precision": 0.4,
    "eval_ner_recall": 0.5,
    "eval_ner_f1": 0.4444,
    "eval_ner_accuracy": 0.8,
    "eval_ner_PER_f1": 0.6,
    "eval_ner_LOC_f1": 0.3,
    "eval_average": 0.5648,
    "eval_loss": 1.1,
    "eval_runtime": 0.5,
}
LOG_HISTORY = [
    {"loss": 2.2, "step": 2, "epoch": 0.1},
    {"loss": 1.7, "step": 4, "epoch": 0.2},
    {"eval_loss": 1.6, "eval_topic_accuracy": 0.5, "eval_ner_f1": 0.2, "eval_average": 0.4, "step": 4, "epoch": 0.2},
    {"loss": 1.3, "step": 6, "epoch": 0.3},
    {"train_runtime": 3.0, "train_loss": 1.7, "step": 6, "epoch": 0.3},
]


def forbidden_fragments(*extra) -> list[str]:
    """Substrings that betray a local path of this machine."""
    return [str(e) for e in extra] + ["/root", "/work", "site-packages", "/tmp/", "/home/"]


def assert_no_local_paths(text: str, *extra) -> None:
    for fragment in forbidden_fragments(*extra):
        assert fragment not in text, fragment


@pytest.fixture
def tiny(tmp_path):
    torch.manual_seed(0)
    config = tiny_mtst_config(embedding_dim=16)
    config.encoder._name_or_path = backbone_path()  # as MTSTModel.from_backbone(default backbone) leaves it
    return MTSTModel(config).eval()


def full_card_data() -> MTSTCardData:
    data = MTSTCardData(language="en", license="apache-2.0")
    data.set_task_specs(
        [
            SimpleNamespace(name="topic", dataset="fancyzhx/ag_news", dataset_config=None, revision=None),
            {"name": "sentiment", "data_files": {"train": "/root/secret/train.jsonl"}},
            {
                "name": "ner",
                "dataset": "eriktks/conll2003",
                "dataset_config": "conll2003",
                "revision": "refs/convert/parquet",
            },
        ]
    )
    data.set_dataset_sizes({"topic": 120, "sentiment": 60, "ner": 90}, {"topic": 20, "sentiment": 12, "ner": 18})
    data.set_eval_results(METRICS)
    data.set_eval_results({"predict_topic_accuracy": 0.7, "predict_topic_macro_f1": 0.66})
    data.set_single_task_results({"topic": {"source": "topic_only", "metric": "accuracy", "test": 0.68}})
    data.set_widget_examples(["Apple is opening a new office in Paris.", "The match ended in a draw.", "Shares fell."])
    data.set_log_history(LOG_HISTORY)
    return data


def test_card_metadata_model_index_and_body(tiny, tokenizer, tmp_path):
    card = write_model_card(tmp_path, tiny, full_card_data(), tokenizer)
    text = (tmp_path / "README.md").read_text()
    assert card.content == text

    meta = metadata_load(tmp_path / "README.md")
    assert meta["library_name"] == "transformers"
    assert meta["pipeline_tag"] == "text-classification"  # primary task = first task (topic)
    assert meta["tags"][:6] == [
        "multi-task",
        "custom_code",
        "sentence-embeddings",
        "text-classification",
        "token-classification",
        "mtst",
    ]
    assert meta["datasets"] == ["fancyzhx/ag_news", "eriktks/conll2003"]  # the local task is not named
    assert meta["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert meta["language"] == ["en"] and meta["license"] == "apache-2.0"
    assert set(meta["metrics"]) == {"accuracy", "f1", "precision", "recall"}
    assert [w["text"] for w in meta["widget"]] == [
        "Apple is opening a new office in Paris.",
        "The match ended in a draw.",
        "Shares fell.",
    ]

    # model-index: one result per Hub task, its own task type, the test split when there is one, real values;
    # `dataset.type` is the Hub dataset id, and the task on local files (sentiment) is left out: no dataset to link
    index = meta["model-index"]
    assert len(index) == 1 and len(index[0]["results"]) == 2
    by_task = {r["task"]["name"]: r for r in index[0]["results"]}
    assert by_task["Text Classification (topic)"]["dataset"] == {
        "name": "fancyzhx/ag_news",
        "type": "fancyzhx/ag_news",
        "split": "test",
    }
    assert by_task["Token Classification (ner)"]["task"]["type"] == "token-classification"
    assert by_task["Token Classification (ner)"]["dataset"]["config"] == "conll2003"
    assert "Text Classification (sentiment)" not in by_task
    assert by_task["Token Classification (ner)"]["dataset"]["type"] == "eriktks/conll2003"
    _, results = model_index_to_eval_results(index)
    values = defaultdict(dict)
    for result in results:
        values[(result.task_name, result.dataset_split)][result.metric_name] = result.metric_value
    assert values[("Text Classification (topic)", "test")] == {"topic Accuracy": 0.7, "topic Macro F1": 0.66}
    assert values[("Token Classification (ner)", "validation")] == {
        "ner Entity F1 (seqeval, strict)": 0.4444,
        "ner Entity Precision (seqeval, strict)": 0.4,
        "ner Entity Recall (seqeval, strict)": 0.5,
        "ner Token Accuracy": 0.8,
    }

    # body: every task's labels, results (with the single-task difference), usage, training log, loss curve
    for label in TOPIC_LABELS + SENTIMENT_LABELS + NER_LABELS:
        assert f"`{label}`" in text
    assert "| Task | Split | Metric | MTST | Single-task | Δ joint − single (points) |" in text
    assert "| `topic` | test | **Accuracy** | 0.7000 | 0.6800 | +2.00 |" in text
    assert "| `topic` | validation | **Accuracy** | 0.7500 | - | - |" in text
    assert "(`topic`: `topic_only`)" in text
    assert "| `ner` | validation | PER | 0.6000 |" in text
    for snippet in (
        f'pipeline(model="{MODEL_ID_PLACEHOLDER}", trust_remote_code=True',
        'model_kwargs={"default_task": "sentiment"}',
        "AutoModel.from_pretrained(repo_id, trust_remote_code=True, revision=revision)",
        f'SentenceTransformer("{MODEL_ID_PLACEHOLDER}", trust_remote_code=True',
        "from handler import EndpointHandler",
        "do **not** run custom code",
    ):
        assert snippet in text, snippet
    assert "| Epoch | Step | Training Loss | Validation Loss | topic accuracy | ner f1 | Average |" in text
    assert "| 0.20 | 4 | 1.7000 | 1.6000 | 0.5000 | 0.2000 | 0.4000 |" in text
    assert "![Training and validation loss](loss_curve.svg)" in text
    ET.parse(tmp_path / "loss_curve.svg")
    assert "Training time: 3.0 seconds" not in text  # set only by a trainer, not by log_history alone
    assert "None" not in text
    assert_no_local_paths(text, tmp_path)
    # the rendered card loads back as a ModelCard with the same data
    reloaded = ModelCard.load(tmp_path / "README.md")
    assert reloaded.data.pipeline_tag == "text-classification"
    assert reloaded.data.eval_results and reloaded.data.model_name == "your-mtst-model"


def test_single_task_scores_are_compared_like_with_like():
    data = MTSTCardData().register(tiny_mtst_config())
    data.set_eval_results(METRICS)  # validation results of every task
    data.set_eval_results({"predict_topic_accuracy": 0.7, "predict_topic_macro_f1": 0.66})  # test: topic only
    without = data.to_dict()
    assert without["single_task_sources"] == {}
    assert all(row["single"] is None and row["delta"] is None for row in without["result_rows"])
    data.set_single_task_results(
        {
            "topic": {"source": "topic_only", "metric": "accuracy", "test": 0.68, "validation": 0.71},
            "sentiment": {"source": "sentiment_only", "metric": "accuracy", "test": 0.45, "validation": 0.4},
            "ner": {"source": "ner_only", "metric": "f1", "test": 0.5},  # the joint run has no ner test: no comparison
        }
    )
    assert [data.compared_split(t) for t in ("topic", "sentiment", "ner")] == ["test", "validation", None]
    rendered = data.to_dict()
    rows = {(row["task"], row["split"], row["metric"]): row for row in rendered["result_rows"]}
    assert (rows["topic", "test", "Accuracy"]["single"], rows["topic", "test", "Accuracy"]["delta"]) == (
        "0.6800",
        "+2.00",
    )
    assert rows["topic", "validation", "Accuracy"]["single"] is None  # only the compared split
    assert rows["topic", "test", "Macro F1"]["single"] is None  # only the headline metric
    assert rows["sentiment", "validation", "Accuracy"]["delta"] == "+10.00"
    assert all(row["single"] is None for key, row in rows.items() if key[0] == "ner")
    assert rendered["single_task_sources"] == {"topic": "topic_only", "sentiment": "sentiment_only"}


# The card's YAML header and headings as modelcard_mtst wrote them before issue 13's rewrite (same inputs): a change
# of the card's metadata or sections must be deliberate. Key order inside a mapping is not compared (the Hub reads
# the same metadata either way); list order is.
CARD_HEADINGS = [
    "# your-mtst-model",
    "## Tasks",
    "## Results",
    "## Usage",
    "### All tasks at once: the multitask pipeline",
    "### One task with a standard pipeline",
    "### AutoModel: logits of every task and the sentence embedding",
    "### Sentence embeddings with sentence-transformers",
    "### Inference Endpoints (custom handler)",
    "## Training",
    "### Data",
    "### Procedure",
    "### Training log",
    "### Framework versions",
    "## Limitations",
]
BASE_TAGS = ["multi-task", "custom_code", "sentence-embeddings", "text-classification", "token-classification", "mtst"]
FULL_CARD_HEADER = {
    "library_name": "transformers",
    "pipeline_tag": "text-classification",
    "tags": BASE_TAGS,
    "language": ["en"],
    "license": "apache-2.0",
    "base_model": "sentence-transformers/all-MiniLM-L6-v2",
    "datasets": ["fancyzhx/ag_news", "eriktks/conll2003"],
    "metrics": ["accuracy", "f1", "precision", "recall"],
    "widget": [
        {"text": "Apple is opening a new office in Paris."},
        {"text": "The match ended in a draw."},
        {"text": "Shares fell."},
    ],
    "model-index": [
        {
            "name": "your-mtst-model",
            "results": [
                {
                    "task": {"type": "text-classification", "name": "Text Classification (topic)"},
                    "dataset": {"name": "fancyzhx/ag_news", "type": "fancyzhx/ag_news", "split": "test"},
                    "metrics": [
                        {"type": "accuracy", "value": 0.7, "name": "topic Accuracy"},
                        {"type": "f1", "value": 0.66, "name": "topic Macro F1"},
                    ],
                },
                # sentiment: local files, so not in the model-index (the results table has it)
                {
                    "task": {"type": "token-classification", "name": "Token Classification (ner)"},
                    "dataset": {
                        "name": "eriktks/conll2003",
                        "type": "eriktks/conll2003",
                        "config": "conll2003",
                        "split": "validation",
                        "revision": "refs/convert/parquet",
                    },
                    "metrics": [
                        {"type": "f1", "value": 0.4444, "name": "ner Entity F1 (seqeval, strict)"},
                        {"type": "precision", "value": 0.4, "name": "ner Entity Precision (seqeval, strict)"},
                        {"type": "recall", "value": 0.5, "name": "ner Entity Recall (seqeval, strict)"},
                        {"type": "accuracy", "value": 0.8, "name": "ner Token Accuracy"},
                    ],
                },
            ],
        }
    ],
}


def card_headings(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("#")]


def assert_same_header(meta: dict, expected: dict) -> None:
    """Key by key (a failure names the key), then no key more or less, in the Hub's usual order."""
    for key, value in expected.items():
        assert meta.get(key) == value, key
    assert list(meta) == list(expected)


def test_card_header_and_sections_are_those_of_the_earlier_cards(tiny, tokenizer, tmp_path):
    text = write_model_card(tmp_path / "full", tiny, full_card_data(), tokenizer).content
    assert_same_header(metadata_load(tmp_path / "full" / "README.md"), FULL_CARD_HEADER)
    assert card_headings(text) == CARD_HEADINGS
    # nothing known but the model: the same sections, three keys
    text = write_model_card(tmp_path / "bare", MTSTModel(tiny_mtst_config())).content
    expected = {"library_name": "transformers", "pipeline_tag": "text-classification", "tags": BASE_TAGS}
    assert_same_header(metadata_load(tmp_path / "bare" / "README.md"), expected)
    assert card_headings(text) == CARD_HEADINGS


def test_card_states_the_task_heads_learning_rate(tiny, tmp_path):
    data = full_card_data()
    data.multitask_options = {"head_learning_rate_factor": 10.0}  # the default: heads faster than the encoder
    text = write_model_card(tmp_path / "a", tiny, data).content
    assert "**Task heads' peak learning rate:** 10 x the learning rate.\n" in text
    data.multitask_options = {"head_learning_rate_factor": 1.0, "head_learning_rates": "ner=0.02"}
    text = write_model_card(tmp_path / "b", tiny, data).content
    assert "**Task heads' peak learning rate:** the learning rate; per task: `ner=0.02`.\n" in text
    data.multitask_options = {"head_learning_rate_factor": 1.0}  # heads at the encoder's rate: nothing to say
    assert "Task heads' peak learning rate" not in write_model_card(tmp_path / "c", tiny, data).content


def test_card_says_whether_embeddings_were_preserved_and_through_an_adapter(tmp_path):
    model = MTSTModel(tiny_mtst_config())
    data = full_card_data()
    data.multitask_options = {"embedding_preservation": 1.0, "embedding_preservation_loss": "cosine"}
    text = write_model_card(tmp_path / "a", model, data).content
    assert "**Sentence embeddings preserved:**" in text and "1 × the mean (1 − cosine)" in text
    assert "embedding adapter" not in text
    model.add_embedding_adapter()
    text = write_model_card(tmp_path / "b", model, data).content
    assert "passes through an embedding adapter (`embedding_adapter`" in text
    data.multitask_options = {"embedding_preservation": 0.0}
    assert "**Sentence embeddings not preserved:**" in write_model_card(tmp_path / "c", model, data).content
    heads = list(model.config.head_task_names)  # three head tasks
    data.multitask_options = {"embedding_preservation": 1.0, "embedding_preservation_shared": True}
    text = write_model_card(tmp_path / "s", model, data).content
    assert (
        "1 / 3 × the mean (1 − cosine) was added to every head task's batch loss (`embedding_preservation`, " in text
    )
    assert "shared by the 3 head tasks it kept: `embedding_preservation_shared`, since" in text, text
    assert "the weight each task's batches carried" not in text  # all carried 1 / 3: nothing more to say
    data.multitask_options["embedding_preservation_weights"] = f"{heads[0]}=0"
    text = write_model_card(tmp_path / "d", model, data).content
    weights = ", ".join(f"`{name}` {0 if name == heads[0] else 0.5}" for name in heads)
    assert "shared by the 2 head tasks it kept" in text
    expected = f"carried (with `embedding_preservation_weights`): {weights}; the texts of a task at 0 were left free."
    assert expected in text, text
    # the weights the trainer used win over the options (a grown model's run may train some of its tasks only)
    data.preservation_task_weights = {heads[1]: 1.0}
    text = write_model_card(tmp_path / "t", model, data).content
    assert "shared by" not in text and "the weight each task's batches carried" not in text
    data.preservation_task_weights = {}
    data.multitask_options = {"embedding_preservation": 1.0, "embedding_preservation_weights": f"{heads[0]}=0"}
    text = write_model_card(tmp_path / "u", model, data).content  # not shared: the named weight and the global one
    weights = ", ".join(f"`{name}` {0 if name == heads[0] else 1}" for name in heads)
    assert "shared by" not in text and f"carried (with `embedding_preservation_weights`): {weights};" in text
    data.multitask_options["embedding_preservation_weights"] = json.dumps({name: 0 for name in heads})
    assert "**Sentence embeddings not preserved:**" in write_model_card(tmp_path / "e", model, data).content


def test_every_python_snippet_of_the_card_compiles(tiny, tmp_path):
    text = write_model_card(tmp_path, tiny, full_card_data()).content
    blocks = text.split("```python\n")[1:]
    assert len(blocks) == 5
    for block in blocks:
        compile(block.split("```")[0], "<card>", "exec")


def test_unknown_facts_are_html_comments_never_none(tiny, tmp_path):
    tiny.config.encoder._name_or_path = str(tmp_path / "my-local-backbone")
    tiny.save_pretrained(tmp_path)
    card = write_model_card(tmp_path, tiny)  # nothing known but the model
    text = card.content
    meta = metadata_load(tmp_path / "README.md")
    assert set(meta) == {"library_name", "pipeline_tag", "tags"}
    for comment in (
        "<!-- language: not given -->",
        "<!-- license: not given -->",
        "<!-- base model: not a Hub model",
        "<!-- evaluation results: none were recorded",
        "<!-- training log: none recorded -->",
        "<!-- loss curve: no losses were logged -->",
        "<!-- training hyperparameters: not recorded -->",
    ):
        assert comment in text, comment
    assert "None" not in text and "none recorded" in text
    assert not (tmp_path / "loss_curve.svg").exists()
    assert_no_local_paths(text, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert "_name_or_path" not in config["encoder"]  # a local path with no known Hub id is dropped


@pytest.mark.parametrize(
    "primary, tag",
    [(None, "text-classification"), ("ner", "token-classification"), ("sentiment", "text-classification")],
)
def test_pipeline_tag_follows_the_primary_task(tmp_path, primary, tag):
    model = MTSTModel(tiny_mtst_config(primary_task=primary))
    write_model_card(tmp_path, model)
    assert metadata_load(tmp_path / "README.md")["pipeline_tag"] == tag


def test_token_only_model_gets_token_tags(tmp_path):
    model = MTSTModel(tiny_mtst_config(tasks={"ner": TASKS["ner"]}))
    write_model_card(tmp_path, model)
    meta = metadata_load(tmp_path / "README.md")
    assert meta["pipeline_tag"] == "token-classification"
    assert "token-classification" in meta["tags"] and "text-classification" not in meta["tags"]


@pytest.mark.parametrize(
    "value, expected",
    [
        (backbone_path(), "sentence-transformers/all-MiniLM-L6-v2"),
        ("sentence-transformers/all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"),
        ("bert-base-uncased", "bert-base-uncased"),
        ("/data/models/my-encoder", None),
        ("./my-encoder", None),
        ("C:\\models\\bert", None),
        (
            "/root/.cache/huggingface/hub/models--google-bert--bert-base-cased/snapshots/abc",
            "google-bert/bert-base-cased",
        ),
        (None, None),
        ("", None),
    ],
)
def test_base_model_is_a_hub_id_or_nothing(value, expected):
    assert resolve_base_model(value) == expected


def test_hub_cache_snapshot_maps_to_its_repo_id(tmp_path):
    snapshot = tmp_path / "models--google-bert--bert-base-cased" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    assert resolve_base_model(str(snapshot)) == "google-bert/bert-base-cased"


def test_task_names_with_underscores_and_prefixes(tmp_path):
    tasks = {
        "news": {"type": "sequence_classification", "labels": ["a", "b"]},
        "news_topic": {"type": "sequence_classification", "labels": ["x", "y"]},
    }
    data = MTSTCardData().register(tiny_mtst_config(tasks=tasks))
    data.set_eval_results({"eval_news_topic_accuracy": 0.9, "eval_news_accuracy": 0.6, "test_news_accuracy": 0.5})
    assert data.results == {
        "validation": {"news_topic": {"accuracy": 0.9}, "news": {"accuracy": 0.6}},
        "test": {"news": {"accuracy": 0.5}},
    }


def test_label_names_with_pipes_and_line_breaks_keep_the_tables_whole(tmp_path):
    """A label "A|B" split its table row into more cells and a label with a line break ended the row."""
    tasks = {
        "topic": {"type": "sequence_classification", "labels": ["News|World", "Sports\nand games"]},
        "ner": {"type": "token_classification", "labels": ["O", "B-A|B", "I-A|B"]},
    }
    model = MTSTModel(tiny_mtst_config(tasks=tasks))
    data = MTSTCardData().register(model.config)
    data.set_eval_results({"eval_topic_accuracy": 0.5, "eval_ner_f1": 0.4, "eval_ner_A|B_f1": 0.4})
    text = write_model_card(tmp_path, model, data).content
    body = text.split("\n---\n", 1)[1]
    tables, current = [], []
    for line in [*body.splitlines(), ""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    assert len(tables) >= 3
    for table in tables:
        cells = [len(re.split(r"(?<!\\)\|", row.strip())) for row in table]
        assert len(set(cells)) == 1, table
    assert "`News\\|World`, `Sports and games`" in body and "(entity types: A\\|B)" in body
    assert any(row.split("|")[1:3] == [" `ner` ", " validation "] and "A\\|B" in row for t in tables for row in t)


def test_write_model_card_never_raises(tiny, tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(modelcard_mtst, "TEMPLATE_PATH", tmp_path / "missing_template.md")
    with caplog.at_level(logging.WARNING, logger="mtst"):
        card = write_model_card(tmp_path / "out", tiny, full_card_data())
    assert "writing a minimal one" in caplog.text
    meta = metadata_load(tmp_path / "out" / "README.md")
    assert meta["pipeline_tag"] == "text-classification" and "mtst" in meta["tags"]
    assert "`World`" in card.content and "None" not in card.content
    assert_no_local_paths(card.content, tmp_path)
    # no model and no config.json: still a card, still no exception
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mtst"):
        write_model_card(tmp_path / "empty")
    assert (tmp_path / "empty" / "README.md").exists() and "minimal" in caplog.text


def test_card_from_a_saved_folder_without_the_model(tiny, tmp_path):
    tiny.save_pretrained(tmp_path)
    write_model_card(tmp_path, None, full_card_data())
    meta = metadata_load(tmp_path / "README.md")
    assert meta["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert len(meta["model-index"][0]["results"]) == 2  # topic and ner from the Hub; sentiment's local files are not


def test_finalize_copies_code_and_handler_and_cleans_config(tiny, tmp_path):
    tiny.save_pretrained(tmp_path)
    assert "site-packages" in (tmp_path / "config.json").read_text()
    copied = finalize_model_dir(tmp_path)
    assert "handler.py" in copied
    for name in publish_mtst.CODE_FILES:
        assert (tmp_path / name).is_file(), name
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["encoder"]["_name_or_path"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert config["auto_map"]["AutoModel"] == "modeling_mtst.MTSTModel" and "multitask" in config["custom_pipelines"]
    assert_no_local_paths((tmp_path / "config.json").read_text(), tmp_path)
    assert finalize_model_dir(tmp_path) == []  # idempotent


def test_loss_curve_svg():
    pytest.importorskip("matplotlib")
    train, validation = [(1, 2.0), (2, 1.5), (3, float("nan")), (4, 1.0)], [(2, 1.6), (4, 1.2)]
    svg = loss_curve_svg(train, validation)
    root = ET.fromstring(svg)
    texts = {"".join(t.itertext()) for t in root.iter("{http://www.w3.org/2000/svg}text")}
    assert {"Training loss", "Validation loss", "step", "loss"} <= texts  # text kept as text
    assert svg == loss_curve_svg(train, validation)  # no date, fixed ids: the same losses give the same file
    assert svg != loss_curve_svg(train[:2], validation)
    assert loss_curve_svg([], []) is None and loss_curve_svg([(1, float("nan"))]) is None
    assert ET.fromstring(loss_curve_svg([(5, 1.0)]))  # one point: still a valid chart
    data = MTSTCardData()
    data.set_log_history([{"loss": y, "step": x} for x, y in train] + [{"eval_loss": 1.6, "step": 2}])
    assert data.loss_points() == ([(1.0, 2.0), (2.0, 1.5), (4.0, 1.0)], [(2.0, 1.6)])  # the NaN point is skipped


def test_without_matplotlib_the_card_has_no_loss_curve(tiny, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises ImportError
    (tmp_path / "loss_curve.svg").write_text("<svg/>")  # an earlier curve is not left behind
    text = write_model_card(tmp_path, tiny, full_card_data()).content
    assert "<!-- loss curve: not drawn (matplotlib is not installed) -->" in text
    assert "loss_curve.svg" not in text and not (tmp_path / "loss_curve.svg").exists()
    assert card_headings(text) == CARD_HEADINGS


def test_scrub_removes_tokens_and_local_paths(tmp_path):
    text = f"token hf_{'a' * 34} path {tmp_path}/x and {os.getcwd()}/y, home {os.path.expanduser('~')}/z"
    clean = scrub(text, token="s3cr3t-value", extra_paths=[tmp_path])
    assert "hf_" not in clean and "<redacted>" in clean
    assert_no_local_paths(clean, tmp_path, os.getcwd())
    assert scrub("my s3cr3t-value here", token="s3cr3t-value") == "my <redacted> here"


# ---------------------------------------------------------------------------------------------------------------------
# The Inference Endpoints handler, on a local folder
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def handler(tokenizer, tmp_path_factory):
    torch.manual_seed(0)
    model = MTSTModel(tiny_mtst_config(embedding_dim=16)).eval()
    folder = tmp_path_factory.mktemp("handler_model")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    write_model_card(folder, model)  # copies handler.py in
    from mtst.remote.handler import EndpointHandler

    return EndpointHandler(str(folder))


def test_handler_answers_every_task(handler):
    answer = handler({"inputs": "John Smith flew to Paris on Monday."})
    assert set(answer) == {"topic", "sentiment", "ner"}
    assert answer["topic"]["label"] in TOPIC_LABELS and 0 <= answer["topic"]["score"] <= 1
    assert answer["sentiment"]["label"] in SENTIMENT_LABELS
    assert isinstance(answer["ner"], list)
    answers = handler(
        {
            "inputs": ["First text.", "Second text."],
            "parameters": {"tasks": ["sentiment"], "return_embedding": True, "return_all_scores": True},
        }
    )
    assert len(answers) == 2 and all(set(a) == {"sentiment", "embedding"} for a in answers)
    assert len(answers[0]["embedding"]) == 16 and set(answers[0]["sentiment"]["scores"]) == set(SENTIMENT_LABELS)
    assert handler({"inputs": []}) == []
    json.dumps(answers)  # the answer is JSON


@pytest.mark.parametrize(
    "request_body, message",
    [
        ("just a string", "must be a JSON object"),
        ({"text": "x"}, 'has no "inputs"'),
        ({"inputs": 3}, "a string or a list of strings"),
        ({"inputs": ["ok", 5]}, "item(s) [1]"),
        ({"inputs": "x", "parameters": {"tasks": ["nope"]}}, "this model's tasks: topic, sentiment, ner"),
        ({"inputs": "x", "parameters": {"colour": "red"}}, "Unknown parameter(s) ['colour']"),
        ({"inputs": "x", "parameters": {"return_embedding": "yes"}}, "must be true or false"),
        ({"inputs": "x", "parameters": {"max_length": 0}}, "positive integer"),
        ({"inputs": "x", "parameters": []}, "must be a JSON object"),
        ({"inputs": "x", "extra": 1}, "Unknown request key(s)"),
    ],
)
def test_handler_rejects_bad_requests(handler, request_body, message):
    with pytest.raises(ValueError) as err:
        handler(request_body)
    assert message in str(err.value)
