"""The persistent result cache: fitted steps, fold outputs and scores by key.

A thin layer over :mod:`diskcache` (SQLite index plus one file per large
value, safe across threads and processes) with least-recently-used
eviction under a size limit. Values are written by the engine only, never
taken from a request.

Every value is framed as ``MAGIC + blake2b(payload) + payload`` where the
payload is a pickle (protocol 5). A read that finds a missing, truncated or
altered entry — anything that does not verify and unpickle — deletes the
entry and reports a miss: the cache is an optimisation and is never fatal.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import pickle
import threading
from pathlib import Path
from typing import Any

import diskcache

log = logging.getLogger(__name__)

MAGIC = b"MGC1"
_DIGEST = 16
DEFAULT_SIZE_LIMIT = 10 * 2**30
_FILE_MIN = 1 << 16  # values at least this large get a file of their own
_MISSING = object()


class ResultCache:
    """Persistent key → value cache with LRU eviction and integrity checks."""

    def __init__(self, directory: str | os.PathLike[str], size_limit: int = DEFAULT_SIZE_LIMIT):
        self.directory = str(directory)
        self.size_limit = int(size_limit)
        self._cache: Any = None
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
            )
        except Exception as exc:  # a full or unwritable disk must not stop the work
            log.warning(
                "result cache at %s is unusable (%s): computing without caching",
                self.directory,
                exc,
            )

    @property
    def usable(self) -> bool:
        """False when the cache could not be opened (every lookup misses)."""
        return self._cache is not None

    # -- raw access -----------------------------------------------------
    def get(self, key: str, default: Any = None) -> Any:
        """Return the value for ``key``, or ``default`` if absent or broken."""
        if self._cache is None:
            return default
        try:
            raw = self._cache.get(key, default=_MISSING, read=True, retry=True)
            if hasattr(raw, "read"):  # large values come back as an open file
                with raw:
                    raw = raw.read()
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
            if not isinstance(raw, bytes) or raw[:4] != MAGIC:
                raise ValueError("bad header")
            digest, payload = raw[4 : 4 + _DIGEST], raw[4 + _DIGEST :]
            if hashlib.blake2b(payload, digest_size=_DIGEST).digest() != digest:
                raise ValueError("checksum mismatch")
            return pickle.loads(payload)
        except Exception:
            log.warning("cache entry %s is corrupt; dropping it", key, exc_info=True)
            self.discard(key)
            return _MISSING

    def set(self, key: str, value: Any) -> bool:
        """Store ``value``; return False (and carry on) if the write fails."""
        if self._cache is None:
            return False
        payload = pickle.dumps(value, protocol=5)
        digest = hashlib.blake2b(payload, digest_size=_DIGEST).digest()
        blob = MAGIC + digest + payload
        try:
            if len(blob) >= _FILE_MIN:
                # diskcache writes plain bytes line by line; a file object is
                # copied in 4 MiB chunks instead
                self._cache.set(key, io.BytesIO(blob), read=True, retry=True)
            else:
                self._cache.set(key, blob, retry=True)
            if self._cache.volume() > self.size_limit:
                self.cull()
        except Exception:
            log.warning("cache write for %s failed; continuing uncached", key, exc_info=True)
            return False
        return True

    def __contains__(self, key: str) -> bool:
        if self._cache is None:
            return False
        try:
            return key in self._cache
        except Exception:
            return False

    def discard(self, key: str) -> None:
        if self._cache is None:
            return
        try:
            self._cache.delete(key, retry=True)
        except Exception:
            log.warning("could not delete cache entry %s", key, exc_info=True)

    # -- housekeeping -----------------------------------------------------
    def volume(self) -> int:
        """Bytes on disk used by the cache."""
        return int(self._cache.volume()) if self._cache is not None else 0

    def __len__(self) -> int:
        return len(self._cache) if self._cache is not None else 0

    def cull(self, limit: int | None = None) -> int:
        """Evict least-recently-used entries, one at a time, until under the limit.

        ``limit`` prunes below a smaller size once, without changing the
        cache's configured limit.
        """
        limit = self.size_limit if limit is None else int(limit)
        evicted = 0
        if self._cache is None:
            return 0
        while self._cache.volume() > limit:
            # diskcache keeps an access time per row under this policy; its
            # own cull() drops ten rows per round, too coarse for small caches.
            row = self._cache._sql("SELECT key FROM Cache ORDER BY access_time LIMIT 1").fetchone()
            if row is None:
                break
            self._cache.delete(row[0], retry=True)
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
        if cache is None:
            cache = ResultCache(directory, size_limit)
            if cache.usable:  # an unusable one is tried again next time
                _caches[k] = cache
        return cache
