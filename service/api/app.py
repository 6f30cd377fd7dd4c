"""The FastAPI application and the services it holds for its lifetime.

``create_app(settings)`` builds the app; its lifespan opens the database
(upgrading the schema, or refusing a newer one), the dataset store, the
result cache, the dask client (an in-process LocalCluster unless a
scheduler address is set) and the job runner, and closes them in reverse.
Tests hand in their own dask client so one cluster serves the session.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from sqlalchemy import select

from ..db import migrate
from ..db.models import Dataset
from ..db.session import Database
from ..engine.search import SearchRunner
from ..runner.jobs import JobRunner
from ..settings import Settings, get_settings
from ..store.cache import ResultCache
from ..store.datasets import DatasetStore
from . import problems

log = logging.getLogger("memogrid.api")

API_PREFIX = "/v1"


@dataclass
class Services:
    """What the routes reach through ``request.app.state.services``."""

    settings: Settings
    db: Database
    store: DatasetStore
    cache: ResultCache
    search: SearchRunner
    runner: JobRunner
    allow: Any
    schema_revision: str | None
    limiter: Any
    auth_cache: Any
    uploads: Any  # datasets.UploadSlots


def services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


def open_services(settings: Settings, dask_client: Any = None) -> tuple[Services, Any]:
    """Open everything the service needs; returns it and the client it made (or None)."""
    from memogrid.spec import Allowlist

    from ..engine.cluster import CONNECT_SECONDS, make_client

    db = Database(settings.effective_database_url)
    revision = migrate.ready(db.write_engine, settings.migrate_on_start)
    from .auth import AuthCache, RateLimiter, ensure_admin_token

    written = ensure_admin_token(db, settings.admin_token_file)
    if written is not None:
        log.warning(
            "no API token existed: created the admin's and wrote it to %s (read it once, "
            "e.g. export MEMOGRID_TOKEN=$(cat %s))",
            written,
            written,
        )
    store = DatasetStore(settings.datasets_dir)
    swept = store.sweep_temporary()  # what a killed upload or write left
    if swept:
        log.info("removed %d temporary file(s) of interrupted writes", len(swept))
    with db.read() as s:
        recorded = set(s.scalars(select(Dataset.id)))
    swept = store.sweep_unrecorded(recorded)  # uploads whose recording failed
    if swept:
        log.info("removed %d dataset file(s) no dataset records", len(swept))
    cache = ResultCache(settings.cache_dir, settings.cache_size_limit)
    files, freed = cache.sweep_orphans()  # what writes killed with a worker left
    if files:
        log.info("removed %d cache value file(s) of interrupted writes (%d bytes)", files, freed)
    made = None
    if dask_client is None:
        if settings.scheduler_address and settings.n_workers:
            log.warning(
                "MEMOGRID_N_WORKERS (--workers) is ignored: the workers are the external "
                "scheduler's at %s",
                settings.scheduler_address,
            )
        try:
            made = dask_client = make_client(
                settings.scheduler_address or None,
                timeout=CONNECT_SECONDS,
                n_workers=settings.n_workers or None,
                worker_nice=settings.worker_nice,
            )
        except OSError as exc:  # its TimeoutError: the scheduler does not answer yet
            if not settings.scheduler_address:
                raise
            # started with its scheduler (a host's restart): it answers later
            log.warning(
                "the dask scheduler at %s does not answer (%s): jobs wait queued until it does",
                settings.scheduler_address,
                exc,
            )
    allow = Allowlist.default(settings.extra_estimators)
    search = SearchRunner(
        dask_client,
        store,
        cache,
        resident_bytes=settings.resident_bytes,
        address=settings.scheduler_address or None,
    )
    runner = JobRunner(
        db,
        search,
        allow,
        settings.estimators_dir,
        max_concurrent=settings.max_concurrent_jobs,
        user_max_running=settings.user_max_running_jobs,
        lease_seconds=settings.lease_seconds,
        grid_max_fits=settings.grid_max_fits,
        max_seconds=settings.job_max_seconds,
    )
    limiter = RateLimiter(settings.rate_limit_per_minute)
    auth_cache = AuthCache(settings.auth_cache_seconds)
    from .datasets import UploadSlots

    services = Services(
        settings,
        db,
        store,
        cache,
        search,
        runner,
        allow,
        revision,
        limiter,
        auth_cache,
        UploadSlots(settings.user_max_uploads),
    )
    return services, made


def close_services(svc: Services, made: Any) -> None:
    """Stop the runner (requeueing what it ran), then close what was opened."""
    svc.runner.stop()
    if svc.search.resident is not None:
        svc.search.resident.clear()  # let the workers free what this service kept
    from ..engine.cluster import close_client

    if made is not None:
        close_client(made)
    if svc.search.connected_here and svc.search.client is not made:
        close_client(svc.search.client)  # made when the scheduler came (back)
    svc.cache.close()
    svc.db.dispose()


def create_app(
    settings: Settings | None = None,
    *,
    dask_client: Any = None,
    start_runner: bool = True,
) -> FastAPI:
    """The memogrid API. ``dask_client`` overrides the configured cluster."""
    from .datasets import router as datasets_router
    from .jobs import router as jobs_router
    from .queries import public as public_router
    from .queries import router as queries_router

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        import anyio

        cfg = settings or get_settings()
        # dask's synchronous client must not start inside the event loop
        svc, made = await anyio.to_thread.run_sync(open_services, cfg, dask_client)
        app.state.services = svc
        if start_runner:
            svc.runner.start()
        log.info("memogrid serving; data in %s", cfg.data_dir)
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(close_services, svc, made)

    from .. import __doc__ as service_doc

    app = FastAPI(
        title="memogrid",
        version=_version(),
        summary="A persistent, memoizing grid-search service for scikit-learn",
        description=(service_doc or "").strip(),
        lifespan=lifespan,
        docs_url=f"{API_PREFIX}/docs",
        openapi_url=f"{API_PREFIX}/openapi.json",
        redoc_url=None,
    )
    problems.install(app)
    app.add_middleware(BodyLimit, settings=lambda: settings or get_settings())
    for router in (datasets_router, jobs_router, queries_router, public_router):
        app.include_router(router, prefix=API_PREFIX)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


class BodyLimit:
    """Refuse request bodies over ``request_max_bytes`` with a 413 problem.

    A job's JSON is parsed whole, so without a cap one request could make
    the service hold any amount of memory. The declared length is checked
    before anything is read and a chunked body is counted as it arrives.
    Dataset uploads stream to disk under their own cap (``upload_max_bytes``)
    and are left alone.
    """

    def __init__(self, app: Any, settings: Any):
        self.app = app
        self._settings = settings

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        if scope["path"].rstrip("/") == f"{API_PREFIX}/datasets":
            return await self.app(scope, receive, send)
        limit = self._settings().request_max_bytes
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            from starlette.requests import Request as StarletteRequest

            response = problems.problem_response(
                StarletteRequest(scope), 413, _too_large_text(limit)
            )
            return await response(scope, receive, send)
        seen = 0

        async def counted() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    from starlette.exceptions import HTTPException

                    raise HTTPException(413, _too_large_text(limit))
            return message

        await self.app(scope, counted, send)


def _too_large_text(limit: int) -> str:
    return f"the request body exceeds the service's limit of {limit} bytes (request_max_bytes)"


#: error answers any authenticated route may give, besides its own
_COMMON_ERRORS = {
    "401": "missing, unknown, expired or revoked token",
    "422": "invalid request: the problem's errors point at the items",
    "429": "too many requests for this token",
}


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema, with every error documented as the problem body it is."""
    if app.openapi_schema:
        return app.openapi_schema
    from fastapi.openapi.utils import get_openapi

    from .problems import PROBLEM_JSON, ProblemBody

    schema = get_openapi(
        title=app.title,
        version=app.version,
        summary=app.summary,
        description=app.description,
        routes=app.routes,
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    body = ProblemBody.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(body.pop("$defs", {}))
    components["ProblemBody"] = body
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    problem = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/ProblemBody"}}}
    for path, ops in schema["paths"].items():
        for method, op in ops.items():
            responses = op.setdefault("responses", {})
            public = path.endswith("/health")
            for code, description in _COMMON_ERRORS.items():
                if not public or code == "422":  # an unknown query parameter is one
                    responses.setdefault(code, {"description": description})
            if "{" in path:
                responses.setdefault("404", {"description": "no such object of yours"})
            if method in ("post", "put", "patch"):  # BodyLimit's (uploads: their own)
                responses.setdefault("413", {"description": "the request body is too large"})
            for code, response in responses.items():
                if method == "head":  # a HEAD answer has no body, whatever its status
                    response.pop("content", None)
                if code[0] in "45":
                    response.setdefault("description", "error")
                    if method != "head":
                        response["content"] = problem
    app.openapi_schema = schema
    return schema


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("memogrid")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0"
