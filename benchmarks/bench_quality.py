#!/usr/bin/env python
"""Benchmark 4: quality. Is one MTST trained jointly on CoNLL-2003 + AG News as good as each task trained alone?

Five runs per seed, each in its own process, all with the same backbone (all-MiniLM-L6-v2), data, epochs, batch
size, learning rate, schedule (linear decay, the same warm-up share) and max length:

- `joint`: `run_multitask.py` with benchmarks/configs/joint.yaml (ner + topic; extra options with `--joint-args`);
- `ner_only`, `topic_only`: `run_multitask.py` with ner.yaml / topic.yaml (MTST trained on one task);
- `ner_plain`, `topic_plain`: the plain transformers single-task recipe (`bench_quality_plain.py`:
  `AutoModelFor{Token,Sequence}Classification` + `Trainer`, the run_ner.py / run_glue.py way) on the same configs.

Metrics: CoNLL-2003 **test** entity F1 (seqeval, strict IOB2) and AG News **held-out** accuracy (a stratified 20%
of the staged 7,600-row file, carved with the run's seed, so a seed's five runs share it; never used for training or
model selection). Every run's per-example results are kept (per-sentence entity TP/FP/FN, per-example correctness;
`<name>_examples.json.gz`) and every number is computed from them with one code (`bench_stats.py`); the runs' own
reported metrics are recorded beside them as a check. Per task: mean ± standard deviation over seeds, and a paired
bootstrap 95% interval of joint - alone, joint - plain and alone - plain (test examples resampled with the same draw
for both systems, pooled over seeds); "better" / "worse" only where the interval excludes zero, else "same".

Protocols (one code):

- `main` (default): full CoNLL-2003 train + the AG News 80% split, run_multitask.py's default recipe except 1 epoch
  and `group_by_length` on (CPU-sized); `--device cuda --epochs 3` is the GPU protocol.
- `heads`: the multi-label and regression heads: SemEval-2018 E-c (multi-label) and STS-B as a pair regression, each
  alone (MTST), with the plain transformers recipe, and jointly with CoNLL-2003 (against CoNLL-2003 alone), at the
  `main` recipe; scored on the staged validation splits (micro-F1, Spearman).
- `imbalanced`: CoNLL-2003 train cut to a fixed random sample of 3,000 sentences (the same sample for every seed)
  with the AG News 80% split, at run_multitask.py's default recipe as it is (its defaults are read from the script:
  epochs, batch size, learning rate, warm-up, sampling, group_by_length), evaluated on the full CoNLL-2003 test set;
  it mimics the case where a small token task loses most from joint training.
- `three_task`: CoNLL-2003 + AG News + STS-B train as a `sentence_similarity` task (`joint3`), against STS-B trained
  alone (`sts_only`) and the two-task `joint` model, at the `main` recipe (so `--reuse` takes over `main`'s joint
  runs); `staged3` grows CoNLL-2003 + AG News from each seed's `sts_only` model (`--model_name_or_path`, so embedding
  preservation keeps that model's embedding; `staged3r`, not run by default, grows all three tasks from it in one
  stage, so STS-B rehearses); scored on CoNLL-2003 test, AG News held-out and STS-B validation (the embedding's
  Spearman).

The plain recipe always groups by length (as a user would switch it on); `--group_by_length` sets the MTST runs'.

    python benchmarks/bench_quality.py --quick                  # smoke run (minutes; results in a temp folder)
    python benchmarks/bench_quality.py                          # CPU protocol, seeds 42 43 44
    python benchmarks/bench_quality.py --seeds 42 43 44 45 46   # 5 seeds
    python benchmarks/bench_quality.py --device cuda --epochs 3 # GPU protocol
    python benchmarks/bench_quality.py --protocol imbalanced
    python benchmarks/bench_quality.py --protocol heads --output_root runs/q --reuse   # ner_only taken over
    python benchmarks/bench_quality.py --joint-args "--sampling_strategy temperature --temperature 2" --name q_temp
    python benchmarks/bench_quality.py --reanalyze benchmarks/results/quality.json   # statistics again, no training
    python benchmarks/bench_quality.py --output_root runs/q --reuse ...   # take over runs finished in runs/q
    # a third seed for committed runs: seeds 42 and 43 come from the file (same settings), 44 trains
    python benchmarks/bench_quality.py --protocol imbalanced --runs joint ner_only ner_plain \
        --take_over benchmarks/results/quality_imbalanced_preservation.json --name quality_imbalanced_preservation
"""

from __future__ import annotations

import argparse
import concurrent.futures
import gzip
import hashlib
import json
import os
import random
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as bc  # noqa: E402
import bench_embedding_quality as beq  # noqa: E402
import bench_stats as bs  # noqa: E402
import numpy as np  # noqa: E402

# run name -> (kind, task config name); kind "mtst" runs run_multitask.py, "plain" runs bench_quality_plain.py
RUNS = {
    "joint": ("mtst", "joint"),
    "ner_only": ("mtst", "ner"),
    "topic_only": ("mtst", "topic"),
    "ner_plain": ("plain", "ner"),
    "topic_plain": ("plain", "topic"),
    # the three-task protocol: CoNLL-2003 + AG News + STS-B jointly, and STS-B alone
    "joint3": ("mtst", "joint3"),
    "sts_only": ("mtst", "sts"),
    # ... and staged: CoNLL-2003 + AG News grown (`--model_name_or_path`) from that seed's sts_only model
    "staged3": ("mtst", "joint"),
    # ... and with STS-B rehearsed in the second stage (all three tasks, grown from the sts_only model)
    "staged3r": ("mtst", "joint3"),
    # the heads protocol: SemEval-2018 E-c (multi-label) and STS-B as a pair regression, alone, plain, with CoNLL
    "emotion_only": ("mtst", "emotion"),
    "emotion_plain": ("plain", "emotion"),
    "ner_emotion": ("mtst", "joint_emotion"),
    "stsreg_only": ("mtst", "stsreg"),
    "stsreg_plain": ("plain", "stsreg"),
    "ner_stsreg": ("mtst", "joint_stsreg"),
}
PROTOCOL_RUNS = {
    "main": ["joint", "ner_only", "topic_only", "ner_plain", "topic_plain"],
    "imbalanced": ["joint", "ner_only", "topic_only", "ner_plain", "topic_plain"],
    "three_task": ["joint", "joint3", "sts_only", "staged3"],
    "heads": ["ner_only", "emotion_only", "emotion_plain", "ner_emotion", "stsreg_only", "stsreg_plain", "ner_stsreg"],
}
# task -> what is scored: the split, the prediction file's suffix, the metric, the run's own metric key, the runs
TASKS = {
    "ner": {
        "label": "CoNLL-2003 test entity F1",
        "split": "test",
        "suffix": "",
        "metric": "f1",
        "reader": "entities",
        "column": "CoNLL test F1",
        "reported": "predict_ner_f1",
        "systems": {"joint": "joint", "alone": "ner_only", "plain": "ner_plain"},
    },
    "topic": {
        "label": "AG News held-out accuracy",
        "split": "validation",
        "suffix": "_validation",
        "metric": "accuracy",
        "reader": "correctness",
        "column": "AG held-out acc",
        "reported": "eval_topic_accuracy",
        "systems": {"joint": "joint", "alone": "topic_only", "plain": "topic_plain"},
    },
}
SYSTEM_NAMES = {
    "plain": "plain transformers",
    "alone": "MTST alone",
    "joint": "MTST joint",
    "joint3": "MTST joint (3 tasks)",
    "staged3": "MTST staged (3 tasks)",
    "staged3r": "MTST staged, rehearsed (3 tasks)",
    "joint_emotion": "MTST joint with SemEval E-c",
    "joint_stsreg": "MTST joint with STS-B regression",
}
COMPARISONS = (("joint", "alone"), ("joint", "plain"), ("alone", "plain"))
# The three-task protocol compares the CoNLL-2003 and AG News scores of the 3-task joint model with the 2-task one's.
THREE_TASK_SYSTEMS = {"joint3": "joint3", "staged3": "staged3", "staged3r": "staged3r", "joint": "joint"}
THREE_TASK = {task: {**info, "systems": THREE_TASK_SYSTEMS} for task, info in TASKS.items()}
THREE_TASK_COMPARISONS = (("joint3", "joint"), ("staged3", "joint"), ("staged3r", "joint"))
# The heads protocol: each new head type alone, with the plain recipe, and jointly with CoNLL-2003 (whose F1 in each
# joint model is compared with CoNLL-2003 alone). The staged validation splits are the scored `test` splits of its
# configs (SemEval-2018 E-c and STS-B have no staged test split; 10% of train is carved for validation).
HEADS_TASKS = {
    "emotion": {
        "label": "SemEval-2018 E-c validation micro-F1",
        "split": "test",
        "suffix": "",
        "metric": "f1",
        "reader": "multi_label",
        "column": "SemEval E-c micro-F1",
        "reported": "predict_emotion_micro_f1",
        "systems": {"joint": "ner_emotion", "alone": "emotion_only", "plain": "emotion_plain"},
    },
    "stsreg": {
        "label": "STS-B validation Spearman (pair regression)",
        "split": "test",
        "suffix": "",
        "metric": "spearman",
        "reader": "regression",
        "column": "STS-B reg Spearman",
        "reported": "predict_stsreg_spearman",
        "systems": {"joint": "ner_stsreg", "alone": "stsreg_only", "plain": "stsreg_plain"},
    },
    "ner": {
        **TASKS["ner"],
        "systems": {"joint_emotion": "ner_emotion", "joint_stsreg": "ner_stsreg", "alone": "ner_only"},
    },
}
HEADS_COMPARISONS = (*COMPARISONS, ("joint_emotion", "alone"), ("joint_stsreg", "alone"))
# Embedding quality (STS-B validation): every run against the backbone, and these pairs of runs against each other.
EMBEDDING_PAIRS = {
    "three_task": (
        *((run, other) for run in ("joint3", "staged3", "staged3r") for other in ("sts_only", "joint")),
        ("staged3", "joint3"),
        ("staged3r", "joint3"),
    ),
    "main": (),
    "imbalanced": (),
}
RUN_NAMES = {
    "joint": "MTST joint (CoNLL + AG News)",
    "ner_only": "MTST CoNLL alone",
    "topic_only": "MTST AG News alone",
    "ner_plain": "plain transformers CoNLL",
    "topic_plain": "plain transformers AG News",
    "joint3": "MTST joint (CoNLL + AG News + STS-B)",
    "sts_only": "MTST STS-B alone",
    "staged3": "MTST staged (STS-B alone, then CoNLL + AG News grown from it)",
    "staged3r": "MTST staged, STS-B rehearsed (STS-B alone, then all three grown from it)",
    "emotion_only": "MTST SemEval E-c alone",
    "emotion_plain": "plain transformers SemEval E-c",
    "ner_emotion": "MTST joint (CoNLL + SemEval E-c)",
    "stsreg_only": "MTST STS-B regression alone",
    "stsreg_plain": "plain transformers STS-B regression",
    "ner_stsreg": "MTST joint (CoNLL + STS-B regression)",
}


def protocol_tasks(args) -> tuple[dict, tuple]:
    """(tasks scored, comparisons) of the protocol."""
    if args.protocol == "three_task":
        return THREE_TASK, THREE_TASK_COMPARISONS
    if args.protocol == "heads":
        return HEADS_TASKS, HEADS_COMPARISONS
    return TASKS, COMPARISONS


QUICK = {"max_train_samples": 300, "max_eval_samples": 200}
IMBALANCED = {"sentences": 3000, "sample_seed": 2003}  # the sample does not depend on the run seed
DEFAULT_SEEDS = [42, 43, 44]
RUN_RECORD = "bench_quality_run.json"  # in a kept run's folder: its record and per-example results (--reuse)


# ------------------------------------------------------------------------------------------------------ the recipe
def run_multitask_defaults() -> dict:
    """The training recipe of run_multitask.py, read from its argument dataclasses (never copied by hand)."""
    from mtst.cli import train as rm

    train = {f.name: f.default for f in rm.ScriptTrainingArguments.__dataclass_fields__.values()}
    data = {f.name: f.default for f in rm.DataArguments.__dataclass_fields__.values()}
    scheduler = train["lr_scheduler_type"]
    return {
        "epochs": float(train["num_train_epochs"]),
        "batch_size": int(train["per_device_train_batch_size"]),
        "eval_batch_size": int(train["per_device_eval_batch_size"]),
        "learning_rate": float(train["learning_rate"]),
        "head_learning_rate_factor": float(train["head_learning_rate_factor"]),
        "embedding_preservation": float(train["embedding_preservation"]),
        "warmup_steps": float(train["warmup_steps"]),
        "lr_scheduler_type": str(getattr(scheduler, "value", scheduler)),
        "weight_decay": float(train["weight_decay"]),
        "sampling_strategy": str(train["sampling_strategy"]),
        "group_by_length": bool(train["group_by_length"]),
        "max_seq_length": int(train["max_seq_length"]),
        "validation_fraction": float(data["validation_fraction"]),
    }


def resolve_recipe(args) -> dict:
    """The protocol's recipe: run_multitask.py's defaults; `main` (and `heads` and `three_task`, which compare with
    its runs) trains 1 epoch with group_by_length on; command-line values override either."""
    recipe = run_multitask_defaults()
    recipe["run_multitask_defaults"] = dict(recipe)
    if args.protocol in ("main", "heads", "three_task"):
        recipe.update(epochs=1.0, group_by_length=True)
    for key in ("epochs", "batch_size", "learning_rate", "max_seq_length"):
        if getattr(args, key) is not None:
            recipe[key] = type(recipe[key])(getattr(args, key))
    if args.group_by_length is not None:
        recipe["group_by_length"] = bool(args.group_by_length)
    return recipe


# -------------------------------------------------------------------------------------------------------- the data
def imbalanced_data(folder: str) -> tuple[dict, dict]:
    """Write the fixed 3,000-sentence sample of CoNLL-2003 train and the imbalanced protocol's task configs (absolute
    data paths) into `folder`; returns ({config name: path}, a description of the sample)."""
    import yaml

    rows = bc.read_jsonl("conll_train")
    n, seed = IMBALANCED["sentences"], IMBALANCED["sample_seed"]
    indices = sorted(random.Random(seed).sample(range(len(rows)), n))
    os.makedirs(folder, exist_ok=True)
    sample_path = os.path.join(folder, f"conll2003_train_sample{n}_seed{seed}.jsonl.gz")
    with gzip.open(sample_path, "wt", encoding="utf-8") as f:
        for i in indices:
            f.write(json.dumps(rows[i], ensure_ascii=False) + "\n")
    configs = {}
    for name in ("joint", "ner", "topic"):
        config = bc.task_config(name)
        for task in config["tasks"]:
            if task["name"] == "ner":
                task["data_files"]["train"] = sample_path
        configs[name] = os.path.join(folder, f"{name}_imbalanced.yaml")
        with open(configs[name], "w", encoding="utf-8") as f:
            yaml.safe_dump(config, f, sort_keys=False)
    info = {
        "conll_train_sentences": n,
        "of": len(rows),
        "sample": f"sorted(random.Random({seed}).sample(range({len(rows)}), {n})) of conll2003/train.jsonl.gz rows",
        "indices_sha256": hashlib.sha256(",".join(map(str, indices)).encode()).hexdigest(),
        "tokens": sum(len(rows[i]["tokens"]) for i in indices),
    }
    return configs, info


def task_configs(args, root: str) -> tuple[dict, dict | None]:
    """{config name: path} of the protocol's task configs (relative to the repository root when committed)."""
    if args.protocol == "imbalanced":
        return imbalanced_data(os.path.join(root, "data"))
    configs = {}
    names = {"three_task": ("joint", "ner", "topic", "joint3", "sts")}
    names["heads"] = ("ner", "emotion", "joint_emotion", "stsreg", "joint_stsreg")
    for name in names.get(args.protocol, ("joint", "ner", "topic")):
        bc.task_config(name)  # checks that every data file exists (clear message otherwise)
        if bc.DATA_DIR == bc.DEFAULT_DATA_DIR:
            configs[name] = os.path.relpath(os.path.join(bc.CONFIG_DIR, f"{name}.yaml"), bc.REPO_ROOT)
        else:  # MTST_BENCH_DATA points elsewhere: a copy with absolute data paths
            configs[name] = bc.write_task_config(name, os.path.join(root, "configs"))
    return configs, None


# -------------------------------------------------------------------------------------------------------- the runs
def _limits(args) -> list[str]:
    out = []
    if args.max_train_samples:
        out += ["--max_train_samples", str(args.max_train_samples)]
    if args.max_eval_samples:
        out += ["--max_eval_samples", str(args.max_eval_samples)]
    return out


def staging_options(config: str) -> list[str]:
    """run_multitask.py's defaults that act only on some task configs, written out for those, so that `--reuse` does
    not take a run kept from before them for one made with them: staging (and rehearsal) for a config with embedding
    and head tasks, and sharing the preservation weight for one with several head tasks."""
    import yaml

    from mtst.remote.configuration_mtst import EMBEDDING_TASK_TYPES

    with open(os.path.join(bc.REPO_ROOT, config), encoding="utf-8") as f:
        types = [task.get("type") for task in yaml.safe_load(f)["tasks"]]
    heads = [t for t in types if t not in EMBEDDING_TASK_TYPES]
    out = []
    if heads and len(heads) < len(types):
        out += ["--embedding_tasks_first", "true", "--rehearse_embedding_tasks", "true"]
    if len(heads) > 1:
        out += ["--embedding_preservation_shared", "true"]
    return out


def mtst_command(config: str, output_dir: str, recipe: dict, args, seed: int, joint: bool) -> list[str]:
    cmd = [
        "run_multitask.py",
        "--tasks_config", config,
        "--output_dir", output_dir,
        "--do_train", "--do_eval", "--do_predict",
        "--num_train_epochs", f"{recipe['epochs']:g}",
        "--per_device_train_batch_size", str(recipe["batch_size"]),
        "--per_device_eval_batch_size", str(recipe["eval_batch_size"]),
        "--learning_rate", f"{recipe['learning_rate']:g}",
        "--head_learning_rate_factor", f"{recipe['head_learning_rate_factor']:g}",
        "--embedding_preservation", f"{recipe['embedding_preservation']:g}",
        "--max_seq_length", str(recipe["max_seq_length"]),
        "--group_by_length", "true" if recipe["group_by_length"] else "false",
        "--sampling_strategy", recipe["sampling_strategy"],
        "--seed", str(seed),
        "--eval_strategy", "no",
        "--save_strategy", "no",
        "--logging_steps", "50",
        "--disable_tqdm", "true",
        "--resume_last_checkpoint", "false",
    ]  # fmt: skip
    if args.device == "cpu":
        cmd.append("--use_cpu")
    cmd += staging_options(config) + _limits(args) + shlex.split(args.mtst_args)
    if joint:
        cmd += shlex.split(args.joint_args)
    return cmd


def plain_command(config: str, output_dir: str, recipe: dict, args, seed: int) -> list[str]:
    cmd = [
        "benchmarks/bench_quality_plain.py",
        "--tasks_config", config,
        "--output_dir", output_dir,
        "--num_train_epochs", f"{recipe['epochs']:g}",
        "--per_device_train_batch_size", str(recipe["batch_size"]),
        "--per_device_eval_batch_size", str(recipe["eval_batch_size"]),
        "--learning_rate", f"{recipe['learning_rate']:g}",
        "--warmup_steps", f"{recipe['warmup_steps']:g}",
        "--lr_scheduler_type", recipe["lr_scheduler_type"],
        "--weight_decay", f"{recipe['weight_decay']:g}",
        "--max_seq_length", str(recipe["max_seq_length"]),
        "--validation_fraction", f"{recipe['validation_fraction']:g}",
        "--group_by_length", "true",
        "--seed", str(seed),
    ]  # fmt: skip
    if args.device == "cpu":
        cmd.append("--use_cpu")
    return cmd + _limits(args)


_SCORING = threading.Lock()  # the in-process scoring of a finished run (held-out predictions, STS-B cosines)


def mtst_heldout_predictions(run_dir: str, config: str, seed: int, recipe: dict, args) -> None:
    """Write `predictions_<task>_validation.jsonl` for the sequence tasks of an MTST run (its AG News held-out
    predictions; `run_multitask.py --do_predict` only writes test splits), with the project's own code: the split
    re-made by `load_task_data` with the run's seed, `tokenize_task`, `MultiTaskTrainer.predict`, `write_predictions`
    (so the accuracy equals the run's `eval_topic_accuracy`)."""
    import datasets
    import transformers
    from transformers import AutoTokenizer

    from mtst.data.collator import MultiTaskCollator
    from mtst.data.loading import load_task_data
    from mtst.data.tasks import load_task_specs
    from mtst.data.tokenization import tokenize_task
    from mtst.metrics import write_predictions
    from mtst.remote.modeling_mtst import MTSTModel
    from mtst.training.arguments import MultiTaskTrainingArguments
    from mtst.training.trainer import MultiTaskTrainer

    transformers.utils.logging.set_verbosity_error()
    specs = [s for s in load_task_specs(os.path.join(bc.REPO_ROOT, config)) if s.type == "sequence_classification"]
    if not specs:
        return
    tokenizer = AutoTokenizer.from_pretrained(run_dir)
    model = MTSTModel.from_pretrained(run_dir)
    with tempfile.TemporaryDirectory(prefix="mtst-bench-predict-") as tmp:
        trainer = MultiTaskTrainer(
            model=model,
            args=MultiTaskTrainingArguments(
                output_dir=tmp,
                per_device_eval_batch_size=recipe["eval_batch_size"],
                use_cpu=args.device == "cpu",
                report_to="none",
                disable_tqdm=True,
            ),
            data_collator=MultiTaskCollator(tokenizer),
            processing_class=tokenizer,
        )
        for spec in specs:
            if args.max_train_samples:
                spec.max_train_samples = args.max_train_samples
            if args.max_eval_samples:
                spec.max_eval_samples = args.max_eval_samples
            raw = load_task_data(spec, seed=seed, validation_fraction=recipe["validation_fraction"])["validation"]
            data = tokenize_task(spec, datasets.DatasetDict(validation=raw), tokenizer, recipe["max_seq_length"])
            output = trainer.predict({spec.name: data["validation"]}, metric_key_prefix="heldout")
            if len(output.predictions[spec.name]) != len(raw):
                raise RunFailed(
                    f"{run_dir}: {len(output.predictions[spec.name])} held-out predictions of task {spec.name} for "
                    f"{len(raw)} rows; nothing written."
                )
            write_predictions(
                os.path.join(run_dir, f"predictions_{spec.name}_validation.jsonl"),
                spec.type,
                list(spec.labels),
                output.predictions[spec.name],
                output.label_ids[spec.name],
                raw,
            )


def _read_lines(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def read_examples(run_dir: str, task: str, info: dict | None = None) -> dict:
    """A run's per-example results for `task`: ids and rows (`bench_stats`: (tp, fp, fn) per CoNLL sentence, words
    without a prediction, i.e. cut by truncation, left out as the run's own metric leaves them out; (correct, 1) per AG
    News example, named by its row in the staged file, so a seed's runs and different seeds line up; (tp, fp, fn) of
    the labels of a multi-label row; (prediction, gold) of a regression row)."""
    info = info or TASKS[task]
    records = _read_lines(os.path.join(run_dir, f"predictions_{task}{info['suffix']}.jsonl"))
    if info["reader"] == "multi_label":
        rows = [(len(set(r["labels"]) & set(r["predictions"])), len(set(r["predictions"]) - set(r["labels"])),
                 len(set(r["labels"]) - set(r["predictions"]))) for r in records]  # fmt: skip
        return {"ids": list(range(len(records))), "rows": rows}
    if info["reader"] == "regression":
        return {"ids": list(range(len(records))), "rows": [(r["prediction"], r["label"]) for r in records]}
    if info["metric"] == "f1":
        gold, pred = [], []
        for r in records:
            kept = [(g, p) for g, p in zip(r["labels"], r["predictions"]) if p is not None]
            gold.append([g for g, _ in kept])
            pred.append([p for _, p in kept])
        return {"ids": list(range(len(records))), "rows": bs.entity_counts(gold, pred).tolist()}
    rows_of = ag_news_rows()
    ids = []
    for r in records:
        if r["text"] not in rows_of:
            sys.exit(
                f"{run_dir}: an AG News prediction's text is not in {bc.data_path('ag_news')}: {r['text'][:80]!r}"
            )
        ids.append(rows_of[r["text"]])
    return {
        "ids": ids,
        "rows": bs.correctness([r["label"] for r in records], [r["prediction"] for r in records]).tolist(),
    }


_AG_ROWS: dict[str, int] = {}


def ag_news_rows() -> dict[str, int]:
    """text -> row of the staged AG News file (its 7,600 texts are distinct)."""
    if not _AG_ROWS:
        _AG_ROWS.update({row["text"]: i for i, row in enumerate(bc.read_jsonl("ag_news"))})
    return _AG_ROWS


# Options added to run_multitask.py after runs were kept: a kept command without one ran with this value.
OPTIONS_ADDED_LATER = {
    "--optimizer_state": "shared",
    "--head_learning_rate_factor": "1",
    "--embedding_preservation": "0",  # runs made before embedding preservation existed did not preserve
    # Written into the commands of configs with embedding and head tasks (`staging_options`) since they rehearse;
    # an older command of such a config trained them in one stage (a folder kept between the staging default and
    # rehearsal, which staged without rehearsing, would be taken for one stage: retrain those).
    "--embedding_tasks_first": "false",
    "--rehearse_embedding_tasks": "false",
    # Written into the commands of configs with several head tasks since the weight is shared by them.
    "--embedding_preservation_shared": "false",
}
# Options that change only what a run writes about itself (its model card), not the model: ignored by --reuse.
CARD_ONLY_OPTIONS = ("--single_task_results",)


def effective_arguments(command: str) -> tuple[str, dict[str, str]]:
    """(script, {option: value}) of a run command, the last value of a repeated option winning as in argparse, so
    `--sampling_strategy proportional --sampling_strategy balanced` (recipe, then --joint-args) equals
    `--sampling_strategy balanced`; flags get ""; `--output_dir` and the card-only options are left out, and
    run_multitask.py options added later get the value they had before (`OPTIONS_ADDED_LATER`). Used by --reuse to
    recognise a run made with the same settings."""
    words = shlex.split(command)[1:]  # drop "python"
    options: dict[str, str] = {}
    i = 1
    while i < len(words):
        key = words[i].split("=", 1)[0]
        if "=" in words[i]:
            options[key] = words[i].split("=", 1)[1]
        elif i + 1 < len(words) and not words[i + 1].startswith("--"):
            options[key] = words[i + 1]
            i += 1
        else:
            options[key] = ""
        i += 1
    for option in ("--output_dir", *CARD_ONLY_OPTIONS):  # where a run is kept is not one of its settings
        options.pop(option, None)
    # nor the folder of the benchmark's configs and runs (a staged run starts from a run folder)
    for option in ("--tasks_config", "--teacher_models", "--model_name_or_path"):
        if option in options:
            options[option] = ",".join(
                (k + "=" if sep else "") + os.path.basename(v)
                for k, sep, v in (p.rpartition("=") for p in options[option].split(","))
            )
    if words and words[0].endswith("run_multitask.py"):
        for option, value in OPTIONS_ADDED_LATER.items():
            options.setdefault(option, value)
    return words[0], options


def plan_runs(args, recipe: dict, root: str, configs: dict) -> list[dict]:
    """Every (seed, run) as `{"name", "seed", "kind", "out", "cmd", "after"}`. A seed's joint run comes after its
    single-task MTST runs of this invocation (`after`) and names them with --single_task_results, so its model card
    shows the single-task score and the difference next to the joint one."""
    plan = []
    for seed in args.seeds:
        names = sorted(args.runs, key=lambda n: (n == "joint", n.startswith("staged")))  # after the runs they need
        outs = {}
        for name in names:
            kind, config_name = RUNS[name]
            # A joint run with other options gets its own folder, so runs of several recipes can share a root.
            # So do MTST runs with --mtst-args (a recipe change for joint and alone runs alike).
            other = (name == "joint" and (args.joint_args or args.distill)) or (kind == "mtst" and args.mtst_args)
            tag = f"{name}_{args.name}" if other else name
            out = outs[name] = os.path.join(root, f"{tag}_seed{seed}")
            after = []
            if kind == "mtst":
                cmd = mtst_command(configs[config_name], out, recipe, args, seed, joint=name == "joint")
                if name in ("staged3", "staged3r"):  # grown from the seed's STS-B model, preservation's teacher
                    if "sts_only" not in outs:
                        raise SystemExit(f"The {name} run grows from the sts_only run: add sts_only to --runs.")
                    after = ["sts_only"]
                    cmd += ["--model_name_or_path", outs["sts_only"]]
                    if name == "staged3r":  # its second stage trains STS-B with the heads, in one stage
                        cmd += ["--embedding_tasks_first", "false"]
                if name == "joint":
                    singles = {t: TASKS[t]["systems"]["alone"] for t in TASKS}
                    after = [run for run in singles.values() if run in outs]
                    if after:
                        named = ",".join(f"{t}={outs[run]}" for t, run in singles.items() if run in outs)
                        cmd += ["--single_task_results", named]
                        if args.distill:  # the same runs as teachers (BAM-style teacher annealing)
                            cmd += ["--teacher_models", named]
            else:
                cmd = plain_command(configs[config_name], out, recipe, args, seed)
            plan.append({"name": name, "seed": seed, "kind": kind, "out": out, "cmd": cmd, "after": after})
    return plan


def shown_command(cmd: list[str]) -> str:
    """A planned run's command as recorded (and compared by --reuse and --take_over)."""
    return " ".join(shlex.quote(c) for c in ["python", *cmd])


def run_one(args, recipe: dict, configs: dict, job: dict, env: dict) -> tuple[dict, dict]:
    """Train one planned run (or take it over with --reuse); returns (record, examples)."""
    name, seed, kind, out, cmd = job["name"], job["seed"], job["kind"], job["out"], job["cmd"]
    config = configs[RUNS[name][1]]
    shown = shown_command(cmd)
    saved = os.path.join(out, RUN_RECORD)
    if args.reuse and os.path.isfile(saved):
        with open(saved, encoding="utf-8") as f:
            kept = json.load(f)
        if effective_arguments(kept["record"]["command"]) == effective_arguments(shown):
            print(f"[{name} seed {seed}] reused {saved} (same settings)", flush=True)
            record = kept["record"]
            if "stsb_cosines" not in record and os.path.isfile(os.path.join(out, "config.json")):
                stsb = beq.cosines(out)  # a run kept before embeddings were scored: its model is still there
                record.update(stsb_cosines=stsb.round(7).tolist(), stsb_spearman=beq.spearman(stsb))
            return {**record, "reused": True}, kept["examples"]
        print(f"[{name} seed {seed}] not reused: {saved} was made with other settings", flush=True)
    print(f"[{name} seed {seed}] {shown}", flush=True)
    log_path = os.path.join(bc.RESULTS_DIR, f"{args.name}_{name}_seed{seed}.log")
    t0 = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.run([sys.executable, *cmd], cwd=bc.REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        with open(log_path, encoding="utf-8") as f:
            tail = f.read()[-4000:]
        raise RunFailed(f"[{name} seed {seed}] failed (exit {proc.returncode}); log {log_path}:\n{tail}")
    with _SCORING:  # in this process, one run at a time: two runs ending together once lost held-out rows
        t1 = time.perf_counter()
        if kind == "mtst":
            mtst_heldout_predictions(out, config, seed, recipe, args)
        heldout_s = time.perf_counter() - t1
        with open(os.path.join(out, "all_results.json"), encoding="utf-8") as f:
            metrics = json.load(f)
        tasks, _ = protocol_tasks(args)
        examples = {t: read_examples(out, t, tasks[t]) for t in tasks if name in tasks[t]["systems"].values()}
        stsb = beq.cosines(out)  # the run's sentence embeddings on STS-B validation
    record = {
        "seed": seed,
        "command": shown,
        "wall_s": wall,
        "heldout_predict_s": heldout_s if kind == "mtst" else 0.0,
        "metrics": metrics,
        "log": os.path.relpath(log_path, bc.REPO_ROOT),
        "threads": env.get("OMP_NUM_THREADS"),
        "stsb_cosines": stsb.round(7).tolist(),
        "stsb_spearman": beq.spearman(stsb),
    }
    if args.output_root:  # a later run with --reuse can take this run over
        with open(saved, "w", encoding="utf-8") as f:
            json.dump({"record": record, "examples": examples}, f)
    shown_metrics = ("predict_ner_f1", "eval_ner_f1", "eval_topic_accuracy", "train_runtime")
    print(
        f"[{name} seed {seed}] done in {wall / 60:.1f} min: "
        + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k in shown_metrics),
        flush=True,
    )
    return record, examples


class RunFailed(RuntimeError):
    """A training run exited with an error; the message holds its log's tail."""


def train_all(args, recipe: dict, root: str, configs: dict, kept: dict | None = None) -> tuple[dict, dict]:
    """Run every (seed, run), `args.jobs` at a time (each with cores / jobs threads), a joint run only after the
    single-task runs it is compared with and before other waiting runs (it is the longest), except the runs `kept`
    (--take_over) holds with the same settings; returns (runs: {run: [per-seed record]}, examples: {run: {seed:
    ...}})."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if args.jobs > 1:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // args.jobs))
    os.makedirs(bc.RESULTS_DIR, exist_ok=True)
    plan = plan_runs(args, recipe, root, configs)
    results = planned_take_overs(plan, kept)
    for (name, seed), (record, _) in results.items():
        print(f"[{name} seed {seed}] taken over from {record['taken_over_from']} (same settings)", flush=True)
    pending, running = [j for j in plan if (j["name"], j["seed"]) not in results], {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        while pending or running:
            ready = [j for j in pending if all((r, j["seed"]) in results for r in j["after"])]
            # first the runs that others wait for, then the longest (joint): no core idles at the end
            needed = {(r, j["seed"]) for j in pending for r in j["after"]}
            ready.sort(key=lambda j: ((j["name"], j["seed"]) not in needed, j["name"] != "joint"))
            if not ready and not running:
                raise RuntimeError(f"runs waiting on runs that are not planned: {pending}")
            for job in ready[: args.jobs - len(running)]:
                pending.remove(job)
                running[pool.submit(run_one, args, recipe, configs, job, env)] = job
            done, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in done:
                job = running.pop(future)
                try:
                    results[(job["name"], job["seed"])] = future.result()
                except RunFailed as err:
                    for other in running:
                        other.cancel()
                    sys.exit(str(err))
                if not args.output_root:  # free the disk: folders no waiting or running joint run still reads
                    needed = {(r, j["seed"]) for j in [*pending, *running.values()] for r in j["after"]}
                    for finished in plan:
                        key = (finished["name"], finished["seed"])
                        if key in results and key not in needed:
                            shutil.rmtree(finished["out"], ignore_errors=True)
    runs: dict[str, list[dict]] = {name: [] for name in args.runs}
    examples: dict[str, dict] = {name: {} for name in args.runs}
    for job in plan:  # in plan order: seeds ascending
        record, example = results[(job["name"], job["seed"])]
        runs[job["name"]].append(record)
        examples[job["name"]][job["seed"]] = example
    return runs, examples


# ------------------------------------------------------------------------------------------------------ statistics
def embedding_analysis(args, runs: dict) -> dict | None:
    """STS-B validation Spearman of every run with scored embeddings, against the backbone (bench_embedding_quality);
    None when no run has them (results made before embeddings were scored)."""
    systems = {
        name: {int(r["seed"]): np.array(r["stsb_cosines"]) for r in records if "stsb_cosines" in r}
        for name, records in runs.items()
    }
    systems = {name: by_seed for name, by_seed in systems.items() if by_seed}
    if not systems or not os.path.isfile(bc.data_path("stsb_validation")):
        return None
    backbone = beq.cosines(bc.backbone_path(), cache=None)
    return beq.compare(systems, backbone, EMBEDDING_PAIRS.get(args.protocol, ()))


def analyze(args, runs: dict, examples: dict) -> dict:
    """Per task: the systems' scores (computed from the per-example results), mean ± std, the paired bootstrap
    comparisons, and a check that each run's own reported metric equals its per-example score."""
    out: dict = {}
    tasks, comparisons = protocol_tasks(args)
    for task, info in tasks.items():
        systems = {s: r for s, r in info["systems"].items() if examples.get(r)}
        if not systems:
            continue
        per_system = {s: {seed: e[task] for seed, e in examples[r].items()} for s, r in systems.items()}
        score = bs.score_spearman_systems if info["metric"] == "spearman" else bs.score_systems
        try:
            result = score(per_system, info["metric"], comparisons, args.n_resamples, args.bootstrap_seed)
        except ValueError as err:
            sys.exit(f"{info['label']}: {err}")
        checks = []
        for system, run in systems.items():
            result["scores"][system]["run"] = run
            for r in runs.get(run, []):
                if info["reported"] in r["metrics"]:
                    value = result["scores"][system]["per_seed"][int(r["seed"])]
                    checks.append({"run": run, "seed": r["seed"], "reported": r["metrics"][info["reported"]]})
                    checks[-1]["from_examples"] = value
        worst = max((abs(c["reported"] - c["from_examples"]) for c in checks), default=0.0)
        if worst > 1e-6:
            print(f"warning: {task}: a run's reported metric differs from its per-example score by {worst:.2e}")
        out[task] = {"label": info["label"], "metric": info["metric"], **result}
        out[task]["check"] = {"max_abs_diff_reported_vs_examples": worst, "runs": checks}
    return out


def targets(analysis: dict) -> dict:
    """Per task: joint not worse than alone and than plain (the 95% interval's upper end >= 0)."""
    result = {}
    for task, a in analysis.items():
        c = a["comparisons"]
        if "joint-alone" not in c:
            continue
        t = {
            "joint": a["scores"]["joint"]["mean"],
            "alone": a["scores"]["alone"]["mean"],
            "diff_points": 100 * c["joint-alone"]["diff"],
            "ci95_points": [100 * x for x in c["joint-alone"]["ci"]],
            "verdict": c["joint-alone"]["verdict"],
            "met": c["joint-alone"]["ci"][1] >= 0,
        }
        if "joint-plain" in c:
            t["plain"] = a["scores"]["plain"]["mean"]
            t["vs_plain_diff_points"] = 100 * c["joint-plain"]["diff"]
            t["vs_plain_ci95_points"] = [100 * x for x in c["joint-plain"]["ci"]]
            t["vs_plain_verdict"] = c["joint-plain"]["verdict"]
            t["met"] = t["met"] and c["joint-plain"]["ci"][1] >= 0
        result[task] = t
    return result


# -------------------------------------------------------------------------------------------------------- reporting
def _pm(mean: float, std: float | None) -> str:
    return f"{100 * mean:.2f}" + (f" ± {100 * std:.2f}" if std is not None else "")


def _ci(ci) -> str:
    return f"[{100 * ci[0]:+.2f}, {100 * ci[1]:+.2f}]"


def markdown(args, recipe: dict, runs: dict, analysis: dict, sample: dict | None, total_wall: float | None) -> str:
    n_seeds = len(args.seeds)
    score_rows, comp_rows = [], []
    for task, a in analysis.items():
        row = [a["label"]]
        for system in ("plain", "alone", "joint"):
            s = a["scores"].get(system)
            row.append(_pm(s["mean"], s["std"]) if s else "-")
        row.append(
            ", ".join(f"{k}: {100 * v:.2f}" for k, v in a["scores"].get("joint", {"per_seed": {}})["per_seed"].items())
        )
        score_rows.append(row)
        for key, c in a["comparisons"].items():
            x, y = key.split("-")
            comp_rows.append(
                (
                    a["label"],
                    f"{SYSTEM_NAMES[x]} - {SYSTEM_NAMES[y]}",
                    f"{100 * c['diff']:+.2f}",
                    _ci(c["ci"]),
                    f"**{c['verdict']}**",
                    "; ".join(
                        f"{seed}: {100 * p['diff']:+.2f} {_ci(p['ci'])}" for seed, p in zip(c["seeds"], c["per_seed"])
                    ),
                )
            )
    scores = bc.markdown_table(
        ["metric (points)", "plain transformers", "MTST alone", "MTST joint", "MTST joint per seed"], score_rows
    )
    comps = bc.markdown_table(
        ["metric", "comparison", "difference (points)", "95% CI", "verdict", "per seed (difference [95% CI])"],
        comp_rows,
    )
    tasks, _ = protocol_tasks(args)
    columns = [(info["column"], info["reported"]) for info in tasks.values()]
    if "ner" in tasks:  # CoNLL-2003 validation F1 beside its test F1
        columns.insert(list(tasks).index("ner") + 1, ("CoNLL val F1", "eval_ner_f1"))
    per_seed_rows = []
    for name, records in runs.items():
        for r in records:
            m = r["metrics"]
            cells = [f"{100 * m[key]:.2f}" if key in m else "-" for _, key in columns]
            per_seed_rows.append(
                (
                    name,
                    r["seed"],
                    *cells,
                    r["wall_s"] / 60,
                    m.get("train_runtime", 0) / 60,
                    m.get("train_steps_per_second"),
                )
            )
    headers = ["run", "seed", *(column for column, _ in columns), "wall (min)", "train (min)"]
    per_seed = bc.markdown_table([*headers, "train steps/s"], per_seed_rows)
    if args.protocol == "heads":
        data = (
            "SemEval-2018 Task 1 E-c (multi-label, 11 emotions; train 6,838 tweets, of which a fixed 10% is carved "
            "as validation; scored on the staged validation split, 886 tweets) and STS-B as a pair regression (train "
            "5,749 pairs, 10% carved as validation; scored on the staged validation split, 1,500 pairs), each alone, "
            "with the plain transformers recipe, and jointly with CoNLL-2003 (train 14,041 sentences; test 3,453)."
        )
    elif args.protocol == "imbalanced":
        data = (
            f"CoNLL-2003 train cut to a fixed sample of {sample['conll_train_sentences']:,} of "
            f"{sample['of']:,} sentences (`{sample['sample']}`, the same for every seed), the AG News 80% split "
            "(6,080 rows) trained jointly; evaluated on the full CoNLL-2003 test set (3,453 sentences) and the AG "
            "News held-out 20% (1,520 rows)."
        )
    else:
        data = (
            "CoNLL-2003 train (14,041 sentences) / validation (3,250) / test (3,453); AG News: a stratified 80/20 "
            "split of the staged 7,600-row file (6,080 train / 1,520 held out)."
        )
    if args.quick:
        data = (
            f"**Quick smoke run** (not comparable with the full protocol): at most {args.max_train_samples} training "
            f"examples per task and {args.max_eval_samples} per evaluation split (first rows). " + data
        )
    text = (
        f"# Benchmark 4: quality, protocol `{args.protocol}`{' (quick)' if args.quick else ''}, "
        f"device {args.device}\n\n"
        f"{data}"
        + (
            " The AG News split is made with the run's seed, so the five runs of a seed share it."
            if "topic" in tasks
            else ""
        )
        + "\n\n"
        f"Recipe (every run): backbone all-MiniLM-L6-v2, {recipe['epochs']:g} epoch(s), batch {recipe['batch_size']}, "
        f"lr {recipe['learning_rate']:g}, {recipe['lr_scheduler_type']} schedule with warm-up "
        f"{recipe['warmup_steps']:g} of the steps, weight decay {recipe['weight_decay']:g}, max_seq_length "
        f"{recipe['max_seq_length']}; MTST runs: `run_multitask.py`, heads at "
        f"{recipe['head_learning_rate_factor']:g}× the lr, embedding preservation "
        f"{recipe.get('embedding_preservation', 0):g} (shared by the head tasks of the runs whose command says "
        "`--embedding_preservation_shared true`; the whole weight on every task's batches in the others), sampling "
        f"`{recipe['sampling_strategy']}`, "
        f"group_by_length {recipe['group_by_length']}; plain runs: `bench_quality_plain.py` "
        "(AutoModelFor*Classification + Trainer, group_by_length on). Seeds "
        f"{', '.join(map(str, args.seeds))}."
        + (f" **Every MTST run (joint and alone): `{args.mtst_args}`.**" if args.mtst_args else "")
        + (f" **Joint run only: `{args.joint_args}`.**" if args.joint_args else "")
        + (
            " **The joint run distils from its seed's MTST-alone runs (`--teacher_models`, teacher annealing).**"
            if args.distill
            else ""
        )
        + "\n\n"
        f"Scores (points, mean ± standard deviation over {n_seeds} seed(s)):\n\n{scores}\n\n"
        f"Paired bootstrap ({args.n_resamples:,} resamples of the test examples, the same draw for both systems, "
        f"pooled over seeds as the mean of the per-seed differences; numpy default_rng({args.bootstrap_seed})). "
        "The interval covers test-set sampling, not training-seed variance (the standard deviations above show "
        'that). Verdict "better" / "worse" only where the 95% interval excludes zero:\n\n'
        f"{comps}\n\nPer run and seed (each run's own reported metrics; wall time includes loading, tokenizing, "
        f"training, evaluation and prediction):\n\n{per_seed}\n\n"
        + (f"Wall time of this invocation: {total_wall / 60:.1f} min. " if total_wall is not None else "")
        + (
            f"Runs trained {args.jobs} at a time, {runs_threads(runs)} thread(s) each. "
            if getattr(args, "jobs", 1) > 1
            else ""
        )
        + _run_time_note(runs)
        + "\n\n"
        + "Commands:\n\n"
        + "\n".join(f"- {name} (seed {r['seed']}): `{r['command']}`" for name, rs in runs.items() for r in rs)
    )
    return text


def runs_threads(runs: dict) -> str:
    """The OMP_NUM_THREADS the runs trained with, as recorded ("default" where none was set)."""
    found = sorted({str(r.get("threads") or "default") for rs in runs.values() for r in rs})
    return "/".join(found) or "default"


def _run_time_note(runs: dict) -> str:
    """The runs' summed wall time, and which runs were taken over with --reuse (timed when they were made)."""
    records = [r for rs in runs.values() for r in rs]
    total = sum(r["wall_s"] for r in records if r.get("wall_s") == r.get("wall_s"))  # NaN: not timed
    reused = [
        f"{name} seed {r['seed']}" + (f" (from {r['taken_over_from']})" if r.get("taken_over_from") else "")
        for name, rs in runs.items()
        for r in rs
        if r.get("reused")
    ]
    text = f"Sum of the runs' wall times: {total / 60:.1f} min."
    if reused:
        text += f" Taken over from earlier invocations (timed when they ran): {', '.join(reused)}."
    return text


def read_take_over(args, recipe: dict) -> dict | None:
    """`{"runs": {run: [record]}, "examples": {run: {(file, seed): ...}}}` of the results JSONs of `args.take_over`
    (and their per-example files): every file's records in the order the files are named, each marked with the file
    it came from (`taken_over_from`, the file's name), so a (run, seed) several files hold appears once per file
    (planned_take_overs takes the first with a planned run's settings, take_over the first named). None without the
    option. Every file's protocol and recipe must be this invocation's."""
    if not args.take_over:
        return None
    names = [os.path.basename(path) for path in args.take_over]
    if len(set(names)) < len(names):
        sys.exit(f"--take_over {' '.join(args.take_over)}: two files of the same name (runs are told apart by it).")
    runs: dict[str, list[dict]] = {}
    examples: dict[str, dict] = {}
    for path, source in zip(args.take_over, names):
        with open(path, encoding="utf-8") as f:
            old = json.load(f)
        if old.get("settings", {}).get("protocol") != args.protocol or old.get("recipe") != recipe:
            sys.exit(f"--take_over {path}: made with another protocol or recipe; its runs are not comparable.")
        with gzip.open(os.path.splitext(path)[0] + "_examples.json.gz", "rt", encoding="utf-8") as f:
            old_examples = json.load(f)
        for name, records in old["runs"].items():
            for record in records:
                seed = str(record["seed"])
                runs.setdefault(name, []).append({**record, "reused": True, "taken_over_from": source})
                examples.setdefault(name, {})[(source, seed)] = old_examples[name][seed]
    return {"runs": runs, "examples": examples}


def _taken_examples(kept: dict, name: str, record: dict):
    """The per-example results of a record of `kept` (read_take_over)."""
    return kept["examples"][name][(record["taken_over_from"], str(record["seed"]))]


def planned_take_overs(plan: list[dict], kept: dict | None) -> dict[tuple[str, int], tuple[dict, dict]]:
    """{(run, seed): (record, examples)} of the planned runs that `kept` (read_take_over) holds with the same settings
    (its recorded command, compared as --reuse does), so they are not trained again; a run whose folder a run that
    does train reads (`after`: a staged run's starting model, a joint run's single-task results) is trained."""
    if not kept:
        return {}
    found = {}
    for job in plan:
        for record in kept["runs"].get(job["name"], []):  # in the order the files were named: the first match wins
            same = effective_arguments(record.get("command", "")) == effective_arguments(shown_command(job["cmd"]))
            if int(record["seed"]) == job["seed"] and same and (job["name"], job["seed"]) not in found:
                found[(job["name"], job["seed"])] = (record, _taken_examples(kept, job["name"], record))
    while True:  # drop the runs a trained run reads (one level: runs read only single-task or sts_only runs)
        read = {(r, j["seed"]) for j in plan if (j["name"], j["seed"]) not in found for r in j["after"]}
        if not read & set(found):
            return found
        for key in read & set(found):
            del found[key]


def take_over(args, recipe: dict, runs: dict, examples: dict, kept: dict | None = None) -> None:
    """Add to `runs` and `examples` the runs of `args.take_over` (results JSONs) that were not planned now, for the
    seeds of this invocation; the protocol and the recipe must be the same. (Planned runs they hold with the same
    settings were taken over before training: planned_take_overs.)"""
    kept = kept or read_take_over(args, recipe)
    for name, records in kept["runs"].items():
        if name in runs:
            continue
        first: dict[int, dict] = {}
        for r in records:  # where several files hold a seed, the first named
            first.setdefault(int(r["seed"]), r)
        taken = [first[seed] for seed in sorted(first) if seed in args.seeds]
        missing = sorted(set(args.seeds) - {int(r["seed"]) for r in taken})
        if missing:
            sys.exit(f"--take_over {' '.join(args.take_over)}: run {name} has no seed(s) {missing}.")
        runs[name] = taken
        examples[name] = {int(r["seed"]): _taken_examples(kept, name, r) for r in taken}


def result_name(args) -> str:
    name = "quality" + (f"_{args.protocol}" if args.protocol != "main" else "")
    name += "_cuda" if args.device == "cuda" else ""
    return name + ("_quick" if args.quick else "")


def write_examples(name: str, examples: dict) -> str:
    path = os.path.join(bc.RESULTS_DIR, f"{name}_examples.json.gz")
    with gzip.open(path, "wt", encoding="utf-8") as f:
        json.dump({run: {str(seed): v for seed, v in by_seed.items()} for run, by_seed in examples.items()}, f)
    return path


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--protocol", choices=list(PROTOCOL_RUNS), default="main")
    parser.add_argument("--quick", action="store_true", help="smoke run on subsets; results in a temporary folder")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--epochs", type=float, default=None, help="default: main 1, imbalanced run_multitask's")
    parser.add_argument("--batch_size", type=int, default=None, help="default: run_multitask.py's (32)")
    parser.add_argument("--learning_rate", type=float, default=None, help="default: run_multitask.py's (1e-4)")
    parser.add_argument("--max_seq_length", type=int, default=None, help="default: run_multitask.py's (128)")
    parser.add_argument(
        "--group_by_length", type=int, choices=[0, 1], default=None, help="MTST runs (main: 1; imbalanced: default)"
    )
    parser.add_argument(
        "--max_train_samples", type=int, default=None, help=f"per task (quick: {QUICK['max_train_samples']})"
    )
    parser.add_argument(
        "--max_eval_samples", type=int, default=None, help=f"per split (quick: {QUICK['max_eval_samples']})"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default: 42 43 44 (quick: 42)")
    parser.add_argument(
        "--joint-args",
        "--joint_args",
        dest="joint_args",
        default="",
        help='extra run_multitask.py options for the joint run only, e.g. "--sampling_strategy temperature"',
    )
    parser.add_argument(
        "--mtst-args",
        "--mtst_args",
        dest="mtst_args",
        default="",
        help="extra run_multitask.py options for every MTST run, joint and alone (a recipe change), e.g. "
        '"--head_learning_rate 1e-3"',
    )
    parser.add_argument(
        "--distill",
        action="store_true",
        help="the joint run distils from its seed's MTST-alone runs (run_multitask.py --teacher_models: teacher "
        "annealing from their predictions to the gold labels)",
    )
    parser.add_argument("--runs", nargs="+", choices=list(RUNS), default=None, help="default: the protocol's runs")
    parser.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="training runs at a time, each with cores / jobs threads (default: 2 on a CPU with 2 or more cores, "
        "else 1)",
    )
    parser.add_argument("--n_resamples", type=int, default=2000, help="bootstrap resamples (default 2000)")
    parser.add_argument("--bootstrap_seed", type=int, default=0)
    parser.add_argument(
        "--name", default=None, help="results file name (default: quality[_imbalanced][_cuda][_quick])"
    )
    parser.add_argument(
        "--results_dir", default=None, help="default: benchmarks/results; with --quick a temporary folder"
    )
    parser.add_argument("--output_root", default=None, help="keep the trained models here (default: temporary)")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="with --output_root: take over a run already finished there by the same command (resume a benchmark, "
        "or compare a new joint run with kept single-task runs)",
    )
    parser.add_argument("--reanalyze", default=None, help="a results JSON: recompute the statistics, train nothing")
    parser.add_argument(
        "--take_over",
        nargs="+",
        default=None,
        help="results JSONs of the same protocol and recipe: their runs not in --runs join the analysis, with their "
        "per-example results (e.g. compare new runs with committed ones), and a planned (run, seed) they hold with "
        "the same settings is taken from them instead of trained (e.g. add a seed to committed runs); where two "
        "files hold the same (run, seed), the first named wins, for a planned run the first with its settings (so "
        "`--runs joint --joint-args ... --take_over quality.json other.json` compares other.json's joint runs made "
        "with those options against quality.json's other runs without training)",
    )
    args = parser.parse_args(argv)
    for option, value in (("--joint-args", args.joint_args), ("--mtst-args", args.mtst_args)):
        try:
            shlex.split(value)
        except ValueError as err:
            parser.error(f"{option} {value!r} cannot be split into options: {err}")
    if args.seeds is None:
        args.seeds = [42] if args.quick else list(DEFAULT_SEEDS)
    if args.runs is None:
        args.runs = list(PROTOCOL_RUNS[args.protocol])
    if args.quick:
        args.max_train_samples = args.max_train_samples or QUICK["max_train_samples"]
        args.max_eval_samples = args.max_eval_samples or QUICK["max_eval_samples"]
        if args.results_dir is None and not os.environ.get("MTST_BENCH_RESULTS"):
            args.results_dir = os.path.join(tempfile.gettempdir(), "mtst-bench-quick-results")
    if args.results_dir:
        bc.RESULTS_DIR = os.path.abspath(args.results_dir)
    if args.jobs is None:
        args.jobs = 2 if args.device == "cpu" and (os.cpu_count() or 1) >= 2 else 1
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    if args.distill and not {"joint", "ner_only", "topic_only"} <= set(args.runs):
        parser.error("--distill needs the joint run and both MTST-alone runs (its teachers) in --runs")
    if args.reuse and not args.output_root:
        parser.error("--reuse needs --output_root (the folder the earlier runs were kept in)")
    args.name_given = args.name is not None
    args.name = args.name or result_name(args)
    return args


def reanalyze(args) -> dict:
    """Recompute the statistics of a finished run from its JSON and `_examples.json.gz` (e.g. more resamples)."""
    with open(args.reanalyze, encoding="utf-8") as f:
        old = json.load(f)
    with gzip.open(os.path.splitext(args.reanalyze)[0] + "_examples.json.gz", "rt", encoding="utf-8") as f:
        examples = json.load(f)
    for key in ("protocol", "quick", "device", "seeds", "joint_args", "max_train_samples", "max_eval_samples"):
        setattr(args, key, old["settings"][key])
    args.distill = old["settings"].get("distill", False)
    args.mtst_args = old["settings"].get("mtst_args", "")
    if not args.name_given:
        args.name = old["benchmark"]
    if args.results_dir is None:
        bc.RESULTS_DIR = os.path.dirname(os.path.abspath(args.reanalyze))
    origin = old.get("trained_by") or {k: old.get(k) for k in ("command", "machine", "date_utc")}
    return report(
        args, old["recipe"], old["runs"], examples, old.get("imbalanced_sample"), old.get("total_wall_s"), origin
    )


def report(args, recipe, runs, examples, sample, total_wall, trained_by: dict | None = None) -> dict:
    """Statistics, markdown and result files. `trained_by`: for --reanalyze, the command, machine and date of the
    run that trained the models (the files' own command and machine are then those of the re-analysis)."""
    analysis = analyze(args, runs, examples)
    embedding = embedding_analysis(args, runs)
    text = markdown(args, recipe, runs, analysis, sample, total_wall)
    if embedding:
        embedding_text = beq.markdown(embedding, RUN_NAMES)
        text = text.replace(
            "\nCommands:", f"\n## Sentence embeddings (STS-B validation)\n\n{embedding_text}\n\nCommands:", 1
        )
        if "Commands:" not in text:
            text += "\n\n## Sentence embeddings (STS-B validation)\n\n" + embedding_text
    if trained_by:
        text += (
            f"\n\nStatistics recomputed with --reanalyze; the models were trained by `{trained_by['command']}` on "
            f"{trained_by['date_utc']} (machine in the JSON, `trained_by`)."
        )
    print("\n" + text.split("Commands:")[0])
    examples_path = write_examples(args.name, examples)
    tgt = targets(analysis)
    payload = {
        "settings": {k: v for k, v in vars(args).items() if k not in ("reanalyze", "name_given")},
        "recipe": recipe,
        "imbalanced_sample": sample,
        "runs": runs,
        "total_wall_s": total_wall,
        "analysis": analysis,
        "embedding": embedding,
        "targets": tgt,
        "examples_file": os.path.relpath(examples_path, bc.REPO_ROOT),
        "trained_by": trained_by,
        "headline": {
            "name": "quality: joint - alone (points), worst task, with its 95% interval",
            "ratio": min((t["diff_points"] for t in tgt.values()), default=None),
            "met": all(t["met"] for t in tgt.values()) if tgt else None,
        },
    }
    bc.write_results(args.name, payload, text)
    return payload


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.reanalyze:
        return reanalyze(args)
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            sys.exit("--device cuda: no CUDA device is available on this machine.")
    bc.require_data("conll_train", "conll_validation", "conll_test", "ag_news", "stsb_validation")
    if args.protocol in ("three_task", "heads"):
        bc.require_data("stsb_train")
    if args.protocol == "heads":
        bc.require_data("semeval_train", "semeval_validation")
    recipe = resolve_recipe(args)
    root = args.output_root or tempfile.mkdtemp(prefix="mtst-bench-quality-")
    os.makedirs(root, exist_ok=True)
    configs, sample = task_configs(args, root)
    if sample is not None:
        sample["configs"] = {}
        for name, path in configs.items():
            with open(path, encoding="utf-8") as f:
                sample["configs"][name] = f.read()
    kept = read_take_over(args, recipe)  # before training: a file that cannot be taken over stops the run now
    t0 = time.perf_counter()
    try:
        runs, examples = train_all(args, recipe, root, configs, kept)
    finally:
        if not args.output_root:
            shutil.rmtree(root, ignore_errors=True)
    if kept:
        take_over(args, recipe, runs, examples, kept)
    return report(args, recipe, runs, examples, sample, time.perf_counter() - t0)


if __name__ == "__main__":
    main()
