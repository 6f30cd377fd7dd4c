"""The caller's warnings filters, matched in the workers in linear time.

A job carries the caller's filters that make warnings errors
(:func:`memogrid.spec.caller_warning_filters`); every fit in a worker runs
under them, so a warning the caller made an error fails that fit as it
would in scikit-learn's own search. Their patterns are the caller's, and
Python's ``re`` backtracks: a pattern such as ``(.+)+z`` held a worker
(and its GIL) for as long as the fit's warning text allowed, past any
cancel. So the patterns never reach ``re`` in a worker: they are compiled
by RE2, whose matching time is linear in the text and whose compiling
memory is bounded, and matched by the worker's warning router
(:mod:`service.engine.tasks`), which sees every warning a fit raises. A
pattern RE2 cannot take (a lookaround, a backreference, a repeat past
1,000) is refused up front, saying so.

Matching follows ``warnings``: the message pattern ignores case and the
module pattern does not, both match at the start of the text, the
category matches its subclasses, a line of 0 matches any, and the first
filter that matches decides. RE2 reads ``\\w``, ``\\d``, ``\\s`` and ``\\b``
as ASCII classes, where ``re`` reads them as Unicode ones.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from memogrid.errors import warning_category
from memogrid.spec import SpecError, WarningFilter, check_warning_filters

#: one filter ready to match: action, message and module matchers (None
#: for any), category class, line (0 for any)
Compiled = tuple[str, Any, type[Warning], Any, int]


def _re2(pattern: str, case_sensitive: bool) -> Any:
    import re2

    options = re2.Options()
    options.case_sensitive = case_sensitive
    options.log_errors = False  # the error is the caller's to read, not stderr's
    return re2.compile(pattern, options)


def checked_filters(value: Any, path: str = "warning_filters") -> tuple[WarningFilter, ...]:
    """A job's warnings filters, checked as :func:`check_warning_filters`
    checks them and each pattern compiled by RE2 (a :class:`SpecError`
    naming the filter where RE2 refuses one)."""
    filters = check_warning_filters(value, path)
    for i, (_, message, _, module, _) in enumerate(filters):
        for text, what, case_sensitive in ((message, "message", False), (module, "module", True)):
            if not text:
                continue
            try:
                _re2(text, case_sensitive)
            except Exception as exc:  # noqa: BLE001 - re2's error class is private
                reason = exc.args[0] if exc.args else exc
                if isinstance(reason, bytes):
                    reason = reason.decode("utf-8", "replace")
                raise SpecError(
                    f"{path}[{i}]",
                    f"the {what} pattern {text!r} cannot be matched here ({reason}): the "
                    "workers match warnings filters with RE2, in linear time, which takes "
                    "no lookaround, backreference or repeat past 1000",
                ) from None
    return filters


@functools.lru_cache(maxsize=64)
def compiled(filters: tuple[WarningFilter, ...]) -> tuple[Compiled, ...]:
    """``filters`` (already checked) ready to match, compiled once per process."""
    return tuple(
        (
            action,
            _re2(message, False) if message else None,
            warning_category(category),
            _re2(module, True) if module else None,
            lineno,
        )
        for action, message, category, module, lineno in filters
    )


def error_for(
    filters: Sequence[Compiled],
    message: Warning | str,
    category: type[Warning],
    module: str,
    lineno: int,
) -> BaseException | None:
    """The exception to raise for a warning the first matching filter makes
    an error, as ``warnings`` would raise it, or None (no filter makes it one)."""
    # RE2 reads UTF-8: a lone surrogate (no character) reads as U+FFFD
    text = _encodable(str(message))
    module = _encodable(module)
    for action, msg, cat, mod, line in filters:
        if (
            (msg is None or msg.match(text) is not None)
            and issubclass(category, cat)
            and (mod is None or mod.match(module) is not None)
            and (line == 0 or line == lineno)
        ):
            if action != "error":
                return None
            return message if isinstance(message, Warning) else category(message)
    return None


def _encodable(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text
