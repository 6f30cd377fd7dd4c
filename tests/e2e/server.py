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
        self.data_dir = data_dir
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = data_dir.parent / f"serve-{self.port}.log"
        full_env = {**os.environ, "MEMOGRID_DATA_DIR": str(data_dir), **(env or {})}
        full_env.setdefault("MEMOGRID_N_WORKERS", str(workers))
        full_env.pop("MEMOGRID_TEST_FIT_LOG", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "memogrid_service.cli", "serve", "--port", str(self.port)],
            env=full_env,
            cwd=ROOT,
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
        )

    @property
    def token(self) -> str:
        """The admin token the service wrote on its first start."""
        return (self.data_dir / "admin-token").read_text().strip()

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


DASK = str(Path(sys.executable).with_name("dask"))


class DaskProcesses:
    """A real ``dask scheduler`` and ``n`` single-threaded ``dask worker`` processes."""

    def __init__(
        self,
        workdir: Path,
        n_workers: int = 2,
        env: dict[str, str] | None = None,
        nanny: bool = False,
        port: int = 0,
        scheduler_args: tuple[str, ...] = (),
        scheduler_log: Path | None = None,
    ):
        self.nanny = nanny
        self.scheduler_args = scheduler_args
        self.scheduler_log = scheduler_log  # its stderr (dask logs there), else dropped
        self.port = port  # the scheduler's (0: any free one)
        self.sched_file = workdir / "scheduler.json"
        self.env = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
        self.n_workers = n_workers
        self.procs: list[subprocess.Popen] = []
        self.address = ""

    def _spawn(self, *args: str, log: Path | None = None) -> subprocess.Popen:
        with open(log or os.devnull, "wb") as err:
            p = subprocess.Popen([DASK, *args], env=self.env, stdout=err, stderr=err)
        self.procs.append(p)
        return p

    def start(self) -> str:
        import json

        self._spawn(
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--no-dashboard",
            "--scheduler-file",
            str(self.sched_file),
            *self.scheduler_args,
            log=self.scheduler_log,
        )
        deadline = time.monotonic() + 60
        while not self.sched_file.exists():
            if time.monotonic() > deadline:
                raise RuntimeError("dask scheduler did not start")
            time.sleep(0.1)
        for _ in range(self.n_workers):
            self.add_worker()
        self.address = json.loads(self.sched_file.read_text())["address"]
        return self.address

    def add_worker(self) -> None:
        self._spawn(
            "worker",
            "--scheduler-file",
            str(self.sched_file),
            "--nthreads",
            "1",
            "--no-dashboard",
            "--nanny" if self.nanny else "--no-nanny",
        )

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def __enter__(self) -> DaskProcesses:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
