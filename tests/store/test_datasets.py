"""The content-addressed dataset store."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from memogrid_service.store.datasets import DatasetError, DatasetStore, dataset_id


def test_same_content_same_id_from_any_process(store, tmp_path):
    X = np.random.RandomState(0).normal(size=(50, 4))
    ref = store.put(X)
    assert ref.dataset_id == dataset_id(X)
    code = (
        "import numpy as np; from memogrid_service.store.datasets import dataset_id;"
        "print(dataset_id(np.random.RandomState(0).normal(size=(50, 4))))"
    )
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert other.stdout.strip() == ref.dataset_id
    # stored once; a second put is a no-op with the same id
    assert store.put(X.copy()) == ref
    assert len(list(store.root.glob("*.npy"))) == 1


def test_arrays_load_memory_mapped_and_equal(store):
    X = np.arange(24, dtype=np.float32).reshape(6, 4)
    ref = store.put(X)
    loaded = DatasetStore(store.root).load(ref.dataset_id)
    assert isinstance(loaded, np.memmap)
    assert loaded.dtype == X.dtype and np.array_equal(loaded, X)
    assert not loaded.flags.writeable


def test_object_arrays_are_refused(store):
    with pytest.raises(DatasetError, match="object dtype"):
        store.put(np.array([{"a": 1}], dtype=object))
    assert list(store.root.iterdir()) == []


def test_frames_keep_column_names_and_types(store):
    df = pd.DataFrame(
        {
            "color": pd.Categorical(["red", "blue", "red"]),
            "n": [1, 2, 3],
            "x": [0.5, 1.5, -2.0],
            "ok": [True, False, True],
            "name": ["a", "b", "c"],
        }
    )
    ref = store.put(df)
    loaded = DatasetStore(store.root).load(ref.dataset_id)
    assert list(loaded.columns) == list(df.columns)
    pd.testing.assert_frame_equal(loaded, df)
    # the index is not content
    assert dataset_id(df.set_axis([10, 11, 12])) == ref.dataset_id
    assert dataset_id(df.assign(x=[0.5, 1.5, -2.5])) != ref.dataset_id
    assert dataset_id(df.rename(columns={"n": "m"})) != ref.dataset_id


def test_frames_with_unsupported_columns_are_refused(store):
    df = pd.DataFrame({"nested": [[1, 2], [3]]})
    with pytest.raises(DatasetError, match="nested"):
        store.put(df)


@pytest.mark.parametrize("bad", ["../etc/passwd", "a" * 63, "Z" * 64])
def test_malformed_ids_are_refused(store, bad):
    with pytest.raises(DatasetError):
        store.load(bad)


def test_unknown_id(store):
    with pytest.raises(DatasetError, match="unknown dataset"):
        store.load("0" * 64)
