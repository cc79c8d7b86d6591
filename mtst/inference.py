"""Inference precision and backends for MTST, in one place: float32, bfloat16 or int8 in PyTorch, or ONNX Runtime.

    from mtst.inference import load_model
    model = load_model("outputs/mtst-default", dtype="int8")               # PyTorch, int8 linear layers
    model = load_model("outputs/mtst-onnx", backend="onnx")               # ONNX Runtime (folder from mtst-export)
    model.encode(["a text"], tokenizer)                                   # same API on every backend

- `dtype="bfloat16"`: the weights are cast to bfloat16 (CPU or GPU); on CPUs with AVX512-BF16/AMX the matrix
  multiplies run at about twice the float32 rate.
- `dtype="int8"`: PyTorch's own dynamic quantization (`torch.ao.quantization.quantize_dynamic`) of every
  `nn.Linear`: int8 weights per output channel (on all-MiniLM-L6-v2 and 300 real texts, min / mean cosine to float32
  0.923 / 0.974, against 0.855 / 0.935 per tensor), activations quantized per batch, fbgemm/oneDNN kernels
  (VNNI). It is built into the CPU wheel and needs no other package; `torchao`'s int8 dynamic-activation config
  was slower than float32 in eager mode on this CPU (it needs `torch.compile` to pay off), so it is not used.
  CPU only.
- `backend="onnx"`: the graph written by `export_onnx` (`mtst-export onnx`), run with `onnxruntime`; outputs are
  `sentence_embedding`, `pooled_embedding` (before normalization) and one `logits_<task>` per task. `dtype="int8"`
  selects the ONNX Runtime dynamically quantized graph (`model_int8.onnx`, written with `--quantize`).

The ONNX parts need the `onnx` extra (`pip install -e ".[onnx]"`: onnx, onnxscript, onnxruntime); nothing here
imports them until they are used.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from mtst.remote.configuration_mtst import MTSTConfig, MTSTConfigError, MTSTLoadError
from mtst.remote.modeling_mtst import MTSTModel, MTSTModelOutput

DTYPES = ("float32", "bfloat16", "int8")
BACKENDS = ("torch", "onnx")
ONNX_FILE = "model.onnx"
ONNX_INT8_FILE = "model_int8.onnx"
ONNX_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
EMBEDDING_OUTPUTS = ("sentence_embedding", "pooled_embedding")
ONNX_EXTRA_HINT = 'pip install -e ".[onnx]" (or: pip install onnx onnxscript onnxruntime)'


class InferenceError(ValueError):
    """A precision or backend that cannot be used as asked (unknown name, missing package, wrong device)."""


def logits_output_name(task: str) -> str:
    """The ONNX output holding `task`'s logits."""
    return f"logits_{task}"


def check_options(dtype: str = "float32", backend: str = "torch", device=None) -> None:
    """Raise `InferenceError` for an unknown dtype/backend or a combination that cannot run."""
    if dtype not in DTYPES:
        raise InferenceError(f"Unknown dtype {dtype!r}; choose one of: {', '.join(DTYPES)}.")
    if backend not in BACKENDS:
        raise InferenceError(f"Unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}.")
    device_type = torch.device(device).type if device is not None else "cpu"
    if backend == "onnx" and dtype == "bfloat16":
        raise InferenceError(
            "The onnx backend runs float32 or int8 (model_int8.onnx from `mtst-export onnx --quantize`), not "
            "bfloat16; use --backend torch --dtype bfloat16 for bfloat16."
        )
    if backend == "onnx" and device_type != "cpu":
        raise InferenceError(f"The onnx backend runs on the CPU (onnxruntime); got device {device!r}.")
    if dtype == "int8" and backend == "torch" and device_type != "cpu":
        raise InferenceError(
            f"dtype int8 (PyTorch dynamic quantization) runs on the CPU only; got device {device!r}. "
            "Use --dtype bfloat16 on a GPU."
        )


def prepare_model(model: nn.Module, dtype: str = "float32", device=None) -> nn.Module:
    """`model` in eval mode on `device` in the given precision (float32 unchanged, bfloat16 cast, int8 with its
    linear layers dynamically quantized, which returns a new module). Works for any MTST model or task view."""
    check_options(dtype, "torch", device)
    model = model.eval()
    if device is not None:
        model = model.to(device)
    if dtype == "bfloat16":
        return model.to(torch.bfloat16)
    if dtype == "int8":
        with warnings.catch_warnings():  # torch.ao.quantization warns that it moves to torchao one day
            warnings.simplefilter("ignore")
            spec = {nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig}
            return torch.ao.quantization.quantize_dynamic(model, spec, dtype=torch.qint8)
    return model


def load_model(
    path: str, dtype: str = "float32", backend: str = "torch", device=None, threads: int | None = None, **kwargs
):
    """An MTST model from a folder or Hub id, ready for inference: `MTSTModel` (backend torch) in `dtype`, or an
    `OnnxMTSTModel` (backend onnx, folder written by `export_onnx`). `kwargs` go to `from_pretrained`."""
    check_options(dtype, backend, device)
    if backend == "onnx":
        return OnnxMTSTModel.from_pretrained(path, dtype=dtype, threads=threads, **kwargs)
    if os.path.isdir(path) and not os.path.isfile(os.path.join(path, "model.safetensors")):
        if os.path.isfile(os.path.join(path, ONNX_FILE)):
            raise MTSTLoadError(
                f"{path} holds an ONNX export ({ONNX_FILE}) and no PyTorch weights; load it with backend 'onnx' "
                "(mtst-predict --backend onnx)."
            )
    return prepare_model(MTSTModel.from_pretrained(path, **kwargs), dtype, device)


# ------------------------------------------------------------------------------------------------------ ONNX export
def _import(name: str, what: str):
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise InferenceError(
            f"{what} needs the package {name.split('.')[0]}, which is not installed: {ONNX_EXTRA_HINT}."
        ) from err


class _OnnxGraph(nn.Module):
    """What is exported: token ids in, the sentence embedding (normalized and not) and every task's logits out."""

    def __init__(self, model: MTSTModel):
        super().__init__()
        self.model = model
        self.with_token_types = model._encoder_takes_token_type_ids

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        model = self.model
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self.with_token_types and token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        token_states = model.encoder(**inputs, return_dict=True).last_hidden_state
        embedding = model.embed(token_states, attention_mask)
        logits = [model._run_head(name, embedding, token_states) for name in model.heads]
        # heads read `embedding`; the returned embedding is adapted (embedding_adapter), then normalized
        return (model.normalize_embedding(embedding), model.adapt_embedding(embedding), *logits)


def onnx_opsets() -> range:
    """The ONNX opsets `export_onnx` writes with this torch: from the one torch.onnx's exporter has its operators
    for (a lower one is only attempted by a version conversion, which keeps that one when it fails) to the newest it
    knows."""
    try:
        from torch.onnx._internal.exporter._constants import TORCHLIB_OPSET as lowest
    except ImportError:  # another torch layout: the opset torch 2.5 - 2.13 implement
        lowest = 18
    try:
        from torch.onnx._constants import ONNX_MAX_OPSET as highest
    except ImportError:
        highest = lowest
    return range(lowest, max(lowest, highest) + 1)


def check_opset(opset) -> None:
    """Raise `InferenceError` naming `onnx_opsets()` unless `opset` is one of them."""
    allowed = onnx_opsets()
    if isinstance(opset, bool) or not isinstance(opset, int) or opset not in allowed:
        raise InferenceError(
            f"--opset {opset!r} is not an opset the ONNX exporter of torch {torch.__version__} writes: it writes "
            f"opsets {allowed.start} to {allowed.stop - 1} (default 18). A lower one would come out as "
            f"{allowed.start} anyway."
        )


def export_onnx(
    model: MTSTModel,
    folder: str,
    tokenizer=None,
    quantize: bool = False,
    opset: int = 18,
    check: bool = True,
    atol: float = 1e-4,
) -> dict:
    """Write `model` as `folder/model.onnx` (plus `model_int8.onnx` with `quantize`), its config and `tokenizer`.

    The graph is exported with `torch.onnx.export(dynamo=True)` (dynamic batch and sequence length; the older
    TorchScript exporter traces transformers' attention-mask shortcuts as constants and gives wrong outputs), then,
    with `check`, run with onnxruntime on a padded batch and compared with PyTorch (`atol`, every output); a
    mismatch raises `InferenceError`, and so does an `opset` outside `onnx_opsets()` (the exporter would write
    another one). Returns what was written and the largest differences found."""
    check_opset(opset)
    _import("onnxscript", "ONNX export")
    onnx = _import("onnx", "ONNX export")
    model = model.float().eval()
    os.makedirs(folder, exist_ok=True)
    graph = _OnnxGraph(model)
    tasks = list(model.heads)
    output_names = [*EMBEDDING_OUTPUTS, *(logits_output_name(t) for t in tasks)]
    input_names = list(ONNX_INPUTS if graph.with_token_types else ONNX_INPUTS[:2])
    max_positions = model.max_sequence_length() or 512
    example = _example_inputs(model.config, batch=2, length=min(16, max_positions))
    example = {k: v for k, v in example.items() if k in input_names}
    batch = torch.export.Dim("batch", min=1)
    length = torch.export.Dim("sequence", min=1, max=max_positions)
    path = os.path.join(folder, ONNX_FILE)
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)  # "torchvision is not installed" notes
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            graph,
            tuple(example[n] for n in input_names),
            input_names=input_names,
            output_names=output_names,
            dynamic_shapes={n: {0: batch, 1: length} for n in input_names},
            opset_version=opset,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    exporter_log.setLevel(level)
    program.save(path)
    proto = onnx.load(path)
    written_opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if written_opset != opset:
        raise InferenceError(f"The ONNX exporter wrote opset {written_opset} where --opset {opset} was asked for.")
    metadata = {"mtst_tasks": json.dumps(tasks), "mtst_max_positions": str(max_positions)}
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, path)
    written = [ONNX_FILE]
    if quantize:
        quantize_onnx(path, os.path.join(folder, ONNX_INT8_FILE))
        written.append(ONNX_INT8_FILE)
    model.config.save_pretrained(folder)
    written.append("config.json")
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
        written.append("tokenizer")
    report = {"folder": folder, "written": written, "outputs": output_names}
    if check:
        report["max_abs_diff"] = check_onnx(model, path, atol=atol)
    return report


def quantize_onnx(source: str, target: str) -> str:
    """ONNX Runtime's dynamic int8 quantization (`quantize_dynamic`) of the MatMul/Gemm weights of `source`."""
    quantization = _import("onnxruntime.quantization", "ONNX int8 quantization")
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer logs advice about pre-processing on the root logger
    try:
        quantization.quantize_dynamic(
            source,
            target,
            weight_type=quantization.QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul", "Gemm"],
        )
    finally:
        root.setLevel(level)
    return target


def _example_inputs(config: MTSTConfig, batch: int, length: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random token ids with some padding (the last row is shorter), for export and checks."""
    generator = torch.Generator().manual_seed(seed)
    vocab = getattr(config.encoder, "vocab_size", 1000) or 1000
    ids = torch.randint(5, max(6, vocab), (batch, length), generator=generator)
    mask = torch.ones_like(ids)
    if batch > 1 and length > 2:
        mask[-1, length // 2 :] = 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


def check_onnx(model: MTSTModel, path: str, atol: float = 1e-4, shapes=((1, 5), (3, 11), (2, 1))) -> dict:
    """Largest absolute difference per output between onnxruntime and PyTorch on a few padded batches; raises
    `InferenceError` when one is above `atol`."""
    session = _session(path)
    graph = _OnnxGraph(model.float().eval())
    names = [o.name for o in session.get_outputs()]
    feeds = [i.name for i in session.get_inputs()]
    worst = dict.fromkeys(names, 0.0)
    for batch, length in shapes:
        example = _example_inputs(model.config, batch, length, seed=batch * 100 + length)
        with torch.no_grad():
            expected = graph(**{k: example[k] for k in feeds})
        got = session.run(names, {k: example[k].numpy() for k in feeds})
        for name, ref, value in zip(names, expected, got):
            worst[name] = max(worst[name], float((torch.from_numpy(value) - ref).abs().max()))
    bad = {k: v for k, v in worst.items() if not v <= atol}
    if bad:
        raise InferenceError(
            f"The ONNX export {path} does not match PyTorch: largest differences {bad} exceed {atol}. "
            "Try another --opset, or report the model's encoder type."
        )
    return worst


def _session(path: str, threads: int | None = None):
    ort = _import("onnxruntime", "The onnx backend")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    threads = threads or torch.get_num_threads()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


# --------------------------------------------------------------------------------------------------- ONNX inference
@dataclass
class OnnxMTSTOutput(MTSTModelOutput):
    """[`MTSTModelOutput`] from ONNX Runtime: no token states; `pooled_embedding` is the sentence embedding before
    normalization (adapted when the model has an embedding adapter: what the multitask pipeline averages over
    windows)."""

    pooled_embedding: torch.FloatTensor | None = None


class OnnxMTSTModel(nn.Module):
    """An exported MTST graph run with onnxruntime, with the parts of `MTSTModel`'s interface that inference uses:
    `forward(input_ids, attention_mask, token_type_ids, task=None)` -> every task's logits and the embedding,
    `encode()`, `normalize_embedding()`, `max_sequence_length()`, `config`, `device` (always the CPU). It works in
    the multitask pipeline and `mtst-predict --backend onnx`."""

    def __init__(self, session, config: MTSTConfig, name_or_path: str = ""):
        super().__init__()
        self.session = session
        self.config = config
        self.name_or_path = name_or_path
        meta = session.get_modelmeta().custom_metadata_map
        self._max_positions = int(meta["mtst_max_positions"]) if "mtst_max_positions" in meta else None
        self._input_names = [i.name for i in session.get_inputs()]
        self._output_names = [o.name for o in session.get_outputs()]
        heads = config.head_task_names  # an embedding task (sentence_similarity, retrieval) answers by the embedding
        missing = [logits_output_name(t) for t in heads if logits_output_name(t) not in self._output_names]
        if missing or any(n not in self._output_names for n in EMBEDDING_OUTPUTS):
            raise MTSTLoadError(
                f"The ONNX graph of {name_or_path or 'this model'} does not match its config.json: it has the "
                f"outputs {', '.join(self._output_names)}; missing {', '.join(missing) or 'the embeddings'}. Export "
                "it again with `mtst-export onnx`."
            )

    @classmethod
    def from_pretrained(cls, path: str, dtype: str = "float32", threads: int | None = None, revision=None, **kwargs):
        """The ONNX graph (`model.onnx`, or `model_int8.onnx` for dtype int8) and config of a folder or Hub id."""
        check_options(dtype, "onnx")
        name = ONNX_INT8_FILE if dtype == "int8" else ONNX_FILE
        if os.path.isdir(path):
            file = os.path.join(path, name)
            if not os.path.isfile(file):
                hint = " (export with --quantize for int8)" if dtype == "int8" else ""
                raise MTSTLoadError(
                    f"{path} has no {name}{hint}. Write one with `mtst-export onnx --model MODEL --output {path}"
                    f"{' --quantize' if dtype == 'int8' else ''}`."
                )
        else:
            from huggingface_hub import hf_hub_download

            file = hf_hub_download(path, name, revision=revision)
        config = MTSTConfig.from_pretrained(path, revision=revision, **kwargs)
        return cls(_session(file, threads), config, name_or_path=path)

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    def to(self, *args, **kwargs):
        device = kwargs.get("device", args[0] if args else None)
        if device is not None and not isinstance(device, torch.dtype) and torch.device(device).type != "cpu":
            raise InferenceError(f"The onnx backend runs on the CPU (onnxruntime); cannot move it to {device}.")
        return self

    def max_sequence_length(self, tokenizer=None) -> int | None:
        limits = [self._max_positions] if self._max_positions else []
        model_max = getattr(tokenizer, "model_max_length", None)
        if isinstance(model_max, int) and 0 < model_max < 1_000_000:
            limits.append(model_max)
        return min(limits) if limits else None

    def adapt_embedding(self, embedding: torch.Tensor) -> torch.Tensor:
        """The identity: the graph's `pooled_embedding` is already adapted (`_OnnxGraph`)."""
        return embedding

    def normalize_embedding(self, embedding: torch.Tensor) -> torch.Tensor:
        return MTSTModel.normalize_embedding(self, embedding)

    def _run(self, names: list[str], inputs: dict) -> list[torch.Tensor]:
        length = inputs["input_ids"].shape[1]
        if self._max_positions is not None and length > self._max_positions:
            raise MTSTConfigError(
                f"The input has {length} tokens, more than the {self._max_positions} positions the encoder takes; "
                "truncate it."
            )
        feeds = {}
        for name in self._input_names:
            value = inputs.get(name)
            if value is None:
                value = torch.zeros_like(inputs["input_ids"]) if name == "token_type_ids" else None
            if value is None:
                raise ValueError(f"The ONNX graph needs the input {name!r}.")
            feeds[name] = value.detach().cpu().to(torch.int64).numpy()
        return [torch.from_numpy(v) for v in self.session.run(names, feeds)]

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, task=None, **kwargs) -> OnnxMTSTOutput:
        if input_ids is None:
            raise ValueError("The onnx backend takes input_ids (no inputs_embeds).")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if task is not None and task not in self.config.task_names:
            raise MTSTConfigError(f"Unknown task {task!r}; this model's tasks: {', '.join(self.config.task_names)}.")
        if task is None:
            tasks = self.config.head_task_names
        else:
            tasks = [] if self.config.is_embedding_task(task) else [task]
        names = [*EMBEDDING_OUTPUTS, *(logits_output_name(t) for t in tasks)]
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        embedding, pooled, *logits = self._run(names, inputs)
        task_logits = dict(zip(tasks, logits))
        return OnnxMTSTOutput(
            logits=task_logits.get(task) if task is not None else None,
            task_logits=task_logits,
            sentence_embedding=embedding,
            pooled_embedding=pooled,
        )

    def _encode_batch(self, inputs: dict) -> torch.Tensor:
        """Pooled (not normalized) sentence vectors of one padded batch: what `encode()` asks of a backend."""
        return self._run(["pooled_embedding"], inputs)[0]

    encode = MTSTModel.encode
