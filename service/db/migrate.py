"""Schema migrations through Alembic, run from code or the CLI.

The migration scripts ship inside the package (``memogrid_service.migrations``,
the repository's top-level ``migrations/``), so an installed service can
upgrade its own database. A database stamped with a revision this code does
not know was migrated by a newer memogrid: the service refuses to run on it
rather than guess.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine


class SchemaTooNew(RuntimeError):
    """The database was migrated by a newer memogrid than this one."""


def alembic_config(engine: Engine | None = None) -> Config:
    from memogrid_service import migrations

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    if engine is not None:
        url = engine.url.render_as_string(hide_password=False)
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def heads() -> set[str]:
    return set(ScriptDirectory.from_config(alembic_config()).get_heads())


def current(engine: Engine) -> str | None:
    """The database's revision, ``None`` for an empty database."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def check(engine: Engine) -> str | None:
    """Raise :class:`SchemaTooNew` if the database is ahead of this code."""
    return _known(current(engine))


def _known(rev: str | None) -> str | None:
    if rev is None:
        return None
    script = ScriptDirectory.from_config(alembic_config())
    known = {s.revision for s in script.walk_revisions()}
    if rev not in known:
        raise SchemaTooNew(
            f"the database is at schema revision {rev!r}, which this memogrid does not "
            "know: it was migrated by a newer version; upgrade memogrid instead"
        )
    return rev


class SchemaOutOfDate(RuntimeError):
    """The database is behind this memogrid (``memogrid migrate upgrade`` brings it up)."""


def require_current(engine: Engine) -> str:
    """The database's revision if it is this code's head; else raise why not."""
    rev = check(engine)
    if rev not in heads():
        raise SchemaOutOfDate(
            f"the database is at schema revision {rev or 'nothing'!s}, not the current "
            f"{', '.join(sorted(heads()))}: run `memogrid migrate upgrade` first"
        )
    assert rev is not None
    return rev


def upgrade(engine: Engine, revision: str = "head") -> str | None:
    """Bring the schema up to ``revision``; refuse a database that is ahead.

    Services starting at once on one database migrate one after the other:
    the second finds the schema the first left (both ran every step, and
    one failed on the tables the other had just made)."""
    from .ops import lock_named

    cfg = alembic_config(engine)
    with engine.begin() as conn:
        lock_named(conn, "memogrid-migrate")
        _known(MigrationContext.configure(conn).get_current_revision())
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    return current(engine)


def ready(engine: Engine, upgrade_it: bool) -> str | None:
    """The schema a service runs on: upgraded (``MEMOGRID_MIGRATE_ON_START``),
    or else checked to be this code's; its revision."""
    return upgrade(engine) if upgrade_it else require_current(engine)
