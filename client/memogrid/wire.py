"""A lossless JSON codec for ``cv_results_`` and the other results of a search.

``encode_cv_results`` turns scikit-learn's ``cv_results_`` (numpy arrays,
masked ``param_*`` arrays, the ``params`` list of dicts) into plain JSON that
passes ``json.dumps(..., allow_nan=False)``; ``decode_cv_results`` gives back
the same keys in the same order, the same dtypes, bit-identical numbers and
the same masks, with estimators rebuilt from their specs.

The encoded form is ``{"version": 1, "columns": [column, ...]}``, one column
per key, in order::

    {"name": "mean_test_score", "type": "ndarray", "dtype": "float64",
     "values": [0.93, "NaN", 0.5]}
    {"name": "param_clf", "type": "masked", "dtype": "object",
     "values": [{"class": "sklearn.svm.SVC", "params": {}}, null],
     "mask": [false, true]}
    {"name": "params", "type": "records",
     "values": [{"clf": {"class": "sklearn.svm.SVC", "params": {}}, "clf__C": 0.1}]}

Floats are JSON numbers when finite (Python's ``repr`` round-trips every
double exactly, ``-0.0`` included) and strings otherwise: ``"NaN"``,
``"Infinity"``, ``"-Infinity"``, and ``"NaN:<hex bits>"`` for a NaN whose
bits differ from the dtype's canonical quiet NaN (so even the sign and
payload of a NaN survive). A ``shape`` is added for arrays that are not 1-d.
Under a mask the values are ``null``; they decode to ``None`` in object
arrays (as scikit-learn leaves them) and to zero otherwise (scikit-learn
leaves uninitialised memory there).

Single values (``best_params_``, ``best_score_``, the ``params`` entries and
the elements of object arrays) use a tagged encoding, see
:func:`encode_value`: JSON literals stand for themselves; a JSON object is
either an estimator spec / function reference (see :mod:`memogrid.spec`) or
one of the tags ``{"float": "NaN"}``, ``{"numpy": "float64", "value": 0.1}``,
``{"tuple": [...]}``, ``{"dict": {...}}`` (string keys) or ``{"dict": [[key,
value], ...]}`` (other keys).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from memogrid.spec import SpecError, build_value, default_allowlist, to_spec

__all__ = [
    "WIRE_VERSION",
    "WireError",
    "decode_cv_results",
    "decode_value",
    "encode_cv_results",
    "encode_value",
]

WIRE_VERSION = 1

#: how a job's warnings begin the note that the service refit the best
#: candidate but could not store the model (skops cannot hold every
#: estimator, Birch for one); the reason follows
ESTIMATOR_NOT_STORED = "the refit best estimator could not be stored"

#: dtype names a column may carry (anything else is refused when decoding)
_NUMERIC_DTYPES = frozenset(
    {
        "bool",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        "float16",
        "float32",
        "float64",
    }
)
_STR_DTYPE = re.compile(r"^[<>|=]?U[0-9]{1,9}$")

_TAGS = ("float", "numpy", "tuple", "dict")

ToJson = Callable[[Any], Any]
#: rebuilds a spec found at a path (the path says where a helper such as a
#: splitter may stand, and names the place in errors)
FromJson = Callable[[Any, str], Any]


class WireError(ValueError):
    """An encoded result is malformed, or a result holds something JSON cannot carry."""


# -- floats ----------------------------------------------------------------------------------


def _uint_for(dtype: np.dtype[Any]) -> np.dtype[Any]:
    return np.dtype(f"u{dtype.itemsize}")


def _canonical_nan_bits(dtype: np.dtype[Any]) -> int:
    return int(np.array(np.nan, dtype=dtype).view(_uint_for(dtype)))


def _float_tokens(arr: np.ndarray) -> list[Any]:
    """The JSON values of a flat float array: numbers, or strings for the non-finite."""
    values: list[Any] = arr.tolist()
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        bits = arr.view(_uint_for(arr.dtype))
        canonical = _canonical_nan_bits(arr.dtype)
        width = 2 * arr.dtype.itemsize
        for i in bad.tolist():
            value = values[i]
            if math.isnan(value):
                b = int(bits[i])
                values[i] = "NaN" if b == canonical else f"NaN:{b:0{width}x}"
            else:
                values[i] = "Infinity" if value > 0 else "-Infinity"
    return values


def float_token(value: float) -> Any:
    """One float as a JSON value: a number, or a string for the non-finite."""
    return _float_tokens(np.array([value], dtype=np.float64))[0]


def _floats_from_tokens(values: list[Any], dtype: np.dtype[Any], where: str) -> np.ndarray:
    out = np.zeros(len(values), dtype=dtype)
    bits = out.view(_uint_for(dtype))
    canonical = _canonical_nan_bits(dtype)
    for i, token in enumerate(values):
        if token is None:  # under a mask
            continue
        if isinstance(token, bool):
            raise WireError(f"{where}[{i}]: {token!r} is not a float")
        if isinstance(token, (int, float)):
            out[i] = token
        elif token == "NaN":
            bits[i] = canonical
        elif token == "Infinity":
            out[i] = np.inf
        elif token == "-Infinity":
            out[i] = -np.inf
        elif isinstance(token, str) and token.startswith("NaN:"):
            try:
                b = int(token[4:], 16)
                if not math.isnan(float(np.array(b, dtype=bits.dtype).view(dtype))):
                    raise ValueError
            except (ValueError, OverflowError):
                raise WireError(f"{where}[{i}]: {token!r} is not a NaN") from None
            bits[i] = b
        else:
            raise WireError(f"{where}[{i}]: {token!r} is not a float")
    return out


def float_from_token(token: Any, where: str) -> float:
    return float(_floats_from_tokens([token], np.dtype(np.float64), where)[0])


# -- single values ---------------------------------------------------------------------------


def _wrap(exc: SpecError, prefix: str) -> SpecError:
    """``exc`` with its path put under ``prefix``."""
    if exc.path == "<root>":
        return SpecError(prefix, exc.message)
    sep = "" if exc.path.startswith("[") else "."
    return SpecError(f"{prefix}{sep}{exc.path}", exc.message)


def _encode(value: Any, to_json: ToJson, path: str) -> Any:
    if value is None or type(value) in (bool, str, int):
        return value
    if type(value) is float:
        token = float_token(value)
        return token if isinstance(token, float) else {"float": token}
    if isinstance(value, np.generic) and value.dtype.name in _NUMERIC_DTYPES:
        if value.dtype.kind == "f":
            token = _float_tokens(np.array([value]))[0]
        else:
            token = value.item()
        return {"numpy": value.dtype.name, "value": token}
    if isinstance(value, list):
        return [_encode(v, to_json, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, tuple):
        return {"tuple": [_encode(v, to_json, f"{path}[{i}]") for i, v in enumerate(value)]}
    if isinstance(value, dict):
        if all(type(k) is str for k in value):
            return {"dict": {k: _encode(v, to_json, f"{path}.{k}") for k, v in value.items()}}
        return {
            "dict": [
                [_encode(k, to_json, f"{path}<key>"), _encode(v, to_json, f"{path}[{k!r}]")]
                for k, v in value.items()
            ]
        }
    try:
        out = to_json(value)
    except SpecError as exc:
        raise _wrap(exc, path) from None
    if isinstance(out, Mapping) and set(out) & set(_TAGS) and "class" not in out:
        raise WireError(f"{path}: the value encoder returned a reserved tag {sorted(out)}")
    return out


def _decode(value: Any, build: FromJson, path: str) -> Any:
    if value is None or isinstance(value, (bool, str, int, float)):
        return value
    if isinstance(value, list):
        return [_decode(v, build, f"{path}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, Mapping):
        raise WireError(f"{path}: unexpected JSON value of type {type(value).__name__}")
    keys = set(value)
    if keys == {"float"}:
        return float_from_token(value["float"], path)
    if keys == {"numpy", "value"}:
        dtype = _checked_dtype(value["numpy"], path, numeric_only=True)
        if dtype.kind == "f":
            return _floats_from_tokens([value["value"]], dtype, path)[0]
        if dtype.kind == "b" and not isinstance(value["value"], bool):
            raise WireError(f"{path}: {value['value']!r} is not a bool")
        if dtype.kind in "iu" and type(value["value"]) is not int:
            raise WireError(f"{path}: {value['value']!r} is not an integer")
        try:
            return np.array(value["value"], dtype=dtype)[()]
        except OverflowError:
            raise WireError(f"{path}: {value['value']!r} does not fit {dtype}") from None
    if keys == {"tuple"} and isinstance(value["tuple"], list):
        return tuple(_decode(v, build, f"{path}[{i}]") for i, v in enumerate(value["tuple"]))
    if keys == {"dict"}:
        items = value["dict"]
        if isinstance(items, Mapping):
            return {k: _decode(v, build, f"{path}.{k}") for k, v in items.items()}
        if isinstance(items, list) and all(isinstance(e, list) and len(e) == 2 for e in items):
            out = {}
            for i, (k, v) in enumerate(items):
                key = _decode(k, build, f"{path}<key {i}>")
                where = f"{path}.{key}" if isinstance(key, str) else f"{path}[{key!r}]"
                try:
                    out[key] = _decode(v, build, where)
                except TypeError:
                    raise WireError(f"{path}: unhashable key {key!r}") from None
            return out
        raise WireError(f"{path}: a dict is an object or a list of [key, value] pairs")
    try:
        return build(value, path)
    except SpecError as exc:  # under ``path``, unless the builder put it there
        raise (exc if exc.path.startswith(path) else _wrap(exc, path)) from None


def _default_build(spec: Any, path: str) -> Any:
    return build_value(spec, default_allowlist(), path)


def encode_value(value: Any, value_to_json: ToJson = to_spec) -> Any:
    """The tagged JSON form of one result value (``best_params_``, ``best_score_``, ...).

    Python literals stay themselves, non-finite floats, numpy scalars,
    tuples and dicts get a tag, and anything else (estimators, functions) goes
    through ``value_to_json`` (by default :func:`memogrid.spec.to_spec` with
    the default allowlist).
    """
    return _encode(value, value_to_json, "")


def decode_value(data: Any, build: FromJson | None = None) -> Any:
    """The value :func:`encode_value` encoded; ``build`` rebuilds specs (default allowlist)."""
    return _decode(data, build or _default_build, "")


# -- columns ---------------------------------------------------------------------------------


def _dtype_name(dtype: np.dtype[Any], where: str) -> str:
    if dtype.kind == "O":
        return "object"
    if dtype.kind == "U":
        return dtype.str
    if dtype.name in _NUMERIC_DTYPES:
        return dtype.name
    raise WireError(f"{where}: arrays of dtype {dtype} are not supported")


def _checked_dtype(name: Any, where: str, numeric_only: bool = False) -> np.dtype[Any]:
    if isinstance(name, str):
        if name in _NUMERIC_DTYPES:
            return np.dtype(name)
        if not numeric_only and (name == "object" or _STR_DTYPE.match(name)):
            return np.dtype(name)
    raise WireError(f"{where}: unsupported dtype {name!r}")


def _encode_flat(flat: np.ndarray, to_json: ToJson, where: str) -> list[Any]:
    kind = flat.dtype.kind
    if kind == "f":
        return _float_tokens(flat)
    if kind in "biuU":
        values: list[Any] = flat.tolist()
        return values
    return [_encode(v, to_json, f"{where}[{i}]") for i, v in enumerate(flat)]


def _encode_column(name: str, value: Any, to_json: ToJson) -> dict[str, Any]:
    if isinstance(value, np.ma.MaskedArray):
        dtype = _dtype_name(value.dtype, name)
        mask = np.ma.getmask(value)
        flat = np.asarray(value.data).reshape(-1)
        values = _encode_flat(flat, to_json, name)
        column: dict[str, Any] = {"name": name, "type": "masked", "dtype": dtype}
        if mask is np.ma.nomask:
            column["values"], column["mask"] = values, False
        else:
            masked = np.asarray(mask).reshape(-1).tolist()
            column["values"] = [None if m else v for v, m in zip(values, masked, strict=True)]
            column["mask"] = masked
    elif isinstance(value, np.ndarray):
        dtype = _dtype_name(value.dtype, name)
        column = {"name": name, "type": "ndarray", "dtype": dtype}
        column["values"] = _encode_flat(value.reshape(-1), to_json, name)
    elif (
        isinstance(value, list)
        and value
        and all(isinstance(v, dict) and all(type(k) is str for k in v) for v in value)
    ):
        column = {
            "name": name,
            "type": "records",
            "values": [
                {k: _encode(v, to_json, f"{name}[{i}].{k}") for k, v in record.items()}
                for i, record in enumerate(value)
            ],
        }
        return column
    elif isinstance(value, list):
        return {"name": name, "type": "list", "values": _encode(value, to_json, name)}
    else:
        return {"name": name, "type": "value", "value": _encode(value, to_json, name)}
    if value.ndim != 1:
        column["shape"] = list(value.shape)
    return column


def encode_cv_results(
    results: Mapping[str, Any], value_to_json: ToJson = to_spec
) -> dict[str, Any]:
    """``cv_results_`` (or any dict of arrays, lists and values) as JSON-ready columns.

    ``value_to_json`` turns the objects JSON cannot hold (estimators,
    functions) into spec values; by default :func:`memogrid.spec.to_spec`
    with the default allowlist. Raises :class:`memogrid.spec.SpecError` (an
    object no spec can express, with its path under the column name) or
    :class:`WireError` (an unsupported dtype).
    """
    columns = []
    for name, value in results.items():
        if not isinstance(name, str):
            raise WireError(f"{name!r}: result keys are strings")
        columns.append(_encode_column(name, value, value_to_json))
    return {"version": WIRE_VERSION, "columns": columns}


def _decode_flat(
    values: list[Any], dtype: np.dtype[Any], build: FromJson, where: str
) -> np.ndarray:
    if dtype.kind == "f":
        return _floats_from_tokens(values, dtype, where)
    if dtype.kind == "O":
        out = np.empty(len(values), dtype=object)
        for i, v in enumerate(values):
            out[i] = _decode(v, build, f"{where}[{i}]")
        return out
    expected: tuple[type, ...] = {"b": (bool,), "i": (int,), "u": (int,), "U": (str,)}[dtype.kind]
    filled = []
    for i, v in enumerate(values):
        if v is None:  # under a mask
            v = expected[0]()
        elif not isinstance(v, expected) or (dtype.kind in "iu" and isinstance(v, bool)):
            raise WireError(f"{where}[{i}]: {v!r} is not a {dtype} value")
        filled.append(v)
    try:
        return np.array(filled, dtype=dtype).reshape(len(values))
    except OverflowError:
        raise WireError(f"{where}: a value does not fit {dtype}") from None


def _decode_column(column: Any, build: FromJson, i: int) -> tuple[str, Any]:
    if not isinstance(column, Mapping) or not isinstance(column.get("name"), str):
        raise WireError(f"columns[{i}]: a column is an object with a name")
    name, kind = column["name"], column.get("type")
    if kind == "value":
        return name, _decode(column.get("value"), build, name)
    values = column.get("values")
    if not isinstance(values, list):
        raise WireError(f"{name}: values must be a list")
    if kind == "list":
        return name, _decode(values, build, name)
    if kind == "records":
        out = []
        for j, record in enumerate(values):
            if not isinstance(record, Mapping):
                raise WireError(f"{name}[{j}]: a record is an object")
            out.append({k: _decode(v, build, f"{name}[{j}].{k}") for k, v in record.items()})
        return name, out
    if kind not in ("ndarray", "masked"):
        raise WireError(f"{name}: unknown column type {kind!r}")
    dtype = _checked_dtype(column.get("dtype"), name)
    flat = _decode_flat(values, dtype, build, name)
    shape = column.get("shape", [len(values)])
    if (
        not isinstance(shape, list)
        or not all(type(n) is int and n >= 0 for n in shape)
        or math.prod(shape) != len(values)
    ):
        raise WireError(f"{name}: shape {shape!r} does not match {len(values)} values")
    data = flat.reshape(shape)
    if kind == "ndarray":
        return name, data
    mask = column.get("mask")
    if mask is False:
        return name, np.ma.MaskedArray(data)
    if (
        not isinstance(mask, list)
        or len(mask) != len(values)
        or not all(isinstance(m, bool) for m in mask)
    ):
        raise WireError(f"{name}: mask must be a list of {len(values)} booleans")
    return name, np.ma.MaskedArray(data, mask=np.array(mask, dtype=bool).reshape(shape))


def decode_cv_results(data: Mapping[str, Any], build: FromJson | None = None) -> dict[str, Any]:
    """The dict :func:`encode_cv_results` encoded: same keys, order, dtypes, bits and masks.

    ``build`` turns a spec value back into its object (by default
    :func:`memogrid.spec.build_value` with the default allowlist). Raises
    :class:`WireError` on a malformed payload and
    :class:`memogrid.spec.SpecError` on a spec that cannot be built.
    """
    if not isinstance(data, Mapping) or data.get("version") != WIRE_VERSION:
        raise WireError(f"not an encoded result of version {WIRE_VERSION}")
    columns = data.get("columns")
    if not isinstance(columns, list):
        raise WireError("columns must be a list")
    out: dict[str, Any] = {}
    for i, column in enumerate(columns):
        name, value = _decode_column(column, build or _default_build, i)
        if name in out:
            raise WireError(f"{name}: duplicate column")
        out[name] = value
    return out
