"""Keys are content: stable across processes, sensitive to every input."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.decomposition import PCA
from sklearn.feature_selection import SelectKBest, f_classif, f_regression
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from memogrid_service.engine import keys
from memogrid_service.engine.plan import Fold, build_plan
from memogrid_service.store.datasets import dataset_id

KEY_SCRIPT = r"""
import json, sys
import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from memogrid_service.engine.plan import Fold, build_plan
from memogrid_service.engine import keys
from memogrid_service.store.datasets import dataset_id

X = np.arange(60, dtype=float).reshape(20, 3)
y = np.arange(20) % 2
train, test = np.arange(15), np.arange(15, 20)
fk = keys.fold_key(dataset_id(X), dataset_id(y), None, train, test)
pipe = Pipeline([("pca", PCA(n_components=2, whiten=True)),
                 ("lr", LogisticRegression(C=0.5, random_state=0))])
plan = build_plan(pipe, [{}], [Fold(fk, train, test)], scorers_token=["scoring", None],
                  return_train_score=False)
print(json.dumps({"fold": fk, "steps": list(plan.steps), "scores": list(plan.scores)}))
"""


def _keys_here():
    X = np.arange(60, dtype=float).reshape(20, 3)
    y = np.arange(20) % 2
    train, test = np.arange(15), np.arange(15, 20)
    fk = keys.fold_key(dataset_id(X), dataset_id(y), None, train, test)
    pipe = Pipeline(
        [
            ("pca", PCA(n_components=2, whiten=True)),
            ("lr", LogisticRegression(C=0.5, random_state=0)),
        ]
    )
    plan = build_plan(
        pipe,
        [{}],
        [Fold(fk, train, test)],
        scorers_token=["scoring", None],
        return_train_score=False,
    )
    return {"fold": fk, "steps": list(plan.steps), "scores": list(plan.scores)}


def test_equal_specs_give_equal_keys_in_separate_processes():
    runs = [
        json.loads(
            subprocess.run(
                [sys.executable, "-c", KEY_SCRIPT],
                check=True,
                capture_output=True,
                text=True,
                env={"PYTHONHASHSEED": str(seed), "PATH": ""},
            ).stdout
        )
        for seed in (1, 2)
    ]
    assert runs[0] == runs[1] == _keys_here()


def _chain(scaler, pca, lr, data=(b"\x00" * 8), train=(0, 1, 2), test=(3, 4), blas=1):
    """Keys (fold, scaler step, pca step, score) of a three-link chain."""
    fk = keys.fold_key(keys.digest(data.hex()), "y", None, np.array(train), np.array(test), blas)
    s1 = keys.step_key(keys.estimator_token(scaler), fk)
    s2 = keys.step_key(keys.estimator_token(pca), s1)
    sc = keys.score_key(keys.estimator_token(lr), s2, ["scoring", None], False)
    return [fk, s1, s2, sc]


params = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.booleans(),
    st.none(),
)


@settings(max_examples=60, deadline=None)
@given(a=params, b=params)
def test_param_change_changes_downstream_only(a, b):
    def key_of(v):
        return json.dumps(keys.canonical(v))

    if key_of(a) == key_of(b):
        return
    base = _chain(StandardScaler(), PCA(tol=0.0), LogisticRegression())
    base2 = _chain(StandardScaler(), PCA(tol=0.0), LogisticRegression())
    assert base == base2
    # a different value in the middle step's params changes it and the score
    one = _chain(StandardScaler(), PCA(tol=a), LogisticRegression())
    two = _chain(StandardScaler(), PCA(tol=b), LogisticRegression())
    assert one[:2] == two[:2]
    assert one[2] != two[2] and one[3] != two[3]


@settings(max_examples=40, deadline=None)
@given(
    data=st.binary(min_size=1, max_size=64),
    pos=st.integers(0, 63),
    bit=st.integers(0, 7),
)
def test_any_data_byte_changes_every_key(data, pos, bit):
    pos = pos % len(data)
    flipped = bytearray(data)
    flipped[pos] ^= 1 << bit
    a = _chain(StandardScaler(), PCA(), LogisticRegression(), data=data)
    b = _chain(StandardScaler(), PCA(), LogisticRegression(), data=bytes(flipped))
    assert all(x != y for x, y in zip(a, b, strict=True))


def test_dataset_id_sees_every_byte_dtype_and_shape():
    X = np.arange(12, dtype=np.float64).reshape(3, 4)
    ids = {dataset_id(X)}
    Y = X.copy()
    Y.reshape(-1).view(np.uint8)[37] ^= 1
    ids.add(dataset_id(Y))
    ids.add(dataset_id(X.reshape(4, 3)))
    ids.add(dataset_id(X.astype(np.float32)))
    ids.add(dataset_id(X.T))  # same bytes order differs once made contiguous
    assert len(ids) == 5
    assert dataset_id(X) == dataset_id(np.asfortranarray(X))


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(4, 30),
    moved=st.integers(0, 1000),
)
def test_any_fold_row_changes_every_key(n, moved):
    train = list(range(n - 2))
    test = [n - 2, n - 1]
    a = _chain(StandardScaler(), PCA(), LogisticRegression(), train=train, test=test)
    i = moved % len(train)
    train2 = train.copy()
    train2[i] = n + 5  # a different row
    b = _chain(StandardScaler(), PCA(), LogisticRegression(), train=train2, test=test)
    c = _chain(StandardScaler(), PCA(), LogisticRegression(), train=train, test=[n - 2])
    assert all(x != y for x, y in zip(a, b, strict=True))
    assert all(x != y for x, y in zip(a, c, strict=True))


def test_blas_thread_limit_changes_every_key():
    """Fits under another BLAS thread count may differ in their last bits."""
    from memogrid_service.engine.tasks import ALL_CORES

    a = _chain(StandardScaler(), PCA(), LogisticRegression())
    for blas in (ALL_CORES, 2, None):
        b = _chain(StandardScaler(), PCA(), LogisticRegression(), blas=blas)
        assert all(x != z for x, z in zip(a, b, strict=True))


def test_upstream_step_change_changes_downstream_not_upstream():
    a = _chain(StandardScaler(), PCA(n_components=2), LogisticRegression())
    b = _chain(StandardScaler(with_mean=False), PCA(n_components=2), LogisticRegression())
    assert a[0] == b[0]
    assert a[1] != b[1] and a[2] != b[2] and a[3] != b[3]
    c = _chain(StandardScaler(), PCA(n_components=2), LogisticRegression(C=2.0))
    assert a[:3] == c[:3] and a[3] != c[3]


def test_step_key_sees_library_versions_and_fit_params(monkeypatch):
    tok = keys.estimator_token(PCA())
    k = keys.step_key(tok, "fold-x")
    assert keys.step_key(tok, "fold-x", [["sample_weight", ["data", "abc"]]]) != k
    monkeypatch.setattr(keys, "LIBRARY_VERSIONS", (("scikit-learn", "0.0"),))
    assert keys.step_key(tok, "fold-x") != k


def test_canonical_values():
    c = keys.canonical
    assert c(1) != c(1.0) != c(True)
    assert c(0.1) != c(0.1 + 1e-17 * 0 + 2**-56)
    assert c(float("nan")) == c(float("nan"))
    assert c([1, 2]) != c((1, 2))
    assert c({"b": 1, "a": 2}) == c({"a": 2, "b": 1})
    assert c(np.float32(1.5)) != c(np.float64(1.5))
    assert c(np.array([1, 2])) != c(np.array([1, 2], dtype=np.int32))
    # an array's kind and mask are content too: a matrix multiplies otherwise
    masked = np.ma.masked_array([1.0, 2.0], mask=[False, True])
    assert c(masked) != c(np.ma.masked_array([1.0, 2.0], mask=[True, False]))
    assert c(masked) != c(np.array([1.0, 2.0]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        assert c(np.asmatrix(np.eye(2))) != c(np.eye(2))
    assert c(np.eye(2)) == ["ndarray", *keys.array_token(np.eye(2))]  # keys it always had
    assert c(f_classif) != c(f_regression)
    assert c(SelectKBest(f_classif)) != c(SelectKBest(f_regression))
    assert c(np.log) != c(np.exp)
    assert c(np.random.RandomState(0)) == c(np.random.RandomState(0))
    assert c(np.random.RandomState(0)) != c(np.random.RandomState(1))
    assert c(FunctionTransformer(np.log1p)) != c(FunctionTransformer(np.expm1))
    # a partial by what it calls and binds, as scikit-learn accepts it
    p = functools.partial
    assert c(p(np.clip, a_min=-1, a_max=1)) == c(p(np.clip, a_min=-1, a_max=1))
    assert c(p(np.clip, a_min=-1, a_max=1)) != c(p(np.clip, a_min=-1, a_max=2))
    assert c(p(np.clip, a_min=-1, a_max=1)) != c(p(np.clip, a_min=-1, a_max=1.0))
    assert c(p(np.add, 1)) != c(p(np.add, 2)) != c(p(np.subtract, 2))
    assert c(p(np.add, 1)) != c(np.add)
    tagged = p(np.add, 1)
    tagged.note = "x"  # what a partial holds besides
    assert c(tagged) != c(p(np.add, 1))

    class Negated(functools.partial):  # a subclass may call otherwise
        def __call__(self, *args, **kwargs):
            return -super().__call__(*args, **kwargs)

    Negated.__module__, Negated.__qualname__ = __name__, "_Negated"
    globals()["_Negated"] = Negated
    try:
        assert c(Negated(np.add, 1)) != c(p(np.add, 1))
    finally:
        del globals()["_Negated"]
    # an estimator bound in one would enter by its parameters, not its fit
    with pytest.raises(keys.UnkeyableValue, match="binds an estimator"):
        c(p(PCA.transform, PCA(2).fit(np.eye(3))))


def _local_function(x):
    return x


@pytest.mark.parametrize(
    "bad",
    [
        lambda x: x,
        object(),
        functools.partial(np.add, lambda x: x),  # binds a value with no key
        StandardScaler().fit,
    ],
    ids=["lambda", "object", "partial-of-a-lambda", "bound-method"],
)
def test_values_without_content_key_are_refused(bad):
    def local_function(x):
        return x

    with pytest.raises(keys.UnkeyableValue):
        keys.canonical(bad)
    with pytest.raises(keys.UnkeyableValue):
        keys.canonical(local_function)


def test_plan_fits_each_prefix_once():
    pipe = Pipeline([("pca", PCA()), ("lr", LogisticRegression())])
    from sklearn.model_selection import ParameterGrid

    grid = {
        "pca__n_components": [1, 2, 3],
        "lr__C": [0.1, 1, 10],
        "lr__l1_ratio": [0, 1],
    }
    candidates = list(ParameterGrid(grid))
    folds = [
        Fold(
            keys.fold_key("x", "y", None, np.arange(i, 10 + i), np.arange(20, 22)),
            None,
            None,
        )
        for i in range(5)
    ]
    plan = build_plan(pipe, candidates, folds, scorers_token=None, return_train_score=False)
    assert len(plan.steps) == 15
    assert len(plan.scores) == 90
    assert len(plan.grid) == 18 and all(len(r) == 5 for r in plan.grid)


def test_fast_and_configured_tokens_agree():
    """A link keyed from base params + overrides equals the configured object's key."""
    from sklearn.base import clone

    from memogrid_service.engine.plan import ChainResolver

    pipe = Pipeline([("scale", StandardScaler()), ("lr", LogisticRegression())])
    params = {"lr__C": 0.25, "scale__with_mean": False}
    links = ChainResolver().resolve(pipe, params)
    configured = clone(pipe).set_params(**params)
    assert [link.token for link in links] == [
        keys.token_id(keys.estimator_token(step)) for _, step in configured.steps
    ]
    built = [link.build() for link in links]
    assert [keys.token_id(keys.estimator_token(b)) for b in built] == [link.token for link in links]

    # overrides of every kind of value the fast path encodes by fragments
    lr = LogisticRegression()
    for override in (
        {"C": np.float64(1e-3)},
        {"C": 2, "tol": 1e-9, "class_weight": {1: 2.0, 0: 1.0}},
        {"penalty": None, "solver": "saga", "l1_ratio": np.float32(0.5)},
        {"class_weight": "balanced", "max_iter": np.int64(7), "warm_start": True},
        {},
    ):
        [link] = ChainResolver().resolve(lr, override)
        assert link.token == keys.token_id(keys.estimator_token(clone(lr).set_params(**override)))


def test_resolver_follows_set_params_order():
    """Swapped steps are replaced first, then their nested params applied."""
    from memogrid_service.engine.plan import ChainResolver

    pipe = Pipeline([("reduce", PCA()), ("clf", LogisticRegression())])
    links = ChainResolver().resolve(
        pipe, {"reduce": "passthrough", "clf": SelectKBest(), "clf__k": 3}
    )
    assert len(links) == 1
    assert links[0].build().get_params()["k"] == 3
    with pytest.raises(ValueError, match="Invalid parameter 'nope'"):
        ChainResolver().resolve(pipe, {"clf__nope": 1})


# the factor lives only in a module-level constant that a helper reads: an
# edit reaches the keys through what the code calls and reads
USER_CODE = """
from sklearn.base import BaseEstimator, TransformerMixin

FACTOR = {factor}
UNUSED = [1, 2]

def _scale(X):
    return X * FACTOR

def featurize(X):
    return _scale(X)

class Featurize(TransformerMixin, BaseEstimator):
    def __init__(self, k=1):
        self.k = k

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        flags = {{"a", "b", "c"}}  # a frozenset constant: its repr order varies
        return _scale(X[:, : self.k]) if "a" in flags else X
"""


def _user_module(factor, name="user_notebook"):
    """A module of user code (no distribution), as a notebook cell defines it."""
    import types

    mod = types.ModuleType(name)
    exec(compile(USER_CODE.format(factor=factor), f"<{name}>", "exec"), mod.__dict__)
    return mod


def test_user_code_is_part_of_its_key():
    one, same, edited = _user_module(2), _user_module(2), _user_module(3)
    # functions and classes of no distribution: their code is content
    assert keys.canonical(one.featurize) == keys.canonical(same.featurize)
    assert keys.canonical(one.featurize) != keys.canonical(edited.featurize)
    tok = keys.estimator_token
    assert tok(one.Featurize(k=2)) == tok(same.Featurize(k=2))
    assert tok(one.Featurize(k=2)) != tok(edited.Featurize(k=2))
    assert keys.canonical(FunctionTransformer(one.featurize)) != keys.canonical(
        FunctionTransformer(edited.featurize)
    )
    # the versioned libraries are keyed by name (and LIBRARY_VERSIONS) alone
    assert keys.named(LogisticRegression) == keys.qualified_name(LogisticRegression)
    assert keys.canonical(f_classif) == [
        "func",
        "sklearn.feature_selection._univariate_selection.f_classif",
    ]


def test_user_code_keys_agree_between_processes(tmp_path):
    (tmp_path / "user_mod.py").write_text(USER_CODE.format(factor=2))
    script = (
        "import json; from memogrid_service.engine import keys; import user_mod; "
        "print(json.dumps([keys.canonical(user_mod.featurize), "
        "keys.estimator_token(user_mod.Featurize(k=3))]))"
    )
    runs = [
        subprocess.run(
            [sys.executable, "-c", script],
            check=True,
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env={"PYTHONHASHSEED": str(seed), "PATH": "", "PYTHONPATH": str(tmp_path)},
        ).stdout
        for seed in (1, 2)
    ]
    assert runs[0] == runs[1]
    assert '"code"' in runs[0]


def test_default_arguments_class_constants_and_in_place_edits_are_code():
    edited_default = _user_module(2)
    exec("def featurize(X, p=3):\n    return X * 2\n", edited_default.__dict__)
    base = _user_module(2)
    exec("def featurize(X, p=2):\n    return X * 2\n", base.__dict__)
    assert keys.canonical(base.featurize) != keys.canonical(edited_default.featurize)
    # a class-level constant
    one, other = _user_module(2), _user_module(2)
    one.Featurize.LIMIT, other.Featurize.LIMIT = 1, 5
    assert keys.estimator_token(one.Featurize()) != keys.estimator_token(other.Featurize())
    # code replaced in place (as IPython's autoreload does) is seen at once
    before = keys.canonical(base.featurize)
    base.featurize.__code__ = _user_module(7).featurize.__code__
    assert keys.canonical(base.featurize) != before


def test_code_keys_follow_helpers_constants_closures_and_user_modules():
    import types

    tok = keys.estimator_token
    base = _user_module(2)
    before = (keys.canonical(base.featurize), tok(base.Featurize()))

    # a value the code never reads changes nothing
    base.UNUSED = [3]
    assert (keys.canonical(base.featurize), tok(base.Featurize())) == before
    # the helper's code edited (not its constant): every caller's key moves
    exec("def _scale(X):\n    return X + FACTOR\n", base.__dict__)
    after = (keys.canonical(base.featurize), tok(base.Featurize()))
    assert after[0] != before[0] and after[1] != before[1]

    # a decorator's arguments (in its wrapper's closure) and super() calls
    decorated = """
import functools
from sklearn.preprocessing import StandardScaler

def scaled(factor):
    def deco(f):
        @functools.wraps(f)
        def run(X):
            return f(X) * factor
        return run
    return deco

@scaled({factor})
def featurize(X):
    return X

class Scaler(StandardScaler):
    def fit(self, X, y=None):
        return super().fit(X * {factor}, y)
"""
    made = []
    for factor in (2, 2, 3):
        mod = types.ModuleType("notebook_decorated")
        exec(decorated.format(factor=factor), mod.__dict__)
        made.append((keys.canonical(mod.featurize), tok(mod.Scaler())))
    assert made[0] == made[1]
    assert made[0][0] != made[2][0] and made[0][1] != made[2][1]

    # a helper module of no distribution, reached through an attribute
    helpers = types.ModuleType("notebook_helpers")
    exec("def scale(X):\n    return X * 2\n", helpers.__dict__)
    cell = _user_module(2)
    cell.hp = helpers
    exec("def featurize(X):\n    return hp.scale(X)\n", cell.__dict__)
    was = keys.canonical(cell.featurize)
    exec("def scale(X):\n    return X * 3\n", helpers.__dict__)
    assert keys.canonical(cell.featurize) != was

    # recursion and mutual recursion end; library code is keyed by name only
    exec(
        "import numpy as np\n"
        "def even(n):\n    return True if n == 0 else odd(n - 1)\n"
        "def odd(n):\n    return False if n == 0 else even(np.abs(n) - 1)\n",
        cell.__dict__,
    )
    assert keys.canonical(cell.even) == keys.canonical(cell.even)
    assert keys.canonical(cell.even) != keys.canonical(cell.odd)


def test_code_scope_digests_once_and_sees_edits_afterwards():
    cell = _user_module(2)
    outside = keys.canonical(cell.featurize)
    with keys.code_scope():
        first = keys.canonical(cell.featurize)
        cell.FACTOR = 9  # edited while one search is being planned
        assert keys.canonical(cell.featurize) == first == outside
    assert keys.canonical(cell.featurize) != outside  # the next search sees it


def _cell(source: str, name: str = "notebook_refs"):
    import types

    mod = types.ModuleType(name)
    exec(source, mod.__dict__)
    return mod


def test_cycles_through_enums_and_dispatch_tables_end_and_do_not_depend_on_the_stack():
    enum_cell = (
        "import enum\n"
        "class Mode(enum.Enum):\n    A = 1\n    B = 2\n"
        "MODE = Mode.A\n"
        "def featurize(X):\n    return X if MODE is Mode.A else -X\n"
    )
    assert keys.canonical(_cell(enum_cell).featurize) == keys.canonical(_cell(enum_cell).featurize)
    table = (
        "def a(x):\n    return DISPATCH['b'](x)\n"
        "def b(x):\n    return DISPATCH['a'](x)\n"
        "DISPATCH = {'a': a, 'b': b}\n"
    )
    cell = _cell(table)
    assert keys.canonical(cell.a) != keys.canonical(cell.b)

    def at_depth(n):
        return keys.canonical(cell.a) if n == 0 else at_depth(n - 1)

    assert at_depth(0) == at_depth(60) == at_depth(300)


@pytest.mark.parametrize(
    "source",
    [
        "import functools\ndef _s(X, f):\n    return X * f\nscale = functools.partial(_s, f={f})\n"
        "def g(X):\n    return scale(X)\n",
        "import functools\n@functools.lru_cache\ndef coef():\n    return {f}\n"
        "def g(X):\n    return X * coef()\n",
        "class H:\n    def __init__(self, k):\n        self.k = k\n"
        "    def apply(self, X):\n        return X * self.k\n"
        "scale = H({f}).apply\ndef g(X):\n    return scale(X)\n",
        "import types\nCFG = types.SimpleNamespace(factor={f})\n"
        "def g(X):\n    return X * CFG.factor\n",
        "L = [1] * 20000 + [{f}]\ndef g(X):\n    return X * L[-1]\n",
        "D = {{'f': lambda x: x * {f}}}\ndef g(X):\n    return D['f'](X)\n",
        "import pandas as pd\nS = pd.Series([1, {f}])\ndef g(X):\n    return X * S[1]\n",
        "import numpy as np\nfrom sklearn.preprocessing import StandardScaler\n"
        "SC = StandardScaler().fit(np.arange({f} * 2.0).reshape(-1, 1))\n"
        "def g(X):\n    return SC.transform(X)\n",
    ],
    ids=[
        "partial",
        "lru_cache",
        "bound method",
        "namespace",
        "long list",
        "dict of lambdas",
        "pandas",
        "fitted estimator",
    ],
)
def test_what_user_code_reads_is_keyed_by_what_it_holds(source):
    two, again, three = (_cell(source.format(f=f)) for f in (2, 2, 3))
    assert keys.canonical(two.g) == keys.canonical(again.g)
    assert keys.canonical(two.g) != keys.canonical(three.g)


def test_the_refits_memory_orders_are_in_its_fold_key():
    """A refit sees X and a 2-D y as the caller laid them out (some fits'
    last bits depend on it): each order is part of the fold key, and the
    C-ordered keys stay as they were."""
    rows, none = np.arange(10), np.arange(0)
    base = keys.fold_key("x", "y", None, rows, none)
    assert keys.fold_key("x", "y", None, rows, none, 1, "C", (), "C") == base
    variants = {
        keys.fold_key("x", "y", None, rows, none, 1, "F"),
        keys.fold_key("x", "y", None, rows, none, 1, "C", (), "F"),
        keys.fold_key("x", "y", None, rows, none, 1, "F", (), "F"),
    }
    assert len(variants) == 3 and base not in variants
