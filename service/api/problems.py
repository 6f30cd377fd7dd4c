"""RFC 9457 problem details for every error the API answers.

Routes raise :class:`Problem` (or let a :class:`~memogrid.spec.SpecError`
through); FastAPI's own validation errors and HTTP exceptions are turned
into the same shape, so a client reads one format whatever went wrong:

    {"type": "about:blank", "title": "Unprocessable Content", "status": 422,
     "detail": "param_grid.clf__C: ...", "errors": [{"path": ..., "message": ...}]}
"""

from __future__ import annotations

import errno
import logging
import re
import sys
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from memogrid.spec import SpecError

PROBLEM_JSON = "application/problem+json"
#: what a write answers when the disk (or the service's quota on it) is full
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
#: the same, in the words of SQLite and PostgreSQL
_DB_FULL = ("database or disk is full", "No space left on device", "could not extend file")

log = logging.getLogger(__name__)


class ProblemItem(BaseModel):
    path: str
    message: str


class ProblemBody(BaseModel):
    """The body of every error answer (RFC 9457)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[ProblemItem] = []


class Problem(Exception):
    """An error answer: status, a message naming the problem, optional items."""

    def __init__(
        self,
        status: int,
        detail: str,
        errors: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = errors or []
        self.headers = headers


def problem_response(
    request: Request,
    status: int,
    detail: str,
    errors: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": printable(_bounded(detail)),
        "instance": request.url.path,
        "errors": [{k: printable(_bounded(v)) for k, v in e.items()} for e in errors or []],
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _loc(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body",)]
    out = ""
    for p in parts:
        out += f"[{p}]" if p.isdigit() else (f".{p}" if out else p)
    return out or "<body>"


def known_query(request: Request) -> None:
    """Refuse query parameters the route does not take (a typo is an error, not a no-op)."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    known: set[str] = set()
    stack = [dependant]
    while stack:  # the route's own query parameters and its dependencies'
        d = stack.pop()
        known.update(p.alias for p in d.query_params)
        stack.extend(d.dependencies)
    for name, value in request.query_params.multi_items():
        refuse_unstorable({name: value}, "query")
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        raise Problem(
            422,
            f"unknown query parameter {unknown[0]!r}"
            + (f"; this route takes {', '.join(sorted(known))}" if known else ""),
            [{"path": f"query.{name}", "message": "unknown query parameter"} for name in unknown],
        )


def _methods(app: FastAPI, path: str) -> list[str]:
    """The methods the OpenAPI schema gives ``path`` (templates matched), HEAD with GET."""
    import re

    found: set[str] = set()
    for template, ops in app.openapi()["paths"].items():
        pattern = re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, path):
            found.update(m.upper() for m in ops)
    if "GET" in found:
        found.add("HEAD")
    return sorted(found)


def install(app: FastAPI) -> None:
    """Register the handlers that turn every error into a problem body."""

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(request, exc.status, exc.detail, exc.errors, exc.headers)

    @app.exception_handler(SpecError)
    async def _spec(request: Request, exc: SpecError) -> JSONResponse:
        return problem_response(
            request, 422, str(exc), [{"path": exc.path, "message": exc.message}]
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        for e in exc.errors():
            if e.get("type") == "json_invalid":  # FastAPI's words keep no reason
                where = e["loc"][-1] if e.get("loc") else "?"
                said = (e.get("ctx") or {}).get("error") or "unreadable"
                message = f"the request body is not valid JSON: {said} (at character {where})"
                return problem_response(
                    request, 422, message, [{"path": "<body>", "message": message}]
                )
        items = [{"path": _loc(tuple(e["loc"])), "message": e["msg"]} for e in exc.errors()]
        detail = "; ".join(f"{i['path']}: {i['message']}" for i in items) or "invalid request"
        return problem_response(request, 422, detail, items)

    def disk_full(request: Request, said: Any) -> JSONResponse:
        log.warning("%s %s: %s", request.method, request.url.path, said)
        return problem_response(
            request,
            507,
            "the service's disk is full: nothing was stored; try again once space is freed "
            "(an operator can prune the result cache: memogrid cache prune)",
        )

    @app.exception_handler(OSError)
    async def _os_error(request: Request, exc: OSError) -> JSONResponse:
        if exc.errno in _DISK_FULL:  # an upload, a job's request: nothing was kept
            return disk_full(request, exc)
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        # its text may name the server's files: logged, not answered
        return problem_response(
            request, 500, "the service could not complete this request: an error on its side"
        )

    @app.exception_handler(OperationalError)
    async def _database(request: Request, exc: OperationalError) -> JSONResponse:
        said = str(exc.orig if exc.orig is not None else exc)
        if any(words in said for words in _DB_FULL):  # its database's disk
            return disk_full(request, said)
        log.error("%s %s: the database failed", request.method, request.url.path, exc_info=exc)
        return problem_response(
            request,
            503,
            "the service's database is unavailable or failed this request; try again",
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(RecursionError)
    async def _too_deep(request: Request, exc: RecursionError) -> JSONResponse:
        return problem_response(request, 422, "the request is nested too deeply to read")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        cause = exc.__cause__
        if isinstance(cause, UnicodeDecodeError):  # FastAPI's words name no cause
            detail = f"the request body is not UTF-8 JSON: {cause.reason} at byte {cause.start}"
        elif isinstance(cause, RecursionError):
            detail = "the request body's JSON nests arrays or objects too deeply to read"
        elif isinstance(cause, ValueError) and "integer string conversion" in str(cause):
            detail = (
                "the request body's JSON holds an integer of more than "
                f"{sys.get_int_max_str_digits()} digits"
            )
        headers = dict(exc.headers) if exc.headers else None
        if exc.status_code == 405:
            # every method the path has, not only the first matching route's
            headers = dict(headers or {}, Allow=", ".join(_methods(app, request.url.path)))
        return problem_response(request, exc.status_code, detail, headers=headers)


#: what no database stores in text: NUL (PostgreSQL refuses it) and lone
#: UTF-16 surrogates (JSON's "\\ud800" escapes decode to them; they are not
#: Unicode text, and no UTF-8 encoder takes them)
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


#: characters of a problem's text: a message quoting what was refused (a
#: 10 MB class name) answered twice its size
PROBLEM_TEXT_MAX = 8_000


def _bounded(text: str) -> str:
    if len(text) <= PROBLEM_TEXT_MAX:
        return text
    half = PROBLEM_TEXT_MAX // 2
    return f"{text[:half]} ... ({len(text) - 2 * half} characters left out) ... {text[-half:]}"


def printable(text: str) -> str:
    """``text`` with anything UTF-8 cannot encode written as an escape, so an
    answer that quotes a refused key can itself be sent."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def refuse_unstorable(value: Any, path: str = "") -> None:
    """Refuse a NUL character or a lone surrogate in any string or key of a
    request body or query: neither is text a database stores (PostgreSQL
    refuses NUL; a surrogate cannot be encoded at all)."""
    if isinstance(value, str):
        found = _UNSTORABLE.search(value)
        if found:
            char = found.group()
            what = "a NUL character" if char == "\x00" else f"a lone surrogate ({printable(char)})"
            where = printable(path) or "<body>"
            raise Problem(
                422,
                f"{printable(path) or 'the request'} contains {what}, which is not storable text",
                [
                    {
                        "path": where,
                        "message": "NUL character" if char == "\x00" else "lone surrogate",
                    }
                ],
            )
    elif isinstance(value, dict):
        for k, v in value.items():
            sub = f"{path}.{k}" if path else str(k)
            refuse_unstorable(str(k), sub)
            refuse_unstorable(v, sub)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            refuse_unstorable(v, f"{path}[{i}]")
