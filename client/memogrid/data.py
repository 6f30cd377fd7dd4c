"""Content ids of datasets: the same bytes, the same id, on client and service.

A dataset's id is the SHA-256 of a canonical encoding of its content:

- arrays: ``b"memogrid-array-v1\\0"``, the JSON of ``[dtype.str, shape]``,
  then the C-ordered bytes;
- text (a list, object array or pandas Series of strings: documents,
  labels): ``b"memogrid-text-v1\\0"``, the JSON of ``[n]``, the ``n + 1``
  little-endian int64 offsets of each string's UTF-8 bytes, then those
  bytes. Stored and sent as those offsets (a ``.npy``) followed by the
  bytes, it takes its content's size, where a numpy text array takes the
  longest string's width in every row;
- DataFrames: ``b"memogrid-frame-v5\\0"``, the JSON of each column's
  label (as ``[kind, label]``), Arrow type, which missing value its nulls
  are (object columns) and pandas dtype where the Arrow type does not say it, then
  each column's logical content: its validity bitmap and its values with
  nulls zeroed and NaNs made one NaN; a categorical's codes and its
  categories. The index is not content.

That is the canonical Arrow table (:func:`canonical_table`): string columns
as ``string``, categoricals as ``dictionary<int32 codes>``, and no metadata
but memogrid's own, so the way pandas or Arrow lays a column out (Python or
Arrow string storage, large strings, what lies under a null) and pyarrow's
versions (which pandas' metadata names) give one id. A column's pandas
dtype among :data:`DTYPES` (or Arrow-backed numbers and booleans,
``int64[pyarrow]``) is content (``memogrid.dtypes``): scikit-learn
treats ``object``, ``str`` and ``string`` columns, and nullable and plain
numbers, differently. What a frame reads back as (:func:`table_frame`)
follows from that table alone, whoever uploaded it first.

Column labels are strings, integers or finite floats, and their kind is
content: scikit-learn records string labels as ``feature_names_in_`` and
ignores numeric ones, so ``0`` and ``"0"`` are different datasets (Arrow
names fields by strings; non-string labels ride in ``memogrid.columns``).
An object column's missing values read back as they were held, ``None``,
``pd.NA``, ``pd.NaT`` or NaN, each null its own (``memogrid.nulls``):
scikit-learn's imputers and encoders tell them apart. An object column
mixing kinds of values (str and int ids, ints and floats), which Arrow
refuses or converts, is stored as typed tokens (``memogrid.mixed``,
:func:`_token`) and read back as the values it held. Parquet, the upload
format, keeps only string categoricals' codes, so an upload carries every
categorical's categories in ``memogrid.categories`` and the service
rebuilds them exactly.

Sparse X (scipy's matrices and arrays) is stored as the CSR matrix
scikit-learn's searches index: see :mod:`memogrid.sparse`.

The client hashes locally to skip uploads the service already holds; the
service hashes what it receives with this same code. Object arrays and
columns of other kinds are refused: nothing here is ever pickled.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import itertools
import json
import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from .errors import DataError
from .sparse import SPARSE_MAGIC, as_csr, hash_sparse, is_sparse

ARRAY_MAGIC = b"memogrid-array-v1\0"
# v1 hashed the schema metadata pandas writes (its version and pyarrow's),
# lost numeric column labels and hashed Arrow's bytes as found (large or
# small strings, whatever lay under nulls); v2 (never released) kept the bytes
# v3 gave str, string and object columns (and nullable and plain numbers)
# one id, but scikit-learn does not treat them alike; v4 read an object
# column of numbers or booleans with missing values back as floats and None
FRAME_MAGIC = b"memogrid-frame-v5\0"
TEXT_MAGIC = b"memogrid-text-v1\0"
#: every content encoding ids are hashed with, by name and version: client
#: and service must share them (the service lists its own in /v1/health)
ENCODINGS = tuple(
    m.rstrip(b"\0").decode() for m in (ARRAY_MAGIC, FRAME_MAGIC, TEXT_MAGIC, SPARSE_MAGIC)
)
#: the upload content type of text (see :func:`text_parts`)
TEXT_TYPE = "application/x-memogrid-text"
#: schema metadata key of a frame's column labels, when not all are strings
LABELS_KEY = b"memogrid.columns"
#: schema metadata key of which missing value each null of an object column
#: is, where not NaN: position -> one letter of :data:`NULL_KINDS` for all
#: its nulls, or one per null in row order
NULLS_KEY = b"memogrid.nulls"
#: before v5 (read still): the positions of object columns whose nulls are None
NONE_KEY = b"memogrid.none"
#: schema metadata key of the object columns whose values are of several
#: kinds (str and int ids, ints and floats): positions; stored as typed
#: tokens (:func:`_token`), read back as the Python values they were
MIXED_KEY = b"memogrid.mixed"
#: the missing values an object column may hold: None, pd.NA, pd.NaT, NaN
NULL_KINDS = "natf"
#: schema metadata key of every categorical's categories, on the wire
CATEGORIES_KEY = b"memogrid.categories"
#: schema metadata key of the pandas dtypes columns had, where the Arrow type
#: alone does not say it (position -> dtype name; see :data:`DTYPES`)
DTYPES_KEY = b"memogrid.dtypes"
#: pandas dtypes a column keeps through the store, by name: scikit-learn
#: treats them differently (``string`` holds pd.NA, which its imputers and
#: encoders refuse where ``str`` and ``object`` hold NaN; nullable numbers
#: are converted where plain ones are not; an ``object`` column of numbers
#: gives ``object`` categories), so each is content. Arrow type -> the
#: dtype names it may carry.
DTYPES: dict[str, tuple[str, ...]] = {
    "text": ("object", "str", "string"),
    "integer": ("object", "Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16", "UInt32", "UInt64"),
    "floating": ("object", "Float32", "Float64"),
    "boolean": ("object", "boolean"),
    "temporal": ("object",),
}
_CHUNK = 1 << 22
_MAX_TEXT_HEADER = 10_000


def is_frame(obj: Any) -> bool:
    return type(obj).__name__ == "DataFrame" and hasattr(obj, "columns")


def one_number_dtype(frame: Any) -> bool:
    """Whether every column of a DataFrame has the same numpy number dtype
    (its values are then one array, not assembled anew by pandas)."""
    dtypes = set(frame.dtypes)
    dtype = next(iter(dtypes), None)
    return len(dtypes) == 1 and isinstance(dtype, np.dtype) and dtype.kind in "biuf"


def rows_first(frame: Any) -> bool:
    """Whether a DataFrame of one numpy number dtype is laid out row by row:
    its values are a C-ordered (and not also F-ordered) array. Frames of
    several dtypes (whose values pandas assembles anew) never are."""
    if not one_number_dtype(frame):
        return False
    values = np.asarray(frame)  # one block: a view, no copy
    return bool(values.flags.c_contiguous and not values.flags.f_contiguous)


def as_array(obj: Any) -> np.ndarray:
    """An array-like as the array the service stores (Series and lists included)."""
    if is_sparse(obj):
        raise DataError(
            f"sparse input ({type(obj).__name__}) is accepted as X only: pass a dense "
            "array (.toarray()) here"
        )
    arr = np.asarray(obj)
    if arr.dtype.hasobject:
        # string labels often come as objects (pandas): those become str
        if _all_strings(arr):
            return arr.astype(str)
        kinds = sorted({type(v).__name__ for v in arr.flat})
        raise DataError(
            f"an object dtype array holding {', '.join(kinds[:5])} values is not accepted: "
            "an array is numbers, booleans or strings of one dtype; for columns of "
            "different kinds pass a pandas DataFrame (each column keeps its type)"
        )
    if arr.dtype.kind not in "biufcUS":
        raise DataError(
            f"an array of dtype {arr.dtype} is not accepted: an array is numbers, booleans "
            "or strings; pass dates and times as a pandas DataFrame column (each column "
            "keeps its type), or as numbers (.astype('int64'))"
        )
    return arr


def object_numbers(obj: Any) -> np.ndarray | None:
    """An ``object`` array (or pandas Series) of numbers as the array the
    service stores, to load back as ``object`` (as it does object text):
    bool if every value is a bool, int64 if every one is an integer, else
    float64, so each value comes back as the Python number it equals and the
    fits see what scikit-learn sees in-process (a regressor converting it,
    a classifier refusing it as an unknown label type). None for anything
    else (strings, mixed kinds)."""
    dtype = getattr(obj, "dtype", None)
    if not isinstance(dtype, np.dtype) or dtype.kind != "O" or is_frame(obj):
        return None
    values = np.asarray(obj)
    if values.size == 0 or values.ndim > 2:
        return None
    flat = values.ravel().tolist()  # numpy scalars stay numpy scalars here
    if all(isinstance(v, (bool, np.bool_)) for v in flat):
        return values.astype(bool)
    integers = (int, np.integer)
    # float64s only: a float32 computes as a float32 in object arithmetic
    if not all(
        isinstance(v, (*integers, float)) and not isinstance(v, (bool, np.bool_)) for v in flat
    ):
        return None
    try:
        if all(isinstance(v, integers) for v in flat):
            return values.astype(np.int64)
    except OverflowError:
        return None
    return values.astype(np.float64)


def as_target(y: Any) -> Any:
    """``y`` as scikit-learn's estimators read it, where storing it as it is
    would differ: a pandas Series of a nullable (extension) number or boolean
    dtype (``Int64``, ``boolean``, ``Float64``, ``int64[pyarrow]``) is read
    as float64 with NaN for NA, so ``classes_`` and predictions are float64
    there; anything else is returned as given."""
    dtype = getattr(y, "dtype", None)
    if dtype is None or isinstance(dtype, np.dtype) or is_frame(y):
        return y
    if not type(dtype).__module__.startswith("pandas"):
        return y
    from pandas.api.types import is_bool_dtype, is_float_dtype, is_integer_dtype

    if type(dtype).__name__ != "SparseDtype" and (
        is_bool_dtype(dtype) or is_integer_dtype(dtype) or is_float_dtype(dtype)
    ):
        return y.to_numpy(dtype=np.float64, na_value=np.nan)
    return y


def is_object_strings(obj: Any) -> bool:
    """Whether an array-like reads as an ``object`` array of strings (pandas
    text, an object array): the service loads it back as ``object`` for
    scikit-learn, whose classifiers keep labels in the dtype they came in
    (a list of labels reads as numpy text, as numpy reads it)."""
    if obj is None or is_frame(obj) or isinstance(obj, (list, tuple)):
        return False  # numpy reads a list of strings as numpy text
    arr = np.asarray(obj)
    return arr.dtype.hasobject and _all_strings(arr)


def _all_strings(arr: np.ndarray) -> bool:
    return bool(arr.size) and all(isinstance(v, str) for v in arr.ravel())


def is_text(obj: Any) -> bool:
    """Whether ``obj`` is one-dimensional text not held as a numpy text
    array: a list or tuple, an object array or a pandas Series of strings
    (stored as text, :func:`text_parts`)."""
    if isinstance(obj, np.ndarray):
        if obj.dtype != object or obj.ndim != 1:
            return False
    elif isinstance(obj, (list, tuple)):
        if obj and not isinstance(obj[0], str):  # rows of numbers: not text
            return False
    elif type(obj).__name__ != "Series":
        return False
    try:
        arr = np.asarray(obj, dtype=object)
    except ValueError:  # ragged nesting
        return False
    return arr.ndim == 1 and _all_strings(arr)


def text_parts(obj: Any) -> tuple[np.ndarray, bytearray]:
    """Text as its strings' UTF-8 bytes, one after the other, and the
    ``n + 1`` int64 offsets that cut them (the bytes gathered as they are
    encoded: a corpus is not held twice over)."""
    data = bytearray()
    lengths = []
    for s in np.asarray(obj, dtype=object):
        # a lone surrogate (os.fsdecode's) passes through, as numpy text holds it
        encoded = s.encode("utf-8", "surrogatepass")
        data += encoded
        lengths.append(len(encoded))
    offsets = np.zeros(len(lengths) + 1, dtype="<i8")
    np.cumsum(lengths, out=offsets[1:])
    return offsets, data


def text_pieces(offsets: np.ndarray, data: bytes | bytearray) -> Iterator[bytes | memoryview]:
    """Text as sent and stored, in pieces: its offsets as a ``.npy``, then
    its bytes, not copied (read back by :func:`check_text`)."""
    yield npy_header(offsets) + np.ascontiguousarray(offsets, dtype="<i8").tobytes()
    view = memoryview(data)
    for at in range(0, len(view), _CHUNK):
        yield view[at : at + _CHUNK]


def hash_text(offsets: np.ndarray, data: bytes | bytearray | memoryview) -> str:
    h = hashlib.sha256(TEXT_MAGIC)
    h.update(json.dumps([len(offsets) - 1]).encode())
    h.update(np.ascontiguousarray(offsets, dtype="<i8").tobytes())
    h.update(data)
    return h.hexdigest()


def check_text(body: bytes | memoryview) -> tuple[np.ndarray, memoryview]:
    """The offsets and bytes of text as sent and stored (a ``.npy`` of int64
    offsets, then the bytes), checked without decoding a string: the bytes
    are UTF-8 and every offset starts a character. A DataError says what
    is wrong."""
    view = memoryview(body)
    fp = io.BytesIO(view[:_MAX_TEXT_HEADER])
    try:
        version = np.lib.format.read_magic(fp)
        read = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        shape, fortran, dtype = read(fp, _MAX_TEXT_HEADER)
    except Exception as exc:  # numpy parses untrusted text: tokenize errors too
        raise DataError(f"the text's offsets are not a readable .npy header: {exc}") from None
    if dtype != np.dtype("<i8") or len(shape) != 1 or shape[0] < 2:
        raise DataError("the text's offsets are a one-dimensional int64 array of n + 1 >= 2")
    start = fp.tell()
    end = start + 8 * shape[0]
    if len(view) < end:
        raise DataError("the text ends within its offsets")
    offsets = np.frombuffer(view[start:end], dtype="<i8")
    data = view[end:]
    if offsets[0] != 0 or np.any(np.diff(offsets) < 0) or offsets[-1] != len(data):
        raise DataError(f"the text's offsets must rise from 0 to its {len(data)} bytes of strings")
    decoder = codecs.getincrementaldecoder("utf-8")("surrogatepass")
    try:
        for at in range(0, len(data), _CHUNK):
            decoder.decode(data[at : at + _CHUNK])
        decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        raise DataError(f"the text is not UTF-8: {exc.reason}") from None
    inner = offsets[(offsets > 0) & (offsets < len(data))]
    if inner.size and np.any(np.frombuffer(data, dtype=np.uint8)[inner] & 0xC0 == 0x80):
        raise DataError("the text's offsets cut a UTF-8 character")
    return offsets, data


def decode_text(offsets: np.ndarray, data: bytes | memoryview) -> list[str]:
    """The strings of checked text (:func:`check_text`)."""
    raw = bytes(data)
    return [
        raw[a:b].decode("utf-8", "surrogatepass") for a, b in itertools.pairwise(offsets.tolist())
    ]


def hash_array(arr: np.ndarray) -> str:
    if arr.dtype.hasobject:
        raise DataError("object dtype arrays are not accepted")
    h = hashlib.sha256(ARRAY_MAGIC)
    h.update(json.dumps([arr.dtype.str, list(arr.shape)]).encode())
    for chunk in array_chunks(arr):
        h.update(chunk)
    return h.hexdigest()


def array_chunks(arr: np.ndarray, size: int = _CHUNK) -> Iterator[memoryview]:
    """The array's C-ordered bytes, in chunks, without copying a contiguous array."""
    flat = np.ascontiguousarray(arr).reshape(-1)
    mv = flat.data.cast("B") if flat.size else memoryview(b"")
    for start in range(0, len(mv), size):
        yield mv[start : start + size]


def npy_header(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": arr.dtype.str, "fortran_order": False, "shape": tuple(arr.shape)}
    )
    return buf.getvalue()


def _label(value: Any) -> list[Any]:
    """A column label as ``[kind, value]``, or a DataError naming it."""
    if isinstance(value, str):
        return ["str", str(value)]
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return ["int", int(value)]
    if isinstance(value, (float, np.floating)) and math.isfinite(value):
        return ["float", float(value)]
    raise DataError(
        f"column label {value!r} ({type(value).__name__}) is not supported: "
        "column labels must be strings, integers or finite floats"
    )


def _null_kind(value: Any) -> str:
    import pandas as pd

    if value is None:
        return "n"
    if value is pd.NA:
        return "a"
    if value is pd.NaT:
        return "t"
    return "f"  # NaN


def _missing_value(kind: str) -> Any:
    """The missing value a letter of :data:`NULL_KINDS` stands for."""
    import pandas as pd

    return {"n": None, "a": pd.NA, "t": pd.NaT, "f": np.nan}[kind]


def _null_kinds(col: Any) -> str | None:
    """Which missing value each null of an object column is (see
    :data:`NULLS_KEY`), or None when all are NaN (or it has none)."""
    if getattr(col, "dtype", None) != np.dtype(object):
        return None
    return _normal_kinds("".join(_null_kind(v) for v in col[col.isna()]))


def _normal_kinds(kinds: str) -> str | None:
    """Null kinds written one way: one letter when all are alike, None when
    all are NaN (the default)."""
    if not kinds.strip("f"):
        return None
    return kinds[0] if kinds == kinds[0] * len(kinds) else kinds


def _token(value: Any) -> str | None:
    """A value of a mixed object column as a typed token, or None if it is
    of no kind a token holds."""
    if isinstance(value, (bool, np.bool_)):
        return "b1" if value else "b0"
    if isinstance(value, (int, np.integer)):
        return f"i{int(value)}"
    if isinstance(value, (float, np.floating)):
        return f"f{float(value)!r}"
    if isinstance(value, str):
        return f"s{value}"
    return None


def _untoken(token: str, name: str) -> Any:
    """The value a token stands for; a DataError unless it is one
    :func:`_token` writes (so equal values always have one token)."""
    kind, rest = token[:1], token[1:]
    value: Any = None
    try:
        if kind == "s":
            return rest
        if kind == "b" and rest in ("0", "1"):
            return rest == "1"
        if kind == "i":
            value = int(rest)
        elif kind == "f":
            value = float(rest)
    except ValueError:
        value = None
    if value is None or _token(value) != token:
        raise DataError(f"column {name!r} holds a malformed mixed value token {token[:40]!r}")
    return value


def _object_kind(col: Any) -> str | None:
    """What pandas infers an object column holds (``"mixed"``,
    ``"integer"``, ``"datetime"``...); None for a column of another dtype."""
    from pandas.api.types import infer_dtype

    if getattr(col, "dtype", None) != np.dtype(object):
        return None
    return str(infer_dtype(col, skipna=True))


def _mixed_tokens(col: Any, kind: str | None) -> list[str | None] | None:
    """An object column (of :func:`_object_kind` ``kind``) holding values of
    several kinds (str and int ids, ints and floats), or ints no 64-bit
    integer holds (ids, hashes), as tokens (None where missing); None for
    any other column (Arrow stores it, or refuses what it cannot)."""
    if kind is None:
        return None
    if kind == "integer":
        ints = [int(v) for v in col.dropna()]
        lo, hi = min(ints, default=0), max(ints, default=0)
        if -(2**63) <= lo and hi < 2**63:
            return None  # Arrow's int64 (it infers no uint64 from Python ints)
    elif kind not in ("mixed", "mixed-integer", "mixed-integer-float"):
        return None
    missing = col.isna().to_numpy()
    tokens = [None if gone else _token(v) for v, gone in zip(col, missing, strict=True)]
    if any(t is None for t, gone in zip(tokens, missing, strict=True) if not gone):
        return None
    return tokens


def _one_time_zone(col: Any, kind: str | None, label: Any) -> None:
    """Refuse an object column (of :func:`_object_kind` ``kind``) of
    date-times some in a time zone and some in none: Arrow would store them
    all in one zone (the naive read as UTC), making comparable the values
    scikit-learn cannot compare."""
    if kind not in ("datetime", "datetime64"):
        return
    aware = {getattr(v, "tzinfo", None) is not None for v in col.dropna()}
    if len(aware) > 1:
        raise DataError(
            f"column {label!r} holds date-times with a time zone and without one, "
            "which cannot be compared: give them all one (or none) first"
        )


def _unsupported(label: Any, kind: Any) -> str:
    return (
        f"column {label!r} has unsupported type {kind}; numeric, boolean, string, "
        "categorical and date/time columns are accepted (a column the pipeline does "
        "not use can be dropped before the search)"
    )


def frame_table(df: Any) -> Any:
    """A DataFrame as its canonical Arrow table; refuses other column kinds."""
    import pandas as pd
    import pyarrow as pa

    labels = [_label(c) for c in df.columns]
    nulls = {i: k for i in range(df.shape[1]) if (k := _null_kinds(df.iloc[:, i])) is not None}
    names = [str(t) for t in df.dtypes]
    dtypes = {
        i: n
        for i, (n, t) in enumerate(zip(names, df.dtypes, strict=True))
        if any(n in ok for ok in DTYPES.values()) or _arrow_backed(t)
    }
    kinds = [_object_kind(df.iloc[:, i]) for i in range(df.shape[1])]
    for i, kind in enumerate(kinds):
        _one_time_zone(df.iloc[:, i], kind, df.columns[i])
    mixed = {
        i: t
        for i, kind in enumerate(kinds)
        if (t := _mixed_tokens(df.iloc[:, i], kind)) is not None
    }
    if mixed:
        df = df.copy(deep=False)  # the caller's frame keeps its values
        for i, tokens in mixed.items():
            df.isetitem(i, pd.Series(tokens, index=df.index, dtype=object))
    if any(kind != "str" for kind, _ in labels):  # fields named as table_labels expects
        df = df.set_axis([v if k == "str" else str(v) for k, v in labels], axis=1)
    # an int beyond 64 bits overflows Arrow's conversion
    unstorable = (pa.ArrowException, TypeError, ValueError, OverflowError)
    try:
        table = pa.Table.from_pandas(df, preserve_index=False)
    except unstorable as exc:
        for i, t in enumerate(df.dtypes):  # a column Arrow has no type for: named
            try:
                pa.Table.from_pandas(df.iloc[:, [i]], preserve_index=False)
            except unstorable:
                raise DataError(_unsupported(df.columns[i], t)) from None
        raise DataError(f"the DataFrame cannot be stored: {exc}") from None
    return canonical_table(table, labels=labels, nulls=nulls, dtypes=dtypes, mixed=sorted(mixed))


def _json_meta(table: Any, key: bytes) -> Any:
    raw = (table.schema.metadata or {}).get(key)
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise DataError(f"the table's {key.decode()} metadata is not JSON") from None


def table_labels(table: Any) -> list[list[Any]]:
    """A table's column labels as ``[kind, value]`` pairs.

    Read from :data:`LABELS_KEY` when present (it may come from an upload:
    anything but a well-formed list of labels that name the table's fields
    is a DataError), else every field name is a string label.
    """
    names = table.schema.names
    labels = _json_meta(table, LABELS_KEY)
    if labels is None:
        return [["str", n] for n in names]
    if not isinstance(labels, list) or len(labels) != len(names):
        raise DataError(f"the table's metadata must give {len(names)} column labels")
    out = []
    for pair, name in zip(labels, names, strict=True):
        if not (isinstance(pair, list) and len(pair) == 2 and pair[0] in ("str", "int", "float")):
            raise DataError(f"malformed column label {pair!r} in the table's metadata")
        kind, value = pair
        if kind == "float" and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)  # JSON writes 1.0 as 1.0, but accept 1
        try:
            label = _label(value)
        except DataError as exc:
            raise DataError(f"{exc} (in the table's metadata)") from None
        if label[0] != kind or str(value) != name:
            raise DataError(f"column label {pair!r} does not name field {name!r}")
        out.append(label)
    return out


def table_nulls(table: Any) -> dict[int, str]:
    """Which missing value the nulls of object columns are, where not NaN:
    position -> kinds (see :data:`NULLS_KEY`), checked against the table."""
    out = _nulls_meta(table)
    _check_null_counts(out, [c.null_count for c in table.columns])
    return out


def _check_null_counts(nulls: dict[int, str], counts: list[int]) -> None:
    """Each column's null kinds: one for all its nulls, or one per null."""
    for pos, kinds in nulls.items():
        if not (counts[pos] and len(kinds) in (1, counts[pos])):
            raise DataError(
                f"malformed null kinds for column {pos}: give one of {NULL_KINDS!r} "
                f"or one per null ({counts[pos]})"
            )


def _nulls_meta(table: Any) -> dict[int, str]:
    """:data:`NULLS_KEY` (and the older :data:`NONE_KEY`) as written, each
    kinds string of :data:`NULL_KINDS` letters; not checked against the data."""
    n = table.num_columns
    out = {i: "n" for i in _positions_meta(table, NONE_KEY)}
    raw = _json_meta(table, NULLS_KEY)
    if raw is None:
        return out
    if not isinstance(raw, dict):
        raise DataError(f"the table's {NULLS_KEY.decode()} metadata must be an object")
    for pos, kinds in raw.items():
        if not (isinstance(pos, str) and pos.isascii() and pos.isdigit() and int(pos) < n):
            raise DataError(f"null kinds given for no column: {pos!r}")
        if not (isinstance(kinds, str) and kinds and not kinds.strip(NULL_KINDS)):
            raise DataError(
                f"malformed null kinds for column {pos}: give one of {NULL_KINDS!r} or one per null"
            )
        out[int(pos)] = kinds
    return out


def table_mixed(table: Any) -> list[int]:
    """The positions of the object columns stored as typed tokens."""
    return _positions_meta(table, MIXED_KEY)


def _positions_meta(table: Any, key: bytes) -> list[int]:
    """Metadata ``key`` as the column positions it must list."""
    positions = _json_meta(table, key)
    if positions is None:
        return []
    n = table.num_columns
    if not (isinstance(positions, list) and all(type(i) is int and 0 <= i < n for i in positions)):
        raise DataError(f"the table's {key.decode()} metadata must list column positions")
    return sorted(set(positions))


def _arrow_kind(t: Any) -> str | None:
    """Which :data:`DTYPES` entry an Arrow type falls under (None: categorical)."""
    import pyarrow as pa

    if pa.types.is_dictionary(t):
        return None
    if _is_text(t):
        return "text"
    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_integer(t):
        return "integer"
    if pa.types.is_floating(t):
        return "floating"
    return "temporal"


#: the Arrow type a nullable pandas dtype is written as, and must be read from
_NULLABLE_ARROW = {
    **{n: n.lower() for n in DTYPES["integer"] if n != "object"},
    "Float32": "float",
    "Float64": "double",
    "boolean": "bool",
}


def _arrow_backed(dtype: Any) -> bool:
    """Whether a pandas dtype is Arrow-backed numbers, booleans, text or
    dates and times (``int64[pyarrow]``, ``string[pyarrow]``,
    ``dtype_backend="pyarrow"``): scikit-learn converts them as other
    extension dtypes (an int64[pyarrow] column's categories are floats, a
    missing string is pd.NA), so they are kept (their name is their Arrow
    type's)."""
    import pyarrow as pa

    t = getattr(dtype, "pyarrow_dtype", None)
    if not isinstance(t, pa.DataType) or type(dtype).__name__ != "ArrowDtype":
        return False
    return _arrow_kind(t) in _ARROW_BACKED_KINDS


#: the kinds of Arrow type (:func:`_arrow_kind`) whose Arrow-backed dtype is kept
_ARROW_BACKED_KINDS = ("integer", "floating", "boolean", "text", "temporal")


#: Arrow-backed text dtypes by name: pandas reads "string[pyarrow]" as its
#: own StringDtype, not as the ArrowDtype that prints so
_ARROW_TEXT = {"string[pyarrow]": "string", "large_string[pyarrow]": "large_string"}


def arrow_type_named(name: Any) -> Any:
    """The Arrow type of an Arrow-backed dtype's name (``timestamp[s,
    tz=UTC][pyarrow]``), or None for any other name."""
    import pandas as pd
    import pyarrow as pa

    if not isinstance(name, str) or not name.endswith("[pyarrow]"):
        return None
    if name in _ARROW_TEXT:
        return getattr(pa, _ARROW_TEXT[name])()
    try:
        t = getattr(pd.api.types.pandas_dtype(name), "pyarrow_dtype", None)
    except (TypeError, ValueError, ImportError):
        return None
    return t if isinstance(t, pa.DataType) else None


def _names_arrow_type(name: Any, t: Any) -> bool:
    """Whether ``name`` is an Arrow-backed dtype (see :func:`_arrow_backed`)
    whose Arrow type is stored as ``t`` (text as ``string``, dates and
    times as Parquet keeps them)."""
    import pyarrow as pa

    a = arrow_type_named(name)
    if a is None or _arrow_kind(a) not in _ARROW_BACKED_KINDS:
        return False
    if _is_text(a):
        return bool(t == pa.string())
    return bool(_parquet_type(a) == t)


def table_dtypes(table: Any) -> dict[int, str]:
    """The columns (by position) whose pandas dtype :data:`DTYPES_KEY` names,
    checked against their Arrow types."""
    raw = _json_meta(table, DTYPES_KEY)
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise DataError(f"the table's {DTYPES_KEY.decode()} metadata must be an object")
    out: dict[int, str] = {}
    for pos, name in raw.items():
        if not (pos.isascii() and pos.isdigit() and int(pos) < table.num_columns):
            raise DataError(f"a dtype given for no column: {pos!r}")
        field = table.schema.field(int(pos))
        kind = _arrow_kind(field.type)
        allowed = DTYPES.get(kind, ()) if kind is not None else ()
        if _names_arrow_type(name, field.type):
            out[int(pos)] = name
            continue
        if name not in allowed:
            raise DataError(
                f"column {field.name!r} of type {field.type} cannot have dtype {name!r}"
                + (f" (one of {list(allowed)})" if allowed else "")
            )
        exact = _NULLABLE_ARROW.get(name)
        if exact is not None and str(field.type) != exact:  # 300 is no UInt8
            raise DataError(
                f"column {field.name!r} of type {field.type} cannot have dtype {name!r} "
                f"(which holds {exact})"
            )
        out[int(pos)] = name
    return out


def _pandas_dtypes(table: Any) -> dict[int, str]:
    """The :data:`DTYPES` a table written by pandas itself (``to_parquet``,
    no memogrid metadata) names in pandas' metadata, so that such an upload
    gets the id its frame has; anything malformed there is ignored."""
    try:
        meta = json.loads((table.schema.metadata or {})[b"pandas"])
        entries = meta["columns"]
        names = table.schema.names
        out = {}
        for entry in entries:
            field, dtype = entry.get("field_name"), entry.get("numpy_type")
            if not isinstance(field, str) or names.count(field) != 1:
                continue
            pos = names.index(field)
            t = table.schema.field(pos).type
            kind = _arrow_kind(t)
            if kind is not None and (dtype in DTYPES[kind] or _names_arrow_type(dtype, t)):
                out[pos] = dtype
        return out
    except (KeyError, TypeError, ValueError, AttributeError, RecursionError):
        return {}


def _is_text(t: Any) -> bool:
    import pyarrow as pa

    view = getattr(pa.types, "is_string_view", None)  # pyarrow 16 and later
    return pa.types.is_string(t) or pa.types.is_large_string(t) or bool(view and view(t))


def _temporal(t: Any) -> bool:
    import pyarrow as pa

    return pa.types.is_timestamp(t) or pa.types.is_duration(t) or pa.types.is_date(t)


def _parquet_type(t: Any) -> Any:
    """The date/time type Parquet keeps ``t`` as: seconds become milliseconds,
    64-bit dates 32-bit ones (both lossless), so an upload reads back as sent."""
    import pyarrow as pa

    if pa.types.is_timestamp(t) and t.unit == "s":
        return pa.timestamp("ms", tz=t.tz)
    if pa.types.is_duration(t) and t.unit == "s":
        return pa.duration("ms")
    if pa.types.is_date64(t):
        return pa.date32()
    return t


def _int_view(t: Any) -> Any:
    """The integers under a date/time type."""
    import pyarrow as pa

    return pa.int32() if pa.types.is_date32(t) else pa.int64()


def _plain_ok(t: Any) -> bool:
    import pyarrow as pa

    return (
        pa.types.is_integer(t)
        or pa.types.is_floating(t)
        or pa.types.is_boolean(t)
        or _is_text(t)
        or _temporal(t)
    )


def _categories(table: Any) -> dict[int, tuple[bool, list[Any]]]:
    """An upload's :data:`CATEGORIES_KEY`: position -> (ordered, categories)."""
    raw = _json_meta(table, CATEGORIES_KEY)
    if raw is None:
        return {}
    out: dict[int, tuple[bool, list[Any]]] = {}
    if not isinstance(raw, dict):
        raise DataError(f"the table's {CATEGORIES_KEY.decode()} metadata must be an object")
    for pos, spec in raw.items():
        if not (pos.isdigit() and int(pos) < table.num_columns):
            raise DataError(f"categories given for no column: {pos!r}")
        if not (
            isinstance(spec, list)
            and len(spec) == 2
            and isinstance(spec[0], bool)
            and isinstance(spec[1], list)
        ):
            raise DataError(f"malformed categories for column {pos}: give [ordered, [values]]")
        out[int(pos)] = (spec[0], spec[1])
    return out


def _canonical_column(col: Any, name: str, categories: tuple[bool, list[Any]] | None) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc

    t = col.type
    if pa.types.is_dictionary(t):
        if not (pa.types.is_integer(t.index_type) and _plain_ok(t.value_type)):
            raise DataError(f"column {name!r} has unsupported type {t}")
        if categories is None:
            col = col.unify_dictionaries() if isinstance(col, pa.ChunkedArray) else col
            arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
            values = _normal_values(arr.dictionary, name)
            return pa.DictionaryArray.from_arrays(
                arr.indices.cast(pa.int32()), values, ordered=t.ordered
            )
        col = col.cast(t.value_type)  # decoded: rebuilt from the categories below
        t = t.value_type
    if not _plain_ok(t):
        raise DataError(_unsupported(name, t))
    col = _normal_values(col, name)
    t = col.type
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if pa.types.is_floating(t) and pc.any(pc.is_nan(arr)).as_py():
        # NaN and null are one missing value to pandas and scikit-learn, and
        # to the id: one in the table too, so one id reads back one way
        arr = pc.if_else(pc.is_nan(arr), pa.scalar(None, t), arr)
    if categories is None:
        return arr
    ordered, values = categories
    try:
        if _temporal(t):  # categories of dates and times travel as their integers
            dictionary = pa.array(values, type=_int_view(t)).view(t)
        else:
            dictionary = pa.array(values, type=t)
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        raise DataError(f"the categories of column {name!r} are not of its type {t}") from None
    if len(pc.unique(dictionary)) != len(dictionary) or dictionary.null_count:
        raise DataError(f"the categories of column {name!r} repeat a value or hold a null")
    codes = pc.index_in(arr, value_set=dictionary)
    if codes.null_count != arr.null_count:
        raise DataError(f"column {name!r} holds values outside its categories")
    return pa.DictionaryArray.from_arrays(codes.cast(pa.int32()), dictionary, ordered=ordered)


def _readable_in_python(values: Any, name: str) -> None:
    """Refuse dates and times pandas cannot read back: a time zone it does
    not know, a date outside years 1 to 9999 (it holds dates as Python's).
    An upload of them was stored and failed every job on it."""
    import pyarrow as pa
    import pyarrow.compute as pc

    t = values.type
    if pa.types.is_timestamp(t) and t.tz is not None:
        try:
            pa.array([], type=t).to_pandas()
        except Exception:  # noqa: BLE001 - pyarrow's and pandas' refusals vary
            raise DataError(f"column {name!r} has a time zone {t.tz!r} that is not known") from None
    elif pa.types.is_date(t) and len(values):
        try:
            bounds = pc.min_max(values)
            bounds["min"].as_py(), bounds["max"].as_py()
        except (ValueError, OverflowError, pa.ArrowException):
            raise DataError(f"column {name!r} holds a date outside years 1 to 9999") from None


def _normal_values(values: Any, name: str) -> Any:
    """Column (or categories) ``values`` in their canonical type: text as
    ``string``, dates and times as Parquet keeps them (:func:`_parquet_type`)."""
    import pyarrow as pa

    t = values.type
    if _is_text(t):
        try:
            return values.cast(pa.string())
        except pa.ArrowException:
            raise DataError(f"column {name!r} holds more than 2 GiB of text") from None
    _readable_in_python(values, name)
    if _parquet_type(t) == t:
        return values
    try:
        return values.cast(_parquet_type(t))  # safe: refuses to drop anything
    except pa.ArrowException:
        raise DataError(f"column {name!r} does not fit {_parquet_type(t)} exactly") from None


def canonical_table(
    table: Any,
    *,
    labels: list[list[Any]] | None = None,
    nulls: dict[int, str] | None = None,
    dtypes: dict[int, str] | None = None,
    mixed: list[int] | None = None,
) -> Any:
    """``table`` in the canonical form ids and the store use.

    String columns become ``string``, categoricals ``dictionary<int32>``
    (rebuilt from :data:`CATEGORIES_KEY` when an upload gives them), and
    the schema metadata is memogrid's own labels, null kinds, mixed columns
    and pandas dtypes only. ``labels``, ``nulls``, ``dtypes`` and ``mixed``
    default to what the table's metadata says (checked like any input; the
    dtypes of a table pandas wrote without memogrid are read from pandas'
    metadata); other column types are a DataError.
    """
    import pyarrow as pa

    if table.num_columns == 0:
        raise DataError("the DataFrame has no columns")
    labels = table_labels(table) if labels is None else labels
    dtypes_given = dtypes is not None
    if dtypes is None:
        ours = DTYPES_KEY in (table.schema.metadata or {})
        dtypes = table_dtypes(table) if ours else _pandas_dtypes(table)
    categories = _categories(table)
    arrays, fields = [], []
    for i, field in enumerate(table.schema):
        arr = _canonical_column(table.column(i), field.name, categories.get(i))
        arrays.append(arr)
        fields.append(pa.field(field.name, arr.type))
    nulls = _nulls_meta(table) if nulls is None else nulls
    for i in nulls:
        if dtypes.get(i) != "object":
            raise DataError(f"null kinds are given for column {i}, which is not an object column")
    _check_null_counts(nulls, [a.null_count for a in arrays])
    mixed = table_mixed(table) if mixed is None else mixed
    for i in mixed:
        name = fields[i].name
        if dtypes.get(i) != "object" or not pa.types.is_string(fields[i].type):
            raise DataError(f"mixed column {name!r} must be an object column of tokens")
        for token in arrays[i].to_pylist():
            if token is not None:
                _untoken(token, name)
    meta: dict[bytes, bytes] = {}
    if any(kind != "str" for kind, _ in labels):
        meta[LABELS_KEY] = json.dumps(labels).encode()
    if dtypes:
        meta[DTYPES_KEY] = json.dumps({str(i): n for i, n in sorted(dtypes.items())}).encode()
    # null kinds written one way: a letter for a column whose nulls are all
    # alike, nothing for NaN
    normal = {i: k for i, kinds in nulls.items() if (k := _normal_kinds(kinds))}
    if normal:
        meta[NULLS_KEY] = json.dumps({str(i): k for i, k in sorted(normal.items())}).encode()
    if mixed:
        meta[MIXED_KEY] = json.dumps(mixed).encode()
    out = pa.Table.from_arrays(arrays, schema=pa.schema(fields, metadata=meta or None))
    if dtypes_given:
        table_dtypes(out)  # the client's own: checked against the canonical types
    return out


def wire_table(table: Any) -> Any:
    """A canonical table as uploaded: its categoricals' categories in its
    metadata, since Parquet keeps only those of strings."""
    import pyarrow as pa

    cats = {}
    for i, f in enumerate(table.schema):
        if pa.types.is_dictionary(f.type):
            values = table.column(i).combine_chunks().dictionary
            if _temporal(values.type):
                values = values.view(_int_view(values.type))
            cats[str(i)] = [f.type.ordered, values.to_pylist()]
    if not cats:
        return table
    meta = dict(table.schema.metadata or {})
    meta[CATEGORIES_KEY] = json.dumps(cats).encode()
    return table.replace_schema_metadata(meta)


def table_frame(table: Any) -> Any:
    """A stored table as a DataFrame: its dtypes follow from its Arrow types
    (pandas' own metadata, from whoever wrote it first, is not read), with
    its column labels, missing values and mixed values restored."""
    import pandas as pd
    import pyarrow as pa

    labels = table_labels(table)
    nulls = table_nulls(table)
    dtypes = table_dtypes(table)
    mixed = set(table_mixed(table))
    df = table.replace_schema_metadata(None).to_pandas()
    for i, field in enumerate(table.schema):
        col = table.column(i)
        name = dtypes.get(i)
        if name == "object" or i in nulls:
            if i in mixed:
                values = np.array(
                    [None if t is None else _untoken(t, field.name) for t in col.to_pylist()],
                    dtype=object,
                )
            elif pa.types.is_integer(field.type) or pa.types.is_boolean(field.type):
                # Python ints and bools, as the caller's column held them
                # (pandas reads an integer column with nulls as floats)
                values = np.array(col.to_pylist(), dtype=object)
            else:
                values = df.iloc[:, i].to_numpy(dtype=object, copy=True)
            if col.null_count:  # each missing value as it was held
                kinds = nulls.get(i, "f")
                fill = [_missing_value(k) for k in kinds]
                values[col.is_null().to_numpy(zero_copy_only=False)] = (
                    fill[0] if len(fill) == 1 else np.array(fill, dtype=object)
                )
            df.isetitem(i, pd.Series(values, index=df.index, dtype=object))
        elif (arrow := arrow_type_named(name)) is not None:  # back to the type sent
            arrow_dtype = pd.ArrowDtype(arrow)
            df.isetitem(i, col.cast(arrow).to_pandas(types_mapper=lambda _, d=arrow_dtype: d))
        elif name is not None:  # by pandas' own Arrow conversion: large integers stay exact
            dtype = pd.api.types.pandas_dtype(name)
            df.isetitem(i, col.to_pandas(types_mapper=lambda _, d=dtype: d))
        elif pa.types.is_boolean(field.type) and col.null_count:
            df.isetitem(i, df.iloc[:, i].astype("boolean"))
    if any(kind != "str" for kind, _ in labels):
        df.columns = [value for _, value in labels]
    return df


def _hash_values(h: Any, arr: Any) -> None:
    """A canonical array's logical content: validity, then values with
    nulls zeroed (NaNs as one NaN); a dictionary's codes and categories."""
    import pyarrow as pa
    import pyarrow.compute as pc

    t = arr.type
    if pa.types.is_floating(t):
        nan = pc.is_nan(arr)
        if pc.any(nan).as_py():  # NaN and null are one missing value to pandas and scikit-learn
            arr = pc.if_else(nan, pa.scalar(None, t), arr)
    h.update(f"{t}\0{len(arr)}\0{arr.null_count}\0".encode())
    if arr.null_count:
        h.update(np.packbits(arr.is_valid().to_numpy(zero_copy_only=False)).tobytes())
    if pa.types.is_dictionary(t):
        h.update(b"ordered" if t.ordered else b"unordered")
        _hash_values(h, pc.fill_null(arr.indices, 0))
        _hash_values(h, arr.dictionary)
    elif pa.types.is_string(t):
        filled = pc.fill_null(arr, "") if arr.null_count else arr
        n = len(filled)
        offsets = np.frombuffer(
            filled.buffers()[1], dtype=np.int32, count=n + 1, offset=4 * filled.offset
        )
        start, stop = int(offsets[0]), int(offsets[-1])
        h.update((offsets - start).tobytes())
        data = filled.buffers()[2]
        if data is not None and stop > start:
            h.update(memoryview(data)[start:stop])
    else:
        if _temporal(t):  # by the integers under them (the unit and zone are in the type)
            arr = arr.view(_int_view(t))
        filled = (
            pc.fill_null(arr, False if pa.types.is_boolean(t) else 0) if arr.null_count else arr
        )
        values = np.asarray(filled.to_numpy(zero_copy_only=False))  # no NaN left: nulls above
        h.update(np.ascontiguousarray(values).tobytes())


def hash_table(table: Any) -> str:
    """The id of a canonical table (see :func:`canonical_table`)."""
    h = hashlib.sha256(FRAME_MAGIC)
    labels = table_labels(table)
    nulls = table_nulls(table)
    dtypes = table_dtypes(table)
    mixed = set(table_mixed(table))
    head = [
        [label, str(f.type), nulls.get(i, "missing"), dtypes.get(i), i in mixed]
        for i, (label, f) in enumerate(zip(labels, table.schema, strict=True))
    ]
    h.update(json.dumps(head).encode())
    for i in range(table.num_columns):
        col = table.column(i)
        _hash_values(h, col.combine_chunks())
    return h.hexdigest()


def dataset_id(obj: Any) -> str:
    """The content id of an array, text, a DataFrame or a sparse matrix, as
    the service computes it."""
    if is_sparse(obj):
        return hash_sparse(as_csr(obj))
    if is_frame(obj):
        return hash_table(frame_table(obj))
    if is_text(obj):
        return hash_text(*text_parts(obj))
    return hash_array(as_array(obj))


def memory_order(X: Any) -> str:
    """ "F" for a 2-D array laid out column by column (Fortran order, or a
    view of one), else "C"; for a DataFrame, "C" only if it holds one numpy
    number dtype laid out row by row (built on a C-ordered array, as
    ``load_iris(as_frame=True)``), else "F", pandas' own layout.

    A dataset's id and stored copy do not depend on it, but scikit-learn's
    refit runs on X itself and some estimators' last bits do (Ridge,
    StandardScaler): a search sends it along so the refit can match. pandas
    keeps a frame's layout in every row selection, so a frame's folds see it
    too.
    """
    if is_frame(X):
        return "C" if rows_first(X) else "F"
    if (
        isinstance(X, np.ndarray)
        and X.ndim == 2
        and not X.flags.c_contiguous
        # by the strides' sizes: a view with rows reversed (X[::-1]) is
        # laid out row by row all the same
        and (X.flags.f_contiguous or abs(X.strides[0]) < abs(X.strides[1]))
    ):
        return "F"
    return "C"
