"""The walkthrough notebook is committed without outputs and runs offline from the repository root or notebooks/.
Executing it is `make notebook` (CI runs it after the tests)."""

import json
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "notebooks", "walkthrough.ipynb")


def test_walkthrough_has_no_outputs_and_covers_the_steps():
    with open(NOTEBOOK, encoding="utf-8") as f:
        notebook = json.load(f)
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert code and all(cell["outputs"] == [] and cell["execution_count"] is None for cell in code)
    source = "\n".join("".join(cell["source"]) for cell in code)
    for needle in ("run_multitask.main", "max_steps", "pipeline(model=", "imshow", "--freeze", "export_for_hub"):
        assert needle in source, needle
    for line in ("make notebook",):
        assert line in open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8").read()
