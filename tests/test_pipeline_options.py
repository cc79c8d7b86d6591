"""What the standard and the multitask pipelines do with an MTST folder: `feature-extraction` answers the sentence
embedding, and options the model cannot honour (`num_labels`, unknown parameters) are errors, never ignored."""

import numpy as np
import pytest
import torch
from conftest import SENTIMENT_LABELS, TOPIC_LABELS, save_tiny_mtst
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

from mtst.remote.configuration_mtst import MTSTConfigError
from mtst.remote.modeling_mtst import MTSTModel


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return str(save_tiny_mtst(tmp_path_factory.mktemp("pipeline-options") / "model"))


def test_feature_extraction_pipeline_returns_the_sentence_embedding(folder):
    extractor = pipeline("feature-extraction", model=folder, trust_remote_code=True)
    features = np.array(extractor("Apple is opening a new office in Paris."))
    model = MTSTModel.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder, config=model.config)
    expected = model.encode(["Apple is opening a new office in Paris."], tokenizer=tokenizer)
    assert features.shape == (1, np.asarray(expected).shape[-1])
    np.testing.assert_allclose(features, np.asarray(expected), atol=1e-5)


def test_model_output_without_a_task_starts_with_the_sentence_embedding(folder, tokenizer):
    model = MTSTModel.from_pretrained(folder).eval()
    with torch.no_grad():
        out = model(**tokenizer(["a sentence"], return_tensors="pt"))
    assert torch.equal(out[0], out.sentence_embedding)


def test_multitask_pipeline_top_k_lists_the_best_labels(folder):
    multitask = pipeline(model=folder, trust_remote_code=True)
    text = "Stocks rallied after the announcement."
    full = multitask(text, return_all_scores=True)
    answer = multitask(text, top_k=2)
    for task, labels in (("topic", TOPIC_LABELS), ("sentiment", SENTIMENT_LABELS)):
        ranked = sorted(full[task]["scores"].items(), key=lambda item: -item[1])[:2]
        assert [(a["label"], pytest.approx(a["score"])) for a in answer[task]] == ranked
        assert len(multitask(text, top_k=10)[task]) == len(labels)
    assert answer["ner"] == full["ner"]
    with pytest.raises(ValueError, match="top_k"):
        multitask(text, top_k=0)


@pytest.mark.parametrize("option", [{"num_labels": 2}, {"top_n": 3}])
def test_multitask_pipeline_refuses_parameters_it_does_not_take(folder, option):
    multitask = pipeline(model=folder, trust_remote_code=True)
    with pytest.raises(TypeError, match=f"unexpected parameter.*{next(iter(option))}"):
        multitask("a sentence", **option)


def test_a_view_refuses_a_num_labels_other_than_the_tasks(folder):
    from mtst.remote.modeling_mtst import MTSTForSequenceClassification

    with pytest.raises(MTSTConfigError, match=r"num_labels=3 does not fit task 'topic'"):
        MTSTForSequenceClassification.from_pretrained(folder, num_labels=3)
    # the remote code's own MTSTConfigError (another class object than the package's): a ValueError by that name
    with pytest.raises(ValueError, match=r"num_labels=7 does not fit task 'topic': it has 4 labels"):
        AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True, num_labels=7)
    with pytest.raises(ValueError, match=r"num_labels=5 does not fit task 'sentiment'"):
        pipeline(
            "text-classification",
            model=folder,
            trust_remote_code=True,
            model_kwargs={"default_task": "sentiment", "num_labels": 5},
        )
    view = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True, num_labels=4)
    assert view.num_labels == 4 and view.config.id2label[0] == "World"
