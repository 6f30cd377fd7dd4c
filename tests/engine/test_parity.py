"""The engine's results equal scikit-learn's search to the last bit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.compose import ColumnTransformer
from sklearn.datasets import make_classification, make_regression
from sklearn.decomposition import PCA
from sklearn.exceptions import FitFailedWarning
from sklearn.feature_selection import SelectKBest, f_classif
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import (
    GridSearchCV,
    GroupKFold,
    KFold,
    LeaveOneGroupOut,
    RandomizedSearchCV,
    ShuffleSplit,
    StratifiedKFold,
    StratifiedShuffleSplit,
    TimeSeriesSplit,
)
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier

from tests.helpers.parity import assert_cv_results_equal


@pytest.fixture(scope="module")
def clf_data():
    return make_classification(n_samples=300, n_features=30, n_redundant=10, random_state=42)


def both(runner, estimator, X, y, *, param_grid=None, param_distributions=None, **kw):
    """Run the engine and scikit-learn on the same input; return both."""
    search_kw = {
        k: kw[k] for k in ("cv", "scoring", "refit", "error_score", "return_train_score") if k in kw
    }
    fit_params = kw.get("fit_params", {})
    groups = kw.get("groups")
    if param_grid is not None:
        sk = GridSearchCV(estimator, param_grid, **search_kw)
        ours = runner.search(
            estimator,
            X,
            y,
            param_grid=param_grid,
            groups=groups,
            fit_params=fit_params,
            **search_kw,
        )
    else:
        extra = {k: kw[k] for k in ("n_iter", "random_state") if k in kw}
        sk = RandomizedSearchCV(estimator, param_distributions, **extra, **search_kw)
        ours = runner.search(
            estimator,
            X,
            y,
            param_distributions=param_distributions,
            groups=groups,
            fit_params=fit_params,
            **extra,
            **search_kw,
        )
    sk.fit(X, y, groups=groups, **fit_params) if groups is not None else sk.fit(X, y, **fit_params)
    return ours, sk


def assert_same_search(ours, sk, X=None):
    assert_cv_results_equal(ours.cv_results_, sk.cv_results_)
    assert ours.n_splits_ == sk.n_splits_
    assert ours.multimetric_ == sk.multimetric_
    if hasattr(sk, "best_index_"):
        assert ours.best_index_ == sk.best_index_
        assert ours.best_params_ == sk.best_params_
        if hasattr(sk, "best_score_"):
            assert repr(ours.best_score_) == repr(sk.best_score_)
    else:
        assert ours.best_index_ is None
    if hasattr(sk, "best_estimator_"):
        assert type(ours.best_estimator_) is type(sk.best_estimator_)
        assert ours.refit_time_ is not None
        if X is not None:
            for method in ("predict", "decision_function", "predict_proba"):
                if hasattr(sk.best_estimator_, method):
                    # copies: a copy=False step may transform its input in place
                    a = getattr(ours.best_estimator_, method)(X.copy())
                    b = getattr(sk.best_estimator_, method)(X.copy())
                    assert np.array_equal(a, b), method
    else:
        assert ours.best_estimator_ is None
    assert (
        sorted(ours.scorer_) == sorted(sk.scorer_)
        if isinstance(sk.scorer_, dict)
        else (type(ours.scorer_) is type(sk.scorer_))
    )


def test_seed_pipeline(runner, clf_data):
    X, y = clf_data
    pipe = Pipeline(
        [
            ("pca", PCA()),
            ("logistic", LogisticRegression(solver="liblinear", random_state=0)),
        ]
    )
    grid = {
        "pca__n_components": [3, 10, 20],
        "logistic__C": [1e-4, 1.0, 1e4],
        "logistic__l1_ratio": [0, 1],
    }
    ours, sk = both(runner, pipe, X, y, param_grid=grid, cv=5)
    assert_same_search(ours, sk, X)
    assert ours.stats.step_fits == 15 and ours.stats.final_fits == 90


def test_blas_threads_as_scikit_learn_uses_them(runner):
    """Fold fits at one BLAS thread, the refit at the machine's default.

    GridSearchCV(n_jobs=-1) fits folds in workers held to one BLAS thread
    and refits in the calling process at BLAS's default (every core). On
    data this size PCA's last bits depend on the thread count, so both
    the split scores and the refit model show whether the engine follows.
    """
    from threadpoolctl import threadpool_limits

    from memogrid_service.engine.tasks import _all_cores

    X, y = make_classification(n_samples=2500, n_features=100, random_state=0)
    pipe = Pipeline([("pca", PCA()), ("lr", LogisticRegression())])
    grid = {"pca__n_components": [10, 20], "lr__C": [0.1, 1.0]}
    # as in a fresh process (tests that run tasks here leave BLAS at one thread)
    with threadpool_limits(_all_cores()):
        sk = GridSearchCV(pipe, grid, cv=3, n_jobs=-1).fit(X, y)
    ours = runner.search(pipe, X, y, param_grid=grid, cv=3)
    assert_same_search(ours, sk, X)
    pca = ours.best_estimator_.named_steps["pca"]
    expected = sk.best_estimator_.named_steps["pca"]
    assert pca.components_.tobytes() == expected.components_.tobytes()


def test_scaler_svc(runner, clf_data):
    X, y = clf_data
    pipe = Pipeline([("scale", StandardScaler()), ("svc", SVC())])
    grid = {"svc__C": [0.1, 1.0, 10.0], "svc__gamma": ["scale", 0.01]}
    ours, sk = both(runner, pipe, X, y, param_grid=grid, cv=3)
    assert_same_search(ours, sk, X)


def test_column_transformer_on_dataframe(runner):
    rng = np.random.RandomState(0)
    n = 240
    df = pd.DataFrame(
        {
            "color": rng.choice(["red", "green", "blue"], n),
            "size": rng.choice(["S", "M", "L", "XL"], n),
            "weight": rng.normal(size=n),
            "height": rng.normal(size=n),
        }
    )
    y = ((df["weight"] + (df["color"] == "red")) > 0.5).astype(int).to_numpy()
    ct = ColumnTransformer(
        [
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["color", "size"]),
            ("num", StandardScaler(), ["weight", "height"]),
        ]
    )
    pipe = Pipeline([("ct", ct), ("lr", LogisticRegression())])
    grid = {
        "ct__cat__drop": [None, "first"],
        "ct__num": [StandardScaler(), "passthrough"],
        "lr__C": [0.1, 10.0],
    }
    ours, sk = both(runner, pipe, df, y, param_grid=grid, cv=4)
    assert_same_search(ours, sk, df)
    assert list(ours.best_estimator_.feature_names_in_) == list(df.columns)


def test_feature_union(runner, clf_data):
    X, y = clf_data
    union = FeatureUnion([("pca", PCA(n_components=3)), ("kbest", SelectKBest(k=2))])
    pipe = Pipeline([("union", union), ("lr", LogisticRegression())])
    grid = {
        "union__pca__n_components": [2, 5],
        "union__kbest__k": [1, 4],
        "lr__C": [0.5, 2.0],
    }
    ours, sk = both(runner, pipe, X, y, param_grid=grid, cv=3)
    assert_same_search(ours, sk, X)


def test_selectkbest_f_classif(runner, clf_data):
    X, y = clf_data
    pipe = Pipeline([("kbest", SelectKBest(f_classif)), ("lr", LogisticRegression(max_iter=200))])
    grid = {"kbest__k": [2, 5, 10], "lr__C": [0.1, 1.0]}
    ours, sk = both(runner, pipe, X, y, param_grid=grid, cv=5)
    assert_same_search(ours, sk, X)
    assert ours.stats.step_fits == 15


def test_grid_swaps_final_estimator_and_steps(runner, clf_data):
    X, y = clf_data
    pipe = Pipeline([("scale", StandardScaler()), ("reduce", PCA()), ("clf", SVC())])
    grid = [
        {
            "clf": [LogisticRegression()],
            "clf__C": [0.1, 1.0],
            "reduce": ["passthrough", None],
        },
        {
            "clf": [DecisionTreeClassifier(random_state=0)],
            "clf__max_depth": [2, 4],
            "reduce": [PCA(n_components=5), PCA(n_components=10)],
        },
        {"clf": [SVC(kernel="linear")], "scale": ["passthrough"]},
    ]
    ours, sk = both(runner, pipe, X, y, param_grid=grid, cv=3)
    assert_same_search(ours, sk, X)


def test_nested_pipeline_and_nested_params(runner, clf_data):
    X, y = clf_data
    inner = Pipeline([("scale", StandardScaler()), ("pca", PCA())])
    pipe = Pipeline([("pre", inner), ("lr", LogisticRegression())])
    grid = {"pre__pca__n_components": [2, 6], "pre__scale__with_mean": [True, False]}
    ours, sk = both(runner, pipe, X, y, param_grid=grid, cv=3)
    assert_same_search(ours, sk, X)
    assert isinstance(ours.best_estimator_.named_steps["pre"], Pipeline)


def test_plain_estimator(runner, clf_data):
    X, y = clf_data
    ours, sk = both(runner, SVC(), X, y, param_grid={"C": [0.1, 1.0, 3.0]})
    assert_same_search(ours, sk, X)


def test_multimetric_refit_f1_with_train_scores(runner, clf_data):
    X, y = clf_data
    pipe = Pipeline([("pca", PCA()), ("lr", LogisticRegression())])
    grid = {"pca__n_components": [2, 8], "lr__C": [0.01, 1.0]}
    ours, sk = both(
        runner,
        pipe,
        X,
        y,
        param_grid=grid,
        cv=4,
        scoring=["accuracy", "f1", "roc_auc"],
        refit="f1",
        return_train_score=True,
    )
    assert_same_search(ours, sk, X)
    assert "split0_train_f1" in ours.cv_results_


@pytest.mark.parametrize(
    "scoring, refit",
    [
        (None, True),
        ("balanced_accuracy", True),
        ({"acc": "accuracy", "prec": "precision"}, "prec"),
        (["accuracy", "recall"], False),
        ("accuracy", False),
    ],
)
def test_scoring_and_refit_forms(runner, clf_data, scoring, refit):
    X, y = clf_data
    ours, sk = both(
        runner,
        LogisticRegression(),
        X,
        y,
        param_grid={"C": [0.01, 1.0]},
        scoring=scoring,
        refit=refit,
        cv=3,
    )
    assert_same_search(ours, sk, X)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.FitFailedWarning")
def test_some_candidates_fail(runner, clf_data):
    X, y = clf_data
    # n_components=50 > n_features: those PCA fits fail on every fold
    pipe = Pipeline([("pca", PCA()), ("lr", LogisticRegression())])
    grid = {"pca__n_components": [3, 50], "lr__C": [0.1, 1.0]}
    with pytest.warns(FitFailedWarning, match="6 fits failed out of a total of 12"):
        ours = runner.search(pipe, X, y, param_grid=grid, cv=3, error_score=-1.5)
    with pytest.warns(FitFailedWarning):
        sk = GridSearchCV(pipe, grid, cv=3, error_score=-1.5).fit(X, y)
    assert_same_search(ours, sk, X)
    assert any("fits failed" in w for w in ours.warnings)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.FitFailedWarning")
@pytest.mark.filterwarnings("ignore:One or more of the test scores are non-finite")
def test_failing_final_estimator_with_nan(runner, clf_data):
    X, y = clf_data
    grid = {"C": [1.0, -1.0], "max_iter": [50, 100]}  # C<0 fails in fit
    ours, sk = both(runner, LogisticRegression(), X, y, param_grid=grid, cv=3)
    assert_same_search(ours, sk, X)


def test_all_candidates_fail_raises_like_sklearn(runner, clf_data):
    X, y = clf_data
    grid = {"C": [-1.0, -2.0]}
    with pytest.raises(ValueError, match="All the 6 fits failed") as ours:
        runner.search(LogisticRegression(), X, y, param_grid=grid, cv=3)
    with pytest.raises(ValueError, match="All the 6 fits failed") as theirs:
        GridSearchCV(LogisticRegression(), grid, cv=3).fit(X, y)
    assert type(ours.value) is type(theirs.value)


def test_error_score_raise_raises_the_fit_error(runner, clf_data):
    X, y = clf_data
    pipe = Pipeline([("pca", PCA()), ("lr", LogisticRegression())])
    with pytest.raises(ValueError, match="n_components=50 must be between"):
        runner.search(
            pipe,
            X,
            y,
            param_grid={"pca__n_components": [3, 50]},
            cv=3,
            error_score="raise",
        )


def test_randomized_search_same_candidates(runner, clf_data):
    X, y = clf_data
    pipe = Pipeline([("pca", PCA()), ("lr", LogisticRegression())])
    dists = {
        "pca__n_components": stats.randint(2, 12),
        "lr__C": stats.loguniform(1e-3, 1e2),
        "lr__fit_intercept": [True, False],
    }
    ours, sk = both(runner, pipe, X, y, param_distributions=dists, n_iter=6, random_state=7, cv=3)
    assert_same_search(ours, sk, X)


@pytest.mark.parametrize(
    "cv, with_groups",
    [
        (KFold(4, shuffle=True, random_state=1), False),
        (StratifiedKFold(3), False),
        (ShuffleSplit(n_splits=3, test_size=0.25, random_state=0), False),
        (StratifiedShuffleSplit(n_splits=3, test_size=0.3, random_state=0), False),
        (GroupKFold(n_splits=3), True),
        (TimeSeriesSplit(n_splits=4), False),
        (LeaveOneGroupOut(), True),
    ],
)
def test_cv_splitters(runner, clf_data, cv, with_groups):
    X, y = clf_data
    groups = np.arange(len(y)) % 4 if with_groups else None
    ours, sk = both(
        runner,
        LogisticRegression(),
        X,
        y,
        param_grid={"C": [0.1, 1.0]},
        cv=cv,
        groups=groups,
    )
    assert_same_search(ours, sk, X)


def test_default_cv_for_regressor_is_kfold(runner):
    X, y = make_regression(n_samples=120, n_features=8, noise=1.0, random_state=0)
    ours, sk = both(runner, Ridge(), X, y, param_grid={"alpha": [0.1, 1.0, 10.0]})
    assert_same_search(ours, sk, X)


def test_fit_params_routed_and_sliced(runner, clf_data):
    X, y = clf_data
    w = np.random.RandomState(0).uniform(0.5, 2.0, size=len(y))
    pipe = Pipeline([("scale", StandardScaler()), ("lr", LogisticRegression())])
    ours, sk = both(
        runner,
        pipe,
        X,
        y,
        param_grid={"lr__C": [0.1, 1.0]},
        cv=3,
        fit_params={"lr__sample_weight": w, "scale__sample_weight": w},
    )
    assert_same_search(ours, sk, X)
    unweighted = runner.search(pipe, X, y, param_grid={"lr__C": [0.1, 1.0]}, cv=3)
    assert not np.array_equal(
        unweighted.cv_results_["split0_test_score"],
        ours.cv_results_["split0_test_score"],
    ) or not np.array_equal(
        unweighted.best_estimator_.named_steps["lr"].coef_,
        ours.best_estimator_.named_steps["lr"].coef_,
    )


def test_plain_estimator_sample_weight_reaches_the_scorer(runner, clf_data):
    X, y = clf_data
    w = np.random.RandomState(1).uniform(0.1, 3.0, size=len(y))
    ours, sk = both(
        runner,
        LogisticRegression(),
        X,
        y,
        param_grid={"C": [0.1, 1.0]},
        cv=3,
        fit_params={"sample_weight": w},
    )
    assert_same_search(ours, sk, X)


def test_pipeline_fit_param_without_step_name_is_refused(runner, clf_data):
    X, y = clf_data
    pipe = Pipeline([("scale", StandardScaler()), ("lr", LogisticRegression())])
    with pytest.raises(ValueError, match="Pipeline.fit does not accept the sample_weight"):
        runner.search(pipe, X, y, param_grid={"lr__C": [1.0]}, fit_params={"sample_weight": y})


def test_random_state_none_is_named_in_warnings(runner, clf_data):
    X, y = clf_data
    pipe = Pipeline([("pca", PCA(random_state=0)), ("tree", DecisionTreeClassifier())])
    res = runner.search(pipe, X, y, param_grid={"tree__max_depth": [2, 3]}, cv=3)
    assert any("random_state=None" in w and "tree" in w for w in res.warnings)
    assert not any("pca" in w for w in res.warnings)
    seeded = runner.search(
        pipe.set_params(tree__random_state=0),
        X,
        y,
        param_grid={"tree__max_depth": [2]},
        cv=3,
    )
    assert not any("random_state=None" in w for w in seeded.warnings)


def test_in_place_estimators_do_not_corrupt_shared_fold_data(runner, clf_data):
    """copy=False steps see read-only shared inputs and copy, as scikit-learn's do."""
    X, y = clf_data
    pipe = Pipeline(
        [("scale", StandardScaler(copy=False)), ("pca", PCA(copy=False)), ("lr", SVC())]
    )
    grid = {"scale__with_std": [True, False], "pca__n_components": [3, 6], "lr__C": [0.5, 2.0]}
    ours, sk = both(runner, pipe, X.copy(), y, param_grid=grid, cv=3)
    assert_same_search(ours, sk, X)


def test_unsupervised_search_without_y(runner, clf_data):
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    X, _ = clf_data
    pipe = Pipeline([("scale", StandardScaler()), ("km", KMeans(n_init=2, random_state=0))])
    grid = {"km__n_clusters": [2, 3, 4]}
    ours = runner.search(pipe, X, None, param_grid=grid, cv=3)
    # KMeans reduces over OpenMP threads, so its last bits depend on their
    # number; each engine task runs single-threaded, as scikit-learn's own
    # GridSearchCV(n_jobs=-1) workers do
    with threadpool_limits(1):
        sk = GridSearchCV(pipe, grid, cv=3).fit(X)
    assert_same_search(ours, sk)


def test_dataframe_x_and_series_y(runner):
    rng = np.random.RandomState(3)
    df = pd.DataFrame({"a": rng.normal(size=150), "b": rng.normal(size=150)})
    y = pd.Series((df["a"] > 0).astype(int), name="target")
    ours, sk = both(runner, LogisticRegression(), df, y, param_grid={"C": [0.1, 1.0]}, cv=3)
    assert_same_search(ours, sk, df)


def test_fit_params_reach_steps_of_nested_pipelines(runner, clf_data):
    X, y = clf_data
    w = np.random.RandomState(5).uniform(0.2, 3.0, size=len(y))
    inner = Pipeline([("scale", StandardScaler()), ("pca", PCA(n_components=5))])
    pipe = Pipeline([("pre", inner), ("lr", LogisticRegression())])
    ours, sk = both(
        runner,
        pipe,
        X,
        y,
        param_grid={"lr__C": [0.3, 3.0]},
        cv=3,
        fit_params={"pre__scale__sample_weight": w, "lr__sample_weight": w},
    )
    assert_same_search(ours, sk, X)


def test_full_svd_outputs_keep_their_memory_order(runner):
    # PCA's full SVD hands the next step an F-ordered view of U; the engine
    # copies it compactly (see tasks.compact) and Ridge's last bits depend on
    # the memory order of its input: a C-ordered copy would change them
    # The full SVD's last bits depend on the BLAS thread count on some
    # machines: compare with GridSearchCV(n_jobs=-1), whose fold fits run at
    # one thread and whose refit runs at every core, as the engine's do.
    from threadpoolctl import threadpool_limits

    from memogrid_service.engine.tasks import _all_cores

    X, y = make_regression(n_samples=400, n_features=60, noise=5.0, random_state=0)
    pipe = Pipeline([("pca", PCA(svd_solver="full")), ("ridge", Ridge())])
    grid = {"pca__n_components": [5, 20], "ridge__alpha": [0.1, 10.0]}
    # a second search on the same transformer outputs (held in worker memory)
    overlap = dict(grid, ridge__alpha=[1.0, 100.0])
    for i, g in enumerate((grid, overlap)):
        ours = runner.search(pipe, X, y, param_grid=g)
        with threadpool_limits(_all_cores()):  # as in a fresh process
            sk = GridSearchCV(pipe, g, n_jobs=-1).fit(X, y)
        assert ours.stats.step_fits == (10 if i == 0 else 0)
        assert_same_search(ours, sk, X)


def test_refit_on_fortran_ordered_x_as_scikit_learn_refits(runner):
    # scikit-learn refits on X itself; Ridge's and StandardScaler's last bits
    # depend on its memory order (X from a DataFrame's to_numpy() is often
    # Fortran-ordered). Fold rows are C-ordered either way (row selection).
    X, y = make_regression(n_samples=400, n_features=60, noise=5.0, random_state=0)
    pipe = Pipeline([("scale", StandardScaler()), ("ridge", Ridge())])
    grid = {"ridge__alpha": [0.1, 10.0]}
    ours, sk = both(runner, pipe, X, y, param_grid=grid)
    assert_same_search(ours, sk, X)
    XF = np.asfortranarray(X)
    ours, sk = both(runner, pipe, XF, y, param_grid=grid)
    # same data, same folds: the scores are cached; the refit is not the C one
    assert ours.stats.final_fits == 0 and ours.stats.refit == "fit"
    assert_same_search(ours, sk, X)
    # a view of a Fortran-ordered array refits as the array does
    wide = np.asfortranarray(np.hstack([X, X]))
    ours, sk = both(runner, pipe, wide[:, :60], y, param_grid=grid)
    assert ours.stats.refit == "hit"  # the same as XF's refit
    assert_same_search(ours, sk, X)


def test_memory_order_of_x():
    from memogrid_service.engine.search import memory_order

    X = np.ones((5, 3))
    assert memory_order(X) == "C" and memory_order(np.asfortranarray(X)) == "F"
    assert memory_order(np.asfortranarray(np.ones((5, 6)))[:, ::2]) == "F"
    assert memory_order(np.ones((5, 6))[:, ::2]) == "C"
    assert memory_order(np.ones((5, 6))[::-1]) == "C"  # rows reversed: row by row
    assert memory_order(np.asfortranarray(np.ones((5, 6)))[:, ::-1]) == "F"
    assert memory_order(np.ones(5)) == "C" and memory_order([[1, 2]]) == "C"
    assert memory_order(np.ones((5, 1), order="F")) == "C"  # both at once: C


def test_x_order_must_be_c_or_f(runner, clf_data):
    X, y = clf_data
    with pytest.raises(ValueError, match="x_order must be 'C' or 'F', not 'K'"):
        runner.prepare(LogisticRegression(), X, y, param_grid={"C": [1.0]}, x_order="K")
