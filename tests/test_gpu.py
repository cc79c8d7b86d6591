"""On a CUDA GPU (marked `gpu`, skipped where torch.cuda.is_available() is False): one training step through
run_multitask.py in fp32, bf16 and fp16; encode() and the multitask pipeline on device=0, with the CPU's results; a
model saved after GPU training reloading in a process that sees no GPU, with the same outputs."""

import json
import math
import os
import re
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import save_tiny_mtst
from reliability_helpers import ENV, cli_args, make_tiny, run_subprocess
from safetensors.torch import load_file

pytestmark = pytest.mark.gpu

SENTENCES = ["Apple is opening a new office in Paris.", "The match ended in a draw.", "Shares fell sharply."]
LONG_TEXT = " ".join(f"word{i}" for i in range(300))  # many 32-token windows
# one GPU for the single-process runs: with several visible, the Trainer would wrap the model in DataParallel
ONE_GPU = {**ENV, "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0]}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny(tmp_path_factory.mktemp("tiny"))


def train_one_step(tiny, output_dir, *extra) -> str:
    """run_multitask.py in a subprocess (mixed precision is fixed once per process by Accelerate): one optimizer
    step, no evaluation, no checkpoint; the final model is saved. Returns the log."""
    args = cli_args(tiny, output_dir, "--do_train", "--max_steps", "1", "--eval_strategy", "no")
    result = run_subprocess([*args, "--save_strategy", "no", *extra], env=ONE_GPU)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    assert re.search(r"device: cuda:0, n_gpu: 1, distributed training: False", log), log[-3000:]
    return log


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_one_training_step_on_the_gpu(tiny, tmp_path, precision):
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU does not support bf16")
    out = tmp_path / precision
    train_one_step(tiny, out, *([] if precision == "fp32" else [f"--{precision}"]))
    results = json.loads((out / "train_results.json").read_text())
    assert results["train_loss"] > 0 and math.isfinite(results["train_loss"])
    weights = load_file(out / "model.safetensors")
    assert weights
    for name, tensor in weights.items():  # mixed precision trains fp32 master weights, and saves them
        assert tensor.dtype == torch.float32 and torch.isfinite(tensor).all(), name
    assert (out / "modeling_mtst.py").exists() and (out / "tokenizer.json").exists()


def test_a_model_trained_on_the_gpu_reloads_without_a_gpu_with_the_same_outputs(tiny, tmp_path):
    from transformers import AutoModel, AutoTokenizer

    out = tmp_path / "trained"
    train_one_step(tiny, out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    model = AutoModel.from_pretrained(out, trust_remote_code=True).to("cuda:0").eval()
    with torch.no_grad():
        output = model(**{k: v.to("cuda:0") for k, v in batch.items()})
    expected = {"embedding": output.sentence_embedding.cpu(), **{k: v.cpu() for k, v in output.task_logits.items()}}

    # a fresh process that sees no GPU, loading the saved folder's own code (trust_remote_code)
    code = textwrap.dedent(
        f"""
        import torch
        from transformers import AutoModel, AutoTokenizer
        assert not torch.cuda.is_available()
        tokenizer = AutoTokenizer.from_pretrained({str(out)!r})
        model = AutoModel.from_pretrained({str(out)!r}, trust_remote_code=True).eval()
        assert next(model.parameters()).device.type == "cpu"
        with torch.no_grad():
            output = model(**tokenizer({SENTENCES!r}, padding=True, return_tensors="pt"))
        torch.save({{"embedding": output.sentence_embedding, **output.task_logits}}, {str(tmp_path / "cpu.pt")!r})
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={**ENV, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": ""},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    on_cpu = torch.load(tmp_path / "cpu.pt")
    assert on_cpu.keys() == expected.keys() == {"embedding", "topic", "ner"}
    for name, value in expected.items():
        assert on_cpu[name].shape == value.shape, name
        assert torch.allclose(on_cpu[name], value, atol=1e-4), (name, (on_cpu[name] - value).abs().max())


def test_encode_and_the_multitask_pipeline_on_device_0(tmp_path, tokenizer):
    from transformers import AutoModel, pipeline

    path = str(save_tiny_mtst(tmp_path / "model"))
    on_cpu = AutoModel.from_pretrained(path, trust_remote_code=True).eval()
    on_gpu = AutoModel.from_pretrained(path, trust_remote_code=True).to("cuda:0").eval()
    texts = [*SENTENCES, LONG_TEXT]
    expected = on_cpu.encode(texts, tokenizer=tokenizer, batch_size=2)
    embeddings = on_gpu.encode(texts, tokenizer=tokenizer, batch_size=2)
    assert embeddings.device.type == "cpu" and embeddings.shape == expected.shape == (4, 32)
    assert torch.allclose(embeddings, expected, atol=1e-4), (embeddings - expected).abs().max()
    single = on_gpu.encode(SENTENCES[1], tokenizer=tokenizer, convert_to_numpy=True)
    assert single.shape == (32,) and torch.allclose(torch.from_numpy(single), expected[1], atol=1e-4)

    kwargs = {"return_embedding": True, "return_all_scores": True, "max_length": 32, "stride": 8}
    cpu_pipe = pipeline(model=path, trust_remote_code=True, device="cpu")
    gpu_pipe = pipeline(model=path, trust_remote_code=True, device=0)
    assert gpu_pipe.device.type == "cuda" and next(gpu_pipe.model.parameters()).is_cuda
    answers = gpu_pipe(texts, batch_size=2, **kwargs)
    assert len(answers) == len(texts)
    for text, answer, reference in zip(texts, answers, cpu_pipe(texts, **kwargs)):
        assert answer.keys() == reference.keys()
        for task in ("topic", "sentiment"):
            assert answer[task]["label"] == reference[task]["label"], (text, task)
            assert answer[task]["scores"] == pytest.approx(reference[task]["scores"], abs=1e-4)
        spans = [(e["entity_group"], e["start"], e["end"], e["word"]) for e in answer["ner"]]
        assert spans == [(e["entity_group"], e["start"], e["end"], e["word"]) for e in reference["ner"]], text
        assert [e["score"] for e in answer["ner"]] == pytest.approx([e["score"] for e in reference["ner"]], abs=1e-4)
        assert answer["embedding"] == pytest.approx(reference["embedding"], abs=1e-4)
