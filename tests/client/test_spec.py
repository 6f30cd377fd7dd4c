"""Objects to specs and back: the expressible round-trips exactly, the rest is refused by path."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings
from typing import Any

import numpy as np
import pytest
import scipy.stats
from hypothesis import event, given, settings
from hypothesis import strategies as st
from sklearn.compose import ColumnTransformer, make_column_selector
from sklearn.decomposition import PCA
from sklearn.ensemble import BaggingClassifier, StackingClassifier, VotingClassifier
from sklearn.feature_selection import SelectKBest, chi2, f_classif
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import ParameterGrid, ParameterSampler
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier

from memogrid.spec import (
    Allowlist,
    SpecError,
    build_distributions,
    build_estimator,
    build_grid,
    default_allowlist,
    to_distributions,
    to_grid,
    to_spec,
)


@pytest.fixture(scope="module")
def allow() -> Allowlist:
    return default_allowlist()


def canon(value: Any) -> Any:
    """A comparable form: estimators by type and params, floats by their bits.

    Tuples and lists (and numeric arrays) compare alike, as do numpy and
    Python scalars: JSON keeps neither distinction. Bools, ints and floats
    stay apart, and so do ``0.0`` and ``-0.0``.
    """
    if hasattr(value, "get_params") and not isinstance(value, type):
        return ("estimator", type(value), canon(value.get_params(deep=False)))
    if isinstance(value, dict):
        return {k: canon(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return ("seq", [canon(v) for v in value])
    if isinstance(value, np.ndarray):
        return canon(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return ("bool", bool(value))
    if isinstance(value, (int, np.integer)):
        return ("int", int(value))
    if isinstance(value, (float, np.floating)):
        return ("float", float(value).hex())
    if isinstance(value, str):
        return str(value)
    return value  # None, functions: by identity


def round_trip(est: Any, allow: Allowlist) -> tuple[Any, Any]:
    """The spec of ``est`` through JSON text, and the estimator built back from it."""
    spec = json.loads(json.dumps(to_spec(est, allow), allow_nan=False))
    return spec, build_estimator(spec, allow)


EXPRESSIBLE = {
    "seed pipeline": Pipeline(
        [("pca", PCA(n_components=5)), ("logistic", LogisticRegression(solver="liblinear"))]
    ),
    "numpy scalars": LogisticRegression(C=np.float64(0.5), max_iter=np.int64(300)),
    "negative zero": PCA(tol=-0.0),
    "nan default kept": SimpleImputer(missing_values=np.nan),
    "changed missing value": SimpleImputer(missing_values=-1, strategy="median"),
    "tuple param": MLPClassifier(hidden_layer_sizes=(50, 20), alpha=1e-5),
    "functions": Pipeline(
        [
            ("log", FunctionTransformer(np.log1p, inverse_func=np.expm1)),
            ("kbest", SelectKBest(chi2, k=3)),
            ("clf", SVC(C=2.0, gamma=0.1)),
        ]
    ),
    "passthrough and None steps": Pipeline(
        [("scale", "passthrough"), ("pca", None), ("clf", Ridge(alpha=0.3))]
    ),
    "feature union": FeatureUnion(
        [("pca", PCA(n_components=2)), ("kbest", SelectKBest(f_classif, k=1)), ("x", "drop")],
        n_jobs=2,
    ),
    "column transformer": ColumnTransformer(
        [
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["c", "d"]),
            ("num", StandardScaler(with_mean=False), np.array([0, 2])),
            ("one", "passthrough", 3),
            ("name", "drop", "e"),
            ("mask", "passthrough", np.array([True, False, True])),
        ],
        remainder=StandardScaler(),
        sparse_threshold=0.0,
    ),
    "nested composites": Pipeline(
        [
            (
                "union",
                FeatureUnion(
                    [
                        ("ct", ColumnTransformer([("s", StandardScaler(), [0, 1])])),
                        ("pca", PCA(n_components=1, random_state=0)),
                    ]
                ),
            ),
            (
                "stack",
                StackingClassifier(
                    [("lr", LogisticRegression(C=0.1)), ("tree", DecisionTreeClassifier())],
                    final_estimator=LogisticRegression(C=10.0),
                    cv=3,
                ),
            ),
        ]
    ),
    "estimator-valued params": BaggingClassifier(
        estimator=KNeighborsClassifier(n_neighbors=3), n_estimators=7, random_state=1
    ),
    "voting": VotingClassifier(
        [("a", LogisticRegression()), ("b", SVC(probability=True))], weights=[1, 2]
    ),
}


@pytest.mark.parametrize("est", EXPRESSIBLE.values(), ids=EXPRESSIBLE.keys())
def test_expressible_estimators_round_trip_exactly(allow, est):
    spec, rebuilt = round_trip(est, allow)
    assert canon(rebuilt.get_params(deep=True)) == canon(est.get_params(deep=True))
    assert to_spec(rebuilt, allow) == spec  # the spec is a fixed point


def test_only_changed_params_are_written(allow):
    spec = to_spec(EXPRESSIBLE["seed pipeline"], allow)
    assert spec == {
        "class": "sklearn.pipeline.Pipeline",
        "params": {
            "steps": [
                ["pca", {"class": "sklearn.decomposition.PCA", "params": {"n_components": 5}}],
                [
                    "logistic",
                    {
                        "class": "sklearn.linear_model.LogisticRegression",
                        "params": {"solver": "liblinear"},
                    },
                ],
            ]
        },
    }
    # types matter: 1 is not the default 1.0, True is not 1, -0.0 is not 0.0
    assert to_spec(LogisticRegression(C=1), allow)["params"] == {"C": 1}
    assert to_spec(LogisticRegression(C=1.0), allow)["params"] == {}
    assert to_spec(PCA(tol=-0.0), allow)["params"] == {"tol": -0.0}
    assert to_spec(SimpleImputer(missing_values=float("nan")), allow)["params"] == {}
    assert to_spec(SVC(verbose=1), allow)["params"] == {"verbose": 1}


def test_every_default_constructible_allowlisted_class_round_trips(allow):
    seen = 0
    for name, cls in allow.classes.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # deprecated estimators
                est = cls()
        except TypeError:  # needs an estimator or steps
            continue
        seen += 1
        assert to_spec(est, allow) == {"class": name, "params": {}}, name
        assert allow.name_of_class(cls) == name
    assert seen > 150


def test_column_selectors_round_trip(allow):
    """make_column_selector is a value a spec can hold: by dtype (numpy's
    abstract types, builtins, names) and by pattern."""
    for selector in (
        make_column_selector(dtype_include=np.number),
        make_column_selector(pattern="^x_", dtype_exclude=[object, "category"]),
        make_column_selector(dtype_include=[np.integer, bool, np.datetime64]),
    ):
        spec, rebuilt = round_trip(ColumnTransformer([("s", "passthrough", selector)]), allow)
        again = rebuilt.transformers[0][2]
        assert type(again) is make_column_selector
        assert vars(again) == vars(selector)
        assert to_spec(rebuilt, allow) == spec


class NotAllowed(PCA):
    """A subclass nobody put on the allowlist."""


@pytest.mark.parametrize(
    "obj, path, message",
    [
        (
            Pipeline([("a", PCA()), ("b", LogisticRegression(C=lambda: 1))]),  # type: ignore[arg-type]
            "params.steps[1][1].params.C",
            "function <lambda> is not on the allowlist",
        ),
        (Pipeline([("a", NotAllowed())]), "params.steps[0][1].class", "not on the allowlist"),
        (NotAllowed(), "class", "not on the allowlist"),
        (
            ColumnTransformer([("a", "drop", slice(0, 2))]),
            "params.transformers[0][2]",
            "slice is not expressible",
        ),
        (
            ColumnTransformer([("a", "drop", make_column_selector(dtype_include=NotAllowed))]),
            "params.transformers[0][2].params.dtype_include",
            "a class (NotAllowed) is not a value",
        ),
        (LogisticRegression(C=10**30), "params.C", "out of range"),
        (SelectKBest(np.sin), "params.score_func", "not on the allowlist"),
        (LogisticRegression(C=object()), "params.C", "unsupported value of type object"),
        (LogisticRegression(C={(1, 2)}), "params.C", "a set is expressible when it holds"),
        (LogisticRegression(C=PCA), "params.C", "a class"),
        (LogisticRegression(class_weight={(0, 1): 1.0}), "params.class_weight[0]", "dict key"),
        (LogisticRegression(C=np.array([1j])), "params.C", "dtype complex128"),
        (LogisticRegression(C=np.longdouble(1) / 3), "params.C", "does not fit a float64"),
    ],
)
def test_inexpressible_objects_are_refused_by_path(allow, obj, path, message):
    with pytest.raises(SpecError) as err:
        to_spec(obj, allow)
    assert err.value.path == path
    assert message in err.value.message


def test_a_path_prefix_names_the_place_in_a_request(allow):
    with pytest.raises(SpecError) as err:
        to_spec(LogisticRegression(C=object()), allow, path="estimator")
    assert err.value.path == "estimator.params.C"


# -- property: random estimators with random literal params -------------------------------------

LEAVES = [LogisticRegression, PCA, SVC, Ridge, StandardScaler, DecisionTreeClassifier]
PARAMS = {cls: sorted(cls().get_params(deep=False)) for cls in LEAVES}

literals = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**64), 2**64),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=4),
    st.sampled_from([math.nan, -math.inf, 2**63 + 1, -0.0, 0, 1.0]),
)
values = st.one_of(literals, st.lists(literals, max_size=3), st.tuples(literals, literals))


@st.composite
def leaves(draw: st.DrawFn) -> Any:
    cls = draw(st.sampled_from(LEAVES))
    return cls(**draw(st.dictionaries(st.sampled_from(PARAMS[cls]), values, max_size=3)))


@st.composite
def estimators(draw: st.DrawFn) -> Any:
    if draw(st.booleans()):
        return draw(leaves())
    steps = draw(
        st.lists(
            st.one_of(leaves(), st.sampled_from(["passthrough", None])), min_size=1, max_size=3
        )
    )
    return Pipeline([(f"s{i}", step) for i, step in enumerate(steps)])


def _bad(value: Any) -> bool:
    """Whether a literal (or list of them) is beyond what a spec can carry."""
    if isinstance(value, (list, tuple)):
        return any(_bad(v) for v in value)
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**63


@settings(max_examples=150, deadline=None)
@given(est=estimators())
def test_random_estimators_round_trip_or_are_refused_where_they_break(est):
    allow = default_allowlist()
    leaves_ = [s for _, s in est.steps] if isinstance(est, Pipeline) else [est]
    bad = {
        (i, key)
        for i, leaf in enumerate(leaves_)
        if hasattr(leaf, "get_params")
        for key, value in leaf.get_params(deep=False).items()
        if _bad(value)
    }
    event("refused" if bad else "round trip")
    if bad:
        with pytest.raises(SpecError) as err:
            to_spec(est, allow)
        prefix = [f"params.steps[{i}][1].params.{key}" for i, key in bad]
        if not isinstance(est, Pipeline):
            prefix = [f"params.{key}" for _, key in bad]
        assert any(err.value.path.startswith(p) for p in prefix), (err.value.path, prefix)
        return
    if not _valid(leaves_):
        # expressible, but scikit-learn's own checks refuse it: so does the builder
        with pytest.raises(SpecError, match="parameter of"):
            round_trip(est, allow)
        return
    _, rebuilt = round_trip(est, allow)
    assert canon(rebuilt.get_params(deep=True)) == canon(est.get_params(deep=True))


def _valid(leaves_: list[Any]) -> bool:
    """Whether every estimator passes scikit-learn's parameter validation."""
    for leaf in leaves_:
        check = getattr(leaf, "_validate_params", None)
        if check is None:
            continue
        try:
            check()
        except (ValueError, TypeError):
            return False
    return True


# -- the allowlist's reverse lookups -------------------------------------------------------------


def test_reverse_lookups_agree_with_the_forward_maps(allow):
    for name, cls in allow.classes.items():
        assert allow.classes[allow.name_of_class(cls)] is cls, name
    for name, fn in allow.functions.items():
        assert allow.functions[allow.name_of_function(fn)] is fn, name
    assert allow.name_of_function(np.abs) == "numpy.abs"
    assert allow.name_of_class(NotAllowed) is None
    assert allow.name_of_function(np.sin) is None


def test_reverse_lookups_follow_additions_and_in_place_edits():
    allow = Allowlist()
    assert allow.name_of_class(PCA) is None
    allow.add("my.PCA", PCA)
    allow.add("my.sin", np.sin)
    assert allow.name_of_class(PCA) == "my.PCA"
    assert allow.name_of_function(np.sin) == "my.sin"
    allow.classes["other.SVC"] = SVC  # edited directly
    assert allow.name_of_class(SVC) == "other.SVC"
    del allow.classes["my.PCA"]
    allow.classes["my.Ridge"] = Ridge  # same size, different content
    assert allow.name_of_class(Ridge) == "my.Ridge"
    assert allow.name_of_class(PCA) is None
    allow.functions.pop("my.sin")
    assert allow.name_of_function(np.sin) is None
    allow.classes = {"new.SVC": SVC}  # a whole new mapping
    assert allow.name_of_class(SVC) == "new.SVC" and allow.name_of_class(Ridge) is None
    allow.classes |= {"new.PCA": PCA}
    assert allow.name_of_class(PCA) == "new.PCA"
    built = Allowlist(classes={"a.PCA": PCA}, functions={"a.sin": np.sin})
    assert built.name_of_class(PCA) == "a.PCA" and built.name_of_function(np.sin) == "a.sin"


# -- grids -------------------------------------------------------------------------------------


def test_grids_with_estimators_passthrough_and_arrays_round_trip(allow):
    pipe = Pipeline([("pca", PCA()), ("clf", LogisticRegression())])
    grid = [
        {"pca__n_components": np.arange(1, 4), "clf__C": (0.1, np.float64(1.0))},
        {"pca": ["passthrough", PCA(whiten=True)], "clf": [SVC(), LogisticRegression(C=3.0)]},
        {"clf": [KNeighborsClassifier()], "clf__weights": ["uniform", "distance"]},
    ]
    encoded = json.loads(json.dumps(to_grid(grid, allow), allow_nan=False))
    assert encoded[0] == {"pca__n_components": [1, 2, 3], "clf__C": [0.1, 1.0]}
    assert encoded[1]["pca"][0] == "passthrough"
    assert encoded[1]["clf"][1] == {
        "class": "sklearn.linear_model.LogisticRegression",
        "params": {"C": 3.0},
    }
    rebuilt = build_grid(pipe, encoded, allow)
    assert canon(list(ParameterGrid(rebuilt))) == canon(list(ParameterGrid(grid)))


@pytest.mark.parametrize(
    "grid, path, message",
    [
        ([{"C": [1]}, "C"], "param_grid[1]", "a dict of lists"),
        ({"C": []}, "param_grid.C", "non-empty list"),
        ({"C": 1.0}, "param_grid.C", "non-empty list"),
        ({"C": "abc"}, "param_grid.C", "non-empty list"),
        ({"C": np.ones((2, 2))}, "param_grid.C", "non-empty list"),
        ({1: [1]}, "param_grid.1", "a parameter name is a string"),
        ({"clf": [NotAllowed()]}, "param_grid.clf[0].class", "not on the allowlist"),
    ],
)
def test_bad_grids_are_refused_by_path(allow, grid, path, message):
    with pytest.raises(SpecError) as err:
        to_grid(grid, allow)
    assert err.value.path == path
    assert message in err.value.message


# -- distributions -----------------------------------------------------------------------------

DISTRIBUTIONS = [
    {
        "clf__C": scipy.stats.loguniform(1e-3, 1e3),
        "clf__tol": scipy.stats.uniform(loc=1e-5, scale=np.float64(1e-3)),
        "pca__n_components": scipy.stats.randint(1, 5),
        "clf__class_weight": [None, "balanced"],
        "pca__whiten": [True, False],
    },
    [
        {"clf__C": scipy.stats.expon(scale=2.0), "pca": ["passthrough", PCA(n_components=2)]},
        {
            "clf__C": scipy.stats.lognorm(0.5),
            "clf__intercept_scaling": scipy.stats.norm(1.0, 0.1),
            "pca__n_components": scipy.stats.poisson(2, loc=1),
        },
        {"clf__C": scipy.stats.gamma(2.0), "clf__tol": scipy.stats.halfnorm()},
        {"clf__max_iter": scipy.stats.geom(0.01), "clf__C": scipy.stats.truncnorm(-1, 1)},
        {"clf__C": scipy.stats.beta(2, 3), "clf__max_iter": scipy.stats.binom(10, 0.5, loc=50)},
        {"clf__fit_intercept": scipy.stats.bernoulli(0.3)},
        {"clf__C": scipy.stats.reciprocal(1e-2, 1e2), "clf__tol": scipy.stats.triang(0.3)},
    ],
    {"pca__n_components": [1, 2, 3, 4], "clf__C": [0.1, 1.0, 10.0]},  # all lists
]


@pytest.mark.parametrize("dists", DISTRIBUTIONS, ids=["dict", "list", "lists-only"])
def test_rebuilt_distributions_draw_the_same_candidates(allow, dists):
    pipe = Pipeline([("pca", PCA()), ("clf", LogisticRegression())])
    encoded = json.loads(json.dumps(to_distributions(dists, allow), allow_nan=False))
    rebuilt = build_distributions(pipe, encoded, allow)
    for seed in (0, 1, 12345):
        ours = list(ParameterSampler(rebuilt, n_iter=12, random_state=seed))
        theirs = list(ParameterSampler(dists, n_iter=12, random_state=seed))
        assert canon(ours) == canon(theirs)


def test_distribution_json_format(allow):
    encoded = to_distributions(
        {"C": scipy.stats.loguniform(1e-3, 1e3), "k": scipy.stats.uniform(loc=0, scale=2)}, allow
    )
    assert encoded == {
        "C": {"distribution": "loguniform", "args": [0.001, 1000.0], "kwds": {}},
        "k": {"distribution": "uniform", "args": [], "kwds": {"loc": 0, "scale": 2}},
    }


class Fake:
    def rvs(self, random_state=None):
        return 1.0


@pytest.mark.parametrize(
    "dists, path, message",
    [
        ({"C": scipy.stats.cauchy()}, "param_distributions.C.distribution", "only frozen"),
        ({"C": scipy.stats.norm}, "param_distributions.C.distribution", "only frozen"),
        ({"C": Fake()}, "param_distributions.C.distribution", "only frozen"),
        ({"C": scipy.stats.norm(0, math.inf)}, "param_distributions.C.args[1]", "non-finite"),
        ({"C": []}, "param_distributions.C", "non-empty list"),
        ([{"C": [1]}, "C"], "param_distributions[1]", "a dict"),
    ],
)
def test_bad_distributions_are_refused_by_path(allow, dists, path, message):
    with pytest.raises(SpecError) as err:
        to_distributions(dists, allow)
    assert err.value.path == path
    assert message in err.value.message


@pytest.mark.parametrize(
    "dists, path, message",
    [
        ({"clf__C": {"distribution": "cauchy"}}, "param_distributions.clf__C.distribution", "not"),
        (
            {"clf__C": {"distribution": "rv_continuous"}},
            "param_distributions.clf__C.distribution",
            "not on the allowlist",
        ),
        (
            {"clf__C": {"distribution": "norm", "args": ["0"]}},
            "param_distributions.clf__C.args[0]",
            "is a number",
        ),
        (
            {"clf__C": {"distribution": "norm", "args": [True]}},
            "param_distributions.clf__C.args[0]",
            "is a number",
        ),
        (
            {"clf__C": {"distribution": "norm", "kwds": {"scale": 1e400}}},
            "param_distributions.clf__C.kwds.scale",
            "non-finite",
        ),
        (
            {"clf__C": {"distribution": "norm", "kwds": {"__class__": 1}}},
            "param_distributions.clf__C.kwds",
            "not an argument name",
        ),
        (
            {"clf__C": {"distribution": "norm", "kwds": {"shape": 1}}},
            "param_distributions.clf__C",
            "failed",
        ),
        (
            {"clf__C": {"distribution": "uniform", "args": [0, -1]}},
            "param_distributions.clf__C",
            "invalid arguments",
        ),
        (
            {"clf__C": {"distribution": "norm", "code": "x"}},
            "param_distributions.clf__C",
            "unknown keys",
        ),
        ({"clf__nope": {"distribution": "norm"}}, "param_distributions.clf__nope", "no parameter"),
        ({"clf__C": [1.0], "pca__nope": [1]}, "param_distributions.pca__nope", "no parameter"),
        ({"clf__C": 1.0}, "param_distributions.clf__C", "non-empty list"),
        ("C", "param_distributions", "an object"),
    ],
)
def test_bad_distribution_specs_are_refused_by_path(allow, dists, path, message):
    pipe = Pipeline([("pca", PCA()), ("clf", LogisticRegression())])
    with pytest.raises(SpecError) as err:
        build_distributions(pipe, json.loads(json.dumps(dists)), allow)
    assert err.value.path == path
    assert message in err.value.message


def test_the_service_module_reexports_the_one_implementation():
    from memogrid_service.specs import build

    assert build.build_estimator is build_estimator
    assert build.Allowlist is Allowlist and build.SpecError is SpecError
    assert build.build_distributions is build_distributions


def test_the_client_modules_import_nothing_heavy():
    code = (
        "import sys, memogrid.spec, memogrid.wire\n"
        "bad = [m for m in ('memogrid_service', 'fastapi', 'dask', 'sqlalchemy', 'scipy',"
        " 'sklearn') if m in sys.modules]\n"
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_grid_keys_are_checked_against_the_steps_the_grid_swaps_in(allow):
    pipe = Pipeline([("pca", PCA()), ("clf", LogisticRegression())])
    grid = {
        "clf": [KNeighborsClassifier(), KNeighborsClassifier(n_neighbors=3)],
        "clf__weights": ["uniform", "distance"],
    }
    rebuilt = build_grid(pipe, to_grid(grid, allow), allow)
    assert canon(list(ParameterGrid(rebuilt))) == canon(list(ParameterGrid(grid)))
    # ... and a candidate scikit-learn could not even set up is refused up front
    bad = {"clf": [KNeighborsClassifier(), SVC()], "clf__weights": ["uniform"]}
    with pytest.raises(SpecError) as err:
        build_grid(pipe, to_grid(bad, allow), allow)
    assert err.value.path == "param_grid.clf__weights"
    assert "with clf=SVC()" in err.value.message
    gone = {"pca": ["passthrough", PCA()], "pca__n_components": [2]}
    with pytest.raises(SpecError) as err:
        build_distributions(pipe, to_distributions(gone, allow), allow)
    assert err.value.path == "param_distributions.pca__n_components"


def test_tuple_parameters_survive_json():
    """Tuples come back the tuples scikit-learn validates (ngram_range, feature_range)."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import MinMaxScaler

    from memogrid.spec import Allowlist, build_estimator, build_grid, to_grid, to_spec

    allow = Allowlist.default()
    pipe = Pipeline([("vect", CountVectorizer(ngram_range=(1, 2))), ("mm", MinMaxScaler())])
    rebuilt = build_estimator(json.loads(json.dumps(to_spec(pipe))), allow)
    assert rebuilt.named_steps["vect"].ngram_range == (1, 2)
    grid = {"vect__ngram_range": [(1, 1), (1, 3)], "mm__feature_range": [(0, 2)]}
    built = build_grid(rebuilt, json.loads(json.dumps(to_grid(grid))), allow)
    assert built == grid
    rebuilt.set_params(**{k: v[0] for k, v in built.items()})
    rebuilt.named_steps["vect"].fit(["alpha beta gamma", "beta gamma delta"])


def test_tuples_and_lists_keep_their_type(allow):
    """A tuple comes back a tuple and a list a list: scikit-learn judges the value given."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.utils._param_validation import InvalidParameterError

    for sizes in ([50], (50,), [20, 10]):
        built = build_estimator(json.loads(json.dumps(to_spec(MLPClassifier(sizes)))), allow)
        assert type(built.hidden_layer_sizes) is type(sizes) and built.hidden_layer_sizes == sizes
    pipe = Pipeline([("mlp", MLPClassifier())])
    grid = {"mlp__hidden_layer_sizes": [[50], (50,), (20, 10)]}
    built_grid = build_grid(pipe, json.loads(json.dumps(to_grid(grid, allow))), allow)
    assert [type(v) for v in built_grid["mlp__hidden_layer_sizes"]] == [list, tuple, tuple]
    # scikit-learn refuses a tuple class_weight (a list of dicts is the multi-output form);
    # so does the builder, rather than quietly turning it into a list it would take
    tree = DecisionTreeClassifier(class_weight=(None, None))
    with pytest.raises(InvalidParameterError):
        tree.fit([[0.0], [1.0]], [0, 1])
    with pytest.raises(SpecError, match="parameter of") as err:
        build_estimator(json.loads(json.dumps(to_spec(tree))), allow)
    assert err.value.path == "params.class_weight"
    # a list where only a tuple will do is refused as scikit-learn refuses it, written
    # by hand or from the user's own list; the message says how a tuple is written
    hand = {"class": "sklearn.feature_extraction.text.CountVectorizer"}
    vect = build_estimator({**hand, "params": {"ngram_range": {"tuple": [1, 2]}}}, allow)
    assert vect.ngram_range == (1, 2) and isinstance(vect, CountVectorizer)
    with pytest.raises(SpecError, match=r"instance of 'tuple'.*\{\"tuple\": \[\.\.\.\]\}") as err:
        build_estimator(json.loads(json.dumps(to_spec(CountVectorizer(ngram_range=[1, 2])))), allow)
    assert err.value.path == "params.ngram_range"
    # in a grid, as in scikit-learn's search, such a value fails its own fits
    grid = json.loads(json.dumps(to_grid({"ngram_range": [(1, 1), [1, 2]]}, allow)))
    assert build_grid(CountVectorizer(), grid, allow)["ngram_range"] == [(1, 1), [1, 2]]
    with pytest.raises(SpecError, match=r"\{\"tuple\": \.\.\.\} holds a list") as err:
        build_estimator({**hand, "params": {"ngram_range": {"tuple": 1}}}, allow)
    assert err.value.path == "params.ngram_range"


def test_pd_na_is_a_named_constant(allow):
    import pandas as pd
    from sklearn.impute import SimpleImputer

    from memogrid_service.engine import keys

    spec = to_spec(SimpleImputer(missing_values=pd.NA), allow)
    assert spec["params"] == {"missing_values": {"constant": "pandas.NA"}}
    assert build_estimator(json.loads(json.dumps(spec)), allow).missing_values is pd.NA
    grid = to_grid({"missing_values": [pd.NA, np.nan]}, allow)
    built = build_grid(SimpleImputer(), json.loads(json.dumps(grid)), allow)
    assert built["missing_values"][0] is pd.NA and math.isnan(built["missing_values"][1])
    assert keys.canonical(pd.NA) != keys.canonical(np.nan)
    # where only named values go (input="content"), pd.NA is refused like any other
    vect = {"class": "sklearn.feature_extraction.text.CountVectorizer"}
    na = {"constant": "pandas.NA"}
    with pytest.raises(SpecError, match="file system") as err:
        build_estimator({**vect, "params": {"input": na}}, allow)
    assert err.value.path == "params.input"
    with pytest.raises(SpecError, match="file system") as err:
        build_grid(Pipeline([("v", build_estimator(vect, allow))]), {"v__input": [na]}, allow)
    assert err.value.path == "param_grid.v__input[0]"
    for name in ("os.system", "pandas.NaT", 1):
        bad = {"class": spec["class"], "params": {"missing_values": {"constant": name}}}
        with pytest.raises(SpecError, match="is not one a spec can name") as err:
            build_estimator(bad, allow)
        assert err.value.path == "params.missing_values"


def test_nan_infinity_types_and_dicts_round_trip(allow):
    import json

    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder

    cases = [
        OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=np.nan),
        OneHotEncoder(dtype=np.float32, sparse_output=False),
        OneHotEncoder(dtype=float),
        LogisticRegression(class_weight={0: 1.0, 1: 5}),
        LogisticRegression(class_weight={"spam": 2.0, "ham": 1.0}, C=float("inf")),
    ]
    for est in cases:
        spec = json.loads(json.dumps(to_spec(est, allow), allow_nan=False))  # strict JSON
        built = build_estimator(spec, allow)
        for key, value in est.get_params(deep=False).items():
            got = built.get_params(deep=False)[key]
            assert repr(got) == repr(value) and type(got) is type(value), key


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"float": "NaN"}, '"nan", "inf" or "-inf"'),
        ({"type": "os.system"}, "not one a spec can name"),
        ({"type": "numpy.ndarray"}, "not one a spec can name"),
        ({"dict": [[1, 2, 3]]}, "[key, value] pairs"),
        ({"dict": [[[1], 2]]}, "a dict key is"),
        ({"dict": [[1, 2], [1, 3]]}, "repeats the key"),
        ({"float": "nan", "x": 1}, "an object must be"),
        ({"set": 1}, "holds a list of values"),
        ({"set": [[1]]}, "a set holds numbers, strings or bools"),
        ({"frozenset": [{"dict": []}]}, "a frozenset holds numbers"),
        ({"RandomState": {"key": [0] * 624}}, "holds exactly"),
        (
            {"RandomState": {"key": [0] * 623, "pos": 0, "has_gauss": 0, "cached_gaussian": 0.0}},
            "624 integers",
        ),
        (
            {
                "RandomState": {
                    "key": [2**32] + [0] * 623,
                    "pos": 0,
                    "has_gauss": 0,
                    "cached_gaussian": 0.0,
                }
            },
            "624 integers",
        ),
        (
            {"RandomState": {"key": [0] * 624, "pos": 625, "has_gauss": 0, "cached_gaussian": 0.0}},
            "pos is",
        ),
        (
            {
                "RandomState": {
                    "key": [0] * 624,
                    "pos": 0,
                    "has_gauss": True,
                    "cached_gaussian": 0.0,
                }
            },
            "has_gauss",
        ),
        (
            {"RandomState": {"key": [0] * 624, "pos": 0, "has_gauss": 0, "cached_gaussian": "x"}},
            "cached_gaussian",
        ),
        (
            {
                "RandomState": {
                    "key": [0] * 624,
                    "pos": 0,
                    "has_gauss": 1,
                    "cached_gaussian": 10**400,
                }
            },
            "cached_gaussian is a finite number",
        ),
    ],
)
def test_bad_tagged_values_are_refused(allow, value, message):
    from memogrid.spec import build_value

    with pytest.raises(SpecError) as err:
        build_value(value, allow, "params.x")
    assert message in err.value.message


def test_sets_and_random_states_round_trip(allow):
    """Sets keep their type and items (written in one order whatever their
    iteration order); a RandomState its exact state, the caller's untouched."""
    from memogrid.spec import build_value, to_spec

    for value in ({3, 1, 2}, frozenset({"b", "a"}), set(), {1.5, np.int64(2)}):
        spec = json.loads(json.dumps(to_spec(value)))
        built = build_value(spec, allow, "x")
        assert type(built) is type(value) and built == value
    assert to_spec({2, 1}) == to_spec({1, 2}) == {"set": [1, 2]}
    with pytest.raises(SpecError, match="holds numbers, strings or bools"):
        to_spec({(1, 2)})
    rng = np.random.RandomState(5)
    rng.normal()  # a cached gaussian
    spec = json.loads(json.dumps(to_spec(rng)))
    assert spec["RandomState"]["has_gauss"] == 1
    built = build_value(spec, allow, "x")
    # the same draws from here on (the cached gaussian included)
    assert built is not rng and built.normal() == rng.normal()
    assert built.randint(1 << 30, size=5).tolist() == rng.randint(1 << 30, size=5).tolist()


def test_estimator_valued_params_that_take_strings_keep_them(allow):
    """Only a key naming a pipeline step (or another named entry) is held to
    steps; GradientBoosting's init takes "zero" as well as an estimator."""
    from sklearn.dummy import DummyClassifier
    from sklearn.ensemble import GradientBoostingClassifier

    base = GradientBoostingClassifier(init=DummyClassifier())
    grid = to_grid({"init": ["zero", DummyClassifier()]}, allow)
    assert build_grid(base, json.loads(json.dumps(grid)), allow)["init"][0] == "zero"
    pipe = Pipeline([("gb", base)])
    assert build_grid(pipe, {"gb__init": ["zero"]}, allow) == {"gb__init": ["zero"]}
    # a step set to a non-step fails its fits, as in scikit-learn (the
    # engine searches such a pipeline whole: tests/engine/test_parity_edges.py)
    assert build_grid(pipe, {"gb": ["zero"]}, allow) == {"gb": ["zero"]}
    built = build_distributions(
        pipe, {"gb": [1, {"class": "sklearn.dummy.DummyClassifier"}]}, allow
    )
    assert built["gb"][0] == 1


def test_an_estimator_whose_clones_keep_a_fitted_model_is_refused(allow):
    """FrozenEstimator's clone is itself, fitted model and all; a spec holds
    parameters only, so the service would search an unfitted copy."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.frozen import FrozenEstimator

    fitted = LogisticRegression().fit([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1])
    with pytest.raises(SpecError, match="FrozenEstimator keeps its state through clone") as err:
        to_spec(CalibratedClassifierCV(FrozenEstimator(fitted)))
    assert err.value.path == "params.estimator.class"
    # a spec naming it is refused as it is built, as the client refuses to
    # send one (the service accepted it, and the job failed naming an
    # internal error)
    frozen = {
        "class": "sklearn.calibration.CalibratedClassifierCV",
        "params": {
            "estimator": {
                "class": "sklearn.frozen.FrozenEstimator",
                "params": {"estimator": {"class": "sklearn.linear_model.LogisticRegression"}},
            }
        },
    }
    with pytest.raises(SpecError, match="FrozenEstimator keeps its state through clone") as err:
        build_estimator(frozen, allow)
    assert err.value.path == "params.estimator.class"
