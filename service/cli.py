"""The ``memogrid`` command: serve the API and manage the database.

    memogrid serve [--host H] [--port P] [--data-dir D] [--workers N]
    memogrid migrate upgrade|current|check
    memogrid token create USER [--name N] [--expires-days D] | list | revoke ID
    memogrid cache stats|prune --max-size SIZE
    memogrid jobs list|show ID|cancel ID|delete ID  (through the API: --url, --token)
    memogrid demo [--url URL]                 (the seed workload twice: cold, then warm)

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


#: what a data directory the service never ran in may be
_NO_SERVICE_HERE = (
    "(is --data-dir / MEMOGRID_DATA_DIR right? the service creates it as it first starts)"
)


def _refuse_missing_file(url, hint: str) -> None:  # type: ignore[no-untyped-def]
    """A SQLite database that must be there already: opening it would make
    an empty one (in a mistyped data directory, say)."""
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        if not os.path.exists(url.database):
            raise ValueError(f"no memogrid database at {url.database} {hint}")


def _existing_database(settings):  # type: ignore[no-untyped-def]
    """The service's database, which must exist already: a mistyped data
    directory made a new, empty one, and a token created in it was one the
    service never reads."""
    from sqlalchemy.engine import make_url

    from .db import migrate
    from .db.session import Database

    url = make_url(settings.effective_database_url)
    _refuse_missing_file(url, _NO_SERVICE_HERE)
    db = Database(settings.effective_database_url)
    try:
        if migrate.current(db.write_engine) is None:
            raise ValueError(
                f"the database {url.render_as_string()} holds no memogrid schema {_NO_SERVICE_HERE}"
            )
        # not upgraded here: a newer memogrid's `token list` moved the schema
        # from under an older service still running on it
        migrate.require_current(db.write_engine)
    except BaseException:
        db.dispose()
        raise
    return db


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .api.app import create_app

    settings = _settings(args)
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    _ready_to_serve(settings)  # its errors in one line, before the server starts
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("memogrid").info(
        "memogrid on http://%s:%d (API docs at /v1/docs), data in %s, database %s",
        args.host,
        args.port,
        settings.data_dir,
        settings.shown_database_url,
    )
    uvicorn.run(
        create_app(settings),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=args.access_log,
        timeout_graceful_shutdown=10,
    )
    return 0


def _ready_to_serve(settings) -> None:  # type: ignore[no-untyped-def]
    """What would stop the service in its start-up traceback, or have it
    fail every queued job, said in a line before it starts: a file where
    the service keeps a directory (or a directory where it writes its admin
    token); a wrong database URL, an unreachable server or a schema of
    another version (the schema is upgraded here, or, not migrating on
    start, checked to be current); and a database that records datasets
    with a data directory that never held any (a mistyped --data-dir beside
    a shared database URL)."""
    from sqlalchemy import select

    from .db import migrate
    from .db.models import Dataset
    from .db.session import Database

    for path in (settings.datasets_dir, settings.cache_dir, settings.estimators_dir):
        if path.exists() and not path.is_dir():
            raise ValueError(f"{path} is in the way: the service keeps a directory there")
    if settings.admin_token_file.is_dir():
        raise ValueError(
            f"{settings.admin_token_file} is a directory: the service writes its token there"
        )
    db = Database(settings.effective_database_url)
    try:
        migrate.ready(db.write_engine, settings.migrate_on_start)
        if settings.datasets_dir.exists():
            return
        with db.read() as s:
            recorded = s.scalars(select(Dataset.id).limit(1)).first()
    finally:
        db.dispose()
    if recorded is not None:
        raise ValueError(
            f"the database records datasets but {settings.data_dir} never held any (is "
            "--data-dir / MEMOGRID_DATA_DIR right? if its files are gone for good, make "
            f"{settings.datasets_dir} to start anyway)"
        )


def cmd_migrate(args: argparse.Namespace) -> int:
    from sqlalchemy.engine import make_url

    from .db import migrate
    from .db.session import Database

    settings = _settings(args)
    if args.action != "upgrade":  # only an upgrade makes a database
        _refuse_missing_file(
            make_url(settings.effective_database_url),
            "(is --data-dir / MEMOGRID_DATA_DIR right? `memogrid migrate upgrade` or the "
            "service's first start creates it)",
        )
    db = Database(settings.effective_database_url)
    try:
        if args.action == "upgrade":
            rev = migrate.upgrade(db.write_engine)
            print(f"schema at revision {rev}")
        elif args.action == "current":
            print(migrate.current(db.write_engine) or "empty database (no revision)")
        else:  # check
            try:
                rev = migrate.require_current(db.write_engine)
            except migrate.SchemaOutOfDate as exc:
                print(exc)
                return 1
            print(f"schema up to date at revision {rev}")
    finally:
        db.dispose()
    return 0


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is a number from 1 to 65535, not {text!r}")
    return port


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"not a positive whole number: {text!r}")
    return value


def parse_size(text: str) -> int:
    """``500M``, ``2G``, ``1.5GiB`` or plain bytes."""
    import re

    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?b)?\s*", text.lower())
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 500M or 2G)")
    factor = 1024 ** " kmgt".index(m.group(2) or " ")
    return int(float(m.group(1)) * factor)


def cmd_cache(args: argparse.Namespace) -> int:
    import sqlite3

    from .store.cache import ResultCache, prune_files

    settings = _settings(args)
    if not settings.cache_dir.is_dir():  # not made here: a mistyped directory would be
        raise ValueError(f"no result cache at {settings.cache_dir} {_NO_SERVICE_HERE}")
    if args.action == "prune" and args.max_size is None:
        raise ValueError("cache prune needs --max-size (e.g. --max-size 2G)")
    cache = ResultCache(settings.cache_dir, settings.cache_size_limit)
    try:
        if not cache.usable and args.action == "prune":
            # SQLite cannot write its index on a full disk: free space by
            # the value files first, then prune as usual
            try:
                files, freed = prune_files(settings.cache_dir, args.max_size)
            except (OSError, sqlite3.Error) as exc:
                raise ValueError(
                    f"the result cache at {settings.cache_dir} cannot be opened "
                    f"({cache.error}), nor its index read ({exc}); the service computes "
                    "without it"
                ) from None
            print(
                f"the cache's index could not be opened ({cache.error}): removed {files} "
                f"value files ({freed} bytes), least recently used first"
            )
            cache.close()
            cache = ResultCache(settings.cache_dir, settings.cache_size_limit)
        if not cache.usable:  # an empty cache it is not: say so
            raise ValueError(
                f"the result cache at {settings.cache_dir} cannot be opened ({cache.error}); "
                "the service computes without it"
            )
        if args.action == "prune":
            evicted = cache.cull(args.max_size)
            files, freed = cache.sweep_orphans()
            print(f"evicted {evicted} entries; the cache now holds {cache.volume()} bytes")
            if files:
                print(f"removed {files} value files of interrupted writes ({freed} bytes)")
        else:
            print(f"directory   {settings.cache_dir}")
            print(f"entries     {len(cache)}")
            print(f"bytes       {cache.volume()}")
            print(f"size limit  {settings.cache_size_limit}")
    finally:
        cache.close()
    return 0


def _client(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from memogrid import Client

    return Client(args.url, args.token)


def cmd_jobs(args: argparse.Namespace) -> int:
    import json

    with _client(args) as client:
        if args.action == "list":
            rows = client.jobs(state=args.state, dataset=args.dataset, limit=args.limit)
            print(f"{'id':<32}  {'state':<9}  {'created':<25}  {'progress':>13}  hits")
            for j in rows:
                p = j["progress"]
                print(
                    f"{j['id']:<32}  {j['state']:<9}  {_utc_seconds(j['created_at']):<25}  "
                    f"{p['done']:>6}/{p['total']:<6}  {p['cache_hits']}"
                )
        elif args.job_id is None:
            raise ValueError(f"jobs {args.action} needs a job id")
        elif args.action == "show":
            print(json.dumps(client.job(args.job_id).status(), indent=2))
        elif args.action == "delete":
            client.job(args.job_id).delete()
            print(f"job {args.job_id} deleted")
        else:
            st = client.job(args.job_id).cancel()
            print(f"job {st['id']} is {st['state']} (cancel requested)")
    return 0


def _utc_seconds(text: str) -> str:
    """An ISO time from the API to the second (it gave microseconds, cut
    mid-way), in UTC as the API gives it."""
    from datetime import datetime

    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return text[:25]


def _when(value: object) -> str:
    from datetime import datetime

    return value.strftime("%Y-%m-%d %H:%M") if isinstance(value, datetime) else "-"


def cmd_token(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from .api.auth import create_token, list_tokens, revoke_token, token_id_of

    settings = _settings(args)
    if args.action == "create":  # before the database is opened
        if not args.user:
            raise ValueError("token create needs a user name")
        days = args.expires_days
        if days is not None and not 0 < days <= 36_500:
            raise ValueError(
                f"--expires-days is a positive number of days up to 36500, not {days:g}"
            )
    db = _existing_database(settings)
    try:
        if args.action == "create":
            expires = timedelta(days=days) if days is not None else None
            token = create_token(db, args.user, name=args.name or "", expires_in=expires)
            print(token)
            print(
                "shown once: keep it (export MEMOGRID_TOKEN=...); only its hash is stored",
                file=sys.stderr,
            )
        elif args.action == "list":
            print(f"{'id':<14} {'user':<16} {'name':<20} {'created':<20} {'expires':<20} state")
            for t in list_tokens(db):
                state = "revoked" if t["revoked"] else "expired" if t["expired"] else "active"
                print(
                    f"{t['id']!s:<14} {t['user']!s:<16} {t['name']!s:<20} "
                    f"{_when(t['created_at']):<20} {_when(t['expires_at']):<20} {state}"
                )
        else:
            if not args.user:
                raise ValueError("token revoke needs a token id (see token list)")
            token_id = token_id_of(args.user)  # never the secret, if the whole token was given
            if not revoke_token(db, args.user):
                raise ValueError(f"no active token {token_id!r}")
            print(f"revoked {token_id}")
    finally:
        db.dispose()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(args.url, args.token)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="memogrid", description="memogrid: a persistent, memoizing grid-search service"
    )
    sub = p.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP API, its job runner and dask cluster")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=_port, default=8000, help="port (default 8000)")
    serve.add_argument("--data-dir", help="datasets, cache and SQLite file (MEMOGRID_DATA_DIR)")
    serve.add_argument(
        "--workers", type=int, help="LocalCluster worker processes (MEMOGRID_N_WORKERS)"
    )
    serve.add_argument("--database-url", help="SQLAlchemy URL (MEMOGRID_DATABASE_URL)")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    serve.add_argument(
        "--access-log", action="store_true", help="log every request (off: polls are many)"
    )
    serve.set_defaults(func=cmd_serve)

    mig = sub.add_parser("migrate", help="upgrade or inspect the database schema")
    mig.add_argument("action", choices=["upgrade", "current", "check"])
    mig.add_argument("--data-dir", help="data directory (MEMOGRID_DATA_DIR)")
    mig.add_argument("--database-url", help="SQLAlchemy URL (MEMOGRID_DATABASE_URL)")
    mig.set_defaults(func=cmd_migrate)

    token = sub.add_parser(
        "token",
        help="create, list or revoke API tokens (on the database directly)",
        description="create USER: a new token for USER (created if new), printed once; "
        "list: every token; revoke ID: revoke a token by its id (or the whole token)",
    )
    token.add_argument("action", choices=["create", "list", "revoke"])
    token.add_argument("user", nargs="?", help="user name (create) or token id (revoke)")
    token.add_argument("--name", help="a label for the token (create)")
    token.add_argument("--expires-days", type=float, help="lifetime in days (create)")
    token.add_argument("--data-dir", help="data directory (MEMOGRID_DATA_DIR)")
    token.add_argument("--database-url", help="SQLAlchemy URL (MEMOGRID_DATABASE_URL)")
    token.set_defaults(func=cmd_token)

    cache = sub.add_parser("cache", help="inspect or prune the shared result cache")
    cache.add_argument("action", choices=["stats", "prune"])
    cache.add_argument(
        "--max-size", type=parse_size, help="prune least-recently-used entries below this size"
    )
    cache.add_argument("--data-dir", help="data directory (MEMOGRID_DATA_DIR)")
    cache.set_defaults(func=cmd_cache)

    remote = argparse.ArgumentParser(add_help=False)
    remote.add_argument("--url", help="service URL (MEMOGRID_URL, default http://127.0.0.1:8000)")
    remote.add_argument("--token", help="API token (MEMOGRID_TOKEN)")

    jobs = sub.add_parser("jobs", parents=[remote], help="list, show, cancel or delete jobs")
    jobs.add_argument("action", choices=["list", "show", "cancel", "delete"])
    jobs.add_argument("job_id", nargs="?", help="the job (show, cancel, delete)")
    jobs.add_argument("--state", action="append", help="only jobs in this state (repeatable)")
    jobs.add_argument("--dataset", help="only jobs on this dataset id")
    jobs.add_argument("--limit", type=_positive, default=20)
    jobs.set_defaults(func=cmd_jobs)

    demo = sub.add_parser(
        "demo",
        parents=[remote],
        help="run the seed workload twice (cold, then warm) and print times and cache hits",
        description="Runs the seed workload twice through a memogrid service: against --url "
        "if given, else against a temporary service started for the demo.",
    )
    demo.set_defaults(func=cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `memogrid token list | head`: the reader had enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # one line, not a traceback, for the operator
        print(f"memogrid: error: {_one_line(exc)}", file=sys.stderr)
        return 1


def _one_line(exc: BaseException) -> str:
    """An error as one line: a database's first line of what it said (not
    the statement, not SQLAlchemy's link), a settings error's every field."""
    from pydantic import ValidationError

    from .db.ops import first_line

    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
    return first_line(exc)


if __name__ == "__main__":
    sys.exit(main())
