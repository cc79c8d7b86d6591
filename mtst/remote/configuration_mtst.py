"""MTST configuration: one shared encoder, a pooled sentence embedding, and an ordered table of task heads.

This file travels to the Hub with the weights (``trust_remote_code``): it imports only transformers. It is the lowest
module: the constants and rules several modules share (task types, ``IGNORE_INDEX``, the error classes, how an error
is quoted, how a local path is told from a Hub id, how a saved ``config.json`` is read) are defined here once.
"""

from __future__ import annotations

import copy
import json
import os
import re
import reprlib
from collections.abc import Mapping
from typing import Any

import transformers
from transformers import AutoConfig, PretrainedConfig

try:  # transformers >= 5.18: sub-configs are declared with a spec (a default model type among them)
    from transformers.configuration_utils import SubConfigSpec
except ImportError:  # transformers 4.57 - 5.17: a plain {name: config class} mapping
    SubConfigSpec = None

# The oldest transformers this file and modeling_mtst.py / pipeline_mtst.py are tested on (the CI compatibility check
# loads a saved model with it); older releases stop here with one sentence instead of an error deep in loading.
MIN_TRANSFORMERS_VERSION = "4.57.0"


def _release(version: str) -> tuple[int, int, int]:
    """(major, minor, micro) of a version string such as "5.0.0", "4.57.6", "5.1" or "5.1.0.dev0"."""
    match = re.match(r"(\d+)(?:\.(\d+))?(?:\.(\d+))?", version.strip())
    return tuple(int(part or 0) for part in match.groups()) if match else (0, 0, 0)


def check_transformers_version(installed: str | None = None) -> None:
    """Raise `ImportError` when the installed transformers is older than `MIN_TRANSFORMERS_VERSION`."""
    installed = installed or transformers.__version__
    if _release(installed) < _release(MIN_TRANSFORMERS_VERSION):
        raise ImportError(
            f"This MTST model needs transformers>={MIN_TRANSFORMERS_VERSION}, but transformers {installed} is "
            f'installed; upgrade it with `pip install -U "transformers>={MIN_TRANSFORMERS_VERSION}"`.'
        )


check_transformers_version()

POOLING_MODES = ("mean", "cls", "max")
NORMALIZATIONS = ("none", "l2", "l1")
# The task types: the one definition every module imports (tasks, data, metrics, card, pipeline, apps).
SEQUENCE_CLASSIFICATION = "sequence_classification"
TOKEN_CLASSIFICATION = "token_classification"
# A text (or text pair) with zero or more labels (sigmoid per label, a decision threshold each), or with a number.
MULTI_LABEL_CLASSIFICATION = "multi_label_classification"
REGRESSION = "regression"
# Tasks that train the sentence embedding itself (no head, no labels): a score per text pair, or query/positive pairs.
SENTENCE_SIMILARITY = "sentence_similarity"
RETRIEVAL = "retrieval"
# Heads that read the sentence vector (the others read the token states).
SENTENCE_HEAD_TYPES = (SEQUENCE_CLASSIFICATION, MULTI_LABEL_CLASSIFICATION, REGRESSION)
HEAD_TASK_TYPES = (SEQUENCE_CLASSIFICATION, TOKEN_CLASSIFICATION, MULTI_LABEL_CLASSIFICATION, REGRESSION)
EMBEDDING_TASK_TYPES = (SENTENCE_SIMILARITY, RETRIEVAL)
TASK_TYPES = (*HEAD_TASK_TYPES, *EMBEDDING_TASK_TYPES)
# The losses of the embedding tasks (sentence-transformers' CoSENTLoss, CosineSimilarityLoss and
# MultipleNegativesRankingLoss), the first of each the default.
EMBEDDING_LOSSES = {SENTENCE_SIMILARITY: ("cosent", "cosine_mse"), RETRIEVAL: ("multiple_negatives_ranking",)}
# Labels with this value are ignored by the loss and the metrics (PyTorch's cross-entropy default, as in transformers).
IGNORE_INDEX = -100
ACTIVATIONS = ("gelu", "relu", "tanh", "silu", "none")

# Head options and their defaults; every task entry is completed with these.
HEAD_DEFAULTS = {"dropout": 0.1, "layer_norm": True, "activation": "gelu", "hidden_size": None}
TASK_KEYS = ("type", "labels", "loss_weight", *HEAD_DEFAULTS)
# What a head task's entry holds besides TASK_KEYS: a multi-label task's decision threshold per label and its optional
# positive-row weights per label; a regression task's standardisation (the train split's mean and standard
# deviation: the head predicts standardised scores, the model answers on the data's scale).
TYPE_KEYS = {MULTI_LABEL_CLASSIFICATION: ("thresholds", "pos_weight"), REGRESSION: ("score_mean", "score_std")}
EMBEDDING_TASK_KEYS = ("type", "loss_weight", "loss", "score_range")


class MTSTConfigError(ValueError):
    """A configuration value is not allowed; the message lists the allowed values."""


class MTSTLoadError(MTSTConfigError, OSError):
    """A model or backbone could not be loaded: missing folder, not a model folder, missing or truncated weights.
    Both an `OSError` (as transformers' loading errors) and an `MTSTConfigError`."""


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxtuple, _REPR.maxdict, _REPR.maxset = 3, 12, 12, 8, 8
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = 80


def short_repr(value: Any, limit: int = 80) -> str:
    """How an error message echoes a value: its repr, at most `limit` characters, never built in full (a value read
    from a file can be megabytes, and a few hundred bytes of YAML aliases expand into gigabytes)."""
    text = _REPR.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def first_sentence(err: BaseException) -> str:
    """The error's type and the first sentence of its message, on one line: how an error from a library is quoted
    inside an MTST message."""
    text = " ".join(str(err).split()).split(". ")[0][:400].rstrip(".")
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def is_local_path(value: Any) -> bool:
    """Whether `value` names a local file or folder rather than a Hub id: it exists, or it has a form that no Hub id
    has (it starts with `.`, `/`, `~` or `\\`, has a drive letter or a backslash, ends with `/`, or holds more than one
    `/`). The one rule for telling paths from Hub ids; a missing path that passes for a Hub id is left to the Hub."""
    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
        return False
    text = os.fspath(value)
    if (
        text.startswith(("/", "~", ".", "\\"))
        or re.match(r"^[A-Za-z]:[\\/]", text)
        or "\\" in text
        or text.endswith(("/", os.sep))
        or text.count("/") > 1
    ):
        return True
    try:
        return os.path.exists(text)
    except (OSError, ValueError):
        return False


def read_config_dict(config_file: str | os.PathLike) -> dict:
    """The JSON object in a saved model's `config.json`, before it is known to be an MTST config (`model_type` is
    checked by the caller). `OSError` when the file cannot be read, `ValueError` when it is not a JSON object."""
    with open(config_file, encoding="utf-8") as f:
        values = json.load(f)
    if not isinstance(values, dict):
        raise ValueError(f"it holds a JSON {type(values).__name__}, not an object")
    return values


# Weights of a saved MTST model: safetensors only, one file or shards listed in an index.
SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_WEIGHTS_INDEX_NAME = "model.safetensors.index.json"


def check_model_folder(path: str | os.PathLike, what: str = "backbone") -> None:
    """Raise `MTSTLoadError` when `path` is a local path but not a model folder (missing, a file, or a folder without
    config.json, such as a data folder); anything else is left to be resolved as a Hub id."""
    path = str(path)
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "config.json")):
            listing = sorted(os.listdir(path))
            shown = ", ".join(listing[:8]) + (", ..." if len(listing) > 8 else "") if listing else "nothing"
            raise MTSTLoadError(
                f"The {what} {path} is not a model folder: it has no config.json (it holds {shown}). Pass a Hub "
                "model id or a folder written by save_pretrained, e.g. an encoder such as BERT or MiniLM."
            )
    elif os.path.exists(path):
        raise MTSTLoadError(f"The {what} {path} is a file, not a model folder (a folder with config.json).")
    elif is_local_path(path):
        raise MTSTLoadError(f"The {what} folder {path} does not exist (current directory: {os.getcwd()}).")


def check_weights_file(path: str | os.PathLike) -> None:
    """Raise `MTSTLoadError` unless `path` is a complete safetensors file: its header is readable and the file is
    exactly as long as the tensors it declares (a file cut short by an interrupted write or download fails)."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            header_size = int.from_bytes(f.read(8), "little")
            if size < 8 or not 0 < header_size <= size - 8:
                raise ValueError(f"{size} bytes, too short for its header")
            header = json.loads(f.read(header_size))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        if 8 + header_size + end != size:
            raise ValueError(f"{size} bytes where its header declares {8 + header_size + end}")
    except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError) as err:
        raise MTSTLoadError(
            f"The weights file {path} is truncated or corrupt ({err}); it was probably cut short by an interrupted "
            "save or download. Save or download the model again."
        ) from err


def check_weights(folder: str | os.PathLike) -> None:
    """Raise `MTSTLoadError` unless `folder` holds complete safetensors weights (`model.safetensors`, or every shard
    of `model.safetensors.index.json`). MTST models are only ever saved, and loaded, as safetensors."""
    folder = os.path.normpath(folder)
    index = os.path.join(folder, SAFE_WEIGHTS_INDEX_NAME)
    if os.path.isfile(index):
        try:
            with open(index, encoding="utf-8") as f:
                shards = sorted(set(json.load(f)["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise MTSTLoadError(f"The weights index {index} is unreadable ({err}); save the model again.") from err
        files = [os.path.join(folder, shard) for shard in shards]
    else:
        files = [os.path.join(folder, SAFE_WEIGHTS_NAME)]
    for path in files:
        if not os.path.isfile(path):
            others = sorted(n for n in os.listdir(folder) if n.startswith("pytorch_model") and n.endswith(".bin"))
            hint = f" (it has {', '.join(others)}, which MTST does not load: only safetensors)" if others else ""
            raise MTSTLoadError(
                f"{folder} has no weights file {os.path.basename(path)}{hint}. Pass a folder written by "
                "save_pretrained or by the training script."
            )
        check_weights_file(path)


def _choice(name: str, value, allowed: tuple) -> str:
    if value not in allowed:
        raise MTSTConfigError(f"Unknown {name} {short_repr(value)}; allowed values: {', '.join(map(repr, allowed))}.")
    return value


def check_head_options(head: Mapping, where: str) -> None:
    """Raise `MTSTConfigError`, its message starting with `where`, when a head option that `head` sets has a value
    that is not allowed. The one set of rules for head options: task files (`mtst.data.tasks`) check them with it
    too."""
    if "dropout" in head:
        dropout = head["dropout"]
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise MTSTConfigError(f"{where}: 'dropout' must be a number in [0, 1); got {short_repr(dropout)}.")
    if "layer_norm" in head and not isinstance(head["layer_norm"], bool):
        raise MTSTConfigError(f"{where}: 'layer_norm' must be true or false; got {short_repr(head['layer_norm'])}.")
    if "activation" in head and head["activation"] not in ACTIVATIONS:
        raise MTSTConfigError(
            f"{where}: unknown activation {short_repr(head['activation'])}; allowed values: "
            f"{', '.join(map(repr, ACTIVATIONS))}."
        )
    hidden = head.get("hidden_size")
    if hidden is not None and (isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1):
        raise MTSTConfigError(f"{where}: 'hidden_size' must be a positive integer or null; got {short_repr(hidden)}.")


# The rules of a task entry, shared by MTSTConfig and task config files (mtst.data.tasks): each returns what is wrong
# with a value, or None. A task name becomes a head name, a metric prefix and file names, so it is plain ASCII.
_TASK_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")
MAX_TASK_NAME_LENGTH = 64


def task_name_problem(name: Any) -> str | None:
    if isinstance(name, str) and _TASK_NAME.fullmatch(name) and len(name) <= MAX_TASK_NAME_LENGTH:
        return None
    return (
        f"a task name must be 1 to {MAX_TASK_NAME_LENGTH} ASCII letters, digits, '_' or '-', starting with a letter "
        f"or '_'; got {short_repr(name)}"
    )


def labels_problem(labels: Any, minimum: int = 2) -> str | None:
    """A list of at least `minimum` distinct, non-empty label names (two; a multi-label task's one label is a yes/no
    decision)."""
    if isinstance(labels, (str, bytes)) or not isinstance(labels, (list, tuple)) or not labels:
        return f"'labels' must be a non-empty list of label names; got {short_repr(labels)}"
    if not all(isinstance(label, str) and label for label in labels):
        return f"'labels' must be a list of non-empty strings; got {short_repr(list(labels))}"
    if len(labels) < minimum:
        return f"a task needs at least two labels; got {short_repr(list(labels))}"
    counts: dict[str, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    duplicates = sorted(label for label, n in counts.items() if n > 1)
    if duplicates:
        return f"duplicate label(s) {short_repr(duplicates, 200)} in 'labels' (each label once)"
    return None


def loss_weight_problem(weight: Any) -> str | None:
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 < weight < float("inf"):
        return f"'loss_weight' must be a positive finite number; got {short_repr(weight)}"
    return None


def _between(value: Any, low: float, high: float) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and low < value < high


def score_range_problem(score_range: Any) -> str | None:
    """A similarity task's score range: two finite numbers, low < high."""
    numbers = isinstance(score_range, (list, tuple)) and all(
        _between(v, -float("inf"), float("inf")) for v in score_range
    )
    if not numbers or len(score_range) != 2 or not score_range[0] < score_range[1]:
        return f"'score_range' must be two numbers [low, high] with low < high; got {short_repr(score_range)}"
    return None


def min_labels(task_type: str) -> int:
    """How many labels a task of this type needs: none for regression, one for multi-label, else two."""
    return {REGRESSION: 0, MULTI_LABEL_CLASSIFICATION: 1}.get(task_type, 2)


def numbers_problem(name: str, values: Any, count: int, low: float, high: float) -> str | None:
    """`count` numbers (one per label), each in the open interval (low, high)."""
    if not isinstance(values, (list, tuple)) or len(values) != count:
        return f"'{name}' must be a list of {count} numbers (one per label); got {short_repr(values)}"
    if not all(_between(v, low, high) for v in values):
        return f"'{name}' must hold numbers in ({low:g}, {high:g}); got {short_repr(list(values))}"
    return None


def _type_options(where: str, task_type: str, spec: Mapping, labels: list[str]) -> dict:
    """A multi-label or regression task's own entries (TYPE_KEYS), checked and with their defaults."""
    inf = float("inf")
    if task_type == MULTI_LABEL_CLASSIFICATION:
        thresholds, pos_weight = spec.get("thresholds") or [0.5] * len(labels), spec.get("pos_weight")
        problem = numbers_problem("thresholds", thresholds, len(labels), 0.0, 1.0)
        if pos_weight is not None:
            problem = problem or numbers_problem("pos_weight", pos_weight, len(labels), 0.0, inf)
        if problem:
            raise MTSTConfigError(f"{where}: {problem}.")
        return {
            "thresholds": [float(v) for v in thresholds],
            "pos_weight": pos_weight and list(map(float, pos_weight)),
        }
    mean, std = spec.get("score_mean", 0.0), spec.get("score_std", 1.0)
    if not (_between(mean, -inf, inf) and _between(std, 0.0, inf)):
        raise MTSTConfigError(
            f"{where}: 'score_mean' must be a finite number and 'score_std' a positive one; got "
            f"{short_repr(mean)}, {short_repr(std)}."
        )
    return {"score_mean": float(mean), "score_std": float(std)}


def _normalize_embedding_task(where: str, task_type: str, spec: Mapping) -> dict:
    """Check an embedding task's entry (no labels, no head): its loss, score range and loss weight."""
    unknown = sorted(set(spec) - set(EMBEDDING_TASK_KEYS))
    if unknown:
        raise MTSTConfigError(
            f"{where}: option(s) {short_repr(unknown, 200)} do not apply to a {task_type} task (it trains the "
            f"sentence embedding, with no head and no labels); allowed options: {', '.join(EMBEDDING_TASK_KEYS)}."
        )
    losses = EMBEDDING_LOSSES[task_type]
    loss = spec.get("loss") or losses[0]
    if loss not in losses:
        allowed = ", ".join(map(repr, losses))
        raise MTSTConfigError(f"{where}: unknown loss {short_repr(loss)}; allowed values: {allowed}.")
    task = {"type": task_type, "loss": loss}
    if task_type == SENTENCE_SIMILARITY:
        score_range = spec.get("score_range")
        if score_range is not None and (problem := score_range_problem(score_range)):
            raise MTSTConfigError(f"{where}: {problem}.")
        task["score_range"] = [float(v) for v in score_range] if score_range is not None else None
    elif spec.get("score_range") is not None:
        raise MTSTConfigError(f"{where}: 'score_range' applies to sentence_similarity tasks only.")
    return task


def _normalize_task(name: str, spec, head_defaults: dict) -> dict:
    """Check one task entry and return it with every head option filled in."""
    where = f"Task {short_repr(name)}"
    problem = task_name_problem(name)
    if problem:
        raise MTSTConfigError(problem[0].upper() + problem[1:] + ".")
    if not isinstance(spec, Mapping):
        raise MTSTConfigError(f"{where}: expected a mapping with keys {', '.join(TASK_KEYS)}; got {short_repr(spec)}.")
    if "type" not in spec:
        raise MTSTConfigError(f"{where}: missing 'type'; allowed values: {', '.join(map(repr, TASK_TYPES))}.")
    task_type = spec["type"]
    if task_type not in TASK_TYPES:
        raise MTSTConfigError(
            f"{where}: unknown task type {short_repr(task_type)}; allowed values: {', '.join(map(repr, TASK_TYPES))}."
        )
    if task_type in EMBEDDING_TASK_TYPES:
        task = _normalize_embedding_task(where, task_type, spec)
        return {**task, "loss_weight": _checked_loss_weight(where, spec.get("loss_weight", 1.0))}
    allowed = TASK_KEYS + TYPE_KEYS.get(task_type, ())
    unknown = sorted(set(spec) - set(allowed))
    if unknown:
        raise MTSTConfigError(
            f"{where}: unknown option(s) {short_repr(unknown, 200)}; allowed options: {', '.join(allowed)}."
        )
    labels = spec.get("labels")
    if task_type == REGRESSION and labels not in (None, []):
        raise MTSTConfigError(f"{where}: a regression task predicts one number and takes no 'labels'.")
    problem = labels_problem(labels, min_labels(task_type)) if task_type != REGRESSION else None
    if problem:
        raise MTSTConfigError(f"{where}: {problem}.")
    labels = list(labels or [])

    task = {"type": task_type, "labels": labels}
    for key, default in head_defaults.items():
        task[key] = spec.get(key, default)
    check_head_options(task, where)
    task["loss_weight"] = _checked_loss_weight(where, spec.get("loss_weight", 1.0))
    if task_type in TYPE_KEYS:
        task.update(_type_options(where, task_type, spec, labels))
    return task


def _checked_loss_weight(where: str, weight: Any) -> float:
    problem = loss_weight_problem(weight)
    if problem:
        raise MTSTConfigError(f"{where}: {problem}.")
    return float(weight)


class MTSTConfig(PretrainedConfig):
    r"""
    Configuration of an [`MTSTModel`]: a shared transformer encoder, a pooled (optionally projected and normalized)
    sentence embedding, and one head per task.

    Args:
        encoder (`PretrainedConfig` or `dict`, *optional*):
            Configuration of the shared backbone (any `AutoModel` encoder: BERT, DistilBERT, RoBERTa, MiniLM, ...).
            A dict must carry its `model_type`. Defaults to a BERT-base configuration.
        pooling (`str`, *optional*, defaults to `"mean"`):
            How token states become one sentence vector: `"mean"` (masked average), `"cls"` (first token) or
            `"max"` (masked maximum).
        normalize (`str`, *optional*, defaults to `"none"`):
            Normalization of the returned sentence embedding: `"none"`, `"l2"` or `"l1"`. Sequence heads read the
            embedding *before* normalization, so this option never changes classification results.
        embedding_dim (`int`, *optional*):
            When set, a linear projection maps the pooled vector to this size. `None` keeps the encoder's hidden size.
        embedding_adapter (`bool`, *optional*, defaults to `False`):
            A residual linear map `x + W x` (W starts at zero) between the vector sequence heads read and the returned
            sentence embedding. Embedding preservation trains it to map the changed encoder's vector back to the
            starting model's embedding, so the encoder stays free for the heads.
        tasks (`dict`, *optional*):
            Ordered mapping `{task_name: {"type": ..., "labels": [...], **head_options}}`. `type` is
            `"sequence_classification"`, `"token_classification"`, `"multi_label_classification"` (zero or more
            labels per text; `thresholds` per label [0.5 each], optional `pos_weight` per label), `"regression"`
            (one number per text, no labels; `score_mean` [0.0] and `score_std` [1.0] standardise it for the loss),
            or an embedding task (`"sentence_similarity"`, `"retrieval"`: no head); `labels` lists the label names
            in id order. Head options (defaults in brackets): `dropout` [0.1], `layer_norm` [True], `activation`
            ["gelu"; also "relu", "tanh", "silu", "none"], `hidden_size` [None: no extra dense layer], `loss_weight`
            [1.0]. `None` builds an embedding-only model.
        default_task (`str`, *optional*):
            Task picked by the per-task views ([`MTSTForSequenceClassification`], [`MTSTForTokenClassification`])
            when none is named. Defaults to the first task of the matching type.
        primary_task (`str`, *optional*):
            Task whose pipeline tag and widget examples represent the model on the Hub. Defaults to the first task.
        head_dropout (`float`, *optional*, defaults to 0.1):
            Default `dropout` for task heads that do not set their own.
        head_layer_norm (`bool`, *optional*, defaults to `True`):
            Default `layer_norm` for task heads that do not set their own.
        head_activation (`str`, *optional*, defaults to `"gelu"`):
            Default `activation` for task heads that do not set their own.
        head_hidden_size (`int`, *optional*):
            Default `hidden_size` for task heads that do not set their own.
        kwargs:
            Passed to [`PretrainedConfig`].

    Example:

    ```python
    >>> from transformers import BertConfig
    >>> from configuration_mtst import MTSTConfig
    >>> config = MTSTConfig(
    ...     encoder=BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37),
    ...     tasks={"topic": {"type": "sequence_classification", "labels": ["World", "Sports"]}},
    ... )
    >>> config.task_names
    ['topic']
    ```
    """

    model_type = "mtst"
    # The encoder is a nested config, serialised under "encoder" with its own model_type.
    if SubConfigSpec is not None:
        sub_configs_defaults = {"encoder": SubConfigSpec(config_class=AutoConfig, model_type="bert")}
    else:
        sub_configs = {"encoder": AutoConfig}

    def __init__(
        self,
        encoder=None,
        pooling: str = "mean",
        normalize: str = "none",
        embedding_dim: int | None = None,
        embedding_adapter: bool = False,
        tasks: Mapping | None = None,
        default_task: str | None = None,
        primary_task: str | None = None,
        head_dropout: float = 0.1,
        head_layer_norm: bool = True,
        head_activation: str = "gelu",
        head_hidden_size: int | None = None,
        **kwargs,
    ):
        if encoder is None:
            encoder = AutoConfig.for_model("bert")
        elif isinstance(encoder, Mapping):
            encoder = dict(encoder)
            model_type = encoder.pop("model_type", None)
            if not model_type:
                raise MTSTConfigError("`encoder` given as a dict must contain the backbone's 'model_type'.")
            encoder = AutoConfig.for_model(model_type, **encoder)
        elif not isinstance(encoder, PretrainedConfig):
            raise MTSTConfigError(f"`encoder` must be a PretrainedConfig or a dict; got {type(encoder).__name__}.")
        self.encoder = encoder

        self.pooling = _choice("pooling", pooling, POOLING_MODES)
        self.normalize = _choice("normalize", "none" if normalize is None else normalize, NORMALIZATIONS)
        if embedding_dim is not None and (
            isinstance(embedding_dim, bool) or not isinstance(embedding_dim, int) or embedding_dim < 1
        ):
            raise MTSTConfigError(
                f"`embedding_dim` must be a positive integer or None; got {short_repr(embedding_dim)}."
            )
        self.embedding_dim = embedding_dim
        if not isinstance(embedding_adapter, bool):
            raise MTSTConfigError(f"`embedding_adapter` must be true or false; got {short_repr(embedding_adapter)}.")
        self.embedding_adapter = embedding_adapter

        head_defaults = dict(zip(HEAD_DEFAULTS, (head_dropout, head_layer_norm, head_activation, head_hidden_size)))
        for key, value in head_defaults.items():  # head_dropout, head_layer_norm, head_activation, head_hidden_size
            setattr(self, f"head_{key}", value)
        if tasks is not None:
            if isinstance(tasks, (list, tuple)):
                # Accept the task-file shape [{"name": ..., "type": ...}, ...] as well as a mapping.
                entries = [dict(entry) for entry in tasks]
                names = [entry.pop("name", None) for entry in entries]
                tasks = dict(zip(names, entries))
                if len(tasks) != len(names):
                    dup = sorted({n for n in names if names.count(n) > 1})
                    raise MTSTConfigError(f"Duplicate task name(s) {dup}; every task needs its own name.")
            if not isinstance(tasks, Mapping):
                raise MTSTConfigError(f"`tasks` must be a mapping of task name to options; got {short_repr(tasks)}.")
            if not tasks:
                raise MTSTConfigError("`tasks` is empty: declare at least one task, or pass tasks=None.")
            tasks = {name: _normalize_task(name, spec, head_defaults) for name, spec in tasks.items()}
        self.tasks = tasks

        names = list(tasks or {})
        for option, value in (("default_task", default_task), ("primary_task", primary_task)):
            if value is not None and value not in names:
                raise MTSTConfigError(
                    f"`{option}` {short_repr(value)} is not a task; tasks: {', '.join(names) or '(none)'}."
                )
        self.default_task = default_task
        self.primary_task = primary_task
        super().__init__(**kwargs)

    @property
    def task_names(self) -> list[str]:
        return list(self.tasks or {})

    def _task(self, name: str) -> dict:
        if not self.tasks or name not in self.tasks:
            raise MTSTConfigError(
                f"Unknown task {short_repr(name)}; this model's tasks: {', '.join(self.task_names) or '(none)'}."
            )
        return self.tasks[name]

    def task_type(self, name: str) -> str:
        return self._task(name)["type"]

    def task_labels(self, name: str) -> list[str]:
        """The label names of a task with a head; an embedding task has none (`[]`)."""
        return list(self._task(name).get("labels") or [])

    def default_task_of(self, *task_types: str) -> str | None:
        """The task a per-task view of these types shows when none is named: `default_task` when it has one of
        them, else the first task of one of them."""
        if self.default_task and self.tasks[self.default_task]["type"] in task_types:
            return self.default_task
        candidates = self.tasks_of_type(*task_types)
        return candidates[0] if candidates else None

    def tasks_of_type(self, *task_types: str) -> list[str]:
        return [name for name in self.task_names if self.tasks[name]["type"] in task_types]

    @property
    def head_task_names(self) -> list[str]:
        """The tasks with a classification head (the others train the sentence embedding itself)."""
        return [name for name in self.task_names if self.tasks[name]["type"] in HEAD_TASK_TYPES]

    def is_embedding_task(self, name: str) -> bool:
        return self.task_type(name) in EMBEDDING_TASK_TYPES

    @property
    def loss_weights(self) -> dict[str, float]:
        return {name: spec["loss_weight"] for name, spec in (self.tasks or {}).items()}

    @property
    def hidden_size(self) -> int:
        """Width of the encoder's token states."""
        return self.encoder.hidden_size

    @property
    def sentence_embedding_dimension(self) -> int:
        return self.embedding_dim or self.encoder.hidden_size

    def to_dict(self):
        output = super().to_dict()
        # config.json is written with sorted keys, so the ordered task table is saved as a list of entries.
        if self.tasks is not None:
            output["tasks"] = [{"name": name, **copy.deepcopy(spec)} for name, spec in self.tasks.items()]
        return output


MTSTConfig.register_for_auto_class()
# Imported from the installed package (not as remote code), AutoConfig/AutoTokenizer know "mtst" as local code. A copy
# loaded as remote code (module `transformers_modules...`) must not register itself: transformers would then reuse
# that one revision's classes for every later MTST load in the process, whatever revision it asks for.
if not __name__.startswith("transformers_modules"):
    AutoConfig.register("mtst", MTSTConfig, exist_ok=True)
