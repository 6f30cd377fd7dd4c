"""The content-addressed dataset store."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from memogrid.data import hash_table
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


def test_text_loads_as_numpy_text_or_object_as_the_caller_held_it(store):
    """A list of strings reads as numpy text (as numpy reads it), an object
    array or a Series as object; both from the one stored copy."""
    docs = ["a", "bb", "ccc", "ünï"]
    listed, held = store.put(docs), store.put(pd.Series(docs))
    assert listed.dataset_id == held.dataset_id
    assert not listed.as_object and held.as_object
    fresh = DatasetStore(store.root)
    as_text, as_object = fresh.load(listed.dataset_id), fresh.load_object(listed.dataset_id)
    assert as_text.dtype == np.array(docs).dtype and as_text.tolist() == docs
    assert as_object.dtype == object and as_object.tolist() == docs
    assert not as_text.flags.writeable and not as_object.flags.writeable
    # numpy text stays an array, with its own id
    assert store.put(np.array(docs)).dataset_id != listed.dataset_id
    # a small upload may not become a huge array: 1,000 rows as wide as one
    # 1 MiB string would be 4 GiB as numpy text
    bomb = store.put(["x" * 2**20] + ["y"] * 999)
    with pytest.raises(DatasetError, match="as numpy text"):
        DatasetStore(store.root).load(bomb.dataset_id)
    assert len(DatasetStore(store.root).load_object(bomb.dataset_id)) == 1000


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
    # a column Arrow has no type for is named with its dtype, and the way out
    df = pd.DataFrame({"a": [1.0, 2.0], "z": np.array([1, 2]) + 1j})
    with pytest.raises(DatasetError, match=r"column 'z' has unsupported type complex128.*dropped"):
        store.put(df)


@pytest.mark.parametrize("bad", ["../etc/passwd", "a" * 63, "Z" * 64])
def test_malformed_ids_are_refused(store, bad):
    with pytest.raises(DatasetError):
        store.load(bad)


def test_unknown_id(store):
    with pytest.raises(DatasetError, match="unknown dataset"):
        store.load("0" * 64)


def test_numeric_column_labels_are_kept_and_are_content(store):
    rng = np.random.RandomState(0)
    df = pd.DataFrame(rng.normal(size=(5, 3)))  # labels 0, 1, 2 (a RangeIndex)
    ref = store.put(df)
    loaded = DatasetStore(store.root).load(ref.dataset_id)
    pd.testing.assert_frame_equal(loaded, df)
    assert [type(c) for c in loaded.columns] == [int, int, int]
    # scikit-learn names features by string labels only: "0" is another dataset
    as_strings = df.set_axis(["0", "1", "2"], axis=1)
    assert dataset_id(as_strings) != ref.dataset_id
    assert list(DatasetStore(store.root).load(store.put(as_strings).dataset_id).columns) == [
        "0",
        "1",
        "2",
    ]
    assert dataset_id(df.set_axis(pd.Index([0, 1, 2]), axis=1)) == ref.dataset_id
    mixed = df.set_axis([0.5, "b", 7], axis=1)
    back = DatasetStore(store.root).load(store.put(mixed).dataset_id)
    assert list(back.columns) == [0.5, "b", 7]
    assert [type(c) for c in back.columns] == [float, str, int]


def test_frame_ids_do_not_depend_on_library_metadata():
    import json

    import pyarrow as pa

    from memogrid.data import canonical_table, frame_table, hash_table

    df = pd.DataFrame({"a": [1.0, 2.0], "b": ["x", "y"]})
    ours = frame_table(df).schema.metadata  # the column dtypes memogrid records
    table = pa.Table.from_pandas(df, preserve_index=False)
    meta = json.loads(table.schema.metadata[b"pandas"])
    meta["pandas_version"], meta["creator"]["version"] = "1.0.0", "9.9.9"
    other = table.replace_schema_metadata({**ours, b"pandas": json.dumps(meta).encode()})
    assert hash_table(canonical_table(other)) == dataset_id(df)
    assert hash_table(canonical_table(table.replace_schema_metadata(ours))) == dataset_id(df)
    assert hash_table(canonical_table(table)) == dataset_id(df)  # as pandas wrote it
    assert canonical_table(other).schema.metadata == ours  # nothing of pandas is kept


def _same_frames():
    """Groups of frames that are one dataset each, however pandas or Arrow
    lays them out (the groups differ in pandas dtypes: different data)."""
    base = pd.DataFrame({"s": ["a", "b", None, "a"], "x": [0.5, np.nan, 2.0, 3.0]})
    base["s"] = base["s"].astype("str")
    # NaN with its sign bit set, as 0.0 / 0.0 gives on x86
    neg_nan = base.assign(x=np.array([0.5, np.copysign(np.nan, -1.0), 2.0, 3.0]))
    masked = base.assign(x=pd.array([0.5, None, 2.0, 3.0], dtype="Float64"))
    garbage = masked.copy()
    garbage["x"].array._data[1] = 123.0  # garbage under the mask
    return {
        "str": {"str": base, "negative NaN": neg_nan},
        "string": {
            "string[pyarrow]": base.assign(s=base["s"].astype("string[pyarrow]")),
            "string[python]": base.assign(s=base["s"].astype(pd.StringDtype("python"))),
        },
        "Float64": {"masked": masked, "garbage under the mask": garbage},
    }


def test_equal_frames_get_one_id_whatever_their_layout(store):
    import pyarrow as pa

    from memogrid.data import canonical_table, hash_table

    groups = {
        kind: {dataset_id(df) for df in frames.values()} for kind, frames in _same_frames().items()
    }
    assert all(len(ids) == 1 for ids in groups.values()), groups
    assert len(set.union(*groups.values())) == len(groups)  # the dtypes are content
    # Arrow's large strings are strings
    small = pa.table({"s": pa.array(["a", None], pa.string())})
    large = pa.table({"s": pa.array(["a", None], pa.large_string())})
    assert hash_table(canonical_table(small)) == hash_table(canonical_table(large))
    # and read back the same whoever stored them first
    loaded = store.load(store.put(_same_frames()["string"]["string[pyarrow]"]).dataset_id)
    assert str(loaded["s"].dtype) == "string"
    assert loaded["s"].isna().tolist() == [False, False, True, False]
    assert loaded["x"].dtype == np.float64 and np.isnan(loaded["x"][1])


def test_pandas_dtypes_scikit_learn_tells_apart_are_kept(store):
    """str, string and object columns, nullable and plain numbers: different
    data to scikit-learn (its imputers refuse pd.NA, it converts nullable
    numbers, object numbers give object categories), each read back as sent."""
    texts = ["a", None, "b", "a"]
    df = pd.DataFrame(
        {
            "str": pd.Series(texts, dtype="str"),
            "string": pd.Series(texts, dtype="string"),
            "object": pd.Series(["a", np.nan, "b", "a"], dtype=object),
            "object ints": pd.Series([1, 2, 3, 4], dtype=object),
            # missing values of object numbers and bools stay NaN, the rest
            # Python ints and bools (not floats, not None)
            "object ints with NaN": pd.Series([1, np.nan, 3, 2**60], dtype=object),
            "object bools with NaN": pd.Series([True, np.nan, False, True], dtype=object),
            "Int64": pd.array([1, None, 3, 2**60], dtype="Int64"),  # beyond float precision
            "UInt8": pd.array([1, 2, None, 4], dtype="UInt8"),
            "Float64": pd.array([0.5, None, 1.5, 2.5], dtype="Float64"),
            "boolean": pd.array([True, None, False, True], dtype="boolean"),
            "int64": [1, 2, 3, 4],
        }
    )
    back = DatasetStore(store.root).load(store.put(df).dataset_id)
    pd.testing.assert_frame_equal(back, df)
    assert back["Int64"][3] == 2**60
    # numbers and booleans backed by Arrow (dtype_backend="pyarrow"): kept,
    # as scikit-learn converts them (an int64[pyarrow] column's categories
    # are floats, a plain int64's ints), also through pandas' own to_parquet
    import pyarrow.parquet as pq
    from sklearn.preprocessing import OneHotEncoder

    from memogrid.data import canonical_table

    arrow = pd.DataFrame(
        {
            name: pd.array(values, dtype=name)
            for name, values in [
                ("int64[pyarrow]", [1, 2, None, 4]),
                ("double[pyarrow]", [0.5, None, 1.5, 2.5]),
                ("float[pyarrow]", [0.5, 1.0, None, 2.5]),
                ("bool[pyarrow]", [True, None, False, True]),
            ]
        }
    )
    ref = store.put(arrow)
    arrow_back = DatasetStore(store.root).load(ref.dataset_id)
    pd.testing.assert_frame_equal(arrow_back, arrow)
    assert dataset_id(arrow) != dataset_id(arrow.astype({"int64[pyarrow]": "Int64"}))
    raw = io.BytesIO()
    arrow.to_parquet(raw)
    raw.seek(0)
    assert hash_table(canonical_table(pq.read_table(raw))) == ref.dataset_id
    column = arrow[["int64[pyarrow]"]].dropna()
    ours = OneHotEncoder().fit(arrow_back[["int64[pyarrow]"]].dropna()).categories_[0]
    assert ours.dtype == OneHotEncoder().fit(column).categories_[0].dtype
    for name in ("object ints with NaN", "object bools with NaN"):
        assert [type(v) for v in back[name]] == [type(v) for v in df[name]], name
    ids = {dataset_id(df[[c]].set_axis(["c"], axis=1)) for c in ("str", "string", "object")}
    assert len(ids) == 3
    assert dataset_id(df[["int64"]]) != dataset_id(df[["int64"]].astype("Int64"))


def test_arrow_backed_text_and_dates_read_back_as_sent(store):
    """Text and dates and times backed by Arrow (dtype_backend="pyarrow")
    read back as str, datetime64 and object columns: a missing string
    became NaN where scikit-learn's encoders refuse the pd.NA sent."""
    import pyarrow as pa

    df = pd.DataFrame(
        {
            "s": pd.array(["a", None, "b", "a"], dtype=pd.ArrowDtype(pa.string())),
            "ls": pd.array(["a", None, "b", "a"], dtype=pd.ArrowDtype(pa.large_string())),
            "ts": pd.array([0, 1, None, 3], dtype=pd.ArrowDtype(pa.timestamp("s", tz="UTC"))),
            "d": pd.array([0, 1, None, 3], dtype=pd.ArrowDtype(pa.date32())),
            "d64": pd.array([0, 864e5, None, 3 * 864e5], dtype=pd.ArrowDtype(pa.date64())),
            "du": pd.array([0, 1, None, 3], dtype=pd.ArrowDtype(pa.duration("ms"))),
            "string": pd.array(["a", None, "b", "a"], dtype="string"),
        }
    )
    back = DatasetStore(store.root).load(store.put(df).dataset_id)
    pd.testing.assert_frame_equal(back, df)
    assert back["s"][1] is pd.NA
    plain = df.astype({"s": object})
    assert dataset_id(df) != dataset_id(plain)


def test_what_a_process_keeps_of_loaded_datasets_is_bounded_in_bytes(store, monkeypatch):
    """A count alone (16) let a worker keep 16 frames of up to the upload
    limit each; memory-mapped arrays hold nothing of their own and stay;
    the latest four (a search's X, y, groups, a fit parameter) stay whatever
    their size: a byte bound alone re-read a large X for each task."""
    frames = [pd.DataFrame({"x": np.arange(1000.0) + i}) for i in range(6)]  # 8 kB each
    arrays = [np.arange(1000.0) - i for i in range(2)]
    ids = [store.put(v).dataset_id for v in frames + arrays]
    reader = DatasetStore(store.root)
    monkeypatch.setattr(reader, "LOADED_BYTES", 20_000)
    for did in ids:
        reader.load(did)
    kept = list(reader._loaded)
    assert [d in kept for d in ids] == [False] * 4 + [True] * 4  # two frames fit
    reader.load(ids[0], keep=False)
    assert ids[0] not in reader._loaded
    monkeypatch.setattr(reader, "LOADED_BYTES", 1)
    for did in ids[:4]:  # the latest four are kept, whatever their size
        reader.load(did)
    assert list(reader._loaded) == ids[:4]


def test_date_times_with_and_without_a_time_zone_in_one_column_are_refused(store):
    """Arrow stored them all in UTC, the naive ones changed: scikit-learn
    cannot compare them, memogrid's fits could."""
    import datetime
    import zoneinfo

    mixed = pd.Series([pd.Timestamp("2020-01-01", tz="UTC"), pd.Timestamp("2020-01-02")])
    with pytest.raises(DatasetError, match="column 'o' holds date-times with a time zone and"):
        store.put(pd.DataFrame({"o": mixed.astype(object)}))
    # all with a zone, even several: comparable, stored (in one zone: the
    # same instants, which scikit-learn compares as equal)
    zones = [zoneinfo.ZoneInfo("Europe/Paris"), datetime.UTC]
    aware = pd.Series([datetime.datetime(2020, 1, 1, tzinfo=z) for z in zones], dtype=object)
    back = DatasetStore(store.root).load(store.put(pd.DataFrame({"o": aware})).dataset_id)
    assert list(back["o"]) == list(aware)  # the same instants
    assert len({str(v.tzinfo) for v in back["o"]}) == 1


def test_each_missing_value_of_an_object_column_reads_back_as_held(store):
    """None, NaN, pd.NA and NaT are different values to scikit-learn's
    encoders (None and NaN are two categories) and imputers: each null of an
    object column is restored as the value it was, also mixed in one column."""
    df = pd.DataFrame(
        {
            "mixed": pd.Series(["a", None, np.nan, "b", pd.NA, None], dtype=object),
            "nones": pd.Series(["a", None, "b", None, "c", "d"], dtype=object),
            "NA": pd.Series(["a", pd.NA, "b", "c", "d", "e"], dtype=object),
            "ints": pd.Series([1, None, 2, np.nan, 3, 4], dtype=object),
            "times": pd.Series([pd.Timestamp("2024-01-01"), pd.NaT, np.nan] * 2, dtype=object),
        }
    )
    back = DatasetStore(store.root).load(store.put(df).dataset_id)
    for name in df:
        assert [type(v) for v in back[name]] == [type(v) for v in df[name]], name
        assert [v for v in back[name] if not pd.isna(v)] == [v for v in df[name] if not pd.isna(v)]
    # which value a null is, is content
    ids = {
        dataset_id(pd.DataFrame({"s": pd.Series(["a", *missing], dtype=object)}))
        for missing in ([None, np.nan], [np.nan, None], [None, None], [np.nan, np.nan])
    }
    assert len(ids) == 4
    assert _through_parquet(df) == dataset_id(df)


def test_object_columns_of_several_kinds_read_back_as_held(store):
    """str and int ids, ints and floats, bools among numbers: each value
    back as the Python value it was (Arrow alone refuses the first and makes
    floats of the second)."""
    df = pd.DataFrame(
        {
            "ids": pd.Series([1, "a7", 3, None, np.nan, 2**70, True], dtype=object),
            "numbers": pd.Series([1, 2.5, -0.0, 1e300, float("inf"), 7, 0], dtype=object),
            "x": np.arange(7.0),
        }
    )
    ref = store.put(df)
    back = DatasetStore(store.root).load(ref.dataset_id)
    for name in ("ids", "numbers"):
        assert [type(v) for v in back[name]] == [type(v) for v in df[name]], name
        assert [repr(v) for v in back[name]] == [repr(v) for v in df[name]], name
    assert _through_parquet(df) == ref.dataset_id == dataset_id(back)
    # a value's kind is content: 1 and "1" and 1.0 are different data
    ids = {
        dataset_id(pd.DataFrame({"c": pd.Series(["a", v], dtype=object)})) for v in (1, "1", 1.0)
    }
    assert len(ids) == 3


def test_one_id_reads_back_one_way_whatever_the_metadata_spells(store):
    """NaN values and nulls of a float column are one missing value to the
    id, so they are one in the stored table too; null kinds written in
    several equivalent ways give one id; a table of before v5 naming its
    None columns (``memogrid.none``) still reads them as None."""
    import pyarrow as pa

    from memogrid.data import DTYPES_KEY, NONE_KEY, NULLS_KEY, canonical_table, table_frame

    def table(values, key=None, value=None):
        meta = {DTYPES_KEY: b'{"0": "object"}'}
        if key is not None:
            meta[key] = value
        return pa.table({"c": pa.array(values, from_pandas=False)}).replace_schema_metadata(meta)

    def ids(*tables):
        return {hash_table(canonical_table(t)) for t in tables}

    crafted = [
        table([1.5, None, None], NULLS_KEY, b'{"0": "n"}'),
        table([1.5, float("nan"), None], NULLS_KEY, b'{"0": "n"}'),
    ]
    assert len(ids(*crafted)) == 1
    assert [table_frame(canonical_table(t))["c"].tolist() for t in crafted] == [
        [1.5, None, None]
    ] * 2
    assert (
        len(ids(*(table(["a", None, None], NULLS_KEY, m) for m in (b'{"0": "n"}', b'{"0": "nn"}'))))
        == 1
    )
    assert len(ids(table(["a", None]), table(["a", None], NULLS_KEY, b'{"0": "f"}'))) == 1
    legacy = canonical_table(table(["a", None], NONE_KEY, b"[0]"))
    assert table_frame(legacy)["c"].tolist() == ["a", None]


def test_text_keeps_lone_surrogates_as_numpy_text_does(store):
    docs = ["caf\udce9 ok", "plain"]
    ref = store.put(docs)
    assert DatasetStore(store.root).load(ref.dataset_id).tolist() == docs
    assert dataset_id(docs) == ref.dataset_id


@pytest.mark.parametrize("token", ["i007", "f1.50", "b2", "x1", "i"])
def test_malformed_mixed_tokens_are_refused(token):
    import pyarrow as pa

    from memogrid.data import MIXED_KEY, DataError, canonical_table, frame_table

    table = frame_table(pd.DataFrame({"c": pd.Series(["a", 1], dtype=object)}))
    tokens = pa.array(["sa", token])
    table = table.set_column(0, "c", tokens).replace_schema_metadata(table.schema.metadata)
    with pytest.raises(DataError, match="malformed mixed value token"):
        canonical_table(table)
    assert MIXED_KEY in table.schema.metadata


@pytest.mark.parametrize(
    ("nulls", "problem"),
    [
        (b'{"0": "nn"}', "one per null"),  # 3 nulls
        (b'{"0": "x"}', "malformed null kinds"),
        (b'{"1": "n"}', "not an object column"),
        (b'{"7": "n"}', "no column"),
        (b'["n"]', "must be an object"),
    ],
)
def test_malformed_null_kinds_are_refused(nulls, problem):
    from memogrid.data import NULLS_KEY, DataError, canonical_table, frame_table

    df = pd.DataFrame(
        {"s": pd.Series([None, "a", None, None], dtype=object), "x": [1.0, np.nan, 2.0, 3.0]}
    )
    table = frame_table(df)
    meta = dict(table.schema.metadata)
    meta[NULLS_KEY] = nulls
    with pytest.raises(DataError, match=problem):
        canonical_table(table.replace_schema_metadata(meta))


@pytest.mark.parametrize(
    ("dtypes", "problem"),
    [
        (b'{"0": "Int64"}', "cannot have dtype 'Int64'"),
        (b'{"0": "category"}', "cannot have dtype 'category'"),
        (b'{"5": "str"}', "no column"),
        (b'{"\xc2\xb2": "str"}', "no column"),  # a superscript two is a digit to isdigit()
        (b'["str"]', "must be an object"),
    ],
)
def test_malformed_dtype_metadata_is_refused(dtypes, problem):
    from memogrid.data import DTYPES_KEY, DataError, canonical_table, frame_table

    table = frame_table(pd.DataFrame({"s": ["a", "b"]}))
    with pytest.raises(DataError, match=problem):
        canonical_table(table.replace_schema_metadata({DTYPES_KEY: dtypes}))


def test_categoricals_keep_their_categories_and_codes(store):
    df = pd.DataFrame(
        {
            "ints": pd.Categorical([3, 1, 3, None], categories=[3, 1, 7]),
            "words": pd.Categorical(["b", "a", "b", "a"], categories=["b", "z", "a"], ordered=True),
            "x": [0.1, 0.2, 0.3, 0.4],
        }
    )
    loaded = DatasetStore(store.root).load(store.put(df).dataset_id)
    pd.testing.assert_frame_equal(loaded, df)
    reordered = df.assign(ints=df["ints"].cat.reorder_categories([1, 3, 7]))
    assert dataset_id(reordered) != dataset_id(df)  # other codes: other data to scikit-learn
    assert dataset_id(df.assign(ints=df["ints"].astype(float))) != dataset_id(df)


def test_none_and_nan_in_object_columns_are_different_data(store):
    # object columns, as pandas 2 makes them of strings (pandas 3 infers str)
    with_none = pd.DataFrame({"s": pd.Series(["a", None, "b"], dtype=object)})
    with_nan = pd.DataFrame({"s": pd.Series(["a", np.nan, "b"], dtype=object)})
    assert with_none["s"].dtype == object
    assert dataset_id(with_none) != dataset_id(with_nan)
    back = DatasetStore(store.root).load(store.put(with_none).dataset_id)
    assert back["s"].tolist() == ["a", None, "b"]
    back = DatasetStore(store.root).load(store.put(with_nan).dataset_id)
    assert back["s"].isna().tolist() == [False, True, False] and back["s"][1] is not None


def test_nullable_booleans_read_back_nullable(store):
    df = pd.DataFrame({"b": pd.array([True, None, False], dtype="boolean")})
    back = DatasetStore(store.root).load(store.put(df).dataset_id)
    assert str(back["b"].dtype) == "boolean" and back["b"].isna().tolist() == [False, True, False]
    plain = pd.DataFrame({"b": [True, False]})
    assert DatasetStore(store.root).load(store.put(plain).dataset_id)["b"].dtype == bool
    assert dataset_id(plain) != dataset_id(plain.astype("boolean"))  # other data to pandas


@pytest.mark.parametrize(
    ("columns", "named"),
    [
        (pd.MultiIndex.from_tuples([("a", 1), ("b", 2)]), "('a', 1)"),
        ([pd.Timestamp("2026-01-01"), "b"], "Timestamp('2026-01-01 00:00:00')"),
        ([True, False], "True"),
        ([float("nan"), "b"], "nan"),
    ],
)
def test_unsupported_column_labels_are_refused(store, columns, named):
    df = pd.DataFrame([[1.0, 2.0]], columns=columns)
    with pytest.raises(DatasetError, match=re.escape(f"column label {named} (")):
        store.put(df)


@pytest.mark.parametrize(
    ("labels", "problem"),
    [
        (b"not json", "not JSON"),
        (b'[["int", 0]]', "must give 2 column labels"),
        (b'[["int", 0], ["tuple", 1]]', "malformed column label"),
        (b'[["int", 0], ["int", true]]', "column label True"),
        (b'[["int", 0], ["int", 5]]', "does not name field '1'"),
    ],
)
def test_malformed_label_metadata_is_refused(labels, problem):
    from memogrid.data import LABELS_KEY, DataError, frame_table, table_frame

    table = frame_table(pd.DataFrame([[1.0, 2.0]]))
    bad = table.replace_schema_metadata({LABELS_KEY: labels})
    with pytest.raises(DataError, match=problem):
        table_frame(bad)


def test_date_and_time_columns_are_stored_exactly(store):
    import io

    import pyarrow.parquet as pq

    from memogrid.data import canonical_table, frame_table, hash_table, wire_table

    when = pd.date_range("2024-03-30 22:00", periods=4, freq="h")
    df = pd.DataFrame(
        {
            "when": when,
            "where": when.tz_localize("Europe/Paris"),
            "took": pd.to_timedelta([1, 2, None, 4], unit="s"),
            "x": [0.1, 0.2, 0.3, 0.4],
        }
    )
    df.loc[2, "when"] = pd.NaT
    loaded = DatasetStore(store.root).load(store.put(df).dataset_id)
    pd.testing.assert_frame_equal(loaded, df)
    # the zone and the unit are content
    assert dataset_id(df.assign(where=when.tz_localize("UTC"))) != dataset_id(df)
    assert dataset_id(df.assign(when=df["when"].astype("datetime64[ms]"))) != dataset_id(df)
    # through Parquet, as uploads travel, the same id
    buf = io.BytesIO()
    pq.write_table(wire_table(frame_table(df)), buf)
    buf.seek(0)
    assert hash_table(canonical_table(pq.read_table(buf))) == dataset_id(df)


def _through_parquet(df):
    """The id the service computes for ``df`` uploaded as the client sends it."""
    import io

    import pyarrow.parquet as pq

    from memogrid.data import canonical_table, frame_table, hash_table, wire_table

    buf = io.BytesIO()
    pq.write_table(wire_table(frame_table(df)), buf)
    buf.seek(0)
    return hash_table(canonical_table(pq.read_table(buf)))


def test_edge_frames_keep_their_id_through_the_wire(store):
    when = pd.Series(pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-01"]))
    frames = {
        "seconds": pd.DataFrame({"t": when.astype("datetime64[s]")}),
        "zoned seconds": pd.DataFrame({"t": when.astype("datetime64[s]").dt.tz_localize("UTC")}),
        "categorical dates": pd.DataFrame({"t": pd.Categorical(when)}),
        "object bools with None": pd.DataFrame({"b": pd.Series([True, None, False], dtype=object)}),
    }
    for name, df in frames.items():
        ref = store.put(df)
        assert _through_parquet(df) == ref.dataset_id == dataset_id(df), name
        back = DatasetStore(store.root).load(ref.dataset_id)
        assert dataset_id(back) == ref.dataset_id, name
    assert DatasetStore(store.root).load(store.put(frames["object bools with None"]).dataset_id)[
        "b"
    ].tolist() == [True, None, False]
    # no columns is no data scikit-learn can fit: refused, not stored under a shared id
    with pytest.raises(DatasetError, match="no columns"):
        store.put(pd.DataFrame(index=range(3)))
    # NaN and pd.NA: different dtypes, different data
    assert dataset_id(pd.DataFrame({"x": [1.0, np.nan]})) != dataset_id(
        pd.DataFrame({"x": pd.array([1.0, None], dtype="Float64")})
    )


def test_deeply_nested_metadata_is_refused_not_a_crash():
    from memogrid.data import LABELS_KEY, DataError, frame_table, table_frame

    table = frame_table(pd.DataFrame([[1.0, 2.0]]))
    bad = table.replace_schema_metadata({LABELS_KEY: b"[" * 100_000 + b"]" * 100_000})
    with pytest.raises(DataError, match="not JSON"):
        table_frame(bad)


def test_a_nullable_dtype_must_match_its_arrow_type():
    import pyarrow as pa

    from memogrid.data import DTYPES_KEY, DataError, canonical_table

    table = pa.table({"n": pa.array([1, 300], pa.int64())})
    for name in ("UInt8", "Int32", "Float64"):
        with pytest.raises(DataError, match=f"cannot have dtype '{name}'"):
            canonical_table(
                table.replace_schema_metadata({DTYPES_KEY: f'{{"0": "{name}"}}'.encode()})
            )
    ok = canonical_table(table.replace_schema_metadata({DTYPES_KEY: b'{"0": "Int64"}'}))
    assert ok.schema.metadata[DTYPES_KEY] == b'{"0": "Int64"}'


def test_a_killed_uploads_leftovers_are_swept_when_the_service_starts(settings, dask_client):
    """An upload spools to a temporary file its own process removes; a
    killed process leaves it. The service sweeps those untouched for an
    hour as it starts, and leaves one another process may still be writing."""
    import os
    import time

    from fastapi.testclient import TestClient

    from memogrid_service.api.app import create_app
    from memogrid_service.db.models import Dataset
    from memogrid_service.db.ops import utcnow
    from memogrid_service.db.session import Database

    with TestClient(create_app(settings, dask_client=dask_client)):
        pass  # the schema, to record a dataset in
    with Database(settings.effective_database_url).write() as s:
        row = dict(kind="array", shape=[1], dtype="|u1", size=1, created_at=utcnow())
        s.add(Dataset(id="a" * 64, **row))
    root = settings.datasets_dir
    root.mkdir(parents=True, exist_ok=True)
    stale, fresh, kept = root / ".upload-dead", root / ".upload-live", root / f"{'a' * 64}.npy"
    # an upload whose recording failed (the database away): no row names it
    unrecorded, recording = root / f"{'b' * 64}.npy", root / f"{'c' * 64}.text"
    for path in (stale, fresh, kept, root / ".tmp-dead", unrecorded, recording):
        path.write_bytes(b"x")
    hours_ago = time.time() - 7200
    for path in (stale, kept, root / ".tmp-dead", unrecorded):
        os.utime(path, (hours_ago, hours_ago))
    models = settings.estimators_dir
    models.mkdir(parents=True, exist_ok=True)
    (models / "job.tmp").write_bytes(b"x")
    (models / "job.skops").write_bytes(b"x")
    for path in models.iterdir():
        os.utime(path, (hours_ago, hours_ago))
    with TestClient(create_app(settings, dask_client=dask_client)):
        pass
    assert sorted(p.name for p in root.iterdir()) == sorted([fresh.name, kept.name, recording.name])
    # a killed dump's .tmp went, and an estimator no job has (a deleted job's)
    assert list(models.iterdir()) == []
    assert DatasetStore(root).sweep_temporary(older_than=0) == [fresh.name]


def test_an_upload_writes_a_frame_held_already_so_its_time_tells_nothing(tmp_path):
    """A skipped write answered in a tenth of the time, telling an uploader
    that another user held the same frame; an upload writes it anyway (the
    same bytes), other stores of it skip the write."""
    from memogrid_service.store.datasets import _frame_table

    store = DatasetStore(tmp_path / "d")
    table = _frame_table(pd.DataFrame({"a": np.arange(50.0), "b": list("xy") * 25}))
    ref = store.put_table(table)
    path = store._path(ref.dataset_id, ".parquet")
    first, blob = path.stat().st_ino, path.read_bytes()
    assert store.put_table(table).dataset_id == ref.dataset_id
    assert path.stat().st_ino == first  # skipped
    assert store.put_table(table, write_anyway=True).dataset_id == ref.dataset_id
    assert path.stat().st_ino != first and path.read_bytes() == blob  # written again, the same


def _damage(path, at: int = -8) -> None:
    """Change bytes of a stored file in place, keeping its size, as a later
    write would (its modification time moves on)."""
    import os

    before = path.stat()
    body = bytearray(path.read_bytes())
    body[at] ^= 0xFF
    path.write_bytes(bytes(body))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))
    assert path.stat().st_size == before.st_size


@pytest.mark.parametrize("kind", ["array", "text", "sparse", "frame"])
def test_a_file_damaged_in_place_is_refused_set_aside_and_written_again(store, kind):
    """A dataset file damaged in place (its size kept) loaded as it was: the
    search ran on other data and cached its results under the true data's
    keys, for every later search. It is refused, naming the dataset, and set
    aside; putting the content again writes it back."""
    from scipy import sparse

    value = {
        "array": np.arange(200.0).reshape(100, 2),
        "text": [f"document {i}" for i in range(100)],
        "sparse": sparse.random(100, 20, density=0.1, format="csr", random_state=0),
        "frame": pd.DataFrame({"a": np.arange(100.0), "b": [f"v{i % 7}" for i in range(100)]}),
    }[kind]
    did = store.put(value).dataset_id
    (path,) = store.root.glob(f"{did}.*")
    os.utime(path, (time.time() - 7200, time.time() - 7200))  # stored two hours ago
    loaded = store.load(did)  # kept for the next load (a map of the file: copied)
    loaded = loaded.copy() if kind in ("array", "sparse") else loaded
    whole = path.read_bytes()
    # the middle of a frame's column data; the last bytes of the others
    _damage(path, at=len(whole) // 2 if kind == "frame" else -8)
    with pytest.raises(DatasetError, match=f"dataset {did} is damaged"):
        store.load(did)
    assert not path.exists() and not store.exists(did)
    # set aside, for an hour's look, not swept at the next start for its old age
    assert store.sweep_temporary() == [] and (store.root / f".tmp-damaged-{path.name}").exists()
    assert store.put(value).dataset_id == did
    assert path.read_bytes() == whole
    again = store.load(did)
    if kind == "sparse":
        assert (again != loaded).nnz == 0
    elif kind == "frame":
        pd.testing.assert_frame_equal(again, loaded)
    else:
        assert np.array_equal(again, loaded)


def test_a_file_cut_short_is_refused_naming_the_dataset(store):
    """numpy's "mmap length is greater than file size" named no file."""
    did = store.put(np.arange(1000.0)).dataset_id
    path = store.root / f"{did}.npy"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(DatasetError, match=f"dataset {did} is damaged .*mmap length"):
        store.load(did)
    assert not path.exists()


def test_a_damaged_file_is_found_by_a_process_that_never_wrote_it(store, tmp_path):
    """Another process (a worker) checks what it loads the first time."""
    did = store.put(np.arange(1000.0)).dataset_id
    _damage(store.root / f"{did}.npy")
    code = (
        "import sys\n"
        "from memogrid_service.store.datasets import DatasetError, DataRef\n"
        f"ref = DataRef({str(store.root)!r}, {did!r})\n"
        "try:\n"
        "    ref.load()\n"
        "except DatasetError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert f"dataset {did} is damaged" in out.stdout, out


@pytest.mark.parametrize("kind", ["frame", "array"])
def test_damage_anywhere_in_a_file_is_damage_never_a_library_error(store, kind):
    """pyarrow reads a damaged footer as an OSError ("Couldn't deserialize
    thrift"), numpy a damaged header as a tokenize error: they escaped as
    themselves, naming no dataset, and the file stayed held."""
    from memogrid.data import canonical_table, frame_table, table_frame
    from memogrid_service.store.datasets import DatasetDamaged

    value = (
        pd.DataFrame({"a": np.arange(50.0), "b": pd.Categorical([f"v{i % 5}" for i in range(50)])})
        if kind == "frame"
        else np.arange(50.0)
    )
    did = store.put(value).dataset_id
    (path,) = store.root.glob(f"{did}.*")
    whole = path.read_bytes()
    at = range(0, len(whole), 11) if kind == "frame" else range(0, 128, 2)  # .npy: the header
    damaged = 0
    for i in at:
        _damage(path, at=i)
        try:
            got = store.load(did, keep=False)
        except DatasetDamaged as exc:
            assert exc.dataset_id == did and f"dataset {did} is damaged" in str(exc)
            damaged += 1
            store.put(value)  # back in place
            assert path.read_bytes() == whole
            continue
        # a byte the content does not depend on (Parquet's leading magic)
        if kind == "frame":
            pd.testing.assert_frame_equal(got, table_frame(canonical_table(frame_table(value))))
        else:
            assert np.array_equal(got, value)
        path.write_bytes(whole)
    assert damaged > len(at) // 2


def test_recheck_hashes_a_file_this_process_took_as_intact(store):
    """A worker found a file damaged that the service took as intact (its
    modification time put back): the service checks it afresh."""
    import os

    did = store.put(np.arange(100.0)).dataset_id
    path = store.root / f"{did}.npy"
    before = path.stat()
    path.write_bytes(path.read_bytes()[:-8] + np.float64(-1.0).tobytes())
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert store.intact(did)  # unchanged, as far as this process can tell
    assert not store.recheck(did)
    assert not path.exists()
    with pytest.raises(DatasetError, match=f"dataset {did} is damaged in the store \\(set aside"):
        store.load(did)


def test_a_zero_dimensional_array_is_stored_as_it_is(store):
    """np.ascontiguousarray stored it 1-d under the 0-d array's id: any other
    process found the file damaged."""
    from memogrid_service.store.datasets import DataRef

    did = store.put(np.float64(3.5)).dataset_id
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            f"from memogrid_service.store.datasets import DataRef; "
            f"print(repr(DataRef({str(store.root)!r}, {did!r}).load()))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "memmap(3.5)", out
    assert DataRef(str(store.root), did).load().shape == ()
