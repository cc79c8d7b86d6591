"""The quality benchmark's statistics (benchmarks/bench_stats.py): F1 from pooled per-sentence counts equals
seqeval's, and the paired bootstrap interval behaves on cases whose answer is known. Fast and deterministic."""

import json
import os
import random
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
import bench_stats as bs  # noqa: E402

GOLD = [
    ["B-PER", "I-PER", "O", "B-LOC"],
    ["O", "O", "O"],
    ["B-ORG", "I-ORG", "I-ORG", "O", "B-MISC"],
    ["B-LOC", "O", "B-PER", "I-PER"],
    ["O", "B-MISC", "I-MISC"],
]
PRED = [
    ["B-PER", "I-PER", "O", "B-ORG"],  # one hit, one wrong type
    ["O", "B-LOC", "O"],  # a false positive
    ["B-ORG", "I-ORG", "O", "O", "B-MISC"],  # boundary error (ORG too short) and a hit
    ["I-LOC", "O", "B-PER", "I-PER"],  # I- start: not an entity in strict IOB2
    ["O", "B-MISC", "I-MISC"],  # exact
]


def test_entity_counts_by_sentence():
    counts = bs.entity_counts(GOLD, PRED)
    assert counts.tolist() == [[1, 1, 1], [0, 1, 0], [1, 1, 1], [1, 0, 1], [1, 0, 0]]


def test_f1_from_pooled_counts_equals_seqeval():
    from seqeval.metrics import f1_score
    from seqeval.scheme import IOB2

    expected = f1_score(GOLD, PRED, mode="strict", scheme=IOB2)
    assert bs.metric_value("f1", bs.entity_counts(GOLD, PRED)) == pytest.approx(expected, abs=1e-12)
    # also on a larger random example, and on any subset of the sentences
    rng = random.Random(0)
    tags = ["O", "O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]
    gold = [[rng.choice(tags) for _ in range(rng.randint(1, 12))] for _ in range(200)]
    pred = [[t if rng.random() < 0.8 else rng.choice(tags) for t in sent] for sent in gold]
    counts = bs.entity_counts(gold, pred)
    assert bs.metric_value("f1", counts) == pytest.approx(f1_score(gold, pred, mode="strict", scheme=IOB2), abs=1e-12)
    subset = list(range(0, 200, 3))
    assert bs.metric_value("f1", counts[subset]) == pytest.approx(
        f1_score([gold[i] for i in subset], [pred[i] for i in subset], mode="strict", scheme=IOB2), abs=1e-12
    )


def test_f1_and_accuracy_of_empty_sets_are_zero():
    assert bs.f1_from_counts(np.array([0, 0, 0])) == 0.0
    assert bs.accuracy_from_counts(np.array([0, 0])) == 0.0
    assert bs.metric_value("accuracy", bs.correctness([1, 2, 3, 4], [1, 2, 0, 4])) == 0.75


def test_identical_systems_give_a_zero_interval():
    rows = bs.entity_counts(GOLD, PRED)
    ids = list(range(len(GOLD)))
    result = bs.paired_bootstrap([(ids, rows, rows), (ids, rows, rows)], "f1", n_resamples=500, rng_seed=1)
    assert result["diff"] == 0.0
    assert result["ci"] == [0.0, 0.0]
    assert result["verdict"] == "same"


def test_a_system_better_on_every_example_has_an_interval_above_zero():
    n = 300
    gold = [i % 4 for i in range(n)]
    wrong = [(g + 1) % 4 for g in gold]
    rng = random.Random(3)
    half = [g if rng.random() < 0.5 else w for g, w in zip(gold, wrong)]
    seeds = [
        ([f"ex{i}" for i in range(n)], bs.correctness(gold, gold), bs.correctness(gold, half)),
        ([f"ex{i}" for i in range(n)], bs.correctness(gold, gold), bs.correctness(gold, wrong)),
    ]
    result = bs.paired_bootstrap(seeds, "accuracy", n_resamples=1000, rng_seed=0)
    assert result["ci"][0] > 0
    assert result["verdict"] == "better"
    assert result["per_seed"][1]["ci"] == [1.0, 1.0]
    swapped = bs.paired_bootstrap([(ids, b, a) for ids, a, b in seeds], "accuracy", n_resamples=1000, rng_seed=0)
    assert swapped["verdict"] == "worse"
    assert swapped["ci"] == pytest.approx([-result["ci"][1], -result["ci"][0]])


def test_bootstrap_is_deterministic_and_noise_gives_same():
    rng = np.random.default_rng(5)
    n = 400
    gold = rng.integers(0, 4, n)
    a = np.where(rng.random(n) < 0.9, gold, (gold + 1) % 4)
    b = np.where(rng.random(n) < 0.9, gold, (gold + 1) % 4)
    seeds = [(list(range(n)), bs.correctness(gold, a), bs.correctness(gold, b))]
    first = bs.paired_bootstrap(seeds, "accuracy", n_resamples=1000, rng_seed=7)
    again = bs.paired_bootstrap(seeds, "accuracy", n_resamples=1000, rng_seed=7)
    assert first == again
    assert first["ci"][0] < first["diff"] < first["ci"][1]
    assert first["verdict"] == "same"  # two systems of the same quality: the interval holds zero


def test_seeds_with_disjoint_examples_and_bad_input():
    gold = [0, 1, 2, 3]
    seeds = [(["a", "b", "c", "d"], bs.correctness(gold, gold), bs.correctness(gold, [0, 1, 0, 0]))]
    seeds.append((["e", "f", "g", "h"], bs.correctness(gold, gold), bs.correctness(gold, gold)))
    result = bs.paired_bootstrap(seeds, "accuracy", n_resamples=200, rng_seed=0)
    assert result["distinct_examples"] == 8
    assert result["diff"] == pytest.approx((0.5 + 0.0) / 2)
    with pytest.raises(ValueError, match="unique"):
        bs.paired_bootstrap([(["a", "a"], np.ones((2, 2)), np.ones((2, 2)))], "accuracy")
    with pytest.raises(ValueError, match="unknown metric"):
        bs.paired_bootstrap(seeds, "bleu")


def test_mean_std_and_verdict():
    assert bs.mean_std([1.0]) == (1.0, None)
    mean, std = bs.mean_std([1.0, 2.0, 3.0])
    assert mean == 2.0 and std == pytest.approx(1.0)
    assert bs.verdict(0.1, 0.5) == "better"
    assert bs.verdict(-0.5, -0.1) == "worse"
    assert bs.verdict(-0.1, 0.1) == "same"
    assert bs.verdict(0.0, 0.2) == "same"


def test_score_systems_means_and_comparisons():
    gold = [0, 1, 2, 3]
    systems = {
        "joint": {42: {"ids": [1, 2, 3, 4], "rows": bs.correctness(gold, [0, 1, 2, 3])}},
        "alone": {42: {"ids": [1, 2, 3, 4], "rows": bs.correctness(gold, [0, 1, 2, 0])}},
        "plain": {42: {"ids": [4, 3, 2, 1], "rows": bs.correctness(gold, [0, 1, 2, 3])}},
    }
    systems["joint"][43] = {"ids": [1, 2, 3, 4], "rows": bs.correctness(gold, [0, 1, 0, 0])}
    result = bs.score_systems(systems, "accuracy", [("joint", "alone")], n_resamples=100)
    assert result["scores"]["joint"]["per_seed"] == {42: 1.0, 43: 0.5}
    assert result["scores"]["joint"]["mean"] == 0.75
    assert result["scores"]["alone"]["std"] is None
    comparison = result["comparisons"]["joint-alone"]
    assert comparison["seeds"] == [42] and comparison["diff"] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="different examples"):
        bs.score_systems(systems, "accuracy", [("joint", "plain")], n_resamples=10)


def test_quality_benchmark_reads_per_sentence_counts(tmp_path):
    """bench_quality.read_examples: words without a prediction (cut by truncation) are left out, as the run's own
    metric leaves them out."""
    import json

    import bench_quality as bq

    records = [
        {"tokens": ["a", "b", "c"], "labels": ["B-PER", "O", "B-LOC"], "predictions": ["B-PER", "O", None]},
        {"tokens": ["d"], "labels": ["O"], "predictions": ["B-ORG"]},
    ]
    (tmp_path / "predictions_ner.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    examples = bq.read_examples(str(tmp_path), "ner")
    assert examples == {"ids": [0, 1], "rows": [[1, 0, 0], [0, 1, 0]]}


def test_imbalanced_protocol_uses_run_multitask_defaults():
    import argparse

    import bench_quality as bq

    from mtst.cli import train as rm

    defaults = rm.ScriptTrainingArguments.__dataclass_fields__
    args = argparse.Namespace(
        protocol="imbalanced",
        epochs=None,
        batch_size=None,
        learning_rate=None,
        max_seq_length=None,
        group_by_length=None,
    )
    recipe = bq.resolve_recipe(args)
    assert recipe["epochs"] == defaults["num_train_epochs"].default
    assert recipe["batch_size"] == defaults["per_device_train_batch_size"].default
    assert recipe["learning_rate"] == defaults["learning_rate"].default
    assert recipe["head_learning_rate_factor"] == defaults["head_learning_rate_factor"].default
    assert recipe["sampling_strategy"] == defaults["sampling_strategy"].default
    assert recipe["group_by_length"] == defaults["group_by_length"].default
    args.protocol = "main"
    assert bq.resolve_recipe(args)["epochs"] == 1.0 and bq.resolve_recipe(args)["group_by_length"] is True


def test_reuse_recognises_the_same_settings_given_in_another_order():
    import bench_quality as bq

    recipe = "python run_multitask.py --seed 42 --sampling_strategy proportional --use_cpu --lr=1e-4"
    joint = recipe + " --sampling_strategy balanced"  # --joint-args come last and win, as in argparse
    assert bq.effective_arguments(joint) == bq.effective_arguments(
        "python run_multitask.py --use_cpu --sampling_strategy balanced --lr 1e-4 --seed 42"
    )
    assert bq.effective_arguments(joint) != bq.effective_arguments(recipe)
    assert bq.effective_arguments(recipe + " --output_dir a") == bq.effective_arguments(recipe + " --output_dir b")
    assert bq.effective_arguments(recipe)[0] != bq.effective_arguments(recipe.replace("run_multitask", "plain"))[0]


def test_reuse_ignores_card_only_options_and_knows_options_added_later():
    import bench_quality as bq

    old = "python run_multitask.py --seed 42 --sampling_strategy balanced"
    assert bq.effective_arguments(old + " --single_task_results ner=a,topic=b") == bq.effective_arguments(old)
    assert bq.effective_arguments(old + " --optimizer_state shared") == bq.effective_arguments(old)
    assert bq.effective_arguments(old + " --optimizer_state per_task") != bq.effective_arguments(old)
    # runs kept before the heads' factor existed trained at factor 1, never the new default 10
    assert bq.effective_arguments(old + " --head_learning_rate_factor 1") == bq.effective_arguments(old)
    assert bq.effective_arguments(old + " --head_learning_rate_factor 10") != bq.effective_arguments(old)
    # runs made before embedding preservation existed did not preserve: the same as an explicit 0
    assert bq.effective_arguments(old + " --embedding_preservation 0") == bq.effective_arguments(old)
    assert bq.effective_arguments(old + " --embedding_preservation 1") != bq.effective_arguments(old)
    # the folder of the benchmark's configs and runs is not a setting: runs copied to another root are taken over
    here = old + " --tasks_config /a/configs/ner.yaml --teacher_models ner=/a/ner_only_seed42,topic=/a/topic_seed42"
    there = here.replace("/a/", "/b/root/")
    assert bq.effective_arguments(here) == bq.effective_arguments(there)
    assert bq.effective_arguments(here) != bq.effective_arguments(here.replace("ner.yaml", "joint.yaml"))
    assert bq.effective_arguments(here) != bq.effective_arguments(here.replace("seed42", "seed43"))


def _plan_args(**kwargs):
    import argparse

    values = dict(
        seeds=[42, 43], runs=["joint", "ner_only", "topic_only", "ner_plain"], joint_args="", name="q", device="cpu"
    )
    values.update(max_train_samples=None, max_eval_samples=None, jobs=2, reuse=False, output_root="root")
    values.update(distill=False, mtst_args="")
    values.update(kwargs)
    return argparse.Namespace(**values)


def _write_configs(folder, kinds: dict) -> dict:
    """{name: path} of task configs in `folder` with tasks of the given types (what the benchmark reads of them)."""
    configs = {}
    for name, types in kinds.items():
        configs[name] = str(folder / f"{name}.yaml")
        (folder / f"{name}.yaml").write_text("tasks:\n" + "".join(f"  - type: {t}\n" for t in types))
    return configs


def test_joint_runs_come_after_and_name_their_single_task_runs(tmp_path):
    import bench_quality as bq

    recipe = {
        "epochs": 1.0,
        "batch_size": 32,
        "eval_batch_size": 64,
        "learning_rate": 1e-4,
        "head_learning_rate_factor": 10.0,
        "embedding_preservation": 1.0,
        "max_seq_length": 128,
        "group_by_length": True,
        "sampling_strategy": "balanced",
        "warmup_steps": 0.1,
        "lr_scheduler_type": "linear",
        "weight_decay": 0.0,
        "validation_fraction": 0.1,
    }
    heads = ["token_classification", "sequence_classification"]
    configs = _write_configs(tmp_path, {"joint": heads, "ner": heads[:1], "topic": heads[1:]})
    plan = bq.plan_runs(_plan_args(), recipe, str(tmp_path), configs)
    order = [(job["name"], job["seed"]) for job in plan]
    assert order.index(("joint", 42)) > order.index(("ner_only", 42))
    assert order.index(("joint", 42)) > order.index(("topic_only", 42))
    joint = next(job for job in plan if job["name"] == "joint" and job["seed"] == 43)
    assert joint["after"] == ["ner_only", "topic_only"]
    named = joint["cmd"][joint["cmd"].index("--single_task_results") + 1]
    assert named == f"ner={tmp_path}/ner_only_seed43,topic={tmp_path}/topic_only_seed43"
    alone = bq.plan_runs(_plan_args(runs=["joint"]), recipe, str(tmp_path), configs)
    assert all(job["after"] == [] and "--single_task_results" not in job["cmd"] for job in alone)
    assert "--teacher_models" not in joint["cmd"]
    # the heads' factor is written out, so --reuse never takes over a run made under another default
    assert joint["cmd"][joint["cmd"].index("--head_learning_rate_factor") + 1] == "10"
    assert joint["cmd"][joint["cmd"].index("--embedding_preservation") + 1] == "1"
    # --distill: the same single-task runs are the joint run's teachers, and the joint run gets its own folder
    distil = bq.plan_runs(_plan_args(distill=True), recipe, str(tmp_path), configs)
    joint = next(job for job in distil if job["name"] == "joint" and job["seed"] == 43)
    assert joint["cmd"][joint["cmd"].index("--teacher_models") + 1] == named
    assert joint["after"] == ["ner_only", "topic_only"] and joint["out"] == f"{tmp_path}/joint_q_seed43"
    # --mtst-args: every MTST run (joint and alone) gets the options and its own folder; plain runs neither
    changed = bq.plan_runs(_plan_args(mtst_args="--head_learning_rate 1e-3"), recipe, str(tmp_path), configs)
    for job in changed:
        mtst = job["kind"] == "mtst"
        assert ("--head_learning_rate" in job["cmd"]) == mtst, job
        assert job["out"].endswith(f"{job['name']}_q_seed{job['seed']}") == mtst, job

    # the job pool: never more than --jobs at a time, a joint run never before its single-task runs finished
    import threading
    import time

    finished, active, peak, lock = [], [0], [0], threading.Lock()

    def fake_run(args, recipe, configs, job, env):
        with lock:
            assert all((r, job["seed"]) in finished for r in job["after"])
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.02)
        with lock:
            active[0] -= 1
            finished.append((job["name"], job["seed"]))
        return {"seed": job["seed"], "command": "x"}, {}

    original = bq.run_one
    bq.run_one = fake_run
    try:
        runs, _ = bq.train_all(_plan_args(results_dir=str(tmp_path)), recipe, str(tmp_path), configs)
    finally:
        bq.run_one = original
    assert peak[0] == 2 and len(finished) == len(plan)
    assert [r["seed"] for r in runs["joint"]] == [42, 43]  # reported in seed order, whatever finished first


def test_staged_runs_grow_from_their_seeds_sts_run_and_take_over_adds_committed_runs(tmp_path):
    import gzip
    import json

    import bench_quality as bq

    recipe = {"epochs": 1.0, "batch_size": 32, "eval_batch_size": 64, "learning_rate": 1e-4}
    recipe.update(head_learning_rate_factor=10.0, embedding_preservation=1.0, max_seq_length=128)
    recipe.update(group_by_length=True, sampling_strategy="balanced")
    configs = _write_configs(tmp_path, {"joint": ["token_classification"], "sts": ["sentence_similarity"]})
    args = _plan_args(runs=["staged3", "sts_only"], protocol="three_task")
    plan = bq.plan_runs(args, recipe, str(tmp_path), configs)
    staged = next(job for job in plan if job["name"] == "staged3" and job["seed"] == 43)
    assert staged["after"] == ["sts_only"]
    assert staged["cmd"][staged["cmd"].index("--model_name_or_path") + 1] == f"{tmp_path}/sts_only_seed43"
    assert staged["cmd"][staged["cmd"].index("--tasks_config") + 1] == configs["joint"]
    with pytest.raises(SystemExit, match="sts_only"):
        bq.plan_runs(_plan_args(runs=["staged3"]), recipe, str(tmp_path), configs)

    # --take_over: the committed file's runs that were not trained join, for this invocation's seeds only
    old_runs = {name: [{"seed": s, "wall_s": 60.0} for s in (42, 43, 44)] for name in ("joint", "sts_only")}
    old = {"settings": {"protocol": "three_task"}, "recipe": recipe, "runs": old_runs}
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    with gzip.open(tmp_path / "old_examples.json.gz", "wt") as f:
        json.dump({name: {str(s): {"ner": [s]} for s in (42, 43, 44)} for name in old_runs}, f)
    runs = {name: [{"seed": 42, "wall_s": 1.0}, {"seed": 43, "wall_s": 1.0}] for name in ("sts_only", "staged3")}
    examples = {"sts_only": {42: {}, 43: {}}, "staged3": {42: {}, 43: {}}}
    bq.take_over(_plan_args(take_over=[str(path)], protocol="three_task"), recipe, runs, examples)
    assert [r["seed"] for r in runs["joint"]] == [42, 43] and "reused" not in runs["sts_only"][0]
    assert all(r["reused"] and r["taken_over_from"] == "old.json" for r in runs["joint"])
    assert examples["joint"] == {42: {"ner": [42]}, 43: {"ner": [43]}}
    assert "joint seed 42 (from old.json)" in bq._run_time_note(runs)
    with pytest.raises(SystemExit, match="another protocol or recipe"):
        bq.take_over(_plan_args(take_over=[str(path)], protocol="main"), recipe, runs, examples)
    with pytest.raises(SystemExit, match="no seed"):
        bq.take_over(_plan_args(take_over=[str(path)], protocol="three_task", seeds=[45]), recipe, {}, {})


def test_spearman_bootstrap_of_embedding_scores():
    """The STS-B comparison: the same draw of pairs for both systems and every seed; a system that ranks the pairs
    like the gold scores beats a noisy one, and a system equals itself exactly."""
    import bench_stats as bs
    import numpy as np

    rng = np.random.default_rng(0)
    gold = rng.uniform(0, 5, size=300)
    good = [gold + rng.normal(0, 0.5, size=300) for _ in range(3)]
    noisy = gold + rng.normal(0, 3.0, size=300)
    result = bs.spearman_bootstrap(gold, good, [noisy] * 3, n_resamples=300)
    assert result["verdict"] == "better" and result["ci"][0] > 0 and len(result["per_seed"]) == 3
    same = bs.spearman_bootstrap(gold, good, good, n_resamples=100)
    assert same["diff"] == 0 and same["ci"] == [0.0, 0.0] and same["verdict"] == "same"
    assert abs(bs._spearman(gold, gold) - 1) < 1e-12
    with pytest.raises(ValueError, match="one score per gold pair"):
        bs.spearman_bootstrap(gold, good, [noisy[:10]] * 3)


def test_spearman_systems_score_each_seed_and_compare_on_the_same_pairs():
    gold = np.arange(20, dtype=float)
    rng = np.random.default_rng(0)
    noisy = {seed: gold + rng.normal(0, 6, 20) for seed in (1, 2)}
    systems = {
        "alone": {seed: {"ids": list(range(20)), "rows": np.stack([gold, gold], 1)} for seed in (1, 2)},
        "plain": {seed: {"ids": list(range(20)), "rows": np.stack([noisy[seed], gold], 1)} for seed in (1, 2)},
    }
    result = bs.score_spearman_systems(systems, "spearman", [("alone", "plain")], n_resamples=300)
    assert result["scores"]["alone"]["mean"] == pytest.approx(1.0)
    plain = np.mean([bs._spearman(noisy[s], gold) for s in (1, 2)])
    assert result["scores"]["plain"]["mean"] == pytest.approx(plain)
    comparison = result["comparisons"]["alone-plain"]
    assert comparison["diff"] == pytest.approx(1.0 - plain) and comparison["ci"][0] <= comparison["diff"]
    systems["plain"][2]["rows"] = np.stack([noisy[2], gold[::-1]], 1)
    with pytest.raises(ValueError, match="other gold scores"):
        bs.score_spearman_systems(systems, "spearman", [("alone", "plain")], n_resamples=10)


def test_heads_benchmark_reads_multi_label_and_regression_predictions(tmp_path):
    import bench_quality as bq

    rows = [
        {"text": "a", "labels": ["joy", "anger"], "predictions": ["joy"], "scores": {}},
        {"text": "b", "labels": [], "predictions": ["fear"], "scores": {}},
    ]
    (tmp_path / "predictions_emotion.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    read = bq.read_examples(str(tmp_path), "emotion", bq.HEADS_TASKS["emotion"])
    assert read["rows"] == [(1, 0, 1), (0, 1, 0)] and bs.metric_value("f1", read["rows"]) == pytest.approx(0.5)
    rows = [{"text": "a", "label": 1.0, "prediction": 1.5}, {"text": "b", "label": 4.0, "prediction": 3.0}]
    (tmp_path / "predictions_stsreg.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert bq.read_examples(str(tmp_path), "stsreg", bq.HEADS_TASKS["stsreg"])["rows"] == [(1.5, 1.0), (3.0, 4.0)]


def test_runs_of_embedding_and_head_tasks_name_the_staging_options_so_older_runs_are_not_reused(tmp_path):
    """run_multitask.py stages (and rehearses) a config with embedding and head tasks by default; the benchmark writes
    those options into such a run's command, so --reuse tells a run kept from before them (one stage) apart. Configs
    of one kind, where the options do nothing, keep their commands (their kept runs are still reused)."""
    import shlex

    import bench_quality as bq

    recipe = {"epochs": 1.0, "batch_size": 32, "eval_batch_size": 64, "learning_rate": 1e-4}
    recipe.update(head_learning_rate_factor=10.0, embedding_preservation=1.0, max_seq_length=128)
    recipe.update(group_by_length=True, sampling_strategy="balanced")
    kinds = {"joint3": ["token_classification", "sequence_classification", "sentence_similarity"]}
    kinds["sts"] = ["sentence_similarity"]
    kinds["joint"] = ["token_classification", "sequence_classification"]
    configs = _write_configs(tmp_path, kinds)
    args = _plan_args(runs=["joint3", "sts_only", "staged3r"], protocol="three_task", seeds=[42])
    shown = {job["name"]: shlex.join(["python", *job["cmd"]]) for job in bq.plan_runs(args, recipe, "r", configs)}
    joint3 = bq.effective_arguments(shown["joint3"])[1]
    assert (joint3["--embedding_tasks_first"], joint3["--rehearse_embedding_tasks"]) == ("true", "true")
    assert "--embedding_tasks_first" not in shown["sts_only"]
    staged3r = bq.effective_arguments(shown["staged3r"])[1]  # grown from sts_only: one stage of all three
    assert staged3r["--embedding_tasks_first"] == "false"
    kept = shown["joint3"].replace(" --embedding_tasks_first true --rehearse_embedding_tasks true", "")
    assert kept != shown["joint3"]
    assert bq.effective_arguments(kept) != bq.effective_arguments(shown["joint3"])  # an older one-stage run
    assert bq.effective_arguments(kept) == bq.effective_arguments(kept + " --embedding_tasks_first false")
    joint = bq.mtst_command(configs["joint"], "out", recipe, args, 42, joint=True)
    assert "--embedding_tasks_first" not in joint and "--rehearse_embedding_tasks" not in joint
    # several head tasks share the preservation weight (the default since it exists): a kept joint run without the
    # option (each task's batches at the whole weight) is another run; one head task, nothing to share
    shown["joint"] = shlex.join(["python", *joint])
    assert bq.effective_arguments(shown["joint"])[1]["--embedding_preservation_shared"] == "true"
    assert staged3r["--embedding_preservation_shared"] == joint3["--embedding_preservation_shared"] == "true"
    kept = shown["joint"].replace(" --embedding_preservation_shared true", "")
    assert kept != shown["joint"] and bq.effective_arguments(kept) != bq.effective_arguments(shown["joint"])
    assert "--embedding_preservation_shared" not in shown["sts_only"]


def test_take_over_skips_planned_runs_it_holds_with_the_same_settings_unless_a_trained_run_reads_them(tmp_path):
    """--take_over adds a seed to committed runs: a planned (run, seed) the files hold with the same command settings
    is taken from them, not trained; one with other settings, or whose folder a run that trains reads (a staged run's
    starting model), is trained. Several files merge; where two hold the same (run, seed), the first named wins, for
    a planned run the first that holds it with the planned settings."""
    import gzip
    import json
    import shlex

    import bench_quality as bq

    recipe = {"epochs": 1.0, "batch_size": 32, "eval_batch_size": 64, "learning_rate": 1e-4}
    recipe.update(head_learning_rate_factor=10.0, embedding_preservation=1.0, max_seq_length=128)
    recipe.update(group_by_length=True, sampling_strategy="balanced")
    configs = _write_configs(tmp_path, {"joint": ["token_classification"], "sts": ["sentence_similarity"]})
    args = _plan_args(runs=["staged3", "sts_only"], protocol="three_task", seeds=[42, 43, 44])
    plan = bq.plan_runs(args, recipe, str(tmp_path / "new_root"), configs)
    command = {(j["name"], j["seed"]): shlex.join(["python", *j["cmd"]]) for j in plan}

    def write(name, seeds, other=()):  # committed runs made in another root; `other`: made with other options
        runs = {"staged3": [], "sts_only": []}
        for (run, seed), shown in command.items():
            if seed in seeds:
                shown = shown.replace(str(tmp_path / "new_root"), "/elsewhere")
                shown += " --learning_rate 2e-4" if (run, seed) in other else ""
                runs[run].append({"seed": seed, "command": shown, "wall_s": float(seed)})
        (tmp_path / f"{name}.json").write_text(
            json.dumps({"settings": {"protocol": "three_task"}, "recipe": recipe, "runs": runs})
        )
        with gzip.open(tmp_path / f"{name}_examples.json.gz", "wt") as f:
            json.dump({run: {str(s): {"sts": [s, name]} for s in seeds} for run in runs}, f)
        return str(tmp_path / f"{name}.json")

    first = write("first", (42, 43), other={("staged3", 43)})
    second = write("second", (42,), other={("staged3", 42)})  # seed 42 again, with other options: not read
    kept = bq.read_take_over(_plan_args(take_over=[first, second], protocol="three_task"), recipe)
    found = bq.planned_take_overs(plan, kept)
    assert sorted(found) == [("staged3", 42), ("sts_only", 42)]  # 43: staged3 differs, so it trains from sts_only 43
    record, examples = found[("staged3", 42)]
    assert record["reused"] and record["taken_over_from"] == "first.json" and examples == {"sts": [42, "first"]}
    # named the other way round: seed 42's staged3 comes from the file that holds it with the planned settings, even
    # though the file named first holds it with others; unplanned runs come from the file named first
    kept = bq.read_take_over(_plan_args(take_over=[second, first], protocol="three_task"), recipe)
    found = bq.planned_take_overs(plan, kept)
    assert found[("staged3", 42)][0]["taken_over_from"] == "first.json"
    assert found[("sts_only", 42)][0]["taken_over_from"] == "second.json"
    runs, examples = {}, {}
    bq.take_over(
        _plan_args(take_over=[second, first], protocol="three_task", seeds=[42]), recipe, runs, examples, kept
    )
    assert runs["staged3"][0]["taken_over_from"] == "second.json"
    assert examples["staged3"] == {42: {"sts": [42, "second"]}}
    assert bq.planned_take_overs(plan, None) == {}
    assert bq.read_take_over(_plan_args(take_over=None), recipe) is None
    with pytest.raises(SystemExit, match="another protocol or recipe"):
        bq.read_take_over(_plan_args(take_over=[first], protocol="main"), recipe)
