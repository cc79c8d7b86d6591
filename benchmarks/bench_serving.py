#!/usr/bin/env python
"""Benchmark 6: serving under load, the endpoints handler behind an HTTP server with 1, 4 and 16 concurrent clients.

The server is a subprocess (this script with `--serve`): `handler.EndpointHandler` behind the standard library's
`ThreadingHTTPServer` on 127.0.0.1 (one thread per request, as a web server runs the handler), answering
`POST /` like an Inference Endpoint (200 with the JSON answer; 400 `{"error": ...}` for a `ValueError`). It reports
its own memory (`VmHWM`, the peak resident set, reset before each level through /proc/self/clear_refs where Linux
allows) and stops by itself when this script exits or after `--server_timeout_s`.

The requests: CoNLL-2003 test sentences and AG News test texts (../shared/data), shuffled with a fixed seed and cut
into requests of `--texts_per_request` texts. Each level sends every request once, from `clients` threads taking
the next request from a shared list, so every level does the same work; level 1 (one client) gives the reference
answers, and the answers at 4 and 16 clients are compared with them. Per level: throughput (texts answered per
second of wall time), latency p50 / p95 / max per request, errors, the server's peak RSS. Then over-limit requests
(one text over `MTST_MAX_CHARS`, too many texts, too many characters in all) are sent to the idle server and again
while 16 clients keep it busy: each must be answered with status 400 at once; their latencies are reported.

The model: the default training run's output (`outputs/mtst-default`) when present, else a model built here without
training: `MTSTModel.from_backbone` on all-MiniLM-L6-v2 with the default task config's heads (topic, sentiment, ner),
untrained (the speed is the same; the answers are not meaningful). The results say which.

    python benchmarks/bench_serving.py                   # full run: 3 levels x 64 requests x 16 texts
    python benchmarks/bench_serving.py --quick           # smoke test: few requests, results in a temp folder
    python benchmarks/bench_serving.py --model outputs/mtst-default --levels 1 4 16 --requests 64

Every loop is bounded in count (`--requests` per level) and time (`--level_timeout_s`, `--request_timeout_s`).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as bc  # noqa: E402

DEFAULT_MODEL = os.path.join(bc.REPO_ROOT, "outputs", "mtst-default")
HOST = "127.0.0.1"


# --------------------------------------------------------------------------------------------------------- server
def _memory_mb() -> dict:
    """The current and peak resident memory of this process (MB), from /proc/self/status."""
    out = {}
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    out[line.split(":")[0]] = int(line.split()[1]) / 1024
    except OSError:
        import resource

        out["VmHWM"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"rss_mb": out.get("VmRSS"), "peak_rss_mb": out.get("VmHWM")}


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux: writing 5 to /proc/self/clear_refs); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


def serve(model: str, port_file: str, timeout_s: float) -> int:
    """The server process: load the handler, listen on 127.0.0.1 (a free port, written to `port_file`), answer."""
    bc.quiet_transformers()
    from mtst.remote.handler import EndpointHandler

    handler = EndpointHandler(model)
    parent = os.getppid()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def _send(self, status: int, payload) -> None:
            body = json.dumps(payload).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):  # noqa: N802 - http.server's naming
            if self.path == "/stats":
                self._send(200, {**_memory_mb(), "limits": vars(handler.limits)})
            else:
                self._send(404, {"error": f"unknown path {self.path}"})

        def do_POST(self):  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            if self.path == "/reset_peak":
                self._send(200, {"reset": _reset_peak(), **_memory_mb()})
                return
            if self.path == "/shutdown":
                self._send(200, {"bye": True})
                threading.Thread(target=server.shutdown, daemon=True).start()
                return
            try:
                data = json.loads(raw)
            except ValueError as e:
                self._send(400, {"error": f"the body is not JSON: {e}"})
                return
            try:
                answer = handler(data)
            except ValueError as e:  # what Inference Endpoints answer with status 400
                self._send(400, {"error": str(e)})
                return
            except Exception as e:  # noqa: BLE001 - a server error is a result of the benchmark, not a crash
                self._send(500, {"error": f"{type(e).__name__}: {e}"})
                return
            self._send(200, answer)

    server = ThreadingHTTPServer((HOST, 0), Handler)
    server.daemon_threads = True
    deadline = time.monotonic() + timeout_s

    def watchdog():  # stop when the benchmark is gone or the time is up
        while time.monotonic() < deadline and os.getppid() == parent:
            time.sleep(1)
        server.shutdown()

    threading.Thread(target=watchdog, daemon=True).start()
    with open(port_file + ".tmp", "w", encoding="utf-8") as f:
        f.write(str(server.server_address[1]))
    os.replace(port_file + ".tmp", port_file)
    server.serve_forever(poll_interval=0.2)
    server.server_close()
    return 0


# --------------------------------------------------------------------------------------------------------- client
def post(port: int, path: str, payload, timeout: float) -> tuple[int, object, float]:
    """(status, decoded JSON answer, seconds) for one request; status 0 for a connection error or a timeout."""
    body = json.dumps(payload).encode("utf-8")
    start = time.perf_counter()
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        connection.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        data = response.read()
        status = response.status
        try:
            answer = json.loads(data)
        except ValueError:
            answer = {"error": data[:200].decode("utf-8", "replace")}
    except (OSError, http.client.HTTPException) as e:
        status, answer = 0, {"error": f"{type(e).__name__}: {e}"}
    finally:
        connection.close()
    return status, answer, time.perf_counter() - start


def get(port: int, path: str) -> dict:
    connection = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        connection.request("GET", path)
        return json.loads(connection.getresponse().read())
    finally:
        connection.close()


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0-100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def run_level(port: int, requests: list[list[str]], clients: int, level_timeout_s: float, request_timeout_s: float):
    """Send every request once from `clients` threads; returns the per-request results and the wall time."""
    results: list[dict | None] = [None] * len(requests)
    next_index = iter(range(len(requests)))
    lock = threading.Lock()
    deadline = time.monotonic() + level_timeout_s

    def client():
        while time.monotonic() < deadline:
            with lock:
                index = next(next_index, None)
            if index is None:
                return
            remaining = max(1.0, min(request_timeout_s, deadline - time.monotonic()))
            status, answer, seconds = post(port, "/", {"inputs": requests[index]}, remaining)
            results[index] = {"status": status, "answer": answer, "latency_s": seconds}

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()) + request_timeout_s + 5)
    return results, time.perf_counter() - start


def compare(answers: list, reference: list) -> dict:
    """Exactly identical (JSON equality), and else: same labels and entity spans, and the largest score difference."""
    identical = answers == reference
    same_labels, max_diff = True, 0.0
    for got, expected in zip(answers, reference):
        if got is None or expected is None:
            same_labels = False
            continue
        for a, b in zip(got, expected):
            for task in b:
                if isinstance(b[task], dict):
                    same_labels &= a[task]["label"] == b[task]["label"]
                    max_diff = max(max_diff, abs(a[task]["score"] - b[task]["score"]))
                else:
                    same_labels &= [(e["entity_group"], e["start"], e["end"]) for e in a[task]] == [
                        (e["entity_group"], e["start"], e["end"]) for e in b[task]
                    ]
                    max_diff = max([max_diff] + [abs(x["score"] - y["score"]) for x, y in zip(a[task], b[task])])
    return {"identical": identical, "same_labels_and_spans": same_labels, "max_score_diff": max_diff}


def over_limit_requests(limits: dict) -> dict[str, dict]:
    return {
        "one text over max_chars": {"inputs": "a" * (limits["max_chars"] + 1)},
        "max_inputs + 1 texts": {"inputs": ["a short text"] * (limits["max_inputs"] + 1)},
        "over max_total_chars": {
            "inputs": ["b" * limits["max_chars"]] * (limits["max_total_chars"] // limits["max_chars"] + 1)
        },
    }


def probe_over_limit(port: int, limits: dict, rounds: int, pause_s: float, timeout_s: float) -> list[dict]:
    out = []
    for r in range(rounds):
        for kind, payload in over_limit_requests(limits).items():
            status, answer, seconds = post(port, "/", payload, timeout_s)
            message = answer.get("error", "") if isinstance(answer, dict) else ""
            out.append({"kind": kind, "round": r, "status": status, "latency_s": seconds, "message": message})
        time.sleep(pause_s)
    return out


# ---------------------------------------------------------------------------------------------------------- model
def prepare_model(requested: str | None, folder: str) -> tuple[str, str]:
    """(model folder, description): the given or default-run model, else an untrained-heads model built here."""
    if requested:
        return requested, f"given: {requested}"
    if os.path.isfile(os.path.join(DEFAULT_MODEL, "config.json")):
        return DEFAULT_MODEL, "the default training run's model (outputs/mtst-default)"
    from transformers import AutoTokenizer

    from mtst.cli.train import DEFAULT_TASKS_CONFIG, ModelArguments, build_model
    from mtst.data.tasks import load_task_specs

    specs = load_task_specs(os.path.join(bc.REPO_ROOT, DEFAULT_TASKS_CONFIG))
    model = build_model(ModelArguments(model_name_or_path=bc.backbone_path()), specs).eval()
    path = os.path.join(folder, "model")
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(bc.backbone_path()).save_pretrained(path)
    return path, (
        "built here without training: MTSTModel.from_backbone(all-MiniLM-L6-v2) with the heads of "
        f"{DEFAULT_TASKS_CONFIG} ({', '.join(s.name for s in specs)}), untrained (outputs/mtst-default is absent)"
    )


def make_requests(n_requests: int, per_request: int, seed: int) -> tuple[list[list[str]], dict]:
    n_texts = n_requests * per_request
    texts = bc.real_sentences(n_texts // 2, n_texts - n_texts // 2)
    random.Random(seed).shuffle(texts)
    lengths = sorted(len(t) for t in texts)
    stats = {
        "texts": len(texts),
        "chars_mean": sum(lengths) / len(lengths),
        "chars_median": lengths[len(lengths) // 2],
        "chars_max": lengths[-1],
        "sources": f"{n_texts // 2} CoNLL-2003 test sentences + {n_texts - n_texts // 2} AG News test texts",
    }
    return [texts[i : i + per_request] for i in range(0, n_texts, per_request)], stats


# ----------------------------------------------------------------------------------------------------------- main
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model folder (default: outputs/mtst-default, else built)")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16], help="concurrent clients per level")
    parser.add_argument("--requests", type=int, default=64, help="requests per level (each level sends the same)")
    parser.add_argument("--texts_per_request", type=int, default=16)
    parser.add_argument("--level_timeout_s", type=float, default=300, help="stop sending after this per level")
    parser.add_argument("--request_timeout_s", type=float, default=120)
    parser.add_argument("--server_timeout_s", type=float, default=1800, help="the server stops itself after this")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="smoke test: 8 requests of 8 texts, levels 1 4 16")
    parser.add_argument("--results_dir", default=None, help="default: benchmarks/results (--quick: a temp folder)")
    parser.add_argument("--serve", metavar="MODEL", help=argparse.SUPPRESS)  # internal: run the server
    parser.add_argument("--port_file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        return serve(args.serve, args.port_file, args.server_timeout_s)
    if args.quick:
        args.requests, args.texts_per_request = min(args.requests, 8), min(args.texts_per_request, 8)
        if args.results_dir is None and not os.environ.get("MTST_BENCH_RESULTS"):
            args.results_dir = os.path.join(tempfile.gettempdir(), "mtst-bench-quick-results")
    if args.results_dir:
        bc.RESULTS_DIR = os.path.abspath(args.results_dir)
    bc.require_data("conll_test", "ag_news")
    bc.quiet_transformers()
    requests, text_stats = make_requests(args.requests, args.texts_per_request, args.seed)

    with tempfile.TemporaryDirectory(prefix="mtst-bench-serving-") as tmp:
        model, model_note = prepare_model(args.model, tmp)
        print(f"model: {model_note}", flush=True)
        port_file = os.path.join(tmp, "port")
        log_path = os.path.join(tmp, "server.log")
        paths = [bc.REPO_ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}  # the server imports this checkout's handler.py
        command = [sys.executable, os.path.abspath(__file__), "--serve", model, "--port_file", port_file]
        command += ["--server_timeout_s", str(args.server_timeout_s)]
        with open(log_path, "wb") as log:
            server = subprocess.Popen(command, cwd=bc.REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            payload = run_benchmark(args, server, port_file, log_path, requests)
        finally:
            if server.poll() is None:
                server.terminate()
                try:
                    server.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    server.kill()
                    server.wait()
    payload = {"model": model_note, "texts": text_stats, **payload}
    bc.write_results("serving", payload, markdown(payload))
    return 0 if payload["targets"]["all_met"] else 1


def run_benchmark(args, server, port_file: str, log_path: str, requests: list[list[str]]) -> dict:
    start = time.monotonic()
    while not os.path.exists(port_file):
        if server.poll() is not None or time.monotonic() - start > 600:
            with open(log_path, encoding="utf-8", errors="replace") as f:
                sys.exit(f"The server did not start (exit code {server.poll()}):\n{f.read()[-3000:]}")
        time.sleep(0.2)
    with open(port_file, encoding="utf-8") as f:
        port = int(f.read())
    stats = get(port, "/stats")
    limits = stats["limits"]
    print(f"server on {HOST}:{port}, loaded in {time.monotonic() - start:.1f} s, RSS {stats['rss_mb']:.0f} MB")
    print(f"limits: {limits}", flush=True)
    status, _, _ = post(port, "/", {"inputs": requests[0]}, args.request_timeout_s)  # warm-up, not counted
    if status != 200:
        sys.exit(f"The warm-up request failed with status {status}.")

    idle_probes = probe_over_limit(port, limits, rounds=3, pause_s=0.05, timeout_s=30)
    levels, reference = [], None
    busy_probes: list[dict] = []
    peak_reset = True
    for clients in args.levels:
        _, reset, _ = post(port, "/reset_peak", {}, 30)
        peak_reset &= bool(isinstance(reset, dict) and reset.get("reset"))
        probe_thread = None
        if clients == max(args.levels):  # over-limit requests while the server is busy with this level

            def busy():
                time.sleep(0.5)
                busy_probes.extend(probe_over_limit(port, limits, rounds=3, pause_s=0.5, timeout_s=30))

            probe_thread = threading.Thread(target=busy, daemon=True)
            probe_thread.start()
        results, wall = run_level(port, requests, clients, args.level_timeout_s, args.request_timeout_s)
        if probe_thread:
            probe_thread.join(timeout=60)
        memory = get(port, "/stats")
        ok = [r for r in results if r is not None and r["status"] == 200]
        latencies = [r["latency_s"] for r in results if r is not None]
        answers = [r["answer"] if r is not None and r["status"] == 200 else None for r in results]
        if reference is None:
            reference = answers
        level = {
            "clients": clients,
            "requests": len(requests),
            "sent": sum(r is not None for r in results),
            "ok": len(ok),
            "errors": len(requests) - len(ok),
            "error_examples": sorted({str(r["answer"])[:200] for r in results if r and r["status"] != 200})[:3],
            "texts_ok": sum(len(requests[i]) for i, r in enumerate(results) if r and r["status"] == 200),
            "wall_s": wall,
            "latency_p50_s": percentile(latencies, 50),
            "latency_p95_s": percentile(latencies, 95),
            "latency_max_s": max(latencies) if latencies else None,
            "server_peak_rss_mb": memory["peak_rss_mb"],
            "server_rss_after_mb": memory["rss_mb"],
            **compare(answers, reference),
        }
        level["throughput_texts_s"] = level["texts_ok"] / wall if wall > 0 else None
        levels.append(level)
        print(
            f"{clients:>3} clients: {level['throughput_texts_s']:.1f} texts/s, p50 {level['latency_p50_s']:.2f} s, "
            f"p95 {level['latency_p95_s']:.2f} s, max {level['latency_max_s']:.2f} s, errors {level['errors']}, "
            f"peak RSS {level['server_peak_rss_mb']:.0f} MB, identical to 1 client: {level['identical']}",
            flush=True,
        )
    post(port, "/shutdown", {}, 10)

    probes = {"idle": idle_probes, "busy": busy_probes}
    over = {}
    for when, items in probes.items():
        over[when] = {
            "count": len(items),
            "all_400": bool(items) and all(p["status"] == 400 for p in items),
            "latency_max_s": max((p["latency_s"] for p in items), default=None),
            "latency_p50_s": percentile([p["latency_s"] for p in items], 50),
            "messages": sorted({p["message"] for p in items}),
        }
    top, one = levels[-1], levels[0]
    speedup = (top["throughput_texts_s"] or 0) / one["throughput_texts_s"] if one["throughput_texts_s"] else None
    targets = {
        "errors_at_top_level": {"value": top["errors"], "target": 0, "met": top["errors"] == 0},
        "identical_to_single_client": {"value": top["identical"], "met": bool(top["identical"])},
        "throughput_top_vs_one_client": {
            "value": speedup,
            "target": ">= 1.0",
        },
        "over_limit_answered_400": {"value": over["idle"]["all_400"] and over["busy"]["all_400"]},
        "over_limit_latency_max_s": {
            "value": max(v["latency_max_s"] or 0 for v in over.values()),
            "target": "< 1.0",
        },
    }
    targets["throughput_top_vs_one_client"]["met"] = (targets["throughput_top_vs_one_client"]["value"] or 0) >= 1.0
    targets["over_limit_answered_400"]["met"] = targets["over_limit_answered_400"]["value"]
    targets["over_limit_latency_max_s"]["met"] = targets["over_limit_latency_max_s"]["value"] < 1.0
    targets["all_met"] = all(t["met"] for t in targets.values() if isinstance(t, dict))
    return {
        "settings": {
            "levels": args.levels,
            "requests_per_level": len(requests),
            "texts_per_request": args.texts_per_request,
            "seed": args.seed,
            "quick": args.quick,
            "server": "handler.EndpointHandler behind http.server.ThreadingHTTPServer on 127.0.0.1, one subprocess",
            "limits": limits,
            "peak_rss_reset_per_level": peak_reset,  # False: each level's peak includes the earlier levels
        },
        "levels": levels,
        "over_limit": over,
        "targets": targets,
    }


def markdown(payload: dict) -> str:
    rows = [
        (
            lv["clients"],
            f"{lv['ok']}/{lv['requests']}",
            lv["errors"],
            lv["throughput_texts_s"],
            lv["latency_p50_s"],
            lv["latency_p95_s"],
            lv["latency_max_s"],
            lv["server_peak_rss_mb"],
            lv["identical"],
        )
        for lv in payload["levels"]
    ]
    table = bc.markdown_table(
        [
            "clients",
            "requests ok",
            "errors",
            "texts/s",
            "p50 latency (s)",
            "p95 latency (s)",
            "max latency (s)",
            "server peak RSS (MB)",
            "answers identical to 1 client",
        ],
        rows,
    )
    over_rows = [
        (when, v["count"], v["all_400"], v["latency_p50_s"], v["latency_max_s"])
        for when, v in payload["over_limit"].items()
    ]
    over = bc.markdown_table(["over-limit requests", "sent", "all answered 400", "p50 (s)", "max (s)"], over_rows)
    targets = bc.markdown_table(
        ["target", "value", "wanted", "met"],
        [
            (name, t["value"], t.get("target", ""), t["met"])
            for name, t in payload["targets"].items()
            if isinstance(t, dict)
        ],
    )
    s = payload["settings"]
    t = payload["texts"]
    return (
        "# MTST benchmark 6: serving under load\n\n"
        f"{s['server']}; {s['requests_per_level']} requests of {s['texts_per_request']} texts per level, each level "
        f"the same requests ({t['sources']}; {t['chars_mean']:.0f} characters on average, median "
        f"{t['chars_median']}, longest {t['chars_max']}). Model: {payload['model']}. Limits: {s['limits']}."
        f"{' **Quick run (smoke test): not a measurement.**' if s['quick'] else ''}\n\n"
        + table
        + "\n\nOver-limit requests (one text over max_chars, max_inputs + 1 texts, over max_total_chars), on the idle "
        "server and while the largest level runs:\n\n" + over + "\n\n" + targets
    )


if __name__ == "__main__":
    sys.exit(main())
