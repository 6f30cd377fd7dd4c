"""Dataset uploads: content ids, streaming validation, lookups, deletion."""

from __future__ import annotations

import io
import struct

import numpy as np
import pandas as pd
import pytest

from memogrid_service.store.datasets import dataset_id
from tests.api.conftest import NPY, PARQUET, npy_bytes, parquet_bytes, upload, wait_job


def _files(settings):
    root = settings.datasets_dir
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def test_upload_array_gets_its_content_id(api, settings):
    X = np.random.RandomState(0).normal(size=(40, 3))
    r = api.post("/v1/datasets", content=npy_bytes(X), headers=NPY)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["id"] == dataset_id(X)
    assert body["kind"] == "array" and body["shape"] == [40, 3] and body["dtype"] == "<f8"
    # the same content again: 200 and nothing new written
    again = api.post("/v1/datasets", content=npy_bytes(X.copy()), headers=NPY)
    assert again.status_code == 200 and again.json()["id"] == body["id"]
    assert _files(settings) == [f"{body['id']}.npy"]
    got = api.get(f"/v1/datasets/{body['id']}").json()
    assert got["size"] > X.nbytes and got["created_at"]
    assert api.head(f"/v1/datasets/{body['id']}").status_code == 200
    assert api.head(f"/v1/datasets/{'0' * 64}").status_code == 404


def test_upload_frame_same_id_as_in_process(api, store):
    df = pd.DataFrame(
        {"color": pd.Categorical(["r", "g", "r"]), "n": [1, 2, 3], "name": ["a", "b", "c"]}
    )
    body = api.post("/v1/datasets", content=parquet_bytes(df), headers=PARQUET).json()
    assert body["id"] == dataset_id(df) == store.put(df).dataset_id
    assert body["kind"] == "frame" and body["shape"] == [3, 3]
    assert [c[0] for c in body["columns"]] == ["color", "n", "name"]


def _arrow_parquet(table) -> bytes:
    import io

    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def test_upload_frame_keeps_numeric_column_labels(api, settings):
    from memogrid.data import LABELS_KEY, frame_table, wire_table
    from memogrid_service.store.datasets import DatasetStore

    df = pd.DataFrame(np.arange(6.0).reshape(3, 2))  # labels 0 and 1, as the client sends them
    body = api.post(
        "/v1/datasets", content=_arrow_parquet(wire_table(frame_table(df))), headers=PARQUET
    )
    assert body.status_code == 201, body.text
    did = body.json()["id"]
    assert did == dataset_id(df) != dataset_id(df.set_axis(["0", "1"], axis=1))
    pd.testing.assert_frame_equal(DatasetStore(settings.datasets_dir).load(did), df)
    # labels in the metadata are checked like any other input
    tampered = frame_table(df).replace_schema_metadata({LABELS_KEY: b'[["int", 0], ["int", 9]]'})
    r = api.post("/v1/datasets", content=_arrow_parquet(tampered), headers=PARQUET)
    assert r.status_code == 422 and "does not name field '1'" in r.json()["detail"]


def test_upload_keeps_categories_and_none_exactly(api, settings):
    from memogrid.data import CATEGORIES_KEY, frame_table, wire_table
    from memogrid_service.store.datasets import DatasetStore

    df = pd.DataFrame(
        {
            # Parquet alone would return these as plain int64 and lose "z"
            "ints": pd.Categorical([3, 1, 3, None], categories=[3, 1, 7]),
            "words": pd.Categorical(["b", "a", "b", "a"], categories=["b", "z", "a"]),
            "obj": pd.Series(["u", None, "v", "u"], dtype=object),
        }
    )
    wire = wire_table(frame_table(df))
    r = api.post("/v1/datasets", content=_arrow_parquet(wire), headers=PARQUET)
    assert r.status_code == 201, r.text
    assert r.json()["id"] == dataset_id(df)
    pd.testing.assert_frame_equal(DatasetStore(settings.datasets_dir).load(r.json()["id"]), df)
    # categories that do not hold the column's values are refused
    meta = dict(wire.schema.metadata)
    meta[CATEGORIES_KEY] = b'{"0": [false, [3, 7]], "1": [false, ["b", "z", "a"]]}'
    r = api.post(
        "/v1/datasets",
        content=_arrow_parquet(wire.replace_schema_metadata(meta)),
        headers=PARQUET,
    )
    assert r.status_code == 422 and "outside its categories" in r.json()["detail"]


def test_chunked_upload_without_length(api):
    X = np.arange(300_000, dtype=np.int32)
    data = npy_bytes(X)

    def chunks():
        for i in range(0, len(data), 65_536):
            yield data[i : i + 65_536]

    r = api.post("/v1/datasets", content=chunks(), headers=NPY)
    assert r.status_code == 201, r.text
    assert r.json()["id"] == dataset_id(X)


def _object_npy() -> bytes:
    header = b"{'descr': '|O', 'fortran_order': False, 'shape': (2,), }"
    header += b" " * (117 - len(header)) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + b"\x80\x04N."


def _unbalanced_header() -> bytes:
    # numpy's header parser raises tokenize.TokenError on this, not ValueError
    header = b"{'descr': '<f8', 'fortran_order': False, 'shape': (4, }"
    header += b" " * (117 - len(header)) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + bytes(32)


def _expression_header() -> bytes:
    # numpy's refusal named its parser's object by address
    header = b"{'descr': '<f8', 'fortran_order': False, 'shape': (2 + 2,), }"
    header += b" " * (117 - len(header)) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + bytes(32)


def _fortran(arr) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asfortranarray(arr))
    return buf.getvalue()


def _lying_header(arr, shape) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": arr.dtype.str, "fortran_order": False, "shape": shape}
    )
    return buf.getvalue() + arr.tobytes()


def _zero_width_strings(descr: str, n: int) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": descr, "fortran_order": False, "shape": (n,)}
    )
    return buf.getvalue()


@pytest.mark.parametrize(
    "body, status, message",
    [
        (b"\x80\x04\x95 pickle payload", 422, "not a .npy"),
        (npy_bytes(np.arange(6.0))[:-8], 422, "truncated"),
        (_lying_header(np.arange(4.0), (3,)), 422, "more data"),
        (_lying_header(np.arange(4.0), (1000,)), 422, "truncated"),
        (_lying_header(np.arange(4.0), (2**40, 2**30)), 413, "exceeds"),
        (_lying_header(np.arange(4.0), (-1,)), 422, "shape"),
        # no array has 10**30 rows, even of no columns; True is no length
        (_lying_header(np.arange(0.0), (10**30, 0)), 422, "absurd array shape"),
        (_lying_header(np.arange(2.0), (True, 2)), 422, "absurd array shape"),
        # no bytes, yet a fold of each of its rows: refused, however few rows
        (_lying_header(np.arange(0.0), (10**12, 0)), 422, "holds no values"),
        (npy_bytes(np.empty((5, 0))), 422, "holds no values"),
        (npy_bytes(np.empty(0)), 422, "holds no values"),
        (_zero_width_strings("<U0", 10**9), 422, "holds no values"),
        (_zero_width_strings("|S0", 10**9), 422, "holds no values"),
        (_object_npy(), 422, "object dtype"),
        (_unbalanced_header(), 422, "unreadable .npy header"),
        (_expression_header(), 422, "malformed node or string"),
        (npy_bytes(np.zeros(3, dtype=[("a", "<f8")])), 422, "structured"),
        (npy_bytes(np.array(["2020-01-01"], dtype="datetime64[D]")), 422, "not accepted"),
        (_fortran(np.ones((3, 2))), 422, "Fortran"),
        (b"", 422, "empty"),
    ],
)
def test_bad_arrays_are_refused_and_leave_nothing(api, settings, body, status, message):
    r = api.post("/v1/datasets", content=body, headers=NPY)
    assert r.status_code == status, r.text
    problem = r.json()
    assert " at 0x" not in problem["detail"]  # no process's addresses
    assert r.headers["content-type"].startswith("application/problem+json")
    assert message in problem["detail"] and problem["status"] == status
    assert _files(settings) == []
    assert api.get("/v1/jobs").json()["items"] == []


def test_bad_parquet_is_refused(api, settings):
    nested = pd.DataFrame({"nested": [[1, 2], [3]]})
    r = api.post("/v1/datasets", content=parquet_bytes(nested), headers=PARQUET)
    assert r.status_code == 422 and "nested" in r.json()["detail"]
    r = api.post("/v1/datasets", content=b"PAR1 not really", headers=PARQUET)
    assert r.status_code == 422 and "Parquet" in r.json()["detail"]
    assert _files(settings) == []


def _parquet_of(table) -> bytes:
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def test_parquet_the_workers_could_not_read_back_is_refused_naming_the_column(api, settings):
    """Stored, then every job on it failed (a time zone pandas does not
    know, a date past year 9999); categories beyond 64 bits were a 500."""
    import json

    import pyarrow as pa

    zone = pa.table({"when": pa.array(range(6), type=pa.timestamp("ms", tz="Not/AZone"))})
    far = pa.table({"day": pa.array([0, 2**31 - 1], type=pa.date32())})
    codes = pa.table({"c": pa.array([1, 2, 1]).dictionary_encode()})
    huge = codes.replace_schema_metadata(
        {b"memogrid.categories": json.dumps({"0": [False, [10**30, 2]]}).encode()}
    )
    for table, message in (
        (zone, "column 'when' has a time zone 'Not/AZone' that is not known"),
        (far, "column 'day' holds a date outside years 1 to 9999"),
        (huge, "the categories of column 'c' are not of its type"),
    ):
        r = api.post("/v1/datasets", content=_parquet_of(table), headers=PARQUET)
        assert r.status_code == 422, r.text
        assert message in r.json()["detail"]
    assert _files(settings) == []
    known = pa.table({"when": pa.array(range(6), type=pa.timestamp("ms", tz="Europe/Paris"))})
    assert api.post("/v1/datasets", content=_parquet_of(known), headers=PARQUET).status_code == 201


TEXT = {"content-type": "application/x-memogrid-text"}


def _text_body(offsets, data: bytes) -> bytes:
    return npy_bytes(np.asarray(offsets, dtype="<i8")) + data


def test_upload_text_gets_its_content_id_at_its_own_size(api, settings, store):
    """A list of documents travels and is stored at its UTF-8 size, where a
    numpy text array would hold the longest document's width in every row."""
    from memogrid.data import hash_text, text_parts

    docs = ["short", "ünïcödé ✓", "", "x" * 100_000] + [f"doc {i}" for i in range(996)]
    offsets, data = text_parts(docs)
    r = api.post("/v1/datasets", content=_text_body(offsets, data), headers=TEXT)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["id"] == hash_text(offsets, data) == dataset_id(docs) == store.put(docs).dataset_id
    assert body["kind"] == "text" and body["shape"] == [1000] and body["dtype"] is None
    # the whole corpus is ~110 KB; as numpy text it would be 1000 x 400 KB
    assert body["size"] < 2 * len(data) + 10_000
    assert _files(settings) == [f"{body['id']}.text"]
    # a Series or an object array of the same strings is the same text
    assert dataset_id(pd.Series(docs)) == dataset_id(np.array(docs, dtype=object)) == body["id"]


@pytest.mark.parametrize(
    "body, message",
    [
        (b"not npy at all", "readable .npy header"),
        (npy_bytes(np.array([0, 3], dtype="<i4")) + b"abc", "int64"),
        (npy_bytes(np.array([[0, 3]], dtype="<i8")) + b"abc", "one-dimensional"),
        (_text_body([0, 3], b"ab"), "rise from 0 to its 2 bytes"),
        (_text_body([1, 3], b"abc"), "rise from 0"),
        (_text_body([0, 2, 1, 3], b"abc"), "rise from 0"),
        (_text_body([0, 2], b"\xff\xfe"), "not UTF-8"),
        (_text_body([0, 1], b"\xc3"), "not UTF-8"),  # ends within a character
        (_text_body([0, 1, 2], "é".encode()), "cut a UTF-8 character"),
        (npy_bytes(np.arange(4, dtype="<i8"))[:-4], "ends within its offsets"),
        (b"", "empty"),
    ],
)
def test_bad_text_is_refused_and_leaves_nothing(api, settings, body, message):
    r = api.post("/v1/datasets", content=body, headers=TEXT)
    assert r.status_code == 422, r.text
    assert message in r.json()["detail"]
    assert _files(settings) == []


def test_a_text_upload_is_checked_without_reading_it_into_memory(store):
    """Text near the upload limit (GiBs) is checked and hashed through a
    mapping of its file, not read whole into the service's memory."""
    import tracemalloc

    from memogrid.data import hash_text, text_parts
    from memogrid_service.store.uploads import Upload

    offsets, data = text_parts(["ünïcödé " * 500] * 10_000)  # ~45 MB of UTF-8
    body = _text_body(offsets, data)
    upload = Upload(store, "text", len(body))
    for at in range(0, len(body), 1 << 20):
        upload.feed(body[at : at + (1 << 20)])
    del body
    tracemalloc.start()
    try:
        info = upload.finish()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert info.id == hash_text(offsets, data) and info.shape == [10_000]
    assert peak < len(data) / 3, peak  # a few chunks of the check, not the body


SPARSE = {"content-type": "application/x-memogrid-sparse"}


def _sparse_matrix():
    from scipy import sparse

    rng = np.random.default_rng(3)
    return sparse.random(30, 12, density=0.2, format="csr", random_state=rng)


def _sparse_body(m) -> bytes:
    from memogrid.sparse import sparse_body

    return b"".join(sparse_body(m))


def _raw_sparse(head, *arrays, pad: int = 64) -> bytes:
    """A sparse body laid out by hand: any header, any arrays."""
    import json

    from memogrid.sparse import SPARSE_MAGIC

    text = json.dumps(head).encode() if not isinstance(head, bytes) else head
    out = bytearray(SPARSE_MAGIC + struct.pack("<I", len(text)) + text)
    for arr in arrays:
        out += b"\0" * (-len(out) % pad)
        out += np.asarray(arr).tobytes()
    return bytes(out)


def test_upload_sparse_gets_its_content_id(api, settings, store):
    from scipy import sparse

    m = _sparse_matrix()
    r = api.post("/v1/datasets", content=_sparse_body(m), headers=SPARSE)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["id"] == dataset_id(m) == store.put(m).dataset_id == dataset_id(m.tocoo())
    assert body["kind"] == "sparse" and body["shape"] == [30, 12] and body["dtype"] == "<f8"
    assert _files(settings) == [f"{body['id']}.sparse"]
    again = api.post("/v1/datasets", content=_sparse_body(m.copy()), headers=SPARSE)
    assert again.status_code == 200 and again.json()["id"] == body["id"]
    # an array of the same class scipy calls csr_array is another dataset
    other = api.post("/v1/datasets", content=_sparse_body(sparse.csr_array(m)), headers=SPARSE)
    assert other.status_code == 201 and other.json()["id"] != body["id"]


def _tampered(change):
    m = _sparse_matrix()
    change(m)  # scipy checks nothing when attributes are set directly
    return _raw_sparse(
        ["csr_matrix", list(m.shape), int(m.nnz), "<f8", "<i4"], m.data, m.indices, m.indptr
    )


def _set(name, at, value):
    return lambda m: getattr(m, name).__setitem__(at, value)


_HEAD = ["csr_matrix", [2, 3], 1, "<f8", "<i4"]
_ARRAYS = (np.array([1.0]), np.array([2], "<i4"), np.array([0, 1, 1], "<i4"))


@pytest.mark.parametrize(
    "body, message",
    [
        (b"not a sparse matrix", "bad magic bytes"),
        (_raw_sparse(b"{oops", *_ARRAYS), "not JSON"),
        (_raw_sparse(b"[" * 5000 + b"]" * 5000, *_ARRAYS), "not JSON"),
        (_raw_sparse(_HEAD[:4], *_ARRAYS), "[class, [rows, columns], nnz"),
        (_raw_sparse(["coo_matrix", *_HEAD[1:]], *_ARRAYS), "csr_matrix, csr_array"),
        (_raw_sparse([*_HEAD[:1], [2, -3], *_HEAD[2:]], *_ARRAYS), "[class, [rows, columns]"),
        (_raw_sparse([*_HEAD[:4], "<i2"], *_ARRAYS), "index dtype"),
        (_raw_sparse([*_HEAD[:3], "|O", "<i4"], *_ARRAYS), "numbers or booleans"),
        (_raw_sparse([*_HEAD[:3], "<M8[ns]", "<i4"], *_ARRAYS), "numbers or booleans"),
        (_raw_sparse([*_HEAD[:3], "i4,i4", "<i4"], *_ARRAYS), "numbers or booleans"),
        (_raw_sparse([*_HEAD[:3], "not a dtype", "<i4"], *_ARRAYS), "numbers or booleans"),
        (_raw_sparse([*_HEAD[:3], "<f2", "<i4"], [1.0], *_ARRAYS[1:]), "no float16"),
        (_raw_sparse([*_HEAD[:3], ">f8", "<i4"], *_ARRAYS), "native byte order"),
        (_raw_sparse(_HEAD, *_ARRAYS)[:-4], "where its header describes"),
        (_raw_sparse(_HEAD, *_ARRAYS) + b"\0" * 8, "where its header describes"),
        (_raw_sparse(_HEAD, *_ARRAYS, pad=8), "where its header describes"),
        (_tampered(_set("indices", 0, 12)), "column indices lie in [0, 12)"),
        (_tampered(_set("indices", 0, -1)), "column indices lie in [0, 12)"),
        (_tampered(_set("indptr", 3, 0)), "row pointers rise from 0"),
        (_tampered(_set("indptr", 0, 1)), "row pointers rise from 0"),
        (
            _raw_sparse([*_HEAD[:2], 0, *_HEAD[3:]], [], np.array([], "<i4"), _ARRAYS[2]),
            "row pointers",
        ),
        (_raw_sparse([*_HEAD[:2], 2**40, *_HEAD[3:]], *_ARRAYS), "does not fit <i4"),
    ],
)
def test_bad_sparse_is_refused_and_leaves_nothing(api, settings, body, message):
    r = api.post("/v1/datasets", content=body, headers=SPARSE)
    assert r.status_code == 422, r.text
    assert message in r.json()["detail"]
    assert _files(settings) == []


def test_a_sparse_matrix_wider_than_the_size_limit_allows_is_413(api, settings):
    """A few bytes may declare any number of columns, but estimators keep
    arrays as wide as X: the width is held to the upload limit's."""
    width = settings.upload_max_bytes // 8 + 1
    body = _raw_sparse(["csr_matrix", [1, width], 0, "<f8", "<i8"], [], [], np.zeros(2, "<i8"))
    r = api.post("/v1/datasets", content=body, headers=SPARSE)
    assert r.status_code == 413 and f"{width} columns" in r.json()["detail"]
    assert _files(settings) == []
    narrow = _raw_sparse(["csr_matrix", [1, width - 1], 0, "<f8", "<i8"], [], [], [0, 0])
    assert api.post("/v1/datasets", content=narrow, headers=SPARSE).status_code == 201


def test_a_text_column_stored_once_per_value_is_held_to_the_limit_as_it_reads(api, settings):
    """Dictionary encoding stores a repeated value once: a few kB of Parquet
    that reads as far more than the upload limit is a 413, before it is
    read whole; the same column within the limit is taken."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def parquet(rows: int, width: int) -> bytes:
        buf = io.BytesIO()
        pq.write_table(pa.table({"a": ["y" * width] * rows}), buf, compression="zstd")
        return buf.getvalue()

    rows = settings.upload_max_bytes // 40_000 + 1
    bomb = parquet(rows, 40_000)
    assert len(bomb) < 64 << 10  # the file itself is small
    r = api.post("/v1/datasets", content=bomb, headers=PARQUET)
    assert r.status_code == 413 and "decompresses" in r.json()["detail"], r.text
    assert _files(settings) == []
    r = api.post("/v1/datasets", content=parquet(rows // 2, 40_000), headers=PARQUET)
    assert r.status_code == 201, r.text
    # the same value in a type the store does not take: refused before it is read
    one = "y" * 40_000
    for column in (
        pa.array([[one]] * rows),
        pa.array([{"s": one}] * rows),
        pa.array([one.encode()] * rows, type=pa.binary(40_000)),
    ):
        buf = io.BytesIO()
        pq.write_table(pa.table({"a": column}), buf, compression="zstd")
        assert len(buf.getvalue()) < 64 << 10
        r = api.post("/v1/datasets", content=buf.getvalue(), headers=PARQUET)
        assert r.status_code == 422 and "unsupported type" in r.json()["detail"], r.text
    assert len(_files(settings)) == 1


def test_unknown_content_type_is_415(api):
    r = api.post("/v1/datasets", content=b"1,2,3", headers={"content-type": "text/csv"})
    assert r.status_code == 415 and "text/csv" in r.json()["detail"]


def test_size_cap_before_and_while_reading(api, settings):
    big = np.zeros(settings.upload_max_bytes // 8 + 16)
    data = npy_bytes(big)
    # Content-Length says too much: refused before the body is read
    r = api.post("/v1/datasets", content=data, headers=NPY)
    assert r.status_code == 413 and "exceeds" in r.json()["detail"]

    # no length: the bytes are counted as they come
    def chunks():
        for i in range(0, len(data), 1 << 20):
            yield data[i : i + (1 << 20)]

    r = api.post("/v1/datasets", content=chunks(), headers=NPY)
    assert r.status_code == 413
    assert _files(settings) == []


@pytest.mark.parametrize("bad", ["..%2F..%2Fetc%2Fpasswd", "abc", "A" * 64])
def test_malformed_ids(api, bad):
    r = api.get(f"/v1/datasets/{bad}")
    assert r.status_code in (404, 422)
    assert api.delete(f"/v1/datasets/{bad}").status_code in (404, 405, 422)


def test_delete(api, settings):
    did = upload(api, np.arange(10.0))
    assert api.delete(f"/v1/datasets/{did}").status_code == 204
    assert api.get(f"/v1/datasets/{did}").status_code == 404
    assert _files(settings) == []
    assert api.delete(f"/v1/datasets/{did}").status_code == 404


def test_an_upload_racing_the_last_holders_delete_is_told_to_upload_again(
    api, api_as, settings, monkeypatch
):
    """Bob's upload found Alice's files in place; Alice, the last holder,
    deleted them before Bob's upload was recorded: a 409 asking to upload
    again, never a dataset without files."""
    from memogrid_service.store import uploads

    arr = np.arange(12.0)
    did = upload(api, arr)
    bob = api_as("bob")
    finish = uploads.Upload.finish

    def alice_deletes_meanwhile(self):
        info = finish(self)
        assert api.delete(f"/v1/datasets/{did}").status_code == 204
        return info

    monkeypatch.setattr(uploads.Upload, "finish", alice_deletes_meanwhile)
    r = bob.post("/v1/datasets", content=npy_bytes(arr), headers=NPY)
    assert r.status_code == 409 and "upload it again" in r.json()["detail"], r.text
    assert bob.head(f"/v1/datasets/{did}").status_code == 404
    monkeypatch.undo()
    assert bob.post("/v1/datasets", content=npy_bytes(arr), headers=NPY).status_code == 201
    assert bob.get(f"/v1/datasets/{did}").status_code == 200 and _files(settings)


def test_a_delete_racing_another_users_upload_being_recorded_keeps_their_dataset(
    api, api_as, settings
):
    """Alice, the last holder, deletes while Bob's upload of the same content
    is recording his ownership: the delete waits for it and keeps the bytes.
    It counted the holders without locking the content's row, so on
    PostgreSQL the cascade took Bob's fresh ownership and the files went."""
    import threading

    from sqlalchemy import select

    from memogrid_service.api.auth import ensure_user
    from memogrid_service.db.models import Dataset, DatasetOwner
    from memogrid_service.db.ops import utcnow

    arr = np.arange(14.0)
    did = upload(api, arr)
    bob = api_as("bob")
    db = api.app.state.services.db
    bob_id = ensure_user(db, "bob")
    codes = []
    deleting = threading.Thread(
        target=lambda: codes.append(api.delete(f"/v1/datasets/{did}").status_code)
    )
    with db.write() as s:  # Bob's upload recording itself, as _record does
        s.scalars(select(Dataset).where(Dataset.id == did).with_for_update()).first()
        s.add(DatasetOwner(dataset_id=did, user_id=bob_id, created_at=utcnow()))
        s.flush()
        deleting.start()
        deleting.join(0.5)
        assert deleting.is_alive()  # waiting for Bob's record to commit
    deleting.join(30)
    assert codes == [204]
    assert api.get(f"/v1/datasets/{did}").status_code == 404
    assert bob.head(f"/v1/datasets/{did}").status_code == 200
    assert bob.get(f"/v1/datasets/{did}").json()["shape"] == [14]
    assert _files(settings)


def test_two_users_uploading_the_same_new_content_at_once_both_hold_it(api):
    """The dataset row is inserted unless there before it is locked: two
    users' uploads of the same new content both inserted it (a 500 on
    PostgreSQL in 18 of 20 tries)."""
    import threading

    from fastapi.testclient import TestClient

    from memogrid_service.api.auth import create_token

    db = api.app.state.services.db
    clients = []
    for name in ("dana", "eli"):
        c = TestClient(api.app)
        c.headers["authorization"] = f"Bearer {create_token(db, name)}"
        clients.append(c)
    for trial in range(6):
        body = npy_bytes(np.random.RandomState(100 + trial).normal(size=(200, 5)))
        barrier = threading.Barrier(2)
        codes = []

        def up(c, body=body, barrier=barrier, codes=codes):
            barrier.wait()
            codes.append(c.post("/v1/datasets", content=body, headers=NPY).status_code)

        threads = [threading.Thread(target=up, args=(c,)) for c in clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert codes == [201, 201], (trial, codes)


def test_a_dataset_whose_file_vanished_is_not_held_and_is_mended_by_uploading(api, settings):
    """A file removed from the store by hand left HEAD and GET answering 200,
    so clients never sent it again and every job on it failed later. It is
    not held (404), a job on it is refused up front, and an upload puts the
    file back."""
    X = np.arange(12.0).reshape(6, 2)
    did = upload(api, X)
    for path in settings.datasets_dir.glob(f"{did}.*"):
        path.unlink()
    assert api.head(f"/v1/datasets/{did}").status_code == 404
    r = api.get(f"/v1/datasets/{did}")
    assert r.status_code == 404 and "upload it again" in r.json()["detail"]
    body = {"estimator": {"class": "sklearn.linear_model.Ridge"}, "param_grid": {}, "X": did}
    r = api.post("/v1/jobs", json=dict(body, y=did, cv=2))
    assert r.status_code == 422 and did in r.text, r.text
    assert upload(api, X) == did
    assert api.head(f"/v1/datasets/{did}").status_code == 200


@pytest.mark.parametrize("kind", ["array", "text", "sparse"])
def test_a_dataset_file_cut_short_is_not_held_and_is_mended_by_uploading(api, settings, kind):
    """A file cut short (a full disk, a power loss before its data reached
    the disk) answered 200 to HEAD, an upload of the same content kept the
    damaged file, and every job on it failed with numpy's error. It is not
    held, a job on it is refused, and an upload replaces it."""
    from scipy import sparse

    from memogrid.data import text_parts

    X = {
        "array": np.arange(2000.0).reshape(1000, 2),
        "text": [f"document {i}" for i in range(1000)],
        "sparse": sparse.random(1000, 20, density=0.1, format="csr", random_state=0),
    }[kind]

    def send():
        if kind == "array":
            return upload(api, X)
        if kind == "text":
            r = api.post("/v1/datasets", content=_text_body(*text_parts(X)), headers=TEXT)
        else:
            r = api.post("/v1/datasets", content=_sparse_body(X), headers=SPARSE)
        assert r.status_code in (200, 201), r.text
        return r.json()["id"]

    did = send()
    (path,) = settings.datasets_dir.glob(f"{did}.*")
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    assert api.head(f"/v1/datasets/{did}").status_code == 404
    r = api.get(f"/v1/datasets/{did}")
    assert r.status_code == 404 and "damaged" in r.json()["detail"]
    y = upload(api, np.arange(1000) % 2)
    body = {"estimator": {"class": "sklearn.linear_model.LogisticRegression"}, "X": did, "y": y}
    r = api.post("/v1/jobs", json=dict(body, param_grid={}, cv=2))
    assert r.status_code == 422 and did in r.text, r.text
    assert send() == did
    assert path.read_bytes() == whole
    assert api.head(f"/v1/datasets/{did}").status_code == 200
    assert api.get(f"/v1/datasets/{did}").json()["size"] == len(whole)


def test_a_file_damaged_in_place_fails_its_job_not_the_cache_and_an_upload_mends_it(api, settings):
    """A dataset file damaged in place, its size kept, passed every check: the
    next job ran on other data, finished, and cached its fits under the true
    data's keys, so every later search on the data gave those results. Now
    the job fails naming the damage, the service no longer holds the data,
    and once uploaded again a search gives scikit-learn's results."""
    import os

    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV

    from memogrid.wire import decode_cv_results
    from tests.helpers.parity import assert_cv_results_equal

    X, y = make_classification(n_samples=200, n_features=10, random_state=0)
    xid, yid = upload(api, X), upload(api, y)
    body = {"estimator": {"class": "sklearn.linear_model.LogisticRegression"}, "X": xid, "y": yid}

    def run(grid):
        r = api.post("/v1/jobs", json=dict(body, param_grid=grid, cv=3))
        assert r.status_code == 202, r.text
        return r.json()["id"], wait_job(api, r.json()["id"])

    _, first = run({"C": [0.1]})
    assert first["state"] == "succeeded", first
    path = settings.datasets_dir / f"{xid}.npy"
    before = path.stat()
    damaged = bytearray(path.read_bytes())
    damaged[-8:] = np.float64(1e6).tobytes()  # the last row's last feature
    path.write_bytes(bytes(damaged))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))
    _, failed = run({"C": [1.0]})
    assert failed["state"] == "failed", failed
    assert f"dataset {xid} is damaged" in failed["error"] and "upload" in failed["error"]
    assert api.head(f"/v1/datasets/{xid}").status_code == 404
    assert upload(api, X) == xid
    job, mended = run({"C": [1.0, 0.1]})
    assert mended["state"] == "succeeded", mended
    ours = decode_cv_results(api.get(f"/v1/jobs/{job}/results").json()["cv_results"])
    sk = GridSearchCV(LogisticRegression(), {"C": [1.0, 0.1]}, cv=3).fit(X, y)
    assert_cv_results_equal(ours, sk.cv_results_)


def test_a_file_damaged_unseen_by_the_service_is_found_by_its_workers(api, settings, monkeypatch):
    """Damaged with its modification time put back, a file the service
    checked as it was uploaded looks unchanged to the service; the workers,
    which never read it, check it and the job fails naming the damage. A
    worker may not be able to set the file aside (a read-only view of the
    store; here, a directory where it would go): the service, told, checks
    it afresh and does, so it no longer holds the data."""
    import os

    from sklearn.datasets import make_classification

    from memogrid_service.store.datasets import DatasetStore

    X, y = make_classification(n_samples=120, n_features=6, random_state=1)
    xid, yid = upload(api, X), upload(api, y)
    path = settings.datasets_dir / f"{xid}.npy"
    before = path.stat()
    path.write_bytes(path.read_bytes()[:-8] + np.float64(1e6).tobytes())
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    (settings.datasets_dir / f".tmp-damaged-{path.name}").mkdir()  # in the workers' way
    aside = settings.datasets_dir / f"service-aside-{path.name}"
    monkeypatch.setattr(DatasetStore, "_aside", lambda self, p: aside)  # not in the service's
    body = {"estimator": {"class": "sklearn.linear_model.LogisticRegression"}, "X": xid, "y": yid}
    r = api.post("/v1/jobs", json=dict(body, param_grid={"C": [0.5]}, cv=3))
    assert r.status_code == 202, r.text
    failed = wait_job(api, r.json()["id"])
    assert failed["state"] == "failed" and f"dataset {xid} is damaged" in failed["error"], failed
    assert aside.exists() and not path.exists()
    assert api.head(f"/v1/datasets/{xid}").status_code == 404


def test_an_upload_replaces_a_file_damaged_in_place(api, settings):
    """An upload kept a held file of the recorded size, damaged or not."""
    import os

    X = np.arange(2000.0)
    did = upload(api, X)
    path = settings.datasets_dir / f"{did}.npy"
    whole, before = path.read_bytes(), path.stat()
    path.write_bytes(whole[:-8] + np.float64(-1).tobytes())
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))
    assert upload(api, X) == did
    assert path.read_bytes() == whole


def test_a_full_disk_is_a_507_naming_it_and_leaves_nothing(api, settings, monkeypatch):
    import errno

    from memogrid_service.store.uploads import Upload

    def disk_fills(self, chunk):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Upload, "feed", disk_fills)
    r = api.post("/v1/datasets", content=npy_bytes(np.arange(100.0)), headers=NPY)
    assert r.status_code == 507, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "disk is full" in r.json()["detail"]
    assert _files(settings) == []
    monkeypatch.undo()
    assert api.post("/v1/datasets", content=npy_bytes(np.arange(100.0)), headers=NPY).is_success


def test_an_upload_whose_recording_fails_leaves_no_file(api, settings, monkeypatch):
    """The file was in place when the database failed to record it: held by
    nobody, counted in no quota, it stayed for good."""
    from sqlalchemy.exc import OperationalError

    from memogrid_service.api import datasets as routes

    def database_away(*args):
        raise OperationalError("INSERT", {}, Exception("the database went away"))

    monkeypatch.setattr(routes, "_record", database_away)
    r = api.post("/v1/datasets", content=npy_bytes(np.arange(100.0)), headers=NPY)
    assert r.status_code == 503 and "database is unavailable" in r.json()["detail"], r.text
    assert r.headers["retry-after"] == "5"
    assert _files(settings) == []
    monkeypatch.undo()
    held = upload(api, np.arange(50.0))
    other = api.post("/v1/datasets", content=npy_bytes(np.arange(100.0)), headers=NPY)
    assert other.status_code == 201
    # the same content recorded already (another holder's): its file stays
    monkeypatch.setattr(routes, "_record", database_away)
    r = api.post("/v1/datasets", content=npy_bytes(np.arange(50.0)), headers=NPY)
    assert r.status_code == 503
    assert f"{held}.npy" in _files(settings)
    # the database's disk full is a 507, as the datasets' disk full is

    def database_full(*args):
        raise OperationalError("INSERT", {}, Exception("database or disk is full"))

    monkeypatch.setattr(routes, "_record", database_full)
    r = api.post("/v1/datasets", content=npy_bytes(np.arange(60.0)), headers=NPY)
    assert r.status_code == 507 and "disk is full" in r.json()["detail"], r.text


def test_an_intact_file_is_kept_whatever_another_uploads_header(api, api_as, settings):
    """A .npy header may be padded otherwise, so the same content can arrive
    at another size: an intact file (at its recorded size) is kept. Replaced,
    it took the row's size with it only if the upload was recorded; one
    refused over its sender's quota left every holder's file 'damaged'."""
    import struct

    X = np.arange(1000.0)
    did = upload(api, X)
    (path,) = settings.datasets_dir.glob(f"{did}.*")
    whole = path.read_bytes()
    header_len = struct.unpack("<H", whole[8:10])[0]
    header = whole[10 : 10 + header_len].rstrip(b"\n") + b" " * 64 + b"\n"
    padded = whole[:8] + struct.pack("<H", len(header)) + header + whole[10 + header_len :]
    bob = api_as("bob")
    assert bob.post("/v1/datasets", content=npy_bytes(np.arange(200.0)), headers=NPY).is_success
    settings.user_max_bytes = len(padded) + 100  # bob's quota cannot take it as well
    r = bob.post("/v1/datasets", content=padded, headers=NPY)
    assert r.status_code == 413, r.text
    assert path.read_bytes() == whole
    assert api.head(f"/v1/datasets/{did}").status_code == 200


def test_a_users_uploads_under_way_at_once_are_bounded(api, api_as, settings):
    """Each upload is spooled to disk before its content can be held against
    the quota: a user's parallel uploads filled the disk past any quota. At
    most MEMOGRID_USER_MAX_UPLOADS are under way per user; one more is a 429
    with Retry-After, another user's is not held back, and a slot freed is
    taken again."""
    from contextlib import ExitStack

    from sqlalchemy import select

    from memogrid_service.db.models import User

    svc = api.app.state.services
    with svc.db.read() as s:
        admin = s.scalars(select(User.id).where(User.name == "admin")).one()
    body = npy_bytes(np.arange(5.0))
    with ExitStack() as under_way:
        for _ in range(settings.user_max_uploads):
            under_way.enter_context(svc.uploads.take(admin))
        r = api.post("/v1/datasets", content=body, headers=NPY)
        assert r.status_code == 429 and r.headers["retry-after"], r.text
        assert "uploads under way" in r.json()["detail"]
        assert api_as("bob").post("/v1/datasets", content=body, headers=NPY).status_code == 201
    r = api.post("/v1/datasets", content=body, headers=NPY)
    assert r.status_code in (200, 201), r.text
    assert svc.uploads._under_way == {}
