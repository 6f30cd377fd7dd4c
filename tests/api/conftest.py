"""The real ASGI app on a real database (SQLite file and PostgreSQL), per test."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient

from memogrid_service.api.app import create_app
from memogrid_service.settings import Settings

NPY = {"content-type": "application/x-npy"}
PARQUET = {"content-type": "application/vnd.apache.parquet"}


def npy_bytes(arr) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def parquet_bytes(df) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf)
    return buf.getvalue()


def upload(api, value) -> str:
    if hasattr(value, "columns"):
        r = api.post("/v1/datasets", content=parquet_bytes(value), headers=PARQUET)
    else:
        r = api.post("/v1/datasets", content=npy_bytes(value), headers=NPY)
    assert r.status_code in (200, 201), r.text
    return r.json()["id"]


def wait_job(api, job_id: str, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = api.get(f"/v1/jobs/{job_id}")
        assert r.status_code == 200, r.text
        body = r.json()
        if body["state"] in ("succeeded", "failed", "cancelled"):
            return body
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s: {body}")


@pytest.fixture
def settings(tmp_path, db_url):
    return Settings(
        data_dir=tmp_path / "data",
        database_url=db_url,
        upload_max_bytes=8 << 20,
        grid_max_fits=2_000,
    )


@pytest.fixture
def api(settings, dask_client):
    app = create_app(settings, dask_client=dask_client)
    with TestClient(app, raise_server_exceptions=True) as client:
        yield client
