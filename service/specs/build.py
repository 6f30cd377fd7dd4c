"""Estimators from JSON specs, through an exact-name allowlist only.

A spec is plain JSON: ``{"class": "sklearn.decomposition.PCA", "params":
{...}}``. A parameter value is a literal (number, string, bool, null, or a
list of them), a nested spec, a function reference ``{"function":
"sklearn.feature_selection.f_classif"}``, or a list that holds specs
(Pipeline ``steps`` as ``[name, spec]``, ColumnTransformer ``transformers``
as ``[name, spec, columns]``); the entries of ``steps``, ``transformer_list``,
``transformers`` and ``estimators`` become the tuples scikit-learn expects.

Nothing is imported by a name taken from a request: names are looked up in
an :class:`Allowlist` computed from scikit-learn's own ``all_estimators()``
(public import paths only), a short list of named functions, and names the
operator adds. Every refusal is a :class:`SpecError` naming the offending
item by its path in the spec (``steps[1][1].params.C``).
"""

from __future__ import annotations

import importlib
import inspect
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

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


#: Composite parameters whose entries scikit-learn takes as tuples:
#: ``(name, estimator)`` or ``(name, transformer, columns)``.
_NAMED_ENTRIES = frozenset({"steps", "transformer_list", "transformers", "estimators"})


class SpecError(ValueError):
    """A spec cannot be built; ``path`` points at the offending item."""

    def __init__(self, path: str, message: str):
        self.path = path or "<root>"
        self.message = message
        super().__init__(f"{self.path}: {message}")


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


@dataclass
class Allowlist:
    """The exact names a spec may use, each bound to its object."""

    classes: dict[str, type] = field(default_factory=dict)
    functions: dict[str, Any] = field(default_factory=dict)

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
                allow.classes[path] = est_cls
        for name in (*DEFAULT_FUNCTIONS, *extra):
            module, _, attr = name.rpartition(".")
            obj = getattr(importlib.import_module(module), attr)
            if isinstance(obj, type):
                allow.classes[name] = obj
            else:
                allow.functions[name] = obj
        return allow

    def name_of_class(self, cls: type) -> str | None:
        for name, known in self.classes.items():
            if known is cls:
                return name
        return None


def _check_literal(value: Any, path: str) -> Any:
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        if abs(value) > 2**63:
            raise SpecError(path, f"integer {value} is out of range")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise SpecError(path, f"non-finite number {value!r} is not accepted")
        return value
    raise SpecError(path, f"unsupported value of type {type(value).__name__}")


def build_value(value: Any, allow: Allowlist, path: str) -> Any:
    """Turn one spec value into the Python object it stands for."""
    if isinstance(value, Mapping):
        if "class" in value:
            return build_estimator(value, allow, path)
        if set(value) == {"function"}:
            name = value["function"]
            if not isinstance(name, str) or name not in allow.functions:
                raise SpecError(path, f"function {name!r} is not on the allowlist")
            return allow.functions[name]
        raise SpecError(path, "an object must be an estimator spec or a function reference")
    if isinstance(value, list):
        return [build_value(v, allow, f"{path}[{i}]") for i, v in enumerate(value)]
    return _check_literal(value, path)


def build_estimator(spec: Any, allow: Allowlist, path: str = "") -> Any:
    """Build the (unfitted) estimator a spec describes."""
    if not isinstance(spec, Mapping) or "class" not in spec:
        raise SpecError(path, 'an estimator spec is an object with a "class"')
    unknown = set(spec) - {"class", "params"}
    if unknown:
        raise SpecError(path, f"unknown keys {sorted(unknown)}")
    name = spec["class"]
    if not isinstance(name, str) or name not in allow.classes:
        raise SpecError(f"{path}.class" if path else "class", f"{name!r} is not on the allowlist")
    cls = allow.classes[name]
    params = spec.get("params") or {}
    if not isinstance(params, Mapping):
        raise SpecError(f"{path}.params", "params must be an object")
    accepted = {
        p.name
        for p in inspect.signature(cls).parameters.values()
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }
    built = {}
    for key, value in params.items():
        where = f"{path}.params.{key}" if path else f"params.{key}"
        if key not in accepted:
            raise SpecError(where, f"{name} has no parameter {key!r}")
        built[key] = build_value(value, allow, where)
        if key in _NAMED_ENTRIES and isinstance(built[key], list):
            built[key] = [tuple(e) if isinstance(e, list) else e for e in built[key]]
    try:
        return cls(**built)
    except Exception as exc:  # constructors only store arguments; be safe anyway
        raise SpecError(path, f"{name}({', '.join(built)}) failed: {exc}") from None


def build_grid(estimator: Any, grid: Any, allow: Allowlist, path: str = "param_grid") -> Any:
    """Build a parameter grid (dict or list of dicts), checking every key exists."""
    from sklearn.base import clone

    if isinstance(grid, list):
        return [build_grid(estimator, g, allow, f"{path}[{i}]") for i, g in enumerate(grid)]
    if not isinstance(grid, Mapping) or not grid:
        raise SpecError(path, "a parameter grid is a non-empty object of lists")
    out: dict[str, list[Any]] = {}
    for key, values in grid.items():
        where = f"{path}.{key}"
        if not isinstance(values, list) or not values:
            raise SpecError(where, "each grid entry is a non-empty list of values")
        out[key] = [build_value(v, allow, f"{where}[{i}]") for i, v in enumerate(values)]
        try:
            clone(estimator).set_params(**{key: out[key][0]})
        except ValueError as exc:
            raise SpecError(where, f"the estimator has no parameter {key!r}: {exc}") from None
    return out
