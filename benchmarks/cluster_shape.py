"""Choose the default LocalCluster shape by measurement.

    python -m benchmarks.cluster_shape [--workload A|B]

Runs the engine cold (empty cache) on a workload under each candidate shape
and prints the times: worker processes vs threads, and BLAS threads per task.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

from benchmarks.workloads import serial_unique_fits, temp_runner, workload_a, workload_b

SHAPES = [
    # (label, processes, n_workers, threads_per_worker, blas_threads)
    ("2 processes x 1 thread, BLAS 1", True, 2, 1, 1),
    ("1 process x 2 threads, BLAS 1", True, 1, 2, 1),
    ("in-process, 2 threads, BLAS 1", False, 1, 2, 1),
    ("2 processes x 1 thread, BLAS 2", True, 2, 1, 2),
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workload", choices=["A", "B"], default="A")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    from memogrid_service.engine.cluster import close_client, make_client

    w = workload_a() if args.workload == "A" else workload_b()
    serial = serial_unique_fits(
        w, w.grid, fit_transformers=True, refit_params=None, refit_transformers=False
    )
    limit = serial / (os.cpu_count() or 1)
    print(f"serial loop over the unique fits {serial:.3f} s, limit {limit:.3f} s", flush=True)
    for label, processes, n, threads, blas in SHAPES:
        client = make_client(processes=processes, n_workers=n, threads_per_worker=threads)
        try:
            times = []
            for _ in range(args.repeat):
                with temp_runner(client, "mg-shape-", blas_threads=blas) as runner:
                    start = time.perf_counter()
                    runner.search(w.pipe, w.X, w.y, param_grid=w.grid, cv=w.cv, refit=False)
                    times.append(time.perf_counter() - start)
            print(
                f"{label:<36} cold {min(times):8.3f} s = {min(times) / limit:.2f} x limit (runs: "
                + ", ".join(f"{t:.2f}" for t in times)
                + ")",
                flush=True,
            )
        finally:
            close_client(client)


if __name__ == "__main__":
    main()
