"""The thin client: submit scikit-learn searches to a memogrid service.

    from memogrid import Client
    with Client("http://127.0.0.1:8000", token=...) as client:
        job = client.submit(pipe, grid, X, y, cv=5)
        job.wait()                      # a progress bar: fits done, cache hits
        job.best_params_, job.cv_results_, job.best_estimator_

Estimators, grids and splitters become the service's JSON spec on this side
(:mod:`memogrid.spec`), so an object the service could not build is refused
before anything is sent. Datasets are hashed locally (:mod:`memogrid.data`)
and uploaded only when the service does not hold them yet.
"""

from __future__ import annotations

import functools
import math
import numbers
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import httpx
import numpy as np

from . import errors
from .data import (
    TEXT_TYPE,
    array_chunks,
    as_array,
    as_target,
    dataset_id,
    frame_table,
    hash_text,
    is_frame,
    is_object_strings,
    is_text,
    memory_order,
    npy_header,
    object_numbers,
    text_parts,
    text_pieces,
    wire_table,
)
from .errors import MemogridError
from .layout import restore_strides
from .sparse import SPARSE_TYPE, as_csr, hash_sparse, is_sparse, sparse_body
from .spec import (
    JOB_SKLEARN_DEFAULTS,
    SpecError,
    build_value,
    caller_warning_filters,
    changed_sklearn_settings,
    cv_to_spec,
    default_allowlist,
    explicit_folds,
    scorer_to_spec,
    special_float_name,
    to_distributions,
    to_grid,
    to_spec,
)
from .wire import ESTIMATOR_NOT_STORED

#: seconds to connect; to wait for an answer (an upload, for each piece to
#: go and for the answer once all went: a service checks what it received)
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
UPLOAD_TIMEOUT = httpx.Timeout(connect=5.0, read=600.0, write=300.0, pool=60.0)
#: attempts for idempotent calls when the connection fails
RETRIES = 3
RETRY_BACKOFF = 0.5
#: seconds between status polls while waiting: from the first to the longest
POLL_FIRST = 0.02
POLL_INTERVAL = 0.5
#: seconds of failing status polls (busy or unreachable service) a wait
#: without a timeout rides out (one with a timeout rides them out until it)
POLL_PATIENCE = 60.0
#: seconds a call whose body can be sent again waits out the service's
#: rate limit (429 with Retry-After) before raising RateLimited
RATE_PATIENCE = 60.0

#: the states a job does not leave
_ENDED = frozenset({"succeeded", "failed", "cancelled"})

_STATUS_ERRORS: dict[int, type[MemogridError]] = {
    400: SpecError,
    401: errors.AuthError,
    403: errors.AuthError,
    404: errors.NotFound,
    409: errors.Conflict,
    413: errors.TooLarge,
    415: errors.DataError,
    422: SpecError,
    429: errors.RateLimited,
}
_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


def _error_for(response: httpx.Response) -> MemogridError:
    """The exception for a refused request, with the service's problem message."""
    try:
        body = response.json()
    except ValueError:
        body = {}
    detail = body.get("detail") if isinstance(body, dict) else None
    items = body.get("errors", []) if isinstance(body, dict) else []
    status = response.status_code
    if status == 401 and not detail:  # a HEAD's answer has no body to say why
        detail = (
            "the service refused this client's token (none was given, or it was revoked "
            "or has expired): pass token= to Client or set MEMOGRID_TOKEN"
        )
    message = detail or response.reason_phrase or f"HTTP {status}"
    problem = response.headers.get("content-type", "").startswith("application/problem+json")
    if status in (404, 405) and (not problem or message in ("Not Found", "Method Not Allowed")):
        # no such route: a URL ending in /v1, or no memogrid service there
        request = response.request
        message += (
            f" ({request.method} {request.url.path} is no memogrid route at "
            f"{_shown(str(request.url.copy_with(path='/', query=None)))}: give the service's "
            "root URL, without /v1; is a memogrid service there?)"
        )
    cls = _STATUS_ERRORS.get(status)
    if cls is SpecError:
        first = items[0] if items and isinstance(items[0], dict) else {}
        path = first.get("path") or "<request>"
        # the problem's detail already names the path: SpecError adds it once
        if message.startswith(f"{path}: "):
            message = message[len(path) + 2 :]
        err: MemogridError = SpecError(path, message, errors=items)
        err.status = status
        return err
    if cls is None:
        cls = errors.ServerError if status >= 500 else MemogridError
    exc = cls(message, status=status, errors=items)
    if isinstance(exc, errors.RateLimited):
        try:
            exc.retry_after = float(response.headers.get("retry-after", ""))
        except ValueError:
            pass
    return exc


def _shown(url: str) -> str:
    """``url`` as a message may quote it: without a user's password in it."""
    parsed = httpx.URL(url)
    return (
        str(parsed.copy_with(username=parsed.username, password="***")) if parsed.password else url
    )


def _without_password(url: str) -> str:
    """``url`` without a user's password (what a pickled client keeps, as
    it keeps no token)."""
    parsed = httpx.URL(url)
    if not parsed.password:
        return url
    return str(parsed.copy_with(userinfo=parsed.userinfo.split(b":")[0]))


def _error_score(value: Any) -> Any:
    """``error_score`` as a job carries it: "raise", an integer as one (the
    warnings print it as given), another number as a float, and NaN and
    the infinities by name (JSON has no such numbers)."""
    if isinstance(value, str):
        if value != "raise":
            raise SpecError("error_score", f'error_score is "raise" or a number, not {value!r}')
        return value
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    value = float(value)
    return value if math.isfinite(value) else special_float_name(value)


def _scoring(scoring: Any) -> Any:
    """``scoring`` as a job carries it: names, and ``make_scorer(...)`` of a
    scikit-learn metric as a scorer spec."""
    if scoring is None or isinstance(scoring, str):
        return scoring
    if isinstance(scoring, (list, tuple, set)):
        names = list(scoring)
        if all(isinstance(n, str) for n in names):
            return names
    elif isinstance(scoring, Mapping):
        return {
            k: v if isinstance(v, str) else scorer_to_spec(v, f"scoring.{k}")
            for k, v in scoring.items()
        }
    elif callable(scoring):
        return scorer_to_spec(scoring)
    raise SpecError(
        "scoring",
        "scoring is None, a scorer name, make_scorer(...) of a scikit-learn metric, a "
        "list of names or a dict of names and scorers; other callables cannot be sent",
    )


def _in_notebook() -> bool:
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    ip = getattr(shell, "get_ipython", lambda: None)()
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"


class Client:
    """A connection to a memogrid service.

    ``url`` and ``token`` default to ``MEMOGRID_URL`` (else
    ``http://127.0.0.1:8000``) and ``MEMOGRID_TOKEN``. ``http`` hands in a
    ready ``httpx.Client`` (tests pass an in-process ASGI client).
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        http: httpx.Client | None = None,
    ):
        self.url = (url or os.environ.get("MEMOGRID_URL") or "http://127.0.0.1:8000").rstrip("/")
        self._shown_url = _shown(self.url)  # as messages and repr quote it
        self.token = _checked_token(
            token if token is not None else os.environ.get("MEMOGRID_TOKEN")
        )
        self._timeout = timeout
        if http is None:
            self._http = self._new_http()
            self._owns_http = True
        else:
            http.headers.update(self._headers())
            self._http = http
            self._owns_http = False
        #: uploads this client made, for tests and curiosity
        self.uploads = 0

    # -- plumbing ---------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        headers = {"user-agent": "memogrid-client"}
        if self.token:
            headers["authorization"] = f"Bearer {self.token}"
        return headers

    def _new_http(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=self._timeout, headers=self._headers())

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def _let_go(self) -> None:
        """Close this client's connections, yet stay usable (a new call
        connects again): what a search does with the client it made for its
        fit, which the jobs it leaves (``job_``, ``refit_job_``) still use."""
        if self._owns_http:
            self._http.close()
            self._http = self._new_http()

    # a Client is a handle on a service: clone() and copies share it. A
    # pickled one keeps only the URL and takes its token from MEMOGRID_TOKEN
    # where it is loaded: a fitted search saved to share must not carry a
    # bearer token to whoever opens the file
    def __copy__(self) -> Client:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Client:
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return (Client, (_without_password(self.url),))

    def __repr__(self) -> str:
        return f"Client({self._shown_url!r})"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(
        self, method: str, path: str, *, deadline: float | None = None, **kwargs: Any
    ) -> httpx.Response:
        """One API call: retried on connection errors if idempotent, and after
        the service's advice when over its rate (:data:`RATE_PATIENCE`, and
        not past ``deadline``, a ``time.monotonic()`` time); errors mapped.
        ``content`` may be a function giving the body's pieces anew: a
        streamed body that can be sent again."""
        attempts = RETRIES if method in _IDEMPOTENT else 1
        # a 429 is answered before anything is done: any call whose body can
        # be sent again may be
        content = kwargs.get("content", b"")
        replayable = callable(content) or isinstance(content, (bytes, bytearray, str))
        give_up = time.monotonic() + RATE_PATIENCE
        if deadline is not None:
            give_up = min(give_up, deadline)
        while True:
            for attempt in range(attempts):
                if callable(content):
                    kwargs["content"] = content()
                try:
                    response = self._http.request(method, path, **kwargs)
                    break
                except httpx.UnsupportedProtocol:
                    raise errors.TransportError(
                        f"{self._shown_url!r} is no URL a memogrid service answers at: it starts "
                        "with http:// or https://"
                    ) from None
                except httpx.ReadTimeout:  # reached, but it did not answer: not again
                    raise errors.TransportError(
                        f"the memogrid service at {self._shown_url} did not answer {method} {path} "
                        "in time (it may be overloaded or stuck)"
                    ) from None
                except httpx.TransportError as exc:
                    pause = RETRY_BACKOFF * 2**attempt
                    late = deadline is not None and time.monotonic() + pause > deadline
                    if attempt + 1 >= attempts or late:
                        raise errors.TransportError(
                            f"cannot reach the memogrid service at {self._shown_url}: "
                            f"{self._without_token(str(exc))}{_proxy_note(self.url)}"
                        ) from None
                    time.sleep(pause)
                except RuntimeError as exc:
                    if not getattr(self._http, "is_closed", False):
                        raise
                    raise errors.ClientClosed(
                        f"this Client of {self._shown_url} was closed (at the end of its `with` "
                        "block?): make a new one, or pass one to the search"
                    ) from exc
            if response.status_code < 400:
                return response
            if method == "DELETE" and attempt > 0 and response.status_code == 404:
                # sent again after an attempt whose answer was lost: that
                # attempt may have deleted it, and it is gone either way
                return response
            err = _error_for(response)
            # over the rate: wait as the service advises, for a while
            wait = getattr(err, "retry_after", None)
            if not (replayable and wait is not None and time.monotonic() + wait <= give_up):
                raise err
            time.sleep(wait)

    def _without_token(self, text: str) -> str:
        """``text`` with this client's token masked (an error may quote its header)."""
        return text.replace(self.token, "mg_…") if self.token else text

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._request(method, path, **kwargs)
        try:
            return response.json()
        except ValueError:
            raise errors.ServerError(
                f"{method} {path} answered {response.status_code} with a body that is "
                f"not JSON (is {self._shown_url} a memogrid service?)",
                status=response.status_code,
            ) from None

    # -- datasets ---------------------------------------------------------
    def upload(self, data: Any) -> str:
        """Store an array, text, a DataFrame or a sparse X on the service (if it
        lacks it); its id."""
        if is_sparse(data):
            csr = as_csr(data)
            did = hash_sparse(csr)
            if not self.has_dataset(did):
                self._post_dataset(lambda: sparse_body(csr), SPARSE_TYPE, did)
            return did
        if is_frame(data):
            table = frame_table(data)
            from .data import hash_table

            did = hash_table(table)
            if not self.has_dataset(did):
                import tempfile

                import pyarrow.parquet as pq

                # written to a file and sent from it: a second copy of a large
                # frame is not held in memory as well
                with tempfile.TemporaryFile() as spool:
                    pq.write_table(wire_table(table), spool)

                    def pieces() -> Iterator[bytes]:
                        spool.seek(0)
                        while chunk := spool.read(1 << 22):
                            yield chunk

                    self._post_dataset(pieces, "application/vnd.apache.parquet", did)
            return did
        if is_text(data):  # its own size, not the longest string's width in every row
            offsets, text = text_parts(data)
            did = hash_text(offsets, text)
            if not self.has_dataset(did):
                self._post_dataset(lambda: text_pieces(offsets, text), TEXT_TYPE, did)
            return did
        arr = as_array(data)
        did = dataset_id(arr)
        if not self.has_dataset(did):

            def body() -> Iterator[bytes]:
                yield npy_header(arr)
                for chunk in array_chunks(arr):
                    yield bytes(chunk)

            self._post_dataset(body, "application/x-npy", did)  # sent anew if need be
        return did

    def _post_dataset(self, content: Any, content_type: str, expected: str) -> None:
        # uploads stream for as long as they need (a handed-in client keeps its own)
        extra: dict[str, Any] = {"timeout": UPLOAD_TIMEOUT} if self._owns_http else {}
        got = self._json(
            "POST",
            "/v1/datasets",
            content=content,
            headers={"content-type": content_type},
            **extra,
        )
        self.uploads += 1
        if got["id"] != expected:
            raise errors.DataError(
                f"the service stored the upload as {got['id']}, not {expected}: "
                f"client and service disagree on the content encoding{self._encodings_differ()}"
            )

    def _encodings_differ(self) -> str:
        """What differs between the client's and the service's encodings, if it says."""
        from .data import ENCODINGS

        try:
            health = self._json("GET", "/v1/health")
        except errors.MemogridError:
            return ""
        theirs = health.get("encodings")
        service = f"the service (memogrid {health.get('version')})"
        if not theirs:
            return f" ({service} does not list its encodings: install the same memogrid on both)"
        only_here = [e for e in ENCODINGS if e not in theirs]
        only_there = [e for e in theirs if e not in ENCODINGS]
        if not only_here:
            return ""
        return (
            f" (this client hashes with {', '.join(only_here)}, {service} with "
            f"{', '.join(only_there) or 'others'}: install the same memogrid on both)"
        )

    def has_dataset(self, dataset_id: str) -> bool:
        """Whether the service holds this dataset (for this user)."""
        try:
            self._request("HEAD", f"/v1/datasets/{dataset_id}")
            return True
        except errors.NotFound:
            return False

    def dataset(self, dataset_id: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/v1/datasets/{dataset_id}"))

    def delete_dataset(self, dataset_id: str) -> None:
        self._request("DELETE", f"/v1/datasets/{dataset_id}")

    def _n_rows(self, data: Any) -> int:
        """Rows of an array, a frame or an uploaded dataset (by id)."""
        if isinstance(data, str):
            return int(self.dataset(data)["shape"][0])
        return data.shape[0] if is_sparse(data) else len(data)

    def _dataset_ref(self, data: Any) -> str:
        if isinstance(data, str):
            return data
        return self.upload(data)

    # -- jobs -------------------------------------------------------------
    def _body(
        self,
        estimator: Any,
        X: Any,
        y: Any,
        *,
        groups: Any,
        cv: Any,
        scoring: Any,
        refit: Any,
        error_score: Any,
        return_train_score: bool,
        fit_params: Mapping[str, Any],
    ) -> dict[str, Any]:
        if not isinstance(refit, (bool, str)):
            raise SpecError("refit", "refit is a bool or a scorer name; callables cannot be sent")
        if refit == "" and not isinstance(scoring, (Mapping, list, tuple, set)):
            refit = False  # one metric: scikit-learn refits by truth, and "" is false
        body: dict[str, Any] = {
            "estimator": to_spec(estimator, path="estimator"),
            "scoring": _scoring(scoring),
            "refit": refit,
            "error_score": _error_score(error_score),
            "return_train_score": bool(return_train_score),
        }
        config = _sklearn_config()
        if config:
            body["sklearn_config"] = config
        filters = caller_warning_filters()
        if filters:
            body["warning_filters"] = filters
        named = [("y", y), ("groups", groups)]
        named += [(f"fit_params.{k}", v) for k, v in fit_params.items()]
        for where, value in named:
            if is_sparse(value):  # refused before anything is uploaded
                raise SpecError(where, "a sparse matrix is accepted as X only")
        for name, value in fit_params.items():
            if value is not None and np.ndim(value) == 0:  # None: as not given, passed on
                raise SpecError(
                    f"fit_params.{name}",
                    "only array-like fit parameters (one value per sample) can be sent",
                )
        if isinstance(X, np.matrix):
            # scikit-learn's estimators refuse it in every fit (its words)
            raise TypeError(
                "np.matrix is not supported. Please convert to a numpy array with "
                "np.asarray. For more information see: "
                "https://numpy.org/doc/stable/reference/generated/numpy.matrix.html"
            )
        folds = explicit_folds(cv, X, y, groups, n_rows=lambda: self._n_rows(X))
        if not isinstance(folds, list):
            body["cv"] = cv_to_spec(folds)
        # everything expressible: only now touch the network. Objects the
        # caller holds as object dtype load so on the service: text (pandas
        # labels; X as a list of documents, which a text vectorizer reads as
        # it reads the list) and numbers (stored as numbers)
        objects = []
        held = {}  # role -> the value uploaded for it
        for role, value in (("X", X), ("y", y), ("groups", groups)):
            if value is None:
                continue
            numbers = object_numbers(value)
            if numbers is not None:
                held[role] = numbers
                objects.append(role)
                continue
            held[role] = as_target(value) if role == "y" else value
            if is_object_strings(value) or (role == "X" and is_text(value)):
                objects.append(role)
        body.update((role, self._dataset_ref(value)) for role, value in held.items())
        order = memory_order(X)
        if order == "F" or is_frame(X):
            # the service's folds and refit see X as scikit-learn's would (a
            # frame by reference is taken as pandas lays frames out, "F")
            body["x_order"] = order
        if "y" in held and memory_order(held["y"]) == "F" and not is_frame(y):
            body["y_order"] = "F"  # a 2-D y: the refit sees it so
        if objects:
            body["object_arrays"] = objects
        body["fit_params"] = {
            k: None if v is None else self._dataset_ref(v) for k, v in fit_params.items()
        }
        if isinstance(folds, list):  # one array: each fold's train then test indices
            indices = np.concatenate([part for fold in folds for part in fold])
            sizes = [[len(train), len(test)] for train, test in folds]
            body["cv"] = {"folds": self.upload(indices), "sizes": sizes}
        return body

    def submit(
        self,
        estimator: Any,
        param_grid: Any,
        X: Any,
        y: Any = None,
        *,
        groups: Any = None,
        cv: Any = None,
        scoring: Any = None,
        refit: bool | str = True,
        error_score: Any = np.nan,
        return_train_score: bool = False,
        **fit_params: Any,
    ) -> Job:
        """Queue a grid search; arguments as scikit-learn's ``GridSearchCV`` and ``fit``."""
        grid = to_grid(param_grid)
        body = self._body(
            estimator,
            X,
            y,
            groups=groups,
            cv=cv,
            scoring=scoring,
            refit=refit,
            error_score=error_score,
            return_train_score=return_train_score,
            fit_params=fit_params,
        )
        body["param_grid"] = grid
        return self._submit(body, functools.partial(_grid_candidates, param_grid))

    def submit_random(
        self,
        estimator: Any,
        param_distributions: Any,
        X: Any,
        y: Any = None,
        *,
        n_iter: int = 10,
        random_state: int | None = None,
        groups: Any = None,
        cv: Any = None,
        scoring: Any = None,
        refit: bool | str = True,
        error_score: Any = np.nan,
        return_train_score: bool = False,
        **fit_params: Any,
    ) -> Job:
        """Queue a randomized search (``RandomizedSearchCV``'s arguments).

        ``random_state`` must be an int (or None): the service draws the same
        candidates scikit-learn would with it.
        """
        if random_state is not None and not isinstance(random_state, (int, np.integer)):
            raise SpecError(
                "random_state",
                "random_state must be an int to be sent (memogrid.RandomizedSearchCV "
                "takes a RandomState: it draws the candidates in this process)",
            )
        dists = to_distributions(param_distributions)
        body = self._body(
            estimator,
            X,
            y,
            groups=groups,
            cv=cv,
            scoring=scoring,
            refit=refit,
            error_score=error_score,
            return_train_score=return_train_score,
            fit_params=fit_params,
        )
        body.update(
            param_distributions=dists,
            n_iter=int(n_iter),
            random_state=None if random_state is None else int(random_state),
        )
        seed = body["random_state"]
        return self._submit(
            body,
            None
            if seed is None  # drawn at random by the service: only it knows them
            else functools.partial(_sampled_candidates, param_distributions, n_iter, seed),
        )

    def _submit(
        self,
        body: dict[str, Any],
        candidates: Callable[[], list[dict[str, Any]] | None] | None = None,
    ) -> Job:
        got = self._json("POST", "/v1/jobs", json=body)
        return Job(self, got["id"], candidates, sent=body)

    def job(self, job_id: str) -> Job:
        """Reattach to a job (from another session, say)."""
        if not isinstance(job_id, str) or not _JOB_ID.fullmatch(job_id):
            # the service would say its path does not match: say what it is
            raise errors.NotFound(f"no job {job_id!r}: a job id is 32 lowercase hex digits")
        job = Job(self, job_id)
        job.status()  # NotFound now rather than later
        return job

    def jobs(
        self,
        *,
        state: str | list[str] | None = None,
        dataset: Any = None,
        created_after: Any = None,
        created_before: Any = None,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        """Jobs, newest first; ``dataset`` as an id or the data itself."""
        params: dict[str, Any] = {}
        if state is not None:
            params["state"] = [state] if isinstance(state, str) else list(state)
        if dataset is not None:
            params["dataset"] = dataset if isinstance(dataset, str) else dataset_id(dataset)
        for key, value in (("created_after", created_after), ("created_before", created_before)):
            if value is not None:
                params[key] = value.isoformat() if hasattr(value, "isoformat") else str(value)
        out: list[dict[str, Any]] = []
        cursor = None
        while len(out) < limit:
            page = dict(params, limit=min(500, limit - len(out)))
            if cursor:
                page["cursor"] = cursor
            got = self._json("GET", "/v1/jobs", params=page)
            out.extend(got["items"])
            cursor = got.get("next_cursor")
            if not cursor:
                break
        return out

    def leaderboard(self, X: Any, *, metric: str | None = None, limit: int = 20) -> list[dict]:
        """The best candidates over every job on ``X`` (an array, frame or dataset id)."""
        did = X if isinstance(X, str) else dataset_id(X)
        params: dict[str, Any] = {"limit": limit}
        if metric:
            params["metric"] = metric
        return _with_params(self._json("GET", f"/v1/datasets/{did}/leaderboard", params=params))

    def results(self, param: str, value: Any, *, dataset: Any = None, limit: int = 100) -> list:
        """Every candidate, over all jobs, whose parameter ``param`` was ``value``."""
        import json

        params: dict[str, Any] = {
            "param": param,
            "value": json.dumps(to_spec(value, path=param)),
            "limit": limit,
        }
        if dataset is not None:
            params["dataset"] = dataset if isinstance(dataset, str) else dataset_id(dataset)
        return _with_params(self._json("GET", "/v1/results", params=params))

    def cache_stats(self) -> dict[str, Any]:
        """The shared result cache's entries, bytes and limit (an admin token's
        to read: others get :class:`~memogrid.errors.AuthError`, 403)."""
        return dict(self._json("GET", "/v1/cache"))

    def health(self) -> dict[str, Any]:
        return dict(self._json("GET", "/v1/health"))


def _with_params(rows: Any) -> list[dict[str, Any]]:
    """Result rows with each candidate's ``params`` as the Python values a
    search's ``cv_results_["params"]`` holds (estimators, tuples, numpy
    scalars), rather than the JSON the service keeps them as. A value this
    process cannot build (a class its scikit-learn lacks) stays that JSON.
    Scores are floats, an infinity (sent as a string) included."""
    from .wire import float_from_token

    allow = default_allowlist()
    out = []
    for row in rows:
        row = dict(row)
        for key in ("mean_score", "std_score"):
            if isinstance(row.get(key), str):
                row[key] = float_from_token(row[key], key)
        params = {}
        for name, value in dict(row.get("params") or {}).items():
            try:
                params[name] = build_value(value, allow, f"params.{name}")
            except SpecError:
                params[name] = value
        row["params"] = params
        out.append(row)
    return out


_JOB_ID = re.compile("[0-9a-f]{32}")


def _these(candidates: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return candidates


def _grid_candidates(param_grid: Any) -> list[dict[str, Any]] | None:
    """A grid's candidates as scikit-learn's search enumerates them."""
    from sklearn.model_selection import ParameterGrid

    try:
        return list(ParameterGrid(param_grid))
    except Exception:  # noqa: BLE001 - the service's decoded values stand
        return None


def _sampled_candidates(distributions: Any, n_iter: int, seed: int) -> list[dict[str, Any]] | None:
    """The candidates scikit-learn's randomized search draws with ``seed``."""
    import warnings

    from sklearn.model_selection import ParameterSampler

    try:
        with warnings.catch_warnings():  # the job reports fewer-candidates warnings
            warnings.simplefilter("ignore", UserWarning)
            return list(ParameterSampler(distributions, n_iter, random_state=seed))
    except Exception:  # noqa: BLE001 - the service's decoded values stand
        return None


def _same_candidates(local: list[dict[str, Any]], remote: list[dict[str, Any]]) -> bool:
    """Whether the service's candidates are these, in this order (by content)."""
    from .wire import encode_value

    def plain(value: Any) -> Any:
        # numpy scalars travel as plain numbers (dict keys too): compare them as such
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, dict):
            return {plain(k): plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(plain(v) for v in value)
        return value

    def by_name(params: dict[str, Any]) -> dict[str, Any]:
        # the service stores a candidate's params by name; scikit-learn's
        # sampler gives some in reverse name order (ParameterGrid's
        # __getitem__): the same candidate either way
        return {k: plain(params[k]) for k in sorted(params)}

    if len(local) != len(remote):
        return False
    try:
        return all(
            sorted(a) == sorted(b) and encode_value(by_name(a)) == encode_value(by_name(b))
            for a, b in zip(local, remote, strict=True)
        )
    except Exception:  # a value the wire cannot encode: keep the service's
        return False


def _with_candidates(results: dict[str, Any], candidates: list[dict[str, Any]]) -> dict[str, Any]:
    """``results`` with ``params`` and the ``param_*`` columns built from the
    candidates drawn here, as scikit-learn builds them: the very objects of
    the user's grid (numpy scalars stay numpy scalars, estimators the same
    objects), not their copies decoded from JSON."""
    try:
        from sklearn.model_selection._search import _yield_masked_array_for_each_param
    except ImportError:  # a scikit-learn without it: the decoded values stand
        return results
    columns = dict(_yield_masked_array_for_each_param(candidates))
    if set(columns) != {key for key in results if key.startswith("param_")}:
        return results
    out: dict[str, Any] = {}
    for key, value in results.items():
        if key == "params":
            out[key] = candidates
        elif key.startswith("param_"):
            # the columns in the order scikit-learn makes them: as the
            # candidates name their params, not as the service stored them
            if not out.keys() & columns.keys():
                out.update(columns)
        else:
            out[key] = value
    return out


class Job:
    """A submitted search; after :meth:`wait`, scikit-learn's search attributes."""

    def __init__(
        self,
        client: Client,
        job_id: str,
        candidates: Callable[[], list[dict[str, Any]] | None] | None = None,
        sent: Mapping[str, Any] | None = None,
    ):
        self.client = client
        self.id = job_id
        # the request as this process sent it: what the best estimator's
        # types are audited against (not the service's copy of it)
        self._sent = sent
        self._status: dict[str, Any] | None = None
        self._results: dict[str, Any] | None = None
        self._cv_results: dict[str, Any] | None = None
        self._best_estimator: Any = None
        # the candidates as drawn where the job was submitted, once asked
        # for: their values, not JSON's copies, make params and param_*
        self._candidates = candidates

    def _use_candidates(self, candidates: list[dict[str, Any]]) -> None:
        """Build ``cv_results_`` from these candidates (drawn by the caller)."""
        self._candidates = functools.partial(_these, candidates)
        self._cv_results = None

    def __repr__(self) -> str:
        state = self._status["state"] if self._status else "?"
        return f"<memogrid.Job {self.id} {state}>"

    # -- state ------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """The job's state, times, error and progress, fresh from the service."""
        return self._fetch_status()

    def _fetch_status(self, deadline: float | None = None) -> dict[str, Any]:
        """:meth:`status`, waiting out the service's rate no later than
        ``deadline`` (``time.monotonic()``)."""
        extra: dict[str, Any] = {}
        # an answer waited for no longer than the wait has left (a handed-in
        # client keeps its own timeouts)
        if deadline is not None and self.client._owns_http:
            left = max(0.1, deadline - time.monotonic())
            extra["timeout"] = httpx.Timeout(min(30.0, left), connect=min(5.0, left))
        self._status = dict(
            self.client._json("GET", f"/v1/jobs/{self.id}", deadline=deadline, **extra)
        )
        return self._status

    @property
    def state(self) -> str:
        """The job's state, fresh from the service until it has ended."""
        if self._status is not None and self._status["state"] in _ENDED:
            return str(self._status["state"])
        return str(self.status()["state"])

    def cancel(self) -> dict[str, Any]:
        """Cancel the job (a finished job raises :class:`~memogrid.errors.Conflict`)."""
        self._status = dict(self.client._json("POST", f"/v1/jobs/{self.id}/cancel"))
        return self._status

    def delete(self) -> None:
        """Delete the ended job, its results and refit estimator from the service
        (a queued or running one raises :class:`~memogrid.errors.Conflict`:
        :meth:`cancel` it first). Attributes already read here stay."""
        self.client._request("DELETE", f"/v1/jobs/{self.id}")

    def wait(
        self, timeout: float | None = None, progress: bool = True, *, raise_on_failure: bool = True
    ) -> Job:
        """Block until the job ends; a progress bar unless ``progress=False``.

        The bar (tqdm) counts results done of total with the cache hits in its
        postfix; it is shown only on a terminal or in a notebook. A failed job
        raises :class:`~memogrid.errors.JobFailed` (a cancelled one
        :class:`~memogrid.errors.JobCancelled`) unless ``raise_on_failure`` is
        false; ``timeout`` seconds without an end raise
        :class:`~memogrid.errors.WaitTimeout`. An interrupted wait (Ctrl-C)
        leaves the job running on the service (:meth:`cancel` stops it; the
        drop-in search cancels its job when interrupted).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = POLL_FIRST  # short jobs (cache hits) answer fast; long ones poll less
        bar = None
        stream = sys.stderr
        show = progress and (_in_notebook() or bool(getattr(stream, "isatty", bool)()))
        try:
            while True:
                st = self._poll(deadline, timeout)
                p = st["progress"]
                if show:
                    if bar is None:
                        from tqdm.auto import tqdm

                        bar = tqdm(
                            total=p["total"] or None,
                            desc=f"memogrid {self.id[:8]}",
                            unit="fit",
                            file=stream,
                            dynamic_ncols=True,
                        )
                    if p["total"] and bar.total != p["total"]:
                        bar.total = p["total"]
                    bar.n = p["done"]
                    bar.set_postfix(
                        state=st["state"], hits=p["cache_hits"], fits=p["fits"], refresh=False
                    )
                    bar.refresh()
                if st["state"] in _ENDED:
                    break
                if deadline is not None and time.monotonic() > deadline:
                    raise errors.WaitTimeout(
                        f"job {self.id} is still {st['state']} after {timeout} s"
                    )
                time.sleep(delay)
                delay = min(delay * 1.5, POLL_INTERVAL)
        finally:
            if bar is not None:
                bar.close()
        if raise_on_failure:
            if st["state"] == "failed":
                raise errors.job_failed(self.id, st.get("error"), st)
            if st["state"] == "cancelled":
                raise errors.JobCancelled(self.id)
        return self

    def _poll(self, deadline: float | None = None, timeout: float | None = None) -> dict[str, Any]:
        """:meth:`status`, riding out a service that is busy or away (429,
        502-504, a dropped connection; the job goes on running there
        meanwhile) until a wait's ``deadline`` (``time.monotonic()``), where
        its ``timeout`` is up; a wait without one, for ``POLL_PATIENCE``
        seconds."""
        give_up = time.monotonic() + POLL_PATIENCE if deadline is None else deadline
        delay = RETRY_BACKOFF
        while True:
            try:
                return self._fetch_status(deadline)
            except (errors.RateLimited, errors.ServerError, errors.TransportError) as exc:
                transient = not isinstance(exc, errors.ServerError) or exc.status in (
                    502,
                    503,
                    504,
                )
                if transient and deadline is not None and time.monotonic() >= deadline:
                    raise errors.WaitTimeout(
                        f"job {self.id} did not end within {timeout} s (the service did not "
                        f"answer at the end: {exc}); it may still be running there"
                    ) from None
                if not transient or time.monotonic() > give_up:
                    if isinstance(exc, errors.TransportError):  # the job is still there
                        raise errors.TransportError(f"job {self.id}: {exc}") from None
                    raise
                wait = getattr(exc, "retry_after", None) or delay
                time.sleep(min(wait, max(0.0, give_up - time.monotonic()), 10.0))
                delay = min(delay * 2, 10.0)

    # -- results ----------------------------------------------------------
    def results(self) -> dict[str, Any]:
        """The raw results answer (cached once read; the job must have succeeded)."""
        if self._results is None:
            try:
                self._results = dict(self.client._json("GET", f"/v1/jobs/{self.id}/results"))
            except errors.Conflict:
                st = self.status()
                if st["state"] == "failed":
                    raise errors.job_failed(self.id, st.get("error"), st) from None
                if st["state"] == "cancelled":
                    raise errors.JobCancelled(self.id) from None
                raise
        return self._results

    @property
    def cv_results_(self) -> dict[str, Any]:
        if self._cv_results is None:
            from .wire import decode_cv_results

            results = decode_cv_results(self.results()["cv_results"])
            local = self._candidates() if self._candidates is not None else None
            if local is not None and _same_candidates(local, results["params"]):
                results = _with_candidates(results, local)
            self._cv_results = results
        return self._cv_results

    @property
    def best_index_(self) -> Any:
        """As scikit-learn's: a numpy integer."""
        return np.intp(self._best("best_index"))

    @property
    def best_params_(self) -> dict[str, Any]:
        from .wire import decode_value

        best = self._best("best_params")
        if self._candidates is not None:  # that row's own params, as scikit-learn's
            return dict(self.cv_results_["params"][self._best("best_index")])
        return dict(decode_value(best))

    @property
    def best_score_(self) -> float:
        from .wire import float_from_token

        return np.float64(float_from_token(self._best("best_score"), "best_score"))

    def _best(self, key: str) -> Any:
        results = self.results()
        value = results.get(key)
        if value is None:
            why = (
                "the job ran with refit=False and several metrics"
                if results.get("best_index") is None
                else "the service did not keep it (a score that was not finite, "
                "before the service kept those)"
            )
            raise AttributeError(f"{key}_ is not available: {why}")
        return value

    @property
    def n_splits_(self) -> int:
        return int(self.results()["n_splits"])

    def splits(self) -> list[dict[str, Any]]:
        """Every (candidate, split) result the job wrote so far (also while it
        runs), in candidate then split order: ``test_scores`` and
        ``train_scores`` by metric (floats), ``fit_time``, ``score_time``,
        ``fit_failed`` and ``cached`` (the result came from the cache)."""
        from .wire import float_from_token

        rows = list(self.client._json("GET", f"/v1/jobs/{self.id}/splits"))
        for row in rows:
            for side in ("test_scores", "train_scores"):
                if row[side] is not None:
                    row[side] = {
                        k: float_from_token(v, f"{side}.{k}") for k, v in row[side].items()
                    }
        return rows

    @property
    def multimetric_(self) -> bool:
        return bool(self.results()["multimetric"])

    @property
    def warnings(self) -> list[str]:
        return list(self.results()["warnings"])

    @property
    def stats(self) -> dict[str, Any]:
        return dict(self.results()["stats"])

    @property
    def best_estimator_(self) -> Any:
        """The refit best estimator, downloaded once as skops, types audited."""
        if self._best_estimator is None:
            if not self.results()["has_estimator"]:
                if not self.stats.get("refit"):
                    raise AttributeError(
                        "best_estimator_ is not available: the job ran with refit=False"
                    )
                why = next(
                    (w for w in self.warnings if w.startswith(ESTIMATOR_NOT_STORED)),
                    ESTIMATOR_NOT_STORED,
                )
                raise AttributeError(
                    f"best_estimator_ is not available: {why}; refit it here with "
                    "clone(estimator).set_params(**job.best_params_).fit(X, y)"
                )
            blob = self.client._request("GET", f"/v1/jobs/{self.id}/estimator").content
            # a job reattached to (Client.job) has only the service's word
            request = self._sent if self._sent is not None else self.results()["request"]
            self._best_estimator = load_audited(blob, request)
        return self._best_estimator

    def to_frame(self) -> Any:
        """``cv_results_`` as a pandas DataFrame (one row per candidate)."""
        import pandas as pd

        return pd.DataFrame(self.cv_results_)


#: what fitted scikit-learn estimators hold besides the classes a spec names:
#: numpy and scipy helpers some keep (a dtype, a pooling function, a spline)
_FITTED_HELPERS = frozenset(
    {
        "numpy.dtype",
        "numpy.mean",
        "scipy.interpolate._bsplines.BSpline",
        "scipy._lib.array_api_compat.numpy._aliases.asarray",
        # HistGradientBoosting's preprocessor of a DataFrame with categorical
        # columns: partial(check_array, ...). A partial loads only a function
        # that is trusted itself.
        "functools.partial",
        "sklearn.utils.validation.check_array",
        # training rows some models keep (SVC's support vectors, neighbors'
        # rows) of a sparse X: skops stores them as .npz, read without pickle
        *(
            f"scipy.sparse._{fmt}.{fmt}_{kind}"
            for fmt in ("csr", "csc", "coo")
            for kind in ("matrix", "array")
        ),
        # dates and times of the data an encoder keeps as its categories_
        # (values: their constructors run no code of the file's choosing)
        "datetime.date",
        "datetime.datetime",
        "datetime.time",
        "datetime.timedelta",
        "datetime.timezone",
        "zoneinfo.ZoneInfo",
    }
)


def _fitted_internal(name: str) -> bool:
    """scikit-learn's own machinery inside fitted models (trees, KD-trees, losses, kernels).

    Classes of a private scikit-learn module (``sklearn.tree._tree.Tree``),
    private classes of its public modules (CalibratedClassifierCV's
    ``sklearn.calibration._CalibratedClassifier``) or of its kernels module:
    no spec can name them, fitting creates them. Classes only: a function
    (``sklearn.utils._testing`` runs scripts) is trusted only when the spec
    names it or it is one of :data:`_FITTED_HELPERS`.
    """
    parts = name.split(".")
    if parts[0] != "sklearn" or any(name.startswith(p) for p in _NOT_INTERNAL):
        return False
    if ".tests." in name or ".conftest" in name:
        return False
    if not (
        any(p.startswith("_") for p in parts[1:])
        or name.startswith("sklearn.gaussian_process.kernels.")
    ):
        return False
    obj = _resolve(parts)
    # a class scikit-learn defines there, not one its module merely imports
    # (itertools.chain, gzip.GzipFile, operator.itemgetter are reachable so)
    return (
        isinstance(obj, type)
        and obj.__module__.startswith("sklearn.")
        and f"{obj.__module__}.{obj.__qualname__}" == name
    )


#: scikit-learn modules whose classes are not fitted models' machinery:
#: test helpers, data loaders, inter-process callbacks, vendored code
_NOT_INTERNAL = (
    "sklearn.utils._testing",
    "sklearn.utils._show_versions",
    "sklearn.callback",
    "sklearn.datasets",
    "sklearn.experimental",
    "sklearn.externals",
    "sklearn.conftest",
    "sklearn._build_utils",
    "sklearn.__check_build",
)


def _resolve(parts: list[str]) -> Any:
    """The object a dotted name denotes, or None. Only modules of that name
    are imported: callers pass scikit-learn names or names already trusted."""
    import importlib

    for split in range(len(parts) - 1, 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for attr in parts[split:]:
            obj = getattr(obj, attr, None)
            if obj is None:
                return None
        return obj
    return None


def spec_types(request: Mapping[str, Any]) -> set[str]:
    """The fully qualified types and functions a job's request names.

    These are trusted when loading the job's best estimator: they are what
    the user asked for.
    """
    from .spec import CONSTANTS, TYPE_VALUES, constant_value, default_allowlist

    allow = default_allowlist()
    found: set[str] = set()

    def visit(value: Any) -> None:
        if isinstance(value, Mapping):
            if "class" in value and isinstance(value.get("class"), str):
                cls = allow.classes.get(value["class"])
                if cls is not None:
                    found.add(f"{cls.__module__}.{cls.__qualname__}")
                    found.update(_default_functions(cls))
            named = value.get("type")
            if set(value) == {"type"} and isinstance(named, str) and named in TYPE_VALUES:
                t = TYPE_VALUES[named]  # dtype=np.number
                found.add(f"{t.__module__}.{t.__qualname__}")
            named = value.get("constant")
            if set(value) == {"constant"} and isinstance(named, str) and named in CONSTANTS:
                t = type(constant_value(named, ""))  # pd.NA
                found.add(f"{t.__module__}.{t.__qualname__}")
                # older pandas name NAType's module as its home module
                found.add(f"pandas._libs.missing.{t.__qualname__}")
            if set(value) == {"function"} and isinstance(value["function"], str):
                fn = allow.functions.get(value["function"])
                if fn is not None:
                    found.add(f"{fn.__module__}.{getattr(fn, '__qualname__', fn.__name__)}")
            for v in value.values():
                visit(v)
        elif isinstance(value, list):
            for v in value:
                visit(v)
        elif value == "passthrough":
            passthrough.append(value)

    passthrough: list[str] = []
    visit(request.get("estimator"))
    visit(request.get("param_grid"))
    visit(request.get("param_distributions"))
    union = allow.classes["sklearn.pipeline.FeatureUnion"]
    if passthrough and f"{union.__module__}.{union.__qualname__}" in found:
        # a FeatureUnion fits a "passthrough" entry as an identity
        # FunctionTransformer, which its fitted transformer_list holds
        cls = allow.classes["sklearn.preprocessing.FunctionTransformer"]
        found.add(f"{cls.__module__}.{cls.__qualname__}")
    return found


def _default_functions(cls: type) -> set[str]:
    """The functions a class's constructor defaults to (SelectKBest's
    ``f_classif``): naming the class asks for them too."""
    import inspect

    try:
        params = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):
        return set()
    return {
        f"{p.default.__module__}.{p.default.__qualname__}"
        for p in params
        if inspect.isfunction(p.default) or inspect.isbuiltin(p.default)
    }


@functools.cache
def _scorer_functions() -> frozenset[str]:
    """The scikit-learn metric functions behind its scorer names: a fitted
    search or threshold tuner inside the best estimator keeps the scorer it
    was given by name (``scoring="roc_auc"`` holds ``roc_auc_score``)."""
    from sklearn.metrics import get_scorer, get_scorer_names

    functions = (getattr(get_scorer(name), "_score_func", None) for name in get_scorer_names())
    return frozenset(f"{f.__module__}.{f.__qualname__}" for f in functions if f is not None)


def load_audited(blob: bytes, request: Mapping[str, Any]) -> Any:
    """Load a skops file trusting only the types the job's spec names."""
    import skops.io as sio

    from .spec import default_allowlist

    named = spec_types(request)
    trusted = named | _FITTED_HELPERS | _scorer_functions()
    # an estimator class must be one the spec names, private module or not
    estimators = {
        f"{c.__module__}.{c.__qualname__}"
        for c in default_allowlist().classes.values()
        if hasattr(c, "get_params")  # not splitters or column selectors
    }
    untrusted = set(sio.get_untrusted_types(data=blob))
    unexpected = sorted(
        t for t in untrusted - trusted if t in estimators or not _fitted_internal(t)
    )
    if unexpected:
        raise errors.DataError(
            "the best estimator holds types the job's spec does not name, refusing to "
            f"load it: {', '.join(unexpected)}"
        )
    loaded = sio.loads(blob, trusted=sorted(untrusted))
    # skops trusts many scikit-learn estimators by default: check that every
    # estimator in what arrived is one the spec asked for
    found = {f"{type(loaded).__module__}.{type(loaded).__qualname__}"}
    if hasattr(loaded, "get_params"):
        for value in loaded.get_params(deep=True).values():
            if hasattr(value, "get_params") and not isinstance(value, type):
                found.add(f"{type(value).__module__}.{type(value).__qualname__}")
    stray = sorted(found - named)
    if stray:
        raise errors.DataError(
            "the best estimator is not what the job's spec describes, refusing it: "
            + ", ".join(stray)
        )
    _audit_callables(loaded, trusted)
    restore_strides(loaded)  # the layouts the file kept beside the arrays
    return loaded


def _audit_callables(root: Any, trusted: set[str]) -> None:
    """Walk what was loaded: no object may shadow a method of its class with
    an attribute of its own (a fitted model never does), and every function
    held anywhere, inside partials too, must be a trusted one, or one of the
    holding object's own class (scipy's ``interp1d`` keeps the method it
    interpolates with, as IsotonicRegression's ``f_``): the class is
    trusted, so is its code."""
    import functools
    import types

    seen: set[int] = set()
    stack = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, (str, bytes, int, float, bool, np.ndarray)):
            continue
        seen.add(id(obj))
        if isinstance(obj, (types.FunctionType, types.BuiltinFunctionType, np.ufunc)):
            name = f"{getattr(obj, '__module__', None)}.{getattr(obj, '__qualname__', '')}"
            if name not in trusted and not _same_function(obj, trusted):
                raise errors.DataError(
                    f"the best estimator holds a function the job's spec does not name: {name}"
                )
            continue
        if isinstance(obj, functools.partial):
            stack.extend([obj.func, *obj.args, *obj.keywords.values()])
            continue
        if isinstance(obj, Mapping):
            stack.extend(obj.keys())
            stack.extend(obj.values())
            continue
        if isinstance(obj, (list, tuple, set, frozenset)):
            stack.extend(obj)
            continue
        attrs = getattr(obj, "__dict__", None)
        if isinstance(attrs, dict):
            for key, value in attrs.items():
                if callable(getattr(type(obj), key, None)) and not isinstance(obj, type):
                    raise errors.DataError(
                        f"the best estimator's {type(obj).__name__} overrides its method "
                        f"{key!r}: refusing it"
                    )
                if not isinstance(value, types.FunctionType) or not _own_method(obj, value):
                    stack.append(value)


def _own_method(obj: Any, fn: Any) -> bool:
    """Whether ``fn`` is a function defined by ``obj``'s class (or a base)."""
    return any(vars(c).get(fn.__name__) is fn for c in type(obj).__mro__)


def _same_function(fn: Any, trusted: set[str]) -> bool:
    """A trusted function reached under another module path (numpy re-exports)."""
    name = getattr(fn, "__name__", "")
    return any(t.rsplit(".", 1)[-1] == name and _resolve(t.split(".")) is fn for t in trusted)


def _checked_token(token: str | None) -> str | None:
    """A token as given, without the whitespace a file or a copy adds (a
    newline from ``$(cat data/admin-token)`` in a shell is stripped, one
    from ``open(...).read()`` is not); one holding other whitespace or
    control characters is no token, refused without being quoted."""
    if token is None:
        return None
    token = token.strip()
    if any(not (" " < c <= "~") for c in token):
        raise errors.AuthError(
            "the token holds whitespace or control characters, which no memogrid token "
            "has (check MEMOGRID_TOKEN or the file it came from)"
        )
    return token


def _proxy_note(url: str) -> str:
    """A note for an unreachable service when the environment names a proxy:
    httpx sends requests through it (to loopback too) unless NO_PROXY names
    the host, and then the address that refused may be the proxy's."""
    names = [
        n
        for n in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
        if os.getenv(n) or os.getenv(n.lower())
    ]
    host = httpx.URL(url).host
    bypass = (os.getenv("NO_PROXY") or os.getenv("no_proxy") or "").split(",")
    if not names or host in {h.strip() for h in bypass} or "*" in bypass:
        return ""
    return (
        f" (requests may go through the proxy {' / '.join(names)} names: set NO_PROXY={host} "
        "to reach the service directly)"
    )


def _sklearn_config() -> dict[str, Any]:
    """This thread's scikit-learn settings that change a search's results and
    that the service runs it under (:data:`memogrid.spec.JOB_SKLEARN_SETTINGS`)."""
    return changed_sklearn_settings(JOB_SKLEARN_DEFAULTS)
