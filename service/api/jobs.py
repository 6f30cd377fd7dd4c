"""``/v1/jobs``: submit, read, list, cancel; results and the best estimator."""

from __future__ import annotations

import base64
import logging
import os
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.orm import undefer

from memogrid.wire import float_token

from ..db.models import DatasetOwner, Job, JobDataset, SplitResult
from ..db.ops import aware, lock_user, rowcount, utcnow
from ..runner.jobs import dataset_lookup, estimator_path
from ..runner.states import InvalidTransition, JobEvent, JobState, transition
from ..specs.jobs import compile_job
from .app import API_PREFIX, Services, services
from .auth import CurrentUser, Principal, current_user
from .problems import Problem, ProblemBody, known_query, refuse_unstorable
from .schemas import JobAccepted, JobList, JobOut, JobRequest, JobResults, Progress, SplitOut

# every route here needs a token, whatever its own parameters say
router = APIRouter(tags=["jobs"], dependencies=[Depends(current_user), Depends(known_query)])

log = logging.getLogger("memogrid.api")

JobPath = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="the job's id")]
_PROBLEM = {"model": ProblemBody}


def job_url(job_id: str) -> str:
    return f"{API_PREFIX}/jobs/{job_id}"


def job_out(job: Job) -> JobOut:
    return JobOut(
        id=job.id,
        url=job_url(job.id),
        state=job.state,  # type: ignore[arg-type]
        kind=job.kind,  # type: ignore[arg-type]
        dataset=job.x_id,
        created_at=aware(job.created_at),  # type: ignore[arg-type]
        started_at=aware(job.started_at),
        finished_at=aware(job.finished_at),
        error=job.error,
        n_candidates=job.n_candidates,
        n_splits=job.n_splits,
        progress=Progress(
            done=job.progress_done,
            total=job.progress_total,
            cache_hits=job.cache_hits,
            cache_misses=job.cache_misses,
            fits=job.fits,
        ),
        cancel_requested=job.cancel_requested,
        attempts=job.attempts,
    )


def get_job(svc: Services, user: Principal, job_id: str, *, full: bool = False) -> Job:
    """The job if ``user`` owns it; anyone else's is a 404, as is an unknown id.

    ``full`` loads the large JSON columns (request, results) too.
    """
    with svc.db.read() as s:
        job = s.get(Job, job_id, options=[undefer("*")] if full else None)
    if job is None or job.owner_id != user.user_id:
        raise Problem(404, f"job {job_id} not found")
    return job


#: splitters whose folds depend on ``random_state`` when they shuffle
_SHUFFLING = ("ShuffleSplit", "GroupShuffleSplit", "RepeatedKFold", "RepeatedStratifiedKFold")


def fix_randomness(request: dict) -> dict:
    """Draw now the seeds a job left to chance, and keep them in the job.

    scikit-learn draws randomized candidates and shuffled folds from the
    global generator when ``random_state`` is None; a job run twice (its
    service died and it was requeued) must draw the same ones, so that its
    result rows and its cached fits stay one consistent search.
    """
    import secrets

    if request.get("param_distributions") is not None and request.get("random_state") is None:
        request["random_state"] = secrets.randbelow(2**32)
    cv = request.get("cv")
    if isinstance(cv, dict) and isinstance(cv.get("class"), str):
        if cv.get("params") is None:  # a spec may write no params as null
            cv["params"] = {}
        params = cv["params"]
        name = cv["class"].rsplit(".", 1)[-1]
        shuffles = params.get("shuffle") is True or name.endswith(_SHUFFLING)
        if shuffles and params.get("random_state") is None:
            params["random_state"] = secrets.randbelow(2**32)
    return request


def require_json(request: Request) -> None:
    """A JSON body and nothing else: anything else is a 415, never parsed."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise Problem(
            415, f"content type {ctype or 'none'!r} is not accepted: send application/json"
        )


@router.post(
    "/jobs",
    status_code=202,
    response_model=JobAccepted,
    responses={400: _PROBLEM, 415: _PROBLEM, 422: _PROBLEM, 429: _PROBLEM},
    dependencies=[Depends(require_json)],
)
def submit_job(
    body: JobRequest,
    response: Response,
    svc: Annotated[Services, Depends(services)],
    user: CurrentUser,
) -> JobAccepted:
    """Queue a grid or randomized search over uploaded datasets.

    The spec is validated in full before the job is accepted: every class
    and function against the allowlist, every grid key against the
    estimator, every dataset id, X/y lengths and the grid-size cap.
    """
    refuse_unstorable(body.model_dump(exclude_unset=True))
    # validated as sent (a NaN stays a NaN, to be refused by name) ...
    compiled = compile_job(
        body.model_dump(exclude_unset=True),
        svc.allow,
        _stored(svc, dataset_lookup(svc.db, user.user_id)),
        svc.store.values,
        grid_max_fits=svc.settings.grid_max_fits,
    )
    # ... and stored as JSON (error_score NaN becomes null, read back as NaN)
    request = fix_randomness(body.model_dump(mode="json", exclude_unset=True))
    job_id = uuid.uuid4().hex
    live = (JobState.QUEUED.value, JobState.RUNNING.value)
    cap = svc.settings.user_max_active_jobs
    with svc.db.write() as s:
        # concurrent submits (and deletes) of this user wait for each other:
        # the cap counts them all, and a dataset deleted meanwhile is noticed
        lock_user(s, user.user_id)
        for role, did in compiled.datasets.items():
            if s.get(DatasetOwner, (did, user.user_id)) is None:
                where = "cv.folds" if role == "cv" else role.replace("fit:", "fit_params.")
                raise Problem(
                    422,
                    f"{where}: dataset {did!r} was deleted while the job was being submitted",
                    [{"path": where, "message": "unknown dataset"}],
                )
        active = s.scalar(
            select(func.count())
            .select_from(Job)
            .where(Job.owner_id == user.user_id, Job.state.in_(live))
        )
        if (active or 0) >= cap:
            raise Problem(
                429,
                f"you have {active} queued or running jobs, the most allowed at once; "
                "wait for one to finish or cancel one",
                headers={"Retry-After": "5"},
            )
        s.add(
            Job(
                id=job_id,
                owner_id=user.user_id,
                state=JobState.QUEUED.value,
                kind=compiled.kind,
                request=request,
                x_id=compiled.datasets["X"],
                created_at=utcnow(),
                n_candidates=compiled.n_candidates,
                n_splits=compiled.n_splits,
                progress_done=0,
                progress_total=compiled.n_candidates * compiled.n_splits,
                cache_hits=0,
                cache_misses=0,
                fits=0,
                cancel_requested=False,
                attempts=0,
                has_estimator=False,
            )
        )
        s.flush()
        for role, did in compiled.datasets.items():
            s.add(JobDataset(job_id=job_id, role=role, dataset_id=did))
    svc.runner.wake()
    response.headers["Location"] = job_url(job_id)
    return JobAccepted(id=job_id, url=job_url(job_id), state=JobState.QUEUED.value)


@router.get("/jobs/{job_id}", response_model=JobOut, responses={404: _PROBLEM})
def read_job(
    job_id: JobPath, svc: Annotated[Services, Depends(services)], user: CurrentUser
) -> JobOut:
    """A job's state, times, error and progress (fits done of total, cache
    hits) and, if it failed, what it warned about before."""
    job = get_job(svc, user, job_id)
    out = job_out(job)
    if job.state in (JobState.QUEUED.value, JobState.RUNNING.value):
        out.waiting = svc.search.waiting_for()
    if job.state == JobState.FAILED.value:
        with svc.db.read() as s:
            row = s.execute(select(Job.warnings, Job.stats).where(Job.id == job_id)).one()
        out.warnings = row.warnings or []
        out.warning_counts = (row.stats or {}).get("warning_counts") or {}
        out.warning_sources = (row.stats or {}).get("warning_sources") or {}
    return out


def _encode_cursor(job: Job) -> str:
    created = aware(job.created_at)
    assert created is not None
    raw = f"{created.isoformat()}|{job.id}".encode()
    return base64.urlsafe_b64encode(raw).decode()


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    """A cursor's time in UTC, as stored (SQLite compares the text: another
    offset, or none, read as it stands, paged differently from PostgreSQL)."""
    from datetime import UTC

    try:
        created, job_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        when = datetime.fromisoformat(created)
        if when.utcoffset() != timedelta(0):
            raise ValueError("a cursor's time is in UTC")
        return when.astimezone(UTC), job_id
    except Exception:
        raise Problem(
            422,
            "cursor is not one this service handed out",
            [{"path": "cursor", "message": "bad cursor"}],
        ) from None


@router.get("/jobs", response_model=JobList, responses={422: _PROBLEM})
def list_jobs(
    svc: Annotated[Services, Depends(services)],
    user: CurrentUser,
    state: Annotated[
        list[Literal["queued", "running", "succeeded", "failed", "cancelled"]] | None,
        Query(description="keep jobs in these states"),
    ] = None,
    dataset: Annotated[
        str | None,
        Query(pattern=r"^[0-9a-f]{64}$", description="keep jobs that read this dataset"),
    ] = None,
    created_after: Annotated[
        str | None,
        Query(description="ISO 8601 date-time", json_schema_extra={"format": "date-time"}),
    ] = None,
    created_before: Annotated[
        str | None,
        Query(description="ISO 8601 date-time", json_schema_extra={"format": "date-time"}),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> JobList:
    """Your jobs, newest first, filtered and paginated (pass ``next_cursor`` back)."""
    q = select(Job).where(Job.owner_id == user.user_id)
    if state:
        q = q.where(Job.state.in_(state))
    if dataset:
        q = q.where(Job.id.in_(select(JobDataset.job_id).where(JobDataset.dataset_id == dataset)))
    if created_after is not None:
        q = q.where(Job.created_at >= _when(created_after, "created_after"))
    if created_before is not None:
        q = q.where(Job.created_at < _when(created_before, "created_before"))
    if cursor is not None:
        c_created, c_id = _decode_cursor(cursor)
        q = q.where(
            or_(
                Job.created_at < c_created,
                and_(Job.created_at == c_created, Job.id < c_id),
            )
        )
    q = q.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1)
    with svc.db.read() as s:
        jobs = list(s.scalars(q))
    more = len(jobs) > limit
    jobs = jobs[:limit]
    return JobList(
        items=[job_out(j) for j in jobs],
        next_cursor=_encode_cursor(jobs[-1]) if more and jobs else None,
    )


def _when(text: str, name: str) -> datetime:
    """An ISO 8601 date-time (a bare number is not one), in UTC as stored
    (SQLite compares the text, so offsets must agree)."""
    from datetime import UTC

    try:
        if text.replace(".", "", 1).lstrip("-").isdigit():
            raise ValueError
        value = datetime.fromisoformat(text)
    except ValueError:
        raise Problem(
            422,
            f"{name} must be an ISO 8601 date-time such as 2026-11-25T12:00:00Z, not {text!r}",
            [{"path": name, "message": "not an ISO 8601 date-time"}],
        ) from None
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+14:00 is before year 1 in UTC
        raise Problem(
            422,
            f"{name} {text!r} is outside the date-times that can be expressed in UTC",
            [{"path": name, "message": "out of range in UTC"}],
        ) from None


@router.post(
    "/jobs/{job_id}/cancel",
    status_code=202,
    response_model=JobOut,
    responses={404: _PROBLEM, 409: _PROBLEM},
)
def cancel_job(
    job_id: JobPath, svc: Annotated[Services, Depends(services)], user: CurrentUser
) -> JobOut:
    """Cancel a queued job at once, or ask the runner to stop a running one."""
    with svc.db.write() as s:
        # locked: a job ending meanwhile is read ended (409), never left
        # ended with a cancel asked for
        job = s.get(Job, job_id, with_for_update=True)
        if job is None or job.owner_id != user.user_id:
            raise Problem(404, f"job {job_id} not found")
        try:
            after = transition(job.state, JobEvent.CANCEL)
        except InvalidTransition as exc:
            raise Problem(409, f"job {job_id}: {exc}") from None
        cancelled_at_once = job.state == JobState.QUEUED.value and rowcount(
            s.execute(
                update(Job)
                .where(Job.id == job_id, Job.state == JobState.QUEUED.value)
                .values(state=after.value, finished_at=utcnow(), cancel_requested=True)
            )
        )
        if not cancelled_at_once:  # running (or claimed a moment ago): the runner stops it
            s.execute(update(Job).where(Job.id == job_id).values(cancel_requested=True))
    return job_out(get_job(svc, user, job_id))


@router.delete(
    "/jobs/{job_id}",
    status_code=204,
    responses={404: _PROBLEM, 409: _PROBLEM},
)
def delete_job(
    job_id: JobPath, svc: Annotated[Services, Depends(services)], user: CurrentUser
) -> Response:
    """Delete your ended job: its record, results, candidates and refit estimator.

    Refused (409) while it is queued or running: cancel it first. Its cached
    fits stay in the shared cache, for the searches that reuse them.
    """
    with svc.db.write() as s:
        # locked as the runner locks it to finish: a job ending meanwhile is
        # read ended and deleted, or read running and refused
        job = s.get(Job, job_id, with_for_update=True)
        if job is None or job.owner_id != user.user_id:
            raise Problem(404, f"job {job_id} not found")
        if not JobState(job.state).terminal:
            if job.cancel_requested:
                said = "its cancel is asked for: delete it once it has stopped"
            else:
                said = f"cancel it first (POST /v1/jobs/{job_id}/cancel)"
            raise Problem(409, f"job {job_id} is {job.state}: {said}")
        # its datasets' roles, splits and candidates go with it (ON DELETE CASCADE)
        s.execute(delete(Job).where(Job.id == job_id))
    # after the commit: a delete that failed leaves the estimator in place (a
    # file a crash leaves here is swept when a runner starts: JobRunner)
    try:
        estimator_path(svc.settings.estimators_dir, job_id).unlink(missing_ok=True)
    except OSError as exc:  # the job is deleted all the same
        log.warning("could not remove deleted job %s's estimator: %r", job_id, exc)
    return Response(status_code=204)


@router.get(
    "/jobs/{job_id}/results",
    response_model=JobResults,
    responses={404: _PROBLEM, 409: _PROBLEM},
)
def job_results(
    job_id: JobPath, svc: Annotated[Services, Depends(services)], user: CurrentUser
) -> JobResults:
    """``cv_results_`` in scikit-learn's keys (columnar, lossless), best index, params, score."""
    job = get_job(svc, user, job_id, full=True)
    if job.state != JobState.SUCCEEDED.value or job.cv_results is None:
        # its error's first line: the rest (scikit-learn's tracebacks of the
        # failed fits) is the job's own, at GET /v1/jobs/{id}
        lines = [line.strip() for line in (job.error or "").splitlines() if line.strip()]
        first = " ".join(lines[:2]) if lines and lines[0].endswith(":") else "".join(lines[:1])
        why = f": {first} (the whole error: GET {job_url(job_id)})" if first else ""
        raise Problem(409, f"job {job_id} is {job.state}, results exist once it succeeded{why}")
    return JobResults(
        id=job.id,
        cv_results=job.cv_results,
        best_index=job.best_index,
        best_params=job.best_params,
        best_score=_best_score(job),
        refit_metric=job.refit_metric,
        n_splits=job.n_splits,
        multimetric=_multimetric(job.request.get("scoring")),
        has_estimator=job.has_estimator,
        warnings=job.warnings or [],
        stats=job.stats or {},
        request=job.request,
    )


def _best_score(job: Job) -> Any:
    """The best score as a float token: NaN and infinities (kept in the
    stats, the column holding finite scores only) included."""
    exact = (job.stats or {}).get("best_score")
    if exact is not None:
        return exact
    return float_token(job.best_score) if job.best_score is not None else None


@router.get("/jobs/{job_id}/splits", response_model=list[SplitOut], responses={404: _PROBLEM})
def job_splits(
    job_id: JobPath, svc: Annotated[Services, Depends(services)], user: CurrentUser
) -> list[SplitOut]:
    """Every (candidate, split) result written so far, also while the job runs."""
    get_job(svc, user, job_id)
    with svc.db.read() as s:
        rows = s.scalars(
            select(SplitResult)
            .where(SplitResult.job_id == job_id)
            .order_by(SplitResult.candidate, SplitResult.split)
        ).all()
    return [
        SplitOut(
            candidate=r.candidate,
            split=r.split,
            test_scores=r.test_scores,
            train_scores=r.train_scores,
            fit_time=r.fit_time,
            score_time=r.score_time,
            fit_failed=r.fit_failed,
            cached=r.cached,
        )
        for r in rows
    ]


@router.get(
    "/jobs/{job_id}/estimator",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "a skops file"},
        404: _PROBLEM,
        409: _PROBLEM,
    },
)
def job_estimator(
    job_id: JobPath, svc: Annotated[Services, Depends(services)], user: CurrentUser
) -> StreamingResponse:
    """The refit best estimator as a skops file (load it with its types audited)."""
    job = get_job(svc, user, job_id)
    if job.state != JobState.SUCCEEDED.value:
        raise Problem(
            409, f"job {job_id} is {job.state}; the best estimator exists once it succeeded"
        )
    missing = Problem(404, f"job {job_id} has no refit estimator (it ran with refit=False)")
    if not job.has_estimator:
        raise missing
    # opened here, not when the answer is sent (as FileResponse does): a
    # delete of the job meanwhile takes the name away, not the open file
    try:
        f = open(estimator_path(svc.settings.estimators_dir, job_id), "rb")  # noqa: SIM115
    except FileNotFoundError:
        raise missing from None
    size = os.fstat(f.fileno()).st_size

    def chunks() -> Iterator[bytes]:
        with f:
            while chunk := f.read(1 << 20):
                yield chunk

    return StreamingResponse(
        chunks(),
        media_type="application/octet-stream",
        headers={
            "content-length": str(size),
            "content-disposition": f'attachment; filename="memogrid-{job_id}.skops"',
        },
    )


def _multimetric(scoring: Any) -> bool:
    """Whether a job's ``scoring`` names several metrics (a single scorer spec does not)."""
    from memogrid.spec import is_scorer_spec

    return isinstance(scoring, (list, dict)) and not is_scorer_spec(scoring)


def _stored(svc: Services, lookup: Callable[[str], Any]) -> Callable[[str], Any]:
    """``lookup``, answering None (unknown: upload it) for a dataset whose
    file is gone from the store or damaged, so the job is refused, not failed
    later."""

    def found(did: str) -> Any:
        shape = lookup(did)
        return shape if shape is not None and svc.store.holds(did, shape.size) else None

    return found
