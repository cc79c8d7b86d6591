#!/usr/bin/env python
"""Benchmark 8: embedding quality. How good are the sentence embeddings of a trained model, next to the backbone's?

STS Benchmark (English) **validation** split (1,500 pairs, `../shared/data/stsb_en/`): Spearman correlation x 100 of
the cosine of the two sentences' embeddings with the gold score, the embeddings from
`SentenceTransformer(path, trust_remote_code=True).encode(...)` as a user gets them (a plain transformers model
folder gets sentence-transformers' default mean pooling). Differences against the backbone (all-MiniLM-L6-v2) come
with a paired bootstrap 95% interval over the pairs (the same draw for both models and for every seed, pooled over
seeds: `bench_stats.spearman_bootstrap`).

`bench_quality.py` calls this for every model it trains (each run's cosines are kept in its folder,
`stsb_validation_cosines.json`, and in its run record) and reports the table in its results; on its own, this script
scores model folders:

    python benchmarks/bench_embedding_quality.py outputs/mtst-default other/model   # each against the backbone
    python benchmarks/bench_embedding_quality.py --before_adapter outputs/mtst-default  # the vector the heads read

`--before_adapter` scores an MTST model's embedding *before* its embedding adapter (`embedding_adapter`, which
embedding preservation trains): the pooled vector its sentence heads read. It tells how much of a model's embedding
quality the adapter adds or takes away.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as bc  # noqa: E402
import bench_stats as bs  # noqa: E402

COSINES_FILE = "stsb_validation_cosines.json"  # in a model folder: the cosines of the STS-B validation pairs
WITHIN = 1.0  # the embedding target: within this many Spearman points of the backbone


def stsb_pairs(split: str = "validation") -> tuple[list[str], list[str], np.ndarray]:
    rows = bc.read_jsonl(f"stsb_{split}")
    return [r["sentence1"] for r in rows], [r["sentence2"] for r in rows], np.array([r["score"] for r in rows])


def _before_adapter_encoder(model_dir: str):
    """`encode(texts, batch_size)` of an MTST model with its embedding adapter taken out (an error if it has none)."""
    import torch

    import mtst

    model = mtst.MTSTModel.from_pretrained(model_dir).eval()
    if model.embedding_adapter is None:
        sys.exit(f"{model_dir}: --before_adapter needs an MTST model with an embedding adapter; this one has none.")
    model.embedding_adapter = None

    def encode(texts, batch_size):
        with torch.no_grad():
            out = model.encode(texts, batch_size=batch_size, normalize=True)
        return np.asarray(out, dtype=np.float64)

    return encode


def cosines(model_dir: str, batch_size: int = 64, cache: str | None = "", before_adapter: bool = False) -> np.ndarray:
    """The cosine of each STS-B validation pair's embeddings, kept in `cache` (default: `model_dir/COSINES_FILE`;
    None: not kept) and read back from there. `before_adapter`: an MTST model's embedding before its embedding
    adapter (never kept)."""
    first, second, gold = stsb_pairs()
    if before_adapter:
        encode = _before_adapter_encoder(model_dir)
        return (encode(first, batch_size) * encode(second, batch_size)).sum(1)
    cached = os.path.join(model_dir, COSINES_FILE) if cache == "" else cache
    if cached and os.path.isfile(cached):
        with open(cached, encoding="utf-8") as f:
            kept = json.load(f)
        if len(kept["cosines"]) == len(gold):
            return np.array(kept["cosines"])
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_dir, trust_remote_code=True, device="cpu")
    a = model.encode(first, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True)
    b = model.encode(second, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True)
    values = (a.astype(np.float64) * b.astype(np.float64)).sum(1)
    if cached:
        with open(cached, "w", encoding="utf-8") as f:
            json.dump({"split": "validation", "pairs": len(values), "cosines": values.round(7).tolist()}, f)
    return values


def spearman(values: np.ndarray) -> float:
    return 100 * bs._spearman(np.asarray(values), stsb_pairs()[2])


def compare(systems: dict[str, dict[int, np.ndarray]], backbone: np.ndarray, pairs=()) -> dict:
    """`{system: {seed: cosines}}` against the backbone (and `pairs` of systems against each other): Spearman per
    seed, mean ± std, and the paired bootstrap of each difference in points."""
    gold = stsb_pairs()[2]
    out = {"backbone": spearman(backbone), "systems": {}, "comparisons": {}}
    for name, by_seed in systems.items():
        per_seed = {int(s): spearman(v) for s, v in sorted(by_seed.items())}
        mean, std = bs.mean_std(list(per_seed.values()))
        seeds = sorted(by_seed)
        versus = bs.spearman_bootstrap(gold, [by_seed[s] for s in seeds], [backbone] * len(seeds))
        out["systems"][name] = {"per_seed": per_seed, "mean": mean, "std": std, "vs_backbone": versus}
        out["systems"][name]["within_1_point"] = versus["ci"][1] >= -WITHIN
    for a, b in pairs:
        if a in systems and b in systems:
            seeds = sorted(set(systems[a]) & set(systems[b]))
            data = ([systems[a][s] for s in seeds], [systems[b][s] for s in seeds])
            out["comparisons"][f"{a}-{b}"] = {"seeds": seeds, **bs.spearman_bootstrap(gold, *data)}
    return out


def markdown(analysis: dict, names: dict[str, str] | None = None) -> str:
    names = names or {}
    lines = [
        f"STS-B validation Spearman x 100 (cosine of `SentenceTransformer(...).encode`, 1,500 pairs); backbone "
        f"all-MiniLM-L6-v2: **{analysis['backbone']:.2f}**.",
        "",
        "| model | Spearman (mean ± std over seeds) | − backbone [95% CI] | | within 1 point |",
        "|:--|--:|--:|:--|:--|",
    ]
    for name, s in analysis["systems"].items():
        v = s["vs_backbone"]
        std = f" ± {s['std']:.2f}" if s["std"] is not None else ""
        lines.append(
            f"| {names.get(name, name)} | {s['mean']:.2f}{std} | {v['diff']:+.2f} "
            f"[{v['ci'][0]:+.2f}, {v['ci'][1]:+.2f}] | {v['verdict']} | {'yes' if s['within_1_point'] else 'no'} |"
        )
    for key, c in analysis["comparisons"].items():
        a, b = key.split("-", 1)
        lines.append("")
        lines.append(
            f"{names.get(a, a)} − {names.get(b, b)}: {c['diff']:+.2f} [{c['ci'][0]:+.2f}, {c['ci'][1]:+.2f}] "
            f"({c['verdict']}; seeds {', '.join(map(str, c['seeds']))})."
        )
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="model folders (MTST or any sentence-transformers-loadable model)")
    parser.add_argument("--name", default="embedding_quality", help="results file name (benchmarks/results/<name>)")
    parser.add_argument(
        "--before_adapter", action="store_true", help="score MTST models' embeddings before their embedding adapter"
    )
    args = parser.parse_args(argv)
    bc.require_data("stsb_validation")
    bc.quiet_transformers()
    backbone = cosines(bc.backbone_path(), cache=None)  # never written into the installed package
    analysis = compare({m: {0: cosines(m, before_adapter=args.before_adapter)} for m in args.models}, backbone)
    text = markdown(analysis)
    if args.before_adapter:
        text += "\n\nEvery model scored *before* its embedding adapter (`--before_adapter`): what its heads read."
    print(text)
    bc.write_results(args.name, {"analysis": analysis}, "# Embedding quality\n\n" + text)
    return analysis


if __name__ == "__main__":
    main()
