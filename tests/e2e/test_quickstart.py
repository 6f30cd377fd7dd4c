"""The README's first command, as a new user runs it: from a clean clone."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import httpx
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from memogrid import Client
from tests.e2e.server import ROOT, free_port

pytestmark = pytest.mark.slow


def test_serve_script_from_a_clean_clone(tmp_path):
    clone = tmp_path / "memogrid"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEMOGRID_", "VIRTUAL_ENV"))}
    env["MEMOGRID_N_WORKERS"] = "1"
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        ["bash", "scripts/serve.sh", "--port", str(port)],
        cwd=clone,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 900  # the first run installs everything
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the service never became healthy"
            try:
                if httpx.get(f"{url}/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        text = (tmp_path / "serve.log").read_text()
        assert f"http://127.0.0.1:{port}" in text and "/v1/docs" in text
        X = np.random.RandomState(0).normal(size=(80, 4))
        y = (X[:, 0] + X[:, 1] > 0).astype(int)
        token = (clone / "data" / "admin-token").read_text().strip()
        assert (clone / "data" / "admin-token").stat().st_mode & 0o777 == 0o600
        assert "admin-token" in text
        with Client(url, token) as client:
            job = client.submit(LogisticRegression(), {"C": [0.1, 1.0, 10.0]}, X, y, cv=3)
            job.wait(timeout=120, progress=False)
            assert job.best_params_ in ({"C": 0.1}, {"C": 1.0}, {"C": 10.0})
        # embedded defaults: a SQLite file and the cache under ./data of the clone
        assert (clone / "data" / "memogrid.db").exists()
        assert (clone / "data" / "cache").is_dir()
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode in (0, -signal.SIGINT, 130)
