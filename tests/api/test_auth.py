"""Tokens, ownership and limits: every object belongs to its owner."""

from __future__ import annotations

import time
from datetime import timedelta

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from memogrid_service.api.app import create_app
from memogrid_service.api.auth import create_token, list_tokens, revoke_token
from memogrid_service.db.models import Token
from tests.api.conftest import NPY, npy_bytes, upload, wait_job

SPEC = {"class": "sklearn.linear_model.LogisticRegression"}


def _requests(schema):
    """One request per operation of the schema, with well-formed dummy ids."""
    for path, ops in schema["paths"].items():
        url = path.replace("{dataset_id}", "a" * 64).replace("{job_id}", "b" * 32)
        for method in ops:
            yield method.upper(), url, path


def test_every_route_but_health_and_docs_needs_a_token(api):
    schema = api.get("/v1/openapi.json").json()
    assert "HTTPBearer" in schema["components"]["securitySchemes"]
    anonymous = TestClient(api.app)
    checked = 0
    for method, url, path in _requests(schema):
        params = {"param": "x", "value": "1"} if path == "/v1/results" else None
        r = anonymous.request(method, url, params=params)
        if path == "/v1/health":
            assert r.status_code == 200
            continue
        assert r.status_code == 401, (method, url, r.status_code)
        assert r.headers["www-authenticate"].startswith("Bearer")
        if method != "HEAD":
            assert "token" in r.json()["detail"]
        checked += 1
    assert checked >= 14
    assert anonymous.get("/v1/docs").status_code == 200
    assert anonymous.get("/v1/openapi.json").status_code == 200


def test_tokens_are_hashed_expire_and_revoke(api, settings):
    db = api.app.state.services.db
    admin = settings.admin_token_file
    assert admin.stat().st_mode & 0o777 == 0o600
    raw = admin.read_text().strip()
    assert raw.startswith("mg_")
    with db.read() as s:
        rows = s.scalars(select(Token)).all()
    assert rows and all(raw.split("_", 2)[2] not in (t.secret_hash, t.id) for t in rows)

    def status(token):
        return TestClient(api.app).get("/v1/jobs", headers={"authorization": f"Bearer {token}"})

    carol = create_token(db, "carol", name="laptop")
    assert status(carol).status_code == 200
    # a wrong secret for a real id, garbage, another scheme
    token_id = carol.split("_")[1]
    assert status(f"mg_{token_id}_{'x' * 43}").status_code == 401
    assert status("garbage").status_code == 401
    basic = TestClient(api.app).get("/v1/jobs", headers={"authorization": "Basic YTpi"})
    assert basic.status_code == 401
    # the shared cache's figures move with everyone's searches: the admin's
    r = TestClient(api.app).get("/v1/cache", headers={"authorization": f"Bearer {carol}"})
    assert r.status_code == 403 and "admin token" in r.json()["detail"], r.text
    assert api.get("/v1/cache").status_code == 200
    assert revoke_token(db, carol) and status(carol).status_code == 401
    assert not revoke_token(db, carol)  # already revoked
    short = create_token(db, "carol", expires_in=timedelta(seconds=1))
    assert status(short).status_code == 200
    time.sleep(1.2)
    assert status(short).status_code == 401
    listed = {t["id"]: t for t in list_tokens(db)}
    assert listed[token_id]["revoked"] and listed[token_id]["user"] == "carol"
    assert listed[token_id]["last_used_at"] is not None


def test_two_users_never_see_each_others_objects(api, api_as, settings):
    X = np.random.RandomState(0).normal(size=(60, 3))
    y = (X[:, 0] > 0).astype(int)
    xid, yid = upload(api, X), upload(api, y)
    r = api.post(
        "/v1/jobs",
        json={"estimator": SPEC, "param_grid": {"C": [1.0, 2.0]}, "X": xid, "y": yid, "cv": 3},
    )
    job = r.json()["id"]
    assert wait_job(api, job)["state"] == "succeeded"

    bob = api_as("bob")
    # every route answers 404 for alice's objects, never 403
    for method, url in [
        ("HEAD", f"/v1/datasets/{xid}"),
        ("GET", f"/v1/datasets/{xid}"),
        ("DELETE", f"/v1/datasets/{xid}"),
        ("GET", f"/v1/jobs/{job}"),
        ("GET", f"/v1/jobs/{job}/results"),
        ("GET", f"/v1/jobs/{job}/splits"),
        ("GET", f"/v1/jobs/{job}/estimator"),
        ("POST", f"/v1/jobs/{job}/cancel"),
    ]:
        assert bob.request(method, url).status_code == 404, (method, url)
    assert bob.get("/v1/jobs").json()["items"] == []
    assert bob.get("/v1/jobs", params={"dataset": xid}).json()["items"] == []
    # not his: a 404 as every other route's, not an empty board
    assert bob.get(f"/v1/datasets/{xid}/leaderboard").status_code == 404
    assert bob.get(f"/v1/datasets/{'0' * 64}/leaderboard").status_code == 404
    assert bob.get("/v1/results", params={"param": "C", "value": "1.0"}).json() == []
    # bob cannot run a job on alice's data by naming its id
    r = bob.post(
        "/v1/jobs", json={"estimator": SPEC, "param_grid": {"C": [1.0]}, "X": xid, "y": yid}
    )
    assert r.status_code == 422 and "unknown dataset" in r.json()["detail"]

    # bob uploads the same content: it is his now too (201), alice's stays hers
    r = bob.post("/v1/datasets", content=npy_bytes(X), headers=NPY)
    assert r.status_code == 201 and r.json()["id"] == xid
    assert bob.get(f"/v1/datasets/{xid}/leaderboard").json() == []
    assert bob.delete(f"/v1/datasets/{xid}").status_code == 204
    assert api.head(f"/v1/datasets/{xid}").status_code == 200
    assert (settings.datasets_dir / f"{xid}.npy").exists()
    # alice's own listings are unchanged
    assert [j["id"] for j in api.get("/v1/jobs").json()["items"]] == [job]
    assert len(api.get(f"/v1/datasets/{xid}/leaderboard").json()) == 2
    # her finished jobs' rows outlive her copy of the data
    assert api.delete(f"/v1/datasets/{xid}").status_code == 204
    assert len(api.get(f"/v1/datasets/{xid}/leaderboard").json()) == 2


@pytest.fixture
def limited(settings, dask_client):
    settings.user_max_active_jobs = 1
    settings.rate_limit_per_minute = 30
    settings.user_max_bytes = 3000
    app = create_app(settings, dask_client=dask_client, start_runner=False)
    with TestClient(app) as client:
        token = settings.admin_token_file.read_text().strip()
        client.headers["authorization"] = f"Bearer {token}"
        yield client


def test_limits(limited):
    X = np.zeros((100, 2))  # 1600 bytes of data
    xid = upload(limited, X)
    yid = upload(limited, np.zeros(100, dtype=np.int8))
    # total bytes per user: a third upload goes past 3000 bytes
    r = limited.post("/v1/datasets", content=npy_bytes(np.ones((100, 2))), headers=NPY)
    assert r.status_code == 413 and "quota" in r.json()["detail"]
    body = {"estimator": SPEC, "param_grid": {"C": [1.0]}, "X": xid, "y": yid, "cv": 2}
    # concurrent jobs per user: the runner is off, so the first stays queued
    assert limited.post("/v1/jobs", json=body).status_code == 202
    r = limited.post("/v1/jobs", json=body)
    assert r.status_code == 429 and "queued or running" in r.json()["detail"]
    # request rate per token
    codes = [limited.get("/v1/jobs").status_code for _ in range(40)]
    assert 429 in codes
    r = limited.get("/v1/jobs")
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    # guessing tokens from one address is limited too
    guesses = [
        limited.get("/v1/jobs", headers={"authorization": f"Bearer mg_x{i}_y"}).status_code
        for i in range(40)
    ]
    assert guesses[0] == 401 and 429 in guesses


def test_limits_hold_under_concurrent_requests(settings, dask_client):
    """The quota and the running-jobs cap count requests made at the same
    moment (each checked under the user's lock, not against a stale count)."""
    from concurrent.futures import ThreadPoolExecutor

    settings.user_max_active_jobs = 3
    settings.user_max_bytes = 3000
    settings.user_max_uploads = 10  # all ten at once reach the quota's check
    app = create_app(settings, dask_client=dask_client, start_runner=False)
    with TestClient(app) as client:
        client.headers["authorization"] = f"Bearer {settings.admin_token_file.read_text().strip()}"
        bodies = [npy_bytes(np.full(120, float(i))) for i in range(10)]  # 1088 bytes each

        def put(body):
            return client.post("/v1/datasets", content=body, headers=NPY).status_code

        with ThreadPoolExecutor(10) as pool:
            codes = list(pool.map(put, bodies))
        assert sorted(codes) == [201, 201] + [413] * 8, codes  # 2 x 1088 <= 3000 < 3 x 1088
        held = [b for b, c in zip(bodies, codes, strict=True) if c == 201]
        xid = client.post("/v1/datasets", content=held[0], headers=NPY).json()["id"]
        yid = upload(client, (np.arange(120) % 2).astype(np.int8))
        X2 = client.post("/v1/datasets", content=npy_bytes(np.ones((60, 2))), headers=NPY)
        assert X2.status_code == 413  # 2 x 1088 + 120 (y) + 960 > 3000
        body = {"estimator": SPEC, "param_grid": {"C": [1.0]}, "X": xid, "y": yid, "cv": 2}
        with ThreadPoolExecutor(12) as pool:
            codes = list(
                pool.map(lambda _: client.post("/v1/jobs", json=body).status_code, range(12))
            )
        assert sorted(codes) == [202] * 3 + [429] * 9, codes


def test_checked_tokens_are_remembered_briefly(settings, dask_client):
    settings.auth_cache_seconds = 1.0
    app = create_app(settings, dask_client=dask_client, start_runner=False)
    with TestClient(app) as client:
        db = app.state.services.db
        token = create_token(db, "erin")
        headers = {"authorization": f"Bearer {token}"}
        assert client.get("/v1/jobs", headers=headers).status_code == 200
        revoke_token(db, token)
        # remembered for at most auth_cache_seconds, then refused
        assert client.get("/v1/jobs", headers=headers).status_code == 200
        time.sleep(1.1)
        assert client.get("/v1/jobs", headers=headers).status_code == 401


def test_the_rate_limiter_forgets_whom_it_has_nothing_against(monkeypatch):
    """A bucket per token and per address that sent a bad token, kept for
    good: every address ever seen stayed in memory."""
    from memogrid_service.api.auth import RateLimiter

    monkeypatch.setattr(RateLimiter, "SWEEP_AT", 16)
    now = [0.0]
    limiter = RateLimiter(60, clock=lambda: now[0])
    for _ in range(60):
        assert limiter.allow("busy") == 0.0
    assert limiter.allow("busy") > 0.0
    for i in range(1000):
        limiter.allow(f"failed:10.0.{i // 256}.{i % 256}")
    assert len(limiter._buckets) == 1001  # none has its bucket full again yet
    assert limiter.allow("busy") > 0.0  # still held to its limit
    now[0] = 61.0  # every bucket full again: as good as none
    for i in range(1000, 3000):
        limiter.allow(f"failed:10.1.{i // 256}.{i % 256}")
    assert len(limiter._buckets) < 2100
    assert limiter.allow("busy") == 0.0
