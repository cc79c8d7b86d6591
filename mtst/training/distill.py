"""Distillation from single-task teachers with teacher annealing: `--teacher_models task=DIR,...`.

After Clark et al. 2019, "BAM! Born-Again Multi-Task Networks for Natural Language Understanding": each named task
has a *teacher*, an MTST model trained on that task alone (a `run_multitask.py` output folder). At every training
step of that task the joint model's loss is

    lambda * CE(gold labels) + (1 - lambda) * CE(teacher's predicted distribution),

over the same examples (the tokens with a label, for token tasks; for multi-label tasks the binary cross-entropy
against the teacher's probabilities, for regression tasks the squared error to its prediction), where lambda goes
linearly from 0 at the first step to 1 at the last (teacher annealing): the joint model starts by imitating the
single-task models and ends on the gold labels alone. The teachers run in inference mode on the student's own batch
(one extra forward pass per step), so they must tokenize exactly as the student does and predict the same labels in
the same order; both are checked when the teachers are loaded. Tasks without a teacher train on the gold labels only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from mtst.remote.configuration_mtst import IGNORE_INDEX, MULTI_LABEL_CLASSIFICATION, REGRESSION
from mtst.training.arguments import MultiTaskTrainingError
from mtst.training.sampler import task_mapping

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")

__all__ = ["TaskTeachers", "distilled_loss", "parse_teacher_models", "soft_cross_entropy", "soft_loss"]


def parse_teacher_models(value: str | Mapping[str, str] | None, tasks: Sequence[str]) -> dict[str, str]:
    """`{task: folder}` from 'task=DIR,...' (or a mapping), with every task known and every folder a saved MTST model
    (cheap checks only: nothing is loaded, so a run can make them before its data is read)."""
    value = task_mapping("teacher_models", value or None, tasks, kind=str)
    for task, path in value.items():
        config = os.path.join(path, "config.json")
        try:
            with open(config, encoding="utf-8") as f:
                model_type = json.load(f).get("model_type")
        except (OSError, ValueError) as err:
            raise MultiTaskTrainingError(
                f"--teacher_models: the teacher of task {task!r}, {path}, is not a saved model folder (cannot read "
                f"{config}: {type(err).__name__}: {err})."
            ) from None
        if model_type != "mtst":
            raise MultiTaskTrainingError(
                f"--teacher_models: the teacher of task {task!r}, {path}, is a {model_type!r} model; a teacher is an "
                "MTST model trained on that task (a run_multitask.py output folder)."
            )
    return value


def soft_cross_entropy(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor):
    """Mean over the labelled positions (labels != -100) of the cross-entropy of the student's distribution against
    the teacher's (both from logits; computed in float32)."""
    mask = labels.to(student_logits.device) != IGNORE_INDEX
    if not bool(mask.any()):
        return student_logits.sum() * 0.0
    student = F.log_softmax(student_logits[mask].float(), dim=-1)
    teacher = F.softmax(teacher_logits[mask].float(), dim=-1)
    return -(teacher * student).sum(-1).mean()


def soft_loss(spec: Mapping, student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor):
    """The student's loss against its teacher's predictions, by task type: cross-entropy against the teacher's
    distribution (sequence and token tasks), binary cross-entropy against its probabilities (multi-label), squared
    error to its prediction on the standardised scale (regression)."""
    if spec["type"] == MULTI_LABEL_CLASSIFICATION:
        return F.binary_cross_entropy_with_logits(student_logits.float(), torch.sigmoid(teacher_logits.float()))
    if spec["type"] == REGRESSION:
        return ((student_logits.float() - teacher_logits.float()) / spec["score_std"]).pow(2).mean()
    return soft_cross_entropy(student_logits, teacher_logits, labels)


class TaskTeachers:
    """The loaded teachers of `--teacher_models`, frozen, in inference mode; `loss(...)` mixes a task's gold loss
    with the soft loss against its teacher. `progress` in [0, 1] is the share of training done (lambda)."""

    def __init__(self, value, model, tokenizer=None):
        from mtst.remote.modeling_mtst import MTSTModel

        tasks = model.config.task_names
        self.paths = parse_teacher_models(value, tasks)
        self.models: dict[str, torch.nn.Module] = {}
        self.specs = {task: model.config.tasks[task] for task in self.paths}
        for task, path in self.paths.items():
            try:
                teacher = MTSTModel.from_pretrained(path)
            except (OSError, ValueError, RuntimeError) as err:
                raise MultiTaskTrainingError(
                    f"--teacher_models: cannot load the teacher of task {task!r} from {path} ({type(err).__name__}: "
                    f"{err})."
                ) from None
            own = model.config.tasks[task]
            theirs = teacher.config.tasks.get(task)
            if theirs is None:
                raise MultiTaskTrainingError(
                    f"--teacher_models: the teacher of task {task!r}, {path}, has no task {task!r} (its tasks: "
                    f"{', '.join(teacher.config.task_names)})."
                )
            ours = (own["type"], list(own["labels"]))
            if ours != (theirs["type"], list(theirs["labels"])):
                raise MultiTaskTrainingError(
                    f"--teacher_models: task {task!r} is a {own['type']} task with labels {list(own['labels'])} here "
                    f"but a {theirs['type']} task with labels {list(theirs['labels'])} in its teacher {path}: the "
                    "teacher must predict the same labels in the same order."
                )
            if tokenizer is not None:
                self._check_tokenizer(task, path, tokenizer)
            teacher.requires_grad_(False).eval()
            self.models[task] = teacher

    @staticmethod
    def _check_tokenizer(task: str, path: str, tokenizer) -> None:
        from transformers import AutoTokenizer

        try:
            theirs = AutoTokenizer.from_pretrained(path)
        except (OSError, ValueError) as err:
            raise MultiTaskTrainingError(
                f"--teacher_models: cannot load the tokenizer of the teacher of task {task!r} from {path} "
                f"({type(err).__name__}: {err})."
            ) from None
        if theirs.get_vocab() != tokenizer.get_vocab():
            raise MultiTaskTrainingError(
                f"--teacher_models: the teacher of task {task!r}, {path}, tokenizes differently from this run (other "
                "vocabulary): its predictions would not line up with this run's tokens. Train the teacher from the "
                "same backbone."
            )

    def __contains__(self, task) -> bool:
        return task in self.models

    @torch.no_grad()
    def logits(self, task: str, inputs: Mapping) -> torch.Tensor:
        teacher = self.models[task]
        device = inputs["input_ids"].device
        if next(teacher.parameters()).device != device:
            teacher.to(device)
        return teacher(**{k: inputs[k] for k in MODEL_INPUTS if k in inputs}, task=task).logits

    def loss(self, task: str, inputs: Mapping, student_logits, labels, gold_loss, progress: float):
        """lambda * gold_loss + (1 - lambda) * soft loss against the teacher, lambda = `progress` in [0, 1]."""
        lam = min(max(float(progress), 0.0), 1.0)
        if lam >= 1.0:
            return gold_loss
        soft = soft_loss(self.specs[task], student_logits, self.logits(task, inputs), labels)
        return lam * gold_loss + (1.0 - lam) * soft


def distilled_loss(teachers: TaskTeachers | None, state, inputs: Mapping, task: str, logits, labels, loss):
    """The training loss of `task` on this batch: `loss` itself, or, with a teacher for the task, the teacher-annealed
    mix at the share of training done (`state`: the Trainer's, global_step / max_steps)."""
    if teachers is None or task not in teachers or labels is None:
        return loss
    return teachers.loss(task, inputs, logits, labels, loss, state.global_step / max(state.max_steps, 1))
