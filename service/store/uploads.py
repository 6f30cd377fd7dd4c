"""Streamed dataset uploads: validated, hashed and written as they arrive.

An :class:`Upload` is fed the request body chunk by chunk and never holds it
whole. ``.npy`` bodies have their header parsed and checked from the first
bytes (``allow_pickle`` never arises: the header is a literal and object,
structured and date dtypes are refused), then the data is hashed while it is
written, so the dataset id is known the moment the last byte lands. Parquet
bodies are spooled to a temporary file, then read and stored through the
same route as an in-process DataFrame, so both give the same id; text
bodies (int64 offsets as ``.npy``, then UTF-8 bytes) and sparse matrices
(:mod:`memogrid.sparse`) are spooled, checked and kept as they came.

Every refusal is an :class:`UploadError` carrying the HTTP status it deserves
(413 too large, 415 unknown format, 422 bad content); a refused upload
leaves no file behind.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import mmap
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from memogrid.data import TEXT_TYPE, hash_text
from memogrid.sparse import SPARSE_TYPE, hash_sparse

from .datasets import (
    ARRAY_MAGIC,
    DatasetError,
    DatasetStore,
    _canonical_table,
    _check_text,
    _read_sparse,
    place,
)

NPY_TYPES = ("application/x-npy", "application/octet-stream+npy")
PARQUET_TYPES = ("application/vnd.apache.parquet", "application/x-parquet")
#: dtype kinds an uploaded array may have: bool, ints, floats, complex, strings
_ARRAY_KINDS = frozenset("biufcUS")
_MAX_NDIM = 32
_MAX_HEADER = 10_000


class UploadError(DatasetError):
    """An upload refused, with the HTTP status that says why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class DatasetInfo:
    """What the service records about a stored dataset."""

    id: str
    kind: str  # "array" | "text" | "frame" | "sparse"
    shape: list[int]
    dtype: str | None
    columns: list[list[str]] | None
    size: int


def media_kind(content_type: str | None) -> str:
    """``"npy"``, ``"parquet"``, ``"text"`` or ``"sparse"`` for a Content-Type, else a 415."""
    base = (content_type or "").split(";")[0].strip().lower()
    if base in NPY_TYPES:
        return "npy"
    if base in PARQUET_TYPES:
        return "parquet"
    if base == TEXT_TYPE:
        return "text"
    if base == SPARSE_TYPE:
        return "sparse"
    raise UploadError(
        415,
        f"unsupported content type {content_type!r}: send an array as "
        f"{NPY_TYPES[0]!r} (.npy), a DataFrame as {PARQUET_TYPES[0]!r} (Parquet), "
        f"text as {TEXT_TYPE!r} (int64 offsets as .npy, then the UTF-8 bytes) or a "
        f"sparse matrix as {SPARSE_TYPE!r} (see memogrid.sparse)",
    )


class Upload:
    """One upload in progress: :meth:`feed` chunks, then :meth:`finish`."""

    def __init__(
        self,
        store: DatasetStore,
        kind: str,
        max_bytes: int,
        recorded: Callable[[str], int | None] = lambda dataset_id: None,
    ):
        #: the size recorded for a content id, if any (a file in place at
        #: another size is damaged, and replaced: :func:`place`)
        self.recorded = recorded
        self.store = store
        self.kind = kind
        self.max_bytes = max_bytes
        self.received = 0
        fd, tmp = tempfile.mkstemp(dir=store.root, prefix=store.UPLOAD_PREFIX)
        self._file = os.fdopen(fd, "wb")
        self._tmp = Path(tmp)
        self._head = bytearray()  # .npy bytes until the header is parsed
        self._hash: Any = None
        self._header: tuple[tuple[int, ...], np.dtype] | None = None
        self._data_bytes = 0
        self._expected = 0

    # -- feeding ----------------------------------------------------------
    def feed(self, chunk: bytes) -> None:
        self.received += len(chunk)
        if self.received > self.max_bytes:
            raise UploadError(413, f"the upload exceeds the size limit of {self.max_bytes} bytes")
        self._file.write(chunk)
        if self.kind != "npy":
            return
        if self._header is None:
            self._head += chunk
            rest = self._parse_header()
            if rest is None:
                return
            chunk = rest
        self._data_bytes += len(chunk)
        if self._data_bytes > self._expected:
            raise UploadError(
                422,
                f"the .npy body holds more data than its header's shape and dtype "
                f"describe ({self._expected} bytes)",
            )
        self._hash.update(chunk)

    def _parse_header(self) -> bytes | None:
        """Parse the .npy header once enough bytes arrived; return the data after it."""
        head = bytes(self._head)
        if len(head) < 10:
            return None
        if head[:6] != b"\x93NUMPY":
            raise UploadError(422, "the body is not a .npy file (bad magic string)")
        major = head[6]
        if major not in (1, 2, 3):
            raise UploadError(422, f"unsupported .npy format version {major}.{head[7]}")
        size_len = 2 if major == 1 else 4
        if len(head) < 8 + size_len:
            return None
        hlen = int.from_bytes(head[8 : 8 + size_len], "little")
        if hlen > _MAX_HEADER:
            raise UploadError(422, f"the .npy header is too long ({hlen} bytes)")
        end = 8 + size_len + hlen
        if len(head) < end:
            return None
        fp = io.BytesIO(head[:end])
        try:
            version = np.lib.format.read_magic(fp)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp, _MAX_HEADER)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp, _MAX_HEADER)
        except Exception as exc:  # numpy parses untrusted text: tokenize errors too
            # numpy's words, less the addresses of its parser's objects
            said = re.sub(r"<[\w.]+ object at 0x[0-9a-f]+>", "an expression", str(exc))
            raise UploadError(422, f"unreadable .npy header: {said}") from None
        self._check_header(shape, fortran, dtype)
        self._header = (tuple(shape), dtype)
        self._expected = math.prod(shape) * dtype.itemsize
        self._hash = hashlib.sha256(ARRAY_MAGIC)
        self._hash.update(json.dumps([dtype.str, list(shape)]).encode())
        self._head = bytearray()
        return head[end:]

    def _check_header(self, shape: Any, fortran: bool, dtype: np.dtype) -> None:
        if dtype.hasobject:
            raise UploadError(422, "object dtype arrays are not accepted (they need pickle)")
        if dtype.fields is not None or dtype.subdtype is not None:
            raise UploadError(422, f"structured dtype {dtype} is not accepted")
        if dtype.kind not in _ARRAY_KINDS:
            raise UploadError(
                422,
                f"dtype {dtype} is not accepted: booleans, numbers and strings are",
            )
        # each length a plain int numpy can index by (True is an int, 10**30 none)
        if len(shape) > _MAX_NDIM or any(
            type(n) is not int or not 0 <= n <= np.iinfo(np.intp).max for n in shape
        ):
            raise UploadError(422, f"absurd array shape {shape!r}")
        if len(shape) == 0:
            raise UploadError(422, "a dataset is at least one-dimensional, got a scalar")
        values = math.prod(shape)
        if values == 0 or dtype.itemsize == 0:
            # no bytes to count against any limit, yet every fold of its rows
            # costs work: a few bytes declared 10**12 rows of zero width
            raise UploadError(
                422,
                f"an array of shape {tuple(shape)} and dtype {dtype} holds no values: "
                "a fit needs at least one sample and one feature",
            )
        if values * dtype.itemsize > self.max_bytes:
            raise UploadError(
                413,
                f"an array of shape {tuple(shape)} and dtype {dtype} exceeds the size "
                f"limit of {self.max_bytes} bytes",
            )
        if fortran and len(shape) > 1:
            raise UploadError(
                422,
                "Fortran-ordered .npy files are not accepted: save np.ascontiguousarray(X) instead",
            )

    # -- finishing --------------------------------------------------------
    def finish(self) -> DatasetInfo:
        """Validate what arrived and move it into the store under its id."""
        self._file.close()
        try:
            if self.kind == "npy":
                return self._finish_npy()
            if self.kind == "text":
                return self._finish_text()
            if self.kind == "sparse":
                return self._finish_sparse()
            return self._finish_parquet()
        finally:
            self._tmp.unlink(missing_ok=True)

    def _finish_npy(self) -> DatasetInfo:
        if self._header is None:
            raise UploadError(422, "the body ended before the .npy header was complete")
        if self._data_bytes != self._expected:
            raise UploadError(
                422,
                f"the .npy body is truncated: its header describes {self._expected} "
                f"bytes of data, {self._data_bytes} arrived",
            )
        shape, dtype = self._header
        did = self._hash.hexdigest()
        final = self.store._path(did, ".npy")
        place(self._tmp, final, self.recorded(did))
        return DatasetInfo(did, "array", list(shape), dtype.str, None, final.stat().st_size)

    def _finish_text(self) -> DatasetInfo:
        # checked and hashed through a mapping of the file: a text near the
        # upload limit is not read into the service's memory
        with open(self._tmp, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                raise UploadError(422, "the body is empty: text starts with its offsets")
            body = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            offsets, data = _check_text(body)
            n = len(offsets) - 1
            did = hash_text(offsets, data)
            del offsets, data  # views of the mapping
        except DatasetError as exc:
            raise UploadError(422, str(exc)) from None
        finally:
            try:
                body.close()
            except BufferError:  # a refusal's traceback views it: unmapped when collected
                pass
        final = self.store._path(did, ".text")
        place(self._tmp, final, self.recorded(did))
        return DatasetInfo(did, "text", [n], None, None, final.stat().st_size)

    def _finish_sparse(self) -> DatasetInfo:
        try:
            csr = _read_sparse(self._tmp, True)
        except DatasetError as exc:
            raise UploadError(422, str(exc)) from None
        shape, dtype = list(csr.shape), csr.dtype.str
        if shape[1] * 8 > self.max_bytes:
            # a few bytes may declare any width; estimators keep arrays as
            # wide as X (a mean, a coefficient per column), so the width is
            # held to what a dense row of the size limit could hold
            raise UploadError(
                413,
                f"a sparse matrix of {shape[1]} columns: one float64 per column would "
                f"exceed the size limit of {self.max_bytes} bytes",
            )
        did = hash_sparse(csr)
        del csr  # its arrays map the file about to move
        final = self.store._path(did, ".sparse")
        place(self._tmp, final, self.recorded(did))
        return DatasetInfo(did, "sparse", shape, dtype, None, final.stat().st_size)

    def _finish_parquet(self) -> DatasetInfo:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            meta = pq.ParquetFile(self._tmp).metadata
        except (pa.ArrowException, OSError) as exc:
            raise UploadError(422, f"the body is not a readable Parquet file: {exc}") from None
        # every column of a type the store takes, before anything is read
        # (a list or struct of one long string repeated read as far more)
        from memogrid.data import _plain_ok

        try:
            schema = meta.schema.to_arrow_schema()
        except (pa.ArrowException, OSError) as exc:
            raise UploadError(422, f"the body is not a readable Parquet file: {exc}") from None
        for f in schema:
            t = f.type
            if pa.types.is_dictionary(t):
                ok = pa.types.is_integer(t.index_type) and _plain_ok(t.value_type)
            else:
                ok = _plain_ok(t)
            if not ok:
                raise UploadError(
                    422,
                    f"column {f.name!r} has unsupported type {t}; numeric, boolean, string, "
                    "categorical and date/time columns are accepted",
                )
        # the size limit holds for the data, not only for its compressed form:
        # fixed-width columns take their width per row once read; others at
        # least their uncompressed encoded size
        widths = {"BOOLEAN": 1, "INT32": 4, "FLOAT": 4, "INT64": 8, "DOUBLE": 8, "INT96": 12}
        decoded = 0
        for c in range(meta.num_columns):
            width = widths.get(meta.schema.column(c).physical_type)
            if width is not None:
                decoded += width * meta.num_rows
            else:
                decoded += sum(
                    meta.row_group(g).column(c).total_uncompressed_size
                    for g in range(meta.num_row_groups)
                )
        too_large = UploadError(
            413,
            f"the Parquet data decompresses to more than the size limit of {self.max_bytes} bytes",
        )
        if decoded > self.max_bytes:
            raise too_large
        # a dictionary-encoded text column stores each distinct value once:
        # 5,000 rows of one 40 kB string were a 431-byte file that read as
        # 200 MB. Its rows are counted as they will read, from the
        # dictionary's lengths, before anything is read whole
        texts = [
            f.name
            for f in schema
            if pa.types.is_string(f.type)
            or pa.types.is_large_string(f.type)
            or pa.types.is_binary(f.type)
            or pa.types.is_large_binary(f.type)
            or pa.types.is_dictionary(f.type)
        ]
        if texts:
            try:
                decoded += _dense_text_bytes(self._tmp, texts, self.max_bytes - decoded)
            except _TooLarge:
                raise too_large from None
            except (pa.ArrowException, OSError) as exc:
                raise UploadError(422, f"the body is not a readable Parquet file: {exc}") from None
        try:
            table = pq.read_table(self._tmp)
        except (pa.ArrowException, OSError) as exc:
            raise UploadError(422, f"the body is not a readable Parquet file: {exc}") from None
        try:
            # canonical as the client makes it, from the Arrow data alone:
            # the service's pandas never re-reads it (pandas 2 and 3 differ)
            canonical = _canonical_table(table)
        except DatasetError as exc:
            raise UploadError(422, str(exc)) from None
        except (pa.ArrowException, ValueError, TypeError, OverflowError) as exc:
            raise UploadError(422, f"the Parquet file cannot be read as a table: {exc}") from None
        # written even where another user's copy is in place: a skipped
        # write answered faster, telling that someone held this frame
        did = self.store.put_table(canonical, write_anyway=True).dataset_id
        final = self.store._path(did, ".parquet")
        return DatasetInfo(
            did,
            "frame",
            [int(canonical.num_rows), int(canonical.num_columns)],
            None,
            [[f.name, str(f.type)] for f in canonical.schema],
            final.stat().st_size,
        )

    def abort(self) -> None:
        """Drop everything received so far."""
        if not self._file.closed:
            self._file.close()
        self._tmp.unlink(missing_ok=True)


class _TooLarge(Exception):
    pass


def _dense_text_bytes(path: Path, columns: list[str], budget: int) -> int:
    """Bytes the text ``columns`` of a Parquet file take once read (values
    and offsets), counted a batch at a time with each column read as a
    dictionary, so a value repeated on many rows is held once while its
    rows are counted; :class:`_TooLarge` as soon as ``budget`` is passed."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    total = 0
    pf = pq.ParquetFile(path, read_dictionary=columns)
    for batch in pf.iter_batches(batch_size=65_536, columns=columns):
        for col in batch.columns:
            if isinstance(col, pa.DictionaryArray):
                lengths = pc.binary_length(col.dictionary)
                used = pc.take(lengths, col.indices)
                total += int(pc.sum(used).as_py() or 0) + 8 * len(col)
            else:
                total += col.nbytes
            if total > budget:
                raise _TooLarge
    return total
