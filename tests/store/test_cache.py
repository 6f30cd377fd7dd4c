"""The persistent result cache: integrity, eviction, failure tolerance."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np

from memogrid_service.store.cache import ResultCache


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
    c._cache.set("k", b"MGC1" + b"\0" * 16 + b"garbage")
    assert c.get("k") is None


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
