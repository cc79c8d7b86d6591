"""`mtst-label`: silver labels for your own texts, written in exactly the format a task config reads.

    mtst-label --model outputs/mtst-default --task ner --input texts.csv --output silver.jsonl --min_score 0.8
    mtst-label --model dslim/bert-base-NER --input news.jsonl --output silver_ner.jsonl
    mtst-label --model outputs/mtst-default --task topic --input texts.txt --output silver_topic.jsonl

The model is an MTST model (a local folder or a Hub id; `--task` picks the head) or any transformers
token-classification / text-classification model; both run through the standard transformers pipelines (an MTST task
through its per-task view, with the installed MTST classes, so no code from the model repository runs).

Every kept text becomes one JSON line. A token task writes `tokens` (the text's words: runs of letters and digits, with
inner `.,'’-` kept, e.g. `12,000` or `O'Neill`; every other non-space character is a word of its own), `ner_tags` (one
IOB2 tag per word: the label of the word's first sub-token, converted to IOB2 when the model uses IOB1, IOBES or plain
tags) and `ner_score`; a sentence task writes `label` and `score`; an MTST multi-label task writes `label`, the list of
labels from their thresholds on, and `score`; an MTST regression task writes `label`, the predicted number. `text`
holds the text, and the other fields of a .csv/.jsonl input row are kept, so the same file can feed several tasks (e.g.
the input's topic `label` and the silver `tokens`/`ner_tags`) — see data/tasks/silver_topic_ner.yaml.

Confidence: for a sentence task, the probability of the chosen label; for a multi-label task, the least sure of its
yes/no decisions (each label's probability, or one minus it); for a token task, the smallest probability among the
text's words of the tag chosen for that word (`O` words included): a text is only as sure as its least sure word (a
regression task has no confidence: `--min_score` is refused). Texts under `--min_score` are dropped and counted, as are
texts longer than the model takes (their last words would get no tag) and texts with no word. An existing --output is
replaced only with --overwrite, and never when it is the --input file. Input is read like `mtst-predict --input` (.txt,
.jsonl, .csv/.tsv); problems with the input or the model are one paragraph on stderr and exit code 2."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import dataclass, field
from functools import partial

from mtst.cli.predict import PredictError, check_not_missing_path, cli_parser, read_file, run_command

PROG = "mtst-label"
WORD = re.compile(r"\w+(?:[.,'’-]\w+)*|[^\w\s]")
TOKEN_KIND, SEQUENCE_KIND, MULTI_LABEL_KIND, REGRESSION_KIND = "token", "sequence", "multi_label", "regression"
PIPELINE_TASKS = {TOKEN_KIND: "token-classification"}  # every other kind: text-classification
CHUNK = 256  # texts per pipeline call (the progress bar moves per chunk)


def split_words(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    """The text's words and their character spans (see the module docstring for what a word is)."""
    matches = list(WORD.finditer(text))
    return [m.group() for m in matches], [m.span() for m in matches]


def to_iob2(labels: list[str]) -> list[str]:
    """Word labels in IOB2: `B-X` starts an entity; `I-X` continues one of type X (else it becomes `B-X`); IOBES
    `E-`/`S-` map to `I-`/`B-`; plain tags `X` (IO) become `B-X`/`I-X`."""
    tags, previous = [], None
    for label in labels:
        if label in ("O", "") or label is None:
            tags.append("O")
            previous = None
            continue
        prefix, sep, kind = label.partition("-")
        if not sep or prefix not in ("B", "I", "E", "S"):
            prefix, kind = "I", label
        begins = prefix in ("B", "S") or previous != kind
        tags.append(("B-" if begins else "I-") + kind)
        previous = None if prefix in ("E", "S") else kind
    return tags


@dataclass
class Counts:
    read: int = 0
    written: int = 0
    low_score: int = 0
    too_long: int = 0
    empty: int = 0
    labels: dict[str, int] = field(default_factory=dict)

    def summary(self, output: str, min_score: float) -> str:
        dropped = [
            f"{n} under --min_score {min_score}" if what == "low_score" else f"{n} {what.replace('_', ' ')}"
            for what, n in (("low_score", self.low_score), ("too_long", self.too_long), ("empty", self.empty))
            if n
        ]
        shown = ", ".join(f"{k}: {v}" for k, v in sorted(self.labels.items(), key=lambda kv: -kv[1])[:12])
        return (
            f"{PROG}: wrote {self.written} of {self.read} texts to {output}"
            + (f"; dropped {', '.join(dropped)}" if dropped else "")
            + (f" ({shown})" if shown else "")
            + "."
        )


# ---------------------------------------------------------------------------------------------------- the model
def _kind_of_architectures(architectures) -> str | None:
    for name in architectures or []:
        if name.endswith("ForTokenClassification"):
            return TOKEN_KIND
        if name.endswith("ForSequenceClassification"):
            return SEQUENCE_KIND
    return None


def load_labeler(model: str, task: str | None = None, revision: str | None = None, device=None, kind=None):
    """(standard transformers pipeline, kind, task name) for an MTST task or a token/text classification model."""
    import torch
    from transformers import AutoConfig, AutoTokenizer, pipeline

    from mtst.remote.configuration_mtst import (
        MULTI_LABEL_CLASSIFICATION,
        REGRESSION,
        TOKEN_CLASSIFICATION,
        MTSTConfig,
        first_sentence,
    )
    from mtst.training.grow import saved_mtst_config

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    local = os.path.isdir(model)
    if not local:
        check_not_missing_path(model)
    kwargs = {} if local else {"revision": revision}
    mtst = saved_mtst_config(model, revision=revision)
    if mtst is not None:
        from mtst.remote.modeling_mtst import MTSTForSequenceClassification, MTSTForTokenClassification

        if task is None or task not in mtst.task_names:
            described = ", ".join(f"{n} ({mtst.task_type(n).split('_')[0]})" for n in mtst.task_names)
            what = f"has no task '{task}'" if task else "has several tasks"
            raise PredictError(
                f"The MTST model '{model}' {what}: pick one with --task; its tasks are {described}."
                if task or len(mtst.task_names) != 1
                else f"The MTST model '{model}' needs --task {mtst.task_names[0]}."
            )
        kinds = {
            TOKEN_CLASSIFICATION: TOKEN_KIND,
            MULTI_LABEL_CLASSIFICATION: MULTI_LABEL_KIND,
            REGRESSION: REGRESSION_KIND,
        }
        kind = kinds.get(mtst.task_type(task), SEQUENCE_KIND)
        view = MTSTForTokenClassification if kind == TOKEN_KIND else MTSTForSequenceClassification
        AutoConfig.register("mtst", MTSTConfig, exist_ok=True)
        try:
            loaded = view.from_pretrained(model, task=task, **kwargs).eval()
            tokenizer = AutoTokenizer.from_pretrained(model, **kwargs)
        except (OSError, ValueError, TypeError) as err:
            raise PredictError(f"Could not load the MTST model '{model}': {first_sentence(err)}") from None
    else:
        if task is not None:
            print(f"{PROG}: --task {task} is ignored: '{model}' is not an MTST model.", file=sys.stderr)
        try:
            config = AutoConfig.from_pretrained(model, **kwargs)
        except (OSError, ValueError, KeyError) as err:
            raise PredictError(
                f"Model '{model}' could not be loaded ({first_sentence(err)}). Pass an MTST model folder or Hub id, "
                "or a transformers token-classification / text-classification model."
            ) from None
        kind = kind or _kind_of_architectures(getattr(config, "architectures", None))
        if kind is None:
            raise PredictError(
                f"Model '{model}' is neither an MTST model nor a token or sequence classifier (its architectures: "
                f"{', '.join(getattr(config, 'architectures', None) or ['none'])}). Pass --kind token or --kind "
                "sequence if it is one."
            )
        loaded, tokenizer = model, None
        task = task or kind
    try:
        name = PIPELINE_TASKS.get(kind, "text-classification")
        pipe = pipeline(name, model=loaded, tokenizer=tokenizer, device=device, **kwargs)
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise PredictError(f"Could not build a {name} pipeline for '{model}': {first_sentence(err)}") from None
    if kind == TOKEN_KIND and not getattr(pipe.tokenizer, "is_fast", False):
        raise PredictError(f"'{model}' has a slow tokenizer: word-level tags need a fast tokenizer (tokenizer.json).")
    return pipe, kind, task


# ---------------------------------------------------------------------------------------------------- labelling
def _token_rows(pipe, texts: list[str], batch_size: int) -> list[dict | str]:
    """Per text: `{"tokens", "ner_tags", "ner_score"}`, or the reason it is dropped (`"empty"`, `"too_long"`)."""
    split = [split_words(text)[0] for text in texts]
    todo = [i for i, words in enumerate(split) if words]
    results: list[dict | str] = ["empty"] * len(texts)
    if not todo:
        return results
    answers = pipe(
        [split[i] for i in todo],
        is_split_into_words=True,
        aggregation_strategy="none",
        ignore_labels=[],
        batch_size=batch_size,
    )
    if todo and len(todo) == 1 and answers and isinstance(answers[0], dict):
        answers = [answers]
    for i, tokens in zip(todo, answers):
        words = split[i]
        starts, position = {}, 0
        for index, word in enumerate(words):  # the pipeline joins the words with one space
            starts[position] = index
            position += len(word) + 1
        chosen: dict[int, tuple[str, float]] = {}
        for token in tokens:
            index = starts.get(token.get("start"))
            if index is not None and index not in chosen:
                chosen[index] = (token["entity"], float(token["score"]))
        if len(chosen) < len(words):
            results[i] = "too_long"
            continue
        labels = [chosen[k][0] for k in range(len(words))]
        results[i] = {
            "tokens": words,
            "ner_tags": to_iob2(labels),
            "ner_score": round(min(chosen[k][1] for k in range(len(words))), 6),
        }
    return results


def _sequence_rows(pipe, texts: list[str], batch_size: int, kind: str = SEQUENCE_KIND) -> list[dict | str]:
    """Per text: `{"label", "score"}` (a multi-label task: the labels from their thresholds on, and the least sure
    decision; a regression task: the number, no score), or `"empty"`."""
    results: list[dict | str] = ["empty"] * len(texts)
    todo = [i for i, text in enumerate(texts) if text.strip()]
    if not todo:
        return results
    options = {"top_k": None} if kind == MULTI_LABEL_KIND else {}
    answers = pipe([texts[i] for i in todo], batch_size=batch_size, truncation=True, **options)
    for i, answer in zip(todo, answers):
        if kind == MULTI_LABEL_KIND:
            task = pipe.model.config.tasks[pipe.model.task]
            labels, thresholds = task["labels"], task["thresholds"]
            probs = {a["label"]: float(a["score"]) for a in answer}
            chosen = [name for name, t in zip(labels, thresholds) if probs[name] >= t]
            sure = min(max(p, 1 - p) for p in probs.values())
            results[i] = {"label": chosen, "score": round(sure, 6)}
            continue
        answer = answer[0] if isinstance(answer, list) else answer
        score = round(float(answer["score"]), 6)
        results[i] = {"label": score} if kind == REGRESSION_KIND else {"label": answer["label"], "score": score}
    return results


def label_texts(pipe, kind: str, texts, records=None, min_score: float = 0.0, batch_size: int = 32, progress=None):
    """Yield `(output row or None, reason)` per text, in input order: the row to write (the input record's other
    fields, `text`, and the silver fields), or None with the reason it is dropped (`low_score`, `too_long`,
    `empty`)."""
    run = _token_rows if kind == TOKEN_KIND else partial(_sequence_rows, kind=kind)
    score_key = "ner_score" if kind == TOKEN_KIND else "score"
    for start in range(0, len(texts), CHUNK):
        chunk = texts[start : start + CHUNK]
        for offset, result in enumerate(run(pipe, chunk, batch_size)):
            if isinstance(result, str):
                yield None, result
            elif result.get(score_key, 1.0) < min_score:  # regression rows have no score
                yield None, "low_score"
            else:
                record = records[start + offset] if records is not None else {}
                yield {**record, "text": chunk[offset], **result}, None
        if progress is not None:
            progress.update(len(chunk))


# ---------------------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    parser = cli_parser(
        PROG,
        "Label texts with an MTST task or a transformers token/text classifier and write them in the format a task "
        "config reads (tokens/ner_tags, or text/label), dropping texts under --min_score.",
        [
            f"{PROG} --model outputs/mtst-default --task ner --input texts.csv --output silver.jsonl --min_score 0.8",
            f"{PROG} --model some/bert-ner --input news.jsonl --text_column body --output silver.jsonl",
        ],
    )
    parser.add_argument("--model", "-m", required=True, help="MTST folder or Hub id, or a transformers classifier")
    parser.add_argument("--task", default=None, help="the MTST task to label with (e.g. ner, topic)")
    parser.add_argument("--input", "-i", required=True, metavar="FILE", help="texts: .txt, .jsonl or .csv/.tsv")
    parser.add_argument("--text_column", default="text", help="field/column holding the text in .jsonl/.csv input")
    parser.add_argument("--output", "-o", required=True, metavar="FILE", help="the JSON lines file to write")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace --output when it exists (never allowed for --input itself)"
    )
    parser.add_argument(
        "--min_score", type=float, default=0.0, help="drop texts whose confidence is under this (default: 0, keep all)"
    )
    parser.add_argument("--kind", choices=[TOKEN_KIND, SEQUENCE_KIND], default=None, help="non-MTST models only")
    parser.add_argument("--revision", default=None, help="Hub branch, tag or commit (Hub ids only)")
    parser.add_argument("--batch_size", type=int, default=32, help="texts per forward pass (default: 32)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--verbose", action="store_true", help="keep the transformers warnings and loading bars")
    return parser


def check_output_is_not_input(input_path: str, output: str, overwrite: bool) -> None:
    """Refuses an --output that is the --input file (the same file once links are resolved: labelling would
    replace the texts it reads) and an existing --output unless --overwrite is given."""
    if not os.path.exists(output):
        return
    same = os.path.realpath(output) == os.path.realpath(input_path)
    if not same and os.path.exists(input_path):
        same = os.path.samefile(output, input_path)
    if same:
        raise PredictError(
            f"--output '{output}' is the --input file: labelling would replace the texts it reads. Write the "
            "silver labels to another file."
        )
    if not overwrite:
        raise PredictError(
            f"--output '{output}' already exists; pass --overwrite to replace it, or name another file."
        )


def run(args: argparse.Namespace) -> Counts:
    if not 0.0 <= args.min_score <= 1.0:
        raise PredictError(f"--min_score must be between 0 and 1 (a probability); got {args.min_score}.")
    if args.batch_size < 1:
        raise PredictError(f"--batch_size must be at least 1; got {args.batch_size}.")
    folder = os.path.dirname(os.path.abspath(args.output))
    if not os.path.isdir(folder):
        raise PredictError(f"Cannot write '{args.output}': the folder {folder} does not exist.")
    if os.path.isdir(args.output):
        raise PredictError(f"Cannot write '{args.output}': it is a folder; name a .jsonl file.")
    check_output_is_not_input(args.input, args.output, args.overwrite)
    inputs = read_file(args.input, args.text_column)
    if not inputs.texts:
        raise PredictError(f"No texts to label: {args.input} holds no text.")
    if not args.verbose:
        from transformers.utils import logging as hf_logging

        # CRITICAL: the pipelines also log "The model 'MTSTFor...' is not supported" for the per-task views
        hf_logging.set_verbosity(hf_logging.CRITICAL)
        hf_logging.disable_progress_bar()
    pipe, kind, task = load_labeler(args.model, args.task, args.revision, args.device, args.kind)
    if kind == REGRESSION_KIND and args.min_score > 0:
        raise PredictError(f"--min_score applies to classification tasks; the regression task '{task}' has no score.")

    from tqdm.auto import tqdm

    counts = Counts(read=len(inputs.texts))
    records = inputs.records
    partial = args.output + ".partial"
    progress = tqdm(total=len(inputs.texts), desc="Labelling", unit="text", file=sys.stderr, disable=None)
    try:
        with progress, open(partial, "w", encoding="utf-8") as out:
            rows = label_texts(pipe, kind, inputs.texts, records, args.min_score, args.batch_size, progress)
            for row, reason in rows:
                if row is None:
                    setattr(counts, reason, getattr(counts, reason) + 1)
                    continue
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
                counts.written += 1
                for label in row["ner_tags"] if kind == TOKEN_KIND else _counted_labels(row["label"]):
                    if label != "O":
                        key = label[2:] if kind == TOKEN_KIND else label
                        if kind == TOKEN_KIND and not label.startswith("B-"):
                            continue
                        counts.labels[key] = counts.labels.get(key, 0) + 1
        print(counts.summary(args.output, args.min_score), file=sys.stderr)
        if counts.written == 0:
            raise PredictError(
                f"No text was kept: all {counts.read} texts of {args.input} were dropped (see above), so "
                f"{args.output} was not written; lower --min_score."
            )
        os.replace(partial, args.output)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return counts


def _counted_labels(label) -> list[str]:
    """The labels a written row counts for the summary: one, a multi-label row's list, none for a number."""
    return label if isinstance(label, list) else [] if isinstance(label, float) else [label]


def main(argv: list[str] | None = None) -> int:
    """Entry point of `mtst-label`: 0 on success, 2 for errors about the model, the input or the options."""
    args = build_parser().parse_args(argv)

    def label() -> None:
        run(args)

    return run_command(PROG, label)


if __name__ == "__main__":
    sys.exit(main())
