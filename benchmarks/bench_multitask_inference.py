#!/usr/bin/env python
"""Benchmark 2: multi-task inference, one MTST pass answering 3 tasks vs 3 single-task transformers models.

Tasks: `topic` (4 labels), `sentiment` (2) and `ner` (9 BIO tags), on the all-MiniLM-L6-v2 backbone. The heads are
untrained (speed only). The baseline is what a user would run instead: `AutoModelForSequenceClassification` twice
and `AutoModelForTokenClassification` once, each loaded from the same backbone.

- model level: the same pre-tokenized batches (texts sorted by token count, batch size 32, padded per batch) go
  through one MTST forward (every head) and through the three baseline forwards, under `torch.inference_mode`;
- pipeline level: `pipeline(model=mtst_folder, trust_remote_code=True)` (the multitask pipeline: topic and
  sentiment labels and NER entity groups) vs `pipeline("text-classification")` x 2 +
  `pipeline("token-classification", aggregation_strategy="simple")`, all with `batch_size=32`, the same texts in
  the same order.

The texts are shuffled and cut into chunks; for each chunk the two sides run back to back (order alternating), and
the ratio is the median over chunks of time(3 single-task models) / time(MTST). Target: >= 2.7 at both levels.

    python benchmarks/bench_multitask_inference.py               # 600 CoNLL + 600 AG News texts
    python benchmarks/bench_multitask_inference.py --n_conll 150 --n_ag 150   # quick
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as bc  # noqa: E402

TOPIC = ["World", "Sports", "Business", "Sci/Tech"]
SENTIMENT = ["negative", "positive"]
NER = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
TASKS = {
    "topic": {"type": "sequence_classification", "labels": TOPIC},
    "sentiment": {"type": "sequence_classification", "labels": SENTIMENT},
    "ner": {"type": "token_classification", "labels": NER},
}


def _labels(names):
    return {"id2label": dict(enumerate(names)), "label2id": {n: i for i, n in enumerate(names)}}


def make_batches(tokenizer, texts, batch_size, max_length):
    """Texts sorted by token count (longest first), padded per batch: the batches both sides run."""
    ids = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    order = sorted(range(len(texts)), key=lambda i: -len(ids[i]))
    batches = []
    for start in range(0, len(order), batch_size):
        chunk = [texts[i] for i in order[start : start + batch_size]]
        enc = tokenizer(chunk, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        batches.append(dict(enc))
    return batches


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n_conll", type=int, default=600, help="CoNLL-2003 test sentences")
    parser.add_argument("--n_ag", type=int, default=600, help="AG News texts")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--max_length", type=int, default=256)
    parser.add_argument("--chunk_size", type=int, default=200, help="texts per interleaved chunk")
    parser.add_argument("--repeats", type=int, default=1, help="rounds over all chunks (after one warm-up chunk)")
    parser.add_argument("--skip_pipelines", action="store_true", help="model level only")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    args = parser.parse_args(argv)

    bc.require_data("conll_test", "ag_news")
    threads = bc.set_threads(args.threads)
    bc.quiet_transformers()
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
        AutoTokenizer,
        pipeline,
    )

    from mtst.remote.modeling_mtst import MTSTModel

    path = bc.backbone_path()
    texts = bc.real_sentences(args.n_conll, args.n_ag)
    tokenizer = AutoTokenizer.from_pretrained(path)
    mtst = MTSTModel.from_backbone(path, tasks=TASKS, pooling="mean", normalize="l2").eval()
    baselines = {
        "topic": AutoModelForSequenceClassification.from_pretrained(path, num_labels=4, **_labels(TOPIC)).eval(),
        "sentiment": AutoModelForSequenceClassification.from_pretrained(path, num_labels=2, **_labels(SENTIMENT)),
        "ner": AutoModelForTokenClassification.from_pretrained(path, num_labels=9, **_labels(NER)).eval(),
    }
    baselines["sentiment"].eval()
    attn = {name: m.config._attn_implementation for name, m in {"mtst": mtst.encoder, **baselines}.items()}
    chunks = bc.chunked(texts, args.chunk_size)
    n_tokens = sum(len(x) for x in tokenizer(texts, truncation=True, max_length=args.max_length)["input_ids"])
    print(
        f"{len(texts)} texts ({args.n_conll} CoNLL + {args.n_ag} AG News, {n_tokens:,} tokens), batch "
        f"{args.batch_size}, {len(chunks)} chunks of {args.chunk_size}, torch threads {threads}, attention {attn}",
        flush=True,
    )

    # ---- model level: the same batches through one MTST forward vs three single-task forwards
    chunk_batches = [make_batches(tokenizer, c, args.batch_size, args.max_length) for c in chunks]

    def run_mtst(batches):
        for batch in batches:
            out = mtst(**batch)
            _ = [out.task_logits[t].argmax(-1) for t in TASKS]

    def run_single(batches):
        for batch in batches:
            for model in baselines.values():
                model(**batch).logits.argmax(-1)

    with torch.inference_mode():
        # check: the shared encoder gives the baselines' hidden states (same backbone weights)
        b = chunk_batches[0][0]
        diff = (mtst(**b).last_hidden_state - baselines["ner"].bert(**b).last_hidden_state).abs().max().item()
        model_timing = bc.paired(
            {"three_single_task_models": run_single, "mtst_one_pass": run_mtst},
            chunk_batches,
            repeats=args.repeats,
        )
    model_ratio = model_timing["ratio_median_of_pairs"]["mtst_one_pass"]
    print(f"model level: ratio {model_ratio:.3f} (totals {model_timing['total_s']})", flush=True)

    # ---- pipeline level
    pipe_timing, pipe_ratio = None, None
    tmp = tempfile.TemporaryDirectory(prefix="mtst-bench-pipe-")
    if not args.skip_pipelines:
        mtst.save_pretrained(tmp.name)
        tokenizer.save_pretrained(tmp.name)
        multi = pipeline(model=tmp.name, trust_remote_code=True)
        singles = [
            pipeline("text-classification", model=baselines["topic"], tokenizer=tokenizer),
            pipeline("text-classification", model=baselines["sentiment"], tokenizer=tokenizer),
            pipeline(
                "token-classification", model=baselines["ner"], tokenizer=tokenizer, aggregation_strategy="simple"
            ),
        ]
        bs = args.batch_size

        def run_multi_pipe(chunk):
            return multi(chunk, batch_size=bs, tasks=list(TASKS))

        def run_single_pipes(chunk):
            return [p(chunk, batch_size=bs) for p in singles]

        answers = run_multi_pipe(chunks[0][:2])
        print("multitask pipeline answer:", answers[0], flush=True)
        pipe_timing = bc.paired(
            {"three_standard_pipelines": run_single_pipes, "mtst_multitask_pipeline": run_multi_pipe},
            chunks,
            repeats=args.repeats,
        )
        pipe_ratio = pipe_timing["ratio_median_of_pairs"]["mtst_multitask_pipeline"]
        print(f"pipeline level: ratio {pipe_ratio:.3f} (totals {pipe_timing['total_s']})", flush=True)

    n_done = len(texts) * args.repeats
    rows = []
    for level, timing, base, ours in (
        ("model (batched forward)", model_timing, "three_single_task_models", "mtst_one_pass"),
        ("pipeline", pipe_timing, "three_standard_pipelines", "mtst_multitask_pipeline"),
    ):
        if timing is None:
            continue
        tb, tm = timing["total_s"][base], timing["total_s"][ours]
        rows.append(
            (
                level,
                n_done / tb,
                n_done / tm,
                timing["ratio_median_of_pairs"][ours],
                timing["ratio_of_totals"][ours],
                "met" if timing["ratio_median_of_pairs"][ours] >= 2.7 else "missed",
            )
        )
    table = bc.markdown_table(
        ["level", "3 single-task texts/s", "MTST texts/s", "ratio (median of pairs)", "ratio of totals", ">= 2.7"],
        rows,
    )
    print("\n" + table)
    ratios = [r for r in (model_ratio, pipe_ratio) if r is not None]
    targets = {
        "model_level_ratio": {"value": model_ratio, "target": 2.7, "met": model_ratio >= 2.7},
    }
    if pipe_ratio is not None:
        targets["pipeline_level_ratio"] = {"value": pipe_ratio, "target": 2.7, "met": pipe_ratio >= 2.7}
    markdown = (
        "# Benchmark 2: multi-task inference, one MTST pass vs 3 single-task models\n\n"
        f"{len(texts)} real texts ({args.n_conll} CoNLL-2003 test + {args.n_ag} AG News, {n_tokens:,} tokens), "
        f"backbone all-MiniLM-L6-v2, 3 tasks (topic 4 labels, sentiment 2, ner 9 BIO tags; untrained heads), "
        f"batch size {args.batch_size}, max length {args.max_length}, `torch.inference_mode`, attention "
        f"{sorted(set(attn.values()))}. Baseline: `AutoModelForSequenceClassification` x 2 + "
        "`AutoModelForTokenClassification` from the same backbone. Model level: the same batches (sorted by token "
        "count, padded per batch). Pipeline level: the MTST multitask pipeline (`pipeline(model=folder, "
        "trust_remote_code=True)`) vs 2 `text-classification` + 1 `token-classification` "
        "(`aggregation_strategy='simple'`) pipelines, `batch_size` as above, texts in the same order. Texts are "
        f"shuffled and cut into chunks of {args.chunk_size}; the sides run each chunk back to back (order "
        "alternating); ratio = median over chunks of time(3 models) / time(MTST).\n\n"
        f"{table}\n\nEncoder hidden states of MTST and the baseline agree to {diff:.1e} (same backbone weights)."
    )
    payload = {
        "settings": {**vars(args), "n_texts": len(texts), "n_tokens": n_tokens, "attention": attn},
        "model_level": model_timing,
        "pipeline_level": pipe_timing,
        "max_abs_diff_hidden_states": diff,
        "targets": targets,
        "headline": {"name": "multi-task inference (3 models / MTST)", "ratio": min(ratios), "target": 2.7},
    }
    bc.write_results("multitask_inference", payload, markdown)
    tmp.cleanup()
    return payload


if __name__ == "__main__":
    main()
