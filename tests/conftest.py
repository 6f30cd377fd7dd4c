"""Shared fixtures: a real dask cluster of worker processes, a store and a cache per test."""

from __future__ import annotations

import os

import pytest

from memogrid_service.engine.search import SearchRunner
from memogrid_service.store.cache import ResultCache
from memogrid_service.store.datasets import DatasetStore
from tests.helpers.counting import LOG_ENV


@pytest.fixture(scope="session")
def session_fit_log(tmp_path_factory):
    """The fit log every process of the session appends to.

    Set before any worker starts so that worker processes inherit it.
    """
    path = tmp_path_factory.mktemp("fits") / "fits.log"
    os.environ[LOG_ENV] = str(path)
    yield path
    os.environ.pop(LOG_ENV, None)


@pytest.fixture(scope="session")
def dask_client(session_fit_log):
    """A LocalCluster of the default shape (two single-threaded worker processes)."""
    from memogrid_service.engine.cluster import close_client, make_client

    client = make_client(n_workers=2)
    yield client
    close_client(client)


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
def fit_log(session_fit_log):
    """The session's fit log, emptied for this test."""
    session_fit_log.write_text("")
    return session_fit_log
