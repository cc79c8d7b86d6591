"""The errors of task configs and task data, and how their messages are put together: one paragraph naming the
config or file, the task and every problem found (up to `MAX_LISTED_PROBLEMS`), values echoed in short."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = [
    "MAX_LISTED_PROBLEMS",
    "TaskConfigError",
    "TaskDataError",
    "TaskFileNotFoundError",
    "one_line",
    "paragraph",
    "short",
]

MAX_LISTED_PROBLEMS = 20


class TaskConfigError(ValueError):
    """A task config is invalid: unknown key, bad value, duplicate task name, unknown task type..."""


class TaskDataError(ValueError):
    """A task's data is invalid: unreadable file, missing column, label outside the label set..."""


class TaskFileNotFoundError(TaskDataError, FileNotFoundError):
    """A data file of a task does not exist; the message names every path that was tried."""


def paragraph(head: str, problems: Sequence[str], tail: str = "") -> str:
    """One paragraph: a head sentence, up to MAX_LISTED_PROBLEMS problems and the total count."""
    shown = list(problems[:MAX_LISTED_PROBLEMS])
    text = f"{head} {len(problems)} problem(s): " + "; ".join(shown)
    if len(problems) > len(shown):
        text += f"; ... and {len(problems) - len(shown)} more (first {len(shown)} of {len(problems)} shown)"
    text += "."
    if tail:
        text += " " + tail
    return text


def one_line(text: Any) -> str:
    """An error message on one line (builders' messages may span several)."""
    return " ".join(str(text).split())


def short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
