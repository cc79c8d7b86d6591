"""The errors of task configs and task data, and how their messages are put together: one paragraph naming the
config or file, the task and every problem found (up to `MAX_LISTED_PROBLEMS`), values echoed in short."""

from __future__ import annotations

import csv
import lzma
import zlib
from collections.abc import Sequence
from typing import Any

import datasets
import pyarrow
from huggingface_hub.errors import EntryNotFoundError

from mtst.remote.configuration_mtst import short_repr as short  # how a value is echoed: bounded, one rule

__all__ = [
    "DATA_ERRORS",
    "HUB_ERRORS",
    "MAX_LISTED_PROBLEMS",
    "TaskConfigError",
    "TaskDataError",
    "TaskFileNotFoundError",
    "is_data_error",
    "one_line",
    "paragraph",
    "root_cause",
    "short",
]

MAX_LISTED_PROBLEMS = 20


def _hub_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [OSError, ValueError, EntryNotFoundError]
    try:  # huggingface_hub >= 1 talks to the Hub with httpx, whose errors are not OSErrors
        import httpx

        errors.append(httpx.HTTPError)
    except ImportError:
        pass
    return tuple(errors)


# What fetching from the Hub raises for a reason outside the code: offline mode, a missing or gated repo, revision or
# file, an invalid id, the network (huggingface_hub's errors are OSErrors, ValueErrors or EntryNotFoundError).
HUB_ERRORS = _hub_errors()
# What reading a data file or dataset raises when the data is the problem (a builder wraps these as causes): parse
# and type errors of pyarrow, pandas (ValueErrors), json, csv, decoding, truncated or corrupt compression, and the
# Hub's. Any other exception is a bug and keeps its traceback.
DATA_ERRORS = (
    pyarrow.ArrowException,
    UnicodeError,
    EOFError,
    csv.Error,
    zlib.error,
    lzma.LZMAError,
    datasets.exceptions.DatasetsError,
    *HUB_ERRORS,
)


def root_cause(err: BaseException) -> BaseException:
    """The innermost error `err` was raised from (or during)."""
    seen = set()
    while id(err) not in seen:
        seen.add(id(err))
        nxt = err.__cause__ or err.__context__
        if nxt is None:
            break
        err = nxt
    return err


def is_data_error(err: BaseException) -> bool:
    """Whether `err` is one of `DATA_ERRORS`, the data's fault rather than a bug; a builder's
    `DatasetGenerationError`, which wraps whatever the builder raised, counts by the error it wraps."""
    wrapper = datasets.exceptions.DatasetGenerationError
    while isinstance(err, wrapper) and (err.__cause__ or err.__context__) is not None:
        err = err.__cause__ or err.__context__
    return isinstance(err, DATA_ERRORS) and not isinstance(err, wrapper)


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
