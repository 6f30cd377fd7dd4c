"""Content ids of datasets: the same bytes, the same id, on client and service.

A dataset's id is the SHA-256 of a canonical encoding of its content:

- arrays: ``b"memogrid-array-v1\\0"``, the JSON of ``[dtype.str, shape]``,
  then the C-ordered bytes;
- DataFrames: ``b"memogrid-frame-v1\\0"``, the JSON of ``[[name, arrow type],
  ...]``, then each column as the Arrow IPC stream of a one-column table
  (the index is not content).

The client hashes locally to skip uploads the service already holds; the
service hashes what it receives with this same code. Object arrays and
columns of other kinds are refused: nothing here is ever pickled.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from typing import Any

import numpy as np

from .errors import DataError

ARRAY_MAGIC = b"memogrid-array-v1\0"
FRAME_MAGIC = b"memogrid-frame-v1\0"
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


def frame_table(df: Any) -> Any:
    """A DataFrame as the Arrow table the service stores; refuses other column kinds."""
    import pyarrow as pa

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
    return table


def hash_table(table: Any) -> str:
    import pyarrow as pa

    h = hashlib.sha256(FRAME_MAGIC)
    h.update(json.dumps([[f.name, str(f.type)] for f in table.schema]).encode())
    for i in range(table.num_columns):
        col = table.select([i]).combine_chunks()
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
