"""Saves that fail half-way: the final model is written beside the output folder and swapped in when complete, so a
failure mid-save leaves the earlier model whole; a full disk is one paragraph naming the folder and the free space,
exit 2, and the earlier checkpoint stays complete."""

import errno
import os

import pytest
import torch
from reliability_helpers import cli_args, error_paragraph, make_tiny
from trainer_helpers import tiny_model, tokenized_tasks

import run_multitask
from mtst.remote.modeling_mtst import MTSTModel
from mtst.training import trainer as trainer_mtst
from mtst.training.arguments import MultiTaskTrainingArguments
from mtst.training.checkpoints import checkpoint_problem, is_disk_full
from mtst.training.trainer import MultiTaskTrainer


def folder_bytes(folder) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def fail_mid_save(monkeypatch, error: BaseException) -> None:
    """`MTSTModel.save_pretrained` writes part of the weights, then fails (a kill, a full disk)."""

    def partial_save(self, save_directory, *args, **kwargs):
        os.makedirs(save_directory, exist_ok=True)
        with open(os.path.join(save_directory, "model.safetensors"), "wb") as f:
            f.write(b"half a file")
        raise error

    monkeypatch.setattr(MTSTModel, "save_pretrained", partial_save)


@pytest.mark.parametrize(
    "error", [RuntimeError("killed mid-save"), OSError(errno.ENOSPC, "No space left on device")], ids=["kill", "full"]
)
def test_a_failed_final_save_leaves_the_earlier_model_whole(tokenizer, tmp_path, monkeypatch, error):
    specs, _, data = tokenized_tasks(tokenizer, tmp_path / "tasks", n_train=8, n_eval=8)
    out = tmp_path / "out"
    args = MultiTaskTrainingArguments(output_dir=str(out), report_to="none", use_cpu=True)
    trainer = MultiTaskTrainer(model=tiny_model(specs), args=args, processing_class=tokenizer)
    trainer.save_model()
    (out / "checkpoint-2").mkdir()
    (out / "checkpoint-2" / "trainer_state.json").write_text("{}")
    (out / "all_results.json").write_text("{}")
    (out / "README.md").write_text("the card of the saved model")
    before = folder_bytes(out)
    with torch.no_grad():
        next(trainer.model.parameters()).add_(1.0)
    with monkeypatch.context() as patch:
        fail_mid_save(patch, error)
        with pytest.raises(type(error)):
            trainer.save_model()
    assert folder_bytes(out) == before
    assert (out / "checkpoint-2" / "trainer_state.json").read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "tasks"]  # no staging folder left beside it
    MTSTModel.from_pretrained(out)  # still loads

    (out / "model-00002-of-00002.safetensors").write_bytes(b"a shard of an older model")
    trainer.save_model()  # a save that completes replaces the model, and only the model
    after = folder_bytes(out)
    assert after["model.safetensors"] != before["model.safetensors"]
    assert "model-00002-of-00002.safetensors" not in after
    assert after["all_results.json"] == b"{}" and after["README.md"] == b"the card of the saved model"
    assert (out / "checkpoint-2").is_dir() and sorted(p.name for p in tmp_path.iterdir()) == ["out", "tasks"]


def test_a_full_disk_is_one_paragraph_and_keeps_the_earlier_checkpoint(tmp_path, monkeypatch, capsys):
    tiny = make_tiny(tmp_path / "tiny")
    out = tmp_path / "run"
    original = trainer_mtst.MultiTaskTrainer._save_optimizer_and_scheduler

    def full_disk(self, output_dir):
        if os.path.basename(output_dir) == "checkpoint-4":
            raise OSError(errno.ENOSPC, "No space left on device", os.path.join(output_dir, "optimizer.pt"))
        original(self, output_dir)

    monkeypatch.setattr(trainer_mtst.MultiTaskTrainer, "_save_optimizer_and_scheduler", full_disk)
    steps = [
        "--do_train",
        "--max_steps",
        "4",
        "--save_strategy",
        "steps",
        "--save_steps",
        "2",
        "--eval_strategy",
        "no",
    ]
    assert run_multitask.main(cli_args(tiny, out, *steps)) == 2
    err = capsys.readouterr().err
    paragraph = error_paragraph(err)
    assert "Traceback" not in err
    assert f"saving into {out / 'checkpoint-4'} failed" in paragraph
    assert "MiB (" in paragraph and "bytes) are free there" in paragraph
    assert f"The complete checkpoint {out / 'checkpoint-2'} is kept" in paragraph
    assert checkpoint_problem(str(out / "checkpoint-2")) is None


def test_torch_save_write_failure_counts_as_a_full_disk():
    assert is_disk_full(RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos; file write failed"))
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as inner:
            raise ValueError("could not save") from inner
    except ValueError as outer:
        assert is_disk_full(outer)
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))
