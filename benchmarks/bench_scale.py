#!/usr/bin/env python
"""Benchmark: a corpus larger than memory, as a streaming task, against the same task held in memory.

The job is `run_multitask.py` on all-MiniLM-L6-v2 with two tasks: the bundled sample NER task (1,000 sentences, in
memory) and `big`, a 4-class sentence task of synthetic sentences (5 to 30 words, drawn from a fixed vocabulary with
a fixed seed) written to a local JSONL file. `big` runs two ways:

- `streaming`: `streaming: true`, `num_examples` = the file's rows, at each corpus size of `--sizes` (default
  0.2 M, 1 M and 2 M rows): read, checked and tokenized `buffer_size` rows at a time while training;
- `in_memory`: the same task without `streaming` at the first size (default 0.2 M rows, a size that fits):
  loaded, checked and tokenized in full before the first step, as every task was before streaming existed.

The in-memory and streaming jobs at the smallest size alternate for `--repeats` rounds (medians reported), then the
streaming job runs once at each larger size. Every run is its own process with the same options (batch 32,
`--max_seq_length 64`, `--group_by_length true`, the default sampling strategy, `--max_steps`, no evaluation or
checkpoint, `--embedding_preservation 0` on both sides: preservation embeds an in-memory train split before training
and leaves a streaming one out, so with it on the two sides would not run the same job). Measured in the process:
the time from its start (before imports; an empty `datasets` cache, as a new job has) to the end of the first
optimizer step, the steps per second from step `--measure_from` to the last, and the peak resident memory (`VmHWM`).
Reported: each run's figures, the ratio of the streaming job's steps/s to the in-memory job's at the same size, and
the ratio of the streaming peak memory at the largest size to the smallest.

    python benchmarks/bench_scale.py
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as bc  # noqa: E402

LABELS = ["World", "Sports", "Business", "Sci/Tech"]
WORDS = {
    "World": "president election war minister treaty summit border refugees embassy parliament".split(),
    "Sports": "football goal match tennis coach league season champion stadium striker".split(),
    "Business": "stock market bank profit shares investors earnings merger inflation revenue".split(),
    "Sci/Tech": "software computer internet chip robot satellite quantum network startup battery".split(),
}
FILLER = "the a today news about new big report and of in on for with after before says said week year".split()
SAMPLE_NER = os.path.join(bc.REPO_ROOT, "mtst", "resources", "data", "sample", "ner")
MARK = "[bench-scale] "

# Runs in each measured process: times the first optimizer step and the steps after `measure_from`.
DRIVER = """
import time
START = time.time()
import json, sys
import run_multitask
from transformers import TrainerCallback
from mtst.training import trainer as trainer_mtst

MEASURE_FROM = int(sys.argv.pop(1))
times = {}

class Clock(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        times[state.global_step] = time.time()

init = trainer_mtst.MultiTaskTrainer.__init__
def timed_init(self, *args, **kwargs):
    init(self, *args, **kwargs)
    self.add_callback(Clock())
trainer_mtst.MultiTaskTrainer.__init__ = timed_init
code = run_multitask.main(sys.argv[1:])
last = max(times)
peak = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")) / 1024
print("MARK" + json.dumps({
    "first_step_s": times[1] - START,
    "steps_per_s": (last - MEASURE_FROM) / (times[last] - times[MEASURE_FROM]),
    "steps": last,
    "peak_rss_mb": peak,
}), flush=True)
sys.exit(code)
""".replace("MARK", MARK)


def sentence(rng: random.Random, label: str) -> str:
    words = rng.sample(WORDS[label], 2) + [rng.choice(FILLER) for _ in range(rng.randint(3, 28))]
    rng.shuffle(words)
    return " ".join(words)


def write_corpus(path: str, rows: int, seed: int) -> None:
    """`rows` synthetic labelled sentences (kept when the file is already there with as many lines)."""
    if os.path.isfile(path) and os.path.isfile(path + ".done"):
        return
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(rows):
            label = LABELS[rng.randrange(4)]
            f.write(json.dumps({"text": sentence(rng, label), "label": label}) + "\n")
    open(path + ".done", "w").close()


def task_config(folder: str, train: str, rows: int, streaming: bool) -> str:
    big = {
        "name": "big",
        "type": "sequence_classification",
        "data_files": {"train": train, "validation": os.path.join(folder, "validation.jsonl")},
        "labels": LABELS,
    }
    if streaming:
        big.update(streaming=True, num_examples=rows)
    ner = {
        "name": "ner",
        "type": "token_classification",
        "data_files": {s: os.path.join(SAMPLE_NER, f"{s}.jsonl") for s in ("train", "validation")},
        "tokens_column": "tokens",
        "tags_column": "ner_tags",
        "labels": ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"],
    }
    path = os.path.join(folder, f"tasks_{'streaming' if streaming else 'in_memory'}_{rows}.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"tasks": [big, ner]}, f)
    return path


def run_job(config: str, output_dir: str, args) -> dict:
    command = [sys.executable, "-c", DRIVER, str(args.measure_from), "--model_name_or_path", bc.backbone_path()]
    command += ["--tasks_config", config, "--output_dir", output_dir, "--do_train", "--max_steps", str(args.max_steps)]
    command += ["--per_device_train_batch_size", "32", "--max_seq_length", "64", "--group_by_length", "true"]
    command += ["--eval_strategy", "no", "--save_strategy", "no", "--embedding_preservation", "0", "--seed", "42"]
    command += ["--disable_tqdm", "true", "--report_to", "none", "--resume_last_checkpoint", "false", "--use_cpu"]
    env = {**os.environ, "PYTHONPATH": bc.REPO_ROOT, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env["HF_DATASETS_CACHE"] = os.path.join(output_dir, "datasets-cache")  # every run starts cold, as a new job does
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=bc.REPO_ROOT)
    lines = [line for line in result.stdout.splitlines() if line.startswith(MARK)]
    if result.returncode != 0 or not lines:
        sys.exit(f"run failed ({result.returncode}):\n{(result.stdout + result.stderr)[-4000:]}")
    return json.loads(lines[-1][len(MARK) :])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[200_000, 1_000_000, 2_000_000])
    parser.add_argument("--max_steps", type=int, default=300)
    parser.add_argument("--measure_from", type=int, default=20)
    parser.add_argument("--cache_dir", default=os.path.join(tempfile.gettempdir(), "mtst-bench-scale"))
    parser.add_argument("--name", default="scale")
    parser.add_argument(
        "--repeats", type=int, default=3, help="rounds of (in memory, streaming) at the smallest size, interleaved"
    )
    args = parser.parse_args(argv)
    os.makedirs(args.cache_dir, exist_ok=True)
    rng = random.Random(1)
    with open(os.path.join(args.cache_dir, "validation.jsonl"), "w", encoding="utf-8") as f:
        for _ in range(500):
            label = LABELS[rng.randrange(4)]
            f.write(json.dumps({"text": sentence(rng, label), "label": label}) + "\n")
    corpora = {}
    for rows in args.sizes:
        corpora[rows] = os.path.join(args.cache_dir, f"corpus_{rows}.jsonl")
        start = time.time()
        write_corpus(corpora[rows], rows, seed=rows)
        print(
            f"corpus of {rows:,} rows: {corpora[rows]} ({os.path.getsize(corpora[rows]) / 2**20:.0f} MB, "
            f"{time.time() - start:.0f} s)",
            flush=True,
        )
    runs = []
    smallest = min(args.sizes)
    plan = [pair for _ in range(args.repeats) for pair in (("in_memory", smallest), ("streaming", smallest))]
    plan += [("streaming", rows) for rows in sorted(args.sizes) if rows != smallest]
    with tempfile.TemporaryDirectory() as out:
        for side, rows in plan:
            config = task_config(args.cache_dir, corpora[rows], rows, side == "streaming")
            folder = os.path.join(out, f"{side}_{rows}_{len(runs)}")
            result = {"side": side, "rows": rows, **run_job(config, folder, args)}
            print(json.dumps(result), flush=True)
            runs.append(result)

    def med(side: str, rows: int, key: str) -> float:
        return bc.median([r[key] for r in runs if r["side"] == side and r["rows"] == rows])

    largest = max(args.sizes)
    ratios = {
        "steps_per_s_streaming_over_in_memory": med("streaming", smallest, "steps_per_s")
        / med("in_memory", smallest, "steps_per_s"),
        "peak_rss_largest_over_smallest_streaming": med("streaming", largest, "peak_rss_mb")
        / med("streaming", smallest, "peak_rss_mb"),
        "first_step_s_largest_streaming": med("streaming", largest, "first_step_s"),
    }
    rows = [
        [
            r["side"],
            f"{r['rows']:,}",
            bc.fmt(r["first_step_s"], 1),
            bc.fmt(r["steps_per_s"], 2),
            bc.fmt(r["peak_rss_mb"], 0),
        ]
        for r in runs
    ]
    table = bc.markdown_table(["side", "rows of big", "to first step (s)", "steps/s", "peak RSS (MB)"], rows)
    markdown = (
        f"# Streaming a large task (bench_scale.py)\n\nall-MiniLM-L6-v2, tasks `big` (synthetic sentences, 4 labels) "
        f"+ sample NER (1,000 sentences), batch 32, max_seq_length 64, group_by_length, {args.max_steps} steps "
        f"(steps/s from step {args.measure_from}), one process per run; {args.repeats} interleaved rounds of (in "
        f"memory, streaming) at {smallest:,} rows, medians below.\n\n{table}\n\n"
        f"- streaming / in memory, median steps/s at {smallest:,} rows: "
        f"{math.floor(ratios['steps_per_s_streaming_over_in_memory'] * 100) / 100:.2f} (rounded down)\n"
        f"- streaming peak RSS, {largest:,} rows / {smallest:,} rows (median at the smallest size): "
        f"{math.ceil(ratios['peak_rss_largest_over_smallest_streaming'] * 1000) / 1000:.3f} (rounded up)\n"
        f"- streaming time to the first optimizer step at {largest:,} rows: "
        f"{ratios['first_step_s_largest_streaming']:.1f} s\n"
    )
    print("\n" + markdown)
    settings = {"max_steps": args.max_steps, "measure_from": args.measure_from, "repeats": args.repeats}
    bc.write_results(args.name, {"runs": runs, "ratios": ratios, **settings}, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
