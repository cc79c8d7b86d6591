"""Model cards for MTST checkpoints, and publishing a model with its card.

- [`MTSTCardData`] (`mtst.hub.card_data`): what the card says; during training, `mtst.hub.callback`'s
  `MTSTCardCallback` fills it.
- [`write_model_card`]: renders `model_card.md` (Jinja, through `huggingface_hub.ModelCard`) into `README.md`, draws
  `loss_curve.svg` with matplotlib when it is installed, and finalizes the folder. It never raises: on any failure it
  logs a warning and writes a minimal card, so a card never blocks saving.
- [`push_to_hub`], [`export_for_hub`]: a folder (or a model) with its card to a Hub repo, or to a local folder as a Hub
  repo would receive it; what is uploaded, and how, is `mtst.hub.publish`'s.

The card never shows a local path or a token; facts that are unknown become HTML comments, never "None".
"""

from __future__ import annotations

import io
import logging
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

import jinja2
import yaml
from huggingface_hub import ModelCard, ModelCardData

from mtst import resources
from mtst.hub.card_data import TASK_TYPE_NAMES, MTSTCardData, as_number
from mtst.hub.publish import (
    LOSS_CURVE_FILE,
    MODEL_ID_PLACEHOLDER,
    README_FILE,
    finalize_model_dir,
    prepare_push,
    scrub,
    stage_upload,
    upload_folder,
)
from mtst.remote.configuration_mtst import MTSTConfig, first_sentence

logger = logging.getLogger(__name__)

__all__ = ["export_for_hub", "loss_curve_svg", "push_to_hub", "write_model_card"]

# What making a card can fail on for a reason other than a bug: the template (missing, unreadable, a Jinja error), the
# folder (unreadable config.json, no space), a value the card's YAML or the Hub's model-index refuses.
CARD_ERRORS = (OSError, ValueError, jinja2.TemplateError, yaml.YAMLError)
# The card template, package data (None: this installation lacks it; the card says so in a warning, naming where it
# was looked for).
TEMPLATE_PATH = resources.find("model_card.md")


def loss_curve_svg(train: Sequence[tuple[float, float]], validation: Sequence[tuple[float, float]] = ()) -> str | None:
    """An SVG line chart (matplotlib) of the training and validation loss by step. None when there is no finite
    point to draw, or when matplotlib is not installed (an optional dependency: the card then has no picture)."""
    series = [
        (
            name,
            sorted((float(x), float(y)) for x, y in points if as_number(x) is not None and as_number(y) is not None),
        )
        for name, points in (("Training loss", train), ("Validation loss", validation))
    ]
    if not any(points for _, points in series):
        return None
    try:
        import matplotlib
        from matplotlib.figure import Figure
    except ImportError:
        return None
    # text stays text, element ids and the metadata are fixed: the same losses give the same file
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "mtst"}):
        figure = Figure(figsize=(6.4, 3.6))
        axes = figure.subplots()
        for name, points in series:
            if points:
                dots = len(points) <= 60 or name == "Validation loss"
                axes.plot(*zip(*points), marker="o" if dots else None, markersize=3, linewidth=2, label=name)
        axes.set(xlabel="step", ylabel="loss", title="Training and validation loss")
        axes.grid(alpha=0.3)
        axes.legend()
        figure.tight_layout()
        svg = io.StringIO()
        figure.savefig(svg, format="svg", metadata={"Date": None})
    return svg.getvalue()


_MINIMAL_TEMPLATE = """---
{{ card_data }}
---

# MTST multi-task model

One shared transformer encoder with a head per task, loaded with `trust_remote_code=True`.

{% for name, task in tasks.items() %}- **{{ name }}** ({{ type_names.get(task.type, task.type) }}): {#
#}{% for label in task.labels or [] %}`{{ label }}`{% if not loop.last %}, {% endif %}{% endfor %}
{% endfor %}
```python
from transformers import pipeline

multitask = pipeline(model="{{ model_id }}", trust_remote_code=True)
```
{% if error %}
<!-- the full model card could not be generated ({{ error }}) -->
{% endif %}"""


def _minimal_card(config, error: BaseException | None = None) -> ModelCard:
    """A short card from the config alone (tasks and labels, the pipeline snippet) for when the full one fails."""
    data = MTSTCardData().register(config)
    full = data.header()
    header = ModelCardData(library_name="transformers", pipeline_tag=full.pipeline_tag, tags=full.tags)
    error_name = type(error).__name__ if error is not None else None
    kwargs = {"tasks": data._tasks(), "type_names": TASK_TYPE_NAMES, "model_id": MODEL_ID_PLACEHOLDER}
    return ModelCard.from_template(header, template_str=_MINIMAL_TEMPLATE, error=error_name, **kwargs)


def write_model_card(
    save_directory: str | os.PathLike,
    model=None,
    card_data: MTSTCardData | None = None,
    tokenizer=None,
) -> ModelCard:
    """Render the card into `save_directory/README.md` (plus `loss_curve.svg`) and finalize the folder.

    `model` is the MTST model (or None: the folder's config.json is read); `card_data` defaults to
    `model.model_card_data` (set by `mtst.hub.callback.MTSTCardCallback`) or an empty [`MTSTCardData`]; `tokenizer`,
    when given, is saved if the folder has none. A card that cannot be made (a missing or broken template, a folder
    that cannot be read or written, a value the Hub's card format refuses) never blocks saving: a warning says why and
    a minimal card is written (`CARD_ERRORS`); any other error is a bug and is raised.
    """
    folder = Path(save_directory)
    config = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        model = getattr(model, "module", model)
        if tokenizer is not None and not (folder / "tokenizer_config.json").exists():
            tokenizer.save_pretrained(folder)
        finalize_model_dir(folder)
        config = model.config if model is not None else MTSTConfig.from_pretrained(folder)
        if card_data is None:
            card_data = getattr(model, "model_card_data", None)
        card_data = (card_data if card_data is not None else MTSTCardData()).register(config)
        train, validation = card_data.loss_points()
        svg = loss_curve_svg(train, validation)
        if svg:
            (folder / LOSS_CURVE_FILE).write_text(svg, encoding="utf-8")
        else:
            (folder / LOSS_CURVE_FILE).unlink(missing_ok=True)
        missing = "no losses were logged" if not (train or validation) else "not drawn (matplotlib is not installed)"
        card_data._loss_curve_note = None if svg else missing
        template = TEMPLATE_PATH if TEMPLATE_PATH is not None else resources.path("model_card.md")
        card = ModelCard.from_template(card_data, template_path=str(template))
        card = ModelCard(_tidy(scrub(card.content, extra_paths=[folder.resolve()])))
    except CARD_ERRORS as err:
        logger.warning(
            "Model card: could not render the full card (%s: %s); writing a minimal one.",
            type(err).__name__,
            # a missing template: say where it was looked for (installation paths, no secrets)
            str(err) if isinstance(err, resources.ResourceNotFoundError) else scrub(str(err), extra_paths=[folder]),
        )
        card = _minimal_card(config if config is not None else getattr(model, "config", None), err)
    try:
        card.save(str(folder / README_FILE))
    except OSError as err:
        logger.warning("Model card: could not write %s (%s).", README_FILE, first_sentence(err))
    return card


def _tidy(text: str) -> str:
    """Collapse the blank lines left by template control blocks (never more than one empty line in a row)."""
    text = re.sub(r"[ \t]+\n", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip() + "\n"


def export_for_hub(model_dir: str | os.PathLike, target: str | os.PathLike, repo_id: str = "local/mtst-model"):
    """Write into the new folder `target` the files a `push_to_hub(model_dir, repo_id)` would upload (code files
    completed, card with `repo_id`), without any network: a local stand-in for the Hub repo, loadable with
    `AutoModel.from_pretrained(target, trust_remote_code=True)`. Returns the file names."""
    folder, target = Path(model_dir), Path(target)
    if not (folder / "config.json").is_file():
        raise ValueError(f"{folder} is not a saved model folder (no config.json).")
    finalize_model_dir(folder)
    if not (folder / README_FILE).is_file():
        write_model_card(folder)
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

    `model_dir_or_model` is a folder written by `save_pretrained` (+ [`write_model_card`]; a folder without a card
    gets one) or an MTST model (saved to a temporary folder first, with `tokenizer` and a card from `card_data`). What
    is uploaded (the config, safetensors weights, the code files and `handler.py`, the tokenizer, the card with the
    repo id in its snippets, the loss curve, the sentence-transformers files; nothing of the training state) and how
    (one commit, which deletes what an earlier version left; `revision` names a branch, created when missing; the
    token from `token`, `HF_TOKEN` or the login, never written anywhere) is `mtst.hub.publish.upload_folder`'s.
    """
    with tempfile.TemporaryDirectory(prefix="mtst_push_") as tmp:
        folder, model = prepare_push(model_dir_or_model, repo_id, Path(tmp) / "model", tokenizer)
        if model is not None or not (folder / README_FILE).is_file():
            write_model_card(folder, model, card_data, tokenizer)
        return upload_folder(folder, repo_id, token, private, revision, commit_message, create_pr)
