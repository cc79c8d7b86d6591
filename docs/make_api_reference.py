"""Write docs/API.md, the reference of MTST's public API: every name `mtst.__all__` exports, with its signature and
docstring, in the order `mtst/__init__.py` lists them. `python docs/make_api_reference.py` rewrites the file;
`--check` exits 1 when it is out of date (tests/test_docs.py runs that)."""

from __future__ import annotations

import argparse
import inspect
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.path.join(ROOT, "docs", "API.md")
HEADER = """# MTST API reference

The public API is what `import mtst` names (`mtst.__all__`); each name is imported on first use, so `import mtst`
loads neither torch nor transformers. Anything else in the package is internal and may change. This page is
generated from the docstrings by `python docs/make_api_reference.py` (a test checks that it is up to date).

"""


def signature(obj) -> str:
    target = obj.__init__ if inspect.isclass(obj) else obj
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return ""
    params = [p for name, p in sig.parameters.items() if name != "self"]
    text = str(sig.replace(parameters=params, return_annotation=inspect.Signature.empty))
    return text if len(text) <= 400 else "(...)"


def render() -> str:
    sys.path.insert(0, ROOT)
    import mtst

    groups = {}
    for name in mtst.__all__:
        if name == "__version__":
            continue
        module = mtst._EXPORTS[name]
        groups.setdefault(module, []).append(name)
    parts = [HEADER, f"`mtst.__version__`: the version of the package ({mtst.__version__} here).\n"]
    for module, names in groups.items():
        parts.append(f"\n## `{module}`\n")
        for name in names:
            obj = getattr(mtst, name)
            if inspect.isclass(obj) or inspect.isfunction(obj):
                kind = "class" if inspect.isclass(obj) else "function"
                doc = inspect.cleandoc(obj.__doc__ or "(no docstring)")
                parts.append(f"\n### `mtst.{name}` ({kind})\n\n```python\n{name}{signature(obj)}\n```\n\n{doc}\n")
            else:
                parts.append(f"\n### `mtst.{name}` (constant)\n\n`{obj!r}`\n")
    return "".join(parts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when docs/API.md is not up to date")
    args = parser.parse_args()
    text = render()
    if args.check:
        current = open(TARGET, encoding="utf-8").read() if os.path.isfile(TARGET) else ""
        if current != text:
            print("docs/API.md is out of date: run python docs/make_api_reference.py", file=sys.stderr)
            return 1
        return 0
    with open(TARGET, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
