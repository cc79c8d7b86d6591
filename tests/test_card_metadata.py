"""The model card's Hub metadata: the model-index links only real Hub datasets, `--license` and `--language` reach
the card, and TensorBoard's logs travel with a pushed model as they do with the Trainer's push."""

import logging
from types import SimpleNamespace

import pytest
from huggingface_hub import ModelCard, metadata_load
from test_modelcard import METRICS, tiny  # noqa: F401  (the fixture)

from mtst.cli.arguments import CommandLineError, parse_args
from mtst.cli.train import attach_model_card
from mtst.hub.card import write_model_card
from mtst.hub.card_data import MTSTCardData
from mtst.hub.publish import finalize_model_dir, stage_upload


def card_data(specs) -> MTSTCardData:
    data = MTSTCardData()
    data.set_task_specs(specs)
    data.set_eval_results(METRICS)
    return data


def test_model_index_dataset_type_is_the_hub_id_and_local_files_are_left_out(tiny, tmp_path):  # noqa: F811
    specs = [
        SimpleNamespace(name="topic", dataset="fancyzhx/ag_news", dataset_config=None, revision=None),
        {"name": "sentiment", "data_files": {"train": "sentiment/train.jsonl"}},
        {"name": "ner", "data_files": {"train": "ner/train.jsonl"}},
    ]
    write_model_card(tmp_path / "hub", tiny, card_data(specs))
    meta = metadata_load(tmp_path / "hub" / "README.md")
    datasets = [r["dataset"] for r in meta["model-index"][0]["results"]]
    assert datasets == [{"name": "fancyzhx/ag_news", "type": "fancyzhx/ag_news", "split": "validation"}]
    assert ModelCard.load(tmp_path / "hub" / "README.md").data.eval_results  # huggingface_hub reads it back

    write_model_card(tmp_path / "local", tiny, card_data(specs[1:]))  # only local files: no dataset to link
    text = (tmp_path / "local" / "README.md").read_text()
    meta = metadata_load(tmp_path / "local" / "README.md")
    assert "model-index" not in meta and "datasets" not in meta
    assert set(meta["metrics"]) == {"accuracy", "f1", "precision", "recall"}
    assert "0.45" in text and "0.4444" in text  # the results table still has them
    ModelCard.load(tmp_path / "local" / "README.md")


def test_license_and_language_options_reach_the_card(tmp_path):
    _, _, args = parse_args(["--output_dir", str(tmp_path / "out"), "--license", "mit", "--language", "en, de"])
    trainer = SimpleNamespace(
        args=args, state=None, control=None, model=None, train_dataset=None, eval_dataset=None, add_callback=print
    )
    data = attach_model_card(trainer, [], SimpleNamespace(model_name_or_path=None))
    header = data.header().to_dict()
    assert header["license"] == "mit" and header["language"] == ["en", "de"]
    _, _, plain = parse_args(["--output_dir", str(tmp_path / "out")])
    assert plain.license is None and plain.language is None


@pytest.mark.parametrize("option, value", [("--license", "my license"), ("--language", "en,,de"), ("--language", "")])
def test_bad_license_or_language_is_a_clear_error(tmp_path, option, value):
    with pytest.raises(CommandLineError, match=f"{option} .* is not a Hub"):
        parse_args(["--output_dir", str(tmp_path / "out"), option, value])


def test_tensorboard_logs_are_staged_with_the_model(tiny, tmp_path, caplog):  # noqa: F811
    folder = tmp_path / "model"
    tiny.save_pretrained(folder)
    finalize_model_dir(folder)  # as a push does: config.json's local paths replaced
    clean = folder / "runs" / "Dec01_12-00-00_host" / "events.out.tfevents.1.host.1.0"
    leaky = folder / "runs" / "Dec02_12-00-00_host" / "events.out.tfevents.2.host.2.0"
    clean.parent.mkdir(parents=True)
    leaky.parent.mkdir(parents=True)
    clean.write_bytes(b"\x00\x01scalars: loss 0.5\x00")
    leaky.write_bytes(b"\x00\x01" + str(folder.resolve()).encode() + b"/checkpoint-2\x00")
    (folder / "runs" / "notes.txt").write_text("not a log")
    stage = tmp_path / "stage"
    stage.mkdir()
    with caplog.at_level(logging.WARNING, logger="mtst"):
        staged = stage_upload(folder, stage, "user/model")
    assert "runs/Dec01_12-00-00_host/events.out.tfevents.1.host.1.0" in staged
    assert (stage / clean.relative_to(folder)).read_bytes() == clean.read_bytes()
    assert not (stage / leaky.relative_to(folder)).exists() and not (stage / "runs" / "notes.txt").exists()
    assert "events.out.tfevents.2.host.2.0 is not uploaded" in caplog.text
