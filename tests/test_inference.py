"""Inference precision and backends (inference_mtst, mtst-export, mtst-predict --dtype/--backend).

bfloat16 and int8 (PyTorch dynamic quantization) run on any CPU build; the ONNX tests export a tiny random model once
per module and need the `onnx` extra (onnx, onnxscript, onnxruntime; `make install` installs it): they are skipped
when it is missing.
"""

import importlib.util
import json
import os

import pytest
import torch
from conftest import save_tiny_mtst

from mtst import inference as inference_mtst
from mtst.cli import export as export_mtst
from mtst.cli import predict as predict_mtst
from mtst.inference import InferenceError, load_model, prepare_model
from mtst.remote.modeling_mtst import MTSTModel

TEXTS = ["Apple is opening a new office in Paris.", "The match ended in a draw.", "Shares fell sharply on Monday."]
HAS_ONNX = all(importlib.util.find_spec(name) for name in ("onnx", "onnxscript", "onnxruntime"))
needs_onnx = pytest.mark.skipif(not HAS_ONNX, reason='needs the onnx extra: pip install -e ".[onnx]"')


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return str(save_tiny_mtst(tmp_path_factory.mktemp("mtst") / "model"))


@pytest.fixture(scope="module")
def onnx_dir(model_dir, tmp_path_factory):
    if not HAS_ONNX:
        pytest.skip('needs the onnx extra: pip install -e ".[onnx]"')
    out = str(tmp_path_factory.mktemp("onnx") / "export")
    assert export_mtst.main(["onnx", "--model", model_dir, "--output", out, "--quantize"]) == 0
    return out


def cli_jsonl(capsys, *argv) -> list[dict]:
    code = predict_mtst.main(["--format", "jsonl", "--embeddings", "--all_scores", *map(str, argv), *TEXTS])
    out, err = capsys.readouterr()
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()]


def cosine(a, b) -> float:
    return float(torch.nn.functional.cosine_similarity(torch.as_tensor(a), torch.as_tensor(b), dim=-1).min())


def assert_close_answers(answers, reference, score_tol, min_cos):
    """Same sentence labels, scores within `score_tol`, embeddings with cosine >= `min_cos`."""
    assert len(answers) == len(reference)
    for got, ref in zip(answers, reference):
        for task in ("topic", "sentiment"):
            assert got[task]["label"] == ref[task]["label"]
            for label, score in ref[task]["scores"].items():
                assert abs(got[task]["scores"][label] - score) <= score_tol, (task, label)
        assert cosine(got["embedding"], ref["embedding"]) >= min_cos
        assert isinstance(got["ner"], list)


# --------------------------------------------------------------------------------------------- torch: bf16 and int8
@pytest.mark.parametrize("dtype", ["bfloat16", "int8"])
def test_prepare_model_encode_close_to_float32(model_dir, tokenizer, dtype):
    reference = MTSTModel.from_pretrained(model_dir).eval().encode(TEXTS, tokenizer)
    model = prepare_model(MTSTModel.from_pretrained(model_dir), dtype)
    if dtype == "int8":
        assert not any(type(m) is torch.nn.Linear for m in model.modules()), "every nn.Linear is quantized"
    else:
        assert next(model.parameters()).dtype == torch.bfloat16
    embeddings = model.encode(TEXTS, tokenizer)
    assert embeddings.dtype == torch.float32 and embeddings.shape == reference.shape
    assert cosine(embeddings, reference) >= 0.99


@pytest.mark.parametrize("dtype", ["bfloat16", "int8"])
def test_cli_dtype_close_to_float32(model_dir, capsys, dtype):
    reference = cli_jsonl(capsys, "--model", model_dir)
    answers = cli_jsonl(capsys, "--model", model_dir, "--dtype", dtype)
    assert_close_answers(answers, reference, score_tol=0.02, min_cos=0.99)


def test_bad_options_are_clear_errors(model_dir, capsys):
    with pytest.raises(InferenceError, match="choose one of: float32, bfloat16, int8"):
        inference_mtst.check_options("float16")
    with pytest.raises(InferenceError, match="CPU only"):
        inference_mtst.check_options("int8", "torch", "cuda")
    code = predict_mtst.main(["--model", model_dir, "--backend", "onnx", "--dtype", "bfloat16", "x"])
    assert code == 2 and "not bfloat16" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------------------ ONNX
@needs_onnx
def test_export_writes_named_outputs_tokenizer_and_config(onnx_dir):
    import onnx

    names = sorted(os.listdir(onnx_dir))
    for name in ("model.onnx", "model_int8.onnx", "config.json", "tokenizer.json"):
        assert name in names
    graph = onnx.load(os.path.join(onnx_dir, "model.onnx")).graph
    assert [o.name for o in graph.output] == [
        "sentence_embedding",
        "pooled_embedding",
        "logits_topic",
        "logits_sentiment",
        "logits_ner",
    ]


@needs_onnx
@pytest.mark.parametrize("adapter", [False, True], ids=["plain", "embedding_adapter"])
def test_a_model_with_an_embedding_task_exports_and_answers_through_its_embedding(tmp_path, tokenizer, adapter):
    """A sentence_similarity task has no head: the graph has no logits for it, and the ONNX model answers it (and the
    multitask pipeline's similarity) with the same embeddings as PyTorch, through a trained embedding adapter too."""
    from conftest import TASKS, tiny_mtst_config

    torch.manual_seed(0)
    tasks = {"topic": TASKS["topic"], "sts": {"type": "sentence_similarity", "score_range": [0, 5]}}
    model = MTSTModel(tiny_mtst_config(tasks=tasks)).eval()
    if adapter:
        with torch.no_grad():
            model.add_embedding_adapter().weight.normal_(0, 0.2)
    report = inference_mtst.export_onnx(model, str(tmp_path), tokenizer=tokenizer)
    assert report["outputs"] == ["sentence_embedding", "pooled_embedding", "logits_topic"]
    onnx_model = load_model(str(tmp_path), backend="onnx")
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = model(**batch, task="sts")
        got = onnx_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], task="sts")
        every = onnx_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    assert got.logits is None and got.task_logits == {} and set(every.task_logits) == {"topic"}
    torch.testing.assert_close(got.sentence_embedding, expected.sentence_embedding, atol=1e-4, rtol=0)
    torch.testing.assert_close(onnx_model.encode(TEXTS, tokenizer), model.encode(TEXTS, tokenizer), atol=1e-4, rtol=0)


@needs_onnx
@pytest.mark.parametrize("shape", [(1, 4), (3, 17), (2, 40)])
def test_onnx_outputs_match_pytorch(model_dir, onnx_dir, shape):
    """Every output of the ONNX Runtime model equals MTSTModel.forward to 1e-4 (padded rows included)."""
    torch.manual_seed(sum(shape))
    ids = torch.randint(1000, 20000, shape)
    mask = torch.ones_like(ids)
    if shape[0] > 1:
        mask[-1, shape[1] // 3 :] = 0
    model = MTSTModel.from_pretrained(model_dir).eval()
    onnx_model = load_model(onnx_dir, backend="onnx")
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask)
        got = onnx_model(input_ids=ids, attention_mask=mask)
    torch.testing.assert_close(got.sentence_embedding, expected.sentence_embedding, atol=1e-4, rtol=0)
    assert set(got.task_logits) == set(expected.task_logits) == {"topic", "sentiment", "ner"}
    for task, logits in expected.task_logits.items():
        torch.testing.assert_close(got.task_logits[task], logits, atol=1e-4, rtol=0)
    pooled = model.embed(expected.last_hidden_state, mask)
    torch.testing.assert_close(got.pooled_embedding, pooled, atol=1e-4, rtol=0)


@needs_onnx
def test_onnx_encode_matches_pytorch(model_dir, onnx_dir, tokenizer):
    expected = MTSTModel.from_pretrained(model_dir).eval().encode(TEXTS, tokenizer, batch_size=2)
    got = load_model(onnx_dir, backend="onnx").encode(TEXTS, tokenizer, batch_size=2)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


@needs_onnx
def test_cli_backend_onnx(model_dir, onnx_dir, capsys):
    reference = cli_jsonl(capsys, "--model", model_dir)
    answers = cli_jsonl(capsys, "--model", onnx_dir, "--backend", "onnx")
    assert_close_answers(answers, reference, score_tol=1e-4, min_cos=0.9999)
    for got, ref in zip(answers, reference):  # same entity spans and types, scores to 1e-4
        assert [{**e, "score": None} for e in got["ner"]] == [{**e, "score": None} for e in ref["ner"]]
        assert all(abs(e["score"] - r["score"]) <= 1e-4 for e, r in zip(got["ner"], ref["ner"]))
    quantized = cli_jsonl(capsys, "--model", onnx_dir, "--backend", "onnx", "--dtype", "int8")
    assert_close_answers(quantized, reference, score_tol=0.02, min_cos=0.99)


def test_export_refuses_an_opset_it_would_not_write(model_dir, tmp_path, capsys):
    """--opset 1 said it succeeded and wrote opset 18."""
    allowed = inference_mtst.onnx_opsets()
    for opset in (1, allowed.start - 1, allowed.stop):
        argv = ["onnx", "--model", model_dir, "--output", str(tmp_path / "out"), "--opset", str(opset)]
        assert export_mtst.main(argv) == 2
        err = capsys.readouterr().err
        assert f"--opset {opset} is not an opset the ONNX exporter of torch" in err
        assert f"opsets {allowed.start} to {allowed.stop - 1}" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "model.onnx").exists()


@needs_onnx
def test_export_writes_the_opset_asked_for(model_dir, tmp_path):
    import onnx

    opset = inference_mtst.onnx_opsets().start + 2
    out = tmp_path / "out"
    assert export_mtst.main(["onnx", "--model", model_dir, "--output", str(out), "--opset", str(opset)]) == 0
    imports = {o.domain: o.version for o in onnx.load(out / "model.onnx").opset_import}
    assert imports.get("", imports.get("ai.onnx")) == opset


@needs_onnx
def test_onnx_folder_errors(model_dir, onnx_dir, capsys, tmp_path):
    code = predict_mtst.main(["--model", model_dir, "--backend", "onnx", "x"])
    assert code == 2 and "has no model.onnx" in capsys.readouterr().err
    code = predict_mtst.main(["--model", onnx_dir, "x"])  # backend torch on an ONNX-only folder
    assert code == 2 and "--backend onnx" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- app.py, handler.py
@pytest.mark.parametrize("dtype", ["bfloat16", "int8"])
def test_handler_precision(model_dir, monkeypatch, dtype):
    from mtst.remote.handler import EndpointHandler

    reference = EndpointHandler(model_dir, device="cpu")(
        {"inputs": TEXTS[0], "parameters": {"return_embedding": True}}
    )
    monkeypatch.setenv("MTST_DTYPE", dtype)
    handler = EndpointHandler(model_dir, device="cpu")
    answer = handler({"inputs": TEXTS[0], "parameters": {"return_embedding": True}})
    assert answer["topic"]["label"] == reference["topic"]["label"]
    assert cosine(answer["embedding"], reference["embedding"]) >= 0.99
    if dtype == "int8":
        assert not any(type(m) is torch.nn.Linear for m in handler.pipeline.model.modules())
    monkeypatch.setenv("MTST_DTYPE", "float16")
    with pytest.raises(ValueError, match="float32, bfloat16 or int8"):
        EndpointHandler(model_dir, device="cpu")


def test_app_load_model_dtype(model_dir):
    import app

    pipe = app.load_model(model_dir, dtype="int8")
    assert not any(type(m) is torch.nn.Linear for m in pipe.model.modules())
    assert app.predict(pipe, TEXTS[0])[0]  # one value per task
