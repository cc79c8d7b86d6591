"""Streaming tasks (`streaming: true`): a train split read from its files while training, in bounded chunks, with the
sampler's contract (one task per step on every rank), its own shard per process, and an exact resume."""

from __future__ import annotations

import json
import os
import signal

import datasets
import pytest
from reliability_helpers import (
    cli_args,
    error_paragraph,
    kill_at_checkpoint,
    make_tiny,
    run_subprocess,
    same_weights,
    write_config,
)
from test_run_multitask import accelerate_launch, check_ddp_devices
from trainer_helpers import TOPIC_LABELS, TOPIC_WORDS, write_jsonl

from mtst.data.collator import MultiTaskDataset
from mtst.data.errors import TaskConfigError, TaskDataError
from mtst.data.loading import load_task_data
from mtst.data.streaming import STATE_FILE, StreamingTrainSplit, open_train_stream
from mtst.data.tasks import TaskSpec, load_task_specs
from mtst.training.checkpoints import last_complete_checkpoint
from mtst.training.sampler import MultiTaskBatchSampler


def numbered_rows(n: int, start: int = 0) -> list[dict]:
    """Topic rows whose text starts with "row <i>" (so a tokenized row tells which one it was) and whose lengths
    vary (1 to 9 extra words)."""
    rows = []
    for i in range(start, start + n):
        label = TOPIC_LABELS[i % 4]
        words = [TOPIC_WORDS[label][i % 5]] * (1 + (i * 7) % 9)
        rows.append({"text": f"row {i} " + " ".join(words), "label": label})
    return rows


def row_number(tokenizer, row: dict) -> int:
    return int(tokenizer.decode(row["input_ids"], skip_special_tokens=True).split()[1])


def streaming_spec(folder, n: int = 50, buffer_size: int = 16, rows=None, **kwargs) -> TaskSpec:
    write_jsonl(os.path.join(folder, "big", "train.jsonl"), rows if rows is not None else numbered_rows(n))
    write_jsonl(os.path.join(folder, "big", "validation.jsonl"), numbered_rows(8, start=1000))
    files = {split: [os.path.join(folder, "big", f"{split}.jsonl")] for split in ("train", "validation")}
    options = {"num_examples": n, "buffer_size": buffer_size, "labels": TOPIC_LABELS, **kwargs}
    return TaskSpec(name="big", type="sequence_classification", data_files=files, streaming=True, **options)


def split_of(spec, tokenizer, **kwargs) -> StreamingTrainSplit:
    stream = datasets.load_dataset(
        "json", data_files={"train": spec.data_files["train"]}, split="train", streaming=True
    )
    return StreamingTrainSplit(spec, stream, tokenizer, 64, batch_size=4, **kwargs)


def take_rows(split, tokenizer, batches: int, size: int = 4) -> list[list[int]]:
    return [[row_number(tokenizer, row) for row in split.next_rows(size)] for _ in range(batches)]


def test_every_row_is_read_once_per_pass_a_chunk_at_a_time(tokenizer, tmp_path):
    spec = streaming_spec(tmp_path, n=48, buffer_size=16)
    split = split_of(spec, tokenizer)
    assert len(split) == 48
    first = [i for batch in take_rows(split, tokenizer, 4) for i in batch]
    assert sorted(first) == list(range(16))  # the first chunk, shuffled inside
    assert first != list(range(16))
    rest = [i for batch in take_rows(split, tokenizer, 20) for i in batch]  # 96 rows in all: two passes
    assert sorted(first + rest[:32]) == list(range(48))
    assert sorted(rest[32:]) == list(range(48))  # the second pass reads every row again, in another order
    assert rest[32:] != first + rest[:32]
    assert split.taken == 24
    assert len(split._queue) <= 2 and sum(len(rows) for _, rows, _ in split._queue) <= 2 * 16  # bounded memory


def test_group_by_length_serves_batches_of_neighbouring_lengths(tokenizer, tmp_path):
    spec = streaming_spec(tmp_path, n=64, buffer_size=32)
    split = split_of(spec, tokenizer, group_by_length=True)
    for chunk in range(2):
        batches = [[len(row["input_ids"]) for row in split.next_rows(4)] for _ in range(8)]
        for a in batches:  # the chunk sorted by length and cut: two batches' length ranges never interleave
            for b in batches:
                assert a is b or max(a) <= min(b) or max(b) <= min(a), (chunk, batches)
    plain = split_of(spec, tokenizer)
    batches = [[len(row["input_ids"]) for row in plain.next_rows(4)] for _ in range(8)]
    assert any(min(a) < max(b) and min(b) < max(a) for a in batches for b in batches if a is not b)


@pytest.mark.parametrize("group_by_length", [False, True])
def test_a_state_resumes_with_exactly_the_rows_that_followed(tokenizer, tmp_path, group_by_length):
    spec = streaming_spec(tmp_path, n=30, buffer_size=16)
    split = split_of(spec, tokenizer, group_by_length=group_by_length)
    take_rows(split, tokenizer, 7)  # the DataLoader fetched 7 batches ...
    state = json.loads(json.dumps(split.state_dict(5)))  # ... training had used 5 of them (a checkpoint)
    expected = take_rows(split_of(spec, tokenizer, group_by_length=group_by_length), tokenizer, 25)[5:]
    resumed = split_of(spec, tokenizer, group_by_length=group_by_length)
    resumed.load_state_dict(state)
    assert resumed.taken == 5
    assert take_rows(resumed, tokenizer, 20) == expected  # across chunk and pass boundaries


def test_two_processes_read_disjoint_shards_that_cover_the_stream(tokenizer, tmp_path):
    spec = streaming_spec(tmp_path, n=40, buffer_size=10)  # 20 rows a shard: two chunks
    seen = []
    for rank in (0, 1):
        split = split_of(spec, tokenizer, rank=rank, world_size=2)
        seen.append([i for batch in take_rows(split, tokenizer, 5) for i in batch])
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == list(range(40))


def test_invalid_rows_name_the_row_or_are_skipped_and_counted(tokenizer, tmp_path):
    rows = numbered_rows(20)
    rows[6]["label"] = "Weather"
    spec = streaming_spec(tmp_path, n=20, buffer_size=10, rows=rows)
    with pytest.raises(TaskDataError) as err:
        split_of(spec, tokenizer).next_rows(4)
    message = str(err.value)
    assert "train stream row 7" in message and "'Weather' is not in the label set" in message
    assert "drop_invalid" in message
    split = split_of(spec, tokenizer, drop_invalid=True)
    served = [i for batch in take_rows(split, tokenizer, 19, size=1) for i in batch]
    assert sorted(served) == [i for i in range(20) if i != 6] and split.dropped == 1


def test_a_stream_shorter_than_num_examples_is_read_again_with_a_warning(tokenizer, tmp_path, caplog):
    spec = streaming_spec(tmp_path, n=20, buffer_size=8, num_examples=30)
    split = split_of(spec, tokenizer)
    served = [i for batch in take_rows(split, tokenizer, 10, size=3) for i in batch]
    assert len(served) == len(split) == 30 and set(served) == set(range(20))
    assert "has 20 rows, fewer than the 30 an epoch reads" in caplog.text


def test_streaming_config_rules(tmp_path):
    files = {"train": ["t.jsonl"], "validation": ["v.jsonl"]}
    with pytest.raises(TaskConfigError, match="a streaming task needs 'labels'"):
        TaskSpec(name="a", type="sequence_classification", data_files=files, streaming=True)
    with pytest.raises(TaskConfigError, match="cannot have type regression"):
        TaskSpec(name="a", type="regression", data_files=files, streaming=True)
    with pytest.raises(TaskConfigError, match="'num_examples' and 'buffer_size' are for streaming tasks"):
        TaskSpec(name="a", type="sequence_classification", data_files=files, num_examples=10)
    config = {"tasks": [{"name": "a", "type": "sequence_classification", "data_files": files, "streaming": "yes"}]}
    with pytest.raises(TaskConfigError, match="'streaming' must be true or false"):
        load_task_specs(config)
    entry = {"name": "a", "type": "sequence_classification", "data_files": files, "labels": ["x", "y"]}
    (spec,) = load_task_specs({"tasks": [{**entry, "streaming": True, "num_examples": 5, "buffer_size": 64}]})
    assert (spec.streaming, spec.num_examples, spec.buffer_size) == (True, 5, 64)
    assert spec.to_dict()["streaming"] is True  # kept in the saved task config


def test_a_streaming_task_needs_a_size_and_a_validation_split(tokenizer, tmp_path):
    spec = streaming_spec(tmp_path, n=20, num_examples=None)
    args = type("Args", (), {"per_device_train_batch_size": 4, "group_by_length": False, "seed": 1})()
    args.data_seed, args.process_index, args.world_size = None, 0, 1
    with pytest.raises(TaskConfigError, match="set `num_examples:`"):
        open_train_stream(spec, tokenizer, args)
    spec.data_files.pop("validation")
    with pytest.raises(TaskDataError, match="no validation split can be carved"):
        load_task_data(spec)


def test_the_sampler_plans_a_streaming_task_without_index_lists(tokenizer, tmp_path):
    spec = streaming_spec(tmp_path, n=2_000_000, buffer_size=16)
    split = split_of(spec, tokenizer)
    dataset = MultiTaskDataset({"big": split})
    sampler = MultiTaskBatchSampler.from_dataset(dataset, 32, strategy="proportional", world_size=2)
    assert len(sampler) == 2_000_000 // 32
    batches = iter(sampler)
    first = [next(batches) for _ in range(4)]
    assert [len(b) for b in first] == [32] * 4
    assert len(dataset.__getitems__(first[0])) == 32 and split.taken == 1


def test_tokenizing_with_several_processes_gives_the_same_data(tokenizer, tmp_path):
    from trainer_helpers import tokenized_tasks

    from mtst.data.tokenization import default_num_proc, tokenize_task

    specs, raw, tokenized = tokenized_tasks(tokenizer, tmp_path, n_train=60)
    for spec in specs:
        parallel = tokenize_task(spec, raw[spec.name], tokenizer, 32, num_proc=2)
        for split, ds in tokenized[spec.name].items():
            assert parallel[split].to_list() == ds.to_list(), (spec.name, split)
    assert default_num_proc(100) == 1 and default_num_proc(1_000_000) == min(os.cpu_count(), 8)


# -- run_multitask.py -------------------------------------------------------------------------------------------------

COMMON = ["--do_train", "--num_train_epochs", "2", "--seed", "7", "--eval_strategy", "no", "--group_by_length", "true"]
# Logs, per rank, the task and the rows of every batch it trains (the streaming task's row numbers).
RECORDING = """
import json, os, sys
import run_multitask
from mtst.training import trainer as trainer_mtst
compute_loss = trainer_mtst.MultiTaskTrainer.compute_loss
def recording(self, model, inputs, *args, **kwargs):
    if model.training:
        rank = self.args.process_index
        texts = self.processing_class.batch_decode(inputs["input_ids"], skip_special_tokens=True)
        rows = [int(t.split()[1]) for t in texts] if inputs["task"] == "big" else []
        with open(os.path.join(os.environ["RECORD_DIR"], f"rank{rank}.jsonl"), "a") as f:
            f.write(json.dumps({"step": self.state.global_step, "task": inputs["task"], "rows": rows}) + "\\n")
    return compute_loss(self, model, inputs, *args, **kwargs)
trainer_mtst.MultiTaskTrainer.compute_loss = recording
sys.exit(run_multitask.main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny backbone and topic + ner tasks of the reliability tests, plus a streaming task of 120 rows."""
    tiny = make_tiny(tmp_path_factory.mktemp("tiny"))
    spec = streaming_spec(os.path.join(tiny["data"]), n=120, buffer_size=24)
    entries = json.load(open(tiny["tasks"], encoding="utf-8"))["tasks"]
    entries.append({**spec.to_dict(), "data_files": {s: f"big/{s}.jsonl" for s in ("train", "validation")}})
    tiny["tasks"] = write_config(os.path.join(tiny["data"], "streaming.json"), entries)
    return tiny


@pytest.mark.slow  # three runs (about a minute); .ci/run runs it by name
def test_a_killed_streaming_run_resumes_to_the_same_weights(tiny, tmp_path):
    reference = run_subprocess(cli_args(tiny, tmp_path / "reference", *COMMON))
    assert reference.returncode == 0, (reference.stdout + reference.stderr)[-3000:]
    out = tmp_path / "killed"
    args = cli_args(tiny, out, *COMMON, "--save_strategy", "steps", "--save_steps", "7")
    code, _ = kill_at_checkpoint(args, out, tmp_path / "killed.log", lambda step: step >= 21)  # past a chunk
    assert code == -signal.SIGKILL, (tmp_path / "killed.log").read_text()[-3000:]
    checkpoint = last_complete_checkpoint(str(out))
    state = json.load(open(os.path.join(checkpoint, STATE_FILE.format(rank=0)), encoding="utf-8"))
    assert state["big"]["taken"] > 0
    resumed = run_subprocess([*args, "--resume_from_checkpoint", checkpoint])
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-3000:]
    same_weights(tmp_path / "reference", out)


@pytest.mark.slow  # four two-process launches (about a minute); .ci/run runs it by name
def test_streaming_tasks_train_under_ddp_on_own_shards_with_one_task_per_step(tiny, tmp_path):
    """Two processes (gloo): one task per step on both ranks, each rank its own rows; a run cut at a checkpoint and
    resumed ends with the uninterrupted run's weights."""
    record = tmp_path / "record"
    record.mkdir()
    script = tmp_path / "recording.py"
    script.write_text(RECORDING)
    common = [*COMMON, "--lr_scheduler_type", "constant", "--warmup_steps", "0"]  # the same schedule when cut
    args = cli_args(tiny, tmp_path / "ddp", *common)
    result = accelerate_launch(args, script=script, env={"RECORD_DIR": str(record)})
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    check_ddp_devices(log)
    ranks = [[json.loads(line) for line in open(record / f"rank{r}.jsonl")] for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) > 0
    assert [b["task"] for b in ranks[0]] == [b["task"] for b in ranks[1]]  # the same task at every step
    assert {b["task"] for b in ranks[0]} == {"topic", "ner", "big"}
    shards = [{i for b in batches for i in b["rows"]} for batches in ranks]
    assert shards[0] and shards[1] and not shards[0] & shards[1]  # each rank its own shard
    assert shards[0] <= set(range(0, 120, 2)) and shards[1] <= set(range(1, 120, 2))

    cut_args = cli_args(tiny, tmp_path / "cut", *common, "--save_strategy", "steps", "--save_steps", "17")
    cut = accelerate_launch([*cut_args, "--max_steps", "17"])
    assert cut.returncode == 0, (cut.stdout + cut.stderr)[-3000:]
    states = [json.load(open(tmp_path / "cut" / "checkpoint-17" / STATE_FILE.format(rank=r))) for r in (0, 1)]
    assert states[0]["big"]["taken"] == states[1]["big"]["taken"] > 0  # the same steps of it on both ranks
    resumed = accelerate_launch(cut_args)  # finds checkpoint-17 by itself
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-3000:]
    assert "checkpoint-17" in resumed.stdout + resumed.stderr
    same_weights(tmp_path / "ddp", tmp_path / "cut")
    bad = run_subprocess(cli_args(tiny, tmp_path / "workers", *COMMON, "--dataloader_num_workers", "1"))
    assert "set dataloader_num_workers to 0" in error_paragraph(bad.stderr)
