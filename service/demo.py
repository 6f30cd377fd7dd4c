"""``memogrid demo``: the seed workload twice through the service, cold then warm.

Against ``--url`` when given; otherwise against a temporary service (SQLite,
LocalCluster, a throw-away data directory) started in this process for the
demo and removed afterwards.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: warm / cold at most this: the memoization at work
WARM_TARGET = 0.05


def seed_workload(random_state: int = 42):  # type: ignore[no-untyped-def]
    """The seed document's search: PCA x3 -> LogisticRegression x6 on 10000 x 500,
    cv=5 (the seed's data at ``random_state=42``)."""
    from sklearn.datasets import make_classification
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    X, y = make_classification(
        n_samples=10000, n_features=500, n_redundant=250, random_state=random_state
    )
    pipe = Pipeline(
        [("pca", PCA()), ("logistic", LogisticRegression(solver="liblinear", random_state=0))]
    )
    grid = {
        "pca__n_components": [50, 100, 250],
        "logistic__C": [1e-4, 1.0, 1e4],
        "logistic__l1_ratio": [0, 1],
    }
    return pipe, grid, X, y


@contextmanager
def temporary_service() -> Iterator[tuple[str, str]]:
    """A memogrid service on a free loopback port with a throw-away data directory.

    Yields its URL and the admin token it wrote on its first start.
    """
    import uvicorn

    from .api.app import create_app
    from .settings import OwnSettings

    root = Path(tempfile.mkdtemp(prefix="memogrid-demo-"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = OwnSettings(data_dir=root / "data")  # nothing from MEMOGRID_* of the shell
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="memogrid-demo-server", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 120
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the demo service did not start")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}", settings.admin_token_file.read_text().strip()
    finally:
        server.should_exit = True
        thread.join(60)
        shutil.rmtree(root, ignore_errors=True)


def _run(url: str, token: str | None) -> float:
    import secrets

    from memogrid import Client

    # data of its own each time: on a service that ran the demo before, the
    # seed's data made the "cold" run all cache hits
    seed = secrets.randbelow(2**31)
    pipe, grid, X, y = seed_workload(seed)
    print(
        f"memogrid demo on {url}: the seed workload, 10000 x 500 (data drawn with "
        f"random_state={seed}), PCA x3 -> LogisticRegression x6 (18 candidates), cv=5"
    )
    with Client(url, token) as client:
        times = []
        for label in ("cold", "warm"):
            start = time.perf_counter()
            job = client.submit(pipe, grid, X, y, cv=5).wait(progress=True)
            took = time.perf_counter() - start
            times.append(took)
            s = job.stats
            print(
                f"  {label} run  {took:8.2f} s   fits {s['fits']:>3}   cache hits {s['hits']:>3}"
                f"   (job {job.id})"
            )
        print(f"  best params {job.best_params_}, best score {job.best_score_:.4f}")
    ratio = times[1] / times[0]
    verdict = "PASS" if ratio <= WARM_TARGET else "MISS"
    print(f"  warm / cold = {ratio:.3f}  (target <= {WARM_TARGET}: {verdict})")
    return ratio


def run_demo(url: str | None = None, token: str | None = None) -> int:
    if url:
        _run(url, token)
        return 0
    print("starting a temporary memogrid service for the demo ...")
    with temporary_service() as (temp_url, admin_token):
        _run(temp_url, admin_token)
    return 0
