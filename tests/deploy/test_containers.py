"""The Dockerfile and docker-compose.yml, checked for what the deployment needs.

Docker does not run on our machines; tests/e2e/test_topology.py runs the
same topology as processes. These tests pin the files' structure.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def env_example() -> dict[str, str]:
    out = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def test_compose_services_and_images():
    c = compose()
    services = c["services"]
    assert set(services) == {"postgres", "scheduler", "worker-1", "worker-2", "api"}
    assert services["postgres"]["image"].startswith("postgres:")
    # the API, the scheduler and every worker run the one memogrid image
    for name in ("api", "scheduler", "worker-1", "worker-2"):
        assert services[name]["image"] == "memogrid:latest"
        assert services[name]["build"]["context"] == "."
    sched = services["scheduler"]["command"]
    assert sched[:2] == ["dask", "scheduler"]
    assert sched[sched.index("--preload") + 1] == "memogrid_service.engine.nospans"
    for worker in ("worker-1", "worker-2"):
        cmd = services[worker]["command"]
        assert cmd[:3] == ["dask", "worker", "tcp://scheduler:8786"]
        assert cmd[cmd.index("--nthreads") + 1] == "1"


def test_data_volume_shared_at_one_path():
    c = compose()
    services = c["services"]
    mounts = {
        name: [v for v in services[name]["volumes"] if v.startswith("memogrid-data:")]
        for name in ("api", "worker-1", "worker-2")
    }
    assert all(m == ["memogrid-data:/data"] for m in mounts.values()), mounts
    for name in ("api", "worker-1", "worker-2"):
        assert services[name]["environment"]["MEMOGRID_DATA_DIR"] == "/data"
    assert {"memogrid-data", "pgdata"} <= set(c["volumes"])
    assert "pgdata:/var/lib/postgresql/data" in services["postgres"]["volumes"]


def test_health_checks_and_start_order():
    services = compose()["services"]
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert "8786" in " ".join(services["scheduler"]["healthcheck"]["test"])
    api = services["api"]
    assert api["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert api["depends_on"]["scheduler"]["condition"] == "service_healthy"
    for worker in ("worker-1", "worker-2"):
        assert services[worker]["depends_on"]["scheduler"]["condition"] == "service_healthy"
        # as in the default LocalCluster: no stack sampling taking CPU from fits
        assert services[worker]["environment"]["DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED"] in (
            "false",
            "False",
        )
    # migrate, then serve
    command = " ".join(api["command"])
    assert re.search(r"memogrid migrate upgrade && exec memogrid serve", command)


def test_dask_services_take_the_embedded_clusters_housekeeping():
    """The scheduler and workers read the intervals make_client sets in-process."""
    import dask.config
    from dask.utils import parse_timedelta

    from memogrid_service.engine.cluster import (
        PROMPT_STEALING,
        QUIET_HOUSEKEEPING,
        SHORT_MESSAGE_LOGS,
    )

    services = compose()["services"]
    for name in ("scheduler", "worker-1", "worker-2"):
        env = {k: str(v) for k, v in services[name]["environment"].items()}
        seen = dask.config.collect_env(env)
        for key, value in {**QUIET_HOUSEKEEPING, **PROMPT_STEALING}.items():
            got = dask.config.get(key, config=seen, default=None)
            assert got is not None, (name, key)
            assert parse_timedelta(got) == parse_timedelta(value), (name, key, got)
        for key, value in SHORT_MESSAGE_LOGS.items():
            assert dask.config.get(key, config=seen, default=None) == value, (name, key)


def test_api_environment_and_env_file():
    services = compose()["services"]
    env = services["api"]["environment"]
    assert env["MEMOGRID_SCHEDULER_ADDRESS"] == "tcp://scheduler:8786"
    # the password apart from the URL: "p@ss/w0rd" in it named host "ss"
    assert env["MEMOGRID_DATABASE_URL"] == "postgresql+psycopg://memogrid@postgres:5432/memogrid"
    assert env["MEMOGRID_DATABASE_PASSWORD"] == "${POSTGRES_PASSWORD}"
    assert services["api"]["ports"] == ["${MEMOGRID_PORT:-8000}:8000"]
    # every variable compose reads is documented in .env.example
    text = (ROOT / "docker-compose.yml").read_text()
    used = set(re.findall(r"\$\{([A-Z_]+)", text))
    assert used <= set(env_example()), used - set(env_example())
    assert ".env" in (ROOT / ".gitignore").read_text().split()


def test_dockerfile_key_lines():
    text = (ROOT / "Dockerfile").read_text()
    lines = [line.strip() for line in text.splitlines()]
    assert re.match(
        r"FROM python:3\.1[1-9]-slim",
        lines[next(i for i, x in enumerate(lines) if x.startswith("FROM"))],
    )
    # dependencies installed from pyproject alone, before the code is copied
    deps = text.index("COPY pyproject.toml")
    assert deps < text.index("pip install -r") < text.index("COPY service")
    assert "USER memogrid" in text and "useradd" in text
    assert "HEALTHCHECK" in text and "/v1/health" in text
    assert 'CMD ["memogrid", "serve"' in text
    # the image's dependency list is the project's
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "memogrid" in project["scripts"] and "service" in project["optional-dependencies"]


def test_workers_are_not_checked_on_the_apis_port():
    """The image's health check asks the API's port; a worker serves none,
    so compose would call every worker unhealthy after a minute."""
    services = compose()["services"]
    for worker in ("worker-1", "worker-2"):
        assert services[worker]["healthcheck"] == {"disable": True}


def test_the_images_dask_config_is_the_embedded_clusters():
    """What make_client sets that DASK_* variables cannot carry (dask
    lowercases names; glibc reads MALLOC_TRIM_THRESHOLD_ in capitals) is in
    deploy/dask.yaml, which the image puts where dask reads its config; and
    the dashboard compose publishes has what it needs to draw."""
    import dask.config

    from memogrid_service.engine.cluster import BANDWIDTH, WORKER_MALLOC_ENV

    config = yaml.safe_load((ROOT / "deploy" / "dask.yaml").read_text())
    assert dask.config.get("distributed.scheduler.bandwidth", config=config) == BANDWIDTH
    assert dask.config.get("distributed.nanny.pre-spawn-environ", config=config) == (
        WORKER_MALLOC_ENV
    )
    assert "/etc/dask" in dask.config.paths
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^COPY deploy/dask\.yaml /etc/dask/\S+\.yaml$", text, re.M)
    assert "['optional-dependencies']['dashboard']" in text
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert any(d.startswith("bokeh") for d in project["optional-dependencies"]["dashboard"])
