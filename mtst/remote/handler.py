"""Custom handler for Hugging Face Inference Endpoints: every task of an MTST model from one request.

Inference Endpoints load `handler.py` from the model repo and call `EndpointHandler(path)(data)` for each request.
The handler runs the repo's multitask pipeline (`pipeline_mtst.MultiTaskPipeline`, found through the checkpoint's
`custom_pipelines`) with `transformers.pipeline(model=path, trust_remote_code=True)`.

Request::

    {"inputs": "a text" | ["text", ...],
     "parameters": {"tasks": ["topic", "ner"], "return_embedding": false, "return_all_scores": false,
                    "max_length": 128, "stride": 32, "batch_size": 8}}

Answer: for one text, `{task: answer, ...}` (plus `"embedding"` when asked); for a list, a list of those. Sentence
tasks answer `{"label", "score"}` (and `"scores"` with `return_all_scores`), multi-label tasks `{"labels": [{"label",
"score"}, ...]}` (the labels from their thresholds on), regression tasks `{"score"}`, token tasks a list of entity
spans `{"entity_group", "score", "word", "start", "end"}` with character offsets. A bad request raises `ValueError`
with a message saying what is wrong and what is allowed; Inference Endpoints return it as `{"error": message}` with
status 400.

Limits. Every request is checked against the server's limits before anything is computed; a request over one is
answered with a `ValueError` naming the limit, its environment variable and the value (status 400). The limits are
set by the server, never by a request, through environment variables (on an endpoint: its "Environment variables"):

    MTST_MAX_INPUTS        texts per request                                   (default 128)
    MTST_MAX_CHARS         characters per text                                 (default 20,000)
    MTST_MAX_TOTAL_CHARS   characters per request, all texts together          (default 100,000)
    MTST_BATCH_SIZE        windows per forward pass when a request sets none   (default 32)
    MTST_MAX_BATCH_SIZE    the largest "batch_size" a request may ask for      (default 64)
    MTST_FORWARD_CONCURRENCY  forward passes computed at once, all requests together (default 1)

A bad value (not a positive integer, or `MTST_BATCH_SIZE` above `MTST_MAX_BATCH_SIZE`) is an error when the handler
starts. The defaults bound one request to 100,000 characters (roughly 25,000 tokens): about 5 s of work on 2 CPU
cores, at the pace of issue 17's measurement there (one 800,000-character text took 36 s). A request's `stride` may be
at most half the window's text tokens, so that overlapping windows never encode a text more than about twice.

Batching. The texts of one request run in one pipeline call, in batches of `batch_size` windows, sorted by token
count (longest first, as `MTSTModel.encode()` does) so that each batch carries little padding; the answers come back
in the request's order. Concurrent requests (a server calls the handler from several threads) take turns batch by
batch: `MTST_FORWARD_CONCURRENCY` forward passes run at once (default 1, which uses every core for one batch instead
of splitting the cores between competing batches, and holds one batch's activations in memory instead of one per
request), while tokenization and answer building of the others go on. Requests interleave batch by batch, so a short
request does not wait for the whole of a long one, and an over-limit request is answered at once.

`ServingLimits` (the limits, read from the environment, and the check) is shared with the Gradio demo `app.py`.

This file travels to the Hub with the weights: it imports only torch and transformers.
"""

from __future__ import annotations

import copy
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

PARAMETERS = {
    "tasks": "a task name or a list of task names",
    "return_embedding": "true or false",
    "return_all_scores": "true or false",
    "max_length": "a positive integer (window size in tokens)",
    "stride": "an integer >= 0 (overlap between windows in tokens), at most half the window's text tokens",
    "batch_size": "a positive integer (windows per forward pass), at most the server's MTST_MAX_BATCH_SIZE",
}

# The server-side limits: field of `ServingLimits` -> (environment variable, default, what it counts).
LIMIT_SETTINGS = {
    "max_inputs": ("MTST_MAX_INPUTS", 128, "texts per request"),
    "max_chars": ("MTST_MAX_CHARS", 20_000, "characters per text"),
    "max_total_chars": ("MTST_MAX_TOTAL_CHARS", 100_000, "characters per request"),
    "batch_size": ("MTST_BATCH_SIZE", 32, "windows per forward pass (when a request sets no batch_size)"),
    "max_batch_size": ("MTST_MAX_BATCH_SIZE", 64, "windows per forward pass that a request may ask for"),
    "forward_concurrency": ("MTST_FORWARD_CONCURRENCY", 1, "forward passes computed at once, over all requests"),
}


class LimitError(ValueError):
    """A request over one of the server's limits (Inference Endpoints answer it with status 400)."""


@dataclass(frozen=True)
class ServingLimits:
    """
    What one request may ask of a server (the endpoints handler, the Gradio demo). `mtst-predict` has no such limits.

    Args:
        max_inputs (`int`): texts per request (`MTST_MAX_INPUTS`).
        max_chars (`int`): characters per text (`MTST_MAX_CHARS`).
        max_total_chars (`int`): characters per request, all texts together (`MTST_MAX_TOTAL_CHARS`).
        batch_size (`int`): windows per forward pass when a request sets none (`MTST_BATCH_SIZE`).
        max_batch_size (`int`): the largest `batch_size` a request may ask for (`MTST_MAX_BATCH_SIZE`).
        forward_concurrency (`int`): forward passes computed at once over all concurrent requests
            (`MTST_FORWARD_CONCURRENCY`); the others wait for a slot between batches, so requests take turns batch
            by batch.
    """

    max_inputs: int = LIMIT_SETTINGS["max_inputs"][1]
    max_chars: int = LIMIT_SETTINGS["max_chars"][1]
    max_total_chars: int = LIMIT_SETTINGS["max_total_chars"][1]
    batch_size: int = LIMIT_SETTINGS["batch_size"][1]
    max_batch_size: int = LIMIT_SETTINGS["max_batch_size"][1]
    forward_concurrency: int = LIMIT_SETTINGS["forward_concurrency"][1]

    def __post_init__(self):
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                env, _, what = LIMIT_SETTINGS[field.name]
                raise ValueError(f"{field.name} ({what}; {env}) must be a positive integer; got {value!r}.")
        if self.batch_size > self.max_batch_size:
            raise ValueError(
                f"batch_size ({LIMIT_SETTINGS['batch_size'][0]}) is {self.batch_size}, above max_batch_size "
                f"({LIMIT_SETTINGS['max_batch_size'][0]}) {self.max_batch_size}; lower one or raise the other."
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: int | None) -> ServingLimits:
        """The limits from the environment variables (defaults where unset); `overrides` that are not None win.

        A variable that is set but not a positive integer raises `ValueError` naming it and its value."""
        environ = os.environ if environ is None else environ
        values = {}
        for name, (env, _, what) in LIMIT_SETTINGS.items():
            raw = environ.get(env)
            if raw is None or not raw.strip():
                continue
            text = raw.strip().replace("_", "")
            if not text.isdigit() or int(text) < 1:
                raise ValueError(
                    f"The environment variable {env} ({what}) must be a positive integer such as "
                    f"{LIMIT_SETTINGS[name][1]}; got {raw!r}. Fix or unset it."
                )
            values[name] = int(text)
        values.update({name: value for name, value in overrides.items() if value is not None})
        unknown = sorted(set(values) - set(LIMIT_SETTINGS))
        if unknown:
            raise TypeError(f"Unknown limit(s) {unknown}; the limits are {', '.join(LIMIT_SETTINGS)}.")
        return cls(**values)

    def _error(self, name: str, subject: str, advice: str) -> LimitError:
        env, _, what = LIMIT_SETTINGS[name]
        return LimitError(
            f"{subject}, over the limit of {getattr(self, name):,} {what} ({name}, set on the server with {env}). "
            f"{advice}"
        )

    def check(self, texts: list[str]) -> None:
        """Raises `LimitError` (a `ValueError`) when `texts`, one request, is over a limit, and `ValueError` when a
        text is not a string of valid Unicode (a lone surrogate such as "\\ud800" cannot be encoded, so the
        tokenizer would fail with a TypeError); computes nothing."""
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                which = "The text" if len(texts) == 1 else f"Text {index} (counting from 0)"
                raise ValueError(f"{which} is {type(text).__name__}, not a string.")
        if len(texts) > self.max_inputs:
            raise self._error(
                "max_inputs", f"The request has {len(texts):,} texts", "Send the texts in several requests."
            )
        longest = max(range(len(texts)), key=lambda i: len(texts[i]), default=None)
        if longest is not None and len(texts[longest]) > self.max_chars:
            which = "The text" if len(texts) == 1 else f"Text {longest} (counting from 0)"
            raise self._error(
                "max_chars", f"{which} has {len(texts[longest]):,} characters", "Shorten the text or split it."
            )
        total = sum(len(text) for text in texts)
        if total > self.max_total_chars:
            raise self._error(
                "max_total_chars",
                f"The request has {total:,} characters in all",
                "Send the texts in several requests.",
            )
        for index, text in enumerate(texts):  # bounded by the limits above
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as err:
                which = "The text" if len(texts) == 1 else f"Text {index} (counting from 0)"
                raise ValueError(
                    f"{which} is not valid Unicode: character {err.start} is the lone surrogate "
                    f"{text[err.start]!r} (half of a UTF-16 pair, e.g. from an unpaired \\u escape). Send UTF-8 text."
                ) from None

    def describe(self) -> str:
        return ", ".join(f"{name} {getattr(self, name):,}" for name in LIMIT_SETTINGS)


class EndpointHandler:
    """Loads the model in `path` (the repo folder on an endpoint) once; each call answers one request.

    Args:
        path (`str`): folder (or Hub id) of the MTST checkpoint; `""` means the current folder.
        device (`int` or `str`, *optional*): where to run; defaults to the first GPU when there is one, else CPU.
        limits (`ServingLimits`, *optional*): what one request may ask; defaults to `ServingLimits.from_env()` (the
            `MTST_*` environment variables, read once here: a bad value fails the start-up).
        precision (`str`, *optional*): `float32`, `bfloat16` or `int8` (int8 needs the mtst package installed beside
            file); default: the `MTST_DTYPE` environment variable (an endpoint setting), else float32.
        pipeline_kwargs: passed to `transformers.pipeline` (`revision`, ...).
    """

    def __init__(
        self,
        path: str = "",
        device=None,
        limits: ServingLimits | None = None,
        precision: str | None = None,
        **pipeline_kwargs,
    ):
        self.limits = limits if limits is not None else ServingLimits.from_env()  # before the (slow) model load
        import torch
        from transformers import pipeline

        precision = precision or os.environ.get("MTST_DTYPE") or "float32"
        if precision not in ("float32", "bfloat16", "int8"):
            raise ValueError(f"MTST_DTYPE must be float32, bfloat16 or int8; got {precision!r}.")

        if device is None and torch.cuda.is_available():
            device = 0
        if device is not None:
            pipeline_kwargs["device"] = device
        self.pipeline = pipeline(model=path or ".", trust_remote_code=True, **pipeline_kwargs)
        if precision != "float32":
            try:  # the inference options live in the mtst package (mtst.inference), when it is installed
                from mtst.inference import prepare_model
            except ImportError:
                prepare_model = None
            if prepare_model is not None:
                self.pipeline.model = prepare_model(self.pipeline.model, precision)
            elif precision == "bfloat16":
                self.pipeline.model = self.pipeline.model.to(torch.bfloat16)
            else:
                raise ValueError("MTST_DTYPE=int8 needs the mtst package (`pip install mtst`) beside handler.py.")
        config = self.pipeline.model.config
        self.task_names = list(getattr(config, "task_names", None) or [])
        if not self.task_names or not hasattr(self.pipeline, "postprocess"):
            raise ValueError(f"{path or '.'} is not an MTST checkpoint with task heads (no tasks in its config).")
        self._count_tokens = _token_counter(self.pipeline.tokenizer)
        self._forward_slots = threading.BoundedSemaphore(self.limits.forward_concurrency)
        forward = self.pipeline.forward  # the pipeline calls self.forward once per batch of windows

        def forward_in_turn(*args, **kwargs):
            with self._forward_slots:
                return forward(*args, **kwargs)

        self.pipeline.forward = forward_in_turn

    def _window_room(self, max_length: int | None) -> int:
        """Text tokens per window for a request's `max_length` (the pipeline's own rule: the model's limit caps it)."""
        tokenizer = self.pipeline.tokenizer
        limit = self.pipeline.model.max_sequence_length(tokenizer) or 512
        return min(max_length or limit, limit) - tokenizer.num_special_tokens_to_add(pair=False)

    def order_by_length(self, texts: list[str]) -> list[int]:
        """Indices of `texts`, longest first by token count (by characters with a tokenizer that cannot count)."""
        lengths = self._count_tokens(texts) if self._count_tokens is not None and len(texts) > 1 else None
        if lengths is None:
            lengths = [len(text) for text in texts]
        return sorted(range(len(texts)), key=lambda i: -lengths[i])

    def _parameters(self, parameters: Any) -> dict[str, Any]:
        if parameters is None:
            return {}
        if not isinstance(parameters, dict):
            raise ValueError(f'"parameters" must be a JSON object; got {type(parameters).__name__}.')
        unknown = sorted(set(parameters) - set(PARAMETERS))
        if unknown:
            allowed = "; ".join(f"{name}: {kind}" for name, kind in PARAMETERS.items())
            raise ValueError(f"Unknown parameter(s) {unknown}. Allowed parameters: {allowed}.")
        checked = {}
        for name, value in parameters.items():
            if value is None:
                continue
            if name == "tasks":
                tasks = [value] if isinstance(value, str) else value
                if not isinstance(tasks, list) or not tasks or not all(isinstance(t, str) for t in tasks):
                    raise ValueError(f'"tasks" must be {PARAMETERS["tasks"]}; got {value!r}.')
                unknown_tasks = [t for t in tasks if t not in self.task_names]
                if unknown_tasks:
                    raise ValueError(
                        f"Unknown task(s) {unknown_tasks}; this model's tasks: {', '.join(self.task_names)}."
                    )
                checked[name] = list(dict.fromkeys(tasks))
            elif name in ("return_embedding", "return_all_scores"):
                if not isinstance(value, bool):
                    raise ValueError(f'"{name}" must be true or false; got {value!r}.')
                checked[name] = value
            else:
                minimum = 0 if name == "stride" else 1
                if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                    raise ValueError(f'"{name}" must be {PARAMETERS[name]}; got {value!r}.')
                checked[name] = value
        if checked.get("batch_size", 0) > self.limits.max_batch_size:
            raise ValueError(
                f'"batch_size" is {checked["batch_size"]:,}, over the limit of {self.limits.max_batch_size:,} windows '
                f"per forward pass (max_batch_size, set on the server with {LIMIT_SETTINGS['max_batch_size'][0]})."
            )
        if "stride" in checked:
            room = self._window_room(checked.get("max_length"))
            if checked["stride"] > max(room, 0) // 2:
                raise ValueError(
                    f'"stride" is {checked["stride"]}, more than half the window\'s {room} text tokens (max_length '
                    f"{checked.get('max_length', 'default')}): at most {max(room, 0) // 2}, so that overlapping "
                    "windows encode a text at most about twice."
                )
        return checked

    def __call__(self, data: dict[str, Any]) -> dict[str, Any] | list[dict[str, Any]]:
        """Answer `{"inputs": str | list[str], "parameters": {...}}`; raises `ValueError` for a bad request."""
        if not isinstance(data, dict):
            raise ValueError(
                'The request must be a JSON object {"inputs": "text" or ["text", ...], "parameters": {...}}; '
                f"got {type(data).__name__}."
            )
        if "inputs" not in data:
            raise ValueError('The request has no "inputs": send {"inputs": "text" or ["text", ...]}.')
        unknown = sorted(set(data) - {"inputs", "parameters"})
        if unknown:
            raise ValueError(f'Unknown request key(s) {unknown}; a request has "inputs" and optional "parameters".')
        inputs = data["inputs"]
        single = isinstance(inputs, str)
        texts = [inputs] if single else inputs
        if not isinstance(texts, list):
            raise ValueError(f'"inputs" must be a string or a list of strings; got {type(inputs).__name__}.')
        bad = [i for i, text in enumerate(texts) if not isinstance(text, str)]
        if bad:
            raise ValueError(
                f'"inputs" must be a string or a list of strings; item(s) {bad[:5]} are '
                f"{', '.join(sorted({type(texts[i]).__name__ for i in bad}))}."
            )
        parameters = self._parameters(data.get("parameters"))
        self.limits.check(texts)  # before anything is computed
        if not texts:
            return []
        batch_size = parameters.pop("batch_size", None) or self.limits.batch_size
        order = self.order_by_length(texts)
        outputs = list(self.pipeline([texts[i] for i in order], batch_size=batch_size, **parameters))
        answers = [None] * len(texts)
        for position, index in enumerate(order):
            answers[index] = outputs[position]
        return answers[0] if single else answers


def _token_counter(tokenizer):
    """A function giving the token count of each text (no special tokens, no truncation), or None.

    It uses a private copy of the fast tokenizer's backend, set once to no truncation: changing the shared
    tokenizer's truncation at each request would race with the pipeline's own calls from other request threads."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    try:
        counter = copy.deepcopy(backend)
        counter.no_truncation()
        counter.no_padding()
    except Exception:  # noqa: BLE001 - an unusual backend: sort by characters instead
        return None

    def count(texts: list[str]) -> list[int]:
        return [len(encoding.ids) for encoding in counter.encode_batch(texts, add_special_tokens=False)]

    return count
