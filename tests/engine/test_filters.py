"""The caller's warnings filters as the workers match them (RE2), against
what Python's own ``warnings`` makes of the same filters."""

from __future__ import annotations

import time
import warnings

import pytest
from sklearn.exceptions import ConvergenceWarning

from memogrid.errors import warning_category
from memogrid.spec import SpecError
from memogrid_service.engine.filters import checked_filters, compiled, error_for

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
    [["error", "", "Warning", "", 12]],
    [["error", "", "Warning", "", 13]],
    [["always", "", "DeprecationWarning", "", 0], ["error", "", "Warning", "", 0]],
    [["error", "(.+)+~", "Warning", "", 0]],
]

WARNINGS = [
    (LBFGS, ConvergenceWarning, MODULE, 12),
    ("Liblinear failed to converge", ConvergenceWarning, MODULE, 12),
    ("divide by zero", RuntimeWarning, "numpy.core", 13),
    ("old api", FutureWarning, "sklearn.utils", 12),
    ("gone soon", DeprecationWarning, MODULE, 12),
]


def python_raises(filters, text, category, module, lineno):
    with warnings.catch_warnings(record=True):  # shown ones are kept, not printed
        warnings.simplefilter("always")
        for action, message, cat, mod, line in reversed(filters):
            warnings.filterwarnings(action, message, warning_category(cat), mod, line)
        try:
            warnings.warn_explicit(text, category, "x.py", lineno, module=module, registry={})
        except Warning as exc:
            return type(exc), str(exc)
    return None


@pytest.mark.parametrize("filters", FILTERS, ids=range(len(FILTERS)))
def test_filters_decide_as_pythons_own(filters):
    ours = compiled(checked_filters(filters))
    for text, category, module, lineno in WARNINGS:
        if filters[0][1] == "(.+)+~" and category is ConvergenceWarning:
            continue  # re would take ~2**57 steps: see the next test
        error = error_for(ours, text, category, module, lineno)
        got = None if error is None else (type(error), str(error))
        assert got == python_raises(filters, text, category, module, lineno), (filters, text)


def test_matching_time_is_linear_and_the_warning_itself_is_raised():
    ours = compiled(checked_filters([["error", "(.+)+~", "Warning", "", 0]]))
    start = time.monotonic()
    assert error_for(ours, LBFGS * 1000, ConvergenceWarning, MODULE, 1) is None
    assert time.monotonic() - start < 1.0
    # a lone surrogate, which UTF-8 cannot hold, is no failure
    assert error_for(ours, "x\udc80", RuntimeWarning, MODULE, 1) is None
    assert isinstance(error_for(ours, "x\udc80~", RuntimeWarning, MODULE, 1), RuntimeWarning)
    ours = compiled(checked_filters([["error", "(.+)+converge", "Warning", "", 0]]))
    warning = ConvergenceWarning(LBFGS)
    assert error_for(ours, warning, ConvergenceWarning, MODULE, 1) is warning


@pytest.mark.parametrize(
    "pattern", ["(?=lbfgs)l", "(?<!x)l", r"(a)\1", "a{1001}", "(?P<n>a)(?P=n)"]
)
def test_patterns_re2_cannot_take_are_refused_by_path(pattern):
    with pytest.raises(SpecError) as info:
        checked_filters([["error", "", "Warning", "", 0], ["error", pattern, "Warning", "", 0]])
    assert info.value.path == "warning_filters[1]" and "RE2" in info.value.message
