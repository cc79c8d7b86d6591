"""The options of multi-task training: `MultiTaskTrainingArguments` ([`TrainingArguments`] plus the options of
[`mtst.training.trainer.MultiTaskTrainer`]) and `MultiTaskTrainingError`, the error of an invalid multi-task option
(defined here, the lowest module that raises it).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

from transformers import TrainingArguments
from transformers.utils import ExplicitEnum

logger = logging.getLogger(__name__)

__all__ = [
    "FreezeOption",
    "GradientSurgery",
    "LossWeighting",
    "MultiTaskTrainingArguments",
    "MultiTaskTrainingError",
    "SamplingStrategy",
    "UnfreezeUnit",
    "check_options",
]


class SamplingStrategy(ExplicitEnum):
    """How optimizer steps are spread over tasks: in turn, in proportion to the tasks' sizes, by a temperature over
    the sizes (drawn per step, or `balanced`: a full pass of every task, small ones upsampled), or by given weights
    (see `mtst.training.sampler.MultiTaskBatchSampler`)."""

    ROUND_ROBIN = "round_robin"
    PROPORTIONAL = "proportional"
    TEMPERATURE = "temperature"
    BALANCED = "balanced"
    WEIGHTS = "weights"


class LossWeighting(ExplicitEnum):
    """How the tasks' losses are weighted (see `mtst.training.trainer`)."""

    STATIC = "static"
    UNCERTAINTY = "uncertainty"


class GradientSurgery(ExplicitEnum):
    """How a step's shared gradient is adjusted against the other tasks'
    (see `mtst.training.weighting.GradientProjection`)."""

    NONE = "none"
    PCGRAD = "pcgrad"


class OptimizerState(ExplicitEnum):
    """Whose statistics the optimizer keeps for the shared parameters
    (see `mtst.training.weighting.TaskOptimizerStates`)."""

    SHARED = "shared"
    PER_TASK = "per_task"


class FreezeOption(ExplicitEnum):
    """What is frozen from the start (see `mtst.training.freezing.apply_static_freezing`)."""

    NONE = "none"
    ALL = "all"
    ENCODER = "encoder"
    EMBEDDINGS = "embeddings"


class UnfreezeUnit(ExplicitEnum):
    """Unit of `gradual_unfreeze_every`."""

    STEPS = "steps"
    EPOCHS = "epochs"


# The allowed values, in the order the messages and --help list them.
SAMPLING_STRATEGIES = tuple(s.value for s in SamplingStrategy)
LOSS_WEIGHTINGS = tuple(s.value for s in LossWeighting)
GRADIENT_SURGERIES = tuple(s.value for s in GradientSurgery)
FREEZE_OPTIONS = tuple(s.value for s in FreezeOption)
UNFREEZE_UNITS = tuple(s.value for s in UnfreezeUnit)


class MultiTaskTrainingError(ValueError):
    """A multi-task training option is invalid; the message names the option and the allowed values."""


def _choice(default: str, choices: type[ExplicitEnum], help: str):
    """A string option whose allowed values (for --help and the parser) are those of `choices`."""
    return field(default=default, metadata={"help": help, "choices": [choice.value for choice in choices]})


@dataclass
class MultiTaskTrainingArguments(TrainingArguments):
    """[`TrainingArguments`] plus the multi-task options of [`MultiTaskTrainer`].

    The defaults are MTST's recipe, the one `benchmarks/bench_quality.py` chose and `mtst-train` uses: batches of 32,
    learning rate 1e-4 with 10% warm-up (the heads at 10x), balanced task sampling with length grouping, evaluation
    and a checkpoint every epoch, and the best checkpoint by `eval_average` kept at the end when evaluation and saving
    line up. Without evaluation data, evaluation during training is off and the last model is kept.
    """

    per_device_train_batch_size: int = field(default=32, metadata={"help": "Batch size per device for training."})
    per_device_eval_batch_size: int = field(default=64, metadata={"help": "Batch size per device for evaluation."})
    learning_rate: float = field(default=1e-4, metadata={"help": "Peak learning rate of the encoder (AdamW)."})
    warmup_steps: float = field(default=0.1, metadata={"help": "Warm-up steps (a float < 1: share of all steps)."})
    eval_strategy: str = field(
        default="epoch",
        metadata={"help": "When to evaluate: no, steps or epoch (no evaluation data: no evaluation during training)."},
    )
    save_strategy: str = field(
        default="epoch", metadata={"help": "When to save a checkpoint: no, steps, epoch, best."}
    )
    save_total_limit: int | None = field(default=2, metadata={"help": "Keep at most this many checkpoints."})
    metric_for_best_model: str | None = field(
        default="average", metadata={"help": "Metric that picks the best checkpoint (eval_average by default)."}
    )
    load_best_model_at_end: bool | None = field(
        default=None,
        metadata={
            "help": "Keep (and save) the best checkpoint by metric_for_best_model rather than the last model. "
            "Default: true when evaluation and saving line up (same strategy, save_steps a multiple of eval_steps), "
            "else the last model, with the reason logged."
        },
    )
    logging_steps: float = field(default=10, metadata={"help": "Log every N steps."})
    report_to: None | str | list[str] = field(default="none", metadata={"help": "Experiment trackers to report to."})
    sampling_strategy: str = _choice(
        "balanced",
        SamplingStrategy,
        "How optimizer steps are spread over tasks: balanced (every task a full pass per epoch, small tasks upsampled "
        "to the temperature share; the default, chosen by benchmarks/bench_quality.py), round_robin (tasks in turn), "
        "proportional (each example once per epoch, steps in random task order), temperature "
        "(p ~ min(size, cap)^(1/T)), weights (p ~ task_weights).",
    )
    temperature: float = field(default=2.0, metadata={"help": "T of the temperature and balanced strategies."})
    temperature_cap: int | None = field(
        default=None, metadata={"help": "Task sizes are capped at this many examples before the temperature."}
    )
    task_weights: str | None = field(
        default=None,
        metadata={"help": "Sampling weights of the weights strategy: 'task=w,task=w' or a JSON object."},
    )
    group_by_length: bool = field(
        default=True,
        metadata={"help": "Inside each task, batch examples of similar length together (less padding, faster)."},
    )
    loss_weighting: str = _choice(
        "static",
        LossWeighting,
        "static: each task's loss times its loss_weight; uncertainty: learned per-task log-variances (Kendall et al. "
        "2018).",
    )
    head_learning_rate: float | None = field(
        default=None,
        metadata={
            "help": "Peak learning rate of every task head (as SetFit's head_learning_rate; None: learning_rate "
            "times head_learning_rate_factor). "
            "head_learning_rates overrides it per task."
        },
    )
    head_learning_rates: str | None = field(
        default=None,
        metadata={
            "help": "Peak learning rate of task heads, per task ('ner=3e-4,topic=1e-4' or a JSON object; tasks not "
            "named use head_learning_rate)."
        },
    )
    head_learning_rate_factor: float = field(
        default=10.0,
        metadata={
            "help": "Heads without a head_learning_rate(s) train at learning_rate times this factor (1: the encoder's "
            "rate). 10 closed the joint-vs-alone gap of benchmarks/bench_quality.py (benchmarks/README.md)."
        },
    )
    gradient_surgery: str = _choice(
        "none",
        GradientSurgery,
        "pcgrad: at each step, remove from the task's shared-parameter gradient its component against the other "
        "tasks' recent gradients (PCGrad-style, Yu et al. 2020).",
    )
    gradient_surgery_decay: float = field(
        default=0.9, metadata={"help": "Decay of the per-task gradient averages used by gradient_surgery=pcgrad."}
    )
    optimizer_state: str = _choice(
        "shared",
        OptimizerState,
        "shared: one set of optimizer statistics (Adam's moment estimates) for all tasks; per_task: every task keeps "
        "its own for the shared parameters, so a task's steps are scaled by its own gradient history and momentum "
        "does not carry one task's gradients into another task's steps.",
    )
    teacher_models: str | None = field(
        default=None,
        metadata={
            "help": "Distil from single-task teachers with teacher annealing (BAM, Clark et al. 2019): 'task=DIR,...',"
            " DIR a run_multitask.py output folder trained on that task alone with the same backbone. The task's loss "
            "moves from the teacher's predictions (first step) to the gold labels (last step). Tasks not named train "
            "on the gold labels only."
        },
    )
    loss_weighting_lr: float | None = field(
        default=1e-2,
        metadata={"help": "Learning rate of the uncertainty log-variances (None: the model's learning rate)."},
    )
    freeze: str = _choice(
        "none",
        FreezeOption,
        "Freeze from the start: none; all (encoder and projection: only the heads train); encoder; embeddings.",
    )
    freeze_layers: int = field(default=0, metadata={"help": "Freeze the embeddings and the lowest N encoder layers."})
    freeze_heads: list[str] | None = field(default=None, metadata={"help": "Task heads to freeze."})
    gradual_unfreeze_every: int = field(
        default=0,
        metadata={
            "help": "Gradual unfreezing: start with only heads and projection training, then unfreeze one encoder "
            "layer (top first, embeddings last) every N units. 0 turns it off."
        },
    )
    gradual_unfreeze_unit: str = _choice("epochs", UnfreezeUnit, "Unit of gradual_unfreeze_every.")
    layerwise_lr_decay: float = field(
        default=1.0,
        metadata={
            "help": "Encoder layer k from the top (top = 0) trains at lr * decay^k, the embeddings at "
            "lr * decay^num_layers; heads and projection at lr. 1.0 turns it off."
        },
    )
    log_task_per_step: bool = field(
        default=False,
        metadata={"help": "Log one line per training micro-batch with the rank, the step and the task (debugging)."},
    )
    embedding_preservation: float = field(
        default=1.0,
        metadata={
            "help": "Keep the sentence embeddings close to the starting model's while heads train: this weight times "
            "the mean (1 - cosine) between each training text's embedding and the starting model's, added to every "
            "head task's batch loss (0: off). The starting embeddings are computed once before training."
        },
    )
    embedding_preservation_shared: bool = field(
        default=True,
        metadata={
            "help": "Share the preservation weight among the head tasks a run trains with preservation: with k of "
            "them each task's batches carry weight / k, so a task trained next to others meets about the pull toward "
            "the starting model it meets trained alone (every step of a joint run carries the term, each task "
            "trains on part of the steps). false: every head task's batches carry the full weight."
        },
    )
    embedding_preservation_weights: str | None = field(
        default=None,
        metadata={
            "help": "Embedding preservation's weight per head task, for that task's texts ('ner=0,topic=1' or a "
            "JSON object; tasks not named use embedding_preservation). 0 leaves a task's texts free: no starting "
            "embedding is computed for them. Needs embedding_preservation > 0."
        },
    )
    embedding_preservation_loss: str = field(
        default="cosine",
        metadata={
            "help": "How embedding preservation measures the distance: cosine (1 - cosine) or mse.",
            "choices": ["cosine", "mse"],
        },
    )
    embedding_preservation_adapter: bool = field(
        default=True,
        metadata={
            "help": "With embedding preservation, give the model an embedding adapter (config embedding_adapter): a "
            "residual linear map, the identity at the start, between the vector the sentence heads read and the "
            "returned embedding. Preservation trains it with the encoder, so the encoder may drift by a linear map "
            "the adapter undoes: measured, closer embeddings and better heads than preservation without it."
        },
    )
    max_seq_length: int = field(
        default=128, metadata={"help": "Longer inputs are truncated (the tokenization of every task's data)."}
    )
    label_all_tokens: bool = field(
        default=False,
        metadata={"help": "Token tasks: label every sub-token (B-X -> I-X), not only the first of each word."},
    )
    remove_unused_columns: bool = field(
        default=False,
        metadata={"help": "Kept False: the data layer gives only model columns, and 'task' must reach the model."},
    )

    def __post_init__(self):
        """The standard checks, then the multi-task options' (`check_options`); the options stay plain strings."""
        super().__post_init__()
        check_options(self)


_OPTION_DEFAULTS = {
    f.name: f.default
    for f in MultiTaskTrainingArguments.__dataclass_fields__.values()
    if f.name not in TrainingArguments.__dataclass_fields__
}


def option(args, name: str):
    """The value of the training option `name` in `args`; a multi-task option missing from `args` (a plain
    `TrainingArguments`) has its default. A name that is no option at all is a bug: `AttributeError`."""
    if name in _OPTION_DEFAULTS:
        return getattr(args, name, _OPTION_DEFAULTS[name])
    if name in TrainingArguments.__dataclass_fields__:
        return getattr(args, name)
    raise AttributeError(f"{name!r} is not an option of MultiTaskTrainingArguments.")


_ENUM_OPTIONS = {
    "sampling_strategy": SamplingStrategy,
    "loss_weighting": LossWeighting,
    "gradient_surgery": GradientSurgery,
    "optimizer_state": OptimizerState,
    "freeze": FreezeOption,
    "gradual_unfreeze_unit": UnfreezeUnit,
}


def check_temperature(temperature, cap) -> None:
    """The rule of the temperature and balanced strategies' options, for the arguments and the sampler alike."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 < temperature < math.inf:
        raise MultiTaskTrainingError(f"`temperature` must be a positive number; got {temperature!r}.")
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
        raise MultiTaskTrainingError(f"`temperature_cap` must be a positive integer; got {cap!r}.")


def _is_number(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _is_integer(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, int)


def _check_run_numbers(args) -> None:
    """The numbers `TrainingArguments` accepts but no run can use, refused before any work: 0 or -1 epochs saved an
    untrained model, a batch size of 0 failed at the first evaluation (after training), seed -1 in `set_seed`."""
    epochs, max_steps = option(args, "num_train_epochs"), option(args, "max_steps")
    if not (isinstance(max_steps, int) and max_steps > 0) and not (_is_number(epochs) and epochs > 0):
        raise MultiTaskTrainingError(
            f"`num_train_epochs` must be a positive number (or give `max_steps` > 0, which overrides it); got "
            f"{epochs!r}."
        )
    for name in ("learning_rate", "warmup_steps"):  # head_learning_rate(s): checked where they are parsed
        value = option(args, name)
        if not (_is_number(value) and value >= 0):
            raise MultiTaskTrainingError(f"`{name}` must be a finite number >= 0; got {value!r}.")
    for name in ("seed", "data_seed"):
        value = option(args, name)
        if not (value is None and name == "data_seed") and not (_is_integer(value) and 0 <= value < 2**32):
            raise MultiTaskTrainingError(f"`{name}` must be an integer from 0 to 2**32 - 1; got {value!r}.")
    for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
        value = option(args, name)
        if not (_is_integer(value) and value >= 1):
            raise MultiTaskTrainingError(f"`{name}` must be a positive integer; got {value!r}.")


def check_options(args) -> None:
    """Raise `MultiTaskTrainingError` for an invalid multi-task option of `args` (a plain `TrainingArguments` has the
    defaults). `MultiTaskTrainingArguments.__post_init__` calls it, and so does the Trainer, for arguments changed
    after they were made."""
    for name, choices in _ENUM_OPTIONS.items():
        value = option(args, name)
        try:
            choices(value)
        except (ValueError, TypeError):
            allowed = ", ".join(choice.value for choice in choices)
            raise MultiTaskTrainingError(f"Unknown {name} {value!r}; allowed values: {allowed}.") from None
    decay = option(args, "layerwise_lr_decay")
    if not isinstance(decay, (int, float)) or not 0 < decay <= 1:
        raise MultiTaskTrainingError(f"`layerwise_lr_decay` must be in (0, 1]; got {decay!r}.")
    every = option(args, "gradual_unfreeze_every")
    if isinstance(every, bool) or not isinstance(every, int) or every < 0:
        raise MultiTaskTrainingError(f"`gradual_unfreeze_every` must be an integer >= 0; got {every!r}.")
    check_temperature(option(args, "temperature"), option(args, "temperature_cap"))
    weight = option(args, "embedding_preservation")
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight < math.inf:
        raise MultiTaskTrainingError(f"`embedding_preservation` must be a number >= 0 (0: off); got {weight!r}.")
    kind = option(args, "embedding_preservation_loss")
    if kind not in ("cosine", "mse"):
        raise MultiTaskTrainingError(f"Unknown embedding_preservation_loss {kind!r}; allowed values: 'cosine', 'mse'.")
    _check_run_numbers(args)
    factor = option(args, "head_learning_rate_factor")
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not (factor > 0 and math.isfinite(factor)):
        raise MultiTaskTrainingError(f"`head_learning_rate_factor` must be a positive number; got {factor!r}.")
    decay = option(args, "gradient_surgery_decay")
    if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 <= decay < 1:
        raise MultiTaskTrainingError(f"`gradient_surgery_decay` must be in [0, 1); got {decay!r}.")


def settle_trainer_arguments(args, n_tasks: int) -> None:
    """MultiTaskBatchSampler replaces the Trainer's sampler (`train_sampling_strategy` back to "random"; its length
    grouping would also reorder evaluation sets and so misalign prediction files), and single-task batches leave the
    other tasks' heads out of each step's graph, so DDP must expect unused parameters."""
    if getattr(args, "train_sampling_strategy", "random") != "random":
        if args.train_sampling_strategy == "group_by_length" and hasattr(args, "group_by_length"):
            args.group_by_length = True
        logger.warning(
            "train_sampling_strategy=%r is ignored: MultiTaskTrainer samples with MultiTaskBatchSampler "
            "(use sampling_strategy, and group_by_length for length grouping inside each task).",
            args.train_sampling_strategy,
        )
        args.train_sampling_strategy = "random"
    if n_tasks > 1 and args.ddp_find_unused_parameters is None:
        # The same heads are unused on every rank, so DDP keeps their gradients None and the optimizer skips them,
        # exactly as in one process.
        args.ddp_find_unused_parameters = True
