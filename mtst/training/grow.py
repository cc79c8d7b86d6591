"""Grow a trained MTST: add tasks to a saved model without retraining it from the backbone.

`run_multitask.py --model_name_or_path <MTST folder or Hub id> --tasks_config new.yaml` compares the saved task
table with the task config:

- **continued**: in both, same type and labels (in order): the head keeps its weights;
- **new**: only in the config: a fresh head is added (`MTSTModel.add_task`);
- **reset**: in both and named in `--reset_heads`: the head is re-created with the config's labels;
- **kept**: only in the saved model: the head stays in the model untouched and is not trained
  ("kept, not trained" in the log and the model card).

A continued task whose labels differ from the saved ones stops the run with one paragraph (unless it is reset).
With `--freeze encoder` (or `all`) the encoder, the projection and every continued and kept head are frozen, so the
old tasks' outputs (and the sentence embedding) stay bit-identical and only the new heads train; without it the
whole model fine-tunes and the continued tasks with training data are mixed in by the sampler (rehearsal). Either
way the loaded model is evaluated on the old tasks before training (`eval_before_<task>_<metric>`), so forgetting
shows as a number next to the usual `eval_<task>_<metric>`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from mtst.metrics import HEADLINE_METRICS
from mtst.remote.configuration_mtst import MTSTConfigError

logger = logging.getLogger(__name__)

KEPT_NOTE = "kept, not trained"


class GrowError(MTSTConfigError):
    """The task config cannot be applied to the saved MTST model (labels or types differ, unknown reset)."""


@dataclass
class GrowthPlan:
    """How the saved model's tasks and the task config's tasks meet (see the module docstring)."""

    source: str
    continued: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    reset: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    frozen: bool = False  # --freeze encoder/all: only new and reset heads train

    @property
    def old_tasks(self) -> list[str]:
        """Tasks whose saved head is used as it is (continued and kept)."""
        return self.continued + self.kept

    @property
    def trained(self) -> list[str]:
        """Tasks that get training batches."""
        return self.new + self.reset if self.frozen else self.continued + self.new + self.reset

    def summary(self) -> str:
        parts = [
            f"{what}: {', '.join(names)}"
            for what, names in (
                ("continued" + (" (frozen)" if self.frozen else ""), self.continued),
                ("new", self.new),
                ("reset", self.reset),
                (KEPT_NOTE, self.kept),
            )
            if names
        ]
        return f"Growing the MTST model {self.source}: " + "; ".join(parts) + "."


def saved_mtst_config(path: str, cache_dir: str | None = None, revision: str | None = None):
    """The `MTSTConfig` of a saved MTST model (a local folder or a Hub id), or None when `path` is not one (a
    backbone). Never raises for a backbone or an unreachable Hub id: those are reported when the backbone loads."""
    from mtst.data.errors import HUB_ERRORS
    from mtst.remote.configuration_mtst import MTSTConfig, is_local_path, read_config_dict

    config_file = None
    if os.path.isdir(path):
        config_file = os.path.join(path, "config.json")
        if not os.path.isfile(config_file):
            return None
    elif "/" in path and not is_local_path(path):  # a namespaced Hub id (a bare name is a backbone such as bert-...)
        try:
            from huggingface_hub import hf_hub_download

            config_file = hf_hub_download(path, "config.json", revision=revision, cache_dir=cache_dir)
        except HUB_ERRORS:  # offline, unknown repo: not an MTST we can grow; the backbone load reports it
            return None
    if config_file is None:
        return None
    try:
        values = read_config_dict(config_file)
    except (OSError, ValueError):
        return None
    if values.get("model_type") != MTSTConfig.model_type:
        return None
    return MTSTConfig.from_dict(values)


def parse_reset_heads(value) -> list[str]:
    """`--reset_heads a,b` (or a list) as a list of names."""
    if not value:
        return []
    items = value if isinstance(value, (list, tuple)) else [value]
    return [name.strip() for item in items for name in str(item).split(",") if name.strip()]


def use_saved_labels(specs, config) -> None:
    """Continued tasks whose config gives no `labels` take the saved ones (in the saved order), so labels are not
    re-inferred (sorted) from the data in another order; the data is then checked against them."""
    for spec in specs:
        if spec.name not in (config.tasks or {}) or config.task_type(spec.name) != spec.type:
            continue
        if spec.is_embedding_task:  # a continued similarity task keeps the saved score range
            spec.score_range = spec.score_range or config.tasks[spec.name].get("score_range")
        elif spec.labels is None:
            spec.labels = config.task_labels(spec.name)


def plan_growth(config, specs, source: str, reset_heads=(), frozen: bool = False) -> GrowthPlan:
    """Compare the saved task table with the task specs; raise `GrowError` (one paragraph) on a label or type
    mismatch that `reset_heads` does not cover, or on a reset head that is not a task of the config."""
    saved = list(config.task_names)
    names = [spec.name for spec in specs]
    reset = parse_reset_heads(reset_heads)
    unknown = [name for name in reset if name not in names]
    if unknown:
        raise GrowError(
            f"--reset_heads names {', '.join(repr(n) for n in unknown)}, which the task config does not declare; "
            "a reset head is re-created from the config's labels and trained on its data. Tasks in the "
            f"config: {', '.join(names)}; tasks of {source}: {', '.join(saved) or '(none)'}."
        )
    plan = GrowthPlan(source=source, frozen=frozen)
    problems = []
    for spec in specs:
        if spec.name not in saved:
            plan.new.append(spec.name)
        elif spec.name in reset:
            plan.reset.append(spec.name)
        elif config.task_type(spec.name) != spec.type:
            problems.append(
                f"task '{spec.name}' is {config.task_type(spec.name)} in the saved model but {spec.type} in the "
                "task config"
            )
        elif list(spec.labels or []) != config.task_labels(spec.name):
            problems.append(
                f"task '{spec.name}' was saved with the labels {config.task_labels(spec.name)} but the task config "
                f"gives {list(spec.labels or [])}"
            )
        else:
            plan.continued.append(spec.name)
    if problems:
        names_text = ",".join(p.split("'")[1] for p in problems)
        raise GrowError(
            f"The MTST checkpoint {source} does not match the task config: {'; '.join(problems)}. An existing head "
            "keeps its labels, in their saved order: give the saved labels in the task config (or leave `labels` "
            f"out to use them), or pass --reset_heads {names_text} to replace the head by a new one trained with the "
            "config's labels (its old weights are dropped)."
        )
    plan.kept = [name for name in saved if name not in names]
    return plan


def grow_model(model, specs, plan: GrowthPlan):
    """Add the new heads and re-create the reset ones (head options from each spec, defaults from the config);
    every other weight is left exactly as loaded."""
    by_name = {spec.name: spec for spec in specs}
    for name in plan.new + plan.reset:
        task = by_name[name].to_model_task()
        model.add_task(name, task.pop("type"), task.pop("labels", None), replace=name in plan.reset, **task)
    return model


def freeze_for_growth(training_args, plan: GrowthPlan, config=None) -> None:
    """Reuse the trainer's static freezing: kept heads are always frozen (they get no data); with `--freeze
    encoder`/`all` the projection (which makes the old sentence vector) and the continued heads too (`freeze=all`
    freezes the encoder and the projection), so the old tasks' outputs cannot change. `config`: the grown model's;
    its embedding tasks have no head to freeze."""
    heads = list(training_args.freeze_heads or [])
    frozen = plan.kept + (plan.continued if plan.frozen else [])
    if config is not None:
        frozen = [name for name in frozen if name in config.head_task_names]
    if plan.frozen and training_args.freeze == "encoder":
        training_args.freeze = "all"
    training_args.freeze_heads = heads + [name for name in frozen if name not in heads] or None


def format_forgetting(metrics: dict, config, tasks) -> str:
    """One line per old task: its headline metric before and after training, and the difference."""
    lines = []
    for task in tasks:
        metric = HEADLINE_METRICS[config.task_type(task)]
        before, after = metrics.get(f"eval_before_{task}_{metric}"), metrics.get(f"eval_{task}_{metric}")
        if before is None or after is None:
            continue
        lines.append(f"  {task:<16} {metric:<9} before {before:.4f}  after {after:.4f}  ({after - before:+.4f})")
    return "Old tasks before and after training:\n" + "\n".join(lines) if lines else ""


__all__ = [
    "GrowError",
    "GrowthPlan",
    "KEPT_NOTE",
    "format_forgetting",
    "freeze_for_growth",
    "grow_model",
    "parse_reset_heads",
    "plan_growth",
    "saved_mtst_config",
    "use_saved_labels",
]
