"""The Gradio demo (`app.py`): its answers in-process, and the whole app driven in headless Chromium.

The browser test starts `python app.py` on 127.0.0.1 with a tiny random MTST model, types a sentence, submits it and
checks that the page shows the pipeline's labels and entities; it saves a screenshot under tests/artifacts/. It is
skipped when Chromium (Debian's `chromium`, or $CHROMIUM_PATH), playwright or gradio is missing.
"""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import NER_LABELS, SENTIMENT_LABELS, TOPIC_LABELS, save_tiny_mtst

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("MTST_TEST_ARTIFACTS", Path(__file__).resolve().parent / "artifacts"))
ENTITY_TYPES = {label.split("-", 1)[1] for label in NER_LABELS if label != "O"}
SENTENCE = "Apple is opening a new office in Paris."
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-proxy-server",
]
# No analytics, version check, share link, SSR node server or Hub call: the app must run with no network at all.
APP_ENV = {
    "GRADIO_ANALYTICS_ENABLED": "False",
    "GRADIO_SSR_MODE": "False",
    "GRADIO_SHARE": "False",
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
    "OMP_NUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    return str(save_tiny_mtst(tmp_path_factory.mktemp("mtst-app") / "model"))


@pytest.fixture(scope="session")
def pipe(model_dir):
    from mtst.cli.predict import load_pipeline

    return load_pipeline(model_dir, device="cpu")


def test_importing_the_app_loads_no_model(monkeypatch):
    monkeypatch.delenv("SPACE_ID", raising=False)
    import app

    assert not hasattr(app, "demo")
    assert callable(app.build_demo) and app.DEFAULT_MODEL == os.path.join("outputs", "mtst-default")


def test_predict_gives_label_scores_and_highlighted_entities(pipe):
    import app

    topic, sentiment, ner = app.predict(pipe, SENTENCE)
    assert list(topic) == TOPIC_LABELS and abs(sum(topic.values()) - 1) < 1e-5
    assert list(sentiment) == SENTIMENT_LABELS
    assert ner["text"] == SENTENCE and ner["entities"]
    expected = pipe(SENTENCE)["ner"]
    assert [(e["entity"], e["start"], e["end"]) for e in ner["entities"]] == [
        (e["entity_group"], e["start"], e["end"]) for e in expected
    ]
    assert app.predict(pipe, "   ") == [None, None, None]


def test_app_reports_a_missing_model(capsys, tmp_path):
    import app

    assert app.main(["--model", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "app.py: error: Model folder" in err and "does not exist" in err and "Traceback" not in err


def test_build_demo_has_one_output_per_task(pipe):
    gr = pytest.importorskip("gradio", reason="gradio is not installed (pip install -e '.[demo]')")
    import app

    demo = app.build_demo(pipe=pipe)
    by_id = {getattr(block, "elem_id", None): block for block in demo.blocks.values()}
    assert isinstance(by_id["task-topic"], gr.Label) and isinstance(by_id["task-sentiment"], gr.Label)
    assert isinstance(by_id["task-ner"], gr.HighlightedText)
    assert isinstance(by_id["mtst-input"], gr.Textbox)


def test_a_model_with_an_embedding_task_answers_its_heads_and_compares_two_texts(tmp_path):
    """A sentence_similarity task has no head: the app shows the head tasks and compares two texts by cosine."""
    import torch
    from conftest import TASKS, backbone_path, tiny_mtst_config
    from transformers import AutoTokenizer

    import app
    from mtst.cli.predict import load_pipeline
    from mtst.remote.modeling_mtst import MTSTModel

    torch.manual_seed(0)
    tasks = {"topic": TASKS["topic"], "sts": {"type": "sentence_similarity", "score_range": [0, 5]}}
    MTSTModel(tiny_mtst_config(tasks=tasks)).eval().save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(backbone_path()).save_pretrained(tmp_path)
    pipe = load_pipeline(str(tmp_path), device="cpu")

    assert app.head_tasks(pipe.model.config) == ["topic"]
    (topic,) = app.predict(pipe, SENTENCE)
    assert list(topic) == TOPIC_LABELS
    assert app.similarity(pipe, SENTENCE, SENTENCE) == pytest.approx(1.0, abs=1e-4)
    other = app.similarity(pipe, SENTENCE, "The match ended in a draw after extra time.")
    assert -1.0 <= other < 1.0
    assert app.similarity(pipe, SENTENCE, "  ") is None
    gr = pytest.importorskip("gradio", reason="gradio is not installed (pip install -e '.[demo]')")
    by_id = {getattr(b, "elem_id", None): b for b in app.build_demo(pipe=pipe).blocks.values()}
    assert isinstance(by_id["task-topic"], gr.Label) and "task-sts" not in by_id
    assert isinstance(by_id["mtst-similarity"], gr.Number)


# ----------------------------------------------------------------------------------------------- real browser
def _chromium() -> str | None:
    path = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or shutil.which("chromium-browser")
    return path if path and os.access(path, os.X_OK) else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_server(url: str, process: subprocess.Popen, log: Path, timeout: float = 45) -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"app.py exited with code {process.returncode}:\n{log.read_text(errors='replace')}")
        try:
            with opener.open(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    pytest.fail(f"app.py did not answer on {url} within {timeout} s:\n{log.read_text(errors='replace')}")


def test_app_end_to_end_in_headless_chromium(model_dir, pipe, tmp_path, capsys, record_property):
    pytest.importorskip("gradio", reason="gradio is not installed (pip install -e '.[demo]')")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install playwright)"
    )
    chromium = _chromium()
    if chromium is None:
        pytest.skip("Chromium not found (apt-get install chromium, or set CHROMIUM_PATH)")

    expected = pipe(SENTENCE)
    assert expected["ner"], "the tiny model should find some entity in the sentence"
    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    log = tmp_path / "app.log"
    env = {k: v for k, v in os.environ.items() if k not in ("SPACE_ID", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")}
    env.update(APP_ENV, GRADIO_TEMP_DIR=str(tmp_path / "gradio"), MTST_MODEL=model_dir)
    command = [sys.executable, "app.py", "--host", "127.0.0.1", "--port", str(port)]  # model from MTST_MODEL
    start = time.monotonic()
    with open(log, "wb") as log_file:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        _wait_for_server(url, process, log)
        started = time.monotonic() - start
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                outside = []
                page.on("request", lambda r: None if r.url.startswith(url) else outside.append(r.url))
                page.goto(url, wait_until="domcontentloaded", timeout=30_000)
                page.locator("#mtst-input textarea").fill(SENTENCE)
                page.locator("#mtst-submit").click()

                topic = page.locator('#task-topic [data-testid="label-output-value"]')
                sync_api.expect(topic).to_have_text(expected["topic"]["label"], timeout=30_000)
                sentiment = page.locator('#task-sentiment [data-testid="label-output-value"]')
                sync_api.expect(sentiment).to_have_text(expected["sentiment"]["label"])
                # every configured label is shown with its score bar, and nothing else
                assert set(page.locator("#task-topic dt").all_inner_texts()) == set(TOPIC_LABELS)
                assert set(page.locator("#task-sentiment dt").all_inner_texts()) == set(SENTIMENT_LABELS)
                assert page.locator("#task-topic meter").count() == len(TOPIC_LABELS)

                # each entity is highlighted in the text with its type next to it
                spans = page.locator("#task-ner .highlighted")
                sync_api.expect(spans).to_have_count(len(expected["ner"]))
                words = [text.strip() for text in spans.locator(".text").all_inner_texts()]
                types = [text.strip() for text in spans.locator(".label").all_inner_texts()]
                assert words == [e["word"] for e in expected["ner"]]
                assert types == [e["entity_group"] for e in expected["ner"]] and set(types) <= ENTITY_TYPES

                ARTIFACTS.mkdir(parents=True, exist_ok=True)
                screenshot = ARTIFACTS / "app_end_to_end.png"
                page.screenshot(path=str(screenshot), full_page=True)
                assert not outside, f"the page reached outside the app: {outside}"
            finally:
                browser.close()
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    output = log.read_text(errors="replace")
    assert "Traceback" not in output, output
    record_property("screenshot", str(screenshot))
    with capsys.disabled():
        total = time.monotonic() - start
        print(f"\n[artifact] screenshot: {screenshot} (app up in {started:.1f} s, test {total:.1f} s)")
