"""The card callback (cardcallback_mtst): a few real optimizer steps with a plain `transformers.Trainer` fill the card
data and write the card into every checkpoint. Tiny random models, no Hub."""

from types import SimpleNamespace

import torch
from conftest import tiny_mtst_config
from huggingface_hub import metadata_load
from test_modelcard import assert_no_local_paths

from mtst.hub.callback import MTSTCardCallback, read_sampler, read_training_args, texts_from
from mtst.hub.card import write_model_card
from mtst.hub.card_data import MTSTCardData
from mtst.remote.modeling_mtst import MTSTModel


def test_training_args_and_sampler_are_read_generically():
    from transformers import TrainingArguments

    args = TrainingArguments(output_dir="/tmp/out", learning_rate=5e-5 / 2, max_steps=7, hub_token="hf_xyz", seed=3)
    hyperparameters, options = read_training_args(args)
    assert hyperparameters == {"learning_rate": 2.5e-05, "max_steps": 7, "seed": 3}
    sampler = SimpleNamespace(
        strategy="proportional",
        task_steps={"topic": 3, "ner": 1},
        steps_per_epoch=4,
        task_sizes={"topic": 24, "ner": 8},
    )
    sampling = read_sampler(
        SimpleNamespace(batch_sampler=SimpleNamespace(batch_sampler=sampler))
    )  # as Accelerate wraps it
    assert sampling["probabilities"] == {"topic": 0.75, "ner": 0.25}
    assert sampling["strategy"] == "proportional" and sampling["steps_per_epoch"] == 4
    assert read_sampler(None) == {} and read_sampler(SimpleNamespace(batch_sampler=None)) == {}


def test_widget_texts_are_read_from_datasets(tokenizer):
    from datasets import Dataset, DatasetDict

    tokens = Dataset.from_dict({"tokens": [["John", "lives", "in", "Paris", "."]], "ner_tags": [[1, 0, 0, 2, 0]]})
    texts = Dataset.from_dict({"text": ["a", "b", "c"], "label": [0, 1, 0]})
    assert texts_from(tokens) == ["John lives in Paris ."]
    assert texts_from(texts, limit=2) == ["a", "b"]
    assert texts_from(DatasetDict(train=texts, validation=tokens)) == ["John lives in Paris ."]  # evaluation split
    encoded = Dataset.from_dict({"input_ids": [tokenizer("Paris is big.")["input_ids"]]})
    assert texts_from(encoded, tokenizer) == ["paris is big."] and texts_from(encoded) == []
    assert texts_from(["x", "y"]) == ["x", "y"] and texts_from("x") == ["x"] and texts_from(None) == []
    data = MTSTCardData()
    data.set_widget_examples(["  two   spaces ", "two spaces", "", "other", "third", "fourth"])
    assert data.widget_examples == ["two spaces", "other", "third"]  # whitespace collapsed, repeats and blanks skipped


TRAIN = {
    "topic": [("The striker scored twice in the final.", 1), ("Shares of the bank rose sharply.", 2)] * 4,
    "sentiment": [("I loved this film.", 2), ("This was a terrible day.", 0)] * 4,
    "ner": [(["John", "lives", "in", "Paris", "."], ["B-PER", "O", "O", "B-LOC", "O"])] * 8,
}


def _batches(tokenizer, config, task, rows, batch_size=4):
    batches = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        if config.task_type(task) == "sequence_classification":
            enc = tokenizer([t for t, _ in chunk], padding=True, return_tensors="pt")
            labels = torch.tensor([label for _, label in chunk])
        else:
            enc = tokenizer([w for w, _ in chunk], is_split_into_words=True, padding=True, return_tensors="pt")
            ids = config.task_labels(task)
            labels = torch.full(enc["input_ids"].shape, -100)
            for i, (_, tags) in enumerate(chunk):
                seen = set()
                for pos, word in enumerate(enc.word_ids(i)):
                    if word is not None and word not in seen:
                        labels[i, pos] = ids.index(tags[word])
                        seen.add(word)
        batches.append({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": labels})
    return [dict(b, task=task) for b in batches]


class _BatchTrainer:
    """Builds a plain `transformers.Trainer` over pre-made single-task batches, with per-task evaluation."""

    @staticmethod
    def build(model, tokenizer, output_dir, callback_data):
        from transformers import Trainer, TrainingArguments

        train = [b for task, rows in TRAIN.items() for b in _batches(tokenizer, model.config, task, rows)]
        evals = {task: _batches(tokenizer, model.config, task, rows[:4]) for task, rows in TRAIN.items()}

        class BatchTrainer(Trainer):
            def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
                """Accuracy per task (token accuracy for ner) and the mean loss, logged like MultiTaskTrainer."""
                self.model.eval()
                metrics, losses = {}, []
                with torch.no_grad():
                    for task, batches in evals.items():
                        correct = total = 0
                        for batch in batches:
                            out = self.model(**batch)
                            losses.append(float(out.loss))
                            mask = batch["labels"] != -100
                            correct += int((out.logits.argmax(-1)[mask] == batch["labels"][mask]).sum())
                            total += int(mask.sum())
                        key = "f1" if task == "ner" else "accuracy"
                        metrics[f"{metric_key_prefix}_{task}_{key}"] = correct / total
                metrics[f"{metric_key_prefix}_loss"] = sum(losses) / len(losses)
                self.log(metrics)
                self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
                self.model.train()
                return metrics

        args = TrainingArguments(
            output_dir=str(output_dir),
            per_device_train_batch_size=1,
            learning_rate=3e-3,
            max_steps=6,
            logging_steps=2,
            eval_strategy="steps",
            eval_steps=3,
            save_steps=3,
            report_to=[],
            use_cpu=True,
            disable_tqdm=True,
            remove_unused_columns=False,
        )
        trainer = BatchTrainer(
            model=model,
            args=args,
            train_dataset=train,
            eval_dataset=evals["topic"],  # not used: evaluate() reads every task's batches
            data_collator=lambda items: items[0],
        )
        MTSTCardCallback.attach(trainer, callback_data)
        return trainer


def test_trainer_callback_fills_the_card_and_writes_checkpoints(tokenizer, tmp_path):
    torch.manual_seed(0)
    model = MTSTModel(tiny_mtst_config())
    data = MTSTCardData(language="en")
    data.set_widget_examples([text for text, _ in TRAIN["topic"]])
    trainer = _BatchTrainer.build(model, tokenizer, tmp_path / "run", data)
    assert model.model_card_data is data
    trainer.train()
    trainer.save_model(str(tmp_path / "final"))
    card = write_model_card(tmp_path / "final", model, tokenizer=tokenizer)  # card data found on the model

    assert data.hyperparameters["learning_rate"] == 3e-3 and data.hyperparameters["max_steps"] == 6
    assert data.results["validation"]["topic"]["accuracy"] == trainer.state.log_history[-2]["eval_topic_accuracy"]
    assert data.training_seconds and data.training_seconds > 0
    text = card.content
    assert "| `learning_rate` | 0.003 |" in text
    assert "generated_from_trainer" in metadata_load(tmp_path / "final" / "README.md")["tags"]
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert len(losses) == 3 and f"{losses[0]:.4f}" in text
    table = text.split("| Epoch | Step | Training Loss | Validation Loss | topic accuracy |")[1].split("\n\n")[0]
    steps = [int(line.split("|")[2]) for line in table.strip().splitlines()[2:]]
    assert steps == [2, 3, 4, 6]  # training logs every 2 steps, evaluations at 3 and 6
    assert (tmp_path / "final" / "loss_curve.svg").is_file()
    for checkpoint in ("checkpoint-3", "checkpoint-6"):  # written on every save
        folder = tmp_path / "run" / checkpoint
        assert (folder / "README.md").is_file() and (folder / "handler.py").is_file(), checkpoint
    assert "None" not in text
    assert_no_local_paths(text, tmp_path)
