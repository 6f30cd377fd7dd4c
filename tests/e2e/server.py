"""A real ``memogrid serve`` process on loopback, for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``memogrid serve`` in a subprocess; ``url`` once healthy."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None, workers: int = 2):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = data_dir.parent / f"serve-{self.port}.log"
        full_env = dict(os.environ, MEMOGRID_DATA_DIR=str(data_dir), **(env or {}))
        full_env.setdefault("MEMOGRID_N_WORKERS", str(workers))
        full_env.pop("MEMOGRID_TEST_FIT_LOG", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "memogrid_service.cli", "serve", "--port", str(self.port)],
            env=full_env,
            cwd=ROOT,
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
        )

    def wait_healthy(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/v1/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server not healthy in {timeout} s: {self.log.read_text()[-3000:]}")

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)

    def __enter__(self) -> Server:
        self.wait_healthy()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
