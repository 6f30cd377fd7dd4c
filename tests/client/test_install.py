"""The client installs alone, without the service's dependencies."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_client_installs_alone_in_a_fresh_venv(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run(
        [str(py), "-m", "pip", "install", "--quiet", str(ROOT)],
        check=True,
        capture_output=True,
    )
    code = (
        "import importlib.util as u, sys\n"
        "from memogrid import Client, GridSearchCV, RandomizedSearchCV, MemogridError\n"
        "import memogrid.client, memogrid.search, memogrid.wire, memogrid.data\n"
        "missing = [m for m in ('fastapi', 'dask', 'distributed', 'sqlalchemy', 'alembic',\n"
        "           'uvicorn', 'diskcache') if u.find_spec(m) is not None]\n"
        "assert not missing, missing\n"
        "print('ok')\n"
    )
    out = subprocess.run([str(py), "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    # nothing with a generic name lands in site-packages
    site = next((venv / "lib").glob("python3*/site-packages"))
    ours = {p.name for p in site.iterdir() if p.name.startswith(("memogrid", "client", "service"))}
    assert {n for n in ours if not n.endswith(".dist-info")} == {"memogrid", "memogrid_service"}
    assert not (site / "client").exists() and not (site / "service").exists()
    assert not (site / "tests").exists() and not (site / "app").exists()
