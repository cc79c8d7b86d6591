"""Errors that never hide bugs: the user's mistakes become one-paragraph errors, anything else (a bug in MTST or in a
library) keeps its own exception and traceback."""

from __future__ import annotations

import json
import logging

import datasets
import pyarrow
import pytest
import torch
from conftest import tiny_mtst_config

from mtst.data import files
from mtst.data.errors import TaskDataError
from mtst.data.loading import load_task_data
from mtst.data.tasks import load_task_specs
from mtst.hub import card
from mtst.hub.card_data import MTSTCardData
from mtst.remote.modeling_mtst import MTSTModel
from mtst.training.arguments import MultiTaskTrainingArguments, option


@pytest.fixture
def topic_spec(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(json.dumps({"text": f"text {i}", "label": "ab"[i % 2]}) for i in range(8)) + "\n")
    (spec,) = load_task_specs(
        [{"name": "topic", "type": "sequence_classification", "data_files": {"train": str(path)}}]
    )
    return spec


def builder_raising(error: BaseException):
    def load_dataset(*args, **kwargs):
        try:
            raise error
        except BaseException as cause:
            raise datasets.exceptions.DatasetGenerationError(
                "An error occurred while generating the dataset"
            ) from cause

    return load_dataset


def test_a_builder_error_caused_by_the_data_is_a_task_data_error(topic_spec, monkeypatch):
    monkeypatch.setattr(files.datasets, "load_dataset", builder_raising(pyarrow.ArrowInvalid("JSON parse error")))
    with pytest.raises(TaskDataError, match="could not be read as json"):
        load_task_data(topic_spec)


def test_a_builder_error_that_is_a_bug_keeps_its_traceback(topic_spec, monkeypatch):
    bug = AttributeError("'NoneType' object has no attribute 'schema'")
    monkeypatch.setattr(files.datasets, "load_dataset", builder_raising(bug))
    with pytest.raises(datasets.exceptions.DatasetGenerationError) as err:
        load_task_data(topic_spec)
    assert err.value.__cause__ is bug


def test_an_unknown_option_name_is_an_error_not_none():
    args = MultiTaskTrainingArguments(output_dir="x")
    assert option(args, "sampling_strategy") == "balanced" and option(args, "seed") == 42
    with pytest.raises(AttributeError, match="'sampling_stratgy' is not an option"):
        option(args, "sampling_stratgy")


def test_forward_refuses_unknown_keyword_arguments():
    model = MTSTModel(tiny_mtst_config()).eval()
    ids = torch.tensor([[101, 2000, 102]])
    with pytest.raises(TypeError, match="unexpected keyword argument\\(s\\): taks"):
        model(input_ids=ids, taks="topic")


def test_a_card_that_cannot_be_made_is_a_warning_but_a_bug_in_the_card_code_is_raised(tmp_path, monkeypatch, caplog):
    model = MTSTModel(tiny_mtst_config()).eval()
    monkeypatch.setattr(card, "TEMPLATE_PATH", tmp_path / "missing.md")  # the user's installation: a warning
    with caplog.at_level(logging.WARNING, logger="mtst"):
        card.write_model_card(tmp_path / "a", model)
    assert "could not render the full card" in caplog.text and (tmp_path / "a" / "README.md").is_file()

    def broken(self):
        raise KeyError("task_type")

    monkeypatch.setattr(card, "TEMPLATE_PATH", None)
    monkeypatch.setattr(MTSTCardData, "header", broken)  # a bug: raised, not turned into a warning
    with pytest.raises(KeyError, match="task_type"):
        card.write_model_card(tmp_path / "b", model)
