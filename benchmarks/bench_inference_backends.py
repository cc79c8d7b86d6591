#!/usr/bin/env python
"""Benchmark 6: CPU inference backends, MTST in float32 / bfloat16 / int8 / ONNX / ONNX-int8 vs sentence-transformers.

Every row embeds the same real texts (CoNLL-2003 test sentences + AG News texts) with the same batch size, maximum
length (256, the sentence-transformers model's `max_seq_length`) and torch/onnxruntime thread count; the texts are
shuffled and cut into chunks, and every row encodes each chunk back to back (order alternating), so load from other
processes hits all rows alike. Ratio = median over chunks of time(ST float32) / time(row).

Rows: `st_float32` (`SentenceTransformer(all-MiniLM-L6-v2)`, torch), `st_onnx` / `st_onnx_int8` (its own
`backend="onnx"` and `export_dynamic_quantized_onnx_model`; they need `sentence-transformers[onnx]`, i.e. optimum-onnx,
and are listed as skipped with the reason when it is not installed), and MTST through `mtst.inference`: `float32`,
`bfloat16`, `int8` (PyTorch dynamic quantization), `onnx` and `onnx_int8` (`export_onnx(..., quantize=True)`).

The MTST model is trained here first (MultiTaskTrainer, CoNLL-2003 train subset + AG News 80% split subset, 1 epoch,
group_by_length; `--model PATH` uses a trained MTST folder instead), so that each precision is also scored on the
tasks: CoNLL-2003 test entity F1 (seqeval strict IOB2, first sub-token of every word) and AG News held-out accuracy
(the 20% split of joint.yaml), as changes in points against float32. Cosines: each row against the float32
embeddings of its own model (MTST rows against MTST float32, ST rows against ST float32).

Target (issue 14): the best MTST row with min cosine >= 0.99 and both task scores within 0.5 points of float32 is
>= 1.6x ST float32 and at least as fast as the fastest sentence-transformers backend that runs here.

    python benchmarks/bench_inference_backends.py            # 3,000 texts; training 4,000 ner + 3,000 topic
    python benchmarks/bench_inference_backends.py --quick    # smoke test (small sizes, results to a temp folder)
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as bc  # noqa: E402

MTST_ROWS = ("mtst_float32", "mtst_bfloat16", "mtst_int8", "mtst_onnx", "mtst_onnx_int8")
ST_ROWS = ("st_float32", "st_onnx", "st_onnx_int8")
QUICK = {
    "n_conll": 150,
    "n_ag": 150,
    "chunk_size": 100,
    "train_ner": 256,
    "train_topic": 192,
    "eval_ner": 200,
    "eval_topic": 200,
}


def _reason(err: BaseException) -> str:
    text = " ".join(str(err).split())[:300]
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def load_sentence_transformers(path: str, tmp: str):
    """ST float32 and, when its ONNX backend installs, ST ONNX and ONNX-int8 (its own export functions)."""
    from sentence_transformers import SentenceTransformer

    models, skipped = {"st_float32": SentenceTransformer(path, device="cpu")}, {}
    try:
        st_onnx = SentenceTransformer(path, device="cpu", backend="onnx")
        models["st_onnx"] = st_onnx
    except Exception as err:  # noqa: BLE001 - optimum-onnx missing (it pins transformers<4.58), export failure, ...
        skipped["st_onnx"] = skipped["st_onnx_int8"] = _reason(err)
        return models, skipped
    try:
        from sentence_transformers import export_dynamic_quantized_onnx_model

        folder = os.path.join(tmp, "st-onnx")
        st_onnx.save_pretrained(folder)
        export_dynamic_quantized_onnx_model(st_onnx, "avx512_vnni", folder)
        models["st_onnx_int8"] = SentenceTransformer(
            folder, device="cpu", backend="onnx", model_kwargs={"file_name": "onnx/model_qint8_avx512_vnni.onnx"}
        )
    except Exception as err:  # noqa: BLE001
        skipped["st_onnx_int8"] = _reason(err)
    return models, skipped


def train_mtst(path: str, tokenizer, args, specs, data) -> object:
    """A short joint training (MultiTaskTrainer) from the backbone: the model every precision is scored on."""
    from mtst.data.collator import MultiTaskCollator
    from mtst.remote.modeling_mtst import MTSTModel
    from mtst.training.arguments import MultiTaskTrainingArguments
    from mtst.training.trainer import MultiTaskTrainer

    tasks = {spec.name: spec.to_model_task() for spec in specs}
    model = MTSTModel.from_backbone(path, tasks=tasks, pooling="mean", normalize="l2")
    with tempfile.TemporaryDirectory(prefix="mtst-bench-backends-train-") as out:
        targs = MultiTaskTrainingArguments(
            output_dir=out,
            per_device_train_batch_size=32,
            learning_rate=1e-4,
            warmup_steps=0.1,
            num_train_epochs=1,
            group_by_length=True,
            sampling_strategy="proportional",
            seed=args.seed,
            save_strategy="no",
            eval_strategy="no",
            logging_strategy="no",
            report_to="none",
            disable_tqdm=True,
            use_cpu=True,
        )
        trainer = MultiTaskTrainer(
            model=model,
            args=targs,
            train_dataset={name: splits["train"] for name, splits in data.items()},
            data_collator=MultiTaskCollator(tokenizer),
            processing_class=tokenizer,
        )
        trainer.train()
    return model.eval()


def score(model, tokenizer, data, specs, batch_size: int = 64) -> dict:
    """CoNLL test entity F1 and AG News held-out accuracy (in points) of any MTST backend (torch or ONNX)."""
    import numpy as np
    import torch

    from mtst.metrics import token_classification_metrics

    out = {}
    for spec in specs:
        split = data[spec.name]["test" if spec.name == "ner" else "validation"]
        rows = [split[i] for i in range(len(split))]
        order = sorted(range(len(rows)), key=lambda i: -len(rows[i]["input_ids"]))
        keep = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in rows[0]]
        preds = [None] * len(rows)
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                batch = tokenizer.pad([{k: rows[i][k] for k in keep} for i in idx], return_tensors="pt")
                logits = model(**batch, task=spec.name).logits.float()
                for j, i in enumerate(idx):
                    preds[i] = logits[j].argmax(-1).numpy()
        if spec.name == "ner":
            width = max(len(r["labels"]) for r in rows)
            labels = np.full((len(rows), width), -100)
            predictions = np.zeros((len(rows), width), dtype=np.int64)
            for i, r in enumerate(rows):
                labels[i, : len(r["labels"])] = r["labels"]
                predictions[i, : len(r["labels"])] = preds[i][: len(r["labels"])]
            out["conll_test_f1"] = 100 * token_classification_metrics(predictions, labels, spec.labels)["f1"]
            out["conll_test_sentences"] = len(rows)
        else:
            gold = np.array([r["labels"] for r in rows])
            out["ag_news_heldout_accuracy"] = 100 * float((np.array(preds) == gold).mean())
            out["ag_news_heldout_texts"] = len(rows)
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n_conll", type=int, default=1500, help="CoNLL-2003 test sentences to embed")
    parser.add_argument("--n_ag", type=int, default=1500, help="AG News texts to embed")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--chunk_size", type=int, default=250, help="texts per interleaved chunk")
    parser.add_argument("--repeats", type=int, default=1, help="rounds over all chunks (after one warm-up chunk)")
    parser.add_argument("--threads", type=int, default=None, help="torch and onnxruntime threads (default: torch's)")
    parser.add_argument("--model", default=None, help="a trained MTST folder (default: train one here)")
    parser.add_argument("--train_ner", type=int, default=4000, help="CoNLL-2003 train sentences for the training")
    parser.add_argument("--train_topic", type=int, default=3000, help="AG News 80%% split rows for the training")
    parser.add_argument("--eval_ner", type=int, default=0, help="CoNLL test sentences scored (0: all 3,453)")
    parser.add_argument("--eval_topic", type=int, default=0, help="AG News held-out texts scored (0: all 1,520)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--quick", action="store_true", help="small sizes; results to a temporary folder")
    args = parser.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
        if not os.environ.get("MTST_BENCH_RESULTS"):
            bc.RESULTS_DIR = os.path.join(tempfile.gettempdir(), "mtst-bench-quick-results")

    bc.require_data("conll_train", "conll_validation", "conll_test", "ag_news")
    threads = bc.set_threads(args.threads)
    bc.quiet_transformers()
    import logging

    import torch
    from transformers import AutoTokenizer

    from mtst.data.loading import load_task_data
    from mtst.data.tasks import load_task_specs
    from mtst.data.tokenization import tokenize_task
    from mtst.inference import export_onnx, load_model, prepare_model
    from mtst.remote.modeling_mtst import MTSTModel

    logging.getLogger().setLevel(logging.ERROR)  # onnxruntime's quantizer logs advice on the root logger
    path = bc.backbone_path()
    tmp = tempfile.TemporaryDirectory(prefix="mtst-bench-backends-")
    sentences = bc.real_sentences(args.n_conll, args.n_ag)
    st_models, skipped = load_sentence_transformers(path, tmp.name)
    max_length = st_models["st_float32"].max_seq_length
    tokenizer = AutoTokenizer.from_pretrained(path)

    # ---- the trained model and the task data it is scored on
    specs = load_task_specs(bc.task_config("joint"))
    limits = {"ner": (args.train_ner, args.eval_ner), "topic": (args.train_topic, args.eval_topic)}
    data = {}
    for spec in specs:
        spec.max_train_samples = limits[spec.name][0] or None
        raw = load_task_data(spec, seed=args.seed)
        n_eval = limits[spec.name][1]
        eval_split = "test" if spec.name == "ner" else "validation"
        if n_eval:
            raw[eval_split] = raw[eval_split].select(range(min(n_eval, len(raw[eval_split]))))
        data[spec.name] = tokenize_task(spec, raw, tokenizer, 128)
    t0 = time.perf_counter()
    if args.model:
        trained, train_note = MTSTModel.from_pretrained(args.model).eval(), f"the trained model {args.model}"
    else:
        trained = train_mtst(path, tokenizer, args, specs, data)
        n = {s.name: len(data[s.name]["train"]) for s in specs}
        train_note = (
            f"a joint model trained here: {n['ner']:,} CoNLL-2003 train sentences + {n['topic']:,} AG News 80%-split "
            "rows, 1 epoch, batch 32, lr 1e-4, group_by_length"
        )
    train_s = time.perf_counter() - t0
    print(f"model: {train_note} ({train_s:.0f} s)", flush=True)

    # ---- MTST in every precision / backend
    t0 = time.perf_counter()
    export = export_onnx(trained, tmp.name, tokenizer, quantize=True)
    export_s = time.perf_counter() - t0
    print(f"ONNX export + check: {export_s:.0f} s, largest difference {max(export['max_abs_diff'].values()):.1e}")
    state = {k: v.clone() for k, v in trained.state_dict().items()}

    def copy_of_trained():
        model = MTSTModel(trained.config)
        model.load_state_dict(state)
        return model.eval()

    mtst = {
        "mtst_float32": trained,
        "mtst_bfloat16": prepare_model(copy_of_trained(), "bfloat16"),
        "mtst_int8": prepare_model(copy_of_trained(), "int8"),
        "mtst_onnx": load_model(tmp.name, backend="onnx", threads=threads),
        "mtst_onnx_int8": load_model(tmp.name, backend="onnx", dtype="int8", threads=threads),
    }

    # ---- speed, interleaved per chunk (ST float32 first: the baseline)
    bs = args.batch_size
    candidates = {}
    for name, st in st_models.items():
        candidates[name] = lambda c, st=st: st.encode(c, batch_size=bs, convert_to_tensor=True)
    for name, model in mtst.items():
        candidates[name] = lambda c, m=model: m.encode(c, tokenizer, batch_size=bs, max_length=max_length)
    n_tokens = sum(len(ids) for ids in tokenizer(sentences, truncation=True, max_length=max_length)["input_ids"])
    chunks = bc.chunked(sentences, args.chunk_size)
    print(
        f"{len(sentences)} texts ({args.n_conll} CoNLL + {args.n_ag} AG News, {n_tokens:,} tokens), batch {bs}, "
        f"max_length {max_length}, threads {threads}; rows {', '.join(candidates)}; skipped: {skipped or 'none'}",
        flush=True,
    )
    with torch.inference_mode():
        timing = bc.paired(candidates, chunks, repeats=args.repeats, warmup=1)
        vectors = {name: fn(sentences).float().cpu() for name, fn in candidates.items()}

    # ---- quality of every MTST row
    quality = {}
    for name, model in mtst.items():
        t0 = time.perf_counter()
        quality[name] = score(model, tokenizer, data, specs)
        print(f"scored {name} in {time.perf_counter() - t0:.0f} s: {quality[name]}", flush=True)
    base_q = quality["mtst_float32"]

    results, rows = {}, []
    n_done = len(sentences) * args.repeats
    for name in candidates:
        ref = vectors["st_float32" if name.startswith("st_") else "mtst_float32"]
        cos = torch.nn.functional.cosine_similarity(vectors[name], ref, dim=-1)
        total = timing["total_s"][name]
        r = {
            "total_s": total,
            "sentences_per_s": n_done / total,
            "ratio_vs_st_float32": timing["ratio_median_of_pairs"].get(name, 1.0),
            "ratio_of_totals": timing["ratio_of_totals"].get(name, 1.0),
            "min_cosine": float(cos.min()),
            "mean_cosine": float(cos.mean()),
            "cosine_reference": "st_float32" if name.startswith("st_") else "mtst_float32",
            "chunk_times_s": timing["times_s"][name],
        }
        if name in quality:
            q = quality[name]
            r["conll_test_f1"] = q["conll_test_f1"]
            r["ag_news_heldout_accuracy"] = q["ag_news_heldout_accuracy"]
            r["conll_f1_change_points"] = q["conll_test_f1"] - base_q["conll_test_f1"]
            r["ag_news_accuracy_change_points"] = q["ag_news_heldout_accuracy"] - base_q["ag_news_heldout_accuracy"]
        results[name] = r
        rows.append(
            (
                name,
                f"{r['sentences_per_s']:.1f}",
                f"{math.floor(r['ratio_vs_st_float32'] * 100) / 100:.2f}x",
                f"{r['min_cosine']:.4f}",
                f"{r['mean_cosine']:.5f}",
                f"{r['conll_f1_change_points']:+.2f}" if name in quality else "-",
                f"{r['ag_news_accuracy_change_points']:+.2f}" if name in quality else "-",
            )
        )
    for name, reason in skipped.items():
        rows.append((f"{name} (skipped)", "-", "-", "-", "-", "-", "-"))

    ok = [
        n
        for n in MTST_ROWS
        if results[n]["min_cosine"] >= 0.99
        and abs(results[n]["conll_f1_change_points"]) <= 0.5
        and abs(results[n]["ag_news_accuracy_change_points"]) <= 0.5
    ]
    best = max(ok, key=lambda n: results[n]["ratio_vs_st_float32"]) if ok else None
    fastest_st = max((n for n in st_models), key=lambda n: results[n]["ratio_vs_st_float32"])
    best_ratio = results[best]["ratio_vs_st_float32"] if best else None
    targets = {
        "best_mtst_vs_st_float32": {
            "side": best,
            "value": best_ratio,
            "target": 1.6,
            "met": best_ratio is not None and best_ratio >= 1.6,
        },
        "best_mtst_vs_fastest_st": {
            "side": best,
            "baseline": fastest_st,
            "value": best_ratio / results[fastest_st]["ratio_vs_st_float32"] if best else None,
            "target": 1.0,
            "met": best is not None and best_ratio >= results[fastest_st]["ratio_vs_st_float32"],
        },
    }
    headers = [
        "row",
        "sentences/s",
        "vs ST float32 (rounded down)",
        "min cosine",
        "mean cosine",
        "CoNLL F1 change (points)",
        "AG News acc. change (points)",
    ]
    table = bc.markdown_table(headers, rows)
    print("\n" + table)
    print(
        f"\nfloat32 scores: CoNLL test F1 {base_q['conll_test_f1']:.2f}, AG News held-out accuracy "
        f"{base_q['ag_news_heldout_accuracy']:.2f}; best row within limits: {best} "
        f"({'-' if best_ratio is None else f'{best_ratio:.3f}'}x ST float32); targets: {targets}"
    )
    skipped_text = "".join(f"\n- `{n}` skipped: {reason}" for n, reason in skipped.items())
    markdown = (
        "# Benchmark 6: CPU inference backends, MTST vs sentence-transformers\n\n"
        f"{len(sentences)} real texts ({args.n_conll} CoNLL-2003 test + {args.n_ag} AG News, {n_tokens:,} tokens), "
        f"batch {bs}, max length {max_length}, {threads} threads (torch and onnxruntime), chunks of "
        f"{args.chunk_size} encoded by every row back to back, {args.repeats} round(s) after a warm-up chunk; ratio = "
        "median over chunks of time(ST float32) / time(row), rounded down. Cosines: against the float32 embeddings "
        "of the same model (MTST rows: MTST float32; ST rows: ST float32). Task scores: "
        f"{train_note}; CoNLL-2003 test entity F1 on {base_q['conll_test_sentences']:,} sentences, AG News "
        f"held-out accuracy on {base_q['ag_news_heldout_texts']:,} texts; float32 scores "
        f"{base_q['conll_test_f1']:.2f} F1 and {base_q['ag_news_heldout_accuracy']:.2f}% accuracy.\n\n{table}\n"
        f"{skipped_text}\n\nBest MTST row with min cosine >= 0.99 and both scores within 0.5 points of float32: "
        f"**{best or 'none'}**, "
        + (f"**{math.floor(best_ratio * 100) / 100:.2f}x** ST float32 " if best else "")
        + f"(target >= 1.6: {'met' if targets['best_mtst_vs_st_float32']['met'] else 'missed'}; fastest "
        f"sentence-transformers backend that ran here: `{fastest_st}`, "
        f"{'met' if targets['best_mtst_vs_fastest_st']['met'] else 'missed'})."
    )
    payload = {
        "settings": {**vars(args), "threads": threads, "max_length": max_length, "n_tokens": n_tokens},
        "model": train_note,
        "train_s": train_s,
        "export_s": export_s,
        "onnx_max_abs_diff": export["max_abs_diff"],
        "skipped": skipped,
        "quality": quality,
        "results": results,
        "targets": targets,
        "headline": {"name": f"CPU inference ({best} / ST float32)", "ratio": best_ratio, "target": 1.6},
    }
    bc.write_results("inference_backends", payload, markdown)
    tmp.cleanup()
    return payload


if __name__ == "__main__":
    main()
