"""Connecting the engine to dask.distributed.

By default an in-process ``LocalCluster``; given an address, an external
scheduler whose workers can import ``memogrid_service`` and see the same
dataset store and cache paths.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

log = logging.getLogger(__name__)

#: Default shape, chosen by measurement (``python -m benchmarks.cluster_shape``
#: on the seed workload, 2 cores, best of 3 cold runs, serial limit 6.05 s):
#:
#: ====================================  ========  ===========
#: shape                                 cold      × limit
#: ====================================  ========  ===========
#: in-process, 2 threads, BLAS 1         6.88 s    1.14
#: 1 process × 2 threads, BLAS 1         8.15 s    1.35
#: 2 processes × 1 thread, BLAS 1        8.31 s    1.37
#: 2 processes × 1 thread, BLAS 2        14.68 s   2.43
#: ====================================  ========  ===========
#:
#: Threads are fastest but not correct: scikit-learn's liblinear and libsvm
#: draw from one process-wide random generator (``sklearn.svm._newrand``),
#: so two such fits running at once in threads of one process perturb each
#: other and the seed workload's split scores stopped matching
#: scikit-learn's. One single-threaded worker process per core keeps every
#: fit bit-identical to scikit-learn; BLAS is held to one thread per task
#: (oversubscription costs ~2x).
DEFAULT_PROCESSES = True

#: dask's periodic housekeeping, made less frequent. Measured on an idle
#: LocalCluster of two worker processes over 10 s: at dask's defaults the
#: scheduler and nannies (the service's own process) burn 0.080 of a core
#: and each worker 0.033 — 7 % of a 2-core machine taken from the fits
#: throughout a search; with these settings 0.014 and 0.005. The event loop
#: health tick (20 ms by default) was most of it; it only feeds the
#: "event loop unresponsive" warning, which it still does at 1 s. The
#: system monitor only feeds the dashboard. The memory monitor also
#: enforces the workers' memory limits, so it stays well under a second.
#: External schedulers and workers take the same values from the
#: environment (docker-compose.yml).
QUIET_HOUSEKEEPING = {
    "distributed.admin.tick.interval": "1s",
    "distributed.admin.system-monitor.interval": "2s",
    "distributed.worker.memory.monitor-interval": "500ms",
}

#: How many recent messages each of dask's batched streams keeps for
#: debugging (dask's default: 1,000 per stream, each up to 1 MB). Every
#: search's graph (its fold rows included) stayed in the service process
#: in them: +70 MB over 400 small searches, 1.2 MB more per search on
#: 20,000 rows. Set in the service process, where its client's streams are
#: (and an embedded scheduler's); docker-compose's scheduler and workers
#: take it from the environment.
SHORT_MESSAGE_LOGS = {"distributed.admin.low-level-log-length": 10}

#: The scheduler and workers serve no HTTP pages (dask's defaults: task
#: and worker details, metrics): nobody reads them here, and any local
#: account could. An external cluster is the operator's to configure.
NO_HTTP_ROUTES: dict[str, list[str]] = {
    "distributed.scheduler.http.routes": [],
    "distributed.worker.http.routes": [],
}

#: How often the scheduler looks for an idle worker to steal queued tasks
#: for (dask's default: 1 s). dask gives a ready task to the worker holding
#: its input, so when one step output feeds several fits they all queue on
#: one worker; stealing is what spreads them. Measured on the seed search
#: (cold, 6 alternating runs on two clusters in one process): median 5.20 s
#: at 1 s, 4.80 s at 100 ms (4.98 s and 4.99 s in a second pairing of
#: 100 ms against 25 ms: no gain below). The check is cheap when no worker
#: is idle. Applied to external schedulers through docker-compose's env.
PROMPT_STEALING = {"distributed.scheduler.work-stealing-interval": "100ms"}


#: dask's scheduler restarts a worker it has not heard from for
#: ``worker-ttl`` (5 minutes by default), and a worker running a fit that
#: holds the GIL cannot answer: scipy's eigh, lstsq and solve hold it for
#: their whole LAPACK call (its SVD did too, 3 s for a full-SVD PCA of
#: 16,000 x 1,000 rows, until the tasks let it go: nogil.py). A fit holding
#: it longer than the worker-ttl was restarted, ran again, and after dask's
#: allowed failures failed the search where scikit-learn's finishes. The
#: embedded cluster's workers are the service's child processes: one that
#: dies is seen at once (its nanny, its closed connections); one stopped or
#: deadlocked is restarted by the runner, which tells it from a busy one by
#: its CPU time (SearchRunner._check_frozen). docker-compose's scheduler is
#: set the same.
NO_WORKER_TTL = {"distributed.scheduler.worker-ttl": None}


#: seconds a connection to an external scheduler is tried for, at the
#: service's start and each time again while it is away
CONNECT_SECONDS = 5.0


def make_client(
    address: str | None = None,
    *,
    timeout: float | None = None,
    n_workers: int | None = None,
    threads_per_worker: int | None = None,
    processes: bool | None = None,
    worker_nice: int = 0,
) -> Any:
    """A dask client: on ``address`` if given, else on a new LocalCluster."""
    import dask
    from distributed import Client, LocalCluster

    dask.config.set(SHORT_MESSAGE_LOGS)  # before the client opens its streams
    if address:
        client = Client(address, timeout=timeout) if timeout else Client(address)
        threaded = {w: n for w, n in client.nthreads().items() if n > 1}
        if threaded:
            log.warning(
                "workers %s run several threads: concurrent liblinear/libsvm fits "
                "share one random generator per process and can lose bit-parity "
                "with scikit-learn; start them with --nthreads 1",
                sorted(threaded),
            )
        return client
    import os

    cores = os.cpu_count() or 1
    processes = DEFAULT_PROCESSES if processes is None else processes
    if processes:
        n_workers = n_workers or cores
        threads_per_worker = threads_per_worker or 1
    else:
        n_workers = n_workers or 1
        threads_per_worker = threads_per_worker or cores
    if processes:
        _worker_malloc_settings()
    # Between processes of one machine fold outputs move at GB/s, not the
    # 100 MB/s dask assumes: at that estimate it left one of two workers idle
    # for a quarter of the seed search rather than move a 20 MB fold output.
    dask.config.set({"distributed.scheduler.bandwidth": BANDWIDTH})
    # dask's statistical profiler samples every worker thread's stack 100
    # times a second for the dashboard's profile page. Measured on the seed
    # search: half of each worker's event-loop CPU, 0.3 s per worker per
    # search, taken from the fits on a machine whose cores all fit models.
    # No dashboard is served here; external workers take the same setting from
    # DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED (docker-compose sets it).
    dask.config.set({"distributed.worker.profile.enabled": False})
    dask.config.set(QUIET_HOUSEKEEPING)
    dask.config.set(PROMPT_STEALING)
    dask.config.set(NO_HTTP_ROUTES)
    dask.config.set(NO_WORKER_TTL)
    # Worker processes talk over loopback TCP, which any local account
    # could connect to and run code as the service (client.run) with every
    # user's data and results: mutual TLS with a certificate made for this
    # cluster alone (kept in memory, handed to the workers as they spawn)
    # shuts them out. Measured on the seed search: no slower.
    kwargs: dict[str, Any] = {}
    if processes:
        from distributed.security import Security

        kwargs = {"security": Security.temporary(), "protocol": "tls://"}
    # dask's "spans" keep one span per computation, and with it the
    # computation's task groups, for the scheduler's lifetime (dask/distributed
    # #7977): about 1.2 per job here, for as long as the service runs. Only
    # the dashboard reads them; scheduler and workers must both go without.
    from distributed.scheduler import DEFAULT_EXTENSIONS as SCHEDULER_EXTENSIONS
    from distributed.worker import DEFAULT_EXTENSIONS as WORKER_EXTENSIONS

    cluster = LocalCluster(
        n_workers=n_workers,
        threads_per_worker=threads_per_worker,
        processes=processes,
        # its HTTP server (which serves nothing: NO_HTTP_ROUTES) on a port of
        # its own: given None, dask took 8787, the port of an operator's own
        # dashboard, and each further service on the host warned of it
        dashboard_address="127.0.0.1:0",
        # no dashboard (given an address, dask serves its bokeh one if installed)
        scheduler_kwargs={"extensions": _without_spans(SCHEDULER_EXTENSIONS), "dashboard": False},
        extensions=_without_spans(WORKER_EXTENSIONS),
        **kwargs,
    )
    client = Client(cluster, security=kwargs.get("security"))
    if processes and worker_nice:
        client.register_plugin(LowerPriority(worker_nice), name="memogrid-lower-priority")
    return client


def _without_spans(extensions: dict[str, Any]) -> dict[str, Any]:
    return {name: ext for name, ext in extensions.items() if name != "spans"}


class LowerPriority(WorkerPlugin):
    """A worker plugin: fits run at a lower CPU priority than the API process.

    On a machine whose cores all fit models, the service's own process must
    still answer status polls at once; the kernel gives it the CPU first and
    the fits lose nothing but the moments it needs. Registered as a plugin
    so workers a nanny restarts get it too.
    """

    idempotent = True

    def __init__(self, increment: int):
        self.increment = increment

    def setup(self, worker: Any) -> None:
        # os.nice is relative; the pid check keeps a second setup from adding more
        if getattr(worker, "_memogrid_niced", None) != os.getpid():
            os.nice(self.increment)
            worker._memogrid_niced = os.getpid()


#: bytes a second dask assumes between workers (set on the scheduler)
BANDWIDTH = 1e9
#: the environment a nanny starts its worker process with
#: (:func:`_worker_malloc_settings`); deploy/dask.yaml gives the image's the same
WORKER_MALLOC_ENV = {"MALLOC_TRIM_THRESHOLD_": str(2**28), "MALLOC_MMAP_THRESHOLD_": str(2**28)}


def _worker_malloc_settings() -> None:
    """Let worker processes reuse freed memory for fold-sized arrays.

    dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``, so
    glibc hands every freed fold array back to the OS and the next fit
    page-faults it in again. Measured on the seed workload that cost about
    a fifth of the workers' CPU time (800k page faults, 3 s of system
    time); with these thresholds at 256 MiB it is gone.
    """
    import dask

    dask.config.set(
        {f"distributed.nanny.pre-spawn-environ.{k}": v for k, v in WORKER_MALLOC_ENV.items()}
    )


def close_client(client: Any) -> None:
    """Close a client and, if :func:`make_client` started it, its cluster."""
    cluster = getattr(client, "cluster", None)
    client.close()
    if cluster is not None:
        cluster.close()
