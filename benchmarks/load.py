"""Status polls under load: 50 concurrent clients while a search runs.

    python -m benchmarks.load [--clients 50] [--seconds 20] [--interval 0.2]

Starts a real ``memogrid serve`` (SQLite, LocalCluster), submits a search
that keeps both cores busy, then runs ``--clients`` concurrent clients, each
polling its job's status every ``--interval`` seconds and listing jobs every
fifth request, for ``--seconds``. Prints p50 / p99 / max latency per request
kind and the error count. Target: p99 < 50 ms for status polls, no errors.
The load generator shares the machine with the service and its workers.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


async def client_loop(
    http: httpx.AsyncClient, job_id: str, until: float, interval: float, out: dict
) -> None:
    import random

    # independent clients do not poll in lockstep: each starts at its own moment
    await asyncio.sleep(random.uniform(0, interval))
    i = 0
    while time.monotonic() < until:
        kind = "list" if i % 5 == 4 else "status"
        url = "/v1/jobs" if kind == "list" else f"/v1/jobs/{job_id}"
        start = time.perf_counter()
        try:
            r = await http.get(url, params={"limit": 20} if kind == "list" else None)
            took = time.perf_counter() - start
            if r.status_code != 200:
                out["errors"].append(f"{kind}: HTTP {r.status_code}")
            else:
                out[kind].append(took)
        except httpx.HTTPError as exc:
            out["errors"].append(f"{kind}: {type(exc).__name__}")
        i += 1
        await asyncio.sleep(interval)


async def run_load(
    url: str, token: str, job_id: str, clients: int, seconds: float, interval: float
):
    out: dict = {"status": [], "list": [], "errors": []}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    headers = {"authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=30) as http:
        until = time.monotonic() + seconds
        await asyncio.gather(
            *(client_loop(http, job_id, until, interval, out) for _ in range(clients))
        )
    return out


def _generate_one(spec: tuple) -> dict:
    url, token, job_id, clients, seconds, interval = spec
    return asyncio.run(run_load(url, token, job_id, clients, seconds, interval))


def generate(url: str, token: str, job_id: str, args: argparse.Namespace) -> dict:
    """Run the clients in ``args.processes`` processes (one event loop each)."""
    import multiprocessing as mp

    n = max(1, args.processes)
    shares = [args.clients // n + (i < args.clients % n) for i in range(n)]
    specs = [(url, token, job_id, k, args.seconds, args.interval) for k in shares if k]
    with mp.get_context("spawn").Pool(len(specs)) as pool:
        parts = pool.map(_generate_one, specs)
    return {k: [x for p in parts for x in p[k]] for k in ("status", "list", "errors")}


def main() -> None:
    from sklearn.datasets import make_classification
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    from memogrid import Client
    from tests.e2e.server import Server

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--interval", type=float, default=0.2)
    ap.add_argument(
        "--idle", action="store_true", help="poll a finished job, with no search running"
    )
    ap.add_argument(
        "--processes", type=int, default=2, help="load generator processes (clients split)"
    )
    args = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="mg-load-"))
    try:
        env = {"MEMOGRID_RATE_LIMIT_PER_MINUTE": "0"}
        with Server(root / "data", env, workers=0) as server:
            X, y = make_classification(n_samples=3000, n_features=20, random_state=0)
            pipe = Pipeline([("scale", StandardScaler()), ("svc", SVC())])
            grid = {"svc__C": list(np.logspace(-2, 3, 40)), "svc__gamma": [0.01, 0.05, 0.1]}
            with Client(server.url, server.token) as client:
                if args.idle:
                    job = client.submit(pipe, {"svc__C": [1.0]}, X, y, cv=2).wait(progress=False)
                else:
                    job = client.submit(pipe, grid, X, y, cv=5)
                while job.status()["state"] == "queued":
                    time.sleep(0.05)
                out = generate(server.url, server.token, job.id, args)
                st = job.status()
                print(
                    f"search during the load: {st['state']}, "
                    f"{st['progress']['done']}/{st['progress']['total']} results"
                )
                job.cancel() if st["state"] in ("queued", "running") else None
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print(
        f"{args.clients} clients in {args.processes} processes, {args.seconds:.0f} s, one "
        f"request each every {args.interval} s (every fifth a job list)"
    )
    for kind in ("status", "list"):
        lat = [t * 1000 for t in out[kind]]
        if lat:
            print(
                f"  {kind:<7} {len(lat):6d} requests  p50 {statistics.median(lat):6.1f} ms  "
                f"p99 {percentile(lat, 99):6.1f} ms  max {max(lat):6.1f} ms"
            )
    p99 = percentile([t * 1000 for t in out["status"]], 99)
    verdict = "PASS" if p99 < 50 and not out["errors"] else "MISS"
    print(f"  errors  {len(out['errors'])}  {sorted(set(out['errors']))[:5]}")
    print(f"  status p99 {p99:.1f} ms, target < 50 ms with zero errors: {verdict}")


if __name__ == "__main__":
    main()
