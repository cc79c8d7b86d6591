"""MTST demo web app (Gradio): type a text, see every task's answer.

    python app.py                                   # outputs/mtst-default on http://127.0.0.1:7860
    python app.py --model user/mtst-model --host 0.0.0.0 --port 8080
    MTST_MODEL=path/or/hub-id python app.py

Entities are highlighted in the text (`gr.HighlightedText`), sentence labels are shown as score bars (`gr.Label`).
The model is a local folder or a Hub id: `--model`, else the `MTST_MODEL` environment variable, else
`outputs/mtst-default`. As a Hugging Face Space (`sdk: gradio`, `app_file: app.py`, a `MTST_MODEL` variable) the file
runs unchanged; in a Space that does not hold the MTST modules, the model repository's own code is loaded
(`trust_remote_code`). Importing this module loads no model: `build_demo(model)` does.

Serving under load. A text longer than the server's limit is refused with a message (`gr.Error`) before anything is
computed: `MTST_MAX_CHARS` (characters per text, default 20,000) and `MTST_MAX_TOTAL_CHARS` (per request; the app sends
one text, so the smaller of the two applies), or `--max_chars`. The limits are `handler.ServingLimits`, the same as
the endpoints handler's; a bad value of one of the variables stops the app at start-up. Gradio's queue runs up to
`--concurrency_limit` requests at a time (`MTST_CONCURRENCY`, default 2): on a 2-core CPU two requests at once keep a
short request from waiting behind a long one, while more than the cores adds no throughput, only longer answers for
everyone and more memory held (each running request holds its activations).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

DEFAULT_MODEL = os.path.join("outputs", "mtst-default")
DEFAULT_CONCURRENCY = 2  # requests computed at once: the cores of the 2-CPU machines (Spaces' free tier) we target
CONCURRENCY_ENV = "MTST_CONCURRENCY"
EXAMPLES = [
    "Apple is opening a new office in Paris, and investors love the idea.",
    "Lionel Messi scored twice as Inter Miami beat Orlando City on Saturday.",
    "The European Central Bank left interest rates unchanged in Frankfurt on Thursday.",
    "NASA says the new telescope found water vapour on a distant planet.",
    "The hotel in Rome was dirty and the staff were rude.",
]


def load_model(model: str | None = None, revision: str | None = None, dtype: str | None = None, backend=None):
    """The multitask pipeline for `model` (default: `MTST_MODEL`, else `outputs/mtst-default`), in `dtype` on
    `backend` (default: `MTST_DTYPE` / `MTST_BACKEND`, else float32 on torch; see mtst.inference)."""
    model = model or os.environ.get("MTST_MODEL") or None
    dtype = dtype or os.environ.get("MTST_DTYPE") or "float32"
    backend = backend or os.environ.get("MTST_BACKEND") or "torch"
    try:
        from mtst.cli.predict import load_pipeline
    except ImportError:  # a Space holding only app.py: the model repository brings its own code
        from transformers import pipeline

        kwargs = {"dtype": dtype} if dtype == "bfloat16" else {}  # int8 and onnx need the MTST modules
        return pipeline(model=model or DEFAULT_MODEL, revision=revision, trust_remote_code=True, **kwargs)
    return load_pipeline(model, revision=revision, dtype=dtype, backend=backend)


def _handler_module(model: str | None = None, revision: str | None = None):
    """`handler.py` (which holds `ServingLimits`): from the mtst package, else from the model repository."""
    try:
        from mtst.remote import handler
    except ImportError:  # a Space holding only app.py: every MTST model repository carries handler.py
        import importlib.util

        from huggingface_hub import hf_hub_download

        model = model or os.environ.get("MTST_MODEL") or DEFAULT_MODEL
        path = os.path.join(model, "handler.py")
        if not os.path.isfile(path):
            path = hf_hub_download(model, "handler.py", revision=revision)
        spec = importlib.util.spec_from_file_location("mtst_handler", path)
        handler = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = handler  # dataclasses look their module up there
        spec.loader.exec_module(handler)
    return handler


def serving_limits(max_chars: int | None = None, model: str | None = None, revision: str | None = None):
    """The app's limits: `MTST_MAX_CHARS` / `MTST_MAX_TOTAL_CHARS` (see handler.py), `max_chars` winning when given.

    Raises `ValueError` naming the variable when one is set to something other than a positive integer."""
    return _handler_module(model, revision).ServingLimits.from_env(max_chars=max_chars)


def concurrency_limit_from_env(environ=None) -> int:
    """`MTST_CONCURRENCY`, else the default (2); `ValueError` when it is set to something else than an integer >= 1."""
    raw = (os.environ if environ is None else environ).get(CONCURRENCY_ENV, "").strip()
    if not raw:
        return DEFAULT_CONCURRENCY
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(
            f"The environment variable {CONCURRENCY_ENV} (requests the app computes at once) must be a positive "
            f"integer such as {DEFAULT_CONCURRENCY}; got {raw!r}. Fix or unset it."
        )
    return int(raw)


# spelled out: the app runs without mtst
HEAD_TASK_TYPES = ("sequence_classification", "token_classification", "multi_label_classification", "regression")


def head_tasks(config) -> list[str]:
    """The tasks with a head (an embedding task, sentence_similarity or retrieval, answers through the embedding)."""
    return [name for name in config.task_names if config.task_type(name) in HEAD_TASK_TYPES]


def similarity(pipe, text: str, other: str, limits=None) -> float | None:
    """The cosine of the sentence embeddings of two texts (None when one is empty)."""
    if not text or not text.strip() or not other or not other.strip():
        return None
    if limits is not None:
        limits.check([text, other])
    a, b = (pipe(t, tasks=[], return_embedding=True)["embedding"] for t in (text, other))
    dot = sum(x * y for x, y in zip(a, b))
    norm = (sum(x * x for x in a) * sum(y * y for y in b)) ** 0.5
    return round(dot / norm, 4) if norm else 0.0


def predict(pipe, text: str, limits=None) -> list:
    """One value per task with a head, in the model's task order: a `gr.HighlightedText` dict, a `gr.Label` dict (a
    sentence or multi-label task's probabilities) or a number (a regression task's score).

    With `limits` (a `ServingLimits`), a text over them raises its `LimitError` (a `ValueError`) before any work,
    and the windows of a long text run in batches of `limits.batch_size`."""
    config = pipe.model.config
    if limits is not None and text:
        limits.check([text])
    if not text or not text.strip():
        return [None for _ in head_tasks(config)]
    if limits is not None:
        answer = pipe([text], batch_size=limits.batch_size, return_all_scores=True)[0]
    else:
        answer = pipe(text, return_all_scores=True)
    values = []
    for name in head_tasks(config):
        if config.task_type(name) == "token_classification":
            entities = [{"entity": e["entity_group"], "start": e["start"], "end": e["end"]} for e in answer[name]]
            values.append({"text": text, "entities": entities})
        elif config.task_type(name) == "regression":
            values.append(answer[name]["score"])
        else:
            values.append(answer[name]["scores"])
    return values


def task_output(gr, config, task: str):
    """The Gradio component that shows one head task's answer."""
    kind = config.task_type(task)
    if kind == "token_classification":
        return gr.HighlightedText(label=f"{task} (entities)", show_legend=False, elem_id=f"task-{task}")
    if kind == "regression":
        return gr.Number(label=f"{task} (score)", elem_id=f"task-{task}")
    title = f"{task} (each label's probability)" if kind == "multi_label_classification" else task
    return gr.Label(label=title, num_top_classes=len(config.task_labels(task)), elem_id=f"task-{task}")


def build_demo(
    model: str | None = None,
    revision: str | None = None,
    pipe=None,
    limits=None,
    max_chars: int | None = None,
    concurrency_limit: int | None = None,
    dtype: str | None = None,
    backend: str | None = None,
):
    """The Gradio Blocks app for one MTST model (a folder or Hub id, or an already loaded pipeline).

    `limits` (a `handler.ServingLimits`) defaults to the `MTST_*` environment variables, with `max_chars` (characters
    per text) winning when given; `concurrency_limit` (requests computed at once) defaults to `MTST_CONCURRENCY`,
    else 2; `dtype` and `backend` choose the precision and runtime (see `load_model`). Bad values raise `ValueError`
    before the model is loaded."""
    if limits is None:
        limits = serving_limits(max_chars, model, revision)
    elif max_chars is not None:
        limits = dataclasses.replace(limits, max_chars=max_chars)
    if concurrency_limit is None:
        concurrency_limit = concurrency_limit_from_env()
    elif isinstance(concurrency_limit, bool) or not isinstance(concurrency_limit, int) or concurrency_limit < 1:
        raise ValueError(f"concurrency_limit must be a positive integer; got {concurrency_limit!r}.")
    pipe = pipe if pipe is not None else load_model(model, revision, dtype=dtype, backend=backend)
    import gradio as gr

    config = pipe.model.config
    name = getattr(pipe.model, "name_or_path", None) or model or "MTST"

    with gr.Blocks(title="MTST demo") as demo:
        gr.Markdown(
            f"# MTST: one encoder, {len(config.task_names)} tasks\n"
            f"Model `{name}` answers every task in one pass: " + ", ".join(f"**{t}**" for t in config.task_names) + "."
        )
        with gr.Row():
            with gr.Column(scale=1):
                text = gr.Textbox(
                    label="Text",
                    lines=4,
                    placeholder="Type a sentence…",
                    info=f"Up to {min(limits.max_chars, limits.max_total_chars):,} characters.",
                    elem_id="mtst-input",
                )
                with gr.Row():
                    clear = gr.ClearButton(value="Clear")
                    submit = gr.Button("Analyze", variant="primary", elem_id="mtst-submit")
                gr.Examples(examples=EXAMPLES, inputs=text)
            with gr.Column(scale=1):
                outputs = [task_output(gr, config, task) for task in head_tasks(config)]
        clear.add([text, *outputs])

        def answer(value):
            if value:
                try:
                    limits.check([value])  # before any work: the message is shown as a Gradio error
                except ValueError as e:
                    title = "Text too long" if type(e).__name__ == "LimitError" else "Invalid text"
                    raise gr.Error(str(e), title=title, print_exception=False) from None
            return predict(pipe, value, limits)

        submit.click(answer, inputs=text, outputs=outputs, api_name="predict")
        text.submit(answer, inputs=text, outputs=outputs, api_name=False)
        if len(head_tasks(config)) < len(config.task_names):  # the model trained its embedding: compare two texts
            with gr.Row():
                other = gr.Textbox(label="Compare with", lines=2, elem_id="mtst-compare")
                cosine = gr.Number(label="Cosine similarity of the sentence embeddings", elem_id="mtst-similarity")
            compare = gr.Button("Compare", elem_id="mtst-compare-submit")

            def compare_texts(value, other_value):
                try:
                    return similarity(pipe, value, other_value, limits)
                except ValueError as e:
                    raise gr.Error(str(e), title="Text too long", print_exception=False) from None

            compare.click(compare_texts, inputs=[text, other], outputs=cosine, api_name="similarity")
    demo.queue(default_concurrency_limit=concurrency_limit)
    demo.mtst_limits, demo.mtst_concurrency_limit = limits, concurrency_limit
    return demo


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python app.py", description="MTST demo web app (Gradio).")
    parser.add_argument(
        "--model", default=None, help=f"local folder or Hub id (default: $MTST_MODEL, else {DEFAULT_MODEL})"
    )
    parser.add_argument("--revision", default=None, help="Hub branch, tag or commit")
    parser.add_argument(
        "--host", default=None, help="address to listen on (default: $GRADIO_SERVER_NAME, else 127.0.0.1)"
    )
    parser.add_argument("--port", type=int, default=None, help="port (default: $GRADIO_SERVER_PORT, else 7860)")
    parser.add_argument("--share", action="store_true", help="ask Gradio for a temporary public link")
    parser.add_argument(
        "--max_chars",
        type=int,
        default=None,
        help="longest text accepted, in characters (default: $MTST_MAX_CHARS, else 20,000)",
    )
    parser.add_argument(
        "--concurrency_limit",
        type=int,
        default=None,
        help=f"requests computed at once (default: ${CONCURRENCY_ENV}, else {DEFAULT_CONCURRENCY}, for 2 CPU cores)",
    )
    parser.add_argument(
        "--dtype", choices=["float32", "bfloat16", "int8"], default=None, help="precision (default: $MTST_DTYPE)"
    )
    parser.add_argument("--backend", choices=["torch", "onnx"], default=None, help="default: $MTST_BACKEND, torch")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        from mtst.cli.predict import PredictError
    except ImportError:
        PredictError = OSError  # noqa: N806 - only app.py in a Space: loading errors are transformers' own
    try:
        demo = build_demo(
            args.model,
            args.revision,
            max_chars=args.max_chars,
            concurrency_limit=args.concurrency_limit,
            dtype=args.dtype,
            backend=args.backend,
        )
    except (PredictError, ValueError) as e:
        print(f"app.py: error: {e}", file=sys.stderr)
        return 2
    demo.launch(server_name=args.host, server_port=args.port, share=args.share)
    return 0


if __name__ == "__main__":
    sys.exit(main())
elif os.environ.get("SPACE_ID"):
    demo = build_demo()  # Spaces' runners that import the file instead of running it look for `demo`
