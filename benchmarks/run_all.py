#!/usr/bin/env python
"""Run the six MTST benchmarks one after another (each in its own process) and print the table of ratios.

    python benchmarks/run_all.py                  # 1-3, 5, 6 at their default sizes, quality with --quick
    python benchmarks/run_all.py --full-quality   # quality protocol in full (3 seeds x 5 runs, 2 at a time: 64 min)
    python benchmarks/run_all.py --quick          # all at a small size (smoke test; results in a temp folder)
    python benchmarks/run_all.py --only embeddings memory
    python benchmarks/run_all.py --summary-only   # just rebuild the table from benchmarks/results/*.json

Writes benchmarks/results/summary.md and summary.json (besides each benchmark's own files).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as bc  # noqa: E402

QUICK_RESULTS = os.path.join(tempfile.gettempdir(), "mtst-bench-quick-results")  # as bench_quality.py --quick
BENCHMARKS = {
    "embeddings": ("bench_embeddings.py", [], ["--n_conll", "250", "--n_ag", "250"]),
    "multitask_inference": ("bench_multitask_inference.py", [], ["--n_conll", "100", "--n_ag", "100"]),
    "training": ("bench_training.py", [], ["--ner_examples", "320", "--topic_examples", "192", "--repeats", "1"]),
    "quality": ("bench_quality.py", ["--quick"], ["--quick"]),
    "memory": ("bench_memory.py", [], ["--repeats", "1", "--n_texts", "128"]),
    "serving": ("bench_serving.py", [], ["--quick"]),
    "inference_backends": ("bench_inference_backends.py", [], ["--quick"]),
}


def _load(name: str, folder: str | None = None) -> dict | None:
    path = os.path.join(folder or bc.RESULTS_DIR, f"{name}.json")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


# The committed quality results at today's recipe (the preservation weight shared by a run's head tasks); `quality`
# and `quality_three_task` hold the runs made before it was shared. A full quality run (`--full_quality`) writes
# `quality` at today's recipe.
COMMITTED_QUALITY, COMMITTED_THREE_TASK = "quality_shared", "quality_three_task_shared"


def summary_rows(quality_name: str, quality_dir: str | None = None) -> list[tuple]:
    rows = []
    emb = _load("embeddings")
    if emb:
        t = emb["targets"]
        rows.append(
            (
                "1 embeddings: throughput MTST / sentence-transformers",
                t["throughput_ratio"]["value"],
                ">= 1.0",
                t["throughput_ratio"]["met"],
            )
        )
        rows.append(
            (
                "1 embeddings: min cosine vs sentence-transformers",
                f"{t['min_cosine']['value']:.6f}",
                ">= 0.9999",
                t["min_cosine"]["met"],
            )
        )
    inf = _load("multitask_inference")
    if inf:
        for key, label in (("model_level_ratio", "model level"), ("pipeline_level_ratio", "pipeline level")):
            if key in inf["targets"]:
                t = inf["targets"][key]
                rows.append((f"2 multi-task inference ({label}): 3 models / MTST", t["value"], ">= 2.7", t["met"]))
    tr = _load("training")
    if tr:
        base = tr.get("baseline", "trainer")
        key = "ratio_vs_grouped_trainer" if base == "trainer_group_by_length" else "ratio_vs_trainer"
        for name, r in tr["results"].items():
            if name == base:
                continue
            target = ">= 1.0" if name == tr["targets"].get("tokens_per_s_ratio", {}).get("side") else ""
            met = r[key] >= 1.0 if target else None
            rows.append((f"3 training real tokens/s: {name} / {base}", r[key], target, met))
        eff = ", ".join(f"{n} {r['padding_efficiency']:.2f}" for n, r in tr["results"].items())
        rows.append((f"3 training padding efficiency: {eff}", None, "", None))
    q = _load(quality_name, quality_dir)
    quick = " (quick)" if "quick" in quality_name else ""
    if q and "analysis" in q:  # bench_quality.py with seeds, plain baseline and bootstrap intervals
        for task, label in (("ner", "CoNLL test F1"), ("topic", "AG News held-out acc.")):
            t = q["targets"].get(task)
            if not t:
                continue
            plain = f", plain {100 * t['plain']:.2f}" if "plain" in t else ""
            rows.append(
                (
                    f"4 quality{quick}: {label} joint - alone (points; alone {100 * t['alone']:.2f}, joint "
                    f"{100 * t['joint']:.2f}{plain}; 95% CI [{t['ci95_points'][0]:+.2f}, {t['ci95_points'][1]:+.2f}], "
                    f"{t['verdict']})",
                    t["diff_points"],
                    "CI upper end >= 0 vs alone and vs plain",
                    t["met"],
                )
            )
    elif q:  # results of the earlier two-seed script (no intervals)
        for key, label in (("predict_ner_f1", "CoNLL test F1"), ("eval_topic_accuracy", "AG News held-out acc.")):
            if key in q["targets"]:
                t = q["targets"][key]
                rows.append(
                    (
                        f"4 quality{quick}: {label} joint - single (points; "
                        f"single {100 * t['single']:.2f}, joint {100 * t['joint']:.2f})",
                        t["diff_points"],
                        ">= -0.3",
                        t["met"],
                    )
                )
    mem = _load("memory")
    if mem:
        r = mem["ratios"]
        rows.append(("5 memory: parameters 3 models / MTST", r["parameters"], "", None))
        rows.append(("5 memory: peak RSS 3 models / MTST", r["peak_rss"], "", None))
        rows.append(
            ("5 memory: peak RSS above interpreter floor, 3 models / MTST", r["peak_rss_above_interpreter"], "", None)
        )
    srv = _load("serving")
    if srv:
        levels = {level["clients"]: level for level in srv["levels"]}
        top = levels[max(levels)]
        one = levels[min(levels)]
        t = srv["targets"]
        rows.append(
            (
                f"6 serving: texts/s at {top['clients']} clients / 1 client ({one['throughput_texts_s']:.1f} -> "
                f"{top['throughput_texts_s']:.1f}; p95 {top['latency_p95_s']:.2f} s)",
                t["throughput_top_vs_one_client"]["value"],
                ">= 1.0",
                t["throughput_top_vs_one_client"]["met"],
            )
        )
        rows.append(
            (
                f"6 serving: errors at {top['clients']} clients; answers identical to 1 client: "
                f"{'yes' if top['identical'] else 'no'}",
                top["errors"],
                "0, identical",
                t["errors_at_top_level"]["met"] and t["identical_to_single_client"]["met"],
            )
        )
        rows.append(
            (
                "6 serving: over-limit requests answered 400, max latency (s)",
                t["over_limit_latency_max_s"]["value"],
                "< 1.0",
                t["over_limit_latency_max_s"]["met"] and t["over_limit_answered_400"]["met"],
            )
        )
    inf = _load("inference_backends")
    if inf:
        for name, r in inf["results"].items():
            if name != "st_float32":
                rows.append((f"7 CPU inference sentences/s: {name} / ST float32", r["ratio_vs_st_float32"], "", None))
        t = inf["targets"]["best_mtst_vs_st_float32"]
        label = f"7 CPU inference: best MTST row within quality limits ({t['side']}) / ST float32"
        rows.append((label, t["value"], ">= 1.6", t["met"]))
    return rows + embedding_rows()


def embedding_rows() -> list[tuple]:
    """Benchmark 8 from the committed quality results: STS-B validation Spearman of the main protocol's joint model
    against the backbone, and of the three-task models (the default: STS-B alone first, then all three; staged with
    the heads alone in the second stage; one stage) against STS-B trained alone, the default's against the backbone."""
    rows = []
    emb = (_load(COMMITTED_QUALITY) or {}).get("embedding") or {}
    if "joint" in emb.get("systems", {}):
        s = emb["systems"]["joint"]
        v = s["vs_backbone"]
        rows.append(
            (
                f"8 embeddings: STS-B val. Spearman, main joint - backbone (points; backbone {emb['backbone']:.2f}, "
                f"joint {s['mean']:.2f}; 95% CI [{v['ci'][0]:+.2f}, {v['ci'][1]:+.2f}], {v['verdict']})",
                v["diff"],
                "CI upper end >= -1.0",
                s["within_1_point"],
            )
        )
    for name, run, label in (
        (COMMITTED_THREE_TASK, "joint3", "three-task default (STS-B first, then all three)"),
        ("quality_three_task_staged", "staged3", "three-task staged (STS-B first, then the heads only)"),
        ("quality_three_task_staged", "joint3", "three-task in one stage"),
    ):
        emb3 = (_load(name) or {}).get("embedding") or {}
        c = emb3.get("comparisons", {}).get(f"{run}-sts_only")
        if c:
            model, alone = emb3["systems"][run]["mean"], emb3["systems"]["sts_only"]["mean"]
            rows.append(
                (
                    f"8 embeddings: STS-B val. Spearman, {label} - STS-B alone (points; alone {alone:.2f}, "
                    f"model {model:.2f}; 95% CI [{c['ci'][0]:+.2f}, {c['ci'][1]:+.2f}], {c['verdict']})",
                    c["diff"],
                    "CI upper end >= 0",
                    c["ci"][1] >= 0,
                )
            )
    default = ((_load(COMMITTED_THREE_TASK) or {}).get("embedding") or {}).get("systems", {}).get("joint3")
    if default:
        v = default["vs_backbone"]
        rows.append(
            (
                f"8 embeddings: STS-B val. Spearman, three-task default - backbone (points; model "
                f"{default['mean']:.2f}; 95% CI [{v['ci'][0]:+.2f}, {v['ci'][1]:+.2f}], {v['verdict']})",
                v["diff"],
                "CI upper end >= 0",
                v["ci"][1] >= 0,
            )
        )
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="every benchmark at a small size")
    parser.add_argument("--full-quality", action="store_true", help="quality benchmark on the full data")
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), default=list(BENCHMARKS))
    parser.add_argument("--summary-only", action="store_true", help="only rebuild the summary from the results")
    parser.add_argument(
        "--results_dir",
        default=None,
        help="where the result files go (default: benchmarks/results; with --quick a temporary folder, so that smoke "
        "runs never overwrite the committed results)",
    )
    args = parser.parse_args(argv)
    if args.results_dir is None and args.quick:
        args.results_dir = QUICK_RESULTS
    if args.results_dir:
        bc.RESULTS_DIR = os.path.abspath(args.results_dir)
        os.environ["MTST_BENCH_RESULTS"] = bc.RESULTS_DIR
    print(f"results: {bc.RESULTS_DIR}", flush=True)

    bc.require_data()
    here = os.path.dirname(os.path.abspath(__file__))
    walls, failed = {}, []
    if not args.summary_only:
        for name in args.only:
            script, default_args, quick_args = BENCHMARKS[name]
            extra = quick_args if args.quick else default_args
            if name == "quality" and args.full_quality:
                extra = []
            cmd = [sys.executable, os.path.join(here, script), *extra]
            print(f"\n=== {name}: python benchmarks/{script} {' '.join(extra)}", flush=True)
            t0 = time.perf_counter()
            rc = subprocess.call(cmd, cwd=bc.REPO_ROOT)
            walls[name] = time.perf_counter() - t0
            print(f"=== {name}: exit {rc}, {walls[name] / 60:.1f} min", flush=True)
            if rc != 0:
                failed.append(name)

    quality_name = "quality" if args.full_quality else "quality_quick"
    if args.summary_only and not args.full_quality and _load(COMMITTED_QUALITY):
        quality_name = COMMITTED_QUALITY
    # bench_quality.py --quick writes to a temporary folder (never over the committed results) unless
    # MTST_BENCH_RESULTS names one
    quality_dir = None if quality_name != "quality_quick" else os.environ.get("MTST_BENCH_RESULTS") or QUICK_RESULTS
    rows = summary_rows(quality_name, quality_dir)
    table = bc.markdown_table(["benchmark", "value", "target", "met"], rows)
    print("\n" + table)
    markdown = (
        "# MTST benchmarks: summary\n\nRatios are MTST against the baseline measured in the same process "
        "(see each benchmark's own file in this folder for settings, raw timings and the exact command).\n\n"
        + table
        + (
            f"\n\nWall time per benchmark (min): {', '.join(f'{k} {v / 60:.1f}' for k, v in walls.items())}"
            if walls
            else ""
        )
    )
    bc.write_results(
        "summary",
        {
            "rows": [dict(zip(("benchmark", "value", "target", "met"), r)) for r in rows],
            "wall_s": walls,
            "failed": failed,
        },
        markdown,
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
