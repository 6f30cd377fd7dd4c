"""Alembic migrations: they build the models' schema exactly, on both databases."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from memogrid_service.db import migrate
from memogrid_service.db.models import Base
from memogrid_service.db.session import Database


def test_upgrade_matches_models(db_url):
    db = Database(db_url)
    try:
        assert migrate.current(db.write_engine) is None
        rev = migrate.upgrade(db.write_engine)
        assert rev in migrate.heads()
        with db.write_engine.connect() as conn:
            diff = compare_metadata(
                MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata
            )
        assert diff == [], f"models and migrations differ: {diff}"
        # a second upgrade is a no-op
        assert migrate.upgrade(db.write_engine) == rev
        tables = set(inspect(db.write_engine).get_table_names())
        assert set(Base.metadata.tables) <= tables
    finally:
        db.dispose()


def test_a_newer_schema_is_refused(db_url):
    db = Database(db_url)
    try:
        migrate.upgrade(db.write_engine)
        with db.write_engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = 'ffff_from_the_future'"))
        with pytest.raises(migrate.SchemaTooNew, match="newer"):
            migrate.upgrade(db.write_engine)
        with pytest.raises(migrate.SchemaTooNew):
            migrate.check(db.write_engine)
    finally:
        db.dispose()


def test_sqlite_pragmas(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        with db.read() as s:
            assert s.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert s.execute(text("PRAGMA foreign_keys")).scalar() == 1
            assert s.execute(text("PRAGMA busy_timeout")).scalar() >= 5000
        with db.write() as s:
            s.execute(text("CREATE TABLE t (a INTEGER)"))
    finally:
        db.dispose()
    # the owner's alone, journal files included, whatever the umask and
    # even where the file was made before with a wider mode
    files = sorted(tmp_path.glob("x.db*"))
    assert files and all(f.stat().st_mode & 0o777 == 0o600 for f in files), files
    (tmp_path / "y.db").touch(mode=0o644)
    Database(f"sqlite:///{tmp_path / 'y.db'}").dispose()
    assert (tmp_path / "y.db").stat().st_mode & 0o777 == 0o600


def test_an_older_schema_is_refused_until_upgraded(db_url):
    db = Database(db_url)
    try:
        with pytest.raises(migrate.SchemaOutOfDate, match="migrate upgrade"):
            migrate.require_current(db.write_engine)
        migrate.upgrade(db.write_engine)
        assert migrate.require_current(db.write_engine) in migrate.heads()
    finally:
        db.dispose()


def test_single_named_scorer_candidates_are_renamed_on_upgrade(db_url):
    """Before 0003 a job with one named scorer stored its candidates under
    "score"; the leaderboard tells metrics apart by name now."""
    import json

    db = Database(db_url)
    try:
        migrate.upgrade(db.write_engine, "0002")
        with db.write_engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO users (id, name, is_admin, created_at)"
                    " VALUES ('u', 'u', false, :t)"
                ),
                {"t": "2026-11-01 00:00:00"},
            )
            for job, scoring in (("a" * 32, "accuracy"), ("b" * 32, None)):
                conn.execute(
                    text(
                        "INSERT INTO jobs (id, owner_id, state, kind, request, x_id, created_at,"
                        " n_candidates, n_splits, progress_done, progress_total, cache_hits,"
                        " cache_misses, fits, cancel_requested, attempts, has_estimator)"
                        " VALUES (:id, 'u', 'succeeded', 'grid', :req, :x, :t,"
                        " 1, 3, 3, 3, 0, 3, 3, false, 1, false)"
                    ),
                    {
                        "id": job,
                        "req": json.dumps({"scoring": scoring}),
                        "x": "c" * 64,
                        "t": "2026-11-01 00:00:00",
                    },
                )
                conn.execute(
                    text(
                        "INSERT INTO candidates (job_id, idx, owner_id, dataset_id, metric,"
                        " params, mean_score, std_score, rank)"
                        " VALUES (:id, 0, 'u', :x, 'score', '{}', 0.5, 0.1, 1)"
                    ),
                    {"id": job, "x": "c" * 64},
                )
        migrate.upgrade(db.write_engine)
        with db.write_engine.connect() as conn:
            rows = dict(conn.execute(text("SELECT job_id, metric FROM candidates")).all())
        assert rows == {"a" * 32: "accuracy", "b" * 32: "score"}
    finally:
        db.dispose()


def test_dict_values_are_keyed_in_one_order_on_upgrade(db_url):
    """Before 0004 a dict's pairs were keyed in the order a job's grid wrote
    them: the same dict written otherwise was not found by /v1/results."""
    import hashlib

    from memogrid_service.runner.jobs import param_key, param_text

    unordered = '{"class":"x.Y","params":{"w":{"dict":[[1,5],[0,1]]}}}'
    plain = '{"dict":[[0,1]]}'
    db = Database(db_url)
    try:
        migrate.upgrade(db.write_engine, "0003")
        with db.write_engine.begin() as conn:
            t = {"t": "2026-11-01 00:00:00"}
            conn.execute(
                text(
                    "INSERT INTO users (id, name, is_admin, created_at)"
                    " VALUES ('u', 'u', false, :t)"
                ),
                t,
            )
            conn.execute(
                text(
                    "INSERT INTO jobs (id, owner_id, state, kind, request, x_id, created_at,"
                    " n_candidates, n_splits, progress_done, progress_total, cache_hits,"
                    " cache_misses, fits, cancel_requested, attempts, has_estimator)"
                    " VALUES (:id, 'u', 'succeeded', 'grid', '{}', :x, :t,"
                    " 1, 3, 3, 3, 0, 3, 3, false, 1, false)"
                ),
                {"id": "a" * 32, "x": "c" * 64, **t},
            )
            for name, value in (("est", unordered), ("w", plain)):
                conn.execute(
                    text(
                        "INSERT INTO candidate_params (job_id, idx, name, owner_id, value,"
                        " value_key) VALUES (:id, 0, :name, 'u', :value, :key)"
                    ),
                    {
                        "id": "a" * 32,
                        "name": name,
                        "value": value,
                        "key": hashlib.sha256(value.encode()).hexdigest(),
                    },
                )
        migrate.upgrade(db.write_engine)
        with db.write_engine.connect() as conn:
            rows = {
                name: (value, key)
                for name, value, key in conn.execute(
                    text("SELECT name, value, value_key FROM candidate_params")
                )
            }
        want = param_text({"class": "x.Y", "params": {"w": {"dict": [[0, 1], [1, 5]]}}})
        assert rows["est"] == (want, param_key(want))
        assert rows["w"] == (plain, param_key(plain))
    finally:
        db.dispose()


def test_services_starting_at_once_migrate_one_after_the_other(db_url, tmp_path):
    """Two services starting together on one empty database: both ran
    every migration at once, and on PostgreSQL one failed on the tables the
    other had just made. Then both made the first admin token: two live
    tokens, one shown to nobody. Now each waits for the other."""
    import threading

    from sqlalchemy import func, select

    from memogrid_service.api.auth import ensure_admin_token
    from memogrid_service.db.models import Token

    dbs = [Database(db_url) for _ in range(3)]
    barrier = threading.Barrier(len(dbs))
    outcomes: list = []

    def start(db: Database, i: int) -> None:
        try:
            barrier.wait()
            migrate.upgrade(db.write_engine)
            barrier.wait()
            outcomes.append(ensure_admin_token(db, tmp_path / f"admin-token-{i}"))
        except BaseException as exc:  # noqa: BLE001 - recorded for the test
            outcomes.append(exc)

    threads = [threading.Thread(target=start, args=(db, i)) for i, db in enumerate(dbs)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not [o for o in outcomes if isinstance(o, BaseException)], outcomes
        assert sum(o is not None for o in outcomes) == 1, outcomes
        assert migrate.current(dbs[0].write_engine) in migrate.heads()
        with dbs[0].read() as s:
            assert s.scalar(select(func.count()).select_from(Token)) == 1
    finally:
        for db in dbs:
            db.dispose()
