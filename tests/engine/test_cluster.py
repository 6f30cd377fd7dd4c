"""The embedded LocalCluster: open to the service alone."""

from __future__ import annotations

import httpx
import pytest


def test_the_embedded_cluster_admits_only_the_service(dask_client):
    """Its scheduler and workers listened on loopback TCP with no
    credentials: any local account could connect a dask client and run code
    as the service (client.run), reading every user's data and results; and
    they served task and worker pages over HTTP. Now mutual TLS with a
    certificate made for this cluster, and no pages."""
    from distributed import Client

    address = dask_client.scheduler.address
    assert address.startswith("tls://127.0.0.1:")
    for attempt in (address, address.replace("tls://", "tcp://")):
        with pytest.raises((OSError, TypeError, ValueError)):
            Client(attempt, timeout=3).close()
    # the service itself still runs code there
    assert set(dask_client.run(lambda: 1).values()) == {1}
    info = dask_client.scheduler_info()
    ports = [info["services"].get("dashboard")]
    ports += [w["services"].get("dashboard") for w in info["workers"].values()]
    assert ports[0], info["services"]  # the scheduler serves HTTP, with nothing on it
    for port in filter(None, ports):
        for page in ("/health", "/info/main/workers.html", "/metrics"):
            assert httpx.get(f"http://127.0.0.1:{port}{page}").status_code == 404
