"""Collecting model-card data during training: the Trainer callback that fills an `MTSTCardData`.

- [`MTSTCardCallback`]: the one collector, a `TrainerCallback` that fills the card data during training (arguments,
  sampler, dataset sizes, evaluations, log history, training time) and writes the card into every checkpoint.
- [`card_data_from_trainer`]: what only the end of the run knows (the kept model, the final metrics, widget texts).
- [`read_training_args`], [`read_sampler`], [`texts_from`]: the card's view of the training arguments (what differs
  from `TrainingArguments`' defaults), of the task-aware sampler, and of a dataset's texts (widget examples).

What the card says and how it is rendered is `mtst.hub.card`'s; this module only reads a training run. Nothing here
may disturb training: a fact that cannot be read is logged as a warning and left out of the card.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

from transformers import TrainerCallback, TrainingArguments

from mtst.hub.card import write_model_card
from mtst.hub.card_data import MTSTCardData, as_number, format_number
from mtst.remote.configuration_mtst import is_local_path

logger = logging.getLogger(__name__)

__all__ = ["MTSTCardCallback", "card_data_from_trainer", "read_sampler", "read_training_args", "texts_from"]


# Training arguments never shown in a card (paths, tokens, logging and hub plumbing).
_HIDDEN_ARGS = {
    *("output_dir", "logging_dir", "run_name", "report_to", "resume_from_checkpoint", "do_train", "do_eval"),
    *("do_predict", "push_to_hub", "hub_model_id", "hub_strategy", "hub_private_repo", "hub_always_push"),
    *("hub_revision", "push_to_hub_model_id", "push_to_hub_organization", "logging_first_step"),
    *("logging_strategy", "logging_steps", "save_total_limit", "disable_tqdm", "project", "trackio_space_id"),
    "log_task_per_step",
}


def _has_local_path(value: Any) -> bool:
    if isinstance(value, str):
        return os.path.isabs(value) or (os.sep in value and is_local_path(value))
    if isinstance(value, Mapping):
        return any(_has_local_path(v) for v in value.values())
    return isinstance(value, (list, tuple)) and any(_has_local_path(v) for v in value)


@functools.cache
def _default_training_args() -> dict[str, Any]:
    """`TrainingArguments`' own values, to which the card compares a run's (as sentence-transformers does). A new
    `TrainingArguments` would reset a running Accelerate state, so an existing one is reused."""
    from accelerate.state import PartialState

    configured = {"use_configured_state": True} if PartialState._shared_state else None
    return TrainingArguments(output_dir="unused", accelerator_config=configured).to_dict()


def read_training_args(args) -> tuple[dict[str, Any], dict[str, Any]]:
    """The card's `(hyperparameters, multitask_options)`: the training arguments that differ from `TrainingArguments`'
    defaults (both through `to_dict()`, as sentence-transformers compares them, so a subclass's changed defaults count
    as changes), and every multi-task option (the fields beyond `TrainingArguments`). Paths, tokens and logging
    plumbing are left out."""
    defaults = _default_training_args()
    hyperparameters, options = {}, {}
    for key, value in args.to_dict().items():
        if key == "teacher_models" and isinstance(value, str):  # the distilled tasks, never the teachers' folders
            value = ", ".join(item.partition("=")[0].strip() for item in value.split(",") if "=" in item) or None
        if key in _HIDDEN_ARGS or "token" in key or key.startswith("resume") or _has_local_path(value):
            continue
        if key not in defaults:
            options[key] = value
        elif value != defaults[key]:
            hyperparameters[key] = value
    return hyperparameters, options


def _unwrap_sampler(obj, depth: int = 0):
    """The task-aware sampler inside a DataLoader / Accelerate shard / skip wrapper, if any."""
    if obj is None or depth > 6:
        return None
    if hasattr(obj, "task_steps") or hasattr(obj, "probabilities"):
        return obj
    for attr in ("batch_sampler", "sampler", "base_dataloader"):
        inner = getattr(obj, attr, None)
        found = _unwrap_sampler(inner, depth + 1) if inner is not None and inner is not obj else None
        if found is not None:
            return found
    return None


def read_sampler(sampler) -> dict[str, Any]:
    """The card's `sampling`: strategy and effective task probabilities of a task-aware batch sampler, read
    generically (also inside a DataLoader or Accelerate wrapper); empty when there is none."""
    sampler, info = _unwrap_sampler(sampler), {}
    if sampler is None:
        return info
    if getattr(sampler, "strategy", None):
        info["strategy"] = format_number(sampler.strategy)
    # Steps of each task per epoch (balanced upsamples small tasks beyond their own pass).
    steps = getattr(sampler, "epoch_task_steps", None) or getattr(sampler, "task_steps", None)
    total = getattr(sampler, "steps_per_epoch", None)
    if isinstance(steps, Mapping):
        info["steps"] = {t: int(n) for t, n in steps.items()}
        info["steps_per_epoch"] = int(total or sum(info["steps"].values()))
    probabilities = getattr(sampler, "probabilities", None)
    if isinstance(probabilities, Mapping) and probabilities and info.get("strategy") != "balanced":
        info["probabilities"] = {t: float(p) for t, p in probabilities.items()}
    elif info.get("steps_per_epoch"):
        info["probabilities"] = {t: n / info["steps_per_epoch"] for t, n in info["steps"].items()}
    if isinstance(getattr(sampler, "task_sizes", None), Mapping):
        info["task_sizes"] = {t: int(n) for t, n in sampler.task_sizes.items()}
    return info


def texts_from(source, tokenizer=None, limit: int = 12) -> list[str]:
    """Up to `limit` texts of a dataset (its `text`, its `tokens` joined, or its `input_ids` decoded with `tokenizer`;
    a `DatasetDict`: its evaluation split), for the card's widget examples. A string or a list of strings is kept."""
    if source is None:
        return []
    if isinstance(source, str):
        return [source]
    columns = getattr(source, "column_names", None)
    if columns is None and isinstance(source, Sequence) and all(isinstance(t, str) for t in source[:limit]):
        return list(source[:limit])
    if isinstance(columns, Mapping):  # a DatasetDict: prefer the evaluation splits
        split = next((s for s in ("validation", "test", "train", *columns) if s in columns), None)
        return texts_from(source[split], tokenizer, limit) if split else []
    rows = source.select(range(min(limit, len(source)))) if hasattr(source, "select") else list(source)[:limit]
    texts = []
    for row in rows:
        if not isinstance(row, Mapping):
            continue
        if isinstance(row.get("text"), str):
            texts.append(row["text"])
        elif isinstance(row.get("tokens"), (list, tuple)):
            texts.append(" ".join(map(str, row["tokens"])))
        elif row.get("input_ids") is not None and tokenizer is not None:
            texts.append(tokenizer.decode(row["input_ids"], skip_special_tokens=True))
    return texts


def _size(dataset) -> int | None:
    """The number of examples, None for a dataset without a length (an iterable one)."""
    try:
        return len(dataset)
    except TypeError:
        return None


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
            model.model_card_data = data
        if self.trainer is None or self._datasets_read:
            return
        self._datasets_read = True
        train, evals = self.trainer.train_dataset, self.trainer.eval_dataset
        sizes = getattr(train, "task_sizes", None)
        if sizes is None and isinstance(train, Mapping):
            sizes = {t: _size(ds) for t, ds in train.items()}
        data.set_dataset_sizes(
            sizes, {t: _size(ds) for t, ds in evals.items()} if isinstance(evals, Mapping) else None
        )
        if not data.widget_examples and isinstance(evals, Mapping) and evals:
            primary = data.primary_task()
            dataset = evals.get(primary) if primary in evals else next(iter(evals.values()))
            data.set_widget_examples(texts_from(dataset, getattr(self.trainer, "processing_class", None)))

    def on_train_begin(self, args, state, control, model=None, train_dataloader=None, **kwargs):
        self.on_init_end(args, state, control, model=model)
        data = self.card_data
        data._train_started = time.time()
        data.hyperparameters, data.multitask_options = read_training_args(args)
        weights = getattr(self.trainer, "preservation_weights", None)  # as the trainer computed them
        data.preservation_task_weights = dict(weights) if isinstance(weights, Mapping) else {}
        sampling = read_sampler(getattr(self.trainer, "_train_batch_sampler", None) or train_dataloader)
        data.sampling = sampling or data.sampling

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
        weights = learned() if callable(learned) else None
        if weights:
            data.learned_loss_weights = {t: float(w) for t, w in weights.items()}

    def finish(self, task_specs=None, raw_datasets: Mapping[str, Any] | None = None, metrics=None) -> MTSTCardData:
        """After training: which model was kept, every evaluation in the log and the final `metrics` (test ones
        included), and widget texts from the raw data (`{task: DatasetDict or Dataset}` with `text`/`tokens`)."""
        data, trainer = self.card_data, self.trainer
        if task_specs:
            data.set_task_specs(task_specs)
        if raw_datasets:
            primary = data.primary_task()
            data.set_widget_examples(
                texts_from(raw_datasets[primary] if primary in raw_datasets else [*raw_datasets.values()][0])
            )
        history = trainer.state.log_history if trainer is not None else []
        if history:
            data.set_log_history(history)
        for entry in [*history, metrics or {}]:
            data.set_eval_results(entry)
        if isinstance(getattr(trainer, "kept_model", None), Mapping):
            data.kept_model = dict(trainer.kept_model)
        if data.training_seconds is None:
            runtimes = [e["train_runtime"] for e in history if "train_runtime" in e]
            data.training_seconds = as_number(runtimes[-1]) if runtimes else None
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
    Fields already set in `card_data` (language, license, single_task, ...) are kept."""
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
