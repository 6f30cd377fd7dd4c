"""Tasks that keep a dask worker's GIL, as scipy's SVD does while it runs."""

from __future__ import annotations

import os


def hold_the_gil(seconds: int, log: str | None = None) -> int:
    """Keep the GIL ``seconds`` without using the CPU (``ctypes.PyDLL`` calls C
    without releasing it); note each start in ``log``; return the pid."""
    import ctypes

    if log is not None:
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
    ctypes.PyDLL(None).sleep(seconds)
    return os.getpid()


def busy_holding_the_gil() -> None:
    """Keep the GIL and a core for seconds (a regex backtracking, as scipy's
    SVD computing)."""
    import re

    re.match(r"(a+)+$", "a" * 27 + "!")
