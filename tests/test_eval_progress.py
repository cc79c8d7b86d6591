"""The evaluation progress bar counts every task's batches: its total is the batches of all tasks, not the first's."""

import pytest
import transformers.trainer_callback
from trainer_helpers import tiny_model, tokenized_tasks

import mtst.training.evaluation
from mtst.training.arguments import MultiTaskTrainingArguments
from mtst.training.trainer import MultiTaskTrainer


class RecordingBar:
    """A stand-in for tqdm that records its total and how far it got."""

    bars: list = []

    def __init__(self, total=None, **kwargs):
        self.total, self.n, self.closed = total, 0, False
        RecordingBar.bars.append(self)

    def update(self, n=1):
        self.n += n

    def write(self, text):
        pass

    def close(self):
        self.closed = True


@pytest.mark.parametrize("how", ["evaluate", "predict"])
def test_the_evaluation_bar_total_is_the_batches_of_every_task(tokenizer, tmp_path, monkeypatch, how):
    specs, _, data = tokenized_tasks(tokenizer, tmp_path / "tasks", n_train=8, n_eval=20)
    monkeypatch.setattr(transformers.trainer_callback, "tqdm", RecordingBar)
    monkeypatch.setattr(mtst.training.evaluation, "tqdm", RecordingBar, raising=False)
    monkeypatch.setattr(RecordingBar, "bars", [])
    args = MultiTaskTrainingArguments(
        output_dir=str(tmp_path / "out"), per_device_eval_batch_size=8, report_to="none", use_cpu=True
    )
    eval_sets = {t: d["validation"] for t, d in data.items()}
    trainer = MultiTaskTrainer(model=tiny_model(specs), args=args, eval_dataset=eval_sets, processing_class=tokenizer)
    if how == "evaluate":
        trainer.evaluate()
    else:
        trainer.predict({t: d["test"] for t, d in data.items()})
    assert len(RecordingBar.bars) == 1
    bar = RecordingBar.bars[0]
    assert bar.closed
    assert bar.n == 2 * 3  # 20 rows per task at 8 a batch: 3 batches for each of the 2 tasks
    assert bar.total == bar.n
