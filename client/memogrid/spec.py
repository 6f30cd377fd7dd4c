"""Estimator specs: scikit-learn objects to JSON and back, through an exact-name allowlist.

A spec is plain JSON: ``{"class": "sklearn.decomposition.PCA", "params":
{...}}``. A parameter value is a literal (number, string, bool, null, or a
list of them), a nested spec, a function reference ``{"function":
"sklearn.feature_selection.f_classif"}``, or a list that holds specs
(Pipeline ``steps`` as ``[name, spec]``, ColumnTransformer ``transformers``
as ``[name, spec, columns]``); the entries of ``steps``, ``transformer_list``,
``transformers`` and ``estimators`` become the tuples scikit-learn expects.
An estimator configured with ``set_output(transform="pandas")`` carries
``"output": {"transform": "pandas"}`` beside its params. JSON has no NaN or
infinity: they are ``{"float": "nan"}``, ``{"float": "inf"}`` and
``{"float": "-inf"}`` (``OrdinalEncoder(unknown_value=np.nan)``); a numpy
float32 or float16 value keeps its type as ``{"numpy": "float32", "value":
0.10000000149011612}`` (it computes unlike a Python float); a dtype
parameter is ``{"type": "numpy.float32"}`` (numpy's scalar types and
Python's ``float``, ``int``, ``bool`` and ``str`` only); a dict
(``class_weight={0: 1, 1: 5}``) is ``{"dict": [[key, value], ...]}`` with
number, string or boolean keys; a tuple (``ngram_range=(1, 2)``) is
``{"tuple": [1, 2]}`` (a list stays a list, as scikit-learn judges the
two apart); ``pd.NA`` is ``{"constant": "pandas.NA"}``.

Building (:func:`build_estimator`, :func:`build_grid`,
:func:`build_distributions`) never imports anything by a name taken from a
spec: names are looked up in an :class:`Allowlist` computed from
scikit-learn's own ``all_estimators()`` (public import paths only), a short
list of named functions, and names the operator adds. The inverse
(:func:`to_spec`, :func:`to_grid`, :func:`to_distributions`) turns the
objects a user holds into that JSON and refuses, up front, anything the
builder would refuse. Every refusal is a :class:`SpecError` naming the
offending item by its path in the spec (``params.steps[1][1].params.C``).

Randomized-search distributions are ``{"distribution": "loguniform", "args":
[0.001, 1000.0], "kwds": {}}``, rebuilt as a frozen ``scipy.stats``
distribution looked up by exact name among :data:`DEFAULT_DISTRIBUTIONS`.
scipy is imported only when a distribution is met.

This module is shared: the thin client encodes with it and the service
(``memogrid_service.specs.build``) builds with it, so both sides agree on
what a spec can say.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import itertools
import json
import math
import re
import sys
import threading
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import MemogridError, warning_category

__all__ = [
    "DEFAULT_DISTRIBUTIONS",
    "DEFAULT_FUNCTIONS",
    "DEFAULT_HELPERS",
    "Allowlist",
    "SpecError",
    "build_distributions",
    "build_estimator",
    "build_grid",
    "build_value",
    "cv_to_spec",
    "explicit_folds",
    "default_allowlist",
    "SPLITTERS",
    "splitter_allowlist",
    "to_distributions",
    "to_grid",
    "to_spec",
]

#: Functions a spec may name (score functions, FunctionTransformer ufuncs).
DEFAULT_FUNCTIONS = (
    "sklearn.feature_selection.f_classif",
    "sklearn.feature_selection.f_regression",
    "sklearn.feature_selection.chi2",
    "sklearn.feature_selection.mutual_info_classif",
    "sklearn.feature_selection.mutual_info_regression",
    "sklearn.feature_selection.r_regression",
    "numpy.log",
    "numpy.log1p",
    "numpy.exp",
    "numpy.expm1",
    "numpy.sqrt",
    "numpy.abs",
    "numpy.square",
)

#: Classes other than estimators a spec may name: their instances are
#: values (a ColumnTransformer's columns), their parameters read from the
#: attributes named after the constructor's arguments.
DEFAULT_HELPERS = ("sklearn.compose.make_column_selector",)

#: ``scipy.stats`` distributions a randomized search may name (exact names).
DEFAULT_DISTRIBUTIONS = (
    "uniform",
    "loguniform",
    "reciprocal",  # loguniform's older name, in many tutorials
    "triang",
    "randint",
    "norm",
    "truncnorm",
    "halfnorm",
    "lognorm",
    "expon",
    "gamma",
    "beta",
    "poisson",
    "geom",
    "binom",
    "bernoulli",
)

#: Composite parameters whose entries scikit-learn takes as tuples:
#: ``(name, estimator)`` or ``(name, transformer, columns)``.
_NAMED_ENTRIES = frozenset({"steps", "transformer_list", "transformers", "estimators"})

#: Parameters that would reach the server's file system, and the only values
#: a spec may give them: ``memory`` caches fits in a directory it names
#: (Pipeline, AgglomerativeClustering, ...), ``input="filename"`` makes a
#: text vectorizer open the paths it is given as data.
_SAFE_VALUES: dict[str, tuple[Any, ...]] = {"memory": (None,), "input": ("content",)}

#: The path of a ColumnTransformer entry's columns, in a spec
#: (``...transformers[0][2]``) or a grid value (``ct__transformers[1][0][2]``):
#: the one place a helper class (:data:`DEFAULT_HELPERS`) may stand.
_COLUMNS_SLOT = re.compile(r"transformers(\[\d+\])?\[\d+\]\[2\]$")

#: The path of an estimator's ``cv`` parameter, in a spec (``...params.cv``)
#: or a grid value (``cal__cv[0]``, ``param_cv[0]`` in results): where a
#: splitter (:data:`SPLITTERS`) may stand besides the search's own ``cv``.
_CV_SLOT = re.compile(r"(^|\.|_)cv(\[\d+\])?$")

#: Deepest nesting of lists and specs a request may have.
_MAX_DEPTH = 32

#: the numpy float types a spec keeps as ``{"numpy": "float32", "value": 0.5}``:
#: they compute unlike Python's float (float64 and numpy's integers do not)
NUMPY_FLOATS: dict[str, Any] = {"float16": np.float16, "float32": np.float32}

#: scikit-learn's words for a search with no folds or no candidates
NO_FITS = "No fits were performed. Was the CV iterator empty? Were there no candidates?"

#: the non-finite floats a spec writes as ``{"float": ...}``
SPECIAL_FLOATS = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def special_float_name(number: float) -> str:
    """The name JSON-bound specs give a non-finite float (a key of
    :data:`SPECIAL_FLOATS`)."""
    return "nan" if math.isnan(number) else ("inf" if number > 0 else "-inf")


#: Singletons a spec names as ``{"constant": "package.name"}``, with the name
#: of their type: pandas' missing-value marker
#: (``SimpleImputer(missing_values=pd.NA)``). Told by type name and package
#: so that the client need not import pandas to spot one.
CONSTANTS: dict[str, str] = {"pandas.NA": "NAType"}


def constant_name(value: Any) -> str | None:
    """The :data:`CONSTANTS` name of ``value``, or None."""
    t = type(value)
    package = t.__module__.partition(".")[0]
    for name, type_name in CONSTANTS.items():
        if t.__name__ == type_name and name.startswith(package + "."):
            return name
    return None


def constant_value(name: Any, path: str) -> Any:
    if not isinstance(name, str) or name not in CONSTANTS:
        raise SpecError(path, f"constant {name!r} is not one a spec can name ({sorted(CONSTANTS)})")
    package, _, attr = name.partition(".")
    return getattr(importlib.import_module(package), attr)


def _types_by_name() -> dict[str, type]:
    """The types a spec may hold as values (``dtype=np.float32``), by name."""
    out: dict[str, type] = {f"builtins.{t.__name__}": t for t in (float, int, bool, str, object)}
    for name in (
        "float16 float32 float64 longdouble int8 int16 int32 int64 uint8 uint16 "
        "uint32 uint64 complex64 complex128 bool_ bool str_ intp object_ datetime64 "
        "timedelta64 number integer signedinteger unsignedinteger floating complexfloating"
    ).split():
        with warnings.catch_warnings():  # numpy 1.x warns on np.bool, then lacks it
            warnings.simplefilter("ignore", FutureWarning)
            t = getattr(np, name, None)
        if isinstance(t, type):
            out[f"numpy.{name}"] = t  # both numpy 1's and 2's names of bool
    return out


TYPE_VALUES = _types_by_name()


def _check_safe(name: str, value: Any, path: str) -> None:
    """Refuse a value that would let a spec touch the server's files."""
    allowed = _SAFE_VALUES.get(name)
    # compared only with values of their own type: pd.NA == "content" is no bool
    if allowed is not None and not any(
        value is a or (type(value) is type(a) and value == a) for a in allowed
    ):
        raise SpecError(
            path,
            f"{name}={value!r} is not accepted: it would reach the server's file system "
            f"(allowed: {', '.join(repr(a) for a in allowed)})",
        )


def _check_safe_entries(key: str, values: list[Any], where: str) -> None:
    """:func:`_check_safe` on each value a grid or distribution entry lists."""
    for i, v in enumerate(values):
        _check_safe(key.rsplit("__", 1)[-1], v, f"{where}[{i}]")


#: The largest integer magnitude a spec carries (the builder's limit).
_INT_LIMIT = 2**63


class SpecError(MemogridError, ValueError):
    """A spec cannot be built (or an object cannot be expressed as one).

    ``path`` points at the offending item. The service answers a bad spec
    with 422, which the client raises as this same class.
    """

    status = 422

    def __init__(self, path: str, message: str, *, errors: Any = None):
        self.path = path or "<root>"
        super().__init__(f"{self.path}: {message}", errors=errors)
        self.message = message


def _public_path(cls: type) -> str | None:
    """``sklearn.decomposition.PCA`` for a class defined in ``sklearn.decomposition._pca``."""
    parts = cls.__module__.split(".")
    public = []
    for part in parts:
        if part.startswith("_"):
            break
        public.append(part)
    module = ".".join(public)
    try:
        if getattr(importlib.import_module(module), cls.__name__, None) is cls:
            return f"{module}.{cls.__name__}"
    except ImportError:
        return None
    return None


class _Tracked(dict[str, Any]):
    """A dict that counts its edits, so an index built from it knows when it is stale."""

    edits = 0

    def _edited(self) -> None:
        self.edits += 1

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        self._edited()

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self._edited()

    def __ior__(self, other: Any) -> Any:  # type: ignore[misc]
        self.update(other)
        return self

    def update(self, *args: Any, **kwargs: Any) -> None:
        super().update(*args, **kwargs)
        self._edited()

    def setdefault(self, key: str, default: Any = None) -> Any:
        value = super().setdefault(key, default)
        self._edited()
        return value

    def pop(self, key: str, *default: Any) -> Any:
        value = super().pop(key, *default)
        self._edited()
        return value

    def popitem(self) -> tuple[str, Any]:
        item = super().popitem()
        self._edited()
        return item

    def clear(self) -> None:
        super().clear()
        self._edited()


@dataclass
class Allowlist:
    """The exact names a spec may use, each bound to its object.

    ``classes`` and ``functions`` map names to objects (edit them freely, or
    use :meth:`add`); the reverse lookups (:meth:`name_of_class`,
    :meth:`name_of_function`) go through an index kept beside them, rebuilt
    on the first lookup after an edit.
    """

    classes: dict[str, type] = field(default_factory=dict)
    functions: dict[str, Any] = field(default_factory=dict)
    #: names of ``scipy.stats`` distributions (see :data:`DEFAULT_DISTRIBUTIONS`)
    distributions: frozenset[str] = frozenset(DEFAULT_DISTRIBUTIONS)
    _class_names: dict[type, str] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _function_names: dict[int, str] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _indexed: tuple[int, int] = field(default=(-1, -1), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.classes = _Tracked(self.classes)
        self.functions = _Tracked(self.functions)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("classes", "functions") and not isinstance(value, _Tracked):
            value = _Tracked(value)  # a whole new mapping assigned later
        super().__setattr__(name, value)

    @classmethod
    def default(cls, extra: Iterable[str] = ()) -> Allowlist:
        """scikit-learn's estimators and named functions, plus operator names.

        ``extra`` holds import paths the operator trusts (from settings, never
        from a request); each must resolve to a class or a function.
        """
        from sklearn.utils import all_estimators

        allow = cls()
        for _, est_cls in all_estimators():
            path = _public_path(est_cls)
            if path is not None:
                allow.add(path, est_cls)
        for name in (*DEFAULT_FUNCTIONS, *DEFAULT_HELPERS, *SPLITTERS, *extra):
            module, _, attr = name.rpartition(".")
            allow.add(name, getattr(importlib.import_module(module), attr))
        return allow

    def add(self, name: str, obj: Any) -> None:
        """Allow ``obj`` under ``name``: a class, or else a function."""
        if isinstance(obj, type):
            self.classes[name] = obj
        else:
            self.functions[name] = obj

    def _edits(self) -> tuple[int, int]:
        return (getattr(self.classes, "edits", -2), getattr(self.functions, "edits", -2))

    def _index(self) -> None:
        """Rebuild the reverse index if either mapping changed since the last build."""
        edits = self._edits()
        if edits == self._indexed:
            return
        self._class_names = {}
        for name, cls in self.classes.items():
            self._class_names.setdefault(cls, name)  # the first name given wins
        self._function_names = {}
        for name, obj in self.functions.items():
            self._function_names.setdefault(id(obj), name)
        self._indexed = edits

    def name_of_class(self, cls: type) -> str | None:
        """The allowlisted name of ``cls`` (the first one given), or None; O(1)."""
        self._index()
        try:
            return self._class_names.get(cls)
        except TypeError:  # an unhashable metaclass instance
            return None

    def name_of_function(self, obj: Any) -> str | None:
        """The allowlisted name of function ``obj`` (by identity), or None; O(1)."""
        self._index()
        return self._function_names.get(id(obj))


_DEFAULT_LOCK = threading.Lock()
_DEFAULT: list[Allowlist] = []


def default_allowlist() -> Allowlist:
    """:meth:`Allowlist.default`, computed once per process (shared; do not edit).

    Computing it walks scikit-learn's modules, which is not safe from two
    threads at once: the first caller computes it under a lock.
    """
    with _DEFAULT_LOCK:
        if not _DEFAULT:
            _DEFAULT.append(Allowlist.default())
        return _DEFAULT[0]


def _join(path: str, child: str) -> str:
    """``path.child`` (or ``child`` at the root)."""
    return f"{path}.{child}" if path else child


# -- building: JSON -> objects ---------------------------------------------------------------


#: what a spec's sets may hold (hashable literals)
_SET_ITEMS = (str, int, float, bool, np.generic, type(None))


def _check_literal(value: Any, path: str) -> Any:
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        if abs(value) > _INT_LIMIT:
            raise SpecError(path, f"integer {value} is out of range")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise SpecError(path, f"non-finite number {value!r} is not accepted")
        return value
    raise SpecError(path, f"unsupported value of type {type(value).__name__}")


def build_value(value: Any, allow: Allowlist, path: str) -> Any:
    """Turn one spec value into the Python object it stands for."""
    if path.count("[") + path.count(".params") > _MAX_DEPTH:
        raise SpecError(path, f"the spec is nested more than {_MAX_DEPTH} levels deep")
    if isinstance(value, Mapping):
        if "class" in value:
            return build_estimator(value, allow, path)
        if set(value) == {"function"}:
            name = value["function"]
            if not isinstance(name, str) or name not in allow.functions:
                raise SpecError(path, f"function {name!r} is not on the allowlist")
            return allow.functions[name]
        if set(value) == {"float"}:
            if not isinstance(value["float"], str) or value["float"] not in SPECIAL_FLOATS:
                raise SpecError(path, '{"float": ...} is "nan", "inf" or "-inf"')
            return SPECIAL_FLOATS[value["float"]]
        if set(value) == {"numpy", "value"}:
            return _numpy_float(value, allow, path)
        if set(value) == {"constant"}:
            return constant_value(value["constant"], path)
        if set(value) == {"type"}:
            if not isinstance(value["type"], str) or value["type"] not in TYPE_VALUES:
                raise SpecError(path, f"type {value['type']!r} is not one a spec can name")
            return TYPE_VALUES[value["type"]]
        if set(value) == {"tuple"}:
            entries = value["tuple"]
            if not isinstance(entries, list):
                raise SpecError(path, '{"tuple": ...} holds a list of values')
            return tuple(build_value(v, allow, f"{path}[{i}]") for i, v in enumerate(entries))
        if set(value) == {"RandomState"}:
            return _random_state(value["RandomState"], path)
        if set(value) in ({"set"}, {"frozenset"}):
            ((kind, entries),) = value.items()
            if not isinstance(entries, list):
                raise SpecError(path, f'{{"{kind}": ...}} holds a list of values')
            built = [build_value(v, allow, f"{path}[{i}]") for i, v in enumerate(entries)]
            if not all(isinstance(v, _SET_ITEMS) for v in built):
                raise SpecError(path, f"a {kind} holds numbers, strings or bools")
            return set(built) if kind == "set" else frozenset(built)
        if set(value) == {"dict"}:
            items = value["dict"]
            if not isinstance(items, list) or not all(
                isinstance(kv, list) and len(kv) == 2 for kv in items
            ):
                raise SpecError(path, '{"dict": ...} holds a list of [key, value] pairs')
            out: dict[Any, Any] = {}
            for i, (k, v) in enumerate(items):
                if isinstance(k, (list, Mapping)):
                    raise SpecError(f"{path}[{i}]", "a dict key is a number, string or boolean")
                key = _check_literal(k, f"{path}[{i}][0]")
                if key in out:
                    raise SpecError(f"{path}[{i}]", f"the dict repeats the key {key!r}")
                out[key] = build_value(v, allow, f"{path}[{i}][1]")
            return out
        raise SpecError(
            path,
            "an object must be an estimator spec, a function reference, "
            '{"float": ...}, {"numpy": ..., "value": ...}, {"type": ...}, {"constant": ...}, '
            '{"tuple": ...}, {"set": ...}, {"frozenset": ...}, {"RandomState": ...} or '
            '{"dict": ...}',
        )
    if isinstance(value, list):
        return [build_value(v, allow, f"{path}[{i}]") for i, v in enumerate(value)]
    return _check_literal(value, path)


def build_estimator(spec: Any, allow: Allowlist, path: str = "") -> Any:
    """Build the (unfitted) estimator a spec describes."""
    if not isinstance(spec, Mapping) or "class" not in spec:
        raise SpecError(path, 'an estimator spec is an object with a "class"')
    unknown = set(spec) - {"class", "params", "output"}
    if unknown:
        raise SpecError(path, f"unknown keys {sorted(unknown)}")
    name = spec["class"]
    if not isinstance(name, str) or name not in allow.classes:
        raise SpecError(_join(path, "class"), f"{name!r} is not on the allowlist")
    cls = allow.classes[name]
    if name in DEFAULT_HELPERS and not _COLUMNS_SLOT.search(path):
        # a helper (make_column_selector) is a ColumnTransformer's columns,
        # never an estimator or a step
        raise SpecError(
            _join(path, "class"),
            f"{name} is not an estimator: it goes where a ColumnTransformer takes columns",
        )
    if name in SPLITTERS and not _CV_SLOT.search(path):
        raise SpecError(
            _join(path, "class"),
            f"{name} is not an estimator: it goes where an estimator or the search takes cv",
        )
    if keeps_state_through_clone(cls):
        # refused as the client refuses to send it (the service accepted the
        # spec, and the job failed naming an internal error)
        raise SpecError(_join(path, "class"), _KEEPS_STATE.format(cls.__name__))
    params = spec.get("params")
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        raise SpecError(_join(path, "params"), "params must be an object")
    accepted = _accepted(cls)
    built = {}
    for key, value in params.items():
        where = _join(path, f"params.{key}")
        if key not in accepted:
            raise SpecError(where, f"{name} has no parameter {key!r}")
        built[key] = build_value(value, allow, where)
        _check_safe(key, built[key], where)
        if key in _NAMED_ENTRIES and isinstance(built[key], list):
            built[key] = [tuple(e) if isinstance(e, list) else e for e in built[key]]
            _check_entries(key, built[key], where)
    try:
        estimator = cls(**built)
    except Exception as exc:  # constructors only store arguments; be safe anyway
        raise SpecError(path, f"{name}({', '.join(built)}) failed: {exc}") from None
    _validate(estimator, built, path)
    if "output" in spec:
        _set_output(estimator, spec["output"], _join(path, "output"))
    return estimator


#: what ``set_output(transform=...)`` may be set to in a spec
OUTPUT_CONTAINERS = ("default", "pandas", "polars")

#: ``sklearn.set_config`` settings that change what a search computes or
#: returns and that a job carries to the service: name -> (scikit-learn's
#: default, the values a job may set). scikit-learn's configuration is per
#: thread, so the client sends the caller's and the service runs the job
#: under it; the engine also keys folds by it.
JOB_SKLEARN_SETTINGS: dict[str, tuple[Any, tuple[Any, ...] | range]] = {
    "transform_output": ("default", OUTPUT_CONTAINERS),
    "assume_finite": (False, (False, True)),
    # an invalid parameter fails its fit only while validation is on
    "skip_parameter_validation": (False, (False, True)),
    # what a transformer's sparse output is: scipy's matrices or arrays
    "sparse_interface": ("spmatrix", ("spmatrix", "sparray")),
    # which pairwise distance code runs, and in what chunks (the last bits
    # of a distance, and what a reduction over chunks sums, can follow them)
    "enable_cython_pairwise_dist": (True, (True, False)),
    "pairwise_dist_chunk_size": (256, range(1, 2**31)),
    "working_memory": (1024, range(1, 2**31)),
}


#: scikit-learn's defaults of :data:`JOB_SKLEARN_SETTINGS`
JOB_SKLEARN_DEFAULTS = {name: default for name, (default, _) in JOB_SKLEARN_SETTINGS.items()}


def changed_sklearn_settings(defaults: Mapping[str, Any]) -> dict[str, Any]:
    """This thread's scikit-learn settings named in ``defaults`` whose values
    are not those (a setting older scikit-learn lacks is left out)."""
    import sklearn

    current = sklearn.get_config()
    return {k: current[k] for k, d in defaults.items() if k in current and current[k] != d}


def check_sklearn_settings(config: Any) -> dict[str, Any]:
    """A job's ``sklearn_config``, checked against :data:`JOB_SKLEARN_SETTINGS`."""
    if not isinstance(config, Mapping):
        raise SpecError("sklearn_config", "sklearn_config is an object")
    for key, value in config.items():
        where = f"sklearn_config.{key}"
        if key not in JOB_SKLEARN_SETTINGS:
            allowed = " and ".join(JOB_SKLEARN_SETTINGS)
            raise SpecError(where, f"{key!r} cannot be set: {allowed} can")
        choices = JOB_SKLEARN_SETTINGS[key][1]
        if isinstance(choices, range):
            if type(value) is not int or value not in choices:
                raise SpecError(
                    where, f"{key} is an integer from {choices.start} to {choices.stop - 1}"
                )
        # by type as well as value: 1 is not True here
        elif not any(type(value) is type(c) and value == c for c in choices):
            raise SpecError(where, f"{key} is one of {json.dumps(list(choices))}")
    return dict(config)


#: ``warnings.filterwarnings`` actions
WARNING_ACTIONS = ("error", "ignore", "always", "default", "module", "once")

#: one warnings filter as a job carries it: action, message and module
#: regular expressions ("" for any), category name, line (0 for any)
WarningFilter = tuple[str, str, str, str, int]


def caller_warning_filters() -> list[list[Any]]:
    """This process's warnings filters that decide which warnings a fit
    raises as errors (``warnings.simplefilter("error")``, pytest's
    ``filterwarnings = error``), in their order, each an error or one that
    lets a warning through to be shown: those whose category the service
    knows (a class of the caller's own is raised by no fit there), up to
    the first that takes every warning and the last error before it; none
    if no warning would be an error. scikit-learn's search fits under the
    caller's filters (its workers get them too), so a warning the caller
    made an error fails that fit."""
    out: list[list[Any]] = []
    # where filters are per context (free-threaded Python), as scikit-learn reads them
    current = getattr(warnings, "_get_filters", None)
    for action, message, category, module, lineno in current() if current else warnings.filters:
        name = getattr(category, "__name__", "")
        if warning_category(name) is not category:
            continue
        entry = [
            # what a fit makes of a warning: an error, or one to show the caller
            "error" if action == "error" else "always",
            getattr(message, "pattern", message) or "",
            name,
            getattr(module, "pattern", module) or "",
            int(lineno),
        ]
        out.append(entry)
        if entry[1:] == ["", "Warning", "", 0]:
            break  # every warning stops here: no filter after it is reached
    while out and out[-1][0] != "error":
        out.pop()  # none makes an error of what the filters before it let through
    return out


def check_warning_filters(value: Any, path: str = "warning_filters") -> tuple[WarningFilter, ...]:
    """A job's ``warning_filters`` (see :func:`caller_warning_filters`), checked."""
    if not isinstance(value, (list, tuple)) or len(value) > 200:
        raise SpecError(path, "warning_filters is a list of at most 200 filters")
    out = []
    for i, entry in enumerate(value):
        where = f"{path}[{i}]"
        if not (isinstance(entry, (list, tuple)) and len(entry) == 5):
            raise SpecError(where, "a filter is [action, message, category, module, lineno]")
        action, message, category, module, lineno = entry
        if action not in WARNING_ACTIONS:
            raise SpecError(where, f"the action is one of {list(WARNING_ACTIONS)}")
        for text, what in ((message, "message"), (module, "module")):
            if not isinstance(text, str) or len(text) > 1000:
                raise SpecError(where, f"the {what} is a regular expression (1000 characters)")
            try:
                with warnings.catch_warnings():  # re's FutureWarnings ("[[:") are not errors
                    warnings.simplefilter("ignore")
                    re.compile(text)
            # a repeat past re's bounds is an OverflowError, nesting past
            # Python's stack a RecursionError: each a pattern re cannot take
            except (re.error, OverflowError, RecursionError) as exc:
                raise SpecError(where, f"the {what} is not a regular expression: {exc}") from None
        if not isinstance(category, str) or warning_category(category).__name__ != category:
            raise SpecError(where, f"{category!r} is not a warning class the service knows")
        if type(lineno) is not int or not 0 <= lineno <= sys.maxsize:
            raise SpecError(where, "the line is an integer, 0 for any")
        out.append((action, message, category, module, lineno))
    return tuple(out)


def _set_output(estimator: Any, output: Any, path: str) -> None:
    """``estimator.set_output(**output)``, checked like any spec value."""
    if not isinstance(output, Mapping) or set(output) - {"transform"}:
        raise SpecError(path, 'output is an object with only "transform"')
    transform = output.get("transform")
    if transform not in OUTPUT_CONTAINERS:
        raise SpecError(_join(path, "transform"), f"transform is one of {list(OUTPUT_CONTAINERS)}")
    if not hasattr(estimator, "set_output"):
        raise SpecError(path, f"{type(estimator).__name__} has no set_output")
    estimator.set_output(transform=transform)


def _is_step(value: Any) -> bool:
    """An estimator, or what scikit-learn takes in a step's place."""
    if isinstance(value, str):
        return value in ("passthrough", "drop")
    return value is None or (hasattr(value, "get_params") and not isinstance(value, type))


def _check_entries(key: str, entries: list[Any], path: str) -> None:
    """Each entry of ``steps``, ``transformers``, ... is (name, step[, columns])."""
    three = key == "transformers"
    arity, form = (3, "[name, transformer, columns]") if three else (2, "[name, step]")
    for i, entry in enumerate(entries):
        if not isinstance(entry, tuple) or len(entry) != arity or not isinstance(entry[0], str):
            raise SpecError(f"{path}[{i}]", f"an entry of {key} is {form} with a string name")
        if not _is_step(entry[1]):
            raise SpecError(
                f"{path}[{i}][1]", 'a step is an estimator, "passthrough", "drop" or null'
            )


@functools.cache
def _accepted(cls: type) -> frozenset[str]:
    """The parameters ``cls``'s constructor names (an allowlisted class:
    finitely many), read once: a grid of many estimators builds each."""
    return frozenset(
        p.name
        for p in inspect.signature(cls).parameters.values()
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    )


@functools.cache
def _refused_defaults(cls: type) -> dict[str, Any]:
    """The constructor defaults of ``cls`` its own parameter constraints
    refuse (read once per class; scikit-learn 1.9 has one such)."""
    from sklearn.utils._param_validation import validate_parameter_constraints

    constraints = getattr(cls, "_parameter_constraints", None) or {}
    out = {}
    for name, p in inspect.signature(cls).parameters.items():
        if name not in constraints or p.default is inspect.Parameter.empty:
            continue
        try:
            validate_parameter_constraints(constraints, {name: p.default}, cls.__name__)
        except (ValueError, TypeError):
            out[name] = p.default
    return out


def _validate(estimator: Any, given: Mapping[str, Any], path: str) -> None:
    """scikit-learn's own parameter checks, now rather than at fit time.

    A wrong type or range (``C="x"``, ``solver="nope"``) is refused with the
    path of the parameter instead of failing every fit of a job. The
    parameters ``given`` are checked, as ``_validate_params`` checks them
    (the defaults are scikit-learn's own: reading and checking every one
    was most of the cost of building a grid of many estimators).
    """
    check = getattr(estimator, "_validate_params", None)
    constraints = getattr(estimator, "_parameter_constraints", None)
    if check is None or constraints is None:
        return
    from sklearn.base import BaseEstimator
    from sklearn.utils._param_validation import validate_parameter_constraints

    cls: type = type(estimator)
    try:
        if getattr(cls, "_validate_params", None) is BaseEstimator._validate_params:
            # the given, and the defaults scikit-learn itself refuses
            # (SelfTrainingClassifier's estimator=None)
            checked = {**_refused_defaults(cls), **given}
            if checked:
                validate_parameter_constraints(constraints, checked, caller_name=cls.__name__)
        else:  # a class checking in its own way
            check()
    except (ValueError, TypeError) as exc:
        message = str(exc)
        name = message.split("'")[1] if message.startswith("The '") else ""
        where = _join(path, f"params.{name}") if name else path
        raise SpecError(where, _tuple_hint(message)) from None


def _tuple_hint(message: str) -> str:
    """scikit-learn's refusal, telling a spec's author how a tuple is written."""
    if "instance of 'tuple'" in message and "Got [" in message:
        return message + ' (a spec writes a tuple as {"tuple": [...]})'
    return message


#: the most grids a job's ``param_grid`` list holds, and distributions its
#: ``param_distributions`` list (each costs its building on the service)
GRIDS_MAX = 10_000
DISTRIBUTIONS_MAX = 1000

#: at most this many combinations of the values swapped in above one grid
#: key are tried with it (each costs a clone of the estimator)
KEY_CHECKS_MAX = 2_000


def _structure(value: Any) -> Any:
    """What decides which parameter names ``value`` offers below it: its
    class and, within, its steps' names and nested estimators; not its
    numbers nor its other strings (two ``SelectFromModel(LogisticRegression(C=...))``
    take the same keys, whatever ``C``; two ``ColumnTransformer`` whatever
    columns they select)."""
    if hasattr(value, "get_params") and not isinstance(value, type):
        try:
            params = sorted(value.get_params(deep=False).items())
        except Exception:  # noqa: BLE001 - unreadable: a structure of its own
            return ("object", id(value))
        return (type(value), tuple((k, _structure(v)) for k, v in params))
    if isinstance(value, (list, tuple)):
        if len(value) >= 2 and isinstance(value[0], str) and _is_step(value[1]):
            # a named step, ("scale", StandardScaler()) or ("num", ..., columns):
            # its name is a key
            return (type(value), value[0], tuple(_structure(v) for v in value[1:]))
        inner = tuple(_structure(v) for v in value)
        if all(isinstance(i, type) for i in inner):
            return type(value)  # plain values (columns, say): however many
        return (type(value), inner)
    if isinstance(value, str) and _is_step(value):
        return value  # "passthrough" or "drop": a step left out, no keys below it
    return type(value)


def _settable(key: str, offered: set[str] | dict[str, Any]) -> bool:
    """Whether scikit-learn's set_params takes ``key`` on an estimator whose
    get_params(deep=True) gives ``offered``: the key and, as set_params
    splits it at its first ``__``, each prefix up to a ``__`` offered too (a
    step named ``a__b`` offers ``a__b__with_mean``, which set_params refuses)."""
    parts = key.split("__")
    return all("__".join(parts[:i]) in offered for i in range(1, len(parts) + 1))


def _offered_below(key: str, above: str, distinct: Callable[[str], dict[Any, Any]]) -> bool:
    """Whether every value of the grid's key ``above`` (``clf`` for
    ``clf__C``) offers the rest of ``key``: scikit-learn sets the nested
    key on the value set above it. False: tried the long way, which says
    what is wrong."""
    rest = key[len(above) + 2 :]
    for value in distinct(above).values():
        if not hasattr(value, "get_params") or isinstance(value, type):
            return False
        try:
            below = value.get_params(deep=True)
        except Exception:  # noqa: BLE001 - the long way tells what it is
            return False
        if not _settable(rest, below):
            return False
    return True


def _check_keys(estimator: Any, space: Mapping[str, Any], path: str, checked: set[Any]) -> None:
    """Refuse a key the estimator (or the step it names) does not have.

    A key is tried together with each combination of the values of the keys
    above it in the same grid (``clf`` for ``clf__C``), because a grid may
    swap a step and tune the new step's parameters at once; values of one
    structure (:func:`_structure`) are tried once, and ``checked`` spares
    the grids of a list what an earlier one tried.
    """
    from sklearn.base import clone

    structures: dict[str, dict[Any, Any]] = {}  # of each key's values, found once
    offered: set[str] = set()  # the estimator's own keys, read once if needed

    def offers(key: str) -> bool:
        if not offered:
            offered.update(estimator.get_params(deep=True))
        return _settable(key, offered)

    def distinct(name: str) -> dict[Any, Any]:
        if name not in structures:
            found: dict[Any, Any] = {}
            for v in space[name]:
                found.setdefault(_structure(v), v)
            structures[name] = found
        return structures[name]

    for key, values in space.items():
        where = f"{path}.{key}"
        # the keys of this grid naming a step above this one: its prefixes
        # (a scan of every key per key took hours on a grid of 300,000 keys)
        parts = key.split("__")
        above = ("__".join(parts[:i]) for i in range(1, len(parts)))
        ancestors = [a for a in above if isinstance(space.get(a), list)]
        value = values[0] if isinstance(values, list) else values
        kinds = [distinct(a) for a in ancestors]
        n = math.prod(len(k) for k in kinds)
        if n > KEY_CHECKS_MAX:
            raise SpecError(
                where,
                f"the steps above {key!r} come in {n} different combinations, more than the "
                f"{KEY_CHECKS_MAX} a grid key is checked with; split the grid into a list of grids",
            )
        if not ancestors and offers(key):
            # a key of the estimator as it is (no step above it swapped by
            # the grid): it takes any value, as scikit-learn's set_params does.
            # Cloning the estimator for each key cost keys x steps
            continue
        if ancestors and _offered_below(key, max(ancestors, key=len), distinct):
            continue  # each value the grid gives the step above offers the key
        own = _structure(value)
        for combination in itertools.product(*(k.items() for k in kinds)):
            seen = (key, tuple(ancestors), tuple(c for c, _ in combination), own)
            if seen in checked:
                continue
            values_above = [v for _, v in combination]
            params = {**dict(zip(ancestors, values_above, strict=True)), key: value}
            try:
                # the grid's own objects untouched: scikit-learn sets clones
                clone(estimator).set_params(**clone(params, safe=False))
            except (ValueError, AttributeError, TypeError) as exc:
                given = ", ".join(
                    f"{a}={v!r}" for a, v in zip(ancestors, values_above, strict=True)
                )
                detail = f" (with {given})" if given else ""
                raise SpecError(
                    where, f"the estimator has no parameter {key!r}{detail}: {exc}"
                ) from None
            checked.add(seen)


def build_grid(
    estimator: Any,
    grid: Any,
    allow: Allowlist,
    path: str = "param_grid",
    checked: set[Any] | None = None,
) -> Any:
    """Build a parameter grid (dict or list of dicts), checking every key exists."""
    checked = set() if checked is None else checked
    if isinstance(grid, list):
        return [
            build_grid(estimator, g, allow, f"{path}[{i}]", checked) for i, g in enumerate(grid)
        ]
    if not isinstance(grid, Mapping):  # {} is the estimator as it is, as in scikit-learn
        raise SpecError(path, "a parameter grid is an object of lists")
    out: dict[str, list[Any]] = {}
    for key, values in grid.items():
        where = f"{path}.{key}"
        if not isinstance(values, list) or not values:
            raise SpecError(where, "each grid entry is a non-empty list of values")
        out[key] = [build_value(v, allow, f"{where}[{i}]") for i, v in enumerate(values)]
        _check_safe_entries(key, out[key], where)
    _check_keys(estimator, out, path, checked)
    return out


def _random_state(state: Any, path: str) -> np.random.RandomState:
    """The RandomState a ``{"RandomState": {"key", "pos", "has_gauss",
    "cached_gaussian"}}`` tag holds (numpy's MT19937 state)."""
    fields = {"key", "pos", "has_gauss", "cached_gaussian"}
    if not isinstance(state, Mapping) or set(state) != fields:
        raise SpecError(path, f'{{"RandomState": ...}} holds exactly {sorted(fields)}')
    key, pos, has_gauss, cached = (state[f] for f in ("key", "pos", "has_gauss", "cached_gaussian"))
    if not (
        isinstance(key, list)
        and len(key) == 624
        and all(type(k) is int and 0 <= k < 2**32 for k in key)
    ):
        raise SpecError(_join(path, "key"), "an MT19937 key is 624 integers in [0, 2**32)")
    if type(pos) is not int or not 0 <= pos <= 624:
        raise SpecError(_join(path, "pos"), "pos is an integer in [0, 624]")
    if has_gauss not in (0, 1) or type(has_gauss) is not int:
        raise SpecError(_join(path, "has_gauss"), "has_gauss is 0 or 1")
    if (
        isinstance(cached, bool)
        or not isinstance(cached, (int, float))
        or not (isinstance(cached, float) or abs(cached) <= _INT_LIMIT)
        or not math.isfinite(cached)
    ):
        raise SpecError(_join(path, "cached_gaussian"), "cached_gaussian is a finite number")
    rng = np.random.RandomState()
    rng.set_state(("MT19937", np.array(key, dtype=np.uint32), pos, has_gauss, float(cached)))
    return rng


def _numpy_float(value: Mapping[str, Any], allow: Allowlist | None, path: str) -> Any:
    """The numpy float a ``{"numpy": "float32", "value": ...}`` tag names."""
    name = value["numpy"]
    if not isinstance(name, str) or name not in NUMPY_FLOATS:
        raise SpecError(path, f'{{"numpy": ...}} is one of {sorted(NUMPY_FLOATS)}')
    number = value["value"]
    if isinstance(number, Mapping) and set(number) == {"float"} and allow is not None:
        number = build_value(number, allow, path)  # NaN and the infinities
    if isinstance(number, bool) or not isinstance(number, (int, float)):
        raise SpecError(path, '{"numpy": ..., "value": ...} holds a number')
    if isinstance(number, int):
        try:
            number = float(number)  # as numpy would take it, but past a float: no overflow
        except OverflowError:
            raise SpecError(path, f"{number!r} does not fit a {name}") from None
    with np.errstate(over="ignore"):
        typed = NUMPY_FLOATS[name](number)
    if math.isfinite(number) and not np.isfinite(typed):
        raise SpecError(path, f"{number!r} does not fit a {name}")
    return typed


def _number(value: Any, path: str) -> Any:
    """A distribution argument: a finite int or float (no bool), or a numpy
    float32 or float16 as its tag gives it (scipy computes with its type)."""
    if isinstance(value, Mapping) and set(value) == {"numpy", "value"}:
        typed = _numpy_float(value, None, path)
        if not np.isfinite(typed):
            raise SpecError(path, f"non-finite number {typed} is not a distribution argument")
        return typed
    if isinstance(value, Mapping) and set(value) == {"float"}:
        raise SpecError(path, f"non-finite number {value['float']} is not a distribution argument")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpecError(path, f"a distribution argument is a number, not {value!r}")
    return _check_literal(value, path)


def _build_distribution(value: Mapping[str, Any], allow: Allowlist, path: str) -> Any:
    unknown = set(value) - {"distribution", "args", "kwds"}
    if unknown:
        raise SpecError(path, f"unknown keys {sorted(unknown)}")
    name = value["distribution"]
    if not isinstance(name, str) or name not in allow.distributions:
        raise SpecError(f"{path}.distribution", f"{name!r} is not on the allowlist")
    args = value.get("args", [])
    kwds = value.get("kwds", {})
    if not isinstance(args, list):
        raise SpecError(f"{path}.args", "args must be a list of numbers")
    if not isinstance(kwds, Mapping):
        raise SpecError(f"{path}.kwds", "kwds must be an object of numbers")
    built_args = [_number(a, f"{path}.args[{i}]") for i, a in enumerate(args)]
    built_kwds = {}
    for key, kwd in kwds.items():
        if not isinstance(key, str) or not key.isidentifier() or key.startswith("_"):
            raise SpecError(f"{path}.kwds", f"{key!r} is not an argument name")
        built_kwds[key] = _number(kwd, f"{path}.kwds.{key}")

    import scipy.stats

    generator = getattr(scipy.stats, name, None)
    if not isinstance(generator, (scipy.stats.rv_continuous, scipy.stats.rv_discrete)):
        raise SpecError(f"{path}.distribution", f"scipy.stats has no distribution {name!r}")
    try:
        frozen = generator(*built_args, **built_kwds)
        low, high = frozen.support()
    except Exception as exc:
        raise SpecError(path, f"{name}(...) failed: {exc}") from None
    if math.isnan(low) or math.isnan(high):
        raise SpecError(path, f"invalid arguments for {name}")
    return frozen


def build_distributions(
    estimator: Any,
    dists: Any,
    allow: Allowlist,
    path: str = "param_distributions",
    checked: set[Any] | None = None,
) -> Any:
    """Build randomized-search distributions (dict or list of dicts), checking every key.

    A value is either a non-empty list of spec values (sampled uniformly, as
    scikit-learn does) or a distribution object, rebuilt as a frozen
    ``scipy.stats`` distribution.
    """
    checked = set() if checked is None else checked
    if isinstance(dists, list):
        return [
            build_distributions(estimator, d, allow, f"{path}[{i}]", checked)
            for i, d in enumerate(dists)
        ]
    if not isinstance(dists, Mapping):
        raise SpecError(path, "parameter distributions are an object")
    out: dict[str, Any] = {}
    for key, value in dists.items():
        where = f"{path}.{key}"
        if isinstance(value, Mapping) and "distribution" in value:
            out[key] = _build_distribution(value, allow, where)
        elif isinstance(value, list) and value:
            out[key] = [build_value(v, allow, f"{where}[{i}]") for i, v in enumerate(value)]
            _check_safe_entries(key, out[key], where)
        else:
            raise SpecError(where, "each entry is a non-empty list of values or a distribution")
        if key.rsplit("__", 1)[-1] in _SAFE_VALUES and not isinstance(out[key], list):
            raise SpecError(where, f"{key} cannot be drawn from a distribution")
    _check_keys(estimator, out, path, checked)
    return out


# -- expressing: objects -> JSON -------------------------------------------------------------


def _is_nan(value: Any) -> bool:
    """A scalar NaN (Python or numpy float); never raises."""
    return isinstance(value, (float, np.floating)) and bool(np.isnan(value))


def _is_default(value: Any, default: Any) -> bool:
    """Whether a parameter still holds its constructor default.

    The same notion as scikit-learn's repr of "changed" parameters: equal
    representations (a NaN default matches any NaN), with the types required
    to agree as well so that ``1`` never stands in for ``1.0`` or ``True``.
    """
    if default is inspect.Parameter.empty:
        return False
    if value is default:
        return True
    if _is_nan(value) and _is_nan(default):
        return True
    if type(value) is not type(default):
        return False
    try:
        return repr(value) == repr(default)
    except Exception:
        return False


def _changed_params(estimator: Any) -> dict[str, Any]:
    """``get_params(deep=False)`` without the parameters still at their defaults."""
    try:
        signature = inspect.signature(type(estimator).__init__)
    except (TypeError, ValueError):
        return dict(estimator.get_params(deep=False))
    defaults = {
        p.name: p.default
        for p in signature.parameters.values()
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }
    return {
        key: value
        for key, value in estimator.get_params(deep=False).items()
        if not _is_default(value, defaults.get(key, inspect.Parameter.empty))
    }


def _pandas_index(value: Any) -> bool:
    """A pandas Index (ColumnTransformer columns such as ``df.columns``), if pandas is loaded."""
    pandas = sys.modules.get("pandas")
    return pandas is not None and isinstance(value, pandas.Index)


def _to_literal(value: Any, path: str) -> Any:
    """A JSON literal for a Python or numpy scalar, or SpecError."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return _check_literal(int(value), path)
    if isinstance(value, np.floating) and value.dtype.name in NUMPY_FLOATS:
        # its own arithmetic (scikit-learn sets the grid's float32 as it is)
        return {"numpy": value.dtype.name, "value": _to_literal(float(value), path)}
    if isinstance(value, (float, np.floating)):
        number = float(value)
        if math.isfinite(number) and number != value:  # a longdouble beyond float64
            raise SpecError(path, f"{value!r} does not fit a float64")
        if not math.isfinite(number):
            return {"float": special_float_name(number)}
        return _check_literal(number, path)
    raise SpecError(path, f"unsupported value of type {type(value).__name__}")


def _plain(value: Any, path: str) -> Any:
    """A literal where a spec takes plain numbers only (a dict key): a
    numpy float32 as the float it equals."""
    if isinstance(value, np.floating):
        value = float(value)
    return _to_literal(value, path)


_KEEPS_STATE = (
    "{} keeps its state through clone (a fitted model): a spec carries parameters only, "
    "so it cannot be sent; fit the model within the search"
)


def keeps_state_through_clone(cls: type) -> bool:
    """Whether ``clone`` of a ``cls`` keeps what it holds (FrozenEstimator
    keeps a fitted model, which a search uses as it is): its parameters do
    not say what it computes."""
    from sklearn.base import BaseEstimator

    clone_of = getattr(cls, "__sklearn_clone__", None)
    return clone_of is not None and clone_of is not BaseEstimator.__sklearn_clone__


def _estimator_spec(estimator: Any, allow: Allowlist, path: str) -> dict[str, Any]:
    cls = type(estimator)
    name = allow.name_of_class(cls)
    if name is None:
        raise SpecError(
            _join(path, "class"),
            f"{cls.__module__}.{cls.__qualname__} is not on the allowlist",
        )
    if keeps_state_through_clone(cls):
        # a spec carries parameters only, so the service's would be unfitted
        raise SpecError(_join(path, "class"), _KEEPS_STATE.format(cls.__name__))
    params = {}
    for key, value in _changed_params(estimator).items():
        where = _join(path, f"params.{key}")
        if key in _NAMED_ENTRIES and isinstance(value, list):
            # (name, estimator[, columns]) entries stay plain lists: the
            # builder makes them the tuples scikit-learn expects
            params[key] = [
                _to_spec(list(e) if isinstance(e, tuple) else e, allow, f"{where}[{i}]")
                for i, e in enumerate(value)
            ]
        else:
            params[key] = _to_spec(value, allow, where)
    spec: dict[str, Any] = {"class": name, "params": params}
    config = getattr(estimator, "_sklearn_output_config", None)
    transform = config.get("transform") if isinstance(config, Mapping) else None
    if transform is not None:  # set_output(transform=...) was called
        if transform not in OUTPUT_CONTAINERS:
            raise SpecError(_join(path, "output.transform"), f"unsupported output {transform!r}")
        spec["output"] = {"transform": transform}
    return spec


def _to_spec(value: Any, allow: Allowlist, path: str) -> Any:
    if value is None or isinstance(value, (bool, str, int, float, np.generic)):
        return _to_literal(value, path)
    constant = constant_name(value)
    if constant is not None:
        return {"constant": constant}
    if isinstance(value, (list, tuple)):
        items = [_to_spec(v, allow, f"{path}[{i}]") for i, v in enumerate(value)]
        return {"tuple": items} if isinstance(value, tuple) else items
    if isinstance(value, np.random.RandomState):
        # its state, which every clone of the estimator copies (scikit-learn's
        # search fits each clone from that state)
        kind, key, pos, has_gauss, cached = value.get_state(legacy=True)
        return {
            "RandomState": {
                "key": [int(k) for k in key],
                "pos": int(pos),
                "has_gauss": int(has_gauss),
                "cached_gaussian": _to_literal(float(cached), path),
            }
        }
    if isinstance(value, (set, frozenset)):
        if not all(isinstance(v, _SET_ITEMS) for v in value):
            raise SpecError(path, "a set is expressible when it holds numbers, strings or bools")
        items = sorted((_to_spec(v, allow, path) for v in value), key=json.dumps)
        return {type(value).__name__: items}
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biufU":
            raise SpecError(path, f"an array of dtype {value.dtype} is not expressible")
        return _to_spec(value.tolist(), allow, path)
    if _pandas_index(value):
        return _to_spec(value.tolist(), allow, path)
    if isinstance(value, type):
        type_name = f"{value.__module__}.{value.__name__}"
        if TYPE_VALUES.get(type_name) is value:
            return {"type": type_name}
        raise SpecError(path, f"a class ({value.__qualname__}) is not a value a spec can hold")
    if hasattr(value, "get_params"):
        return _estimator_spec(value, allow, path)
    name = allow.name_of_class(type(value))
    if name is not None:  # a helper object, such as make_column_selector(...)
        return {"class": name, "params": _attribute_params(value, allow, path)}
    if isinstance(value, slice):
        raise SpecError(path, "a slice is not expressible; list the columns or indices instead")
    if isinstance(value, Mapping):
        items = []
        for i, (k, v) in enumerate(value.items()):
            if not isinstance(k, (str, int, float, bool, np.generic)):
                raise SpecError(
                    f"{path}[{i}]", f"a dict key of type {type(k).__name__} is not expressible"
                )
            items.append([_plain(k, f"{path}[{i}][0]"), _to_spec(v, allow, f"{path}[{i}][1]")])
        return {"dict": items}
    if callable(value):
        name = allow.name_of_function(value)
        if name is None:
            label = getattr(value, "__qualname__", None) or type(value).__name__
            raise SpecError(path, f"function {label} is not on the allowlist")
        return {"function": name}
    raise SpecError(path, f"unsupported value of type {type(value).__name__}")


#: cross-validation splitters a job may name in ``cv``
SPLITTERS = (
    "sklearn.model_selection.KFold",
    "sklearn.model_selection.StratifiedKFold",
    "sklearn.model_selection.GroupKFold",
    "sklearn.model_selection.StratifiedGroupKFold",
    "sklearn.model_selection.ShuffleSplit",
    "sklearn.model_selection.StratifiedShuffleSplit",
    "sklearn.model_selection.GroupShuffleSplit",
    "sklearn.model_selection.TimeSeriesSplit",
    "sklearn.model_selection.LeaveOneGroupOut",
    "sklearn.model_selection.LeavePGroupsOut",
    "sklearn.model_selection.LeaveOneOut",
    "sklearn.model_selection.RepeatedKFold",
    "sklearn.model_selection.RepeatedStratifiedKFold",
    "sklearn.model_selection.PredefinedSplit",
)


@functools.lru_cache(maxsize=1)
def splitter_allowlist() -> Allowlist:
    """The splitters of :data:`SPLITTERS`, the only classes ``cv`` may name."""
    import sklearn.model_selection as ms

    allow = Allowlist()
    for name in SPLITTERS:
        allow.add(name, getattr(ms, name.rsplit(".", 1)[1]))
    return allow


def _draws_from_a_generator(cv: Any) -> bool:
    """Whether splitter ``cv`` draws its folds from a generator of this
    process: its ``random_state`` a RandomState, or None where it shuffles."""
    state = getattr(cv, "random_state", 0)
    if isinstance(state, np.random.RandomState):
        return True
    return state is None and bool(getattr(cv, "shuffle", True))


def explicit_folds(
    cv: Any,
    X: Any,
    y: Any = None,
    groups: Any = None,
    path: str = "cv",
    n_rows: Callable[[], int] | None = None,
) -> Any:
    """``cv`` as what travels: its (train, test) folds as a list of int64
    index pairs when it is given as folds (a list, a generator) or is a
    splitter the service does not know or one drawing from a generator of
    this process (a RandomState, or None where it shuffles; split here, as
    scikit-learn would split it, with ``groups``); any other ``cv`` as is,
    for :func:`cv_to_spec`.

    A fold's parts are integer indices or boolean masks (as scikit-learn
    indexes with either), kept in their order; a mask must have X's
    ``n_rows()`` (by default ``len(X)``).
    """
    if cv is None or isinstance(cv, (int, np.integer, str, bytes, Mapping)):
        return cv
    if hasattr(cv, "split"):
        if not hasattr(cv, "get_n_splits"):
            raise SpecError(
                path, f"{type(cv).__name__} has split but no get_n_splits: a splitter has both"
            )
        # a splitter drawing from a RandomState cannot travel: split here, once,
        # advancing the generator as scikit-learn's search does; so too one
        # that shuffles with random_state=None, drawing from numpy's global
        # generator (a notebook's np.random.seed gives scikit-learn its folds)
        drawing = _draws_from_a_generator(cv)
        # data given by dataset id is not here to split: a splitter drawing
        # from numpy's global generator draws on the service then
        by_id = next(
            (n for n, v in (("X", X), ("y", y), ("groups", groups)) if isinstance(v, str)), None
        )
        if splitter_allowlist().name_of_class(type(cv)) is not None and (
            not drawing or (by_id is not None and cv.random_state is None)
        ):
            return cv
        if by_id is not None:
            why = (
                "draws its folds from a RandomState"
                if drawing
                else "is not a splitter the service knows"
            )
            raise SpecError(
                path,
                f"{type(cv).__name__} {why}, and {by_id} is a dataset id, so it cannot split "
                "X here: pass its folds instead",
            )
        found = list(cv.split(X, y, groups=groups))
        n_splits = cv.get_n_splits(X, y, groups=groups)
        if n_splits != len(found):
            raise SpecError(
                path,
                "cv.split and cv.get_n_splits returned inconsistent results: "
                f"expected {n_splits} splits, got {len(found)}",
            )
        cv = found
    if not isinstance(cv, Iterable):
        return cv  # cv_to_spec names what is wrong
    folds = []
    for i, fold in enumerate(cv):
        parts = [np.asarray(part) for part in fold] if isinstance(fold, Iterable) else []
        # an empty list reads as float64: it is an empty index all the same
        parts = [p.astype(np.int64) if p.size == 0 else p for p in parts]
        if len(parts) != 2 or any(p.ndim != 1 or p.dtype.kind not in "iub" for p in parts):
            raise SpecError(f"{path}[{i}]", "a fold is a pair of integer index arrays (or masks)")
        for p in parts:
            if p.dtype.kind == "u" and p.size and int(p.max()) > np.iinfo(np.int64).max:
                raise SpecError(f"{path}[{i}]", f"index {int(p.max())} is outside X's rows")
            if p.dtype.kind == "b" and len(p) != (n := len(X) if n_rows is None else n_rows()):
                raise SpecError(
                    f"{path}[{i}]", f"a boolean mask of {len(p)} rows does not match X's {n}"
                )
        train, test = (
            np.flatnonzero(p) if p.dtype.kind == "b" else p.astype(np.int64, copy=False)
            for p in parts
        )
        folds.append((train, test))
    if not folds:
        # scikit-learn's words (its search finds no fits), naming the item
        raise SpecError(path, f"cv holds no folds: {NO_FITS}")
    return folds


def cv_to_spec(cv: Any, path: str = "cv") -> Any:
    """The JSON for a ``cv`` argument: ``None``, a number of folds or a splitter spec.

    Splitters have no ``get_params``; like their repr, their parameters are
    read from the attributes named after the constructor's arguments.
    """
    if cv is None or (isinstance(cv, (int, np.integer)) and not isinstance(cv, bool)):
        return None if cv is None else int(cv)  # np.int64(3) as scikit-learn takes it
    allow = splitter_allowlist()
    name = allow.name_of_class(type(cv))
    if name is None:
        raise SpecError(
            path,
            f"{type(cv).__name__} is not a splitter the service knows; use a number of "
            f"folds or one of {', '.join(n.rsplit('.', 1)[1] for n in SPLITTERS)}",
        )
    return {"class": name, "params": _attribute_params(cv, allow, path)}


def _attribute_params(obj: Any, allow: Allowlist, path: str) -> dict[str, Any]:
    """The non-default parameters of an object without ``get_params`` (a
    splitter, a column selector), read as its repr reads them: from the
    attributes named after its constructor's arguments."""
    params = {}
    for p in inspect.signature(type(obj).__init__).parameters.values():
        if p.name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        value = getattr(obj, p.name, p.default)
        if p.name == "n_splits" and hasattr(obj, "cvargs"):  # Repeated*KFold keep it there
            value = obj.cvargs.get("n_splits", value)
        if not _is_default(value, p.default):
            params[p.name] = _to_spec(value, allow, _join(path, f"params.{p.name}"))
    return params


def to_spec(obj: Any, allow: Allowlist | None = None, path: str = "") -> Any:
    """The JSON spec value for ``obj``: an estimator spec, a function reference or a literal.

    Estimators keep only the parameters that differ from their constructor
    defaults; tuples become ``{"tuple": [...]}``, numeric arrays lists and
    numpy scalars Python ones. Anything a server could not build back (a
    lambda, a class off the allowlist, a slice, ...) raises
    :class:`SpecError` with its path (``path`` prefixes it).
    """
    return _to_spec(obj, default_allowlist() if allow is None else allow, path)


def _grid_values(values: Any, allow: Allowlist, where: str, what: str) -> list[Any]:
    if isinstance(values, np.ndarray) and values.ndim == 1:
        values = list(values)
    if not isinstance(values, Sequence) or isinstance(values, str) or not values:
        raise SpecError(where, f"each {what} entry is a non-empty list of values")
    return [_to_spec(v, allow, f"{where}[{i}]") for i, v in enumerate(values)]


def to_grid(grid: Any, allow: Allowlist | None = None, path: str = "param_grid") -> Any:
    """The JSON form of a parameter grid (dict or list of dicts of value lists)."""
    allow = default_allowlist() if allow is None else allow
    if isinstance(grid, (list, tuple)):
        return [to_grid(g, allow, f"{path}[{i}]") for i, g in enumerate(grid)]
    if not isinstance(grid, Mapping):
        raise SpecError(path, "a parameter grid is a dict of lists")
    out: dict[str, list[Any]] = {}
    for key, values in grid.items():
        where = f"{path}.{key}"
        if not isinstance(key, str):
            raise SpecError(where, "a parameter name is a string")
        out[key] = _grid_values(values, allow, where, "grid")
    return out


def _distribution_spec(value: Any, allow: Allowlist, path: str) -> dict[str, Any]:
    import scipy.stats

    generator: Any = getattr(value, "dist", None)
    name = getattr(generator, "name", None)
    if not isinstance(name, str) or name not in allow.distributions:
        raise SpecError(
            f"{path}.distribution",
            f"only frozen scipy.stats distributions named {sorted(allow.distributions)} "
            f"are expressible, not {type(value).__name__} {name or ''}".rstrip(),
        )
    known: Any = getattr(scipy.stats, name)
    args = list(getattr(value, "args", ()))
    kwds = dict(getattr(value, "kwds", {}))
    try:
        same = type(generator) is type(known) and type(value) is type(known(*args, **kwds))
    except Exception:
        same = False
    if not same:
        raise SpecError(path, f"{name} is not the scipy.stats distribution of that name")
    return {
        "distribution": name,
        "args": [_argument(a, p) for a, p in _arg_paths(args, f"{path}.args")],
        "kwds": {k: _argument(v, f"{path}.kwds.{k}") for k, v in kwds.items()},
    }


def _argument(value: Any, path: str) -> Any:
    """A distribution argument as a spec writes it: a number, or a numpy
    float32 or float16 tagged with its type (scipy draws with it)."""
    literal = _to_literal(value, path)
    _number(literal, path)
    return literal


def _arg_paths(args: list[Any], path: str) -> list[tuple[Any, str]]:
    return [(a, f"{path}[{i}]") for i, a in enumerate(args)]


def to_distributions(
    dists: Any, allow: Allowlist | None = None, path: str = "param_distributions"
) -> Any:
    """The JSON form of randomized-search distributions (dict or list of dicts).

    A value is a list of candidate values (each through :func:`to_spec`) or a
    frozen ``scipy.stats`` distribution named in ``allow.distributions``.
    """
    allow = default_allowlist() if allow is None else allow
    if isinstance(dists, (list, tuple)):
        return [to_distributions(d, allow, f"{path}[{i}]") for i, d in enumerate(dists)]
    if not isinstance(dists, Mapping):
        raise SpecError(path, "parameter distributions are a dict")
    out: dict[str, Any] = {}
    for key, value in dists.items():
        where = f"{path}.{key}"
        if not isinstance(key, str):
            raise SpecError(where, "a parameter name is a string")
        if hasattr(value, "rvs"):
            out[key] = _distribution_spec(value, allow, where)
        else:
            out[key] = _grid_values(value, allow, where, "distribution")
    return out


# -- scorers: make_scorer(...) <-> JSON --------------------------------------------------------

#: metric functions of ``sklearn.metrics`` a scorer spec may name
SCORER_FUNCTIONS = tuple(
    """accuracy_score balanced_accuracy_score top_k_accuracy_score average_precision_score
    brier_score_loss log_loss f1_score fbeta_score precision_score recall_score
    jaccard_score matthews_corrcoef cohen_kappa_score hamming_loss zero_one_loss
    roc_auc_score hinge_loss class_likelihood_ratios explained_variance_score max_error
    mean_absolute_error mean_squared_error root_mean_squared_error mean_squared_log_error
    root_mean_squared_log_error median_absolute_error mean_absolute_percentage_error
    r2_score mean_poisson_deviance mean_gamma_deviance mean_tweedie_deviance
    mean_pinball_loss d2_tweedie_score d2_pinball_score d2_absolute_error_score
    d2_log_loss_score d2_brier_score adjusted_rand_score rand_score
    adjusted_mutual_info_score mutual_info_score normalized_mutual_info_score
    homogeneity_score completeness_score v_measure_score fowlkes_mallows_score""".split()
)
_RESPONSE_METHODS = ("predict", "predict_proba", "decision_function")


def _scorer_functions() -> dict[str, Any]:
    import sklearn.metrics as metrics

    return {n: getattr(metrics, n) for n in SCORER_FUNCTIONS if hasattr(metrics, n)}


def scorer_to_spec(scorer: Any, path: str = "scoring") -> dict[str, Any]:
    """The JSON of a ``make_scorer(metric, ...)`` scorer of a scikit-learn metric."""
    from sklearn.metrics._scorer import _Scorer

    if type(scorer) is not _Scorer:
        raise SpecError(
            path,
            "only scorer names and make_scorer(...) of a scikit-learn metric can be sent; "
            f"a {type(scorer).__name__} cannot",
        )
    fn = scorer._score_func
    name = next((n for n, f in _scorer_functions().items() if f is fn), None)
    if name is None:
        label = getattr(fn, "__qualname__", type(fn).__name__)
        raise SpecError(_join(path, "function"), f"{label} is not a metric a scorer may name")
    allow = default_allowlist()
    kwargs = {k: _to_spec(v, allow, _join(path, f"kwargs.{k}")) for k, v in scorer._kwargs.items()}
    method = scorer._response_method
    return {
        "make_scorer": {
            "function": name,
            "greater_is_better": scorer._sign > 0,
            "response_method": method if isinstance(method, str) else list(method),
            "kwargs": kwargs,
        }
    }


def is_scorer_spec(value: Any) -> bool:
    """Whether ``value`` is a scorer spec (a dict of names may call a metric
    "make_scorer": its value is then a name, not an object)."""
    return (
        isinstance(value, Mapping)
        and set(value) == {"make_scorer"}
        and isinstance(value["make_scorer"], Mapping)
    )


def build_scorer(value: Any, path: str = "scoring") -> Any:
    """The scorer a :func:`scorer_to_spec` JSON describes (checked like any spec)."""
    from sklearn.metrics import make_scorer

    spec = value.get("make_scorer") if isinstance(value, Mapping) else None
    where = _join(path, "make_scorer")
    if not isinstance(spec, Mapping):
        raise SpecError(path, 'a scorer is {"make_scorer": {"function": ..., ...}}')
    unknown = set(spec) - {"function", "greater_is_better", "response_method", "kwargs"}
    if unknown:
        raise SpecError(where, f"unknown keys {sorted(unknown)}")
    functions = _scorer_functions()
    named = spec.get("function")
    fn = functions.get(named) if isinstance(named, str) else None
    if fn is None:
        raise SpecError(_join(where, "function"), f"{spec.get('function')!r} is not a metric")
    greater = spec.get("greater_is_better", True)
    if not isinstance(greater, bool):
        raise SpecError(_join(where, "greater_is_better"), "greater_is_better is true or false")
    method = spec.get("response_method", "predict")
    methods = [method] if isinstance(method, str) else method
    if not (isinstance(methods, list) and methods and all(m in _RESPONSE_METHODS for m in methods)):
        raise SpecError(
            _join(where, "response_method"), f"response_method is among {list(_RESPONSE_METHODS)}"
        )
    kwargs = spec.get("kwargs") or {}
    if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
        raise SpecError(_join(where, "kwargs"), "kwargs is an object")
    allow = default_allowlist()
    built = {k: build_value(v, allow, _join(where, f"kwargs.{k}")) for k, v in kwargs.items()}
    try:
        return make_scorer(
            fn,
            greater_is_better=greater,
            response_method=method if isinstance(method, str) else tuple(methods),
            **built,
        )
    except (TypeError, ValueError) as exc:
        raise SpecError(where, str(exc)) from None
