"""The memogrid command: help, schema management, cache, jobs, errors."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest

from memogrid_service.cli import main, parse_size

CLI = [sys.executable, "-m", "memogrid_service.cli"]


def run(*args, env=None):
    import os

    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,  # a serve that started after all fails the test, not the suite
    )


@pytest.mark.parametrize(
    "command", [[], ["serve"], ["migrate"], ["token"], ["cache"], ["jobs"], ["demo"]]
)
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: memogrid") and len(out.splitlines()) > 3


def test_migrate_and_errors(tmp_path):
    env = {"MEMOGRID_DATA_DIR": str(tmp_path), "MEMOGRID_DATABASE_URL": ""}
    check = run("migrate", "check", env=env)
    assert check.returncode == 1 and "memogrid migrate upgrade" in check.stderr
    assert run("migrate", "upgrade", env=env).stdout.startswith("schema at revision")
    from memogrid_service.db import migrate

    assert run("migrate", "current", env=env).stdout.strip() in migrate.heads()
    assert run("migrate", "check", env=env).returncode == 0
    # a data directory made by `migrate upgrade` (compose runs it before
    # serve) is the owner's alone, as serve makes it
    fresh = tmp_path / "fresh"
    assert run("migrate", "upgrade", env={**env, "MEMOGRID_DATA_DIR": str(fresh)}).returncode == 0
    assert fresh.stat().st_mode & 0o777 == 0o700
    # errors: non-zero exit, one line, no traceback
    bad = run("migrate", "upgrade", env={**env, "MEMOGRID_DATABASE_URL": "nope://x"})
    assert bad.returncode == 1
    assert bad.stderr.startswith("memogrid: error:") and len(bad.stderr.splitlines()) == 1
    assert run("jobs", "show", env=env).returncode == 1
    nowhere = run("jobs", "list", "--url", "http://127.0.0.1:9", env=env)
    assert nowhere.returncode == 1 and "cannot reach" in nowhere.stderr
    assert len(nowhere.stderr.splitlines()) == 1
    assert run("cache", "prune", env=env).returncode == 1
    assert run("frobnicate").returncode == 2
    for port in ("99999", "0", "http"):  # 99999 listened on 34463
        wrong = run("serve", "--port", port, env=env)
        assert wrong.returncode == 2 and "a port is a number from 1 to 65535" in wrong.stderr
    # a serve that cannot start says why in one line, not a server traceback
    for url, said in (
        ("nope://x", "nope"),
        ("postgresql+psycopg://postgres@127.0.0.1:9/test", "127.0.0.1"),
    ):
        failed = run("serve", "--port", "1", env={**env, "MEMOGRID_DATABASE_URL": url})
        assert failed.returncode == 1 and failed.stderr.startswith("memogrid: error:")
        assert len(failed.stderr.splitlines()) == 1 and said in failed.stderr, failed.stderr
    empty = {**env, "MEMOGRID_DATA_DIR": str(tmp_path / "empty")}
    stale = run("serve", "--port", "1", env={**empty, "MEMOGRID_MIGRATE_ON_START": "false"})
    assert stale.returncode == 1 and len(stale.stderr.splitlines()) == 1
    assert "memogrid migrate upgrade" in stale.stderr, stale.stderr
    settings = run("serve", "--workers", "-1", env=env)
    assert settings.returncode == 1 and len(settings.stderr.splitlines()) == 1, settings.stderr
    # inspecting a directory that holds no database makes none there
    typo = tmp_path / "typo"
    for action in ("current", "check"):
        looked = run("migrate", action, env={**env, "MEMOGRID_DATA_DIR": str(typo)})
        assert looked.returncode == 1 and "no memogrid database at" in looked.stderr
    assert not typo.exists()
    negative = run("jobs", "list", "--limit", "-3", "--url", "http://127.0.0.1:9")
    assert negative.returncode == 2 and "not a positive whole number" in negative.stderr


def test_cache_stats_and_prune(tmp_path):
    from memogrid_service.store.cache import ResultCache

    cache = ResultCache(tmp_path / "cache")
    for i in range(20):
        cache.set(f"k{i}", np.full(10_000, i, dtype=np.float64))
    cache.close()
    # a value file a killed write left two hours ago, named by no entry
    orphan = next((tmp_path / "cache").rglob("*.val")).with_name("killed.val")
    orphan.write_bytes(bytes(100_000))
    os.utime(orphan, (time.time() - 7200, time.time() - 7200))
    env = {"MEMOGRID_DATA_DIR": str(tmp_path)}
    stats = run("cache", "stats", env=env)
    assert "entries     20" in stats.stdout
    pruned = run("cache", "prune", "--max-size", "400K", env=env)
    assert pruned.returncode == 0 and "evicted" in pruned.stdout
    assert "removed 1 value files of interrupted writes (100000 bytes)" in pruned.stdout
    assert not orphan.exists()
    cache = ResultCache(tmp_path / "cache")
    try:
        assert cache.volume() <= 400 * 1024 and 0 < len(cache) < 20
        assert cache.get("k19") is not None and cache.get("k0") is None  # LRU order
    finally:
        cache.close()
    # a damaged index is not an empty cache (it said 0 entries, exit 0)
    (tmp_path / "cache" / "cache.db").write_bytes(b"not a database" * 1000)
    for action in (["stats"], ["prune", "--max-size", "1K"]):
        damaged = run("cache", *action, env=env)
        assert damaged.returncode == 1 and "cannot be opened" in damaged.stderr, damaged


@pytest.mark.parametrize("service", ["stopped", "killed", "running"])
def test_cache_prune_frees_a_full_disk_and_the_cache_opens_again(tmp_path, service):
    """On a full disk the cache's index cannot be opened (SQLite cannot
    write): `cache prune` said the index was "damaged or unreadable" and
    freed nothing, when it is the tool an operator reaches for then; and
    reading the index as it was on disk it freed nothing either while the
    latest rows were in SQLite's write-ahead log (a service running, or
    killed)."""
    from memogrid_service.store.cache import ResultCache
    from tests.helpers.small_disk import fill, small_disk

    with small_disk(tmp_path / "data") as disk:
        writer = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import os, sys, time, numpy as np\n"
                "from memogrid_service.store.cache import ResultCache\n"
                f"cache = ResultCache({str(disk / 'cache')!r})\n"
                "for i in range(30):\n"
                "    assert cache.set(f'k{i}', np.full(10_000, i, dtype=np.float64))\n"
                + {
                    "stopped": "cache.close()\n",
                    "killed": "os._exit(0)\n",
                    "running": "print('ready', flush=True)\ntime.sleep(120)\n",
                }[service],
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            if service == "running":
                assert writer.stdout.readline().strip() == "ready"
            else:
                assert writer.wait(60) == 0
            fill(disk)
            env = {"MEMOGRID_DATA_DIR": str(disk)}
            pruned = run("cache", "prune", "--max-size", "500K", env=env)
            assert pruned.returncode == 0, pruned.stderr
            assert "could not be opened" in pruned.stdout, pruned.stdout
            assert "the disk holding it has 0 bytes free" in pruned.stdout, pruned.stdout
            assert "least recently used first" in pruned.stdout
            assert not re.search(r"removed 0 value files", pruned.stdout), pruned.stdout
            cache = ResultCache(disk / "cache")
            try:
                assert cache.usable and cache.volume() <= 500 * 1024
                assert cache.get("k29") is not None and cache.get("k0") is None  # LRU order
                assert cache.set("after", np.arange(10.0))
            finally:
                cache.close()
        finally:
            writer.kill()
            writer.wait()


def test_cache_stats_on_a_full_disk_names_the_free_space(tmp_path):
    from memogrid_service.store.cache import ResultCache
    from tests.helpers.small_disk import fill, small_disk

    with small_disk(tmp_path / "data") as disk:
        ResultCache(disk / "cache").close()
        fill(disk)
        stats = run("cache", "stats", env={"MEMOGRID_DATA_DIR": str(disk)})
        assert stats.returncode == 1 and "cannot be opened" in stats.stderr
        assert "the disk holding it has 0 bytes free" in stats.stderr, stats.stderr


def test_parse_size():
    assert parse_size("500") == 500
    assert parse_size("2K") == 2048 and parse_size("1.5G") == int(1.5 * 2**30)
    assert parse_size("3MiB") == 3 * 2**20
    import argparse

    with pytest.raises(argparse.ArgumentTypeError):
        parse_size("lots")


@pytest.mark.slow
def test_jobs_commands_against_a_server(tmp_path):
    from sklearn.linear_model import LogisticRegression

    from memogrid import Client
    from tests.e2e.server import Server

    with Server(tmp_path / "data", workers=1) as server, Client(server.url, server.token) as client:
        X = np.random.RandomState(0).normal(size=(60, 3))
        y = (X[:, 0] > 0).astype(int)
        job = client.submit(LogisticRegression(), {"C": [0.1, 1.0]}, X, y, cv=3)
        job.wait(progress=False)
        # the token from the environment, as a user sets it
        listed = run("jobs", "list", "--url", server.url, env={"MEMOGRID_TOKEN": server.token})
        assert listed.returncode == 0 and job.id in listed.stdout and "succeeded" in listed.stdout
        row = next(line for line in listed.stdout.splitlines() if job.id in line)
        assert re.search(r"  \d{4}-\d\d-\d\d \d\d:\d\d:\d\d  ", row), row  # to the second
        shown = run("jobs", "show", job.id, "--url", server.url, "--token", server.token)
        assert '"state": "succeeded"' in shown.stdout
        cancelled = run("jobs", "cancel", job.id, "--url", server.url, "--token", server.token)
        unauthorized = run("jobs", "list", "--url", server.url, "--token", "mg_nope_nope")
        assert unauthorized.returncode == 1 and "token" in unauthorized.stderr
        assert cancelled.returncode == 1 and "cannot cancel" in cancelled.stderr
        deleted = run("jobs", "delete", job.id, "--url", server.url, "--token", server.token)
        assert deleted.returncode == 0 and f"job {job.id} deleted" in deleted.stdout
        again = run("jobs", "show", job.id, "--url", server.url, "--token", server.token)
        assert again.returncode == 1 and "not found" in again.stderr


def test_tokens(tmp_path):
    env = {"MEMOGRID_DATA_DIR": str(tmp_path), "MEMOGRID_DATABASE_URL": ""}
    # no database there (a mistyped directory): nothing is made, nothing printed
    missing = run("token", "create", "dana", env=env)
    assert missing.returncode == 1 and "no memogrid database at" in missing.stderr
    assert missing.stdout == "" and not list(tmp_path.iterdir())
    stats = run("cache", "stats", env=env)
    assert stats.returncode == 1 and "no result cache at" in stats.stderr
    assert not list(tmp_path.iterdir())
    assert run("migrate", "upgrade", env=env).returncode == 0
    created = run("token", "create", "dana", "--name", "ci", "--expires-days", "1", env=env)
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("mg_") and "shown once" in created.stderr
    listed = run("token", "list", env=env)
    token_id = token.split("_")[1]
    assert token_id in listed.stdout and "dana" in listed.stdout and "active" in listed.stdout
    assert token not in listed.stdout  # never shown again
    # revoked by the whole token too: its secret is not printed back
    revoked = run("token", "revoke", token, env=env)
    assert revoked.returncode == 0 and revoked.stdout.strip() == f"revoked {token_id}"
    assert "revoked" in run("token", "list", env=env).stdout
    again = run("token", "revoke", token, env=env)
    assert again.returncode == 1 and again.stderr.startswith("memogrid: error:")
    assert token not in again.stderr and token_id in again.stderr
    assert run("token", "create", env=env).returncode == 1
    # a lifetime is positive (0 made a token that never expired, -1 a dead one)
    for days in ("0", "-1", "nan", "inf", "1e300"):
        refused = run("token", "create", "erin", "--expires-days", days, env=env)
        assert refused.returncode == 1 and "positive number of days" in refused.stderr
    assert "erin" not in run("token", "list", env=env).stdout
    # an expired token is listed so
    short = run("token", "create", "fay", "--expires-days", "0.00001", env=env).stdout.strip()
    time.sleep(1.0)
    line = [x for x in run("token", "list", env=env).stdout.splitlines() if "fay" in x]
    assert len(line) == 1 and line[0].split()[-1] == "expired", line
    assert short.split("_")[1] in line[0]


@pytest.fixture
def in_process(monkeypatch, capsys):
    """``memogrid ...`` run in this process (no interpreter to start): the
    exit code and its one line on stderr. The settings it writes to the
    environment are put back afterwards."""
    from memogrid_service.settings import get_settings

    for name in ("MEMOGRID_DATA_DIR", "MEMOGRID_DATABASE_URL", "MEMOGRID_N_WORKERS"):
        # recorded as it is (delenv alone records nothing if it is unset), then
        # unset: put back afterwards whatever `memogrid ...` sets it to
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)

    def call(*args: str) -> tuple[int, str]:
        code = main(list(args))
        return code, capsys.readouterr().err

    yield call
    get_settings.cache_clear()


def test_a_database_url_memogrid_cannot_run_on_is_named_at_once(in_process, tmp_path):
    """Three said SQLAlchemy's words without the setting, and an in-memory
    SQLite database (each connection its own) failed the service's start
    in a traceback: 'no such table'."""
    from memogrid_service.settings import Settings

    for url, said in (
        ("garbage", "is no database URL such as sqlite:///"),
        ("mysql://root@localhost/db", "memogrid runs on sqlite:///"),
        ("sqlite://", "an in-memory SQLite database"),
        ("sqlite:///:memory:", "an in-memory SQLite database"),
    ):
        code, err = in_process("migrate", "upgrade", "--database-url", url)
        assert code == 1 and "MEMOGRID_DATABASE_URL (--database-url)" in err and said in err, err
        assert len(err.splitlines()) == 1
    # the PostgreSQL URL most write takes the driver memogrid installs
    pg = Settings(database_url="postgres://u:p%40ss@db:5432/mg").database_url
    assert pg == "postgresql+psycopg://u:p%40ss@db:5432/mg"


def test_tokens_name_their_users_unambiguously_and_leave_the_schema_as_it_is(in_process, tmp_path):
    """'alice ' was a second alice, a newline in a name forged a row of
    `token list`, and `token list` of a newer memogrid upgraded the schema
    under an older service still running on it."""
    from memogrid_service.db import migrate
    from memogrid_service.db.session import Database

    os.environ["MEMOGRID_DATA_DIR"] = str(tmp_path)
    assert in_process("migrate", "upgrade")[0] == 0
    for user in ("alice ", "   ", "eve\nadmin", "x" * 129):
        code, err = in_process("token", "create", user)
        assert code == 1 and "a user name is at most 128 printable" in err, err
    code, err = in_process("token", "create", "alice", "--name", "ci\n0123 admin")
    assert code == 1 and "a token's name is at most 128" in err
    assert in_process("token", "create", "bob@example.com", "--name", "my laptop")[0] == 0
    db = Database(f"sqlite:///{tmp_path / 'memogrid.db'}")
    try:
        older = sorted(
            r.revision
            for r in migrate.ScriptDirectory.from_config(migrate.alembic_config()).walk_revisions()
        )[-2]
        migrate.command.downgrade(migrate.alembic_config(db.write_engine), older)
        assert migrate.current(db.write_engine) == older
        code, err = in_process("token", "list")
        assert code == 1 and "run `memogrid migrate upgrade` first" in err, err
        assert migrate.current(db.write_engine) == older
    finally:
        db.dispose()


def test_serve_refuses_a_data_dir_it_would_fail_in(in_process, tmp_path):
    """A file where the service keeps a directory stopped it in a start-up
    traceback; a mistyped --data-dir beside a database of datasets started,
    and failed every queued job: 'unknown dataset id'."""
    from datetime import UTC, datetime

    from memogrid_service.db.models import Dataset
    from memogrid_service.db.session import Database

    data = tmp_path / "data"
    for name, said in (
        ("datasets", "is in the way: the service keeps a directory there"),
        ("estimators", "is in the way"),
        ("admin-token/", "is a directory: the service writes its token there"),
    ):
        data.mkdir(exist_ok=True)
        path = data / name.rstrip("/")
        path.mkdir() if name.endswith("/") else path.write_text("")
        code, err = in_process("serve", "--port", "1", "--data-dir", str(data))
        assert code == 1 and said in err, err
        path.rmdir() if name.endswith("/") else path.unlink()
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    assert in_process("migrate", "upgrade", "--database-url", url)[0] == 0
    db = Database(url)
    with db.write() as s:
        s.add(
            Dataset(
                id="d" * 64,
                kind="array",
                shape=[3],
                dtype="<f8",
                columns=None,
                size=24,
                created_at=datetime.now(UTC),
            )
        )
    db.dispose()
    typo = tmp_path / "typo"
    code, err = in_process("serve", "--port", "1", "--data-dir", str(typo), "--database-url", url)
    assert code == 1 and "the database records datasets but" in err and "typo" in err, err
    assert not (typo / "datasets").exists()


def test_the_admin_token_is_written_before_it_is_kept(tmp_path):
    """A first start that could not write admin-token (a directory in its
    way) kept the token: no later start wrote one, and no one had it."""
    from memogrid_service.api.auth import ensure_admin_token, list_tokens
    from memogrid_service.db import migrate
    from memogrid_service.db.session import Database

    db = Database(f"sqlite:///{tmp_path / 'memogrid.db'}")
    try:
        migrate.upgrade(db.write_engine)
        blocked = tmp_path / "admin-token"
        blocked.mkdir()
        with pytest.raises(OSError):
            ensure_admin_token(db, blocked)
        assert list_tokens(db) == []
        blocked.rmdir()
        assert ensure_admin_token(db, blocked) == blocked
        assert blocked.read_text().startswith("mg_") and len(list_tokens(db)) == 1
    finally:
        db.dispose()


@pytest.mark.slow
def test_the_demo_runs_on_a_service_of_its_own_and_each_cold_run_is_cold(
    monkeypatch, capsys, tmp_path
):
    """The demo's temporary service took MEMOGRID_DATABASE_URL from the
    shell (and failed the queued jobs it found there), and a second demo
    on one service called a run of cache hits cold."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    from memogrid_service import demo

    operators = tmp_path / "operators.db"
    monkeypatch.setenv("MEMOGRID_DATABASE_URL", f"sqlite:///{operators}")

    def small(random_state=42):
        from sklearn.datasets import make_classification

        X, y = make_classification(n_samples=200, n_features=20, random_state=random_state)
        pipe = Pipeline([("pca", PCA()), ("logistic", LogisticRegression())])
        return pipe, {"pca__n_components": [2, 5], "logistic__C": [0.1, 1.0]}, X, y

    monkeypatch.setattr(demo, "seed_workload", small)
    with demo.temporary_service() as (url, token):
        demo._run(url, token)
        demo._run(url, token)
    out = capsys.readouterr().out
    cold = re.findall(r"cold run .* fits +(\d+) +cache hits +(\d+)", out)
    warm = re.findall(r"warm run .* fits +(\d+) +cache hits +(\d+)", out)
    assert len(cold) == len(warm) == 2, out
    assert all(int(fits) > 0 and hits == "0" for fits, hits in cold), out
    assert all(fits == "0" and int(hits) > 0 for fits, hits in warm), out
    assert not operators.exists()
