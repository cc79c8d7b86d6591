"""Shared helpers of the reliability tests (bad inputs, interruption, determinism, safe loading, offline runs): a
tiny random backbone with small task files, the command line run in-process or in a subprocess, and checks that an
error is one paragraph without a traceback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from trainer_helpers import write_task_files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "run_multitask.py")
# `mtst-predict` run as a module (`python -m mtst.cli.predict`), as `run_subprocess(..., script=PREDICT)`
PREDICT = ("-m", "mtst.cli.predict")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
ENV["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))
ERROR_PREFIX = "run_multitask.py: error: "
# Fields of all_results.json that measure time, not training.
TIMING_KEYS = ("_runtime", "_per_second")


def make_tiny(folder) -> dict:
    """A tiny random BERT backbone (64 positions, the MiniLM tokenizer) and topic + ner task files under `folder`."""
    from conftest import save_tiny_backbone

    save_tiny_backbone(folder / "backbone", max_position_embeddings=64)
    tasks = write_task_files(folder / "data", n_train=40, n_eval=12)
    return {"backbone": str(folder / "backbone"), "tasks": tasks, "data": str(folder / "data"), "folder": folder}


def cli_args(tiny: dict, output_dir, *extra) -> list[str]:
    return [
        "--model_name_or_path",
        tiny["backbone"],
        "--tasks_config",
        tiny["tasks"],
        "--output_dir",
        str(output_dir),
        "--max_seq_length",
        "32",
        "--per_device_train_batch_size",
        "4",
        "--learning_rate",
        "1e-3",
        "--disable_tqdm",
        "true",
        "--report_to",
        "none",
        *extra,
    ]


def run_subprocess(args: list[str], script: str | tuple = SCRIPT, timeout: float = 300, **kwargs):
    """`python script args` (a script path, or a tuple such as `PREDICT` for `python -m module`)."""
    return subprocess.run(
        [sys.executable, *([script] if isinstance(script, str) else script), *map(str, args)],
        env=kwargs.pop("env", ENV),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=kwargs.pop("cwd", ROOT),
        **kwargs,
    )


def error_paragraph(stderr: str, prefix: str = ERROR_PREFIX) -> str:
    """The error message: the last line of stderr, which must start with `prefix`; no traceback anywhere."""
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = stderr.rstrip("\n").splitlines()
    assert lines and lines[-1].startswith(prefix), stderr[-3000:]
    return lines[-1][len(prefix) :]


def write_config(path, tasks: list[dict]) -> str:
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"tasks": tasks}, f)
    return str(path)


def results_without_timings(path) -> dict:
    with open(path, encoding="utf-8") as f:
        results = json.load(f)
    return {k: v for k, v in results.items() if not k.endswith(TIMING_KEYS)}


def same_weights(a, b) -> None:
    """The model.safetensors of output folders `a` and `b` hold the same tensors, bit for bit."""
    import torch
    from safetensors.torch import load_file

    first, second = load_file(os.path.join(a, "model.safetensors")), load_file(os.path.join(b, "model.safetensors"))
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), name


# run_multitask.py sleeping 0.1 s before every training step (numerics untouched), so that a kill lands mid-run.
THROTTLED = """
import sys, time
import run_multitask
from mtst.training import trainer as trainer_mtst
step = trainer_mtst.MultiTaskTrainer.training_step
def slow_step(self, *args, **kwargs):
    time.sleep(0.1)
    return step(self, *args, **kwargs)
trainer_mtst.MultiTaskTrainer.training_step = slow_step
sys.exit(run_multitask.main(sys.argv[1:]))
"""


def kill_at_checkpoint(args: list[str], out, log_path, ready, timeout: float = 240) -> tuple[int | None, str | None]:
    """Run the throttled run_multitask.py with `args` and SIGKILL it as soon as `out` holds a complete checkpoint
    whose step satisfies `ready(step)`. Returns (the exit code, the checkpoint it was killed after, or None)."""
    from mtst.training.checkpoints import last_complete_checkpoint

    with open(log_path, "w") as log:
        process = subprocess.Popen([sys.executable, "-c", THROTTLED, *args], env=ENV, cwd=ROOT, stdout=log, stderr=log)
        killed_after = None
        try:
            deadline = time.monotonic() + timeout
            while process.poll() is None and time.monotonic() < deadline:
                done = last_complete_checkpoint(str(out)) if os.path.isdir(out) else None
                if done is not None and ready(int(done.rsplit("-", 1)[1])):
                    killed_after = done
                    process.send_signal(signal.SIGKILL)
                    break
                time.sleep(0.05)
            process.wait(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
    return process.returncode, killed_after
