"""MultiTaskTrainer on a tiny random model: overfitting, loss weighting, freezing, layer-wise LR, gradual unfreezing,
prediction files and exact resume from a checkpoint (the metric functions: test_metrics.py)."""

import json
import os

import pytest
import torch
from safetensors.torch import load_file
from trainer_helpers import NER_LABELS, TOPIC_LABELS, tiny_model, tokenized_tasks, worse_at_epochs_callback
from transformers import TrainerCallback

from mtst.training.arguments import MultiTaskTrainingArguments, MultiTaskTrainingError
from mtst.training.checkpoints import LOSS_WEIGHTING_FILE, best_model_selection
from mtst.training.freezing import apply_static_freezing, format_parameter_summary
from mtst.training.trainer import MultiTaskTrainer
from mtst.training.weighting import GradientProjection


@pytest.fixture(scope="module")
def tasks(tokenizer, tmp_path_factory):
    return tokenized_tasks(tokenizer, tmp_path_factory.mktemp("tasks"), n_train=48, n_eval=16)


def make_args(tmp_path, **kwargs):
    defaults = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=8,
        per_device_eval_batch_size=16,
        num_train_epochs=2,
        learning_rate=5e-3,
        warmup_steps=0,  # the schedules below are read from step 0
        logging_steps=2,
        report_to="none",
        save_strategy="no",
        eval_strategy="no",
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
    )
    defaults.update(kwargs)
    return MultiTaskTrainingArguments(**defaults)


def make_trainer(tasks, tokenizer, args, model=None, split="train", **kwargs):
    specs, _, data = tasks
    model = model if model is not None else tiny_model(specs)
    return MultiTaskTrainer(
        model=model,
        args=args,
        train_dataset={t: d["train"] for t, d in data.items()},
        eval_dataset={t: d[split] for t, d in data.items()},
        processing_class=tokenizer,
        **kwargs,
    )


def snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_overfits_a_small_sample(tasks, tokenizer, tmp_path):
    trainer = make_trainer(tasks, tokenizer, make_args(tmp_path, num_train_epochs=25))
    trainer.train()
    losses = [log for log in trainer.state.log_history if "loss" in log]
    assert losses[-1]["loss"] < 0.2 * losses[0]["loss"]
    for task in ("topic", "ner"):  # per-task training loss in the logs, falling too
        per_task = [log[f"loss_{task}"] for log in losses if f"loss_{task}" in log]
        assert len(per_task) >= len(losses) // 2 and per_task[-1] < 0.3 * per_task[0]
    metrics = trainer.evaluate()  # on the training sets
    assert metrics["eval_topic_accuracy"] >= 0.9
    assert metrics["eval_ner_accuracy"] >= 0.9 and metrics["eval_ner_f1"] >= 0.9
    assert metrics["eval_average"] == pytest.approx((metrics["eval_topic_accuracy"] + metrics["eval_ner_f1"]) / 2)
    assert metrics["eval_loss"] == pytest.approx((metrics["eval_topic_loss"] + metrics["eval_ner_loss"]) / 2)
    for key in ("macro_f1", "macro_precision", "macro_recall"):
        assert f"eval_topic_{key}" in metrics
    for key in ("precision", "recall", "PER_f1", "LOC_f1"):
        assert f"eval_ner_{key}" in metrics
    evaluations = [log for log in trainer.state.log_history if "eval_average" in log]
    assert len(evaluations) == 1  # one log entry per evaluation, every task in it


def test_loss_is_weighted_per_task_and_not_rescaled(tasks, tokenizer, tmp_path):
    specs, _, data = tasks
    model = tiny_model(specs)
    model.config.tasks["ner"]["loss_weight"] = 3.0
    trainer = make_trainer(tasks, tokenizer, make_args(tmp_path), model=model)
    assert trainer.model_accepts_loss_kwargs is False  # no num_items_in_batch: tokens and sentences never mixed
    batch = trainer.data_collator([dict(data["ner"]["train"][i], task="ner") for i in range(4)])
    model.eval()
    with torch.no_grad():
        unweighted = model(**batch).loss
        weighted = trainer.compute_loss(model, batch, num_items_in_batch=torch.tensor(999))
    assert weighted == pytest.approx(3.0 * unweighted.item())


def test_uncertainty_weights_are_trained_and_checkpointed(tasks, tokenizer, tmp_path):
    args = make_args(tmp_path, loss_weighting="uncertainty", save_strategy="steps", save_steps=6, num_train_epochs=1)
    trainer = make_trainer(tasks, tokenizer, args)
    trainer.train()
    log_vars = trainer.loss_weighting_module.log_vars
    assert any(log_vars is p for g in trainer.optimizer.param_groups for p in g["params"])
    assert torch.all(log_vars.detach() != 0)  # moved from their initial 0
    weights = trainer.learned_loss_weights()
    assert set(weights) == {"topic", "ner"} and all(w > 0 for w in weights.values())
    assert any("loss_weight_ner" in log for log in trainer.state.log_history)
    saved = load_file(os.path.join(args.output_dir, "checkpoint-6", LOSS_WEIGHTING_FILE))
    assert saved["log_vars"].shape == (2,)
    # the loss: exp(-s) * L + s / 2
    module = trainer.loss_weighting_module
    loss = torch.tensor(2.0)
    s = module.log_vars[module.index["ner"]].detach()
    assert module("ner", loss).item() == pytest.approx((torch.exp(-s) * 2.0 + 0.5 * s).item())


def test_gradient_surgery_removes_the_component_against_the_other_task():
    shared, head = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2))
    surgery = GradientProjection([("encoder.w", shared), ("heads.ner.w", head)], decay=0.5)
    shared.grad, head.grad = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([5.0, 5.0])
    surgery("topic")  # no other task seen yet: unchanged; becomes topic's average
    assert torch.equal(shared.grad, torch.tensor([1.0, 0.0, 0.0]))
    shared.grad = torch.tensor([-1.0, 2.0, 0.0])  # conflicts with topic's [1, 0, 0]
    surgery("ner")
    assert torch.allclose(shared.grad, torch.tensor([0.0, 2.0, 0.0]))  # the conflicting part is gone
    assert torch.equal(head.grad, torch.tensor([5.0, 5.0]))  # heads are not shared: never projected
    assert torch.allclose(surgery.averages["ner"], torch.tensor([-1.0, 2.0, 0.0]))  # the unprojected gradient
    shared.grad = torch.tensor([0.0, 1.0, 1.0])  # agrees with ner: unchanged
    surgery("topic")
    assert torch.equal(shared.grad, torch.tensor([0.0, 1.0, 1.0]))
    assert torch.allclose(surgery.averages["topic"], torch.tensor([0.5, 0.5, 0.5]))  # 0.5 * old + 0.5 * new
    assert surgery.pop_rates() == {"topic": 0.0, "ner": 1.0} and surgery.pop_rates() == {}


def test_gradient_surgery_trains_and_logs_conflicts(tasks, tokenizer, tmp_path):
    args = make_args(tmp_path, gradient_surgery="pcgrad", logging_steps=2, num_train_epochs=1)
    trainer = make_trainer(tasks, tokenizer, args)
    trainer.train()
    assert set(trainer.gradient_projection.averages) == {"topic", "ner"}
    assert any(k.startswith("gradient_conflict_") for log in trainer.state.log_history for k in log)
    with pytest.raises(MultiTaskTrainingError, match="gradient_surgery"):
        make_args(tmp_path, gradient_surgery="pcgrad2")


def test_the_trainers_own_optimizer_gets_mtst_parameter_groups(tasks, tokenizer, tmp_path):
    args = make_args(tmp_path, layerwise_lr_decay=0.5, learning_rate=1e-3)
    chosen = (torch.optim.SGD, {"momentum": 0.9})
    trainer = make_trainer(tasks, tokenizer, args, optimizer_cls_and_kwargs=chosen)
    optimizer = trainer.create_optimizer()
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["momentum"] == 0.9
    lrs = {g["mtst_block"]: g["lr"] for g in optimizer.param_groups}
    assert lrs["encoder.layer.1"] == 1e-3 and lrs["encoder.layer.0"] == 5e-4  # top layer: lr
    assert lrs["head.ner"] == pytest.approx(1e-2)  # heads: head_learning_rate_factor (10) x lr
    assert trainer.optimizer_cls_and_kwargs is chosen  # the user's choice is left as it was given
    optimizer = make_trainer(tasks, tokenizer, make_args(tmp_path)).create_optimizer()  # default: args.optim
    assert type(optimizer).__name__ == "AdamW" and {"head.topic", "embeddings"} <= {
        g["mtst_block"] for g in optimizer.param_groups
    }
    own_groups = (torch.optim.SGD, {"params": [torch.nn.Parameter(torch.zeros(1))]})
    with pytest.raises(MultiTaskTrainingError, match="builds its own parameter groups"):
        make_trainer(tasks, tokenizer, make_args(tmp_path), optimizer_cls_and_kwargs=own_groups).create_optimizer()


def test_per_task_optimizer_states_keep_each_tasks_adam_moments_apart(tasks, tokenizer, tmp_path):
    args = make_args(tmp_path, optimizer_state="per_task", num_train_epochs=1, sampling_strategy="round_robin")
    trainer = make_trainer(tasks, tokenizer, args)
    seen = []

    class Record(TrainerCallback):  # the optimizer's state for a shared weight after each step, and the step's task
        def on_optimizer_step(self, args, state, control, **kwargs):
            weight = trainer.model.encoder.embeddings.word_embeddings.weight
            seen.append((trainer._step_task, trainer.optimizer.optimizer.state[weight]))

    trainer.add_callback(Record())
    trainer.train()
    states = trainer.task_optimizer_states.states
    assert set(states) == {"topic", "ner"}
    weight = trainer.model.encoder.embeddings.word_embeddings.weight
    topic, ner = states["topic"][weight], states["ner"][weight]
    assert topic is not ner and not torch.equal(topic["exp_avg_sq"], ner["exp_avg_sq"])
    steps = {task: sum(1 for t, _ in seen if t == task) for task in ("topic", "ner")}
    assert int(topic["step"]) == steps["topic"] and int(ner["step"]) == steps["ner"]  # each counts its own steps
    assert all(state is states[task][weight] for task, state in seen)  # every step used its task's own state
    with pytest.raises(MultiTaskTrainingError, match="optimizer_state"):
        make_args(tmp_path, optimizer_state="per_head")


def test_head_learning_rates_set_each_heads_peak_lr(tasks, tokenizer, tmp_path):
    args = make_args(tmp_path, head_learning_rates="ner=0.02", learning_rate=1e-3, num_train_epochs=1)
    trainer = make_trainer(tasks, tokenizer, args)
    trainer.create_optimizer()
    lrs = {g["mtst_block"]: g["lr"] for g in trainer.optimizer.param_groups}
    assert lrs["head.ner"] == 0.02 and lrs["head.topic"] == pytest.approx(1e-2) and lrs["encoder.layer.0"] == 1e-3
    for bad, message in (("pos=0.1", "unknown task"), ("ner=-1", "positive"), ("ner", "task=value")):
        with pytest.raises(MultiTaskTrainingError, match=message):
            make_trainer(tasks, tokenizer, make_args(tmp_path, head_learning_rates=bad))
    # head_learning_rate sets every head's; head_learning_rates overrides it per task
    args = make_args(tmp_path, head_learning_rate=0.01, head_learning_rates="ner=0.02", learning_rate=1e-3)
    trainer = make_trainer(tasks, tokenizer, args)
    trainer.create_optimizer()
    lrs = {g["mtst_block"]: g["lr"] for g in trainer.optimizer.param_groups}
    assert lrs["head.ner"] == 0.02 and lrs["head.topic"] == 0.01 and lrs["encoder.layer.0"] == 1e-3
    with pytest.raises(MultiTaskTrainingError, match="positive"):
        make_trainer(tasks, tokenizer, make_args(tmp_path, head_learning_rate=0.0))
    # the factor scales heads that no head_learning_rate(s) names; 1 trains them at the encoder's rate
    args = make_args(tmp_path, head_learning_rate_factor=1.0, head_learning_rates="ner=0.02", learning_rate=1e-3)
    lrs = {g["mtst_block"]: g["lr"] for g in make_trainer(tasks, tokenizer, args).create_optimizer().param_groups}
    assert lrs["head.ner"] == 0.02 and lrs["head.topic"] == lrs["encoder.layer.0"] == 1e-3
    for bad in (0.0, -2.0, float("nan"), True):
        with pytest.raises(MultiTaskTrainingError, match="head_learning_rate_factor"):
            make_args(tmp_path, head_learning_rate_factor=bad)


def test_logs_name_the_encoder_and_the_heads_learning_rates(tasks, tokenizer, tmp_path):
    """`learning_rate` in the logs (and TensorBoard) was the first parameter group's: a head's, at 10x."""
    args = make_args(tmp_path, num_train_epochs=1, logging_steps=1, lr_scheduler_type="linear", layerwise_lr_decay=0.5)
    trainer = make_trainer(tasks, tokenizer, args)
    trainer.train()
    logs = [log for log in trainer.state.log_history if "learning_rate" in log]
    steps = trainer.state.max_steps
    assert len(logs) == steps
    for log in logs:  # the rate of the step logged: linear decay from 5e-3 (heads 5e-2), top layer at the full rate
        expected = 5e-3 * (1 - (log["step"] - 1) / steps)
        assert log["learning_rate"] == pytest.approx(expected)
        assert log["learning_rate_heads"] == pytest.approx(10 * expected)
    args = make_args(
        tmp_path, max_steps=2, logging_steps=1, head_learning_rates="ner=0.02", lr_scheduler_type="constant"
    )
    trainer = make_trainer(tasks, tokenizer, args)
    trainer.train()
    log = next(log for log in trainer.state.log_history if "learning_rate" in log)
    assert log["learning_rate"] == 5e-3 and "learning_rate_heads" not in log
    assert (log["learning_rate_heads_ner"], log["learning_rate_heads_topic"]) == (0.02, pytest.approx(5e-2))


def test_static_freezing_keeps_parameters_bit_identical(tasks, tokenizer, tmp_path):
    args = make_args(tmp_path, freeze_layers=1, freeze_heads=["ner"], weight_decay=0.1, num_train_epochs=1)
    trainer = make_trainer(tasks, tokenizer, args)
    model = trainer.model
    before = snapshot(model)
    trainer.train()
    frozen = set(trainer.frozen_parameters)
    assert any(n.startswith("encoder.embeddings") for n in frozen)
    assert any(".layer.0." in n for n in frozen) and not any(".layer.1." in n for n in frozen)
    assert any(n.startswith("heads.ner") for n in frozen) and not any(n.startswith("heads.topic") for n in frozen)
    for name, p in model.named_parameters():
        if name in frozen:
            assert torch.equal(p, before[name]), name
            assert not p.requires_grad
    assert not torch.equal(model.heads["topic"].classifier.weight, before["heads.topic.classifier.weight"])
    summary = {row["group"]: row for row in trainer.parameter_summary}
    assert summary["embeddings"]["trainable"] == 0 and summary["encoder.layer.1"]["trainable"] > 0
    assert "total" in format_parameter_summary(trainer.parameter_summary)


@pytest.mark.parametrize(
    "options,trainable",
    [
        ({"freeze": "all"}, {"heads"}),
        ({"freeze": "encoder"}, {"heads"}),  # (no projection in this model)
        ({"freeze": "embeddings"}, {"heads", "encoder.encoder"}),
    ],
)
def test_freeze_options(tasks, options, trainable):
    model = tiny_model(tasks[0])
    apply_static_freezing(model, **options)
    prefixes = {
        n.split(".")[0] if n.startswith("heads") else ".".join(n.split(".")[:2])
        for n, p in model.named_parameters()
        if p.requires_grad
    }
    assert prefixes == trainable


def test_freeze_errors(tasks):
    model = tiny_model(tasks[0])
    with pytest.raises(MultiTaskTrainingError, match="allowed values"):
        apply_static_freezing(model, freeze="heads")
    with pytest.raises(MultiTaskTrainingError, match="from 0 to 2"):
        apply_static_freezing(model, freeze_layers=3)
    with pytest.raises(MultiTaskTrainingError, match="unknown task"):
        apply_static_freezing(model, freeze_heads=["pos"])
    with pytest.raises(MultiTaskTrainingError, match="no trainable parameter"):
        apply_static_freezing(model, freeze="all", freeze_heads=["topic", "ner"])


@pytest.mark.parametrize(
    "options, message",
    [
        ({"sampling_strategy": "uniform"}, "Unknown sampling_strategy 'uniform'; allowed values: round_robin, "),
        ({"loss_weighting": "learned"}, "Unknown loss_weighting 'learned'; allowed values: static, uncertainty."),
        ({"gradual_unfreeze_unit": "days"}, "Unknown gradual_unfreeze_unit 'days'; allowed values: steps, epochs."),
        ({"layerwise_lr_decay": 0.0}, "`layerwise_lr_decay` must be in (0, 1]; got 0.0."),
    ],
)
def test_options_are_checked_when_the_arguments_are_made(tmp_path, options, message):
    with pytest.raises(MultiTaskTrainingError) as err:
        MultiTaskTrainingArguments(output_dir=str(tmp_path), report_to="none", **options)
    assert message in str(err.value)
    args = MultiTaskTrainingArguments(output_dir=str(tmp_path), report_to="none")
    assert type(args.sampling_strategy) is str  # the options stay plain strings (card, training_args.bin)
    args.freeze = "head"  # changed after it was made: the Trainer checks again
    with pytest.raises(MultiTaskTrainingError, match="Unknown freeze 'head'; allowed values: none, all, encoder"):
        MultiTaskTrainer(model=None, args=args)


def test_layerwise_learning_rates(tasks, tokenizer, tmp_path):
    trainer = make_trainer(tasks, tokenizer, make_args(tmp_path, learning_rate=1e-3, layerwise_lr_decay=0.5))
    optimizer = trainer.create_optimizer()
    lrs = {g["mtst_block"]: g["lr"] for g in optimizer.param_groups}
    assert lrs["head.topic"] == lrs["head.ner"] == pytest.approx(1e-2)  # heads: no decay, 10x lr by default
    assert lrs["encoder.layer.1"] == pytest.approx(1e-3)  # top layer: decay^0
    assert lrs["encoder.layer.0"] == pytest.approx(5e-4)
    assert lrs["embeddings"] == pytest.approx(2.5e-4)  # lowest: decay^num_layers
    decays = {(g["mtst_block"], g["weight_decay"] > 0) for g in optimizer.param_groups}
    assert ("encoder.layer.0", False) in decays  # biases and LayerNorm weights: no weight decay
    # every trainable parameter in exactly one group
    grouped = [id(p) for g in optimizer.param_groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in trainer.model.parameters() if p.requires_grad)


def test_gradual_unfreezing_schedule_and_frozen_weights(tasks, tokenizer, tmp_path):
    # 12 steps per epoch (48 + 48 examples, batch 8); unfreeze a block every 5 steps, top layer first
    args = make_args(
        tmp_path, gradual_unfreeze_every=5, gradual_unfreeze_unit="steps", num_train_epochs=1, weight_decay=0.1
    )
    trainer = make_trainer(tasks, tokenizer, args)
    model = trainer.model
    before = snapshot(model)
    seen = {}

    class Record(TrainerCallback):
        def on_step_begin(self, args, state, control, optimizer=None, **kwargs):
            seen[state.global_step] = {g["mtst_block"]: g["lr"] for g in optimizer.param_groups}

    trainer.add_callback(Record())
    trainer.train()
    assert seen[0]["head.topic"] > 0 and seen[0]["encoder.layer.1"] == 0 and seen[0]["embeddings"] == 0
    assert seen[5]["encoder.layer.1"] > 0 and seen[5]["encoder.layer.0"] == 0
    assert seen[10]["encoder.layer.0"] > 0 and seen[10]["embeddings"] == 0
    # 12 steps: the embeddings (stage 3, step 15) never trained: bit-identical despite AdamW weight decay 0.1
    for name, p in model.named_parameters():
        if name.startswith("encoder.embeddings"):
            assert p.requires_grad and torch.equal(p, before[name]), name
    assert not torch.equal(
        model.encoder.encoder.layer[0].attention.self.query.weight,
        before["encoder.encoder.layer.0.attention.self.query.weight"],
    )
    rows = {r["group"]: r["unfreeze_step"] for r in trainer.parameter_summary}
    assert rows["encoder.layer.1"] == 5 and rows["encoder.layer.0"] == 10 and rows["embeddings"] == 15


def test_gradual_unfreezing_in_epochs(tasks, tokenizer, tmp_path):
    args = make_args(tmp_path, gradual_unfreeze_every=1, gradual_unfreeze_unit="epochs")
    trainer = make_trainer(tasks, tokenizer, args)
    trainer.get_train_dataloader()
    assert trainer.accelerator.even_batches is True  # switched off only while the train loader is prepared
    trainer.create_optimizer()
    rows = {r["group"]: r["unfreeze_step"] for r in trainer.parameter_summary}
    assert rows["head.ner"] == 0 and rows["encoder.layer.1"] == 12 and rows["embeddings"] == 36


def test_predict_writes_one_file_per_task(tasks, tokenizer, tmp_path):
    specs, raw, data = tasks
    trainer = make_trainer(tasks, tokenizer, make_args(tmp_path, num_train_epochs=1), split="validation")
    trainer.train()
    output = trainer.predict(
        {t: d["test"] for t, d in data.items()},
        raw_datasets={t: r["test"] for t, r in raw.items()},
        output_dir=str(tmp_path / "pred"),
        max_seq_length=32,
    )
    assert set(output.predictions) == {"topic", "ner"}
    assert "test_topic_accuracy" in output.metrics and "test_ner_f1" in output.metrics
    topic = [json.loads(line) for line in open(tmp_path / "pred" / "predictions_topic.jsonl")]
    assert len(topic) == len(raw["topic"]["test"])
    assert topic[0]["text"] == raw["topic"]["test"][0]["text"]
    assert topic[0]["label"] in TOPIC_LABELS and topic[0]["prediction"] in TOPIC_LABELS
    assert sum(topic[0]["scores"].values()) == pytest.approx(1.0, abs=1e-4)
    ner = [json.loads(line) for line in open(tmp_path / "pred" / "predictions_ner.jsonl")]
    assert len(ner) == len(raw["ner"]["test"])
    for row, source in zip(ner, raw["ner"]["test"]):
        assert row["tokens"] == source["tokens"]
        assert len(row["predictions"]) == len(row["labels"]) == len(row["scores"]) == len(source["tokens"])
        assert set(row["predictions"]) <= set(NER_LABELS)


class StopAfterSave(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        control.should_training_stop = True


@pytest.mark.parametrize(
    "options",
    [{}, {"gradient_accumulation_steps": 2, "loss_weighting": "uncertainty"}, {"optimizer_state": "per_task"}],
)
def test_resumed_run_ends_with_the_same_weights(tasks, tokenizer, tmp_path, options):
    """Interrupted mid-epoch in the second epoch, resumed from its checkpoint: same final weights as one run."""
    common = dict(num_train_epochs=3, sampling_strategy="temperature", learning_rate=1e-3, **options)
    steps_per_epoch = 12 // options.get("gradient_accumulation_steps", 1)
    stop_at = steps_per_epoch + 2

    full = make_trainer(tasks, tokenizer, make_args(tmp_path / "full", **common))
    full.train()

    args = make_args(tmp_path / "cut", save_strategy="steps", save_steps=stop_at, **common)
    cut = make_trainer(tasks, tokenizer, args, callbacks=[StopAfterSave()])
    cut.train()
    assert cut.state.global_step == stop_at

    resumed = make_trainer(tasks, tokenizer, make_args(tmp_path / "cut", **common))
    resumed.train(resume_from_checkpoint=os.path.join(args.output_dir, f"checkpoint-{stop_at}"))
    assert resumed.state.global_step == full.state.global_step == 3 * steps_per_epoch
    final, reference = snapshot(resumed.model), snapshot(full.model)
    for name in reference:
        assert torch.equal(final[name], reference[name]), name
    if options.get("loss_weighting"):
        assert torch.equal(resumed.loss_weighting_module.log_vars, full.loss_weighting_module.log_vars)


def test_group_by_length_through_the_trainer(tasks, tokenizer, tmp_path):
    trainer = make_trainer(
        tasks, tokenizer, make_args(tmp_path, group_by_length=True, sampling_strategy="round_robin")
    )
    loader = trainer.get_train_dataloader()
    batches = list(loader)
    assert len(batches) == len(loader) == 12
    assert [b["task"] for b in batches[:4]] == ["topic", "ner", "topic", "ner"]
    assert trainer._train_batch_sampler.lengths is not None


@pytest.mark.parametrize(
    "options, reason",
    [
        ({"eval_strategy": "epoch", "save_strategy": "epoch"}, None),
        ({"eval_strategy": "steps", "save_strategy": "steps", "eval_steps": 5, "save_steps": 10}, None),
        ({"eval_strategy": "steps", "save_strategy": "best", "eval_steps": 5}, None),
        ({"eval_strategy": "steps", "save_strategy": "steps", "eval_steps": 4, "save_steps": 10}, "not a multiple"),
        ({"eval_strategy": "epoch", "save_strategy": "steps", "save_steps": 5}, "do not line up"),
        ({"eval_strategy": "no", "save_strategy": "epoch"}, "nothing is evaluated"),
        ({"eval_strategy": "epoch", "save_strategy": "no"}, "no checkpoint is saved"),
        ({"eval_strategy": "epoch", "save_strategy": "epoch", "metric_for_best_model": None}, "no --metric_for"),
    ],
)
def test_best_model_selection_needs_evaluation_and_saving_to_line_up(tmp_path, options, reason):
    args = make_args(tmp_path, **{"metric_for_best_model": "average", **options})
    found = best_model_selection(args, has_eval_dataset=True)
    assert found is None if reason is None else reason in found
    if reason is None:
        assert "nothing is evaluated" in best_model_selection(args, has_eval_dataset=False)


def test_best_checkpoint_is_kept_with_its_uncertainty_weights(tasks, tokenizer, tmp_path, caplog):
    """Two epochs, the second made worse on purpose: the trainer ends with checkpoint-12's weights and loss weights."""
    args = make_args(
        tmp_path,
        eval_strategy="epoch",
        save_strategy="epoch",
        metric_for_best_model="average",
        load_best_model_at_end=None,  # decided by the trainer
        loss_weighting="uncertainty",
    )
    trainer = make_trainer(tasks, tokenizer, args, split="validation", callbacks=[worse_at_epochs_callback([2])])
    assert trainer.args.load_best_model_at_end is True
    with caplog.at_level("INFO", logger="mtst"):
        trainer.train()
    evals = [log["eval_average"] for log in trainer.state.log_history if "eval_average" in log]
    assert len(evals) == 2 and evals[1] < evals[0]
    assert trainer.kept_model == {
        "selection": "best",
        "checkpoint": "checkpoint-12",
        "step": 12,
        "metric": "eval_average",
        "value": evals[0],
        "last_step": 24,
    }
    kept = f"Kept the best checkpoint by eval_average: checkpoint-12 (step 12, eval_average {evals[0]:.4f})"
    assert kept in caplog.text
    best = os.path.join(args.output_dir, "checkpoint-12")
    weights = load_file(os.path.join(best, "model.safetensors"))
    for name, value in trainer.model.state_dict().items():
        assert torch.equal(value, weights[name]), name
    saved = load_file(os.path.join(best, LOSS_WEIGHTING_FILE))["log_vars"]
    last = load_file(os.path.join(args.output_dir, "checkpoint-24", LOSS_WEIGHTING_FILE))["log_vars"]
    assert not torch.equal(saved, last)  # the last epoch moved them: the best checkpoint's are restored
    assert torch.equal(trainer.loss_weighting_module.log_vars.detach(), saved)
    assert trainer.evaluate()["eval_average"] == pytest.approx(evals[0])


def test_last_model_is_kept_when_evaluation_and_saving_do_not_line_up(tasks, tokenizer, tmp_path, caplog):
    args = make_args(
        tmp_path,
        num_train_epochs=1,
        eval_strategy="epoch",
        save_strategy="steps",
        save_steps=5,
        metric_for_best_model="average",
        load_best_model_at_end=None,
    )
    with caplog.at_level("INFO", logger="mtst"):
        trainer = make_trainer(tasks, tokenizer, args, split="validation")
        assert trainer.args.load_best_model_at_end is False
        assert "is the last one, not the best checkpoint by eval_average: evaluation" in caplog.text
        trainer.train()
    reason = "evaluation (--eval_strategy epoch) and saving (--save_strategy steps) do not line up"
    assert trainer.kept_model == {"selection": "last", "step": 12, "metric": "eval_average", "reason": reason}
    assert f"Kept the last model (step 12), not the best checkpoint by eval_average: {reason}." in caplog.text


def test_the_trainer_leaves_the_callers_arguments_as_they_were(tasks, tokenizer, tmp_path):
    """What the trainer settles (the sampler replacing train_sampling_strategy, DDP's unused parameters, which model
    is kept, no evaluation without evaluation data) is set on its own copy of the arguments."""
    args = make_args(tmp_path, eval_strategy="epoch", save_strategy="epoch", train_sampling_strategy="group_by_length")
    before = args.to_dict()
    specs, _, data = tasks
    trainer = MultiTaskTrainer(
        model=tiny_model(specs), args=args, train_dataset={t: d["train"] for t, d in data.items()}
    )
    assert args.to_dict() == before
    assert trainer.args is not args and trainer.args.train_sampling_strategy == "random"
    assert trainer.args.eval_strategy == "no" and trainer.args.load_best_model_at_end is False
    assert trainer.best_model_reason.startswith("nothing is evaluated during training")
