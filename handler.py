"""Custom handler for Hugging Face Inference Endpoints: every task of an MTST model from one request.

Inference Endpoints load `handler.py` from the model repo and call `EndpointHandler(path)(data)` for each request.
The handler runs the repo's multitask pipeline (`pipeline_mtst.MultiTaskPipeline`, found through the checkpoint's
`custom_pipelines`) with `transformers.pipeline(model=path, trust_remote_code=True)`.

Request::

    {"inputs": "a text" | ["text", ...],
     "parameters": {"tasks": ["topic", "ner"], "return_embedding": false, "return_all_scores": false,
                    "max_length": 128, "stride": 32, "batch_size": 8}}

Answer: for one text, `{task: answer, ...}` (plus `"embedding"` when asked); for a list, a list of those. Sentence
tasks answer `{"label", "score"}` (and `"scores"` with `return_all_scores`), token tasks a list of entity spans
`{"entity_group", "score", "word", "start", "end"}` with character offsets. A bad request raises `ValueError` with a
message saying what is wrong and what is allowed; Inference Endpoints return it as `{"error": message}` with status
400.

This file travels to the Hub with the weights: it imports only torch and transformers.
"""

from __future__ import annotations

from typing import Any

PARAMETERS = {
    "tasks": "a task name or a list of task names",
    "return_embedding": "true or false",
    "return_all_scores": "true or false",
    "max_length": "a positive integer (window size in tokens)",
    "stride": "an integer >= 0 (overlap between windows in tokens)",
    "batch_size": "a positive integer",
}


class EndpointHandler:
    """Loads the model in `path` (the repo folder on an endpoint) once; each call answers one request.

    Args:
        path (`str`): folder (or Hub id) of the MTST checkpoint; `""` means the current folder.
        device (`int` or `str`, *optional*): where to run; defaults to the first GPU when there is one, else CPU.
        precision (`str`, *optional*): `float32`, `bfloat16` or `int8` (int8 needs `inference_mtst.py` beside this
            file); default: the `MTST_DTYPE` environment variable (an endpoint setting), else float32.
        pipeline_kwargs: passed to `transformers.pipeline` (`revision`, ...).
    """

    def __init__(self, path: str = "", device=None, precision: str | None = None, **pipeline_kwargs):
        import os

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
            try:  # the inference options live in inference_mtst (an MTST checkout, or the file copied beside)
                from inference_mtst import prepare_model
            except ImportError:
                prepare_model = None
            if prepare_model is not None:
                self.pipeline.model = prepare_model(self.pipeline.model, precision)
            elif precision == "bfloat16":
                self.pipeline.model = self.pipeline.model.to(torch.bfloat16)
            else:
                raise ValueError("MTST_DTYPE=int8 needs inference_mtst.py beside handler.py (from the MTST code).")
        config = self.pipeline.model.config
        self.task_names = list(getattr(config, "task_names", None) or [])
        if not self.task_names or not hasattr(self.pipeline, "postprocess"):
            raise ValueError(f"{path or '.'} is not an MTST checkpoint with task heads (no tasks in its config).")

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
        if not texts:
            return []
        batch_size = parameters.pop("batch_size", None)
        call_kwargs = {"batch_size": batch_size} if batch_size else {}
        outputs = self.pipeline(texts, **parameters, **call_kwargs)
        return outputs[0] if single else list(outputs)
