"""The MTST multitask pipeline: one forward pass per text answers every task.

Saved checkpoints name this pipeline in `config.custom_pipelines`, so
`pipeline(model=path_or_repo, trust_remote_code=True)` finds it. Texts longer than the model's maximum length are
split into overlapping windows (`stride`) and every window is used, so nothing is cut off.

This file travels to the Hub with the weights: it imports only numpy, torch and transformers.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoModel
from transformers.pipelines import PIPELINE_REGISTRY
from transformers.pipelines.base import ChunkPipeline

try:  # loaded as a package module (trust_remote_code copies these files side by side)
    from .configuration_mtst import (
        MULTI_LABEL_CLASSIFICATION,
        REGRESSION,
        SEQUENCE_CLASSIFICATION,
        TOKEN_CLASSIFICATION,
        MTSTConfigError,
    )
except ImportError:  # a saved copy imported as a top-level module (its folder on sys.path)
    from configuration_mtst import (
        MULTI_LABEL_CLASSIFICATION,
        REGRESSION,
        SEQUENCE_CLASSIFICATION,
        TOKEN_CLASSIFICATION,
        MTSTConfigError,
    )

PIPELINE_TASK = "multitask"
CUSTOM_PIPELINES = {
    PIPELINE_TASK: {"impl": "pipeline_mtst.MultiTaskPipeline", "pt": ["AutoModel"], "tf": [], "type": "text"}
}


def softmax(logits: np.ndarray) -> np.ndarray:
    """Probabilities over the last axis (shifted by the maximum, so large logits do not overflow)."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def group_entities(text: str, words: list[tuple[int, int, str, float]]) -> list[dict]:
    """BIO word labels -> entity spans. `words` holds (start, end, label, score) per word, in text order.

    An entity starts at `B-X`, or at `I-X` that does not continue an `X` entity; it continues over following `I-X`
    words. The entity's score is the mean of its words' scores; `word` is the exact text of the span.
    """
    entities, current = [], None
    for start, end, label, score in words:
        prefix, _, kind = label.partition("-") if "-" in label else ("", "", label)
        if label == "O" or not kind:
            current = None
            continue
        if prefix == "I" and current is not None and current["entity_group"] == kind:
            current["end"] = end
            current["_scores"].append(score)
            continue
        current = {"entity_group": kind, "start": start, "end": end, "_scores": [score]}
        entities.append(current)
    for entity in entities:
        scores = entity.pop("_scores")
        entity["score"] = float(np.mean(scores))
        entity["word"] = text[entity["start"] : entity["end"]]
    return [{k: e[k] for k in ("entity_group", "score", "word", "start", "end")} for e in entities]


def text_windows(tokenizer, text: str, max_length: int, stride: int) -> list[dict]:
    """Overlapping windows of at most `max_length` tokens (special tokens included) that together hold every token of
    `text`; each window repeats the last `stride` text tokens of the one before. Every window is a dict of lists:
    `input_ids`, `attention_mask` (and `token_type_ids` when the tokenizer makes them), `offset_mapping` (character
    offsets into `text`) and `word_ids` (the word's index in the whole text; None for special tokens).

    The text is tokenized once, whole (with its special-tokens mask), and cut here, rather than by the tokenizer's
    `return_overflowing_tokens`: how the overflow is split depends on the `tokenizers` release (0.23.2 returns a
    single, short second window for a long text and drops the rest), so windows cut by the tokenizer differ between
    installs. A fast tokenizer is needed (offsets and word ids)."""
    enc = tokenizer(
        text,
        truncation=False,
        padding=False,
        verbose=False,
        return_offsets_mapping=True,
        return_special_tokens_mask=True,
    )
    ids, special = list(enc["input_ids"]), list(enc.pop("special_tokens_mask"))
    # the special tokens around the text (e.g. [CLS] ... [SEP]): the text tokens must form one run between them
    text_positions = [k for k, flag in enumerate(special) if not flag]
    first, n = (text_positions[0], len(text_positions)) if text_positions else (0, 0)  # no text: one window
    if text_positions and text_positions != list(range(first, first + n)):
        raise ValueError(
            f"The tokenizer {type(tokenizer).__name__} adds special tokens inside the text, not only around it: the "
            "multitask pipeline cannot split long texts into windows with it."
        )
    body = max_length - (len(ids) - n)  # text tokens per window
    if not 0 <= stride < body:
        raise ValueError(f"stride must be in [0, {body}) for max_length={max_length}; got {stride}.")
    names = [key for key in ("input_ids", "attention_mask", "token_type_ids", "offset_mapping") if key in enc]
    columns = {name: list(enc[name]) for name in names}
    columns["word_ids"] = enc.word_ids()
    windows, start = [], 0
    while True:
        end = min(start + body, n)
        keep = [*range(first), *range(first + start, first + end), *range(first + n, len(ids))]
        windows.append({name: [values[i] for i in keep] for name, values in columns.items()})
        if end >= n:
            return windows
        start = end - stride


class MultiTaskPipeline(ChunkPipeline):
    """
    Every task's answer for each input text, from one forward pass per window:

    - sentence tasks: `{"label": str, "score": float}` (plus `"scores": {label: score}` with `return_all_scores=True`;
      with `top_k=k`, a list of the k best `{"label", "score"}`, highest first, as the text-classification pipeline);
    - multi-label tasks: `{"labels": [{"label", "score"}, ...]}`, the labels whose probability reaches the task's
      threshold for them, highest first (plus `"scores"` with `return_all_scores=True`; with `top_k=k`, the k most
      probable labels, whatever their thresholds);
    - regression tasks: `{"score": float}`, on the scale of the training data;
    - token tasks: a list of entity groups `{"entity_group", "score", "word", "start", "end"}` with character offsets
      into the input text (BIO decoding of the first sub-token of every word);
    - `"embedding"`: the sentence embedding as a list of floats, with `return_embedding=True` or when `tasks` names an
      embedding task (sentence_similarity, retrieval: they have no head and answer through the embedding).

    Parameters: `tasks` (names to answer, default all), `return_embedding`, `return_all_scores`, `top_k`,
    `max_length` (window size, default the tokenizer's limit) and `stride` (overlap between windows, default a quarter
    window). Any other parameter is a TypeError naming it (never silently ignored).
    """

    def _sanitize_parameters(
        self,
        tasks=None,
        return_embedding=None,
        return_all_scores=None,
        max_length=None,
        stride=None,
        top_k=None,
        **kwargs,
    ):
        if kwargs:
            raise TypeError(
                f"The multitask pipeline got unexpected parameter(s) {', '.join(sorted(kwargs))}; it takes tasks, "
                "return_embedding, return_all_scores, top_k, max_length and stride (the label count of a task is "
                "fixed by the trained model's config)."
            )
        preprocess, postprocess = {}, {}
        if top_k is not None:
            if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
                raise ValueError(f"top_k must be a whole number of at least 1; got {top_k!r}.")
            postprocess["top_k"] = top_k
        if max_length is not None:
            preprocess["max_length"] = max_length
        if stride is not None:
            preprocess["stride"] = stride
        if tasks is not None:
            tasks = [tasks] if isinstance(tasks, str) else list(tasks)
            unknown = [t for t in tasks if t not in self.model.config.task_names]
            if unknown:
                raise MTSTConfigError(
                    f"Unknown task(s) {unknown}; this model's tasks: {', '.join(self.model.config.task_names)}."
                )
            postprocess["tasks"] = tasks
        if return_embedding is not None:
            postprocess["return_embedding"] = return_embedding
        if return_all_scores is not None:
            postprocess["return_all_scores"] = return_all_scores
        return preprocess, {}, postprocess

    def _window(self, max_length: int | None, stride: int | None) -> tuple[int, int]:
        # the smaller of the tokenizer's and the encoder's limits (a tokenizer may allow more than the positions)
        limit = self.model.max_sequence_length(self.tokenizer) or 512
        max_length = min(max_length or limit, limit)
        special = self.tokenizer.num_special_tokens_to_add(pair=False)
        if max_length <= special + 1:
            raise ValueError(f"max_length={max_length} leaves no room for text ({special} special tokens).")
        stride = (max_length - special) // 4 if stride is None else stride
        if not 0 <= stride < max_length - special:
            raise ValueError(f"stride must be in [0, {max_length - special}); got {stride}.")
        return max_length, stride

    def preprocess(self, text, max_length=None, stride=None):
        if not isinstance(text, str):
            raise TypeError(f"The multitask pipeline takes strings; got {type(text).__name__}.")
        max_length, stride = self._window(max_length, stride)
        windows = text_windows(self.tokenizer, text, max_length, stride)
        for i, window in enumerate(windows):
            # word ids shifted by one, so that 0 (also the padding value) means "no word"
            word_ids = [-1 if w is None else w for w in window.pop("word_ids")]
            yield {
                **{name: torch.tensor([values]) for name, values in window.items()},
                "word_ids": torch.tensor([word_ids]) + 1,
                "text": text,
                "is_last": i == len(windows) - 1,
            }

    def _forward(self, model_inputs):
        extras = {k: model_inputs.pop(k) for k in ("offset_mapping", "word_ids", "text", "is_last")}
        out = self.model(**model_inputs)
        mask = model_inputs["attention_mask"]
        # backends without token states (ONNX Runtime) return the pooled vector themselves
        pooled = out.get("pooled_embedding")
        result = {
            "pooled": pooled if pooled is not None else self.model.embed(out.last_hidden_state, mask),
            "n_tokens": mask.sum(dim=1),
            "attention_mask": mask,
            **extras,
        }
        for name, logits in out.task_logits.items():
            result[f"logits::{name}"] = logits
        return result

    def postprocess(self, all_outputs, tasks=None, return_embedding=False, return_all_scores=False, top_k=None):
        config = self.model.config
        text = all_outputs[0]["text"]
        answer = {}
        # embedding tasks (sentence_similarity, retrieval) answer through the embedding: asked for by name, or with
        # `return_embedding=True`
        if tasks and any(config.is_embedding_task(t) for t in tasks):
            return_embedding = True
        # windows are averaged, weighted by how many tokens each one saw
        weights = np.array([float(o["n_tokens"][0]) for o in all_outputs])
        for name in [t for t in (config.task_names if tasks is None else tasks) if t in config.head_task_names]:
            labels, kind = config.task_labels(name), config.task_type(name)
            if kind != TOKEN_CLASSIFICATION:  # one output row per window
                values = np.stack([o[f"logits::{name}"][0].float().numpy().reshape(-1) for o in all_outputs])
            if kind in (MULTI_LABEL_CLASSIFICATION, REGRESSION):
                answer[name] = _target_answer(config.tasks[name], labels, values, weights, return_all_scores, top_k)
            elif kind == SEQUENCE_CLASSIFICATION:
                probs = (softmax(values) * weights[:, None]).sum(0) / weights.sum()
                best = int(probs.argmax())
                answer[name] = {"label": labels[best], "score": float(probs[best])}
                if top_k is not None:
                    order = np.argsort(-probs, kind="stable")[:top_k]
                    answer[name] = [{"label": labels[i], "score": float(probs[i])} for i in order]
                elif return_all_scores:
                    answer[name]["scores"] = {label: float(p) for label, p in zip(labels, probs)}
            else:
                answer[name] = group_entities(text, self._word_labels(all_outputs, name, labels))
        if return_embedding:
            weights = torch.stack([o["n_tokens"][0].float() for o in all_outputs])
            pooled = torch.stack([o["pooled"][0].float() for o in all_outputs])
            pooled = (pooled * weights[:, None]).sum(0) / weights.sum()
            answer["embedding"] = self.model.normalize_embedding(pooled).tolist()
        return answer

    @staticmethod
    def _word_labels(all_outputs, name: str, labels: list[str]) -> list[tuple[int, int, str, float]]:
        """Per word: (start, end, label, score) from its first sub-token, averaged over overlapping windows."""
        spans, first_probs = {}, {}
        for o in all_outputs:
            probs = softmax(o[f"logits::{name}"][0].float().numpy())
            word_ids = o["word_ids"][0].tolist()
            offsets = o["offset_mapping"][0].tolist()
            mask = o["attention_mask"][0].tolist()
            seen = set()
            for pos, (word, (start, end), keep) in enumerate(zip(word_ids, offsets, mask)):
                if not keep or word == 0:
                    continue
                span = spans.setdefault(word, [start, end])
                span[0], span[1] = min(span[0], start), max(span[1], end)
                if word not in seen and (word not in first_probs or start <= spans[word][0]):
                    first_probs.setdefault(word, []).append(probs[pos])
                seen.add(word)
        words = []
        for word in sorted(spans):
            probs = np.mean(first_probs[word], axis=0)
            best = int(probs.argmax())
            words.append((spans[word][0], spans[word][1], labels[best], float(probs[best])))
        return words


def _target_answer(spec: dict, labels: list[str], values: np.ndarray, weights: np.ndarray, all_scores, top_k):
    """A multi-label task's labels from their thresholds on (or its `top_k`), or a regression task's score, from the
    windows' outputs `values` `[windows, outputs]` averaged with `weights`."""
    if not labels:  # regression: the model's output is already on the data's scale
        return {"score": float((values[:, 0] * weights).sum() / weights.sum())}
    probs = ((1.0 / (1.0 + np.exp(-values))) * weights[:, None]).sum(0) / weights.sum()
    order = np.argsort(-probs, kind="stable")
    if top_k is not None:
        return [{"label": labels[i], "score": float(probs[i])} for i in order[:top_k]]
    chosen = [i for i in order if probs[i] >= spec["thresholds"][i]]
    answer = {"labels": [{"label": labels[i], "score": float(probs[i])} for i in chosen]}
    if all_scores:
        answer["scores"] = {label: float(p) for label, p in zip(labels, probs)}
    return answer


if PIPELINE_TASK not in PIPELINE_REGISTRY.get_supported_tasks():
    PIPELINE_REGISTRY.register_pipeline(
        PIPELINE_TASK, pipeline_class=MultiTaskPipeline, pt_model=AutoModel, type="text"
    )


@torch.inference_mode()
def embed_sentences(model, sentences, tokenizer, batch_size=32, max_length=None, normalize=None, progress=False):
    """`MTSTModel.encode`'s work (also for the other inference backends): the `(N, D)` sentence embeddings of a list
    of texts, in input order, on the CPU; `normalize=None` follows the config, `True` L2-normalizes, `False` not."""
    was_training = model.training
    model.eval()
    # Tokenize once, then batch by token count (not characters, which predict token count poorly): on 3,000
    # CoNLL + AG News texts, batches of 32 then carry 23% fewer positions (real / padded tokens 0.75 -> 0.97).
    keep = ("input_ids", "attention_mask", "token_type_ids")
    max_length = max_length or model.max_sequence_length(tokenizer)
    encoded = tokenizer(sentences, truncation=True, max_length=max_length) if sentences else {"input_ids": []}
    features = [{k: encoded[k][i] for k in keep if k in encoded} for i in range(len(sentences))]
    order = sorted(range(len(sentences)), key=lambda i: -len(features[i]["input_ids"]))
    chunks = []
    starts = range(0, len(order), batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="Encoding", unit="batch")
    for start in starts:
        batch = tokenizer.pad([features[i] for i in order[start : start + batch_size]], return_tensors="pt")
        embedding = model._encode_batch({k: v.to(model.device) for k, v in batch.items()})
        if normalize is None:
            embedding = model.normalize_embedding(embedding)
        else:
            embedding = model.adapt_embedding(embedding)
            embedding = F.normalize(embedding, p=2, dim=-1) if normalize else embedding
        chunks.append(embedding.float())
    model.train(was_training)
    dim = model.config.sentence_embedding_dimension
    embeddings = torch.cat(chunks) if chunks else torch.empty(0, dim)
    result = torch.empty_like(embeddings)
    result[torch.tensor(order, dtype=torch.long)] = embeddings
    return result.cpu()
