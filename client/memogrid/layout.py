"""Array layouts a model file loses, carried beside the arrays.

A fitted model's arrays are sometimes views with strides of their own: PCA
with a randomized or ARPACK solver keeps ``components_`` as rows of a larger
Fortran-ordered matrix, or in reverse order. A model file (skops writes
each array with ``np.save``) keeps C- and Fortran-ordered arrays as they
are but writes such a view in C order, and the last bits of
``X @ components_.T`` depend on the layout BLAS is handed. So before a
model is stored, each object holding such arrays is marked with their
strides (:func:`mark_strides`, in a plain dict the file keeps), and after
it is loaded each array is laid out again with those strides
(:func:`restore_strides`): the loaded model computes as the fitted one did.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

#: the attribute a marked object carries: attribute name -> byte strides
STRIDES_ATTR = "_memogrid_strides"
#: the most memory re-laid arrays may take beyond their own size, per model
#: loaded (a file names the strides: it must not make the loader allocate
#: at will); a layout past it is dropped, its array kept C-ordered
EXTRA_BYTES = 256 * 2**20


def _objects(root: Any) -> Iterator[Any]:
    """Every object with attributes reachable from ``root`` through
    attributes, lists, tuples and dicts (each once)."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, (str, bytes, int, float, np.ndarray, np.generic)):
            continue
        seen.add(id(obj))
        if isinstance(obj, (list, tuple)):
            stack.extend(obj)
        elif isinstance(obj, dict):
            stack.extend(obj.values())
        elif isinstance(getattr(obj, "__dict__", None), dict) and not isinstance(obj, type):
            yield obj
            stack.extend(vars(obj).values())


def mark_strides(root: Any) -> list[Any]:
    """Mark each object under ``root`` holding arrays neither C- nor
    Fortran-contiguous with their strides; the objects marked (see
    :func:`unmark`)."""
    marked = []
    for obj in _objects(root):
        strides = {
            name: [int(s) for s in value.strides]
            for name, value in vars(obj).items()
            if isinstance(value, np.ndarray)
            and value.size > 1
            and not (value.flags.c_contiguous or value.flags.f_contiguous)
        }
        if strides:
            setattr(obj, STRIDES_ATTR, strides)
            marked.append(obj)
    return marked


def unmark(marked: list[Any]) -> None:
    for obj in marked:
        vars(obj).pop(STRIDES_ATTR, None)


def restore_strides(root: Any) -> None:
    """Lay out again the arrays :func:`mark_strides` marked, in a loaded
    model (a mark that does not fit its array, or would take more than
    :data:`EXTRA_BYTES` in all, is dropped and the array kept)."""
    budget = EXTRA_BYTES
    for obj in list(_objects(root)):
        strides = vars(obj).pop(STRIDES_ATTR, None)
        if not isinstance(strides, dict):
            continue
        for name, wanted in strides.items():
            value = vars(obj).get(name) if isinstance(name, str) else None
            if isinstance(value, np.ndarray) and isinstance(wanted, list):
                laid = with_strides(value, wanted, budget)
                if laid is not None:
                    budget -= _extra_bytes(value, wanted)
                    setattr(obj, name, laid)


def with_strides(
    values: np.ndarray, strides: list[Any], extra: int = EXTRA_BYTES
) -> np.ndarray | None:
    """``values`` copied into memory laid out with ``strides`` (bytes, as
    numpy's), or None if they do not describe a layout of its shape or it
    would take more than ``extra`` bytes beyond the values' own."""
    item = values.itemsize
    if (
        item == 0
        or len(strides) != values.ndim
        or not all(type(s) is int and s % item == 0 for s in strides)
        or values.size == 0
    ):
        return None
    if not _disjoint(values.shape, strides, item):
        return None
    beyond = _extra_bytes(values, strides)
    if beyond > extra:
        return None
    low = sum((n - 1) * s for n, s in zip(values.shape, strides, strict=True) if s < 0)
    buffer = np.zeros(beyond // item + values.size, dtype=values.dtype)
    laid = np.lib.stride_tricks.as_strided(
        buffer[-low // item :], shape=values.shape, strides=tuple(strides)
    )
    laid[...] = values
    return laid


def _extra_bytes(values: np.ndarray, strides: list[int]) -> int:
    """The memory a layout spans beyond the values' own (checked strides)."""
    pairs = list(zip(values.shape, strides, strict=True))
    width = sum((n - 1) * abs(s) for n, s in pairs) + values.itemsize
    return width - values.nbytes


def _disjoint(shape: tuple[int, ...], strides: list[int], item: int) -> bool:
    """Whether no two elements of such a layout share memory: taken by
    increasing stride, each steps past everything the smaller ones span."""
    extent = item
    for n, s in sorted(zip(shape, (abs(s) for s in strides), strict=True), key=lambda d: d[1]):
        if n > 1:
            if s < extent:
                return False
            extent += s * (n - 1)
    return True
