"""Nothing lost: a killed service, a killed worker, a task that kills workers."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

import memogrid
from memogrid import Client
from tests.e2e.server import DaskProcesses, Server
from tests.helpers.parity import assert_cv_results_equal

pytestmark = pytest.mark.slow

GRID = {"svc__C": list(np.logspace(-2, 2, 30)), "svc__gamma": [0.01, 0.1]}


def pipe():
    return Pipeline([("scale", StandardScaler()), ("svc", SVC())])


def data():
    return make_classification(n_samples=1500, n_features=12, random_state=4)


@pytest.fixture(scope="module")
def reference():
    """scikit-learn's cv_results_ for the module's search (8 s here: once)."""
    X, y = data()
    return GridSearchCV(pipe(), GRID, cv=3).fit(X, y).cv_results_


def _wait_progress(job, at_least: int, timeout: float = 90.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = job.status()
        assert st["state"] in ("queued", "running"), st
        if st["progress"]["done"] >= at_least:
            return st
        time.sleep(0.05)
    raise AssertionError(f"no progress: {st}")


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_sigkill_mid_job_then_restart_finishes_from_the_cache(tmp_path, db_url, reference):
    X, y = data()
    data_dir = tmp_path / "data"
    with DaskProcesses(tmp_path, 2, env={"MEMOGRID_DATA_DIR": str(data_dir)}) as dask:
        env = {
            "MEMOGRID_DATABASE_URL": db_url,
            "MEMOGRID_SCHEDULER_ADDRESS": dask.address,
            "MEMOGRID_LEASE_SECONDS": "2",
        }
        first = Server(data_dir, env)
        first.wait_healthy()
        token = first.token
        try:
            job = Client(first.url, token).submit(pipe(), GRID, X, y, cv=3)
            before = _wait_progress(job, 40)["progress"]["done"]
        finally:
            assert first.stop(signal.SIGKILL) == -signal.SIGKILL
        with Server(data_dir, env) as second, Client(second.url, token) as client:
            again = client.job(job.id)
            again.wait(timeout=180, progress=False)
            status = again.status()
            assert status["state"] == "succeeded" and status["attempts"] == 2
            # what the killed run finished came back from the cache, counted
            assert again.stats["score_hits"] >= before
            splits = client._json("GET", f"/v1/jobs/{job.id}/splits")
            pairs = [(r["candidate"], r["split"]) for r in splits]
            assert len(pairs) == len(set(pairs)) == 60 * 3  # each result row once
            assert_cv_results_equal(again.cv_results_, reference)


def test_a_killed_worker_does_not_lose_the_job(tmp_path, reference):
    from distributed import Client as DaskClient

    X, y = data()
    data_dir = tmp_path / "data"
    with DaskProcesses(tmp_path, 2, env={"MEMOGRID_DATA_DIR": str(data_dir)}) as dask:
        watcher = DaskClient(dask.address)
        try:
            watcher.wait_for_workers(2, timeout=60)
            pids = list(watcher.run(os.getpid).values())
            env = {"MEMOGRID_SCHEDULER_ADDRESS": dask.address}
            with Server(data_dir, env) as server, Client(server.url, server.token) as client:
                job = client.submit(pipe(), GRID, X, y, cv=3)
                _wait_progress(job, 20)
                os.kill(pids[0], signal.SIGKILL)
                job.wait(timeout=180, progress=False)
                assert_cv_results_equal(job.cv_results_, reference)
        finally:
            watcher.close()


def test_a_task_that_keeps_killing_workers_fails_the_job_naming_the_step(tmp_path):
    from tests.helpers.killer import ExitingTransformer

    X, y = data()
    data_dir = tmp_path / "data"
    env = {
        "MEMOGRID_DATA_DIR": str(data_dir),
        # the bound on attempts: the scheduler's allowed failures per task
        "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "1",
    }
    with DaskProcesses(tmp_path, 2, env=env, nanny=True) as dask:
        server_env = {
            "MEMOGRID_SCHEDULER_ADDRESS": dask.address,
            "MEMOGRID_EXTRA_ESTIMATORS": '["tests.helpers.killer.ExitingTransformer"]',
        }
        with Server(data_dir, server_env) as server, Client(server.url, server.token) as client:
            deadly = Pipeline([("boom", ExitingTransformer()), ("svc", SVC())])
            # the client expresses it through its own allowlist plus the operator's name
            from memogrid import spec

            allow = spec.Allowlist.default(["tests.helpers.killer.ExitingTransformer"])
            body = {
                "estimator": spec.to_spec(deadly, allow),
                "param_grid": {"svc__C": [1.0]},
                "X": client.upload(X),
                "y": client.upload(y),
                "cv": 2,
            }
            job = client._submit(body)
            with pytest.raises(memogrid.JobFailed) as failed:
                job.wait(timeout=180, progress=False)
            error = failed.value.error
            assert "kept killing the worker" in error and "'boom'" in error
            assert "ExitingTransformer" in error
            # the service is still up and runs the next job
            ok = client.submit(pipe(), {"svc__C": [1.0]}, X, y, cv=2).wait(progress=False)
            assert ok.state == "succeeded"
