"""The caller's warnings filters, as a task's fits run under them.

scikit-learn's search fits under its caller's warnings filters, so a warning
the caller made an error fails the fit that raised it. The client sends the
filters that matter (:func:`memogrid.spec.caller_warning_filters`) and the
engine runs each task under them (:func:`fitting_under`).

Their patterns come from a request, and Python's ``re`` backtracks without
bound: ``(a|aa)+$`` against a warning's text would hold a worker for as long
as it likes. So the workers match them with the ``regex`` module, which can
stop a match: the patterns may spend :data:`MATCH_SECONDS` in all on one
task's warnings, and a warning that meets them after that raises
TimeoutError where it was raised. That fails the fit as any error in it
would, and is never cached (a time limit is no property of the estimator).

``regex`` reads a pattern as ``re`` does except for two spellings that
``re`` reads as plain characters and ``regex`` does not: braces such as
``{e<=1}`` (fuzzy matching) and ``[:alpha:]`` inside a set (a POSIX class).
:func:`as_regex` escapes those, so the workers match what the caller's
process would.
"""

from __future__ import annotations

import functools
import re
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import regex

from memogrid.spec import SpecError, WarningFilter, check_warning_filters, warning_category

#: seconds the caller's patterns may spend matching one task's warnings
MATCH_SECONDS = 1.0

# what ``re`` reads as a repeat after a "{": digits, a comma, digits, "}",
# not "{}" (re's parser takes ASCII digits only)
_RE_REPEAT = re.compile(r"\{(?:[0-9]+|[0-9]*,[0-9]*)\}")
# flags for the whole pattern, which re takes only at its start
_GLOBAL_FLAGS = re.compile(r"(?:\(\?[aiLmsux]+\))+")


def as_regex(pattern: str) -> str:
    """``pattern`` (one ``re`` compiles) spelled so that ``regex`` reads it
    as ``re`` does: each "{" that ``re`` reads as itself is escaped, and so
    is each "[" inside a set. Escapes, comments and, in verbose patterns,
    "#" comments are copied as they are."""
    flags = _GLOBAL_FLAGS.match(pattern)
    verbose = flags is not None and "x" in flags.group()
    out: list[str] = []
    i, n = 0, len(pattern)
    set_open = False
    first = 0  # where, in an open set, "]" is still a member
    while i < n:
        c = pattern[i]
        if c == "\\":
            end = i + 2
            if pattern.startswith("N{", i + 1):  # a character by its name
                end = pattern.index("}", i) + 1
            out.append(pattern[i:end])
            i = end
        elif set_open:
            if c == "]" and i > first:
                set_open = False
            out.append("\\[" if c == "[" else c)
            i += 1
        elif c == "[":
            set_open = True
            first = i + 2 if pattern.startswith("^", i + 1) else i + 1
            out.append(pattern[i:first])
            i = first
        elif pattern.startswith("(?#", i) or (verbose and c == "#"):
            end = pattern.find(")" if c == "(" else "\n", i)
            end = n if end < 0 else end + 1
            out.append(pattern[i:end])
            i = end
        elif c == "{" and not _RE_REPEAT.match(pattern, i):
            out.append("\\{")
            i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


@functools.lru_cache(maxsize=1024)
def _compiled(pattern: str, flags: int) -> Any:
    return regex.compile(as_regex(pattern), flags | regex.VERSION0)


# scoped flags (?x:...) would need a scanner that follows scopes
_SCOPED_VERBOSE = re.compile(r"\(\?[a-zA-Z]*x[a-zA-Z]*(?:-[a-zA-Z]*)?:")


def check_filters(value: Any, path: str = "warning_filters") -> tuple[WarningFilter, ...]:
    """A job's warnings filters (:func:`memogrid.spec.check_warning_filters`),
    also checked to be patterns the workers can match."""
    filters = check_warning_filters(value, path)
    for i, (_, message, _, module, _) in enumerate(filters):
        for text, what, flags in ((message, "message", regex.I), (module, "module", 0)):
            if _SCOPED_VERBOSE.search(text):
                raise SpecError(
                    f"{path}[{i}]", f"the {what} sets verbose mode for a part of it: set it for all"
                )
            try:
                _compiled(text, flags)
            except regex.error as exc:
                raise SpecError(f"{path}[{i}]", f"the {what} cannot be matched: {exc}") from None
    return filters


class _Budget:
    """What is left of one task's time for matching its warnings."""

    def __init__(self, seconds: float):
        self.left = seconds


class _Bounded:
    """A filter's pattern, matched as ``warnings`` matches one (``match``
    from the start of a warning's text or its module's name), within its
    task's budget."""

    __slots__ = ("pattern", "compiled", "budget")

    def __init__(self, pattern: str, flags: int, budget: _Budget):
        self.pattern = pattern
        self.compiled = _compiled(pattern, flags)
        self.budget = budget

    def match(self, text: str) -> Any:
        left = self.budget.left
        start = time.perf_counter()
        try:
            if left <= 0:
                raise TimeoutError
            return self.compiled.match(text, timeout=left)
        except TimeoutError:
            self.budget.left = 0.0
            raise TimeoutError(
                f"matching warnings to the caller's warnings filters took more than the "
                f"{MATCH_SECONDS:g} s a task allows (stopped in the pattern "
                f"{self.pattern!r} on {text[:80]!r})"
            ) from None
        finally:
            self.budget.left -= time.perf_counter() - start


@contextmanager
def fitting_under(filters: Sequence[WarningFilter]) -> Iterator[None]:
    """Run under ``filters``' errors: a warning one of them makes an error
    raises, as it would in the caller's process; a warning they show,
    ignore or show once is let through to whoever records it (the caller
    shows it again under its own filters). Process-wide, as warnings
    filters are: for a process running one task at a time."""
    if not filters:
        yield
        return
    budget = _Budget(MATCH_SECONDS)
    entries = [
        (
            "error" if action == "error" else "always",
            _Bounded(message, regex.I, budget) if message else None,
            warning_category(category),
            _Bounded(module, 0, budget) if module else None,
            lineno,
        )
        for action, message, category, module, lineno in filters
    ]
    with warnings.catch_warnings():
        current = getattr(warnings, "_get_filters", None)
        listed: list[Any] = current() if current else warnings.filters  # type: ignore[assignment]
        listed[:0] = entries
        ignore_engine_notes()  # also tells warnings that its filters changed
        yield


def ignore_engine_notes() -> None:
    """Filter out, first of all, what only where the engine runs fits says:
    joblib's note that an estimator's n_jobs runs as 1 in a dask worker's
    daemon process. Where the fits run is the engine's choice, not the
    caller's to be warned about (n_jobs does not change scikit-learn's
    results), nor to fail under the caller's "error" filters."""
    warnings.filterwarnings(
        "ignore", message="Inside a Dask worker with daemon=True", category=UserWarning
    )
