"""Labels and tags: tag schemes of token tasks (IOB1/IOB2, repairing invalid IOB2 sequences), the order of inferred
labels, the continuation label of a sub-token, and which label values count as integers."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["TAG_SCHEMES", "continuation_ids", "iob1_to_iob2", "is_int", "repair_iob2", "sort_labels", "split_tag"]


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# "bio" is accepted as a name for iob2, "io" as a name for plain tags ("none").
TAG_SCHEMES = ("iob2", "bio", "iob1", "none", "io")


def split_tag(tag: Any) -> tuple[str | None, str | None]:
    """("O", None) for O, ("B"/"I", type) for B-/I- tags, (None, None) for anything else."""
    if tag == "O":
        return "O", None
    if isinstance(tag, str) and len(tag) > 2 and tag[1] == "-" and tag[0] in "BI":
        return tag[0], tag[2:]
    return None, None


def repair_iob2(tags: Sequence[str]) -> tuple[list[str], int]:
    """Turn every ``I-X`` that does not continue an ``X`` entity (after ``O``, at the start, after ``B-Y``/``I-Y``)
    into ``B-X``. This is also exactly the IOB1 -> IOB2 conversion. Returns the new tags and how many changed."""
    out: list[str] = []
    changed = 0
    prev_type = None
    for tag in tags:
        prefix, typ = split_tag(tag)
        if prefix == "I" and prev_type != typ:
            tag = "B-" + typ
            changed += 1
        out.append(tag)
        prev_type = typ
    return out, changed


def iob1_to_iob2(tags: Sequence[str]) -> list[str]:
    """IOB1 (``I-`` starts an entity, ``B-`` only between two adjacent entities of a type) -> IOB2 (BIO)."""
    return repair_iob2(tags)[0]


def sort_labels(values: Iterable[Any], iob: bool = False) -> list[str]:
    """Label order used when labels are inferred: sorted; for IOB tags ``O`` first, then ``B-X``, ``I-X`` for each
    entity type X in sorted order (both are listed for every type seen)."""
    values = [v for v in values if v is not None and v != ""]
    if iob:
        types = sorted({split_tag(v)[1] for v in values if split_tag(v)[0] in ("B", "I")})
        return ["O"] + [f"{p}-{t}" for t in types for p in ("B", "I")]
    if values and all(is_int(v) for v in values):
        return [str(v) for v in sorted(set(values))]
    names = sorted({str(v) for v in values})
    if "O" in names:
        names.remove("O")
        names.insert(0, "O")
    return names


def continuation_ids(labels: list[str]) -> list[int]:
    """For label_all_tokens: the id a continuation sub-token gets for each word label (B-X -> I-X when it exists)."""
    index = {name: i for i, name in enumerate(labels)}
    out = []
    for i, name in enumerate(labels):
        prefix, typ = split_tag(name)
        out.append(index.get(f"I-{typ}", i) if prefix == "B" else i)
    return out
