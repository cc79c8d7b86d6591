"""`mtst-predict`: every input form, both output formats, task selection, embeddings and each error (exit code 2).

The CLI runs in-process through `main(argv)`; one test runs `python -m predict_mtst` to prove the entry point. The
model is a tiny random MTST model saved once per session, so labels are arbitrary but always configured names.
"""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import NER_LABELS, SENTIMENT_LABELS, TOPIC_LABELS, backbone_path, save_tiny_mtst

from mtst.cli import predict as predict_mtst
from mtst.cli.predict import main, mark_entities

ROOT = Path(__file__).resolve().parents[1]
ENTITY_TYPES = {label.split("-", 1)[1] for label in NER_LABELS if label != "O"}
TEXTS = ["Apple is opening a new office in Paris.", "The match ended in a draw.", "Shares fell sharply."]


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    return str(save_tiny_mtst(tmp_path_factory.mktemp("mtst") / "model"))


@pytest.fixture(scope="session")
def reference(model_dir):
    """The pipeline itself, to compare the CLI's answers with."""
    pipe = predict_mtst.load_pipeline(model_dir, device="cpu")
    return lambda texts, **kwargs: [pipe(t, **kwargs) for t in texts]


class FakeStdin(io.TextIOWrapper):
    """stdin that is (or is not) a terminal, with a binary buffer like the real one."""

    def __init__(self, data: bytes = b"", tty: bool = False):
        super().__init__(io.BytesIO(data), encoding="utf-8")
        self._tty = tty

    def isatty(self):
        return self._tty


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def jsonl(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines()]


def rounded(value, digits=4):
    """Floats rounded everywhere in a nested answer (batched and single runs differ in the last bits)."""
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v, digits) for v in value]
    return value


def check_answer(answer: dict, tasks=("topic", "sentiment", "ner")):
    assert [k for k in answer if k not in ("text", "embedding")] == list(tasks)
    if "topic" in tasks:
        assert answer["topic"]["label"] in TOPIC_LABELS and 0 <= answer["topic"]["score"] <= 1
    if "sentiment" in tasks:
        assert answer["sentiment"]["label"] in SENTIMENT_LABELS
    for entity in answer.get("ner", []):
        assert entity["entity_group"] in ENTITY_TYPES
        assert answer["text"][entity["start"] : entity["end"]] == entity["word"]


# ------------------------------------------------------------------------------------------------------ input forms
def test_arguments_give_one_json_line_each_equal_to_the_pipeline(model_dir, reference, capsys):
    code, out, err = run_cli(capsys, "-m", model_dir, *TEXTS, "")
    assert code == 0, err
    answers = jsonl(out)  # stdout is not a terminal here: JSON lines by default
    assert [a["text"] for a in answers] == [*TEXTS, ""]
    for answer, expected in zip(answers, reference([*TEXTS, ""])):
        check_answer(answer)
        assert rounded({k: v for k, v in answer.items() if k != "text"}) == rounded(expected)
    assert any(answers[0]["ner"]), "the tiny model should find some entity in the first text"
    # an empty text is answered, not skipped: labels for the empty sentence and no entities
    assert answers[-1]["ner"] == [] and answers[-1]["topic"]["label"] in TOPIC_LABELS


@pytest.mark.parametrize("dash", [False, True], ids=["piped", "dash"])
def test_stdin_one_text_per_line_and_empty_lines_are_reported(model_dir, capsys, monkeypatch, dash):
    data = ("\n".join([TEXTS[0], "", TEXTS[1], "   ", TEXTS[2]]) + "\n").encode()
    monkeypatch.setattr(sys, "stdin", FakeStdin(data, tty=dash))  # "-" reads stdin even from a terminal
    code, out, err = run_cli(capsys, "-m", model_dir, *(["-"] if dash else []))
    assert code == 0, err
    assert [a["text"] for a in jsonl(out)] == TEXTS
    assert "skipped 2 empty lines in stdin" in err


def test_txt_file(model_dir, tmp_path, capsys):
    path = tmp_path / "texts.txt"
    path.write_text(f"\ufeff{TEXTS[0]}\r\n\r\n{TEXTS[1]}\r\n{TEXTS[2]}\n\n", encoding="utf-8")  # BOM, CRLF, blanks
    code, out, err = run_cli(capsys, "-m", model_dir, "--input", path, "--batch_size", 2)
    assert code == 0, err
    answers = jsonl(out)
    assert [a["text"] for a in answers] == TEXTS
    for answer in answers:
        check_answer(answer)
    assert f"skipped 2 empty lines in {path}" in err


def test_jsonl_file_with_a_text_column(model_dir, tmp_path, capsys):
    path = tmp_path / "texts.jsonl"
    rows = [{"id": i, "body": t} for i, t in enumerate(TEXTS)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    code, out, err = run_cli(capsys, "-m", model_dir, "-i", path, "--text_column", "body")
    assert code == 0, err
    assert [a["text"] for a in jsonl(out)] == TEXTS
    assert "skipped 1 empty line" in err


@pytest.mark.parametrize("suffix", [".csv", ".tsv"])
def test_csv_and_tsv_files(model_dir, tmp_path, capsys, suffix):
    sep = "," if suffix == ".csv" else "\t"
    path = tmp_path / f"texts{suffix}"
    multiline = "A quoted text,\nover two lines"
    path.write_text(
        f'id{sep}text\n1{sep}{TEXTS[0]}\n2{sep}"{multiline}"\n3{sep}\n', encoding="utf-8"
    )  # an empty cell is answered like an empty argument
    code, out, err = run_cli(capsys, "-m", model_dir, "-i", path)
    assert code == 0, err
    answers = jsonl(out)
    assert [a["text"] for a in answers] == [TEXTS[0], multiline, ""]
    for answer in answers:
        check_answer(answer)


def test_progress_bar_goes_to_a_terminal_stderr(model_dir, tmp_path, capsys, monkeypatch):
    class TerminalErr(io.StringIO):
        def isatty(self):
            return True

    path = tmp_path / "texts.txt"
    path.write_text("\n".join(TEXTS), encoding="utf-8")
    err = TerminalErr()
    monkeypatch.setattr(sys, "stderr", err)
    assert main(["-m", model_dir, "-i", str(path)]) == 0
    assert len(jsonl(capsys.readouterr().out)) == 3
    assert "Predicting" in err.getvalue() and "3/3" in err.getvalue()


# ---------------------------------------------------------------------------------------------------- output forms
def test_table_marks_entities_and_shows_labels_with_scores(model_dir, reference, capsys):
    code, out, err = run_cli(capsys, "-m", model_dir, "--format", "table", "--color", "never", TEXTS[0], "")
    assert code == 0, err
    expected = reference([TEXTS[0]])[0]
    assert "\033[" not in out
    assert f"#1 {TEXTS[0]}" in out and "#2 (empty text)" in out
    assert f"topic      {expected['topic']['label']}  {expected['topic']['score']:.3f}" in out
    assert f"sentiment  {expected['sentiment']['label']}  {expected['sentiment']['score']:.3f}" in out
    assert f"ner        {mark_entities(TEXTS[0], expected['ner'])}" in out
    for entity in expected["ner"]:
        assert f"[{entity['word']}]({entity['entity_group']})" in out
    assert "(no entities)" in out


def test_table_all_scores_embeddings_and_colors(model_dir, capsys):
    code, out, err = run_cli(
        capsys, "-m", model_dir, "--format", "table", "--color", "always", "--all_scores", "--embeddings", TEXTS[0]
    )
    assert code == 0, err
    assert "\033[" in out
    for label in TOPIC_LABELS + SENTIMENT_LABELS:
        assert label in out
    assert "32 dims [" in out


def test_table_is_the_default_on_a_terminal(model_dir, capsys, monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.setenv("NO_COLOR", "1")
    code, out, err = run_cli(capsys, "-m", model_dir, TEXTS[1])
    assert code == 0, err
    assert out.startswith(f"#1 {TEXTS[1]}\n") and "\033[" not in out


def test_mark_entities():
    text = "Tim Cook visited New York"
    entities = [
        {"entity_group": "PER", "start": 0, "end": 8, "word": "Tim Cook", "score": 0.9},
        {"entity_group": "LOC", "start": 17, "end": 25, "word": "New York", "score": 0.8},
    ]
    assert mark_entities(text, entities) == "[Tim Cook](PER) visited [New York](LOC)"
    assert mark_entities(text, entities, color=True).count("\033[0m") == 4


# ------------------------------------------------------------------------------------------- tasks and embeddings
def test_tasks_selects_and_orders_tasks(model_dir, capsys):
    code, out, err = run_cli(capsys, "-m", model_dir, "--tasks", "ner,topic", "--tasks", "topic", TEXTS[0])
    assert code == 0, err
    (answer,) = jsonl(out)
    assert list(answer) == ["text", "ner", "topic"]
    check_answer(answer, tasks=("ner", "topic"))


def test_embeddings_and_all_scores(model_dir, capsys):
    code, out, err = run_cli(capsys, "-m", model_dir, "--embeddings", "--all_scores", *TEXTS[:2])
    assert code == 0, err
    for answer in jsonl(out):
        assert len(answer["embedding"]) == 32 and all(isinstance(v, float) for v in answer["embedding"])
        assert list(answer["topic"]["scores"]) == TOPIC_LABELS
        assert sum(answer["sentiment"]["scores"].values()) == pytest.approx(1.0, abs=1e-5)


# --------------------------------------------------------------------------------------------------------- errors
def _error(capsys, *argv):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2, (out, err)
    assert out == ""
    assert "Traceback" not in err and err.startswith("mtst-predict: error: ")
    return err


def test_missing_model_folder(capsys, tmp_path):
    err = _error(capsys, "-m", tmp_path / "nowhere" / "model", "hello")
    assert "does not exist" in err and "nowhere" in err


def test_default_model_missing_says_to_train_first(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    err = _error(capsys, "hello")
    assert "outputs/mtst-default" in err and "Train one first" in err and "--model" in err


def test_default_model_is_used_when_it_exists(model_dir, capsys, tmp_path, monkeypatch):
    (tmp_path / "outputs").mkdir()
    os.symlink(model_dir, tmp_path / "outputs" / "mtst-default")
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, "--tasks", "topic", "hello")
    assert code == 0, err
    assert jsonl(out)[0]["topic"]["label"] in TOPIC_LABELS


def test_a_model_that_is_not_mtst(capsys, tmp_path):
    err = _error(capsys, "-m", backbone_path(), "hello")
    assert "is not an MTST model" in err and "model_type 'bert'" in err
    (tmp_path / "empty").mkdir()
    err = _error(capsys, "-m", tmp_path / "empty", "hello")
    assert "is not an MTST model" in err and "no config.json" in err
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json", encoding="utf-8")
    err = _error(capsys, "-m", tmp_path / "broken", "hello")
    assert "config.json cannot be read" in err


def test_a_hub_id_that_cannot_be_fetched(capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    err = _error(capsys, "-m", "nobody-mtst/no-such-model", "hello")
    assert "'nobody-mtst/no-such-model' is neither a local folder nor a model that could be fetched" in err


def test_unknown_task(model_dir, capsys):
    err = _error(capsys, "-m", model_dir, "--tasks", "topic,colour", "hello")
    assert "Unknown task(s) colour" in err and "topic, sentiment, ner" in err


@pytest.mark.parametrize(
    "name, content, extra, expected",
    [
        ("missing.txt", None, [], ["missing.txt' does not exist"]),
        ("texts.json", b'["a"]', [], ["unknown file type", ".txt, .jsonl", ".csv"]),
        ("bad.jsonl", b'{"text": "fine"}\n{"text": "broken"\n', [], ["bad.jsonl line 2 is not valid JSON"]),
        ("list.jsonl", b'{"text": "fine"}\n["a"]\n', [], ["list.jsonl line 2 is a JSON list"]),
        ("cols.jsonl", b'{"id": 1, "body": "x"}\n', [], ["line 1 has no 'text' field", "fields are: id, body"]),
        ("num.jsonl", b'{"text": 42}\n', [], ["line 1: the 'text' field is 42 (int), not a string"]),
        ("cols.csv", b"id,body\n1,x\n", [], ["has no column 'text'", "columns are: id, body", "--text_column"]),
        ("col.csv", b"text\nx\n", ["--text_column", "body"], ["has no column 'body'", "columns are: text"]),
        ("empty.csv", b"", [], ["empty.csv is empty"]),
        ("latin1.txt", "fine\ncaf\xe9\n".encode("latin-1"), [], ["is not UTF-8", "0xe9 on line 2"]),
        ("blank.txt", b"\n  \n\n", [], ["holds no non-empty text (3 empty lines skipped)"]),
    ],
)
def test_bad_input_files(model_dir, capsys, tmp_path, name, content, extra, expected):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    err = _error(capsys, "-m", model_dir, "--input", path, *extra)
    for fragment in expected:
        assert fragment in err


def test_input_usage_errors(model_dir, capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "stdin", FakeStdin(tty=True))
    err = _error(capsys, "-m", model_dir)
    assert "No texts given" in err and "--input" in err
    path = tmp_path / "t.txt"
    path.write_text("a\n", encoding="utf-8")
    assert "not both" in _error(capsys, "-m", model_dir, "-i", path, "hello")
    assert "--batch_size must be at least 1" in _error(capsys, "-m", model_dir, "--batch_size", 0, "hello")
    monkeypatch.setattr(sys, "stdin", FakeStdin(b"\xff\xfe\n"))
    assert "stdin is not UTF-8" in _error(capsys, "-m", model_dir)


# ----------------------------------------------------------------------------------------------------- entry point
def test_python_dash_m_entry_point(model_dir):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(
        [sys.executable, "-m", "mtst.cli.predict", "--model", model_dir, "--tasks", "sentiment"],
        input="\n".join(TEXTS) + "\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    answers = jsonl(result.stdout)
    assert [a["text"] for a in answers] == TEXTS
    assert all(a["sentiment"]["label"] in SENTIMENT_LABELS for a in answers)
    assert "Traceback" not in result.stderr


def test_similarity_to_adds_the_cosine_of_each_text_and_the_given_one(model_dir, capsys):
    code, out, err = run_cli(capsys, "-m", model_dir, "--format", "jsonl", "--similarity_to", "Paris", "Paris", "x y")
    assert code == 0, err
    rows = jsonl(out)
    assert [r["text"] for r in rows] == ["Paris", "x y"] and "embedding" not in rows[0]
    assert rows[0]["similarity"] == pytest.approx(1.0, abs=1e-5) and -1 <= rows[1]["similarity"] < 1
    code, out, _ = run_cli(capsys, "-m", model_dir, "--format", "jsonl", "--embeddings", "--similarity_to", "x", "x")
    assert code == 0 and len(jsonl(out)[0]["embedding"]) > 0
    code, _, err = run_cli(capsys, "-m", model_dir, "--similarity_to", " ", "text")
    assert code == 2 and "--similarity_to needs a non-empty text" in err
