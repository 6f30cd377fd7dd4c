"""Engines and sessions for SQLite and PostgreSQL.

SQLite gets WAL (readers never wait for the writer), a busy timeout and
foreign keys. Write transactions on SQLite start with ``BEGIN IMMEDIATE``:
a deferred transaction that reads and then writes can fail at once with
"database is locked" when another writer got in between, whatever the busy
timeout, while an immediate one waits its turn. Reads stay deferred so
status polls never queue behind the runner. PostgreSQL needs none of this
and uses one engine for both.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 30_000


def _sqlite_engine(url: str, begin: str) -> Engine:
    engine = create_engine(
        url,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
        # the driver's own transaction handling is turned off so that ours
        # (below) decides how each transaction begins
        isolation_level=None,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql(begin)

    return engine


class Database:
    """A database by URL, with separate read and write sessions."""

    def __init__(self, url: str):
        self.url = url
        parsed = make_url(url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        if self.is_sqlite:
            if parsed.database and parsed.database != ":memory:":
                path = Path(parsed.database)
                # made here (`migrate upgrade` before the first serve): the
                # data directory, the owner's alone as serve makes it
                path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                # tokens' hashes and every user's jobs: the owner's alone, as
                # the data directory is (SQLite makes its journal files with
                # the database file's mode)
                path.touch(mode=0o600, exist_ok=True)
                if path.stat().st_mode & 0o077:
                    path.chmod(0o600)
            self.write_engine = _sqlite_engine(url, "BEGIN IMMEDIATE")
            self.read_engine = _sqlite_engine(url, "BEGIN")
        else:
            self.write_engine = self.read_engine = create_engine(
                url, pool_pre_ping=True, pool_size=10, max_overflow=20
            )
        self._write = sessionmaker(self.write_engine, expire_on_commit=False)
        self._read = sessionmaker(self.read_engine, expire_on_commit=False)

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A session whose transaction commits on success, rolls back on error."""
        with self._write() as session, session.begin():
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session for queries only (rolled back at the end)."""
        with self._read() as session:
            yield session

    def dispose(self) -> None:
        self.write_engine.dispose()
        if self.read_engine is not self.write_engine:
            self.read_engine.dispose()
