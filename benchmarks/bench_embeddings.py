#!/usr/bin/env python
"""Benchmark 1: sentence embeddings, MTST `encode()` vs `SentenceTransformer.encode` (all-MiniLM-L6-v2).

Both sides embed the same real sentences (CoNLL-2003 test sentences + AG News texts) with the same batch size and
the same maximum length (the sentence-transformers model's `max_seq_length`, 256), both sort by length internally,
both run under `torch.inference_mode`. MTST is measured twice: the model built in memory with
`MTSTModel.from_backbone(..., pooling="mean", normalize="l2")`, and the same model saved and loaded back with
`MTSTModel.from_pretrained(folder)`. The folder is also loaded with `SentenceTransformer(folder,
trust_remote_code=True)` to check that sentence-transformers gives MTST's vectors.

Targets: throughput ratio MTST / sentence-transformers >= 1.0, cosine similarity >= 0.9999 on every sentence.

    python benchmarks/bench_embeddings.py                          # 1,500 CoNLL + 1,500 AG News texts
    python benchmarks/bench_embeddings.py --n_conll 250 --n_ag 250   # quick
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as bc  # noqa: E402

TASKS = {
    "topic": {"type": "sequence_classification", "labels": ["World", "Sports", "Business", "Sci/Tech"]},
    "sentiment": {"type": "sequence_classification", "labels": ["negative", "positive"]},
    "ner": {
        "type": "token_classification",
        "labels": ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"],
    },
}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n_conll", type=int, default=1500, help="CoNLL-2003 test sentences")
    parser.add_argument("--n_ag", type=int, default=1500, help="AG News texts")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--chunk_size", type=int, default=250, help="texts per interleaved chunk")
    parser.add_argument("--repeats", type=int, default=1, help="rounds over all chunks (after one warm-up chunk)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    args = parser.parse_args(argv)

    bc.require_data("conll_test", "ag_news")
    threads = bc.set_threads(args.threads)
    bc.quiet_transformers()
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer

    from mtst.remote.modeling_mtst import MTSTModel

    path = bc.backbone_path()
    sentences = bc.real_sentences(args.n_conll, args.n_ag)
    st = SentenceTransformer(path, device="cpu")
    max_length = st.max_seq_length
    tokenizer = AutoTokenizer.from_pretrained(path)
    mtst = MTSTModel.from_backbone(path, tasks=TASKS, pooling="mean", normalize="l2").eval()
    tmp = tempfile.TemporaryDirectory(prefix="mtst-bench-emb-")
    mtst.save_pretrained(tmp.name)
    tokenizer.save_pretrained(tmp.name)
    saved = MTSTModel.from_pretrained(tmp.name).eval()
    saved_tokenizer = AutoTokenizer.from_pretrained(tmp.name)
    st_on_mtst = SentenceTransformer(tmp.name, device="cpu", trust_remote_code=True)
    st_on_mtst.max_seq_length = max_length

    n_tokens = sum(len(ids) for ids in tokenizer(sentences, truncation=True, max_length=max_length)["input_ids"])
    bs = args.batch_size
    candidates = {  # the baseline first
        "sentence_transformers": lambda c: st.encode(c, batch_size=bs, convert_to_tensor=True),
        "mtst": lambda c: mtst.encode(c, tokenizer, batch_size=bs, max_length=max_length),
        "mtst_saved_folder": lambda c: saved.encode(c, saved_tokenizer, batch_size=bs, max_length=max_length),
    }
    chunks = bc.chunked(sentences, args.chunk_size)
    print(
        f"{len(sentences)} sentences ({args.n_conll} CoNLL + {args.n_ag} AG News, {n_tokens:,} tokens), batch {bs}, "
        f"max_length {max_length}, torch threads {threads}; {len(chunks)} chunks of {args.chunk_size} x "
        f"{args.repeats} round(s), sides interleaved per chunk",
        flush=True,
    )
    with torch.inference_mode():
        timing = bc.paired(candidates, chunks, repeats=args.repeats, warmup=1)
        ref = st.encode(sentences, batch_size=bs, convert_to_tensor=True).float()
        vectors = {
            "mtst": mtst.encode(sentences, tokenizer, batch_size=bs, max_length=max_length),
            "mtst_saved_folder": saved.encode(sentences, saved_tokenizer, batch_size=bs, max_length=max_length),
            "sentence_transformers_on_mtst_folder": st_on_mtst.encode(
                sentences, batch_size=bs, convert_to_tensor=True
            ),
        }
    cosines = {}
    for name, vec in vectors.items():
        cos = torch.nn.functional.cosine_similarity(vec.float(), ref, dim=-1)
        cosines[name] = {"min": float(cos.min()), "mean": float(cos.mean())}

    n_done = len(sentences) * args.repeats
    results, rows = {}, []
    for name in candidates:
        total = timing["total_s"][name]
        ratio = timing["ratio_median_of_pairs"].get(name, 1.0)
        results[name] = {
            "total_s": total,
            "sentences_per_s": n_done / total,
            "tokens_per_s": n_tokens * args.repeats / total,
            "ratio_vs_sentence_transformers": ratio,
            "ratio_of_totals": timing["ratio_of_totals"].get(name, 1.0),
            "chunk_times_s": timing["times_s"][name],
        }
        cos = cosines.get(name, {"min": 1.0})["min"]
        rows.append((name, total, n_done / total, ratio, results[name]["ratio_of_totals"], f"{cos:.6f}"))
    ratio = min(
        results["mtst"]["ratio_vs_sentence_transformers"],
        results["mtst_saved_folder"]["ratio_vs_sentence_transformers"],
    )
    min_cos = min(c["min"] for c in cosines.values())
    targets = {
        "throughput_ratio": {"value": ratio, "target": 1.0, "met": ratio >= 1.0},
        "min_cosine": {"value": min_cos, "target": 0.9999, "met": min_cos >= 0.9999},
    }
    check = cosines["sentence_transformers_on_mtst_folder"]["min"]
    table = bc.markdown_table(
        ["side", "total s", "sentences/s", "ratio vs ST (median of pairs)", "ratio of totals", "min cosine vs ST"],
        rows + [("SentenceTransformer(MTST folder) (check)", None, None, None, None, f"{check:.6f}")],
    )
    print("\n" + table)
    print(
        f"\nthroughput ratio MTST / sentence-transformers = {ratio:.3f} (target >= 1.0: "
        f"{'met' if targets['throughput_ratio']['met'] else 'MISSED'}); min cosine {min_cos:.6f} "
        f"(target >= 0.9999: {'met' if targets['min_cosine']['met'] else 'MISSED'})"
    )
    markdown = (
        "# Benchmark 1: embeddings, MTST vs sentence-transformers\n\n"
        f"{len(sentences)} real sentences ({args.n_conll} CoNLL-2003 test + {args.n_ag} AG News, {n_tokens:,} "
        f"tokens), backbone all-MiniLM-L6-v2, batch size {bs}, max length {max_length}, both sorted by length, "
        f"`torch.inference_mode`. The texts are shuffled and cut into chunks of {args.chunk_size}; every side "
        f"encodes each chunk back to back (order alternating), {args.repeats} round(s) after a warm-up chunk. "
        "Ratio = median over chunks of time(ST) / time(side).\n\n"
        f"{table}\n\nThroughput ratio (worse of the two MTST rows) **{ratio:.3f}** (target >= 1.0: "
        f"{'met' if targets['throughput_ratio']['met'] else 'missed'}); minimum cosine **{min_cos:.6f}** "
        f"(target >= 0.9999: {'met' if targets['min_cosine']['met'] else 'missed'})."
    )
    payload = {
        "settings": {**vars(args), "max_length": max_length, "n_sentences": len(sentences), "n_tokens": n_tokens},
        "results": results,
        "cosine_vs_sentence_transformers": cosines,
        "targets": targets,
        "headline": {"name": "embeddings throughput (MTST / sentence-transformers)", "ratio": ratio, "target": 1.0},
    }
    bc.write_results("embeddings", payload, markdown)
    tmp.cleanup()
    return payload


if __name__ == "__main__":
    main()
