"""Models saved by earlier MTST releases keep loading, with the same outputs: the fixture in
tests/fixtures/saved-0.2.0.dev0 was saved by 0.2.0.dev0 before the package layout (its code files are that release's
flat modules). It loads as remote code in a fresh process (AutoModel, the multitask pipeline, sentence-transformers),
and with this installation's `MTSTModel`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from transformers import AutoTokenizer

from mtst import MTSTModel

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "saved-0.2.0.dev0"
REFERENCE = json.loads((FIXTURE / "reference.json").read_text())

REMOTE = r"""
import json, sys
import torch
from transformers import AutoModel, AutoTokenizer, pipeline
from sentence_transformers import SentenceTransformer

path, texts = sys.argv[1], json.loads(sys.argv[2])
model = AutoModel.from_pretrained(path, trust_remote_code=True).eval()
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
batch = AutoTokenizer.from_pretrained(path)(texts, padding=True, return_tensors="pt")
with torch.no_grad():
    out = model(**batch)
st = SentenceTransformer(path, trust_remote_code=True, device="cpu").encode(texts, convert_to_tensor=True)
answers = pipeline(model=path, trust_remote_code=True)(texts)
print("RESULT", json.dumps({"logits": {k: v.tolist() for k, v in out.task_logits.items()},
                  "embedding": out.sentence_embedding.tolist(), "st": st.tolist(),
                  "pipeline_tasks": sorted(answers[0])}))
"""


def assert_close(got, expected, tol=1e-5):
    got, expected = torch.tensor(got), torch.tensor(expected)
    assert got.shape == expected.shape and torch.allclose(got, expected, atol=tol), (got - expected).abs().max()


def test_a_model_saved_by_0_2_0_dev0_loads_as_remote_code_with_the_same_outputs(tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(FIXTURE / "model", model_dir)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": "", "HF_HOME": str(tmp_path / "hf")}
    result = subprocess.run(
        [sys.executable, "-c", REMOTE, str(model_dir), json.dumps(REFERENCE["texts"])],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "RESULT " in result.stdout, result.stdout[-2000:] + result.stderr[-2000:]
    out = json.loads(result.stdout.rsplit("RESULT ", 1)[1].splitlines()[0])
    for task, logits in REFERENCE["logits"].items():
        assert_close(out["logits"][task], logits)
    assert_close(out["embedding"], REFERENCE["embedding"])
    assert_close(out["st"], REFERENCE["embedding"], tol=1e-4)
    assert out["pipeline_tasks"] == ["ner", "topic"]


def test_a_model_saved_by_0_2_0_dev0_loads_with_this_installation():
    model = MTSTModel.from_pretrained(FIXTURE / "model").eval()
    tokenizer = AutoTokenizer.from_pretrained(FIXTURE / "model")
    batch = tokenizer(REFERENCE["texts"], padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**batch)
    for task, logits in REFERENCE["logits"].items():
        assert_close(out.task_logits[task], logits)
    assert_close(out.sentence_embedding, REFERENCE["embedding"])
