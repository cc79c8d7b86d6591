"""Task configs that name Hub datasets (`dataset:` with `revision:`) load through the real `datasets` client from the
Hub server on 127.0.0.1 (tests/hub_server.py); nothing in `datasets` or `huggingface_hub` is monkeypatched.

The repos are laid out as the Hub lays them out: `user/topics` as `push_to_hub` writes a dataset (a README whose
YAML names the configs and features, `data/{split}-00000-of-00001.parquet`), with a tag `v1.0` and a later commit
that changes the rows and adds a class; `user/conll-mini` as a script dataset (a `.py` on `main`, which datasets 5
refuses to run) whose rows live on the Hub's automatic parquet export `refs/convert/parquet`
(`{config}/{split}/0000.parquet`), as `data/tasks/agnews_conll.yaml` reads CoNLL-2003.

huggingface_hub reads HF_ENDPOINT and HF_HUB_OFFLINE at import, so every client runs in a fresh subprocess
(`hub_server.run_client`) whose environment drops the offline switches and points HF_HOME and HF_DATASETS_CACHE
into the test's tmp_path; this process stays offline.
"""

import io
import json
import os
from pathlib import Path

import datasets
import yaml
from huggingface_hub import DatasetCard, DatasetCardData

pytest_plugins = ["hub_server"]  # the `hub_server` fixture

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ERROR_PREFIX = "run_multitask.py: error: "

TOPIC_V1 = {
    "names": ["World", "Sports", "Business"],
    "train": [
        ("Leaders met in Geneva for talks.", "World"),
        ("The striker scored twice in the final.", "Sports"),
        ("Shares of the bank rose sharply.", "Business"),
        ("Floods hit the northern provinces.", "World"),
        ("The coach was sacked after the defeat.", "Sports"),
        ("The retailer cut its profit forecast.", "Business"),
    ],
    "validation": [("Elections were held on Sunday.", "World"), ("Oil prices fell again.", "Business")],
}
# The later commit on main: other rows, and a fourth class appended to the ClassLabel.
TOPIC_V2 = {
    "names": ["World", "Sports", "Business", "Sci/Tech"],
    "train": [
        ("A new chip doubles battery life.", "Sci/Tech"),
        ("The champions lost at home.", "Sports"),
        ("Astronomers found a distant planet.", "Sci/Tech"),
        ("The central bank held rates.", "Business"),
        ("Protests spread across the capital.", "World"),
    ],
    "validation": [("The update fixes a security flaw.", "Sci/Tech")],
}
NER_NAMES = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
NER_ROWS = {
    "train": [
        (["John", "Smith", "lives", "in", "Paris", "."], ["B-PER", "I-PER", "O", "O", "B-LOC", "O"]),
        (["Acme", "Corp", "hired", "Mary", "."], ["B-ORG", "I-ORG", "O", "B-PER", "O"]),
        (["The", "Dutch", "team", "won", "."], ["O", "B-MISC", "O", "O", "O"]),
    ],
    "validation": [(["Berlin", "is", "big", "."], ["B-LOC", "O", "O", "O"])],
}


# ----------------------------------------------------------------------------------------------------- repo content
def _parquet(ds: datasets.Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.to_parquet(buffer)  # keeps the features (ClassLabel names) in the parquet schema, as push_to_hub does
    return buffer.getvalue()


def _topic_split(version: dict, split: str) -> datasets.Dataset:
    features = datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=version["names"])}
    )
    rows = version[split]
    return datasets.Dataset.from_dict(
        {"text": [t for t, _ in rows], "label": [version["names"].index(y) for _, y in rows]}, features=features
    )


def _ner_split(split: str) -> datasets.Dataset:
    features = datasets.Features(
        {
            "tokens": datasets.Sequence(datasets.Value("string")),
            "ner_tags": datasets.Sequence(datasets.ClassLabel(names=NER_NAMES)),
        }
    )
    rows = NER_ROWS[split]
    return datasets.Dataset.from_dict(
        {"tokens": [t for t, _ in rows], "ner_tags": [[NER_NAMES.index(x) for x in tags] for _, tags in rows]},
        features=features,
    )


def _pushed_layout(splits: dict[str, datasets.Dataset]) -> dict[str, bytes]:
    """The files `DatasetDict.push_to_hub` writes: a card with `configs` and `dataset_info`, one shard per split."""
    card_data = DatasetCardData()
    first = next(iter(splits.values()))
    datasets.info.DatasetInfosDict({"default": datasets.DatasetInfo(features=first.features)}).to_dataset_card_data(
        card_data
    )
    configs = {"default": {"data_files": [{"split": s, "path": f"data/{s}-*"} for s in splits]}}
    datasets.utils.metadata.MetadataConfigs(configs).to_dataset_card_data(card_data)
    card = DatasetCard(f"---\n{card_data.to_yaml()}\n---\n# A tiny topic dataset\n")
    files = {"README.md": str(card).encode()}
    files.update({f"data/{s}-00000-of-00001.parquet": _parquet(ds) for s, ds in splits.items()})
    return files


def host_datasets(server) -> dict[str, str]:
    """Create the dataset repos on `server`; returns the interesting commit shas."""
    server.create_repo("user/topics", repo_type="dataset")
    v1_files = _pushed_layout({s: _topic_split(TOPIC_V1, s) for s in ("train", "validation")})
    v1 = server.commit_files("user/topics", v1_files, message="First version", repo_type="dataset")
    server.create_tag("user/topics", "v1.0", v1, repo_type="dataset")
    v2_files = _pushed_layout({s: _topic_split(TOPIC_V2, s) for s in ("train", "validation")})
    v2 = server.commit_files("user/topics", v2_files, message="More rows, a fourth class", repo_type="dataset")

    server.create_repo("user/conll-mini", repo_type="dataset")
    server.commit_files("user/conll-mini", {"conll-mini.py": "# a loading script\n"}, repo_type="dataset")
    parquet = {f"conll2003/{s}/0000.parquet": _parquet(_ner_split(s)) for s in ("train", "validation")}
    export = server.commit_files(
        "user/conll-mini",
        parquet,
        message="Update parquet files",
        revision="refs/convert/parquet",
        repo_type="dataset",
    )

    server.create_repo("user/no-train", repo_type="dataset")
    no_train = {s: _topic_split(TOPIC_V1, "validation") for s in ("validation", "test")}
    server.commit_files("user/no-train", _pushed_layout(no_train), repo_type="dataset")
    return {"v1": v1, "v2": v2, "export": export}


def _client_env(tmp_path, name: str) -> dict:
    """HF_HOME and HF_DATASETS_CACHE under tmp_path, so the datasets cache starts empty and stays in the test."""
    home = tmp_path / name
    return {"HF_HOME": str(home), "HF_DATASETS_CACHE": str(home / "datasets")}


# ------------------------------------------------------------------------------------------------------ loading
LOAD_TASKS = r"""
import json, sys
from mtst.data.loading import load_task_data
from mtst.data.tasks import load_task_specs

out = {}
for spec in load_task_specs(sys.argv[1]):
    dsd = load_task_data(spec)
    rows = {split: ds.to_dict() for split, ds in dsd.items()}
    out[spec.name] = {"labels": spec.labels, "inferred": spec.labels_inferred, "rows": rows}
print(json.dumps(out))
"""


def _named(labels, rows, column):
    return [[labels[i] for i in value] if isinstance(value, list) else labels[value] for value in rows[column]]


def test_task_config_loads_hub_datasets_at_the_pinned_revision(hub_server, tmp_path):
    offline = os.environ.get("HF_HUB_OFFLINE"), os.environ.get("HF_DATASETS_OFFLINE")
    shas = host_datasets(hub_server)
    config = tmp_path / "tasks.yaml"
    topic = {"type": "sequence_classification", "dataset": "user/topics"}
    tasks = [
        {"name": "latest", **topic},  # main, loaded first: a cache keyed on the repo alone would serve it below
        {"name": "tagged", **topic, "revision": "v1.0"},
        {"name": "by_sha", **topic, "revision": shas["v1"]},
        {
            "name": "ner",
            "type": "token_classification",
            "dataset": "user/conll-mini",
            "dataset_config": "conll2003",
            "revision": "refs/convert/parquet",
            "tokens_column": "tokens",
            "tags_column": "ner_tags",
        },
    ]
    config.write_text(yaml.safe_dump({"tasks": tasks}, sort_keys=False))
    env = _client_env(tmp_path, "client")
    proc = hub_server.run_client(LOAD_TASKS, tmp_path, args=[config], env=env, cwd=tmp_path)
    got = json.loads(proc.stdout.strip().splitlines()[-1])

    for name, version in (("latest", TOPIC_V2), ("tagged", TOPIC_V1), ("by_sha", TOPIC_V1)):
        task = got[name]
        assert task["labels"] == version["names"] and task["inferred"], (name, task["labels"])  # the ClassLabel
        for split in ("train", "validation"):
            rows = task["rows"][split]
            assert rows["text"] == [text for text, _ in version[split]], (name, split)
            assert _named(task["labels"], rows, "label") == [label for _, label in version[split]], (name, split)
    ner = got["ner"]
    assert ner["labels"] == NER_NAMES and ner["inferred"]  # from the Sequence(ClassLabel) column
    for split in ("train", "validation"):
        rows = ner["rows"][split]
        assert rows["tokens"] == [tokens for tokens, _ in NER_ROWS[split]]
        assert _named(ner["labels"], rows, "tags") == [tags for _, tags in NER_ROWS[split]]

    # The bytes came over HTTP from the commit each revision names, and the datasets cache is the test's.
    fetched = {r.path.split("?")[0] for r in hub_server.requests if r.method == "GET" and "/resolve/" in r.path}
    for sha in (shas["v1"], shas["v2"]):
        assert f"/datasets/user/topics/resolve/{sha}/data/train-00000-of-00001.parquet" in fetched
    assert f"/datasets/user/conll-mini/resolve/{shas['export']}/conll2003/train/0000.parquet" in fetched
    cached = os.listdir(env["HF_DATASETS_CACHE"])
    assert "user___topics" in cached and "user___conll-mini" in cached, cached
    # Only the client went online: this process keeps the offline switches the suite runs with (.ci/run).
    assert (os.environ.get("HF_HUB_OFFLINE"), os.environ.get("HF_DATASETS_OFFLINE")) == offline


# ------------------------------------------------------------------------------------------------------- errors
RUN_CLI_CASES = r"""
import contextlib, io, json, sys, traceback
from mtst.cli import train as run_multitask
cases = json.loads(sys.argv[1])
out = {}
for name, argv in cases.items():
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = run_multitask.main(argv)
        except BaseException:
            traceback.print_exc()
            code = "raised"
    out[name] = {"code": code, "stderr": err.getvalue()}
print(json.dumps(out))
"""


def _error_paragraph(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = stderr.rstrip("\n").splitlines()
    assert lines and lines[-1].startswith(ERROR_PREFIX), stderr[-3000:]
    return lines[-1][len(ERROR_PREFIX) :]


def _cli_args(config, output_dir) -> list[str]:
    from trainer_helpers import backbone_path  # the tokenizer only: data errors come before the model is built

    return [
        "--model_name_or_path",
        backbone_path(),
        "--tasks_config",
        str(config),
        "--output_dir",
        str(output_dir),
        "--do_train",
        "--report_to",
        "none",
        "--disable_tqdm",
        "true",
    ]


def test_missing_repo_revision_or_split_is_one_paragraph_through_the_cli(hub_server, tmp_path):
    host_datasets(hub_server)
    good = {"name": "topic", "type": "sequence_classification", "dataset": "user/topics", "revision": "v1.0"}
    broken = {
        "missing_repo": {"dataset": "user/no-such-dataset"},
        "missing_revision": {"revision": "v9.9"},
        "missing_split": {"dataset": "user/no-train", "revision": "main"},
        "missing_config": {"dataset_config": "no-such-config"},
    }
    cases = {}
    for case, change in broken.items():
        task = {k: v for k, v in {**good, **change}.items() if v is not None}
        config = tmp_path / f"{case}.yaml"
        config.write_text(yaml.safe_dump({"tasks": [task]}, sort_keys=False))
        cases[case] = _cli_args(config, tmp_path / f"out_{case}")
    env = _client_env(tmp_path, "client")
    proc = hub_server.run_client(RUN_CLI_CASES, tmp_path, args=[json.dumps(cases)], env=env, cwd=ROOT)
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    messages = {}
    for case in broken:
        assert got[case]["code"] == 2, (case, got[case]["stderr"][-3000:])
        messages[case] = message = _error_paragraph(got[case]["stderr"])
        assert message.startswith("Task 'topic': dataset "), message
        assert not (tmp_path / f"out_{case}").exists()  # a failed run leaves no output folder behind

    assert "user/no-such-dataset at revision v1.0 was not found" in messages["missing_repo"]
    assert hub_server.endpoint in messages["missing_repo"]  # where it was looked for
    assert "HF_TOKEN" in messages["missing_repo"]  # private or gated repos need a token
    missing_revision = messages["missing_revision"]
    assert "dataset user/topics has no revision 'v9.9'" in missing_revision
    assert "branches: main" in missing_revision and "tags: v1.0" in missing_revision  # what exists
    missing_split = messages["missing_split"]
    assert "user/no-train at revision main has no 'train' split" in missing_split
    assert "it has validation, test" in missing_split or "it has test, validation" in missing_split
    missing_config = messages["missing_config"]
    assert "user/topics (no-such-config)" in missing_config and "v1.0" in missing_config
    assert "'default'" in missing_config  # the configs it has


def test_missing_revision_from_the_command_line_process(hub_server, tmp_path):
    """The same error from `python run_multitask.py` itself: exit code 2 and one paragraph, no traceback."""
    host_datasets(hub_server)
    config = tmp_path / "tasks.yaml"
    task = {"name": "topic", "type": "sequence_classification", "dataset": "user/topics", "revision": "v2.0"}
    config.write_text(yaml.safe_dump({"tasks": [task]}, sort_keys=False))
    proc = hub_server.run_client(
        Path(ROOT) / "run_multitask.py",
        tmp_path,
        args=_cli_args(config, tmp_path / "out"),
        env=_client_env(tmp_path, "client"),
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    message = _error_paragraph(proc.stderr)
    assert "Task 'topic'" in message and "user/topics" in message and "'v2.0'" in message
    assert "tags: v1.0" in message


# ---------------------------------------------------------------------------------------------------- streaming
STREAM_TASK = r"""
import json, sys
from transformers import AutoTokenizer
from mtst.data.errors import TaskConfigError
from mtst.data.files import open_stream
from mtst.data.loading import load_task_data
from mtst.data.streaming import StreamingTrainSplit
from mtst.data.tasks import load_task_specs

spec, = load_task_specs(sys.argv[1])
tokenizer = AutoTokenizer.from_pretrained(sys.argv[2])
validation = load_task_data(spec)["validation"]
stream = open_stream(spec, "train", None)
try:
    StreamingTrainSplit(spec, stream, tokenizer)
    unsized = None
except TaskConfigError as err:
    unsized = str(err)
split = StreamingTrainSplit(spec, stream, tokenizer, num_examples=5, batch_size=5)
rows = split.next_rows(5)
texts = sorted(tokenizer.decode(r["input_ids"], skip_special_tokens=True) for r in rows)
print(json.dumps({"validation": list(validation["text"]), "train": texts, "labels": [r["labels"] for r in rows],
                  "unsized": unsized}))
"""


def test_a_streaming_task_reads_its_hub_dataset_as_a_stream(hub_server, tmp_path):
    from trainer_helpers import backbone_path

    host_datasets(hub_server)
    config = tmp_path / "tasks.yaml"
    task = {"name": "latest", "type": "sequence_classification", "dataset": "user/topics", "streaming": True}
    task["buffer_size"] = len(TOPIC_V2["train"])  # one chunk: one pass over the stream
    task["labels"] = TOPIC_V2["names"]
    config.write_text(yaml.safe_dump({"tasks": [task]}, sort_keys=False))
    env = _client_env(tmp_path, "client")
    proc = hub_server.run_client(STREAM_TASK, tmp_path, args=[config, backbone_path()], env=env, cwd=tmp_path)
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["validation"] == [text for text, _ in TOPIC_V2["validation"]]  # read through the stream, kept
    assert got["train"] == sorted(text.lower() for text, _ in TOPIC_V2["train"])
    labels = TOPIC_V2["names"]
    assert sorted(labels[i] for i in got["labels"]) == sorted(label for _, label in TOPIC_V2["train"])
    assert "set `num_examples:`" in got["unsized"]  # its card gives no row count
    assert not os.path.isdir(os.path.join(env["HF_DATASETS_CACHE"], "user___topics"))  # nothing prepared
