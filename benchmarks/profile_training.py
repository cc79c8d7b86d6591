#!/usr/bin/env python
"""Where MTST's training time goes: cProfile over `run_multitask.py` on the benchmark data (CoNLL-2003 + AG News,
`benchmarks/configs/joint.yaml`, `--group_by_length`), split into the parts a change could speed up.

    python benchmarks/profile_training.py                 # 200 optimizer steps
    python benchmarks/profile_training.py --steps 50 --top 25

Prints, as seconds and shares of the training loop (`Trainer.train`): the forward and backward passes
(`training_step`), the optimizer and scheduler, collation (`MultiTaskCollator`), the batch sampler, logging and the
rest; then the functions with the most own time. Data loading and tokenization happen before the loop and are shown
apart. Needs ../shared/data (see benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as bc  # noqa: E402

# part -> (file suffix or None, function name): the cumulative time of the first match counts for the part.
PARTS = {
    "forward + backward (training_step)": ("trainer.py", "training_step"),
    "optimizer step": (None, "step"),
    "collation (MultiTaskCollator)": ("mtst/data/collator.py", "__call__"),
    "batch sampler": ("mtst/training/sampler.py", "iter_steps"),
    "logging": ("mtst/training/trainer.py", "log"),
}


def cumulative(stats: pstats.Stats, suffix: str | None, name: str, exclude: tuple[str, ...] = ()) -> float:
    """The largest cumulative time of a function `name` (in a file ending with `suffix`): recursion and several
    call sites are counted once."""
    best = 0.0
    for (filename, _, function), (_, _, _, ct, _) in stats.stats.items():
        if function != name or (suffix and not filename.endswith(suffix)) or filename.endswith(exclude):
            continue
        if suffix is None and "optim" not in filename:  # the optimizer's step(), not a scheduler's or a sampler's
            continue
        best = max(best, ct)
    return best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200, help="optimizer steps to profile")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--top", type=int, default=15, help="functions listed by own time")
    args = parser.parse_args(argv)

    from mtst.cli import train as run_multitask

    with tempfile.TemporaryDirectory() as out:
        config = bc.write_task_config("joint", os.path.join(out, "configs"))
        run_dir = os.path.join(out, "run")
        cli = [
            "--model_name_or_path", bc.backbone_path(), "--tasks_config", config, "--output_dir", run_dir,
            "--do_train", "--do_eval", "false", "--eval_strategy", "no", "--save_strategy", "no",
            "--max_steps", str(args.steps), "--per_device_train_batch_size", str(args.batch_size),
            "--group_by_length", "--logging_steps", "50", "--report_to", "none",
        ]  # fmt: skip
        profiler = cProfile.Profile()
        profiler.enable()
        code = run_multitask.main(cli)
        profiler.disable()
    if code:
        print(f"run_multitask.main exited with {code}", file=sys.stderr)
        return code
    stats = pstats.Stats(profiler)
    total = cumulative(stats, "trainer.py", "train")
    whole = max(ct for (_, _, _, ct, _) in stats.stats.values())
    print(f"\n{args.steps} optimizer steps, batch {args.batch_size}; whole run {whole:.1f} s, loop {total:.1f} s")
    accounted = 0.0
    for part, (suffix, name) in PARTS.items():
        seconds = cumulative(stats, suffix, name)
        accounted += seconds
        print(f"  {part:<38} {seconds:8.1f} s  {seconds / total:6.1%}")
    print(f"  {'rest of the loop':<38} {total - accounted:8.1f} s  {(total - accounted) / total:6.1%}")
    print(f"  {'before the loop (data, model, setup)':<38} {whole - total:8.1f} s")
    print(f"\nTop {args.top} functions by own time:")
    stats.sort_stats("tottime").print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
