"""A dask scheduler preload: no record of every computation run.

dask's scheduler keeps one "span" per computation, and with it the
computation's task groups, for as long as it runs (dask/distributed#7977):
about one per job here, so a scheduler serving the service for months
grows without end. Only the dashboard's per-computation views read them.
The embedded LocalCluster is built without the extension
(:func:`.cluster.make_client`); an external scheduler is started with::

    dask scheduler --preload memogrid_service.engine.nospans

(docker-compose.yml does). Workers need nothing: theirs sends, with each
heartbeat, only what it measured since the last one, which this stand-in
takes and drops. Given to a worker, the preload does nothing.
"""

from __future__ import annotations

from typing import Any


class NoSpans:
    """Stands in for the scheduler's spans extension.

    False, so the scheduler records no span for a new graph (it asks
    ``if spans_ext:``); its ``heartbeat`` takes the span metrics workers
    send, which the scheduler hands to an extension of that name.
    """

    def __init__(self) -> None:
        self.spans: dict[str, Any] = {}

    def __bool__(self) -> bool:
        return False

    def heartbeat(self, ws: Any, data: Any) -> None:
        pass


def dask_setup(server: Any) -> None:
    from distributed import Scheduler

    if isinstance(server, Scheduler):
        server.extensions["spans"] = NoSpans()
