"""scipy's SVD without holding the GIL, in the processes that run the engine's tasks.

``scipy.linalg.svd`` reaches LAPACK's ``gesdd`` through an f2py wrapper
that keeps the GIL for the whole decomposition (measured: a thread timing
its own 1 ms sleeps waited 0.87 s beside a 6000 x 1000 SVD; seconds for
the full-SVD PCA fits of workload B). A dask worker running one answers
nothing meanwhile: another worker asking it for a step output it holds
waited until the fit ended (2.6 s in a trace of workload B), work could not
be stolen from it, and other searches' tasks sent to it were read only
after its next queued fit had started.

:func:`install` leaves scipy's ``svd`` in charge (checking the input,
sizing the workspace with ``gesdd_lwork``, reading ``info``) and replaces
only its call of ``gesdd``: the same LAPACK routine of the same library,
taken from :mod:`scipy.linalg.cython_lapack` (scipy's public C-level
LAPACK) and called through :mod:`ctypes`, which lets go of the GIL for the
call. The arguments are those of scipy's wrapper (a Fortran-ordered copy of
the input unless scipy lets it be overwritten, the same job, leading
dimensions and workspace), so the results are the same to the last bit;
:func:`install` checks that on a few matrices first and replaces nothing if
any result differs or the routine cannot be found.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

_lock = threading.Lock()
_state: dict[str, Any] = {"tried": False, "installed": False}


def _capsule_address(capsule: Any) -> int:
    name = ctypes.pythonapi.PyCapsule_GetName
    name.restype, name.argtypes = ctypes.c_char_p, [ctypes.py_object]
    pointer = ctypes.pythonapi.PyCapsule_GetPointer
    pointer.restype, pointer.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    return int(pointer(capsule, name(capsule)))


#: gesdd(jobz, m, n, a, lda, s, u, ldu, vt, ldvt, work, lwork, iwork, info)
_GESDD = ctypes.CFUNCTYPE(None, ctypes.c_char_p, *([ctypes.c_void_p] * 13))


class _Gesdd:
    """Called as scipy's f2py ``?gesdd``: ``u, s, vt, info = f(a, compute_uv,
    full_matrices, lwork, overwrite_a)``, for ``dtype`` (float32 or float64)."""

    def __init__(self, wrapped: Any, dtype: Any, routine: Any):
        self.wrapped = wrapped  # scipy's own, for what this does not take
        self.dtype = np.dtype(dtype)
        self.routine = routine

    def __getattr__(self, name: str) -> Any:
        # what scipy's get_lapack_funcs sets on its function (typecode,
        # int_dtype, module_name...), read off it when asked: set only on
        # its first lookup, they may not be there yet when this is made
        if name == "wrapped":  # not set yet (a copy made without __init__)
            raise AttributeError(name)
        return getattr(self.wrapped, name)

    def __call__(
        self,
        a: Any,
        compute_uv: Any = 1,
        full_matrices: Any = 1,
        lwork: Any = None,
        overwrite_a: Any = 0,
        **other: Any,
    ) -> tuple[Any, Any, Any, int]:
        if (
            other  # arguments a later scipy may pass
            or not all(_flag(f) for f in (compute_uv, full_matrices, overwrite_a))
            or not isinstance(lwork, (int, np.integer))
            or not isinstance(a, np.ndarray)
            or a.ndim != 2
            or a.size == 0
            or a.dtype != self.dtype
        ):
            # what f2py makes of anything else (0.5 as 0, None as the
            # default, a string refused) is f2py's to say
            return self.wrapped(
                a,
                compute_uv=compute_uv,
                full_matrices=full_matrices,
                lwork=lwork,
                overwrite_a=overwrite_a,
                **other,
            )
        if overwrite_a and a.flags.f_contiguous and a.ctypes.data % 8 == 0 and a.flags.writeable:
            # where scipy's wrapper overwrites it too (it also writes into a
            # read-only array; this copies one)
            work_a = a
        else:
            work_a = np.array(a, order="F", copy=True)
        m, n = work_a.shape
        k = min(m, n)
        u_rows = m if compute_uv else 1
        u_cols = (m if full_matrices else k) if compute_uv else 1
        vt_rows = (n if full_matrices else k) if compute_uv else 1
        vt_cols = n if compute_uv else 1
        u = np.zeros((u_rows, u_cols), self.dtype, order="F")
        s = np.zeros(k, self.dtype)
        vt = np.zeros((vt_rows, vt_cols), self.dtype, order="F")
        work = np.empty(max(1, int(lwork)), self.dtype)
        iwork = np.empty(max(1, 8 * k), np.int32)
        info = ctypes.c_int(0)
        ints = [ctypes.c_int(v) for v in (m, n, m, u_rows, vt_rows, work.size)]
        jobz = (b"A" if full_matrices else b"S") if compute_uv else b"N"
        self.routine(  # the GIL is let go for the call
            jobz,
            ctypes.addressof(ints[0]),
            ctypes.addressof(ints[1]),
            work_a.ctypes.data,
            ctypes.addressof(ints[2]),
            s.ctypes.data,
            u.ctypes.data,
            ctypes.addressof(ints[3]),
            vt.ctypes.data,
            ctypes.addressof(ints[4]),
            work.ctypes.data,
            ctypes.addressof(ints[5]),
            iwork.ctypes.data,
            ctypes.addressof(info),
        )
        return u, s, vt, info.value


def _flag(value: Any) -> bool:
    """Whether ``value`` is a 0 or 1 f2py and this take alike."""
    return isinstance(value, (bool, int, np.bool_, np.integer)) and value in (0, 1)


def _same(ours: tuple[Any, ...], theirs: tuple[Any, ...]) -> bool:
    for x, y in zip(ours, theirs, strict=True):
        x, y = np.asarray(x), np.asarray(y)
        if x.shape != y.shape or x.dtype != y.dtype or x.tobytes("A") != y.tobytes("A"):
            return False
    return True


def _agrees(swaps: dict[int, _Gesdd]) -> bool:
    """Whether each replacement gives scipy's wrapper's results to the last bit."""
    from scipy.linalg import get_lapack_funcs
    from scipy.linalg._decomp_svd import _compute_lwork

    rng = np.random.default_rng(0)
    for dtype in (np.float64, np.float32):
        for shape in ((9, 6), (6, 9), (40, 25)):
            a = rng.standard_normal(shape).astype(dtype)
            theirs, lwork_of = get_lapack_funcs(("gesdd", "gesdd_lwork"), (a,), ilp64="preferred")
            ours = swaps.get(id(theirs))
            if ours is None:
                return False
            for compute_uv, full in ((1, 0), (1, 1), (0, 0)):
                lwork = _compute_lwork(lwork_of, *shape, compute_uv=compute_uv, full_matrices=full)
                kw = dict(compute_uv=compute_uv, full_matrices=full, lwork=lwork)
                got, want = ours(a, **kw), theirs(a, **kw)
                if got[3] != want[3] or not _same(got[1:2], want[1:2]):
                    return False
                if compute_uv and not _same(got, want):
                    return False
    return True


def install() -> bool:
    """Route scipy's SVD in this process through :class:`_Gesdd`; True if it is.

    Tried once per process (a later call answers at once); a fork keeps what
    its parent installed."""
    if _state["tried"]:
        return bool(_state["installed"])
    with _lock:
        if _state["tried"]:
            return bool(_state["installed"])
        try:
            import scipy.linalg._decomp_svd as decomp_svd
            from scipy.linalg import _flapack, cython_lapack

            capi = cython_lapack.__pyx_capi__
            swaps = {
                id(getattr(_flapack, p + "gesdd")): _Gesdd(
                    getattr(_flapack, p + "gesdd"),
                    dtype,
                    _GESDD(_capsule_address(capi[p + "gesdd"])),
                )
                for p, dtype in (("d", np.float64), ("s", np.float32))
            }
            if not _agrees(swaps):
                log.warning("scipy's SVD is left holding the GIL: its LAPACK call was not matched")
            else:
                original = decomp_svd.get_lapack_funcs

                def get_lapack_funcs(names: Any, *args: Any, **kwargs: Any) -> Any:
                    funcs = original(names, *args, **kwargs)
                    if isinstance(funcs, (list, tuple)):
                        return type(funcs)(swaps.get(id(f), f) for f in funcs)
                    return swaps.get(id(funcs), funcs)

                decomp_svd.get_lapack_funcs = get_lapack_funcs
                _state["installed"] = True
        except Exception:  # an older or newer scipy without these: left as it is
            log.warning("scipy's SVD is left holding the GIL", exc_info=True)
        _state["tried"] = True
    return bool(_state["installed"])
