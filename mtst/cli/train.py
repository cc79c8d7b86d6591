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

import copy
import gc
import logging
import os
import shutil
import sys
import tempfile

import datasets
import transformers
from transformers import AutoTokenizer, set_seed
from transformers.trainer_utils import IntervalStrategy, SaveStrategy

from mtst.cli.arguments import CommandLineError, DataArguments, ModelArguments, ScriptTrainingArguments, parse_args
from mtst.data.collator import MultiTaskCollator
from mtst.data.errors import TaskConfigError, TaskDataError
from mtst.data.loading import load_task_data
from mtst.data.streaming import open_train_stream
from mtst.data.tasks import load_task_specs
from mtst.data.tokenization import tokenize_task
from mtst.hub import card
from mtst.hub.callback import MTSTCardCallback, card_data_from_trainer
from mtst.hub.card_data import MTSTCardData
from mtst.hub.publish import UploadRefusedError
from mtst.metrics import HEADLINE_METRICS
from mtst.remote.configuration_mtst import MTSTConfigError, check_model_folder, first_sentence, read_config_dict
from mtst.remote.modeling_mtst import MTSTModel
from mtst.training import grow
from mtst.training.arguments import MultiTaskTrainingError
from mtst.training.checkpoints import (
    checkpoint_files,
    checkpoint_problem,
    disk_full_message,
    finished_training,
    is_disk_full,
    last_complete_checkpoint,
)
from mtst.training.distill import parse_teacher_models
from mtst.training.embeddings import preservation_weights
from mtst.training.trainer import MultiTaskTrainer

logger = logging.getLogger(__name__)

EXIT_USAGE = 2


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
    grow.freeze_for_growth(training_args, plan, model.config)
    logger.info(plan.summary())
    for name in plan.kept:
        what = "its head stays as saved" if name in model.config.head_task_names else "an embedding task: no head"
        logger.info("Task '%s': %s (not in the task config; %s).", name, grow.KEPT_NOTE, what)
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
            results = read_config_dict(file)  # a JSON object, as config.json is
        except (OSError, ValueError) as err:
            raise CommandLineError(
                f"--single_task_results: cannot read {file} for task {task!r} ({first_sentence(err)}). Give a "
                "single-task run's output folder or its all_results.json."
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


def attach_model_card(trainer, specs, model_args: ModelArguments):
    """Collect model-card data during training (`mtst.hub.callback.MTSTCardCallback`); returns the card data."""
    card_data = MTSTCardData(base_model=model_args.model_name_or_path)
    card_language = getattr(trainer.args, "card_language", None)
    card_data.language = card_language() if callable(card_language) else None
    card_data.license = getattr(trainer.args, "license", None)
    card_data.set_task_specs(specs)
    plan = getattr(trainer, "growth_plan", None)
    if plan is not None:
        card_data.kept_tasks = list(plan.kept)
    MTSTCardCallback.attach(trainer, card_data)
    return card_data


def write_model_card(trainer, card_data, output_dir: str, raw_datasets=None, metrics=None) -> None:
    """Render the model card into `output_dir` (`mtst.hub.card.write_model_card`) after the model is saved; the final
    metrics (predict_* included) and the raw data's texts (widget examples) are added to the card data first."""
    card_data = card_data_from_trainer(trainer, card_data, raw_datasets=raw_datasets, metrics=metrics)
    card.write_model_card(output_dir, trainer.model, card_data, trainer.processing_class)


def push_model_to_hub(training_args, token: str | None = None) -> None:
    """Publish `output_dir` (model, code, tokenizer, card) to `--hub_model_id` (default: the output folder's name)
    with `mtst.hub.card.push_to_hub`, using `--hub_token`/HF_TOKEN/the login, `--hub_private_repo` and
    `--hub_revision`."""
    repo_id = training_args.hub_model_id or os.path.basename(os.path.abspath(training_args.output_dir))
    commit = card.push_to_hub(
        training_args.output_dir,
        repo_id,
        token=token or training_args.hub_token,
        private=bool(training_args.hub_private_repo),
        revision=training_args.hub_revision,
        commit_message="Upload MTST model (run_multitask.py)",
    )
    logger.info("Pushed the model to %s (commit %s).", commit.repo_url.repo_id, commit.oid)


TABLE_COLUMNS = ("loss", "accuracy", "macro_f1", "macro_precision", "macro_recall", "precision", "recall", "f1")
TABLE_COLUMNS += ("spearman", "pearson", "rmse", "micro_f1", "jaccard", "mrr_at_10", "recall_at_10")


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
            named = ", ".join(f"{metric} for {kind}" for kind, metric in HEADLINE_METRICS.items())
            lines.append(
                f"{split}_average = {metrics[split + '_average']:.4f} (mean of the headline metrics: {named})"
            )
    return "\n".join(lines)


def setup_logging(training_args: ScriptTrainingArguments) -> None:
    """The standard logging block of the transformers example scripts, at the process's log level."""
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%m/%d/%Y %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    if training_args.should_log:
        transformers.utils.logging.set_verbosity_info()
    log_level = training_args.get_process_log_level()
    logging.getLogger("mtst").setLevel(log_level)  # every module of the package logs under it
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


def check_output_dir(output_dir: str | None, model: str | None = None) -> None:
    """Fails with a `CommandLineError` naming the folder when `--output_dir` cannot be written, which would otherwise
    be found only at the first checkpoint, after the data was read and training ran, or when it is, holds or lies
    inside the local folder of `model` (`--model_name_or_path`), whose files training would overwrite or delete.
    Creates the folder."""
    if not output_dir:
        raise CommandLineError("--output_dir is empty: name the folder where the checkpoints and the model go.")
    if model is not None and os.path.isdir(model):
        out, source = os.path.realpath(output_dir), os.path.realpath(model)
        if os.path.commonpath([out, source]) in (out, source):
            where = "is" if out == source else ("is inside" if len(out) > len(source) else "holds")
            raise CommandLineError(
                f"--output_dir {output_dir} {where} the folder of --model_name_or_path {model}, the model this run "
                "starts from: the checkpoints and the final save would overwrite or delete its files (a grown model's "
                "source among them). Choose an --output_dir outside that folder."
            )
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise CommandLineError(
            f"--output_dir {output_dir} is a file, not a folder: name a folder to write the model to."
        )
    try:
        os.makedirs(output_dir, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".mtst-write-check-", dir=output_dir)
        os.close(handle)
        os.remove(probe)
    except OSError as err:
        raise CommandLineError(
            f"--output_dir {output_dir} cannot be written ({err.strerror or first_sentence(err)}): the checkpoints "
            "and the model go there. Choose a folder you can write to."
        ) from err


def checkpoint_to_resume(training_args: ScriptTrainingArguments) -> str | None:
    """`--resume_from_checkpoint`, else (with `--resume_last_checkpoint`) the last complete checkpoint of the output
    folder, else None."""
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
    return checkpoint


def already_finished(training_args: ScriptTrainingArguments, checkpoint: str | None) -> bool:
    """Whether this run has nothing to do: `checkpoint` already trained as far as asked (`max_steps`, or
    `num_train_epochs`) and the output folder holds the model that run saved. Says so in the log."""
    done = finished_training(checkpoint, training_args) if checkpoint is not None else None
    if done is None or checkpoint_problem(training_args.output_dir) is not None:
        return False
    logger.warning(
        "%s holds the model of a finished run (%s trained %d of the %d steps asked for): nothing to train, so the "
        "saved model, its results and its card stay as they are. Raise --max_steps or --num_train_epochs to train "
        "on, or pass --resume_last_checkpoint false (or another --output_dir) to train afresh.",
        training_args.output_dir,
        checkpoint,
        *done,
    )
    return True


def read_tasks(data_args: DataArguments, training_args: ScriptTrainingArguments) -> tuple[list, dict]:
    """(task specs with the command line's sample limits, single-task results to compare with): everything checked
    before any data is read."""
    specs = load_task_specs(data_args.tasks_config)
    for spec in specs:
        if data_args.max_train_samples is not None:
            spec.max_train_samples = data_args.max_train_samples
        if data_args.max_eval_samples is not None:
            spec.max_eval_samples = data_args.max_eval_samples
    logger.info("Tasks: %s", ", ".join(f"{s.name} ({s.type})" for s in specs))
    single_task = read_single_task_results(data_args.single_task_results, specs)
    parse_teacher_models(training_args.teacher_models, [spec.name for spec in specs])  # loaded by the trainer
    return specs, single_task


def load_raw_data(specs, model_args: ModelArguments, data_args: DataArguments, training_args) -> dict:
    """`{task: DatasetDict}` of every task's validated splits (the main process first)."""
    raw = {}
    with training_args.main_process_first(desc="loading the task data"):
        for spec in specs:
            raw[spec.name] = load_task_data(
                spec,
                seed=training_args.seed,
                validation_fraction=data_args.validation_fraction,
                drop_invalid=data_args.drop_invalid,
                cache_dir=model_args.cache_dir,
            )
    return raw


def tokenize_data(specs, raw: dict, tokenizer, model, model_args, data_args, training_args) -> dict:
    """`{task: DatasetDict}` tokenized for `model` (whose position limit `--max_seq_length` must respect)."""
    limit = model.max_sequence_length()
    if limit is not None and training_args.max_seq_length > limit:
        raise CommandLineError(
            f"--max_seq_length {training_args.max_seq_length} is more than the encoder of "
            f"{model_args.model_name_or_path} takes: {limit} positions (max_position_embeddings). Use "
            f"--max_seq_length {limit} or less."
        )
    tokenized = {}
    with training_args.main_process_first(desc="tokenizing the task data"):
        for spec in specs:
            tokenized[spec.name] = tokenize_task(
                spec,
                raw[spec.name],
                tokenizer,
                training_args.max_seq_length,
                training_args.label_all_tokens,
                num_proc=data_args.preprocessing_num_workers,
            )
    for spec in specs:  # a streaming task's train split: read while training, by each process from its shard
        if spec.streaming and training_args.do_train:
            tokenized[spec.name]["train"] = open_train_stream(
                spec,
                tokenizer,
                training_args,
                training_args.max_seq_length,
                drop_invalid=data_args.drop_invalid,
                cache_dir=model_args.cache_dir,
            )
    if training_args.do_predict:
        missing = [s.name for s in specs if "test" not in tokenized[s.name]]
        if missing:
            logger.warning("No test split for task(s) %s: no predictions for them.", ", ".join(missing))
    return tokenized


def train_model(trainer, checkpoint: str | None, tokenized: dict, train_tasks: list[str]) -> dict:
    """Train (resuming from `checkpoint`), save the model, log and save the train metrics."""
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
    return metrics


def embedding_stage_tasks(model, train_tasks: list[str], training_args) -> list[str]:
    """The embedding tasks `--embedding_tasks_first` trains before the head tasks: none unless the run trains both
    kinds with embedding preservation and a training encoder (then the option has nothing to do: one stage)."""
    if not (training_args.do_train and training_args.embedding_tasks_first):
        return []
    embedding = [t for t in train_tasks if model.config.is_embedding_task(t)]
    weights = preservation_weights(training_args, model.config, train_tasks)
    preserving = any(w > 0 for w in weights.values()) and training_args.freeze not in ("all", "encoder")
    if embedding and len(embedding) < len(train_tasks) and preserving:
        return embedding
    logger.info(
        "--embedding_tasks_first: one stage (it stages runs that train embedding tasks and head tasks with "
        "embedding preservation and a training encoder)."
    )
    return []


def train_embedding_stage(model, tokenizer, tokenized: dict, tasks: list[str], specs, training_args, data_args):
    """`--embedding_tasks_first`'s first stage: the embedding tasks alone for num_train_epochs, in a trainer of their
    own that saves no checkpoint (a run stopped during it starts it again); the second stage then computes its
    preservation targets with the model this stage left. Returns the stage's train metrics, prefixed."""
    logger.info("*** Embedding stage: %s alone, before the head tasks (--embedding_tasks_first) ***", ", ".join(tasks))
    args = copy.deepcopy(training_args)
    args.output_dir = os.path.join(training_args.output_dir, "embedding_stage")
    args.save_strategy, args.eval_strategy = SaveStrategy.NO, IntervalStrategy.NO
    args.load_best_model_at_end = False
    trainer = MultiTaskTrainer(
        model=model,
        args=args,
        data_collator=MultiTaskCollator(tokenizer, pad_to_multiple_of=data_args.pad_to_multiple_of),
        train_dataset={t: tokenized[t]["train"] for t in tasks},
        processing_class=tokenizer,
        task_batch_sizes={s.name: s.batch_size for s in specs if s.batch_size and s.name in tasks},
        task_specs={s.name: s for s in specs if s.name in tasks},
    )
    metrics = {f"embedding_stage_{k}": v for k, v in trainer.train().metrics.items()}
    trainer.accelerator.free_memory()  # the next trainer wraps the same model afresh (DDP included)
    del trainer
    gc.collect()
    if training_args.should_save:
        shutil.rmtree(args.output_dir, ignore_errors=True)
    return metrics


def evaluate_model(trainer, specs, tokenized: dict, before: dict) -> dict:
    """Evaluate every task on its validation split (and save the scores before training of a grown model)."""
    logger.info("*** Evaluate ***")
    metrics = trainer.evaluate()
    metrics["eval_samples"] = sum(len(tokenized[s.name]["validation"]) for s in specs)
    trainer.log_metrics("eval", metrics)
    trainer.save_metrics("eval", metrics)
    if before:
        trainer.save_metrics("eval_before", before)
        metrics.update(before)
    return metrics


def predict_tests(trainer, specs, raw: dict, tokenized: dict, data_args, training_args) -> dict:
    """Predict every task's test split, writing `predictions_<task>.jsonl` into the output folder."""
    logger.info("*** Predict ***")
    tasks = [s.name for s in specs if "test" in tokenized[s.name]]
    if not tasks:
        return {}
    output = trainer.predict(
        {t: tokenized[t]["test"] for t in tasks},
        metric_key_prefix="predict",
        raw_datasets={t: raw[t]["test"] for t in tasks},
        output_dir=training_args.output_dir,
        max_seq_length=training_args.max_seq_length,
    )
    metrics = dict(output.metrics)
    metrics["predict_samples"] = sum(len(tokenized[t]["test"]) for t in tasks)
    trainer.log_metrics("predict", metrics)
    trainer.save_metrics("predict", metrics)
    return metrics


def run(model_args: ModelArguments, data_args: DataArguments, training_args: ScriptTrainingArguments) -> dict:
    """Tasks -> data -> model -> train/evaluate/predict -> save. Returns all metrics."""
    setup_logging(training_args)
    check_output_dir(training_args.output_dir, model_args.model_name_or_path)
    checkpoint = checkpoint_to_resume(training_args)
    if already_finished(training_args, checkpoint):
        return {}
    set_seed(training_args.seed)
    specs, single_task = read_tasks(data_args, training_args)
    saved_config = grow.saved_mtst_config(
        model_args.model_name_or_path, cache_dir=model_args.cache_dir, revision=model_args.model_revision
    )
    if saved_config is not None:  # growing a trained MTST: continued tasks read their data with the saved labels
        grow.use_saved_labels(specs, saved_config)
    tokenizer = load_tokenizer(model_args)
    raw = load_raw_data(specs, model_args, data_args, training_args)
    # after the data: labels may be inferred from it
    model, growth = build_or_grow_model(model_args, specs, training_args, saved_config)
    train_tasks = [s.name for s in specs if growth is None or s.name in growth.trained]
    tokenized = tokenize_data(specs, raw, tokenizer, model, model_args, data_args, training_args)
    # The output folder is published once, at the end, with its MTST card (push_model_to_hub): the Trainer's own
    # pushes would upload on every checkpoint, with training_args.bin and a generic card.
    push_to_hub, training_args.push_to_hub = training_args.push_to_hub, False
    # The Trainer pickles its arguments into training_args.bin in every checkpoint and in the output folder: the
    # token must not be among them. It is handed to the push directly.
    hub_token, training_args.hub_token = training_args.hub_token, None
    staged, stage_metrics = embedding_stage_tasks(model, train_tasks, training_args), {}
    if staged and checkpoint is None:
        stage_metrics = train_embedding_stage(model, tokenizer, tokenized, staged, specs, training_args, data_args)
    elif staged:  # the second stage's checkpoint: the embedding stage had finished before it was saved
        logger.info("Resuming the second stage from %s (the embedding stage finished before it).", checkpoint)
    if staged and not training_args.rehearse_embedding_tasks:
        train_tasks = [t for t in train_tasks if t not in staged]
    if staged and training_args.do_train:
        logger.info(
            "*** Second stage: %s (--rehearse_embedding_tasks %s) ***",
            ", ".join(train_tasks),
            str(training_args.rehearse_embedding_tasks).lower(),
        )
    trainer = MultiTaskTrainer(
        model=model,
        args=training_args,
        data_collator=MultiTaskCollator(tokenizer, pad_to_multiple_of=data_args.pad_to_multiple_of),
        train_dataset={t: tokenized[t]["train"] for t in train_tasks} if training_args.do_train else None,
        eval_dataset={s.name: tokenized[s.name]["validation"] for s in specs} if training_args.do_eval else None,
        processing_class=tokenizer,
        task_batch_sizes={s.name: s.batch_size for s in specs if s.batch_size},
        task_specs={s.name: s for s in specs},  # their options (tune_threshold) for the trainer
    )
    trainer.growth_plan = growth
    card_data = attach_model_card(trainer, specs, model_args)
    if single_task:
        card_data.set_single_task_results(single_task)
    card_data.embedding_stage_tasks = list(staged)
    card_data.embedding_stage_rehearsed = bool(staged) and training_args.rehearse_embedding_tasks

    all_metrics: dict = dict(stage_metrics)
    if stage_metrics:
        trainer.log_metrics("embedding_stage", stage_metrics)
        trainer.save_metrics("embedding_stage", stage_metrics)
    before = {}
    if growth is not None and training_args.do_train and training_args.do_eval:
        before = evaluate_before_training(trainer, tokenized, growth)
    if training_args.do_train:
        all_metrics.update(train_model(trainer, checkpoint, tokenized, train_tasks))
    if training_args.do_eval:
        all_metrics.update(evaluate_model(trainer, specs, tokenized, before))
    if training_args.do_predict:
        all_metrics.update(predict_tests(trainer, specs, raw, tokenized, data_args, training_args))

    if training_args.do_train and trainer.is_world_process_zero():
        write_model_card(trainer, card_data, training_args.output_dir, raw_datasets=raw, metrics=all_metrics)
        if push_to_hub:
            push_model_to_hub(training_args, hub_token)
    if push_to_hub and not training_args.do_train:
        logger.warning("--push_to_hub needs --do_train: nothing was trained, so nothing is pushed.")
    if trainer.is_world_process_zero():
        print_summary(trainer, all_metrics, specs, growth)
    return all_metrics


def print_summary(trainer, all_metrics: dict, specs, growth) -> None:
    """The per-task metrics table, and for a grown model the growth plan and what the continued tasks lost."""
    table = format_metrics_table(all_metrics, [s.name for s in specs])
    if table:
        print("\n" + table, flush=True)
    if growth is not None:
        forgetting = grow.format_forgetting(all_metrics, trainer.model.config, growth.continued)
        print("\n" + growth.summary() + ("\n" + forgetting if forgetting else ""), flush=True)


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
    except UploadRefusedError as err:  # after training: the saved model stays, only the upload was refused
        print(f"run_multitask.py: error: {err}", file=sys.stderr, flush=True)
        return EXIT_USAGE
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
    except BaseException as err:
        if output_dir is not None:
            remove_partial_output(output_dir)
        if not is_disk_full(err):
            raise
        # a save that ran out of space (the optimizer's torch.save says only "file write failed"): one paragraph
        print(f"run_multitask.py: error: {disk_full_message(err, training_args.output_dir)}", file=sys.stderr)
        return EXIT_USAGE
    return 0


__all__ = ["ModelArguments", "DataArguments", "ScriptTrainingArguments", "main", "run", "parse_args"]

if __name__ == "__main__":
    sys.exit(main())
