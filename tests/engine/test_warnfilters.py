"""The caller's warnings filters as the workers match them: the regex module
reading every pattern as re does, within a time limit per task."""

from __future__ import annotations

import re
import time
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.exceptions import ConvergenceWarning

from memogrid.spec import SpecError
from memogrid_service.engine.warnfilters import (
    MATCH_SECONDS,
    as_regex,
    check_filters,
    fitting_under,
)

# pieces of patterns where re and regex could part: braces, sets, POSIX
# classes, comments, verbose mode, escapes, groups
_PIECES = [
    *"ab{}[]:^-,()?*+|\\#xe<=12 .$\n",
    *("(?x)", "(?i)", "(?#", "[:alpha:]", "{e<=1}", "{i}", "\\N{DIGIT ONE}", "(?:", "\\d"),
    *("\\]", "\\[", "{2}", "{,2}", "{1,}", "(?P<n>", "(?P=n)", "(?=", "(?<=a)", "[^]", "[]"),
]
_TEXT = st.text(alphabet="ab{}[]:^-,#xe<=12 .$\n1", max_size=8)


@settings(max_examples=400, derandomize=True, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), min_size=1, max_size=10), st.lists(_TEXT, max_size=12))
def test_regex_matches_every_pattern_as_re_does(pieces, texts):
    import regex

    pattern = "".join(pieces)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # re's "possible nested set"
        try:
            ours = re.compile(pattern, re.I)
        except re.error:
            return
    theirs = regex.compile(as_regex(pattern), regex.I | regex.VERSION0)
    for text in [*texts, "a{e<=1}", "[:", "alpha", "1", "{i}"]:
        want, got = ours.match(text), theirs.match(text)
        assert (want and want.span()) == (got and got.span()), (pattern, text)


def test_as_regex_escapes_only_what_regex_reads_otherwise():
    assert as_regex("a{e<=1}") == "a\\{e<=1}"
    assert as_regex("[[:alpha:]]") == "[\\[:alpha:]]"
    # re's repeats, escapes, "]" first in a set, comments: as they are
    for kept in ("a{2}b{,3}c{1,}", "\\N{DIGIT ONE}\\{", "[]a]", "[^]{]", "(?#[{e})"):
        assert as_regex(kept) == kept
    assert as_regex("(?x)a # [{e}\n[{]") == "(?x)a # [{e}\n[{]"


def _spent(filters, message, category=UserWarning):
    """Seconds until warning ``message`` raised under ``filters``, and what it raised."""
    start = time.perf_counter()
    try:
        with fitting_under(filters):
            warnings.warn(message, category, stacklevel=1)
    except Exception as exc:  # noqa: BLE001 - what the warning raised is the result
        return time.perf_counter() - start, exc
    return time.perf_counter() - start, None


def test_the_filters_make_errors_of_what_they_match_and_no_more():
    strict = [("error", "lbfgs failed", "ConvergenceWarning", "", 0)]
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        # the message from its start and in any case, by category
        assert isinstance(
            _spent(strict, "LBFGS failed to converge", ConvergenceWarning)[1], Warning
        )
        assert _spent(strict, "it: lbfgs failed", ConvergenceWarning)[1] is None
        assert _spent(strict, "lbfgs failed", UserWarning)[1] is None
        # a module pattern names the module raising it, case and all
        here = [("error", "", "UserWarning", re.escape(__name__), 0)]
        assert isinstance(_spent(here, "x")[1], UserWarning)
        assert _spent([("error", "", "UserWarning", __name__.upper(), 0)], "x")[1] is None
        # a filter that shows lets through what a later one would make an error
        shows = [("always", "x", "UserWarning", "", 0), ("error", "", "Warning", "", 0)]
        assert _spent(shows, "x y")[1] is None
        assert isinstance(_spent(shows, "y")[1], UserWarning)
    assert [str(w.message) for w in shown] == [
        "it: lbfgs failed",
        "lbfgs failed",
        "x",
        "x y",
    ]
    # gone afterwards
    assert not any(type(f[1]).__name__ == "_Bounded" for f in warnings.filters)


def test_a_pattern_that_backtracks_without_end_is_stopped_at_the_tasks_limit():
    """``re`` would spend minutes on this pattern against this text; the
    worker stops at the task's limit and the warning raises TimeoutError,
    naming the pattern; the time left is shared by every match of a task."""
    endless = "(?:[a-z ]|[a-z ]{2}|[a-z ]{3}|[a-z ]{4})+$"
    text = "lbfgs failed to converge after four iterations!"
    filters = [("error", endless, "UserWarning", "", 0)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        spent, raised = _spent(filters, text)
    assert isinstance(raised, TimeoutError) and endless in str(raised), raised
    assert 0.9 * MATCH_SECONDS <= spent < MATCH_SECONDS + 1.0  # regex keeps its own clock
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with fitting_under(filters):
            start = time.perf_counter()
            with pytest.raises(TimeoutError):
                warnings.warn(text, UserWarning, stacklevel=1)
            slow = time.perf_counter() - start
            start = time.perf_counter()
            with pytest.raises(TimeoutError):
                warnings.warn("a", UserWarning, stacklevel=1)  # the task's time is spent
            quick = time.perf_counter() - start
        assert quick < 0.1 < slow
        # a task of its own starts with the whole limit: a short text matches
        assert isinstance(_spent(filters, "short one")[1], UserWarning)


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        ("(?x:a b)", "verbose mode for a part of it"),
        ("(?ix:a b)", "verbose mode for a part of it"),
        ("(", "not a regular expression"),
    ],
)
def test_patterns_the_workers_cannot_match_as_re_does_are_refused(pattern, problem):
    for entry in (["error", pattern, "Warning", "", 0], ["error", "", "Warning", pattern, 0]):
        with pytest.raises(SpecError, match=re.escape(problem)) as err:
            check_filters([["ignore", "", "Warning", "", 0], entry])
        assert err.value.path == "warning_filters[1]"
    assert check_filters([["error", "(?x) a b", "Warning", "", 0]])  # for all of it: fine
