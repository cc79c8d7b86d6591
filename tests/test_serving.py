"""Serving under load: the request limits of the endpoints handler and the Gradio app, and batched answers.

Each limit is tried just over (refused, with a message naming the limit, its variable and the value, and the
pipeline never called) and at the limit (answered), through `EndpointHandler` and through the app's registered
`predict` function (and once through `gradio_client` against the running app). Batching: a request of many texts
runs in one pipeline call, longest first, and answers in the request's order as one-at-a-time requests do.
"""

import os
import socket
import time

import pytest
from conftest import SENTIMENT_LABELS, TOPIC_LABELS, save_tiny_mtst

from mtst.remote.handler import LIMIT_SETTINGS, EndpointHandler, LimitError, ServingLimits

LIMITS = ServingLimits(max_inputs=4, max_chars=50, max_total_chars=120, batch_size=2, max_batch_size=8)
WORDS = "John Smith of Siemens flew from Berlin to Paris on Monday to meet the European Central Bank"
# Lengths from 1 word to several windows of the tiny model (128 positions): batching has to sort and reassemble.
TEXTS = [" ".join(WORDS.split()[: 1 + (7 * i) % 16]) for i in range(9)] + [WORDS * 12, "Short.", WORDS * 3]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return str(save_tiny_mtst(tmp_path_factory.mktemp("serving") / "model"))


@pytest.fixture(scope="module")
def handler(model_dir):
    return EndpointHandler(model_dir, limits=LIMITS)


class Spy:
    """Wraps the pipeline (or any callable): records calls, delegates everything else."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        return self.inner(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.fixture
def spied(handler, monkeypatch):
    monkeypatch.setattr(handler, "pipeline", Spy(handler.pipeline))
    monkeypatch.setattr(handler, "_count_tokens", Spy(handler._count_tokens))
    return handler


def assert_same_answers(got, expected):
    """Equal labels and entity spans; scores equal to 1e-5 (padding in a batch may move the last float digits)."""
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        assert set(a) == set(b)
        for task in set(a) - {"embedding"}:
            if isinstance(a[task], list):
                assert [(e["entity_group"], e["start"], e["end"], e["word"]) for e in a[task]] == [
                    (e["entity_group"], e["start"], e["end"], e["word"]) for e in b[task]
                ]
                assert [e["score"] for e in a[task]] == pytest.approx([e["score"] for e in b[task]], abs=1e-5)
            else:
                assert a[task]["label"] == b[task]["label"]
                assert a[task]["score"] == pytest.approx(b[task]["score"], abs=1e-5)


# ---------------------------------------------------------------------------------------------------------- limits
OVER = [
    ("max_inputs", ["ab"] * 5, "The request has 5 texts, over the limit of 4 texts per request"),
    ("max_chars", ["x" * 51], "The text has 51 characters, over the limit of 50 characters per text"),
    ("max_chars", ["ok", "x" * 51], "Text 1 (counting from 0) has 51 characters"),
    ("max_total_chars", ["x" * 50, "y" * 50, "z" * 21], "121 characters in all, over the limit of 120"),
]
AT_LIMIT = [
    ("max_inputs", ["ab"] * 4),
    ("max_chars", ["x" * 50]),
    ("max_total_chars", ["x" * 50, "y" * 50, "z" * 20]),
]


@pytest.mark.parametrize("name, texts, message", OVER)
def test_handler_refuses_a_request_just_over_a_limit_without_computing(spied, name, texts, message):
    start = time.perf_counter()
    with pytest.raises(LimitError) as err:
        spied({"inputs": texts})
    assert time.perf_counter() - start < 1.0
    assert isinstance(err.value, ValueError)  # Inference Endpoints answer ValueError with status 400
    text = str(err.value)
    assert message in text and name in text and LIMIT_SETTINGS[name][0] in text
    assert spied.pipeline.calls == [] and spied._count_tokens.calls == []  # nothing computed, not even tokens


@pytest.mark.parametrize("name, texts", AT_LIMIT)
def test_handler_answers_a_request_at_a_limit(spied, name, texts):
    answers = spied({"inputs": texts})
    assert len(answers) == len(texts) and all(set(a) == {"topic", "sentiment", "ner"} for a in answers)
    assert len(spied.pipeline.calls) == 1


@pytest.mark.parametrize(
    "inputs, which", [("\ud800", "The text"), (["fine", "a \udfff b"], "Text 1 (counting from 0)")]
)
def test_handler_refuses_a_lone_surrogate_as_a_bad_request(spied, inputs, which):
    """A lone surrogate (an unpaired \\u escape in the JSON) made the tokenizer raise TypeError: status 500."""
    with pytest.raises(ValueError) as err:  # Inference Endpoints answer ValueError with status 400
        spied({"inputs": inputs})
    assert f"{which} is not valid Unicode" in str(err.value) and "lone surrogate" in str(err.value)
    assert spied.pipeline.calls == [] and spied._count_tokens.calls == []


def test_request_parameters_cannot_lift_the_cost(spied):
    with pytest.raises(ValueError, match=r'"batch_size" is 9, over the limit of 8 .*MTST_MAX_BATCH_SIZE'):
        spied({"inputs": "a text", "parameters": {"batch_size": 9}})
    # the tiny model's window: 128 positions - 2 special tokens = 126 text tokens; stride at most 63
    with pytest.raises(ValueError, match=r'"stride" is 64, more than half the window\'s 126 text tokens.*at most 63'):
        spied({"inputs": "a text", "parameters": {"stride": 64}})
    with pytest.raises(ValueError, match=r"half the window's 30 text tokens.*at most 15"):
        spied({"inputs": "a text", "parameters": {"max_length": 32, "stride": 16}})
    assert spied.pipeline.calls == []
    assert spied({"inputs": "a text", "parameters": {"batch_size": 8, "stride": 63}})["topic"]["label"] in TOPIC_LABELS
    assert spied({"inputs": "a text", "parameters": {"max_length": 32, "stride": 15}})["ner"] is not None


def test_limits_come_from_the_environment():
    limits = ServingLimits.from_env(
        {"MTST_MAX_INPUTS": "7", "MTST_MAX_CHARS": "1_000", "MTST_MAX_TOTAL_CHARS": " 5000 ", "MTST_BATCH_SIZE": ""}
    )
    assert (limits.max_inputs, limits.max_chars, limits.max_total_chars) == (7, 1000, 5000)
    assert limits.batch_size == ServingLimits().batch_size == 32  # empty: the default
    assert ServingLimits.from_env({}) == ServingLimits()
    assert ServingLimits.from_env({"MTST_MAX_CHARS": "10"}, max_chars=20, max_inputs=None).max_chars == 20


@pytest.mark.parametrize("value", ["abc", "0", "-3", "1.5", "1e4"])
def test_a_bad_environment_value_fails_at_start_up(model_dir, monkeypatch, value):
    with pytest.raises(ValueError) as err:
        ServingLimits.from_env({"MTST_MAX_CHARS": value})
    assert "MTST_MAX_CHARS" in str(err.value) and repr(value) in str(err.value)
    monkeypatch.setenv("MTST_MAX_TOTAL_CHARS", value)
    with pytest.raises(ValueError, match=f"MTST_MAX_TOTAL_CHARS .*got {value!r}"):
        EndpointHandler(model_dir)


def test_inconsistent_limits_are_refused():
    with pytest.raises(ValueError, match="MTST_BATCH_SIZE.*above max_batch_size"):
        ServingLimits.from_env({"MTST_BATCH_SIZE": "100", "MTST_MAX_BATCH_SIZE": "64"})
    with pytest.raises(ValueError, match="max_inputs .*must be a positive integer; got 0"):
        ServingLimits(max_inputs=0)


def test_the_handler_reads_the_environment_by_default(model_dir, monkeypatch):
    monkeypatch.setenv("MTST_MAX_INPUTS", "2")
    handler = EndpointHandler(model_dir)
    assert handler.limits.max_inputs == 2 and handler.limits.max_chars == LIMIT_SETTINGS["max_chars"][1]
    with pytest.raises(LimitError, match="MTST_MAX_INPUTS"):
        handler({"inputs": ["a", "b", "c"]})
    assert len(handler({"inputs": ["a", "b"]})) == 2


# -------------------------------------------------------------------------------------------------------- batching
def test_many_texts_run_in_one_sorted_call_and_answer_in_request_order(model_dir, spied):
    limits = ServingLimits(max_inputs=len(TEXTS), max_chars=2_000, max_total_chars=10_000, batch_size=4)
    spied.limits = limits
    answers = spied({"inputs": TEXTS, "parameters": {"return_embedding": True}})
    assert len(spied.pipeline.calls) == 1
    (sent,), kwargs = spied.pipeline.calls[0]
    assert kwargs["batch_size"] == 4 and sorted(sent) == sorted(TEXTS)
    tokens = spied.pipeline.tokenizer(sent, add_special_tokens=False)["input_ids"]
    assert [len(t) for t in tokens] == sorted((len(t) for t in tokens), reverse=True)  # longest first
    assert sent[0] == WORDS * 12

    one_at_a_time = [spied({"inputs": text, "parameters": {"return_embedding": True}}) for text in TEXTS]
    assert_same_answers(answers, one_at_a_time)
    for got, expected in zip(answers, one_at_a_time):
        assert got["embedding"] == pytest.approx(expected["embedding"], abs=1e-5)
    assert {a["sentiment"]["label"] for a in answers} <= set(SENTIMENT_LABELS)
    # a request's own batch_size is used when given
    again = spied({"inputs": TEXTS, "parameters": {"batch_size": 1}})
    assert spied.pipeline.calls[-1][1]["batch_size"] == 1
    assert_same_answers(again, [{k: v for k, v in a.items() if k != "embedding"} for a in one_at_a_time])


@pytest.mark.parametrize("slots", [1, 2])
def test_concurrent_requests_take_turns_at_the_forward_pass(model_dir, slots):
    import threading

    handler = EndpointHandler(model_dir, limits=ServingLimits(forward_concurrency=slots, batch_size=2))
    inner, active, peak, lock = handler.pipeline._forward, [0], [0], threading.Lock()

    def tracked(*args, **kwargs):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.005)  # let other request threads reach the forward pass meanwhile
        try:
            return inner(*args, **kwargs)
        finally:
            with lock:
                active[0] -= 1

    requests = [TEXTS[i::3] for i in range(3)] * 2
    expected = [handler({"inputs": texts}) for texts in requests]
    handler.pipeline._forward = tracked
    answers = [None] * len(requests)

    def client(i):
        answers[i] = handler({"inputs": requests[i]})

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert 1 <= peak[0] <= slots
    for got, want in zip(answers, expected):
        assert_same_answers(got, want)


# ------------------------------------------------------------------------------------------------------------- app
@pytest.fixture(scope="module")
def pipe(model_dir):
    from mtst.cli.predict import load_pipeline

    return load_pipeline(model_dir, device="cpu")


def _registered(demo, api_name="predict"):
    for block_fn in demo.fns.values():
        if block_fn.api_name == api_name:
            return block_fn.fn
    raise AssertionError(f"no function registered as {api_name}")


def test_app_refuses_texts_over_its_limits_with_a_gradio_error(pipe):
    gr = pytest.importorskip("gradio", reason="gradio is not installed (pip install -e '.[demo]')")
    import app

    spy = Spy(pipe)
    demo = app.build_demo(pipe=spy, limits=ServingLimits(max_chars=50, max_total_chars=40), concurrency_limit=3)
    fn = _registered(demo)
    assert len(fn("x" * 40)) == 3  # at the smaller limit
    with pytest.raises(gr.Error) as err:
        fn("x" * 41)
    assert "41 characters in all, over the limit of 40" in err.value.message
    assert "MTST_MAX_TOTAL_CHARS" in err.value.message
    demo = app.build_demo(pipe=spy, limits=ServingLimits(), max_chars=50)  # max_chars (--max_chars) wins
    fn = _registered(demo)
    assert len(fn("x" * 50)) == 3
    calls = len(spy.calls)
    with pytest.raises(gr.Error) as err:
        fn("x" * 51)
    assert "51 characters, over the limit of 50 characters per text (max_chars" in str(err.value)
    assert "MTST_MAX_CHARS" in str(err.value)
    assert len(spy.calls) == calls  # nothing computed
    with pytest.raises(LimitError):
        app.predict(spy, "x" * 51, ServingLimits(max_chars=50))
    with pytest.raises(gr.Error) as err:  # a lone surrogate: a TypeError in the tokenizer before
        fn("Paris \ud800")
    assert "The text is not valid Unicode: character 6 is the lone surrogate" in err.value.message
    assert err.value.title == "Invalid text" and len(spy.calls) == calls
    # a long text's windows run in batches; the answer is the one-window-at-a-time answer
    long_text = WORDS * 12
    batched = app.predict(spy, long_text, ServingLimits(batch_size=4))
    assert spy.calls[-1][1]["batch_size"] == 4
    plain = app.predict(pipe, long_text)
    assert batched[2]["entities"] == plain[2]["entities"] and batched[2]["entities"]
    assert batched[0] == pytest.approx(plain[0], abs=1e-5) and batched[1] == pytest.approx(plain[1], abs=1e-5)


def test_app_limits_and_concurrency_from_environment_and_options(pipe, monkeypatch, capsys, tmp_path):
    pytest.importorskip("gradio", reason="gradio is not installed (pip install -e '.[demo]')")
    import app

    monkeypatch.setenv("MTST_MAX_CHARS", "30")
    monkeypatch.setenv("MTST_CONCURRENCY", "5")
    demo = app.build_demo(pipe=pipe)
    assert demo.mtst_limits.max_chars == 30 and demo.mtst_concurrency_limit == 5
    monkeypatch.delenv("MTST_CONCURRENCY")
    assert app.build_demo(pipe=pipe).mtst_concurrency_limit == app.DEFAULT_CONCURRENCY == 2
    # a bad value stops the app at start-up, with the variable named, before any model is loaded
    for name, value in (("MTST_CONCURRENCY", "two"), ("MTST_MAX_CHARS", "-1")):
        monkeypatch.setenv(name, value)
        assert app.main(["--model", str(tmp_path / "nowhere")]) == 2
        err = capsys.readouterr().err
        assert f"app.py: error: The environment variable {name}" in err and repr(value) in err, err
        monkeypatch.delenv(name)
    assert app.main(["--model", str(tmp_path / "nowhere"), "--concurrency_limit", "0"]) == 2
    assert "concurrency_limit must be a positive integer; got 0" in capsys.readouterr().err
    args = app.parse_args(["--max_chars", "100", "--concurrency_limit", "4"])
    assert (args.max_chars, args.concurrency_limit) == (100, 4)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_app_api_through_gradio_client(pipe, monkeypatch, tmp_path):
    pytest.importorskip("gradio", reason="gradio is not installed (pip install -e '.[demo]')")
    client_module = pytest.importorskip("gradio_client", reason="gradio_client is not installed")
    import app

    settings = {"GRADIO_ANALYTICS_ENABLED": "False", "GRADIO_SSR_MODE": "False", "NO_PROXY": "127.0.0.1"}
    for key, value in settings.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    for key in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(key, raising=False)
    spy = Spy(pipe)
    demo = app.build_demo(pipe=spy, limits=ServingLimits(max_chars=60))
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        client = client_module.Client(
            f"http://127.0.0.1:{port}/", verbose=False, analytics_enabled=False, download_files=False
        )
        topic, sentiment, ner = client.predict("x" * 60, api_name="/predict")
        assert {c["label"] for c in topic["confidences"]} == set(TOPIC_LABELS)
        calls = len(spy.calls)
        start = time.perf_counter()
        with pytest.raises(Exception) as err:  # gradio_client.exceptions.AppError
            client.predict("x" * 61, api_name="/predict")
        assert time.perf_counter() - start < 1.0
        assert "61 characters, over the limit of 60 characters per text" in str(err.value), repr(err.value)
        assert len(spy.calls) == calls
    finally:
        demo.close()


def test_mtst_predict_has_no_serving_limits(model_dir, tmp_path, capsys, monkeypatch):
    from mtst.cli.predict import main

    monkeypatch.setenv("MTST_MAX_CHARS", "10")  # the servers' limits do not apply to local files
    monkeypatch.setenv("MTST_MAX_TOTAL_CHARS", "10")
    path = tmp_path / "long.txt"
    path.write_text("word " * 30_000 + "\n" + "short\n", encoding="utf-8")  # 150,000 characters in one text
    assert main(["-m", model_dir, "-i", str(path)]) == 0
    assert capsys.readouterr().out.count("\n") == 2


def test_app_without_the_checkout_reads_the_limits_from_the_model_repository(model_dir, tmp_path, monkeypatch):
    import shutil
    import sys

    import app

    folder = tmp_path / "repo"
    shutil.copytree(model_dir, folder)
    shutil.copyfile(os.path.join(os.path.dirname(app.__file__), "mtst", "remote", "handler.py"), folder / "handler.py")
    # `from mtst.remote import handler` fails, as in a Space holding only app.py
    import mtst.remote

    monkeypatch.setitem(sys.modules, "mtst.remote.handler", None)
    monkeypatch.delattr(mtst.remote, "handler", raising=False)
    monkeypatch.setenv("MTST_MAX_CHARS", "77")
    limits = app.serving_limits(model=str(folder))
    assert type(limits).__module__ == "mtst_handler" and limits.max_chars == 77
    with pytest.raises(ValueError, match="77 characters per text"):
        limits.check(["x" * 78])
