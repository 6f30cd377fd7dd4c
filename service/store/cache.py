"""The persistent result cache: fitted steps, fold outputs and scores by key.

A thin layer over :mod:`diskcache` (SQLite index plus one file per large
value, safe across threads and processes) with least-recently-used
eviction under a size limit. Values are written by the engine only, never
taken from a request.

Every value is framed as ``MAGIC + checksum + body`` where the body is a
pickle (protocol 5) whose array buffers travel out of band, so a fold
output goes from the array's memory to the file without an intermediate
copy, and the checksum is the body's CRC-32. The checksum guards against
accidental damage (a torn write, a flipped bit on disk), not against an
adversary: only the engine writes the cache, in a directory only the
service can read. CRC-32 runs at 4.1 GB/s here against SHA-256's 1.4 GB/s,
and each fold output is checksummed once written and again each time
read. A read that finds a missing, truncated or altered entry — anything
that does not verify and unpickle — deletes the entry and reports a miss:
the cache is an optimisation and is never fatal.

Workers store entries through :meth:`ResultCache.set_later`: a background
thread at a lower CPU priority writes them while the cores have nothing
better to do, and :func:`drain_writes` (called by a search before it
returns) writes whatever is left, so a finished search has stored
everything it computed.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import struct
import threading
import time
import zlib
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import diskcache
import numpy as np

log = logging.getLogger(__name__)

#: what pickle could not store, as its errors read: each is logged once
_unpicklable: set[str] = set()

# MGC4: values may carry the warnings their fits gave (fitted models as
# (model, fit time, warnings), score results with a "_warnings" item);
# MGC3 entries (the same framing, no warnings) are still read, while code
# that knows only MGC3 reads MGC4 entries as corrupt and recomputes them
# instead of failing on the new shapes. MGC2 (SHA-256 checksums) read as
# corrupt: recomputed once.
MAGIC = b"MGC4"
_READABLE = (MAGIC, b"MGC3")
_DIGEST = 4
DEFAULT_SIZE_LIMIT = 10 * 2**30
_FILE_MIN = 1 << 16  # values at least this large get a file of their own
_MISSING = object()


#: tries of a cache operation whose transaction SQLite would not begin
BOUNDED_TRIES = 3


def _bounded(op: Any, *args: Any, **kwargs: Any) -> Any:
    """``op`` (a diskcache call) tried a few times, not forever: its own
    ``retry=True`` begins again after any SQLite error, and one that lasts
    (a read-only directory, a disk error) spun a worker at full CPU past any
    cancel. SQLite itself waits out a lock (diskcache's 60 s timeout)
    before each try gives up."""
    for attempt in range(BOUNDED_TRIES):
        try:
            return op(*args, retry=False, **kwargs)
        except diskcache.Timeout:
            if attempt == BOUNDED_TRIES - 1:
                raise
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


class _Disk(diskcache.Disk):
    """diskcache's Disk, remembering (per thread) the value file it last
    named, so a write that fails can take its file away: diskcache leaves a
    file cut short by a full disk, or written but never recorded, on disk
    with no row naming it, where no size limit or eviction would see it."""

    made = threading.local()

    def filename(self, key: Any = diskcache.core.UNKNOWN, value: Any = diskcache.core.UNKNOWN):
        name, full_path = super().filename(key, value)
        _Disk.made.path = full_path
        return name, full_path


class ResultCache:
    """Persistent key → value cache with LRU eviction and integrity checks."""

    #: seconds between tries to open a cache that could not be opened (a
    #: full disk, say): it is used again once it can be, without a restart
    REOPEN_SECONDS = 30.0

    def __init__(self, directory: str | os.PathLike[str], size_limit: int = DEFAULT_SIZE_LIMIT):
        self.directory = str(directory)
        self.size_limit = int(size_limit)
        self._cache: Any = None
        #: why the cache could not be opened, the last time it was tried
        self.error: str | None = None
        self._tried = -math.inf
        self._opening = threading.Lock()
        self._open()

    def _open(self) -> Any:
        """The diskcache handle, or None where it cannot be opened; one that
        could not be is tried again at most every :attr:`REOPEN_SECONDS`."""
        if self._cache is not None or time.monotonic() - self._tried < self.REOPEN_SECONDS:
            return self._cache
        with self._opening:
            if self._cache is not None:
                return self._cache
            self._tried = time.monotonic()
            try:
                Path(self.directory).mkdir(parents=True, exist_ok=True, mode=0o700)
                os.chmod(self.directory, 0o700)
                self._cache = diskcache.Cache(
                    self.directory,
                    size_limit=self.size_limit,
                    eviction_policy="least-recently-used",
                    # Values arrive as bytes; keep small ones inline in SQLite.
                    disk_min_file_size=_FILE_MIN,
                    # diskcache evicts in batches; evict one entry per write and let
                    # cull() finish the job in exact least-recently-used order.
                    cull_limit=1,
                    disk=_Disk,
                )
            except Exception as exc:  # a full or unwritable disk must not stop the work
                said = self.error
                self.error = f"{exc}{_disk_full(self.directory)}"
                if said is None or not said.startswith(str(exc)):  # once, not at every try
                    log.warning(
                        "result cache at %s is unusable (%s): computing without caching",
                        self.directory,
                        self.error,
                    )
                return None
            if self.error is not None:
                log.warning("result cache at %s is usable again", self.directory)
            self.error = None
            return self._cache

    @property
    def usable(self) -> bool:
        """False while the cache cannot be opened (every lookup misses)."""
        return self._open() is not None

    # -- raw access -----------------------------------------------------
    def get(self, key: str, default: Any = None) -> Any:
        """Return the value for ``key``, or ``default`` if absent or broken."""
        if self._open() is None:
            return default
        pending = _writer.pending(self, key)
        if pending is not _MISSING:
            return pending
        try:
            raw = _bounded(self._cache.get, key, default=_MISSING, read=True)
            if hasattr(raw, "read"):  # large values come back as an open file
                with raw:
                    buf = _aligned(os.fstat(raw.fileno()).st_size)
                    got = raw.readinto(buf.data)
                    raw = buf[:got]
        except Exception:  # unreadable file or row: treat as a miss
            log.warning("cache entry %s unreadable; dropping it", key, exc_info=True)
            self.discard(key)
            return default
        if raw is _MISSING:
            return default
        value = self._decode(key, raw)
        return default if value is _MISSING else value

    def _decode(self, key: str, raw: Any) -> Any:
        try:
            if isinstance(raw, bytes):  # small values come inline from SQLite
                buf = _aligned(len(raw))
                buf[:] = np.frombuffer(raw, np.uint8)
                raw = buf
            if not isinstance(raw, np.ndarray) or raw[:4].tobytes() not in _READABLE:
                raise ValueError("bad header")
            view = raw.data
            if _checksum([view[_BODY:]]) != bytes(view[4:_BODY]):
                raise ValueError("checksum mismatch")
            return _unframe(view)
        except Exception:
            log.warning("cache entry %s is corrupt; dropping it", key, exc_info=True)
            self.discard(key)
            return _MISSING

    def set(self, key: str, value: Any) -> bool:
        """Store ``value`` now; return False (and carry on) if the write fails."""
        if self._open() is None:
            return False
        try:
            parts = _frame(value)
        except Exception as exc:
            # what neither pickle nor cloudpickle can store (a lock): every
            # entry holding it fails alike, so it is said once
            said = f"{type(exc).__name__}: {exc}"
            if said not in _unpicklable and len(_unpicklable) < 1000:
                _unpicklable.add(said)
                log.warning("cache entries holding what follows are not kept: %s", said)
            return False
        try:
            self._store(key, parts)
            if self._cache.volume() > self.size_limit:
                self.cull()
        except Exception:
            log.warning("cache write for %s failed; continuing uncached", key, exc_info=True)
            return False
        return True

    def _store(self, key: str, parts: list[Any]) -> None:
        _Disk.made.path = None
        try:
            if sum(len(p) for p in parts) >= _FILE_MIN:
                # a file object is copied to the value file chunk by chunk,
                # straight from the arrays' memory; a new one for each try
                # (a try that could not begin its transaction read it all)
                _bounded(
                    lambda retry: self._cache.set(key, _PartsReader(parts), read=True, retry=retry)
                )
            else:
                _bounded(self._cache.set, key, b"".join(parts))
        except BaseException:
            # no row names the file of a set that raised: it goes with it
            made = _Disk.made.path
            if made is not None:
                Path(made).unlink(missing_ok=True)
            raise

    def sweep_orphans(self, older_than: float = 3600.0) -> tuple[int, int]:
        """Remove value files no entry names, untouched for ``older_than``
        seconds: what writes killed with their process left (a worker
        restarted to stop a cancelled fit, a service killed). Younger ones may
        be a write under way in another process. Returns (files, bytes)."""
        if self._open() is None:
            return 0, 0
        try:
            named = {
                os.path.join(self.directory, row[0])
                for row in self._cache._sql(
                    "SELECT filename FROM Cache WHERE filename IS NOT NULL"
                ).fetchall()
            }
        except Exception:
            log.warning("could not read the cache's index to sweep it", exc_info=True)
            return 0, 0
        cutoff = time.time() - older_than
        files = freed = 0
        for root, _, names in os.walk(self.directory):
            for name in names:
                path = os.path.join(root, name)
                if not name.endswith(".val") or path in named:
                    continue
                try:
                    info = os.stat(path)
                    if info.st_mtime < cutoff:
                        os.unlink(path)
                        files, freed = files + 1, freed + info.st_size
                except FileNotFoundError:  # recorded and evicted meanwhile
                    continue
        return files, freed

    def set_later(self, key: str, value: Any) -> None:
        """Store ``value`` from this process's background writer (see :func:`drain_writes`).

        ``value`` must not change afterwards (fold outputs are read-only).
        Until written, :meth:`get` and ``in`` in this process already see it.
        """
        if self._open() is not None:
            _writer.submit(self, key, value)

    def __contains__(self, key: str) -> bool:
        if self._open() is None:
            return False
        if _writer.pending(self, key) is not _MISSING:
            return True
        try:
            return key in self._cache
        except Exception:
            return False

    def discard(self, key: str) -> None:
        if self._cache is None:
            return
        try:
            _bounded(self._cache.delete, key)
        except Exception:
            log.warning("could not delete cache entry %s", key, exc_info=True)

    # -- housekeeping -----------------------------------------------------
    def volume(self) -> int:
        """Bytes on disk used by the cache (0 if it cannot be read)."""
        try:
            return int(self._cache.volume()) if self._open() is not None else 0
        except Exception:
            return 0

    def __len__(self) -> int:
        try:
            return len(self._cache) if self._open() is not None else 0
        except Exception:
            return 0

    def cull(self, limit: int | None = None) -> int:
        """Evict least-recently-used entries, one at a time, until under the limit.

        ``limit`` prunes below a smaller size once, without changing the
        cache's configured limit.
        """
        limit = self.size_limit if limit is None else int(limit)
        evicted = 0
        if self._open() is None:
            return 0
        while self._cache.volume() > limit:
            # diskcache keeps an access time per row under this policy; its
            # own cull() drops ten rows per round, too coarse for small caches.
            row = self._cache._sql("SELECT key FROM Cache ORDER BY access_time LIMIT 1").fetchone()
            if row is None:
                break
            _bounded(self._cache.delete, row[0])
            evicted += 1
        return evicted

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()

    def __reduce__(self) -> Any:
        # Shipped to workers by location; each process opens its own handle.
        return (open_cache, (self.directory, self.size_limit))


_caches: dict[tuple[str, int], ResultCache] = {}
_caches_lock = threading.Lock()


def open_cache(directory: str, size_limit: int = DEFAULT_SIZE_LIMIT) -> ResultCache:
    """The process-wide cache handle for ``directory``."""
    k = (str(directory), int(size_limit))
    with _caches_lock:
        cache = _caches.get(k)
        if cache is None:  # one that cannot be opened yet tries again itself
            cache = _caches[k] = ResultCache(directory, size_limit)
        return cache


#: free bytes below which an unusable cache's error names its disk's free space
_LOW_SPACE = 64 * 2**20


def _disk_full(directory: str) -> str:
    """What to add to the error of a cache that cannot be opened, where
    its disk is (nearly) full: SQLite's own error says only "disk I/O error"."""
    import shutil

    path = Path(directory)
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        free = shutil.disk_usage(path).free
    except OSError:
        return ""
    return f"; the disk holding it has {free} bytes free" if free < _LOW_SPACE else ""


def prune_files(directory: str | os.PathLike[str], limit: int) -> tuple[int, int]:
    """Remove a cache's value files, least recently used first, until its
    entries take at most ``limit`` bytes, reading its index without writing
    to it: how a cache whose index cannot be opened (SQLite cannot write on a
    full disk) frees space. The entries whose files are gone read as misses,
    and go when the cache is opened and culled. Returns (files, bytes)."""
    import sqlite3

    index = Path(directory) / diskcache.core.DBNAME
    if not index.is_file():
        raise FileNotFoundError(f"no cache index at {index}")
    # read-only, the index takes in its write-ahead log (a running or killed
    # service's latest rows and access times); only where it cannot be
    # opened so, the database file alone (immutable=1 ignores the log)
    for query in ("mode=ro", "mode=ro&immutable=1"):
        try:
            con = sqlite3.connect(f"{index.as_uri()}?{query}", uri=True)
            con.execute("SELECT 1 FROM Cache LIMIT 1").fetchall()
            break
        except sqlite3.Error:
            if query != "mode=ro":
                raise
    try:
        total = con.execute("SELECT COALESCE(SUM(size), 0) FROM Cache").fetchone()[0]
        rows = con.execute(
            "SELECT filename, size FROM Cache WHERE filename IS NOT NULL ORDER BY access_time"
        ).fetchall()
    finally:
        con.close()
    files = freed = 0
    for name, size in rows:
        if total <= limit:
            break
        total -= size
        path = Path(directory) / name
        try:
            held = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            continue
        files, freed = files + 1, freed + held
    return files, freed


# -- framing ----------------------------------------------------------------


_ALIGN = 64  # array buffers start at multiples of this within an entry
_BODY = 4 + _DIGEST  # where the digested body starts


def _aligned(size: int) -> np.ndarray:
    """A writable ``size``-byte buffer whose start is ``_ALIGN``-aligned."""
    raw = np.empty(size + _ALIGN, dtype=np.uint8)
    start = -raw.ctypes.data % _ALIGN
    return raw[start : start + size]


def _frame(value: Any) -> list[Any]:
    """``value`` as the byte parts of one entry: header, pickle, raw buffers.

    Layout after the magic and digest: buffer count (u32), each buffer's
    length (u64), the pickle's length (u64), the pickle, then the buffers,
    each zero-padded to start at a multiple of 64 bytes from the entry's
    start, so arrays loaded in place are aligned as numpy's own are. Parts
    are memoryviews of the value's own arrays: nothing large is copied.
    """
    buffers: list[pickle.PickleBuffer] = []
    try:
        data = pickle.dumps(value, protocol=5, buffer_callback=buffers.append)
    except (pickle.PicklingError, AttributeError):
        # code pickle cannot name, as a notebook's class or function is:
        # cloudpickle stores it by value (pickle loads it); keys hold its
        # code, so an entry is read only where the code is the same
        import cloudpickle

        buffers.clear()
        data = cloudpickle.dumps(value, protocol=5, buffer_callback=buffers.append)
    raws = [b.raw() for b in buffers]
    head = struct.pack(f"<I{len(raws)}QQ", len(raws), *(r.nbytes for r in raws), len(data))
    body: list[Any] = [head, data]
    pos = _BODY + len(head) + len(data)
    for r in raws:
        if pad := -pos % _ALIGN:
            body.append(bytes(pad))
            pos += pad
        body.append(r)
        pos += r.nbytes
    return [MAGIC + _checksum(body), *body]


def _checksum(parts: list[Any]) -> bytes:
    """The CRC-32 of ``parts`` one after another, as ``_DIGEST`` bytes."""
    crc = 0
    for part in parts:
        crc = zlib.crc32(part, crc)  # releases the GIL on large buffers
    return crc.to_bytes(_DIGEST, "little")


def _unframe(entry: memoryview) -> Any:
    (n,) = struct.unpack_from("<I", entry, _BODY)
    lengths = struct.unpack_from(f"<{n}QQ", entry, _BODY + 4)
    pos = _BODY + 4 + 8 * (n + 1)
    data = entry[pos : pos + lengths[-1]]
    pos += lengths[-1]
    views = []
    for length in lengths[:-1]:
        pos += -pos % _ALIGN
        views.append(entry[pos : pos + length])
        pos += length
    if pos != len(entry):
        raise ValueError("entry length does not match its header")
    return pickle.loads(data, buffers=views)


class _PartsReader:
    """A read-only file object over byte parts, for diskcache's chunked copy."""

    def __init__(self, parts: list[Any]):
        self._parts: Iterator[memoryview] = (memoryview(p).cast("B") for p in parts)
        self._current = memoryview(b"")

    def read(self, size: int = -1) -> Any:
        while not len(self._current):
            nxt = next(self._parts, None)
            if nxt is None:
                return b""
            self._current = nxt
        if size < 0 or size >= len(self._current):
            chunk, self._current = self._current, memoryview(b"")
        else:
            chunk, self._current = self._current[:size], self._current[size:]
        return chunk


# -- deferred writes ---------------------------------------------------------


def approx_nbytes(value: Any, depth: int = 0) -> int:
    """Roughly how much memory ``value`` holds (arrays, sparse, frames, tuples)."""
    nbytes = getattr(value, "nbytes", None)
    if isinstance(nbytes, (int, np.integer)):
        return int(nbytes)
    if all(hasattr(value, a) for a in ("data", "indices", "indptr")):  # scipy CSR, CSC
        return sum(
            approx_nbytes(getattr(value, a), depth + 1) for a in ("data", "indices", "indptr")
        )
    if hasattr(value, "coords") and hasattr(value, "data"):  # scipy COO
        return sum(approx_nbytes(a, depth + 1) for a in (value.data, *value.coords))
    usage = getattr(value, "memory_usage", None)
    if callable(usage):  # a DataFrame
        try:
            return int(usage(index=True).sum())
        except Exception:
            return 0
    if depth < 2 and isinstance(value, (tuple, list)):
        return sum(approx_nbytes(v, depth + 1) for v in value)
    return 0


class _Writer:
    """This process's queue of cache entries waiting to be written.

    A daemon thread ten nice levels below its creator writes them, so on a
    machine whose cores all fit models the writes mostly fill idle moments
    instead of delaying the next fit. :meth:`drain` writes, from the calling
    thread, every entry submitted before it was called and waits for those
    the background thread is writing; entries submitted later (another
    search's) do not hold it up. Above ``max_pending`` bytes a new entry is
    written at once by its submitter (back pressure).
    """

    max_pending = 512 * 2**20

    def __init__(self) -> None:
        self._queue: deque[tuple[int, ResultCache, str, Any, int]] = deque()
        self._index: dict[tuple[str, str], Any] = {}
        self._inflight: set[int] = set()  # sequence numbers being written
        self._seq = 0
        self._bytes = 0
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def pending(self, cache: ResultCache, key: str) -> Any:
        if not self._index:
            return _MISSING
        with self._cond:
            return self._index.get((cache.directory, key), _MISSING)

    def submit(self, cache: ResultCache, key: str, value: Any) -> None:
        size = approx_nbytes(value)
        with self._cond:
            inline = self._bytes + size > self.max_pending and bool(self._queue)
            if not inline:
                self._seq += 1
                self._queue.append((self._seq, cache, key, value, size))
                self._index[(cache.directory, key)] = value
                self._bytes += size
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(
                        target=self._run, name="memogrid-cache-writer", daemon=True
                    )
                    self._thread.start()
                self._cond.notify_all()
        if inline:
            cache.set(key, value)

    def _take(self, wait: bool, upto: float = math.inf) -> tuple | None:
        with self._cond:
            while not self._queue or self._queue[0][0] > upto:
                if not wait or self._queue:
                    return None
                self._cond.wait()
            item = self._queue.popleft()
            self._inflight.add(item[0])
            return item

    def _write(self, item: tuple) -> None:
        seq, cache, key, value, size = item
        try:
            cache.set(key, value)
        finally:
            with self._cond:
                self._inflight.discard(seq)
                self._bytes -= size
                if self._index.get((cache.directory, key)) is value:
                    del self._index[(cache.directory, key)]
                self._cond.notify_all()

    def _run(self) -> None:
        _lower_priority(10)
        while True:
            item = self._take(wait=True)
            if item is not None:
                self._write(item)

    def drain(self) -> int:
        """Write every entry submitted so far; return how many this call wrote."""
        with self._cond:
            upto = self._seq
        written = 0
        while (item := self._take(wait=False, upto=upto)) is not None:
            self._write(item)
            written += 1
        with self._cond:
            while any(seq <= upto for seq in self._inflight):
                self._cond.wait()
        return written


def _lower_priority(levels: int) -> None:
    """Lower the calling thread's CPU priority by ``levels`` nice levels (Linux: per thread)."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + levels))
    except (AttributeError, OSError):  # not Linux, or not allowed: write anyway
        pass


_writer = _Writer()
if hasattr(os, "register_at_fork"):
    # a forked child starts with an empty queue and no writer thread (and
    # never with a lock some other thread of the parent held)
    os.register_at_fork(after_in_child=lambda: _writer.__init__())  # type: ignore[misc]


def drain_writes() -> int:
    """Write this process's pending cache entries now; return how many."""
    return _writer.drain()


async def drain_writes_async() -> int:
    """:func:`drain_writes` off the event loop (for ``Client.run`` on workers)."""
    import asyncio

    return await asyncio.get_running_loop().run_in_executor(None, drain_writes)
