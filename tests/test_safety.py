"""Safe loading, secrets and the offline guarantee.

- Weights are written and read as safetensors only: no `torch.load`/`torch.save`/`pickle` call in the project's
  code, no `pytorch_model.bin` anywhere in an output folder or checkpoint, and MTST refuses a folder whose only
  weights are a pickle. The Trainer's own `training_args.bin` (a pickle of the arguments) is written by
  transformers, never loaded by MTST, and never pushed; its optimizer/scheduler/RNG files are loaded by transformers
  with `weights_only=True` when resuming.
- The Hub token is never printed or written: not in stdout/stderr, not in any file of the output folder (the pickled
  `training_args.bin` included), not in anything uploaded.
- The default pipeline (the bundled all-MiniLM-L6-v2 backbone, the default task config) trains and predicts with
  networking blocked for the whole process.
"""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import pytest
import torch
from reliability_helpers import ENV, PREDICT, ROOT, SCRIPT, cli_args, make_tiny, run_subprocess

from mtst.cli import train as run_multitask
from mtst.remote.configuration_mtst import MTSTLoadError
from mtst.remote.modeling_mtst import MTSTModel

pytest_plugins = ["hub_server"]  # the `hub_server` fixture: a Hub on 127.0.0.1

PROJECT_MODULES = sorted([*Path(ROOT).glob("*.py"), *Path(ROOT, "mtst").rglob("*.py")])
FAKE_TOKEN = "hf_FAKEmtstReliabilityToken0123456789xyz"
# Trainer state files that are not weights (loaded by transformers with weights_only=True when resuming).
TRAINER_STATE_FILES = {"optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny(tmp_path_factory.mktemp("tiny"))


def pickle_calls(path: Path) -> list[str]:
    """`torch.load`, `torch.save`, `pickle.*` and `joblib.*` calls in a source file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            name = owner.id if isinstance(owner, ast.Name) else getattr(owner, "attr", "")
            if (name, node.func.attr) in {("torch", "load"), ("torch", "save")} or name in ("pickle", "joblib"):
                found.append(f"{path.name}:{node.lineno} {name}.{node.func.attr}")
    return found


def test_the_code_never_pickles_or_unpickles():
    assert len(PROJECT_MODULES) >= 8
    assert [call for path in PROJECT_MODULES for call in pickle_calls(path)] == []


def test_outputs_hold_only_safetensors_weights(tiny, tmp_path):
    out = tmp_path / "run"
    extra = ["--max_steps", "4", "--save_strategy", "steps", "--save_steps", "2", "--eval_strategy", "no"]
    assert run_multitask.main(cli_args(tiny, out, "--do_train", "--loss_weighting", "uncertainty", *extra)) == 0
    files = [p for p in out.rglob("*") if p.is_file()]
    folders = [out, *sorted(out.glob("checkpoint-*"))]
    assert len(folders) == 3
    for folder in folders:
        assert (folder / "model.safetensors").is_file()
    for path in files:
        assert not path.name.startswith("pytorch_model"), path
        if path.suffix in (".bin", ".pt", ".pth", ".pkl", ".ckpt"):
            assert path.name in TRAINER_STATE_FILES, path
    for checkpoint in folders[1:]:
        assert (checkpoint / "mtst_loss_weighting.safetensors").is_file()  # the learned task weights, too


def test_models_load_from_safetensors_only(tiny_model, tmp_path, monkeypatch):
    tiny_model.save_pretrained(tmp_path / "model")

    def no_pickle(*args, **kwargs):
        raise AssertionError("torch.load was called")

    monkeypatch.setattr(torch, "load", no_pickle)
    loaded = MTSTModel.from_pretrained(tmp_path / "model")
    assert loaded.config.task_names == tiny_model.config.task_names

    # a folder whose weights are a pickle is refused, not unpickled
    state = tiny_model.state_dict()
    os.remove(tmp_path / "model" / "model.safetensors")
    monkeypatch.undo()
    torch.save(state, tmp_path / "model" / "pytorch_model.bin")
    monkeypatch.setattr(torch, "load", no_pickle)
    with pytest.raises(MTSTLoadError, match=r"has no weights file model.safetensors \(it has pytorch_model.bin"):
        MTSTModel.from_pretrained(tmp_path / "model")


def files_containing(folder: Path, needle: str) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.is_file() and needle.encode() in p.read_bytes()]


def test_token_is_never_written_or_printed(tiny, tmp_path, monkeypatch, capfd):
    """HF_TOKEN set and --hub_token given (no push): the token is in no output file (training_args.bin, checkpoints,
    card, logs) and not in stdout/stderr."""
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    out = tmp_path / "run"
    extra = ["--max_steps", "2", "--save_strategy", "steps", "--save_steps", "1", "--hub_token", FAKE_TOKEN]
    assert run_multitask.main(cli_args(tiny, out, "--do_train", "--do_eval", *extra)) == 0
    captured = capfd.readouterr()
    assert FAKE_TOKEN not in captured.out + captured.err
    assert (out / "training_args.bin").is_file() and (out / "checkpoint-1" / "training_args.bin").is_file()
    assert files_containing(out, FAKE_TOKEN) == []


def test_token_is_never_written_printed_or_pushed(hub_server, tiny, tmp_path):
    """--push_to_hub against the Hub on 127.0.0.1, with the token in HF_TOKEN and in --hub_token."""
    out = tmp_path / "run"
    args = cli_args(tiny, out, "--do_train", "--max_steps", "2", "--save_strategy", "steps", "--save_steps", "1")
    args += ["--eval_strategy", "no", "--push_to_hub", "--hub_model_id", "user/safe", "--hub_token", hub_server.token]
    result = hub_server.run_client(Path(SCRIPT), tmp_path, args=args)  # HF_TOKEN is the server's token, too
    assert hub_server.token not in result.stdout + result.stderr
    assert files_containing(out, hub_server.token) == []
    assert hub_server.files_containing(hub_server.token) == []
    pushed = set(hub_server.list_files("user/safe"))
    assert "model.safetensors" in pushed and not pushed & {"training_args.bin", "optimizer.pt", "rng_state.pth"}
    assert hub_server.requests_with_token()  # it was used, in request headers only


# ------------------------------------------------------------------------------------------------- offline
NETWORK_GUARD = '''"""Blocks the network for this process: socket connections (except AF_UNIX) and name lookups
raise, and are logged to $MTST_NETWORK_LOG."""
import os
import socket

_log = os.environ["MTST_NETWORK_LOG"]


def _blocked(what, target):
    with open(_log, "a", encoding="utf-8") as f:
        f.write(f"{os.getpid()} {what} {target!r}\\n")
    raise OSError(f"network access blocked by the offline test: {what} {target!r}")


_connect, _connect_ex, _getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo


def connect(self, address):
    return _connect(self, address) if self.family == socket.AF_UNIX else _blocked("connect", address)


def connect_ex(self, address):
    return _connect_ex(self, address) if self.family == socket.AF_UNIX else _blocked("connect_ex", address)


def create_connection(address, *args, **kwargs):
    _blocked("create_connection", address)


def getaddrinfo(host, *args, **kwargs):
    if host in (None, "localhost", "127.0.0.1", "::1"):
        return _getaddrinfo(host, *args, **kwargs)
    return _blocked("getaddrinfo", host)


socket.socket.connect, socket.socket.connect_ex = connect, connect_ex
socket.create_connection, socket.getaddrinfo = create_connection, getaddrinfo
'''


@pytest.fixture
def offline_env(tmp_path):
    guard = tmp_path / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(NETWORK_GUARD, encoding="utf-8")
    log = tmp_path / "network.log"
    log.write_text("")
    env = {k: v for k, v in ENV.items() if k not in ("HF_ENDPOINT", "HF_HOME")}
    env.update(
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_HOME=str(tmp_path / "hf_home"),  # an empty cache: nothing can come from an earlier download
        MTST_NETWORK_LOG=str(log),
        PYTHONPATH=os.pathsep.join([str(guard), ROOT]),
        OMP_NUM_THREADS="2",
    )
    probe = run_subprocess(["import socket; socket.create_connection(('huggingface.co', 443))"], script="-c", env=env)
    assert "network access blocked by the offline test" in probe.stderr  # the guard is active
    log.write_text("")
    return env, log


@pytest.mark.slow  # the real default pipeline (about 33 s): .ci/run runs it by name, beside the default suite
def test_default_pipeline_trains_and_predicts_with_the_network_blocked(offline_env, tmp_path):
    env, log = offline_env
    out = tmp_path / "outputs" / "mtst-default"
    train = [
        "--max_steps", "3", "--per_device_train_batch_size", "8", "--max_seq_length", "64",
        "--max_eval_samples", "16", "--save_strategy", "no", "--eval_strategy", "no", "--logging_steps", "1",
    ]  # fmt: skip
    result = run_subprocess(train, env=env, cwd=tmp_path, timeout=600)  # default backbone and task config
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    config = json.loads((out / "config.json").read_text())
    assert [t["name"] for t in config["tasks"]] == ["topic", "sentiment", "ner", "similarity", "mentions", "rating"]
    assert config["encoder"]["hidden_size"] == 384 and config["encoder"]["num_hidden_layers"] == 6  # MiniLM-L6
    assert "eval_average" in json.loads((out / "all_results.json").read_text())

    text = "Apple is opening a new office in Paris."
    predicted = run_subprocess([text], script=PREDICT, env=env, cwd=tmp_path)
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    answer = json.loads(predicted.stdout)
    assert answer["text"] == text and {"topic", "sentiment", "ner", "mentions", "rating"} <= set(answer)
    assert log.read_text() == ""  # not one connection attempt, not one name lookup


def test_network_guard_catches_the_hub_client(offline_env, tmp_path):
    """Control: the Hub client's own HTTP session is blocked by the guard (so a pass above means no attempt was
    made, not that the guard was idle)."""
    env, log = offline_env
    env = {k: v for k, v in env.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    code = "from huggingface_hub.utils import get_session; get_session().get('https://huggingface.co/api/models/gpt2')"
    result = run_subprocess([code], script="-c", env=env, timeout=120)
    assert result.returncode != 0
    assert "getaddrinfo 'huggingface.co'" in log.read_text() or "connect" in log.read_text()
