#!/usr/bin/env python
"""Benchmark 3: training speed, MTST multi-task training vs the transformers `Trainer` single-task recipe.

Same examples on every side: the first `--ner_examples` CoNLL-2003 train sentences and `--topic_examples` rows of
the AG News 80% training split (benchmarks/configs/joint.yaml), loaded and tokenized once by mtst.data.tasks (so the
`input_ids` and labels are identical), same backbone (all-MiniLM-L6-v2), batch size, learning rate, one epoch each.

- `trainer` (the baseline, as run_ner.py / run_glue.py do it): `Trainer` + `AutoModelForTokenClassification` +
  `DataCollatorForTokenClassification` on the NER examples, then `Trainer` + `AutoModelForSequenceClassification`
  + `DataCollatorWithPadding` on the topic examples (random batches, dynamic padding);
- `trainer_group_by_length`: the same with `train_sampling_strategy="group_by_length"` (transformers' own
  `LengthGroupedSampler`, what a user could also switch on);
- `mtst`: one `MultiTaskTrainer` run (task-aware batch sampler, proportional sampling, `MultiTaskCollator`
  dynamic padding) over both tasks, `group_by_length=False`;
- `mtst_group_by_length`: the same with `group_by_length=True` (length-aware batches inside each task);
- `mtst_group_by_length_no_preservation`: the same with `embedding_preservation=0`. The two `mtst*` sides above use
  MTST's default, embedding preservation on (weight 1.0): its cost is the step-time ratio of these two sides plus the
  one pass that computes the starting model's embeddings before training (timed apart, as `pre_train_s`: the time
  from `train()` to the first step, which the step times leave out).

Headline baseline: `trainer_group_by_length` (what a user would switch on), at full size by default: all 14,041
CoNLL-2003 train sentences + the 6,080-row AG News 80% split, where transformers' `LengthGroupedSampler` uses its
mega-batches of 50 x batch size (it shrinks them to len / (4 x batch) on small sets, e.g. 1,280 + 640 examples, which
makes grouping look worse than it is). `--repeats N` runs the whole contest N times; the ratio reported is the median
of the per-repeat ratios (each from interleaved steps), with the min and max.

Every side trains the same number of optimizer steps (ner batches + topic batches). The sides run in threads that
pass a baton at every optimizer step, so their steps alternate one by one (A, B, C, D, A, B, ...) and only one
side computes at a time: load from other processes hits all sides alike. Time per side = the sum of its step
intervals (batch fetch + collate + forward + backward + optimizer step; model and Trainer setup excluded, reported
separately). Throughput = real (non-padding) tokens per second; padding efficiency = real tokens / padded tokens.

Targets: tokens/s ratio mtst_group_by_length / trainer_group_by_length >= 1.0.

    python benchmarks/bench_training.py      # full size, grouped sides, 3 repeats (629 steps per side per repeat)
    python benchmarks/bench_training.py --sides trainer trainer_group_by_length mtst mtst_group_by_length
    python benchmarks/bench_training.py --ner_examples 320 --topic_examples 192 --repeats 1   # quick: 16 steps
    python benchmarks/bench_training.py --sides trainer_group_by_length mtst_group_by_length \
        mtst_group_by_length_no_preservation --name training_preservation       # the cost of embedding preservation
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import threading
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as bc  # noqa: E402

SIDES = ("trainer", "trainer_group_by_length", "mtst", "mtst_group_by_length", "mtst_group_by_length_no_preservation")
NO_PRESERVATION = "mtst_group_by_length_no_preservation"
BASELINE = "trainer_group_by_length"


class Baton:
    """Lets one side at a time run: `release` at an optimizer step hands over to the next side still running.
    Keeps per side the time spent in steps (since its previous step end or train begin) and while holding."""

    def __init__(self, names):
        self.names = list(names)
        self.active = list(names)
        self.turn = self.names[0]
        self.cond = threading.Condition()
        self.step_times = {n: [] for n in names}
        self._mark = {}

    def acquire(self, name):
        with self.cond:
            self.cond.wait_for(lambda: self.turn == name)
        self._mark[name] = time.perf_counter()

    def _pass_on(self, name):
        i = self.active.index(name)
        following = self.active[i + 1 :] + self.active[:i]
        return following[0] if following else name

    def step_end(self, name):
        """Record the step, hand over, wait for the turn again."""
        self.step_times[name].append(time.perf_counter() - self._mark[name])
        with self.cond:
            self.turn = self._pass_on(name)
            self.cond.notify_all()
        self.acquire(name)

    def mark(self, name):
        self._mark[name] = time.perf_counter()

    def finish(self, name):
        with self.cond:
            nxt = self._pass_on(name)
            self.active.remove(name)
            self.turn = nxt if nxt != name else None
            self.cond.notify_all()


def _callback(baton, name, pre_train):
    """Hands the baton on at every step; `pre_train[name]` becomes the time from the `train()` call (the caller stores
    its start there) to the first step: what the Trainer does before training (MTST: the starting embeddings)."""
    from transformers import TrainerCallback

    class BatonCallback(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            pre_train[name] = time.perf_counter() - pre_train[name]
            baton.mark(name)  # setup done; the first step interval starts here

        def on_step_end(self, args, state, control, **kwargs):
            baton.step_end(name)

    return BatonCallback()


class CountingCollator:
    """Wraps a collator; counts real tokens (attention mask) and padded positions of every batch it builds."""

    def __init__(self, collator):
        self.collator = collator
        self.real = 0
        self.padded = 0
        self.batches = 0

    def __call__(self, features):
        batch = self.collator(features)
        mask = batch["attention_mask"]
        self.real += int(mask.sum())
        self.padded += mask.numel()
        self.batches += 1
        return batch


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--ner_examples", type=int, default=0, help="CoNLL-2003 train sentences, file order (0: all 14,041)"
    )
    parser.add_argument(
        "--topic_examples", type=int, default=0, help="rows of the AG News 80%% training split (0: all 6,080)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="times the whole contest runs (median ratio)")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--max_seq_length", type=int, default=128)
    parser.add_argument("--learning_rate", type=float, default=5e-5)
    parser.add_argument(
        "--sides",
        nargs="+",
        default=[BASELINE, "mtst_group_by_length"],
        choices=SIDES,
        help="sides (default: the two grouped ones; add trainer and mtst for the ungrouped rows)",
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    parser.add_argument("--name", default="training", help="results file name (benchmarks/results/<name>)")
    args = parser.parse_args(argv)
    if BASELINE not in args.sides:
        parser.error(f"--sides must include the baseline '{BASELINE}'")

    bc.require_data("conll_train", "conll_validation", "conll_test", "ag_news")
    threads = bc.set_threads(args.threads)
    bc.quiet_transformers()
    from transformers import (
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
        AutoTokenizer,
        DataCollatorForTokenClassification,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    from mtst.data.collator import MultiTaskCollator
    from mtst.data.loading import load_task_data
    from mtst.data.tasks import load_task_specs
    from mtst.data.tokenization import tokenize_task
    from mtst.remote.modeling_mtst import MTSTModel
    from mtst.training.arguments import MultiTaskTrainingArguments
    from mtst.training.trainer import MultiTaskTrainer

    path = bc.backbone_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    specs = load_task_specs(bc.task_config("joint"))
    limits = {"ner": args.ner_examples, "topic": args.topic_examples}
    data = {}
    for spec in specs:
        spec.max_train_samples = limits[spec.name] or None
        raw = load_task_data(spec, seed=args.seed)
        data[spec.name] = tokenize_task(spec, raw, tokenizer, args.max_seq_length)["train"]
    steps = {t: math.ceil(len(ds) / args.batch_size) for t, ds in data.items()}
    total_steps = sum(steps.values())
    labels = {spec.name: list(spec.labels) for spec in specs}
    tasks = {spec.name: spec.to_model_task() for spec in specs}
    real_tokens = {t: sum(sum(m) for m in ds["attention_mask"]) for t, ds in data.items()}
    print(
        f"examples: ner {len(data['ner'])} ({steps['ner']} steps), topic {len(data['topic'])} ({steps['topic']} "
        f"steps); {total_steps} optimizer steps per side, batch {args.batch_size}, torch threads {threads}; "
        f"real tokens {sum(real_tokens.values()):,}",
        flush=True,
    )

    common = dict(
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        num_train_epochs=1,
        warmup_steps=0,
        weight_decay=0.0,
        seed=args.seed,
        save_strategy="no",
        eval_strategy="no",
        logging_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        use_cpu=True,
    )

    def contest():
        """One run of every side, steps interleaved; per-side results and the wall time."""
        tmp = tempfile.TemporaryDirectory(prefix="mtst-bench-train-")
        baton = Baton(args.sides)
        counters, setup_s, held_s, errors, train_steps, pre_train = {}, {}, {}, {}, {}, {}

        def label_kwargs(names):
            return {
                "num_labels": len(names),
                "id2label": dict(enumerate(names)),
                "label2id": {n: i for i, n in enumerate(names)},
            }

        def run_trainer(name, group):
            counters[name] = {}
            setup = 0.0
            for task in ("ner", "topic"):
                t0 = time.perf_counter()
                if task == "ner":
                    model = AutoModelForTokenClassification.from_pretrained(path, **label_kwargs(labels[task]))
                    collator = DataCollatorForTokenClassification(tokenizer)
                else:
                    model = AutoModelForSequenceClassification.from_pretrained(path, **label_kwargs(labels[task]))
                    collator = DataCollatorWithPadding(tokenizer)
                counting = counters[name][task] = CountingCollator(collator)
                strategy = "group_by_length" if group else "random"  # transformers 5.x spelling of group_by_length
                targs = TrainingArguments(
                    output_dir=os.path.join(tmp.name, name, task), train_sampling_strategy=strategy, **common
                )
                trainer = Trainer(
                    model=model,
                    args=targs,
                    train_dataset=data[task],
                    data_collator=counting,
                    processing_class=tokenizer,
                    callbacks=[_callback(baton, name, pre_train)],
                )
                setup += time.perf_counter() - t0
                pre_train[name] = time.perf_counter()
                out = trainer.train()
                train_steps[name] = train_steps.get(name, 0) + out.global_step
            setup_s[name] = setup

        def run_mtst(name, group):
            t0 = time.perf_counter()
            model = MTSTModel.from_backbone(path, tasks=tasks, pooling="mean")
            counting = CountingCollator(MultiTaskCollator(tokenizer))
            counters[name] = {"all": counting}
            targs = MultiTaskTrainingArguments(
                output_dir=os.path.join(tmp.name, name),
                group_by_length=group,
                sampling_strategy="proportional",
                **({"embedding_preservation": 0.0} if name == NO_PRESERVATION else {}),  # else MTST's default
                **common,
            )
            trainer = MultiTaskTrainer(
                model=model,
                args=targs,
                train_dataset=dict(data),
                data_collator=counting,
                processing_class=tokenizer,
                callbacks=[_callback(baton, name, pre_train)],
            )
            setup_s[name] = time.perf_counter() - t0
            pre_train[name] = time.perf_counter()
            out = trainer.train()
            train_steps[name] = out.global_step

        def side(name):
            baton.acquire(name)
            t0 = time.perf_counter()
            try:
                group = "group_by_length" in name
                (run_mtst if name.startswith("mtst") else run_trainer)(name, group)
            except BaseException:  # report after the other sides finish
                errors[name] = traceback.format_exc()
            finally:
                held_s[name] = time.perf_counter() - t0
                baton.finish(name)

        wall0 = time.perf_counter()
        threads_ = [threading.Thread(target=side, args=(name,), name=name) for name in args.sides]
        for t in threads_:
            t.start()
        for t in threads_:
            t.join()
        wall = time.perf_counter() - wall0
        tmp.cleanup()
        if errors:
            for name, tb in errors.items():
                print(f"--- {name} failed:\n{tb}", file=sys.stderr)
            sys.exit(1)

        results = {}
        for name in args.sides:
            real = sum(c.real for c in counters[name].values())
            padded = sum(c.padded for c in counters[name].values())
            step_s = sum(baton.step_times[name])
            results[name] = {
                "optimizer_steps": train_steps[name],
                "step_time_s": step_s,
                "setup_s": setup_s[name],
                "pre_train_s": pre_train[name],
                "held_s": held_s[name],
                "real_tokens": real,
                "padded_tokens": padded,
                "padding_efficiency": real / padded,
                "real_tokens_per_s": real / step_s,
                "median_step_s": bc.median(baton.step_times[name]),
                "step_times_s": baton.step_times[name],
                "padding_efficiency_per_task": {t: c.real / c.padded for t, c in counters[name].items()},
            }
        base = results[BASELINE]["real_tokens_per_s"]
        for r in results.values():
            r["ratio_vs_grouped_trainer"] = r["real_tokens_per_s"] / base
        return results, wall

    repeats = []
    for repeat in range(args.repeats):
        results, wall = contest()
        repeats.append({"results": results, "wall_s": wall})
        ratios = ", ".join(f"{n} {r['ratio_vs_grouped_trainer']:.3f}" for n, r in results.items() if n != BASELINE)
        print(f"repeat {repeat + 1}/{args.repeats} ({wall:.0f} s): real tokens/s vs {BASELINE}: {ratios}", flush=True)

    results = {}
    for name in args.sides:
        runs = [rep["results"][name] for rep in repeats]
        real = sum(r["real_tokens"] for r in runs)
        padded = sum(r["padded_tokens"] for r in runs)
        step_s = sum(r["step_time_s"] for r in runs)
        per_repeat = [r["ratio_vs_grouped_trainer"] for r in runs]
        results[name] = {
            "optimizer_steps": runs[0]["optimizer_steps"],
            "step_time_s_per_repeat": [r["step_time_s"] for r in runs],
            "real_tokens_per_repeat": runs[0]["real_tokens"],
            "padding_efficiency": real / padded,
            "real_tokens_per_s": real / step_s,
            "ratio_vs_grouped_trainer": bc.median(per_repeat),
            "ratio_vs_grouped_trainer_per_repeat": per_repeat,
            "padding_efficiency_per_task": runs[0]["padding_efficiency_per_task"],
            "pre_train_s_per_repeat": [r["pre_train_s"] for r in runs],
        }
        if "trainer" in args.sides:
            results[name]["ratio_vs_trainer"] = bc.median(
                [
                    r["real_tokens_per_s"] / rep["results"]["trainer"]["real_tokens_per_s"]
                    for r, rep in zip(runs, repeats)
                ]
            )
    rows = [
        (
            name,
            r["optimizer_steps"],
            bc.median(r["step_time_s_per_repeat"]),
            r["real_tokens_per_s"],
            r["padding_efficiency"],
            r["ratio_vs_grouped_trainer"],
            f"{min(r['ratio_vs_grouped_trainer_per_repeat']):.3f}-{max(r['ratio_vs_grouped_trainer_per_repeat']):.3f}",
        )
        for name, r in results.items()
    ]
    table = bc.markdown_table(
        [
            "side",
            "steps",
            "train time s (median)",
            "real tokens/s",
            "padding efficiency",
            f"ratio vs {BASELINE} (median)",
            "range over repeats",
        ],
        rows,
    )
    print("\n" + table)
    headline_side = "mtst_group_by_length" if "mtst_group_by_length" in results else "mtst"
    ratio = results.get(headline_side, {}).get("ratio_vs_grouped_trainer")
    targets = {}
    if ratio is not None:
        targets = {
            "tokens_per_s_ratio": {
                "side": headline_side,
                "baseline": BASELINE,
                "value": ratio,
                "target": 1.0,
                "met": ratio >= 1.0,
            }
        }
        print(
            f"\n{headline_side} / {BASELINE} = {ratio:.3f} real tokens/s (target >= 1.0: "
            f"{'met' if ratio >= 1.0 else 'MISSED'})"
        )
    wall = sum(rep["wall_s"] for rep in repeats)
    markdown = (
        "# Benchmark 3: training speed, MTST multi-task training vs the transformers Trainer with group_by_length\n\n"
        f"Same examples on every side: {len(data['ner']):,} CoNLL-2003 train sentences (first in file order) + "
        f"{len(data['topic']):,} rows of the AG News 80% training split, tokenized once (max_seq_length "
        f"{args.max_seq_length}); backbone all-MiniLM-L6-v2; batch {args.batch_size}, lr {args.learning_rate}, "
        f"1 epoch = {total_steps} optimizer steps per side ({steps['ner']} ner + {steps['topic']} topic). "
        "`trainer_group_by_length` (the baseline): `Trainer` + `AutoModelForTokenClassification` + "
        "`DataCollatorForTokenClassification`, then `Trainer` + `AutoModelForSequenceClassification` + "
        "`DataCollatorWithPadding` (run_ner.py / run_glue.py recipe) with transformers' own `group_by_length`; "
        "`trainer`: the same without it. `mtst_group_by_length`: one `MultiTaskTrainer` run (task-aware batch "
        "sampler, proportional sampling, `MultiTaskCollator`, `group_by_length=True`); `mtst`: without it. The sides "
        "run in threads and alternate step by step (one computes at a time); train time = the sum of a side's step "
        "intervals (batch fetch, collate, forward, backward, optimizer step; setup excluded). Real tokens/s over all "
        f"repeats; ratio = median over {args.repeats} repeat(s) of each repeat's ratio. Padding efficiency = real "
        f"tokens / padded positions. Total wall time: {wall:.0f} s.\n\n{table}\n"
    )
    if ratio is not None:
        markdown += (
            f"\n`{headline_side}` / `{BASELINE}` = **{ratio:.3f}** real tokens/s (target >= 1.0: "
            f"{'met' if ratio >= 1.0 else 'missed'})."
        )
    preservation = preservation_cost(repeats, args.sides)
    if preservation:
        line = (
            f"Embedding preservation (weight 1.0, the default) vs `{NO_PRESERVATION}`: steps at "
            f"{preservation['step_throughput_ratio']:.3f}x the real tokens/s; with the starting embeddings' pass "
            f"({bc.median(preservation['pre_train_s_per_repeat']):.1f} s, against "
            f"{bc.median(preservation['pre_train_s_without_per_repeat']):.1f} s without) the same training takes "
            f"{preservation['time_ratio']:.3f}x the time (medians over {args.repeats} repeat(s))."
        )
        print("\n" + line)
        markdown += "\n\n" + line + "\n"
    payload = {
        "preservation_cost": preservation,
        "settings": {**vars(args), "steps": steps, "total_steps_per_side": total_steps, "real_tokens": real_tokens},
        "baseline": BASELINE,
        "results": results,
        "repeats": repeats,
        "wall_s": wall,
        "targets": targets,
        "headline": {"name": f"training tokens/s ({headline_side} / {BASELINE})", "ratio": ratio, "target": 1.0},
    }
    bc.write_results(args.name, payload, markdown)
    return payload


def preservation_cost(repeats: list, sides) -> dict | None:
    """What embedding preservation costs, per repeat and as medians: the step throughput of `mtst_group_by_length`
    (preservation on) over `mtst_group_by_length_no_preservation`, and the time ratio of the whole training (steps
    plus the time before the first step, where the starting embeddings are computed)."""
    if "mtst_group_by_length" not in sides or NO_PRESERVATION not in sides:
        return None
    on = [rep["results"]["mtst_group_by_length"] for rep in repeats]
    off = [rep["results"][NO_PRESERVATION] for rep in repeats]
    throughput = [a["real_tokens_per_s"] / b["real_tokens_per_s"] for a, b in zip(on, off)]
    time_ratio = [
        (a["step_time_s"] + a["pre_train_s"]) / (b["step_time_s"] + b["pre_train_s"]) for a, b in zip(on, off)
    ]
    return {
        "step_throughput_ratio": bc.median(throughput),
        "step_throughput_ratio_per_repeat": throughput,
        "time_ratio": bc.median(time_ratio),
        "time_ratio_per_repeat": time_ratio,
        "pre_train_s_per_repeat": [a["pre_train_s"] for a in on],
        "pre_train_s_without_per_repeat": [b["pre_train_s"] for b in off],
    }


if __name__ == "__main__":
    main()
