"""Connecting the engine to dask.distributed.

By default an in-process ``LocalCluster``; given an address, an external
scheduler whose workers can import ``memogrid_service`` and see the same
dataset store and cache paths.
"""

from __future__ import annotations

from typing import Any

#: Default shape, chosen by measurement (see benchmarks/cluster_shape.py):
#: one worker process per core, one thread each, BLAS capped to one thread
#: per task.
DEFAULT_PROCESSES = True


def make_client(
    address: str | None = None,
    *,
    n_workers: int | None = None,
    threads_per_worker: int | None = None,
    processes: bool | None = None,
) -> Any:
    """A dask client: on ``address`` if given, else on a new LocalCluster."""
    from distributed import Client, LocalCluster

    if address:
        return Client(address)
    import os

    cores = os.cpu_count() or 1
    processes = DEFAULT_PROCESSES if processes is None else processes
    if processes:
        n_workers = n_workers or cores
        threads_per_worker = threads_per_worker or 1
    else:
        n_workers = n_workers or 1
        threads_per_worker = threads_per_worker or cores
    cluster = LocalCluster(
        n_workers=n_workers,
        threads_per_worker=threads_per_worker,
        processes=processes,
        dashboard_address=None,
    )
    return Client(cluster)


def close_client(client: Any) -> None:
    """Close a client and, if :func:`make_client` started it, its cluster."""
    cluster = getattr(client, "cluster", None)
    client.close()
    if cluster is not None:
        cluster.close()
