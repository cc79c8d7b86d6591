#!/usr/bin/env python
"""Benchmark 5: size and memory, one 3-task MTST vs three single-task transformers models (all-MiniLM-L6-v2).

Parameters and on-disk size (safetensors) are counted in this process. Peak resident memory is measured in fresh
subprocesses, one per side: `VmHWM` of /proc/self/status, the high-water mark of the process's own memory
(`ru_maxrss` is recorded too, but a child started by fork + exec inherits the parent's high-water mark there).
Each subprocess loads its saved folder(s) and answers the three tasks for the same real texts (batch size 32,
`torch.inference_mode`):

- `mtst`: `MTSTModel.from_pretrained(folder)`, one forward per batch (every head);
- `three_models`: 2 x `AutoModelForSequenceClassification` + 1 x `AutoModelForTokenClassification` loaded together
  (what a service answering the three tasks keeps in memory), three forwards per batch;
- `interpreter`: the same imports and data, no model (the floor that both sides share).

Subprocesses alternate (interpreter, MTST, three models, ...) for `--repeats` rounds; medians are reported.

    python benchmarks/bench_memory.py
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as bc  # noqa: E402
from bench_multitask_inference import NER, SENTIMENT, TASKS, TOPIC, _labels, make_batches  # noqa: E402

SINGLE = {"topic": ("seq", TOPIC), "sentiment": ("seq", SENTIMENT), "ner": ("tok", NER)}


def peak_rss_mb() -> float:
    """Peak resident memory of this process. On Linux `VmHWM` from /proc/self/status: `ru_maxrss` would also count
    the parent's memory, which a forked-then-exec'd child inherits as its starting high-water mark."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def worker(kind: str, root: str, n_texts: int, batch_size: int) -> None:
    """Runs in a fresh process: load one side, answer every task for the texts, print peak RSS as JSON."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer

    bc.quiet_transformers()
    texts = bc.real_sentences(n_texts // 2, n_texts - n_texts // 2)
    tokenizer = AutoTokenizer.from_pretrained(bc.backbone_path())
    batches = make_batches(tokenizer, texts, batch_size, 256)
    before = _rss_mb()
    models = []
    if kind == "mtst":
        from mtst.remote.modeling_mtst import MTSTModel

        models = [MTSTModel.from_pretrained(os.path.join(root, "mtst")).eval()]
    elif kind == "three_models":
        for name, (head, _) in SINGLE.items():
            cls = AutoModelForSequenceClassification if head == "seq" else AutoModelForTokenClassification
            models.append(cls.from_pretrained(os.path.join(root, name)).eval())
    loaded = _rss_mb()
    with torch.inference_mode():
        for batch in batches:
            for model in models:
                model(**batch)
    print(
        "RESULT "
        + json.dumps(
            {
                "kind": kind,
                "rss_before_models_mb": before,
                "rss_after_load_mb": loaded,
                "rss_end_mb": _rss_mb(),
                "peak_rss_mb": peak_rss_mb(),
                "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "parameters": sum(p.numel() for m in models for p in m.parameters()),
            }
        ),
        flush=True,
    )


def _folder_bytes(folder: str) -> int:
    return sum(
        os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder) if f.endswith((".safetensors", ".bin"))
    )


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n_texts", type=int, default=512, help="texts (half CoNLL, half AG News)")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="subprocess rounds per side")
    parser.add_argument("--worker", choices=["interpreter", "mtst", "three_models"], help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, args.root, args.n_texts, args.batch_size)
        return {}

    bc.require_data("conll_test", "ag_news")
    bc.quiet_transformers()
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer

    from mtst.remote.modeling_mtst import MTSTModel

    path = bc.backbone_path()
    tmp = tempfile.TemporaryDirectory(prefix="mtst-bench-mem-")
    root = tmp.name
    tokenizer = AutoTokenizer.from_pretrained(path)
    mtst = MTSTModel.from_backbone(path, tasks=TASKS, pooling="mean", normalize="l2")
    mtst.save_pretrained(os.path.join(root, "mtst"))
    tokenizer.save_pretrained(os.path.join(root, "mtst"))
    params = {"mtst": sum(p.numel() for p in mtst.parameters())}
    disk = {"mtst": _folder_bytes(os.path.join(root, "mtst"))}
    params["three_models"] = disk["three_models"] = 0
    per_model = {}
    for name, (head, labels) in SINGLE.items():
        cls = AutoModelForSequenceClassification if head == "seq" else AutoModelForTokenClassification
        model = cls.from_pretrained(path, num_labels=len(labels), **_labels(labels))
        model.save_pretrained(os.path.join(root, name))
        n = sum(p.numel() for p in model.parameters())
        per_model[name] = n
        params["three_models"] += n
        disk["three_models"] += _folder_bytes(os.path.join(root, name))
    del mtst

    runs: dict[str, list[dict]] = {"interpreter": [], "mtst": [], "three_models": []}
    for r in range(args.repeats):
        order = list(runs) if r % 2 == 0 else list(runs)[::-1]
        for kind in order:
            cmd = [sys.executable, os.path.abspath(__file__), "--worker", kind, "--root", root]
            cmd += ["--n_texts", str(args.n_texts), "--batch_size", str(args.batch_size)]
            out = subprocess.run(cmd, capture_output=True, text=True, cwd=bc.REPO_ROOT)
            lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
            if out.returncode != 0 or not lines:
                sys.exit(f"worker {kind} failed (exit {out.returncode}):\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
            result = json.loads(lines[-1][len("RESULT ") :])
            runs[kind].append(result)
            print(f"round {r + 1} {kind:<13} peak RSS {result['peak_rss_mb']:.0f} MB", flush=True)
    tmp.cleanup()

    peak = {k: bc.median([x["peak_rss_mb"] for x in v]) for k, v in runs.items()}
    floor = peak["interpreter"]
    above = {k: peak[k] - floor for k in ("mtst", "three_models")}
    ratios = {
        "parameters": params["three_models"] / params["mtst"],
        "disk": disk["three_models"] / disk["mtst"],
        "peak_rss": peak["three_models"] / peak["mtst"],
        "peak_rss_above_interpreter": above["three_models"] / above["mtst"],
    }
    rows = [
        ("parameters", params["three_models"], params["mtst"], ratios["parameters"]),
        ("weights on disk (MB)", disk["three_models"] / 2**20, disk["mtst"] / 2**20, ratios["disk"]),
        ("peak RSS (MB)", peak["three_models"], peak["mtst"], ratios["peak_rss"]),
        (
            "peak RSS above the interpreter floor (MB)",
            above["three_models"],
            above["mtst"],
            ratios["peak_rss_above_interpreter"],
        ),
    ]
    table = bc.markdown_table(["measure", "3 single-task models", "one 3-task MTST", "ratio (3 models / MTST)"], rows)
    print("\n" + table)
    print(f"\ninterpreter floor (imports + data, no model): {floor:.0f} MB peak RSS")
    markdown = (
        "# Benchmark 5: size and memory, one 3-task MTST vs 3 single-task models\n\n"
        "Backbone all-MiniLM-L6-v2; tasks topic (4 labels), sentiment (2), ner (9). Baseline: "
        "2 x `AutoModelForSequenceClassification` + 1 x `AutoModelForTokenClassification`, loaded together. Peak "
        "RSS (`VmHWM`, Linux) of fresh subprocesses that load the saved folder(s) and answer the three tasks for "
        f"{args.n_texts} real texts (batch {args.batch_size}, `torch.inference_mode`); median of {args.repeats} "
        f"rounds. The interpreter floor (same imports and data, no model) is {floor:.0f} MB.\n\n{table}"
    )
    payload = {
        "settings": vars(args),
        "parameters": params,
        "parameters_per_single_model": per_model,
        "weights_bytes": disk,
        "peak_rss_mb": peak,
        "runs": runs,
        "ratios": ratios,
        "headline": {"name": "memory (3 models / MTST peak RSS)", "ratio": ratios["peak_rss"], "target": None},
    }
    bc.write_results("memory", payload, markdown)
    return payload


if __name__ == "__main__":
    main()
