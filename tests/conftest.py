"""Shared fixtures: a real in-process dask cluster, a store and a cache per test."""

from __future__ import annotations

import os

import pytest

from memogrid_service.engine.search import SearchRunner
from memogrid_service.store.cache import ResultCache
from memogrid_service.store.datasets import DatasetStore
from tests.helpers.counting import LOG_ENV


@pytest.fixture(scope="session")
def dask_client():
    """One in-process LocalCluster (threads) shared by the engine tests."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
    )
    client = Client(cluster)
    yield client
    client.close()
    cluster.close()


@pytest.fixture
def store(tmp_path):
    return DatasetStore(tmp_path / "datasets")


@pytest.fixture
def cache(tmp_path):
    c = ResultCache(tmp_path / "cache", size_limit=2**30)
    yield c
    c.close()


@pytest.fixture
def runner(dask_client, store, cache):
    return SearchRunner(dask_client, store, cache)


@pytest.fixture
def fit_log(tmp_path, monkeypatch):
    """Path of a fresh fit log that counting estimators append to."""
    path = tmp_path / "fits.log"
    monkeypatch.setenv(LOG_ENV, str(path))
    return path


@pytest.fixture(autouse=True)
def _no_blas_env_leak():
    yield
    os.environ.pop(LOG_ENV, None)
