"""Sparse X as memogrid stores it: the CSR matrix scikit-learn's searches index.

A search makes X indexable before anything else (``indexable``: a scipy
sparse matrix or array becomes CSR through ``tocsr()``), then takes each
fold's rows of that CSR matrix and refits on it. memogrid stores exactly
that matrix, as it is: unsorted column indices and duplicate entries are
content (estimators see them; some sort a matrix in place), and so are its
class (``csr_matrix`` or ``csr_array``, which estimators hand on), its
shape and its dtypes.

- Its id: the SHA-256 of ``b"memogrid-sparse-v1\\0"``, the JSON of
  ``[class, shape, nnz, data dtype, index dtype]``, then the bytes of
  ``data``, ``indices`` and ``indptr``.
- Sent and stored as (:func:`sparse_body`): the same magic, the header's
  length (uint32, little-endian), the header, then ``data``, ``indices``
  and ``indptr``, each starting at a multiple of 64 bytes of the body
  (zeros between), so that a worker maps each array from the file in place
  (:func:`read_sparse`). What an uploaded body holds is checked before it
  is stored (``read_sparse(path, check=True)``): its length, row pointers
  rising from 0 to ``nnz``, column indices inside the shape.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterator
from typing import Any

import numpy as np

from .errors import DataError

SPARSE_MAGIC = b"memogrid-sparse-v1\0"
#: the upload content type of a sparse matrix (see :func:`sparse_body`)
SPARSE_TYPE = "application/x-memogrid-sparse"
#: the classes a stored matrix may have (scipy's CSR matrix and array)
CLASSES = ("csr_matrix", "csr_array")
#: the index dtypes scipy uses (one for ``indices`` and ``indptr``)
INDEX_DTYPES = ("<i4", "<i8")
#: dtype kinds the values may have: bool, ints, floats, complex (as arrays)
VALUE_KINDS = frozenset("biufc")
_ALIGN = 64
_MAX_HEADER = 10_000


def is_sparse(obj: Any) -> bool:
    """Whether ``obj`` is a scipy sparse matrix or array (scipy is not imported)."""
    return hasattr(obj, "tocsr") and hasattr(obj, "nnz") and hasattr(obj, "format")


def as_csr(obj: Any) -> Any:
    """A scipy sparse matrix or array as the CSR one scikit-learn's searches
    index (``obj.tocsr()``, ``obj`` itself when it is CSR), or a DataError
    saying why it cannot be stored."""
    csr = obj.tocsr()
    kind = type(csr).__name__
    if kind not in CLASSES or len(csr.shape) != 2:
        raise DataError(
            f"a sparse X is two-dimensional ({', '.join(CLASSES)}), not {kind} of shape {csr.shape}"
        )
    dtype = csr.data.dtype
    if not _storable(dtype):
        raise DataError(f"a sparse X of dtype {dtype} is not accepted: numbers and booleans are")
    index = csr.indices.dtype
    if index != csr.indptr.dtype or index.newbyteorder("<").str not in INDEX_DTYPES:
        raise DataError(
            "a sparse X's indices and row pointers are both int32 or both int64, "
            f"not {csr.indices.dtype} and {csr.indptr.dtype}"
        )
    return csr


def _storable(dtype: np.dtype) -> bool:
    """Whether scipy.sparse holds values of ``dtype``: booleans and numbers
    in this machine's byte order, float16 excepted."""
    return (
        dtype.kind in VALUE_KINDS
        and dtype.fields is None
        and dtype.subdtype is None
        and dtype.isnative
        and dtype.char != "e"
    )


def _header(csr: Any) -> list[Any]:
    index = csr.indices.dtype.newbyteorder("<")
    return [
        type(csr).__name__,
        [int(n) for n in csr.shape],
        int(csr.indptr[-1]),
        csr.data.dtype.str,
        index.str,
    ]


def _parts(csr: Any) -> tuple[list[Any], list[np.ndarray]]:
    """The header and the three arrays of a CSR matrix (:func:`as_csr`'s), as stored."""
    head = _header(csr)
    nnz, index = head[2], np.dtype(head[4])
    return head, [
        np.ascontiguousarray(csr.data[:nnz]),
        np.ascontiguousarray(csr.indices[:nnz], dtype=index),
        np.ascontiguousarray(csr.indptr, dtype=index),
    ]


def hash_sparse(csr: Any) -> str:
    """The id of a CSR matrix (:func:`as_csr`'s)."""
    head, arrays = _parts(csr)
    h = hashlib.sha256(SPARSE_MAGIC)
    h.update(json.dumps(head).encode())
    for arr in arrays:
        h.update(arr.data.cast("B") if arr.size else b"")
    return h.hexdigest()


def _layout(head_len: int, head: list[Any]) -> tuple[list[tuple[int, np.dtype, int]], int]:
    """Where data, indices and indptr start in a body, as (offset, dtype,
    count), and the body's length."""
    n_rows, nnz = head[1][0], head[2]
    at = len(SPARSE_MAGIC) + 4 + head_len
    out = []
    for dtype, count in (
        (np.dtype(head[3]), nnz),
        (np.dtype(head[4]), nnz),
        (np.dtype(head[4]), n_rows + 1),
    ):
        at = -(-at // _ALIGN) * _ALIGN
        out.append((at, dtype, count))
        at += dtype.itemsize * count
    return out, at


def sparse_body(csr: Any) -> Iterator[bytes]:
    """A CSR matrix (:func:`as_csr`'s) as sent and stored, in pieces."""
    head, arrays = _parts(csr)
    text = json.dumps(head).encode()
    yield SPARSE_MAGIC + struct.pack("<I", len(text)) + text
    at = len(SPARSE_MAGIC) + 4 + len(text)
    sections, _ = _layout(len(text), head)
    for (start, _dtype, _count), arr in zip(sections, arrays, strict=True):
        yield b"\0" * (start - at)
        yield arr.tobytes()
        at = start + arr.nbytes


def _read_header(first: bytes) -> tuple[list[Any], int]:
    """The header of a body whose first bytes are ``first``, checked, and its length."""
    if not first.startswith(SPARSE_MAGIC) or len(first) < len(SPARSE_MAGIC) + 4:
        raise DataError("the body is not a memogrid sparse matrix (bad magic bytes)")
    (head_len,) = struct.unpack_from("<I", first, len(SPARSE_MAGIC))
    if head_len > _MAX_HEADER:
        raise DataError(f"the sparse matrix's header is too long ({head_len} bytes)")
    start = len(SPARSE_MAGIC) + 4
    raw = first[start : start + head_len]
    if len(raw) < head_len:
        raise DataError("the body ends within the sparse matrix's header")
    try:
        head = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # untrusted text: deep nesting too
        raise DataError(f"the sparse matrix's header is not JSON: {exc}") from None
    form = "[class, [rows, columns], nnz, data dtype, index dtype]"
    if not (isinstance(head, list) and len(head) == 5):
        raise DataError(f"the sparse matrix's header is {form}")
    kind, shape, nnz, dtype, index = head
    counts = shape if isinstance(shape, list) else None
    if (
        kind not in CLASSES
        or counts is None
        or len(counts) != 2
        or not all(type(n) is int and n >= 0 for n in [*counts, nnz])
    ):
        raise DataError(f"the sparse matrix's header is {form}, with {', '.join(CLASSES)}")
    if index not in INDEX_DTYPES:
        raise DataError(f"a sparse matrix's index dtype is one of {INDEX_DTYPES}, not {index!r}")
    try:
        values = np.dtype(dtype) if isinstance(dtype, str) else None
    except Exception:  # numpy parses untrusted text
        values = None
    if values is None or not _storable(values):
        raise DataError(
            "a sparse matrix's values are numbers or booleans of a dtype scipy.sparse "
            f"supports (native byte order, no float16), not dtype {dtype!r}"
        )
    largest = np.iinfo(np.int32 if index == "<i4" else np.int64).max
    if nnz > largest or counts[1] > largest:
        raise DataError(f"a sparse matrix of this size does not fit {index} indices")
    return head, head_len


def read_sparse(path: Any, check: bool = False) -> Any:
    """The CSR matrix stored at ``path``, each array mapped read-only from
    the file. ``check``: the body came from outside, so its length, row
    pointers and column indices are checked first (a DataError says what
    is wrong)."""
    import scipy.sparse as sp

    with open(path, "rb") as f:
        first = f.read(len(SPARSE_MAGIC) + 4 + _MAX_HEADER)
        size = f.seek(0, 2)
    head, head_len = _read_header(first)
    sections, end = _layout(head_len, head)
    if size != end:
        raise DataError(
            f"the sparse matrix's body is {size} bytes where its header describes {end}"
        )
    data, indices, indptr = (
        np.memmap(path, dtype=dtype, mode="r", offset=start, shape=(count,)).view(np.ndarray)
        if count
        else np.zeros(0, dtype)
        for start, dtype, count in sections
    )
    (n_rows, n_cols), nnz = head[1], head[2]
    if check:
        if indptr[0] != 0 or indptr[-1] != nnz or np.any(indptr[1:] < indptr[:-1]):
            raise DataError(f"a sparse matrix's row pointers rise from 0 to its {nnz} entries")
        if nnz and (int(indices.min()) < 0 or int(indices.max()) >= n_cols):
            raise DataError(f"a sparse matrix's column indices lie in [0, {n_cols})")
    try:
        csr = getattr(sp, head[0])((n_rows, n_cols), dtype=data.dtype)
    except ValueError as exc:  # what scipy refuses that the header check let by
        raise DataError(f"scipy.sparse cannot hold this matrix: {exc}") from None
    # set as stored: the constructor would pick its own index dtype
    csr.data, csr.indices, csr.indptr = data, indices, indptr
    for arr in (data, indices, indptr):
        arr.flags.writeable = False
    return csr
