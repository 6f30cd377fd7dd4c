"""The real ASGI app on a real database (SQLite file and PostgreSQL), per test."""

from __future__ import annotations

import io
import time

import numpy as np

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
