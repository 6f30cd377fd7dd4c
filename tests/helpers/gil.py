"""Tasks that keep a dask worker's GIL, as scipy's lstsq does while it runs."""

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


def busy_holding_the_gil(seconds: float = 8.0) -> float:
    """Keep the GIL and a core for about ``seconds`` (a regex backtracking in
    one call, as scipy's lstsq computing); return the seconds it took.

    The backtracking doubles with each extra letter, so its length is
    chosen from a short timed run: the same wall time on a fast machine and
    a slow one."""
    import math
    import re
    import time

    pattern = re.compile(r"(a+)+$")
    n, took = 16, 0.0
    while took < 0.02:  # long enough to time
        n += 1
        start = time.perf_counter()
        pattern.match("a" * n + "!")
        took = time.perf_counter() - start
    n += max(0, round(math.log2(seconds / took)))
    start = time.perf_counter()
    pattern.match("a" * n + "!")
    return time.perf_counter() - start
