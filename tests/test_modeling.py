"""MTSTConfig / MTSTModel: shapes, pooling options, losses, save/load, remote code, per-task views and errors."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from conftest import NER_LABELS, TASKS, TOPIC_LABELS, tiny_encoder_config, tiny_mtst_config

from mtst.remote.configuration_mtst import MTSTConfig, MTSTConfigError
from mtst.remote.modeling_mtst import (
    MTSTForSequenceClassification,
    MTSTForTokenClassification,
    MTSTModel,
)

SENTENCES = ["Apple is opening a new office in Paris.", "The match ended in a draw.", "Shares fell sharply."]


class ModelTester:
    """Builds a tiny model of one encoder family plus a matching batch."""

    def __init__(self, kind="bert", **config_kwargs):
        torch.manual_seed(0)
        self.config = tiny_mtst_config(kind, **config_kwargs)
        self.model = MTSTModel(self.config).eval()
        generator = torch.Generator().manual_seed(1)
        self.input_ids = torch.randint(5, 1000, (3, 7), generator=generator)
        self.attention_mask = torch.tensor([[1] * 7, [1] * 5 + [0] * 2, [1] * 3 + [0] * 4])

    def batch(self):
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask}


@pytest.mark.parametrize("kind", ["bert", "distilbert", "roberta"])
def test_every_head_has_the_right_shape(kind):
    tester = ModelTester(kind)
    out = tester.model(**tester.batch())
    assert out.logits is None
    assert out.task_logits["topic"].shape == (3, 4)
    assert out.task_logits["sentiment"].shape == (3, 3)
    assert out.task_logits["ner"].shape == (3, 7, len(NER_LABELS))
    assert out.sentence_embedding.shape == (3, 32)
    assert out.last_hidden_state.shape == (3, 7, 32)
    single = tester.model(**tester.batch(), task="ner")
    assert list(single.task_logits) == ["ner"]
    assert torch.allclose(single.logits, out.task_logits["ner"])


def _expected_pooling(states, mask, mode):
    if mode == "cls":
        return states[:, 0]
    if mode == "max":
        return torch.stack([s[m.bool()].max(dim=0).values for s, m in zip(states, mask)])
    return torch.stack([s[m.bool()].mean(dim=0) for s, m in zip(states, mask)])


@pytest.mark.parametrize("pooling", ["mean", "cls", "max"])
@pytest.mark.parametrize("normalize", ["none", "l2", "l1"])
@pytest.mark.parametrize("embedding_dim", [None, 8])
def test_pooling_projection_and_normalization(pooling, normalize, embedding_dim):
    tester = ModelTester(pooling=pooling, normalize=normalize, embedding_dim=embedding_dim)
    model = tester.model
    out = model(**tester.batch(), output_hidden_states=True)
    expected = _expected_pooling(out.last_hidden_state, tester.attention_mask, pooling)
    if embedding_dim:
        expected = model.projection(expected)
    # sequence heads read the embedding before normalization
    assert torch.allclose(out.task_logits["topic"], model.heads["topic"](expected), atol=1e-6)
    if normalize == "l2":
        expected = F.normalize(expected, p=2, dim=-1)
        assert torch.allclose(out.sentence_embedding.norm(dim=-1), torch.ones(3), atol=1e-5)
    elif normalize == "l1":
        expected = F.normalize(expected, p=1, dim=-1)
    assert out.sentence_embedding.shape == (3, embedding_dim or 32)
    assert torch.allclose(out.sentence_embedding, expected, atol=1e-6)
    assert out.hidden_states is not None and len(out.hidden_states) == 3
    # padding never changes a sentence's embedding
    short = model(input_ids=tester.input_ids[2:, :3], attention_mask=tester.attention_mask[2:, :3])
    assert torch.allclose(short.sentence_embedding[0], out.sentence_embedding[2], atol=1e-5)


def test_head_options_are_applied():
    tasks = {
        "topic": {
            "type": "sequence_classification",
            "labels": TOPIC_LABELS,
            "hidden_size": 16,
            "layer_norm": False,
            "activation": "tanh",
            "dropout": 0.3,
        },
        "ner": {"type": "token_classification", "labels": NER_LABELS},
    }
    model = MTSTModel(tiny_mtst_config(tasks=tasks))
    head = model.heads["topic"]
    assert head.dense.out_features == 16 and head.layer_norm is None
    assert isinstance(head.activation, torch.nn.Tanh) and head.dropout.p == 0.3
    assert model.heads["ner"].dense is None and model.heads["ner"].layer_norm is not None
    assert isinstance(model.heads["ner"].activation, torch.nn.GELU)


def test_losses_match_hand_computed_cross_entropy():
    tester = ModelTester()
    model = tester.model
    seq_labels = torch.tensor([0, 3, 1])
    out = model(**tester.batch(), task="topic", labels=seq_labels)
    assert torch.allclose(out.loss, F.cross_entropy(out.logits, seq_labels))

    token_labels = torch.full((3, 7), -100)
    token_labels[0, 1:4] = torch.tensor([1, 2, 0])
    token_labels[1, 2] = 5
    out = model(**tester.batch(), task="ner", labels=token_labels)
    keep = token_labels != -100
    assert torch.allclose(out.loss, F.cross_entropy(out.logits[keep], token_labels[keep]))

    # a batch whose labels are all ignored gives 0, not NaN
    out = model(**tester.batch(), task="ner", labels=torch.full((3, 7), -100))
    assert out.loss.item() == 0.0


def test_joint_labels_give_the_weighted_sum_of_task_losses():
    tasks = {name: dict(spec) for name, spec in TASKS.items()}
    tasks["ner"]["loss_weight"] = 0.5
    tester = ModelTester(tasks=tasks)
    token_labels = torch.zeros(3, 7, dtype=torch.long)
    out = tester.model(**tester.batch(), labels={"topic": torch.tensor([0, 1, 2]), "ner": token_labels})
    assert set(out.task_losses) == {"topic", "ner"}
    assert torch.allclose(out.loss, out.task_losses["topic"] + 0.5 * out.task_losses["ner"])


def _assert_same_outputs(a, b, batch):
    out_a, out_b = a(**batch), b(**batch)
    for name in out_a.task_logits:
        assert torch.equal(out_a.task_logits[name], out_b.task_logits[name]), name
    assert torch.equal(out_a.sentence_embedding, out_b.sentence_embedding)


@pytest.mark.parametrize("kind", ["bert", "distilbert", "roberta"])
def test_save_and_load_reproduce_every_task(tmp_path, kind):
    tester = ModelTester(kind, embedding_dim=16, normalize="l2")
    tester.model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert [t["name"] for t in saved["tasks"]] == list(TASKS)  # order survives sorted JSON keys
    assert (tmp_path / "model.safetensors").exists() and not list(tmp_path.glob("*.bin"))
    reloaded = MTSTModel.from_pretrained(tmp_path).eval()
    assert reloaded.config.task_names == list(TASKS)
    _assert_same_outputs(tester.model, reloaded, tester.batch())


def test_remote_code_round_trip_in_a_fresh_process(tmp_path, tokenizer):
    tester = ModelTester(embedding_dim=16)
    tester.model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    for name in ("configuration_mtst.py", "heads_mtst.py", "modeling_mtst.py", "pipeline_mtst.py"):
        assert (tmp_path / "model" / name).exists(), name
    auto_map = json.loads((tmp_path / "model" / "config.json").read_text())["auto_map"]
    assert set(auto_map) == {
        "AutoConfig",
        "AutoModel",
        "AutoModelForSequenceClassification",
        "AutoModelForTokenClassification",
    }
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    expected = tester.model(**batch)
    torch.save(
        {"batch": dict(batch), "logits": expected.task_logits, "emb": expected.sentence_embedding},
        tmp_path / "expected.pt",
    )
    script = textwrap.dedent(
        f"""
        import torch
        from transformers import AutoModel, AutoModelForSequenceClassification, AutoModelForTokenClassification
        path = {str(tmp_path / "model")!r}
        ref = torch.load({str(tmp_path / "expected.pt")!r})
        model = AutoModel.from_pretrained(path, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        out = model(**ref["batch"])
        for name, logits in ref["logits"].items():
            assert torch.equal(out.task_logits[name], logits), name
        assert torch.equal(out.sentence_embedding, ref["emb"])
        # one encoder shared by every head: parameters are the encoder's, the heads' and the projection's
        names = {{n.split(".")[0] for n, _ in model.named_parameters()}}
        assert names == {{"encoder", "heads", "projection"}}, names
        seq = AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=True, task="sentiment")
        assert torch.equal(seq(**ref["batch"]).logits, ref["logits"]["sentiment"])
        assert seq.config.id2label == {{0: "negative", 1: "neutral", 2: "positive"}}
        tok = AutoModelForTokenClassification.from_pretrained(path, trust_remote_code=True).eval()
        assert torch.equal(tok(**ref["batch"]).logits, ref["logits"]["ner"])
        from sentence_transformers import SentenceTransformer
        st = SentenceTransformer(path, trust_remote_code=True, device="cpu")
        st_emb = st.encode({SENTENCES!r}, convert_to_tensor=True)
        assert torch.nn.functional.cosine_similarity(st_emb, ref["emb"]).min() >= 0.9999
        print("ROUND TRIP OK")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**__import__("os").environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ROUND TRIP OK" in result.stdout


def test_standard_and_multitask_pipelines_return_the_configured_labels(tmp_path, tokenizer):
    from transformers import pipeline

    model = ModelTester().model
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)

    clf = pipeline("text-classification", model=str(tmp_path), trust_remote_code=True)
    assert clf(SENTENCES[0])[0]["label"] in TOPIC_LABELS
    clf = pipeline(
        "text-classification", model=str(tmp_path), trust_remote_code=True, model_kwargs={"default_task": "sentiment"}
    )
    assert clf(SENTENCES[0])[0]["label"] in ["negative", "neutral", "positive"]

    ner = pipeline("token-classification", model=str(tmp_path), trust_remote_code=True, aggregation_strategy="simple")
    groups = ner(SENTENCES[0])
    assert groups and {g["entity_group"] for g in groups} <= {"PER", "ORG", "LOC", "MISC"}

    multi = pipeline(model=str(tmp_path), trust_remote_code=True)
    answers = multi(SENTENCES, return_embedding=True, return_all_scores=True, batch_size=2)
    assert len(answers) == len(SENTENCES)
    for text, answer in zip(SENTENCES, answers):
        assert answer["topic"]["label"] in TOPIC_LABELS
        assert set(answer["topic"]["scores"]) == set(TOPIC_LABELS)
        assert answer["sentiment"]["label"] in ["negative", "neutral", "positive"]
        for entity in answer["ner"]:
            assert entity["entity_group"] in {"PER", "ORG", "LOC", "MISC"}
            assert text[entity["start"] : entity["end"]] == entity["word"]
        assert len(answer["embedding"]) == 32
    only = multi(SENTENCES[0], tasks=["sentiment"])
    assert list(only) == ["sentiment"]


def test_multitask_pipeline_covers_long_texts_completely(tmp_path, tokenizer):
    from transformers import pipeline

    model = ModelTester().model
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    multi = pipeline(model=str(tmp_path), trust_remote_code=True)
    text = " ".join(f"word{i}" for i in range(400))  # far more than one 32-token window
    windows = list(multi.preprocess(text, max_length=32, stride=8))
    assert len(windows) > 10
    covered = {w for window in windows for w in (window["word_ids"][0] - 1).tolist() if w >= 0}
    assert covered == set(range(400))
    labels = multi._word_labels([multi.forward(dict(w)) for w in windows], "ner", NER_LABELS)
    assert len(labels) == 400 and labels[-1][1] == len(text)
    answer = multi(text, max_length=32, stride=8, return_embedding=True)
    assert all(text[e["start"] : e["end"]] == e["word"] for e in answer["ner"])


@pytest.mark.parametrize("max_length,stride", [(32, 8), (16, 0), (8, 5), (512, 100)])
def test_pipeline_windows_hold_every_token_with_the_stride_overlap(tokenizer, max_length, stride):
    """The windows are cut by the pipeline from one whole-text encoding, so they do not depend on how the installed
    tokenizers release splits overflowing tokens (0.23.2 dropped all but one short overflow window)."""
    from mtst.remote.pipeline_mtst import text_windows

    text = " ".join(f"word{i} naïve, co-operate!" for i in range(120))
    whole = tokenizer(text, add_special_tokens=False)["input_ids"]
    windows = text_windows(tokenizer, text, max_length, stride)
    assert len(windows) == max(1, -(-(len(whole) - stride) // (max_length - 2 - stride)))
    rebuilt = []
    for i, window in enumerate(windows):
        ids = window["input_ids"]
        assert len(ids) <= max_length and ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
        assert all(len(values) == len(ids) for values in window.values())
        assert window["word_ids"][0] is None and window["word_ids"][-1] is None
        body = ids[1:-1]
        if i:  # each window repeats the last `stride` tokens of the one before
            assert body[:stride] == rebuilt[len(rebuilt) - stride :]
            body = body[stride:]
        rebuilt += body
        for (start, end), token in zip(window["offset_mapping"][1:-1], ids[1:-1]):
            piece = tokenizer.convert_ids_to_tokens(token).removeprefix("##")
            assert tokenizer.backend_tokenizer.normalizer.normalize_str(text[start:end]) == piece
    assert rebuilt == whole
    assert text_windows(tokenizer, "short", max_length, stride) == [
        {k: v for k, v in tokenizer("short", return_offsets_mapping=True).items()} | {"word_ids": [None, 0, None]}
    ]


def test_group_entities_decodes_bio():
    from mtst.remote.pipeline_mtst import group_entities

    text = "Tim Cook visited New York"
    words = [
        (0, 3, "B-PER", 0.9),
        (4, 8, "I-PER", 0.7),
        (9, 16, "O", 0.99),
        (17, 20, "B-LOC", 0.8),
        (21, 25, "I-LOC", 0.6),
    ]
    entities = group_entities(text, words)
    assert [(e["entity_group"], e["word"]) for e in entities] == [("PER", "Tim Cook"), ("LOC", "New York")]
    assert entities[0]["score"] == pytest.approx(0.8)
    # I- of another type starts a new entity; a stray I- after O starts one too
    words = [(0, 3, "B-PER", 0.9), (4, 8, "I-LOC", 0.5), (9, 16, "O", 0.9), (17, 20, "I-ORG", 0.5)]
    assert [e["entity_group"] for e in group_entities(text, words)] == ["PER", "LOC", "ORG"]


def test_task_views_pick_a_task_and_reject_the_wrong_kind(tmp_path):
    ModelTester().model.save_pretrained(tmp_path)
    view = MTSTForSequenceClassification.from_pretrained(tmp_path)
    assert view.task == "topic" and view.config.id2label[3] == "Sci/Tech"
    view = MTSTForSequenceClassification.from_pretrained(tmp_path, task="sentiment")
    assert view.task == "sentiment" and view.num_labels == 3
    assert MTSTForTokenClassification.from_pretrained(tmp_path).task == "ner"
    with pytest.raises(
        MTSTConfigError,
        match="type sequence_classification, multi_label_classification, regression; available: topic, sentiment",
    ):
        MTSTForSequenceClassification.from_pretrained(tmp_path, task="ner")


def test_gradient_checkpointing_is_delegated_to_the_encoder():
    from mtst.training.freezing import encoder_layers

    tester = ModelTester()
    model = tester.model.train()
    model.gradient_checkpointing_enable()
    assert all(layer.gradient_checkpointing for layer in encoder_layers(model))
    out = model(**tester.batch(), task="topic", labels=torch.tensor([0, 1, 2]))
    out.loss.backward()
    assert model.encoder.embeddings.word_embeddings.weight.grad is not None


def test_encode_matches_forward_and_keeps_input_order(tokenizer):
    model = ModelTester(normalize="l2").model
    sentences = ["short", "a much longer sentence with many more words in it", "medium length one"]
    embeddings = model.encode(sentences, tokenizer=tokenizer, batch_size=2)
    for sentence, embedding in zip(sentences, embeddings):
        single = model(**tokenizer([sentence], return_tensors="pt")).sentence_embedding[0]
        assert torch.allclose(embedding, single, atol=1e-5)
    assert model.encode("short", tokenizer=tokenizer).shape == (32,)


def test_encode_trusts_no_remote_code_unless_asked(tokenizer, monkeypatch):
    """encode() without a tokenizer loaded one with trust_remote_code=True on its own."""
    import mtst.remote.modeling_mtst as modeling

    model = ModelTester().model
    calls = []
    monkeypatch.setattr(
        modeling.AutoTokenizer, "from_pretrained", lambda path, **kwargs: calls.append(kwargs) or tokenizer
    )
    model.encode("short")
    model.encode("short", trust_remote_code=True)
    assert calls == [{"trust_remote_code": False}, {"trust_remote_code": True}]


def test_from_backbone_loads_the_pretrained_encoder_weights(tmp_path):
    from transformers import AutoModel

    for kind in ("bert", "distilbert"):
        torch.manual_seed(3)
        backbone = AutoModel.from_config(tiny_encoder_config(kind))
        backbone.save_pretrained(tmp_path / kind)
        model = MTSTModel.from_backbone(str(tmp_path / kind), tasks=TASKS, pooling="cls")
        reference = backbone.state_dict()
        for name, value in model.encoder.state_dict().items():
            assert torch.equal(value, reference[name]), name
        assert model.config.pooling == "cls" and model.config.task_names == list(TASKS)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"pooling": "avg"}, "allowed values: 'mean', 'cls', 'max'"),
        ({"normalize": "l3"}, "allowed values: 'none', 'l2', 'l1'"),
        ({"embedding_dim": 0}, "positive integer"),
        ({"tasks": {}}, "`tasks` is empty"),
        (
            {"tasks": {"t": {"type": "ranking", "labels": ["a", "b"]}}},
            "allowed values: 'sequence_classification', 'token_classification'",
        ),
        ({"tasks": {"t": {"type": "regression", "labels": ["a", "b"]}}}, "takes no 'labels'"),
        ({"tasks": {"t": {"type": "regression", "score_std": 0}}}, "'score_std' a positive one"),
        (
            {"tasks": {"t": {"type": "multi_label_classification", "labels": ["a"], "thresholds": [1]}}},
            "must hold numbers in",
        ),
        ({"tasks": {"t": {"type": "multi_label_classification", "labels": ["a"], "pos_weight": [1, 2]}}}, "list of 1"),
        ({"tasks": {"t": {"type": "sequence_classification", "labels": ["a", "a", "b"]}}}, "duplicate label"),
        ({"tasks": {"t": {"type": "sequence_classification", "labels": ["a"]}}}, "at least two labels"),
        ({"tasks": {"t": {"type": "sequence_classification"}}}, "'labels' must be a non-empty list"),
        (
            {"tasks": {"t": {"type": "sequence_classification", "labels": ["a", "b"], "loss_weight": 0}}},
            "positive finite number",
        ),
        ({"tasks": {"t": {"type": "sequence_classification", "labels": ["a", "b"], "colour": 1}}}, "unknown option"),
        (
            {"tasks": {"t": {"type": "sequence_classification", "labels": ["a", "b"], "activation": "swish"}}},
            "allowed values: 'gelu'",
        ),
        (
            {
                "tasks": [
                    {"name": "t", "type": "sequence_classification", "labels": ["a", "b"]},
                    {"name": "t", "type": "sequence_classification", "labels": ["a", "b"]},
                ]
            },
            "Duplicate task name",
        ),
        ({"default_task": "nope"}, "is not a task; tasks: topic, sentiment, ner"),
        ({"encoder": {"hidden_size": 8}}, "model_type"),
    ],
)
def test_bad_configs_raise_clear_errors(kwargs, message):
    base = {"encoder": tiny_encoder_config(), "tasks": TASKS}
    with pytest.raises(MTSTConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        MTSTConfig(**{**base, **kwargs})


def test_unknown_task_at_forward_names_the_tasks():
    tester = ModelTester()
    with pytest.raises(ValueError, match="Unknown task 'topics'; this model's tasks: topic, sentiment, ner"):
        tester.model(**tester.batch(), task="topics")
    with pytest.raises(ValueError, match="needs a `task`"):
        tester.model(**tester.batch(), labels=torch.tensor([0, 1, 2]))


@pytest.mark.slow
def test_mean_l2_embeddings_match_sentence_transformers():
    """With the real all-MiniLM-L6-v2 backbone, MTST embeddings equal SentenceTransformer's (cosine >= 0.9999)."""
    from conftest import backbone_path
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer

    path = backbone_path()
    model = MTSTModel.from_backbone(path, tasks=TASKS, pooling="mean", normalize="l2").eval()
    tok = AutoTokenizer.from_pretrained(path)
    st = SentenceTransformer(path, device="cpu")
    words = "the a market team city company government game players stock price new old won lost".split()
    generator = torch.Generator().manual_seed(0)
    sentences = [
        " ".join(words[i] for i in torch.randint(0, len(words), (int(n),), generator=generator))
        for n in torch.randint(3, 40, (300,), generator=generator)
    ]
    ours = model.encode(sentences, tokenizer=tok, batch_size=64, max_length=st.max_seq_length)
    theirs = torch.from_numpy(st.encode(sentences, batch_size=64))
    cosine = F.cosine_similarity(ours, theirs, dim=-1)
    assert cosine.min().item() >= 0.9999, cosine.min().item()


@pytest.mark.parametrize("kind", ["sequence_classification", "sentence_similarity"])
def test_a_task_added_to_a_loaded_model_leaves_the_encoders_attention_masking_intact(tmp_path, kind):
    """add_task built its config around the model's own encoder config, which reset the encoder's attention
    implementation: afterwards padded rows attended to their padding (embeddings moved by ~1e-3 in a tiny model)."""
    tester = ModelTester()
    tester.model.save_pretrained(tmp_path)
    model = MTSTModel.from_pretrained(tmp_path).eval()
    model.add_task("extra", kind, ["a", "b"] if kind == "sequence_classification" else None)
    batch = tester.batch()
    with torch.no_grad():
        padded = model(**batch).sentence_embedding
        for row, length in ((1, 5), (2, 3)):
            alone = model(input_ids=batch["input_ids"][row : row + 1, :length]).sentence_embedding[0]
            torch.testing.assert_close(padded[row], alone, atol=1e-5, rtol=0)
