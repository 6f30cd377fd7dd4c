"""Service settings, read from ``MEMOGRID_*`` environment variables.

One :class:`Settings` class reached through the cached :func:`get_settings`
(tests call ``get_settings.cache_clear()`` after changing the environment).
Validators refuse unsafe or meaningless values at start-up rather than
failing later inside a job.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_IMPORT_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")


#: a host name (Docker's may hold underscores) or IP address (IPv6 without its brackets)
_HOST = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_.\-]*[A-Za-z0-9_])?$|^[0-9A-Fa-f:.]+$")


#: the databases memogrid runs on, as a message names them
_DATABASE_URLS = "sqlite:///path/to/file.db or postgresql+psycopg://user@host:5432/db"


class Settings(BaseSettings):
    """Every knob of the service, with its default."""

    model_config = SettingsConfigDict(env_prefix="MEMOGRID_", extra="forbid")

    #: datasets, the result cache and the default SQLite file live here
    data_dir: Path = Field(default=Path("data"))
    #: SQLAlchemy URL; empty means a SQLite file in ``data_dir``
    database_url: str = ""
    #: the database's password, if not in the URL (any characters: a URL
    #: needs "@", "/" and "%" escaped)
    database_password: str = ""
    #: dask scheduler address; empty means an in-process LocalCluster
    scheduler_address: str = ""
    #: how much lower the CPU priority of LocalCluster workers is than the
    #: API's (os.nice increment), so status polls stay fast while fits run
    worker_nice: int = Field(default=10, ge=0, le=19)
    #: LocalCluster worker processes (one thread each); 0 means one per core
    n_workers: int = Field(default=0, ge=0, le=1024)
    #: result cache size limit in bytes (least recently used entries go first)
    cache_size_limit: int = Field(default=10 * 2**30, ge=2**20)
    #: bytes of recent step outputs kept in worker memory between searches,
    #: so a search changing only later steps reads nothing from disk (0: none)
    resident_bytes: int = Field(default=2 * 2**30, ge=0)
    #: largest accepted upload in bytes
    upload_max_bytes: int = Field(default=2 * 2**30, ge=1)
    #: largest accepted body of any other request (a job's JSON), in bytes
    request_max_bytes: int = Field(default=16 * 2**20, ge=1024)
    #: largest accepted search, in fits (candidates x folds)
    grid_max_fits: int = Field(default=100_000, ge=1)
    #: jobs one service runs at the same time (more wait in the queue)
    max_concurrent_jobs: int = Field(default=2, ge=1, le=64)
    #: jobs one user runs at once on one service (0: one fewer than
    #: max_concurrent_jobs, at least one), so a slot is left for the others
    user_max_running_jobs: int = Field(default=0, ge=0, le=64)
    #: seconds a job may run before it is stopped and failed, saying so (0:
    #: no limit); its fits still under way stop with it (their workers are
    #: restarted)
    job_max_seconds: float = Field(default=24 * 3600.0, ge=0)
    #: seconds a runner's claim on a job lasts without a heartbeat; a job
    #: whose runner died is requeued after this long
    lease_seconds: float = Field(default=30.0, gt=0.5, le=3600)
    #: bytes of datasets one user may hold (413 beyond)
    user_max_bytes: int = Field(default=100 * 2**30, ge=1)
    #: queued plus running jobs one user may have at once (429 beyond)
    user_max_active_jobs: int = Field(default=8, ge=1)
    #: uploads one user may have under way at once (429 beyond): each is
    #: spooled to disk, up to upload_max_bytes, before its content can be
    #: hashed and held against the quota
    user_max_uploads: int = Field(default=4, ge=1)
    #: seconds a checked token is remembered (a revoked one works this long at most)
    auth_cache_seconds: float = Field(default=2.0, ge=0, le=300)
    #: requests per minute one token may make (429 beyond); 0 turns it off
    rate_limit_per_minute: int = Field(default=6000, ge=0)
    #: upgrade the database schema when the service starts
    migrate_on_start: bool = True
    #: import paths of estimators or functions the operator trusts in specs
    extra_estimators: list[str] = Field(default_factory=list)

    @field_validator("extra_estimators")
    @classmethod
    def _import_paths_only(cls, names: list[str]) -> list[str]:
        for name in names:
            if not _IMPORT_PATH.match(name) or any(p.startswith("__") for p in name.split(".")):
                raise ValueError(f"{name!r} is not a dotted import path")
        return names

    @field_validator("scheduler_address")
    @classmethod
    def _scheduler_address(cls, address: str) -> str:
        """``[scheme://]host:port``, checked here: a malformed one was tried
        for 30 s, then the service died with dask's traceback."""
        if not address:
            return address
        scheme, _, rest = address.rpartition("://")
        host, _, port = rest.rpartition(":")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        if (
            scheme not in ("", "tcp", "tls", "ws", "wss", "ucx")
            or not _HOST.match(host)
            or not (port.isdigit() and 0 < int(port) < 65536)
        ):
            raise ValueError(
                f"{address!r} is not a dask scheduler address such as tcp://scheduler:8786"
            )
        return address

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, url: str) -> str:
        """A SQLite file or a PostgreSQL server, refused at start otherwise:
        an unparsable URL, another database or driver failed in SQLAlchemy's
        words, and an in-memory SQLite database vanished (each connection
        its own, so the service's first query found no tables)."""
        if not url:
            return url
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        said = "MEMOGRID_DATABASE_URL (--database-url)"
        try:
            parsed = make_url(url)
        except ArgumentError:
            raise ValueError(f"{said} is no database URL such as {_DATABASE_URLS}") from None
        if parsed.drivername in ("postgresql", "postgres"):  # the driver memogrid installs
            parsed = parsed.set(drivername="postgresql+psycopg")
            url = parsed.render_as_string(hide_password=False)
        if parsed.drivername not in ("sqlite", "sqlite+pysqlite", "postgresql+psycopg"):
            raise ValueError(
                f"{said}: memogrid runs on {_DATABASE_URLS}, not {parsed.drivername!r}"
            )
        memory = not parsed.database or ":memory:" in parsed.database
        if parsed.get_backend_name() == "sqlite" and (
            memory or parsed.query.get("mode") == "memory"
        ):
            raise ValueError(
                f"{said}: an in-memory SQLite database is lost with the service and not "
                "shared by its connections; give a file (sqlite:////abs/path/memogrid.db)"
            )
        return url

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, path: Path) -> Path:
        return path.expanduser().resolve()

    @property
    def datasets_dir(self) -> Path:
        return self.data_dir / "datasets"

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"

    @property
    def admin_token_file(self) -> Path:
        return self.data_dir / "admin-token"

    @property
    def estimators_dir(self) -> Path:
        return self.data_dir / "estimators"

    @property
    def effective_database_url(self) -> str:
        url = self.database_url or f"sqlite:///{self.data_dir / 'memogrid.db'}"
        if not self.database_password:
            return url
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
        user = parsed.query.get("user")
        if parsed.username is None and isinstance(user, str):
            # a password goes with a user name: given as ?user=, it was dropped
            parsed = parsed.set(username=user).difference_update_query(["user"])
        with_password = parsed.set(password=self.database_password)
        return with_password.render_as_string(hide_password=False)

    @property
    def shown_database_url(self) -> str:
        """The database URL without its password, wherever it was given
        (``user:password@``, ``?password=``), for logs and messages."""
        from sqlalchemy.engine import make_url

        parsed = make_url(self.effective_database_url)
        return parsed.difference_update_query(["password"]).render_as_string(hide_password=True)


class OwnSettings(Settings):
    """Settings from the arguments given and the defaults, none from the
    environment: a temporary service (``memogrid demo``) took the
    operator's database and scheduler from the shell's ``MEMOGRID_*``."""

    @classmethod
    def settings_customise_sources(  # type: ignore[override]
        cls, settings_cls: type[BaseSettings], init_settings: Any, **sources: Any
    ) -> tuple[Any, ...]:
        return (init_settings,)


@lru_cache
def get_settings() -> Settings:
    """The process's settings (cached; clear the cache to re-read the env)."""
    return Settings()
