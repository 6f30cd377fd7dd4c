"""SQLite with concurrent writers: 20 clients submitting and polling at once."""

from __future__ import annotations

import threading

import httpx
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from memogrid import Client
from tests.e2e.server import Server

pytestmark = pytest.mark.slow


def test_twenty_concurrent_submits_and_polls_on_sqlite(tmp_path):
    env = {"MEMOGRID_USER_MAX_ACTIVE_JOBS": "100", "MEMOGRID_MAX_CONCURRENT_JOBS": "4"}
    rng = np.random.RandomState(0)
    X = rng.normal(size=(120, 4))
    y = (X[:, 0] > 0).astype(int)
    with Server(tmp_path / "data", env) as server:
        with Client(server.url, server.token) as setup:
            xid, yid = setup.upload(X), setup.upload(y)
        statuses: list[int] = []
        states: list[str] = []
        errors: list[BaseException] = []
        lock = threading.Lock()

        def user(i: int) -> None:
            try:
                with Client(server.url, server.token) as client:
                    # submits write, polls read, listings read: all at once
                    job = client.submit(
                        LogisticRegression(), {"C": [0.1 * (i + 1)]}, xid, yid, cv=3
                    )
                    for _ in range(5):
                        client.jobs(limit=10)
                    job.wait(timeout=120, progress=False)
                    with lock:
                        states.append(job.state)
            except BaseException as exc:  # noqa: BLE001 - collected and asserted below
                with lock:
                    errors.append(exc)

        # raw polls too, counting every status code
        def poller() -> None:
            with httpx.Client(
                base_url=server.url, headers={"authorization": f"Bearer {server.token}"}
            ) as http:
                for _ in range(60):
                    r = http.get("/v1/jobs", params={"limit": 5})
                    with lock:
                        statuses.append(r.status_code)

        threads = [threading.Thread(target=user, args=(i,)) for i in range(20)]
        threads += [threading.Thread(target=poller) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(180)
        assert not errors, errors
        assert states == ["succeeded"] * 20
        assert set(statuses) == {200}
        log = server.log.read_text()
    assert "database is locked" not in log and "Traceback" not in log
