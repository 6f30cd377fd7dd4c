"""Peak memory of the service while it receives a large upload.

    python -m benchmarks.upload_rss [--gib 1.0]

Starts a real ``memogrid serve``, streams a ``--gib`` GiB float64 array as
.npy in chunked transfer encoding (generated on the fly, so the client
holds at most a chunk too), samples the API process's resident set every
10 ms, and reports the peak growth over its idle RSS. Target: < 100 MB.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import shutil
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import psutil

CHUNK = 1 << 20


def main() -> None:
    from memogrid_service.store.datasets import ARRAY_MAGIC
    from tests.e2e.server import Server

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gib", type=float, default=1.0)
    args = ap.parse_args()
    n = int(args.gib * (1 << 30)) // 8
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (n,)}
    )
    block = np.random.default_rng(0).normal(size=CHUNK // 8).tobytes()
    expected = hashlib.sha256(ARRAY_MAGIC)
    expected.update(json.dumps(["<f8", [n]]).encode())

    def body():
        yield header.getvalue()
        left = n * 8
        while left:
            part = block[: min(left, CHUNK)]
            expected.update(part)
            left -= len(part)
            yield part

    root = Path(tempfile.mkdtemp(prefix="mg-rss-"))
    try:
        with Server(root / "data", {"MEMOGRID_UPLOAD_MAX_BYTES": str(4 << 30)}, workers=1) as srv:
            proc = psutil.Process(srv.proc.pid)
            time.sleep(1.0)
            idle = proc.memory_info().rss
            peak = idle
            stop = threading.Event()

            def sample() -> None:
                nonlocal peak
                while not stop.is_set():
                    peak = max(peak, proc.memory_info().rss)
                    time.sleep(0.01)

            t = threading.Thread(target=sample, daemon=True)
            t.start()
            start = time.perf_counter()
            r = httpx.post(
                f"{srv.url}/v1/datasets",
                content=body(),
                headers={
                    "content-type": "application/x-npy",
                    "authorization": f"Bearer {srv.token}",
                },
                timeout=600,
            )
            took = time.perf_counter() - start
            stop.set()
            t.join()
            r.raise_for_status()
            assert r.json()["id"] == expected.hexdigest(), "content id differs from local hash"
    finally:
        shutil.rmtree(root, ignore_errors=True)
    size = n * 8
    print(
        f"upload of {size / 2**30:.2f} GiB .npy in {took:.1f} s ({size / took / 2**20:.0f} MiB/s)"
    )
    print(f"  API process RSS idle   {idle / 2**20:8.1f} MiB")
    print(f"  API process RSS peak   {peak / 2**20:8.1f} MiB")
    growth = (peak - idle) / 1e6
    print(
        f"  peak growth            {growth:8.1f} MB   target < 100 MB  "
        f"{'PASS' if growth < 100 else 'MISS'}"
    )
    print("  content id matches the client's own hash: True")


if __name__ == "__main__":
    main()
