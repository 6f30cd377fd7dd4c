"""docker-compose's topology, as processes on loopback.

A real PostgreSQL database, a ``dask scheduler``, two ``dask worker``
processes and ``memogrid migrate upgrade && memogrid serve`` with the
environment docker-compose.yml gives the API; the seed workload through the
client, parity with scikit-learn, then an overlapping job whose transformer
fits all come from the shared cache, with both workers having run tasks.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml
from sklearn.datasets import make_classification
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline

from memogrid import Client
from tests.e2e.server import ROOT, DaskProcesses, Server, free_port
from tests.helpers.parity import assert_cv_results_equal

pytestmark = pytest.mark.slow

GRID = {"pca__n_components": [5, 10, 20], "logistic__C": [1e-4, 1e-2, 1, 1e2, 1e4, 1e6]}


def pipe():
    return Pipeline(
        [("pca", PCA()), ("logistic", LogisticRegression(solver="liblinear", random_state=0))]
    )


def compose_api_env(data_dir, db_url: str, scheduler: str) -> dict[str, str]:
    """The API's environment from docker-compose.yml, pointed at these processes."""
    env = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["api"][
        "environment"
    ]
    out = {k: str(v) for k, v in env.items()}
    assert set(out) == {
        "MEMOGRID_DATA_DIR",
        "MEMOGRID_DATABASE_URL",
        "MEMOGRID_DATABASE_PASSWORD",
        "MEMOGRID_SCHEDULER_ADDRESS",
        "MEMOGRID_MIGRATE_ON_START",
    }
    out.update(
        MEMOGRID_DATA_DIR=str(data_dir),
        MEMOGRID_DATABASE_URL=db_url,
        # a password a URL would misread (PostgreSQL here trusts loopback: it
        # only has to reach the server intact)
        MEMOGRID_DATABASE_PASSWORD="p@ss/w%rd" if db_url.startswith("postgresql") else "",
        MEMOGRID_SCHEDULER_ADDRESS=scheduler,
    )
    return out


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_compose_topology_as_processes(tmp_path, db_url):
    from distributed import Client as DaskClient

    data_dir = tmp_path / "data"
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    worker_env = {k: str(v) for k, v in compose["worker-1"]["environment"].items()}
    worker_env["MEMOGRID_DATA_DIR"] = str(data_dir)
    sched = compose["scheduler"]["command"]
    preload = tuple(sched[sched.index("--preload") :][:2])  # as compose starts it
    with DaskProcesses(tmp_path, n_workers=2, env=worker_env, scheduler_args=preload) as dask:
        env = compose_api_env(data_dir, db_url, dask.address)
        # the compose command: migrate, then serve (which refuses an old schema)
        migrated = subprocess.run(
            [sys.executable, "-m", "memogrid_service.cli", "migrate", "upgrade"],
            env=dict(os.environ, **env),
            capture_output=True,
            text=True,
        )
        assert migrated.returncode == 0, migrated.stderr
        watcher = DaskClient(dask.address)
        try:
            watcher.wait_for_workers(2, timeout=60)
            # compose's scheduler waits for a fit holding the GIL (cluster.NO_WORKER_TTL)
            ttl = watcher.run_on_scheduler(lambda dask_scheduler: dask_scheduler.worker_ttl)
            assert ttl is None
            with Server(data_dir, env) as server, Client(server.url, server.token) as client:
                X, y = make_classification(
                    n_samples=300, n_features=30, n_redundant=10, random_state=42
                )
                job = client.submit(pipe(), GRID, X, y, cv=5).wait(progress=False)
                sk = GridSearchCV(pipe(), GRID, cv=5).fit(X, y)
                assert_cv_results_equal(job.cv_results_, sk.cv_results_)
                assert job.best_params_ == sk.best_params_
                assert job.stats["step_fits"] == 15

                overlap = dict(GRID, logistic__C=[0.5, 2.0])
                job2 = client.submit(pipe(), overlap, X, y, cv=5).wait(progress=False)
                assert job2.stats["step_fits"] == 0 and job2.stats["step_hits"] == 15
                assert job2.stats["final_fits"] == 30

                # the drop-in estimator, over the same real server
                from memogrid import GridSearchCV as ServiceGridSearchCV

                search = ServiceGridSearchCV(pipe(), GRID, cv=5, client=client, progress=False)
                search.fit(X, y)
                assert_cv_results_equal(search.cv_results_, sk.cv_results_)
                assert search.best_params_ == sk.best_params_
                assert search.best_score_ == sk.best_score_
                assert search.score(X, y) == sk.score(X, y)
            executed = watcher.run(lambda dask_worker: dask_worker.state.executed_count)
            assert len(executed) == 2 and all(n > 0 for n in executed.values()), executed
        finally:
            watcher.close()


def test_a_service_started_before_its_scheduler_serves_and_runs_jobs_once_it_answers(tmp_path):
    """Started while its scheduler was away (a host's restart), the service
    tried for 30 s, then died with dask's traceback: it starts, jobs wait
    queued, and run once the scheduler and a worker come."""
    import time

    port = free_port()
    data_dir = tmp_path / "data"
    env = {"MEMOGRID_SCHEDULER_ADDRESS": f"tcp://127.0.0.1:{port}"}
    start = time.monotonic()
    with Server(data_dir, env) as server, Client(server.url, server.token) as client:
        assert time.monotonic() - start < 25
        X, y = make_classification(n_samples=120, n_features=8, random_state=0)
        grid = {"C": [0.5, 2.0]}
        job = client.submit(LogisticRegression(), grid, X, y, cv=3)
        time.sleep(2)
        status = job.status()
        assert status["state"] == "queued"
        assert "does not answer" in status["waiting"], status
        assert str(port) not in status["waiting"]  # users are not told where it is
        with DaskProcesses(tmp_path, n_workers=0, port=port) as dask:
            # a scheduler with no worker (workers exit when theirs goes away):
            # the job says what it waits for
            deadline = time.monotonic() + 60
            while "no dask worker" not in (job.status()["waiting"] or ""):
                assert time.monotonic() < deadline, job.status()
                time.sleep(0.5)
            assert job.status()["state"] in ("queued", "running")
            dask.add_worker()
            job.wait(timeout=120, progress=False)
        assert job.status().get("waiting") is None
        sk = GridSearchCV(LogisticRegression(), grid, cv=3).fit(X, y)
        assert_cv_results_equal(job.cv_results_, sk.cv_results_)


def test_a_malformed_scheduler_address_is_refused_in_one_line(tmp_path):
    env = dict(
        os.environ, MEMOGRID_DATA_DIR=str(tmp_path), MEMOGRID_SCHEDULER_ADDRESS="tcp//127.0.0.1:1"
    )
    out = subprocess.run(
        [sys.executable, "-m", "memogrid_service.cli", "serve", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    assert "'tcp//127.0.0.1:1' is not a dask scheduler address" in out.stderr
    assert "Traceback" not in out.stderr, out.stderr
