"""Specs build only allowlisted objects and refuse everything else, by path."""

from __future__ import annotations

import json
import pickle
import sys

import pytest
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import PCA
from sklearn.feature_selection import SelectKBest, f_classif
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from memogrid_service.specs.build import Allowlist, SpecError, build_estimator, build_grid


@pytest.fixture(scope="module")
def allow():
    return Allowlist.default()


SEED = {
    "class": "sklearn.pipeline.Pipeline",
    "params": {
        "steps": [
            ["pca", {"class": "sklearn.decomposition.PCA"}],
            [
                "logistic",
                {
                    "class": "sklearn.linear_model.LogisticRegression",
                    "params": {"solver": "liblinear", "random_state": 0},
                },
            ],
        ]
    },
}


def test_seed_spec_builds_the_seed_pipeline(allow):
    pipe = build_estimator(SEED, allow)
    assert isinstance(pipe, Pipeline)
    assert isinstance(pipe.named_steps["pca"], PCA)
    lr = pipe.named_steps["logistic"]
    assert isinstance(lr, LogisticRegression) and lr.solver == "liblinear"
    grid = build_grid(pipe, {"pca__n_components": [50, 100], "logistic__C": [1.0]}, allow)
    assert grid == {"pca__n_components": [50, 100], "logistic__C": [1.0]}


def test_functions_column_transformers_and_estimator_valued_grids(allow):
    spec = {
        "class": "sklearn.pipeline.Pipeline",
        "params": {
            "steps": [
                [
                    "ct",
                    {
                        "class": "sklearn.compose.ColumnTransformer",
                        "params": {
                            "transformers": [
                                ["cat", {"class": "sklearn.preprocessing.OneHotEncoder"}, ["c"]],
                                ["num", "passthrough", ["x", "y"]],
                            ]
                        },
                    },
                ],
                [
                    "kbest",
                    {
                        "class": "sklearn.feature_selection.SelectKBest",
                        "params": {
                            "score_func": {"function": "sklearn.feature_selection.f_classif"}
                        },
                    },
                ],
                ["clf", {"class": "sklearn.svm.SVC"}],
            ]
        },
    }
    pipe = build_estimator(spec, allow)
    assert isinstance(pipe.named_steps["ct"], ColumnTransformer)
    assert pipe.named_steps["ct"].transformers[1] == ("num", "passthrough", ["x", "y"])
    assert isinstance(pipe.named_steps["kbest"], SelectKBest)
    assert pipe.named_steps["kbest"].score_func is f_classif
    grid = build_grid(
        pipe,
        [{"clf": [{"class": "sklearn.linear_model.LogisticRegression"}], "clf__C": [0.1]}],
        allow,
    )
    assert isinstance(grid[0]["clf"][0], LogisticRegression)


@pytest.mark.parametrize(
    "spec, path, message",
    [
        ({"class": "sklearn.decomposition.NoSuchThing"}, "class", "not on the allowlist"),
        ({"class": "os.system"}, "class", "not on the allowlist"),
        ({"class": "builtins.eval"}, "class", "not on the allowlist"),
        ({"class": "subprocess.Popen"}, "class", "not on the allowlist"),
        ({"class": "sklearn.decomposition._pca.PCA"}, "class", "not on the allowlist"),
        (
            {"class": "sklearn.decomposition.PCA", "params": {"nope": 1}},
            "params.nope",
            "no parameter",
        ),
        (
            {"class": "sklearn.decomposition.PCA", "params": {"__class__": 1}},
            "params.__class__",
            "no parameter",
        ),
        (
            {"class": "sklearn.decomposition.PCA", "params": {"n_components": 10**30}},
            "params.n_components",
            "out of range",
        ),
        (
            {"class": "sklearn.decomposition.PCA", "params": {"tol": float("inf")}},
            "params.tol",
            "non-finite",
        ),
        (
            {
                "class": "sklearn.feature_selection.SelectKBest",
                "params": {"score_func": {"function": "os.system"}},
            },
            "params.score_func",
            "not on the allowlist",
        ),
        (
            {
                "class": "sklearn.pipeline.Pipeline",
                "params": {"steps": [["a", {"class": "os.system"}]]},
            },
            "params.steps[0][1].class",
            "not on the allowlist",
        ),
        ({"class": "sklearn.decomposition.PCA", "code": "1+1"}, "<root>", "unknown keys"),
        (
            {"class": "sklearn.decomposition.PCA", "output": {"transform": "xml"}},
            "output.transform",
            "transform is one of",
        ),
        (
            {"class": "sklearn.decomposition.PCA", "output": {"predict": "pandas"}},
            "output",
            'only "transform"',
        ),
        (
            {"class": "sklearn.linear_model.LogisticRegression", "output": {"transform": "pandas"}},
            "output",
            "has no set_output",
        ),
        ("__import__('os').system('true')", "<root>", "an estimator spec is an object"),
        *(
            (
                {"class": "sklearn.linear_model.LogisticRegression", "params": {"C": bad}},
                "params.C",
                message,
            )
            for bad, message in (
                ({"numpy": "object", "value": 1.0}, "is one of ['float16', 'float32']"),
                ({"numpy": "float64", "value": 1.0}, "is one of"),
                ({"numpy": "float32", "value": True}, "holds a number"),
                ({"numpy": "float32", "value": "1"}, "holds a number"),
                ({"numpy": "float32", "value": [1.0]}, "holds a number"),
                ({"numpy": ["float32"], "value": 1.0}, "is one of"),  # was a 500
                ({"numpy": {"a": 1}, "value": 1.0}, "is one of"),
                ({"numpy": "float32", "value": 1e300}, "does not fit a float32"),
            )
        ),
    ],
)
def test_bad_specs_are_refused_by_path(allow, spec, path, message):
    with pytest.raises(SpecError) as err:
        build_estimator(spec, allow)
    assert err.value.path == path
    assert message in err.value.message


def test_a_pickle_payload_is_just_a_string_and_nothing_is_imported(allow):
    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('executed')",))

    payload = pickle.dumps(Boom()).hex()
    before = set(sys.modules)
    for spec in (
        payload,
        {"class": payload},
        {"class": "sklearn.decomposition.PCA", "params": {"n_components": {"pickle": payload}}},
    ):
        with pytest.raises(SpecError):
            build_estimator(json.loads(json.dumps(spec)), allow)
    assert set(sys.modules) == before


def test_grid_keys_the_pipeline_lacks_are_refused(allow):
    pipe = build_estimator(SEED, allow)
    with pytest.raises(SpecError) as err:
        build_grid(pipe, {"pca__n_components": [2], "logistic__nope": [1]}, allow)
    assert err.value.path == "param_grid.logistic__nope"
    with pytest.raises(SpecError) as err:
        build_grid(pipe, {"pca__n_components": 2}, allow)
    assert "non-empty list" in err.value.message


def test_operator_names_extend_the_allowlist():
    extra = Allowlist.default(extra=["tests.helpers.counting.CountingPCA"])
    est = build_estimator({"class": "tests.helpers.counting.CountingPCA"}, extra)
    assert type(est).__name__ == "CountingPCA"
    with pytest.raises(SpecError):
        build_estimator({"class": "tests.helpers.counting.CountingPCA"}, Allowlist.default())


def test_a_built_spec_searches_like_scikit_learn(allow, runner):
    from sklearn.datasets import make_classification
    from sklearn.model_selection import GridSearchCV

    from tests.helpers.parity import assert_cv_results_equal

    X, y = make_classification(n_samples=200, n_features=20, random_state=0)
    pipe = build_estimator(json.loads(json.dumps(SEED)), allow)
    grid = build_grid(pipe, {"pca__n_components": [2, 5], "logistic__C": [0.1, 1.0]}, allow)
    res = runner.search(pipe, X, y, param_grid=grid, cv=3)
    sk = GridSearchCV(pipe, grid, cv=3).fit(X, y)
    assert_cv_results_equal(res.cv_results_, sk.cv_results_)


def test_set_output_round_trips_through_a_spec(allow):
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import OrdinalEncoder, StandardScaler

    from memogrid.spec import to_spec

    ct = ColumnTransformer([("enc", OrdinalEncoder(), ["c"])], remainder=StandardScaler())
    ct.set_output(transform="pandas")
    spec = to_spec(ct)
    assert spec["output"] == {"transform": "pandas"}
    built = build_estimator(spec, allow)
    assert built._sklearn_output_config == ct._sklearn_output_config
    assert built.transformers[0][1]._sklearn_output_config == {"transform": "pandas"}
    assert "output" not in to_spec(StandardScaler())  # nothing set, nothing sent


@pytest.mark.parametrize(
    ("config", "path", "message"),
    [
        ({"transform_output": "xml"}, "sklearn_config.transform_output", "one of"),
        ({"assume_finite": "yes"}, "sklearn_config.assume_finite", "one of [false, true]"),
        ({"assume_finite": 1}, "sklearn_config.assume_finite", "one of [false, true]"),
        ({"array_api_dispatch": True}, "sklearn_config.array_api_dispatch", "cannot be set"),
        (["transform_output"], "sklearn_config", "is an object"),
        ({"sparse_interface": "dense"}, "sklearn_config.sparse_interface", "one of"),
        ({"working_memory": 0}, "sklearn_config.working_memory", "an integer from 1"),
        ({"working_memory": True}, "sklearn_config.working_memory", "an integer from 1"),
        ({"pairwise_dist_chunk_size": 2.5}, "sklearn_config.pairwise_dist_chunk_size", "integer"),
        ({"skip_parameter_validation": 1}, "sklearn_config.skip_parameter_validation", "one of"),
    ],
)
def test_bad_sklearn_settings_are_refused_by_path(config, path, message):
    from memogrid.spec import check_sklearn_settings

    with pytest.raises(SpecError) as err:
        check_sklearn_settings(config)
    assert err.value.path == path and message in err.value.message


def test_every_setting_a_job_carries_is_sent_by_the_client_and_accepted():
    """What scikit-learn lets a caller set that changes results travels with
    the job (the engine runs and keys its folds under it)."""
    import sklearn

    from memogrid.client import _sklearn_config
    from memogrid.spec import check_sklearn_settings

    changed = {
        "skip_parameter_validation": True,
        "sparse_interface": "sparray",
        "enable_cython_pairwise_dist": False,
        "pairwise_dist_chunk_size": 64,
        "working_memory": 64,
        "assume_finite": True,
    }
    with sklearn.config_context(**changed, print_changed_only=False):
        sent = _sklearn_config()
    assert sent == changed  # display settings are not sent
    assert check_sklearn_settings(sent) == changed


@pytest.mark.parametrize(
    ("scoring", "path", "message"),
    [
        (
            {"make_scorer": {"function": "os.system"}},
            "scoring.make_scorer.function",
            "not a metric",
        ),
        (
            {"make_scorer": {"function": "f1_score", "response_method": "transform"}},
            "scoring.make_scorer.response_method",
            "among",
        ),
        (
            {"make_scorer": {"function": "f1_score", "greater_is_better": "yes"}},
            "scoring.make_scorer.greater_is_better",
            "true or false",
        ),
        (
            {
                "make_scorer": {
                    "function": "f1_score",
                    "kwargs": {"average": {"function": "os.system"}},
                }
            },
            "scoring.make_scorer.kwargs.average",
            "not on the allowlist",
        ),
        (
            {"make_scorer": {"function": "f1_score", "code": 1}},
            "scoring.make_scorer",
            "unknown keys",
        ),
        ({"a": {"make_scorer": "f1_score"}}, "scoring.a", "unknown scorer"),
        (["accuracy", {"make_scorer": {"function": "f1_score"}}], "scoring", "holds names"),
    ],
)
def test_bad_scorer_specs_are_refused_by_path(scoring, path, message):
    from memogrid_service.specs.jobs import _scoring

    with pytest.raises(SpecError) as err:
        _scoring(scoring)
    assert err.value.path == path and message in err.value.message


def test_scorer_specs_build_the_scorer_they_describe():
    from sklearn.metrics import fbeta_score, get_scorer, make_scorer

    from memogrid.spec import build_scorer, scorer_to_spec

    for scorer in (
        make_scorer(fbeta_score, beta=2, average="macro", greater_is_better=False),
        get_scorer("roc_auc"),
        get_scorer("neg_log_loss"),
    ):
        assert vars(build_scorer(scorer_to_spec(scorer))) == vars(scorer)


def test_a_metric_named_make_scorer_is_a_name_in_a_dict():
    from memogrid_service.specs.jobs import _scoring

    assert _scoring({"make_scorer": "accuracy"}) == {"make_scorer": "accuracy"}


def test_columns_by_name_are_found_in_every_form_a_spec_writes():
    """The check that X is a DataFrame sees names in lists and in tuples,
    entries written as lists or as tuples, a transformers tuple too."""
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import StandardScaler

    from memogrid.spec import to_spec
    from memogrid_service.specs.jobs import _uses_column_names

    def ct(columns):
        return ColumnTransformer([("sc", StandardScaler(), columns)])

    for columns in (["a"], ("a", "b"), "a"):
        spec = to_spec(ct(columns))
        assert _uses_column_names(spec)
        entries = spec["params"]["transformers"]
        as_tuples = {**spec, "params": {"transformers": {"tuple": [{"tuple": e} for e in entries]}}}
        assert _uses_column_names(as_tuples)
    assert not _uses_column_names(to_spec(ct([0, 1])))
    assert not _uses_column_names(to_spec(ct((0, 1))))


def test_a_numpy_float32_value_round_trips_with_its_type(allow):
    """It computes unlike a Python float, so a spec keeps its type."""
    import numpy as np

    from memogrid.spec import to_spec

    for value in (np.float32(0.3), np.float16(2.5), np.float32("inf")):
        spec = to_spec(LogisticRegression(C=value))
        json.dumps(spec, allow_nan=False)  # plain JSON
        built = build_estimator(json.loads(json.dumps(spec)), allow).C
        assert type(built) is type(value) and built == value
    assert type(build_estimator(to_spec(LogisticRegression(C=np.float64(0.3))), allow).C) is float


def test_float32_where_a_spec_takes_plain_numbers(allow):
    """A dict key holding a float32 is sent as the float it equals (it looks
    up the same); a distribution's float32 argument keeps its type."""
    import numpy as np
    import scipy.stats

    from memogrid.spec import build_distributions, to_distributions, to_spec

    weights = {np.float32(0): 1.0, np.float32(1): 2.0}
    spec = json.loads(json.dumps(to_spec(LogisticRegression(class_weight=weights))))
    assert build_estimator(spec, allow).class_weight == {0.0: 1.0, 1.0: 2.0}
    # a distribution's float32 arguments keep their type: scipy draws with it
    # (loguniform's draws differ in the last bits from float64 arguments)
    for dist in (scipy.stats.uniform, scipy.stats.loguniform):
        dists = {"C": dist(np.float32(1e-3), np.float32(1e2))}
        encoded = json.loads(json.dumps(to_distributions(dists)))
        assert encoded["C"]["args"][0] == {"numpy": "float32", "value": float(np.float32(1e-3))}
        built = build_distributions(LogisticRegression(), encoded, allow)
        draws = [d["C"].rvs(size=5, random_state=0) for d in (built, dists)]
        assert np.array_equal(*draws) and draws[0].dtype == draws[1].dtype


def test_checking_grid_keys_costs_no_clone_of_the_estimator_per_key(allow, monkeypatch):
    """A pipeline of 400 steps and a grid of one key per step (one
    candidate, 35 kB of JSON) took 14 s of the API's CPU: each key cloned
    the whole pipeline. Keys the estimator, or the steps the grid swaps in,
    offer as they are need none; a key they lack is still refused."""
    import sklearn.base
    from sklearn.preprocessing import StandardScaler

    clones = []
    real = sklearn.base.clone
    monkeypatch.setattr(sklearn.base, "clone", lambda *a, **k: clones.append(1) or real(*a, **k))
    n = 400
    est = Pipeline([(f"s{i}", StandardScaler()) for i in range(n)])
    scaler = {"class": "sklearn.preprocessing.StandardScaler"}
    grid = {f"s{i}__with_mean": [True] for i in range(n)}
    build_grid(est, grid, allow)
    build_grid(est, {**grid, **{f"s{i}": [scaler] for i in range(n)}}, allow)
    assert len(clones) < n
    with pytest.raises(SpecError, match=r"no parameter 's3__nope'"):
        build_grid(est, {"s3": [scaler], "s3__nope": [1]}, allow)
    with pytest.raises(SpecError, match=r"no parameter 's3__with_mean'.*'passthrough'"):
        build_grid(est, {"s3": [scaler, "passthrough"], "s3__with_mean": [True]}, allow)
    # get_params offers a step named "a__b"'s keys, which set_params refuses
    # (it splits at the first "__"): still refused, as scikit-learn would
    odd = Pipeline([("a__b", StandardScaler()), ("clf", LogisticRegression())])
    with pytest.raises(SpecError, match=r"no parameter 'a__b__with_mean'.*Invalid parameter 'a'"):
        build_grid(odd, {"a__b__with_mean": [True]}, allow)
    odd_spec = {
        "class": "sklearn.pipeline.Pipeline",
        "params": {
            "steps": [
                ["a__b", scaler],
                ["clf", {"class": "sklearn.linear_model.LogisticRegression"}],
            ]
        },
    }
    with pytest.raises(SpecError, match=r"no parameter 's__a__b__with_mean'"):
        build_grid(Pipeline([("s", odd)]), {"s": [odd_spec], "s__a__b__with_mean": [True]}, allow)


def test_a_default_scikit_learn_refuses_is_refused_at_build(allow):
    """Only the parameters given were checked: SelfTrainingClassifier's
    default estimator=None, which its fit refuses, was built."""
    spec = {"class": "sklearn.semi_supervised.SelfTrainingClassifier", "params": {"max_iter": 5}}
    with pytest.raises(SpecError, match=r"params.estimator.*must be an object implementing"):
        build_estimator(spec, allow, "estimator")
    spec["params"]["estimator"] = {"class": "sklearn.linear_model.LogisticRegression"}
    assert build_estimator(spec, allow, "estimator").max_iter == 5


def test_grid_keys_are_checked_once_per_structure_of_the_steps_above_them(allow):
    """A grid swapping steps checks a key with each combination of the
    steps above it; one small request (250 x 200 copies of two steps) made
    50,000 estimator clones, 48 s of the API's CPU. Steps alike but for
    their numbers are one structure; a list of grids shares what it checked;
    too many distinct combinations are refused; a key one swapped-in step
    lacks is still refused, naming it."""
    from sklearn.feature_selection import SelectFromModel

    from memogrid.spec import KEY_CHECKS_MAX

    LR = "sklearn.linear_model.LogisticRegression"
    est = Pipeline([("sel", SelectFromModel(LogisticRegression())), ("clf", LogisticRegression())])
    sfm = {
        "class": "sklearn.feature_selection.SelectFromModel",
        "params": {"estimator": {"class": LR}},
    }
    lrs = [{"class": LR, "params": {"C": 0.1 * (i + 1)}} for i in range(200)]
    checked: set = set()
    grid = {"sel": [sfm] * 250, "sel__estimator": lrs, "sel__estimator__C": [1.0]}
    built = build_grid(est, grid, allow, checked=checked)
    # at most one check (a clone) per key: none where the estimator, or
    # every value the grid sets above the key, offers it as it is
    assert len(built["sel"]) == 250 and len(checked) <= 3
    more: set = set()
    build_grid(est, [{"clf__C": [float(c)]} for c in range(500)], allow, checked=more)
    assert len(more) <= 1
    # a step swapped in that lacks the key: refused, naming it
    svc = {"class": "sklearn.svm.LinearSVC"}
    with pytest.raises(SpecError, match=r"no parameter 'sel__estimator__l1_ratio'.*LinearSVC"):
        build_grid(
            est,
            {"sel__estimator": [lrs[0], svc], "sel__estimator__l1_ratio": [0.5]},
            allow,
        )
    # steps alike but for the columns they select are one structure: a search
    # over 4,095 column subsets is no more than the bound
    import itertools

    cols = [f"c{i}" for i in range(12)]
    ct = "sklearn.compose.ColumnTransformer"
    scaler = {"class": "sklearn.preprocessing.StandardScaler"}
    subsets = [
        {"class": ct, "params": {"transformers": [["num", scaler, list(c)]]}}
        for r in range(1, 13)
        for c in itertools.combinations(cols, r)
    ]
    prep = Pipeline([("prep", ColumnTransformer([("num", "passthrough", cols)])), ("clf", est)])
    subsets_checked: set = set()
    grid = {"prep": subsets, "prep__num__with_mean": [True]}
    assert len(build_grid(prep, grid, allow, checked=subsets_checked)["prep"]) == 4095
    assert len(subsets_checked) <= 2
    # distinct structures (steps named differently) beyond the bound: refused
    named = [
        {"class": "sklearn.pipeline.Pipeline", "params": {"steps": [[f"s{i}", {"class": LR}]]}}
        for i in range(KEY_CHECKS_MAX + 1)
    ]
    with pytest.raises(SpecError, match="different combinations"):
        build_grid(est, {"sel__estimator": named, "sel__estimator__verbose": [0]}, allow)


def test_checking_grid_keys_is_linear_in_their_number(allow):
    """Each key looked for the keys above it by testing every key of the
    grid: one request of 300,000 keys (one candidate, under the body limit)
    held an API thread for hours. Counted as calls the check makes (not
    timed): a bounded number per key, however many keys."""
    import sys

    calls = []
    for n in (200, 2000):
        est = Pipeline(
            [(f"s{i}", "passthrough") for i in range(n)] + [("clf", LogisticRegression())]
        )
        grid = {f"s{i}": ["passthrough"] for i in range(n)}
        count = [0]

        def counting(frame, event, arg, count=count):
            if event in ("call", "c_call"):
                count[0] += 1

        sys.setprofile(counting)
        try:
            build_grid(est, grid, allow)
        finally:
            sys.setprofile(None)
        calls.append(count[0] / n)
    assert calls[1] < 1.5 * calls[0] and calls[1] < 100, calls
