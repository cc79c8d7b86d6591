"""MTST demo web app (Gradio): type a text, see every task's answer.

    python app.py                                   # outputs/mtst-default on http://127.0.0.1:7860
    python app.py --model user/mtst-model --host 0.0.0.0 --port 8080
    MTST_MODEL=path/or/hub-id python app.py

Entities are highlighted in the text (`gr.HighlightedText`), sentence labels are shown as score bars (`gr.Label`).
The model is a local folder or a Hub id: `--model`, else the `MTST_MODEL` environment variable, else
`outputs/mtst-default`. As a Hugging Face Space (`sdk: gradio`, `app_file: app.py`, a `MTST_MODEL` variable) the file
runs unchanged; in a Space that does not hold the MTST modules, the model repository's own code is loaded
(`trust_remote_code`). Importing this module loads no model: `build_demo(model)` does.
"""

from __future__ import annotations

import argparse
import os
import sys

DEFAULT_MODEL = os.path.join("outputs", "mtst-default")
EXAMPLES = [
    "Apple is opening a new office in Paris, and investors love the idea.",
    "Lionel Messi scored twice as Inter Miami beat Orlando City on Saturday.",
    "The European Central Bank left interest rates unchanged in Frankfurt on Thursday.",
    "NASA says the new telescope found water vapour on a distant planet.",
    "The hotel in Rome was dirty and the staff were rude.",
]


def load_model(model: str | None = None, revision: str | None = None, dtype: str | None = None, backend=None):
    """The multitask pipeline for `model` (default: `MTST_MODEL`, else `outputs/mtst-default`), in `dtype` on
    `backend` (default: `MTST_DTYPE` / `MTST_BACKEND`, else float32 on torch; see inference_mtst)."""
    model = model or os.environ.get("MTST_MODEL") or None
    dtype = dtype or os.environ.get("MTST_DTYPE") or "float32"
    backend = backend or os.environ.get("MTST_BACKEND") or "torch"
    try:
        from predict_mtst import load_pipeline
    except ImportError:  # a Space holding only app.py: the model repository brings its own code
        from transformers import pipeline

        kwargs = {"dtype": dtype} if dtype == "bfloat16" else {}  # int8 and onnx need the MTST modules
        return pipeline(model=model or DEFAULT_MODEL, revision=revision, trust_remote_code=True, **kwargs)
    return load_pipeline(model, revision=revision, dtype=dtype, backend=backend)


def predict(pipe, text: str) -> list:
    """One value per task, in the model's task order: a `gr.HighlightedText` dict or a `gr.Label` dict."""
    config = pipe.model.config
    if not text or not text.strip():
        return [None for _ in config.task_names]
    answer = pipe(text, return_all_scores=True)
    values = []
    for name in config.task_names:
        if config.task_type(name) == "token_classification":
            entities = [{"entity": e["entity_group"], "start": e["start"], "end": e["end"]} for e in answer[name]]
            values.append({"text": text, "entities": entities})
        else:
            values.append(answer[name]["scores"])
    return values


def build_demo(model: str | None = None, revision: str | None = None, pipe=None, dtype=None, backend=None):
    """The Gradio Blocks app for one MTST model (a folder or Hub id, or an already loaded pipeline)."""
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
                text = gr.Textbox(label="Text", lines=4, placeholder="Type a sentence…", elem_id="mtst-input")
                with gr.Row():
                    clear = gr.ClearButton(value="Clear")
                    submit = gr.Button("Analyze", variant="primary", elem_id="mtst-submit")
                gr.Examples(examples=EXAMPLES, inputs=text)
            with gr.Column(scale=1):
                outputs = []
                for task in config.task_names:
                    if config.task_type(task) == "token_classification":
                        outputs.append(
                            gr.HighlightedText(label=f"{task} (entities)", show_legend=False, elem_id=f"task-{task}")
                        )
                    else:
                        labels = config.task_labels(task)
                        outputs.append(gr.Label(label=task, num_top_classes=len(labels), elem_id=f"task-{task}"))
        clear.add([text, *outputs])

        def answer(value):
            return predict(pipe, value)

        submit.click(answer, inputs=text, outputs=outputs, api_name="predict")
        text.submit(answer, inputs=text, outputs=outputs, api_name=False)
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
        "--dtype", choices=["float32", "bfloat16", "int8"], default=None, help="precision (default: $MTST_DTYPE)"
    )
    parser.add_argument("--backend", choices=["torch", "onnx"], default=None, help="default: $MTST_BACKEND, torch")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        from predict_mtst import PredictError
    except ImportError:
        PredictError = OSError  # noqa: N806 - only app.py in a Space: loading errors are transformers' own
    try:
        demo = build_demo(args.model, args.revision, dtype=args.dtype, backend=args.backend)
    except PredictError as e:
        print(f"app.py: error: {e}", file=sys.stderr)
        return 2
    demo.launch(server_name=args.host, server_port=args.port, share=args.share)
    return 0


if __name__ == "__main__":
    sys.exit(main())
elif os.environ.get("SPACE_ID"):
    demo = build_demo()  # Spaces' runners that import the file instead of running it look for `demo`
