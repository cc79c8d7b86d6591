"""What an MTST model card says: [`MTSTCardData`], a `huggingface_hub.ModelCardData` dataclass whose results become
`EvalResult`s (from which huggingface_hub makes the `model-index`), and the values the template renders (tasks,
results, training options and log, usage snippets). `mtst.hub.callback.MTSTCardCallback` fills it during training;
`mtst.hub.card` renders it.

Facts that are unknown become HTML comments, never "None"; no local path or token is ever shown.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import math
import platform
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from huggingface_hub import EvalResult, ModelCardData

from mtst import __version__
from mtst.hub.publish import (
    LOSS_CURVE_FILE,
    MODEL_ID_PLACEHOLDER,
    MODEL_NAME_PLACEHOLDER,
    is_hub_id,
    resolve_base_model,
)
from mtst.metrics import HEADLINE_METRICS
from mtst.remote.configuration_mtst import (
    HEAD_TASK_TYPES,
    MULTI_LABEL_CLASSIFICATION,
    REGRESSION,
    RETRIEVAL,
    SENTENCE_SIMILARITY,
    MTSTConfig,
)
from mtst.remote.configuration_mtst import SEQUENCE_CLASSIFICATION as SEQUENCE
from mtst.remote.configuration_mtst import TOKEN_CLASSIFICATION as TOKEN
from mtst.training.sampler import task_mapping

logger = logging.getLogger(__name__)

# The framework versions the card lists: {label: distribution}.
_VERSIONED = {"Transformers": "transformers", "PyTorch": "torch", "Datasets": "datasets", "Accelerate": "accelerate"}
_VERSIONED.update({"Tokenizers": "tokenizers", "Sentence Transformers": "sentence-transformers"})

__all__ = ["MTSTCardData", "TASK_TYPE_NAMES", "as_number", "format_number", "framework_versions"]

PIPELINE_TAGS = {
    SEQUENCE: "text-classification",
    MULTI_LABEL_CLASSIFICATION: "text-classification",
    REGRESSION: "text-classification",
    TOKEN: "token-classification",
    SENTENCE_SIMILARITY: "sentence-similarity",
    RETRIEVAL: "sentence-similarity",
}


TASK_TYPE_NAMES = {
    SEQUENCE: "Text Classification",
    MULTI_LABEL_CLASSIFICATION: "Multi-label Text Classification",
    REGRESSION: "Text Regression",
    TOKEN: "Token Classification",
    SENTENCE_SIMILARITY: "Semantic Similarity",
    RETRIEVAL: "Retrieval",
}


# metric key (as the trainer logs it, after `<prefix>_<task>_`) -> (model-index metric type, pretty name), per kind
MODEL_INDEX_METRICS = {
    SEQUENCE: {"accuracy": ("accuracy", "Accuracy")}
    | {f"macro_{m}": (m, f"Macro {m.title()}") for m in ("f1", "precision", "recall")},
    TOKEN: {m: (m, f"Entity {m.title()} (seqeval, strict)") for m in ("f1", "precision", "recall")}
    | {"accuracy": ("accuracy", "Token Accuracy")},
    SENTENCE_SIMILARITY: {m: (m, f"{m.title()} Correlation (cosine)") for m in ("spearman", "pearson")},
    MULTI_LABEL_CLASSIFICATION: {"micro_f1": ("f1", "Micro F1"), "macro_f1": ("f1", "Macro F1")}
    | {"jaccard": ("jaccard", "Jaccard (per text)"), "subset_accuracy": ("accuracy", "Subset Accuracy")},
    REGRESSION: {m: (m, f"{m.title()} Correlation") for m in ("spearman", "pearson")} | {"rmse": ("rmse", "RMSE")},
    RETRIEVAL: {"mrr_at_10": ("mrr@10", "MRR@10 (cosine)")}
    | {f"recall_at_{k}": (f"recall@{k}", f"Recall@{k} (cosine)") for k in (1, 10)},
}


# The YAML header's keys in the Hub's usual order (the model-index, built by huggingface_hub, comes last).
HEADER_ORDER = ("library_name", "pipeline_tag", "tags", "language", "license", "base_model", "datasets", "metrics")


_NOT_METRICS = ("runtime", "samples_per_second", "steps_per_second", "epoch", "loss")


def format_number(value: Any, digits: int | None = 4) -> str:
    """A table cell, never 'None': floats to `digits` places (`None`: their shortest exact form, 5e-05), booleans in
    lower case, lists and mappings as JSON, pipes escaped."""
    if isinstance(value, Enum):
        value = value.value
    if value is None:
        return "-"
    if isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, float):
        text = repr(value) if digits is None or not math.isfinite(value) else f"{value:.{digits}f}"
    elif isinstance(value, (dict, list, tuple)):
        text = json.dumps(value, default=str, sort_keys=isinstance(value, dict))
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def as_number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _scalar(value: Any) -> Any:
    """A numpy or torch scalar as a Python number; anything else unchanged."""
    return value.item() if getattr(value, "ndim", None) == 0 and callable(getattr(value, "item", None)) else value


def framework_versions() -> dict[str, str]:
    versions = {"Python": platform.python_version(), "MTST": __version__}
    for label, dist in {**_VERSIONED, "huggingface_hub": "huggingface_hub"}.items():
        try:
            versions[label] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


@dataclass
class MTSTCardData(ModelCardData):
    """What the MTST model card says; filled by hand, by `mtst.hub.callback.MTSTCardCallback` during training, or both.

    Args:
        language (`str` or `list[str]`, *optional*): language code(s) of the training data, e.g. `"en"`.
        license (`str`, *optional*): license id, e.g. `"apache-2.0"`.
        model_name (`str`, *optional*): pretty name; defaults to the repo name.
        model_id (`str`, *optional*): the Hub repo id (`namespace/name`), used in the usage snippets;
            [`push_to_hub`] fills it in.
        base_model (`str`, *optional*): the backbone's Hub id or path; local paths are mapped to a Hub id when one is
            known (see `mtst.hub.publish.resolve_base_model`) and dropped otherwise. Default: the model's backbone.
        tags (`list[str]`): extra tags, added to the MTST ones.
        task_datasets (`dict`): per task `{"id": Hub dataset id, "config", "revision", "name", "train_size",
            "eval_size"}`; see [`set_task_specs`].
        results (`dict`): `{split: {task: {metric: value}}}`; see [`set_eval_results`].
        single_task (`dict`): `{task: {"source", "metric", "test", "validation"}}`: a single-task run's headline
            metric per split and its folder name, shown next to the joint score (see [`set_single_task_results`]).
        widget_examples (`list[str]`): a few texts of the primary task's evaluation data.
        log_history (`list[dict]`): the trainer's log history (training losses and evaluations).
        hyperparameters (`dict`): training arguments that differ from their defaults.
        multitask_options (`dict`): the multi-task training options (sampling, loss weighting, freezing, ...).
        sampling (`dict`): `{"strategy", "probabilities": {task: p}, "steps": {task: n}, "steps_per_epoch"}`.
        learned_loss_weights (`dict`): per-task loss weights learned during training (uncertainty weighting).
        training_seconds (`float`): wall-clock training time.
        kept_model (`dict`): which model training ended with (`MultiTaskTrainer.kept_model`): `{"selection": "best",
            "checkpoint", "step", "metric", "value", "last_step"}` or `{"selection": "last", "step", "metric",
            "reason"}`.
        notes (`list[str]`): extra sentences for the Limitations section.
        embedding_stage_tasks (`list[str]`): embedding tasks trained alone before the head tasks
            (`embedding_tasks_first`), whose embedding the head tasks' preservation then kept.
        embedding_stage_rehearsed (`bool`): whether those tasks trained again next to the head tasks in the second
            stage (`rehearse_embedding_tasks`).
        preservation_task_weights (`dict[str, float]`): the embedding preservation weight each head task's batches
            carried (`MultiTaskTrainer.preservation_weights`: `embedding_preservation_weights`, then shared by
            `embedding_preservation_shared`); empty: worked out from `multitask_options`.
        kept_tasks (`list[str]`): tasks of the starting MTST model that this run kept without training them
            (a grown model, see `mtst.training.grow`); marked "kept, not trained" in the task table.
    """

    language: str | list[str] | None = None
    license: str | None = None
    model_name: str | None = None
    model_id: str | None = None
    base_model: str | None = None
    tags: list[str] = field(default_factory=list)
    task_datasets: dict[str, dict[str, Any]] = field(default_factory=dict)
    results: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    single_task: dict[str, dict[str, Any]] = field(default_factory=dict)
    widget_examples: list[str] = field(default_factory=list)
    log_history: list[dict[str, Any]] = field(default_factory=list)
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    multitask_options: dict[str, Any] = field(default_factory=dict)
    sampling: dict[str, Any] = field(default_factory=dict)
    learned_loss_weights: dict[str, float] = field(default_factory=dict)
    training_seconds: float | None = None
    kept_model: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    kept_tasks: list[str] = field(default_factory=list)
    embedding_stage_tasks: list[str] = field(default_factory=list)
    embedding_stage_rehearsed: bool = False
    preservation_task_weights: dict[str, float] = field(default_factory=dict)
    generated_from_trainer: bool = False

    # set by register() and write_model_card(); not part of the card's own state
    _config: MTSTConfig | None = field(default=None, init=False, repr=False)
    _loss_curve_note: str | None = field(default=None, init=False, repr=False)
    _train_started: float | None = field(default=None, init=False, repr=False)

    def __post_init__(self):
        if isinstance(self.language, str):
            self.language = [self.language]
        if self.model_id is not None and (not is_hub_id(self.model_id) or self.model_id.count("/") != 1):
            logger.warning("Model card: model_id %r is not a 'namespace/name' Hub id; it is ignored.", self.model_id)
            self.model_id = None

    # -- filling ------------------------------------------------------------------------------------------------------

    def register(self, model_or_config) -> MTSTCardData:
        """Attach the model (or its `MTSTConfig`) the card describes."""
        model = getattr(model_or_config, "module", model_or_config)
        self._config = getattr(model, "config", model)
        return self

    def set_task_specs(self, specs: Sequence[Any] | Mapping[str, Any]) -> None:
        """Dataset facts from task specs (`mtst.data.tasks.TaskSpec` or mappings with the same keys); only Hub ids are
        kept as ids, local files are described as such and never named."""
        items = specs.items() if isinstance(specs, Mapping) else [(None, spec) for spec in specs]
        for name, spec in items:
            get = spec.get if isinstance(spec, Mapping) else lambda key, s=spec: getattr(s, key, None)
            name = name or get("name")
            if not name:
                continue
            entry = self.task_datasets.setdefault(name, {})
            dataset = get("dataset")
            if is_hub_id(dataset):
                entry["id"] = dataset
                for key in ("dataset_config", "revision"):
                    if get(key):
                        entry[key.replace("dataset_", "")] = get(key)
            elif dataset or get("data_files"):
                entry["local"] = True

    def set_dataset_sizes(self, train: Mapping[str, int] | None = None, eval: Mapping[str, int] | None = None):
        for key, sizes in (("train_size", train), ("eval_size", eval)):
            for task, size in (sizes or {}).items():
                if size is not None:  # None: an iterable dataset of unknown length
                    self.task_datasets.setdefault(task, {})[key] = int(size)

    def set_eval_results(self, metrics: Mapping[str, Any], prefix: str | None = None, split: str | None = None):
        """Store `<prefix>_<task>_<metric>` values (as the multi-task trainer reports them), under `split`
        (`eval` -> `validation`, `test` and `predict` -> `test` by default; without `prefix`, every prefix found
        except `train`). Task names are matched against the model's tasks
        (or the names already known), longest first, so names with underscores work."""
        tasks = sorted(set(self._tasks()) | set(self.task_datasets), key=len, reverse=True)
        prefixes = [prefix] if prefix else sorted({k.split("_", 1)[0] for k in metrics if "_" in k} - {"train"})
        for pre in prefixes:
            target = split or {"eval": "validation", "predict": "test"}.get(pre, pre)
            for key, value in metrics.items():
                number = as_number(value)
                if number is None or not key.startswith(pre + "_"):
                    continue
                rest = key[len(pre) + 1 :]
                task = next((t for t in tasks if rest.startswith(t + "_")), None)
                metric = rest[len(task) + 1 :] if task else ""
                if metric and not metric.endswith(_NOT_METRICS):
                    self.results.setdefault(target, {}).setdefault(task, {})[metric] = number

    def set_single_task_results(self, results: Mapping[str, Mapping[str, Any]]) -> None:
        """Single-task scores `{task: {"source": run folder name, "metric", "test"/"validation": value}}` (as
        `run_multitask.read_single_task_results` reads them), compared with the joint score of the same metric on the
        test split when both runs have it, else on the validation split."""
        for task, entry in results.items():
            values = {s: float(entry[s]) for s in ("test", "validation") if as_number(entry.get(s)) is not None}
            self.single_task[task] = {"source": entry.get("source"), "metric": entry["metric"], **values}

    def compared_split(self, task: str) -> str | None:
        """The split on which `task`'s single-task and joint scores are compared: test when both have it, else
        validation when both have it, else None."""
        single = self.single_task.get(task, {})
        ours = [s for s in ("test", "validation") if single.get("metric") in self.results.get(s, {}).get(task, {})]
        return next((s for s in ours if s in single), None)

    def set_widget_examples(self, texts: str | Sequence[str], limit: int = 3) -> None:
        """A few example texts (the first `limit` different ones); `mtst.hub.callback.texts_from` reads them from a
        dataset."""
        picked = []
        for text in [texts] if isinstance(texts, str) else list(texts)[: limit * 4]:
            text = " ".join(str(text).split())[:300]
            if text and text not in picked and len(picked) < limit:
                picked.append(text)
        if picked:
            self.widget_examples = picked

    def set_log_history(self, log_history: Sequence[Mapping[str, Any]]) -> None:
        self.log_history = [
            {k: _scalar(v) for k, v in entry.items() if isinstance(_scalar(v), (int, float, str))}
            for entry in log_history
        ]

    # -- reading ------------------------------------------------------------------------------------------------------

    def _tasks(self) -> dict[str, dict]:
        return dict(getattr(self._config, "tasks", None) or {})

    def primary_task(self) -> str | None:
        """The config's primary task, else its first task with a head (the Hub widget answers with it), else the
        first task."""
        tasks, primary = self._tasks(), getattr(self._config, "primary_task", None)
        if primary in tasks:
            return primary
        heads = [name for name, spec in tasks.items() if spec["type"] in HEAD_TASK_TYPES]
        return next(iter(heads or tasks), None)

    def resolved_base_model(self) -> str | None:
        """`base_model` as a Hub id, else the Hub id of the backbone the encoder was loaded from, else None."""
        encoder = getattr(self._config, "encoder", None)
        return resolve_base_model(self.base_model) or resolve_base_model(getattr(encoder, "_name_or_path", None))

    def reported_split(self, task: str) -> str | None:
        """The split whose results represent `task` in the model-index: test when there is one, else validation."""
        return next((s for s in ("test", "validation", *self.results) if self.results.get(s, {}).get(task)), None)

    def display_name(self) -> str:
        return self.model_name or (self.model_id.split("/")[-1] if self.model_id else MODEL_NAME_PLACEHOLDER)

    def _all_eval_results(self) -> list[tuple[bool, EvalResult]]:
        """(the task's data came from the Hub, `EvalResult`) per task and model-index metric (headline first), on the
        task's reported split."""
        results = []
        for task, spec in self._tasks().items():
            split, kind, info = self.reported_split(task), spec["type"], self.task_datasets.get(task, {})
            values = self.results.get(split, {}).get(task, {})
            hub_id = info.get("id")
            results += [
                (
                    bool(hub_id),
                    EvalResult(
                        task_type=PIPELINE_TAGS.get(kind, kind),
                        task_name=f"{TASK_TYPE_NAMES.get(kind, kind)} ({task})",
                        dataset_type=hub_id or task,
                        dataset_name=info.get("name") or hub_id or f"{task} (local files)",
                        dataset_config=info.get("config") if hub_id else None,
                        dataset_split=split,
                        dataset_revision=info.get("revision") if hub_id else None,
                        metric_type=metric_type,
                        metric_value=values[key],
                        metric_name=f"{task} {pretty}",
                    ),
                )
                for key, (metric_type, pretty) in MODEL_INDEX_METRICS.get(kind, {}).items()
                if key in values
            ]
        return results

    @property
    def eval_results(self) -> list[EvalResult]:
        """The model-index's results: one `EvalResult` per task and metric, for the tasks whose data came from the
        Hub. `dataset.type` is a Hub dataset id, which the Hub links to; a task name there linked to a dataset that
        does not exist, and a result without `type` makes the card unreadable to huggingface_hub (`ModelCard.load`
        raises), so a task trained on local files (or on datasets given from Python) is reported in the card's results
        table only."""
        return [result for from_hub, result in self._all_eval_results() if from_hub]

    def header(self) -> ModelCardData:
        """The card's YAML header, a plain `ModelCardData` (keys without a value are left out); huggingface_hub makes
        the `model-index` from its `eval_results`."""
        tasks, primary, eval_results = self._tasks(), self.primary_task(), self.eval_results
        kinds = {spec["type"] for spec in tasks.values()}
        tags = ["multi-task", "custom_code", "sentence-embeddings"]
        tags += list(dict.fromkeys(PIPELINE_TAGS[k] for k in PIPELINE_TAGS if k in kinds)) + ["mtst"]
        tags += ["generated_from_trainer"] if self.generated_from_trainer else []
        datasets = [self.task_datasets.get(task, {}).get("id") for task in tasks]
        return ModelCardData(
            library_name="transformers",
            pipeline_tag=PIPELINE_TAGS.get(tasks[primary]["type"]) if primary else None,
            tags=tags + [t for t in self.tags if t not in tags],
            language=self.language or None,
            license=self.license,
            base_model=self.resolved_base_model(),
            datasets=list(dict.fromkeys(d for d in datasets if d)) or None,
            metrics=list(dict.fromkeys(r.metric_type for _, r in self._all_eval_results())) or None,
            widget=[{"text": text} for text in self.widget_examples] or None,
            eval_results=eval_results or None,
            model_name=self.display_name() if eval_results else None,
        )

    def to_yaml(self, line_break=None, original_order=None) -> str:
        return self.header().to_yaml(line_break=line_break, original_order=[*HEADER_ORDER, "widget"])

    def to_dict(self) -> dict[str, Any]:
        """What the template reads besides the YAML header: the body's facts, tables and snippets."""
        config, tasks, primary = self._config, self._tasks(), self.primary_task()
        usage = self.widget_examples[:2] or ["Replace me with a sentence to analyse."]
        rows, sampling = [self._task_row(name, spec) for name, spec in tasks.items()], self.sampling
        columns, log_rows = self._log_table()
        return {
            "model_name": self.display_name(),
            "model_id": self.model_id or MODEL_ID_PLACEHOLDER,
            "base_model": self.resolved_base_model(),
            "language": self.language,
            "license": self.license,
            "encoder": getattr(config, "encoder", None),  # the template reads its model_type, layers, hidden size
            "pooling": getattr(config, "pooling", None) or "mean",
            "projection_dim": getattr(config, "embedding_dim", None),
            "normalize": getattr(config, "normalize", None),
            "embedding_dim": getattr(config, "sentence_embedding_dimension", None),
            "primary_task": primary,
            "primary_pipeline_tag": PIPELINE_TAGS.get(tasks[primary]["type"]) if primary else None,
            "task_rows": rows,
            "head_rows": [row for row in rows if not row["embedding"]],
            "embedding_rows": [row for row in rows if row["embedding"]],
            **self._preservation(rows),
            "preservation_loss": self.multitask_options.get("embedding_preservation_loss"),
            "embedding_adapter": bool(getattr(config, "embedding_adapter", False)),
            "kept_tasks": [n for n in self.kept_tasks if n in tasks],
            "embedding_stage_tasks": [n for n in self.embedding_stage_tasks if n in tasks],
            "embedding_stage_rehearsed": self.embedding_stage_rehearsed,
            **self._result_rows(tasks),
            "usage_texts": usage,
            "usage_text_py": json.dumps(usage[0], ensure_ascii=False),
            "usage_texts_py": json.dumps(usage, ensure_ascii=False),
            "sampling_strategy": sampling.get("strategy") or self.multitask_options.get("sampling_strategy"),
            "steps_per_epoch": sampling.get("steps_per_epoch"),
            "has_probabilities": any(row["probability"] for row in rows),
            "has_learned_weights": bool(self.learned_loss_weights),
            "options": self.multitask_options,
            "multitask_options": {k: format_number(v, None) for k, v in self.multitask_options.items()},
            "hyperparameters": {k: format_number(v, None) for k, v in self.hyperparameters.items()},
            "training_seconds": self.training_seconds,
            "kept_model": self.kept_model,
            "log_columns": columns,
            "log_rows": log_rows,
            "loss_curve": None if self._loss_curve_note else LOSS_CURVE_FILE,
            "loss_curve_note": self._loss_curve_note,
            "versions": framework_versions(),
            "notes": list(self.notes),
        }

    def _preservation(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """`preservation` (the weight; 0 when every head task's is 0), `preservation_shared` (how many head tasks
        shared it, `embedding_preservation_shared`; 0 when not shared) and `preservation_weights` (`[(task, weight
        each of its batches carried)]` of the head tasks when `embedding_preservation_weights` made them differ from
        the (shared) weight, else empty)."""
        weight = self.multitask_options.get("embedding_preservation")
        off = {"preservation": weight, "preservation_shared": 0, "preservation_weights": []}
        if not isinstance(weight, (int, float)):
            return off
        heads = [row["name"] for row in rows if not row["embedding"]]
        weights = {t: w for t, w in self.preservation_task_weights.items() if t in heads}
        if not weights:  # no trainer reported them: from the options (every head task of the card trained)
            named = self.multitask_options.get("embedding_preservation_weights")
            try:  # the option as the training run parsed it (it was checked there)
                pairs = task_mapping("embedding_preservation_weights", named, heads) if named else {}
            except ValueError:
                return off
            from mtst.training.embeddings import shared_weights

            shared = bool(self.multitask_options.get("embedding_preservation_shared"))
            weights = shared_weights({name: pairs.get(name, weight) for name in heads}, shared)
        kept = sum(w > 0 for w in weights.values())
        shared = kept if self.multitask_options.get("embedding_preservation_shared") and kept > 1 else 0
        even = weight / shared if shared else weight  # what every task's batches carried unless some were named
        return {
            "preservation": weight if kept else 0,
            "preservation_shared": shared,
            "preservation_weights": list(weights.items()) if any(w != even for w in weights.values()) else [],
        }

    def _task_row(self, name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
        """A task's row of the task, data and sampling tables (`info`: its `task_datasets` entry)."""
        info, labels, sampling = self.task_datasets.get(name, {}), list(spec.get("labels") or []), self.sampling
        probability = sampling.get("probabilities", {}).get(name)
        return {
            "name": name,
            "var": _identifier(name),
            "kind": spec["type"],
            "type": TASK_TYPE_NAMES.get(spec["type"], spec["type"]),
            "embedding": spec["type"] in (SENTENCE_SIMILARITY, RETRIEVAL),  # no head: it trains the embedding
            "loss": spec.get("loss"),
            "score_range": spec.get("score_range"),
            "thresholds": spec.get("thresholds"),
            "labels": labels,
            "entity_types": sorted(
                {label.split("-", 1)[1] for label in labels if "-" in label and spec["type"] == TOKEN}
            ),
            "info": info,
            "loss_weight": format_number(as_number(spec.get("loss_weight", 1.0)), 2),
            "size": sampling.get("task_sizes", {}).get(name, info.get("train_size")),
            "steps": sampling.get("steps", {}).get(name),
            "probability": f"{probability:.3f}" if probability is not None else None,
            "learned_weight": format_number(self.learned_loss_weights.get(name))
            if self.learned_loss_weights
            else None,
        }

    def _result_rows(self, tasks: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """The results table (model-index metrics, validation then test, with the single-task score on the compared
        split) and the F1 per entity type of token tasks."""
        splits = [s for s in ("validation", "test") if s in self.results]
        splits += [s for s in self.results if s not in splits]
        result_rows, entity_rows = [], []
        for name, spec in tasks.items():
            known, single = MODEL_INDEX_METRICS.get(spec["type"], {}), self.single_task.get(name)
            compared = self.compared_split(name)
            for split in splits:
                values = self.results[split].get(name) or {}
                for metric in [m for m in known if m in values]:
                    value = values[metric]
                    theirs = single[split] if split == compared and metric == single["metric"] else None
                    result_rows.append(
                        {
                            "task": name,
                            "split": split,
                            "metric": known[metric][1],
                            "value": format_number(value),
                            "single": format_number(theirs) if theirs is not None else None,
                            "delta": f"{(value - theirs) * 100:+.2f}" if theirs is not None else None,
                            "headline": metric == HEADLINE_METRICS.get(spec["type"]),
                        }
                    )
                if spec["type"] in (TOKEN, MULTI_LABEL_CLASSIFICATION):  # F1 per entity type, or per label
                    for metric in sorted(m for m in values if m not in known and m.endswith("_f1")):
                        f1 = format_number(values[metric])
                        entity_rows.append({"task": name, "split": split, "entity": metric[: -len("_f1")], "f1": f1})
        sources = {t: self.single_task[t].get("source") for t in tasks if self.compared_split(t)}
        return {"result_rows": result_rows, "entity_rows": entity_rows, "single_task_sources": sources}

    def _log_table(self) -> tuple[list[str], list[list[str]]]:
        """The training log's columns (Epoch, Step, Training Loss, Validation Loss, per-task headline metrics,
        Average) and one row of cells per logged step."""
        named = {"loss": "Training Loss", "eval_loss": "Validation Loss"}
        for task, spec in self._tasks().items():
            metric = HEADLINE_METRICS.get(spec["type"], "accuracy")
            named[f"eval_{task}_{metric}"] = f"{task} {metric}"
        named["eval_average"] = "Average"
        rows: dict[int, dict[str, Any]] = {}
        for entry in self.log_history:
            is_eval = any(k.startswith("eval_") and not k.startswith("eval_before_") for k in entry)
            if entry.get("step") is None or not ("loss" in entry or is_eval):
                continue
            row = rows.setdefault(int(entry["step"]), {"Epoch": entry.get("epoch"), "Step": int(entry["step"])})
            if entry.get("epoch") is not None:
                row["Epoch"] = entry["epoch"]
            row.update({label: entry[key] for key, label in named.items() if key in entry})
        columns = ["Epoch", "Step", *named.values()]
        columns = [c for c in columns if any(c in row for row in rows.values())]
        cells = [
            [
                f"{float(row[c]):.2f}" if c == "Epoch" and row.get(c) is not None else format_number(row.get(c))
                for c in columns
            ]
            for _, row in sorted(rows.items())
        ]
        return columns, cells

    def loss_points(self) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        """(step, loss) of every logged training loss, and of every validation loss; non-finite values skipped."""
        points = {"loss": [], "eval_loss": []}
        for entry in self.log_history:
            for key, found in points.items():
                if entry.get("step") is not None and as_number(entry.get(key)) is not None:
                    found.append((float(entry["step"]), float(entry[key])))
        return points["loss"], points["eval_loss"]


def _identifier(name: str) -> str:
    """A Python variable name for a task name (task names may contain '-')."""
    ident = re.sub(r"\W", "_", name)
    return ident if ident.isidentifier() and not ident[0].isdigit() else f"task_{ident}"
