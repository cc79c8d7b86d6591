"""Build hook: the metadata lives in setup.cfg; this file only makes a built package carry MTST's run-time files.

The model card template, the endpoints handler, the task configs and the sample data stay at the repository root
(their single source, where the flat modules and the docs expect them). `build_py` copies them into the
`mtst_resources` package of every non-editable build (`pip install .`, `pip install git+...`, `python -m build`),
under the same relative paths; `mtst_resources.path(name)` finds them there. An editable install copies nothing: its
modules read the files from the checkout. The list of files is `mtst_resources.RESOURCES`.
"""

import ast
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py as _build_py

ROOT = Path(__file__).resolve().parent
PACKAGE = "mtst_resources"


def resource_patterns() -> tuple[str, ...]:
    """`mtst_resources.RESOURCES`, read without importing the package."""
    tree = ast.parse((ROOT / PACKAGE / "__init__.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "RESOURCES" for t in node.targets):
            return tuple(ast.literal_eval(node.value))
    raise RuntimeError(f"{PACKAGE}/__init__.py defines no RESOURCES")


def resource_files() -> list[str]:
    """Every file the patterns match, relative to the repository root (posix paths); a pattern that matches nothing
    stops the build, so a wheel never silently lacks a file."""
    files = []
    for pattern in resource_patterns():
        matched = sorted(p.relative_to(ROOT).as_posix() for p in ROOT.glob(pattern) if p.is_file())
        if not matched:
            raise RuntimeError(
                f"mtst build: {pattern} matches no file in {ROOT} (is the sdist's MANIFEST.in complete?)"
            )
        files += matched
    return files


class build_py(_build_py):
    """`build_py` that also copies the run-time files into `mtst_resources` (not in editable mode)."""

    def _resource_targets(self) -> list[tuple[str, str]]:
        return [(str(ROOT / name), str(Path(self.build_lib, PACKAGE, name))) for name in resource_files()]

    def run(self):
        super().run()
        if self.editable_mode:
            return
        for source, target in self._resource_targets():
            self.mkpath(str(Path(target).parent))
            self.copy_file(source, target, preserve_mode=False)

    def get_outputs(self, include_bytecode=True):
        outputs = super().get_outputs(include_bytecode)
        if self.editable_mode:
            return outputs
        return outputs + [target for _, target in self._resource_targets()]


if __name__ == "__main__":  # setuptools runs this file as __main__; the tests import it for resource_files()
    setup(cmdclass={"build_py": build_py})
