"""Settings come from MEMOGRID_* variables and refuse bad values."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from memogrid_service.settings import Settings, get_settings


def test_defaults_are_embedded(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    s = Settings()
    assert s.data_dir == tmp_path / "data"
    assert s.effective_database_url == f"sqlite:///{tmp_path / 'data' / 'memogrid.db'}"
    assert s.scheduler_address == "" and s.n_workers == 0
    assert s.cache_dir == tmp_path / "data" / "cache"


def test_environment_overrides(monkeypatch, tmp_path):
    monkeypatch.setenv("MEMOGRID_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("MEMOGRID_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1/test")
    monkeypatch.setenv("MEMOGRID_SCHEDULER_ADDRESS", "tcp://127.0.0.1:8786")
    monkeypatch.setenv("MEMOGRID_CACHE_SIZE_LIMIT", str(2**30))
    monkeypatch.setenv("MEMOGRID_RESIDENT_BYTES", "0")
    monkeypatch.setenv("MEMOGRID_EXTRA_ESTIMATORS", '["mypkg.models.MyTransformer"]')
    get_settings.cache_clear()
    s = get_settings()
    assert s.data_dir == tmp_path / "d"
    assert s.effective_database_url.startswith("postgresql+psycopg://")
    assert s.scheduler_address == "tcp://127.0.0.1:8786"
    assert s.cache_size_limit == 2**30
    assert s.resident_bytes == 0
    assert s.extra_estimators == ["mypkg.models.MyTransformer"]
    get_settings.cache_clear()


@pytest.mark.parametrize(
    "name, value",
    [
        ("MEMOGRID_CACHE_SIZE_LIMIT", "10"),
        ("MEMOGRID_N_WORKERS", "-1"),
        ("MEMOGRID_RESIDENT_BYTES", "-1"),
        ("MEMOGRID_GRID_MAX_FITS", "0"),
        ("MEMOGRID_EXTRA_ESTIMATORS", '["os.system; rm -rf /"]'),
        ("MEMOGRID_EXTRA_ESTIMATORS", '["builtins.__import__"]'),
        ("MEMOGRID_SCHEDULER_ADDRESS", "tcp//127.0.0.1:8786"),
        ("MEMOGRID_SCHEDULER_ADDRESS", "tcp://scheduler"),
        ("MEMOGRID_SCHEDULER_ADDRESS", "bogus://scheduler:8786"),
    ],
)
def test_bad_values_are_refused(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()


def test_a_database_password_apart_from_the_url_may_hold_any_character(monkeypatch, tmp_path):
    """Written into a URL, "p@ss/w0rd" became password "p" on host "ss"."""
    from sqlalchemy.engine import make_url

    monkeypatch.setenv("MEMOGRID_DATABASE_URL", "postgresql+psycopg://memogrid@db:5432/memogrid")
    for password in ("p@ss/w0rd", "x%41y", "a:b?c#d e"):
        monkeypatch.setenv("MEMOGRID_DATABASE_PASSWORD", password)
        url = make_url(Settings().effective_database_url)
        assert (url.password, url.host, url.port, url.database) == (
            password,
            "db",
            5432,
            "memogrid",
        )


def test_a_password_apart_from_a_url_naming_its_user_in_the_query_is_kept(monkeypatch):
    """With the user name given as ?user=, MEMOGRID_DATABASE_PASSWORD was
    dropped: a URL holds a password only beside a user name."""
    from sqlalchemy.engine import make_url

    monkeypatch.setenv("MEMOGRID_DATABASE_URL", "postgresql+psycopg://db/memogrid?user=bob")
    monkeypatch.setenv("MEMOGRID_DATABASE_PASSWORD", "S3cret")
    url = make_url(Settings().effective_database_url)
    assert (url.username, url.password, url.host) == ("bob", "S3cret", "db")


@pytest.mark.parametrize(
    "given",
    [
        "postgresql+psycopg://postgres@127.0.0.1:5432/db?password=S3cret",
        "postgresql+psycopg://postgres:S3cret@127.0.0.1:5432/db",
    ],
)
def test_the_database_url_shown_holds_no_password(monkeypatch, given):
    """The start-up line printed a password given as ?password=."""
    monkeypatch.setenv("MEMOGRID_DATABASE_URL", given)
    shown = Settings().shown_database_url
    assert "S3cret" not in shown and "127.0.0.1:5432/db" in shown, shown


@pytest.mark.parametrize(
    "address",
    ["tcp://scheduler:8786", "scheduler:8786", "tcp://dask_scheduler:8786", "tls://[::1]:8786"],
)
def test_scheduler_addresses_dask_takes_are_taken(monkeypatch, address):
    """Docker's names may hold underscores (Compose v1's project_scheduler_1)."""
    monkeypatch.setenv("MEMOGRID_SCHEDULER_ADDRESS", address)
    assert Settings().scheduler_address == address
