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


# -- SQL: every service test runs on SQLite and on PostgreSQL ---------------

PG_URL = os.environ.get("MEMOGRID_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def pg_available():
    """Whether PostgreSQL answers; in CI (``CI`` set) it must."""
    from sqlalchemy import create_engine, text

    engine = create_engine(PG_URL)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except Exception as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL at {PG_URL} is required in CI and unreachable: {exc}")
        return False
    finally:
        engine.dispose()


def pytest_collection_modifyitems(config, items):
    """A test marked ``sqlite_only`` (a module of client behaviour, say) runs
    on the SQLite file alone, unless it is also marked ``both_databases``:
    what it checks does not pass through anything the databases do
    differently, and the database layer has its own tests on both."""
    dropped = [
        item
        for item in items
        if getattr(item, "callspec", None) is not None
        and item.callspec.params.get("db_url") == "postgresql"
        and item.get_closest_marker("sqlite_only") is not None
        and item.get_closest_marker("both_databases") is None
    ]
    if dropped:
        gone = set(map(id, dropped))
        items[:] = [item for item in items if id(item) not in gone]
        config.hook.pytest_deselected(items=dropped)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """A fresh, empty database: a SQLite file, or a PostgreSQL schema of its own."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'memogrid.db'}"
        return
    if not request.getfixturevalue("pg_available"):
        pytest.skip(f"PostgreSQL at {PG_URL} is not reachable")
    import secrets

    from sqlalchemy import create_engine, text

    schema = f"t_{secrets.token_hex(6)}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


# -- the real ASGI app on a real database, per test ------------------------


@pytest.fixture
def settings(tmp_path, db_url):
    from memogrid_service.settings import Settings

    return Settings(
        data_dir=tmp_path / "data",
        database_url=db_url,
        upload_max_bytes=8 << 20,
        grid_max_fits=2_000,
        # every request checks its token afresh (test_auth covers the cache)
        auth_cache_seconds=0,
    )


@pytest.fixture
def api(settings, dask_client):
    """An in-process client of the app (starlette's TestClient runs its lifespan)."""
    from fastapi.testclient import TestClient

    from memogrid_service.api.app import create_app

    app = create_app(settings, dask_client=dask_client)
    with TestClient(app, raise_server_exceptions=True) as client:
        # the admin token the service wrote on its first start
        token = settings.admin_token_file.read_text().strip()
        client.headers["authorization"] = f"Bearer {token}"
        yield client


@pytest.fixture
def api_as(api):
    """``api_as("bob")``: another in-process client of the same app, as a new user."""
    from fastapi.testclient import TestClient

    from memogrid_service.api.auth import create_token

    opened = []

    def as_user(name: str):
        token = create_token(api.app.state.services.db, name)
        client = TestClient(api.app, raise_server_exceptions=True)
        client.headers["authorization"] = f"Bearer {token}"
        opened.append(client)
        return client

    yield as_user
