"""Every kind of search over HTTP equals scikit-learn's: randomized, groups,
splitter specs, routed fit params, DataFrames with ColumnTransformer, multimetric."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import loguniform
from sklearn.compose import ColumnTransformer
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, GroupKFold, RandomizedSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.svm import SVC

from memogrid.spec import cv_to_spec, to_distributions, to_grid, to_spec
from memogrid.wire import decode_cv_results, decode_value
from tests.api.conftest import upload, wait_job
from tests.helpers.parity import assert_cv_results_equal, same_value


def run(api, body) -> dict:
    r = api.post("/v1/jobs", json=body)
    assert r.status_code == 202, r.text
    status = wait_job(api, r.json()["id"])
    assert status["state"] == "succeeded", status["error"]
    return api.get(f"/v1/jobs/{status['id']}/results").json()


def check(res, sk):
    assert_cv_results_equal(decode_cv_results(res["cv_results"]), sk.cv_results_)
    if hasattr(sk, "best_index_"):
        assert res["best_index"] == sk.best_index_
        best = decode_value(res["best_params"])
        assert list(best) == list(sk.best_params_)
        assert all(same_value(best[k], v) for k, v in sk.best_params_.items())


@pytest.fixture(scope="module")
def data():
    X, y = make_classification(n_samples=150, n_features=8, random_state=3)
    groups = np.arange(150) % 6
    weights = np.linspace(0.5, 2.0, 150)
    return X, y, groups, weights


def test_randomized_with_groups_and_sample_weight(api, data):
    X, y, groups, w = data
    pipe = Pipeline([("scale", StandardScaler()), ("svc", SVC())])
    dists = {"svc__C": loguniform(1e-2, 1e2), "svc__kernel": ["rbf", "linear"]}
    cv = GroupKFold(n_splits=3)
    sk = RandomizedSearchCV(pipe, dists, n_iter=6, random_state=11, cv=cv)
    sk.fit(X, y, groups=groups, svc__sample_weight=w)
    ids = {k: upload(api, v) for k, v in dict(X=X, y=y, groups=groups, w=w).items()}
    res = run(
        api,
        {
            "estimator": to_spec(pipe),
            "param_distributions": to_distributions(dists),
            "n_iter": 6,
            "random_state": 11,
            "X": ids["X"],
            "y": ids["y"],
            "groups": ids["groups"],
            "cv": cv_to_spec(cv),
            "fit_params": {"svc__sample_weight": ids["w"]},
        },
    )
    check(res, sk)


def test_frame_with_column_transformer_multimetric(api):
    rng = np.random.RandomState(0)
    df = pd.DataFrame(
        {
            "color": pd.Categorical(rng.choice(["r", "g", "b"], 120)),
            "size": rng.normal(size=120),
            "n": rng.randint(0, 5, 120),
        }
    )
    y = (df["size"] + (df["color"] == "r") > 0.3).astype(int).to_numpy()
    pipe = Pipeline(
        [
            (
                "ct",
                ColumnTransformer(
                    [("oh", OneHotEncoder(), ["color"]), ("num", StandardScaler(), ["size", "n"])]
                ),
            ),
            ("clf", LogisticRegression()),
        ]
    )
    grid = {"clf__C": [0.1, 1.0, 10.0], "ct__num": [StandardScaler(), "passthrough"]}
    scoring = ["accuracy", "f1"]
    sk = GridSearchCV(pipe, grid, scoring=scoring, refit="f1", cv=4, return_train_score=True)
    sk.fit(df, y)
    res = run(
        api,
        {
            "estimator": to_spec(pipe),
            "param_grid": to_grid(grid),
            "X": upload(api, df),
            "y": upload(api, y),
            "cv": 4,
            "scoring": scoring,
            "refit": "f1",
            "return_train_score": True,
        },
    )
    check(res, sk)
    assert res["refit_metric"] == "f1" and res["multimetric"]


def test_column_names_need_a_frame(api):
    pipe = ColumnTransformer([("num", StandardScaler(), ["size"])])
    X = np.ones((10, 2))
    r = api.post(
        "/v1/jobs",
        json={
            "estimator": to_spec(Pipeline([("ct", pipe), ("clf", LogisticRegression())])),
            "param_grid": {"clf__C": [1.0]},
            "X": upload(api, X),
            "y": upload(api, np.arange(10) % 2),
        },
    )
    assert r.status_code == 422 and "DataFrame" in r.json()["detail"]


def test_explicit_folds_any_shape_as_scikit_learn_takes_them(api, api_as, data):
    """cv as explicit (train, test) index pairs, uploaded as one integer array:
    forward-chaining, overlapping, repeated or unordered folds all run as
    scikit-learn runs them, in the order given."""
    X, y, _, _ = data
    folds = [
        (np.arange(0, 60), np.arange(60, 90)),  # forward: train is not the rest
        (np.arange(0, 90)[::-1], np.arange(90, 150)),  # train rows in reverse
        (np.r_[0:40, 0:40], np.arange(100, 150)),  # a row twice (bootstrap-like)
        (np.arange(20, 150), np.arange(0, 40)),  # overlaps the third fold's train
        (np.arange(0, 100), np.arange(-50, 0)),  # negative: from the end, as numpy's
    ]
    pipe = Pipeline([("scale", StandardScaler()), ("svc", SVC())])
    grid = {"svc__C": [0.5, 2.0]}
    sk = GridSearchCV(pipe, grid, cv=folds, return_train_score=True).fit(X, y)
    indices = np.concatenate([part for fold in folds for part in fold])
    body = {
        "estimator": to_spec(pipe),
        "param_grid": to_grid(grid),
        "X": upload(api, X),
        "y": upload(api, y),
        "cv": {"folds": upload(api, indices), "sizes": [[len(a), len(b)] for a, b in folds]},
        "return_train_score": True,
    }
    res = run(api, body)
    check(res, sk)
    assert res["n_splits"] == 5 == sk.n_splits_

    def refused(cv, path, words, client=api):
        r = client.post("/v1/jobs", json={**body, "cv": cv})
        assert r.status_code == 422, r.text
        problem = r.json()
        assert words in problem["detail"] and problem["errors"][0]["path"] == path, problem

    sizes = body["cv"]["sizes"]
    refused({"folds": body["cv"]["folds"]}, "cv", "sizes")
    refused({**body["cv"], "sizes": [[60, "30"]]}, "cv.sizes[0]", "[n_train, n_test]")
    refused({**body["cv"], "sizes": sizes[:4]}, "cv.folds", "sizes add to")
    refused({**body["cv"], "folds": body["X"]}, "cv.folds", "one-dimensional integer array")
    refused({**body["cv"], "folds": upload(api, indices.astype(float))}, "cv.folds", "integer")
    bad = indices.copy()
    bad[-1] = 150
    refused({**body["cv"], "folds": upload(api, bad)}, "cv.folds[4]", "outside the 150 rows")
    bad[-1] = -151
    refused({**body["cv"], "folds": upload(api, bad)}, "cv.folds[4]", "outside the 150 rows")
    refused({**body["cv"], "folds": "0" * 64}, "cv.folds", "unknown dataset")
    # another user cannot name alice's folds: they are hers, as X is
    bob = api_as("bob")
    mine = {r: upload(bob, v) for r, v in (("X", X), ("y", y))}
    r = bob.post("/v1/jobs", json={**body, **mine})
    assert r.status_code == 422 and "unknown dataset" in r.json()["detail"], r.text


def test_randomized_lists_with_n_iter_beyond_the_cap_search_the_grid(api, data):
    """Lists only: scikit-learn draws each point at most once, warns, and
    searches the grid whatever n_iter is; so does a job with an n_iter far
    above the fits cap (2,000 here). A distribution makes n_iter candidates,
    and above the cap that is refused, naming n_iter."""
    import warnings

    X, y, _, _ = data
    lists = {"C": [0.1, 1.0, 10.0], "fit_intercept": [True, False]}
    ids = {k: upload(api, v) for k, v in dict(X=X, y=y).items()}
    base = {"estimator": to_spec(LogisticRegression()), "X": ids["X"], "y": ids["y"], "cv": 3}
    for n_iter in (5_000, 10**12):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            sk = RandomizedSearchCV(
                LogisticRegression(), lists, n_iter=n_iter, random_state=4, cv=3
            )
            sk.fit(X, y)
        body = dict(base, param_distributions=to_distributions(lists), n_iter=n_iter)
        res = run(api, dict(body, random_state=4))
        check(res, sk)
        said = [str(w.message) for w in caught if "smaller than n_iter" in str(w.message)]
        assert said and any(said[0] in w for w in res["warnings"]), res["warnings"]
    dists = {"C": loguniform(1e-2, 1e2)}
    for n_iter, said in ((5_000, "above the limit"), (2**63, "less than or equal")):
        body = dict(base, param_distributions=to_distributions(dists), n_iter=n_iter)
        r = api.post("/v1/jobs", json=body)
        assert r.status_code == 422 and said in r.text and "n_iter" in r.text, r.text
