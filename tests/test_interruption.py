"""Interruption and determinism of `run_multitask.py` on a tiny model (CPU, one thread).

- A run killed with SIGKILL in the middle of an epoch, then resumed with `--resume_from_checkpoint`, ends with the
  same weights and the same metrics as an uninterrupted run with the same seed: exactly, bit for bit. The one
  exception is `train_loss`, the mean loss over the steps the *resumed process* ran (the Trainer does not checkpoint
  its running loss sum), which is reported and compared as such.
- transformers 5.23 writes `checkpoint-N` in place, with no temporary folder and rename: the weights, the optimizer,
  scheduler and RNG states, then `trainer_state.json` last. A kill during a save therefore leaves a folder without
  `trainer_state.json`, or with a truncated file. Such a folder is skipped when resuming from the last checkpoint
  (with a warning), and refused with one clear message when named explicitly; it is never loaded.
- MTST writes its own checkpoint files (the uncertainty loss weights, the card, the code files, the cleaned
  `config.json`) right after the weights, so they are all there before `trainer_state.json`: a kill between them
  leaves a folder without `trainer_state.json` (skipped), and a kill just after it leaves a complete checkpoint
  that resumes exactly. A checkpoint that has `trainer_state.json` but lacks a file the run needs (written by an
  older MTST, or damaged) is skipped or refused too.
- The best checkpoint by eval_average survives a kill and a resume: it is kept (save_total_limit) and saved.
- Two runs with the same seed give identical `all_results.json` (timings aside) and identical weights.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys

import pytest
import torch
from reliability_helpers import (
    ENV,
    ROOT,
    cli_args,
    error_paragraph,
    kill_at_checkpoint,
    make_tiny,
    results_without_timings,
    run_subprocess,
    same_weights,
)
from safetensors.torch import load_file
from trainer_helpers import WORSE_EPOCHS_RUN

from mtst.cli import train as run_multitask
from mtst.training.checkpoints import LOSS_WEIGHTING_FILE, checkpoint_problem, last_complete_checkpoint

# 40 train examples per task, batches of 4: 20 steps per epoch, 40 in all; a checkpoint every 5 steps.
STEPS_PER_EPOCH = 20
CHECKPOINT_RE = re.compile(r"checkpoint-(\d+)$")
COMMON = ["--num_train_epochs", "2", "--save_strategy", "steps", "--save_steps", "5", "--seed", "7"]
COMMON += ["--do_train", "--do_eval"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Runs in this process use one thread, as the subprocesses do (ENV: OMP_NUM_THREADS=1): exact comparisons
    between them need the same float reductions."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def reference(tiny, tmp_path_factory):
    """An uninterrupted run (its own process)."""
    out = tmp_path_factory.mktemp("reference") / "run"
    result = run_subprocess(cli_args(tiny, out, *COMMON))
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return out


def step_of(checkpoint: str) -> int:
    return int(CHECKPOINT_RE.match(os.path.basename(checkpoint)).group(1))


def test_killed_run_resumes_to_the_same_weights_and_metrics(tiny, reference, tmp_path):
    out = tmp_path / "killed"
    # kill at a checkpoint inside the second epoch, so the resume crosses an epoch boundary and an eval
    code, killed_after = kill_at_checkpoint(
        cli_args(tiny, out, *COMMON),
        out,
        tmp_path / "killed.log",
        lambda step: step > STEPS_PER_EPOCH and step % STEPS_PER_EPOCH,
    )
    assert killed_after is not None, (tmp_path / "killed.log").read_text()[-3000:]
    assert code == -signal.SIGKILL
    assert not (out / "all_results.json").exists()  # killed before the end

    checkpoint = last_complete_checkpoint(str(out))  # the kill may have landed in a later save
    assert step_of(checkpoint) % STEPS_PER_EPOCH, checkpoint  # mid-epoch
    result = run_subprocess(cli_args(tiny, out, *COMMON, "--resume_from_checkpoint", checkpoint))
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert f"Resuming training from checkpoint with epoch 1 and global step {step_of(checkpoint)}" in result.stderr

    same_weights(reference, out)
    expected, resumed = (
        results_without_timings(reference / "all_results.json"),
        results_without_timings(out / "all_results.json"),
    )
    assert expected.pop("train_loss") > 0 and resumed.pop("train_loss") > 0  # means over different step ranges
    assert resumed == expected  # exact: every eval metric, epoch, samples, flos
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 2 * STEPS_PER_EPOCH


def test_same_seed_gives_identical_results(tiny, reference, tmp_path):
    out = tmp_path / "again"
    result = run_subprocess(cli_args(tiny, out, *COMMON))
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert results_without_timings(out / "all_results.json") == results_without_timings(reference / "all_results.json")
    same_weights(reference, out)


def test_half_written_checkpoints_are_skipped_or_refused(tiny, tmp_path, caplog, capsys):
    out = tmp_path / "run"
    short = ["--save_strategy", "steps", "--save_steps", "5", "--eval_strategy", "no", "--do_train"]
    assert run_multitask.main(cli_args(tiny, out, *short, "--max_steps", "10")) == 0
    assert checkpoint_problem(str(out / "checkpoint-10")) is None
    # a kill during the save of checkpoint-15 (before trainer_state.json) and during checkpoint-20's weights
    shutil.copytree(out / "checkpoint-10", out / "checkpoint-15")
    os.remove(out / "checkpoint-15" / "trainer_state.json")
    shutil.copytree(out / "checkpoint-10", out / "checkpoint-20")
    weights = out / "checkpoint-20" / "model.safetensors"
    with open(weights, "r+b") as f:
        f.truncate(os.path.getsize(weights) // 2)
    shutil.copytree(out / "checkpoint-10", out / "checkpoint-25")
    (out / "checkpoint-25" / "trainer_state.json").write_text('{"global_step": 25, "log_hist')
    assert "no trainer_state.json" in checkpoint_problem(str(out / "checkpoint-15"))
    assert "weights are truncated or corrupt" in checkpoint_problem(str(out / "checkpoint-20"))
    assert "trainer_state.json is truncated or invalid" in checkpoint_problem(str(out / "checkpoint-25"))

    # named explicitly: refused, with the last complete one suggested; nothing is removed
    for name, reason in (("checkpoint-15", "no trainer_state.json"), ("checkpoint-20", "truncated or corrupt")):
        argv = cli_args(tiny, out, *short, "--max_steps", "12", "--resume_from_checkpoint", str(out / name))
        assert run_multitask.main(argv) == 2
        message = error_paragraph(capsys.readouterr().err)
        assert message.startswith(f"Cannot resume from {out / name}: ") and reason in message
        assert message.endswith(f"The last complete checkpoint there is {out / 'checkpoint-10'}.")
        assert (out / name).is_dir() and (out / "checkpoint-10").is_dir()

    # found by itself: the incomplete ones are skipped, training resumes from checkpoint-10
    caplog.clear()
    assert run_multitask.main(cli_args(tiny, out, *short, "--max_steps", "12")) == 0
    for name in ("checkpoint-25", "checkpoint-20", "checkpoint-15"):
        assert f"Skipping the incomplete checkpoint {out / name}" in caplog.text
    assert f"resuming training from {out / 'checkpoint-10'}" in caplog.text
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 12


def test_failed_run_leaves_no_half_written_output_folder(tiny, tmp_path, capsys):
    """A run that fails after the Trainer created the output folder (here: a NaN loss at step 2) removes it, unless it
    holds a complete checkpoint; a folder that existed before is never removed."""
    out = tmp_path / "nan"
    nan = ["--learning_rate", "1e6", "--warmup_steps", "0", "--do_train"]
    assert run_multitask.main(cli_args(tiny, out, *nan)) == 2
    assert "Training stopped at step 2" in error_paragraph(capsys.readouterr().err)
    assert not out.exists()

    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert run_multitask.main(cli_args(tiny, out, *nan)) == 2
    assert (out / "notes.txt").read_text() == "mine"

    kept = tmp_path / "kept"
    steps = ["--save_strategy", "steps", "--save_steps", "1", "--warmup_steps", "0", "--do_train"]
    assert run_multitask.main(cli_args(tiny, kept, *steps, "--learning_rate", "1e6")) == 2
    # step 1 was finite: kept to resume from, with the starting model's embeddings (embedding preservation)
    assert sorted(p.name for p in kept.iterdir()) == ["checkpoint-1", "teacher_embeddings.safetensors"]
    assert checkpoint_problem(str(kept / "checkpoint-1")) is None


# Kills the run (SIGKILL) while it saves checkpoint-<step>: "after_mtst_files" once MultiTaskTrainer.save_model has
# written the weights and every MTST file, before the optimizer and trainer_state.json; "after_trainer_state" once
# trainer_state.json is written. argv: where, step, run_multitask arguments.
KILL_WHILE_SAVING = """
import os, signal, sys
import run_multitask
from mtst.training import trainer as trainer_mtst
from transformers.trainer_callback import TrainerState
where, name = sys.argv[1], "checkpoint-" + sys.argv[2]
if where == "after_mtst_files":
    save_model = trainer_mtst.MultiTaskTrainer.save_model
    def patched(self, output_dir=None, _internal_call=False):
        save_model(self, output_dir, _internal_call)
        if output_dir and os.path.basename(output_dir) == name:
            os.kill(os.getpid(), signal.SIGKILL)
    trainer_mtst.MultiTaskTrainer.save_model = patched
else:
    save_to_json = TrainerState.save_to_json
    def patched(self, json_path):
        save_to_json(self, json_path)
        if os.path.basename(os.path.dirname(json_path)) == name:
            os.kill(os.getpid(), signal.SIGKILL)
    TrainerState.save_to_json = patched
sys.exit(run_multitask.main(sys.argv[3:]))
"""
UNCERTAINTY = ["--max_steps", "20", "--save_strategy", "steps", "--save_steps", "5", "--eval_strategy", "no"]
UNCERTAINTY += ["--do_train", "--loss_weighting", "uncertainty", "--seed", "7"]


@pytest.fixture(scope="module")
def uncertainty_reference(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("uncertainty") / "run"
    assert run_multitask.main(cli_args(tiny, out, *UNCERTAINTY)) == 0
    return out


def run_code(code: str, args, env=ENV) -> subprocess.CompletedProcess:
    """`python -c code args` from the repository root, like `run_subprocess`."""
    command = [sys.executable, "-c", code, *map(str, args)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)


def killed_while_saving(tiny, out, where: str, step: int):
    result = run_code(KILL_WHILE_SAVING, [where, step, *cli_args(tiny, out, *UNCERTAINTY)])
    assert result.returncode == -signal.SIGKILL, (result.stdout + result.stderr)[-3000:]
    assert not (out / "model.safetensors").exists()


def test_kill_between_mtst_files_and_trainer_state_leaves_a_skipped_checkpoint(
    tiny, uncertainty_reference, tmp_path, caplog, capsys
):
    out = tmp_path / "run"
    killed_while_saving(tiny, out, "after_mtst_files", 10)
    folder = out / "checkpoint-10"
    for name in ("model.safetensors", "config.json", LOSS_WEIGHTING_FILE, "README.md", "handler.py"):
        assert (folder / name).is_file(), name  # every MTST file is written before ...
    assert not (folder / "trainer_state.json").exists()  # ... trainer_state.json, which marks it complete
    assert "no trainer_state.json" in checkpoint_problem(str(folder))

    argv = cli_args(tiny, out, *UNCERTAINTY, "--resume_from_checkpoint", str(folder))
    assert run_multitask.main(argv) == 2  # named: refused in one paragraph
    message = error_paragraph(capsys.readouterr().err)
    assert message.startswith(f"Cannot resume from {folder}: it has no trainer_state.json")
    assert message.endswith(f"The last complete checkpoint there is {out / 'checkpoint-5'}.")

    caplog.clear()
    assert run_multitask.main(cli_args(tiny, out, *UNCERTAINTY)) == 0  # found by itself: skipped
    assert f"Skipping the incomplete checkpoint {folder}" in caplog.text
    assert f"resuming training from {out / 'checkpoint-5'}" in caplog.text
    same_weights(uncertainty_reference, out)
    for checkpoint in ("checkpoint-15", "checkpoint-20"):
        expected = load_file(uncertainty_reference / checkpoint / LOSS_WEIGHTING_FILE)
        assert torch.equal(load_file(out / checkpoint / LOSS_WEIGHTING_FILE)["log_vars"], expected["log_vars"])


def test_kill_after_trainer_state_leaves_a_complete_checkpoint(tiny, uncertainty_reference, tmp_path, caplog, capsys):
    out = tmp_path / "run"
    killed_while_saving(tiny, out, "after_trainer_state", 10)
    folder = out / "checkpoint-10"
    assert checkpoint_problem(str(folder), [LOSS_WEIGHTING_FILE]) is None  # complete: every MTST file is there
    config = json.loads((folder / "config.json").read_text())
    assert str(tiny["folder"]) not in json.dumps(config)  # the card's cleaned config.json, not the raw one
    assert (folder / "README.md").is_file() and (folder / "handler.py").is_file()

    # what a kill at that moment left behind before MTST wrote its files first: trainer_state.json without the loss
    # weights, or with a config.json cut short while it was rewritten
    shutil.copytree(folder, out / "checkpoint-11")
    os.remove(out / "checkpoint-11" / LOSS_WEIGHTING_FILE)
    shutil.copytree(folder, out / "checkpoint-12")
    (out / "checkpoint-12" / "config.json").write_text('{"model_type": "mt')
    problem = checkpoint_problem(str(out / "checkpoint-11"), [LOSS_WEIGHTING_FILE])
    assert "no mtst_loss_weighting.safetensors" in problem
    assert checkpoint_problem(str(out / "checkpoint-11")) is None  # a run without uncertainty weights can use it
    assert "config.json is missing, truncated or invalid" in checkpoint_problem(str(out / "checkpoint-12"))
    argv = cli_args(tiny, out, *UNCERTAINTY, "--resume_from_checkpoint", str(out / "checkpoint-11"))
    assert run_multitask.main(argv) == 2
    message = error_paragraph(capsys.readouterr().err)
    assert "it has no mtst_loss_weighting.safetensors (the learned uncertainty loss weights)" in message
    assert message.endswith(f"The last complete checkpoint there is {folder}.")

    caplog.clear()
    assert run_multitask.main(cli_args(tiny, out, *UNCERTAINTY)) == 0
    for name in ("checkpoint-12", "checkpoint-11"):
        assert f"Skipping the incomplete checkpoint {out / name}" in caplog.text
    assert f"resuming training from {folder}" in caplog.text
    same_weights(uncertainty_reference, out)  # the loss weights came back too: the same run to the last bit
    expected = load_file(uncertainty_reference / "checkpoint-20" / LOSS_WEIGHTING_FILE)["log_vars"]
    assert torch.equal(load_file(out / "checkpoint-20" / LOSS_WEIGHTING_FILE)["log_vars"], expected)


def test_best_checkpoint_is_kept_across_a_kill_and_resume(tiny, tmp_path, caplog):
    """Three epochs, the second and third made worse on purpose; killed after the second epoch's checkpoint is saved,
    then resumed: the first epoch's checkpoint is kept (save_total_limit 2) and is the saved model."""
    out = tmp_path / "run"
    args = cli_args(tiny, out, "--num_train_epochs", "3", "--save_total_limit", "2")
    # heads at the encoder's lr 1e-3: at the default 10x (1e-2) this tiny random model's first epoch can still predict
    # one label everywhere, as bad as the spoiled epochs, and a tie never makes a checkpoint "best"
    args += ["--do_train", "--do_eval", "--head_learning_rate_factor", "1"]
    env = {**ENV, "MTST_WORSE_EPOCHS": "2,3", "MTST_KILL_AFTER_SAVE_STEP": "40"}
    killed = run_code(WORSE_EPOCHS_RUN, args, env=env)
    assert killed.returncode == -signal.SIGKILL, (killed.stdout + killed.stderr)[-3000:]
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-20", "checkpoint-40"]
    state = json.loads((out / "checkpoint-40" / "trainer_state.json").read_text())
    assert state["best_global_step"] == 20

    env["MTST_KILL_AFTER_SAVE_STEP"] = ""
    resumed = run_code(WORSE_EPOCHS_RUN, args, env=env)
    log = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, log[-3000:]
    assert f"resuming training from {out / 'checkpoint-40'}" in log
    state = json.loads((out / "trainer_state.json").read_text())
    evals = {e["step"]: e["eval_average"] for e in state["log_history"] if "eval_average" in e and "epoch" in e}
    assert sorted(evals) == [20, 40, 60] and evals[20] > max(evals[40], evals[60])
    assert state["best_global_step"] == 20 and state["best_metric"] == evals[20]
    # the limit of 2 keeps the best checkpoint and the last one
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-20", "checkpoint-60"]
    same_weights(out / "checkpoint-20", out)
    assert f"Kept the best checkpoint by eval_average: checkpoint-20 (step 20, eval_average {evals[20]:.4f})" in log
