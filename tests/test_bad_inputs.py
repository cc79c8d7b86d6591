"""Bad inputs, one test per case: the command line (`run_multitask.main` in-process, a few runs in a subprocess, and
`mtst-predict`) ends with exit code 2 and one paragraph naming the cause (file, row, value where they exist), no
traceback and no output folder left behind; the Python API raises a specific exception with the same message.

Each case builds its input under tmp_path and returns a `Case`: the extra command-line arguments, the API call, the
exception type it raises and words both messages must contain."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from reliability_helpers import PREDICT, cli_args, error_paragraph, make_tiny, run_subprocess, write_config
from trainer_helpers import NER_LABELS, TOPIC_LABELS, tiny_model

from mtst.cli import predict as predict_mtst
from mtst.cli import train as run_multitask
from mtst.data.errors import TaskConfigError, TaskDataError, TaskFileNotFoundError
from mtst.data.loading import load_task_data
from mtst.data.tasks import load_task_specs
from mtst.data.tokenization import tokenize_task
from mtst.remote.configuration_mtst import MTSTConfig, MTSTConfigError, MTSTLoadError
from mtst.remote.modeling_mtst import MTSTModel
from mtst.training.arguments import MultiTaskTrainingArguments, MultiTaskTrainingError
from mtst.training.trainer import MultiTaskTrainer

PREDICT_PREFIX = "mtst-predict: error: "


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def trained(tiny, tmp_path_factory):
    """A tiny MTST trained for 6 steps by the command line, with checkpoint-3 and checkpoint-6."""
    out = tmp_path_factory.mktemp("trained") / "run"
    extra = ["--max_steps", "6", "--save_strategy", "steps", "--save_steps", "3", "--eval_strategy", "no"]
    assert run_multitask.main(cli_args(tiny, out, "--do_train", *extra)) == 0
    return out


@dataclass
class Case:
    argv: list[str] | None  # extra command-line arguments (None: no command-line part)
    api: Callable[[], object] | None  # the API call that raises (None: no API part)
    error: type[BaseException] | None  # the exception the API raises
    expect: tuple[str, ...]  # words both messages contain
    same_message: bool = True  # the command line prints exactly the API's message
    unchanged: tuple | None = None  # (folder, {file: mtime}) that the command must leave as it was


class Ctx:
    """What a case builder gets: the tiny backbone and data, a trained run, and a scratch folder."""

    def __init__(self, tiny, trained, tmp_path):
        self.tiny, self.trained, self.tmp = tiny, trained, tmp_path

    def file(self, name: str, content: str | bytes) -> str:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        return str(path)

    def topic(self, split: str) -> str:
        return os.path.join(self.tiny["data"], "topic", f"{split}.jsonl")

    def seq_task(self, train: str, **extra) -> dict:
        files = {"train": train, "validation": self.topic("validation")}
        files.update(extra.pop("data_files", {}))
        return {
            "name": "topic",
            "type": "sequence_classification",
            "labels": TOPIC_LABELS,
            "data_files": files,
            **extra,
        }

    def config(self, *tasks: dict, name: str = "tasks.json") -> str:
        return write_config(self.tmp / name, list(tasks))

    def data_case(self, config: str, error, *expect) -> Case:
        """A task config whose data is bad: the API is load_task_specs + load_task_data."""

        def api():
            for spec in load_task_specs(config):
                load_task_data(spec)

        return Case(["--tasks_config", config], api, error, expect)

    def config_case(self, config: str, *expect) -> Case:
        return Case(["--tasks_config", config], lambda: load_task_specs(config), TaskConfigError, expect)

    def specs(self):
        return load_task_specs(self.tiny["tasks"])

    def trainer(self, **options):
        args = MultiTaskTrainingArguments(output_dir=str(self.tmp / "api_out"), report_to="none", **options)
        return MultiTaskTrainer(model=tiny_model(self.specs()), args=args)

    def option_case(self, argv: list[str], options: dict, *expect, same_message=True) -> Case:
        return Case(argv, lambda: self.trainer(**options), MultiTaskTrainingError, expect, same_message)

    def backbone_case(self, path: str, *expect) -> Case:
        def api():
            MTSTModel.from_backbone(path, tasks={s.name: s.to_model_task() for s in self.specs()})

        return Case(["--model_name_or_path", path], api, MTSTLoadError, (path, *expect))

    def tokenized(self):
        specs = self.specs()
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(self.tiny["backbone"])
        data = {s.name: tokenize_task(s, load_task_data(s), tokenizer, max_seq_length=32) for s in specs}
        return specs, tokenizer, data

    def copy_trained(self, name: str) -> str:
        folder = self.tmp / name
        shutil.copytree(self.trained, folder, ignore=shutil.ignore_patterns("checkpoint-*"))
        return str(folder)


GOOD_ROWS = "".join(json.dumps({"text": f"the match report {i}", "label": "Sports"}) + "\n" for i in range(6))


# ------------------------------------------------------------------------------------------------- data files
def case_malformed_json_line(c: Ctx) -> Case:
    path = c.file("train.jsonl", GOOD_ROWS + '{"text": "broken row", "label": "Sports"\n' + GOOD_ROWS)
    return c.data_case(c.config(c.seq_task(path)), TaskDataError, path, "line 7", "Expecting ',' delimiter")


def case_csv_missing_column(c: Ctx) -> Case:
    path = c.file("train.csv", "text\nthe match\nthe bank\n")
    return c.data_case(c.config(c.seq_task(path)), TaskDataError, path, "no column 'label'", "columns present: text")


def case_csv_misspelled_column(c: Ctx) -> Case:
    path = c.file("train.csv", "text,lable\nthe match,Sports\nthe bank,Business\n")
    return c.data_case(c.config(c.seq_task(path)), TaskDataError, path, "did you mean 'lable'?")


def case_label_not_in_label_set(c: Ctx) -> Case:
    path = c.file("train.jsonl", GOOD_ROWS + json.dumps({"text": "a recipe", "label": "Cooking"}) + "\n")
    return c.data_case(
        c.config(c.seq_task(path)), TaskDataError, path, "line 7", "'Cooking' is not in the label set", "World"
    )


def case_list_label(c: Ctx) -> Case:  # multi-label data: a raw pyarrow traceback and exit 1
    path = c.file("train.jsonl", GOOD_ROWS + json.dumps({"text": "a match", "label": ["Sports", "World"]}) + "\n")
    expect = ("line 7", "label ['Sports', 'World'] is a list", "task type multi_label_classification")
    return c.data_case(c.config(c.seq_task(path)), TaskDataError, path, *expect)


def case_list_label_with_inferred_labels(c: Ctx) -> Case:
    world = json.dumps({"text": "a summit", "label": "World"}) + "\n"
    path = c.file("train.jsonl", json.dumps({"text": "a match", "label": ["Sports"]}) + "\n" + GOOD_ROWS + world)
    task = {k: v for k, v in c.seq_task(path).items() if k != "labels"}
    return c.data_case(c.config(task), TaskDataError, path, "line 1", "label ['Sports'] is a list", "multi_label")


def case_dict_label(c: Ctx) -> Case:
    path = c.file("train.jsonl", GOOD_ROWS + json.dumps({"text": "a match", "label": {"name": "Sports"}}) + "\n")
    expect = ("line 7", "label {'name': 'Sports'} is a mapping, not a label name or class id")
    return c.data_case(c.config(c.seq_task(path)), TaskDataError, path, *expect)


def case_fractional_label(c: Ctx) -> Case:  # said "label 0.5 is not in the label set ['0.5', ...]" when inferred
    rows = "".join(json.dumps({"text": f"a score {i}", "label": i / 4}) + "\n" for i in range(1, 8))
    path = c.file("train.jsonl", rows)
    task = {k: v for k, v in c.seq_task(path).items() if k != "labels"}
    expect = ("found fewer than two labels", "line 1: label 0.25 is a fractional number", "task type regression")
    return c.data_case(c.config(task), TaskDataError, path, *expect)


def case_tags_and_tokens_of_different_lengths(c: Ctx) -> Case:
    path = c.file(
        "ner.jsonl", json.dumps({"tokens": ["john", "smith", "runs"], "ner_tags": ["B-PER", "I-PER"]}) + "\n"
    )
    task = {
        "name": "ner",
        "type": "token_classification",
        "labels": NER_LABELS,
        "data_files": {"train": path, "validation": os.path.join(c.tiny["data"], "ner", "validation.jsonl")},
        "tokens_column": "tokens",
        "tags_column": "ner_tags",
    }
    return c.data_case(c.config(task), TaskDataError, path, "line 1", "3 tokens, 2 tags")


def case_empty_file(c: Ctx) -> Case:
    path = c.file("train.jsonl", "")
    return c.data_case(c.config(c.seq_task(path)), TaskDataError, path, "is empty (0 bytes)")


def case_blank_file(c: Ctx) -> Case:
    path = c.file("train.jsonl", "\n  \n\n")
    return c.data_case(c.config(c.seq_task(path)), TaskDataError, path, "is empty (no text besides whitespace)")


def case_empty_split(c: Ctx) -> Case:
    path = c.file("validation.csv", "text,label\n")
    config = c.config(c.seq_task(c.topic("train"), data_files={"validation": path}))
    return c.data_case(config, TaskDataError, path, "contains no examples")


def case_binary_file(c: Ctx) -> Case:
    path = c.file("train.jsonl", bytes(range(256)) * 8)
    return c.data_case(c.config(c.seq_task(path)), TaskDataError, path, "looks binary", "NUL byte")


def case_non_utf8_file(c: Ctx) -> Case:
    row = json.dumps({"text": "un café au lait", "label": "World"}, ensure_ascii=False) + "\n"
    path = c.file("train.jsonl", GOOD_ROWS.encode() + row.encode("latin-1"))
    return c.data_case(c.config(c.seq_task(path)), TaskDataError, path, "not valid UTF-8", "line 7", "\\xe9")


def case_ragged_csv(c: Ctx) -> Case:
    path = c.file("train.csv", "text,label\nthe match,Sports\nthe bank,Business,extra\n")
    return c.data_case(c.config(c.seq_task(path)), TaskDataError, path, "Expected 2 fields in line 3, saw 3")


def case_empty_text(c: Ctx) -> Case:
    path = c.file("train.jsonl", GOOD_ROWS + json.dumps({"text": "  ", "label": "Sports"}) + "\n")
    return c.data_case(c.config(c.seq_task(path)), TaskDataError, path, "line 7", "empty text")


def case_unknown_file_extension(c: Ctx) -> Case:
    path = c.file("train.xlsx", "not a spreadsheet")
    return c.config_case(c.config(c.seq_task(path)), path, "unknown extension '.xlsx'", ".jsonl")


def case_missing_path(c: Ctx) -> Case:
    path = str(c.tmp / "nowhere" / "train.jsonl")
    return c.data_case(c.config(c.seq_task(path)), TaskFileNotFoundError, path, "not found")


# ------------------------------------------------------------------------------------------------- task configs
def case_duplicate_task_names(c: Ctx) -> Case:
    task = c.seq_task(c.topic("train"))
    return c.config_case(c.config(task, task), "duplicate task name(s) ['topic']")


def case_unknown_task_type(c: Ctx) -> Case:
    return c.config_case(
        c.config({**c.seq_task(c.topic("train")), "type": "sequence_regression"}),
        "unknown task type 'sequence_regression'",
        "sequence_classification, token_classification",
    )


def case_negative_loss_weight(c: Ctx) -> Case:
    message = "'loss_weight' must be a positive finite number"
    case = c.config_case(c.config(c.seq_task(c.topic("train"), loss_weight=-1)), message)

    def api():  # the same check in the model config, for models built without a task file
        with pytest.raises(MTSTConfigError, match="'loss_weight' must be a positive finite number; got -1"):
            MTSTConfig(tasks={"topic": {"type": "sequence_classification", "labels": ["a", "b"], "loss_weight": -1}})
        load_task_specs(case.argv[1])

    case.api = api
    return case


def case_zero_loss_weight(c: Ctx) -> Case:
    message = "'loss_weight' must be a positive finite number"
    return c.config_case(c.config(c.seq_task(c.topic("train"), loss_weight=0)), message)


def case_malformed_task_config(c: Ctx) -> Case:
    path = c.file("tasks.yaml", "tasks:\n  - name: topic\n    type: [unclosed\n")
    return c.config_case(path, "is not valid yaml")


def case_duplicate_tasks_key(c: Ctx) -> Case:  # yaml keeps the second list: the first one's tasks would vanish
    topic = c.topic("train")
    text = (
        f"tasks:\n- {{name: topic, type: sequence_classification, data_files: {{train: {topic}}}}}\n"
        f"tasks:\n- {{name: other, type: sequence_classification, data_files: {{train: {topic}}}}}\n"
    )
    path = c.file("tasks.yaml", text)
    return c.config_case(path, path, "gives the key 'tasks' twice in one mapping (lines 1 and 3)")


def case_duplicate_data_files_key(c: Ctx) -> Case:
    text = (
        "tasks:\n- name: topic\n  type: sequence_classification\n"
        f"  data_files: {{train: {c.topic('train')}}}\n  data_files: {{train: {c.topic('validation')}}}\n"
    )
    path = c.file("tasks.yaml", text)
    return c.config_case(path, path, "gives the key 'data_files' twice in one mapping (lines 4 and 5)")


def case_duplicate_json_key(c: Ctx) -> Case:
    text = json.dumps({"tasks": [c.seq_task(c.topic("train"))]}).replace('"topic"', '"topic", "name": "other"', 1)
    path = c.file("tasks.json", text)
    return c.config_case(path, path, "gives the key 'name' twice in one object")


def case_yaml_alias_in_labels(c: Ctx) -> Case:  # nested aliases: a few hundred bytes, gigabytes once expanded
    text = (
        f"tasks:\n- name: topic\n  type: sequence_classification\n  data_files: {{train: {c.topic('train')}}}\n"
        "  labels:\n  - &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n  - &b [*a, *a, *a, *a, *a, *a, *a, *a]\n"
    )
    return c.config_case(c.file("tasks.yaml", text), "uses the YAML alias '*a' on line 7", "write the value out")


def case_empty_task_list(c: Ctx) -> Case:
    return c.config_case(c.config(), "'tasks' must be a non-empty list")


# ------------------------------------------------------------------------------------------------- options
def case_unknown_sampler(c: Ctx) -> Case:
    return c.option_case(
        ["--sampling_strategy", "uniform"],
        {"sampling_strategy": "uniform"},
        "uniform",
        "round_robin",
        "proportional",
        same_message=False,  # argparse checks the choice first
    )


def case_unknown_pooling(c: Ctx) -> Case:
    def api():
        MTSTModel.from_backbone(
            c.tiny["backbone"], tasks={s.name: s.to_model_task() for s in c.specs()}, pooling="sum"
        )

    return Case(["--pooling", "sum"], api, MTSTConfigError, ("sum", "mean", "cls", "max"), same_message=False)


def case_unknown_freeze_option(c: Ctx) -> Case:
    return c.option_case(["--freeze", "head"], {"freeze": "head"}, "head", "encoder", "embeddings", same_message=False)


def case_unknown_freeze_head(c: Ctx) -> Case:
    return c.option_case(["--freeze_heads", "pos"], {"freeze_heads": ["pos"]}, "unknown task(s) ['pos']")


def case_zero_temperature(c: Ctx) -> Case:
    argv = ["--sampling_strategy", "temperature", "--temperature", "0"]
    return c.option_case(argv, {"sampling_strategy": "temperature", "temperature": 0.0}, "`temperature`", "got 0.0")


def case_negative_temperature(c: Ctx) -> Case:
    return c.option_case(["--temperature", "-2"], {"temperature": -2.0}, "must be a positive number; got -2.0")


def case_weights_sampler_without_weights(c: Ctx) -> Case:
    case = c.option_case(["--sampling_strategy", "weights"], {}, "needs `task_weights`", "topic, ner")

    def api():  # the sampler is built when training starts
        specs, tokenizer, data = c.tokenized()
        args = MultiTaskTrainingArguments(
            output_dir=str(c.tmp / "api_out"), report_to="none", sampling_strategy="weights", use_cpu=True
        )
        trainer = MultiTaskTrainer(
            model=tiny_model(specs),
            args=args,
            train_dataset={t: d["train"] for t, d in data.items()},
            processing_class=tokenizer,
        )
        trainer.train()

    case.api = api
    return case


def _epochs(c: Ctx, epochs: float) -> Case:  # saved an untrained model with a card, exit 0
    message = (
        f"`num_train_epochs` must be a positive number (or give `max_steps` > 0, which overrides it); got {epochs}"
    )
    return c.option_case(["--num_train_epochs", str(epochs)], {"num_train_epochs": epochs}, message)


def case_zero_epochs(c: Ctx) -> Case:
    return _epochs(c, 0.0)


def case_negative_epochs(c: Ctx) -> Case:
    return _epochs(c, -1.0)


def case_nan_learning_rate(c: Ctx) -> Case:
    expect = "`learning_rate` must be a finite number >= 0; got nan"
    return c.option_case(["--learning_rate", "nan"], {"learning_rate": float("nan")}, expect)


def case_negative_learning_rate(c: Ctx) -> Case:
    expect = "`learning_rate` must be a finite number >= 0; got -0.001"
    return c.option_case(["--learning_rate=-1e-3"], {"learning_rate": -1e-3}, expect)


def case_nan_warmup(c: Ctx) -> Case:
    expect = "`warmup_steps` must be a finite number >= 0; got nan"
    return c.option_case(["--warmup_steps", "nan"], {"warmup_steps": float("nan")}, expect)


def case_negative_seed(c: Ctx) -> Case:
    return c.option_case(["--seed", "-1"], {"seed": -1}, "`seed` must be an integer from 0 to 2**32 - 1; got -1")


def case_zero_eval_batch_size(c: Ctx) -> Case:  # crashed at the first evaluation, after training
    expect = "`per_device_eval_batch_size` must be a positive integer; got 0"
    return c.option_case(["--per_device_eval_batch_size", "0"], {"per_device_eval_batch_size": 0}, expect)


def case_zero_train_batch_size(c: Ctx) -> Case:
    expect = "`per_device_train_batch_size` must be a positive integer; got 0"
    return c.option_case(["--per_device_train_batch_size", "0"], {"per_device_train_batch_size": 0}, expect)


def case_zero_max_train_samples(c: Ctx) -> Case:
    return Case(["--max_train_samples", "0"], None, None, ("--max_train_samples must be a positive integer", "got 0"))


def case_zero_max_eval_samples(c: Ctx) -> Case:
    return Case(["--max_eval_samples", "0"], None, None, ("--max_eval_samples must be a positive integer", "got 0"))


def case_misspelled_flag(c: Ctx) -> Case:
    return Case(
        ["--learning_rates", "1e-3"], None, None, ("Unknown argument(s): --learning_rates", "--learning_rate?")
    )


def case_max_seq_length_1(c: Ctx) -> Case:
    return max_seq_length_case(c, 1)


def case_max_seq_length_2(c: Ctx) -> Case:
    return max_seq_length_case(c, 2)


def max_seq_length_case(c: Ctx, n: int) -> Case:
    def api():
        spec = c.specs()[0]
        from transformers import AutoTokenizer

        tokenize_task(spec, load_task_data(spec), AutoTokenizer.from_pretrained(c.tiny["backbone"]), n)

    return Case(
        ["--max_seq_length", str(n)], api, TaskConfigError, (f"max_seq_length={n}", "at least 3", "2 special token")
    )


def case_max_seq_length_above_encoder_limit(c: Ctx) -> Case:
    def api():  # a model fed longer inputs than its positions
        model = MTSTModel.from_backbone(c.tiny["backbone"], tasks={s.name: s.to_model_task() for s in c.specs()})
        model(input_ids=torch.ones(1, 100, dtype=torch.long), task="topic")

    return Case(["--max_seq_length", "100"], api, MTSTConfigError, ("100", "64"), same_message=False)


# ------------------------------------------------------------------------------------------------- output folder
def output_dir_case(c: Ctx, output_dir: str, *expect) -> Case:
    """Checked before any data is read: the task config's data file does not even exist."""
    config = c.config(c.seq_task(str(c.tmp / "nowhere" / "train.jsonl")))
    return Case(["--tasks_config", config, "--output_dir", output_dir], None, None, expect)


def case_output_dir_is_a_file(c: Ctx) -> Case:
    path = c.file("taken", "a file")
    return output_dir_case(c, path, f"--output_dir {path} is a file, not a folder")


def case_output_dir_is_empty(c: Ctx) -> Case:
    return output_dir_case(c, "", "--output_dir is empty")


def case_output_dir_cannot_be_created(c: Ctx) -> Case:
    path = os.path.join(c.file("taken", "a file"), "run")
    return output_dir_case(c, path, f"--output_dir {path} cannot be written (Not a directory)")


def case_output_dir_is_read_only(c: Ctx) -> Case:
    folder = c.tmp / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    if os.access(folder, os.W_OK):  # root writes anyway: a folder under a file stands in for it
        return case_output_dir_cannot_be_created(c)
    return output_dir_case(c, str(folder), f"--output_dir {folder} cannot be written (Permission denied)")


def grown_into_case(c: Ctx, model: str, output_dir: str, where: str) -> Case:
    before = {name: os.path.getmtime(os.path.join(model, name)) for name in os.listdir(model)}
    expect = f"--output_dir {output_dir} {where} the folder of --model_name_or_path {model}, the model this run starts"
    case = Case(["--model_name_or_path", model, "--output_dir", output_dir, "--do_train"], None, None, (expect,))
    case.unchanged = (model, before)
    return case


def case_output_dir_is_the_grown_model(c: Ctx) -> Case:  # overwrote the source model, mixing two runs' checkpoints
    folder = c.copy_trained("grown")
    return grown_into_case(c, folder, os.path.join(folder, "."), "is")


def case_output_dir_inside_the_grown_model(c: Ctx) -> Case:
    folder = c.copy_trained("grown")
    return grown_into_case(c, folder, os.path.join(folder, "next"), "is inside")


def case_output_dir_holds_the_grown_model(c: Ctx) -> Case:  # checkpoint rotation would delete the source
    folder = c.copy_trained("grown")
    shutil.copytree(c.trained / "checkpoint-3", os.path.join(folder, "checkpoint-3"))
    return grown_into_case(c, os.path.join(folder, "checkpoint-3"), folder, "holds")


# ------------------------------------------------------------------------------------------------- models
def case_backbone_path_missing(c: Ctx) -> Case:
    return c.backbone_case(str(c.tmp / "no-such-model"), "does not exist")


def case_backbone_folder_with_a_random_json(c: Ctx) -> Case:
    c.file("random/notes.json", '{"hello": "world"}')
    return c.backbone_case(str(c.tmp / "random"), "is not a model folder: it has no config.json (it holds notes.json)")


def case_backbone_is_a_data_folder(c: Ctx) -> Case:
    return c.backbone_case(c.tiny["data"], "is not a model folder", "ner, tasks.json, topic")


def case_backbone_is_not_a_model(c: Ctx) -> Case:
    folder = c.tmp / "not-a-model"
    shutil.copytree(c.tiny["backbone"], folder)
    (folder / "config.json").write_text(json.dumps({"model_type": "not-a-model", "hidden_size": 32}))
    return c.backbone_case(str(folder), "model type `not-a-model`")


def case_backbone_with_truncated_weights(c: Ctx) -> Case:
    folder = c.tmp / "cut-backbone"
    shutil.copytree(c.tiny["backbone"], folder)
    truncate(folder / "model.safetensors")
    return c.backbone_case(str(folder), "is truncated or corrupt")


def case_checkpoint_missing_weights(c: Ctx) -> Case:
    folder = c.copy_trained("no-weights")
    os.remove(os.path.join(folder, "model.safetensors"))
    return checkpoint_case(folder, "has no weights file model.safetensors")


def case_checkpoint_truncated_weights(c: Ctx) -> Case:
    folder = c.copy_trained("cut-weights")
    truncate(os.path.join(folder, "model.safetensors"))
    return checkpoint_case(folder, "model.safetensors is truncated or corrupt", "bytes where its header declares")


def checkpoint_case(folder: str, *expect) -> Case:
    return Case(["--model_name_or_path", folder], lambda: MTSTModel.from_pretrained(folder), MTSTLoadError, expect)


def case_resume_with_other_labels(c: Ctx) -> Case:
    config = json.loads(open(c.tiny["tasks"]).read())
    config["tasks"][0]["labels"] = TOPIC_LABELS[::-1]
    return resume_case(c, config["tasks"], "task 'topic' is sequence_classification with labels ['Sci/Tech'")


def case_resume_with_other_tasks(c: Ctx) -> Case:
    config = json.loads(open(c.tiny["tasks"]).read())
    return resume_case(c, config["tasks"][1:], "the checkpoint has task 'topic', which this model lacks")


def resume_case(c: Ctx, tasks: list[dict], *expect) -> Case:
    for task in tasks:
        task["data_files"] = {s: os.path.join(c.tiny["data"], p) for s, p in task["data_files"].items()}
    config = c.config(*tasks)
    checkpoint = str(c.trained / "checkpoint-3")

    def api():
        specs = load_task_specs(config)
        args = MultiTaskTrainingArguments(output_dir=str(c.tmp / "api_out"), report_to="none", use_cpu=True)
        trainer = MultiTaskTrainer(model=tiny_model(specs), args=args, train_dataset={s.name: [] for s in specs})
        trainer.train(resume_from_checkpoint=checkpoint)

    argv = ["--tasks_config", config, "--resume_from_checkpoint", checkpoint, "--do_train"]
    return Case(argv, api, MultiTaskTrainingError, (f"Cannot resume from {checkpoint}", *expect))


def case_nan_loss_from_a_huge_learning_rate(c: Ctx) -> Case:
    def api():
        specs, tokenizer, data = c.tokenized()
        args = MultiTaskTrainingArguments(
            output_dir=str(c.tmp / "api_out"), report_to="none", learning_rate=1e6, use_cpu=True, save_strategy="no"
        )
        trainer = MultiTaskTrainer(
            model=tiny_model(specs),
            args=args,
            train_dataset={t: d["train"] for t, d in data.items()},
            processing_class=tokenizer,
        )
        trainer.train()

    argv = ["--learning_rate", "1e6", "--warmup_steps", "0"]
    expect = ("Training stopped at step", "the training loss of task '", "Lower the learning rate (now 1e+06)")
    return Case(argv, api, MultiTaskTrainingError, expect, same_message=False)


def case_nan_loss_from_a_poisoned_weight(c: Ctx) -> Case:
    folder = poisoned_backbone(c.tiny["backbone"], c.tmp / "poisoned")

    def api():
        specs, tokenizer, data = c.tokenized()
        model = tiny_model(specs)
        with torch.no_grad():  # one NaN in the shared word embeddings, as in the poisoned backbone: every task's loss
            model.get_input_embeddings().weight[:, 0] = float("nan")
        args = MultiTaskTrainingArguments(output_dir=str(c.tmp / "api_out"), report_to="none", use_cpu=True)
        trainer = MultiTaskTrainer(
            model=model, args=args, train_dataset={t: d["train"] for t, d in data.items()}, processing_class=tokenizer
        )
        trainer.train()

    argv = ["--model_name_or_path", folder]
    expect = ("Training stopped at step 1 of ", "the training loss of task '", "is nan", "starting weights")
    return Case(argv, api, MultiTaskTrainingError, expect, same_message=False)


def truncate(path) -> None:
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size // 2)


def poisoned_backbone(source: str, folder) -> str:
    """A copy of the backbone with one NaN in its word embeddings: every loss is NaN from step 1."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(source, folder)
    weights = load_file(folder / "model.safetensors")
    name = next(k for k in weights if "word_embeddings" in k)
    weights[name][:, 0] = float("nan")
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    return str(folder)


CASES = {name[len("case_") :]: fn for name, fn in sorted(globals().items()) if name.startswith("case_")}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name, tiny, trained, tmp_path, capsys):
    case = CASES[name](Ctx(tiny, trained, tmp_path))
    api_message = None
    if case.api is not None:
        with pytest.raises(case.error) as info:
            case.api()
        api_message = str(info.value)
        assert "\n" not in api_message, api_message
        for word in case.expect:
            assert word in api_message, (word, api_message)
        assert not (tmp_path / "api_out").exists() or name.startswith(("nan_", "resume_", "weights_"))
    if case.argv is not None:
        out = tmp_path / "out"
        capsys.readouterr()
        code = run_multitask.main(cli_args(tiny, out, *case.argv))
        err = capsys.readouterr().err
        assert code == 2, err[-3000:]
        message = error_paragraph(err)
        if case.same_message and api_message is not None:
            assert message == api_message
        for word in case.expect:
            assert word in message, (word, message)
        assert not out.exists(), sorted(os.listdir(out))  # never created, or removed: no half-written model
    if case.unchanged is not None:
        folder, before = case.unchanged
        assert {name: os.path.getmtime(os.path.join(folder, name)) for name in os.listdir(folder)} == before


def test_catalogue_has_at_least_30_cases():
    assert len(CASES) >= 30


# ------------------------------------------------------------------------------------------------- not errors
def test_gigantic_line_trains_with_truncation_counted(tiny, tmp_path, caplog):
    """A 5 MB text in one jsonl row neither hangs nor fails: it is truncated to max_seq_length, and counted."""
    ctx = Ctx(tiny, None, tmp_path)
    huge = " ".join(["goal"] * 1_000_000)  # 5 MB on one line
    path = ctx.file("train.jsonl", GOOD_ROWS + json.dumps({"text": huge, "label": "Sports"}) + "\n" + GOOD_ROWS)
    config = ctx.config(ctx.seq_task(path))
    assert os.path.getsize(path) > 5_000_000
    start = time.monotonic()
    spec = load_task_specs(config)[0]
    from transformers import AutoTokenizer

    tokenized = tokenize_task(spec, load_task_data(spec), AutoTokenizer.from_pretrained(tiny["backbone"]), 32)
    assert spec.truncated["train"] == 1 and max(len(ids) for ids in tokenized["train"]["input_ids"]) == 32
    assert time.monotonic() - start < 120

    out = tmp_path / "out"
    argv = ["--tasks_config", config, "--max_steps", "2", "--eval_strategy", "no", "--save_strategy", "no"]
    caplog.clear()
    assert run_multitask.main(cli_args(tiny, out, "--do_train", *argv)) == 0
    assert "1 of 13 examples were truncated to max_seq_length=32" in caplog.text
    assert (out / "model.safetensors").is_file()


def test_empty_and_very_long_texts_at_inference(trained, tokenizer, capsys):
    pipe = predict_mtst.load_pipeline(str(trained))
    long_text = "Mary Smith flew to Paris. " * 2000  # 52,000 characters: far beyond the 64 positions
    empty, long = pipe(["", long_text])
    for answer in (empty, long):
        assert set(answer) == {"topic", "ner"} and answer["topic"]["label"] in TOPIC_LABELS
    assert empty["ner"] == []
    assert all(0 <= e["start"] < e["end"] <= len(long_text) for e in long["ner"])
    model = pipe.model
    embeddings = model.encode(["", long_text], tokenizer)
    assert embeddings.shape == (2, 32) and torch.isfinite(embeddings).all()

    assert predict_mtst.main(["--model", str(trained), "--format", "jsonl", "", long_text]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["text"] for line in lines] == ["", long_text]


# ------------------------------------------------------------------------------------------------- inference errors
def test_unknown_task_at_inference(trained, tokenizer, capsys):
    pipe = predict_mtst.load_pipeline(str(trained))
    with pytest.raises(MTSTConfigError, match=r"Unknown task\(s\) \['pos'\]; this model's tasks: topic, ner"):
        pipe("Mary flew to Paris.", tasks=["pos"])
    batch = tokenizer(["Mary flew to Paris."], return_tensors="pt")
    with pytest.raises(MTSTConfigError, match="Unknown task 'pos'; this model's tasks: topic, ner"):
        pipe.model(**batch, task="pos")

    assert predict_mtst.main(["--model", str(trained), "--tasks", "topic,pos", "Mary flew to Paris."]) == 2
    message = error_paragraph(capsys.readouterr().err, PREDICT_PREFIX)
    assert message == "Unknown task(s) pos in --tasks; this model's tasks: topic, ner."


@pytest.mark.parametrize("damage", ["missing", "truncated", "labels", "positions"])
def test_predict_with_missing_or_truncated_weights(trained, tmp_path, capsys, damage):
    folder = tmp_path / "model"
    shutil.copytree(trained, folder, ignore=shutil.ignore_patterns("checkpoint-*"))
    config = json.loads((folder / "config.json").read_text())
    if damage == "missing":
        os.remove(folder / "model.safetensors")
    elif damage == "truncated":
        truncate(folder / "model.safetensors")
    elif damage == "labels":  # a label added to the config: the head's weights have one row fewer (a traceback)
        config["tasks"][0]["labels"].append("Cooking")
    else:
        config["encoder"]["max_position_embeddings"] = 100
    (folder / "config.json").write_text(json.dumps(config))
    assert predict_mtst.main(["--model", str(folder), "some text"]) == 2
    message = error_paragraph(capsys.readouterr().err, PREDICT_PREFIX)
    assert str(folder) in message
    expected = {
        "missing": "has no weights file",
        "truncated": "is truncated or corrupt",
        "labels": "do not fit its config.json (heads.topic.classifier.bias: [4] in the weights, [5] by the config",
        "positions": "(encoder.embeddings.position_embeddings.weight: [64, 32] in the weights, [100, 32] by the",
    }[damage]
    assert expected in message


# ------------------------------------------------------------------------------------------------- real processes
@pytest.mark.parametrize("name", ["malformed_json_line", "checkpoint_truncated_weights", "unknown_sampler"])
def test_no_traceback_reaches_stderr_of_a_real_process(name, tiny, trained, tmp_path):
    case = CASES[name](Ctx(tiny, trained, tmp_path))
    out = tmp_path / "out"
    result = run_subprocess(cli_args(tiny, out, *case.argv))
    assert result.returncode == 2
    message = error_paragraph(result.stderr)
    for word in case.expect:
        assert word in message
    assert "usage:" not in result.stderr  # one paragraph, not argparse's page of options
    assert not out.exists()


def test_predict_process_reports_an_unknown_task_without_traceback(trained):
    result = run_subprocess(["--model", trained, "--tasks", "pos", "Mary flew to Paris."], script=PREDICT)
    assert result.returncode == 2
    assert "Unknown task(s) pos" in error_paragraph(result.stderr, PREDICT_PREFIX)
