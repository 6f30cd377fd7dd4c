"""The key scheme: Merkle keys built from content, never from identity.

Every task of a search is named by a hash of everything that can change
its result, chained through its parent:

- ``fold_key``  = H(X id, y id, groups id, train indices, test indices,
  BLAS thread limit of its fits)
- ``step_key``  = H(step class and canonical params, library versions,
  parent key, routed fit params)
- ``score_key`` = H(final estimator class and canonical params, library
  versions, parent key, scorers and the error_score a failing scorer
  reports, return_train_score, fit and score params)
- ``refit_key`` = H(final estimator, library versions, parent key, fit params)

where the parent of a pipeline's first step is the fold and the parent of
every later step (and of the final estimator) is the step before it.
Changing a parameter, a data byte, a fold row or an upstream step thus
changes every key downstream of it and none upstream.

Values are encoded canonically (:func:`canonical`) into a tagged, ordered
byte form: floats by their exact hex form, arrays by dtype, shape and a
digest of their bytes, estimators by class path and ``get_params(deep=False)``
recursively, functions by their importable name. Classes and functions
from outside the versioned libraries also carry what identifies their code
(:func:`code_token`): their distribution's version if installed, else a
digest of their bytecode, so that editing a notebook's transformer or
function and searching again never replays the old code's results.
Nothing process-specific
(``id()``, memory addresses, pickle bytes of objects) can enter a key; a
value that has no content encoding (a lambda, an open file) raises
:class:`UnkeyableValue`.
"""

from __future__ import annotations

import contextlib
import contextvars
import dis
import enum
import functools
import hashlib
import importlib.metadata
import inspect
import json
import math
import numbers
import sys
import types
import weakref
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from memogrid.spec import constant_name, keeps_state_through_clone

#: Bumped whenever the encoding or the task semantics change, so that old
#: cache entries are never read with new meaning.
# v2: folds carry their BLAS thread limit; v3: frames stored before (v4
# ids) read some object columns back differently (ints with NaN as ints,
# each null as held), so their cached fits are not reused; v4: a score
# keeps other warnings (in scikit-learn's order, a pipeline's scorer errors
# name the Pipeline) and a step keeps a fit whose test rows fail to transform;
# v5: a refit behind a pipeline's steps sees a 2-D y in the caller's layout,
# and fits no longer record joblib's "Inside a Dask worker" note
KEY_SCHEMA = "memogrid-keys-v5"

_HEX = 40


class UnkeyableValue(TypeError):
    """A parameter value has no content-based encoding."""


def _versions() -> tuple[tuple[str, str], ...]:
    out = []
    for dist in ("scikit-learn", "numpy", "scipy", "pandas"):
        try:
            out.append((dist, importlib.metadata.version(dist)))
        except importlib.metadata.PackageNotFoundError:
            out.append((dist, ""))
    return tuple(out)


LIBRARY_VERSIONS: tuple[tuple[str, str], ...] = _versions()


def qualified_name(obj: Any) -> str:
    """``module.QualName`` of a class or function; refuses local objects."""
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    if module is None and isinstance(obj, np.ufunc):
        module = "numpy"
    if not module or not qualname or "<" in qualname:
        raise UnkeyableValue(f"{obj!r} has no importable name to key it by")
    return f"{module}.{qualname}"


#: top-level modules whose code LIBRARY_VERSIONS (or Python itself) identifies
_VERSIONED = frozenset(
    {"sklearn", "numpy", "scipy", "pandas", "builtins", "memogrid", "memogrid_service"}
)
_code_tokens: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
_dists: dict[str, list[str]] | None = None


def code_token(obj: Any) -> Any:
    """What identifies the code of class or function ``obj`` beyond its name.

    None for the versioned libraries and the standard library; an installed
    distribution's ``[name, version]``; for code of no distribution (a
    notebook, a script, a local module) a digest of its bytecode, constants
    and default arguments (for a class, of every function and plain class
    attribute defined in it and in its bases outside the libraries),
    computed afresh each time, since a notebook may edit it in place
    (``%autoreload``). The digest follows what the code refers to: the
    module-level functions and classes it calls (recursively, by code when
    they are user code too), the module-level values it reads (by what they
    hold: see :func:`_digest_referent`) and its closure's cells;
    a helper edited in a notebook thus changes the key of every estimator
    whose code calls it. Inside :func:`code_scope` each object's digest is
    computed once.
    """
    try:
        return _code_tokens[obj]  # the libraries' and installed packages' only
    except (KeyError, TypeError):
        pass
    module = getattr(obj, "__module__", None) or ""
    if not module or _versioned(module):
        token = None
    else:
        token = _distribution(module.partition(".")[0])
        if token is None:
            return _user_code_token(obj)
    try:
        _code_tokens[obj] = token
    except TypeError:  # not weakly referenceable: computed each time
        pass
    return token


def _versioned(module: str) -> bool:
    """Whether LIBRARY_VERSIONS or Python's own version identifies ``module``'s code."""
    root = module.partition(".")[0]
    return root in _VERSIONED or root in sys.stdlib_module_names


def _distribution(root: str) -> list[str] | None:
    global _dists
    if _dists is None:
        _dists = dict(importlib.metadata.packages_distributions())
    for dist in _dists.get(root, ()):
        try:
            return [dist, importlib.metadata.version(dist)]
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _user_code_token(obj: Any) -> Any:
    """The digest token of code of no distribution (see :func:`code_token`).

    One walk shares one set of the objects it has reached: an object
    reached again (recursion, a class whose members refer to it, a
    dispatch table holding the function reading it) is named, not walked,
    so the token depends only on the code and what it refers to, never on
    the stack. Inside :func:`code_scope` a walk's result is kept per object.
    """
    walk = _code_walk.get()
    if walk is not None and id(obj) in walk:
        return [
            "code",
            "again",
            f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', '')}",
        ]
    scope = _code_scope.get()
    if walk is None and scope is not None and id(obj) in scope:
        return scope[id(obj)][1]
    seen = {id(obj)} if walk is None else walk
    seen.add(id(obj))
    reset = _code_walk.set(seen)
    try:
        h = hashlib.sha256()
        _digest_code(obj, h, seen)
    finally:
        _code_walk.reset(reset)
    token = ["code", h.hexdigest()[:_HEX]]
    if walk is None and scope is not None:
        scope[id(obj)] = (obj, token)  # holding obj keeps its id unique
    return token


_code_walk: contextvars.ContextVar[set[int] | None] = contextvars.ContextVar(
    "memogrid_code_walk", default=None
)


@contextlib.contextmanager
def code_scope() -> Iterator[None]:
    """Within this block, each user class's or function's code digest is
    computed once (a search keys the same classes for every candidate);
    code edited inside the block is not seen until the next one."""
    token = _code_scope.set({})
    try:
        yield
    finally:
        _code_scope.reset(token)


_code_scope: contextvars.ContextVar[dict[int, tuple[Any, Any]] | None] = contextvars.ContextVar(
    "memogrid_code_scope", default=None
)


def _digest_code(obj: Any, h: Any, seen: set[int]) -> None:
    if isinstance(obj, type):
        for klass in obj.__mro__:
            if _versioned(klass.__module__ or ""):
                continue
            h.update(f"class {klass.__qualname__}\0".encode())
            for name in sorted(vars(klass)):
                attr = inspect.getattr_static(klass, name)
                for fn in (getattr(attr, a, None) for a in ("__func__", "fget", "fset", "func")):
                    if fn is not None:  # classmethod, staticmethod, property, cached_property
                        attr = fn
                if getattr(attr, "__code__", None) is not None:
                    h.update(f"def {name}\0".encode())
                    _digest_function(attr, h, seen)
                elif not (name.startswith("__") and name.endswith("__")):
                    _digest_referent(f"attr {name}", attr, (), h, seen)  # a class-level value
        return
    _digest_function(obj, h, seen)


def _digest_function(fn: Any, h: Any, seen: set[int]) -> None:
    """A function's code, defaults, what it reads and its closure: a
    decorator's wrapper (scikit-learn wraps ``transform``) is digested with
    the function it wraps and the decorator's arguments in its cells."""
    code = getattr(fn, "__code__", None)
    if code is not None:
        _digest_code_object(code, h)
        _digest_referents(code, getattr(fn, "__globals__", {}), h, seen)
    _digest_value(getattr(fn, "__defaults__", None), h)
    _digest_value(getattr(fn, "__kwdefaults__", None), h)
    for i, cell in enumerate(getattr(fn, "__closure__", None) or ()):
        try:
            value = cell.cell_contents
        except ValueError:  # a cell not yet filled
            continue
        _digest_referent(f"cell {i}", value, (), h, seen)
    wrapped = getattr(fn, "__wrapped__", None)
    if wrapped is not None:
        _digest_referent("wrapped", wrapped, (), h, seen)


def _code_names(code: types.CodeType) -> tuple[set[str], set[str]]:
    """The global names ``code`` (and the code nested in it) reads, and every
    name it uses (attributes too: a user module's are looked up by them)."""
    read = {
        ins.argval
        for ins in dis.get_instructions(code)
        if ins.opname in ("LOAD_GLOBAL", "LOAD_NAME")
    }
    used = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            inner_read, inner_used = _code_names(const)
            read |= inner_read
            used |= inner_used
    return read, used


def _digest_referents(
    code: types.CodeType, namespace: Mapping[str, Any], h: Any, seen: set[int]
) -> None:
    """The module-level objects ``code`` reads, as :func:`_digest_referent` keys them."""
    read, used = _code_names(code)
    for name in sorted(read):
        if name in namespace:
            _digest_referent(name, namespace[name], used, h, seen)


#: module-level values keyed by content when user code reads them
_DATA_TYPES = (type(None), bool, int, float, complex, str, bytes, np.generic, np.ndarray, range)


def _digest_referent(name: str, value: Any, names: Any, h: Any, seen: set[int]) -> None:
    """One object user code refers to, keyed by what it holds.

    A function or class by its own code (from a library: by name and
    version); a user module by the attributes the code names in it; data,
    scikit-learn estimators (with their fitted attributes) and pandas
    objects by content; a partial, a bound method or a decorated callable by
    what it wraps and binds; containers and plain objects element by
    element. Only an object with none of these (a connection, a C object)
    enters by its type alone. Every object is walked once per key.
    """
    h.update(f"ref {name}\0".encode())
    if isinstance(value, types.ModuleType):
        h.update(value.__name__.encode())
        if (
            not _versioned(value.__name__)
            and _distribution(value.__name__.partition(".")[0]) is None
        ):
            for attr in sorted(n for n in names if n in vars(value)):
                _digest_referent(f"{name}.{attr}", vars(value)[attr], (), h, seen)
        return
    if isinstance(value, type) or inspect.isfunction(value):
        module = getattr(value, "__module__", None) or ""
        h.update(f"{module}.{getattr(value, '__qualname__', '')}\0".encode())
        # its code as code_token keys it: within this walk, so recursion and
        # cycles name an object reached again instead of walking it
        h.update(json.dumps(code_token(value)).encode())
        return
    if isinstance(value, _DATA_TYPES) or isinstance(value, enum.Enum):
        _digest_value(value, h)
        return
    if id(value) in seen:  # a container or object that holds itself
        h.update(b"again")
        return
    seen.add(id(value))
    parts = _referent_parts(value)
    if parts is None:
        _digest_value(value, h)  # by content where it has one, else by type
        return
    h.update(f"<{type(value).__module__}.{type(value).__qualname__}>".encode())
    for part, held in parts:
        _digest_referent(f"{name}{part}", held, names, h, seen)


def _referent_parts(value: Any) -> list[tuple[str, Any]] | None:
    """What a composite referent holds, as (label, object) pairs; None for a
    value :func:`_digest_value` keys by itself."""
    if isinstance(value, (list, tuple)):
        return [(f"[{i}]", v) for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        return [(f"[{k!r}]", v) for k, v in value.items()]  # the code's own order
    if isinstance(value, (set, frozenset)):
        return None  # canonical sorts them
    if isinstance(value, functools.partial):
        return [(".func", value.func), (".args", value.args), (".keywords", value.keywords)]
    if inspect.ismethod(value):
        return [(".__func__", value.__func__), (".__self__", value.__self__)]
    if type(value).__module__.partition(".")[0] == "pandas" and hasattr(value, "dtypes"):
        return [(".content", _pandas_content(value))]
    if _is_estimator(value):
        fitted = {k: v for k, v in vars(value).items() if k.endswith("_") and not k.startswith("_")}
        return [(".params", estimator_token(value)), *sorted(fitted.items())]
    if hasattr(value, "__wrapped__"):  # functools.lru_cache and other wrappers
        return [(".__wrapped__", value.__wrapped__)]
    d = getattr(value, "__dict__", None)
    if isinstance(d, dict) and not callable(value):
        return sorted(d.items())
    return None


def _pandas_content(value: Any) -> list[Any]:
    """A Series' or DataFrame's content: its labels, dtypes and row hashes."""
    from pandas.util import hash_pandas_object

    labels = [str(c) for c in getattr(value, "columns", [getattr(value, "name", None)])]
    dtypes = [str(t) for t in np.atleast_1d(getattr(value, "dtypes", value.dtype))]
    rows = hash_pandas_object(value, index=True).to_numpy()
    return [labels, dtypes, rows]


def _digest_value(value: Any, h: Any) -> None:
    """A default argument, class attribute or module-level value: by content
    where it has one."""
    try:
        h.update(json.dumps(canonical(value)).encode())
    except (UnkeyableValue, TypeError, ValueError):
        h.update(f"<{type(value).__qualname__}>".encode())


def _digest_code_object(code: types.CodeType, h: Any) -> None:
    h.update(code.co_code)
    h.update(repr((code.co_names, code.co_varnames, code.co_argcount)).encode())
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _digest_code_object(const, h)
        elif isinstance(const, frozenset):  # its repr's order varies between processes
            h.update(repr(sorted(map(repr, const))).encode())
        else:
            h.update(repr(const).encode())


def named(obj: Any) -> Any:
    """``qualified_name(obj)``, with its :func:`code_token` when it has one."""
    name = qualified_name(obj)
    code = code_token(obj)
    return name if code is None else [name, code]


def _is_estimator(value: Any) -> bool:
    return (
        hasattr(value, "get_params")
        and hasattr(value, "set_params")
        and not isinstance(value, type)
    )


def canonical(value: Any) -> Any:
    """A JSON-serialisable, tagged, order-preserving encoding of ``value``."""
    t = type(value)  # exact-type fast paths for the common parameter values
    if value is None or t is str or t is bool:
        return value
    if t is int:
        return ["int", str(value)]
    if t is float:
        return ["float", _float(value)]
    if t is list or t is tuple:
        return ["list" if t is list else "tuple", [canonical(v) for v in value]]
    if isinstance(value, (bool, str)):
        return value
    if isinstance(value, (np.bool_,)):
        return ["np.bool", bool(value)]
    if isinstance(value, numbers.Integral) and not isinstance(value, np.generic):
        return ["int", str(int(value))]
    if isinstance(value, float):
        return ["float", _float(value)]
    if isinstance(value, np.generic):
        if value.dtype.hasobject:
            raise UnkeyableValue(f"object scalar {value!r}")
        return ["np", value.dtype.str, value.tobytes().hex()]
    if type(value) is np.ndarray:
        return ["ndarray", *array_token(value)]
    if isinstance(value, np.ma.MaskedArray):  # its mask is content too
        mask = np.ma.getmaskarray(value)
        return ["masked", named(type(value)), array_token(value.data), array_token(mask)]
    if isinstance(value, np.ndarray):  # np.matrix multiplies otherwise
        return ["ndarray-of", named(type(value)), *array_token(np.asarray(value))]
    if isinstance(value, (list, tuple)):
        return [
            "list" if isinstance(value, list) else "tuple",
            [canonical(v) for v in value],
        ]
    if isinstance(value, Mapping):
        items = [[canonical(k), canonical(v)] for k, v in value.items()]
        items.sort(key=lambda kv: json.dumps(kv[0]))
        return ["dict", items]
    if isinstance(value, (set, frozenset)):
        enc = sorted((canonical(v) for v in value), key=json.dumps)
        return ["set", enc]
    if isinstance(value, slice):
        return ["slice", canonical((value.start, value.stop, value.step))]
    if isinstance(value, range):
        return ["range", canonical((value.start, value.stop, value.step))]
    if isinstance(value, np.dtype):
        return ["dtype", value.str]
    if isinstance(value, enum.Enum):  # a member: by its class and name
        return ["enum", named(type(value)), value.name]
    if isinstance(value, type):
        return ["type", named(value)]
    if isinstance(value, np.random.RandomState):
        state: Any = value.get_state(legacy=True)
        kind, key_array, pos, has_gauss, cached = state
        return ["rng", kind, array_token(key_array), pos, has_gauss, _float(cached)]
    if _is_estimator(value):
        return estimator_token(value)
    if isinstance(value, functools.partial):
        # by its class (a subclass may call otherwise) and what it calls
        # and binds, each by content; an estimator bound in it would enter
        # by its parameters, not its fitted state: refused
        bound = [*value.args, *value.keywords.values()]
        if any(_is_estimator(v) for v in bound):
            raise UnkeyableValue(f"{value!r} binds an estimator, whose fitted state has no key")
        return [
            "partial",
            named(type(value)),
            canonical(value.func),
            canonical(value.args),
            canonical(value.keywords),
            canonical(dict(vars(value))),
        ]
    if inspect.ismethod(value):
        # its object enters by its parameters only, not its fitted state
        raise UnkeyableValue(f"{value!r} binds state that has no content key")
    if isinstance(value, np.ufunc) or (
        callable(value) and hasattr(value, "__qualname__") and not hasattr(value, "__dict__")
    ):
        return ["func", qualified_name(value)]
    if callable(value) and getattr(value, "__qualname__", None) and hasattr(value, "__code__"):
        # plain Python functions: by importable name and, outside the
        # versioned libraries, their code
        return ["func", named(value)]
    constant = constant_name(value)
    if constant is not None:  # pd.NA
        return ["const", constant]
    d = getattr(value, "__dict__", None)
    if d is not None and not callable(getattr(value, "__code__", None)):
        # A small configuration object (e.g. make_column_selector): its
        # class and attributes are its content.
        return ["obj", named(type(value)), canonical(dict(d))]
    raise UnkeyableValue(f"cannot build a content key for {type(value).__name__} {value!r}")


def _float(x: float) -> str:
    if math.isnan(x):
        return "nan"
    return float(x).hex()


def array_token(arr: np.ndarray) -> list[Any]:
    """[dtype, shape, digest] of an array's content."""
    if arr.dtype.hasobject:
        # Object arrays (e.g. lists of categories) are keyed element-wise.
        return ["O", list(arr.shape), canonical(arr.tolist())]
    data = np.ascontiguousarray(arr)
    digest = hashlib.sha256(data.reshape(-1).data.cast("B") if data.size else b"")
    return [arr.dtype.str, list(arr.shape), digest.hexdigest()]


def params_token(cls: type, params: Mapping[str, Any]) -> list[Any]:
    """Content token of an estimator of class ``cls`` with shallow ``params``."""
    return [
        "est",
        named(cls),
        [[k, canonical(params[k])] for k in sorted(params)],
    ]


#: the pseudo-parameter under which an estimator's ``set_output``
#: configuration enters its token (it is not a parameter, but it changes
#: what ``transform`` returns: arrays or DataFrames)
OUTPUT_CONFIG = "~set_output"


def output_config(est: Any) -> dict[str, Any] | None:
    """What ``est.set_output(...)`` configured, or None if nothing."""
    cfg = getattr(est, "_sklearn_output_config", None)
    return dict(cfg) if isinstance(cfg, Mapping) and cfg else None


def refuse_kept_state(est: Any) -> None:
    """Refuse an estimator whose clones keep what it holds
    (:func:`~memogrid.spec.keeps_state_through_clone`): its parameters
    cannot key it."""
    if keeps_state_through_clone(type(est)):
        raise UnkeyableValue(
            f"{type(est).__name__} keeps its state through clone (a fitted model), which "
            "its parameters do not key: fit the model within the search instead"
        )


def estimator_token(est: Any) -> list[Any]:
    """Class path plus canonical shallow params (and a ``set_output``
    configuration, if any), nested estimators recursed."""
    refuse_kept_state(est)
    params = est.get_params(deep=False)
    cfg = output_config(est)
    if cfg is not None:
        params = {**params, OUTPUT_CONFIG: cfg}
    return params_token(type(est), params)


def token_id(token: Any) -> str:
    """A short hash standing for an estimator token inside step and score keys."""
    return digest("token", token)


def encode(part: Any) -> str:
    """The compact JSON :func:`digest` frames a non-string part as."""
    return json.dumps(part, separators=(",", ":"), ensure_ascii=True)


def token_id_encoded(encoded: str) -> str:
    """:func:`token_id` of the token whose :func:`encode` is ``encoded``
    (for callers that assemble the JSON from fragments encoded once)."""
    return _hash([KEY_SCHEMA, "s5:token", f"j{len(encoded)}:{encoded}"])


def digest(*parts: Any) -> str:
    """Hash a sequence of canonical parts into a hex key body.

    Each part is framed by a type letter and its length, strings as they are
    and anything else as compact JSON, so distinct part lists never collide.
    """
    framed = [KEY_SCHEMA]
    for part in parts:
        if type(part) is str:
            framed.append(f"s{len(part)}:{part}")
        elif part is None or part is True or part is False:
            framed.append(repr(part))
        else:
            enc = encode(part)
            framed.append(f"j{len(enc)}:{enc}")
    return _hash(framed)


def _hash(framed: list[str]) -> str:
    return hashlib.sha256("|".join(framed).encode()).hexdigest()[:_HEX]


def fold_key(
    x_id: str,
    y_id: str | None,
    groups_id: str | None,
    train: np.ndarray,
    test: np.ndarray,
    blas_threads: int | None = 1,
    order: str = "C",
    sk_config: Any = (),
    y_order: str = "C",
    warning_filters: Any = (),
    pairwise: bool = False,
) -> str:
    """Key of one fold: the datasets, the exact rows on each side, the
    BLAS/OpenMP thread limit its fits run under (the last bits of a large
    matrix product depend on it; the refit's differs from the folds'),
    when X or a 2-D y reaches the fits in Fortran order (a refit on them as
    given), that order, which some estimators' last bits depend on too, and the
    scikit-learn settings the fits run under where they differ from the
    defaults (``transform_output="pandas"`` changes every step's output),
    and the caller's warnings filters that make warnings errors (a fit that
    warns fails under them), and whether the fold is sliced as a pairwise
    (kernel) matrix, by rows and columns, or by rows: a Pipeline starting with
    "passthrough" slices a kernel by rows, as scikit-learn's does, where the
    estimator it ends with would take rows and columns. Every key of a
    search descends from its fold keys."""
    train = np.asarray(train, dtype=np.int64)
    test = np.asarray(test, dtype=np.int64)
    parts: list[Any] = [
        "fold",
        x_id,
        y_id,
        groups_id,
        array_token(train),
        array_token(test),
        blas_threads,
    ]
    if order != "C":  # C-ordered folds keep the keys they always had
        parts.append(["order", order])
    if y_order != "C":
        parts.append(["y-order", y_order])
    if sk_config:  # likewise folds under scikit-learn's default configuration
        parts.append(["sklearn-config", canonical(dict(sk_config))])
    if warning_filters:  # and folds without them
        parts.append(["warning-filters", [list(f) for f in warning_filters]])
    if pairwise:  # and folds sliced by rows
        parts.append(["pairwise", True])
    return "fold-" + digest(*parts)


_versions_ids: dict[tuple[tuple[str, str], ...], str] = {}


def _versions_id() -> str:
    vid = _versions_ids.get(LIBRARY_VERSIONS)
    if vid is None:
        vid = _versions_ids[LIBRARY_VERSIONS] = digest("versions", LIBRARY_VERSIONS)
    return vid


def step_key(step_token: Any, parent: str, fit_params: Any = None) -> str:
    """Key of a fitted intermediate step and its transformed fold outputs."""
    return "step-" + digest("step", step_token, _versions_id(), parent, fit_params)


def score_key(
    final_token: Any,
    parent: str,
    scorers: Any,
    return_train_score: bool,
    fit_params: Any = None,
    score_params: Any = None,
) -> str:
    """Key of a fold's scores for a final estimator on its parent's output."""
    return "score-" + digest(
        "score",
        final_token,
        _versions_id(),
        parent,
        scorers,
        bool(return_train_score),
        fit_params,
        score_params,
    )


def refit_key(final_token: Any, parent: str, fit_params: Any = None) -> str:
    """Key of the final estimator fitted on its parent's full-data output."""
    return "refit-" + digest("refit", final_token, _versions_id(), parent, fit_params)


def train_transform_key(step: str) -> str:
    """Key of ``transform`` (not ``fit_transform``) applied to the train rows."""
    return "ttrain-" + digest("ttrain", step)
