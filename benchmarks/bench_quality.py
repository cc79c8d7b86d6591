#!/usr/bin/env python
"""Benchmark 4: quality, MTST trained jointly on CoNLL-2003 + AG News vs the two single-task baselines.

All three runs use the project's own command line, `run_multitask.py`, with the same budget and flags; only the
task config differs:

- joint: benchmarks/configs/joint.yaml (ner + topic, proportional sampling: each example once per epoch);
- single-task baselines: benchmarks/configs/ner.yaml and benchmarks/configs/topic.yaml.

Data: CoNLL-2003 train / validation / test as staged; AG News: only the official 7,600-row test file is staged, so
the configs carve a fixed, stratified 80/20 split of it (6,080 train / 1,520 held out, seed 42); the 20% is never
used for training or model selection. Metrics: CoNLL-2003 **test** entity F1 (seqeval, IOB2, strict mode, from
`--do_predict`) and AG News **held-out** accuracy (the 20% split, from `--do_eval`); CoNLL validation F1 is
reported too. Target: the joint model within 0.3 points of the single-task model on each (joint >= single - 0.3).

Budget (full run: two seeds, 42 and 43, results averaged; fits in under an hour on 2 CPU cores): 1 epoch, batch 32,
lr 1e-4 (10% warm-up, linear decay), max_seq_length 128, group_by_length in every run, no checkpoints, no
evaluation during training. A seed also fixes the AG News 80/20 split (run_multitask.py carves it with the run's
seed); the joint and single-task runs of a seed share it.
`--quick`: a smoke version on subsets (a few minutes; not comparable to the full numbers).
`--device cuda`: the same runs on a GPU (not tested here: this machine has no CUDA).

    python benchmarks/bench_quality.py --quick            # smoke test, a few minutes
    python benchmarks/bench_quality.py                    # full run, 2 seeds (20-45 minutes on 2 busy cores)
    python benchmarks/bench_quality.py --device cuda      # GPU variant
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as bc  # noqa: E402

RUNS = {"joint": "joint", "ner_only": "ner", "topic_only": "topic"}
QUICK = {"max_train_samples": 1000, "max_eval_samples": 500}


def build_command(config: str, output_dir: str, args, seed: int, joint: bool) -> list[str]:
    cmd = [
        sys.executable,
        "run_multitask.py",
        "--tasks_config",
        config,
        "--output_dir",
        output_dir,
        "--do_train",
        "--do_eval",
        "--do_predict",
        "--num_train_epochs",
        str(args.epochs),
        "--per_device_train_batch_size",
        str(args.batch_size),
        "--per_device_eval_batch_size",
        "64",
        "--learning_rate",
        str(args.learning_rate),
        "--max_seq_length",
        str(args.max_seq_length),
        "--group_by_length",
        "true" if args.group_by_length else "false",
        "--sampling_strategy",
        "proportional",
        "--seed",
        str(seed),
        "--eval_strategy",
        "no",
        "--save_strategy",
        "no",
        "--logging_steps",
        "50",
        "--disable_tqdm",
        "true",
        "--resume_last_checkpoint",
        "false",
    ]
    if args.device == "cpu":
        cmd.append("--use_cpu")
    if args.max_train_samples:
        cmd += ["--max_train_samples", str(args.max_train_samples)]
    if args.max_eval_samples:
        cmd += ["--max_eval_samples", str(args.max_eval_samples)]
    if joint and args.joint_args:
        cmd += shlex.split(args.joint_args)
    return cmd


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke version on subsets (a few minutes)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--learning_rate", type=float, default=1e-4)
    parser.add_argument("--max_seq_length", type=int, default=128)
    parser.add_argument("--group_by_length", type=int, choices=[0, 1], default=1)
    parser.add_argument("--max_train_samples", type=int, default=None, help="per task (quick default: 1000)")
    parser.add_argument("--max_eval_samples", type=int, default=None, help="per task and split (quick: 500)")
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        help="one set of runs per seed, means reported (default: 42 43; quick: 42)",
    )
    parser.add_argument(
        "--joint_args", default="", help="extra run_multitask.py options for the joint run only (quote them)"
    )
    parser.add_argument("--name", default=None, help="results file name (default: quality / quality_quick)")
    parser.add_argument("--runs", nargs="+", choices=list(RUNS), default=list(RUNS))
    parser.add_argument("--output_root", default=None, help="keep the trained models here (default: temporary)")
    args = parser.parse_args(argv)
    if args.seeds is None:
        args.seeds = [42] if args.quick else [42, 43]
    if args.quick:
        args.max_train_samples = args.max_train_samples or QUICK["max_train_samples"]
        args.max_eval_samples = args.max_eval_samples or QUICK["max_eval_samples"]
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            sys.exit("--device cuda: no CUDA device is available on this machine.")

    bc.require_data("conll_train", "conll_validation", "conll_test", "ag_news")
    root = args.output_root or tempfile.mkdtemp(prefix="mtst-bench-quality-")
    configs = {}
    for name, cfg in RUNS.items():
        bc.task_config(cfg)  # checks that every data file exists (clear message otherwise)
        if bc.DATA_DIR == bc.DEFAULT_DATA_DIR:  # the committed config, its paths relative to the repository root
            configs[name] = os.path.relpath(os.path.join(bc.CONFIG_DIR, f"{cfg}.yaml"), bc.REPO_ROOT)
        else:  # MTST_BENCH_DATA points elsewhere: a copy with absolute data paths
            configs[name] = bc.write_task_config(cfg, os.path.join(root, "configs"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    runs: dict[str, list[dict]] = {name: [] for name in args.runs}
    t_all = time.perf_counter()
    suffix = "_quick" if args.quick else ""
    for seed in args.seeds:
        for name in args.runs:
            out = os.path.join(root, f"{name}_seed{seed}")
            cmd = build_command(configs[name], out, args, seed, joint=name == "joint")
            shown = " ".join(shlex.quote(c) for c in ["python", *cmd[1:]])
            print(f"[{name} seed {seed}] {shown}", flush=True)
            log_path = os.path.join(bc.RESULTS_DIR, f"quality_{name}_seed{seed}{suffix}.log")
            os.makedirs(bc.RESULTS_DIR, exist_ok=True)
            t0 = time.perf_counter()
            with open(log_path, "w", encoding="utf-8") as log:
                proc = subprocess.run(cmd, cwd=bc.REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                with open(log_path, encoding="utf-8") as f:
                    tail = f.read()[-4000:]
                sys.exit(f"[{name}] run_multitask.py failed (exit {proc.returncode}); log {log_path}:\n{tail}")
            with open(os.path.join(out, "all_results.json"), encoding="utf-8") as f:
                metrics = json.load(f)
            runs[name].append(
                {"seed": seed, "command": shown, "wall_s": wall, "metrics": metrics, "log": os.path.relpath(log_path)}
            )
            print(
                f"[{name} seed {seed}] done in {wall / 60:.1f} min: "
                + ", ".join(
                    f"{k}={v:.4f}"
                    for k, v in metrics.items()
                    if k in ("predict_ner_f1", "eval_ner_f1", "eval_topic_accuracy", "train_runtime")
                ),
                flush=True,
            )
    total_wall = time.perf_counter() - t_all
    if not args.output_root:
        shutil.rmtree(root, ignore_errors=True)

    def values(run, key):
        return [r["metrics"][key] for r in runs.get(run, []) if key in r["metrics"]]

    def mean(xs):
        return sum(xs) / len(xs)

    rows, targets, per_seed = [], {}, []
    for label, key, single in (
        ("CoNLL-2003 test entity F1 (seqeval strict IOB2)", "predict_ner_f1", "ner_only"),
        ("CoNLL-2003 validation entity F1", "eval_ner_f1", "ner_only"),
        ("AG News held-out accuracy (the 20% split)", "eval_topic_accuracy", "topic_only"),
    ):
        joint, alone = values("joint", key), values(single, key)
        if not joint or not alone:
            continue
        diff = 100 * (mean(joint) - mean(alone))
        met = diff >= -0.3
        rows.append((label, 100 * mean(alone), 100 * mean(joint), diff, "met" if met else "missed"))
        for seed, j, a in zip(args.seeds, joint, alone):
            per_seed.append((label, seed, 100 * a, 100 * j, 100 * (j - a)))
        if key != "eval_ner_f1":
            targets[key] = {
                "single": mean(alone),
                "joint": mean(joint),
                "single_per_seed": alone,
                "joint_per_seed": joint,
                "diff_points": diff,
                "target": -0.3,
                "met": met,
            }
    table = bc.markdown_table(["metric", "single-task", "MTST joint", "joint - single (points)", ">= -0.3"], rows)
    times = bc.markdown_table(
        ["run", "seed", "wall time (min)", "train runtime (min)", "train steps/s"],
        [
            (
                name,
                r["seed"],
                r["wall_s"] / 60,
                r["metrics"].get("train_runtime", 0) / 60,
                r["metrics"].get("train_steps_per_second"),
            )
            for name, rs in runs.items()
            for r in rs
        ],
    )
    seeds_table = bc.markdown_table(["metric", "seed", "single-task", "MTST joint", "joint - single"], per_seed)
    print("\n" + table + "\n\n" + times)
    if len(args.seeds) > 1:
        print("\n" + seeds_table)
    if args.quick:
        data_note = (
            f"**Quick smoke run**: at most {args.max_train_samples} training examples per task and "
            f"{args.max_eval_samples} per evaluation split (first rows); not comparable with the full run."
        )
    else:
        data_note = (
            "Full data: CoNLL-2003 train (14,041 sentences) / validation (3,250) / test (3,453); AG News 80/20 split "
            "of the staged 7,600-row file (6,080 train / 1,520 held out, stratified, made with the run's seed)."
        )
    markdown = (
        f"# Benchmark 4: quality, joint MTST vs single-task baselines{' (quick)' if args.quick else ''}\n\n"
        f"{data_note} All runs: `run_multitask.py`, backbone all-MiniLM-L6-v2, {args.epochs:g} epoch, batch "
        f"{args.batch_size}, lr {args.learning_rate:g} (10% warm-up, linear decay), max_seq_length "
        f"{args.max_seq_length}, group_by_length {bool(args.group_by_length)}, seed(s) {args.seeds} (mean over "
        f"seeds; a seed also fixes the AG News 80/20 split, shared by that seed's runs), device "
        f"{args.device}; only the task config differs (benchmarks/configs/joint.yaml, ner.yaml, topic.yaml). "
        + (f"Joint run only: `{args.joint_args}`. " if args.joint_args else "")
        + "Metrics in points (x100).\n\n"
        f"{table}\n\n"
        + (f"Per seed:\n\n{seeds_table}\n\n" if len(args.seeds) > 1 else "")
        + "Wall times (each run: loading + tokenizing, training, evaluation, prediction, saving):\n\n"
        f"{times}\n\nTotal wall time: {total_wall / 60:.1f} min.\n\nCommands:\n\n"
        + "\n".join(f"- {name} (seed {r['seed']}): `{r['command']}`" for name, rs in runs.items() for r in rs)
    )
    payload = {
        "settings": vars(args),
        "runs": runs,
        "total_wall_s": total_wall,
        "targets": targets,
        "headline": {
            "name": "quality (joint - single, points; worst task)",
            "ratio": min((t["diff_points"] for t in targets.values()), default=None),
            "target": -0.3,
        },
    }
    bc.write_results(args.name or ("quality_quick" if args.quick else "quality"), payload, markdown)
    return payload


if __name__ == "__main__":
    main()
