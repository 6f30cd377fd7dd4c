"""The caller's warnings filters, matched in the workers in linear time.

A job carries the caller's filters that make warnings errors
(:func:`memogrid.spec.caller_warning_filters`); every fit in a worker runs
under them, so a warning the caller made an error fails that fit as it
would in scikit-learn's own search. Their patterns are the caller's, and
Python's ``re`` backtracks: a pattern such as ``(.+)+z`` held a worker
(and its GIL) for as long as the fit's warning text allowed, past any
cancel. So the patterns are matched by RE2, whose matching time is linear
in the text and whose compiling memory is bounded: each filter goes into
``warnings.filters`` as Python's own ``filterwarnings`` would put it, but
with a :class:`Matcher` where ``re`` would leave a compiled pattern
(``warnings`` only calls its ``match``), so everything else is Python's:
the order of filters, those a library adds in front, the module a warning
is raised from, ``catch_warnings(record=True)``. scikit-learn's
``Parallel`` rebuilds the filters from their patterns with
``warnings.filterwarnings`` wherever it dispatches; in a worker that runs
them, that function puts a :class:`Matcher` back in place of each pattern
of the caller's (:func:`installed`).

A pattern is read as ``re`` reads it, translated where RE2 spells a thing
otherwise (``\\Z``, ``{,n}``, ``$`` before a last newline); one RE2 cannot
take (a lookaround, a backreference, a repeat past 1000) is refused up
front. RE2 reads ``\\w``, ``\\d``, ``\\s`` and ``\\b`` as ASCII classes,
where ``re`` reads them as Unicode ones.
"""

from __future__ import annotations

import functools
import re
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from memogrid.errors import warning_category
from memogrid.spec import SpecError, WarningFilter, check_warning_filters


def _re2(pattern: str, case_sensitive: bool) -> Any:
    import re2

    options = re2.Options()
    options.case_sensitive = case_sensitive
    options.log_errors = False  # the error is the caller's to read, not stderr's
    return re2.compile(translated(pattern), options)


def translated(pattern: str) -> str:
    """``pattern`` as ``re`` reads it, spelled for RE2: ``\\Z`` (end of
    text) is ``\\z``, ``{,n}`` is ``{0,n}``, and ``$`` (end of text, or
    before a newline that ends it) is ``(?:\\n?\\z)``; character classes
    and escapes are left as they are."""
    if re.search(r"\(\?[a-zA-Z]*[mxMX]", pattern):
        raise ValueError("the multiline and verbose flags (?m), (?x) are not taken")
    if "[[:" in pattern:
        raise ValueError("[[: reads as a POSIX class in RE2, as a set in re")
    out: list[str] = []
    i, n, in_class = 0, len(pattern), False
    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n:
            pair = pattern[i : i + 2]
            out.append("\\z" if pair == "\\Z" and not in_class else pair)
            i += 2
            continue
        if in_class:
            if c == "]":
                in_class = False
            out.append(c)
        elif c == "[":
            in_class = True
            out.append(c)
            # a ] right after [ or [^ is a member, not the end
            j = i + 1
            if j < n and pattern[j] == "^":
                out.append("^")
                j += 1
            if j < n and pattern[j] == "]":
                out.append("]")
                j += 1
            i = j
            continue
        elif c == "$":
            if i + 1 < n and pattern[i + 1] not in ")|":
                raise ValueError("$ is taken only at the end of the pattern or of a group")
            out.append("(?:\\n?\\z)")
        elif c == "{" and re.match(r"\{,\d*\}", pattern[i:]):
            out.append("{0")
        else:
            out.append(c)
        i += 1
    return "".join(out)


class Matcher:
    """A filter's pattern matched by RE2, standing where ``warnings`` keeps
    a compiled ``re`` pattern: ``pattern`` and ``match`` are all it uses
    (scikit-learn's ``Parallel`` reads ``pattern``)."""

    __slots__ = ("_re2", "case_sensitive", "pattern")

    def __init__(self, pattern: str, case_sensitive: bool):
        self.pattern = pattern
        self.case_sensitive = case_sensitive
        self._re2 = _re2(pattern, case_sensitive)

    def match(self, text: str) -> Any:
        # RE2 reads UTF-8: a lone surrogate (no character) reads as U+FFFD
        try:
            return self._re2.match(text)
        except UnicodeEncodeError:
            return self._re2.match(text.encode("utf-8", "replace").decode("utf-8"))

    def __repr__(self) -> str:
        return f"Matcher({self.pattern!r})"


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
                    "no lookaround, backreference or repeat past 1000, and reads a few "
                    "things otherwise than re",
                ) from None
    return filters


@functools.lru_cache(maxsize=256)
def matcher(pattern: str, case_sensitive: bool) -> Matcher:
    """The :class:`Matcher` of ``pattern`` (one per process)."""
    return Matcher(pattern, case_sensitive)


_patched = threading.Lock()
_ours: set[tuple[str, bool]] = set()  # the caller's patterns: (pattern, case sensitive)


def _rematch() -> None:
    """Put a :class:`Matcher` back where ``re`` compiled a caller's pattern."""
    changed = False
    entries: Any = warnings.filters  # a list, typed as a Sequence of re patterns
    for i, (action, msg, cat, mod, line) in enumerate(entries):
        new_msg: Any = msg
        new_mod: Any = mod
        if isinstance(msg, re.Pattern) and (msg.pattern, False) in _ours:
            new_msg = matcher(msg.pattern, False)
        if isinstance(mod, re.Pattern) and (mod.pattern, True) in _ours:
            new_mod = matcher(mod.pattern, True)
        if new_msg is not msg or new_mod is not mod:
            entries[i] = (action, new_msg, cat, new_mod, line)
            changed = True
    if changed:
        warnings._filters_mutated()  # type: ignore[attr-defined]


def _patch_filterwarnings() -> None:
    """``warnings.filterwarnings`` in this process (a worker running one
    task at a time) matches the caller's patterns with RE2 too, whoever
    adds them again (scikit-learn's ``Parallel``, from their ``pattern``)."""
    with _patched:
        if getattr(warnings.filterwarnings, "_memogrid", False):
            return
        original = warnings.filterwarnings

        @functools.wraps(original)
        def filterwarnings(*args: Any, **kwargs: Any) -> None:
            original(*args, **kwargs)
            _rematch()

        filterwarnings._memogrid = True  # type: ignore[attr-defined]
        warnings.filterwarnings = filterwarnings


@contextmanager
def installed(filters: Sequence[WarningFilter]) -> Iterator[None]:
    """Run under ``filters`` (checked): a warning one of them makes an error
    raises, as it would in the caller's process; a warning one shows is let
    through to whoever records it (the caller shows it again under its own
    filters). Process-wide, as warnings filters are: for a process running
    one task at a time."""
    if not filters:
        yield
        return
    _patch_filterwarnings()
    with warnings.catch_warnings():
        entries: Any = warnings.filters
        for action, message, category, module, lineno in reversed(filters):
            if message:
                _ours.add((message, False))
            if module:
                _ours.add((module, True))
            # as filterwarnings would put it, a Matcher where it compiles
            entries.insert(
                0,
                (
                    "error" if action == "error" else "always",
                    matcher(message, False) if message else None,
                    warning_category(category),
                    matcher(module, True) if module else None,
                    lineno,
                ),
            )
        warnings._filters_mutated()  # type: ignore[attr-defined]
        yield
