"""Small SQL helpers shared by the runner and the routes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import CursorResult
from sqlalchemy.orm import Session


def utcnow() -> datetime:
    return datetime.now(UTC)


def aware(value: datetime | None) -> datetime | None:
    """A stored time in UTC: SQLite hands back naive datetimes (written in
    UTC), PostgreSQL times in its session's zone, which the host sets."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def rowcount(result: Any) -> int:
    """Rows an UPDATE or DELETE matched (a ``CursorResult``'s count)."""
    assert isinstance(result, CursorResult)
    return int(result.rowcount)


def insert_ignoring_duplicates(session: Session, model: Any, rows: Iterable[Mapping]) -> None:
    """Insert rows, skipping any whose primary key is already there.

    A result row is written once even when a resumed job reports it again.
    """
    rows = list(rows)
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        stmt: Any = pg_insert(model).on_conflict_do_nothing()
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        stmt = sqlite_insert(model).on_conflict_do_nothing()
    else:  # pragma: no cover - only SQLite and PostgreSQL are supported
        raise NotImplementedError(dialect)
    session.execute(stmt, rows)


def lock_user(session: Any, user_id: str) -> None:
    """Hold ``user_id``'s row until this write transaction ends.

    Every check of a user's limits or ownership that is followed by a write
    (the storage quota, the running-jobs cap, a dataset still owned when a
    job is queued on it or deleted) takes this lock first, so concurrent
    requests of one user see each other's writes instead of the same stale
    count. SQLite's write transactions are already serial (``BEGIN
    IMMEDIATE``); PostgreSQL needs the row lock.
    """
    from sqlalchemy import select

    from .models import User

    if session.get_bind().dialect.name != "sqlite":
        session.execute(select(User.id).where(User.id == user_id).with_for_update())


def lock_named(conn: Any, name: str) -> None:
    """Hold the lock called ``name`` until this write transaction ends (a
    session or a connection): PostgreSQL's advisory lock, for work that has
    no row to lock yet (a schema's migration, the first admin token), done
    at once by several services on one database. SQLite's write
    transactions are serial already (``BEGIN IMMEDIATE``)."""
    from sqlalchemy import func, select

    bind = conn.get_bind() if hasattr(conn, "get_bind") else conn
    if bind.dialect.name != "sqlite":
        conn.execute(select(func.pg_advisory_xact_lock(func.hashtext(name))))


def first_line(exc: BaseException) -> str:
    """What ``exc`` says, its first line; for a database's error, the
    database's own words (not the statement, its parameters or SQLAlchemy's
    link)."""
    from sqlalchemy.exc import StatementError

    if isinstance(exc, StatementError) and exc.orig is not None:
        exc = exc.orig
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
