"""MultiTaskBatchSampler: single-task steps, epoch definitions, proportions, determinism, DDP sharding, resume."""

from collections import Counter

import numpy as np
import pytest
from accelerate.data_loader import BatchSamplerShard, SkipBatchSampler
from hypothesis import given, settings
from hypothesis import strategies as st

from mtst.training.sampler import SAMPLING_STRATEGIES, MultiTaskBatchSampler, MultiTaskTrainingError

SIZES = {"a": 103, "b": 41, "c": 17}


def task_of(index, sizes=SIZES):
    start = 0
    for task, n in sizes.items():
        if index < start + n:
            return task
        start += n
    raise IndexError(index)


def make(strategy="proportional", sizes=SIZES, **kwargs):
    kwargs.setdefault("weights", {t: 1.0 for t in sizes} if strategy == "weights" else None)
    return MultiTaskBatchSampler(sizes, kwargs.pop("batch_size", 8), strategy, **kwargs)


def steps_of(sampler):
    """The yielded batches grouped per optimizer step (batches_per_step consecutive batches)."""
    batches = list(sampler)
    g = sampler.batches_per_step
    return [batches[i : i + g] for i in range(0, len(batches), g)]


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=4, max_value=90), min_size=1, max_size=4),
    batch_size=st.integers(min_value=1, max_value=9),
    world_size=st.integers(min_value=1, max_value=3),
    accumulation=st.integers(min_value=1, max_value=2),
    strategy=st.sampled_from(SAMPLING_STRATEGIES),
    drop_last=st.booleans(),
    epoch=st.integers(min_value=0, max_value=3),
)
def test_len_matches_iteration_and_steps_share_a_task(
    sizes, batch_size, world_size, accumulation, strategy, drop_last, epoch
):
    sizes = {f"t{i}": n for i, n in enumerate(sizes)}
    try:
        sampler = make(
            strategy,
            sizes,
            batch_size=batch_size,
            world_size=world_size,
            gradient_accumulation_steps=accumulation,
            drop_last=drop_last,
            temperature=3.0,
        )
    except MultiTaskTrainingError as err:  # a task too small for one step is refused, never silently dropped
        assert "fewer than" in str(err)
        return
    sampler.set_epoch(epoch)
    batches = list(sampler)
    assert len(sampler) == len(batches) == sampler.steps_per_epoch * world_size * accumulation
    assert all(0 < len(b) <= batch_size for b in batches)
    for step in steps_of(sampler):
        tasks = {task_of(i, sizes) for batch in step for i in batch}
        assert len(tasks) == 1  # every micro-batch of every rank in a step: one task
        flat = [i for batch in step for i in batch]
        assert len(flat) == len(set(flat))  # ranks and micro-batches get different examples
        if drop_last:
            assert all(len(b) == batch_size for b in step)


@pytest.mark.parametrize("strategy", ["proportional", "round_robin"])
@pytest.mark.parametrize("world_size,accumulation", [(1, 1), (2, 1), (2, 3)])
def test_each_example_at_most_once_per_epoch(strategy, world_size, accumulation):
    sampler = make(strategy, world_size=world_size, gradient_accumulation_steps=accumulation)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        seen = [i for batch in sampler for i in batch]
        assert len(seen) == len(set(seen))
        assert set(seen) <= set(range(sum(SIZES.values())))
        g = world_size * accumulation
        # only the remainder of each task that cannot fill one batch per rank and micro-step is left out
        assert sum(SIZES.values()) - len(seen) <= len(SIZES) * (g - 1)
        if g == 1:
            assert sorted(seen) == list(range(sum(SIZES.values())))


def test_proportional_steps_follow_the_sizes():
    sampler = make("proportional")
    assert sampler.task_steps == {"a": 13, "b": 6, "c": 3}  # ceil(n / 8): each example once
    counts = Counter(sampler.task_schedule(0))
    assert counts == Counter(sampler.task_steps)
    assert sampler.task_schedule(0) != sampler.task_schedule(1)  # shuffled per epoch


def test_round_robin_alternates_until_tasks_run_out():
    sampler = make("round_robin", batch_size=16)  # steps a=7, b=3, c=2
    assert sampler.task_schedule(0) == ["a", "b", "c", "a", "b", "c", "a", "b", "a", "a", "a", "a"]


@pytest.mark.parametrize(
    "temperature,cap,expected",
    [
        (1.0, None, {"a": 1000 / 1110, "b": 100 / 1110, "c": 10 / 1110}),
        (2.0, None, {t: v / sum((1000**0.5, 10.0, 10**0.5)) for t, v in zip("abc", (1000**0.5, 10.0, 10**0.5))}),
        (1.0, 100, {"a": 100 / 210, "b": 100 / 210, "c": 10 / 210}),
        (1e6, None, {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}),
    ],
)
def test_temperature_proportions(temperature, cap, expected):
    sizes = {"a": 1000, "b": 100, "c": 10}
    sampler = make("temperature", sizes, batch_size=2, temperature=temperature, temperature_cap=cap)
    assert sampler.probabilities == pytest.approx(expected, abs=1e-6)
    counts = Counter()
    for epoch in range(4):
        counts.update(sampler.task_schedule(epoch))
    total = sum(counts.values())
    assert total == 4 * sampler.steps_per_epoch == 4 * 555
    for task, p in expected.items():
        assert counts[task] / total == pytest.approx(p, abs=0.025)


def test_temperature_passes_reshuffle_when_a_task_is_exhausted():
    sizes = {"big": 40, "small": 8}
    sampler = make("temperature", sizes, batch_size=4, temperature=1e6)  # ~uniform: small is upsampled
    batches = list(sampler)
    small = [i for b in batches for i in b if i >= 40]
    assert len(small) > 8  # more than one pass over the small task
    first_pass = small[:8]
    assert sorted(first_pass) == list(range(40, 48))  # inside one pass: no repeats
    assert len(batches) == len(sampler)


def test_balanced_gives_every_task_a_full_pass_and_upsamples_small_ones():
    sizes = {"big": 800, "small": 100}
    sampler = make("balanced", sizes, batch_size=10, temperature=2.0)
    assert sampler.task_steps == {"big": 80, "small": 10}
    # p ∝ sqrt(n): big 0.739, small 0.261; the shortest epoch giving big its 80 steps has 108.3 steps
    assert sampler.epoch_task_steps == {"big": 80, "small": 28}
    assert Counter(sampler.task_schedule(0)) == Counter(sampler.epoch_task_steps)
    assert sampler.task_schedule(0) != sampler.task_schedule(1)
    seen = Counter(i for batch in sampler for i in batch)
    assert set(seen) == set(range(900))  # nothing left out: every example of every task at least once
    assert all(seen[i] == 1 for i in range(800))  # the big task: exactly one pass
    assert 2 <= min(seen[i] for i in range(800, 900)) and max(seen[i] for i in range(800, 900)) <= 3
    # temperature 1 is proportional; a very high temperature gives every task the steps of the largest one
    assert make("balanced", sizes, batch_size=10, temperature=1.0).epoch_task_steps == sampler.task_steps
    assert make("balanced", sizes, batch_size=10, temperature=1e9).epoch_task_steps == {"big": 80, "small": 80}


def test_weights_strategy():
    sampler = make("weights", weights={"a": 1, "b": 3, "c": 0}, batch_size=1)
    counts = Counter()
    for epoch in range(3):
        counts.update(sampler.task_schedule(epoch))
    assert counts["c"] == 0
    assert counts["b"] / (counts["a"] + counts["b"]) == pytest.approx(0.75, abs=0.03)
    assert make("weights", weights="a=1,b=1,c=2").probabilities["c"] == pytest.approx(0.5)
    assert make("weights", weights='{"a": 1, "b": 1, "c": 2}').probabilities["c"] == pytest.approx(0.5)


def test_invalid_options_are_clear_errors():
    with pytest.raises(MultiTaskTrainingError, match="allowed values: round_robin"):
        make("random")
    with pytest.raises(MultiTaskTrainingError, match="no weight for task"):
        make("weights", weights={"a": 1})
    with pytest.raises(MultiTaskTrainingError, match="unknown task"):
        make("weights", weights={"a": 1, "b": 1, "c": 1, "d": 1})
    with pytest.raises(MultiTaskTrainingError, match="Task 'c' has 17 training examples"):
        make(world_size=2, gradient_accumulation_steps=9)
    with pytest.raises(MultiTaskTrainingError, match="temperature"):
        make("temperature", temperature=0)


def test_per_task_batch_size():
    sampler = make(task_batch_sizes={"c": 4}, batch_size=16)
    for batch in sampler:
        assert len(batch) <= (4 if task_of(batch[0]) == "c" else 16)
    assert sampler.task_steps["c"] == 5


def test_tail_step_is_split_evenly_over_ranks_and_micro_steps():
    sampler = make(sizes={"a": 21}, batch_size=4, world_size=2, gradient_accumulation_steps=2)
    steps = steps_of(sampler)
    assert [len(b) for b in steps[0]] == [4, 4, 4, 4]
    assert [len(b) for b in steps[1]] == [2, 1, 1, 1]  # 5 left over: every rank and micro-step gets some


def test_deterministic_from_seed_and_epoch():
    one, two = make(seed=3), make(seed=3)
    assert list(one) == list(two)
    one.set_epoch(1)
    assert list(one) != list(two)
    two.set_epoch(1)
    assert list(one) == list(two)
    assert list(make(seed=4)) != list(make(seed=3))
    assert list(one) == list(one)  # iterating does not advance the epoch


@pytest.mark.parametrize("strategy", SAMPLING_STRATEGIES)
@pytest.mark.parametrize("accumulation", [1, 2])
def test_two_ranks_train_the_same_task_on_disjoint_examples(strategy, accumulation):
    """What Accelerate does under DDP: rank r gets every world_size-th batch (BatchSamplerShard)."""
    sampler = make(strategy, world_size=2, gradient_accumulation_steps=accumulation, batch_size=4)
    sampler.set_epoch(2)
    ranks = [list(BatchSamplerShard(sampler, 2, r, even_batches=False)) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == len(sampler) // 2
    tasks = [[task_of(b[0]) for b in batches] for batches in ranks]
    assert tasks[0] == tasks[1]  # same task at every micro-step on both ranks
    for r in range(2):  # and the micro-steps of one optimizer step share it
        for k in range(0, len(tasks[r]), accumulation):
            assert len(set(tasks[r][k : k + accumulation])) == 1
    for b0, b1 in zip(*ranks):
        assert not set(b0) & set(b1)
        assert {task_of(i) for i in b0 + b1} == {task_of(b0[0])}
    if strategy in ("proportional", "round_robin"):
        everything = [i for batches in ranks for b in batches for i in b]
        assert len(everything) == len(set(everything))


def test_even_batches_wrapper_adds_nothing():
    """The sampler always yields a multiple of world_size batches, so Accelerate never pads with another task."""
    sampler = make(world_size=2, batch_size=5)
    for even in (True, False):
        shards = [list(BatchSamplerShard(sampler, 2, r, even_batches=even)) for r in range(2)]
        assert sum(map(len, shards)) == len(sampler)


def test_resume_continues_the_same_stream():
    """A fresh sampler at the resumed epoch, with the first k batches skipped (what the Trainer does), yields the
    rest of the original stream."""
    original = make("temperature", seed=7, world_size=2, gradient_accumulation_steps=2)
    original.set_epoch(1)
    stream = list(original)
    resumed = make("temperature", seed=7, world_size=2, gradient_accumulation_steps=2)
    resumed.set_epoch(1)
    for k in (0, 4, 12):
        assert list(SkipBatchSampler(resumed, k)) == stream[k:]
        shards = [list(SkipBatchSampler(BatchSamplerShard(resumed, 2, r, even_batches=False), k)) for r in range(2)]
        assert shards[0] == stream[2 * k :: 2] and shards[1] == stream[2 * k + 1 :: 2]


def test_group_by_length_reduces_padding():
    rng = np.random.default_rng(0)
    sizes = {"a": 400, "b": 200}
    lengths = rng.integers(5, 120, size=600).tolist()
    plain = make(sizes=sizes, batch_size=16)
    grouped = make(sizes=sizes, batch_size=16, lengths=lengths, group_by_length=True, megabatch_mult=10)

    def padding(sampler):
        return sum(len(b) * max(lengths[i] for i in b) - sum(lengths[i] for i in b) for b in sampler)

    assert padding(grouped) < 0.3 * padding(plain)
    seen = [i for b in grouped for i in b]
    assert sorted(seen) == list(range(600))
    assert len(grouped) == len(list(grouped))
    with pytest.raises(MultiTaskTrainingError, match="lengths"):
        make(group_by_length=True)


def test_from_dataset_uses_offsets():
    class Fake:
        task_sizes = {"x": 5, "y": 3}
        offsets = {"x": 0, "y": 5}

    sampler = MultiTaskBatchSampler.from_dataset(Fake(), batch_size=2)
    seen = sorted(i for b in sampler for i in b)
    assert seen == list(range(8))
