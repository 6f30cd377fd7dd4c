"""The persistent result cache: integrity, eviction, failure tolerance."""

from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from memogrid_service.store import cache as cache_mod
from memogrid_service.store.cache import MAGIC, ResultCache, drain_writes


def test_roundtrip_and_persistence(tmp_path):
    c = ResultCache(tmp_path / "c")
    value = {"a": np.arange(100_000), "b": "text"}
    assert c.set("k", value)
    c.close()
    again = ResultCache(tmp_path / "c")
    got = again.get("k")
    assert np.array_equal(got["a"], value["a"]) and got["b"] == "text"
    assert "k" in again and "missing" not in again
    assert again.get("missing", 7) == 7
    assert stat.S_IMODE(os.stat(tmp_path / "c").st_mode) == 0o700


def _value_file(c: ResultCache) -> Path:
    (f,) = list(Path(c.directory).rglob("*.val"))
    return f


def test_truncated_entry_is_a_miss_and_dropped(tmp_path):
    c = ResultCache(tmp_path / "c")
    c.set("k", np.arange(100_000))
    f = _value_file(c)
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    assert c.get("k") is None
    assert "k" not in c


def test_altered_entry_is_a_miss(tmp_path):
    c = ResultCache(tmp_path / "c")
    c.set("k", np.zeros(100_000))
    f = _value_file(c)
    data = bytearray(f.read_bytes())
    data[-10] ^= 0x01  # a flip inside the array payload still unpickles
    f.write_bytes(bytes(data))
    assert c.get("k") is None


def test_missing_file_is_a_miss(tmp_path):
    c = ResultCache(tmp_path / "c")
    c.set("k", np.zeros(100_000))
    _value_file(c).unlink()
    assert c.get("k") is None


def test_unreadable_path_is_a_miss(tmp_path):
    # a directory where the value file should be: reading raises, never fatal
    c = ResultCache(tmp_path / "c")
    c.set("k", np.zeros(100_000))
    f = _value_file(c)
    f.unlink()
    f.mkdir()
    assert c.get("k") is None


def test_small_inline_values_are_checked_too(tmp_path):
    c = ResultCache(tmp_path / "c")
    c.set("k", {"score": 0.5})
    # overwrite the stored bytes behind the cache's back
    c._cache.set("k", MAGIC + b"\0" * 16 + b"garbage")
    assert c.get("k") is None


def test_entries_of_the_previous_format_are_misses(tmp_path):
    # MGC2 entries carried a 16-byte SHA-256 where MGC3 has a CRC-32: an old
    # cache directory is read as misses (and recomputed), never misread
    import hashlib

    c = ResultCache(tmp_path / "c")
    c.set("k", {"score": 0.5})
    body = bytes(c._cache.get("k"))[4 + 4 :]
    c._cache.set("k", b"MGC2" + hashlib.sha256(body).digest()[:16] + body)
    assert c.get("k") is None and "k" not in c
    c.set("k", {"score": 0.5})
    assert c.get("k") == {"score": 0.5}


def test_lru_eviction_under_size_limit(tmp_path):
    c = ResultCache(tmp_path / "c", size_limit=3_000_000)
    blob = np.zeros(100_000)  # ~800 kB each
    for k in "abc":
        c.set(k, blob)
    assert c.get("a") is not None  # touch a: b is now least recently used
    c.set("d", blob)
    c.set("e", blob)
    c.cull()
    assert c.volume() <= 3_000_000
    assert "a" in c and "e" in c
    assert "b" not in c


def test_write_failure_is_not_fatal(tmp_path):
    c = ResultCache(tmp_path / "c")

    class Unwritable(Exception):
        pass

    def boom(*a, **k):
        raise Unwritable("disk full")

    c._cache.set = boom  # type: ignore[method-assign]
    assert c.set("k", 1) is False
    assert c.get("k") is None


def test_what_pickle_cannot_store_is_skipped_and_said_once(tmp_path, caplog, monkeypatch):
    """What neither pickle nor cloudpickle can store (a lock) fails every
    entry holding it alike: each is skipped, and the log says so once, not
    per entry."""
    monkeypatch.setattr(cache_mod, "_unpicklable", set())  # what this process said before
    c = ResultCache(tmp_path / "c")
    held = threading.Lock()
    with caplog.at_level("WARNING", logger=cache_mod.__name__):
        assert c.set("a", {"model": held}) is False
        assert c.set("b", [held, 1.0]) is False
        assert c.set("c", 1.0) is True
    assert c.get("a") is None and c.get("b") is None and c.get("c") == 1.0
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and "cannot pickle '_thread.lock' object" in said[0], said
    assert not any(r.exc_info for r in caplog.records)


def test_arrays_round_trip_bit_exact_and_writable(tmp_path):
    c = ResultCache(tmp_path / "c")
    a = np.random.default_rng(0).normal(size=(300, 70))
    b = np.asfortranarray(a[:50])  # non C-ordered buffers survive too
    c.set("k", (a, b, {"x": np.float32(1.5)}))
    got_a, got_b, extra = ResultCache(tmp_path / "c").get("k")
    assert got_a.tobytes() == a.tobytes() and got_a.dtype == a.dtype
    assert np.array_equal(got_b, b) and got_b.flags.f_contiguous
    # loaded in place from the entry, yet aligned as numpy's own arrays are
    assert all(arr.ctypes.data % 64 == 0 for arr in (got_a, got_b))
    assert extra == {"x": np.float32(1.5)}
    got_a[0, 0] = 1.0  # a loaded model may be refitted in place by its user


def test_deferred_writes_are_visible_at_once_and_on_disk_after_drain(tmp_path):
    c = ResultCache(tmp_path / "c")
    value = (np.arange(50_000.0), np.arange(10.0))
    gate = cache_mod._writer._cond
    with gate:  # hold the writer back: the entry is only queued
        c.set_later("k", value)
        assert "k" in c and c.get("k") is value  # this process sees it already
        assert "k" not in ResultCache(tmp_path / "c")._cache  # not yet on disk
    drain_writes()
    fresh = ResultCache(tmp_path / "c")
    fresh_value = fresh.get("k")
    assert fresh_value is not value and np.array_equal(fresh_value[0], value[0])
    assert drain_writes() == 0  # nothing left


def test_deferred_writes_push_back_when_too_much_is_pending(tmp_path, monkeypatch):
    c = ResultCache(tmp_path / "c")
    monkeypatch.setattr(cache_mod._Writer, "max_pending", 1000)
    gate = cache_mod._writer._cond
    with gate:
        c.set_later("a", np.zeros(100))  # 800 bytes: queued
    with gate:
        c.set_later("b", np.zeros(100))  # would pass 1000: written by the caller
        assert "b" in c._cache
    drain_writes()
    assert "a" in ResultCache(tmp_path / "c")._cache


@pytest.mark.skipif(not hasattr(os, "getpriority"), reason="per-thread nice is Linux's")
def test_background_writer_runs_at_lower_priority(tmp_path):
    c = ResultCache(tmp_path / "c")
    seen = {}
    mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    class Probe:
        def __reduce__(self):
            seen["nice"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
            seen["thread"] = threading.current_thread().name
            return (int, ())

    c.set_later("k", Probe())
    deadline = time.monotonic() + 10
    while "nice" not in seen and time.monotonic() < deadline:
        time.sleep(0.01)
    drain_writes()
    # created here or by an earlier test's thread of the same priority
    assert seen == {"nice": min(19, mine + 10), "thread": "memogrid-cache-writer"}


def test_back_pressure_counts_sparse_and_frame_outputs():
    import pandas as pd
    import scipy.sparse as sp

    dense = np.zeros((100, 10))
    assert cache_mod.approx_nbytes((dense, dense[:10])) == dense.nbytes * 11 // 10
    m = sp.random(1000, 50, density=0.1, format="csr", random_state=0)
    assert cache_mod.approx_nbytes(m) == m.data.nbytes + m.indices.nbytes + m.indptr.nbytes
    frame = pd.DataFrame({"a": np.arange(1000.0)})
    assert cache_mod.approx_nbytes((frame, None)) >= 8000


def test_drain_does_not_wait_for_entries_submitted_after_it(tmp_path, monkeypatch):
    c = ResultCache(tmp_path / "c")
    w = cache_mod._writer
    seen = []
    real_set = ResultCache.set

    def slow_set(self, key, value):
        if key == "first":  # while it is written, another entry arrives
            c.set_later("later", 2)
        seen.append(key)
        return real_set(self, key, value)

    monkeypatch.setattr(ResultCache, "set", slow_set)
    with w._cond:  # queue it without the background thread taking it
        c.set_later("first", 1)
    drain_writes()
    assert "first" in seen and "first" in c._cache
    drain_writes()  # the later one is written by now, by one or the other
    assert "later" in ResultCache(tmp_path / "c")._cache


def test_mgc3_entries_are_still_read_and_new_entries_are_not_mgc3(tmp_path):
    # MGC3 entries (no warnings in values) keep serving after the upgrade;
    # new entries are MGC4, which code knowing only MGC3 drops as corrupt
    # rather than unpacking a (model, fit time, warnings) it cannot read
    c = ResultCache(tmp_path / "c")
    c.set("k", {"score": 0.5})
    raw = bytes(c._cache.get("k"))
    assert raw[:4] == MAGIC == b"MGC4"
    c._cache.set("k", b"MGC3" + raw[4:])
    assert c.get("k") == {"score": 0.5}


def test_an_error_sqlite_keeps_giving_is_a_miss_not_a_spin(tmp_path, monkeypatch):
    """diskcache's retry=True began its transaction again after any SQLite
    error: a read-only cache directory spun the worker at full CPU forever
    (past any cancel). A lasting error is tried a few times, then a miss."""
    import diskcache

    cache = ResultCache(tmp_path / "c", size_limit=2**30)
    cache.set("k", {"a": 1})
    calls = []

    def begin_fails(self, retry=False, filename=None):
        calls.append(retry)
        raise diskcache.Timeout  # what _transact raises for a failed BEGIN without retry

    monkeypatch.setattr(diskcache.Cache, "_transact", begin_fails)
    start = time.monotonic()
    assert cache.get("k", "missed") == "missed"
    assert time.monotonic() - start < 5 and len(calls) >= 3 and not any(calls)
    cache.close()


def _value_files(root):
    return sorted(p for p in Path(root).rglob("*.val"))


def test_a_try_after_a_failed_begin_stores_the_whole_value(tmp_path, monkeypatch):
    """A set whose transaction would not begin is tried again; diskcache had
    read the value's parts into its file before, so the next try read an
    exhausted reader and stored an empty entry."""
    import diskcache

    cache = ResultCache(tmp_path / "c", size_limit=2**30)
    value = np.arange(100_000)  # a file of its own
    real = diskcache.Cache._transact
    failed = []

    def first_begin_fails(self, retry=False, filename=None):
        if not failed:
            failed.append(filename)
            self._disk.remove(filename)  # as diskcache does when BEGIN fails
            raise diskcache.Timeout
        return real(self, retry, filename)

    monkeypatch.setattr(diskcache.Cache, "_transact", first_begin_fails)
    assert cache.set("k", value) is True and failed
    monkeypatch.undo()
    np.testing.assert_array_equal(cache.get("k"), value)
    assert len(_value_files(tmp_path / "c")) == 1
    cache.close()


def test_a_failed_write_leaves_no_value_file(tmp_path, monkeypatch):
    """A full disk cut the value file short, or the row recording it could
    not be written: diskcache left the file, named by no entry, counted by
    no size limit, removed by no eviction."""
    import errno
    import sqlite3

    import diskcache

    cache = ResultCache(tmp_path / "c", size_limit=2**30)
    cache.set("kept", np.ones(50_000))
    real_read = cache_mod._PartsReader.read

    def disk_fills(self, size=-1):
        chunk = real_read(self, min(size, 1000) if size > 0 else 1000)
        if getattr(self, "_read_once", False):
            raise OSError(errno.ENOSPC, "No space left on device")
        self._read_once = True
        return chunk

    monkeypatch.setattr(cache_mod._PartsReader, "read", disk_fills)
    assert cache.set("cut", np.arange(100_000)) is False
    monkeypatch.undo()

    def row_fails(self, *a, **k):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(diskcache.Cache, "_row_insert", row_fails)
    assert cache.set("unrecorded", np.arange(100_000)) is False
    monkeypatch.undo()
    assert len(_value_files(tmp_path / "c")) == 1  # the entry kept, nothing else
    np.testing.assert_array_equal(cache.get("kept"), np.ones(50_000))
    assert cache.get("cut") is None and cache.get("unrecorded") is None
    cache.close()


def test_value_files_of_killed_writes_are_swept_once_old(tmp_path):
    """A write killed with its process (a worker restarted to stop a fit)
    leaves a value file with no entry: swept at the service's start and by
    ``memogrid cache prune`` once nothing touched it for an hour; a young
    one may be another process's write under way, and stays."""
    import shutil

    cache = ResultCache(tmp_path / "c", size_limit=2**30)
    cache.set("a", np.arange(100_000))
    cache.set("b", np.arange(200_000))
    kept = _value_files(tmp_path / "c")
    old, young = kept[0].with_name("orphan-old.val"), kept[0].with_name("orphan-young.val")
    shutil.copy(kept[0], old)
    shutil.copy(kept[0], young)
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    for entry in kept:  # entries untouched for long are never swept
        os.utime(entry, (time.time() - 7200, time.time() - 7200))
    size = old.stat().st_size
    assert cache.sweep_orphans() == (1, size)
    assert not old.exists() and young.exists()
    assert all(p.exists() for p in kept)
    np.testing.assert_array_equal(cache.get("b"), np.arange(200_000))
    assert cache.sweep_orphans(older_than=0) == (1, size)
    assert _value_files(tmp_path / "c") == kept
    cache.close()


def test_a_cache_that_could_not_be_opened_is_used_once_it_can_be(tmp_path, monkeypatch):
    """A service started on a full disk computed without its cache until it
    was restarted, however much space was freed meanwhile."""
    from tests.helpers.small_disk import fill, small_disk

    with small_disk(tmp_path / "disk") as disk:
        (disk / "cache").mkdir()
        filler = fill(disk)
        cache = ResultCache(disk / "cache")
        try:
            assert not cache.usable and "the disk holding it has 0 bytes free" in cache.error
            assert not cache.set("k", np.arange(10.0))
            filler.unlink()
            assert not cache.usable  # tried again after REOPEN_SECONDS, not at every lookup
            monkeypatch.setattr(ResultCache, "REOPEN_SECONDS", 0.0)
            assert cache.set("k", np.arange(10.0))
            assert np.array_equal(cache.get("k"), np.arange(10.0)) and cache.error is None
        finally:
            cache.close()
