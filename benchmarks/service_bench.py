"""The service end to end: the seed workload through HTTP vs the engine in-process.

    python -m benchmarks.service_bench [--repeat N] [--workload A|small]

Both sides run the same searches on the same cluster shape (the default
LocalCluster: one single-threaded worker process per core), each repeat on
rows permuted anew so that every run meets an empty cache. In-process:
``SearchRunner.search`` on arrays (hashing and storing X and y included).
Over HTTP: one real ``memogrid serve`` on loopback, timed from the first
upload byte to the decoded ``cv_results_``: upload X and y as .npy,
submit, poll the job, read the results. Both clusters are warmed by a
small search first and stay up across repeats (start-up is not timed);
the two sides alternate run by run.
Target: HTTP / in-process <= 1.1 (best of each).
"""

from __future__ import annotations

import argparse
import io
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks.workloads import Workload, temp_runner, workload_a


def small_workload() -> Workload:
    from sklearn.datasets import make_classification

    w = workload_a()
    X, y = make_classification(n_samples=1000, n_features=50, n_redundant=25, random_state=42)
    w.X, w.y, w.name, w.title = X, y, "small", "seed-shaped, 1000x50"
    w.grid = dict(w.grid, pca__n_components=[5, 10, 25])
    return w


def warmup_workload() -> Workload:
    """A small search sharing nothing with the measured ones (other data)."""
    from sklearn.datasets import make_classification

    w = small_workload()
    w.X, w.y = make_classification(n_samples=300, n_features=30, random_state=7)
    w.grid = dict(w.grid, pca__n_components=[3, 5])
    return w


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def in_process(w: Workload, client: Any) -> tuple[float, dict]:
    with temp_runner(client, "mg-bench-inproc-") as runner:
        start = time.perf_counter()
        res = runner.search(w.pipe, w.X, w.y, param_grid=w.grid, cv=w.cv)
        return time.perf_counter() - start, res.cv_results_


def over_http(w: Workload, url: str, token: str) -> tuple[float, dict]:
    from memogrid.spec import to_grid, to_spec
    from memogrid.wire import decode_cv_results

    spec, grid = to_spec(w.pipe), to_grid(w.grid)
    auth = {"authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, timeout=600, headers=auth) as http:
        start = time.perf_counter()
        ids = []
        for arr in (w.X, w.y):
            r = http.post(
                "/v1/datasets", content=_npy(arr), headers={"content-type": "application/x-npy"}
            )
            r.raise_for_status()
            ids.append(r.json()["id"])
        body = {"estimator": spec, "param_grid": grid, "X": ids[0], "y": ids[1], "cv": w.cv}
        job = http.post("/v1/jobs", json=body).raise_for_status().json()["id"]
        while True:
            state = http.get(f"/v1/jobs/{job}").json()["state"]
            if state != "queued" and state != "running":
                break
            time.sleep(0.05)
        if state != "succeeded":
            raise RuntimeError(f"job {job} ended {state}")
        res = http.get(f"/v1/jobs/{job}/results").raise_for_status().json()
        cv = decode_cv_results(res["cv_results"])
        return time.perf_counter() - start, cv


def _permuted(w: Workload, seed: int) -> Workload:
    import copy

    order = np.random.RandomState(seed).permutation(len(w.X))
    v = copy.copy(w)
    v.X, v.y = np.ascontiguousarray(w.X[order]), w.y[order]
    return v


def _all(runs: list[tuple[float, dict]]) -> str:
    return "[" + ", ".join(f"{t:.2f}" for t, _ in runs) + "]"


def main() -> None:
    from benchmarks.engine_bench import check, line, results_equal, secs
    from memogrid_service.engine.cluster import close_client, make_client
    from tests.e2e.server import Server

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--workload", choices=["A", "small"], default="A")
    args = ap.parse_args()
    w = workload_a() if args.workload == "A" else small_workload()
    print(f"service benchmark, workload {w.name}: {w.title}; best of {args.repeat}")

    # Each repeat permutes the rows with its own seed: new content, so a cold
    # cache on both sides, while both clusters stay up and warm from one
    # repeat to the next, as a running service's do.
    # The two sides alternate, variant by variant, so that a machine that
    # drifts (a busy neighbour, a throttled core) weighs on both alike.
    variants = [_permuted(w, seed) for seed in range(args.repeat)]
    engine_runs, http_runs = [], []
    root = Path(tempfile.mkdtemp(prefix="mg-bench-http-"))
    client = make_client()
    try:
        with Server(root / "data", workers=0) as server:
            in_process(warmup_workload(), client)  # warm both clusters up
            over_http(warmup_workload(), server.url, server.token)
            for v in variants:
                engine_runs.append(in_process(v, client))
                http_runs.append(over_http(v, server.url, server.token))
    finally:
        close_client(client)
        shutil.rmtree(root, ignore_errors=True)
    t_engine = min(t for t, _ in engine_runs)
    line("engine in-process, cold", secs(t_engine), _all(engine_runs))
    times = [t for t, _ in http_runs]
    cv_engine, cv_http = engine_runs[-1][1], http_runs[-1][1]
    t_http = min(times)
    line("HTTP end to end (upload included), cold", secs(t_http), _all(http_runs))
    check("HTTP / in-process", t_http / t_engine, 1.1)
    line("cv_results_ equal (times excepted)", str(results_equal(cv_http, cv_engine)))


if __name__ == "__main__":
    main()
