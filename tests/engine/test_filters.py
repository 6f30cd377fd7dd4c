"""The caller's warnings filters as the workers apply them (patterns matched
by RE2), against what Python's own ``warnings`` makes of the same filters."""

from __future__ import annotations

import re
import time
import warnings
from contextlib import contextmanager

import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.parallel import Parallel, delayed

from memogrid.errors import warning_category
from memogrid.spec import SpecError
from memogrid_service.engine import filters as mod
from memogrid_service.engine.filters import checked_filters, installed, translated

LBFGS = "lbfgs failed to converge after 4 iteration(s) (status=1):"
MODULE = "sklearn.linear_model._logistic"

FILTERS = [
    [["error", "", "Warning", "", 0]],
    [["error", "", "ConvergenceWarning", "", 0]],
    [["error", "", "UserWarning", "", 0]],
    [["always", "lbfgs", "ConvergenceWarning", "", 0], ["error", "", "Warning", "", 0]],
    [["error", "LBFGS FAILED", "ConvergenceWarning", "", 0]],  # messages ignore case
    [["error", "failed", "Warning", "", 0]],  # matched at the start only
    [["error", "lbfgs.*iteration\\(s\\)", "Warning", "", 0]],
    [["error", "", "Warning", "sklearn\\.linear", 0]],
    [["error", "", "Warning", "SKLEARN", 0]],  # modules do not
    [["error", "", "Warning", "sklearn\\.linear_model\\._logistic\\Z", 0]],  # python -W's form
    [["error", "", "Warning", "", 12]],
    [["error", "", "Warning", "", 13]],
    [["always", "", "DeprecationWarning", "", 0], ["error", "", "Warning", "", 0]],
]

WARNINGS = [
    (LBFGS, ConvergenceWarning, MODULE, 12),
    ("Liblinear failed to converge", ConvergenceWarning, MODULE, 12),
    ("divide by zero", RuntimeWarning, "numpy.core", 13),
    ("old api", FutureWarning, "sklearn.utils", 12),
    ("gone soon", DeprecationWarning, MODULE, 12),
]


@pytest.fixture(autouse=True)
def _own_process_state(monkeypatch):
    """``installed`` patches this process's ``warnings.filterwarnings`` as it
    does a worker's: put it back after each test."""
    monkeypatch.setattr(warnings, "filterwarnings", warnings.filterwarnings)
    monkeypatch.setattr(mod, "_ours", set())


@contextmanager
def shown():
    """Every warning shown (and kept, not printed), as in a worker."""
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        yield


def raised(text, category, module, lineno):
    try:
        warnings.warn_explicit(text, category, "x.py", lineno, module=module, registry={})
    except Warning as exc:
        return type(exc), str(exc)
    return None


def python_raises(filters, *warning):
    with warnings.catch_warnings(record=True):  # shown ones are kept, not printed
        warnings.simplefilter("always")
        for action, message, cat, module, line in reversed(filters):
            warnings.filterwarnings(action, message, warning_category(cat), module, line)
        return raised(*warning)


def ours_raises(filters, *warning):
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")  # as a worker's router has it
        with installed(checked_filters(filters)):
            return raised(*warning)


@pytest.mark.parametrize("filters", FILTERS, ids=range(len(FILTERS)))
def test_filters_decide_as_pythons_own(filters):
    for warning in WARNINGS:
        assert ours_raises(filters, *warning) == python_raises(filters, *warning), warning
    # and the filters are RE2's, where re would compile the patterns
    with warnings.catch_warnings(), installed(checked_filters(filters)):
        patterns = [f[1] for f in warnings.filters[: len(filters)]] + [
            f[3] for f in warnings.filters[: len(filters)]
        ]
        assert not any(isinstance(p, re.Pattern) for p in patterns)


@pytest.mark.parametrize(
    "pattern",
    [
        r"a\Z",
        "a{,2}b",
        "a{,}b",
        "ab$",
        "(ab$|b)",
        "[$]x",
        r"[]\]Z]+",
        r"[^]a]b",
        r"x\$",
        "(?i:A)b{2,}$",
        r"\{,2\}",
    ],
)
def test_patterns_are_read_as_re_reads_them(pattern):
    ours = mod.matcher(pattern, True)
    theirs = re.compile(pattern)
    texts = ["a", "ab", "aab", "aaab", "b", "ab\n", "ab\nx", "$x", "]Z", "Z]", "ba", "x$", "Abb"]
    texts += ["Abbb\n", "{,2}", "a\n"]
    for text in texts:
        assert (ours.match(text) is None) == (theirs.match(text) is None), (pattern, text)
    assert translated(r"[\]$]\Z$") == r"[\]$]\z(?:\n?\z)"  # a class is left as it is


def test_matching_time_is_linear_even_through_scikit_learns_parallel():
    """re takes ~2**n steps to find that (.+)+~ does not match n characters
    (30 here: ~20 s); scikit-learn's Parallel rebuilds the filters from
    their patterns in every task it runs, in threads too: they stay RE2's."""
    text = "x" * 30
    hostile = [["error", "(.+)+~", "Warning", "", 0]]
    failing = [["error", "(.+)+x", "Warning", "", 0]]

    def warn():
        warnings.warn(text, UserWarning, stacklevel=1)
        return [p for _, p, *_ in warnings.filters if isinstance(p, re.Pattern)]

    for backend in ("sequential", "threading"):
        start = time.monotonic()
        with shown(), installed(checked_filters(hostile)):
            out = Parallel(n_jobs=2, backend=backend)(delayed(warn)() for _ in range(2))
        assert time.monotonic() - start < 2.0, backend
        assert not any(p.pattern == "(.+)+~" for ps in out for p in ps)  # rebuilt as RE2's
        with shown(), installed(checked_filters(failing)):
            with pytest.raises(UserWarning, match="x{30}"):
                Parallel(n_jobs=2, backend=backend)(delayed(warn)() for _ in range(2))
    # a lone surrogate, which UTF-8 cannot hold, is no failure
    with shown(), installed(checked_filters(hostile)):
        warnings.warn("x\udc80", UserWarning, stacklevel=1)


@pytest.mark.parametrize(
    "pattern",
    [
        "(?=lbfgs)l",
        "(?<!x)l",
        r"(a)\1",
        "a{1001}",
        "(?P<n>a)(?P=n)",
        # what RE2 would read otherwise than re
        "(?m)foo$",
        "(?x) a b",
        "[[:digit:]]",
        "$\n",
    ],
)
def test_patterns_re2_cannot_take_are_refused_by_path(pattern):
    with pytest.raises(SpecError) as info:
        checked_filters([["error", "", "Warning", "", 0], ["error", pattern, "Warning", "", 0]])
    assert info.value.path == "warning_filters[1]" and "RE2" in info.value.message
