"""The drop-in searches behave as scikit-learn's do where users can tell:
tags, warnings, errors, types, pickling, waiting."""

from __future__ import annotations

import pickle
import re
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.base import is_classifier, is_regressor
from sklearn.datasets import make_classification
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning, FitFailedWarning, NotFittedError
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import GridSearchCV as SkGridSearchCV
from sklearn.model_selection import RandomizedSearchCV as SkRandomizedSearchCV
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.utils._param_validation import InvalidParameterError

from memogrid import Client, GridSearchCV, RandomizedSearchCV, SpecError, errors
from memogrid.client import Job
from tests.helpers.parity import assert_cv_results_equal

# the client's behaviour, on SQLite; tests whose values are stored and read
# back through the database (types, NaN, infinities, float32) run on both
pytestmark = pytest.mark.sqlite_only
both_databases = pytest.mark.both_databases


@pytest.fixture
def mg(api):
    with Client(http=api) as client:
        yield client


@pytest.fixture(scope="module")
def data():
    return make_classification(n_samples=90, n_features=5, random_state=0)


def _jobs(mg):
    return len(mg.jobs())


def test_a_search_over_a_classifier_is_a_classifier(mg, data):
    X, y = data
    grid = {"C": [0.1, 1.0]}
    ours = GridSearchCV(LogisticRegression(), grid, client=mg, progress=False)
    assert is_classifier(ours) and not is_regressor(ours)
    assert is_regressor(GridSearchCV(Ridge(), {"alpha": [1.0]}, client=mg))
    # cross_val_score stratifies a classifier's folds: the same scores as scikit-learn's
    sk = SkGridSearchCV(LogisticRegression(), grid)
    assert np.array_equal(cross_val_score(ours, X, y, cv=3), cross_val_score(sk, X, y, cv=3))


def test_warnings_recorded_by_the_service_reach_the_caller(mg, data):
    X, y = data
    pipe = Pipeline([("pca", PCA()), ("lr", LogisticRegression())])
    grid = {"pca__n_components": [2, 10]}  # 10 > 5 features: those fits fail
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ours = GridSearchCV(pipe, grid, cv=5, client=mg, progress=False).fit(X, y)
    assert any(w.category is FitFailedWarning and "5 fits failed" in str(w.message) for w in caught)
    assert any(
        w.category is UserWarning and "test scores are non-finite" in str(w.message) for w in caught
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk = SkGridSearchCV(pipe, grid, cv=5).fit(X, y)
    assert_cv_results_equal(ours.cv_results_, sk.cv_results_)
    # each as often as scikit-learn raises it: once per fit that gave it
    from collections import Counter

    seen = []
    for search in (
        GridSearchCV(LogisticRegression(max_iter=2), {"C": [0.1, 1.0]}, client=mg, progress=False),
        SkGridSearchCV(LogisticRegression(max_iter=2), {"C": [0.1, 1.0]}),
    ):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            search.fit(X, y)
        seen.append(Counter(w.category.__name__ for w in caught))
    assert seen[0] == seen[1] and seen[0]["ConvergenceWarning"] == 11  # 10 fits, 1 refit
    with pytest.warns(UserWarning, match="The total space of parameters 2 is smaller"):
        RandomizedSearchCV(
            LogisticRegression(),
            {"C": [0.1, 1.0]},
            n_iter=4,
            random_state=0,
            client=mg,
            progress=False,
        ).fit(X, y)


def _fit_warned(search, X, y, *filters):
    """The warnings ``search.fit`` raises, every one shown, under ``filters``
    (``warnings.filterwarnings`` arguments) put before that."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for f in filters:
            warnings.filterwarnings(*f)
        search.fit(X, y)
    return caught


def test_warnings_come_from_where_scikit_learn_raises_them(mg, data):
    """Each warning is raised from the module, file and line that raised it
    on the service (filters naming a module treat it as scikit-learn's), by
    its own class (SyntaxWarning included); joblib's note that an estimator's
    n_jobs runs as 1 in a dask worker is not the caller's to see."""
    from collections import Counter

    from sklearn.ensemble import RandomForestClassifier
    from sklearn.neighbors import KNeighborsClassifier

    X, y = data

    def caught_by(search, *filters):
        return _fit_warned(search, X, y, *filters)

    def both(est, grid, *filters, **kw):
        ours = GridSearchCV(est, grid, client=mg, progress=False, **kw)
        return caught_by(ours, *filters), caught_by(SkGridSearchCV(est, grid, **kw), *filters)

    slow = LogisticRegression(max_iter=2)
    ours, sk = both(slow, {"C": [0.1, 1.0]})
    assert [w.category.__name__ for w in ours] == [w.category.__name__ for w in sk]
    from sklearn.exceptions import ConvergenceWarning

    converge = [w for w in ours if w.category is ConvergenceWarning]
    assert len(converge) == 11
    assert {w.filename for w in converge} == {
        w.filename for w in sk if w.category is ConvergenceWarning
    }
    ignore = ("ignore", "", ConvergenceWarning, "sklearn")
    ours, sk = both(slow, {"C": [0.1, 1.0]}, ignore)
    assert ours == [] and sk == []
    # a warning raised as the fits' own class, whatever builtin it is
    knn = KNeighborsClassifier(metric_params={"p": 3})
    ours, sk = both(knn, {"n_neighbors": [3, 5]}, cv=3)
    assert Counter((w.category, str(w.message)) for w in ours) == Counter(
        (w.category, str(w.message)) for w in sk
    )
    assert ours and all(w.category is SyntaxWarning for w in ours)
    # an estimator's n_jobs, and cv as a numpy integer
    forest = RandomForestClassifier(n_estimators=5, n_jobs=2, random_state=0)
    ours_search = GridSearchCV(
        forest, {"max_depth": [2, 3]}, cv=np.int64(3), client=mg, progress=False
    )
    sk_search = SkGridSearchCV(forest, {"max_depth": [2, 3]}, cv=np.int64(3))
    assert caught_by(ours_search) == [] and caught_by(sk_search) == []
    assert_cv_results_equal(ours_search.cv_results_, sk_search.cv_results_)


def test_the_callers_warning_filters_make_errors_of_the_fits_warnings(mg, data):
    """scikit-learn fits under the caller's warnings filters: a warning made
    an error fails its fit (error_score, FitFailedWarning; every fit: its
    ValueError). The service's fits run under them too, and their results
    are not those of the same search without them (nor served for it)."""
    from sklearn.exceptions import ConvergenceWarning

    X, y = data
    grid = {"max_iter": [4, 100]}  # the first does not converge

    def run(search, *filters):
        caught = _fit_warned(search, X, y, *filters)
        return search, sorted(w.category.__name__ for w in caught)

    strict = ("error", "", ConvergenceWarning)
    ours, ours_warned = run(
        GridSearchCV(LogisticRegression(), grid, client=mg, progress=False), strict
    )
    sk, sk_warned = run(SkGridSearchCV(LogisticRegression(), grid), strict)
    assert_cv_results_equal(ours.cv_results_, sk.cv_results_)
    assert np.isnan(ours.cv_results_["mean_test_score"][0]) and ours_warned == sk_warned
    assert "FitFailedWarning" in ours_warned and "ConvergenceWarning" not in ours_warned
    # without the filter: the fits converge or warn, as scikit-learn's
    loose, loose_warned = run(GridSearchCV(LogisticRegression(), grid, client=mg, progress=False))
    assert not np.isnan(loose.cv_results_["mean_test_score"][0])
    assert loose_warned == run(SkGridSearchCV(LogisticRegression(), grid))[1]
    assert "ConvergenceWarning" in loose_warned
    # a filter that shows what another would make an error lets it through
    shown, _ = run(
        GridSearchCV(LogisticRegression(), grid, client=mg, progress=False),
        strict,
        ("always", "lbfgs failed", ConvergenceWarning),
    )
    assert_cv_results_equal(shown.cv_results_, loose.cv_results_)
    # and with the filter again: its own results, not the cached ones
    again, _ = run(GridSearchCV(LogisticRegression(), grid, client=mg, progress=False), strict)
    assert_cv_results_equal(again.cv_results_, sk.cv_results_)
    # every fit failing: scikit-learn's error
    for search in (
        GridSearchCV(LogisticRegression(max_iter=4), {"C": [1.0]}, client=mg, progress=False),
        SkGridSearchCV(LogisticRegression(max_iter=4), {"C": [1.0]}),
    ):
        with pytest.raises(ValueError, match="All the 5 fits failed") as err:
            run(search, strict)
        assert "ConvergenceWarning: lbfgs failed to converge" in str(err.value)
    # error_score="raise": the warning itself is what fit raises, by its class
    for search in (
        GridSearchCV(LogisticRegression(), grid, error_score="raise", client=mg, progress=False),
        SkGridSearchCV(LogisticRegression(), grid, error_score="raise"),
    ):
        with pytest.raises(ConvergenceWarning, match="lbfgs failed to converge"):
            run(search, strict)
    # every warning an error: the FitFailedWarning stops the search before
    # its results are set, as scikit-learn's
    everything = ("error", "", Warning)
    for search in (
        GridSearchCV(LogisticRegression(), grid, client=mg, progress=False),
        SkGridSearchCV(LogisticRegression(), grid),
    ):
        with pytest.raises(FitFailedWarning):
            run(search, everything)
        assert not hasattr(search, "cv_results_")
    # an estimator's n_jobs under them: joblib's note about dask's workers
    # is no warning of the fits' (scikit-learn's search gives none)
    from sklearn.multiclass import OneVsRestClassifier

    ovr = OneVsRestClassifier(LogisticRegression(), n_jobs=2)
    ours, _ = run(
        GridSearchCV(ovr, {"estimator__C": [0.1, 1.0]}, cv=3, client=mg, progress=False), everything
    )
    sk, _ = run(SkGridSearchCV(ovr, {"estimator__C": [0.1, 1.0]}, cv=3), everything)
    assert_cv_results_equal(ours.cv_results_, sk.cv_results_)


def test_a_failed_jobs_warnings_come_from_where_they_were_raised(mg, data):
    """A search whose refit fails: the folds' warnings, raised before the
    error as scikit-learn's are, from scikit-learn's module and file."""
    X, y = data
    X = X.copy()
    X[0, 0] = np.nan  # a row no fold uses: only the refit meets it
    folds = [(np.arange(1, 60), np.arange(60, 90)), (np.arange(30, 90), np.arange(1, 30))]

    def warned_then_failed(grid, **kw):
        """(class, file) of each warning ours and scikit-learn's searches
        raise before the refit's NaN error."""
        seen = []
        for search in (
            GridSearchCV(
                LogisticRegression(max_iter=2), grid, cv=folds, client=mg, progress=False, **kw
            ),
            SkGridSearchCV(LogisticRegression(max_iter=2), grid, cv=folds, **kw),
        ):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                with pytest.raises(ValueError, match="Input X contains NaN"):
                    search.fit(X, y)
            seen.append(sorted((w.category.__name__, w.filename) for w in caught))
        return seen

    seen = warned_then_failed({"C": [0.1]})
    assert seen[0] == seen[1] and len(seen[0]) == 2
    # the same through a callable refit: the chosen candidate's fold
    # warnings are raised once, with the search's
    seen = warned_then_failed({"C": [0.1, 1.0]}, refit=lambda r: 0)
    assert seen[0] == seen[1] and len(seen[0]) == 4
    # where it came from is a module name and a line: never a file the
    # server names, unless this process holds that module itself
    from memogrid.search import _reemit

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _reemit(["UserWarning: hi"], None, {"UserWarning: hi": ["no.such.mod", "/etc/passwd", 1]})
        _reemit(["UserWarning: hi"], None, {"UserWarning: hi": ["numpy", "/etc/passwd", 1]})
    assert [w.filename for w in caught] == ["<memogrid:no.such.mod>", np.__file__]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", module=r"no\.such")
        _reemit(["UserWarning: hi"], None, {"UserWarning: hi": ["no.such.mod", "x", 1]})
    assert caught == []


def test_parameters_fail_as_scikit_learns_before_anything_is_sent(mg, data):
    X, y = data
    before = _jobs(mg)
    with pytest.raises(InvalidParameterError, match="return_train_score"):
        GridSearchCV(LogisticRegression(), {"C": [1.0]}, return_train_score="yes", client=mg).fit(
            X, y
        )
    with pytest.raises(ValueError, match="For multi-metric scoring, the parameter refit"):
        GridSearchCV(LogisticRegression(), {"C": [1.0]}, scoring=["accuracy", "f1"], client=mg).fit(
            X, y
        )
    with pytest.raises(TypeError, match="Parameter grid for parameter 'C' needs to be a list"):
        GridSearchCV(LogisticRegression(), {"C": 1.0}, client=mg).fit(X, y)
    with pytest.raises(ValueError, match="n_jobs == 0 in Parallel has no meaning"):
        SkGridSearchCV(LogisticRegression(), {"C": [1.0]}, n_jobs=0).fit(X, y)
    with pytest.raises(ValueError, match="n_jobs == 0 in Parallel has no meaning"):
        GridSearchCV(LogisticRegression(), {"C": [1.0]}, n_jobs=0, client=mg).fit(X, y)
    assert _jobs(mg) == before
    # scikit-learn's other constructor arguments are accepted (and checked)
    search = GridSearchCV(LogisticRegression(), {"C": [1.0]}, n_jobs=-1, verbose=0, client=mg)
    assert search.get_params()["n_jobs"] == -1 and "pre_dispatch" in search.get_params()


@pytest.mark.parametrize("pre_dispatch", ["abc", "2*n_jobs+", 0, -1, "n_jobs", 3, "all"])
def test_pre_dispatch_refused_where_a_parallel_search_refuses_it(mg, data, pre_dispatch):
    """joblib reads ``pre_dispatch`` only for a parallel loop: with
    ``n_jobs=2`` scikit-learn's search refuses what joblib cannot use (with
    its message), with ``n_jobs=None`` it takes anything; so does ours."""
    import joblib

    X, y = data
    before = _jobs(mg)

    def outcome(cls, n_jobs, **kw):
        search = cls(LogisticRegression(), {"C": [1.0, 2.0]}, n_jobs=n_jobs, **kw)
        try:
            with joblib.parallel_backend("threading"):
                search.pre_dispatch = pre_dispatch
                search.fit(X, y)
        except ValueError as exc:
            return type(exc), str(exc)
        return search.best_score_

    theirs = outcome(SkGridSearchCV, 2)
    assert outcome(GridSearchCV, 2, client=mg, progress=False) == theirs
    submitted = _jobs(mg) - before
    assert submitted == (0 if isinstance(theirs, tuple) else 1)
    assert outcome(GridSearchCV, None, client=mg, progress=False) == outcome(SkGridSearchCV, None)


def test_not_fitted_errors_and_fitted_only_attributes(mg, data):
    X, y = data
    frame = pd.DataFrame(X, columns=[f"c{i}" for i in range(5)])
    search = GridSearchCV(PCA(), {"n_components": [1, 2]}, client=mg, progress=False)
    for call in (
        lambda: search.transform(X),
        lambda: search.score(X),
        lambda: search.score_samples(X),
    ):
        with pytest.raises(NotFittedError):
            call()
    assert not hasattr(search, "n_features_in_")
    search.fit(frame)
    sk = SkGridSearchCV(PCA(), {"n_components": [1, 2]}).fit(frame)
    assert np.array_equal(search.score_samples(frame), sk.score_samples(frame))
    assert list(search.feature_names_in_) == list(sk.feature_names_in_)
    unrefit = GridSearchCV(PCA(), {"n_components": [2]}, refit=False, client=mg, progress=False)
    with pytest.raises(AttributeError, match="has no attribute 'transform'"):
        unrefit.fit(X).transform(X)


@both_databases
def test_values_keep_scikit_learns_types(mg, data):
    X, y = data
    grid = {"C": np.array([0.1, 1.0, 10.0]), "max_iter": [np.int64(50), 100]}
    ours = GridSearchCV(LogisticRegression(), grid, client=mg, progress=False).fit(X, y)
    sk = SkGridSearchCV(LogisticRegression(), grid).fit(X, y)
    assert [repr(p) for p in ours.cv_results_["params"]] == [
        repr(p) for p in sk.cv_results_["params"]
    ]
    assert repr(ours.best_params_) == repr(sk.best_params_)
    assert repr(ours.best_estimator_.get_params()) == repr(sk.best_estimator_.get_params())
    assert type(ours.best_index_) is type(sk.best_index_)
    assert type(ours.best_score_) is type(sk.best_score_) and ours.best_score_ == sk.best_score_
    assert_cv_results_equal(ours.cv_results_, sk.cv_results_)
    dists = {"C": [np.float64(0.5), np.float64(2.0)], "fit_intercept": [True, False]}
    ours = RandomizedSearchCV(
        LogisticRegression(), dists, n_iter=3, random_state=1, client=mg, progress=False
    ).fit(X, y)
    sk = SkRandomizedSearchCV(LogisticRegression(), dists, n_iter=3, random_state=1).fit(X, y)
    assert [repr(p) for p in ours.cv_results_["params"]] == [
        repr(p) for p in sk.cv_results_["params"]
    ]
    # score() gives what the estimator's score gives (a numpy float here)
    from sklearn.neighbors import KernelDensity

    grid = {"bandwidth": [0.5, 1.0]}
    ours = GridSearchCV(KernelDensity(), grid, cv=3, client=mg, progress=False).fit(X)
    sk = SkGridSearchCV(KernelDensity(), grid, cv=3).fit(X)
    assert repr(ours.score(X)) == repr(sk.score(X))
    assert type(ours.n_features_in_) is type(sk.n_features_in_)
    # arrays and numpy dict keys, in the estimator and in the grid, held by
    # the best estimator and the results as scikit-learn holds them
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    weights = [{np.int64(0): 1.0, np.int64(1): 2.0}, None]
    for est, grid in (
        (RidgeCV(alphas=np.logspace(-2, 2, 5)), {"fit_intercept": [True, False]}),
        (
            make_pipeline(StandardScaler(), LogisticRegression()),
            {"logisticregression__class_weight": weights},
        ),
        (RidgeCV(), {"alphas": [np.array([0.1, 1.0]), (1.0, 10.0)]}),
        # sets (HistGradientBoosting's interaction constraints), given and searched
        (
            HistGradientBoostingClassifier(max_iter=5, interaction_cst=[{0, 1}, {2, 3, 4}]),
            {"interaction_cst": [[{0, 1}, {2, 3, 4}], [frozenset({1, 2})], None]},
        ),
    ):
        ours = GridSearchCV(est, grid, cv=3, client=mg, progress=False).fit(X, y)
        sk = SkGridSearchCV(est, grid, cv=3).fit(X, y)
        assert repr(ours.cv_results_["params"]) == repr(sk.cv_results_["params"])
        assert repr(ours.best_params_) == repr(sk.best_params_)
        assert repr(ours.best_estimator_.get_params()) == repr(sk.best_estimator_.get_params())
        assert np.array_equal(ours.predict(X), sk.predict(X))


def test_a_pickled_search_carries_no_token(api, data, monkeypatch):
    X, y = data
    token = api.headers["authorization"].split()[1]
    with Client(http=api, token=token) as client:
        search = GridSearchCV(LogisticRegression(), {"C": [1.0]}, client=client, progress=False)
        blob = pickle.dumps(search.fit(X, y))
    assert token.encode() not in blob
    monkeypatch.delenv("MEMOGRID_TOKEN", raising=False)
    loaded = pickle.loads(blob)
    assert np.array_equal(loaded.predict(X), search.predict(X))
    assert loaded.client.token is None  # it takes MEMOGRID_TOKEN where it is opened


def test_interrupting_fit_cancels_the_job(mg, data, monkeypatch):
    X, y = data
    seen = {}

    def interrupted(self, *a, **kw):
        seen["job"] = self
        raise KeyboardInterrupt

    monkeypatch.setattr(Job, "wait", interrupted)
    with pytest.raises(KeyboardInterrupt):
        GridSearchCV(LogisticRegression(), {"C": [0.3, 3.0]}, client=mg, progress=False).fit(X, y)
    monkeypatch.undo()
    job = seen["job"]
    job.wait(progress=False, raise_on_failure=False)
    assert job.state == "cancelled" or job.status()["cancel_requested"]
    # a cancel that cannot be made (the service away) is said, naming the job
    monkeypatch.setattr(Job, "wait", interrupted)

    def away(self):
        raise errors.TransportError("cannot reach the memogrid service")

    monkeypatch.setattr(Job, "cancel", away)
    with pytest.raises(KeyboardInterrupt) as interrupted:
        GridSearchCV(LogisticRegression(), {"C": [0.4]}, client=mg, progress=False).fit(X, y)
    (note,) = interrupted.value.__notes__
    assert f"job {seen['job'].id} could not be cancelled" in note
    monkeypatch.undo()
    seen["job"].wait(progress=False, raise_on_failure=False)


def test_a_busy_service_is_waited_for_not_reported(mg, data, monkeypatch):
    X, y = data
    calls = {"submit": 0, "status": 0}
    submit, status = Client._submit, Job._fetch_status

    def busy_submit(self, body, *rest):
        calls["submit"] += 1
        if calls["submit"] == 1:
            exc = errors.RateLimited("you have 8 queued or running jobs", status=429)
            exc.retry_after = 0.01
            raise exc
        return submit(self, body, *rest)

    def flaky_status(self, deadline=None):
        calls["status"] += 1
        if calls["status"] == 1:
            raise errors.ServerError("Service Unavailable", status=503)
        return status(self, deadline)

    monkeypatch.setattr(Client, "_submit", busy_submit)
    monkeypatch.setattr(Job, "_fetch_status", flaky_status)
    search = GridSearchCV(LogisticRegression(), {"C": [1.0]}, client=mg, progress=False).fit(X, y)
    assert calls["submit"] == 2 and calls["status"] >= 2 and search.best_index_ == 0
    # an error that is not passing still reaches the user at once
    monkeypatch.setattr(
        Job,
        "_fetch_status",
        lambda self, deadline=None: (_ for _ in ()).throw(errors.ServerError("boom", status=500)),
    )
    with pytest.raises(errors.ServerError, match="boom"):
        GridSearchCV(LogisticRegression(), {"C": [2.0]}, client=mg, progress=False).fit(X, y)
    monkeypatch.undo()
    for job in mg.jobs():  # the service ran it all the same: let it end before teardown
        Job(mg, job["id"]).wait(progress=False, raise_on_failure=False)


def test_a_failed_search_raises_what_scikit_learns_raises(mg, data):
    X, y = data
    pipe = Pipeline([("pca", PCA()), ("lr", LogisticRegression())])
    grid = {"pca__n_components": [10]}  # more than the 5 features: every fit fails
    with pytest.raises(ValueError, match="All the 5 fits failed") as caught:
        GridSearchCV(pipe, grid, client=mg, progress=False).fit(X, y)
    assert isinstance(caught.value, errors.JobFailed)  # and still memogrid's
    with pytest.raises(ValueError, match="All the 5 fits failed") as theirs:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            SkGridSearchCV(pipe, grid).fit(X, y)
    # scikit-learn's message as it is (up to the fits' tracebacks, which name
    # the service's files); the job in a note, shown with the traceback
    ours_text, sk_text = str(caught.value), str(theirs.value)
    assert ours_text.startswith("\nAll the 5 fits failed.\n")
    assert ours_text.split("Traceback")[0] == sk_text.split("Traceback")[0]
    assert caught.value.job_id in caught.value.__notes__[0]
    # and it travels between processes (cross_val_score(n_jobs=2) sends it back)
    back = pickle.loads(pickle.dumps(caught.value))
    assert type(back) is type(caught.value) and str(back) == ours_text
    assert back.job_id == caught.value.job_id and back.error == caught.value.error


@both_databases
def test_objects_holding_numbers_search_as_in_scikit_learn(mg):
    """y or X held as objects of numbers (a numpy object array, a pandas
    object Series): stored as numbers, loaded as objects, so the fits see
    what scikit-learn's see: regressors convert them (Ridge) or keep them
    (KNeighborsRegressor predicts objects), a classifier fails every fit
    on its unknown label type as scikit-learn's does."""
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.neighbors import KNeighborsRegressor

    X = np.random.RandomState(3).normal(size=(60, 4))
    y = X @ [1.0, -2.0, 0.5, 0.0] + np.random.RandomState(4).normal(size=60)
    held = np.empty(60, dtype=object)
    held[:] = [float(v) if i % 2 else int(v * 100) for i, v in enumerate(y)]
    cases = [
        (Ridge(), {"alpha": [0.1, 10.0]}, X, held),
        (Ridge(), {"alpha": [0.1, 10.0]}, X, pd.Series(held, dtype=object)),
        (RandomForestRegressor(n_estimators=5, random_state=0), {"max_depth": [2, 4]}, X, held),
        (KNeighborsRegressor(), {"n_neighbors": [3, 5]}, X, held),
        (Ridge(), {"alpha": [0.1, 10.0]}, X.astype(object), y),
    ]
    for est, grid, Xc, target in cases:
        ours = GridSearchCV(est, grid, cv=3, client=mg, progress=False).fit(Xc, target)
        sk = SkGridSearchCV(est, grid, cv=3).fit(Xc, target)
        assert_cv_results_equal(ours.cv_results_, sk.cv_results_)
        ours_pred, sk_pred = ours.predict(X), sk.predict(X)
        assert ours_pred.dtype == sk_pred.dtype and np.array_equal(ours_pred, sk_pred)
    # integer labels held as objects: scikit-learn's "unknown" label type, every fit
    labels = np.where(y > 0, 1, 0).astype(object)
    failed = []
    for search in (
        GridSearchCV(LogisticRegression(), {"C": [1.0]}, cv=3, client=mg, progress=False),
        SkGridSearchCV(LogisticRegression(), {"C": [1.0]}, cv=3),
    ):
        with pytest.raises(ValueError, match="All the 3 fits failed") as err:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                search.fit(X, labels)
        failed.append(str(err.value))
    assert all("Unknown label type: unknown" in text for text in failed)
    sent = mg.uploads
    # an np.matrix X, which scikit-learn's estimators refuse in every fit
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        matrix = np.asmatrix(X)
    with pytest.raises(TypeError, match="np.matrix is not supported"):
        GridSearchCV(Ridge(), {"alpha": [1.0]}, client=mg, progress=False).fit(matrix, y)
    with pytest.raises(ValueError, match="All the 5 fits failed"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        SkGridSearchCV(Ridge(), {"alpha": [1.0]}).fit(matrix, y)
    assert mg.uploads == sent


def test_the_refit_sees_x_and_y_laid_out_as_the_callers(mg):
    """scikit-learn refits on X and y themselves: a Fortran-ordered 2-D y
    behind a pipeline's steps, and views with their rows reversed (which
    scikit-learn reads as their C-ordered copies), give its models to the
    last bit."""
    from sklearn.datasets import make_regression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, Y = make_regression(n_samples=120, n_features=6, n_targets=2, noise=3.0, random_state=1)
    pipe = make_pipeline(StandardScaler(), Ridge())
    for est, grid, Xc, Yc in (
        (pipe, {"ridge__alpha": [0.1, 10.0]}, X, np.asfortranarray(Y)),
        (Ridge(), {"alpha": [0.1, 10.0]}, X[::-1], np.ascontiguousarray(Y[::-1, 0])),
        (Ridge(), {"alpha": [0.1, 10.0]}, X, Y[::-1]),
    ):
        ours = GridSearchCV(est, grid, cv=3, client=mg, progress=False).fit(Xc, Yc)
        sk = SkGridSearchCV(est, grid, cv=3).fit(Xc, Yc)
        assert_cv_results_equal(ours.cv_results_, sk.cv_results_)
        assert np.array_equal(ours.predict(X), sk.predict(X))


@both_databases
def test_each_kind_of_missing_value_gives_scikit_learns_results(mg):
    """An object column holding None and NaN (two categories to OneHotEncoder)
    or pd.NA (which scikit-learn's encoders refuse): the same results, the
    same failures, and a best estimator that takes the user's own frame."""
    from sklearn.compose import make_column_transformer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    city = ["paris", None, np.nan, "lyon"] * 30
    y = np.array([0, 1, 0, 1] * 30)
    pipe = make_pipeline(
        make_column_transformer((OneHotEncoder(), ["city"]), remainder="passthrough"),
        LogisticRegression(),
    )
    grid = {"logisticregression__C": [0.1, 1.0]}
    X = pd.DataFrame({"city": pd.Series(city, dtype=object), "n": np.arange(120) % 7})
    ours = GridSearchCV(pipe, grid, cv=3, client=mg, progress=False).fit(X, y)
    sk = SkGridSearchCV(pipe, grid, cv=3).fit(X, y)
    assert_cv_results_equal(ours.cv_results_, sk.cv_results_)
    assert np.array_equal(ours.predict(X), sk.predict(X))
    X_na = X.assign(city=pd.Series(["paris", pd.NA, "lyon", "nice"] * 30, dtype=object))
    for search in (
        GridSearchCV(pipe, grid, cv=3, client=mg, progress=False),
        SkGridSearchCV(pipe, grid, cv=3),
    ):
        with pytest.raises(ValueError, match="All the 6 fits failed"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                search.fit(X_na, y)


def test_pd_na_as_a_parameter_imputes_as_in_scikit_learn(mg):
    """SimpleImputer(missing_values=pd.NA) on a string column: the spec names
    pd.NA, the service imputes what scikit-learn imputes."""
    from sklearn.compose import make_column_transformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    city = pd.Series(["paris", pd.NA, "lyon", "nice", "lyon"] * 24, dtype="string")
    X = pd.DataFrame({"city": city, "n": np.arange(120) % 7})
    y = np.array([0, 1, 0, 1, 1] * 24)
    impute = make_pipeline(
        SimpleImputer(missing_values=pd.NA, strategy="constant"), OneHotEncoder()
    )
    pipe = make_pipeline(
        make_column_transformer((impute, ["city"]), remainder="passthrough"), LogisticRegression()
    )
    grid = {
        "columntransformer__pipeline__simpleimputer__fill_value": ["zz", "lyon"],
        "logisticregression__C": [0.1, 1.0],
    }
    ours = GridSearchCV(pipe, grid, cv=3, client=mg, progress=False).fit(X, y)
    sk = SkGridSearchCV(pipe, grid, cv=3).fit(X, y)
    assert_cv_results_equal(ours.cv_results_, sk.cv_results_)
    assert np.array_equal(ours.predict_proba(X), sk.predict_proba(X))
    imputer = ours.best_estimator_[0].named_transformers_["pipeline"][0]
    assert imputer.missing_values is pd.NA


def test_a_column_of_mixed_ids_is_data_as_in_scikit_learn(mg):
    """An object column of str and int ids (read_csv's "mixed types"):
    dropped by the ColumnTransformer, the search is scikit-learn's; fed to
    OneHotEncoder, every fit fails as scikit-learn's do."""
    from sklearn.compose import make_column_transformer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    rng = np.random.default_rng(1)
    X = pd.DataFrame(
        {
            "id": pd.Series([i if i % 3 else f"c{i}" for i in range(120)], dtype=object),
            "n": rng.normal(size=120),
        }
    )
    y = (X["n"] > 0).to_numpy().astype(int)
    grid = {"logisticregression__C": [0.1, 1.0]}
    for encode, fails in ((["n"], False), (["id"], True)):
        pipe = make_pipeline(
            make_column_transformer(
                (StandardScaler() if not fails else OneHotEncoder(), encode), remainder="drop"
            ),
            LogisticRegression(),
        )
        ours = GridSearchCV(pipe, grid, cv=3, client=mg, progress=False)
        sk = SkGridSearchCV(pipe, grid, cv=3)
        if fails:
            for search in (ours, sk):
                with pytest.raises(ValueError, match="All the 6 fits failed"):
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        search.fit(X, y)
        else:
            assert_cv_results_equal(ours.fit(X, y).cv_results_, sk.fit(X, y).cv_results_)
            assert np.array_equal(ours.predict(X), sk.predict(X))


def test_ids_beyond_64_bits_are_data_as_in_scikit_learn(mg):
    """An object column of ints no 64-bit integer holds (ids, hashes) failed
    in the client with a bare OverflowError; scikit-learn encodes it."""
    rng = np.random.default_rng(2)
    ids = [2**70, 1, -5, 2**64 + 3, 2**63 + 5]  # 64-bit hashes too: Arrow infers no uint64
    X = pd.DataFrame(
        {
            "id": pd.Series([ids[i] for i in rng.integers(0, 5, 120)], dtype=object),
            "n": rng.normal(size=120),
        }
    )
    y = ((X["n"] > 0) ^ (X["id"] == 1)).to_numpy().astype(int)
    _encoded_search_is_scikit_learns(mg, X, y, "id")


def _encoded_search_is_scikit_learns(mg, X, y, column: str) -> GridSearchCV:
    """A search one-hot encoding ``column`` of X: the same as scikit-learn's."""
    from sklearn.compose import make_column_transformer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    pipe = make_pipeline(
        make_column_transformer((OneHotEncoder(), [column]), remainder="passthrough"),
        LogisticRegression(),
    )
    grid = {"logisticregression__C": [0.1, 1.0]}
    ours = GridSearchCV(pipe, grid, cv=3, client=mg, progress=False).fit(X, y)
    sk = SkGridSearchCV(pipe, grid, cv=3).fit(X, y)
    assert_cv_results_equal(ours.cv_results_, sk.cv_results_)
    assert np.array_equal(ours.predict_proba(X), sk.predict_proba(X))
    return ours


@pytest.mark.parametrize("kind", ["dates", "datetimes in a zone", "tz-aware datetime64"])
def test_an_encoder_of_dates_and_times_gives_scikit_learns_best_estimator(mg, kind):
    """An encoder keeps the data's dates and times as its categories: the
    best estimator holding Python dates was refused by the client's audit;
    one holding pandas Timestamps, which skops stores but cannot load back,
    failed the fit. The first loads; the second is refit here."""
    import datetime
    import zoneinfo

    rng = np.random.default_rng(3)
    picks = rng.integers(0, 4, 90)
    paris = zoneinfo.ZoneInfo("Europe/Paris")
    column = {
        "dates": pd.Series([datetime.date(2020, 1, 1 + i) for i in picks], dtype=object),
        "datetimes in a zone": pd.Series(
            [datetime.datetime(2020, 1, 1 + i, tzinfo=paris) for i in picks], dtype=object
        ),
        "tz-aware datetime64": pd.Series(pd.to_datetime(picks, unit="D", utc=True)),
    }[kind]
    X = pd.DataFrame({"when": column, "n": rng.normal(size=90)})
    y = ((X["n"] > 0) ^ (picks == 2)).astype(int).to_numpy()
    ours = _encoded_search_is_scikit_learns(mg, X, y, "when")
    # datetimes travel as a column of pandas Timestamps: refit here
    assert ours.job_.results()["has_estimator"] == (kind == "dates")


def test_arrow_backed_text_is_data_as_in_scikit_learn(mg):
    """A string[pyarrow] column read back as str, its missing values NaN:
    an encoder scikit-learn fails on (pd.NA) fitted on the service."""
    import pyarrow as pa
    from sklearn.compose import make_column_transformer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    rng = np.random.default_rng(0)
    words = [["a", "b", "c"][i] for i in rng.integers(0, 3, 90)]
    X = pd.DataFrame(
        {"s": pd.array(words, dtype=pd.ArrowDtype(pa.string())), "n": rng.normal(size=90)}
    )
    y = (X["n"] > 0).astype(int).to_numpy()
    _encoded_search_is_scikit_learns(mg, X, y, "s")
    # a missing string: pd.NA, which scikit-learn's encoder refuses (the
    # folds training on it fail, the refit on all rows raises)
    X.loc[5, "s"] = None
    pipe = make_pipeline(
        make_column_transformer((OneHotEncoder(), ["s"]), remainder="passthrough"),
        LogisticRegression(),
    )
    grid = {"logisticregression__C": [0.1, 1.0]}
    ours = GridSearchCV(pipe, grid, cv=3, client=mg, progress=False)
    for search in (ours, SkGridSearchCV(pipe, grid, cv=3)):
        with pytest.raises(TypeError, match="Encoders require their input .* uniformly"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                search.fit(X, y)


def test_an_array_of_dates_is_refused_naming_its_dtype(mg):
    """A datetime64 array failed in the client with numpy's buffer error."""
    X = np.arange(40).astype("datetime64[D]").reshape(20, 2)
    with pytest.raises(errors.DataError, match=r"dtype datetime64\[D\] is not accepted"):
        GridSearchCV(Ridge(), {"alpha": [1.0]}, cv=2, client=mg).fit(X, np.arange(20.0))


def test_column_selectors_pick_the_columns_scikit_learn_picks(mg):
    """make_column_selector by dtype and by pattern, as a ColumnTransformer's
    columns: the same search as scikit-learn's, keyed by what it selects."""
    from sklearn.compose import make_column_selector, make_column_transformer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    rng = np.random.default_rng(0)
    X = pd.DataFrame(
        {
            "city": pd.Series(rng.choice(["paris", "lyon", "nice"], 120), dtype=object),
            "x_size": rng.normal(size=120),
            "x_age": rng.integers(0, 90, 120),
            "other": rng.normal(size=120),
        }
    )
    y = (X["city"] == "lyon").to_numpy() ^ (X["x_size"] > 1)

    def pipe(numbers):
        return make_pipeline(
            make_column_transformer(
                (OneHotEncoder(), make_column_selector(dtype_include=object)),
                (StandardScaler(), numbers),
            ),
            LogisticRegression(),
        )

    grid = {"logisticregression__C": [0.1, 1.0]}
    results = []
    for numbers in (
        make_column_selector(dtype_include=np.number),
        make_column_selector(pattern="^x_", dtype_exclude=[object, "category"]),
    ):
        ours = GridSearchCV(pipe(numbers), grid, cv=3, client=mg, progress=False).fit(X, y)
        sk = SkGridSearchCV(pipe(numbers), grid, cv=3).fit(X, y)
        assert_cv_results_equal(ours.cv_results_, sk.cv_results_)
        assert np.array_equal(ours.predict_proba(X), sk.predict_proba(X))
        results.append(ours.job_.stats["final_fits"])
    assert results == [6, 6]  # another selection is another search, not a cache hit
    # a selector is a ColumnTransformer's columns, never an estimator or a step
    for estimator in (
        make_column_selector(),
        make_pipeline(make_column_selector(), LogisticRegression()),
    ):
        with pytest.raises(SpecError, match="not an estimator"):
            mg.submit(estimator, {"logisticregression__C": [1.0]}, X, y)
    # selecting by dtype needs a DataFrame, as scikit-learn's does
    with pytest.raises(SpecError, match="must be a DataFrame"):
        mg.submit(
            pipe(make_column_selector(dtype_include=np.number)), grid, X[["x_age"]].to_numpy(), y
        )


def test_text_documents_search_as_in_scikit_learn(mg):
    """A list (or Series) of documents into a text vectorizer, labels as a
    list of strings: the same search, classes_ of scikit-learn's dtype, and
    the documents held at their own size on the service."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_pipeline

    rng = np.random.default_rng(0)
    words = ["good", "bad", "fine", "awful", "great", "meh", "ok", "poor"]
    docs = [" ".join(rng.choice(words, rng.integers(3, 30))) for _ in range(150)]
    docs[7] = "good " * 5000  # one long document
    labels = ["pos" if d.count("good") + d.count("great") > d.count("bad") else "neg" for d in docs]
    pipe = make_pipeline(TfidfVectorizer(), LogisticRegression())
    grid = {"tfidfvectorizer__ngram_range": [(1, 1), (1, 2)], "logisticregression__C": [1.0, 10.0]}
    for X in (docs, pd.Series(docs)):
        ours = GridSearchCV(pipe, grid, cv=3, client=mg, progress=False).fit(X, labels)
        sk = SkGridSearchCV(pipe, grid, cv=3).fit(X, labels)
        assert_cv_results_equal(ours.cv_results_, sk.cv_results_)
        assert ours.classes_.dtype == sk.classes_.dtype
        assert np.array_equal(ours.predict(X), sk.predict(X))
        assert "X" in ours.job_.results()["request"]["object_arrays"]
    assert mg.dataset(mg.upload(docs))["kind"] == "text"


def test_sparse_x_searches_as_in_scikit_learn(mg):
    """A scipy sparse X travels as the CSR matrix scikit-learn's search
    indexes (a CSC matrix too), is stored at its own size, and gives
    scikit-learn's results; only X may be sparse (refused before any upload)."""
    from scipy import sparse
    from sklearn.feature_extraction.text import TfidfTransformer
    from sklearn.pipeline import make_pipeline

    X, y = make_classification(n_samples=150, n_features=300, n_informative=10, random_state=2)
    dense = np.where(np.random.default_rng(2).random(X.shape) < 0.95, 0.0, np.abs(X))
    pipe = make_pipeline(TfidfTransformer(), LogisticRegression())
    grid = {"tfidftransformer__norm": ["l1", "l2"], "logisticregression__C": [1.0, 10.0]}
    for X in (sparse.csr_matrix(dense), sparse.csc_array(dense)):
        ours = GridSearchCV(pipe, grid, cv=3, client=mg, progress=False).fit(X, y)
        sk = SkGridSearchCV(pipe, grid, cv=3).fit(X, y)
        assert_cv_results_equal(ours.cv_results_, sk.cv_results_)
        assert ours.best_params_ == sk.best_params_
        assert np.array_equal(ours.predict_proba(X), sk.predict_proba(X))
    info = mg.dataset(mg.upload(sparse.csr_matrix(dense)))
    assert info["kind"] == "sparse" and info["shape"] == [150, 300]
    assert info["size"] < dense.nbytes / 5  # its entries, not every cell
    uploads = mg.uploads
    with pytest.raises(SpecError, match="^y: a sparse matrix is accepted as X only"):
        mg.submit(LogisticRegression(), {"C": [1.0]}, dense, sparse.csr_matrix(y[:, None]))
    with pytest.raises(SpecError, match="^fit_params.sample_weight: a sparse matrix is accepted"):
        mg.submit(LogisticRegression(), {"C": [1.0]}, dense, y, sample_weight=sparse.csr_matrix(y))
    assert mg.uploads == uploads  # refused before anything was sent


def _categorical_frame():
    rng = np.random.default_rng(0)
    X = pd.DataFrame(
        {"cat": pd.Categorical(rng.choice(list("abcdefgh"), 240)), "num": rng.normal(size=240)}
    )
    y = (X["cat"].isin(["a", "d", "f"]) ^ (X["num"] > 1.5)).astype(int).to_numpy()
    return X, y


def _native_categories(set_output: bool):
    """scikit-learn's documented pattern: OrdinalEncoder in a ColumnTransformer
    giving a DataFrame, so HistGradientBoosting finds "cat" by name."""
    from sklearn.compose import make_column_transformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OrdinalEncoder

    ct = make_column_transformer(
        (OrdinalEncoder(), ["cat"]), remainder="passthrough", verbose_feature_names_out=False
    )
    if set_output:
        ct.set_output(transform="pandas")
    hgb = HistGradientBoostingClassifier(categorical_features=["cat"], max_iter=5, random_state=0)
    return make_pipeline(ct, hgb)


@pytest.mark.parametrize("how", ["set_output", "set_config"])
def test_pandas_output_reaches_the_service(mg, how):
    import sklearn

    X, y = _categorical_frame()
    pipe = _native_categories(set_output=how == "set_output")
    grid = {"histgradientboostingclassifier__learning_rate": [0.1, 0.3]}
    config = {"transform_output": "pandas"} if how == "set_config" else {}
    with sklearn.config_context(**config):
        ours = GridSearchCV(pipe, grid, cv=3, client=mg, progress=False).fit(X, y)
        sk = SkGridSearchCV(pipe, grid, cv=3).fit(X, y)
        assert not np.isnan(ours.cv_results_["mean_test_score"]).any()  # no fit failed
        assert_cv_results_equal(ours.cv_results_, sk.cv_results_)
        assert list(ours.best_estimator_[-1].is_categorical_) == [True, False]
        assert np.array_equal(ours.predict_proba(X), sk.predict_proba(X))


def test_make_scorer_of_a_metric_runs_on_the_service(mg, data):
    from sklearn.metrics import fbeta_score, make_scorer

    from tests.helpers.parity import accuracy_over_chance

    X, y = data
    grid = {"C": [0.1, 1.0]}
    f2 = make_scorer(fbeta_score, beta=2)
    for scoring, refit in [
        (f2, True),
        ({"f2": f2, "half": make_scorer(fbeta_score, beta=0.5), "acc": "accuracy"}, "half"),
    ]:
        ours = GridSearchCV(
            LogisticRegression(),
            grid,
            cv=3,
            scoring=scoring,
            refit=refit,
            client=mg,
            progress=False,
        ).fit(X, y)
        sk = SkGridSearchCV(LogisticRegression(), grid, cv=3, scoring=scoring, refit=refit).fit(
            X, y
        )
        assert_cv_results_equal(ours.cv_results_, sk.cv_results_)
        assert ours.multimetric_ == sk.multimetric_
        assert repr(ours.best_score_) == repr(sk.best_score_)
        assert ours.score(X, y) == sk.score(X, y)
    # a callable of the user's own cannot travel: refused before anything is sent
    with pytest.raises(SpecError, match="make_scorer"):
        GridSearchCV(
            LogisticRegression(), grid, scoring=accuracy_over_chance, client=mg, progress=False
        ).fit(X, y)


def test_a_callable_refit_chooses_here_and_the_service_refits_it(mg, data):
    """scikit-learn calls ``refit(cv_results_)`` for the best index and sets
    no best_score_; the service searches without refitting, then refits the
    chosen candidate from its cached folds (no fold is fit again)."""
    from scipy.stats import randint
    from sklearn.model_selection import KFold

    X, y = data

    def simplest_within_a_point(results):  # the lowest C within 0.01 of the best
        scores = results["mean_test_score"]
        ok = np.flatnonzero(scores >= scores.max() - 0.01)
        return int(ok[np.argmin(np.asarray(results["param_C"], dtype=float)[ok])])

    grid = {"C": [0.01, 0.1, 1.0, 10.0]}
    ours = GridSearchCV(
        LogisticRegression(), grid, cv=3, refit=simplest_within_a_point, client=mg, progress=False
    ).fit(X, y)
    sk = SkGridSearchCV(LogisticRegression(), grid, cv=3, refit=simplest_within_a_point).fit(X, y)
    assert_cv_results_equal(ours.cv_results_, sk.cv_results_)
    assert ours.best_index_ == sk.best_index_ and ours.best_params_ == sk.best_params_
    assert not hasattr(ours, "best_score_") and not hasattr(sk, "best_score_")
    assert np.array_equal(ours.predict_proba(X), sk.predict_proba(X))
    assert ours.refit_job_.stats["final_fits"] == 0  # its folds came from the cache
    assert ours.refit_job_.stats["refit"] == "fit"

    # multimetric, randomized with numpy-valued draws: the refit job names a metric
    dist = {"C": [0.1, 1.0, 3.0], "max_iter": randint(50, 200)}
    scoring = {"acc": "accuracy", "bal": "balanced_accuracy"}

    def last(results):
        return len(results["params"]) - 1

    kw = dict(n_iter=3, random_state=0, cv=3, scoring=scoring, refit=last)
    ours = RandomizedSearchCV(LogisticRegression(), dist, client=mg, progress=False, **kw)
    sk = SkRandomizedSearchCV(LogisticRegression(), dist, **kw).fit(X, y)
    ours.fit(X, y)
    assert_cv_results_equal(ours.cv_results_, sk.cv_results_)
    assert ours.best_params_ == sk.best_params_
    assert np.array_equal(ours.predict(X), sk.predict(X))
    # folds from a generator serve both jobs
    gen = GridSearchCV(
        LogisticRegression(),
        grid,
        cv=KFold(3).split(X),
        refit=simplest_within_a_point,
        client=mg,
        progress=False,
    ).fit(X, y)
    sk = SkGridSearchCV(
        LogisticRegression(), grid, cv=KFold(3).split(X), refit=simplest_within_a_point
    ).fit(X, y)
    assert gen.best_index_ == sk.best_index_ and gen.refit_job_.stats["final_fits"] == 0
    # the refit job raises only the refit's own warnings again: the splitter's
    # and the folds' came with the search (and would come again from its cache)
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import StratifiedKFold

    y3 = np.r_[np.zeros(45), np.ones(43), np.full(2, 2)]
    kw = dict(cv=StratifiedKFold(3), refit=lambda r: 0)
    found = []
    mine = GridSearchCV(LogisticRegression(max_iter=3), grid, client=mg, progress=False, **kw)
    for search in (mine, SkGridSearchCV(LogisticRegression(max_iter=3), grid, **kw)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            search.fit(X, y3)
        found.append([w for w in caught if "least populated" in str(w.message)])
        assert caught[-1].category is ConvergenceWarning  # the refit's
    assert len(found[0]) == len(found[1]) == 1
    refit_warned = mine.refit_job_.stats["refit_warnings"]
    assert [w.split(":")[0] for w in refit_warned] == ["ConvergenceWarning"]
    # a refit that gives the same warning several times gives it as often
    from sklearn.multiclass import OneVsRestClassifier

    ovr = OneVsRestClassifier(LogisticRegression(max_iter=2))
    y4 = np.arange(len(y)) % 3
    counts = []
    for cls, kw in ((GridSearchCV, {"client": mg, "progress": False}), (SkGridSearchCV, {})):
        caught = _fit_warned(
            cls(ovr, {"estimator__C": [0.5, 1.0]}, cv=3, refit=lambda r: 0, **kw), X, y4
        )
        counts.append(sum(w.category is ConvergenceWarning for w in caught))
    assert counts[0] == counts[1] > 9
    # scikit-learn's checks of what the callable returns
    with pytest.raises(IndexError, match="out of range"):
        GridSearchCV(
            LogisticRegression(), grid, cv=3, refit=lambda r: 99, client=mg, progress=False
        ).fit(X, y)


def test_text_labels_keep_the_dtype_scikit_learn_sees(mg, data):
    """pandas labels (object or str Series) and object arrays reach the
    service's fits as object arrays, so ``classes_`` and predictions are
    object arrays, as scikit-learn's; numpy text stays numpy text."""
    X, y = data
    names = np.array(["neg", "pos"], dtype=object)[y]
    grid = {"C": [0.1, 1.0]}
    for labels in (names, pd.Series(names, dtype="str"), names.astype(str)):
        ours = GridSearchCV(LogisticRegression(), grid, cv=3, client=mg, progress=False)
        ours.fit(X, labels)
        sk = SkGridSearchCV(LogisticRegression(), grid, cv=3).fit(X, labels)
        assert_cv_results_equal(ours.cv_results_, sk.cv_results_)
        assert ours.classes_.dtype == sk.classes_.dtype, type(labels)
        assert ours.predict(X).dtype == sk.predict(X).dtype
        assert np.array_equal(ours.predict(X), sk.predict(X))
    assert ours.classes_.dtype.kind == "U"


class NoCount:
    """Has split but no get_n_splits: not a splitter to scikit-learn."""

    def split(self, X, y=None, groups=None):
        yield np.arange(10, 90), np.arange(10)


class Unseeded:
    """A splitter of the user's own that draws new folds on every split."""

    def split(self, X, y=None, groups=None):
        rows = np.random.permutation(len(X))
        yield np.sort(rows[30:]), np.sort(rows[:30])
        yield np.sort(rows[:60]), np.sort(rows[60:])

    def get_n_splits(self, X=None, y=None, groups=None):
        return 2


class EveryOtherRow:
    """A splitter of the user's own (not one the service knows): it is split
    on the client, as scikit-learn would split it, and its folds sent."""

    def __init__(self, n_splits=3):
        self.n_splits = n_splits

    def split(self, X, y=None, groups=None):
        rows = np.arange(len(X))
        for i in range(self.n_splits):
            test = rows[i :: self.n_splits]
            yield rows[~np.isin(rows, test)][::-1], test  # train rows reversed

    def get_n_splits(self, X=None, y=None, groups=None):
        return self.n_splits


def test_explicit_folds_run_on_the_service_as_given(mg, data):
    """cv as (train, test) pairs (a list, a generator, masks) or a splitter of
    the user's own, as scikit-learn takes them: the folds are sent as given,
    whatever their shape (forward-chaining, overlapping, unordered)."""
    from sklearn.model_selection import KFold

    X, y = data
    grid = {"C": [0.1, 1.0]}
    folds = list(KFold(4, shuffle=True, random_state=0).split(X))
    narrow = [(tr.astype(np.int32), te) for tr, te in folds]
    masks = [(np.isin(np.arange(90), tr), np.isin(np.arange(90), te)) for tr, te in folds]
    forward = [(np.arange(0, 40), np.arange(40, 60)), (np.arange(0, 60), np.arange(60, 90))]
    overlapping = [(np.arange(20, 90), np.arange(0, 20)), (np.arange(10, 90), np.arange(0, 10))]
    for make in (
        lambda: folds,
        lambda: KFold(3).split(X),
        lambda: narrow,
        lambda: masks,
        lambda: forward,
        lambda: overlapping,
        lambda: [(np.arange(10, 90)[::-1], np.arange(0, 10)[::-1])],
        lambda: [(np.arange(0, 60), np.arange(-30, 0))],  # negative: from the end
        lambda: EveryOtherRow(),
    ):
        ours = GridSearchCV(LogisticRegression(), grid, cv=make(), client=mg, progress=False)
        sk = SkGridSearchCV(LogisticRegression(), grid, cv=make()).fit(X, y)
        assert_cv_results_equal(ours.fit(X, y).cv_results_, sk.cv_results_)
        assert ours.n_splits_ == sk.n_splits_
        assert np.array_equal(ours.predict(X), sk.predict(X))
    # no folds (an exhausted generator), no candidates: scikit-learn's words,
    # before sending
    before = _jobs(mg)
    for cls, kw in ((GridSearchCV, {"client": mg}), (SkGridSearchCV, {})):
        with pytest.raises(ValueError, match="No fits were performed. Was the CV iterator"):
            cls(LogisticRegression(), grid, cv=iter([]), **kw).fit(X, y)
        with pytest.raises(ValueError, match="No fits were performed. Was the CV iterator"):
            cls(LogisticRegression(), [], **kw).fit(X, y)
    assert _jobs(mg) == before
    # a splitter of the user's own is split once per fit: a callable refit's
    # job then refits on folds the search's job left in the cache
    search = GridSearchCV(
        LogisticRegression(), grid, cv=Unseeded(), refit=lambda r: 0, client=mg, progress=False
    ).fit(X, y)
    assert search.refit_job_.stats["final_fits"] == 0
    # the same folds as a list or as KFold's spec are the same fits: all cached
    job = mg.submit(LogisticRegression(), grid, X, y, cv=KFold(4, shuffle=True, random_state=0))
    assert job.wait().stats["final_fits"] == 0 and job.stats["score_hits"] == 8
    # what cannot be folds is refused before anything is sent, by fold
    sent = mg.uploads
    for cv, path, problem in [
        ([(np.arange(10, 90),)], r"cv\[0\]", "pair of integer index arrays"),
        ([(np.arange(10, 90), np.linspace(0, 1, 5))], r"cv\[0\]", "pair of integer"),
        ([], "cv", "no folds"),
        ([(np.arange(90) < 50, np.arange(80) >= 50)], r"cv\[0\]", "mask of 80 rows"),
    ]:
        with pytest.raises(SpecError, match=problem) as err:
            GridSearchCV(LogisticRegression(), grid, cv=cv, client=mg, progress=False).fit(X, y)
        assert re.fullmatch(path, err.value.path)
    assert mg.uploads == sent
    # an index past X's rows is the service's 422, by fold
    with pytest.raises(SpecError, match="outside the 90 rows") as err:
        mg.submit(LogisticRegression(), grid, X, y, cv=[(np.arange(0, 85), np.arange(85, 95))])
    assert err.value.path == "cv.folds[0]"
    # a fold without test rows scores nan with scikit-learn's warnings, bare
    # estimator or pipeline
    empty = [(np.arange(0, 60), np.arange(60, 90)), (list(range(10, 90)), np.arange(0))]
    for est in (LogisticRegression(), Pipeline([("pca", PCA(2)), ("lr", LogisticRegression())])):
        prefix = "lr__" if isinstance(est, Pipeline) else ""
        g = {prefix + "C": grid["C"]}
        found = []
        for search in (
            GridSearchCV(est, g, cv=empty, client=mg, progress=False),
            SkGridSearchCV(est, g, cv=empty),
        ):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                found.append(search.fit(X, y))
            assert any(str(w.message).startswith("Scoring failed") for w in caught)
        assert_cv_results_equal(found[0].cv_results_, found[1].cv_results_)
        assert np.isnan(found[0].cv_results_["split1_test_score"]).all()
    # uint64 past int64 is outside X, not wrapped
    huge = np.array([2**63 + 5], dtype=np.uint64)
    with pytest.raises(SpecError, match="outside X's rows"):
        mg.submit(LogisticRegression(), grid, X, y, cv=[(np.arange(10, 90, dtype=np.uint64), huge)])
    # Client.submit refuses what scikit-learn's parameter check refuses in the drop-in
    with pytest.raises(SpecError, match="no get_n_splits"):
        mg.submit(LogisticRegression(), grid, X, y, cv=NoCount())
    # masks are checked against X's rows also when X is given by its id
    short = [(np.arange(60) < 40, np.arange(60) >= 40)]
    with pytest.raises(SpecError, match="mask of 60 rows does not match X's 90"):
        mg.submit(LogisticRegression(), grid, mg.upload(X), y, cv=short)


def _printed(text: str) -> list[str]:
    """Printed lines without what differs run to run (the fit times, and the
    dots padding them to 80 columns)."""
    lines = []
    for line in text.splitlines():
        line = re.sub(r" total time=.*$", "", line)
        lines.append(re.sub(r"^(\[CV[^\]]*\] (?:END|START) )\.*|\.+$", r"\1", line))
    return lines


@pytest.mark.parametrize("verbose", [1, 2, 3, 10])
def test_verbose_prints_what_scikit_learn_prints(mg, data, capsys, verbose):
    X, y = data
    grid = {"C": [0.1, 1.0], "class_weight": [None, "balanced"]}
    for scoring, train in [(None, False), (["accuracy", "f1"], True)]:
        kw = dict(
            cv=3,
            scoring=scoring,
            refit="f1" if scoring else True,
            return_train_score=train,
            verbose=verbose,
        )
        SkGridSearchCV(LogisticRegression(), grid, **kw).fit(X, y)
        theirs = capsys.readouterr().out
        GridSearchCV(LogisticRegression(), grid, client=mg, progress=False, **kw).fit(X, y)
        ours = capsys.readouterr().out
        assert _printed(ours) == _printed(theirs)
        assert len(ours.splitlines()) == (1 if verbose == 1 else 13 if verbose < 10 else 25)
        if verbose > 1:
            assert all(len(line) >= 80 for line in ours.splitlines()[1:])


def test_verbose_says_what_it_fits_before_the_fits(mg, data, capsys, monkeypatch):
    """scikit-learn prints its count of fits before it fits: a long search
    says what it is doing at once, not once it is done."""
    from memogrid.client import Job

    X, y = data
    seen = []
    wait = Job.wait

    def waiting(self, *args, **kwargs):
        seen.append(capsys.readouterr().out)  # printed before the job's end was waited for
        return wait(self, *args, **kwargs)

    monkeypatch.setattr(Job, "wait", waiting)
    grid = {"C": [0.1, 1.0]}
    GridSearchCV(LogisticRegression(), grid, cv=3, verbose=1, client=mg, progress=False).fit(X, y)
    assert seen == ["Fitting 3 folds for each of 2 candidates, totalling 6 fits\n"]
    assert capsys.readouterr().out == ""  # said once


def test_fitted_internals_of_calibration_and_feature_unions_load(mg):
    """What fitting puts in a model and no spec names loads all the same:
    isotonic calibration keeps scipy's interp1d with its own method, and a
    FeatureUnion fits "passthrough" as an identity FunctionTransformer."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.datasets import load_iris
    from sklearn.pipeline import FeatureUnion
    from sklearn.svm import LinearSVC

    X, y = load_iris(return_X_y=True)
    calibrated = CalibratedClassifierCV(LinearSVC(random_state=0), cv=3, method="isotonic")
    union = Pipeline(
        [
            ("fu", FeatureUnion([("pca", PCA(n_components=1)), ("raw", PCA(n_components=2))])),
            ("clf", LogisticRegression(max_iter=500)),
        ]
    )
    for est, grid in (
        (calibrated, {"estimator__C": [0.1, 1.0]}),
        (union, {"fu__raw": ["passthrough"]}),
    ):
        ours = GridSearchCV(est, grid, cv=3, client=mg, progress=False).fit(X, y)
        sk = SkGridSearchCV(est, grid, cv=3).fit(X, y)
        assert_cv_results_equal(ours.cv_results_, sk.cv_results_)
        assert np.array_equal(ours.predict_proba(X), sk.predict_proba(X))


def test_a_model_skops_cannot_store_is_refit_here(mg):
    """The service refits Birch but skops cannot store it: the job succeeds
    with a note, and the drop-in refits the best candidate itself, as
    scikit-learn does, rather than failing after every fit has run."""
    from collections import Counter

    from sklearn.cluster import Birch
    from sklearn.datasets import make_blobs

    X, y = make_blobs(n_samples=150, centers=3, n_features=4, random_state=0)
    # 5 clusters asked, fewer subclusters found at 3.0: every fit warns, the refit too
    grid = {"n_clusters": [5], "threshold": [3.0, 3.5]}
    kw = dict(cv=3, scoring="adjusted_rand_score")
    ours = GridSearchCV(Birch(), grid, client=mg, progress=False, **kw)
    sk = SkGridSearchCV(Birch(), grid, **kw)
    counts = []
    for search in (ours, sk):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            search.fit(X, y)
        counts.append(Counter(w.category.__name__ for w in caught))
    assert counts[0] == counts[1]  # the refit's warnings once: the one done here
    assert counts[1]["ConvergenceWarning"] == 7
    assert_cv_results_equal(ours.cv_results_, sk.cv_results_)
    assert ours.best_params_ == sk.best_params_
    assert np.array_equal(ours.predict(X), sk.predict(X))
    assert ours.refit_time_ > 0
    note = [w for w in ours.job_.warnings if w.startswith("the refit best estimator could not")]
    assert note and "Birch" in note[0]
    with pytest.raises(AttributeError, match="could not be stored.*refit it here"):
        ours.job_.best_estimator_  # noqa: B018


def test_an_empty_grid_scores_the_estimator_as_it_is(mg, data):
    """``{}`` is one candidate, the estimator as given, in a grid, in a list
    of grids and as distributions, as in scikit-learn."""
    X, y = data
    lr = LogisticRegression(C=0.5)
    for ours, sk in (
        (GridSearchCV(lr, {}, cv=3), SkGridSearchCV(lr, {}, cv=3)),
        (GridSearchCV(lr, [{}, {"C": [2.0]}], cv=3), SkGridSearchCV(lr, [{}, {"C": [2.0]}], cv=3)),
        (
            RandomizedSearchCV(lr, {}, n_iter=1, cv=3, random_state=0),
            SkRandomizedSearchCV(lr, {}, n_iter=1, cv=3, random_state=0),
        ),
    ):
        ours.set_params(client=mg, progress=False).fit(X, y)
        sk.fit(X, y)
        assert_cv_results_equal(ours.cv_results_, sk.cv_results_)
        assert ours.best_params_ == sk.best_params_
        assert np.array_equal(ours.predict_proba(X), sk.predict_proba(X))


@both_databases
def test_a_frame_laid_out_row_by_row_searches_to_the_last_bit(mg):
    """The client tells the service a frame's layout (pandas keeps it in each
    fold, and StandardScaler's last bits depend on it)."""
    from sklearn.datasets import load_iris
    from sklearn.preprocessing import StandardScaler

    rows, y = load_iris(return_X_y=True, as_frame=True)
    columns = pd.DataFrame({c: rows[c].to_numpy().copy() for c in rows.columns})
    pipe = Pipeline([("sc", StandardScaler()), ("clf", LogisticRegression(max_iter=500))])
    for X in (rows, columns):
        ours = GridSearchCV(pipe, {"clf__C": [0.1, 1.0]}, cv=3, client=mg, progress=False)
        sk = SkGridSearchCV(pipe, {"clf__C": [0.1, 1.0]}, cv=3).fit(X, y)
        assert_cv_results_equal(ours.fit(X, y).cv_results_, sk.cv_results_)
        assert ours.best_estimator_[0].mean_.tobytes() == sk.best_estimator_[0].mean_.tobytes()
        assert ours.predict_proba(X).tobytes() == sk.predict_proba(X).tobytes()


def test_a_failed_refit_raises_the_searchs_warnings_first(mg, data):
    """Folds that failed (a NaN in one row) warn, then the refit on all rows
    fails: the failed job keeps the warnings, raised before its error."""
    from collections import Counter

    X, y = data
    X = X.copy()
    X[3, 1] = np.nan
    grid = {"C": [0.1, 1.0, 10.0]}
    kinds = []
    for search in (
        GridSearchCV(LogisticRegression(max_iter=2), grid, cv=3, client=mg, progress=False),
        SkGridSearchCV(LogisticRegression(max_iter=2), grid, cv=3),
    ):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(ValueError, match="Input X contains NaN"):
                search.fit(X, y)
        kinds.append(Counter((w.category.__name__, str(w.message)[:30]) for w in caught))
    assert kinds[0] == kinds[1]  # each as often: a ConvergenceWarning per fit that gave it
    assert kinds[0][("FitFailedWarning", "\n6 fits failed out of a total ")] == 1
    assert kinds[0][("UserWarning", "Scoring failed. The score on t")] == 3


def test_a_warning_each_fold_gives_comes_as_often(mg):
    """A repeated stratified splitter warns at each split of a rare class:
    as often through the service as in scikit-learn."""
    from collections import Counter

    from sklearn.model_selection import RepeatedStratifiedKFold

    X = np.random.default_rng(0).normal(size=(40, 3))
    y = np.array([0] * 20 + [1] * 18 + [2] * 2)
    cv = RepeatedStratifiedKFold(n_splits=3, n_repeats=3, random_state=0)
    counts = []
    for search in (
        GridSearchCV(LogisticRegression(), {"C": [1.0]}, cv=cv, client=mg, progress=False),
        SkGridSearchCV(LogisticRegression(), {"C": [1.0]}, cv=cv),
    ):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            search.fit(X, y)
        counts.append(Counter(w.category.__name__ for w in caught))
    assert counts[0] == counts[1] and counts[0]["UserWarning"] == 3


def test_models_keeping_sparse_training_rows_load(mg):
    """SVC keeps its support vectors and a neighbors model its training rows
    as the sparse matrices they came as; the best estimator loads with them
    and predicts as scikit-learn's."""
    from scipy import sparse
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.svm import SVC

    X, y = make_classification(n_samples=120, n_features=30, random_state=4)
    X = sparse.csr_matrix(np.where(np.abs(X) < 1.0, 0.0, X))
    for est, grid in (
        (SVC(), {"C": [1.0, 2.0]}),
        (KNeighborsClassifier(), {"n_neighbors": [3, 5]}),
    ):
        ours = GridSearchCV(est, grid, cv=3, client=mg, progress=False).fit(X, y)
        sk = SkGridSearchCV(est, grid, cv=3).fit(X, y)
        assert_cv_results_equal(ours.cv_results_, sk.cv_results_)
        assert np.array_equal(ours.predict(X), sk.predict(X))
    assert sparse.issparse(ours.best_estimator_._fit_X)


def test_a_grid_swapping_a_step_and_tuning_it_reports_the_values_it_swapped_in(mg, data):
    """``{"clf": [est], "clf__C": [...]}``: scikit-learn sets clones, so the
    grid's estimator keeps its own parameters in params and best_params_;
    drawn from a distribution the same, and the search runs."""
    from scipy.stats import loguniform
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.preprocessing import StandardScaler

    X, y = data
    pipe = Pipeline([("sc", StandardScaler()), ("clf", LogisticRegression())])
    grid = [
        {"clf": [LogisticRegression()], "clf__C": [0.1, 1.0]},
        {"clf": [RandomForestClassifier(n_estimators=3, random_state=0)], "clf__max_depth": [2, 3]},
    ]
    ours = GridSearchCV(pipe, grid, cv=3, client=mg, progress=False).fit(X, y)
    sk = SkGridSearchCV(pipe, grid, cv=3).fit(X, y)
    assert_cv_results_equal(ours.cv_results_, sk.cv_results_)
    assert repr(ours.best_params_) == repr(sk.best_params_)
    dists = {"clf": [LogisticRegression()], "clf__C": loguniform(1e-2, 1e2)}
    kw = dict(n_iter=3, cv=3, random_state=0)
    ours = RandomizedSearchCV(pipe, dists, client=mg, progress=False, **kw).fit(X, y)
    sk = SkRandomizedSearchCV(pipe, dists, **kw).fit(X, y)
    assert_cv_results_equal(ours.cv_results_, sk.cv_results_)


def test_a_grid_value_scikit_learn_refuses_fails_as_in_scikit_learn(mg, data):
    X, y = data
    grid = {"C": [-1.0, 1.0]}
    with warnings.catch_warnings(record=True) as theirs:
        warnings.simplefilter("always")
        sk = SkGridSearchCV(LogisticRegression(), grid, cv=3).fit(X, y)
    with warnings.catch_warnings(record=True) as ours_warned:
        warnings.simplefilter("always")
        ours = GridSearchCV(LogisticRegression(), grid, cv=3, client=mg, progress=False).fit(X, y)
    assert_cv_results_equal(ours.cv_results_, sk.cv_results_)
    assert ours.best_params_ == sk.best_params_ == {"C": 1.0}
    assert [type(w.message) for w in ours_warned] == [type(w.message) for w in theirs]
    assert FitFailedWarning in [type(w.message) for w in ours_warned]


def test_a_best_estimator_holding_a_named_scorer_loads(mg, data):
    """A search or a threshold tuner inside the searched estimator keeps the
    scorer it was given by name, and so its metric function."""
    from sklearn.model_selection import GridSearchCV as Inner
    from sklearn.model_selection import TunedThresholdClassifierCV

    X, y = data
    for est, grid in (
        (
            Inner(LogisticRegression(), {"C": [0.1, 1.0]}, cv=3),
            {"scoring": ["accuracy", "roc_auc"]},
        ),
        (TunedThresholdClassifierCV(LogisticRegression(), cv=3), {"scoring": ["f1", "recall"]}),
    ):
        ours = GridSearchCV(est, grid, cv=3, client=mg, progress=False).fit(X, y)
        sk = SkGridSearchCV(est, grid, cv=3).fit(X, y)
        assert_cv_results_equal(ours.cv_results_, sk.cv_results_)
        assert np.array_equal(ours.predict(X), sk.predict(X))


def test_an_estimator_drawing_from_a_randomstate_fits_as_in_scikit_learn(mg, data):
    """``random_state=np.random.RandomState(...)`` on an estimator: its state
    travels, every fit starts from it (scikit-learn clones copy it), the
    caller's generator is left as it was, and the same state is the same
    search (cached)."""
    from sklearn.ensemble import RandomForestClassifier

    X, y = data
    grid = {"max_depth": [2, 4]}
    rng = np.random.RandomState(7)
    rng.normal(size=3)  # a state no integer seed gives
    forest = RandomForestClassifier(n_estimators=5, random_state=rng)
    before = rng.get_state(legacy=True)[1].copy()
    ours = GridSearchCV(forest, grid, cv=3, client=mg, progress=False).fit(X, y)
    assert np.array_equal(rng.get_state(legacy=True)[1], before)
    sk = SkGridSearchCV(forest, grid, cv=3).fit(X, y)
    assert_cv_results_equal(ours.cv_results_, sk.cv_results_)
    assert np.array_equal(ours.predict_proba(X), sk.predict_proba(X))
    again = GridSearchCV(forest, grid, cv=3, client=mg, progress=False).fit(X, y)
    assert again.job_.stats["final_fits"] == 0
    # one generator for the estimator and the folds: the estimator is read in
    # the state it had before the folds were drawn, as scikit-learn copies it
    from sklearn.model_selection import KFold

    results = []
    for cls, kw in ((GridSearchCV, {"client": mg, "progress": False}), (SkGridSearchCV, {})):
        shared = np.random.RandomState(0)
        est = RandomForestClassifier(n_estimators=5, random_state=shared)
        results.append(
            cls(est, grid, cv=KFold(3, shuffle=True, random_state=shared), **kw).fit(X, y)
        )
    assert_cv_results_equal(results[0].cv_results_, results[1].cv_results_)
    assert np.array_equal(results[0].predict_proba(X), results[1].predict_proba(X))
    # folds given as a generator drawing from it are read first, as check_cv reads them
    from sklearn.model_selection import ShuffleSplit

    results = []
    for cls, kw in ((GridSearchCV, {"client": mg, "progress": False}), (SkGridSearchCV, {})):
        shared = np.random.RandomState(0)
        est = RandomForestClassifier(n_estimators=4, random_state=shared)
        folds = (s for s in ShuffleSplit(3, random_state=shared).split(X))
        results.append(cls(est, grid, cv=folds, **kw).fit(X, y))
    assert_cv_results_equal(results[0].cv_results_, results[1].cv_results_)
    assert np.array_equal(results[0].predict_proba(X), results[1].predict_proba(X))
    # a malformed state is the service's 422, by path
    from memogrid.spec import to_spec

    spec = to_spec(forest)
    spec["params"]["random_state"]["RandomState"]["pos"] = 700
    r = mg._http.post(
        "/v1/jobs",
        json={"estimator": spec, "param_grid": grid, "X": mg.upload(X), "y": mg.upload(y)},
    )
    assert r.status_code == 422 and "pos is an integer in [0, 624]" in r.text, r.text


def test_a_splitter_drawing_from_a_randomstate_splits_as_scikit_learns(mg, data):
    """KFold/ShuffleSplit with ``random_state=np.random.RandomState(...)``:
    split once in the caller, so the folds are scikit-learn's and the
    generator advances as scikit-learn's search advances it (a second fit
    draws other folds, in both)."""
    from sklearn.model_selection import KFold, ShuffleSplit

    X, y = data
    grid = {"C": [0.1, 1.0]}
    for make in (
        lambda rs: KFold(3, shuffle=True, random_state=rs),
        lambda rs: ShuffleSplit(3, test_size=0.3, random_state=rs),
    ):
        ours_rs, sk_rs = np.random.RandomState(5), np.random.RandomState(5)
        ours_cv, sk_cv = make(ours_rs), make(sk_rs)
        for _ in range(2):
            ours = GridSearchCV(LogisticRegression(), grid, cv=ours_cv, client=mg, progress=False)
            sk = SkGridSearchCV(LogisticRegression(), grid, cv=sk_cv).fit(X, y)
            assert_cv_results_equal(ours.fit(X, y).cv_results_, sk.cv_results_)
            assert ours.best_score_ == sk.best_score_
        assert ours_rs.randint(1 << 30) == sk_rs.randint(1 << 30)
    # by dataset id there is no X here to split
    dataset = mg.upload(X)
    with pytest.raises(SpecError, match="draws its folds from a RandomState, and X is a dataset"):
        mg.submit(
            LogisticRegression(),
            grid,
            dataset,
            y,
            cv=KFold(3, shuffle=True, random_state=np.random.RandomState(0)),
        )


def test_numpys_global_seed_gives_the_folds_and_candidates_scikit_learn_draws(mg, data):
    """``random_state=None`` draws from numpy's global generator, which a
    notebook seeds with ``np.random.seed``: shuffled folds and randomized
    candidates are drawn here from it, as scikit-learn's search draws them,
    advancing it alike (the service drew its own: other folds, other
    candidates, under any seed)."""
    from scipy.stats import loguniform
    from sklearn.model_selection import KFold, ShuffleSplit, StratifiedKFold

    X, y = data
    grid = {"C": [0.1, 1.0]}
    for cv in (
        KFold(3, shuffle=True),
        StratifiedKFold(3, shuffle=True),
        ShuffleSplit(3, test_size=0.3),
    ):
        np.random.seed(3)
        ours = GridSearchCV(LogisticRegression(), grid, cv=cv, client=mg, progress=False)
        ours.fit(X, y)
        after_ours = np.random.randint(1 << 30)
        np.random.seed(3)
        sk = SkGridSearchCV(LogisticRegression(), grid, cv=cv).fit(X, y)
        assert_cv_results_equal(ours.cv_results_, sk.cv_results_)
        assert np.random.randint(1 << 30) == after_ours
    space = {"C": loguniform(1e-3, 1e2), "fit_intercept": [True, False]}
    np.random.seed(4)
    ours = RandomizedSearchCV(LogisticRegression(), space, n_iter=4, client=mg, progress=False)
    ours.fit(X, y)
    after_ours = np.random.randint(1 << 30)
    np.random.seed(4)
    sk = SkRandomizedSearchCV(LogisticRegression(), space, n_iter=4).fit(X, y)
    assert_cv_results_equal(ours.cv_results_, sk.cv_results_)
    assert ours.best_params_ == sk.best_params_
    assert np.random.randint(1 << 30) == after_ours
    # data given by dataset id is not here to split: the service draws
    x_id, y_id = mg.upload(X), mg.upload(y)
    for Xs, ys in ((x_id, y), (X, y_id)):
        job = mg.submit(LogisticRegression(), grid, Xs, ys, cv=ShuffleSplit(3, test_size=0.3))
        assert job.wait(progress=False).n_splits_ == 3
    seeded = ShuffleSplit(3, test_size=0.3, random_state=np.random.RandomState(0))
    with pytest.raises(SpecError, match="RandomState, and y is a dataset id"):
        mg.submit(LogisticRegression(), grid, X, y_id, cv=seeded)


def test_splitters_as_estimator_parameters(mg, data):
    """``cv=`` of a calibrator or a stacker may be a splitter, in the
    estimator or in the grid, as in scikit-learn."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.ensemble import StackingClassifier
    from sklearn.model_selection import KFold, StratifiedKFold
    from sklearn.tree import DecisionTreeClassifier

    X, y = data
    folds = StratifiedKFold(3, shuffle=True, random_state=0)
    cases = [
        (
            CalibratedClassifierCV(LogisticRegression(), cv=folds),
            {"method": ["sigmoid", "isotonic"]},
        ),
        (CalibratedClassifierCV(LogisticRegression()), {"cv": [3, folds, KFold(4)]}),
        (
            StackingClassifier(
                [("lr", LogisticRegression()), ("dt", DecisionTreeClassifier(random_state=0))],
                final_estimator=LogisticRegression(),
                cv=KFold(3, shuffle=True, random_state=1),
            ),
            {"final_estimator__C": [0.1, 1.0]},
        ),
    ]
    for est, grid in cases:
        ours = GridSearchCV(est, grid, cv=3, client=mg, progress=False).fit(X, y)
        sk = SkGridSearchCV(est, grid, cv=3).fit(X, y)
        assert_cv_results_equal(ours.cv_results_, sk.cv_results_)
        assert np.array_equal(ours.predict_proba(X), sk.predict_proba(X))
    # folds drawn afresh at every fit are memoized all the same: the job says so
    unseeded = CalibratedClassifierCV(LogisticRegression(), cv=KFold(3, shuffle=True))
    ours = GridSearchCV(unseeded, {"method": ["sigmoid"]}, cv=3, client=mg, progress=False)
    notes = ours.fit(X, y).job_.warnings
    assert any("memoized" in n and "cv (KFold)" in n for n in notes), notes
    seeded = GridSearchCV(cases[0][0], {"method": ["sigmoid"]}, cv=3, client=mg, progress=False)
    assert not any("(StratifiedKFold)" in n for n in seeded.fit(X, y).job_.warnings)


def _pick_last(cv_results):
    return len(cv_results["params"]) - 1


def test_a_callable_refit_on_a_candidate_whose_fits_all_failed_raises_the_refits_error(mg, data):
    X, y = data
    pipe = Pipeline([("pca", PCA()), ("lr", LogisticRegression())])
    grid = {"pca__n_components": [2, 10]}  # 10 > the 5 features: every fold fails
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError) as theirs:
            SkGridSearchCV(pipe, grid, cv=3, refit=_pick_last).fit(X, y)
        with pytest.raises(ValueError) as ours:
            GridSearchCV(pipe, grid, cv=3, refit=_pick_last, client=mg, progress=False).fit(X, y)
    assert type(ours.value) is type(theirs.value) and str(ours.value) == str(theirs.value)


def test_library_errors_of_a_failed_job_are_caught_as_scikit_learns(mg, data):
    """A refit failing with scikit-learn's parameter error (the failing
    candidate scored best by error_score) is caught as that error is."""
    from sklearn.utils._param_validation import InvalidParameterError

    X, y = data
    grid = {"C": [0.1, 1.0, -1.0]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(InvalidParameterError):
            SkGridSearchCV(LogisticRegression(), grid, cv=3, error_score=5).fit(X, y)
        with pytest.raises(InvalidParameterError, match="'C' parameter"):
            ours = GridSearchCV(LogisticRegression(), grid, cv=3, error_score=5, client=mg)
            ours.set_params(progress=False).fit(X, y)


def test_group_splitters_count_the_groups_not_the_rows(mg):
    """LeavePGroupsOut(3) over 5 groups of 200 rows is 10 folds (not C(200, 3),
    which the fit cap would refuse); a count beyond the cap is refused."""
    from sklearn.model_selection import LeavePGroupsOut

    X, y = make_classification(n_samples=200, n_features=4, random_state=0)
    groups = np.repeat(np.arange(5), 40)
    grid = {"C": [0.5, 1.0]}
    ours = GridSearchCV(LogisticRegression(), grid, cv=LeavePGroupsOut(3), client=mg)
    ours.set_params(progress=False).fit(X, y, groups=groups)
    sk = SkGridSearchCV(LogisticRegression(), grid, cv=LeavePGroupsOut(3)).fit(X, y, groups=groups)
    assert ours.n_splits_ == sk.n_splits_ == 10
    assert_cv_results_equal(ours.cv_results_, sk.cv_results_)
    many = np.arange(200) % 40  # C(40, 3) = 9880 folds
    with pytest.raises(SpecError, match="9880 folds"):
        GridSearchCV(LogisticRegression(), grid, cv=LeavePGroupsOut(3), client=mg).fit(
            X, y, groups=many
        )


@pytest.mark.parametrize("solver", ["randomized", "arpack"])
def test_a_best_estimator_computes_with_the_layout_it_was_fitted_with(mg, solver):
    """PCA keeps components_ as a strided view (rows of a Fortran matrix, or
    reversed); pickles and model files keep it C-ordered, so transform's
    last bits differed from scikit-learn's until the strides travelled with
    it: a searched PCA (the refit's final model) and one as a step."""
    from sklearn.datasets import make_blobs

    X, y = make_blobs(n_samples=120, n_features=5, centers=3, random_state=0)
    pca = PCA(svd_solver=solver, random_state=0)
    pipe = Pipeline([("pca", pca), ("lr", LogisticRegression())])
    for est, grid, target in (
        (pca, {"n_components": [1, 2]}, None),
        (pipe, {"pca__n_components": [1, 2]}, y),
    ):
        ours = GridSearchCV(est, grid, cv=3, client=mg, progress=False).fit(X, target)
        sk = SkGridSearchCV(est, grid, cv=3).fit(X, target)
        fitted, theirs = ours.best_estimator_, sk.best_estimator_
        if target is not None:
            fitted, theirs = fitted[0], theirs[0]
        assert fitted.components_.strides == theirs.components_.strides
        assert fitted.transform(X).tobytes() == theirs.transform(X).tobytes()
        assert not hasattr(fitted, "_memogrid_strides")


def test_strides_that_describe_no_layout_of_the_array_are_dropped():
    from memogrid.layout import with_strides

    values = np.arange(6.0).reshape(2, 3)
    assert with_strides(values, [8, 8]) is None  # elements would overlap
    assert with_strides(values, [8]) is None
    assert with_strides(values, [8, 5]) is None  # not whole elements
    assert with_strides(values, [8, 10**12]) is None  # spans more than allowed
    assert with_strides(np.zeros(3, dtype="V0"), [0]) is None  # no bytes to step by
    laid = with_strides(values, [8, -16])
    assert laid.strides == (8, -16) and np.array_equal(laid, values)
    # a row of a matrix of many rows: a span of 100 times the row is allowed
    wide = with_strides(values[:1], [8, 800])
    assert wide is not None and wide.strides == (8, 800)
    assert with_strides(values[:1], [8, 800], extra=1000) is None


@both_databases
@pytest.mark.parametrize("error_score", [-np.inf, np.inf, 0, -1, 0.5])
def test_error_score_infinities_and_integers_as_scikit_learns(mg, data, error_score):
    """``error_score=-np.inf`` ranks failing candidates last (JSON has no
    infinity: it travels by name); an integer is kept, so the warning says
    "set to 0" as scikit-learn's does, not "0.0"."""
    X, y = data
    grid = {"C": [0.1, 1.0, -1.0]}

    def run(cls, **kw):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            kw.update(cv=3, error_score=error_score, refit=False)
            search = cls(LogisticRegression(), grid, **kw).fit(X, y)
        texts = sorted(str(w.message) for w in caught if w.category is FitFailedWarning)
        return search, [t[: t.index("Below")] if "Below" in t else t for t in texts]

    ours, ours_warned = run(GridSearchCV, client=mg, progress=False)
    sk, sk_warned = run(SkGridSearchCV)
    assert_cv_results_equal(ours.cv_results_, sk.cv_results_)
    assert ours.best_index_ == sk.best_index_ and ours_warned == sk_warned
    assert f"will be set to {error_score}." in ours_warned[0]


@pytest.mark.parametrize("scoring", [None, "f1", "accuracy"])
def test_one_metric_refits_by_any_name(mg, data, scoring):
    """With one metric scikit-learn refits on any ``refit`` string (names are
    checked only among several metrics); an empty string does not refit."""
    X, y = data
    grid = {"C": [0.1, 1.0]}
    for refit in ("f1", "anything", ""):
        ours = GridSearchCV(LogisticRegression(), grid, scoring=scoring, refit=refit, client=mg)
        ours.set_params(progress=False).fit(X, y)
        sk = SkGridSearchCV(LogisticRegression(), grid, scoring=scoring, refit=refit).fit(X, y)
        assert_cv_results_equal(ours.cv_results_, sk.cv_results_)
        assert hasattr(ours, "best_estimator_") == hasattr(sk, "best_estimator_") == bool(refit)
        assert ours.best_score_ == sk.best_score_ and ours.best_params_ == sk.best_params_
        if refit:
            assert np.array_equal(ours.predict(X), sk.predict(X))


@both_databases
def test_float32_values_are_fitted_as_float32(mg, data):
    """scikit-learn sets a grid's float32 values (and keeps an estimator's
    own) as they are, and some fits compute differently with them: the last
    bits of scores, coefficients and predictions follow."""
    X, y = data
    searches = [
        (LogisticRegression(), {"C": np.array([0.1, 1.0], dtype=np.float32)}),
        (LogisticRegression(C=np.float32(0.3)), {"max_iter": [100, 200]}),
    ]
    for est, grid in searches:
        kw = dict(cv=3, scoring="neg_log_loss")
        ours = GridSearchCV(est, grid, client=mg, progress=False, **kw).fit(X, y)
        sk = SkGridSearchCV(est, grid, **kw).fit(X, y)
        assert_cv_results_equal(ours.cv_results_, sk.cv_results_)
        assert ours.best_score_ == sk.best_score_
        assert type(ours.best_estimator_.C) is type(sk.best_estimator_.C)
        assert np.array_equal(ours.predict_proba(X), sk.predict_proba(X))


def _routed_outcome(search, X, y, **params):
    try:
        search.fit(X, y, **params)
    except Exception as exc:
        return type(exc).__name__, str(exc)
    return search.cv_results_


def test_metadata_routing_is_followed_or_refused_never_ignored(mg, data):
    """Under ``enable_metadata_routing=True`` scikit-learn routes fit params
    by their requests: errors for requests left unset are scikit-learn's own;
    a weight requested by a plain estimator's fit only searches as
    scikit-learn's; a weight routed to a scorer (which the service would not
    do) is refused before anything is sent, not searched differently."""
    import sklearn
    from sklearn.metrics import get_scorer
    from sklearn.model_selection import KFold

    X, y = data
    w = np.random.RandomState(0).uniform(0.1, 3, size=len(y))
    grid = {"C": [0.1, 10.0]}
    before = _jobs(mg)
    with sklearn.config_context(enable_metadata_routing=True):
        unset = LogisticRegression()
        weighted = LogisticRegression().set_fit_request(sample_weight=True)
        weighted.set_score_request(sample_weight=True)  # the default scorer: .score
        for est, params, cv in (
            (unset, {"sample_weight": w}, 3),  # UnsetMetadataPassedError
            (weighted, {"sample_weight": w}, 3),  # routed as without routing
            (LogisticRegression(), {"groups": w > 1}, KFold(3)),  # groups routed nowhere
        ):
            theirs = _routed_outcome(SkGridSearchCV(est, grid, cv=cv), X, y, **params)
            ours = GridSearchCV(est, grid, cv=cv, client=mg, progress=False)
            got = _routed_outcome(ours, X, y, **params)
            if isinstance(theirs, tuple):
                assert got == theirs
            else:
                assert_cv_results_equal(got, theirs)
                sk = SkGridSearchCV(est, grid, cv=cv).fit(X, y, **params)
                assert np.array_equal(ours.predict_proba(X), sk.predict_proba(X))
        assert _jobs(mg) == before + 1
        # fit unweighted, scored weighted (or the other way): the service
        # would weigh both
        est = LogisticRegression().set_fit_request(sample_weight=False)
        scorer = get_scorer("accuracy").set_score_request(sample_weight=True)
        with pytest.raises(SpecError, match="routes nothing to the estimator's fit"):
            GridSearchCV(est, grid, scoring=scorer, client=mg).fit(X, y, sample_weight=w)
        est = LogisticRegression().set_fit_request(sample_weight=True)
        scorer = get_scorer("accuracy").set_score_request(sample_weight=False)
        with pytest.raises(SpecError, match=r"otherwise to the scorers \['score'\]"):
            GridSearchCV(est, grid, scoring=scorer, client=mg).fit(X, y, sample_weight=w)
        pipe = Pipeline([("lr", LogisticRegression().set_fit_request(sample_weight=True))])
        pipe.steps[0][1].set_score_request(sample_weight=False)
        with pytest.raises(SpecError, match="to the estimator's fit"):
            GridSearchCV(pipe, {"lr__C": [1.0]}, client=mg).fit(X, y, sample_weight=w)
        # several scorers, one asking for the weight: the other takes it
        # without routing, so the service would weigh it too
        scoring = {
            "acc": get_scorer("accuracy").set_score_request(sample_weight=True),
            "f1": get_scorer("f1").set_score_request(sample_weight=False),
        }
        est = LogisticRegression().set_fit_request(sample_weight=True)
        with pytest.raises(SpecError, match=r"to the scorers \['f1'\]"):
            search = GridSearchCV(est, grid, scoring=scoring, refit="acc", client=mg)
            search.fit(X, y, sample_weight=w)
        assert _jobs(mg) == before + 1
        # a weight given as None is dropped, as scikit-learn's routing drops it
        weighted.set_score_request(sample_weight=True)
        sk = SkGridSearchCV(weighted, grid, cv=3).fit(X, y, sample_weight=None)
        ours = GridSearchCV(weighted, grid, cv=3, client=mg, progress=False)
        assert_cv_results_equal(ours.fit(X, y, sample_weight=None).cv_results_, sk.cv_results_)


def test_score_takes_params_as_scikit_learns_does(mg, data):
    """``search.score(X, y, sample_weight=w)`` is refused without routing
    (scikit-learn's message); under it the weight reaches the scorer only
    by its request."""
    import sklearn
    from sklearn.metrics import get_scorer

    X, y = data
    w = np.random.RandomState(1).uniform(0.1, 3, size=len(y))
    grid = {"C": [0.1, 10.0]}
    scorer = get_scorer("accuracy")
    ours = GridSearchCV(LogisticRegression(), grid, scoring=scorer, client=mg, progress=False)
    ours.fit(X, y)
    sk = SkGridSearchCV(LogisticRegression(), grid, scoring=scorer).fit(X, y)

    def scored(search, **kw):
        try:
            return search.score(X, y, **kw)
        except Exception as exc:
            return type(exc).__name__, str(exc)

    assert scored(ours, sample_weight=w) == scored(sk, sample_weight=w)
    assert "only supported if enable_metadata_routing=True" in scored(ours, sample_weight=w)[1]
    with sklearn.config_context(enable_metadata_routing=True):
        assert scored(ours, sample_weight=w) == scored(sk, sample_weight=w)  # unset request
        scorer.set_score_request(sample_weight=True)
        assert scored(ours, sample_weight=w) == scored(sk, sample_weight=w) != scored(ours)


def test_a_column_ordered_2d_y_is_refit_as_given(mg):
    """scikit-learn refits on y itself: a 2-D y laid out column by column
    (as a frame's ``to_numpy()`` gives it) reaches the refit so, and the
    coefficients' last bits follow."""
    from sklearn.datasets import make_regression
    from sklearn.linear_model import LinearRegression

    X, y = make_regression(n_samples=120, n_features=5, noise=3.0, random_state=0)
    Y = pd.DataFrame({"a": y, "b": y**2 / 100}).to_numpy()
    assert Y.flags.f_contiguous and not Y.flags.c_contiguous
    for est, grid in ((Ridge(), {"alpha": [0.1, 10.0]}), (LinearRegression(), {})):
        ours = GridSearchCV(est, grid, client=mg, progress=False).fit(X, Y)
        sk = SkGridSearchCV(est, grid).fit(X, Y)
        assert_cv_results_equal(ours.cv_results_, sk.cv_results_)
        assert np.array_equal(ours.best_estimator_.coef_, sk.best_estimator_.coef_)
        assert np.array_equal(ours.predict(X), sk.predict(X))


def test_a_fit_param_not_one_value_per_sample_goes_whole_to_each_fit(mg, data):
    """scikit-learn's search slices a fit param per fold only when it has
    one value per sample; any other goes to every fit whole (SGD's
    ``coef_init``), and a too-short ``sample_weight`` fails each fit in the
    estimator's words. Both were refused before anything ran. Each fit
    starts from the caller's value as given (SGD trains ``coef_init`` in
    place: scikit-learn's sequential search hands each fit the array the
    previous one trained, and changes the caller's)."""
    from sklearn.base import clone
    from sklearn.linear_model import SGDClassifier
    from sklearn.model_selection import StratifiedKFold

    X, y = data
    coef, intercept = np.full((1, X.shape[1]), 0.25), np.array([0.5])
    sgd = SGDClassifier(max_iter=5, tol=None, random_state=0)
    grid = {"alpha": [1e-4, 1e-2]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours = GridSearchCV(sgd, grid, cv=3, client=mg, progress=False)
        ours.fit(X, y, coef_init=coef, intercept_init=intercept)
        for i, alpha in enumerate(grid["alpha"]):
            for k, (train, test) in enumerate(StratifiedKFold(3).split(X, y)):
                fitted = clone(sgd).set_params(alpha=alpha)
                fitted.fit(X[train], y[train], coef_init=coef.copy(), intercept_init=intercept)
                expected = fitted.score(X[test], y[test])
                assert ours.cv_results_[f"split{k}_test_score"][i] == expected
        best = clone(sgd).set_params(**ours.best_params_)
        best.fit(X, y, coef_init=coef.copy(), intercept_init=intercept)
    assert np.array_equal(ours.best_estimator_.coef_, best.coef_)
    assert (coef == 0.25).all()  # the caller's array as it was
    short = {"sample_weight": np.ones(len(y) // 2)}
    lr_grid = {"C": [1.0]}
    with pytest.raises(ValueError) as sk_error:
        SkGridSearchCV(LogisticRegression(), lr_grid, cv=3).fit(X, y, **short)
    with pytest.raises(ValueError) as our_error:
        GridSearchCV(LogisticRegression(), lr_grid, cv=3, client=mg, progress=False).fit(
            X, y, **short
        )
    assert "All the 3 fits failed" in str(our_error.value)
    assert str(sk_error.value).splitlines()[-1] in str(our_error.value)


def test_a_fit_param_given_as_none_is_passed_on_as_none(mg, data):
    """Wrapper code passes an optional weight as ``sample_weight=None``:
    scikit-learn hands None to the fits (and nothing to the scorers)."""
    from sklearn.preprocessing import StandardScaler

    X, y = data
    pipe = Pipeline([("sc", StandardScaler()), ("lr", LogisticRegression())])
    for est, params, grid in (
        (LogisticRegression(), {"sample_weight": None}, {"C": [0.1, 1.0]}),
        (pipe, {"lr__sample_weight": None}, {"lr__C": [0.1, 1.0]}),
    ):
        ours = GridSearchCV(est, grid, client=mg, progress=False).fit(X, y, **params)
        sk = SkGridSearchCV(est, grid).fit(X, y, **params)
        assert_cv_results_equal(ours.cv_results_, sk.cv_results_)
        assert np.array_equal(ours.predict_proba(X), sk.predict_proba(X))


def test_a_randomstate_draws_the_candidates_scikit_learn_draws(mg, data):
    """``random_state=np.random.RandomState(0)``: the same candidates as
    scikit-learn's, and the generator advanced as its search advances it."""
    from scipy.stats import loguniform

    X, y = data
    space = {"C": loguniform(1e-3, 1e2), "fit_intercept": [True, False]}
    ours_rng, sk_rng = np.random.RandomState(0), np.random.RandomState(0)
    for _ in range(2):  # the second fit draws anew from the advanced generator
        ours = RandomizedSearchCV(
            LogisticRegression(), space, n_iter=4, random_state=ours_rng, client=mg, progress=False
        ).fit(X, y)
        sk = SkRandomizedSearchCV(LogisticRegression(), space, n_iter=4, random_state=sk_rng)
        sk.fit(X, y)
        assert_cv_results_equal(ours.cv_results_, sk.cv_results_)
        assert ours.best_params_ == sk.best_params_
        assert np.array_equal(ours.predict_proba(X), sk.predict_proba(X))
    assert ours_rng.randint(2**31) == sk_rng.randint(2**31)
    # a fit failing its checks draws nothing, as scikit-learn's draws only
    # once they pass
    labels = np.array(["a", "b", None] * 30, dtype=object)
    for rng in (ours_rng, sk_rng):
        for cls, kw in ((RandomizedSearchCV, {"client": mg}), (SkRandomizedSearchCV, {})):
            with pytest.raises(TypeError):
                cls(LogisticRegression(), space, n_iter=4, random_state=rng, **kw).fit(X, labels)
    assert ours_rng.randint(2**31) == sk_rng.randint(2**31)


def test_drawn_points_of_lists_keep_scikit_learns_names_order_and_objects(mg, data):
    """Lists only, drawn from a RandomState or numpy's global generator:
    scikit-learn's sampler takes each point from ``ParameterGrid[i]``, which
    names the params in reverse order. ``params``, the ``param_*`` columns
    and ``best_params_`` keep that order and the caller's own objects (numpy
    floats, the very estimators), though the service stores them by name."""
    from sklearn.preprocessing import MinMaxScaler, StandardScaler

    X, y = data
    scalers = [StandardScaler(), MinMaxScaler()]
    pipe = Pipeline([("sc", StandardScaler()), ("lr", LogisticRegression())])
    space = {"lr__C": np.array([0.1, 1.0, 10.0]), "sc": scalers}
    for state in (lambda: np.random.RandomState(0), lambda: None):
        searches = []
        for cls, kw in (
            (RandomizedSearchCV, {"client": mg, "progress": False}),
            (SkRandomizedSearchCV, {}),
        ):
            np.random.seed(3)  # what random_state=None draws from
            searches.append(cls(pipe, space, n_iter=4, cv=3, random_state=state(), **kw).fit(X, y))
        ours, sk = searches
        assert list(sk.cv_results_["params"][0]) == ["sc", "lr__C"]  # scikit-learn's order
        assert_cv_results_equal(ours.cv_results_, sk.cv_results_)
        assert list(ours.best_params_) == list(sk.best_params_)
        for row in ours.cv_results_["params"]:
            assert type(row["lr__C"]) is np.float64
            assert any(row["sc"] is s for s in scalers)


def test_more_points_drawn_here_than_the_service_takes_are_refused_saying_why(mg, data):
    """A RandomState draws the candidates here, sent as a list of points the
    service caps at 10,000: refused before any job, naming n_iter and the
    way out, not as a param_grid the caller never gave."""
    from scipy.stats import loguniform

    X, y = data
    before = _jobs(mg)
    search = RandomizedSearchCV(
        LogisticRegression(),
        {"C": loguniform(1e-3, 1e2)},
        n_iter=10_001,
        cv=2,
        random_state=np.random.RandomState(0),
        client=mg,
        progress=False,
    )
    with pytest.raises(SpecError, match=r"n_iter.*10001 candidates.*an int random_state"):
        search.fit(X, y)
    assert _jobs(mg) == before


def test_a_target_scikit_learn_cannot_judge_fails_as_there(mg, data):
    """Labels mixing None with strings fail where scikit-learn's search
    judges the target (its TypeError, before anything is sent); NaN labels
    warn as they are cast, as there."""
    X, _ = data
    labels = np.array(["a", "b", None] * 30, dtype=object)
    nan_labels = np.array([0.0, 1.0, np.nan] * 30)
    before = _jobs(mg)
    for y in (labels, pd.Series(labels), nan_labels):
        outcomes = []
        for search in (
            GridSearchCV(LogisticRegression(), {"C": [1.0]}, client=mg, progress=False),
            SkGridSearchCV(LogisticRegression(), {"C": [1.0]}),
        ):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                with pytest.raises((TypeError, ValueError)) as err:
                    search.fit(X, y)
            cast = [str(w.message) for w in caught if w.category is RuntimeWarning]
            outcomes.append((isinstance(err.value, TypeError), str(err.value), cast))
        (ours_type, ours_text, ours_cast), (sk_type, sk_text, sk_cast) = outcomes
        assert ours_type == sk_type and ours_cast == sk_cast
        assert ours_text.endswith(sk_text.splitlines()[-1])
    assert _jobs(mg) == before


def test_a_failed_jobs_long_error_reads_as_scikit_learns(mg, data):
    """Every failure group of scikit-learn's "All the N fits failed" message
    reaches the caller (it was cut at 4,000 characters), ending as it ends;
    a KeyError's text is not quoted twice."""
    from memogrid_service.runner.jobs import _describe

    X, y = data
    pipe = Pipeline([("pca", PCA()), ("lr", LogisticRegression())])
    grid = [
        {"pca__n_components": [10]},
        {"lr__C": [-1.0]},
        {"lr__solver": ["bogus"]},
        {"lr__max_iter": [-1]},
        {"lr__tol": [-1.0]},
        {"pca__svd_solver": ["bogus"]},
    ]
    with pytest.raises(ValueError) as ours:
        GridSearchCV(pipe, grid, client=mg, progress=False).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError) as theirs:
            SkGridSearchCV(pipe, grid).fit(X, y)
    groups = "fits failed with the following error"
    assert len(str(ours.value)) > 4000
    assert str(ours.value).count(groups) == str(theirs.value).count(groups) == 6
    # (the last names a set of options, in its process's string-hash order)
    last = [str(e.value).splitlines()[-1].split(" among ")[0] for e in (ours, theirs)]
    assert last[0] == last[1]
    assert str(ours.value).endswith("\n") == str(theirs.value).endswith("\n")
    for key in ("C", 0):
        raised = errors.job_failed("j1", _describe(KeyError(key)))
        assert isinstance(raised, KeyError) and str(raised) == str(KeyError(key))


def test_errors_come_in_scikit_learns_order(mg, data):
    """No candidates: scikit-learn's warning (randomized) and error, for
    every kind of random_state, before anything is sent; a RandomState is
    drawn from before pre_dispatch is read, as there; under routing, a
    scorer among several whose request is unset fails as there."""
    import sklearn
    from sklearn.exceptions import UnsetMetadataPassedError

    X, y = data
    before = _jobs(mg)

    def outcome(search):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                search.fit(X, y)
            except ValueError as exc:
                error = (type(exc).__name__, str(exc))
        return error, [str(w.message) for w in caught if w.category is UserWarning]

    for state in (None, 0, np.random.RandomState(0)):
        kw = dict(n_iter=3, random_state=state)
        ours = outcome(RandomizedSearchCV(LogisticRegression(), [], client=mg, **kw))
        theirs = outcome(SkRandomizedSearchCV(LogisticRegression(), [], **kw))
        assert ours[0][1] == theirs[0][1] and ours[1] == theirs[1] != [], state
    space = {"C": [0.1, 1.0, 10.0]}
    rngs = []
    for cls, kw in ((RandomizedSearchCV, {"client": mg}), (SkRandomizedSearchCV, {})):
        rng = np.random.RandomState(0)
        with pytest.raises(ValueError, match="not a valid or supported arithmetic"):
            cls(
                LogisticRegression(),
                space,
                n_iter=2,
                random_state=rng,
                n_jobs=2,
                pre_dispatch="bogus",
                **kw,
            ).fit(X, y)
        rngs.append(rng.uniform())
    assert rngs[0] == rngs[1]
    # n_jobs=0 is refused before anything is drawn: no warning, no draw
    rngs = []
    for cls, kw in ((RandomizedSearchCV, {"client": mg}), (SkRandomizedSearchCV, {})):
        rng = np.random.RandomState(0)
        for space_or_none in (space, []):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                with pytest.raises(ValueError, match="n_jobs == 0"):
                    search = cls(LogisticRegression(), space_or_none, n_iter=2, n_jobs=0, **kw)
                    search.set_params(random_state=rng).fit(X, y)
            assert not [w for w in caught if w.category is UserWarning]
        rngs.append(rng.uniform())
    assert rngs[0] == rngs[1]
    with sklearn.config_context(enable_metadata_routing=True):
        est = LogisticRegression().set_fit_request(sample_weight=True)
        w = np.ones(len(y))
        for cls, kw in ((GridSearchCV, {"client": mg}), (SkGridSearchCV, {})):
            with pytest.raises(UnsetMetadataPassedError, match="accuracy_score"):
                search = cls(est, {"C": [1.0]}, scoring=["accuracy"], refit="accuracy", **kw)
                search.fit(X, y, sample_weight=w)
    assert _jobs(mg) == before


def test_x_and_y_of_different_lengths_fail_as_scikit_learns(mg, data):
    """Before the distributions are read, as scikit-learn's indexable(X, y)."""
    X, y = data
    for cls, kw in ((RandomizedSearchCV, {"client": mg}), (SkRandomizedSearchCV, {})):
        with pytest.raises(ValueError, match=r"inconsistent numbers of samples: \[90, 80\]"):
            cls(LogisticRegression(), {"C": 5}, random_state=0, **kw).fit(X, y[:80])


def test_a_group_splitter_without_groups_fails_in_scikit_learns_words(mg, data):
    from sklearn.model_selection import GroupKFold

    X, y = data
    for cls, kw in ((GridSearchCV, {"client": mg}), (SkGridSearchCV, {})):
        with pytest.raises(ValueError, match="The 'groups' parameter should not be None."):
            cls(LogisticRegression(), {"C": [1.0]}, cv=GroupKFold(3), **kw).fit(X, y)


def test_a_search_inside_routing_takes_the_metadata_scikit_learns_does(mg):
    """Inside a Pipeline or cross_validate under metadata routing, the
    search refused sample_weight and groups scikit-learn's routes to its
    estimator and splitter: it offered a consumer's request made from its
    fit signature, not scikit-learn's search's router."""
    import sklearn
    from sklearn.model_selection import GroupKFold, cross_validate
    from sklearn.preprocessing import StandardScaler

    X, y = make_classification(n_samples=60, n_features=4, random_state=0)
    w = np.linspace(0.5, 2, len(y))
    groups = np.arange(len(y)) % 4
    grid = {"C": [1.0, 0.1]}

    def both(estimator, **kw):
        return (
            SkGridSearchCV(estimator, grid, **kw),
            GridSearchCV(estimator, grid, client=mg, progress=False, **kw),
        )

    with sklearn.config_context(enable_metadata_routing=True):
        weighted = (
            LogisticRegression()
            .set_fit_request(sample_weight=True)
            .set_score_request(sample_weight=True)
        )
        sk, ours = both(weighted, cv=2)
        assert not hasattr(ours, "set_fit_request")  # a router, as scikit-learn's
        got = [cross_validate(s, X, y, cv=2, params={"sample_weight": w}) for s in (sk, ours)]
        assert np.array_equal(got[0]["test_score"], got[1]["test_score"])
        fitted = [
            Pipeline([("s", StandardScaler().set_fit_request(sample_weight=False)), ("g", s)])
            .fit(X, y, sample_weight=w)
            .named_steps["g"]
            for s in both(weighted, cv=2)
        ]
        assert fitted[0].best_score_ == fitted[1].best_score_
        sk, ours = both(LogisticRegression(), cv=GroupKFold(2))
        got = [
            cross_validate(s, X, y, cv=GroupKFold(2), params={"groups": groups}) for s in (sk, ours)
        ]
        assert np.array_equal(got[0]["test_score"], got[1]["test_score"])


def test_a_once_filter_shows_each_fits_warning_as_scikit_learns_search_does(mg):
    """scikit-learn runs each fit in a warnings context of its own, so a
    "once" filter shows every fit's ConvergenceWarning; the drop-in showed one."""
    est = LogisticRegression(solver="saga", max_iter=2, random_state=0)
    X, y = make_classification(n_samples=60, n_features=4, random_state=0)
    grid = {"C": [0.1, 1.0]}
    shown = []
    for search in (
        SkGridSearchCV(est, grid, cv=3),
        GridSearchCV(est, grid, cv=3, client=mg, progress=False),
    ):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("once")
            search.fit(X, y)
        shown.append([w.category for w in caught])
    assert shown[0] == shown[1] and shown[0].count(ConvergenceWarning) == 7


def test_the_search_carries_scikit_learns_tags_and_documentation_link():
    """array_api_support was not taken from the estimator as scikit-learn's
    search takes it; the notebook repr had no link to the documentation."""
    from sklearn.utils import get_tags

    for est in (LogisticRegression(), PCA(), Ridge()):
        ours, sk = GridSearchCV(est, {}), SkGridSearchCV(est, {})
        assert get_tags(ours) == get_tags(sk), type(est).__name__
    assert "Documentation for GridSearchCV" in GridSearchCV(Ridge(), {})._repr_html_()
    ours = RandomizedSearchCV(Ridge(), {"alpha": [1.0]})
    assert ours._get_doc_link() == SkRandomizedSearchCV(Ridge(), {"alpha": [1.0]})._get_doc_link()


def test_set_callbacks_is_refused_saying_why():
    """scikit-learn's searches take callbacks that follow their fits in the
    calling process; this one had no set_callbacks at all."""
    with pytest.raises(NotImplementedError, match="progress=True"):
        GridSearchCV(Ridge(), {}).set_callbacks()
