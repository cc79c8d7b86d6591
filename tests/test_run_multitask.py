"""run_multitask.py: arguments and defaults, clean errors, an end-to-end run on a tiny backbone, a 2-process DDP run
on CPU (same task on both ranks at every step) and a DDP run interrupted and resumed from its checkpoint."""

import json
import os
import re
import socket
import subprocess
import sys
from collections import defaultdict

import pytest
import torch
import yaml
from reliability_helpers import cli_args as tiny_args
from safetensors.torch import load_file
from trainer_helpers import WORSE_EPOCHS_RUN, backbone_path, install_worse_epochs, write_task_files

from mtst.cli import arguments as cli_arguments
from mtst.cli import train as run_multitask

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "run_multitask.py")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
ENV["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))
STEP_LINE = re.compile(r"\[mtst-step\] rank=(\d+) step=(\d+) micro=(\d+) task=(\S+) batch=(\d+)")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny random BERT backbone (with the MiniLM tokenizer) and small topic + ner task files."""
    from conftest import save_tiny_backbone

    folder = tmp_path_factory.mktemp("tiny")
    save_tiny_backbone(folder / "backbone", max_position_embeddings=64)
    tasks = write_task_files(folder / "data", n_train=40, n_eval=12)
    return {"backbone": str(folder / "backbone"), "tasks": tasks, "folder": folder}


def test_defaults(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # the default task config is found next to the script
    model_args, data_args, args = run_multitask.parse_args([])
    assert args.do_train and args.do_eval and not args.do_predict
    assert args.output_dir == "outputs/mtst-default"
    assert data_args.tasks_config == os.path.join(ROOT, "mtst/resources/data/tasks/default.yaml")
    assert model_args.model_name_or_path == backbone_path()
    assert (args.per_device_train_batch_size, args.num_train_epochs, args.seed, args.save_total_limit) == (
        32,
        3,
        42,
        2,
    )
    assert args.eval_strategy == "epoch" and args.save_strategy == "epoch" and args.logging_steps == 10
    assert args.report_to in ([], ["none"], "none") and args.remove_unused_columns is False
    assert args.metric_for_best_model == "eval_average" or args.metric_for_best_model == "average"
    assert args.max_seq_length == 128 and args.sampling_strategy == "balanced" and args.group_by_length
    _, _, args = run_multitask.parse_args(["--do_predict"])
    assert args.do_predict and not args.do_train


def test_yaml_argument_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "output_dir": str(tmp_path / "o"),
                "do_train": True,
                "sampling_strategy": "temperature",
                "temperature": 3.0,
                "freeze_heads": ["ner"],
                "task_weights": {"topic": 1, "ner": 2},
                "max_seq_length": 64,
                "pooling": "cls",
            }
        )
    )
    model_args, data_args, args = run_multitask.parse_args([str(path)])
    assert args.do_train and not args.do_predict
    assert (args.sampling_strategy, args.temperature, args.freeze_heads) == ("temperature", 3.0, ["ner"])
    assert args.max_seq_length == 64 and model_args.pooling == "cls"
    path.write_text(yaml.safe_dump({"learning_rat": 1e-3}))
    assert run_multitask.main([str(path)]) == 2
    path.write_text("learning_rate: 1e-3\ndo_train: true\nlearning_rate: 1e-4\n")  # yaml would keep 1e-4
    with pytest.raises(run_multitask.CommandLineError, match=r"gives the key 'learning_rate' twice .*lines 1 and 3"):
        run_multitask.parse_args([str(path)])


def test_cli_errors_end_with_one_paragraph_and_exit_code_2(tiny, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"tasks": [{"name": "topic", "type": "sequence_clasification"}]}))
    result = subprocess.run(
        [sys.executable, SCRIPT, *tiny_args(tiny, tmp_path / "o"), "--tasks_config", str(bad)],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    message = result.stderr.strip().splitlines()
    assert message[-1].startswith("run_multitask.py: error:") or any("error:" in line for line in message)
    assert "sequence_clasification" in result.stderr


def test_bad_options_exit_2(tiny, tmp_path, capsys):
    assert run_multitask.main(tiny_args(tiny, tmp_path / "o", "--freeze_heads", "pos")) == 2
    assert "unknown task" in capsys.readouterr().err
    assert run_multitask.main(tiny_args(tiny, tmp_path / "o", "--sampling_strategy", "weights")) == 2
    assert "task_weights" in capsys.readouterr().err


def test_a_tracker_that_is_not_installed_is_named_at_start_up(tiny, tmp_path, capsys, monkeypatch):
    """--report_to tensorboard without tensorboard failed with a traceback when the Trainer was built."""
    import transformers.integrations

    monkeypatch.setattr(transformers.integrations, "is_tensorboard_available", lambda: False)
    missing = str(tmp_path / "nowhere.jsonl")  # no data is read before the check
    config = tmp_path / "tasks.json"
    config.write_text(json.dumps({"tasks": [{"name": "t", "type": "sequence_classification", "data_files": missing}]}))
    args = tiny_args(tiny, tmp_path / "o", "--tasks_config", str(config), "--report_to", "tensorboard")
    assert run_multitask.main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == (
        "run_multitask.py: error: --report_to tensorboard needs the tensorboard package, which is not installed: "
        "pip install tensorboard (or pass --report_to none)."
    )
    assert run_multitask.main([*args[:-1], "tensorbord"]) == 2
    assert "--report_to tensorbord is not a tracker transformers reports to" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_single_task_results_are_read_and_checked_before_training(tiny, tmp_path, capsys):
    from types import SimpleNamespace

    specs = [
        SimpleNamespace(name="topic", type="sequence_classification"),
        SimpleNamespace(name="ner", type="token_classification"),
    ]
    (tmp_path / "ner_only").mkdir()
    (tmp_path / "ner_only" / "all_results.json").write_text(json.dumps({"eval_ner_f1": 0.8, "predict_ner_f1": 0.75}))
    (tmp_path / "topic.json").write_text(json.dumps({"eval_topic_accuracy": 0.9, "eval_topic_macro_f1": 0.5}))
    option = f"ner={tmp_path / 'ner_only'}, topic={tmp_path / 'topic.json'}"
    assert run_multitask.read_single_task_results(option, specs) == {
        "ner": {"source": "ner_only", "metric": "f1", "test": 0.75, "validation": 0.8},
        "topic": {"source": tmp_path.name, "metric": "accuracy", "validation": 0.9},
    }
    assert run_multitask.read_single_task_results(None, specs) == {}
    bad = {
        f"pos={tmp_path / 'ner_only'}": ["unknown task 'pos'", "topic, ner"],
        f"ner={tmp_path / 'missing'}": [str(tmp_path / "missing"), "'ner'", "FileNotFoundError"],
        f"topic={tmp_path / 'ner_only'}": ["predict_topic_accuracy", "eval_topic_accuracy", "all_results.json"],
        "topic": ["is not 'task=DIR_OR_JSON'"],
    }
    for value, fragments in bad.items():
        with pytest.raises(run_multitask.CommandLineError) as err:
            run_multitask.read_single_task_results(value, specs)
        assert all(fragment in str(err.value) for fragment in fragments), (value, str(err.value))
    # the run stops with the error before loading any data or building a model: nothing is written
    out = tmp_path / "o"
    assert run_multitask.main(tiny_args(tiny, out, "--single_task_results", f"pos={tmp_path / 'ner_only'}")) == 2
    assert "unknown task 'pos'" in capsys.readouterr().err and not out.exists()


def test_train_evaluate_predict_save_and_reload(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    args = tiny_args(tiny, out, "--do_train", "--do_eval", "--do_predict", "--num_train_epochs", "2")
    assert run_multitask.main(args) == 0
    printed = capsys.readouterr().out
    assert re.search(r"eval\s+topic\s", printed) and re.search(r"predict\s+ner\s", printed)
    results = json.loads((out / "all_results.json").read_text())
    for key in ("train_loss", "eval_topic_accuracy", "eval_ner_f1", "eval_average", "predict_topic_macro_f1"):
        assert key in results, key
    for task in ("topic", "ner"):
        lines = (out / f"predictions_{task}.jsonl").read_text().splitlines()
        assert len(lines) == 12 and "prediction" + ("s" if task == "ner" else "") in json.loads(lines[0])
    for name in ("config.json", "model.safetensors", "configuration_mtst.py", "modeling_mtst.py", "tokenizer.json"):
        assert (out / name).exists(), name
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-20", "checkpoint-40"]
    code = (
        "import sys; from transformers import AutoModel;"
        f"m = AutoModel.from_pretrained({str(out)!r}, trust_remote_code=True);"
        "assert type(m).__name__ == 'MTSTModel' and m.config.task_names == ['topic', 'ner'], m.config.task_names;"
        "print('ok')"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={**ENV, "PYTHONPATH": ""},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert loaded.returncode == 0 and "ok" in loaded.stdout, loaded.stderr[-2000:]

    # continuing from the MTST checkpoint needs the same tasks and labels
    config = yaml.safe_load(open(tiny["tasks"]))
    config["tasks"][0]["labels"] = config["tasks"][0]["labels"][::-1]
    for entry in config["tasks"]:
        entry["data_files"] = {
            s: os.path.join(os.path.dirname(tiny["tasks"]), p) for s, p in entry["data_files"].items()
        }
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(config))
    again = tiny_args(tiny, tmp_path / "again", "--model_name_or_path", str(out), "--tasks_config", str(other))
    assert run_multitask.main(again) == 2
    assert "does not match the task config" in capsys.readouterr().err


def assert_kept_best_checkpoint(out, log: str, epochs: int, steps_per_epoch: int = 20) -> dict:
    """The run in `out` had its last epoch made worse (`worse_at_epochs_callback`): the saved model is the best
    checkpoint by eval_average, an earlier one, and the log and the card say so. Returns the trainer state."""
    state = json.loads((out / "trainer_state.json").read_text())
    evals = {e["step"]: e["eval_average"] for e in state["log_history"] if "eval_average" in e and "epoch" in e}
    last = epochs * steps_per_epoch
    assert sorted(evals) == [steps_per_epoch * (i + 1) for i in range(epochs)]
    best = state["best_global_step"]
    assert best < last and evals[last] < evals[best] == state["best_metric"] == max(evals.values())
    checkpoint = out / f"checkpoint-{best}"
    assert os.path.samefile(state["best_model_checkpoint"], checkpoint)
    saved, kept = load_file(out / "model.safetensors"), load_file(checkpoint / "model.safetensors")
    assert saved.keys() == kept.keys()
    for name in saved:
        assert torch.equal(saved[name], kept[name]), name
    assert saved["heads.topic.classifier.weight"].abs().sum() > 0  # not the spoilt last epoch
    value = f"{state['best_metric']:.4f}"
    said = f"Kept the best checkpoint by eval_average: checkpoint-{best} (step {best}, eval_average {value}); "
    assert said + f"training ran to step {last}." in log
    card = (out / "README.md").read_text()
    said = f"**Weights:** the best checkpoint by `eval_average`: step {best}, `eval_average` {value}, of {last} steps"
    assert said + " trained." in card
    results = json.loads((out / "all_results.json").read_text())
    assert results["eval_average"] == pytest.approx(state["best_metric"])  # the final evaluation is of that model
    return state


def test_saved_model_is_the_best_checkpoint_by_eval_average(tiny, tmp_path, caplog, monkeypatch):
    """Three epochs, the third made worse on purpose: the saved model is the best (earlier) checkpoint; with
    save_total_limit 1 the Trainer keeps that checkpoint and deletes the others."""
    monkeypatch.setattr(run_multitask, "attach_model_card", run_multitask.attach_model_card)  # restored afterwards
    install_worse_epochs(run_multitask, [3])
    out = tmp_path / "run"
    args = tiny_args(tiny, out, "--num_train_epochs", "3", "--save_total_limit", "1", "--do_train", "--do_eval")
    with caplog.at_level("INFO"):
        assert run_multitask.main(args) == 0
    assert "is the best checkpoint by eval_average (evaluation and saving line up" in caplog.text
    state = assert_kept_best_checkpoint(out, caplog.text, epochs=3)
    assert sorted(p.name for p in out.glob("checkpoint-*")) == [f"checkpoint-{state['best_global_step']}"]


def test_rerunning_a_finished_run_trains_no_more_steps(tiny, tmp_path, caplog):
    """Each re-run of a finished command resumed from its last checkpoint and took one step past --max_steps."""
    out = tmp_path / "run"
    extra = ["--max_steps", "6", "--save_strategy", "steps", "--save_steps", "3", "--eval_strategy", "no"]
    args = tiny_args(tiny, out, "--do_train", *extra)
    assert run_multitask.main(args) == 0
    saved = {name: (out / name).read_bytes() for name in ("model.safetensors", "README.md", "train_results.json")}

    def steps_and_checkpoints():
        state = json.loads((out / "trainer_state.json").read_text())
        return state["global_step"], sorted(p.name for p in out.glob("checkpoint-*"))

    for _ in range(2):
        caplog.clear()
        assert run_multitask.main(args) == 0
        assert "holds the model of a finished run" in caplog.text and "trained 6 of the 6 steps" in caplog.text
        assert steps_and_checkpoints() == (6, ["checkpoint-3", "checkpoint-6"])
        assert all((out / name).read_bytes() == data for name, data in saved.items())
    # killed after its last checkpoint, before the final save: the re-run saves checkpoint-6 and takes no step
    os.remove(out / "model.safetensors")
    os.remove(out / "trainer_state.json")
    caplog.clear()
    assert run_multitask.main(args) == 0
    assert "checkpoint-6 already trained 6 of the 6 steps this run asks for: nothing left to train" in caplog.text
    assert steps_and_checkpoints() == (6, ["checkpoint-3", "checkpoint-6"])
    final, last = load_file(out / "model.safetensors"), load_file(out / "checkpoint-6" / "model.safetensors")
    assert final.keys() == last.keys() and all(torch.equal(final[k], last[k]) for k in final)


def test_last_model_is_kept_and_said_when_evaluation_and_saving_do_not_line_up(tiny, tmp_path, caplog):
    out = tmp_path / "run"
    args = tiny_args(tiny, out, "--max_steps", "10", "--save_strategy", "steps", "--save_steps", "5", "--do_train")
    with caplog.at_level("INFO"):
        assert run_multitask.main([*args, "--do_eval"]) == 0
    reason = "evaluation (--eval_strategy epoch) and saving (--save_strategy steps) do not line up"
    said = "The model kept at the end of training is the last one, not the best checkpoint by eval_average: "
    assert said + reason in caplog.text
    assert f"Kept the last model (step 10), not the best checkpoint by eval_average: {reason}." in caplog.text
    card = (out / "README.md").read_text()
    assert f"**Weights:** the last step's (step 10), not selected by `eval_average`: {reason}." in card


def free_port() -> int:
    with socket.socket() as sock:  # other test runs on this machine may hold accelerate's default port 29500
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ddp_on_cpu(processes: int = 2) -> bool:
    """Whether `processes` processes launched on this machine train on CPU (gloo): run_multitask's own rule (fewer
    CUDA GPUs than processes on the machine), applied to this machine's GPU count. With a GPU each, they use NCCL."""
    return cli_arguments.distributed_on_cpu(processes, processes, torch.cuda.device_count())


def accelerate_launch(args, timeout=300, processes=2, script=SCRIPT, env=None):
    """`accelerate launch --multi_gpu` (torchrun: one process per rank) of run_multitask.py on this machine. The script
    decides the device: CPU and gloo when the machine has fewer GPUs than `processes` (none, or one: two processes on
    GPU 0 make NCCL fail), a GPU per process and NCCL otherwise. `script` replaces run_multitask.py; `env` adds
    variables."""
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        str(processes),
        "--num_machines",
        "1",
        "--main_process_port",
        str(free_port()),
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        str(script),
        *args,
    ]
    env = {**ENV, **(env or {})}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def check_ddp_devices(log: str, processes: int = 2) -> None:
    """Every rank ran distributed, on CPU when ddp_on_cpu() says so, else on its own GPU."""
    devices = dict(re.findall(r"Process rank: (\d+), device: (\S+), n_gpu: \d+, distributed training: True", log))
    if ddp_on_cpu(processes):  # Accelerate names the CPU device "cpu" or "cpu:0"
        devices = {rank: device.split(":")[0] for rank, device in devices.items()}
    expected = {str(r): "cpu" if ddp_on_cpu(processes) else f"cuda:{r}" for r in range(processes)}
    assert devices == expected, (devices, log[-3000:])


@pytest.mark.parametrize(
    "world_size, local_processes, gpus, on_cpu",
    [
        ("1", "1", 0, False),  # one process: the Trainer picks the device itself
        ("1", "1", 1, False),
        ("2", "2", 0, True),  # no GPU: gloo
        ("2", "2", 1, True),  # two processes would share GPU 0, which NCCL refuses
        ("2", "2", 2, False),  # a GPU each: NCCL
        ("3", "3", 2, True),
        ("4", "2", 2, False),  # two machines with 2 processes and 2 GPUs each
        ("2", "1", 1, False),  # two machines with one GPU and one process each
        ("2", "1", 0, True),  # two CPU machines
        ("2", None, 0, True),  # a launcher that does not set LOCAL_WORLD_SIZE: one process per machine assumed
        ("2", None, 1, False),
    ],
)
def test_distributed_runs_fall_back_to_cpu_with_fewer_gpus_than_processes(
    monkeypatch, world_size, local_processes, gpus, on_cpu
):
    monkeypatch.setenv("WORLD_SIZE", world_size)
    if local_processes is None:
        monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    else:
        monkeypatch.setenv("LOCAL_WORLD_SIZE", local_processes)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    assert cli_arguments.cpu_only_distributed() is on_cpu
    if local_processes is not None:
        assert cli_arguments.distributed_on_cpu(int(world_size), int(local_processes), gpus) is on_cpu
        if world_size == local_processes:  # the launch helper of these tests follows the same rule
            assert ddp_on_cpu(int(world_size)) is on_cpu


def steps_by_rank(log: str) -> dict:
    steps = defaultdict(dict)
    for rank, step, micro, task, _ in STEP_LINE.findall(log):
        steps[(int(step), int(micro))][int(rank)] = task
    return steps


def test_two_processes_train_the_same_task_at_every_step(tiny, tmp_path):
    """Also: the second (last) epoch is made worse on purpose on both ranks, and the saved model is the first epoch's
    checkpoint, the best by eval_average."""
    out = tmp_path / "ddp"
    script = tmp_path / "worse_last_epoch.py"
    script.write_text(WORSE_EPOCHS_RUN)
    result = accelerate_launch(
        # without embedding preservation, so that the tiny random model's first epoch clearly beats the spoiled one
        tiny_args(
            tiny,
            out,
            "--num_train_epochs",
            "2",
            "--gradient_accumulation_steps",
            "2",
            "--log_task_per_step",
            "--embedding_preservation",
            "0",
        ),  # fmt: skip
        script=script,
        env={"MTST_WORSE_EPOCHS": "2"},
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    check_ddp_devices(log)
    steps = steps_by_rank(log)
    # 80 examples, 4 per batch, 2 ranks x 2 micro-steps per step: 3 steps per task and epoch (one a split tail)
    assert len(steps) == 2 * 6 * 2
    for key, tasks in steps.items():
        assert set(tasks) == {0, 1} and tasks[0] == tasks[1], (key, tasks)
    assert {tasks[0] for tasks in steps.values()} == {"topic", "ner"}
    assert (out / "all_results.json").exists() and (out / "model.safetensors").exists()
    assert_kept_best_checkpoint(out, log, epochs=2, steps_per_epoch=6)
    assert log.count("Kept the best checkpoint by eval_average") == 1  # said once, by the main process


@pytest.mark.slow  # three 2-process launches, about a minute: CI runs it by name (.ci/run), beside the default suite
def test_interrupted_ddp_run_resumes_to_the_same_weights(tiny, tmp_path):
    """Stopped in the second epoch (max_steps, checkpoint kept), resumed under DDP: same weights as one run."""
    common = [
        "--lr_scheduler_type",
        "constant",
        "--warmup_steps",
        "0",
        "--sampling_strategy",
        "temperature",
        "--eval_strategy",
        "no",
        "--do_train",
    ]
    if not ddp_on_cpu():  # NCCL on GPUs: exact equality needs deterministic kernels (embedding backward)
        common.append("--full_determinism")
    full = accelerate_launch(tiny_args(tiny, tmp_path / "full", *common, "--num_train_epochs", "3"))
    assert full.returncode == 0, (full.stdout + full.stderr)[-3000:]
    cut_args = tiny_args(tiny, tmp_path / "cut", *common, "--save_strategy", "steps", "--save_steps", "14")
    cut = accelerate_launch([*cut_args, "--max_steps", "14"])
    assert cut.returncode == 0, (cut.stdout + cut.stderr)[-3000:]
    assert (tmp_path / "cut" / "checkpoint-14").is_dir()
    resumed = accelerate_launch([*cut_args, "--num_train_epochs", "3"])  # finds checkpoint-14 by itself
    log = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, log[-3000:]
    assert "resuming training from" in log.lower() and "checkpoint-14" in log
    reference = load_file(tmp_path / "full" / "model.safetensors")
    final = load_file(tmp_path / "cut" / "model.safetensors")
    assert reference.keys() == final.keys()
    for name in reference:
        assert torch.equal(reference[name], final[name]), name


MULTINODE_CONFIG = os.path.join(ROOT, "docs", "accelerate_multinode.yaml")
DIGEST_ENTRY = os.path.join(ROOT, "tests", "weights_digest_entry.py")  # run_multitask.py + a weights digest per rank
WEIGHTS_LINE = re.compile(r"\[mtst-weights\] rank=(\d+) sha256=([0-9a-f]{64})")


def launch_two_machines(tmp_path, script_args, timeout=300):
    """Two "machines" on loopback, one CPU process each (gloo), started at once, each in its own working directory
    (`machine0/`, `machine1/`), so a relative --output_dir is each machine's own view of the output folder. Machine 0
    is launched with the README's command line, machine 1 with docs/accelerate_multinode.yaml (rank, address, port,
    process count and precision replaced). Returns the two logs; both launches must succeed."""
    port = free_port()
    launch = [sys.executable, "-m", "accelerate.commands.launch"]
    flags = ["--multi_gpu", "--num_machines", "2", "--machine_rank", "0", "--main_process_ip", "127.0.0.1"]
    flags += ["--main_process_port", str(port), "--num_processes", "2", "--mixed_precision", "no"]
    config = yaml.safe_load(open(MULTINODE_CONFIG, encoding="utf-8"))
    assert (config["distributed_type"], config["num_machines"]) == ("MULTI_GPU", 2)
    config.update(machine_rank=1, main_process_ip="127.0.0.1", main_process_port=port, num_processes=2)
    config.update(mixed_precision="no")
    config_file = tmp_path / "machine1.yaml"
    config_file.write_text(yaml.safe_dump(config))
    commands = [[*launch, *flags], [*launch, "--config_file", str(config_file)]]
    # each "machine" sees no GPU (one physical GPU shared by both would make NCCL fail), so both train on CPU
    env = {**ENV, "CUDA_VISIBLE_DEVICES": ""}
    logs, processes = [tmp_path / f"machine{r}.log" for r in (0, 1)], []
    try:
        for rank in (0, 1):
            (tmp_path / f"machine{rank}").mkdir()
            with open(logs[rank], "w") as log:  # files, not pipes: a full pipe would block one rank and both hang
                processes.append(
                    subprocess.Popen(
                        [*commands[rank], DIGEST_ENTRY, *script_args],
                        cwd=tmp_path / f"machine{rank}",
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        codes = [process.wait(timeout=timeout) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, 9)
                process.wait()
    texts = [log.read_text() for log in logs]
    for rank in (0, 1):
        assert codes[rank] == 0, f"machine {rank} failed:\n{texts[rank][-3000:]}"
    return texts


def test_two_machines_train_the_same_task_at_every_step_and_only_the_main_one_writes(tiny, tmp_path):
    """`accelerate launch --num_machines 2 --machine_rank {0,1} ...` on loopback: both ranks train the same task at
    every step, end with identical weights, and only the main process writes the output folder."""
    script_args = tiny_args(tiny, "out", "--num_train_epochs", "1", "--log_task_per_step", "--do_train", "--do_eval")
    logs = launch_two_machines(tmp_path, script_args)
    log = "\n".join(logs)
    for rank, text in enumerate(logs):  # the global rank is the machine's: one process per machine
        assert re.search(r"Process rank: 0, device: cpu(:0)?, n_gpu: 0, distributed training: True", text), text[
            -3000:
        ]
        assert {int(r) for r, *_ in STEP_LINE.findall(text)} == {rank}, text[-3000:]
    steps = steps_by_rank(log)
    # 40 examples per task, 4 per batch, 2 ranks: 5 steps per task in the epoch
    assert len(steps) == 10
    for key, tasks in steps.items():
        assert set(tasks) == {0, 1} and tasks[0] == tasks[1], (key, tasks)
    assert sorted(tasks[0] for tasks in steps.values()) == ["ner"] * 5 + ["topic"] * 5

    digests = dict(WEIGHTS_LINE.findall(log))
    assert set(digests) == {"0", "1"} and digests["0"] == digests["1"], digests
    out = tmp_path / "machine0" / "out"
    sys.path.insert(0, os.path.dirname(DIGEST_ENTRY))
    from weights_digest_entry import weights_digest

    from mtst.remote.modeling_mtst import MTSTModel

    assert weights_digest(MTSTModel.from_pretrained(out)) == digests["0"]  # the saved model is the ranks' model
    for name in ("config.json", "model.safetensors", "modeling_mtst.py", "tokenizer.json", "all_results.json"):
        assert (out / name).exists(), name
    # machine 1 writes nothing of its own but the Trainer's per-process RNG state in each checkpoint, which it
    # needs to resume (with a shared output folder it lands beside the main process's checkpoint files)
    written = sorted(str(p.relative_to(tmp_path / "machine1")) for p in (tmp_path / "machine1").rglob("*"))
    rng_files = [p for p in written if re.fullmatch(r"out/checkpoint-\d+/rng_state_1\.pth", p)]
    assert set(written) - set(rng_files) <= {"out", *(os.path.dirname(p) for p in rng_files)}, written
    assert not list(out.rglob("rng_state_1.pth"))


@pytest.mark.slow
def test_bare_default_run(tmp_path):
    """`python run_multitask.py` with no argument: MiniLM on the sample data, trains, evaluates, saves (minutes)."""
    result = subprocess.run(
        [sys.executable, SCRIPT],
        cwd=tmp_path,
        env={**ENV, "OMP_NUM_THREADS": "2"},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    out = tmp_path / "outputs" / "mtst-default"
    results = json.loads((out / "all_results.json").read_text())
    assert results["eval_average"] > 0.8
    assert (out / "modeling_mtst.py").exists()


def test_log_level_reaches_every_package_module(tmp_path):
    """`--log_level info` applies to the logger of every mtst module (publishing and growing included), not to a
    hand-kept list of them."""
    import importlib
    import logging
    import pkgutil

    import mtst

    _, _, args = run_multitask.parse_args(["--output_dir", str(tmp_path / "out"), "--log_level", "info"])
    saved = logging.getLogger("mtst").level
    try:
        run_multitask.setup_logging(args)
        names = [m.name for m in pkgutil.walk_packages(mtst.__path__, "mtst.")]
        for name in names:
            module = importlib.import_module(name)
            logger = getattr(module, "logger", None)
            if isinstance(logger, logging.Logger):
                assert logger.getEffectiveLevel() == logging.INFO, name
        assert {"mtst.hub.publish", "mtst.training.grow", "mtst.hub.card"} <= set(names)
    finally:
        logging.getLogger("mtst").setLevel(saved)


def test_the_library_and_the_cli_default_to_one_recipe():
    """`MultiTaskTrainingArguments` defaults are the recipe `mtst-train` uses; the command line changes only what a
    command line needs (its output folder, resuming from the last checkpoint there, the card's license and language,
    which a library user passes to `create_model_card`, and `embedding_tasks_first` / `rehearse_embedding_tasks`,
    which run two trainers one after the other: a library user makes the two)."""
    import dataclasses

    from mtst import MultiTaskTrainingArguments

    library = MultiTaskTrainingArguments(output_dir="x")
    _, _, cli = run_multitask.parse_args(["--output_dir", "x"])
    differ = {
        f.name
        for f in dataclasses.fields(MultiTaskTrainingArguments)
        if f.name not in ("do_train", "do_eval") and getattr(library, f.name) != getattr(cli, f.name)
    }
    assert differ == set(), differ
    cli_only = {f.name for f in dataclasses.fields(type(cli))} - {f.name for f in dataclasses.fields(library)}
    assert cli_only == {
        "resume_last_checkpoint", "license", "language", "embedding_tasks_first", "rehearse_embedding_tasks"
    }  # fmt: skip
    assert (library.sampling_strategy, library.group_by_length, library.learning_rate) == ("balanced", True, 1e-4)
