"""Statistics of the quality benchmark: per-example scores, entity F1 from pooled counts, mean and standard
deviation over seeds, and a paired bootstrap confidence interval of a difference between two systems.

Only numpy and seqeval (for the entity spans, exactly as the project's metric extracts them): importable without
torch, and tested in tests/test_bench_stats.py.

Per-example statistics are rows of numbers that add up over examples:

- token classification (CoNLL-2003): one row per sentence, `(tp, fp, fn)` of entities in seqeval's strict IOB2
  mode; entity F1 of any set of sentences is `2 tp / (2 tp + fp + fn)` of the summed counts (seqeval's micro F1);
- sequence classification (AG News): one row per example, `(correct, 1)`; accuracy is `sum(correct) / sum(1)`.

The paired bootstrap resamples test examples (with replacement, the same draw for both systems) and recomputes both
systems' metrics on the resample. Over several seeds the statistic is the mean over seeds of the per-seed
differences; one draw gives every example a weight (how often it was drawn), and an example that several seeds share
(the CoNLL-2003 test set is the same for every seed; AG News held-out splits overlap) gets the same weight in every
seed, so the interval does not pretend that the seeds saw independent test sets.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence

import numpy as np

F1_COLUMNS = ("tp", "fp", "fn")
ACCURACY_COLUMNS = ("correct", "count")


def entity_counts(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> np.ndarray:
    """Per-sentence `(tp, fp, fn)` of entities (seqeval, strict mode, IOB2: the spans seqeval's strict F1 counts).
    `gold[i]` and `pred[i]` are the tag strings of sentence i, of equal length."""
    from seqeval.scheme import IOB2, Entities

    if len(gold) != len(pred):
        raise ValueError(f"entity_counts: {len(gold)} gold sentences but {len(pred)} predicted ones.")
    for i, (g, p) in enumerate(zip(gold, pred)):
        if len(g) != len(p):
            raise ValueError(f"entity_counts: sentence {i} has {len(g)} gold tags but {len(p)} predicted ones.")
    gold_entities = Entities([list(g) for g in gold], IOB2, suffix=False).entities
    pred_entities = Entities([list(p) for p in pred], IOB2, suffix=False).entities
    rows = np.zeros((len(gold), 3), dtype=np.int64)
    for i, (g, p) in enumerate(zip(gold_entities, pred_entities)):
        g_set, p_set = {e.to_tuple() for e in g}, {e.to_tuple() for e in p}
        tp = len(g_set & p_set)
        rows[i] = (tp, len(p_set) - tp, len(g_set) - tp)
    return rows


def f1_from_counts(counts: np.ndarray) -> np.ndarray | float:
    """Entity F1 from summed `(tp, fp, fn)` (the last axis); 0 where there is no entity at all (seqeval's
    zero_division=0)."""
    counts = np.asarray(counts, dtype=np.float64)
    tp, fp, fn = counts[..., 0], counts[..., 1], counts[..., 2]
    denom = 2 * tp + fp + fn
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1), 0.0)
    return float(f1) if f1.ndim == 0 else f1


def correctness(gold: Sequence[Hashable], pred: Sequence[Hashable]) -> np.ndarray:
    """Per-example `(correct, 1)` rows for accuracy."""
    if len(gold) != len(pred):
        raise ValueError(f"correctness: {len(gold)} gold labels but {len(pred)} predictions.")
    return np.array([(int(g == p), 1) for g, p in zip(gold, pred)], dtype=np.int64).reshape(-1, 2)


def accuracy_from_counts(counts: np.ndarray) -> np.ndarray | float:
    """Accuracy from summed `(correct, count)` (the last axis); 0 for an empty set."""
    counts = np.asarray(counts, dtype=np.float64)
    correct, total = counts[..., 0], counts[..., 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        acc = np.where(total > 0, correct / np.where(total > 0, total, 1), 0.0)
    return float(acc) if acc.ndim == 0 else acc


METRICS: dict[str, Callable[[np.ndarray], np.ndarray | float]] = {
    "f1": f1_from_counts,
    "accuracy": accuracy_from_counts,
}


def metric_value(metric: str, rows: np.ndarray) -> float:
    """The metric of a whole set of per-example rows."""
    return float(METRICS[metric](np.asarray(rows).sum(axis=0)))


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (ddof=1; None for a single value)."""
    values = [float(v) for v in values]
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def paired_bootstrap(
    seeds: Sequence[tuple[Sequence[Hashable], np.ndarray, np.ndarray]],
    metric: str,
    n_resamples: int = 2000,
    rng_seed: int = 0,
    level: float = 0.95,
    chunk: int = 250,
) -> dict:
    """Paired bootstrap of `metric(A) - metric(B)`, pooled over seeds.

    `seeds`: one `(ids, rows_a, rows_b)` per seed; `ids[i]` names example i (the same name in every seed where the
    example occurs, unique within a seed), `rows_a[i]` / `rows_b[i]` its per-example rows for system A and B.
    Each resample draws `N` examples with replacement from the `N` distinct ids of all seeds (numpy's
    `default_rng(rng_seed)`, so the result is reproducible); each seed's metrics are recomputed with the drawn
    examples' multiplicities as weights, the same for A and B. The pooled statistic is the mean over seeds of the
    per-seed differences. Returns the point estimates (on the data as it is), the percentile interval of the pooled
    difference and of each seed's difference, and the verdict.
    """
    if not seeds:
        raise ValueError("paired_bootstrap: no seeds.")
    if metric not in METRICS:
        raise ValueError(f"paired_bootstrap: unknown metric {metric!r}; known: {', '.join(METRICS)}.")
    fn = METRICS[metric]
    universe: dict[Hashable, int] = {}
    columns, arrays = [], []
    for s, (ids, rows_a, rows_b) in enumerate(seeds):
        rows_a, rows_b = np.asarray(rows_a, dtype=np.float64), np.asarray(rows_b, dtype=np.float64)
        if not (len(ids) == len(rows_a) == len(rows_b)):
            raise ValueError(
                f"paired_bootstrap: seed {s} has {len(ids)} ids, {len(rows_a)} rows for A and {len(rows_b)} for B."
            )
        if len(set(ids)) != len(ids):
            raise ValueError(f"paired_bootstrap: seed {s} names some example twice; ids must be unique per seed.")
        columns.append(np.array([universe.setdefault(i, len(universe)) for i in ids], dtype=np.int64))
        arrays.append((rows_a, rows_b))
    n = len(universe)
    point = [fn(a.sum(0)) - fn(b.sum(0)) for a, b in arrays]
    rng = np.random.default_rng(rng_seed)
    diffs = np.empty((n_resamples, len(seeds)))
    for start in range(0, n_resamples, chunk):
        size = min(chunk, n_resamples - start)
        weights = np.stack([np.bincount(rng.integers(0, n, size=n), minlength=n) for _ in range(size)]).astype(
            np.float64
        )
        for s, (cols, (a, b)) in enumerate(zip(columns, arrays)):
            w = weights[:, cols]
            diffs[start : start + size, s] = fn(w @ a) - fn(w @ b)
    pooled = diffs.mean(axis=1)
    tail = 100 * (1 - level) / 2
    low, high = (float(x) for x in np.percentile(pooled, [tail, 100 - tail]))
    per_seed = []
    for s in range(len(seeds)):
        lo_s, hi_s = (float(x) for x in np.percentile(diffs[:, s], [tail, 100 - tail]))
        per_seed.append({"diff": float(point[s]), "ci": [lo_s, hi_s], "verdict": verdict(lo_s, hi_s)})
    return {
        "metric": metric,
        "diff": float(np.mean(point)),
        "ci": [low, high],
        "level": level,
        "verdict": verdict(low, high),
        "per_seed": per_seed,
        "n_resamples": n_resamples,
        "rng_seed": rng_seed,
        "distinct_examples": n,
    }


def verdict(low: float, high: float) -> str:
    """'better' / 'worse' only when the interval excludes zero; otherwise 'same' (no difference shown)."""
    if low > 0:
        return "better"
    if high < 0:
        return "worse"
    return "same"


def score_systems(
    systems: dict[str, dict],
    metric: str,
    comparisons: Sequence[tuple[str, str]],
    n_resamples: int = 2000,
    rng_seed: int = 0,
) -> dict:
    """Per-seed scores, mean ± std of each system and the paired bootstrap of each comparison `(a, b)` (a - b).

    `systems`: `{system: {seed: {"ids": [...], "rows": [...]}}}` (per-example rows as above). A comparison uses the
    seeds that both systems have; in every seed both must be scored on the same examples, in the same order."""
    scores = {}
    for system, by_seed in systems.items():
        per_seed = {int(seed): metric_value(metric, e["rows"]) for seed, e in by_seed.items()}
        mean, std = mean_std(list(per_seed.values()))
        scores[system] = {"per_seed": per_seed, "mean": mean, "std": std}
    results = {}
    for a, b in comparisons:
        if a not in systems or b not in systems:
            continue
        seeds = sorted(set(systems[a]) & set(systems[b]), key=int)
        data = []
        for seed in seeds:
            ea, eb = systems[a][seed], systems[b][seed]
            if list(ea["ids"]) != list(eb["ids"]):
                raise ValueError(f"seed {seed}: {a} and {b} were scored on different examples (or in another order).")
            data.append((ea["ids"], ea["rows"], eb["rows"]))
        if data:
            results[f"{a}-{b}"] = {
                "seeds": [int(s) for s in seeds],
                **paired_bootstrap(data, metric, n_resamples, rng_seed),
            }
    return {"scores": scores, "comparisons": results}


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho of two vectors (ranks with ties averaged)."""
    from scipy.stats import rankdata

    rx, ry = rankdata(x), rankdata(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    return float((rx * ry).sum() / np.sqrt((rx * rx).sum() * (ry * ry).sum()))


def spearman_bootstrap(
    gold: Sequence[float],
    a_by_seed: Sequence[Sequence[float]],
    b_by_seed: Sequence[Sequence[float]],
    n_resamples: int = 2000,
    rng_seed: int = 0,
    level: float = 0.95,
) -> dict:
    """Paired bootstrap of Spearman(A scores, gold) - Spearman(B scores, gold), in points (x 100), pooled over seeds.

    Every seed scores the same pairs (`gold`): each resample draws the pairs with replacement, the same draw for A and
    B and for every seed; the pooled statistic is the mean over seeds of the per-seed differences (as
    `paired_bootstrap`). `b_by_seed` may hold one system for all seeds (the backbone: pass it once per seed)."""
    gold = np.asarray(gold, dtype=np.float64)
    a = [np.asarray(x, dtype=np.float64) for x in a_by_seed]
    b = [np.asarray(x, dtype=np.float64) for x in b_by_seed]
    if not a or len(a) != len(b) or any(len(x) != len(gold) for x in (*a, *b)):
        raise ValueError("spearman_bootstrap: every seed needs one score per gold pair for A and for B.")
    point = [100 * (_spearman(x, gold) - _spearman(y, gold)) for x, y in zip(a, b)]
    rng = np.random.default_rng(rng_seed)
    diffs = np.empty((n_resamples, len(a)))
    for r in range(n_resamples):
        idx = rng.integers(0, len(gold), size=len(gold))
        g = gold[idx]
        for s, (x, y) in enumerate(zip(a, b)):
            diffs[r, s] = 100 * (_spearman(x[idx], g) - _spearman(y[idx], g))
    pooled = diffs.mean(axis=1)
    tail = 100 * (1 - level) / 2
    low, high = (float(v) for v in np.percentile(pooled, [tail, 100 - tail]))
    per_seed = []
    for s in range(len(a)):
        lo_s, hi_s = (float(v) for v in np.percentile(diffs[:, s], [tail, 100 - tail]))
        per_seed.append({"diff": point[s], "ci": [lo_s, hi_s], "verdict": verdict(lo_s, hi_s)})
    return {
        "metric": "spearman",
        "diff": float(np.mean(point)),
        "ci": [low, high],
        "level": level,
        "verdict": verdict(low, high),
        "per_seed": per_seed,
        "n_resamples": n_resamples,
        "rng_seed": rng_seed,
        "pairs": len(gold),
    }


def score_spearman_systems(
    systems: dict[str, dict],
    metric: str = "spearman",
    comparisons: Sequence[tuple[str, str]] = (),
    n_resamples: int = 2000,
    rng_seed: int = 0,
) -> dict:
    """`score_systems` for Spearman's rho, which is no sum over examples: rows are `(prediction, gold)` per example,
    every seed scores the same examples (same ids, same gold), and each comparison is `spearman_bootstrap`'s paired
    bootstrap over them (as fractions, like the other metrics: 0.01 is one point)."""
    if metric != "spearman":
        raise ValueError(f"score_spearman_systems scores spearman, not {metric!r}.")
    scores = {}
    for system, by_seed in systems.items():
        per_seed = {}
        for seed, e in by_seed.items():
            rows = np.asarray(e["rows"], dtype=np.float64)
            per_seed[int(seed)] = _spearman(rows[:, 0], rows[:, 1])
        mean, std = mean_std(list(per_seed.values()))
        scores[system] = {"per_seed": per_seed, "mean": mean, "std": std}
    results = {}
    for a, b in comparisons:
        if a not in systems or b not in systems:
            continue
        seeds = sorted(set(systems[a]) & set(systems[b]), key=int)
        if not seeds:
            continue
        rows = {(s, seed): np.asarray(systems[s][seed]["rows"], dtype=np.float64) for s in (a, b) for seed in seeds}
        gold = rows[(a, seeds[0])][:, 1]
        for (system, seed), r in rows.items():
            if list(systems[system][seed]["ids"]) != list(systems[a][seeds[0]]["ids"]) or not np.array_equal(
                r[:, 1], gold
            ):
                raise ValueError(f"seed {seed}: {system} was scored on other examples, or other gold scores.")
        found = spearman_bootstrap(
            gold,
            [rows[(a, seed)][:, 0] for seed in seeds],
            [rows[(b, seed)][:, 0] for seed in seeds],
            n_resamples,
            rng_seed,
        )
        for part in (found, *found["per_seed"]):
            part["diff"] /= 100
            part["ci"] = [x / 100 for x in part["ci"]]
        results[f"{a}-{b}"] = {"seeds": [int(s) for s in seeds], **found}
    return {"scores": scores, "comparisons": results}
