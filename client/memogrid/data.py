"""Content ids of datasets: the same bytes, the same id, on client and service.

A dataset's id is the SHA-256 of a canonical encoding of its content:

- arrays: ``b"memogrid-array-v1\\0"``, the JSON of ``[dtype.str, shape]``,
  then the C-ordered bytes;
- DataFrames: ``b"memogrid-frame-v2\\0"``, the JSON of ``[[[label kind,
  label], arrow type], ...]``, then each column as the Arrow IPC stream of
  a one-column table without schema metadata (the index is not content).

A column label is a string, an integer or a finite float, and its kind is
content: scikit-learn records string labels as ``feature_names_in_`` and
ignores numeric ones, so ``0`` and ``"0"`` are different datasets. Arrow
names every field by a string, so a frame with other than string labels
carries them in its schema metadata (``memogrid.columns``), which
:func:`table_frame` reads back. No other metadata is content: pandas' and
pyarrow's own (which name their versions) would give the same frame
another id on a machine with other versions.

The client hashes locally to skip uploads the service already holds; the
service hashes what it receives with this same code. Object arrays and
columns of other kinds are refused: nothing here is ever pickled.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from .errors import DataError

ARRAY_MAGIC = b"memogrid-array-v1\0"
# v1 hashed the schema metadata pandas writes (its version and pyarrow's)
# and lost numeric column labels
FRAME_MAGIC = b"memogrid-frame-v2\0"
#: schema metadata key of a frame's column labels, when not all are strings
LABELS_KEY = b"memogrid.columns"
_CHUNK = 1 << 22


def is_frame(obj: Any) -> bool:
    return type(obj).__name__ == "DataFrame" and hasattr(obj, "columns")


def as_array(obj: Any) -> np.ndarray:
    """An array-like as the array the service stores (Series and lists included)."""
    if hasattr(obj, "tocsr") and hasattr(obj, "nnz"):  # scipy.sparse, without importing it
        raise DataError(
            f"sparse input ({type(obj).__name__}) is not supported: pass a dense array "
            "(X.toarray()) or a DataFrame"
        )
    arr = np.asarray(obj)
    if arr.dtype.hasobject:
        # string labels often come as objects (pandas): those become str
        if arr.size and all(isinstance(v, str) for v in arr.ravel()):
            return arr.astype(str)
        raise DataError("object dtype arrays are not accepted (only numbers, booleans and strings)")
    return arr


def hash_array(arr: np.ndarray) -> str:
    if arr.dtype.hasobject:
        raise DataError("object dtype arrays are not accepted")
    h = hashlib.sha256(ARRAY_MAGIC)
    h.update(json.dumps([arr.dtype.str, list(arr.shape)]).encode())
    for chunk in array_chunks(arr):
        h.update(chunk)
    return h.hexdigest()


def array_chunks(arr: np.ndarray, size: int = _CHUNK) -> Iterator[memoryview]:
    """The array's C-ordered bytes, in chunks, without copying a contiguous array."""
    flat = np.ascontiguousarray(arr).reshape(-1)
    mv = flat.data.cast("B") if flat.size else memoryview(b"")
    for start in range(0, len(mv), size):
        yield mv[start : start + size]


def npy_header(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": arr.dtype.str, "fortran_order": False, "shape": tuple(arr.shape)}
    )
    return buf.getvalue()


def _label(value: Any) -> list[Any]:
    """A column label as ``[kind, value]``, or a DataError naming it."""
    if isinstance(value, str):
        return ["str", str(value)]
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return ["int", int(value)]
    if isinstance(value, (float, np.floating)) and math.isfinite(value):
        return ["float", float(value)]
    raise DataError(
        f"column label {value!r} ({type(value).__name__}) is not supported: "
        "column labels must be strings, integers or finite floats"
    )


def frame_table(df: Any) -> Any:
    """A DataFrame as the Arrow table the service stores; refuses other column kinds."""
    import pyarrow as pa

    labels = [_label(c) for c in df.columns]
    numeric = any(kind != "str" for kind, _ in labels)
    if numeric:  # fields named as table_labels expects, whatever the label's own str
        df = df.set_axis([v if k == "str" else str(v) for k, v in labels], axis=1)
    try:
        table = pa.Table.from_pandas(df, preserve_index=False)
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise DataError(f"the DataFrame cannot be stored: {exc}") from None
    for field in table.schema:
        t = field.type
        ok = (
            pa.types.is_integer(t)
            or pa.types.is_floating(t)
            or pa.types.is_boolean(t)
            or pa.types.is_string(t)
            or pa.types.is_large_string(t)
            or pa.types.is_dictionary(t)
        )
        if not ok:
            raise DataError(
                f"column {field.name!r} has unsupported type {t}; numeric, "
                "boolean, string and categorical columns are accepted"
            )
    if numeric:
        meta = dict(table.schema.metadata or {})
        meta[LABELS_KEY] = json.dumps(labels).encode()
        table = table.replace_schema_metadata(meta)
    return table


def table_labels(table: Any) -> list[list[Any]]:
    """A stored table's column labels as ``[kind, value]`` pairs.

    Read from :data:`LABELS_KEY` when present (it may come from an upload:
    anything but a well-formed list of labels that name the table's fields
    is a DataError), else every field name is a string label.
    """
    names = table.schema.names
    raw = (table.schema.metadata or {}).get(LABELS_KEY)
    if raw is None:
        return [["str", n] for n in names]
    try:
        labels = json.loads(raw)
    except ValueError:
        raise DataError("the column labels in the table's metadata are not JSON") from None
    if not isinstance(labels, list) or len(labels) != len(names):
        raise DataError(f"the table's metadata must give {len(names)} column labels")
    out = []
    for pair, name in zip(labels, names, strict=True):
        if not (isinstance(pair, list) and len(pair) == 2 and pair[0] in ("str", "int", "float")):
            raise DataError(f"malformed column label {pair!r} in the table's metadata")
        kind, value = pair
        if kind == "float" and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)  # JSON writes 1.0 as 1.0, but accept 1
        try:
            label = _label(value)
        except DataError as exc:
            raise DataError(f"{exc} (in the table's metadata)") from None
        if label[0] != kind or str(value) != name:
            raise DataError(f"column label {pair!r} does not name field {name!r}")
        out.append(label)
    return out


def table_frame(table: Any) -> Any:
    """A stored table as the DataFrame it came from (column labels included)."""
    labels = table_labels(table)
    df = table.to_pandas()
    if any(kind != "str" for kind, _ in labels):
        df.columns = [value for _, value in labels]
    return df


def hash_table(table: Any) -> str:
    import pyarrow as pa

    h = hashlib.sha256(FRAME_MAGIC)
    labels = table_labels(table)
    schema = [[label, str(f.type)] for label, f in zip(labels, table.schema, strict=True)]
    h.update(json.dumps(schema).encode())
    bare = table.replace_schema_metadata(None)
    for i in range(bare.num_columns):
        col = bare.select([i]).combine_chunks()
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, col.schema) as writer:
            writer.write_table(col)
        h.update(sink.getvalue().to_pybytes())
    return h.hexdigest()


def dataset_id(obj: Any) -> str:
    """The content id of an array or DataFrame, as the service computes it."""
    if is_frame(obj):
        return hash_table(frame_table(obj))
    return hash_array(as_array(obj))


def memory_order(X: Any) -> str:
    """ "F" for a 2-D array laid out column by column (Fortran order, or a
    view of one), else "C".

    A dataset's id and stored copy do not depend on it, but scikit-learn's
    refit runs on X itself and some estimators' last bits do (Ridge,
    StandardScaler): a search sends it along so the refit can match.
    """
    if (
        isinstance(X, np.ndarray)
        and X.ndim == 2
        and not X.flags.c_contiguous
        and (X.flags.f_contiguous or X.strides[0] < X.strides[1])
    ):
        return "F"
    return "C"
