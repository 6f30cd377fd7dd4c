"""The thin client and the drop-in searches, against the real app in-process."""

from __future__ import annotations

import io
import time

import httpx
import numpy as np
import pandas as pd
import pytest
from scipy.stats import loguniform
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.datasets import make_classification
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import GridSearchCV as SkGridSearchCV
from sklearn.model_selection import RandomizedSearchCV as SkRandomizedSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

import memogrid
from memogrid import Client, GridSearchCV, RandomizedSearchCV
from tests.helpers.parity import assert_cv_results_equal

GRID = {"pca__n_components": [5, 10, 20], "logistic__C": [1e-4, 1e-2, 1, 1e2, 1e4, 1e6]}


def seed_pipe():
    return Pipeline(
        [("pca", PCA()), ("logistic", LogisticRegression(solver="liblinear", random_state=0))]
    )


@pytest.fixture(scope="module")
def seed_data():
    return make_classification(n_samples=300, n_features=30, n_redundant=10, random_state=42)


@pytest.fixture
def mg(api):
    with Client(http=api) as client:
        yield client


def _wait_running(job, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = job.status()
        if st["state"] == "running" and st["progress"]["done"] > 0:
            return st
        time.sleep(0.02)
    raise AssertionError(f"job never ran: {st}")


def test_seed_example_through_submit(mg, seed_data):
    X, y = seed_data
    job = mg.submit(seed_pipe(), GRID, X, y, cv=5)
    job.wait(progress=False)
    sk = SkGridSearchCV(seed_pipe(), GRID, cv=5).fit(X, y)
    assert_cv_results_equal(job.cv_results_, sk.cv_results_)
    assert job.best_params_ == sk.best_params_
    assert job.best_score_ == sk.best_score_ and job.best_index_ == sk.best_index_
    assert type(job.best_score_) is type(sk.best_score_)
    assert type(job.best_index_) is type(sk.best_index_)
    assert job.n_splits_ == 5 and not job.multimetric_
    best = job.best_estimator_
    assert type(best) is Pipeline
    assert np.array_equal(best.predict_proba(X), sk.best_estimator_.predict_proba(X))
    frame = job.to_frame()
    assert list(frame.columns) == list(sk.cv_results_) and len(frame) == 18
    assert len(job.warnings) == 1 and "pca (PCA)" in job.warnings[0]  # random_state=None

    # the same X and y again: nothing uploaded; an overlapping grid hits the cache
    uploads = mg.uploads
    job2 = mg.submit(seed_pipe(), dict(GRID, logistic__C=[1e-2, 7.0]), X, y, cv=5).wait(
        progress=False
    )
    assert mg.uploads == uploads
    assert job2.stats["step_fits"] == 0 and job2.stats["score_hits"] == 15

    # reattach from another session
    with Client(http=mg._http) as other:
        again = other.job(job.id)
        assert again.state == "succeeded"
        assert_cv_results_equal(again.cv_results_, sk.cv_results_)

    # queries
    board = mg.leaderboard(X, limit=5)
    assert len(board) == 5 and board[0]["mean_score"] == pytest.approx(sk.best_score_)
    assert {j["id"] for j in mg.jobs(state="succeeded", dataset=X)} == {job.id, job2.id}
    assert len(mg.jobs(limit=1)) == 1
    rows = mg.results("logistic__C", 1e-2)
    assert {r["job_id"] for r in rows} == {job.id, job2.id}
    assert mg.cache_stats()["entries"] > 0


def test_submitted_jobs_keep_the_callers_values(mg, seed_data):
    """A job's params and param_* columns hold the grid's own values (numpy
    scalars stay numpy scalars, as in scikit-learn's cv_results_), and the
    queries give params back as Python values, estimators built."""
    X, y = seed_data
    pipe = Pipeline([("scale", "passthrough"), ("logistic", LogisticRegression())])
    grid = {
        "logistic__C": [np.float64(0.5), np.float32(2.0), np.int64(3)],
        "logistic__class_weight": [None, {0: 1, 1: 2}],
        "scale": ["passthrough", PCA(5)],
    }
    job = mg.submit(pipe, grid, X, y, cv=3).wait(progress=False)
    sk = SkGridSearchCV(pipe, grid, cv=3).fit(X, y)
    assert_cv_results_equal(job.cv_results_, sk.cv_results_)
    for ours, theirs in zip(job.cv_results_["params"], sk.cv_results_["params"], strict=True):
        assert {k: type(v) for k, v in ours.items()} == {k: type(v) for k, v in theirs.items()}
    assert job.cv_results_["param_logistic__C"].dtype == sk.cv_results_["param_logistic__C"].dtype
    assert job.best_params_ == sk.best_params_
    assert type(job.best_params_["logistic__C"]) is type(sk.best_params_["logistic__C"])

    # a randomized search with a seed: the candidates scikit-learn draws, as drawn
    dists = {"logistic__C": loguniform(1e-2, 1e2), "scale": ["passthrough", PCA(5)]}
    rjob = mg.submit_random(pipe, dists, X, y, n_iter=4, random_state=1, cv=3).wait(progress=False)
    rsk = SkRandomizedSearchCV(pipe, dists, n_iter=4, random_state=1, cv=3).fit(X, y)
    assert_cv_results_equal(rjob.cv_results_, rsk.cv_results_)
    assert [type(p["logistic__C"]) for p in rjob.cv_results_["params"]] == [
        type(p["logistic__C"]) for p in rsk.cv_results_["params"]
    ]

    # reattached elsewhere, the values are JSON's: equal, if not the same types
    with Client(http=mg._http) as other:
        assert_cv_results_equal(other.job(job.id).cv_results_, sk.cv_results_)

    rows = mg.results("logistic__C", 3, dataset=X)
    assert len(rows) == 4 and {r["job_id"] for r in rows} == {job.id}
    for row in rows:
        params = row["params"]
        assert params["logistic__C"] == 3
        assert params["logistic__class_weight"] in (None, {0: 1, 1: 2})
        assert params["scale"] == "passthrough" or type(params["scale"]) is PCA
    pcas = [r["params"]["scale"] for r in rows if r["params"]["scale"] != "passthrough"]
    assert len(pcas) == 2 and all(p.get_params() == PCA(5).get_params() for p in pcas)
    board = mg.leaderboard(X, limit=3)
    assert all(isinstance(r["params"]["logistic__C"], float | int) for r in board)
    assert any(not isinstance(r["params"]["scale"], str | dict) for r in mg.leaderboard(X))


def test_drop_in_grid_search(mg, seed_data):
    X, y = seed_data
    ours = GridSearchCV(seed_pipe(), GRID, cv=5, client=mg, progress=False)
    assert clone(ours).get_params()["param_grid"] == GRID
    assert ours.fit(X, y) is ours
    sk = SkGridSearchCV(seed_pipe(), GRID, cv=5).fit(X, y)
    assert ours.best_params_ == sk.best_params_ and ours.best_score_ == sk.best_score_
    assert_cv_results_equal(ours.cv_results_, sk.cv_results_)
    for method in ("predict", "predict_proba", "decision_function"):
        assert np.array_equal(getattr(ours, method)(X), getattr(sk, method)(X))
    assert ours.score(X, y) == sk.score(X, y)
    assert np.array_equal(ours.classes_, sk.classes_) and ours.n_features_in_ == 30
    assert not hasattr(ours, "transform")  # LogisticRegression has none
    ours.set_params(cv=3)
    assert ours.get_params()["cv"] == 3


def test_drop_in_randomized_search_multimetric(mg, seed_data):
    X, y = seed_data
    dists = {"logistic__C": loguniform(1e-3, 1e3), "pca__n_components": [5, 10]}
    kw = dict(n_iter=5, random_state=3, cv=3, scoring=["accuracy", "f1"], refit="f1")
    ours = RandomizedSearchCV(seed_pipe(), dists, client=mg, progress=False, **kw).fit(X, y)
    sk = SkRandomizedSearchCV(seed_pipe(), dists, **kw).fit(X, y)
    assert_cv_results_equal(ours.cv_results_, sk.cv_results_)
    assert ours.best_index_ == sk.best_index_ and ours.multimetric_
    assert ours.score(X, y) == sk.score(X, y)


class Custom(TransformerMixin, BaseEstimator):
    def fit(self, X, y=None):
        return self

    def transform(self, X):
        return X


def test_inexpressible_objects_fail_before_anything_is_sent(mg, seed_data):
    X, y = seed_data
    bad = [
        Pipeline([("f", FunctionTransformer(lambda x: x)), ("lr", LogisticRegression())]),
        Pipeline([("c", Custom()), ("lr", LogisticRegression())]),
    ]
    for pipe in bad:
        with pytest.raises(memogrid.SpecError, match="allowlist|not"):
            mg.submit(pipe, {"lr__C": [1.0]}, X, y)
    with pytest.raises(memogrid.SpecError, match="scoring"):
        mg.submit(seed_pipe(), GRID, X, y, scoring=lambda est, X, y: 1.0)
    with pytest.raises(memogrid.SpecError, match="cv"):
        mg.submit(seed_pipe(), GRID, X, y, cv=[(np.arange(10), np.linspace(0, 1, 3))])
    assert mg.uploads == 0 and mg.jobs() == []


def test_a_client_on_another_encoding_is_told_which(mg, monkeypatch):
    """A client whose frame ids differ from the service's (one memogrid
    ahead of the other) is told which encodings differ, not only that ids do."""
    import memogrid.data

    df = pd.DataFrame({"a": [1.0, 2.0, 3.0]})
    monkeypatch.setattr(memogrid.data, "hash_table", lambda table: "f" * 64)
    monkeypatch.setattr(
        memogrid.data,
        "ENCODINGS",
        ("memogrid-array-v1", "memogrid-frame-v9", "memogrid-text-v1", "memogrid-sparse-v1"),
    )
    with pytest.raises(memogrid.DataError, match="disagree on the content encoding") as err:
        mg.upload(df)
    assert "memogrid-frame-v9" in str(err.value) and "memogrid-frame-v5" in str(err.value)
    assert mg._json("GET", "/v1/health")["encodings"] == [
        "memogrid-array-v1",
        "memogrid-frame-v5",
        "memogrid-text-v1",
        "memogrid-sparse-v1",
    ]


def test_error_types(mg, seed_data, monkeypatch):
    X, y = seed_data
    with pytest.raises(memogrid.NotFound, match="not found"):
        mg.job("0" * 32)
    for bad in ("nope", "0" * 31, "A" * 32, 7):  # not ids: a NotFound saying so, no request
        with pytest.raises(memogrid.NotFound, match="32 lowercase hex digits"):
            mg.job(bad)
    # the server's 422, with its path
    with pytest.raises(memogrid.SpecError) as info:
        mg.submit(seed_pipe(), {"svm__C": [1.0]}, X, y)
    assert "svm__C" in str(info.value) and info.value.status == 422
    path = info.value.path
    assert str(info.value).startswith(f"{path}: ") and not info.value.message.startswith(path)
    with pytest.raises(memogrid.SpecError) as info:  # checked by the service only
        mg.submit(seed_pipe(), GRID, X, y[:-5])
    assert str(info.value).count("y: ") == 1, str(info.value)
    # a failing job
    job = mg.submit(seed_pipe(), {"pca__n_components": [500]}, X, y, error_score="raise")
    with pytest.raises(memogrid.JobFailed) as failed:
        job.wait(progress=False)
    assert "n_components=500" in failed.value.error
    with pytest.raises(memogrid.JobFailed):
        job.cv_results_  # noqa: B018
    # too large for the service's cap (8 MiB in these tests)
    with pytest.raises(memogrid.TooLarge, match="exceeds"):
        mg.upload(np.zeros(2 << 20))
    # refused data
    with pytest.raises(memogrid.DataError, match="holding dict values"):
        mg.upload(np.array([{"a": 1}], dtype=object))
    with pytest.raises(memogrid.DataError, match="holding float, str values.*DataFrame"):
        mg.upload(np.array([["a", 1.0], ["b", 2.0]], dtype=object))
    # nobody there: retried, then a TransportError
    monkeypatch.setattr("memogrid.client.RETRY_BACKOFF", 0.01)
    with Client("http://127.0.0.1:9") as nowhere, pytest.raises(memogrid.TransportError):
        nowhere.health()
    for cls in (memogrid.NotFound, memogrid.JobFailed, memogrid.TransportError):
        assert issubclass(cls, memogrid.MemogridError)


def test_cancel_wait_timeout_progress_bar_and_delete(mg, seed_data, monkeypatch):
    X, y = make_classification(n_samples=4000, n_features=60, random_state=5)
    big = {"pca__n_components": list(range(2, 42)), "logistic__C": list(np.logspace(-3, 3, 8))}
    job = mg.submit(seed_pipe(), big, X, y, cv=5)  # 1600 fits: a while on two cores
    with pytest.raises(memogrid.Conflict, match="cancel it first"):
        job.delete()
    with pytest.raises(memogrid.WaitTimeout):
        job.wait(timeout=0.05, progress=False)

    class Tty(io.StringIO):
        def isatty(self):
            return True

    out = Tty()
    monkeypatch.setattr("sys.stderr", out)
    with pytest.raises(memogrid.WaitTimeout):
        job.wait(timeout=1.5)
    text = out.getvalue()
    assert f"memogrid {job.id[:8]}" in text and "hits=" in text and "/1600" in text
    quiet = Tty()
    monkeypatch.setattr("sys.stderr", quiet)
    with pytest.raises(memogrid.WaitTimeout):
        job.wait(timeout=0.3, progress=False)
    assert quiet.getvalue() == ""

    _wait_running(job)
    job.cancel()
    with pytest.raises(memogrid.JobCancelled):
        job.wait(timeout=30, progress=False)
    assert job.status()["state"] == "cancelled"
    with pytest.raises(memogrid.Conflict, match="cancel"):
        job.cancel()
    job.delete()
    with pytest.raises(memogrid.NotFound):
        mg.job(job.id)


def test_auth_errors_and_rate_limits_reach_the_user_as_memogrid_errors(api, settings):
    from fastapi.testclient import TestClient

    anonymous = TestClient(api.app)
    with Client(http=anonymous) as client:
        with pytest.raises(memogrid.AuthError, match="bearer token is required") as info:
            client.jobs()
        assert info.value.status == 401
    with Client(http=TestClient(api.app), token="mg_0000_wrong") as client:
        with pytest.raises(memogrid.AuthError, match="unknown, expired or revoked"):
            client.cache_stats()
    # over the per-token rate: RateLimited, with the service's message
    api.app.state.services.limiter.rate = 0.001
    api.app.state.services.limiter.capacity = 1.0
    with Client(http=api) as client:
        with pytest.raises(memogrid.RateLimited, match="too many requests"):
            for _ in range(5):
                client.jobs()


def test_a_tight_rate_is_waited_out_and_a_missing_token_named(api, monkeypatch):
    """Over the per-token rate, each call waits as the service advises
    (a job's submit too: the service did nothing with a request it
    answered 429), so a drop-in search under a tight rate finishes; a
    submit without a token says how to give one."""
    from fastapi.testclient import TestClient

    limiter = api.app.state.services.limiter
    monkeypatch.setattr(limiter, "rate", 2.0)  # two a second, bursts of three
    monkeypatch.setattr(limiter, "capacity", 3.0)
    X, y = make_classification(n_samples=60, n_features=4, random_state=0)
    with Client(http=api) as client:
        start = time.monotonic()
        for _ in range(6):
            client.jobs()
        assert time.monotonic() - start >= 1.0  # some of them waited
        search = GridSearchCV(LogisticRegression(), {"C": [0.1, 1.0]}, client=client)
        search.set_params(progress=False).fit(X, y)
        sk = SkGridSearchCV(LogisticRegression(), {"C": [0.1, 1.0]}).fit(X, y)
        assert_cv_results_equal(search.cv_results_, sk.cv_results_)
    with Client(http=TestClient(api.app)) as anonymous:
        with pytest.raises(memogrid.AuthError, match="MEMOGRID_TOKEN"):
            anonymous.submit(LogisticRegression(), {"C": [1.0]}, X, y)


def test_best_estimator_types_are_audited():
    import skops.io as sio
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.feature_selection import SelectKBest, f_classif

    from memogrid.client import load_audited
    from memogrid.spec import to_spec

    X, y = make_classification(n_samples=80, n_features=6, random_state=0)
    pipe = Pipeline(
        [("k", SelectKBest(f_classif, k=3)), ("rf", RandomForestClassifier(n_estimators=3))]
    ).fit(X, y)
    request = {"estimator": to_spec(pipe)}
    # trees and the named score function load: the spec asked for them
    loaded = load_audited(sio.dumps(pipe), request)
    assert np.array_equal(loaded.predict(X), pipe.predict(X))
    # a type the spec does not name is refused, not loaded
    other = LogisticRegression().fit(X, y)
    with pytest.raises(memogrid.DataError, match="LogisticRegression"):
        load_audited(sio.dumps(other), request)


def test_the_best_estimator_is_audited_against_the_spec_this_process_sent(mg):
    """The types a downloaded estimator may hold come from the spec the
    client sent, not from the service's copy of the request (a hostile or
    broken service could name others); a job reattached to has only that."""
    from memogrid.spec import to_spec

    X, y = make_classification(n_samples=80, n_features=6, random_state=0)
    job = mg.submit(LogisticRegression(), {"C": [1.0]}, X, y, cv=2)
    job.wait()
    told = dict(job.results())
    told["request"] = dict(told["request"], estimator=to_spec(Ridge()))
    job._results = told  # the service now names another estimator
    assert isinstance(job.best_estimator_, LogisticRegression)
    again = mg.job(job.id)
    again._results = told
    with pytest.raises(memogrid.DataError, match="LogisticRegression"):
        _ = again.best_estimator_


def test_refit_on_fortran_ordered_x_matches_scikit_learn(mg):
    # a DataFrame's to_numpy() is often Fortran-ordered; scikit-learn refits
    # on X itself, and Ridge's and StandardScaler's last bits depend on order
    from sklearn.datasets import make_regression
    from sklearn.linear_model import Ridge
    from sklearn.preprocessing import StandardScaler

    X, y = make_regression(n_samples=300, n_features=40, noise=5.0, random_state=0)
    XF = np.asfortranarray(X)
    pipe = Pipeline([("scale", StandardScaler()), ("ridge", Ridge())])
    grid = {"ridge__alpha": [0.1, 10.0]}
    ours = GridSearchCV(pipe, grid, cv=3, client=mg, progress=False).fit(XF, y)
    sk = SkGridSearchCV(pipe, grid, cv=3).fit(XF, y)
    assert_cv_results_equal(ours.cv_results_, sk.cv_results_)
    assert np.array_equal(ours.predict(X), sk.predict(X))
    # the C-ordered refit differs in the last bits: the service did not reuse it
    c_refit = SkGridSearchCV(pipe, grid, cv=3).fit(X, y)
    assert not np.array_equal(c_refit.predict(X), sk.predict(X))


def test_fitted_internals_load_but_partials_of_unnamed_functions_do_not():
    import functools
    import operator

    import skops.io as sio
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.preprocessing import FunctionTransformer

    from memogrid.client import load_audited
    from memogrid.spec import to_spec

    X, y = make_classification(n_samples=80, n_features=6, random_state=0)
    # fitting makes private classes of a public module: _CalibratedClassifier
    cal = CalibratedClassifierCV(LogisticRegression(), cv=3).fit(X, y)
    loaded = load_audited(sio.dumps(cal), {"estimator": to_spec(cal)})
    assert np.array_equal(loaded.predict_proba(X), cal.predict_proba(X))
    # a partial is trusted only around a function that is trusted itself
    sneaky = FunctionTransformer(functools.partial(operator.mul, 2)).fit(X)
    with pytest.raises(memogrid.DataError, match="mul"):
        load_audited(sio.dumps(sneaky), {"estimator": to_spec(FunctionTransformer())})


def test_private_functions_of_scikit_learn_are_not_trusted_in_a_refit():
    """A compromised service sends a fitted model holding a partial of a
    private scikit-learn function (one that runs scripts): refused on load."""
    import functools

    import skops.io as sio
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.preprocessing import FunctionTransformer
    from sklearn.utils._testing import assert_run_python_script_without_output

    from memogrid.client import load_audited

    X, y = make_classification(n_samples=60, n_features=4, random_state=0)
    est = HistGradientBoostingClassifier(max_iter=3).fit(X, y)
    payload = functools.partial(assert_run_python_script_without_output, "raise SystemExit")
    est._preprocessor = FunctionTransformer(func=payload).fit(X)  # an attribute, not a param
    request = {"estimator": {"class": "sklearn.ensemble.HistGradientBoostingClassifier"}}
    with pytest.raises(memogrid.DataError, match="assert_run_python_script_without_output"):
        load_audited(sio.dumps(est), request)


def test_only_classes_scikit_learn_defines_are_its_fitted_internals():
    from memogrid.client import _fitted_internal

    assert _fitted_internal("sklearn.tree._tree.Tree")
    assert _fitted_internal("sklearn.calibration._CalibratedClassifier")
    # reachable through a scikit-learn module, defined elsewhere: a file
    # opener, itertools and operator helpers, a socket listener
    for name in (
        "sklearn.datasets._covtype.GzipFile",
        "sklearn.compose._column_transformer.chain",
        "sklearn.feature_extraction._dict_vectorizer.itemgetter",
        "sklearn.callback._transport.Listener",
        "sklearn.utils._testing.assert_run_python_script_without_output",
    ):
        assert not _fitted_internal(name), name


def test_a_model_whose_attribute_shadows_a_method_is_refused():
    import functools

    import skops.io as sio
    from sklearn.preprocessing import StandardScaler
    from sklearn.utils.validation import check_array

    from memogrid.client import load_audited
    from memogrid.spec import to_spec

    X, _ = make_classification(n_samples=30, n_features=4, random_state=0)
    scaler = StandardScaler().fit(X)
    scaler.transform = functools.partial(check_array, accept_sparse=True)  # a trusted function
    with pytest.raises(memogrid.DataError, match="overrides its method 'transform'"):
        load_audited(sio.dumps(scaler), {"estimator": to_spec(StandardScaler())})


def test_a_new_arrays_streamed_upload_is_sent_again_after_a_429(api, monkeypatch):
    """A HEAD spends the one request the rate allows, so the POST of a new
    array after it met a 429: a DataFrame's body was sent again after the
    service's advice, an array's (streamed) was not and the upload failed."""
    limiter = api.app.state.services.limiter
    monkeypatch.setattr(limiter, "rate", 2.0)
    monkeypatch.setattr(limiter, "capacity", 1.0)
    X = np.random.RandomState(5).normal(size=(500, 7))
    with Client(http=api) as client:
        time.sleep(0.6)  # the bucket full: one request
        did = client.upload(X)
        assert client.has_dataset(did) and client.uploads == 1


def test_tokens_are_taken_without_what_files_add_and_never_quoted():
    assert Client("http://127.0.0.1:9", token="mg_abc_def\n").token == "mg_abc_def"
    assert Client("http://127.0.0.1:9", token=" mg_abc_def\r\n").token == "mg_abc_def"
    with pytest.raises(memogrid.AuthError, match="whitespace or control") as info:
        Client("http://127.0.0.1:9", token="mg_abc secret")
    assert "secret" not in str(info.value)


def test_a_closed_client_says_so_as_a_memogrid_error():
    client = Client("http://127.0.0.1:9", token="mg_x")
    client.close()
    with pytest.raises(memogrid.ClientClosed, match="was closed"):
        client.jobs()


def test_a_waits_timeout_holds_while_the_service_is_away(monkeypatch):
    """A wait polls through a service that is away until its own timeout
    (a wait without one, for a minute). A connection refused was tried
    again 1.5 s whatever the timeout left (0.2 s ended after 1.5 s), and
    a timeout beyond the minute ended at the minute, a TransportError."""
    from memogrid.client import Job

    with Client("http://127.0.0.1:9", token="mg_x") as client:
        job = Job(client, "0" * 32)
        for timeout in (0.2, 1.5):
            start = time.monotonic()
            with pytest.raises(memogrid.WaitTimeout, match=f"did not end within {timeout} s"):
                job.wait(timeout=timeout, progress=False)
            assert timeout <= time.monotonic() - start < timeout + 0.5
        monkeypatch.setattr("memogrid.client.POLL_PATIENCE", 0.5)
        start = time.monotonic()
        with pytest.raises(memogrid.WaitTimeout, match="did not end within 2.0 s"):
            job.wait(timeout=2.0, progress=False)  # longer than the patience
        assert time.monotonic() - start >= 2.0
        # without a timeout, the service's absence is told with the job's id
        with pytest.raises(memogrid.TransportError, match=f"job {'0' * 32}: cannot reach"):
            job.wait(progress=False)


def test_a_password_in_the_url_is_neither_shown_nor_pickled():
    """A URL's password showed in a Client's repr (and so in a search's, a
    notebook cell's output) and in three errors, and a pickled client,
    which keeps no token, kept it."""
    import pickle

    url = "http://alice:s3cret@127.0.0.1:9"

    def answering(handler):
        return httpx.Client(base_url=url, transport=httpx.MockTransport(handler))

    def late(request):
        raise httpx.ReadTimeout("late", request=request)

    said = [repr(Client(url, token="mg_x")), repr(GridSearchCV(Ridge(), {}, client=Client(url)))]
    for http in (answering(late), answering(lambda r: httpx.Response(200, text="hi"))):
        with pytest.raises(memogrid.MemogridError) as info:
            Client(url, token="mg_x", http=http).jobs()
        said.append(str(info.value))
    closed = Client(url, token="mg_x")
    closed.close()
    with pytest.raises(memogrid.ClientClosed) as info:
        closed.jobs()
    said.append(str(info.value))
    for text in said:
        assert "alice:***@127.0.0.1:9" in text and "s3cret" not in text, text
    assert pickle.loads(pickle.dumps(Client(url))).url == "http://alice@127.0.0.1:9"


def test_a_client_let_go_closes_its_connections_and_connects_again():
    client = Client("http://127.0.0.1:9", token="mg_x")
    first = client._http
    client._let_go()
    assert first.is_closed and not client._http.is_closed
    with pytest.raises(memogrid.TransportError, match="cannot reach"):  # not ClientClosed
        client.jobs()
    client.close()


def test_an_unreachable_service_behind_a_proxy_says_so(monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with Client("http://127.0.0.1:8", token="mg_x") as client:
        with pytest.raises(memogrid.TransportError, match="NO_PROXY=127.0.0.1"):
            client.jobs()
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    with Client("http://127.0.0.1:8", token="mg_x") as client:
        with pytest.raises(memogrid.TransportError) as info:
            client.jobs()
        assert "proxy" not in str(info.value)


def test_frame_and_text_uploads_do_not_hold_copies_of_their_bodies(monkeypatch):
    """A DataFrame's Parquet was written into memory and copied out again,
    and text was held three times (encoded, joined, framed): a 200 MB frame
    took 515 MB more, as much text 664 MB. Their bodies stream from one copy
    now (measured as the client makes them: an in-process test transport
    would gather the body itself)."""
    import tracemalloc

    import pandas as pd

    sent = []

    def consume(self, content, content_type, expected):
        pieces = content() if callable(content) else [content]
        sent.append(sum(len(memoryview(p).cast("B")) for p in pieces))

    monkeypatch.setattr(Client, "_post_dataset", consume)
    monkeypatch.setattr(Client, "has_dataset", lambda self, did: False)
    rng = np.random.RandomState(8)
    frame = pd.DataFrame(rng.normal(size=(300_000, 10)), columns=[f"c{i}" for i in range(10)])
    docs = [f"document {i} " + "x" * 300 for i in range(80_000)]  # ~25 MB of text
    with Client("http://127.0.0.1:9", token="mg_x") as client:
        # beyond the data itself: the frame's Arrow table (not Python memory,
        # not traced) and a piece at a time; the text's bytes once
        for data, size, most in (
            (frame, frame.memory_usage().sum(), 0.6),
            (docs, sum(map(len, docs)), 1.5),
        ):
            tracemalloc.start()
            try:
                client.upload(data)
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            assert sent[-1] >= 0.9 * size  # the whole body went
            assert peak < most * size, (type(data).__name__, peak, size)


def test_a_url_that_is_no_memogrid_root_is_told_so(api):
    """Given the service's URL with /v1 on it, every call answered a bare
    "Not Found"; the error now says the URL is no memogrid route."""
    from fastapi.testclient import TestClient

    wrong = TestClient(api.app, base_url="http://testserver/v1")
    wrong.headers.update(api.headers)
    with Client(http=wrong) as client:
        with pytest.raises(
            memogrid.NotFound, match=r"GET /v1/v1/jobs is no memogrid route"
        ) as info:
            client.jobs()
        assert "without /v1" in str(info.value)
    with Client(http=api) as client:  # the service's own 404s stay as they were
        with pytest.raises(memogrid.NotFound) as info:
            client.job("0" * 32).status()
        assert "memogrid route" not in str(info.value)


def test_a_silent_service_and_a_url_without_scheme_are_told_at_once():
    import socket

    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        with Client(f"http://127.0.0.1:{port}", token="mg_x", timeout=0.5) as client:
            start = time.monotonic()
            with pytest.raises(memogrid.TransportError, match="did not answer GET /v1/jobs"):
                client.jobs()
            assert time.monotonic() - start < 1.4  # asked once, not three times
    with Client("127.0.0.1:8000", token="mg_x") as client:
        start = time.monotonic()
        with pytest.raises(memogrid.TransportError, match="starts with http://"):
            client.jobs()
        assert time.monotonic() - start < 0.4  # not retried


def test_a_jobs_state_is_fresh_until_it_has_ended(mg):
    X, y = make_classification(n_samples=60, n_features=4, random_state=0)
    job = mg.submit(LogisticRegression(), {"C": [0.1, 1.0]}, X, y, cv=3)
    job.status()  # a state read before the end
    deadline = time.monotonic() + 60
    while job.state in ("queued", "running"):  # read anew each time
        assert time.monotonic() < deadline, "the state never changed"
        time.sleep(0.05)
    assert job.state == "succeeded"


def test_the_wrong_url_hint_is_for_missing_routes_and_quotes_no_password():
    from memogrid.client import _error_for

    def answer(status, url, **kw):
        return _error_for(httpx.Response(status, request=httpx.Request("POST", url), **kw))

    # the service's own failure (a plain 500, a proxy's 502): not the URL's fault
    for status in (500, 502, 413):
        said = str(answer(status, "http://svc:8000/v1/datasets", text="Internal Server Error"))
        assert "memogrid route" not in said, said
    said = str(answer(404, "http://u:secretpw@svc:8000/v1/v1/jobs", json={"detail": "Not Found"}))
    assert "is no memogrid route at http://u:" in said and "secretpw" not in said


def test_a_delete_whose_answer_was_lost_is_not_told_as_not_found(api, monkeypatch):
    """The connection broke after the service deleted the dataset: the
    client sends the DELETE again (it is idempotent), which finds nothing.
    That is the delete done, not a NotFound; a first DELETE of something
    unknown still is one."""
    import httpx

    monkeypatch.setattr("memogrid.client.RETRY_BACKOFF", 0.01)

    class AnswerLost(httpx.BaseTransport):
        def __init__(self, inner):
            self.inner, self.lost = inner, 0

        def handle_request(self, request):
            response = self.inner.handle_request(request)
            if request.method == "DELETE" and not self.lost:
                self.lost += 1
                response.read()
                raise httpx.ReadError("connection reset by peer", request=request)
            return response

    transport = AnswerLost(api._transport)
    flaky = httpx.Client(transport=transport, base_url=api.base_url, headers=api.headers)
    with Client(http=flaky) as client:
        did = client.upload(np.arange(12.0).reshape(4, 3))
        client.delete_dataset(did)
        assert transport.lost == 1
        assert not client.has_dataset(did)
        with pytest.raises(memogrid.NotFound):
            client.delete_dataset(did)
