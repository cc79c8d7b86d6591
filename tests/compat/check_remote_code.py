"""Compatibility check: does a model saved by today's MTST load, and give the same outputs, on other transformers?

Run by `.ci/compat.sh` (so by `.ci/run`), or by hand: `python tests/compat/check_remote_code.py [--versions ...]`.

1. Saves a small model (tiny random BERT backbone; a sentence, a token, a multi-label and a regression task; a
   trained embedding adapter; the MiniLM tokenizer) with the installed stack, and its reference logits.
2. For each transformers version: a throwaway virtual environment that holds only what `pip install
   transformers==X "huggingface-hub<2"` (`<1` for 4.x) gives beside the installed torch release
   (`torch==<installed>`, the CPU wheel on this disk), loads the model through
   `AutoModel.from_pretrained(..., trust_remote_code=True)` (and the two `AutoModelFor*` per-task views) and through
   the multitask pipeline (`pipeline(model=..., trust_remote_code=True)`), and compares every logit with the
   reference (max abs diff <= 1e-5). The installed stack is checked the same way, without a venv.
3. On the training minimum declared in setup.cfg (MTST's install_requires, with transformers, datasets, accelerate,
   huggingface-hub and sentence-transformers pinned to their `>=` versions): a training smoke test (run_multitask.py
   for a few steps on a tiny backbone and tiny task files), then the trained model loaded through AutoModel and
   sentence-transformers.

Why the venvs do not share the system site-packages: a package that the tested release does not require, but that
the installed stack has, is imported by that release all the same when it is importable. transformers 5.25 requires
`kernels` 0.19; transformers 5.0.0 to 5.12.1 import any installed `kernels` in `integrations/hub_kernels.py` and
build `LayerRepository(...)` without a revision, which kernels 0.15 and newer refuse ("Either a revision or a version
must be specified."). Measured: 5.0.0 and 5.10.4 import with kernels 0.10.5 to 0.14.1 and fail from 0.15.2 on; 5.13.0
is the first release that imports beside kernels 0.19.1 (hence the `transformers>=5.13` training minimum in
setup.cfg). A plain `pip install transformers==X` of those releases installs no `kernels` at all, and that is what
each venv gets. The table prints every package version that decides the result (`kernels -` where there is none).

Prints a table (environment, package versions, max logit difference, pass/fail) and exits 1 on any failure.
Everything (venvs, pip cache, the Hugging Face module cache) lives in one temporary folder, removed at the end unless
`--keep`.
"""

from __future__ import annotations

import argparse
import configparser
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TOLERANCE = 1e-5
# The oldest 4.x we support, the first 5.x, one in the middle; the declared training minimum (setup.cfg) is added
# to these, and the installed stack is checked too.
DEFAULT_VERSIONS = ("4.57.0", "5.0.0", "5.10.4")
TRAINING_PACKAGES = ("transformers", "datasets", "accelerate", "huggingface-hub", "sentence-transformers")
# The distributions whose versions the table prints for every environment ("-": not installed there).
REPORTED_PACKAGES = ("torch", "huggingface-hub", "tokenizers", "safetensors", "kernels", *TRAINING_PACKAGES[1:3])
REPORTED_PACKAGES += ("sentence-transformers",)
SENTENCES = [
    "Apple is opening a new office in Paris.",
    "The match ended in a draw.",
    "Shares of Siemens fell sharply on Monday after the results.",
]
TOPIC_LABELS = ["World", "Sports", "Business", "Sci/Tech"]
EMOTIONS = ["anger", "joy", "fear"]
# the per-task view each task is loaded through (the standard text- and token-classification pipelines' classes)
VIEWS = {"topic": "sequence", "ner": "token", "emotions": "sequence", "rating": "sequence"}
NER_LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]


def child_env(work: str) -> dict:
    """Offline, quiet, single-threaded, and every cache inside the work folder."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HF_MODULES_CACHE", "TRANSFORMERS_CACHE")}
    env.update(
        HF_HUB_OFFLINE="1",
        HF_HOME=os.path.join(work, "hf-home"),
        PIP_CACHE_DIR=os.path.join(work, "pip-cache"),
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        TOKENIZERS_PARALLELISM="false",
        OMP_NUM_THREADS="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        TRANSFORMERS_VERBOSITY="error",
        TRANSFORMERS_NO_ADVISORY_WARNINGS="1",
        PYTHONWARNINGS="ignore",
    )
    return env


def install_requires() -> list[str]:
    """The requirement lines of setup.cfg's install_requires."""
    parser = configparser.ConfigParser()
    parser.read(os.path.join(ROOT, "setup.cfg"))
    return [line.strip() for line in parser["options"]["install_requires"].splitlines() if line.strip()]


def requirement_name(line: str) -> str:
    return re.match(r"\s*([A-Za-z0-9_.-]+)", line).group(1).lower().replace("_", "-")


def declared_minimums() -> dict[str, str]:
    """{package: version} from the `package>=version` lines of setup.cfg's install_requires."""
    found = {}
    for line in install_requires():
        match = re.match(r"\s*([A-Za-z0-9_.-]+)\s*>=\s*([0-9][0-9.]*)", line)
        if match:
            found[requirement_name(line)] = match.group(2)
    missing = [name for name in TRAINING_PACKAGES if name not in found]
    if missing:
        sys.exit(f"setup.cfg declares no `>=` minimum for {', '.join(missing)}; the training check needs one each.")
    return {name: found[name] for name in TRAINING_PACKAGES}


def training_requirements(minimums: dict[str, str]) -> list[str]:
    """MTST's install_requires with the training packages pinned to their declared minimums (torch is pinned to the
    installed release by `pip_install`)."""
    pinned = [f"{name}=={version}" for name, version in minimums.items()]
    others = [line for line in install_requires() if requirement_name(line) not in (*minimums, "torch")]
    return pinned + others


def installed_versions() -> dict[str, str]:
    """{distribution: version} of REPORTED_PACKAGES in this interpreter, "-" for those it does not have."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in REPORTED_PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "-"
    return found


# ---------------------------------------------------------------------------------------------------------------------
# Inside a venv (or the installed stack): load the saved model and write what it computes.
def child_load(model_dir: str, out_path: str) -> None:
    import torch
    import transformers
    from transformers import AutoModel, pipeline

    with open(os.path.join(model_dir, "..", "reference.json"), encoding="utf-8") as f:
        ref = json.load(f)
    result = {
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "packages": installed_versions(),
    }
    model = AutoModel.from_pretrained(model_dir, trust_remote_code=True).eval()
    assert type(model).__module__.startswith("transformers_modules"), f"not remote code: {type(model).__module__}"
    batch = {k: torch.tensor(v) for k, v in ref["batch"].items()}
    with torch.no_grad():
        out = model(**batch)
    result["automodel"] = {name: logits.tolist() for name, logits in out.task_logits.items()}
    result["automodel"]["embedding"] = out.sentence_embedding.tolist()
    # the per-task views that the standard text- and token-classification pipelines load
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    for name, auto_class in VIEWS.items():
        auto_class = AutoModelForTokenClassification if auto_class == "token" else AutoModelForSequenceClassification
        view = auto_class.from_pretrained(model_dir, trust_remote_code=True, task=name).eval()
        with torch.no_grad():
            result["automodel"][f"view:{name}"] = view(**batch).logits.tolist()

    pipe = pipeline(model=model_dir, trust_remote_code=True)
    assert type(pipe).__name__ == "MultiTaskPipeline", type(pipe).__name__
    windows = {}
    for i, text in enumerate(SENTENCES):
        for w, inputs in enumerate(pipe.preprocess(text)):
            out = pipe.forward(inputs)
            windows[f"{i}.{w}.input_ids"] = inputs["input_ids"][0].tolist()
            for key, value in out.items():
                if key.startswith("logits::"):
                    windows[f"{i}.{w}.{key[8:]}"] = value[0].tolist()
    result["windows"] = windows
    result["answers"] = pipe(SENTENCES, return_all_scores=True, return_embedding=True)
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(result, f)


def child_train(tiny_dir: str, out_dir: str) -> None:
    """run_multitask.py for a few steps on the tiny backbone, then the result loaded back as users load it."""
    import datasets
    import torch
    import transformers
    from transformers import AutoModel, AutoTokenizer

    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from reliability_helpers import cli_args

    tiny = {"backbone": os.path.join(tiny_dir, "backbone"), "tasks": os.path.join(tiny_dir, "data", "tasks.json")}
    args = cli_args(tiny, out_dir, "--do_train", "--do_eval", "--max_steps", "6", "--eval_strategy", "no")
    args += ["--save_strategy", "no", "--logging_steps", "2"]
    sys.path.insert(0, ROOT)
    from mtst.cli import train as run_multitask

    code = run_multitask.main(args)
    if code != 0:
        sys.exit(f"run_multitask.py exited {code}")
    results = json.load(open(os.path.join(out_dir, "all_results.json"), encoding="utf-8"))
    for key in ("train_loss", "eval_topic_accuracy", "eval_ner_f1", "eval_average"):
        assert key in results, f"{key} missing from all_results.json: {sorted(results)}"
    model = AutoModel.from_pretrained(out_dir, trust_remote_code=True).eval()
    assert model.config.task_names == ["topic", "ner"], model.config.task_names
    from sentence_transformers import SentenceTransformer

    tokenizer = AutoTokenizer.from_pretrained(out_dir)
    expected = model.encode(SENTENCES, tokenizer=tokenizer)
    got = SentenceTransformer(out_dir, trust_remote_code=True, device="cpu").encode(SENTENCES, convert_to_tensor=True)
    diff = float((got.float().cpu() - expected).abs().max())
    assert diff <= 1e-4, f"sentence-transformers embeddings differ from encode() by {diff}"
    print(
        f"TRAINED transformers {transformers.__version__}, datasets {datasets.__version__}, "
        f"torch {torch.__version__}: "
        f"train_loss {results['train_loss']:.4f}, eval_average {results['eval_average']:.4f}, "
        f"sentence-transformers max diff {diff:.1e}"
    )


# ---------------------------------------------------------------------------------------------------------------------
# In the parent, with the installed stack.
def save_model(work: str) -> str:
    """The model (a sentence, a token, a multi-label and a regression task; a trained embedding adapter) and its
    reference logits, saved with the installed stack."""
    sys.path.insert(0, ROOT)
    os.environ["HF_HOME"] = os.path.join(work, "hf-home")
    import torch
    from transformers import AutoTokenizer

    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from conftest import tiny_encoder_config
    from trainer_helpers import backbone_path

    from mtst.remote.configuration_mtst import MTSTConfig
    from mtst.remote.modeling_mtst import MTSTModel

    torch.manual_seed(0)
    encoder = tiny_encoder_config()
    tasks = {
        "topic": {"type": "sequence_classification", "labels": TOPIC_LABELS},
        "ner": {"type": "token_classification", "labels": NER_LABELS},
        "emotions": {"type": "multi_label_classification", "labels": EMOTIONS, "thresholds": [0.3, 0.6, 0.5]},
        "rating": {"type": "regression", "score_mean": 3.0, "score_std": 1.5},
    }
    model = MTSTModel(MTSTConfig(encoder=encoder, tasks=tasks, embedding_dim=16)).eval()
    with torch.no_grad():
        model.add_embedding_adapter().weight.normal_(0, 0.2)
    model_dir = os.path.join(work, "model")
    model.save_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(backbone_path())
    tokenizer.save_pretrained(model_dir)
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    windows = {}
    with torch.no_grad():
        out = model(**batch)
        for i, text in enumerate(SENTENCES):
            single = tokenizer(text, return_tensors="pt")
            windows[f"{i}.0.input_ids"] = single["input_ids"][0].tolist()
            for name, logits in model(**single).task_logits.items():
                windows[f"{i}.0.{name}"] = logits[0].tolist()
    reference = {
        "batch": {k: v.tolist() for k, v in batch.items()},
        "automodel": {
            **{k: v.tolist() for k, v in out.task_logits.items()},
            "embedding": out.sentence_embedding.tolist(),
        },
        "windows": windows,
    }
    with open(os.path.join(work, "reference.json"), "w", encoding="utf-8") as f:
        json.dump(reference, f)
    return model_dir


def max_diff(a, b) -> float:
    """Max abs difference of two nested lists of numbers; inf when their shapes differ."""
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(a - b)
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return max((max_diff(x, y) for x, y in zip(a, b)), default=0.0)
    return float("inf")


def compare(result: dict, reference: dict, baseline_answers: list | None) -> tuple[float, float, list[str]]:
    """(AutoModel max diff, pipeline max diff, problems) of one environment's result against the reference."""
    problems = []
    expected = {**reference["automodel"], **{f"view:{k}": reference["automodel"][k] for k in VIEWS}}
    auto = max(max_diff(result["automodel"].get(k), v) for k, v in expected.items())
    ref_windows, windows = reference["windows"], result["windows"]
    if set(windows) != set(ref_windows):
        problems.append(f"pipeline windows {sorted(windows)} instead of {sorted(ref_windows)}")
    for key in ref_windows:
        if key.endswith("input_ids") and windows.get(key) != ref_windows[key]:
            problems.append(f"the tokenizer gives other input_ids for sentence {key.split('.')[0]}")
    pipe = max(max_diff(windows.get(k), v) for k, v in ref_windows.items() if not k.endswith("input_ids"))
    # the pipeline's answers: softmax of the reference logits for the scores, the installed stack's answers otherwise
    import numpy as np

    for i, answer in enumerate(result["answers"]):
        logits = np.array(ref_windows[f"{i}.0.topic"])
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        pipe = max(pipe, max_diff([answer["topic"]["scores"][label] for label in TOPIC_LABELS], probs.tolist()))
        if baseline_answers is not None:
            base = baseline_answers[i]
            pipe = max(pipe, max_diff(answer["embedding"], base["embedding"]))
            pipe = max(pipe, abs(answer["rating"]["score"] - base["rating"]["score"]))
            if [e["label"] for e in answer["emotions"]["labels"]] != [e["label"] for e in base["emotions"]["labels"]]:
                problems.append(f"other labels for sentence {i}: {answer['emotions']} vs {base['emotions']}")
            pipe = max(
                pipe, max_diff(list(answer["emotions"]["scores"].values()), list(base["emotions"]["scores"].values()))
            )
            strip = [{k: v for k, v in e.items() if k != "score"} for e in answer["ner"]]
            if strip != [{k: v for k, v in e.items() if k != "score"} for e in base["ner"]]:
                problems.append(f"other entities for sentence {i}: {answer['ner']} vs {base['ner']}")
            else:
                pipe = max(pipe, max_diff([e["score"] for e in answer["ner"]], [e["score"] for e in base["ner"]]))
    if auto > TOLERANCE or pipe > TOLERANCE:
        problems.append(f"logits differ by more than {TOLERANCE}")
    return auto, pipe, problems


def pip_install(venv: str, requirements: list[str], env: dict) -> None:
    """Install `requirements` into the venv (made without pip of its own: this pip installs into it) beside the
    installed torch release, pinned, so that pip takes its CPU wheel from this disk and never a CUDA build. The pip
    cache of the work folder is shared by the venvs."""
    import torch

    pinned = [*requirements, f"torch=={torch.__version__}"]
    python = os.path.join(venv, "bin", "python")
    command = [sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-compile", *pinned]
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    if run.returncode != 0:
        errors = [line for line in run.stderr.splitlines() if "file:///" not in line]
        raise RuntimeError(f"pip install {' '.join(requirements)} failed: {' '.join(errors)[-1500:]}")


def make_venv(work: str, name: str, requirements: list[str], env: dict) -> str:
    venv = os.path.join(work, f"venv-{name}")
    # no --system-site-packages: the venv must not import what the installed stack has and this release does not
    # require (the module docstring says why)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True, env=env)
    pip_install(venv, requirements, env)
    return os.path.join(venv, "bin", "python")


def requirements_for(version: str) -> list[str]:
    hub = "huggingface-hub<1" if version.startswith("4.") else "huggingface-hub<2"
    return [f"transformers=={version}", hub]


def run_child(python: str, mode: str, args: list[str], env: dict, timeout: float = 600):
    return subprocess.run(
        [python, os.path.abspath(__file__), mode, *args],
        env=env,
        cwd=os.path.dirname(args[0]),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def last_lines(text: str, n: int = 6) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip() and "file:///" not in line]
    return " | ".join(lines[-n:])


def run_job(work: str, index: int, requirements: list[str] | None, train: bool, env: dict) -> dict:
    """Build the venv (none for the installed stack), load the saved model there, and train when asked."""
    job = {"setup_s": 0.0, "check_s": 0.0, "error": None, "result": None, "trained": None}
    start = time.time()
    try:
        python = make_venv(work, str(index), requirements, env) if requirements else sys.executable
    except Exception as err:  # a failed install is a failed row, not a crash of the whole check
        job["error"] = str(err)
        return job
    job["setup_s"] = time.time() - start
    start = time.time()
    model_dir, result_path = os.path.join(work, "model"), os.path.join(work, f"result-{index}.json")
    run = run_child(python, "--child-load", [model_dir, result_path], env)
    if run.returncode != 0:
        job["error"] = last_lines(run.stderr)
    else:
        job["result"] = json.load(open(result_path, encoding="utf-8"))
        if train:
            run = run_child(python, "--child-train", [os.path.join(work, "tiny"), os.path.join(work, "trained")], env)
            if run.returncode != 0:
                job["error"] = "training: " + last_lines(run.stderr + run.stdout)
            else:
                job["trained"] = last_lines(run.stdout, 1).replace("TRAINED ", "trained on ")
    job["check_s"] = time.time() - start
    return job


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--versions", nargs="*", default=list(DEFAULT_VERSIONS), help="transformers versions to load")
    parser.add_argument("--no-training", action="store_true", help="skip the training smoke test on the minimums")
    parser.add_argument("--workdir", help="folder for the venvs and caches (default: a new temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--jobs", type=int, default=4, help="environments built and checked at the same time")
    args = parser.parse_args(argv)

    started = time.time()
    work = args.workdir or tempfile.mkdtemp(prefix="mtst-compat-")
    os.makedirs(work, exist_ok=True)
    env = child_env(work)
    minimums = declared_minimums()
    if minimums["transformers"].startswith("4."):
        sys.exit("The training minimum in setup.cfg is a transformers 4.x; the training side needs transformers 5.")
    train_requirements = training_requirements(minimums)
    # the training minimum's venv also runs the loading check, so its transformers needs no venv of its own
    train_version = None if args.no_training else minimums["transformers"]
    jobs = {"installed": (None, False)}
    jobs.update({f"transformers {v}": (requirements_for(v), False) for v in args.versions if v != train_version})
    if train_version:
        pins = ", ".join(f"{name}=={version}" for name, version in minimums.items())
        jobs["training minimum: " + pins] = (train_requirements, True)
    try:
        save_model(work)
        if train_version:
            make_tiny_files(os.path.join(work, "tiny"))
        with open(os.path.join(work, "reference.json"), encoding="utf-8") as f:
            reference = json.load(f)
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            futures = {
                name: pool.submit(run_job, work, i, reqs, train, env)
                for i, (name, (reqs, train)) in enumerate(jobs.items())
            }
            done = {name: future.result() for name, future in futures.items()}
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(work, ignore_errors=True)

    import torch
    import transformers

    installed = done["installed"]["result"]
    baseline = installed["answers"] if installed else None
    rows = []
    for name, job in done.items():
        row = [name, "-", "-", "-", "", f"{job['setup_s']:.0f}", f"{job['check_s']:.0f}"]
        if job["result"]:
            result = job["result"]
            auto, pipe, problems = compare(result, reference, baseline)
            if result["torch"] != torch.__version__:
                problems.append(f"the venv has torch {result['torch']}, not the installed {torch.__version__}")
            row[1] = f"transformers {result['transformers']}, " + ", ".join(
                f"{name} {version}" for name, version in result["packages"].items()
            )
            row[2:4] = f"{auto:.1e}", f"{pipe:.1e}"
            if job["error"]:
                problems.append(job["error"])
            row[4] = "FAIL: " + "; ".join(problems) if problems else "pass"
            if job["trained"] and not problems:
                row[4] += f"; {job['trained']}"
        else:
            row[4] = f"FAIL: {job['error']}"
        rows.append(row)

    print(
        f"\nMTST remote code on other stacks (model saved with transformers {transformers.__version__}, torch "
        f"{torch.__version__}; max abs logit difference allowed: {TOLERANCE})"
    )
    header = ["environment", "package versions", "AutoModel* max|diff|", "pipeline max|diff|", "result"]
    print(" | ".join([*header, "setup s", "check s"]))
    print(" | ".join("---" for _ in range(len(header) + 2)))
    for row in rows:
        print(" | ".join(row))
    failed = [row for row in rows if not row[4].startswith("pass")]
    print(f"\ncompat check took {time.time() - started:.0f} s")
    print(f"compat: {len(rows) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


def make_tiny_files(folder: str) -> None:
    """The training smoke test's tiny random backbone and task files, written with the installed stack."""
    import pathlib

    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from reliability_helpers import make_tiny

    make_tiny(pathlib.Path(folder))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child-load":
        child_load(*sys.argv[2:4])
    elif len(sys.argv) > 1 and sys.argv[1] == "--child-train":
        child_train(*sys.argv[2:4])
    else:
        sys.exit(main())
