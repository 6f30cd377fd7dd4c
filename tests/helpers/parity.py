"""Bit-exact comparison of cv_results_ dictionaries (times excepted)."""

from __future__ import annotations

import numpy as np


def same_value(a, b) -> bool:
    """Equal values; estimators (rebuilt from a spec, say) by type and params."""
    if hasattr(b, "get_params") and not isinstance(b, type):
        if type(a) is not type(b):
            return False
        pa, pb = a.get_params(deep=False), b.get_params(deep=False)
        return list(pa) == list(pb) and all(same_value(pa[k], pb[k]) for k in pb)
    if isinstance(b, (list, tuple)):
        return (
            type(a) is type(b)
            and len(a) == len(b)
            and all(same_value(x, z) for x, z in zip(a, b, strict=True))
        )
    return bool(a == b) if not (isinstance(b, float) and b != b) else a != a


def assert_cv_results_equal(ours: dict, theirs: dict) -> None:
    assert list(ours) == list(theirs), "cv_results_ keys or key order differ"
    for key, expected in theirs.items():
        got = ours[key]
        if "time" in key:
            assert np.shape(got) == np.shape(expected), key
            continue
        if key == "params":
            assert len(got) == len(expected), key
            for a, b in zip(got, expected, strict=True):
                assert list(a) == list(b), key
                assert all(same_value(a[k], b[k]) for k in b), (key, a, b)
            continue
        assert type(got) is type(expected), (key, type(got), type(expected))
        if isinstance(expected, np.ma.MaskedArray):
            assert got.dtype == expected.dtype, key
            assert np.array_equal(got.mask, expected.mask), key
            # values under the mask are uninitialised memory: compare the rest
            for a, b, masked in zip(got.data, expected.data, expected.mask, strict=True):
                if not masked:
                    assert repr(a) == repr(b), (key, a, b)
            continue
        assert got.dtype == expected.dtype, (key, got.dtype, expected.dtype)
        # bit-for-bit, with NaNs in the same places
        assert got.tobytes() == expected.tobytes(), (key, got, expected)


def accuracy_over_chance(estimator, X, y):
    """A scoring callable as users write them: ``(estimator, X, y) -> float``."""
    return float((estimator.predict(X) == y).mean()) - 0.5


def accuracy_and_error(estimator, X, y):
    """A scoring callable giving several metrics as a dict."""
    hits = float((estimator.predict(X) == y).mean())
    return {"acc": hits, "err": 1.0 - hits}
