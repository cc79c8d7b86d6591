"""MTST: one shared transformer encoder, several task heads (sentence embeddings, sentence and token classification),
trained jointly.

The public API is the names below; they are imported on first use, so `import mtst` stays light (no torch, no
transformers) until a name is asked for::

    from mtst import MultiTaskTrainer, MultiTaskTrainingArguments, load_task_specs

The subpackages show the architecture: `mtst.remote` (the files that travel with the weights: configuration,
modeling, pipeline, handler), `mtst.data` (task specs, loading, tokenization, collator), `mtst.training` (arguments,
sampler, trainer, freezing, weighting, checkpoints, distillation, growing), `mtst.metrics`, `mtst.hub` (card,
callback, publishing), `mtst.inference` (dtypes, int8, ONNX) and `mtst.cli` (the commands). Names not listed here are
internal and may change.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0.dev0"

# public name -> the module that defines it
_EXPORTS = {
    # the model (remote code)
    "MTSTConfig": "mtst.remote.configuration_mtst",
    "MTSTConfigError": "mtst.remote.configuration_mtst",
    "MTSTLoadError": "mtst.remote.configuration_mtst",
    "SEQUENCE_CLASSIFICATION": "mtst.remote.configuration_mtst",
    "TOKEN_CLASSIFICATION": "mtst.remote.configuration_mtst",
    "MULTI_LABEL_CLASSIFICATION": "mtst.remote.configuration_mtst",
    "REGRESSION": "mtst.remote.configuration_mtst",
    "SENTENCE_SIMILARITY": "mtst.remote.configuration_mtst",
    "RETRIEVAL": "mtst.remote.configuration_mtst",
    "TASK_TYPES": "mtst.remote.configuration_mtst",
    "IGNORE_INDEX": "mtst.remote.configuration_mtst",
    "MTSTModel": "mtst.remote.modeling_mtst",
    "MTSTModelOutput": "mtst.remote.modeling_mtst",
    "MTSTForSequenceClassification": "mtst.remote.modeling_mtst",
    "MTSTForTokenClassification": "mtst.remote.modeling_mtst",
    "MultiTaskPipeline": "mtst.remote.pipeline_mtst",
    # data
    "TaskSpec": "mtst.data.tasks",
    "TaskConfigError": "mtst.data.errors",
    "TaskDataError": "mtst.data.errors",
    "load_task_specs": "mtst.data.tasks",
    "tokenize_task": "mtst.data.tokenization",
    "load_task_data": "mtst.data.loading",
    "MultiTaskDataset": "mtst.data.collator",
    "MultiTaskCollator": "mtst.data.collator",
    "StreamingTrainSplit": "mtst.data.streaming",
    # training
    "MultiTaskTrainingArguments": "mtst.training.arguments",
    "MultiTaskTrainingError": "mtst.training.arguments",
    "MultiTaskBatchSampler": "mtst.training.sampler",
    "MultiTaskTrainer": "mtst.training.trainer",
    # the model card and the Hub
    "MTSTCardData": "mtst.hub.card_data",
    "MTSTCardCallback": "mtst.hub.callback",
    "write_model_card": "mtst.hub.card",
    "push_to_hub": "mtst.hub.card",
}

__all__ = [
    "__version__",
    "MTSTConfig",
    "MTSTConfigError",
    "MTSTLoadError",
    "SEQUENCE_CLASSIFICATION",
    "TOKEN_CLASSIFICATION",
    "MULTI_LABEL_CLASSIFICATION",
    "REGRESSION",
    "SENTENCE_SIMILARITY",
    "RETRIEVAL",
    "TASK_TYPES",
    "IGNORE_INDEX",
    "MTSTModel",
    "MTSTModelOutput",
    "MTSTForSequenceClassification",
    "MTSTForTokenClassification",
    "MultiTaskPipeline",
    "TaskSpec",
    "TaskConfigError",
    "TaskDataError",
    "load_task_specs",
    "tokenize_task",
    "load_task_data",
    "MultiTaskDataset",
    "MultiTaskCollator",
    "StreamingTrainSplit",
    "MultiTaskTrainingArguments",
    "MultiTaskTrainingError",
    "MultiTaskBatchSampler",
    "MultiTaskTrainer",
    "MTSTCardData",
    "MTSTCardCallback",
    "write_model_card",
    "push_to_hub",
]

if TYPE_CHECKING:  # what static tools see; at run time `__getattr__` imports on first use
    from mtst.data.collator import MultiTaskCollator, MultiTaskDataset
    from mtst.data.errors import TaskConfigError, TaskDataError
    from mtst.data.loading import load_task_data
    from mtst.data.streaming import StreamingTrainSplit
    from mtst.data.tasks import TaskSpec, load_task_specs
    from mtst.data.tokenization import tokenize_task
    from mtst.hub.callback import MTSTCardCallback
    from mtst.hub.card import push_to_hub, write_model_card
    from mtst.hub.card_data import MTSTCardData
    from mtst.remote.configuration_mtst import (
        IGNORE_INDEX,
        MULTI_LABEL_CLASSIFICATION,
        REGRESSION,
        RETRIEVAL,
        SENTENCE_SIMILARITY,
        SEQUENCE_CLASSIFICATION,
        TASK_TYPES,
        TOKEN_CLASSIFICATION,
        MTSTConfig,
        MTSTConfigError,
        MTSTLoadError,
    )
    from mtst.remote.modeling_mtst import (
        MTSTForSequenceClassification,
        MTSTForTokenClassification,
        MTSTModel,
        MTSTModelOutput,
    )
    from mtst.remote.pipeline_mtst import MultiTaskPipeline
    from mtst.training.arguments import MultiTaskTrainingArguments, MultiTaskTrainingError
    from mtst.training.sampler import MultiTaskBatchSampler
    from mtst.training.trainer import MultiTaskTrainer


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mtst' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next access does not come here
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
