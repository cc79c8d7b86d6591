"""Packaging: the shipped run-time files (package data, `mtst.resources`), the single-sourced version, and (slow) a
`pip install .` run that must give the same model card as an editable install. The built wheel itself is checked
outside the repository by `.ci/wheel_smoke.py` (CI)."""

from __future__ import annotations

import configparser
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_mtst_config

from mtst import __version__
from mtst import resources as mtst_resources
from mtst.cli import arguments as cli_arguments
from mtst.cli import predict as predict_mtst
from mtst.cli import train as run_multitask
from mtst.hub import card as modelcard_mtst
from mtst.hub import publish as publish_mtst
from mtst.hub.card_data import framework_versions
from mtst.remote.modeling_mtst import MTSTModel

ROOT = Path(__file__).resolve().parent.parent


def test_every_shipped_file_is_package_data():
    """setup.cfg's package_data patterns match the files the commands read, found inside the package; the
    checkout's design-card names (model_card.md, data/tasks, data/sample) are links to those same files."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    patterns = cfg["options.package_data"]["mtst.resources"].split()
    names = sorted(
        p.relative_to(mtst_resources.DIRECTORY).as_posix()
        for pat in patterns
        for p in mtst_resources.DIRECTORY.glob(pat)
    )
    for name in ("model_card.md", "data/tasks/default.yaml", "data/sample/ner/train.jsonl"):
        assert name in names
    for name in names:
        assert mtst_resources.find(name) == mtst_resources.DIRECTORY / name, name
        assert (ROOT / name).resolve() == (mtst_resources.DIRECTORY / name).resolve(), name
    assert modelcard_mtst.TEMPLATE_PATH == ROOT / "mtst" / "resources" / "model_card.md"
    assert publish_mtst.HANDLER_PATH == ROOT / "mtst" / "remote" / "handler.py"


def test_a_missing_file_names_where_it_was_looked_for():
    assert mtst_resources.find("no_such_file.md") is None
    with pytest.raises(mtst_resources.ResourceNotFoundError) as err:
        mtst_resources.path("no_such_file.md")
    message = str(err.value)
    assert str(mtst_resources.DIRECTORY / "no_such_file.md") in message and "reinstall" in message


def test_default_tasks_config_is_found_from_any_folder(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    shipped = mtst_resources.DIRECTORY / "data/tasks/default.yaml"
    assert cli_arguments.resolve_tasks_config("data/tasks/default.yaml") == str(shipped)
    # a file of that name in the current folder is the user's own and wins
    (tmp_path / "data" / "tasks").mkdir(parents=True)
    (tmp_path / "data" / "tasks" / "default.yaml").write_text("tasks: []\n")
    assert cli_arguments.resolve_tasks_config("data/tasks/default.yaml") == "data/tasks/default.yaml"


def test_missing_tasks_config_says_where_it_looked(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    code = run_multitask.main(["--tasks_config", "data/tasks/nothing.yaml", "--output_dir", str(tmp_path / "out")])
    message = " ".join(capsys.readouterr().err.split())
    assert code == 2 and "Traceback" not in message
    assert "data/tasks/nothing.yaml was not found" in message
    shipped = mtst_resources.DIRECTORY / "data/tasks/nothing.yaml"
    assert str(tmp_path / "data/tasks/nothing.yaml") in message and str(shipped) in message
    assert not (tmp_path / "out").exists()


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    return MTSTModel(tiny_mtst_config()).eval()


def test_missing_template_and_handler_are_warned_about(tiny, tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(modelcard_mtst, "TEMPLATE_PATH", None)
    monkeypatch.setattr(mtst_resources, "DIRECTORY", tmp_path / "empty")
    monkeypatch.setattr(publish_mtst, "HERE", tmp_path / "empty")
    with caplog.at_level(logging.WARNING, logger="mtst"):
        modelcard_mtst.write_model_card(tmp_path / "out", tiny)
    text = " ".join(caplog.text.split())
    assert "model_card.md is missing from this installation" in text and str(tmp_path / "empty") in text
    assert "handler.py is missing from this MTST installation" in text
    assert not (tmp_path / "out" / "handler.py").exists() and (tmp_path / "out" / "README.md").exists()


def test_one_version_everywhere(capsys):
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    assert cfg["metadata"]["version"] == "attr: mtst.__version__"
    assert re.fullmatch(r"\d+\.\d+\.\d+(\.dev\d+|rc\d+)?", __version__)
    assert framework_versions()["MTST"] == __version__
    assert f"## {__version__.split('.dev')[0]}" in (ROOT / "CHANGELOG.md").read_text()
    for main, prog in ((predict_mtst.main, "mtst-predict"), (run_multitask.main, "mtst-train")):
        with pytest.raises(SystemExit) as exit_:
            main(["--version"])
        assert exit_.value.code in (0, None)
        assert capsys.readouterr().out.strip() == f"{prog} {__version__}"


# ------------------------------------------------------------------------------------------- pip install . (slow)
_COPY_IGNORE = shutil.ignore_patterns(
    ".git", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis", "outputs", "tests", "benchmarks"
)
# Lines of a card that legitimately differ between two identical runs (wall-clock durations).
_VOLATILE = re.compile(r"^Training time: .*$", re.M)


def _venv(path: Path, source: Path, editable: bool) -> Path:
    """A venv over the installed packages with MTST installed from `source` (editable or not); its bin folder."""
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", path], check=True)
    install = [sys.executable, "-m", "pip", "--python", path / "bin" / "python", "install", "-q", "--no-deps"]
    install += ["--no-build-isolation", *(["-e"] if editable else []), source]
    subprocess.run(install, check=True, env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    return path / "bin"


@pytest.mark.slow
def test_pip_install_gives_the_same_card_as_the_editable_install(tmp_path):
    """The same short run (default tasks, a tiny random backbone) with a non-editable and an editable install of the
    same source, each from an empty folder: identical cards (but for the training time) and handler."""
    from conftest import save_tiny_backbone

    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=_COPY_IGNORE)
    backbone = save_tiny_backbone(tmp_path / "backbone")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    args = ["--model_name_or_path", backbone, "--max_steps", "3", "--logging_steps", "1", "--save_strategy", "no"]
    args += ["--max_train_samples", "64", "--max_eval_samples", "16", "--per_device_train_batch_size", "8"]
    cards, handlers = {}, {}
    for kind in ("installed", "editable"):
        bindir = _venv(tmp_path / f"venv-{kind}", source, editable=kind == "editable")
        where = subprocess.run(
            [bindir / "python", "-c", "import run_multitask; from mtst.hub import card; print(card.TEMPLATE_PATH)"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        expected = source if kind == "editable" else tmp_path / f"venv-{kind}"
        assert where.startswith(str(expected)), (kind, where)
        run_dir = tmp_path / f"run-{kind}"
        run_dir.mkdir()
        result = subprocess.run(
            [bindir / "mtst-train", *args], cwd=run_dir, env=env, capture_output=True, text=True, timeout=600
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert "Model card:" not in result.stderr and "Model folder:" not in result.stderr, result.stderr[-3000:]
        out = run_dir / "outputs" / "mtst-default"
        cards[kind] = _VOLATILE.sub("Training time: <t>", (out / "README.md").read_text(encoding="utf-8"))
        handlers[kind] = (out / "handler.py").read_bytes()
    assert "### Training log" in cards["installed"] and "\n## Results\n" in cards["installed"]
    assert f"- MTST: {__version__}" in cards["installed"]
    assert cards["installed"] == cards["editable"]
    assert handlers["installed"] == handlers["editable"] == (ROOT / "mtst" / "remote" / "handler.py").read_bytes()
