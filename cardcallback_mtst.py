"""Collecting model-card data during training: the Trainer callback that fills an `MTSTCardData`.

- [`MTSTCardCallback`]: the one collector, a `TrainerCallback` that fills the card data during training (arguments,
  sampler, dataset sizes, evaluations, log history, training time) and writes the card into every checkpoint.
- [`card_data_from_trainer`]: what only the end of the run knows (the kept model, the final metrics, widget texts).

What the card says and how it is rendered is `modelcard_mtst`'s; this module only reads a training run. Nothing here
may disturb training: a fact that cannot be read is logged as a warning and left out of the card.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from typing import Any

from transformers import TrainerCallback

from modelcard_mtst import MTSTCardData, _number, write_model_card

logger = logging.getLogger(__name__)

__all__ = ["MTSTCardCallback", "card_data_from_trainer"]


class MTSTCardCallback(TrainerCallback):
    """Fills an [`MTSTCardData`] during training and writes the card into every checkpoint.

    Use `MTSTCardCallback.attach(trainer, card_data)` (or `trainer.add_callback(MTSTCardCallback(card_data,
    trainer))`); after `trainer.save_model(dir)` call [`card_data_from_trainer`] for what only the end of the run
    knows, then `write_model_card(dir, model, card_data, tokenizer)`. The trainer is optional: without it, the callback
    reads what the callback events give (arguments, logs, metrics, the train dataloader's sampler). The card data is
    also reachable as `model.model_card_data`.
    """

    def __init__(self, card_data: MTSTCardData | None = None, trainer=None, write_on_save: bool = True):
        super().__init__()
        self.card_data = card_data if card_data is not None else MTSTCardData()
        self.trainer = trainer
        self.write_on_save = write_on_save
        self._datasets_read = False
        self._written = None  # (checkpoint folder, step) whose card write_checkpoint_files wrote

    @classmethod
    def attach(cls, trainer, card_data: MTSTCardData | None = None, **kwargs) -> MTSTCardCallback:
        """Add a card callback to `trainer` and collect what is known already (datasets, model)."""
        callback = cls(card_data, trainer=trainer, **kwargs)
        trainer.add_callback(callback)
        callback.on_init_end(trainer.args, trainer.state, trainer.control, model=trainer.model)
        return callback

    def on_init_end(self, args, state, control, model=None, **kwargs):
        """Register the model (`model.model_card_data`), and read the datasets' sizes and widget texts once."""
        data = self.card_data
        data.generated_from_trainer = True
        if model is not None:
            model = getattr(model, "module", model)
            data.register(model)
            try:
                model.model_card_data = data
            except Exception:
                pass
        if self.trainer is None or self._datasets_read:
            return
        self._datasets_read = True
        try:
            train, evals = self.trainer.train_dataset, self.trainer.eval_dataset
            sizes = getattr(train, "task_sizes", None)
            if sizes is None and isinstance(train, Mapping):
                sizes = {t: len(ds) for t, ds in train.items()}
            data.set_dataset_sizes(
                sizes, {t: len(ds) for t, ds in evals.items()} if isinstance(evals, Mapping) else None
            )
            if not data.widget_examples and isinstance(evals, Mapping) and evals:
                primary = data.primary_task()
                dataset = evals.get(primary) if primary in evals else next(iter(evals.values()))
                data.set_widget_examples(dataset, tokenizer=getattr(self.trainer, "processing_class", None))
        except Exception as err:  # never let the card disturb training
            logger.warning("Model card: could not read the datasets (%s).", type(err).__name__)

    def on_train_begin(self, args, state, control, model=None, train_dataloader=None, **kwargs):
        self.on_init_end(args, state, control, model=model)
        data = self.card_data
        data._train_started = time.time()
        try:
            data.set_training_args(args)
        except Exception as err:  # never let the card disturb training
            logger.warning("Model card: could not read the training arguments (%s).", type(err).__name__)
        try:
            data.set_sampler(getattr(self.trainer, "_train_batch_sampler", None) or train_dataloader)
        except Exception as err:
            logger.warning("Model card: could not read the sampler (%s).", type(err).__name__)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if metrics:
            self.card_data.set_eval_results(metrics, prefix="eval")

    def on_predict(self, args, state, control, metrics=None, **kwargs):
        for prefix in {k.split("_", 1)[0] for k in metrics or {} if "_" in k} - {"eval"}:
            self.card_data.set_eval_results(metrics, prefix=prefix)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        data = self.card_data
        if data._train_started is not None:
            data.training_seconds = (data.training_seconds or 0.0) + time.time() - data._train_started
            data._train_started = None
        if state.log_history:
            data.set_log_history(state.log_history)
        learned = getattr(self.trainer, "learned_loss_weights", None)
        try:
            weights = learned() if callable(learned) else None
            if weights:
                data.learned_loss_weights = {t: float(w) for t, w in weights.items()}
        except Exception:
            pass

    def finish(self, task_specs=None, raw_datasets: Mapping[str, Any] | None = None, metrics=None) -> MTSTCardData:
        """After training: which model was kept, every evaluation in the log and the final `metrics` (test ones
        included), and widget texts from the raw data (`{task: DatasetDict or Dataset}` with `text`/`tokens`)."""
        data, trainer = self.card_data, self.trainer
        if task_specs:
            data.set_task_specs(task_specs)
        if raw_datasets:
            primary = data.primary_task()
            data.set_widget_examples(raw_datasets[primary] if primary in raw_datasets else [*raw_datasets.values()][0])
        history = trainer.state.log_history if trainer is not None else []
        if history:
            data.set_log_history(history)
        for entry in [*history, metrics or {}]:
            data.set_eval_results(entry)
        if isinstance(getattr(trainer, "kept_model", None), Mapping):
            data.kept_model = dict(trainer.kept_model)
        if data.training_seconds is None:
            runtimes = [e["train_runtime"] for e in history if "train_runtime" in e]
            data.training_seconds = _number(runtimes[-1]) if runtimes else None
        return data

    def write_checkpoint_files(self, args, state, folder, model=None, processing_class=None) -> None:
        """Write the card (and the code files and the cleaned config.json) into the checkpoint `folder`. A
        `MultiTaskTrainer` calls this right after the checkpoint's weights, before trainer_state.json; with another
        trainer, `on_save` does it after."""
        if not self.write_on_save or not state.is_world_process_zero or not os.path.isdir(folder):
            return
        if state.log_history:
            self.card_data.set_log_history(state.log_history)
        write_model_card(folder, model, self.card_data, processing_class)
        self._written = (os.path.normpath(folder), state.global_step)

    def on_save(self, args, state, control, model=None, processing_class=None, **kwargs):
        folder = os.path.normpath(os.path.join(args.output_dir, f"checkpoint-{state.global_step}"))
        if self._written != (folder, state.global_step):
            self.write_checkpoint_files(args, state, folder, model, processing_class)


def card_data_from_trainer(
    trainer,
    card_data: MTSTCardData | None = None,
    task_specs=None,
    raw_datasets: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
) -> MTSTCardData:
    """Card data from a trainer after training: what its [`MTSTCardCallback`] collected (a trainer without one is
    read the same way at once), plus [`MTSTCardCallback.finish`]'s `task_specs`, `raw_datasets` and final `metrics`.
    Fields already set in `card_data` (language, license, baselines, ...) are kept."""
    callbacks = [c for c in trainer.callback_handler.callbacks if isinstance(c, MTSTCardCallback)]
    callback = next((c for c in callbacks if card_data is None or c.card_data is card_data), None)
    if callback is None:
        model = getattr(trainer.model, "module", trainer.model)
        card_data = card_data or getattr(model, "model_card_data", None) or MTSTCardData()
        callback = MTSTCardCallback(card_data, trainer, write_on_save=False)
        callback.on_train_begin(trainer.args, trainer.state, trainer.control, model=trainer.model)
        card_data._train_started = None
        callback.on_train_end(trainer.args, trainer.state, trainer.control)
    return callback.finish(task_specs, raw_datasets, metrics)
