"""Checkpoint checks of MTST runs: which checkpoint is complete, whether one can be resumed with this model, and
whether the best checkpoint can be the model kept at the end of training.

Checkpoints and the saved model
    A checkpoint is complete once `trainer_state.json` is in it: the Trainer writes that file last, and MTST writes its
    own files (the uncertainty weights `mtst_loss_weighting.safetensors`, the card, the code files and the cleaned
    `config.json`) right after the weights, before it (`MultiTaskTrainer.save_model`). Resuming skips or refuses a
    checkpoint without it, with truncated weights or config, or without a file the run needs. When evaluation and
    saving line up (`best_model_selection`), `load_best_model_at_end=None` turns into True: the model left after
    training, and saved, is the best checkpoint by `metric_for_best_model` (`eval_average` in run_multitask.py); else
    the last model is kept and the log says why. `MultiTaskTrainer.kept_model` says which one was kept.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
from collections.abc import Sequence
from fnmatch import fnmatch
from typing import Any

from safetensors import safe_open
from torch import nn
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from mtst.remote.configuration_mtst import (
    SAFE_WEIGHTS_INDEX_NAME,
    SAFE_WEIGHTS_NAME,
    MTSTConfig,
    MTSTLoadError,
    check_weights,
    check_weights_file,
    read_config_dict,
)
from mtst.training.arguments import MultiTaskTrainingError, option

__all__ = [
    "best_model_selection",
    "check_resume_checkpoint",
    "checkpoint_files",
    "checkpoint_problem",
    "finished_training",
    "last_complete_checkpoint",
]

logger = logging.getLogger(__name__)
LOSS_WEIGHTING_FILE = "mtst_loss_weighting.safetensors"
TASK_OPTIMIZER_FILE = "mtst_task_optimizer_states.safetensors"
TRAINER_STATE_NAME = "trainer_state.json"
CHECKPOINT_RE = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")


def checkpoint_files(args) -> tuple[str, ...]:
    """The MTST files that a checkpoint of a run with these arguments must hold to be resumed from."""
    files = (LOSS_WEIGHTING_FILE,) if option(args, "loss_weighting") == "uncertainty" else ()
    if option(args, "optimizer_state") == "per_task" and not getattr(args, "save_only_model", False):
        files += (TASK_OPTIMIZER_FILE,)
    return files


def checkpoint_problem(folder: str, required: Sequence[str] = ()) -> str | None:
    """Why `folder` is not a complete checkpoint (None when it is). The Trainer writes a checkpoint in place (no
    temporary folder), trainer_state.json last, and MTST writes its own files before that one (see
    `MultiTaskTrainer.save_model`), so a save cut short by a kill lacks trainer_state.json or has truncated files.
    `required` names further files the run needs (`checkpoint_files`)."""
    if not os.path.isdir(folder):
        return "it does not exist"
    state = os.path.join(folder, TRAINER_STATE_NAME)
    if not os.path.isfile(state):
        return f"it has no {TRAINER_STATE_NAME} (the Trainer writes it last, so the save was interrupted)"
    try:
        with open(state, encoding="utf-8") as f:
            json.load(f)
    except (OSError, ValueError) as err:
        return f"its {TRAINER_STATE_NAME} is truncated or invalid ({err})"
    try:
        read_config_dict(os.path.join(folder, "config.json"))
    except (OSError, ValueError) as err:
        return f"its config.json is missing, truncated or invalid ({err})"
    if not any(os.path.isfile(os.path.join(folder, name)) for name in (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME)):
        return f"it has no {SAFE_WEIGHTS_NAME}"
    try:
        check_weights(folder)
    except MTSTLoadError as err:
        return f"its weights are truncated or corrupt ({err.__cause__ or err})"
    for name in required:
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            what = {
                LOSS_WEIGHTING_FILE: " (the learned uncertainty loss weights)",
                TASK_OPTIMIZER_FILE: " (the per-task optimizer states)",
            }.get(name, "")
            return f"it has no {name}{what}, which this run needs: it was saved without it or the save was interrupted"
        if name.endswith(".safetensors"):
            try:
                check_weights_file(path)
            except MTSTLoadError as err:
                return f"its {name} is truncated or corrupt ({err.__cause__ or err})"
    return None


def last_complete_checkpoint(output_dir: str, required: Sequence[str] = ()) -> str | None:
    """The complete checkpoint-N folder of `output_dir` with the highest N (None if there is none); incomplete ones
    (a run killed while saving leaves one behind) are skipped with a warning. `required`: see `checkpoint_problem`."""
    if not os.path.isdir(output_dir):
        return None
    steps = sorted(
        ((int(m.group(1)), name) for name in os.listdir(output_dir) if (m := CHECKPOINT_RE.match(name))),
        reverse=True,
    )
    for _, name in steps:
        folder = os.path.join(output_dir, name)
        problem = checkpoint_problem(folder, required)
        if problem is None:
            return folder
        logger.warning("Skipping the incomplete checkpoint %s: %s.", folder, problem)
    return None


def finished_training(checkpoint: str, args) -> tuple[int, int] | None:
    """(steps trained, steps this run trains) when `checkpoint` already went as far as `args` ask (`max_steps`, or
    `num_train_epochs` without it), else None. Resumed from such a checkpoint, the Trainer takes one more step before
    it checks, so each re-run of a finished command trained one step past `max_steps`."""
    try:
        with open(os.path.join(checkpoint, TRAINER_STATE_NAME), encoding="utf-8") as f:
            state = json.load(f)
    except (OSError, ValueError):
        return None
    step, max_steps = int(state.get("global_step") or 0), option(args, "max_steps")
    if max_steps > 0:
        return (step, max_steps) if step >= max_steps else None
    epochs_done = float(state.get("epoch") or 0.0)
    return (step, step) if epochs_done >= option(args, "num_train_epochs") else None


def _task_table(config: MTSTConfig) -> dict[str, tuple[str, list[str]]]:
    """{task: (type, labels)}: what a checkpoint and the model resuming from it must agree on."""
    return {task: (config.task_type(task), config.task_labels(task)) for task in config.task_names}


def check_resume_checkpoint(checkpoint: str, model: nn.Module, required: Sequence[str] = ()) -> None:
    """Raise `MultiTaskTrainingError` unless `checkpoint` is complete (with the `required` files) and holds exactly
    `model`'s tasks, labels and weight shapes: otherwise the Trainer fails with a size mismatch, or quietly resumes
    with missing heads."""
    problem = checkpoint_problem(checkpoint, required)
    if problem is not None:
        parent = os.path.dirname(os.path.normpath(checkpoint))
        other = (
            last_complete_checkpoint(parent, required) if CHECKPOINT_RE.match(os.path.basename(checkpoint)) else None
        )
        hint = f" The last complete checkpoint there is {other}." if other else ""
        raise MultiTaskTrainingError(f"Cannot resume from {checkpoint}: {problem}.{hint}")
    try:
        saved_tasks = _task_table(MTSTConfig.from_dict(read_config_dict(os.path.join(checkpoint, "config.json"))))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise MultiTaskTrainingError(
            f"Cannot resume from {checkpoint}: its config.json is not an MTST config ({err})."
        ) from err
    tasks = _task_table(model.config)
    problems = [f"task '{t}' is not in the checkpoint" for t in tasks if t not in saved_tasks]
    problems += [f"the checkpoint has task '{t}', which this model lacks" for t in saved_tasks if t not in tasks]
    problems += [
        f"task '{t}' is {kind} with labels {labels} here but {saved_tasks[t][0]} with labels {saved_tasks[t][1]} in "
        "the checkpoint"
        for t, (kind, labels) in tasks.items()
        if t in saved_tasks and saved_tasks[t] != (kind, labels)
    ]
    weights = os.path.join(checkpoint, SAFE_WEIGHTS_NAME)
    if not problems and os.path.isfile(weights):
        with safe_open(weights, framework="pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        mine = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        differ = sorted(k for k in mine.keys() | shapes.keys() if mine.get(k) != shapes.get(k))
        if differ:
            problems.append(
                f"{len(differ)} weight(s) differ in name or shape (e.g. {differ[0]}: {shapes.get(differ[0])} there, "
                f"{mine.get(differ[0])} here; another backbone?)"
            )
    if problems:
        raise MultiTaskTrainingError(
            f"Cannot resume from {checkpoint}: it was trained for other tasks or another model: "
            f"{'; '.join(problems)}. Resume with the tasks and backbone it was trained with, or start afresh in "
            "another output folder."
        )


def best_model_selection(args, has_eval_dataset: bool = True) -> str | None:
    """Why the best checkpoint by `metric_for_best_model` cannot be the model kept at the end of training with these
    arguments, or None when it can: a metric is set, and evaluation and saving line up (the same strategy, and
    `save_steps` a multiple of `eval_steps`, or `save_strategy="best"`), so every checkpoint has its evaluation."""

    def value(strategy) -> str:
        return str(getattr(strategy, "value", strategy))

    save, evaluate = value(args.save_strategy), value(args.eval_strategy)
    if not args.metric_for_best_model:
        return "no --metric_for_best_model is set"
    if save == "no":
        return "no checkpoint is saved (--save_strategy no)"
    if evaluate == "no" or not has_eval_dataset:
        return "nothing is evaluated during training (--eval_strategy no, or no evaluation data)"
    if save == "best":
        return None
    if save != evaluate:
        return f"evaluation (--eval_strategy {evaluate}) and saving (--save_strategy {save}) do not line up"
    if save == "steps":
        every, saved = args.eval_steps or 0, args.save_steps or 0
        if every >= 1 and saved >= 1:
            aligned = saved % every == 0
        else:  # ratios of the total steps, as TrainingArguments compares them
            aligned = every > 0 and every < 1 and 0 < saved < 1 and round(saved * 1e6) % round(every * 1e6) == 0
        if not aligned:
            return (
                f"--save_steps {saved:g} is not a multiple of --eval_steps {every:g}, so some checkpoints have no "
                "evaluation"
            )
    return None


def metric_key(args) -> str:
    """`metric_for_best_model` as the Trainer reads it (`average` -> `eval_average`)."""
    metric = args.metric_for_best_model or "loss"
    return metric if metric.startswith("eval_") else f"eval_{metric}"


def choose_kept_model(args, has_eval_dataset: bool) -> str | None:
    """Set `load_best_model_at_end` when the user left it unset (True when evaluation and saving line up), log which
    model training will keep, and return why it is not the best checkpoint (None when it is)."""
    reason = best_model_selection(args, has_eval_dataset)
    keep_best = getattr(args, "load_best_model_at_end", False)
    if keep_best is None:
        args.load_best_model_at_end = reason is None
    elif keep_best:
        reason = None
    else:
        reason = "--load_best_model_at_end is false"
    if args.should_log:
        metric = metric_key(args)
        if args.load_best_model_at_end:
            logger.info(
                "The model kept at the end of training is the best checkpoint by %s (evaluation and saving line "
                "up; --load_best_model_at_end false keeps the last one).",
                metric,
            )
        elif keep_best is None:
            logger.warning(
                "The model kept at the end of training is the last one, not the best checkpoint by %s: %s. "
                "Evaluate and save with the same strategy (--save_steps a multiple of --eval_steps) to keep the "
                "best one.",
                metric,
                reason,
            )
    return reason


def kept_model(args, state, reason: str | None) -> dict[str, Any]:
    """Which model training ended with (`reason`: why it cannot be the best checkpoint, or None): `{"selection":
    "best", "checkpoint", "step", "metric", "value", "last_step"}` for the best checkpoint, or `{"selection":
    "last", "step", "metric", "reason"}`."""
    metric, best = metric_key(args), state.best_model_checkpoint
    if args.load_best_model_at_end and best and checkpoint_problem(best) is None:
        match = CHECKPOINT_RE.match(os.path.basename(os.path.normpath(best)))
        step = getattr(state, "best_global_step", None) or (int(match.group(1)) if match else state.global_step)
        return {
            "selection": "best",
            "checkpoint": os.path.basename(os.path.normpath(best)),
            "step": int(step),
            "metric": metric,
            "value": float(state.best_metric) if state.best_metric is not None else None,
            "last_step": state.global_step,
        }
    if reason is None:
        reason = (
            "no evaluated checkpoint was found"
            if best is None
            else f"the best checkpoint {os.path.basename(os.path.normpath(best))} is missing or incomplete"
        )
    return {"selection": "last", "step": state.global_step, "metric": metric, "reason": reason}


# -- the final save: into a staging folder beside the output folder, then swapped in ----------------------------------

# Files of an earlier model that a new save replaces or, when the new one has no such file, removes (old shards).
_MODEL_FILE_PATTERNS = ("model*.safetensors", "model.safetensors.index.json", "pytorch_model*.bin")


def staging_folder(folder: str) -> str:
    """Where the final model is written before it replaces the one in `folder`: `.<name>.saving` beside it (the same
    file system, so the swap is a rename), created empty."""
    folder = os.path.abspath(folder)
    stage = os.path.join(os.path.dirname(folder), f".{os.path.basename(folder)}.saving")
    shutil.rmtree(stage, ignore_errors=True)
    os.makedirs(stage)
    return stage


def swap_in_saved_model(stage: str, folder: str) -> None:
    """Move every file the save wrote into `stage` over its namesake in `folder` (a rename each: a reader or a kill
    sees the old file or the new one, never half of one), remove an earlier model's weight files the new save does not
    have, then remove `stage`. What else `folder` holds (checkpoints, results, logs, the card) is left alone."""
    os.makedirs(folder, exist_ok=True)
    new = set(os.listdir(stage))
    for name in os.listdir(folder):
        if name not in new and any(fnmatch(name, p) for p in _MODEL_FILE_PATTERNS):
            os.remove(os.path.join(folder, name))
    # the weights last: a loader that finds the new weights finds the new config and tokenizer beside them
    for name in sorted(new, key=lambda n: any(fnmatch(n, p) for p in _MODEL_FILE_PATTERNS)):
        target = os.path.join(folder, name)
        if os.path.isdir(target) and not os.path.islink(target):
            shutil.rmtree(target)
        os.replace(os.path.join(stage, name), target)
    shutil.rmtree(stage, ignore_errors=True)


# -- a full disk ------------------------------------------------------------------------------------------------------


def is_disk_full(err: BaseException) -> bool:
    """`err`, or an error it was raised from, says the disk is full: an OSError with errno ENOSPC (or EDQUOT), or
    torch.save's RuntimeError, which only says "file write failed"."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
            return True
        if isinstance(err, RuntimeError) and ("file write failed" in str(err) or "No space left" in str(err)):
            return True
        err = err.__cause__ or err.__context__
    return False


def disk_full_message(err: BaseException, output_dir: str) -> str:
    """One paragraph for a save that ran out of disk space: the folder written, the space left on its disk, and the
    checkpoint a rerun resumes from."""
    written = getattr(err, "filename", None)
    folder = os.path.dirname(os.path.abspath(written)) if isinstance(written, str) else os.path.abspath(output_dir)
    candidates = (folder, output_dir, os.path.dirname(os.path.abspath(output_dir)))
    probe = next((p for p in candidates if os.path.isdir(p)), os.getcwd())
    free = shutil.disk_usage(probe).free
    kept = last_complete_checkpoint(output_dir) if os.path.isdir(output_dir) else None
    resume = (
        f"The complete checkpoint {kept} is kept; free some space and run the same command again to resume from it."
        if kept
        else "No complete checkpoint was written yet; free some space and run the command again."
    )
    return (
        f"The disk is full: saving into {folder} failed ({first_line(err)}); {free / 2**20:.1f} MiB ({free} bytes) "
        f"are free there. {resume}"
    )


def first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else type(err).__name__
