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
    import asyncio

    from distributed.comm import connect
    from distributed.security import Security

    async def identity(address: str, **connection_args) -> dict:
        comm = await connect(address, timeout=5, **connection_args)
        try:
            await comm.write({"op": "identity"})
            return await comm.read()
        finally:
            await comm.close()

    address = dask_client.scheduler.address
    assert address.startswith("tls://127.0.0.1:")
    own_certificate = Security.temporary().get_connection_args("client")
    for attempt, args in (
        (address, {}),  # no certificate
        (address.replace("tls://", "tcp://"), {}),  # no TLS
        (address, own_certificate),  # a certificate of one's own
    ):
        with pytest.raises((OSError, TypeError, ValueError)):
            asyncio.run(identity(attempt, **args))
    theirs = dask_client.security.get_connection_args("client")
    assert asyncio.run(identity(address, **theirs))["type"] == "Scheduler"
    # the service itself still runs code there
    assert set(dask_client.run(lambda: 1).values()) == {1}
    info = dask_client.scheduler_info()
    ports = [info["services"].get("dashboard")]
    ports += [w["services"].get("dashboard") for w in info["workers"].values()]
    assert ports[0], info["services"]  # the scheduler serves HTTP, with nothing on it
    for port in filter(None, ports):
        for page in ("/health", "/info/main/workers.html", "/metrics", "/status"):
            assert httpx.get(f"http://127.0.0.1:{port}{page}").status_code == 404


def test_the_embedded_scheduler_leaves_the_dashboard_port_alone():
    """Its HTTP server (empty) took dask's dashboard port, 8787, from an
    operator's own dashboard, and each further service on the host warned
    that the port was in use; it takes a port of its own on loopback now."""
    import warnings

    from memogrid_service.engine.cluster import close_client, make_client

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        client = make_client(n_workers=1)
    try:
        port = client.scheduler_info()["services"]["dashboard"]
        assert port != 8787
        assert not [w for w in caught if "already in use" in str(w.message)]
        host = client.cluster.scheduler.http_server._sockets
        assert all(s.getsockname()[0] == "127.0.0.1" for s in host.values())
    finally:
        close_client(client)


def test_the_embedded_scheduler_keeps_nothing_per_computation(dask_client):
    """dask's spans kept one span, and with it the computation's task groups,
    per computation for the scheduler's lifetime: about 1.2 per job, for as
    long as the service ran. Only its bounded history of the latest 100
    computations stays now."""
    import gc

    from distributed.scheduler import TaskGroup

    def alive() -> int:
        gc.collect()
        return sum(type(o) is TaskGroup for o in gc.get_objects())

    before = alive()
    for i in range(150):
        assert dask_client.submit(abs, -i, key=f"memogrid-span-test-{i}").result() == i
    assert alive() <= before + 100 + 10
    # both sides go without (a scheduler without spans fails each heartbeat
    # of a worker with them)
    assert "spans" not in dask_client.cluster.scheduler.extensions
    assert not any(dask_client.run(lambda dask_worker: "spans" in dask_worker.extensions).values())


def test_a_fit_holding_the_gil_is_not_taken_for_a_dead_worker(tmp_path):
    """The scheduler restarted a worker it had not heard from for its
    worker-ttl (5 minutes by default, here as short as dask allows: 10
    heartbeats, 5 s); a fit holding the GIL that long (a full SVD of
    large data) is silent all along, so it was restarted, ran again, and
    after dask's allowed failures the search failed. The embedded cluster
    now waits for it, whatever dask's configuration says."""
    import dask

    from memogrid_service.engine.cluster import close_client, make_client
    from tests.helpers.gil import hold_the_gil

    log = tmp_path / "starts"
    with dask.config.set({"distributed.scheduler.worker-ttl": "1s"}):
        client = make_client(n_workers=1)
    try:
        before = set(client.run(lambda: __import__("os").getpid()).values())
        pid = client.submit(hold_the_gil, 8, str(log), pure=False).result(timeout=60)
        assert log.read_text().split() == [str(pid)]  # it ran once, to its end
        assert set(client.run(lambda: __import__("os").getpid()).values()) == before
    finally:
        close_client(client)
