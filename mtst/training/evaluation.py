"""Per-task evaluation and prediction for `MultiTaskTrainer`: the standard evaluation loop once per task, each task's
metrics under `<prefix>_<task>_<metric>`, `<prefix>_average` (the mean of the tasks' headline metrics) and
`<prefix>_loss`, and prediction files per task."""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers.trainer_callback import ProgressCallback
from transformers.trainer_utils import EvalPrediction, PredictionOutput, has_length, speed_metrics

from mtst.data.collator import MultiTaskDataset
from mtst.metrics import HEADLINE_METRICS, task_metrics, tune_thresholds, write_predictions
from mtst.remote.configuration_mtst import MULTI_LABEL_CLASSIFICATION, TOKEN_CLASSIFICATION

logger = logging.getLogger(__name__)

__all__ = ["MultiTaskEvaluationMixin", "per_task"]


def per_task(datasets) -> dict[str, MultiTaskDataset]:
    """`{task: MultiTaskDataset({task: dataset})}` from a mapping or a `MultiTaskDataset`."""
    if isinstance(datasets, MultiTaskDataset):
        datasets = datasets.datasets if len(datasets.task_names) > 1 else {datasets.task_names[0]: datasets}
    return {
        task: ds if isinstance(ds, MultiTaskDataset) and ds.task_names == [task] else MultiTaskDataset({task: ds})
        for task, ds in datasets.items()
    }


class MultiTaskEvaluationMixin:
    """The evaluation and prediction methods of [`MultiTaskTrainer`] (a [`Trainer`] whose `eval_dataset` is a
    `{task: MultiTaskDataset}` mapping, `task_names` its model's tasks, and `_eval_task` the task being evaluated)."""

    _eval_task: str | None = None
    _user_compute_metrics = None

    def _eval_datasets(self, eval_dataset, split: str = "validation") -> dict[str, MultiTaskDataset]:
        """`{task: MultiTaskDataset}` of the given sets (raw ones tokenized; of a DatasetDict, its `split`), else of
        the trainer's own."""
        datasets = eval_dataset if eval_dataset is not None else self.eval_dataset
        if not isinstance(datasets, (Mapping, MultiTaskDataset)):
            raise ValueError("MultiTaskTrainer evaluates a {task: Dataset} mapping (one evaluation set per task).")
        unknown = [t for t in getattr(datasets, "task_names", datasets) if t not in self.task_names]
        if unknown:
            raise ValueError(f"Evaluation data for unknown task(s) {unknown}; tasks: {', '.join(self.task_names)}.")
        return per_task(self._prepare(datasets, split))

    def _compute_metrics(self, eval_pred: EvalPrediction) -> dict:
        task = self._eval_task
        if task is None:
            return {}
        config = self.accelerator.unwrap_model(self.model).config
        metrics = task_metrics(
            config.task_type(task),
            eval_pred.predictions,
            eval_pred.label_ids,
            config.task_labels(task),
            config.tasks[task].get("thresholds"),
        )
        if self._user_compute_metrics is not None:
            metrics.update(self._user_compute_metrics(eval_pred) or {})
        return metrics

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Return the (unweighted) loss, the task's logits and the labels: no hidden states or per-task dicts. An
        embedding task returns its texts' embeddings `[B, columns, D]` as logits (and the scores, or zeros, as labels),
        which its metrics compare over the whole evaluation set; it has no evaluation loss."""
        inputs = self._prepare_inputs(inputs)
        inputs.pop("teacher_embedding", None)
        columns = inputs.pop("columns", None)
        if columns is not None:
            labels = inputs.pop("labels", None)
            with torch.no_grad(), self.compute_loss_context_manager():
                embedding = model(**inputs).sentence_embedding.detach().float()
            embedding = embedding.view(columns, -1, embedding.shape[-1]).transpose(0, 1)
            labels = labels if labels is not None else torch.zeros(embedding.shape[0], device=embedding.device)
            return None, (None if prediction_loss_only else embedding), labels
        labels = inputs.get("labels")
        with torch.no_grad(), self.compute_loss_context_manager():
            outputs = model(**inputs)
        loss = outputs.loss.detach().mean() if outputs.loss is not None else None
        if prediction_loss_only:
            return loss, None, None
        logits = outputs.logits.detach() if outputs.logits is not None else None
        if isinstance(labels, Mapping):
            labels = None
        return loss, logits, labels

    def _task_dataloader(self, task: str, dataset):
        """One task's evaluation dataloader (`dataset=None`: the task's own eval set)."""
        if dataset is None:
            return self.get_eval_dataloader(task)
        return self.get_test_dataloader(dataset)  # not cached under the Trainer's shared "eval" key

    def _run_task_loop(self, task: str, dataloader, description: str, prefix: str, ignore_keys=None):
        """The standard evaluation loop over one task's dataloader."""
        self._eval_task = task
        try:
            return self.evaluation_loop(
                dataloader, description=description, ignore_keys=ignore_keys, metric_key_prefix=prefix
            )
        finally:
            self._eval_task = None

    def _open_progress_bar(self, dataloaders: dict) -> None:
        """The Trainer's progress bar opens at the first evaluation step with that task's batch count as its total,
        and counts every task's steps until the evaluation ends: open it here with the batches of all tasks."""
        if not self.state.is_world_process_zero or not all(has_length(d) for d in dataloaders.values()):
            return
        for callback in self.callback_handler.callbacks:
            if isinstance(callback, ProgressCallback) and callback.prediction_bar is None:
                total = sum(len(d) for d in dataloaders.values())
                callback.prediction_bar = tqdm(total=total, leave=callback.training_bar is None, dynamic_ncols=True)

    def _evaluate_tasks(self, datasets, own: bool, description: str, metric_key_prefix: str, ignore_keys=None):
        """`_run_task_loop` over every task (`own`: the tasks' own eval sets): `{task: EvalLoopOutput}` and the tasks'
        metrics (no speed metrics) plus `<prefix>_average`, the mean of the tasks' headline metrics."""
        config = self.accelerator.unwrap_model(self.model).config
        dataloaders = {task: self._task_dataloader(task, None if own else data) for task, data in datasets.items()}
        self._open_progress_bar(dataloaders)
        outputs, metrics, headline = {}, {}, []
        for task, dataloader in dataloaders.items():
            prefix = f"{metric_key_prefix}_{task}"
            output = self._run_task_loop(task, dataloader, f"{description} ({task})", prefix, ignore_keys)
            outputs[task] = output
            values = {k: v for k, v in output.metrics.items() if not k.endswith(("_runtime", "_per_second"))}
            metrics.update(values)
            key = f"{prefix}_{HEADLINE_METRICS[config.task_type(task)]}"
            if key in values:
                headline.append(values[key])
        if headline:
            metrics[f"{metric_key_prefix}_average"] = float(np.mean(headline))
        return outputs, metrics

    def tune_thresholds(self, tasks: list[str] | None = None) -> dict[str, list[float]]:
        """Per multi-label task (`tasks`; default: those whose task spec sets `tune_threshold`), each label's decision
        threshold with the best F1 on the task's validation set, kept in the model's config (so saved with it) and
        logged. Returns `{task: thresholds}`."""
        config = self.accelerator.unwrap_model(self.model).config
        if tasks is None:
            tasks = [t for t, spec in self.task_specs.items() if getattr(spec, "tune_threshold", False)]
        tuned = {}
        for task in tasks:
            if (
                config.task_type(task) != MULTI_LABEL_CLASSIFICATION
                or not self.eval_dataset
                or task not in self.eval_dataset
            ):
                raise ValueError(
                    f"Thresholds are tuned for multi-label tasks with validation data; {task!r} is not one."
                )
            output = self._run_task_loop(task, self.get_eval_dataloader(task), f"Thresholds ({task})", f"tune_{task}")
            tuned[task] = tune_thresholds(output.predictions, output.label_ids, config.tasks[task]["thresholds"])
            config.tasks[task]["thresholds"] = tuned[task]
            logger.info("Task '%s': decision thresholds tuned on its validation split: %s", task, tuned[task])
        return tuned

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """Run the standard loop per task; adds `<prefix>_average` and `<prefix>_loss`; logs all tasks at once."""
        datasets = self._eval_datasets(eval_dataset)
        self._memory_tracker.start()
        start_time = time.time()
        own = eval_dataset is None
        outputs, metrics = self._evaluate_tasks(datasets, own, "Evaluation", metric_key_prefix, ignore_keys)
        losses = [
            o.metrics[f"{metric_key_prefix}_{t}_loss"]
            for t, o in outputs.items()
            if f"{metric_key_prefix}_{t}_loss" in o.metrics
        ]
        if losses:
            metrics[f"{metric_key_prefix}_loss"] = float(np.mean(losses))
        per_step = self.args.eval_batch_size * self.args.world_size
        num_samples = sum(o.num_samples for o in outputs.values())
        num_steps = sum(math.ceil(o.num_samples / per_step) for o in outputs.values())
        metrics.update(speed_metrics(metric_key_prefix, start_time, num_samples=num_samples, num_steps=num_steps))
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        self._memory_tracker.stop_and_update_metrics(metrics)
        return metrics

    def predict(
        self,
        test_dataset,
        ignore_keys=None,
        metric_key_prefix: str = "test",
        raw_datasets: Mapping[str, Any] | None = None,
        output_dir: str | None = None,
        max_seq_length: int | None = None,
    ) -> PredictionOutput:
        """Predict every task's `{task: Dataset}` set; with `output_dir`, write `predictions_<task>.jsonl` (inputs
        from `raw_datasets`, gold and predicted label names, probabilities). Returns a `PredictionOutput` whose
        `predictions`/`label_ids` are `{task: array}` and whose metrics are `<prefix>_<task>_<metric>` and
        `<prefix>_average`."""
        datasets = self._eval_datasets(test_dataset, split="test")
        start_time = time.time()
        outputs, metrics = self._evaluate_tasks(datasets, False, "Prediction", metric_key_prefix, ignore_keys)
        num_samples = sum(o.num_samples for o in outputs.values())
        metrics.update(speed_metrics(metric_key_prefix, start_time, num_samples=num_samples))
        if output_dir is not None and self.is_world_process_zero():
            config = self.accelerator.unwrap_model(self.model).config
            for task, output in outputs.items():
                if output.predictions is None:
                    continue
                kind, raw = config.task_type(task), (raw_datasets.get(task) if raw_datasets else None)
                word_ids = (
                    self._word_ids(raw, max_seq_length) if kind == TOKEN_CLASSIFICATION and raw is not None else None
                )
                path = os.path.join(output_dir, f"predictions_{task}.jsonl")
                labels, thresholds = config.task_labels(task), config.tasks[task].get("thresholds")
                write_predictions(
                    path, kind, labels, output.predictions, output.label_ids, raw, word_ids, thresholds=thresholds
                )
                logger.info("Wrote %s", path)
        self.control = self.callback_handler.on_predict(self.args, self.state, self.control, metrics)
        predictions = {task: output.predictions for task, output in outputs.items()}
        return PredictionOutput(predictions, {task: output.label_ids for task, output in outputs.items()}, metrics)

    def _word_ids(self, raw_dataset, max_seq_length: int | None):
        tokenizer = self.processing_class
        if tokenizer is None or not getattr(tokenizer, "is_fast", False) or "tokens" not in raw_dataset.column_names:
            return None
        kwargs = {"truncation": True}
        if max_seq_length:
            kwargs["max_length"] = max_seq_length
        enc = tokenizer(list(raw_dataset["tokens"]), is_split_into_words=True, **kwargs)
        return [enc.word_ids(i) for i in range(len(raw_dataset))]
