"""`mtst-predict`: every task's answer for texts from the command line, stdin or a file.

    mtst-predict "Apple is opening a new office in Paris."              # table in a terminal
    mtst-predict --model outputs/mtst-default --input news.csv > out.jsonl
    cat texts.txt | mtst-predict --tasks topic,ner --format jsonl
    mtst-predict --model user/mtst-model --revision main --embeddings "Some text"

Texts come from arguments, from stdin (when it is not a terminal, or with `-`), or from `--input FILE` (`.txt`: one
text per line; `.jsonl`: one JSON object per line; `.csv`/`.tsv`: a header row; both read `--text_column`). The
output is one JSON object per text (`{"text": ..., "<task>": ..., ["embedding": [...]]}`, the default when stdout is
not a terminal, or `--format jsonl`) or a readable table with the entities marked in the text (`--format table`).

The model is a local folder written by `save_pretrained` / the training script, or a Hub id; it is loaded with the
installed MTST classes, so no code from the model repository runs. Errors about the model or the input are one
paragraph on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass

DEFAULT_MODEL = os.path.join("outputs", "mtst-default")
PROG = "mtst-predict"
ERRORS_EXIT_2 = "Errors about the model or the input exit with code 2."
INPUT_FORMATS = {".txt": "txt", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv"}
ENTITY_COLORS = {"PER": "36", "ORG": "35", "LOC": "32", "MISC": "33"}  # ANSI: cyan, magenta, green, yellow
OTHER_COLORS = ["34", "31", "96", "95", "92", "93"]


class PredictError(Exception):
    """A problem with the model or the input, reported as one paragraph on stderr with exit code 2."""


@dataclass
class Inputs:
    texts: list[str]
    source: str  # "arguments", "stdin" or the file name
    skipped: int = 0  # empty lines skipped (txt / stdin / blank jsonl lines)
    records: list[dict] | None = None  # .jsonl/.csv input: every row's fields, aligned with `texts` (mtst-label)


# ---------------------------------------------------------------------------------------------------- model loading
def _read_config(path: str, model: str) -> dict:
    from mtst.remote.configuration_mtst import read_config_dict

    try:
        config = read_config_dict(path)
    except (OSError, ValueError) as e:
        raise PredictError(f"'{model}' is not an MTST model: its config.json cannot be read ({e}).") from None
    if config.get("model_type") != "mtst":
        found = config.get("model_type")
        raise PredictError(
            f"'{model}' is not an MTST model: its config.json has model_type {found!r}, expected 'mtst'. "
            "Pass a folder written by the MTST training script (or MTSTModel.save_pretrained), or an MTST Hub id."
        )
    return config


def check_not_missing_path(model: str) -> None:
    """Fails with a clear message when `model`, which is not a folder, is a file or a local path that does not exist
    (anything else is left to be resolved as a Hub id). Used by mtst-predict and mtst-label."""
    from mtst.remote.configuration_mtst import is_local_path

    if os.path.exists(model):
        raise PredictError(f"'{model}' is a file, not a model folder. Pass the folder that holds config.json.")
    if is_local_path(model):
        raise PredictError(f"Model folder '{model}' does not exist.")


def check_model(model: str, revision: str | None) -> None:
    """Fails with a clear message unless `model` is a local MTST folder or an MTST repo on the Hub."""
    if os.path.isdir(model):
        config_path = os.path.join(model, "config.json")
        if not os.path.isfile(config_path):
            raise PredictError(
                f"'{model}' is not an MTST model: the folder has no config.json. Pass a folder written by the MTST "
                "training script (or MTSTModel.save_pretrained), or an MTST Hub id."
            )
        _read_config(config_path, model)
        return
    check_not_missing_path(model)
    from huggingface_hub import hf_hub_download

    from mtst.data.errors import HUB_ERRORS
    from mtst.remote.configuration_mtst import first_sentence

    try:
        config_path = hf_hub_download(model, "config.json", revision=revision)
    except HUB_ERRORS as e:  # offline mode, unknown repo or revision, invalid id, network: one message
        raise PredictError(
            f"Model '{model}' is neither a local folder nor a model that could be fetched from the Hub "
            f"({first_sentence(e)}). Check the path, or the Hub id and --revision."
        ) from None
    _read_config(config_path, model)


def load_pipeline(
    model: str | None = None,
    revision: str | None = None,
    device: str | None = None,
    dtype: str = "float32",
    backend: str = "torch",
):
    """The MTST multitask pipeline for a local folder or a Hub id (default: `outputs/mtst-default`), in `dtype`
    (float32, bfloat16, int8) on `backend` (torch, or onnx for a folder written by `mtst-export onnx`; see
    mtst.inference).

    Uses the installed `modeling_mtst` / `pipeline_mtst` classes (no `trust_remote_code`). Raises `PredictError`
    with a one-paragraph message when the model is missing or is not an MTST model.
    """
    if model is None:
        if not os.path.isdir(DEFAULT_MODEL):
            raise PredictError(
                f"No model given, and the default model folder '{DEFAULT_MODEL}' does not exist. Train one first "
                "(the default training run writes it there) or pass --model with a local folder or a Hub id."
            )
        model = DEFAULT_MODEL
    check_model(model, revision)

    import torch
    from transformers import AutoConfig, AutoTokenizer

    from mtst.inference import InferenceError, check_options, load_model
    from mtst.remote.configuration_mtst import MTSTConfig, MTSTConfigError, MTSTLoadError
    from mtst.remote.pipeline_mtst import MultiTaskPipeline

    # The installed classes answer for model_type "mtst": the tokenizer never asks to run the folder's code.
    AutoConfig.register("mtst", MTSTConfig, exist_ok=True)
    kwargs = {} if os.path.isdir(model) else {"revision": revision}
    if device is None:
        device = "cuda" if torch.cuda.is_available() and backend == "torch" and dtype != "int8" else "cpu"
    try:
        check_options(dtype, backend, device)
        mtst = load_model(model, dtype=dtype, backend=backend, device=device, **kwargs)
    except InferenceError as e:
        raise PredictError(str(e)) from None
    except MTSTLoadError as e:  # missing or truncated weights
        raise PredictError(f"Could not load the MTST model from '{model}': {e}") from None
    except MTSTConfigError as e:
        raise PredictError(f"'{model}' has an invalid MTST config: {e}") from None
    except (OSError, ValueError) as e:
        raise PredictError(f"Could not load the MTST model from '{model}': {e}") from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(model, trust_remote_code=False, **kwargs)
    except (OSError, ValueError, TypeError) as e:
        raise PredictError(
            f"'{model}' has no usable tokenizer ({e}). Save the tokenizer next to the model "
            "(tokenizer.save_pretrained)."
        ) from None
    return MultiTaskPipeline(model=mtst, tokenizer=tokenizer, device=device, task="multitask")


# ---------------------------------------------------------------------------------------------------------- inputs
def _decode(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise PredictError(
            f"{name} is not UTF-8 text (byte 0x{data[e.start]:02x} on line {line}). Convert it to UTF-8 first, "
            f"e.g. `iconv -f latin1 -t utf-8`."
        ) from None


def _lines(text: str, name: str) -> Inputs:
    texts, skipped = [], 0
    for line in text.splitlines():
        if line.strip():
            texts.append(line)
        else:
            skipped += 1
    return Inputs(texts, name, skipped)


def _jsonl(text: str, name: str, column: str) -> Inputs:
    texts, skipped, records = [], 0, []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            skipped += 1
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise PredictError(f"{name} line {number} is not valid JSON: {e.msg} (column {e.colno}).") from None
        if not isinstance(record, dict):
            raise PredictError(
                f"{name} line {number} is a JSON {type(record).__name__}, not an object with a '{column}' field."
            )
        if column not in record:
            fields = ", ".join(record) or "(none)"
            raise PredictError(
                f"{name} line {number} has no '{column}' field; its fields are: {fields}. "
                "Choose one with --text_column."
            )
        value = record[column]
        if not isinstance(value, str):
            raise PredictError(
                f"{name} line {number}: the '{column}' field is {json.dumps(value)} ({type(value).__name__}), "
                "not a string."
            )
        texts.append(value)
        records.append(record)
    return Inputs(texts, name, skipped, records)


def _csv(text: str, name: str, column: str, delimiter: str) -> Inputs:
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = reader.fieldnames
        if not header:
            raise PredictError(f"{name} is empty: expected a header row naming the columns.")
        if column not in header:
            raise PredictError(
                f"{name} has no column '{column}'; its columns are: {', '.join(header)}. "
                "Choose one with --text_column."
            )
        texts, records = [], []
        for row in reader:
            value = row[column]
            if value is None:
                raise PredictError(f"{name} line {reader.line_num}: the row has no value in column '{column}'.")
            texts.append(value)
            records.append({k: v for k, v in row.items() if k is not None})
    except csv.Error as e:
        raise PredictError(f"{name} line {reader.line_num} is not valid CSV: {e}.") from None
    return Inputs(texts, name, records=records)


def read_file(path: str, text_column: str = "text") -> Inputs:
    """Texts from a .txt (one per line; empty lines skipped), .jsonl/.ndjson or .csv/.tsv file."""
    kind = INPUT_FORMATS.get(os.path.splitext(path)[1].lower())
    if kind is None:
        raise PredictError(
            f"Cannot read '{path}': unknown file type. Supported: {', '.join(INPUT_FORMATS)} "
            "(.txt: one text per line; .jsonl: one JSON object per line; .csv/.tsv: a header row)."
        )
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise PredictError(f"Input file '{path}' does not exist.") from None
    except IsADirectoryError:
        raise PredictError(f"Input file '{path}' is a folder, not a file.") from None
    except OSError as e:
        raise PredictError(f"Cannot read input file '{path}': {e.strerror}.") from None
    text = _decode(data, path)
    if kind == "txt":
        return _lines(text, path)
    if kind == "jsonl":
        return _jsonl(text, path, text_column)
    return _csv(text, path, text_column, "\t" if kind == "tsv" else ",")


def read_stdin() -> Inputs:
    """One text per line from stdin (empty lines skipped), decoded as UTF-8."""
    stream = sys.stdin
    if stream is None:
        raise PredictError("No input: stdin is closed. Give texts as arguments or use --input FILE.")
    buffer = getattr(stream, "buffer", None)
    text = _decode(buffer.read(), "stdin") if buffer is not None else stream.read()
    return _lines(text, "stdin")


def _stdin_is_terminal() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (AttributeError, ValueError, OSError):
        return False


def collect_inputs(args: argparse.Namespace) -> Inputs:
    texts = list(args.texts)
    if args.input and texts:
        raise PredictError("Give texts either as arguments or with --input FILE, not both.")
    if args.input:
        inputs = read_file(args.input, args.text_column)
    elif texts == ["-"] or (not texts and not _stdin_is_terminal()):
        inputs = read_stdin()
    elif texts:
        inputs = Inputs(texts, "arguments")
    else:
        raise PredictError(
            "No texts given. Pass them as arguments, pipe them on stdin (one per line), or use --input FILE."
        )
    noun = "line" if inputs.skipped == 1 else "lines"
    if not inputs.texts:
        skipped = f" ({inputs.skipped} empty {noun} skipped)" if inputs.skipped else ""
        raise PredictError(f"No texts to predict: {inputs.source} holds no non-empty text{skipped}.")
    if inputs.skipped:
        print(f"{PROG}: skipped {inputs.skipped} empty {noun} in {inputs.source}.", file=sys.stderr)
    return inputs


# ---------------------------------------------------------------------------------------------------------- output
def _color(code: str, text: str, enabled: bool) -> str:
    return f"\033[{code}m{text}\033[0m" if enabled else text


def mark_entities(text: str, entities: list[dict], color: bool = False) -> str:
    """The text with each entity written as `[span](TYPE)`, colored by type when `color`."""
    pieces, position = [], 0
    others = iter(OTHER_COLORS * 8)
    colors = dict(ENTITY_COLORS)
    for entity in sorted(entities, key=lambda e: e["start"]):
        start, end, kind = entity["start"], entity["end"], entity["entity_group"]
        if start < position:  # overlapping spans cannot be marked inline; they stay in the JSON output
            continue
        code = colors.setdefault(kind, next(others, "34"))
        pieces.append(text[position:start])
        pieces.append(_color(f"1;{code}", f"[{text[start:end]}]", color) + _color(code, f"({kind})", color))
        position = end
    pieces.append(text[position:])
    return "".join(pieces)


def format_table(index: int, text: str, answer: dict, color: bool = False) -> str:
    """A readable block for one text: entities marked in the text, labels with scores (a multi-label task's labels,
    a regression task's score), the embedding's head."""
    names = [name for name in answer if name not in ("embedding", "similarity")]
    width = max([len(n) for n in names] + [len("similarity") if "similarity" in answer else 0])
    width = max(width, len("embedding") if "embedding" in answer else 0)
    lines = [_color("1", f"#{index}", color) + " " + (text if text else _color("2", "(empty text)", color))]
    for name in names:
        value = answer[name]
        label = name.ljust(width)
        if isinstance(value, list):
            marked = mark_entities(text, value, color) if value else _color("2", "(no entities)", color)
            lines.append(f"  {label}  {marked}")
            continue
        if "labels" in value:  # a multi-label task: the labels from their thresholds on
            chosen = [f"{_color('1', x['label'], color)} {x['score']:.3f}" for x in value["labels"]]
            lines.append(f"  {label}  {', '.join(chosen) or _color('2', '(no label)', color)}")
        elif "label" not in value:  # a regression task: its score
            lines.append(f"  {label}  {_color('1', format(value['score'], '.4g'), color)}")
        else:
            lines.append(f"  {label}  {_color('1', value['label'], color)}  {value['score']:.3f}")
        scores = value.get("scores")
        if scores:
            pad = max(len(k) for k in scores)
            for key, score in sorted(scores.items(), key=lambda kv: -kv[1]):
                bar = "█" * max(1, round(score * 20))
                lines.append(f"  {' ' * width}    {key.ljust(pad)}  {score:.3f} {_color('2', bar, color)}")
    if "similarity" in answer:
        lines.append(f"  {'similarity'.ljust(width)}  {answer['similarity']:.4f} (cosine to --similarity_to)")
    if "embedding" in answer:
        vector = answer["embedding"]
        head = ", ".join(f"{v:.4f}" for v in vector[:4])
        lines.append(f"  {'embedding'.ljust(width)}  {len(vector)} dims [{head}{', …' if len(vector) > 4 else ''}]")
    return "\n".join(lines) + "\n"


def _use_color(choice: str) -> bool:
    if choice != "auto":
        return choice == "always"
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


# ------------------------------------------------------------------------------------------------------------- CLI
class _VersionAction(argparse.Action):
    """`--version`: prints the MTST version (imported only when asked: configuration_mtst loads transformers)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from mtst import __version__

        print(f"{PROG} {__version__}")
        parser.exit()


def cli_parser(prog: str, description: str, examples: list[str]) -> argparse.ArgumentParser:
    """The parser of an MTST command (mtst-predict, mtst-label): its examples, then the exit-code convention."""
    return argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog="Examples:\n" + "".join(f"  {line}\n" for line in examples) + ERRORS_EXIT_2,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = cli_parser(
        PROG,
        "Run an MTST model on texts: every task's answer (labels with scores, entities), optionally the sentence "
        "embedding.",
        [
            f'{PROG} "Apple is opening a new office in Paris."',
            f"{PROG} --model outputs/mtst-default --input news.csv --text_column body > predictions.jsonl",
            f"cat texts.txt | {PROG} --tasks topic,ner --format table",
        ],
    )
    parser.add_argument(
        "texts", nargs="*", help="texts to run on; '-' (or none, with stdin not a terminal) reads stdin"
    )
    parser.add_argument(
        "--model",
        "-m",
        default=None,
        help=f"local model folder or Hub id (default: {DEFAULT_MODEL}, the default training run's output)",
    )
    parser.add_argument("--revision", default=None, help="Hub branch, tag or commit (Hub ids only)")
    parser.add_argument("--input", "-i", metavar="FILE", help="read texts from a .txt, .jsonl or .csv/.tsv file")
    parser.add_argument("--text_column", default="text", help="field/column holding the text in .jsonl/.csv input")
    parser.add_argument(
        "--format",
        choices=["auto", "jsonl", "table"],
        default="auto",
        help="output format (default: table when stdout is a terminal, else jsonl)",
    )
    parser.add_argument(
        "--tasks", action="append", default=None, help="comma-separated tasks to answer (default: all); repeatable"
    )
    parser.add_argument("--embeddings", action="store_true", help="include the sentence embedding of every text")
    parser.add_argument(
        "--similarity_to",
        metavar="TEXT",
        default=None,
        help="add `similarity`: the cosine between each text's sentence embedding and this text's",
    )
    parser.add_argument("--all_scores", action="store_true", help="include every label's score for sentence tasks")
    parser.add_argument("--batch_size", type=int, default=32, help="texts per forward pass (default: 32)")
    parser.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda:0 (default: cuda if available)")
    parser.add_argument(
        "--dtype",
        choices=["float32", "bfloat16", "int8"],
        default="float32",
        help="inference precision: bfloat16 weights, or int8 dynamically quantized linear layers (CPU) "
        "(default: float32)",
    )
    parser.add_argument(
        "--backend",
        choices=["torch", "onnx"],
        default="torch",
        help="torch, or onnx: ONNX Runtime on a folder written by `mtst-export onnx` (default: torch)",
    )
    parser.add_argument(
        "--color", choices=["auto", "always", "never"], default="auto", help="ANSI colors in the table (default: auto)"
    )
    parser.add_argument("--version", action=_VersionAction, help="print the MTST version and exit")
    parser.add_argument("--verbose", action="store_true", help="keep the transformers warnings and loading bars")
    return parser


def _selected_tasks(requested: list[str] | None, available: list[str]) -> list[str] | None:
    if not requested:
        return None
    tasks = [t.strip() for item in requested for t in item.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in available]
    if unknown or not tasks:
        raise PredictError(
            f"Unknown task(s) {', '.join(unknown) or '(none given)'} in --tasks; this model's tasks: "
            f"{', '.join(available)}."
        )
    return list(dict.fromkeys(tasks))


def _with_similarity(answers: Iterator[dict], pipe, reference: str, keep_embedding: bool) -> Iterator[dict]:
    """Each answer with `similarity`, the cosine of its embedding and `reference`'s (the embedding kept only when
    asked for)."""
    import numpy as np

    if not reference.strip():
        raise PredictError("--similarity_to needs a non-empty text.")
    target = np.asarray(pipe(reference, tasks=[], return_embedding=True)["embedding"], dtype=np.float64)
    target /= max(np.linalg.norm(target), 1e-12)
    for answer in answers:
        vector = np.asarray(answer["embedding"] if keep_embedding else answer.pop("embedding"), dtype=np.float64)
        answer["similarity"] = round(float(vector @ target / max(np.linalg.norm(vector), 1e-12)), 6)
        yield answer


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def run(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise PredictError(f"--batch_size must be at least 1; got {args.batch_size}.")
    inputs = collect_inputs(args)
    if not args.verbose:
        _quiet_transformers()
    if args.revision and args.model and os.path.isdir(args.model):
        print(f"{PROG}: --revision is ignored for the local folder '{args.model}'.", file=sys.stderr)
    pipe = load_pipeline(
        args.model, revision=args.revision, device=args.device, dtype=args.dtype, backend=args.backend
    )
    tasks = _selected_tasks(args.tasks, pipe.model.config.task_names)
    fmt = args.format if args.format != "auto" else ("table" if sys.stdout.isatty() else "jsonl")
    color = fmt == "table" and _use_color(args.color)

    from tqdm.auto import tqdm

    answers: Iterator[dict] = pipe(
        (text for text in inputs.texts),
        batch_size=args.batch_size,
        tasks=tasks,
        return_embedding=args.embeddings or args.similarity_to is not None,
        return_all_scores=args.all_scores,
    )
    if args.similarity_to is not None:
        answers = _with_similarity(answers, pipe, args.similarity_to, keep_embedding=args.embeddings)
    progress = tqdm(
        total=len(inputs.texts),
        desc="Predicting",
        unit="text",
        file=sys.stderr,
        disable=True if inputs.source == "arguments" else None,  # None: only when stderr is a terminal
    )
    with progress:
        for index, (text, answer) in enumerate(zip(inputs.texts, answers), start=1):
            if fmt == "jsonl":
                line = json.dumps({"text": text, **answer}, ensure_ascii=False) + "\n"
            else:
                line = format_table(index, text, answer, color)
            if progress.disable:
                sys.stdout.write(line)
            else:
                with progress.external_write_mode(file=sys.stderr):
                    sys.stdout.write(line)
            sys.stdout.flush()
            progress.update(1)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of `mtst-predict`; returns the exit code (0, or 2 for errors about the model or the input)."""
    args = build_parser().parse_args(argv)
    return run_command(PROG, lambda: run(args))


def run_command(prog: str, command) -> int:
    """Runs an MTST command (`command()`, which may return an exit code) the way mtst-predict and mtst-label end: 2 and
    one line on stderr for a `PredictError`, 130 when interrupted, 1 quietly when stdout is closed early, else 0."""
    try:
        code = command()
        return 0 if code is None else code
    except PredictError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted.", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `mtst-predict ... | head`: stop quietly
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError, io.UnsupportedOperation):
            pass
        return 1


if __name__ == "__main__":
    sys.exit(main())
