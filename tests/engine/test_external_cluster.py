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
