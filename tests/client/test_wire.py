"""cv_results_ through JSON and back: same keys, order, dtypes, bits, masks and params."""

from __future__ import annotations

import json
import math
import warnings
from typing import Any

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.datasets import make_classification
from sklearn.decomposition import PCA
from sklearn.exceptions import FitFailedWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, RandomizedSearchCV
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from memogrid.spec import SpecError, default_allowlist
from memogrid.wire import (
    WireError,
    decode_cv_results,
    decode_value,
    encode_cv_results,
    encode_value,
)
from tests.client.test_spec import canon


def through_json(results: dict[str, Any]) -> dict[str, Any]:
    text = json.dumps(encode_cv_results(results), allow_nan=False)
    return decode_cv_results(json.loads(text))


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.tobytes() == b.tobytes()


def assert_results_identical(got: dict[str, Any], expected: dict[str, Any]) -> None:
    """Keys in order, types, dtypes, bits, masks; objects by type and params."""
    assert list(got) == list(expected)
    for key, want in expected.items():
        have = got[key]
        assert type(have) is type(want), key
        if isinstance(want, np.ma.MaskedArray):
            assert have.dtype == want.dtype, key
            assert np.array_equal(np.ma.getmaskarray(have), np.ma.getmaskarray(want)), key
            keep = ~np.ma.getmaskarray(want)
            if want.dtype.kind == "O":
                assert canon(list(have.data[keep])) == canon(list(want.data[keep])), key
                assert all(v is None for v in have.data[~keep]), key  # as scikit-learn leaves them
            else:
                assert same_bits(have.data[keep], want.data[keep]), key
        elif isinstance(want, np.ndarray):
            assert have.dtype == want.dtype, key
            if want.dtype.kind == "O":
                assert canon(list(have)) == canon(list(want)), key
            else:
                assert same_bits(have, want), key
        elif key == "params":
            assert canon(have) == canon(want)  # estimators by type and params
            for h, w in zip(have, want, strict=True):
                for name in w:  # numpy scalars keep their type
                    assert type(h[name]) is type(w[name]) or hasattr(w[name], "get_params")
        else:
            assert canon(have) == canon(want), key


@pytest.fixture(scope="module")
def data():
    return make_classification(n_samples=80, n_features=6, n_informative=4, random_state=0)


@pytest.fixture(scope="module")
def pipe():
    return Pipeline([("scale", StandardScaler()), ("pca", PCA()), ("clf", LogisticRegression())])


def search(data, est, grid, **kw):
    X, y = data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FitFailedWarning)
        warnings.simplefilter("ignore", UserWarning)  # "some test scores are non-finite"
        return GridSearchCV(est, grid, cv=3, **kw).fit(X, y)


def test_single_metric_with_int_and_float_param_columns(data, pipe):
    res = search(data, pipe, {"pca__n_components": [2, 3], "clf__C": [0.1, 1.0, 10.0]})
    results = res.cv_results_
    assert results["param_pca__n_components"].dtype == np.int64
    assert results["param_clf__C"].dtype == np.float64
    assert_results_identical(through_json(results), results)


def test_multimetric_with_train_scores(data, pipe):
    res = search(
        data,
        pipe,
        {"pca__n_components": [2, 4], "clf__C": [0.5, 2]},
        scoring={"acc": "accuracy", "bal": "balanced_accuracy", "ll": "neg_log_loss"},
        refit="acc",
        return_train_score=True,
    )
    results = res.cv_results_
    assert "split2_train_ll" in results and results["rank_test_acc"].dtype == np.int32
    assert_results_identical(through_json(results), results)


def test_a_grid_swapping_the_final_estimator_and_passthrough(data, pipe):
    grid = [
        {"clf": [LogisticRegression()], "clf__C": [0.1, 1]},
        {"clf": [SVC(), SVC(kernel="linear")], "pca": ["passthrough", PCA(2)]},
        {"clf": [KNeighborsClassifier()], "clf__n_neighbors": [3, 5], "scale": [None]},
        {"pca__n_components": [2, 3]},
    ]
    results = search(data, pipe, grid).cv_results_
    assert results["param_clf"].dtype == object and results["param_clf"].mask.any()
    assert results["param_clf__C"].dtype == np.float64  # 0.1 and 1 make a float column
    assert results["params"][1]["clf__C"] == 1 and type(results["params"][1]["clf__C"]) is int
    encoded = encode_cv_results(results)
    column = next(c for c in encoded["columns"] if c["name"] == "param_pca")
    assert column["dtype"] == "object" and column["values"][2] == "passthrough"
    assert column["values"][3] == {
        "class": "sklearn.decomposition.PCA",
        "params": {"n_components": 2},
    }
    assert column["values"][0] is None and column["mask"][0] is True
    assert_results_identical(through_json(results), results)


def test_failing_candidates_leave_nan_scores(data, pipe):
    grid = {"clf__penalty": ["l2", "l1"], "clf__C": [1.0]}  # lbfgs cannot fit l1
    res = search(data, pipe, grid, error_score=np.nan, return_train_score=True)
    results = res.cv_results_
    assert np.isnan(results["mean_test_score"]).any()
    encoded = encode_cv_results(results)
    mean = next(c for c in encoded["columns"] if c["name"] == "mean_test_score")
    assert "NaN" in mean["values"]
    assert_results_identical(through_json(results), results)
    assert math.isnan(decode_value(json.loads(json.dumps(encode_value(np.nan)))))


def test_randomized_search_with_loguniform(data, pipe):
    X, y = data
    dists = {
        "clf__C": scipy.stats.loguniform(1e-3, 1e3),
        "pca__n_components": scipy.stats.randint(1, 5),
        "clf__fit_intercept": [True, False],
    }
    res = RandomizedSearchCV(pipe, dists, n_iter=6, cv=3, random_state=0).fit(X, y)
    results = res.cv_results_
    assert type(results["params"][0]["clf__C"]) is np.float64
    assert_results_identical(through_json(results), results)
    best = json.loads(json.dumps(encode_value(res.best_params_), allow_nan=False))
    assert canon(decode_value(best)) == canon(res.best_params_)
    assert type(decode_value(best)["clf__C"]) is np.float64


def test_single_values_round_trip_with_their_types():
    value = {
        "clf": Pipeline([("pca", PCA(n_components=2)), ("svc", SVC(C=3.0))]),
        "nan": math.nan,
        "inf": -math.inf,
        "zero": -0.0,
        "np": [np.float32(0.25), np.int32(-3), np.bool_(True), np.uint64(2**64 - 1)],
        "tuple": (1, "a", None),
        "weights": {0: 1.0, 1: 2.5},
        "passthrough": "passthrough",
        "big": 2**70,
        "function": np.log1p,
    }
    encoded = json.loads(json.dumps(encode_value(value), allow_nan=False))
    decoded = decode_value(encoded)
    assert canon(decoded) == canon(value)
    assert [type(v) for v in decoded["np"]] == [type(v) for v in value["np"]]
    assert decoded["tuple"] == (1, "a", None) and decoded["weights"] == {0: 1.0, 1: 2.5}
    assert decoded["function"] is np.log1p
    assert encode_value(0.5) == 0.5 and encode_value(math.inf) == {"float": "Infinity"}
    assert encode_value("NaN") == "NaN" and decode_value("NaN") == "NaN"  # strings stay strings


floats64 = st.integers(0, 2**64 - 1).map(lambda b: np.array(b, dtype=np.uint64).view(np.float64))
special = st.sampled_from([0.0, -0.0, math.inf, -math.inf, math.nan, -math.nan, 5e-324])


@settings(max_examples=60, deadline=None)
@given(
    bits=st.lists(st.one_of(floats64, special, st.floats()), max_size=30),
    dtype=st.sampled_from(["float64", "float32", "float16"]),
    masked=st.booleans(),
)
def test_any_float_array_round_trips_bit_for_bit(bits, dtype, masked):
    arr = np.array(bits, dtype=np.float64)
    if dtype != "float64":  # every bit pattern of the narrower type
        width = np.dtype(dtype).itemsize * 8
        arr = (arr.view(np.uint64) % 2**width).astype(f"u{width // 8}").view(dtype)
    value: Any = arr
    if masked:
        value = np.ma.MaskedArray(arr, mask=np.arange(arr.size) % 3 == 1)
    got = through_json({"x": value, "scalar": arr[0] if arr.size else np.float64(0)})
    assert got["x"].dtype == arr.dtype and type(got["x"]) is type(value)
    if masked:
        keep = ~value.mask
        assert np.array_equal(got["x"].mask, value.mask)
        assert same_bits(got["x"].data[keep], arr[keep])
    else:
        assert same_bits(got["x"], arr)
    scalar = arr[0] if arr.size else np.float64(0)
    assert type(got["scalar"]) is type(scalar)
    assert np.array(got["scalar"]).tobytes() == np.array(scalar).tobytes()


@settings(max_examples=60, deadline=None)
@given(st.floats(allow_nan=True, allow_infinity=True))
def test_python_floats_round_trip_bit_for_bit(x):
    got = decode_value(json.loads(json.dumps(encode_value(x), allow_nan=False)))
    assert type(got) is float
    assert np.array(got).tobytes() == np.array(x).tobytes()


def test_other_dtypes_shapes_and_nomask():
    results = {
        "b": np.array([True, False]),
        "u8": np.array([0, 255], dtype=np.uint8),
        "i64": np.array([-(2**63), 2**63 - 1]),
        "u64": np.array([2**64 - 1], dtype=np.uint64),
        "s": np.array(["a", "bcd"]),
        "grid": np.arange(6, dtype=np.int16).reshape(2, 3),
        "empty": np.array([], dtype=np.float64),
        "nomask": np.ma.MaskedArray([1.5, 2.5]),
        "objects": np.array([None, (1, 2), "x"], dtype=object),
        "list": [1, "a", (2.0,)],
        "best_index": np.int64(3),
        "score": math.nan,
    }
    got = through_json(results)
    assert_results_identical(got, results)
    assert np.ma.getmask(got["nomask"]) is np.ma.nomask
    assert got["s"].dtype == np.dtype("<U3") and got["grid"].shape == (2, 3)


def test_inexpressible_params_are_refused_by_path():
    results = {"params": [{"C": 1.0}, {"C": 2.0, "f": lambda x: x}]}
    with pytest.raises(SpecError) as err:
        encode_cv_results(results)
    assert err.value.path == "params[1].f"
    with pytest.raises(WireError):
        encode_cv_results({"c": np.array([1 + 2j])})
    with pytest.raises(WireError):
        encode_cv_results({"t": np.array(["2020-01-01"], dtype="datetime64[D]")})


def test_the_server_side_allowlist_is_used_when_given():
    allow = default_allowlist()
    results = {"params": [{"clf": SVC()}]}
    encoded = encode_cv_results(results, value_to_json=lambda v: {"class": "x.Y", "params": {}})
    with pytest.raises(SpecError) as err:
        decode_cv_results(encoded)
    assert err.value.path == "params[0].clf.class"
    seen = []

    def build(spec, path):
        seen.append((spec, path))
        return allow.classes["sklearn.svm.SVC"]()

    assert isinstance(decode_cv_results(encode_cv_results(results), build)["params"][0]["clf"], SVC)
    assert seen == [({"class": "sklearn.svm.SVC", "params": {}}, "params[0].clf")]


@pytest.mark.parametrize(
    "payload",
    [
        {"columns": []},
        {"version": 1, "columns": {}},
        {"version": 1, "columns": [{"type": "ndarray"}]},
        {"version": 1, "columns": [{"name": "x", "type": "ndarray", "dtype": "V8", "values": []}]},
        {"version": 1, "columns": [{"name": "x", "type": "ndarray", "dtype": "O8", "values": []}]},
        {"version": 1, "columns": [{"name": "x", "type": "pickle", "values": []}]},
        {
            "version": 1,
            "columns": [{"name": "x", "type": "ndarray", "dtype": "int8", "values": [300]}],
        },
        {
            "version": 1,
            "columns": [{"name": "x", "type": "ndarray", "dtype": "int8", "values": [1.5]}],
        },
        {
            "version": 1,
            "columns": [{"name": "x", "type": "ndarray", "dtype": "float64", "values": ["1"]}],
        },
        {
            "version": 1,
            "columns": [{"name": "x", "type": "ndarray", "dtype": "float64", "values": ["NaN:1"]}],
        },
        {
            "version": 1,
            "columns": [
                {"name": "x", "type": "ndarray", "dtype": "float64", "values": [1.0], "shape": [2]}
            ],
        },
        {
            "version": 1,
            "columns": [
                {"name": "x", "type": "masked", "dtype": "float64", "values": [1.0], "mask": [1]}
            ],
        },
        {
            "version": 1,
            "columns": [
                {"name": "x", "type": "value", "value": 1},
                {"name": "x", "type": "value", "value": 2},
            ],
        },
        {
            "version": 1,
            "columns": [{"name": "x", "type": "value", "value": {"numpy": "object", "value": 1}}],
        },
        {"version": 1, "columns": [{"name": "x", "type": "value", "value": {"dict": 3}}]},
    ],
)
def test_malformed_payloads_are_refused(payload):
    with pytest.raises(WireError):
        decode_cv_results(payload)


def test_a_payload_is_never_unpickled_or_imported():
    payload = {
        "version": 1,
        "columns": [
            {"name": "x", "type": "value", "value": {"class": "os.system", "params": {}}},
        ],
    }
    with pytest.raises(SpecError):
        decode_cv_results(payload)
    with pytest.raises(SpecError):
        decode_value({"__reduce__": "os.system"})
