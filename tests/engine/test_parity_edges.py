"""Parity at the edges: what scikit-learn does with unusual searches, the
engine does too (or refuses up front with a message naming the problem)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import sklearn
from sklearn.compose import ColumnTransformer
from sklearn.datasets import make_classification
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from memogrid_service.engine import keys
from tests.engine.test_parity import assert_same_search, both
from tests.helpers.parity import assert_cv_results_equal


@pytest.fixture(scope="module")
def frame_data():
    X, y = make_classification(n_samples=200, n_features=6, random_state=3)
    return pd.DataFrame(X, columns=[f"f{i}" for i in range(6)]), y


def _select_by_name(scaler):
    return Pipeline(
        [
            ("sc", scaler),
            ("ct", ColumnTransformer([("keep", "passthrough", ["f0", "f1", "f2"])])),
            ("clf", LogisticRegression()),
        ]
    )


def test_set_output_is_part_of_a_steps_identity(runner, frame_data):
    """A scaler configured for DataFrame output is not the plain one: a search
    after the plain one must not be served its cached array outputs."""
    X, y = frame_data
    plain = Pipeline([("sc", StandardScaler()), ("clf", LogisticRegression())])
    first = runner.search(plain, X, y, param_grid={"clf__C": [1.0]}, cv=3)
    assert first.stats.step_fits == 3
    frames = _select_by_name(StandardScaler().set_output(transform="pandas"))
    ours, sk = both(runner, frames, X, y, param_grid={"clf__C": [0.5, 1.0]}, cv=3)
    assert np.isfinite(ours.cv_results_["mean_test_score"]).all()
    assert_same_search(ours, sk, X)
    token = keys.estimator_token(StandardScaler().set_output(transform="pandas"))
    assert token != keys.estimator_token(StandardScaler())
    # an estimator never configured keeps the token it always had
    assert keys.OUTPUT_CONFIG not in str(keys.estimator_token(StandardScaler()))


def test_the_callers_transform_output_setting_reaches_the_fits(runner, frame_data):
    X, y = frame_data
    pipe = _select_by_name(StandardScaler())
    # without pandas output the column selection by name fails in every fit
    with pytest.raises(ValueError, match="All the 3 fits failed"):
        runner.search(pipe, X, y, param_grid={"clf__C": [1.0]}, cv=3)
    with sklearn.config_context(transform_output="pandas"):
        ours, sk = both(runner, pipe, X, y, param_grid={"clf__C": [0.5, 1.0]}, cv=3)
        assert_same_search(ours, sk, X)
    # the scalers the plain search fitted (and cached) returned arrays: not reused
    assert ours.stats.step_hits == 0 and ours.stats.step_fits == 6
    assert np.isfinite(ours.cv_results_["mean_test_score"]).all()


def test_fit_params_no_step_takes_are_refused(runner):
    X, y = make_classification(n_samples=60, random_state=0)
    w = np.ones(len(y))
    pipe = Pipeline([("sc", StandardScaler()), ("clf", LogisticRegression())])
    with pytest.raises(ValueError, match="'nostep__sample_weight' names no step"):
        runner.search(
            pipe, X, y, param_grid={"clf__C": [1.0]}, fit_params={"nostep__sample_weight": w}
        )
    nested = Pipeline([("sc", StandardScaler()), ("clf", Pipeline([("lr", LogisticRegression())]))])
    with pytest.raises(ValueError, match="Pipeline.fit does not accept the sample_weight"):
        runner.search(
            nested, X, y, param_grid={"clf__lr__C": [1.0]}, fit_params={"clf__sample_weight": w}
        )
    # routed all the way down, the same weights are accepted and used
    ours, sk = both(
        runner,
        nested,
        X,
        y,
        param_grid={"clf__lr__C": [0.1, 1.0]},
        fit_params={"clf__lr__sample_weight": np.linspace(0.1, 2, len(y))},
        cv=3,
    )
    assert_same_search(ours, sk, X)


def test_a_nested_pipeline_may_end_in_passthrough(runner):
    X, y = make_classification(n_samples=150, n_features=8, random_state=1)
    inner = Pipeline([("scale", StandardScaler()), ("pca", PCA(3))])
    pipe = Pipeline([("pre", inner), ("clf", LogisticRegression())])
    grid = {"pre__pca": [PCA(3), "passthrough"], "clf__C": [0.1, 1.0]}
    ours, sk = both(runner, pipe, X, y, param_grid=grid, cv=3)
    assert_same_search(ours, sk, X)
    only = Pipeline(
        [("pre", Pipeline([("scale", StandardScaler())])), ("clf", LogisticRegression())]
    )
    ours, sk = both(
        runner, only, X, y, param_grid={"pre__scale": [StandardScaler(), "passthrough"]}, cv=3
    )
    assert_same_search(ours, sk, X)
    # the searched pipeline without a final estimator fits, and its scoring
    # fails (error_score, scikit-learn's warnings); the other candidates win
    for grid in ({"clf": ["passthrough", LogisticRegression()]}, {"clf": [None, "passthrough"]}):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ours = runner.search(pipe, X, y, param_grid=grid, cv=3, refit=False)
        ours_warned = sorted(str(w.message)[:40] for w in caught)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            sk = GridSearchCV(pipe, grid, cv=3, refit=False).fit(X, y)
        assert_cv_results_equal(ours.cv_results_, sk.cv_results_)
        assert ours_warned == sorted(str(w.message)[:40] for w in caught)
        assert any("Scoring failed" in t for t in ours_warned)
    # refit on such a candidate: the best estimator is the pipeline itself,
    # fitted as scikit-learn's (its steps in place, the last one passthrough)
    for last in ("passthrough", None):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            grid = {"clf": [last]}
            ours = runner.search(pipe, X, y, param_grid=grid, cv=3)
            sk = GridSearchCV(pipe, grid, cv=3).fit(X, y)
        best = ours.best_estimator_
        assert [n for n, _ in best.steps] == [n for n, _ in sk.best_estimator_.steps]
        assert best.steps[-1][1] == sk.best_estimator_.steps[-1][1]
        assert np.array_equal(
            best["pre"]["pca"].components_, sk.best_estimator_["pre"]["pca"].components_
        )
        assert np.array_equal(best.transform(X), sk.best_estimator_.transform(X))


def _lowest_c_within_a_point(cv_results):
    scores = cv_results[
        "mean_test_accuracy" if "mean_test_accuracy" in cv_results else "mean_test_score"
    ]
    good = np.flatnonzero(scores >= scores.max() - 0.01)
    return int(good[np.argmin(cv_results["param_C"][good])])


@pytest.mark.parametrize("scoring", [None, ["accuracy", "f1"]])
def test_a_callable_refit_picks_the_candidate_and_leaves_no_best_score(runner, scoring):
    X, y = make_classification(n_samples=150, n_features=8, random_state=2)
    kw = {"scoring": scoring} if scoring else {}
    ours, sk = both(
        runner,
        LogisticRegression(),
        X,
        y,
        param_grid={"C": [0.01, 0.1, 1.0, 10.0]},
        refit=_lowest_c_within_a_point,
        cv=3,
        **kw,
    )
    assert not hasattr(sk, "best_score_")
    assert ours.best_score_ is None
    assert type(ours.best_index_) is type(sk.best_index_)
    assert_same_search(ours, sk, X)


def test_string_labels_in_object_arrays_and_series(runner):
    X, y = make_classification(n_samples=120, n_features=5, random_state=4)
    labels = np.array(["ant", "bee"], dtype=object)[y]
    for y_in in (labels, pd.Series(labels), pd.Series(labels, dtype="str"), labels.astype(str)):
        ours, sk = both(runner, LogisticRegression(), X, y_in, param_grid={"C": [0.1, 1.0]}, cv=3)
        assert_cv_results_only(ours, sk)
        # labels keep the dtype scikit-learn saw: object, or numpy text
        assert ours.best_estimator_.classes_.dtype == sk.best_estimator_.classes_.dtype
        ours_pred, sk_pred = ours.best_estimator_.predict(X), sk.best_estimator_.predict(X)
        assert ours_pred.dtype == sk_pred.dtype and np.array_equal(ours_pred, sk_pred)
    assert ours.best_estimator_.classes_.dtype.kind == "U"  # the last: numpy text stays text


def assert_cv_results_only(ours, sk):
    from tests.helpers.parity import assert_cv_results_equal

    assert_cv_results_equal(ours.cv_results_, sk.cv_results_)
    assert ours.best_index_ == sk.best_index_


def test_n_iter_beyond_the_grid_warns_as_scikit_learn_does(runner):
    X, y = make_classification(n_samples=80, random_state=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = runner.search(
            LogisticRegression(),
            X,
            y,
            param_distributions={"C": [0.1, 1.0]},
            n_iter=5,
            random_state=0,
            cv=3,
        )
    text = "The total space of parameters 2 is smaller than n_iter=5"
    assert any(text in str(w.message) and w.category is UserWarning for w in caught)
    assert any(w.startswith("UserWarning: " + text) for w in res.warnings)


def _fit_warnings(caught):
    return [
        (w.category, str(w.message))
        for w in caught
        if w.category.__name__ in ("ConvergenceWarning", "DataConversionWarning")
    ]


def test_warnings_raised_in_workers_reach_the_caller_as_scikit_learns_do(runner):
    """A fit's warnings in a worker process are raised again here, each with
    its class, as scikit-learn's search raises them in the caller's process,
    and again when the fits come from the cache."""
    from sklearn.exceptions import ConvergenceWarning, DataConversionWarning
    from sklearn.model_selection import GridSearchCV

    X, y = make_classification(n_samples=120, n_features=6, random_state=5)
    pipe = Pipeline([("sc", StandardScaler()), ("lr", LogisticRegression(max_iter=2))])
    grid = {"lr__C": [0.1, 1.0]}
    y_column = y.reshape(-1, 1)  # DataConversionWarning: a column-vector y

    def run(search):
        # Python's default filters: scikit-learn's search shows one warning
        # per fit (its input checks reset the once-per-location memory)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")
            out = search()
        return out, _fit_warnings(caught)

    sk, expected = run(lambda: GridSearchCV(pipe, grid, cv=3).fit(X, y_column))
    assert {c for c, _ in expected} == {ConvergenceWarning, DataConversionWarning}
    cold, got = run(lambda: runner.search(pipe, X, y_column, param_grid=grid, cv=3))
    assert cold.stats.final_fits == 6
    assert sorted(set(got), key=str) == sorted(set(expected), key=str)
    assert len(got) == len(expected)  # one per fit (and the refit), as scikit-learn's
    assert any(w.startswith("ConvergenceWarning: ") for w in cold.warnings)
    warm, again = run(lambda: runner.search(pipe, X, y_column, param_grid=grid, cv=3))
    assert warm.stats.final_fits == 0 and warm.stats.refit == "hit"
    assert sorted(again, key=str) == sorted(got, key=str)  # replayed from the cache
    assert_cv_results_only(cold, sk)


def test_a_grid_mixing_precomputed_and_plain_input_is_refused(runner):
    from sklearn.svm import SVC

    X, y = make_classification(n_samples=60, n_features=5, random_state=6)
    K = X @ X.T
    with pytest.raises(ValueError, match="precomputed .pairwise. matrix"):
        runner.search(SVC(), K, y, param_grid={"kernel": ["rbf", "precomputed"]}, cv=3)
    # all precomputed: sliced by rows and columns, as scikit-learn does
    ours, sk = both(runner, SVC(kernel="precomputed"), K, y, param_grid={"C": [0.5, 2.0]}, cv=3)
    assert_cv_results_only(ours, sk)


def test_the_warning_router_is_installed_once_per_process():
    """Recording in a process other than the caller's installs one handler,
    however many tasks record: a chain of handlers, one per fit, overflowed
    the stack after about a thousand fits."""
    import threading

    from memogrid_service.engine import tasks

    ctx = tasks.TaskContext(None, None, caller=("elsewhere", -1))  # type: ignore[arg-type]
    with warnings.catch_warnings():  # restores this process's handler afterwards
        for _ in range(2000):
            with tasks.recording_warnings(ctx) as sink:
                warnings.warn("inside", UserWarning, stacklevel=1)
        assert len(sink) == 1 and sink[0][:2] == ("UserWarning", "inside")
        assert sink[0][4] == __name__  # the module, for filters that name one
        router = tasks._router
        assert warnings.showwarning == router.show
        assert not isinstance(getattr(router.original, "__self__", None), tasks._WarningRouter)
        shown = []
        router.original = lambda *a, **k: shown.append(a[0])
        t = threading.Thread(target=lambda: warnings.warn("outside", UserWarning, stacklevel=1))
        t.start()
        t.join()
        assert [str(m) for m in shown] == ["outside"]  # not recorded, not recursing


def test_frames_with_numeric_column_labels_as_scikit_learn_sees_them(runner):
    X, y = make_classification(n_samples=150, n_features=5, random_state=0)
    df = pd.DataFrame(X)  # labels 0..4: scikit-learn records no feature names
    ct = ColumnTransformer([("sc", StandardScaler(), [0, 2])], remainder="passthrough")
    pipe = Pipeline([("ct", ct), ("lr", LogisticRegression())])
    ours, sk = both(runner, pipe, df, y, param_grid={"lr__C": [0.1, 1.0]}, cv=3)
    assert_same_search(ours, sk, df)  # predicting on df would warn of fitted names
    assert not hasattr(sk.best_estimator_, "feature_names_in_")
    assert not hasattr(ours.best_estimator_, "feature_names_in_")


def test_scorer_objects_and_callables_score_as_in_scikit_learn(runner):
    from sklearn.metrics import fbeta_score, make_scorer
    from sklearn.model_selection import GridSearchCV

    from tests.helpers.parity import accuracy_over_chance, assert_cv_results_equal

    X, y = make_classification(n_samples=150, random_state=0)
    f2 = make_scorer(fbeta_score, beta=2)
    grid = {"C": [0.1, 1.0]}
    cases = [
        (f2, True),
        (accuracy_over_chance, True),
        ({"f2": f2, "acc": "accuracy", "mine": accuracy_over_chance}, "f2"),
    ]
    for scoring, refit in cases:
        ours = runner.search(
            LogisticRegression(), X, y, param_grid=grid, cv=3, scoring=scoring, refit=refit
        )
        sk = GridSearchCV(LogisticRegression(), grid, cv=3, scoring=scoring, refit=refit)
        assert_cv_results_equal(ours.cv_results_, sk.fit(X, y).cv_results_)
        assert ours.best_params_ == sk.best_params_
    # a scorer's settings are part of its results' keys: beta=0.5 is scored anew
    half = runner.search(
        LogisticRegression(),
        X,
        y,
        param_grid=grid,
        cv=3,
        scoring=make_scorer(fbeta_score, beta=0.5),
    )
    assert half.stats.final_fits == 6 and half.stats.score_hits == 0


def test_pandas_string_dtypes_reach_the_fits_as_given(runner):
    """A ``string`` column holds pd.NA, which scikit-learn's SimpleImputer
    cannot compare: every fit fails in scikit-learn, so must it here; the
    same text as ``str`` or ``object`` (NaN) fits, as in scikit-learn."""
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import OneHotEncoder

    rng = np.random.RandomState(0)
    y = rng.randint(0, 2, 90)
    texts = pd.Series(np.array(["a", "b", None], dtype=object)[rng.randint(0, 3, 90)])
    impute = Pipeline(
        [("impute", SimpleImputer(strategy="most_frequent")), ("onehot", OneHotEncoder())]
    )
    pipe = Pipeline(
        [
            ("ct", ColumnTransformer([("city", impute, ["city"]), ("x", "passthrough", ["x"])])),
            ("lr", LogisticRegression()),
        ]
    )
    grid = {"lr__C": [0.5, 1.0]}
    for dtype in ("string", "str", object):
        X = pd.DataFrame({"city": texts.astype(dtype), "x": rng.normal(size=90)})
        if dtype == "string":
            with pytest.raises(ValueError, match="All the 6 fits failed") as sk_err:
                sklearn.model_selection.GridSearchCV(pipe, grid, cv=3).fit(X, y)
            with pytest.raises(ValueError, match="All the 6 fits failed") as ours_err:
                runner.search(pipe, X, y, param_grid=grid, cv=3)
            assert "boolean value of NA is ambiguous" in str(sk_err.value)
            assert "boolean value of NA is ambiguous" in str(ours_err.value)
        else:
            ours, sk = both(runner, pipe, X, y, param_grid=grid, cv=3)
            assert_same_search(ours, sk, X)


def test_nullable_pandas_targets_are_read_as_scikit_learn_reads_them(runner):
    """scikit-learn reads a nullable (extension) Series y as float64:
    ``classes_`` and predictions are float64 there, and so here."""
    X, y = make_classification(n_samples=90, n_features=4, random_state=5)
    for dtype in ("Int64", "boolean", "UInt8", "int64"):
        y_in = pd.Series(y.astype(bool) if dtype == "boolean" else y, dtype=dtype)
        ours, sk = both(runner, LogisticRegression(), X, y_in, param_grid={"C": [1.0]}, cv=3)
        assert_cv_results_only(ours, sk)
        assert ours.best_estimator_.classes_.dtype == sk.best_estimator_.classes_.dtype, dtype
        assert np.array_equal(ours.best_estimator_.predict(X), sk.best_estimator_.predict(X))
    assert ours.best_estimator_.classes_.dtype == np.int64  # a plain int64 Series stays


def _caught(search):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = search()
    # in order, each by class and first sentence (tracebacks name other frames)
    return out, [(w.category.__name__, str(w.message).split(".")[0]) for w in caught]


@pytest.mark.parametrize("unknown", ["error", "warn"])
def test_a_step_failing_only_on_test_rows_is_a_scoring_failure(runner, unknown):
    """A transformer that fits but cannot transform the test rows fails the
    score, not the fit, as in scikit-learn: the train score stands, "Scoring
    failed" is warned, no FitFailedWarning. Here the encoder meets a category
    it never saw (refusing it, or warning and going on until the scaler
    meets a NaN); the warnings come as scikit-learn's, each once and in its
    order, and again from the cache."""
    from sklearn.model_selection import GridSearchCV
    from sklearn.preprocessing import OneHotEncoder

    rng = np.random.RandomState(0)
    X = pd.DataFrame({"c": ["a"] * 50 + ["b"] * 49 + ["rare"], "x": rng.normal(size=100)})
    X.loc[98, "x"] = np.nan
    y = rng.randint(0, 2, 100)
    encode = OneHotEncoder(handle_unknown=unknown)
    ct = ColumnTransformer([("oh", encode, ["c"])], remainder="passthrough")
    pipe = Pipeline([("ct", ct), ("pca", PCA(2)), ("clf", LogisticRegression())])
    # the first fold tests on the NaN and the unseen category, the second
    # trains on neither
    cv = [(np.arange(0, 80), np.arange(80, 100)), (np.arange(20, 98), np.arange(0, 20))]
    kw = dict(cv=cv, return_train_score=True, refit=False, error_score=-1.0)
    grid = {"clf__C": [0.5, 1.0]}
    sk, expected = _caught(lambda: GridSearchCV(pipe, grid, **kw).fit(X, y))
    assert ("UserWarning", "Scoring failed") in expected
    assert any(m.startswith("Found unknown categories") for _, m in expected) is (unknown == "warn")
    assert not any(c == "FitFailedWarning" for c, _ in expected)
    for run in ("cold", "warm"):
        ours, got = _caught(lambda: runner.search(pipe, X, y, param_grid=grid, **kw))
        assert got == expected, run
        assert np.isfinite(ours.cv_results_["split0_train_score"]).all()
        assert (ours.cv_results_["split0_test_score"] == -1.0).all()
        assert_same_search(ours, sk)
    assert ours.stats.step_fits == 0


def test_some_folds_fail_to_fit_and_one_to_score(runner):
    """A NaN in one row: the folds training on it fail to fit, the fold
    testing on it fails to score; not every fit failed, so results come back."""
    from sklearn.model_selection import KFold

    rng = np.random.RandomState(1)
    X, y = rng.normal(size=(90, 4)), rng.randint(0, 2, 90)
    X[3, 2] = np.nan
    pipe = Pipeline([("pca", PCA(2)), ("clf", LogisticRegression())])
    kw = dict(param_grid={"clf__C": [1.0]}, cv=KFold(3), refit=False)
    (ours, sk), got = _caught(lambda: both(runner, pipe, X, y, **kw))
    assert_same_search(ours, sk)
    # both searches warned the same, in the same order (the engine's first)
    half = len(got) // 2
    assert got[:half] == got[half:]
    assert ("FitFailedWarning", "\n2 fits failed out of a total of 3") in got[:half]
    assert ("UserWarning", "Scoring failed") in got[:half]
    assert np.isnan(ours.cv_results_["mean_test_score"]).all()
    assert any("Scoring failed" in w for w in ours.warnings)


def test_a_pipeline_without_y_tells_its_supervised_step_needs_y(runner):
    """Pipeline.fit passes y=None on to its last step, which then says it
    needs y, as scikit-learn's search reports it; a bare estimator gets fit(X)."""
    from sklearn.model_selection import GridSearchCV

    X, _ = make_classification(n_samples=60, random_state=0)
    pipe = Pipeline([("sc", StandardScaler()), ("clf", LogisticRegression())])
    grid = {"clf__C": [1.0]}
    with pytest.raises(ValueError) as theirs:
        GridSearchCV(pipe, grid, cv=3, error_score="raise").fit(X)
    assert "requires y to be passed" in str(theirs.value)
    with pytest.raises(ValueError) as ours:
        runner.search(pipe, X, None, param_grid=grid, cv=3, error_score="raise")
    assert str(ours.value) == str(theirs.value)
    single = Pipeline([("clf", LogisticRegression())])  # no step before the final one
    with pytest.raises(ValueError, match="requires y to be passed"):
        runner.search(single, X, None, param_grid=grid, cv=3, error_score="raise")


def test_a_splitters_warnings_reach_the_caller_and_the_result(runner):
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    X, _ = make_classification(n_samples=60, random_state=0)
    y = np.array([0] * 30 + [1] * 28 + [2] * 2)
    search = dict(param_grid={"C": [1.0]}, cv=StratifiedKFold(5))
    sk, expected = _caught(lambda: GridSearchCV(LogisticRegression(), **search).fit(X, y))
    text = "The least populated class in y has only 2 members, which is less than n_splits=5"
    assert ("UserWarning", text) in expected
    ours, got = _caught(lambda: runner.search(LogisticRegression(), X, y, **search))
    assert got == expected
    assert any(w.startswith("UserWarning: " + text) for w in ours.warnings)
    assert_same_search(ours, sk, X)
    # raised from scikit-learn's module, so a filter naming it silences it here too
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", module=r"sklearn\.model_selection")
        runner.search(LogisticRegression(), X, y, **search)
    assert not [w for w in caught if "least populated" in str(w.message)]


def test_a_pipelines_scoring_errors_name_the_pipeline(runner):
    """The scorer meets the pipeline, as in scikit-learn: an SVC without
    probabilities fails neg_log_loss with "Pipeline has none of ...", the
    same words in the warning and in the error error_score="raise" gives."""
    from sklearn.model_selection import GridSearchCV
    from sklearn.svm import SVC

    X, y = make_classification(n_samples=60, random_state=0)
    pipe = Pipeline([("sc", StandardScaler()), ("svc", SVC())])
    kw = dict(param_grid={"svc__C": [1.0]}, cv=3, scoring="neg_log_loss", refit=False)

    def last_lines(search):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            search()
        return {str(w.message).strip().splitlines()[-1] for w in caught}

    expected = last_lines(lambda: GridSearchCV(pipe, **kw).fit(X, y))
    assert any("Pipeline has none of the following attributes" in m for m in expected)
    assert last_lines(lambda: runner.search(pipe, X, y, **kw)) == expected
    with pytest.raises(AttributeError) as theirs:
        GridSearchCV(pipe, **kw, error_score="raise").fit(X, y)
    with pytest.raises(AttributeError) as ours:
        runner.search(pipe, X, y, **kw, error_score="raise")
    assert str(ours.value) == str(theirs.value)


def test_a_frames_row_layout_reaches_folds_and_refit(runner):
    """pandas keeps a frame's layout in every row selection, and StandardScaler's
    and PCA's last bits depend on it: a frame of one number dtype laid out row
    by row (load_iris(as_frame=True)) and one laid out column by column each
    search to scikit-learn's last bit, folds and refit."""
    from sklearn.datasets import load_iris
    from sklearn.model_selection import GridSearchCV

    rows, y = load_iris(return_X_y=True, as_frame=True)
    columns = pd.DataFrame({c: rows[c].to_numpy().copy() for c in rows.columns})
    assert np.asarray(rows).flags.c_contiguous and np.asarray(columns).flags.f_contiguous
    supervised = Pipeline([("sc", StandardScaler()), ("clf", LogisticRegression(max_iter=500))])
    unsupervised = Pipeline([("sc", StandardScaler()), ("pca", PCA())])
    for X in (rows, columns):
        ours, sk = both(runner, supervised, X, y, param_grid={"clf__C": [0.1, 1.0]}, cv=3)
        assert_same_search(ours, sk, X)
        assert ours.best_estimator_[0].mean_.tobytes() == sk.best_estimator_[0].mean_.tobytes()
        grid = {"pca__n_components": [2, 3]}
        ours = runner.search(unsupervised, X, None, param_grid=grid, cv=3)
        assert_same_search(ours, GridSearchCV(unsupervised, grid, cv=3).fit(X), X)


def _flat():
    return Pipeline([("sc", StandardScaler()), ("clf", LogisticRegression())])


def _nested():
    return Pipeline([("pre", Pipeline([("sc", StandardScaler())])), ("clf", LogisticRegression())])


@pytest.mark.parametrize(
    "pipe, grid",
    [
        (_flat(), {"verbose": [False, "x"]}),
        (_flat(), {"transform_input": [None, "abc"]}),
        (_flat(), {"transform_input": [None, ["sample_weight"]]}),  # needs metadata routing
        (_nested(), {"pre__verbose": [False, 3.5]}),
        (
            _flat(),
            [
                {"clf": [LogisticRegression()]},
                {
                    "clf": [Pipeline([("inner", StandardScaler()), ("lr", LogisticRegression())])],
                    "clf__inner": [KFold(3)],
                },
            ],
        ),
        (_flat(), {"steps": [_flat().steps, [("sc", StandardScaler()), ("clf", None), ("x", 3)]]}),
        (_flat(), {"clf": [LogisticRegression(), "zero"]}),
        (_flat(), {"sc": [StandardScaler(), 3]}),
    ],
    ids=[
        "verbose",
        "transform_input",
        "routing",
        "nested",
        "step-not-estimator",
        "steps",
        "final-not-estimator",
        "step-a-number",
    ],
)
def test_a_pipeline_its_fit_would_refuse_fails_its_fits_as_in_scikit_learn(runner, pipe, grid):
    """The engine fits a pipeline step by step, so Pipeline.fit never runs;
    where it would refuse the pipeline (a bad parameter of its own, a step
    that is no estimator), that candidate's fits fail as scikit-learn's do."""
    X, y = make_classification(n_samples=90, n_features=5, random_state=0)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        ours, sk = both(runner, pipe, X, y, param_grid=grid, cv=3)
    assert_same_search(ours, sk, X)
    assert np.isnan(ours.cv_results_["mean_test_score"]).sum() == 1


@pytest.mark.parametrize("refit", [False, "acc"])
def test_a_callable_giving_several_metrics_with_failing_fits(runner, refit):
    """scikit-learn learns a callable's metrics from its results: a failed
    fold's one error score becomes one per metric (it crashed the search),
    and refit names one of them."""
    from tests.helpers.parity import accuracy_and_error

    X, y = make_classification(n_samples=150, n_features=6, random_state=1)
    for grid in ({"C": [-1.0, 1.0]}, {"C": [1.0, -1.0]}):
        kw = dict(param_grid=grid, cv=3, scoring=accuracy_and_error, refit=refit)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ours = runner.search(LogisticRegression(), X, y, **kw)
            sk = GridSearchCV(LogisticRegression(), **kw).fit(X, y)
        assert_cv_results_equal(ours.cv_results_, sk.cv_results_)
        assert ours.multimetric_ and ours.scorer_ is accuracy_and_error
        if refit:
            assert ours.best_index_ == sk.best_index_ and ours.best_score_ == sk.best_score_


def test_partials_are_keyed_by_what_they_call_and_bind(runner):
    """functools.partial as a function, a grid value and a scorer's
    function, as scikit-learn takes them: each keyed by its function and
    bound values, so partials binding other values are other candidates."""
    import functools

    from sklearn.metrics import fbeta_score, make_scorer
    from sklearn.preprocessing import FunctionTransformer

    X, y = make_classification(n_samples=90, n_features=5, random_state=0)
    clip = functools.partial(np.clip, a_min=-1.0, a_max=1.0)
    pipe = Pipeline([("f", FunctionTransformer(clip)), ("lr", LogisticRegression())])
    grid = {
        "f__func": [clip, functools.partial(np.clip, a_min=-0.5, a_max=0.5)],
        "lr__C": [0.1, 1.0],
    }
    scoring = make_scorer(functools.partial(fbeta_score, beta=2))
    ours, sk = both(runner, pipe, X, y, param_grid=grid, cv=3, scoring=scoring)
    assert_same_search(ours, sk, X)
    assert ours.stats.step_fits == 2 * 3  # the two partials are two transforms


def test_a_kernel_sliced_by_rows_is_not_the_kernel_sliced_by_rows_and_columns(runner):
    """A Pipeline whose first step is "passthrough" takes its pairwise tag
    from that step, so scikit-learn slices a precomputed kernel by rows only
    and the SVC at its end fails; the bare SVC slices rows and columns. Both
    searches reduce to the chain [SVC]: their folds must differ, or either
    is served the other's cached results."""
    from sklearn.svm import SVC

    X, y = make_classification(n_samples=60, n_features=5, random_state=6)
    K = X @ X.T
    svc = SVC(kernel="precomputed")
    through = Pipeline([("pre", "passthrough"), ("svc", svc)])

    def outcome(search):
        try:
            return search().cv_results_["mean_test_score"].tolist()
        except ValueError as exc:
            return str(exc).strip().splitlines()[0]  # "All the 3 fits failed."

    for first, second in ((svc, through), (through, svc)):
        runner.cache._cache.clear()
        for est in (first, second):
            ours = outcome(lambda e=est: runner.search(e, K, y, param_grid={}, cv=3))
            theirs = outcome(lambda e=est: GridSearchCV(e, {}, cv=3).fit(K, y))
            assert ours == theirs, (est, ours, theirs)
            assert isinstance(ours, str) == (est is through)


def test_an_estimator_keeping_a_fitted_model_through_clone_is_refused(runner):
    """FrozenEstimator's clone is itself, fitted: its parameters do not say
    what it computes, so two frozen scalers fitted on different data had one
    key and the second search was served the first's scores."""
    from sklearn.frozen import FrozenEstimator

    X, y = make_classification(n_samples=60, n_features=5, random_state=6)
    frozen = FrozenEstimator(StandardScaler().fit(X))
    pipe = Pipeline([("pre", frozen), ("clf", LogisticRegression())])
    with pytest.raises(keys.UnkeyableValue, match="keeps its state through clone"):
        runner.search(pipe, X, y, param_grid={"clf__C": [1.0]}, cv=3)
    fitted = FrozenEstimator(LogisticRegression().fit(X, y))
    with pytest.raises(keys.UnkeyableValue, match="keeps its state through clone"):
        runner.search(fitted, X, y, param_grid={}, cv=3)


@pytest.mark.parametrize(
    "setting",
    [
        {"skip_parameter_validation": True},
        {"sparse_interface": "sparray"},
        {"pairwise_dist_chunk_size": 7},
    ],
)
def test_every_scikit_learn_setting_that_changes_results_reaches_the_fits_and_keys(runner, setting):
    """Each was neither sent to the workers nor in the folds' keys: wrong on
    an empty cache, and a search under the default was served to one under
    the setting (or the other way round)."""
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder
    from sklearn.tree import DecisionTreeClassifier

    rng = np.random.RandomState(1)
    if "skip_parameter_validation" in setting:  # depth 0 is refused only while validating
        est, X, grid = (
            DecisionTreeClassifier(random_state=0),
            rng.normal(size=(90, 4)),
            {"max_depth": [0, 2]},
        )
    elif "sparse_interface" in setting:  # Z ** 2: elementwise on an array, a power on a matrix
        est = Pipeline(
            [("oh", OneHotEncoder()), ("sq", "passthrough"), ("clf", LogisticRegression())]
        )
        X = rng.randint(0, 3, size=(90, 3))
        grid = {"sq": ["passthrough", FunctionTransformer(_power_two, accept_sparse=True)]}
    else:  # float32 distances are computed in chunks of this many rows
        est = KNeighborsClassifier(algorithm="brute")
        X, grid = (rng.normal(size=(90, 4)) * 1000).astype(np.float32), {"n_neighbors": [1, 5]}
    y = (X.sum(axis=1) > np.median(X.sum(axis=1))).astype(int)
    outcomes = []
    for config in ({}, setting, {}):
        with sklearn.config_context(**config), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ours, sk = both(runner, est, X, y, param_grid=grid, cv=3, refit=False)
            assert_cv_results_equal(ours.cv_results_, sk.cv_results_)
            outcomes.append(np.isnan(sk.cv_results_["mean_test_score"]).tolist())
    assert outcomes[0] != outcomes[1]  # the setting does change what scikit-learn gives


def _power_two(Z):
    return Z**2


def test_a_random_state_shared_by_estimator_sampler_and_splitter_is_read_in_sklearns_order(
    runner,
):
    """scikit-learn counts the folds, copies the estimator, draws the
    candidates, then splits: with one RandomState shared among them, each
    reads it at that point. The engine split first, so the estimator's copy
    and the candidates drawn saw another state, and other results."""
    from scipy.stats import uniform
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import RandomizedSearchCV

    X, y = make_classification(n_samples=120, n_features=6, random_state=0)

    def shared():
        rs = np.random.RandomState(0)
        forest = RandomForestClassifier(n_estimators=5, max_features=0.5, random_state=rs)
        return forest, KFold(3, shuffle=True, random_state=rs), rs

    est, cv, _ = shared()
    sk = GridSearchCV(est, {"max_depth": [3]}, cv=cv, refit=False).fit(X, y)
    est, cv, _ = shared()
    ours = runner.search(est, X, y, param_grid={"max_depth": [3]}, cv=cv, refit=False)
    assert_cv_results_equal(ours.cv_results_, sk.cv_results_)

    dists = {"max_features": uniform(0.1, 0.8)}
    est, cv, rs = shared()
    est.set_params(random_state=0)
    sk = RandomizedSearchCV(est, dists, n_iter=2, cv=cv, random_state=rs, refit=False)
    sk.fit(X, y)
    est, cv, rs = shared()
    est.set_params(random_state=0)
    ours = runner.search(
        est, X, y, param_distributions=dists, n_iter=2, cv=cv, random_state=rs, refit=False
    )
    assert_cv_results_equal(ours.cv_results_, sk.cv_results_)
