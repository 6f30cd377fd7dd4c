"""Hostile and broken input: each a 4xx with a message, nothing left behind."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import make_classification

from memogrid.wire import decode_cv_results
from tests.api.conftest import NPY, PARQUET, npy_bytes, upload, wait_job

LR = "sklearn.linear_model.LogisticRegression"


@pytest.fixture
def data(api):
    X = np.random.RandomState(0).normal(size=(60, 3))
    y = (X[:, 0] > 0).astype(int)
    return upload(api, X), upload(api, y)


def _job(api, data, **over):
    xid, yid = data
    body = {"estimator": {"class": LR}, "param_grid": {"C": [1.0]}, "X": xid, "y": yid}
    body.update(over)
    return api.post("/v1/jobs", json=body)


def _nothing_queued(api):
    assert api.get("/v1/jobs").json()["items"] == []


@pytest.mark.parametrize(
    "spec, where",
    [
        ({"class": "subprocess.Popen", "params": {"args": ["touch", "/tmp/x"]}}, "class"),
        ({"class": "os.system"}, "class"),
        ({"class": "builtins.eval"}, "class"),
        ({"class": "sklearn.linear_model._logistic.LogisticRegression"}, "class"),
        ({"class": LR, "params": {"__class__": {"class": "os.system"}}}, "__class__"),
        ({"class": LR, "params": {"C": 2**70}}, "params.C"),
        ({"class": LR, "params": {"C": {"function": "builtins.eval"}}}, "params.C"),
        ({"class": LR, "params": {"C": "__import__('os').system('id')"}}, "params.C"),
        ({"class": LR, "params": {"solver": "__import__('os')"}}, "params.solver"),
        ({"class": LR, "extra": 1}, "estimator"),
        # a splitter goes only where cv is taken
        ({"class": "sklearn.model_selection.KFold"}, "class"),
        ({"class": LR, "params": {"C": {"class": "sklearn.model_selection.KFold"}}}, "C.class"),
    ],
)
def test_hostile_specs(api, data, spec, where):
    r = _job(api, data, estimator=spec)
    assert r.status_code == 422, r.text
    problem = r.json()
    assert problem["errors"] and any(where in e["path"] for e in problem["errors"]), problem
    _nothing_queued(api)


def test_a_grid_value_scikit_learn_refuses_fails_its_fits_not_the_job(api, data):
    """As in scikit-learn's search, where C=-1 fails at fit: that candidate
    scores NaN with a FitFailedWarning naming the check, the others run."""
    r = _job(api, data, param_grid={"C": [1.0, -1.0], "penalty": ["l2"]})
    assert r.status_code == 202, r.text
    job = r.json()["id"]
    assert wait_job(api, job)["state"] == "succeeded"
    res = api.get(f"/v1/jobs/{job}/results").json()
    scores = decode_cv_results(res["cv_results"])["mean_test_score"]
    assert np.isnan(scores[1]) and np.isfinite(scores[0]), scores
    assert any("'C' parameter" in w for w in res["warnings"]), res["warnings"]


def test_non_finite_numbers_in_params(api, data):
    xid, yid = data
    for bad in ("NaN", "Infinity", "-Infinity"):
        text = (
            f'{{"estimator": {{"class": "{LR}", "params": {{"C": {bad}}}}}, '
            f'"param_grid": {{"C": [1.0]}}, "X": "{xid}", "y": "{yid}"}}'
        )
        r = api.post("/v1/jobs", content=text, headers={"content-type": "application/json"})
        assert r.status_code == 422 and "non-finite" in r.json()["detail"], r.text
    _nothing_queued(api)


def test_search_settings_scikit_learn_would_refuse_get_a_422(api, data):
    for bad in ("Infinity", "-Infinity"):  # JSON cannot store them: they would run as NaN
        text = json.dumps({"estimator": {"class": LR}, "param_grid": {"C": [1.0]}})
        xid, yid = data
        text = text[:-1] + f', "X": "{xid}", "y": "{yid}", "error_score": {bad}}}'
        r = api.post("/v1/jobs", content=text, headers={"content-type": "application/json"})
        assert r.status_code == 422, r.text
        assert r.json()["errors"][0]["path"] == "error_score", r.text
    r = _job(api, data, scoring=["accuracy", "f1"], refit=True)
    assert r.status_code == 422 and "refit must name" in r.json()["detail"], r.text
    r = _job(api, data, y=None)
    assert r.status_code == 422 and r.json()["errors"][0]["path"] == "y", r.text
    kfold = {"class": "sklearn.model_selection.KFold", "params": {"n_splits": 500}}
    r = _job(api, data, cv=kfold)
    assert r.status_code == 422, r.text
    assert r.json()["detail"].endswith(
        "KFold: Cannot have number of splits n_splits=500 greater than the number of "
        "samples: n_samples=60."
    ), r.text
    r = _job(api, data, cv=61)
    assert r.status_code == 422 and "cv=61: Cannot have number of splits n_splits=61" in r.text
    seeded = {
        "class": "sklearn.model_selection.KFold",
        "params": {"n_splits": 3, "shuffle": True, "random_state": -5},
    }
    r = _job(api, data, cv=seeded)
    assert r.status_code == 422 and "random_state" in r.json()["errors"][0]["path"], r.text
    group = {"class": "sklearn.model_selection.GroupKFold", "params": {"n_splits": 3}}
    r = _job(api, data, cv=group)
    assert r.status_code == 422 and "GroupKFold needs groups" in r.text, r.text
    pipe = {"class": "sklearn.pipeline.Pipeline", "params": {"steps": [["lr", {"class": LR}]]}}
    r = _job(
        api,
        data,
        estimator=pipe,
        param_grid={"lr__C": [1.0]},
        fit_params={"nosuch__sample_weight": data[1]},
    )
    assert r.status_code == 422 and "names no step" in r.json()["detail"], r.text
    _nothing_queued(api)


def test_pickle_and_skops_where_a_spec_is_expected(api):
    import pickle

    import skops.io as sio
    from sklearn.linear_model import LogisticRegression

    for payload in (pickle.dumps(LogisticRegression()), sio.dumps(LogisticRegression())):
        r = api.post("/v1/jobs", content=payload, headers={"content-type": "application/json"})
        assert r.status_code in (400, 422) and r.json()["detail"]
        r = api.post(
            "/v1/jobs", content=payload, headers={"content-type": "application/octet-stream"}
        )
        assert r.status_code == 415
        # and where a dataset is expected
        r = api.post("/v1/datasets", content=payload, headers=NPY)
        assert r.status_code == 422
    _nothing_queued(api)


def test_object_columns_in_parquet(api, settings):
    buf = io.BytesIO()
    pd.DataFrame({"o": [{"a": 1}, {"b": 2}]}).to_parquet(buf)
    r = api.post("/v1/datasets", content=buf.getvalue(), headers=PARQUET)
    assert r.status_code == 422 and "unsupported type" in r.json()["detail"]
    assert list(settings.datasets_dir.iterdir()) == []


def test_all_candidates_failing_fails_with_sklearns_message(api, data):
    pipe = {
        "class": "sklearn.pipeline.Pipeline",
        "params": {
            "steps": [["pca", {"class": "sklearn.decomposition.PCA"}], ["lr", {"class": LR}]]
        },
    }
    # more components than the 3 features: every fit fails
    r = _job(api, data, estimator=pipe, param_grid={"pca__n_components": [7]}, cv=3)
    status = wait_job(api, r.json()["id"])
    assert status["state"] == "failed"
    assert "All the 3 fits failed" in status["error"]


def test_nans_in_X_follow_error_score(api):
    X = np.random.RandomState(1).normal(size=(40, 3))
    X[5, 1] = np.nan
    y = (np.arange(40) % 2).astype(int)
    xid, yid = upload(api, X), upload(api, y)
    body = {
        "estimator": {"class": LR},
        "param_grid": {"C": [1.0]},
        "X": xid,
        "y": yid,
        "cv": 2,
    }
    status = wait_job(api, api.post("/v1/jobs", json=body).json()["id"])
    assert status["state"] == "failed" and "NaN" in status["error"]
    # an estimator that accepts NaN runs fine on the same data
    body["estimator"] = {"class": "sklearn.ensemble.HistGradientBoostingClassifier"}
    body["param_grid"] = {"max_iter": [5]}
    assert wait_job(api, api.post("/v1/jobs", json=body).json()["id"])["state"] == "succeeded"


def test_ids_are_not_paths(api):
    for bad in ("../" * 5 + "etc/passwd", "%2e%2e%2f" * 3 + "etc", "0" * 63 + "/", "a" * 65):
        for url in (f"/v1/datasets/{bad}", f"/v1/jobs/{bad}", f"/v1/jobs/{bad}/estimator"):
            assert api.get(url).status_code in (404, 422), url
    body = json.dumps({"estimator": {"class": LR}, "param_grid": {"C": [1]}, "X": "../../x"})
    r = api.post("/v1/jobs", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422 and any(e["path"] == "X" for e in r.json()["errors"])


VECT = "sklearn.feature_extraction.text.TfidfVectorizer"


@pytest.mark.parametrize(
    "spec, grid, where",
    [
        (
            {
                "class": "sklearn.feature_extraction.text.CountVectorizer",
                "params": {"input": "filename"},
            },
            {"max_features": [5]},
            "estimator.params.input",
        ),
        (
            {
                "class": "sklearn.pipeline.Pipeline",
                "params": {"steps": [["lr", {"class": LR}]], "memory": "/tmp/memogrid-pwn"},
            },
            {"lr__C": [1.0]},
            "estimator.params.memory",
        ),
        (
            {"class": "sklearn.cluster.FeatureAgglomeration"},
            {"memory": ["/tmp/x"]},
            "param_grid.memory[0]",
        ),
        (
            {
                "class": "sklearn.pipeline.Pipeline",
                "params": {"steps": [["v", {"class": VECT}], ["lr", {"class": LR}]]},
            },
            {"v__input": ["content", "file"]},
            "param_grid.v__input[1]",
        ),
    ],
)
def test_parameters_that_reach_the_file_system_are_refused(api, data, spec, grid, where):
    xid, yid = data
    r = api.post("/v1/jobs", json={"estimator": spec, "param_grid": grid, "X": xid, "y": yid})
    assert r.status_code == 422, r.text
    assert [e["path"] for e in r.json()["errors"]] == [where]
    assert "file system" in r.json()["detail"]
    _nothing_queued(api)


def test_deeply_nested_values_are_refused(api, data):
    deep: object = 1.0
    for _ in range(600):
        deep = [deep]
    r = _job(api, data, param_grid={"C": [deep]})
    assert r.status_code == 422 and "nested" in r.json()["detail"]
    nested_json = "[" * 2000 + "]" * 2000
    r = api.get("/v1/results", params={"param": "C", "value": nested_json[:4000]})
    assert r.status_code == 422


def test_grid_cap_counts_group_splitters_and_huge_grids_early(api, data):
    xid, yid = data
    groups = upload(api, np.arange(60))  # 60 groups: LeaveOneGroupOut makes 60 folds
    body = {
        "estimator": {"class": LR},
        "param_grid": {"C": [0.1 * (i + 1) for i in range(40)]},
        "X": xid,
        "y": yid,
        "groups": groups,
        "cv": {"class": "sklearn.model_selection.LeaveOneGroupOut"},
    }
    r = api.post("/v1/jobs", json=body)
    assert r.status_code == 422 and "above the limit" in r.json()["detail"]
    # RepeatedKFold keeps n_splits apart (in cvargs): 40 x 20 x 3 = 2400 fits
    repeated = {"class": _SPLIT + "RepeatedKFold", "params": {"n_splits": 20, "n_repeats": 3}}
    r = api.post("/v1/jobs", json={**body, "groups": None, "cv": repeated})
    assert r.status_code == 422 and "2400 fits" in r.json()["detail"], r.text
    # a grid far past the cap is refused from its JSON, before anything is built
    huge = {"C": list(range(1, 101)), "tol": [1e-4] * 100}
    started = __import__("time").perf_counter()
    r = _job(api, data, param_grid=huge)
    assert r.status_code == 422 and "10000 candidates" in r.json()["detail"]
    assert __import__("time").perf_counter() - started < 2
    _nothing_queued(api)


def test_parquet_size_limit_holds_for_the_decoded_data(api, settings):
    # 2 million zeros compress to almost nothing but decode to 16 MB (limit: 8 MiB)
    buf = io.BytesIO()
    pd.DataFrame({"z": np.zeros(2_000_000, dtype=np.int64)}).to_parquet(buf)
    assert len(buf.getvalue()) < settings.upload_max_bytes
    r = api.post("/v1/datasets", content=buf.getvalue(), headers=PARQUET)
    assert r.status_code == 413 and "decompresses" in r.json()["detail"]
    assert list(settings.datasets_dir.iterdir()) == []


def test_overlong_names_are_refused_up_front(api, data):
    long = "x" * 150
    for over in (
        {"scoring": {long: "accuracy"}},
        {"refit": long, "scoring": ["accuracy"]},
        {"fit_params": {long: data[0]}},
    ):
        r = _job(api, data, **over)
        assert r.status_code == 422 and "at most 100 characters" in r.json()["detail"], r.text
    _nothing_queued(api)


def test_a_refusal_quoting_a_huge_value_is_answered_at_a_bounded_size(api, data):
    """A 4 MB class name was quoted whole, twice: an 8 MB answer to a 422."""
    from memogrid_service.api.problems import PROBLEM_TEXT_MAX

    huge = "sklearn." + "A" * 4_000_000
    r = _job(api, data, estimator={"class": huge})
    assert r.status_code == 422, r.text[:500]
    problem = r.json()
    assert "not on the allowlist" in problem["detail"] and "characters left out" in r.text
    assert len(r.content) < 4 * PROBLEM_TEXT_MAX
    _nothing_queued(api)


def test_request_bodies_over_the_limit_are_refused_before_they_are_read(api, settings, data):
    settings.request_max_bytes = 4096
    padding = {"C": [1.0] + [float(i) for i in range(2000)]}  # about 14 kB of JSON
    declared = _job(api, data, param_grid=padding)
    assert declared.status_code == 413, declared.text
    assert "request_max_bytes" in declared.json()["detail"]
    assert declared.headers["content-type"].startswith("application/problem+json")

    def chunks():  # no Content-Length: counted as it arrives
        body = json.dumps({"estimator": {"class": LR}, "param_grid": padding}).encode()
        for i in range(0, len(body), 1000):
            yield body[i : i + 1000]

    chunked = api.post("/v1/jobs", content=chunks(), headers={"content-type": "application/json"})
    assert chunked.status_code == 413, chunked.text
    assert "request_max_bytes" in chunked.json()["detail"]
    _nothing_queued(api)
    # under the limit, the same route works; uploads keep their own, larger cap
    assert _job(api, data).status_code == 202
    big = np.zeros(10_000)  # 80 kB, over request_max_bytes
    assert api.post("/v1/datasets", content=npy_bytes(big), headers=NPY).status_code == 201


def test_nul_characters_are_refused_by_name(api, data):
    # PostgreSQL refuses NUL in text: each must be a 422 naming the item, not a 500
    xid, yid = data
    r = _job(api, data, fit_params={"sample\x00weight": yid})
    assert r.status_code == 422 and "NUL" in r.json()["detail"], r.text
    r = _job(api, data, scoring={"acc\x00": "accuracy"}, refit="acc\x00")
    assert r.status_code == 422 and "NUL" in r.json()["detail"], r.text
    for path, params in (
        ("/v1/results", {"param": "C\x00", "value": "1"}),
        (f"/v1/datasets/{xid}/leaderboard", {"metric": "a\x00"}),
        ("/v1/jobs", {"cursor": "x\x00y"}),
    ):
        r = api.get(path, params=params)
        assert r.status_code == 422 and "NUL" in r.json()["detail"], (path, r.text)
    _nothing_queued(api)


def test_a_body_that_is_not_utf8_is_told_so(api):
    body = b'{"estimator": {"class": "\xff"}}'
    r = api.post("/v1/jobs", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert "not UTF-8 JSON: invalid start byte at byte 25" in r.json()["detail"], r.text
    # JSON Python cannot read is told by what it is, not "an error parsing the body"
    for body, said in (
        (b'{"n_iter": ' + b"1" * 5000 + b"}", "an integer of more than 4300 digits"),
        (b'{"X": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nests arrays or objects too deeply"),
    ):
        r = api.post("/v1/jobs", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 400 and said in r.json()["detail"], r.text
    # a syntax error: the parser's reason and where (it was "[29]: JSON decode error")
    r = api.post(
        "/v1/jobs",
        content=b'{"estimator": {"class": "x"},}',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 422, r.text
    assert r.json()["detail"] == (
        "the request body is not valid JSON: Expecting property name enclosed in double "
        "quotes (at character 29)"
    )
    _nothing_queued(api)


def test_lone_surrogates_are_refused_by_name(api, data):
    # JSON's "\ud800" escape decodes to a lone surrogate: no text a database
    # stores, nor one an answer can encode; each place is a 422 naming it
    pipe = {
        "class": "sklearn.pipeline.Pipeline",
        "params": {"steps": [["\ud800", {"class": LR}]]},
    }
    for over, where in (
        ({"param_grid": {"\ud800": [1]}}, "param_grid"),
        ({"estimator": {"class": LR, "params": {"\ud800": 1}}}, "estimator.params"),
        ({"estimator": {"class": LR, "params": {"C": "\udfff"}}}, "estimator.params.C"),
        ({"estimator": pipe, "param_grid": {"\ud800__C": [1.0, 2.0]}}, "estimator.params"),
    ):
        xid, yid = data
        body = {"estimator": {"class": LR}, "param_grid": {"C": [1.0]}, "X": xid, "y": yid}
        sent = json.dumps({**body, **over})  # ASCII: the surrogate as its escape
        r = api.post("/v1/jobs", content=sent, headers={"content-type": "application/json"})
        assert r.status_code == 422, (over, r.text)
        assert "lone surrogate" in r.json()["detail"], r.text
        assert r.json()["errors"][0]["path"].startswith(where), r.text
        assert "\\ud8" in r.text or "\\udf" in r.text  # the character, escaped
    _nothing_queued(api)


@pytest.mark.parametrize(
    ("filters", "problem"),
    [
        ([["raise", "", "Warning", "", 0]], "the action is one of"),
        ([["error", "(", "Warning", "", 0]], "the message is not a regular expression"),
        ([["error", "a{4294967295}", "Warning", "", 0]], "the message is not a regular expr"),
        ([["error", "", "Warning", "(" * 499 + ")" * 499, 0]], "the module is not a regular expr"),
        ([["error", "", "os.system", "", 0]], "not a warning class the service knows"),
        ([["error", "", "MyWarning", "", 0]], "not a warning class the service knows"),
        ([["error", "", "Warning", "", -1]], "the line is an integer"),
        ([["error", "", "Warning"]], "a filter is [action, message, category, module, lineno]"),
        ([["error", "x" * 1001, "Warning", "", 0]], "1000 characters"),
        ([["error", "", "Warning", "", 2**70]], "the line is an integer"),
        ([["error", "", "Warning", "", True]], "warning_filters"),
        # re takes them; RE2, which the workers match with, does not
        ([["error", "(?=lbfgs)l", "Warning", "", 0]], "no lookaround, backreference"),
        ([["error", r"(a)\1", "Warning", "", 0]], "the message pattern '(a)\\\\1' cannot"),
        ([["error", "", "Warning", "x{1001}", 0]], "the module pattern"),
    ],
)
def test_warning_filters_are_checked_by_path(api, data, filters, problem):
    r = _job(api, data, warning_filters=filters)
    assert r.status_code == 422 and problem in r.json()["detail"], r.text
    assert r.json()["errors"][0]["path"].startswith("warning_filters[0]"), r.text
    _nothing_queued(api)


def test_a_backtracking_filter_pattern_cannot_hold_a_worker(api):
    """Python's re takes about 2**n steps to find that (.+)+~ does not match
    a warning's first line of n characters (a convergence warning's: ~2**57).
    The workers match the caller's filters in linear time, inside
    scikit-learn's Parallel too (OneVsRestClassifier fits through it, which
    rebuilds a task's warnings filters with re): the job ends, with the
    results of the same search without the filter, whose pattern matches
    nothing; a pattern that matches still fails those fits."""
    X, y = make_classification(n_samples=60, n_features=4, random_state=0)
    xid, yid = upload(api, X), upload(api, y)
    ovr = {
        "class": "sklearn.multiclass.OneVsRestClassifier",
        "params": {"estimator": {"class": LR}},
    }
    body = {
        "estimator": ovr,
        "param_grid": {"estimator__max_iter": [4, 100]},  # 4 does not converge
        "X": xid,
        "y": yid,
        "cv": 3,
    }

    def scores(filters):
        r = api.post("/v1/jobs", json=dict(body, warning_filters=filters))
        assert r.status_code == 202, r.text
        assert wait_job(api, r.json()["id"], timeout=60)["state"] == "succeeded"
        res = api.get(f"/v1/jobs/{r.json()['id']}/results").json()
        return decode_cv_results(res["cv_results"])["mean_test_score"]

    plain = scores([])
    assert np.isfinite(plain).all()
    hostile = scores([["error", "(.+)+~", "ConvergenceWarning", "", 0]])
    assert hostile.tobytes() == plain.tobytes()
    failing = scores([["error", "(.+)+converge", "ConvergenceWarning", "", 0]])
    assert np.isnan(failing[0]) and failing[1] == plain[1]


def test_a_numpy_float_tag_holding_a_huge_integer_is_refused(api, data):
    """Python cannot make a float of 10**400 (OverflowError): a 422 by path, not a 500."""
    for name in ("float32", "float16"):
        huge = {"numpy": name, "value": 10**400}
        for over, where in (
            ({"param_grid": {"C": [huge]}}, "param_grid.C"),
            ({"estimator": {"class": LR, "params": {"C": huge}}}, "params.C"),
        ):
            r = _job(api, data, **over)
            assert r.status_code == 422 and f"does not fit a {name}" in r.text, r.text
            assert where in r.json()["errors"][0]["path"], r.text
    _nothing_queued(api)
    # an integer a float32 holds is one
    r = _job(api, data, param_grid={"C": [{"numpy": "float32", "value": 10**20}]})
    assert r.status_code == 202, r.text
    assert wait_job(api, r.json()["id"])["state"] == "succeeded"


def test_long_lists_of_grids_or_distributions_are_refused_before_building(api, data):
    """Each dict costs its building (a distribution ~1 ms): bounded up front."""
    dist = {"C": {"distribution": "loguniform", "args": [0.01, 10.0]}}
    for over, problem in (
        ({"param_grid": [{"C": [1.0]}] * 10_001}, "at most 10000 dicts, not 10001"),
        (
            {"param_grid": None, "param_distributions": [dist] * 1001, "n_iter": 2},
            "at most 1000 dicts, not 1001",
        ),
    ):
        r = _job(api, data, **over)
        assert r.status_code == 422 and problem in r.text, r.text[:300]
    _nothing_queued(api)


def test_text_groups_are_counted_without_being_made_numpy_text(api, data):
    """LeaveOneGroupOut counts the groups when the job is submitted. As
    numpy text, 200 group names with one of 3,000,000 characters take 2.4 GB
    (the store refused them: a 500) and one of 100,000 took 80 MB that the
    API kept; they are counted as the strings they are, and kept by nobody.
    The search itself sees them as scikit-learn would, numpy text: the
    first fails, saying so."""
    from memogrid.data import TEXT_TYPE, text_parts, text_pieces

    X = np.random.RandomState(0).normal(size=(200, 3))
    xid, yid = upload(api, X), upload(api, (X[:, 0] > 0).astype(int))
    store = api.app.state.services.store
    for longest, ends in ((3_000_000, "failed"), (100_000, "succeeded")):
        names = [f"g{i % 4}" for i in range(199)] + ["x" * longest]
        offsets, blob = text_parts(names)
        r = api.post(
            "/v1/datasets",
            content=b"".join(text_pieces(offsets, blob)),
            headers={"content-type": TEXT_TYPE},
        )
        assert r.status_code == 201, r.text
        gid = r.json()["id"]
        cv = {"class": "sklearn.model_selection.LeaveOneGroupOut"}
        r = _job(api, (xid, yid), groups=gid, cv=cv, scoring="no-such-scorer")
        assert r.status_code == 422 and "no-such-scorer" in r.text, r.text  # counted, then refused
        r = _job(api, (xid, yid), groups=gid, cv=cv)
        assert r.status_code == 202, r.text
        job = wait_job(api, r.json()["id"])
        assert job["state"] == ends, job
        if ends == "failed":
            assert "numpy text" in job["error"], job["error"]
        assert not any(key.startswith(gid) for key in store._loaded)


def test_return_train_score_is_a_boolean(api, data):
    """scikit-learn refuses return_train_score="yes"; so does the service
    (it was read as true)."""
    for value in ("yes", 1, "true"):
        r = _job(api, data, return_train_score=value)
        assert r.status_code == 422 and "return_train_score" in r.text, (value, r.text)
    _nothing_queued(api)


def test_object_arrays_must_name_string_or_number_arrays_of_the_job(api, data):
    frame = upload(api, pd.DataFrame({"a": np.arange(60.0)}))
    for roles, over, problem in [
        (["X"], {"X": frame}, "not an array of strings or numbers"),  # a DataFrame
        (["groups"], {}, "names no dataset"),
    ]:
        r = _job(api, data, object_arrays=roles, **over)
        assert r.status_code == 422 and problem in r.json()["detail"], r.text
    r = _job(api, data, object_arrays=["weights"])  # not a role at all
    assert r.status_code == 422 and "object_arrays" in r.text
    _nothing_queued(api)


_NA = {"constant": "pandas.NA"}
_SC = {"class": "sklearn.preprocessing.StandardScaler"}
_PIPE = "sklearn.pipeline.Pipeline"
_SPLIT = "sklearn.model_selection."


def _steps(*steps):
    return {"class": _PIPE, "params": {"steps": list(steps)}}


@pytest.mark.parametrize(
    "over, where",
    [
        # a name slot holding a structure instead of a name
        ({"param_grid": {"C": [{"type": _NA}]}}, "param_grid.C[0]"),
        ({"param_grid": {"C": [{"float": {"tuple": []}}]}}, "param_grid.C[0]"),
        ({"scoring": {"make_scorer": {"function": _NA}}}, "scoring.make_scorer.function"),
        ({"scoring": {"m": {"make_scorer": {"function": ["f1_score"]}}}}, "scoring.m"),
        # splitter counts their constructors do not check
        ({"cv": {"class": _SPLIT + "ShuffleSplit", "params": {"n_splits": _NA}}}, "n_splits"),
        ({"cv": {"class": _SPLIT + "ShuffleSplit", "params": {"n_splits": [3]}}}, "n_splits"),
        (
            {"cv": {"class": _SPLIT + "StratifiedShuffleSplit", "params": {"n_splits": True}}},
            "n_splits",
        ),
        ({"cv": {"class": _SPLIT + "LeavePGroupsOut", "params": {"n_groups": -1}}}, "n_groups"),
        ({"cv": {"class": _SPLIT + "RepeatedKFold", "params": {"n_splits": "x"}}}, "n_splits"),
        ({"cv": {"class": _SPLIT + "KFold", "params": []}}, "cv.params"),
        ({"cv": {"class": _SPLIT + "KFold", "params": ""}}, "cv.params"),
        # malformed pipeline steps, in the estimator and in a grid
        ({"estimator": _steps([{"tuple": ["sc"]}, _SC], ["lr", {"class": LR}])}, "steps[0]"),
        ({"estimator": _steps([_NA, _SC], ["lr", {"class": LR}])}, "steps[0]"),
        ({"estimator": _steps(["sc", {"tuple": [_SC]}], ["lr", {"class": LR}])}, "steps[0][1]"),
        ({"estimator": _steps(["sc", _NA], ["lr", {"class": LR}])}, "steps[0][1]"),
        ({"estimator": _steps({"tuple": ["sc", _SC, 1]}, ["lr", {"class": LR}])}, "steps[0]"),
        ({"estimator": _steps({"tuple": ["sc"]}, ["lr", {"class": LR}])}, "steps[0]"),
    ],
)
def test_malformed_names_steps_and_splitters_are_a_422(api, data, over, where):
    body = {"param_grid": {"C": [1.0]}, **over}
    if "estimator" in over:
        body["param_grid"] = {"lr__C": [1.0]}
    r = _job(api, data, **body)
    assert r.status_code == 422, r.text
    assert any(where in e["path"] for e in r.json()["errors"]), r.text
    _nothing_queued(api)


def test_a_grid_setting_a_step_to_a_non_step_fails_those_fits(api, data):
    """As in scikit-learn, where Pipeline.fit refuses such a step: that
    candidate scores NaN, the others run."""
    pipe = _steps(["sc", _SC], ["lr", {"class": LR}])
    for bad in ({"tuple": [_SC]}, _NA, 3):
        r = _job(api, data, estimator=pipe, param_grid={"sc": [bad, _SC], "lr__C": [1.0]})
        assert r.status_code == 202, r.text
        assert wait_job(api, r.json()["id"])["state"] == "succeeded"
        res = api.get(f"/v1/jobs/{r.json()['id']}/results").json()
        scores = decode_cv_results(res["cv_results"])["mean_test_score"]
        assert np.isnan(scores[0]) and np.isfinite(scores[1]), scores
    r = _job(api, data, estimator=pipe, param_grid={"sc": ["passthrough", None, _SC]})
    assert r.status_code == 202, r.text
    assert wait_job(api, r.json()["id"])["state"] == "succeeded"
    # a splitter's params written as null are no params, shuffled or not; a
    # max_train_size of 0 is no limit, as scikit-learn reads it
    for cv in (
        {"class": _SPLIT + "ShuffleSplit", "params": None},
        {"class": _SPLIT + "TimeSeriesSplit", "params": {"max_train_size": 0}},
    ):
        r = _job(api, data, cv=cv)
        assert r.status_code == 202, r.text
        assert wait_job(api, r.json()["id"])["state"] == "succeeded"


def test_counts_past_what_python_prints_are_a_422_in_words(api, data, settings):
    # 15,000 keys of two values: 2**15000 candidates, a number Python refuses
    # to print (over 4300 digits); the message gives its size instead
    huge = {f"k{i}": [0, 1] for i in range(15_000)}
    r = _job(api, data, param_grid=huge)
    assert r.status_code == 422, r.text
    assert "about 10^4515 candidates" in r.json()["detail"], r.text
    # a number error_score beyond a float's range: scikit-learn's search fails
    # as it writes it into cv_results_; refused up front, not failed at run time
    r = _job(api, data, error_score=10**400)
    assert r.status_code == 422 and "beyond a float's range" in r.json()["detail"], r.text
    assert _job(api, data, error_score=-(10**300)).status_code == 202
    # explicit folds are counted against the cap before any is read or checked
    many = {"folds": "no-such-dataset", "sizes": [[1, 1]] * (settings.grid_max_fits + 1)}
    r = _job(api, data, cv=many)
    assert r.status_code == 422 and "above the limit" in r.json()["detail"], r.text


def test_leave_p_groups_out_is_counted_only_as_far_as_the_cap(api, data):
    import time

    X = np.zeros((20_000, 2))
    y = np.arange(20_000) % 2
    xid, yid = upload(api, X), upload(api, y)
    lpgo = {"class": _SPLIT + "LeavePGroupsOut", "params": {"n_groups": 3000}}
    body = {"X": xid, "y": yid, "groups": upload(api, np.arange(20_000)), "cv": lpgo}
    started = time.perf_counter()
    r = _job(api, (xid, yid), **body)  # comb(20000, 3000): a number of 2,300 digits
    assert r.status_code == 422 and "above the limit" in r.json()["detail"], r.text
    assert "more than 1000000000000000 folds = more than" in r.json()["detail"], r.text
    assert time.perf_counter() - started < 5
    # no more distinct groups than n_groups: scikit-learn's split refuses that
    few = {"groups": upload(api, np.arange(20_000) % 3), "cv": {**lpgo, "params": {"n_groups": 3}}}
    r = _job(api, (xid, yid), **{**body, **few})
    assert r.status_code == 422, r.text
    assert "at least n_groups + 1 (4) unique groups" in r.json()["detail"], r.text
    # a count under the cap stands: comb(4, 2) = 6 folds, run as scikit-learn's
    four = {"groups": upload(api, np.arange(20_000) % 4), "cv": {**lpgo, "params": {"n_groups": 2}}}
    r = _job(api, (xid, yid), **{**body, **four})
    assert r.status_code == 202, r.text
    assert api.get(f"/v1/jobs/{r.json()['id']}").json()["progress"]["total"] == 6
