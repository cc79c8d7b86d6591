"""MTST modeling: a shared transformer encoder, pooled sentence embeddings, and one head per task.

This file travels to the Hub with the weights (``trust_remote_code``): it imports only torch and transformers.
"""

from __future__ import annotations

import inspect
import json
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, AutoTokenizer, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput, TokenClassifierOutput
from transformers.utils import ModelOutput

try:  # a package module: trust_remote_code copies the files that these relative imports name side by side
    from . import configuration_mtst as mtst_config
    from .configuration_mtst import MTSTConfig
    from .heads_mtst import EmbeddingAdapter, Pooling, TaskHead, head_output, task_loss
    from .pipeline_mtst import CUSTOM_PIPELINES, embed_sentences
except ImportError:  # a saved copy imported as a top-level module (its folder on sys.path)
    from heads_mtst import EmbeddingAdapter, Pooling, TaskHead, head_output, task_loss
    from pipeline_mtst import CUSTOM_PIPELINES, embed_sentences

    import configuration_mtst as mtst_config
    from configuration_mtst import MTSTConfig

IGNORE_INDEX, SEQUENCE_CLASSIFICATION, TOKEN_CLASSIFICATION = (
    mtst_config.IGNORE_INDEX,
    mtst_config.SEQUENCE_CLASSIFICATION,
    mtst_config.TOKEN_CLASSIFICATION,
)
MTSTConfigError, MTSTLoadError = mtst_config.MTSTConfigError, mtst_config.MTSTLoadError
first_sentence, is_local_path = mtst_config.first_sentence, mtst_config.is_local_path
check_model_folder, check_weights = mtst_config.check_model_folder, mtst_config.check_weights
check_weights_file, SAFE_WEIGHTS_NAME = mtst_config.check_weights_file, mtst_config.SAFE_WEIGHTS_NAME
HEAD_TASK_TYPES, EMBEDDING_TASK_TYPES = mtst_config.HEAD_TASK_TYPES, mtst_config.EMBEDDING_TASK_TYPES
SENTENCE_HEAD_TYPES = mtst_config.SENTENCE_HEAD_TYPES
# transformers' `problem_type` of each sentence head, which the text-classification pipeline reads (softmax, sigmoid,
# or the raw value)
PROBLEM_TYPES = {
    SEQUENCE_CLASSIFICATION: "single_label_classification",
    mtst_config.MULTI_LABEL_CLASSIFICATION: "multi_label_classification",
    mtst_config.REGRESSION: "regression",
}


# What `SentenceTransformer(path, trust_remote_code=True)` reads: one Transformer module whose output is the model's
# own `sentence_embedding` (pooling, projection and normalization included), so both libraries give the same vectors.
SENTENCE_TRANSFORMERS_FILES = {
    "modules.json": [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.base.modules.transformer.Transformer"}
    ],
    "sentence_bert_config.json": {
        "transformer_task": "feature-extraction",
        "modality_config": {"text": {"method": "forward", "method_output_name": "sentence_embedding"}},
        "module_output_name": "sentence_embedding",
    },
    "config_sentence_transformers.json": {"model_type": "SentenceTransformer", "similarity_fn_name": "cosine"},
}


# Every auto class an MTST checkpoint answers to; written into config.json so the code travels with the weights.
AUTO_MAP = {
    "AutoConfig": "configuration_mtst.MTSTConfig",
    "AutoModel": "modeling_mtst.MTSTModel",
    "AutoModelForSequenceClassification": "modeling_mtst.MTSTForSequenceClassification",
    "AutoModelForTokenClassification": "modeling_mtst.MTSTForTokenClassification",
}


@dataclass
class MTSTModelOutput(ModelOutput):
    """
    Output of [`MTSTModel`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*):
            The named task's unweighted loss (`heads_mtst.task_loss`: cross-entropy with ignore index -100; binary
            cross-entropy for multi-label tasks; squared error of standardised scores for regression). When
            `labels` is a dict `{task: labels}` and no task is named: the sum of each labelled task's loss times its
            `loss_weight`.
        logits (`torch.FloatTensor`, *optional*):
            Logits of the named task: `(batch_size, num_labels)` for sequence and multi-label tasks, `(batch_size, 1)`
            for regression tasks (the predicted score, on the data's scale), `(batch_size, sequence_length,
            num_labels)` for token tasks. `None` when no task is named.
        sentence_embedding (`torch.FloatTensor` of shape `(batch_size, embedding_dim)`):
            Pooled, projected (when `embedding_dim` is set), adapted (when the model has an `embedding_adapter`) and
            normalized (per `normalize`) sentence vector. It comes before the per-task dicts, so without a task
            `output[0]` is this tensor (what `pipeline("feature-extraction")` returns).
        task_logits (`dict[str, torch.FloatTensor]`):
            Logits of every task when no task is named, else of the named task only.
        task_losses (`dict[str, torch.FloatTensor]`, *optional*):
            Unweighted loss of every task that received labels.
        last_hidden_state (`torch.FloatTensor` of shape `(batch_size, sequence_length, hidden_size)`):
            The encoder's token states.
        hidden_states (`tuple(torch.FloatTensor)`, *optional*):
            The encoder's hidden states per layer, when `output_hidden_states=True`.
        attentions (`tuple(torch.FloatTensor)`, *optional*):
            The encoder's attention weights per layer, when `output_attentions=True`.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    sentence_embedding: torch.FloatTensor | None = None
    task_logits: dict[str, torch.FloatTensor] | None = None
    task_losses: dict[str, torch.FloatTensor] | None = None
    last_hidden_state: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


class MTSTPreTrainedModel(PreTrainedModel):
    config_class = MTSTConfig
    config: MTSTConfig
    base_model_prefix = "mtst"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True
    # The loss is a mean over the batch's labelled positions; the Trainer must not rescale it by a token count.
    accepts_loss_kwargs = False

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """Loads as usual, from safetensors only; a local folder's weights are checked first, so missing or truncated
        weights raise `MTSTLoadError` (an `OSError`) naming the file instead of a deserialization error, and so do
        weights whose shapes do not fit the config (an edited label list or position size)."""
        kwargs.setdefault("use_safetensors", True)
        if os.path.isdir(pretrained_model_name_or_path) and kwargs["use_safetensors"]:
            check_weights(os.path.join(pretrained_model_name_or_path, kwargs.get("subfolder") or "."))
        try:
            return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        except RuntimeError as err:  # transformers: "... set `ignore_mismatched_sizes` ..." after its size report
            if "ignore_mismatched_sizes" not in str(err) or kwargs.get("ignore_mismatched_sizes"):
                raise
            shown = cls._mismatched_shapes(pretrained_model_name_or_path, *model_args, **kwargs)
            raise MTSTLoadError(
                f"The weights of {pretrained_model_name_or_path} do not fit its config.json{shown}: the config was "
                "edited (a label list, the position size) or belongs to other weights. Put back the config.json saved "
                "with these weights, or pass ignore_mismatched_sizes=True to re-create those layers at random."
            ) from None

    @classmethod
    def _mismatched_shapes(cls, path, *model_args, **kwargs) -> str:
        """' (tensor: shape in the weights, shape the config makes; ...)', read by loading once more with the
        mismatched layers left random; '' when that fails too."""
        try:
            _, info = super().from_pretrained(
                path, *model_args, **{**kwargs, "ignore_mismatched_sizes": True, "output_loading_info": True}
            )
            mismatched = sorted((str(k), tuple(a), tuple(b)) for k, a, b in info.get("mismatched_keys", ()))
        except (RuntimeError, OSError, ValueError, TypeError):
            return ""
        shown = "; ".join(
            f"{key}: {list(saved)} in the weights, {list(made)} by the config" for key, saved, made in mismatched[:6]
        )
        return f" ({shown}{'; ...' if len(mismatched) > 6 else ''})" if shown else ""

    def push_to_hub(self, repo_id: str, **kwargs):
        """With the mtst package installed, `mtst.push_to_hub(self, repo_id, **kwargs)`: the model with MTST's card,
        the code files and `handler.py` (`tokenizer=` uploads the tokenizer too); else transformers' own push."""
        try:
            from mtst.hub.card import push_to_hub
        except ImportError:  # remote code on a machine without mtst
            return super().push_to_hub(repo_id, **kwargs)
        return push_to_hub(self, repo_id, **kwargs)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Saves as usual, plus the small JSON files that let sentence-transformers load the folder."""
        result = super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            for name, content in SENTENCE_TRANSFORMERS_FILES.items():
                with open(os.path.join(save_directory, name), "w", encoding="utf-8") as f:
                    json.dump(content, f, indent=2)
        return result


class MTSTModel(MTSTPreTrainedModel):
    """
    One shared encoder, a sentence embedding (pooling -> optional projection -> optional normalization) and a head per
    task. `forward(..., task="name")` returns that task's logits and loss; `forward(...)` with no task returns every
    task's logits. Sequence heads read the projected pooled vector *before* normalization (so `normalize` only shapes
    the returned embedding); token heads read the encoder's token states.
    """

    def __init__(self, config: MTSTConfig):
        super().__init__(config)
        config.auto_map = {**AUTO_MAP, **(getattr(config, "auto_map", None) or {})}
        config.custom_pipelines = {**CUSTOM_PIPELINES, **(getattr(config, "custom_pipelines", None) or {})}
        self.encoder = _build_encoder(config)
        self._encoder_takes_token_type_ids = "token_type_ids" in inspect.signature(self.encoder.forward).parameters
        self._max_positions = self.max_sequence_length()
        self.pooling = Pooling(config.pooling)
        hidden = config.encoder.hidden_size
        self.projection = nn.Linear(hidden, config.embedding_dim) if config.embedding_dim else None
        adapter = getattr(config, "embedding_adapter", False)  # configs saved before it existed have none
        self.embedding_adapter = EmbeddingAdapter(config.sentence_embedding_dimension) if adapter else None
        self.heads = nn.ModuleDict()
        for name, spec in (config.tasks or {}).items():
            if spec["type"] in HEAD_TASK_TYPES:  # embedding tasks train the sentence embedding, with no head
                self.heads[name] = self._new_head(spec)
        self.post_init()

    def _new_head(self, spec: dict) -> TaskHead:
        """A task head for one (normalized) task entry: sentence heads read the sentence vector, token heads the
        encoder's token states; a regression head has one output."""
        config = self.config
        sentence = spec["type"] in SENTENCE_HEAD_TYPES
        return TaskHead(
            config.sentence_embedding_dimension if sentence else config.encoder.hidden_size,
            len(spec["labels"]) or 1,
            dropout=spec["dropout"],
            layer_norm=spec["layer_norm"],
            activation=spec["activation"],
            hidden_size=spec["hidden_size"],
            layer_norm_eps=getattr(config.encoder, "layer_norm_eps", 1e-12),
        )

    def add_task(self, name: str, type: str, labels=None, replace: bool = False, **options) -> TaskHead | None:
        """
        Add a task with a freshly initialised head (`options`: `dropout`, `layer_norm`, `activation`, `hidden_size`,
        `loss_weight`; defaults from the config's `head_*` values), or an embedding task (no head, no labels;
        `options`: `loss`, `score_range`, `loss_weight`). Every other weight stays as it is. An existing task is an
        error unless `replace=True`, which re-creates its head (new labels) at the same place in the task table.
        Returns the new head (None for an embedding task).
        """
        tasks = dict(self.config.tasks or {})
        if name in tasks and not replace:
            raise MTSTConfigError(f"Task {name!r} already exists; pass replace=True to re-create it.")
        tasks[name] = {"type": type, **({"labels": list(labels)} if labels is not None else {}), **options}
        # MTSTConfig validates and completes every entry (head defaults from the config).
        checked = MTSTConfig(
            encoder=self.config.encoder.to_dict(),  # a copy: building a config resets the encoder's attention setting
            tasks=tasks,
            head_dropout=self.config.head_dropout,
            head_layer_norm=self.config.head_layer_norm,
            head_activation=self.config.head_activation,
            head_hidden_size=self.config.head_hidden_size,
        ).tasks
        if type in EMBEDDING_TASK_TYPES:
            if name in self.heads:  # nn.ModuleDict.pop has no default
                del self.heads[name]
            self.config.tasks = {**(self.config.tasks or {}), name: checked[name]}
            return None
        head = self._new_head(checked[name])
        head.apply(self._init_weights)
        reference = next(self.parameters(), None)
        if reference is not None:
            head.to(device=reference.device, dtype=reference.dtype)
        self.heads[name] = head
        self.config.tasks = {**(self.config.tasks or {}), name: checked[name]}
        return head

    @classmethod
    def from_backbone(cls, name_or_path: str, tasks=None, *, encoder_kwargs: dict | None = None, **config_kwargs):
        """
        Start an MTST from pretrained encoder weights (a Hub id or a local folder, including sentence-transformers
        folders); the task heads, and the projection if any, are freshly initialised.

        `config_kwargs` are [`MTSTConfig`] arguments (`pooling`, `normalize`, `embedding_dim`, ...);
        `encoder_kwargs` go to `AutoModel.from_pretrained` (`revision`, `cache_dir`, `attn_implementation`, ...).
        """
        check_model_folder(name_or_path)
        try:
            weights = os.path.join(str(name_or_path), SAFE_WEIGHTS_NAME)
            if os.path.isfile(weights):
                check_weights_file(weights)
            encoder = _load_pretrained_encoder(name_or_path, **(encoder_kwargs or {}))
        except MTSTLoadError:
            raise
        except (OSError, ValueError, KeyError) as err:  # missing path, not a model folder, unknown model_type, ...
            raise MTSTLoadError(
                f"Could not load the backbone {str(name_or_path)!r} ({first_sentence(err)}). Pass a Hub "
                "model id or a local folder written by save_pretrained (config.json and weights) of an encoder such "
                "as BERT, MiniLM or RoBERTa."
            ) from err
        config = MTSTConfig(encoder=encoder.config, tasks=tasks, **config_kwargs)
        model = cls(config)
        model.encoder.load_state_dict(encoder.state_dict())
        model.config.encoder._name_or_path = str(name_or_path)
        return model

    # ----------------------------------------------------------------------------------------------------------------
    def embeddings_module(self) -> nn.Module:
        """The backbone's embedding module (token, position and type embeddings)."""
        for name in ("embeddings", "embed_tokens", "wte"):
            module = getattr(self.encoder, name, None)
            if module is not None:
                return module
        return self.encoder.get_input_embeddings()

    def max_sequence_length(self, tokenizer=None) -> int | None:
        """The longest input the encoder takes, in tokens: its position embeddings (less RoBERTa's padding offset),
        or the tokenizer's `model_max_length` when that is smaller; None when neither sets a limit."""
        limits = []
        positions = getattr(self.config.encoder, "max_position_embeddings", None)
        if isinstance(positions, int) and positions > 0:
            padding_idx = getattr(self.embeddings_module(), "padding_idx", None)  # RoBERTa: positions start after it
            limits.append(positions - (padding_idx + 1 if isinstance(padding_idx, int) else 0))
        model_max = getattr(tokenizer, "model_max_length", None)
        if isinstance(model_max, int) and 0 < model_max < 1_000_000:
            limits.append(model_max)
        return min(limits) if limits else None

    def get_input_embeddings(self):
        return self.encoder.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.encoder.set_input_embeddings(value)

    def _check_task(self, task: str) -> None:
        if task not in (self.config.tasks or {}):
            tasks = ", ".join(self.config.tasks or {}) or "(none)"
            raise MTSTConfigError(f"Unknown task {task!r}; this model's tasks: {tasks}.")

    # ----------------------------------------------------------------------------------------------------------------
    def embed(self, token_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Pooled and projected sentence vector, before normalization (what sequence heads read)."""
        pooled = self.pooling(token_states, attention_mask)
        return self.projection(pooled) if self.projection is not None else pooled

    def add_embedding_adapter(self) -> EmbeddingAdapter:
        """Give the model an `EmbeddingAdapter` (the identity: no output changes) unless it has one; returns it."""
        if self.embedding_adapter is None:
            reference = next(self.parameters())
            adapter = EmbeddingAdapter(self.config.sentence_embedding_dimension)
            self.embedding_adapter = adapter.to(device=reference.device, dtype=reference.dtype)
            self.config.embedding_adapter = True
        return self.embedding_adapter

    def adapt_embedding(self, embedding: torch.Tensor) -> torch.Tensor:
        """The sentence embedding, before normalization, from the vector sequence heads read (`embed`)."""
        return self.embedding_adapter(embedding) if self.embedding_adapter is not None else embedding

    def normalize_embedding(self, embedding: torch.Tensor) -> torch.Tensor:
        """The returned sentence embedding from the vector sequence heads read: adapted, then normalized."""
        embedding = self.adapt_embedding(embedding)
        if self.config.normalize == "l2":
            return F.normalize(embedding, p=2, dim=-1)
        if self.config.normalize == "l1":
            return F.normalize(embedding, p=1, dim=-1)
        return embedding

    def _run_head(self, task: str, embedding: torch.Tensor, token_states: torch.Tensor) -> torch.Tensor:
        spec = self.config.tasks[task]
        return head_output(spec, self.heads[task](embedding if spec["type"] in SENTENCE_HEAD_TYPES else token_states))

    def _encoder_inputs(self, input_ids, attention_mask, token_type_ids, inputs_embeds) -> dict:
        """The encoder's inputs (an all-ones attention mask when none is given); inputs longer than the encoder's
        positions are an error that says how to truncate them."""
        length = (input_ids if input_ids is not None else inputs_embeds).shape[1]
        if self._max_positions is not None and length > self._max_positions:
            raise MTSTConfigError(
                f"The input has {length} tokens, more than the {self._max_positions} positions the encoder takes; "
                f"truncate it (tokenizer(..., truncation=True, max_length={self._max_positions}), or a max_seq_length "
                f"of at most {self._max_positions})."
            )
        if attention_mask is None:
            shape = input_ids.shape if input_ids is not None else inputs_embeds.shape[:2]
            device = input_ids.device if input_ids is not None else inputs_embeds.device
            attention_mask = torch.ones(shape, dtype=torch.long, device=device)
        encoder_inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if inputs_embeds is not None:
            encoder_inputs = {"inputs_embeds": inputs_embeds, "attention_mask": attention_mask}
        if token_type_ids is not None and self._encoder_takes_token_type_ids:
            encoder_inputs["token_type_ids"] = token_type_ids
        return encoder_inputs

    def _losses(self, task: str | None, task_logits: dict, labels) -> tuple[torch.Tensor, dict]:
        """(loss, {task: loss}): the task's loss, or with `task=None` and `labels` a dict, the loss-weighted sum."""
        label_map = labels if isinstance(labels, dict) else {task: labels}
        for name in label_map:
            self._check_task(name)
            if name not in task_logits:
                raise ValueError(f"Labels were given for task {name!r}, but only {task!r} was run.")
        task_losses = {
            name: task_loss(self.config.tasks[name], task_logits[name], value) for name, value in label_map.items()
        }
        if isinstance(labels, dict) and task is None:
            weights = self.config.loss_weights
            return sum(weights[name] * value for name, value in task_losses.items()), task_losses
        return task_losses[task], task_losses

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        task: str | None = None,
        labels: torch.Tensor | dict[str, torch.Tensor] | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> MTSTModelOutput:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`): token ids.
            attention_mask (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*): 1 for tokens.
            token_type_ids (`torch.LongTensor`, *optional*): passed on to encoders that take them, dropped otherwise.
            task (`str`, *optional*): the task whose logits and loss to compute; `None` runs every head.
            labels (`torch.Tensor` or `dict`, *optional*): `(batch_size,)` class ids for a sequence task,
                `(batch_size, sequence_length)` for a token task (-100 = ignored), `(batch_size, num_labels)` 0/1
                floats for a multi-label task, `(batch_size,)` scores for a regression task; with `task=None`, a
                dict `{task: labels}` gives the weighted sum of those tasks' losses.
        """
        if kwargs:  # a misspelled or unsupported argument is an error, never silently ignored
            raise TypeError(f"MTSTModel.forward got unexpected keyword argument(s): {', '.join(sorted(kwargs))}.")
        if task is not None:
            self._check_task(task)
        if labels is not None and task is None and not isinstance(labels, dict):
            raise ValueError(
                f"`labels` needs a `task` (one of {', '.join(self.heads)}), or must be a dict {{task: labels}}."
            )
        encoder_inputs = self._encoder_inputs(input_ids, attention_mask, token_type_ids, inputs_embeds)
        outputs = self.encoder(
            **encoder_inputs,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            return_dict=True,
        )
        token_states = outputs.last_hidden_state
        embedding = self.embed(token_states, encoder_inputs["attention_mask"])

        embedding_task = task is not None and task not in self.heads  # it trains the embedding: no head to run
        if embedding_task and labels is not None:
            raise ValueError(
                f"Task {task!r} trains the sentence embedding: its loss is computed by MultiTaskTrainer from the "
                "embeddings this forward returns, not from labels given here."
            )
        tasks = [] if embedding_task else [task] if task is not None else list(self.heads)
        task_logits = {name: self._run_head(name, embedding, token_states) for name in tasks}
        loss, task_losses = self._losses(task, task_logits, labels) if labels is not None else (None, None)

        return MTSTModelOutput(
            loss=loss,
            logits=task_logits.get(task) if task is not None else None,
            task_logits=task_logits,
            task_losses=task_losses,
            sentence_embedding=self.normalize_embedding(embedding),
            last_hidden_state=token_states,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )

    @torch.inference_mode()
    def encode(
        self,
        sentences: str | list[str],
        tokenizer=None,
        batch_size: int = 32,
        max_length: int | None = None,
        normalize: bool | None = None,
        convert_to_numpy: bool = False,
        show_progress_bar: bool = False,
        trust_remote_code: bool = False,
    ):
        """
        Sentence embeddings for `sentences`, in input order, as a `(N, D)` tensor (or numpy array). Sentences are
        sorted by their number of tokens internally so each batch carries little padding. `normalize=None` follows
        the config. Without a `tokenizer`, the model's folder or Hub id (`name_or_path`) gives one, running code from
        there only with `trust_remote_code=True`.
        """
        single = isinstance(sentences, str)
        sentences = [sentences] if single else list(sentences)
        if tokenizer is None:
            tokenizer = AutoTokenizer.from_pretrained(self.name_or_path, trust_remote_code=trust_remote_code)
        result = embed_sentences(self, sentences, tokenizer, batch_size, max_length, normalize, show_progress_bar)
        if convert_to_numpy:
            result = result.numpy()
        return result[0] if single else result

    def _encode_batch(self, inputs: dict) -> torch.Tensor:
        """Pooled, projected (not normalized) sentence vectors of one padded batch; other backends override it."""
        out = self.encoder(**_encoder_kwargs(self, inputs), return_dict=True)
        return self.embed(out.last_hidden_state, inputs["attention_mask"])


def _encoder_kwargs(model: MTSTModel, inputs: dict) -> dict:
    if not model._encoder_takes_token_type_ids:
        inputs = {k: v for k, v in inputs.items() if k != "token_type_ids"}
    return inputs


def _build_encoder(config: MTSTConfig) -> PreTrainedModel:
    """The backbone from its config, without a pooler (unused parameters would break DDP)."""
    try:
        return AutoModel.from_config(config.encoder, add_pooling_layer=False)
    except TypeError:
        return AutoModel.from_config(config.encoder)


def _load_pretrained_encoder(name_or_path: str, **kwargs) -> PreTrainedModel:
    try:
        return AutoModel.from_pretrained(name_or_path, add_pooling_layer=False, **kwargs)
    except TypeError:
        return AutoModel.from_pretrained(name_or_path, **kwargs)


class _MTSTTaskView(MTSTModel):
    """One task of an MTST checkpoint, seen as a standard single-task model (same weights, same names)."""

    task_types: tuple[str, ...] = ()

    def __init__(self, config: MTSTConfig, task: str | None = None, default_task: str | None = None):
        # `default_task` is the spelling that works through `pipeline(..., model_kwargs={"default_task": ...})`,
        # where `task` is taken by the pipeline itself.
        task = task or default_task or config.default_task_of(*self.task_types)
        if task not in (config.tasks or {}) or config.tasks[task]["type"] not in self.task_types:
            raise MTSTConfigError(
                f"{type(self).__name__} needs a task of type {', '.join(self.task_types)}; available: "
                f"{', '.join(config.tasks_of_type(*self.task_types)) or '(none)'}; got {task!r}."
            )
        labels = config.task_labels(task) or [task]  # a regression task's one output: its value
        _check_num_labels(config, task, labels)
        config.id2label = dict(enumerate(labels))
        config.label2id = {label: i for i, label in enumerate(labels)}
        config.problem_type = PROBLEM_TYPES.get(config.tasks[task]["type"])
        super().__init__(config)
        self.task = task
        self.num_labels = len(labels)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, **kwargs):
        """`MTSTModel.forward` of the view's task (its other arguments pass through), as a standard output."""
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        out = super().forward(**inputs, task=self.task, labels=labels, **kwargs)
        return self.output_class(
            loss=out.loss, logits=out.logits, hidden_states=out.hidden_states, attentions=out.attentions
        )


def _check_num_labels(config: MTSTConfig, task: str, labels: list[str]) -> None:
    """A `num_labels` given to `from_pretrained` (or a pipeline's `model_kwargs`) becomes generic `LABEL_i` names in
    the config; the head's size comes from the task's labels, so another count is an error, not silently ignored.
    (A count of 2 cannot be told from the config default and passes.)"""
    asked = dict(getattr(config, "id2label", None) or {})
    generic = all(name == f"LABEL_{i}" for i, name in asked.items())
    if generic and len(asked) not in (2, len(labels)):
        raise MTSTConfigError(
            f"num_labels={len(asked)} does not fit task {task!r}: it has {len(labels)} labels "
            f"({mtst_config.short_repr(labels)}), fixed by the trained heads. Leave num_labels out; to train another "
            "label set, add a task to the task config and train."
        )


class MTSTForSequenceClassification(_MTSTTaskView):
    """A sentence task of an MTST checkpoint as a standard sequence classifier (`text-classification` pipeline).
    Pick the task with `from_pretrained(path, task="name")` (in a pipeline: `model_kwargs={"default_task": "name"}`);
    the default is `config.default_task` or the first sentence task."""

    task_types = SENTENCE_HEAD_TYPES
    output_class = SequenceClassifierOutput


class MTSTForTokenClassification(_MTSTTaskView):
    """A token task of an MTST checkpoint as a standard token classifier (`token-classification` pipeline).
    Pick the task with `from_pretrained(path, task="name")` (in a pipeline: `model_kwargs={"default_task": "name"}`);
    the default is `config.default_task` or the first token task."""

    task_types = (TOKEN_CLASSIFICATION,)
    output_class = TokenClassifierOutput


MTSTModel.register_for_auto_class("AutoModel")
MTSTForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")
MTSTForTokenClassification.register_for_auto_class("AutoModelForTokenClassification")
