"""Distillation from single-task teachers with teacher annealing (`--teacher_models`, distill_mtst): the loss mixes
gold and teacher as training goes on, the teachers stay frozen, a joint run trains with them end to end, and bad
teachers stop the run with a clear error before any data is read."""

import json

import pytest
import torch
import torch.nn.functional as F
from reliability_helpers import cli_args, make_tiny
from safetensors.torch import load_file

from mtst.cli import train as run_multitask
from mtst.remote.modeling_mtst import MTSTModel
from mtst.training.distill import TaskTeachers, soft_cross_entropy


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def teacher(tiny, tmp_path_factory):
    """A ner-only MTST trained a few steps on the tiny backbone: the teacher of the joint runs below."""
    with open(tiny["tasks"], encoding="utf-8") as f:
        tasks = json.load(f)["tasks"]
    config = tiny["folder"] / "data" / "ner_only.json"
    config.write_text(json.dumps({"tasks": [t for t in tasks if t["name"] == "ner"]}))
    out = tmp_path_factory.mktemp("teacher") / "ner_only"
    args = cli_args(tiny, out, "--do_train", "--max_steps", "6", "--eval_strategy", "no", "--save_strategy", "no")
    args[args.index("--tasks_config") + 1] = str(config)
    assert run_multitask.main(args) == 0
    return out


def test_soft_cross_entropy_is_the_hard_one_for_a_certain_teacher_and_skips_unlabelled_positions():
    torch.manual_seed(0)
    student = torch.randn(2, 5, 4)
    labels = torch.tensor([[0, 3, -100, 1, 2], [2, -100, -100, 0, 1]])
    certain = F.one_hot(labels.clamp(min=0), 4).float() * 100.0  # the teacher puts all its mass on the gold label
    hard = F.cross_entropy(student.reshape(-1, 4), labels.reshape(-1), ignore_index=-100)
    assert torch.allclose(soft_cross_entropy(student, certain, labels), hard, atol=1e-5)
    # positions without a label do not count, whatever the teacher says there
    noisy = certain.clone()
    noisy[labels == -100] = torch.randn(int((labels == -100).sum()), 4) * 10
    assert torch.allclose(soft_cross_entropy(student, noisy, labels), hard, atol=1e-5)
    # a sentence task: (batch, labels) logits
    assert torch.allclose(
        soft_cross_entropy(student[:, 0], certain[:, 0], labels[:, 0]),
        F.cross_entropy(student[:, 0], labels[:, 0]),
        atol=1e-5,
    )
    nothing = torch.full_like(labels, -100)
    assert soft_cross_entropy(student, certain, nothing).item() == 0.0


def test_teacher_annealing_moves_from_the_teacher_to_the_gold_labels_and_never_trains_the_teacher(tiny, teacher):
    from transformers import AutoTokenizer

    student = MTSTModel.from_pretrained(str(teacher))  # any model with a ner head
    tokenizer = AutoTokenizer.from_pretrained(str(teacher))
    teachers = TaskTeachers(f"ner={teacher}", student, tokenizer)
    inputs = dict(tokenizer(["John lives in Paris", "Acme sells"], padding=True, return_tensors="pt"))
    labels = torch.zeros_like(inputs["input_ids"])
    labels[:, 0] = -100
    out = student(**inputs, task="ner", labels=labels)
    soft = soft_cross_entropy(out.logits, teachers.logits("ner", inputs), labels)
    start = teachers.loss("ner", inputs, out.logits, labels, out.loss, progress=0.0)
    middle = teachers.loss("ner", inputs, out.logits, labels, out.loss, progress=0.25)
    end = teachers.loss("ner", inputs, out.logits, labels, out.loss, progress=1.0)
    assert torch.allclose(start, soft) and torch.allclose(end, out.loss)
    assert torch.allclose(middle, 0.25 * out.loss + 0.75 * soft)
    start.backward()
    assert all(p.grad is None for p in teachers.models["ner"].parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert "ner" in teachers and "topic" not in teachers


def test_a_joint_run_distils_from_its_teacher_and_leaves_it_unchanged(tiny, teacher, tmp_path):
    before = load_file(teacher / "model.safetensors")
    common = ("--do_train", "--max_steps", "4", "--eval_strategy", "no", "--save_strategy", "no", "--seed", "3")
    assert run_multitask.main(cli_args(tiny, tmp_path / "plain", *common)) == 0
    assert run_multitask.main(cli_args(tiny, tmp_path / "distil", *common, "--teacher_models", f"ner={teacher}")) == 0
    after = load_file(teacher / "model.safetensors")
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    plain = json.loads((tmp_path / "plain" / "train_results.json").read_text())
    distil = json.loads((tmp_path / "distil" / "train_results.json").read_text())
    assert distil["train_loss"] != plain["train_loss"]  # the ner steps trained on the teacher's predictions
    card = (tmp_path / "distil" / "README.md").read_text()
    assert str(teacher) not in card and str(tmp_path) not in card  # the card never shows a local path
    assert "| `teacher_models` | ner |" in card  # which tasks were distilled


def test_bad_teachers_stop_the_run_with_a_clear_error_before_any_data_is_read(tiny, teacher, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    bad = {
        f"pos={teacher}": ["teacher_models", "unknown task(s) ['pos']", "topic, ner"],
        f"ner={tmp_path / 'missing'}": ["'ner'", str(tmp_path / "missing"), "not a saved model folder"],
        f"ner={tiny['backbone']}": ["'bert' model", "MTST model trained on that task"],
        "ner": ["teacher_models", "expected 'task=value' entries"],
    }
    for value, fragments in bad.items():
        out = tmp_path / "o"
        assert run_multitask.main(cli_args(tiny, out, "--do_train", "--teacher_models", value)) == 2, value
        err = capsys.readouterr().err
        assert all(fragment in err for fragment in fragments), (value, err[-2000:])
        assert "Traceback" not in err and not out.exists()


def test_a_teacher_of_other_labels_or_another_vocabulary_is_refused(tiny, teacher, tmp_path):
    from transformers import AutoTokenizer, BertTokenizerFast

    from mtst.training.arguments import MultiTaskTrainingError

    student = MTSTModel.from_pretrained(str(teacher))
    tokenizer = AutoTokenizer.from_pretrained(str(teacher))
    relabelled = MTSTModel.from_pretrained(str(teacher))
    relabelled.config.tasks["ner"]["labels"] = list(reversed(relabelled.config.tasks["ner"]["labels"]))
    relabelled.save_pretrained(tmp_path / "relabelled")
    tokenizer.save_pretrained(tmp_path / "relabelled")
    with pytest.raises(MultiTaskTrainingError, match="same labels in the same order"):
        TaskTeachers(f"ner={tmp_path / 'relabelled'}", student, tokenizer)
    (tmp_path / "relabelled" / "model.safetensors").write_bytes(b"not weights")
    with pytest.raises(MultiTaskTrainingError, match="cannot load the teacher of task 'ner'"):
        TaskTeachers(f"ner={tmp_path / 'relabelled'}", student, tokenizer)
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "john", "paris"]) + "\n")
    other = BertTokenizerFast(vocab_file=str(vocab))
    with pytest.raises(MultiTaskTrainingError, match="tokenizes differently"):
        TaskTeachers(f"ner={teacher}", student, other)
