"""The ``memogrid`` command: serve the API and manage the database.

    memogrid serve [--host H] [--port P] [--data-dir D] [--workers N]
    memogrid migrate upgrade|current|check

Settings come from ``MEMOGRID_*`` environment variables; the flags here
override the matching ones. Errors exit non-zero with a one-line message.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence


def _settings(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from .settings import get_settings

    if getattr(args, "data_dir", None):
        os.environ["MEMOGRID_DATA_DIR"] = args.data_dir
    if getattr(args, "workers", None) is not None:
        os.environ["MEMOGRID_N_WORKERS"] = str(args.workers)
    if getattr(args, "database_url", None):
        os.environ["MEMOGRID_DATABASE_URL"] = args.database_url
    get_settings.cache_clear()
    return get_settings()


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .api.app import create_app

    settings = _settings(args)
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("memogrid").info(
        "memogrid on http://%s:%d (API docs at /v1/docs), data in %s, database %s",
        args.host,
        args.port,
        settings.data_dir,
        settings.effective_database_url.split("@")[-1],
    )
    uvicorn.run(
        create_app(settings),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        timeout_graceful_shutdown=10,
    )
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from .db import migrate
    from .db.session import Database

    settings = _settings(args)
    db = Database(settings.effective_database_url)
    try:
        if args.action == "upgrade":
            rev = migrate.upgrade(db.write_engine)
            print(f"schema at revision {rev}")
        elif args.action == "current":
            print(migrate.current(db.write_engine) or "empty database (no revision)")
        else:  # check
            rev = migrate.check(db.write_engine)
            if rev not in migrate.heads():
                print(f"schema at {rev or 'nothing'}; run `memogrid migrate upgrade`")
                return 1
            print(f"schema up to date at revision {rev}")
    finally:
        db.dispose()
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="memogrid", description="memogrid: a persistent, memoizing grid-search service"
    )
    sub = p.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP API, its job runner and dask cluster")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument("--data-dir", help="datasets, cache and SQLite file (MEMOGRID_DATA_DIR)")
    serve.add_argument(
        "--workers", type=int, help="LocalCluster worker processes (MEMOGRID_N_WORKERS)"
    )
    serve.add_argument("--database-url", help="SQLAlchemy URL (MEMOGRID_DATABASE_URL)")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    serve.set_defaults(func=cmd_serve)

    mig = sub.add_parser("migrate", help="upgrade or inspect the database schema")
    mig.add_argument("action", choices=["upgrade", "current", "check"])
    mig.add_argument("--data-dir", help="data directory (MEMOGRID_DATA_DIR)")
    mig.add_argument("--database-url", help="SQLAlchemy URL (MEMOGRID_DATABASE_URL)")
    mig.set_defaults(func=cmd_migrate)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # one line, not a traceback, for the operator
        print(f"memogrid: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
