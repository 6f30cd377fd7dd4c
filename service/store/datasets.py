"""Content-addressed dataset store.

A dataset's id is the SHA-256 of a canonical encoding of its content, so
the same data gets the same id whatever process, format or route wrote it (the encoding lives
in :mod:`memogrid.data`, shared with the client):

- arrays: ``b"memogrid-array-v1\\0"``, the dtype string (``arr.dtype.str``),
  the shape, then the C-ordered bytes;
- text: ``b"memogrid-text-v1\\0"``, the count, the strings' offsets and
  their UTF-8 bytes;
- DataFrames: ``b"memogrid-frame-v5\\0"``, then each column's label, Arrow
  type, kind of missing values and pandas dtype, then its logical content (validity,
  values with nulls zeroed, categories): see :mod:`memogrid.data`.

- sparse X: ``b"memogrid-sparse-v1\\0"``, its class, shape, nnz and dtypes,
  then the CSR arrays as they are (:mod:`memogrid.sparse`).

Arrays are stored as ``<id>.npy`` and loaded memory-mapped; sparse X as
``<id>.sparse``, its three arrays mapped from the file; text as
``<id>.text`` (the offsets, then the UTF-8 bytes) and loaded as numpy text
or, where the caller held it so, as an ``object`` array; DataFrames as
``<id>.parquet``, written as uploads travel (:func:`memogrid.data.wire_table`:
the canonical table with its categoricals' categories in its metadata,
since Parquet keeps only string ones) and read back through
:func:`memogrid.data.canonical_table`, so every type comes back exactly.
Object dtype is refused: nothing here is ever unpickled.

A file is checked to hash to its id before a process first uses it, and
again whenever it changes (:func:`_signature`): a file damaged in place
must not feed fits whose results are cached under the true data's keys. A
damaged file is set aside, so its holder's next upload puts it back.
"""

from __future__ import annotations

import functools
import io
import logging
import os
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from memogrid.data import (
    ARRAY_MAGIC,
    FRAME_MAGIC,
    DataError,
    as_array,
    canonical_table,
    check_text,
    dataset_id,
    decode_text,
    frame_table,
    hash_array,
    hash_table,
    hash_text,
    is_frame,
    is_text,
    one_number_dtype,
    rows_first,
    table_frame,
    text_parts,
    text_pieces,
    wire_table,
)
from memogrid.sparse import as_csr, hash_sparse, is_sparse, read_sparse, sparse_body

__all__ = ["ARRAY_MAGIC", "FRAME_MAGIC", "DataRef", "DatasetError", "DatasetStore", "dataset_id"]

log = logging.getLogger(__name__)


class DatasetError(DataError):
    """A dataset cannot be stored or read (bad dtype, unknown id, ...)."""


#: what a job on a damaged dataset fails with: the dataset, and why
_DAMAGED = (
    "dataset {} is damaged in the store ({}): upload the data again (memogrid's client "
    "does so at its next submit)"
)


class DatasetDamaged(DatasetError):
    """A stored dataset's file does not hold the content its id names."""

    def __init__(self, message: str, dataset_id: str):
        super().__init__(message)
        self.dataset_id = dataset_id

    def __reduce__(self) -> Any:  # raised in a worker, caught by the service
        return (type(self), (str(self), self.dataset_id))


_T = TypeVar("_T")


# the canonical encoding is the client's, so both sides compute the same ids
_is_frame = is_frame
_hash_table = hash_table


def _dataset_errors(fn: Callable[..., _T]) -> Callable[..., _T]:
    """``fn`` (a :mod:`memogrid.data` function) raising DatasetError for its DataErrors."""

    @functools.wraps(fn)
    def run(*args: Any) -> _T:
        try:
            return fn(*args)
        except DataError as exc:
            raise DatasetError(str(exc)) from None

    return run


# object arrays of strings (pandas' string Series) become str arrays, as the
# client sends them; sparse matrices take their own route in put
_as_array = _dataset_errors(as_array)
_hash_array = _dataset_errors(hash_array)
_frame_table = _dataset_errors(frame_table)
_canonical_table = _dataset_errors(canonical_table)
_table_frame = _dataset_errors(table_frame)
_check_text = _dataset_errors(check_text)
_text_parts = _dataset_errors(text_parts)
_as_csr = _dataset_errors(as_csr)
_read_sparse = _dataset_errors(read_sparse)


def _write_parquet(f: Any, table: Any) -> None:
    import pyarrow.parquet as pq

    pq.write_table(wire_table(table), f)


#: the most a text dataset may take when read as numpy text (every row as
#: wide as its longest string): a small upload must not become a large array
MAX_NUMPY_TEXT = 2 * 2**30

#: the files a dataset may be stored as
SUFFIXES = (".npy", ".parquet", ".text", ".sparse")


@dataclass(frozen=True)
class DataRef:
    """A reference to a stored dataset that workers resolve from disk.

    ``as_object``: strings or numbers the caller held as ``object`` dtype
    (pandas text, an object array; documents in X), stored as text (or
    numpy text, or numbers) and loaded as ``object``, which is what
    scikit-learn sees in-process: a classifier's ``classes_`` and
    predictions are ``object`` arrays then.
    ``rows_first``: a DataFrame of one numpy number dtype the caller held
    laid out row by row (:func:`memogrid.data.rows_first`), loaded so:
    pandas keeps the layout in every row selection, and some estimators'
    last bits depend on it. Also part of the data's identity in keys.
    """

    root: str
    dataset_id: str
    as_object: bool = False
    rows_first: bool = False

    @property
    def key_id(self) -> str:
        """What keys name this data by: its id, and how it is loaded."""
        if self.as_object:
            return f"{self.dataset_id}:object"
        return f"{self.dataset_id}:rows" if self.rows_first else self.dataset_id

    def load(self, keep: bool = True) -> Any:
        """The data, kept by this process's store for the next task unless
        ``keep`` is false (the service reads X and y once to plan a search)."""
        store = open_store(self.root)
        if self.as_object:
            return store.load_object(self.dataset_id, keep)
        if self.rows_first:
            return store.load_rows_first(self.dataset_id, keep)
        return store.load(self.dataset_id, keep)


class DatasetStore:
    """Datasets on disk, addressed by the SHA-256 of their canonical form."""

    def __init__(self, root: str | os.PathLike[str], *, create: bool = True):
        self.root = Path(root)
        #: whether this is the service's own store (made where missing), or
        #: one a worker reads the service's datasets through (never made:
        #: a worker not seeing the service's directory is told so)
        self.own = create
        if create:
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._loaded: OrderedDict[str, Any] = OrderedDict()
        self._sizes: dict[str, int] = {}  # bytes each loaded value holds
        self._from: dict[str, tuple[Path, tuple[int, ...]]] = {}  # the file read, as it was
        self._lock = threading.Lock()

    #: prefixes of the files an upload (:class:`Upload`) or a write keeps
    #: until it lands
    UPLOAD_PREFIX = ".upload-"
    WRITE_PREFIX = ".tmp-"
    TEMPORARY = (UPLOAD_PREFIX, WRITE_PREFIX)

    def sweep_temporary(self, older_than: float = 3600.0) -> list[str]:
        """Remove what uploads and writes left behind when their process was
        killed (a finished or refused one removes its own): see
        :func:`sweep_stale`. Returns the names removed."""
        return sweep_stale(self.root, lambda name: name.startswith(self.TEMPORARY), older_than)

    def sweep_unrecorded(self, recorded: set[str], older_than: float = 3600.0) -> list[str]:
        """Remove dataset files whose id ``recorded`` lacks (an upload whose
        recording failed while the database was away), untouched for
        ``older_than`` seconds: a younger one may be an upload being recorded.
        Returns the names removed."""

        def unrecorded(name: str) -> bool:
            stem, dot, suffix = name.partition(".")
            return bool(dot) and f".{suffix}" in SUFFIXES and stem not in recorded

        return sweep_stale(self.root, unrecorded, older_than)

    def _path(self, dataset_id: str, suffix: str) -> Path:
        if len(dataset_id) != 64 or any(c not in "0123456789abcdef" for c in dataset_id):
            raise DatasetError(f"malformed dataset id {dataset_id!r}")
        return self.root / f"{dataset_id}{suffix}"

    def _write_atomic(self, final: Path, write: Any) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=self.WRITE_PREFIX)
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
            place(Path(tmp), final)  # written from content hashed to its name
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def put(self, obj: Any) -> DataRef:
        """Store an array, text, a DataFrame or a sparse matrix (no-op when
        present); return its ref."""
        if is_sparse(obj):
            csr = _as_csr(obj)
            did = hash_sparse(csr)
            path = self._path(did, ".sparse")
            if not self._held(did, path):
                self._write_atomic(path, lambda f: f.writelines(sparse_body(csr)))
            return DataRef(str(self.root), did)
        if _is_frame(obj):
            return self.put_table(_frame_table(obj))
        if is_text(obj):
            offsets, data = _text_parts(obj)
            did = hash_text(offsets, data)
            path = self._path(did, ".text")
            if not self._held(did, path):
                self._write_atomic(path, lambda f: f.writelines(text_pieces(offsets, data)))
            # as scikit-learn sees it: a list reads as numpy text, an object
            # array or a Series as object
            return DataRef(str(self.root), did, as_object=not isinstance(obj, (list, tuple)))
        arr = _as_array(obj)
        did = _hash_array(arr)
        path = self._path(did, ".npy")
        if not self._held(did, path):
            # as it is (np.ascontiguousarray makes a 0-d array 1-d: another id)
            contiguous = arr if arr.flags.c_contiguous else arr.copy(order="C")
            self._write_atomic(path, lambda f: np.save(f, contiguous, allow_pickle=False))
        # text as_array made of an object array (it checked every value is a str)
        as_object = arr.dtype.kind == "U" and np.asarray(obj).dtype.hasobject
        return DataRef(str(self.root), did, as_object=as_object)

    def put_table(self, table: Any, *, write_anyway: bool = False) -> DataRef:
        """Store a frame already in its canonical Arrow form (see
        :func:`_frame_table`). ``write_anyway``: write it even if present
        (the same bytes in place of the same bytes), so that how long the
        call takes does not tell whether anyone held it already (an upload)."""
        did = _hash_table(table)
        path = self._path(did, ".parquet")
        if write_anyway or not self._held(did, path):
            self._write_atomic(path, lambda f: _write_parquet(f, table))
        return DataRef(str(self.root), did)

    def _held(self, dataset_id: str, path: Path) -> bool:
        """Whether ``path`` holds the dataset intact (a damaged file is set
        aside, and written again)."""
        return path.exists() and self.intact(dataset_id)

    def exists(self, dataset_id: str) -> bool:
        return self._file(dataset_id) is not None

    def holds(self, dataset_id: str, size: int | None) -> bool:
        """Whether the dataset's file is in place at ``size`` bytes, the size
        recorded when it was stored (any, if None): a file cut short (a full
        disk, a power loss before the data reached it) is not held, so its
        holder uploads the content again, which puts it back (:func:`place`)."""
        for suffix in SUFFIXES:
            try:
                found = self._path(dataset_id, suffix).stat().st_size
            except FileNotFoundError:
                continue
            return size is None or found == size
        return False

    def load_object(self, dataset_id: str, keep: bool = True) -> Any:
        """A stored array of strings or numbers as ``object`` dtype (see
        :attr:`DataRef.as_object`): each value the Python str, bool, int or
        float it equals."""
        memo = f"{dataset_id}:object"
        hit = self._recall(memo)
        if hit is not None:
            return hit
        text = self._path(dataset_id, ".text")
        if text.exists():
            value = np.array(self._strings(dataset_id), dtype=object)
        else:
            arr = self.load(dataset_id, keep=False)
            if not (isinstance(arr, np.ndarray) and arr.dtype.kind in "Ubiuf"):
                raise DatasetError(
                    f"dataset {dataset_id} is not an array of strings or numbers: cannot be object"
                )
            value = arr.astype(object)
        value.flags.writeable = False  # shared by every task, as the memory map is
        if keep:
            self._remember(memo, value, dataset_id)
        return value

    def load_rows_first(self, dataset_id: str, keep: bool = True) -> Any:
        """A stored frame of one numpy number dtype laid out row by row (see
        :attr:`DataRef.rows_first`); any other frame as :meth:`load` gives it."""
        memo = f"{dataset_id}:rows"
        hit = self._recall(memo)
        if hit is not None:
            return hit
        frame = self.load(dataset_id, keep=False)
        if not _is_frame(frame):
            raise DatasetError(f"dataset {dataset_id} is not a DataFrame: it has no row layout")
        value = frame
        if one_number_dtype(frame) and not rows_first(frame):
            import pandas as pd

            values = np.ascontiguousarray(np.asarray(frame))
            value = pd.DataFrame(values, index=frame.index, columns=frame.columns, copy=False)
        if keep:
            self._remember(memo, value, dataset_id)
        return value

    def _unknown(self, dataset_id: str) -> str:
        text = f"unknown dataset id {dataset_id!r}"
        if self.own:
            return text
        missing = "" if self.root.is_dir() else ", which is not there"
        return (
            f"{text}: {who_runs_this()} does not see it in the dataset store at "
            f"{self.root}{missing}; the workers must see the service's data directory at "
            "the same path (a shared volume)"
        )

    def _file(self, dataset_id: str) -> Path | None:
        """The file the dataset is stored as, or None."""
        for suffix in SUFFIXES:
            path = self._path(dataset_id, suffix)
            if path.exists():
                return path
        return None

    def _read(self, dataset_id: str) -> tuple[str, Any]:
        """The dataset's file suffix and content as read (an array or a CSR
        matrix mapped from the file, text's offsets and bytes, a canonical
        Arrow table), checked to hash to ``dataset_id`` once per state of the
        file in this process (see :func:`_vouch`). A file that does not, or
        does not parse, is set aside and :class:`DatasetDamaged` says so: a
        damaged file must never feed a fit whose result is cached under the
        true data's keys."""
        for _ in range(3):  # again if an upload replaced the file meanwhile
            path = self._file(dataset_id)
            if path is None:
                break
            try:
                seen = _signature(path)
                content, intact = _check(path, seen)
            except FileNotFoundError:
                continue
            except OSError as exc:
                if exc.errno is None:  # pyarrow's errors of a file not in its format
                    raise self._damaged(dataset_id, path, seen, str(exc)) from None
                log.warning("dataset file %s cannot be read: %s", path, exc)
                raise DatasetError(  # not the service's path (the log has it)
                    f"dataset {dataset_id} cannot be read: {exc.strerror or type(exc).__name__}"
                ) from None
            except (MemoryError, RecursionError):
                raise
            except Exception as exc:  # noqa: BLE001 - whatever numpy or pyarrow make of it
                raise self._damaged(dataset_id, path, seen, str(exc) or repr(exc)) from None
            if not intact:
                raise self._damaged(dataset_id, path, seen, "its content does not hash to its id")
            _vouch(path, seen)
            return path.suffix, content
        if any(self._aside(self._path(dataset_id, suffix)).exists() for suffix in SUFFIXES):
            raise DatasetDamaged(_DAMAGED.format(dataset_id, "set aside"), dataset_id)
        raise DatasetError(self._unknown(dataset_id))

    def _aside(self, path: Path) -> Path:
        """Where a damaged dataset file is set aside (swept as temporary)."""
        return self.root / f"{self.WRITE_PREFIX}damaged-{path.name}"

    def _damaged(
        self, dataset_id: str, path: Path, seen: tuple[int, ...], why: str
    ) -> DatasetError:
        """The error for a dataset whose file is damaged, having set the file
        aside (when it is still the one read and the store is writable), so
        that the service no longer holds the dataset and its holder's next
        upload puts it back."""
        aside = self._aside(path)
        moved = False
        try:
            if _signature(path) == seen:
                os.replace(path, aside)
                moved = _signature(aside) == seen
                if moved:  # kept an hour for a look, then swept as temporary
                    os.utime(aside)
                else:  # an upload landed in between: it stays
                    try:
                        os.link(aside, path)
                    except FileExistsError:  # a still newer one
                        pass
                    aside.unlink()
        except OSError:  # a read-only view of the store: the service sets it aside
            pass
        _forget_vouched(path)
        log.warning(
            "dataset file %s is damaged (%s)%s",
            path,
            why,
            f"; moved to {aside}" if moved else "",
        )
        return DatasetDamaged(_DAMAGED.format(dataset_id, why), dataset_id)

    def intact(self, dataset_id: str) -> bool:
        """Whether the dataset is stored and its content hashes to its id (a
        damaged file is set aside)."""
        try:
            self._read(dataset_id)
        except DatasetError:
            return False
        return True

    def recheck(self, dataset_id: str) -> bool:
        """:meth:`intact`, hashing the file whatever this process found
        before: another process (a worker, whose view of the store may be
        read-only) found it damaged, and the service sets it aside."""
        path = self._file(dataset_id)
        if path is not None:
            _forget_vouched(path)
        return self.intact(dataset_id)

    def _strings(self, dataset_id: str) -> list[str]:
        suffix, content = self._read(dataset_id)
        if suffix != ".text":
            raise DatasetError(f"dataset {dataset_id} is not text")
        return decode_text(*content)

    def _recall(self, memo: str) -> Any:
        """What :meth:`_remember` kept under ``memo`` (the latest used), or
        None; None too if its file changed since it was read (it is read and
        checked again)."""
        with self._lock:
            value = self._loaded.get(memo)
            if value is None:
                return None
            path, seen = self._from[memo]
        try:
            same = _signature(path) == seen
        except FileNotFoundError:
            same = False
        with self._lock:
            if not same:
                self._forget(memo)
                return None
            if memo in self._loaded:
                self._loaded.move_to_end(memo)
            return value

    #: what a process keeps of the datasets it loaded, for its next tasks:
    #: at most this many, and of this many bytes (memory-mapped arrays count
    #: nothing: the page cache holds them), the latest four always (one
    #: search's X, y, groups and a fit parameter: each task loads them). A
    #: count alone let 16 frames of up to the upload limit each stay in a
    #: worker; a byte bound alone re-read a large X for each task.
    LOADED_MAX = 16
    LOADED_LATEST = 4
    LOADED_BYTES = 2**30

    def _remember(self, memo: str, value: Any, dataset_id: str) -> None:
        path = self._file(dataset_id)
        vouched = None if path is None else _vouched_state(path)
        if path is None or vouched is None:  # gone or replaced since: not kept
            return
        with self._lock:
            self._loaded[memo] = value
            self._loaded.move_to_end(memo)
            self._sizes[memo] = _held_bytes(value)
            self._from[memo] = (path, vouched)
            while len(self._loaded) > self.LOADED_MAX or (
                len(self._loaded) > self.LOADED_LATEST
                and sum(self._sizes.values()) > self.LOADED_BYTES
            ):
                self._forget(next(iter(self._loaded)))

    def _forget(self, memo: str) -> None:
        self._loaded.pop(memo, None)
        self._sizes.pop(memo, None)
        self._from.pop(memo, None)

    def values(self, dataset_id: str) -> Any:
        """A dataset to count or check values of, kept by nobody: text as an
        object array (as numpy text every row is as wide as the longest:
        one long string made a few hundred kB of groups 200 MB), anything
        else as :meth:`load` gives it."""
        if self._path(dataset_id, ".text").exists():
            value = np.array(self._strings(dataset_id), dtype=object)
            value.flags.writeable = False
            return value
        return self.load(dataset_id, keep=False)

    def load(self, dataset_id: str, keep: bool = True) -> Any:
        """Load a dataset: arrays and sparse matrices memory-mapped read-only,
        frames from Parquet; kept for the next load unless ``keep`` is false."""
        hit = self._recall(dataset_id)
        if hit is not None:
            return hit
        suffix, content = self._read(dataset_id)
        value = content
        if suffix == ".text":  # as numpy text, as scikit-learn reads a list of strings
            strings = decode_text(*content)
            width = max(1, max(map(len, strings), default=0))
            if len(strings) * width * 4 > MAX_NUMPY_TEXT:
                raise DatasetError(
                    f"dataset {dataset_id} would take {len(strings) * width * 4} bytes as "
                    f"numpy text ({len(strings)} strings as wide as the longest, {width} "
                    "characters): send it as an object array or a pandas Series"
                )
            value = np.array(strings)
            value.flags.writeable = False
        elif suffix == ".parquet":
            value = _table_frame(content)  # categories restored
        if keep:
            self._remember(dataset_id, value, dataset_id)
        return value


def _read_npy(path: Path) -> Any:
    return np.load(path, mmap_mode="r", allow_pickle=False)


def _read_text(path: Path) -> Any:
    with open(path, "rb") as f:
        return _check_text(f.read())


def _read_parquet(path: Path) -> Any:
    import pyarrow.parquet as pq

    with open(path, "rb") as f:
        return _canonical_table(pq.read_table(io.BytesIO(f.read())))


#: how each kind of file is read, and how what was read is hashed to its id
_READERS: dict[str, Callable[[Path], Any]] = {
    ".npy": _read_npy,
    ".sparse": _read_sparse,
    ".text": _read_text,
    ".parquet": _read_parquet,
}
_DIGESTS: dict[str, Callable[[Any], str]] = {
    ".npy": _hash_array,
    ".sparse": hash_sparse,
    ".text": lambda parts: hash_text(*parts),
    ".parquet": _hash_table,
}

#: the state (:func:`_signature`) of each dataset file this process found or
#: made to hold the content its name says, by path, the latest
#: :data:`VOUCHED_MAX`: checked again only when the file changes (a file
#: damaged with its state kept, say its modification time put back, goes
#: unseen until the process restarts)
_intact: OrderedDict[str, tuple[int, ...]] = OrderedDict()
_intact_lock = threading.Lock()
VOUCHED_MAX = 4096


def _signature(path: Path) -> tuple[int, ...]:
    st = path.stat()
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _vouched_state(path: Path) -> tuple[int, ...] | None:
    with _intact_lock:
        return _intact.get(str(path))


def _vouched(path: Path, seen: tuple[int, ...]) -> bool:
    return _vouched_state(path) == seen


def _vouch(path: Path, seen: tuple[int, ...] | None = None) -> None:
    """Record that the dataset file at ``path``, as it is now (or was when
    ``seen``), holds the content its name says: it was just checked, or
    written from content hashed on its way."""
    try:
        state = _signature(path) if seen is None else seen
    except FileNotFoundError:
        return
    with _intact_lock:
        _intact[str(path)] = state
        _intact.move_to_end(str(path))
        while len(_intact) > VOUCHED_MAX:
            _intact.popitem(last=False)


def _forget_vouched(path: Path) -> None:
    with _intact_lock:
        _intact.pop(str(path), None)


def who_runs_this() -> str:
    """The process running this, as its errors name it: a dask worker by its
    address."""
    try:
        from distributed import get_worker

        return f"the dask worker at {get_worker().address}"
    except (ImportError, ValueError):
        return "this process"


def _held_bytes(value: Any) -> int:
    """The memory a loaded dataset holds of its own (a memory map: none)."""
    from .cache import approx_nbytes

    if isinstance(value, np.memmap):
        return 0
    if is_sparse(value):
        parts = [getattr(value, a, None) for a in ("data", "indices", "indptr")]
        return sum(_held_bytes(p) for p in parts if p is not None)
    return approx_nbytes(value)


def place(tmp: Path, final: Path, recorded: int | None = None) -> None:
    """Move a written dataset file (an upload, hashed on its way) into place,
    over any file there of the same size (the same content, or a damaged
    copy: telling which would take as long again, and tell by its time
    whether anyone held the content) or of a size no row records. A held
    file at its recorded size is kept where the upload's size differs (a
    ``.npy`` header may be padded otherwise): replaced, the row's size
    would no longer match it should the upload not be recorded."""
    seen = _signature(tmp)
    try:
        held = final.stat().st_size
    except FileNotFoundError:
        held = None
    if held is not None and held != seen[2] and held == recorded:
        return
    os.replace(tmp, final)
    _vouch(final, seen)


def _check(path: Path, seen: tuple[int, ...]) -> tuple[Any, bool]:
    """The dataset file's content, and whether it hashes to the file's name
    (taken as so when this process found it so with the file in the state
    ``seen``). A file cut short or not in its format raises what numpy or
    pyarrow make of it."""
    content = _READERS[path.suffix](path)
    dataset_id = path.name.partition(".")[0]
    return content, _vouched(path, seen) or _DIGESTS[path.suffix](content) == dataset_id


def sweep_stale(
    directory: Path, temporary: Callable[[str], bool], older_than: float = 3600.0
) -> list[str]:
    """Remove the files of ``directory`` that ``temporary`` names and that
    nothing touched for ``older_than`` seconds: a write killed with its
    process leaves them, one still under way in another process stays.
    Returns the names removed."""
    removed = []
    cutoff = time.time() - older_than
    for path in directory.iterdir():
        if not temporary(path.name):
            continue
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
                removed.append(path.name)
        except FileNotFoundError:  # landed or swept meanwhile
            continue
    return removed


_stores: dict[str, DatasetStore] = {}
_stores_lock = threading.Lock()


def open_store(root: str) -> DatasetStore:
    """The process-wide store for ``root`` (workers keep loaded data here)."""
    with _stores_lock:
        store = _stores.get(root)
        if store is None:
            store = _stores[root] = DatasetStore(root, create=False)
        return store
