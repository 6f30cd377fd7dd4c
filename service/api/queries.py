"""Cross-job queries (leaderboard, results by parameter value), cache and health."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from sqlalchemy import select

from memogrid.data import ENCODINGS
from memogrid.spec import SpecError, build_value, to_spec
from memogrid.wire import float_token

from ..db.models import Candidate, CandidateParam, Job
from ..db.ops import aware
from ..runner.jobs import param_key, param_text
from .app import Services, services
from .auth import CurrentUser, current_user
from .datasets import DatasetPath, get_dataset
from .problems import Problem, ProblemBody, known_query
from .schemas import CacheStats, CandidateOut, Health

# every route here needs a token, whatever its own parameters say
router = APIRouter(tags=["queries"], dependencies=[Depends(current_user), Depends(known_query)])
#: the only routes without a token
public = APIRouter(tags=["health"], dependencies=[Depends(known_query)])
_PROBLEM = {"model": ProblemBody}


def _candidate_out(c: Candidate, created: datetime) -> CandidateOut:
    return CandidateOut(
        job_id=c.job_id,
        candidate=c.idx,
        metric=c.metric,
        params=c.params,
        mean_score=None if c.mean_score is None else float_token(c.mean_score),
        std_score=None if c.std_score is None else float_token(c.std_score),
        rank=c.rank,
        created_at=aware(created) or created,
    )


@router.get(
    "/datasets/{dataset_id}/leaderboard",
    response_model=list[CandidateOut],
    responses={404: _PROBLEM},
)
def leaderboard(
    dataset_id: DatasetPath,
    svc: Annotated[Services, Depends(services)],
    user: CurrentUser,
    metric: Annotated[str | None, Query(max_length=128, description="only this metric")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
) -> list[CandidateOut]:
    """The best candidates over every one of your finished jobs on this X, best
    first, by one metric: ``metric`` names it where the jobs used several
    (scores of different metrics do not rank together)."""
    mine = (
        Candidate.owner_id == user.user_id,
        Candidate.dataset_id == dataset_id,
        Candidate.mean_score.is_not(None),
        Job.state == "succeeded",
    )
    with svc.db.read() as s:
        used = sorted(
            s.scalars(
                select(Candidate.metric)
                .join(Job, Job.id == Candidate.job_id)
                .where(*mine)
                .distinct()
            )
        )
    if metric and used and metric not in used:
        raise Problem(
            422,
            f"no finished job on this X was ranked by {metric!r}: its jobs' metrics are "
            f"{', '.join(used)}",
            [{"path": "query.metric", "message": "no job was ranked by it"}],
        )
    if not metric and len(used) > 1:
        raise Problem(
            422,
            f"the jobs on this X were ranked by several metrics ({', '.join(used)}), whose "
            "scores do not rank together: name one with metric=",
            [{"path": "query.metric", "message": "several metrics: name one"}],
        )
    # the one metric named or used: a job ranked by another one finishing
    # between the two reads must not join the ranking
    metric = metric or (used[0] if used else None)
    q = select(Candidate, Job.created_at).join(Job, Job.id == Candidate.job_id).where(*mine)
    if metric:
        q = q.where(Candidate.metric == metric)
    # ties as scikit-learn breaks them within a job (the first candidate),
    # and the older job's first across jobs
    q = q.order_by(
        Candidate.mean_score.desc(), Job.created_at, Candidate.job_id, Candidate.idx
    ).limit(limit)
    with svc.db.read() as s:
        rows = s.execute(q).all()
    if not rows:
        # none: a dataset of yours with no finished job yet, or a 404 (one
        # you deleted keeps its jobs' rows, so rows answer for it above)
        get_dataset(svc, user, dataset_id)
    return [_candidate_out(c, created) for c, created in rows]


@router.get("/results", response_model=list[CandidateOut], responses={422: _PROBLEM})
def results_by_param(
    svc: Annotated[Services, Depends(services)],
    user: CurrentUser,
    param: Annotated[str, Query(max_length=255, description="a grid key, e.g. clf__C")],
    value: Annotated[str, Query(max_length=4096, description='the value as JSON, e.g. 10 or "l2"')],
    dataset: Annotated[str | None, Query(pattern=r"^[0-9a-f]{64}$")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> list[CandidateOut]:
    """Every candidate, over all jobs, whose parameter ``param`` had ``value``
    (newest job first, each job's candidates in order), ``value`` written as
    a job's grid writes it."""
    text = _value_text(value, svc)
    q = (
        select(Candidate, Job.created_at)
        .join(
            CandidateParam,
            (CandidateParam.job_id == Candidate.job_id) & (CandidateParam.idx == Candidate.idx),
        )
        .join(Job, Job.id == Candidate.job_id)
        .where(
            CandidateParam.owner_id == user.user_id,
            CandidateParam.name == param,
            CandidateParam.value_key == param_key(text),
            Job.state == "succeeded",
        )
    )
    if dataset:
        q = q.where(Candidate.dataset_id == dataset)
    q = q.order_by(Job.created_at.desc(), Candidate.job_id, Candidate.idx).limit(limit)
    with svc.db.read() as s:
        rows = s.execute(q).all()
    return [_candidate_out(c, created) for c, created in rows]


def _value_text(raw: str, svc: Services) -> str:
    """The stored form ``raw`` (a JSON spec value, as a job's grid writes it)
    matches: read as the job's builder reads a grid value, written back as
    the runner stores one. An int and a float stay other values, as they
    are to scikit-learn (``max_features=1`` is one feature, ``1.0`` all)."""
    try:
        given = json.loads(raw)
    except (ValueError, RecursionError):
        raise Problem(
            422,
            f'value {raw!r} is not JSON (a string value is quoted: "l2"; NaN is '
            '{"float": "nan"})',
            [{"path": "value", "message": "not JSON"}],
        ) from None
    try:
        built = build_value(given, svc.allow, "value")
        return param_text(to_spec(built, svc.allow))
    except (SpecError, TypeError, ValueError) as exc:
        # a SpecError says its path (value, value.class, ...) itself
        said = str(exc) if isinstance(exc, SpecError) else f"value: {exc}"
        where = exc.path if isinstance(exc, SpecError) else "value"
        raise Problem(422, said, [{"path": where, "message": said}]) from None


@router.get(
    "/cache",
    response_model=CacheStats,
    responses={403: {"description": "an admin's to read", "model": ProblemBody}},
)
def cache_stats(svc: Annotated[Services, Depends(services)], user: CurrentUser) -> CacheStats:
    """The shared result cache: entries, bytes on disk, size limit. For
    admins: its figures move with every user's searches."""
    if not user.is_admin:
        raise Problem(
            403,
            "the shared cache's figures tell of every user's searches: "
            "they are for the admin token (data/admin-token) or `memogrid cache stats`",
        )
    return CacheStats(
        entries=len(svc.cache),
        volume=svc.cache.volume(),
        size_limit=svc.settings.cache_size_limit,
    )


@public.get("/health", response_model=Health)
def health(svc: Annotated[Services, Depends(services)]) -> Health:
    """Liveness: the database answers."""
    from sqlalchemy import text

    from .app import _version

    with svc.db.read() as s:
        s.execute(text("SELECT 1"))
    return Health(
        status="ok",
        version=_version(),
        schema_revision=svc.schema_revision,
        encodings=list(ENCODINGS),
    )
