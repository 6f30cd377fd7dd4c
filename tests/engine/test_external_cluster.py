"""The engine on real `dask scheduler` and `dask worker` processes."""

from __future__ import annotations

import os

import pytest
from sklearn.model_selection import GridSearchCV

from memogrid_service.engine.cluster import close_client, make_client
from memogrid_service.engine.search import SearchRunner
from memogrid_service.store.cache import ResultCache
from memogrid_service.store.datasets import DatasetStore
from tests.e2e.server import DaskProcesses
from tests.helpers.counting import LOG_ENV, fit_counts
from tests.helpers.parity import assert_cv_results_equal
from tests.helpers.seed_search import seed_data, seed_pipeline


@pytest.fixture
def external_scheduler(tmp_path, fit_log):
    with DaskProcesses(tmp_path, n_workers=2, env={LOG_ENV: str(fit_log)}) as dask:
        yield dask.address


@pytest.mark.slow
def test_search_on_external_scheduler(external_scheduler, tmp_path, fit_log):
    client = make_client(external_scheduler)
    try:
        client.wait_for_workers(2, timeout=60)
        assert client.cluster is None
        runner = SearchRunner(client, DatasetStore(tmp_path / "d"), ResultCache(tmp_path / "c"))
        X, y = seed_data()
        grid = {"pca__n_components": [5, 10], "logistic__C": [0.1, 1.0, 10.0]}
        res = runner.search(seed_pipeline(), X, y, param_grid=grid, cv=5)
        # both worker processes are connected; every fit happened in them
        seen = client.run(lambda: os.getpid())
        assert len(seen) == 2
        counts = fit_counts(fit_log)
        assert counts["CountingPCA"] == 10 + 1
        assert counts["CountingLogisticRegression"] == 30 + 1
        again = runner.search(seed_pipeline(), X, y, param_grid=grid, cv=5)
        assert again.stats.fits == 0
        assert fit_counts(fit_log) == counts
    finally:
        close_client(client)
    sk = GridSearchCV(seed_pipeline(), grid, cv=5).fit(X, y)
    assert_cv_results_equal(res.cv_results_, sk.cv_results_)


def _spans_kept(dask_scheduler) -> int:
    ext = dask_scheduler.extensions.get("spans")
    return len(getattr(ext, "spans", {}))


@pytest.mark.slow
@pytest.mark.parametrize("preload", [True, False], ids=["preloaded", "plain"])
def test_an_external_scheduler_started_as_compose_does_keeps_no_span_per_search(tmp_path, preload):
    """dask's scheduler keeps a span (with its task groups) per computation
    for its lifetime; docker-compose starts it with the engine's preload,
    which keeps none and takes the span metrics workers send with their
    heartbeats without a complaint in its log."""
    import time

    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression

    args = ("--preload", "memogrid_service.engine.nospans") if preload else ()
    log = tmp_path / "scheduler.log"
    X, y = make_classification(n_samples=60, random_state=0)
    with DaskProcesses(tmp_path, n_workers=1, scheduler_args=args, scheduler_log=log) as dask:
        client = make_client(dask.address)
        try:
            client.wait_for_workers(1, timeout=60)
            runner = SearchRunner(client, DatasetStore(tmp_path / "d"), ResultCache(tmp_path / "c"))
            for C in (0.1, 1.0, 10.0):
                res = runner.search(LogisticRegression(), X, y, param_grid={"C": [C]}, cv=3)
                assert res.stats.final_fits == 3
            time.sleep(1.5)  # the worker's heartbeats (every 0.5 s), span metrics included
            kept = client.run_on_scheduler(_spans_kept)
            assert len(client.scheduler_info()["workers"]) == 1
        finally:
            close_client(client)
    if preload:
        assert kept == 0
        said = log.read_text()
        assert "Traceback" not in said and "Error" not in said, said
    else:  # what the preload is for
        assert kept >= 3


@pytest.mark.slow
def test_threaded_external_workers_are_warned_about(tmp_path, caplog):
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
    ) as cluster:
        with caplog.at_level("WARNING", logger="memogrid_service.engine.cluster"):
            client = make_client(cluster.scheduler_address)
            client.close()
    assert "--nthreads 1" in caplog.text


@pytest.mark.slow
def test_the_client_outlasts_a_scheduler_away_longer_than_its_connect_timeout(tmp_path):
    """A dask client whose scheduler is away past its connect timeout (30 s)
    closed for good: every later search failed until the service restarted.
    The engine's client waits for it to come back."""
    import signal
    import socket
    import subprocess
    import time

    import dask
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression

    from tests.e2e.server import DASK, ROOT

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs: list[subprocess.Popen] = []

    def start():
        for args in (
            ["scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
            ["worker", address, "--nthreads", "1", "--no-dashboard", "--no-nanny"],
        ):
            procs.append(
                subprocess.Popen(
                    [DASK, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
            )

    start()
    client = None
    try:
        deadline = time.monotonic() + 60
        while client is None:
            try:
                # dask's client gives up reconnecting after its connect
                # timeout (30 s by default; 5 s here, to wait less)
                with dask.config.set({"distributed.comm.timeouts.connect": "5s"}):
                    client = make_client(address)
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.5)
        client.wait_for_workers(1, timeout=60)
        runner = SearchRunner(client, DatasetStore(tmp_path / "d"), ResultCache(tmp_path / "c"))
        X, y = make_classification(n_samples=60, random_state=0)
        assert runner.search(LogisticRegression(), X, y, param_grid={"C": [1.0]}, cv=2)
        for p in procs:
            p.send_signal(signal.SIGKILL)
            p.wait()
        time.sleep(10)
        assert client.status == "closed"  # dask gave up on it
        start()
        deadline = time.monotonic() + 60
        while not runner.ensure_connected():  # a new client, to the same address
            assert time.monotonic() < deadline
            time.sleep(0.5)
        assert runner.client is not client and runner.client.status == "running"
        res = runner.search(LogisticRegression(), X, y, param_grid={"C": [2.0]}, cv=2)
        assert res.stats.final_fits == 2
        close_client(runner.client)
    finally:
        if client is not None:
            close_client(client)
        for p in procs:
            p.kill()
