"""Bit-exact comparison of cv_results_ dictionaries (times excepted)."""

from __future__ import annotations

import numpy as np


def assert_cv_results_equal(ours: dict, theirs: dict) -> None:
    assert list(ours) == list(theirs), "cv_results_ keys or key order differ"
    for key, expected in theirs.items():
        got = ours[key]
        if "time" in key:
            assert np.shape(got) == np.shape(expected), key
            continue
        if key == "params":
            assert got == expected, key
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
