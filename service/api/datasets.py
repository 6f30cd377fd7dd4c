"""``/v1/datasets``: streamed uploads, lookups, existence checks, deletion."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Path, Request, Response
from sqlalchemy import select

from ..db.models import Dataset, DatasetOwner, Job, JobDataset
from ..db.ops import aware, insert_ignoring_duplicates, lock_user, utcnow
from ..runner.states import JobState
from ..store.datasets import SUFFIXES
from ..store.uploads import (
    NPY_TYPES,
    PARQUET_TYPES,
    SPARSE_TYPE,
    TEXT_TYPE,
    DatasetInfo,
    Upload,
    UploadError,
    media_kind,
)
from .app import Services, services
from .auth import CurrentUser, Principal, current_user
from .problems import Problem, known_query
from .schemas import DatasetOut

# every route here needs a token, whatever its own parameters say
log = logging.getLogger(__name__)
router = APIRouter(tags=["datasets"], dependencies=[Depends(current_user), Depends(known_query)])

DatasetPath = Annotated[
    str, Path(pattern=r"^[0-9a-f]{64}$", description="the dataset's SHA-256 content id")
]
#: bytes handed to the writing thread at a time (hashing stays off the event loop)
_BATCH = 4 << 20


def _out(ds: Dataset, owned: DatasetOwner) -> DatasetOut:
    return DatasetOut(
        id=ds.id,
        kind=ds.kind,  # type: ignore[arg-type]
        shape=ds.shape,
        dtype=ds.dtype,
        columns=ds.columns,
        size=ds.size,
        created_at=aware(owned.created_at),  # type: ignore[arg-type]
    )


def get_dataset(svc: Services, user: Principal, dataset_id: str) -> tuple[Dataset, DatasetOwner]:
    """The dataset if ``user`` owns it; anyone else's is a 404, as is an unknown id."""
    with svc.db.read() as s:
        row = s.execute(
            select(Dataset, DatasetOwner)
            .join(DatasetOwner, DatasetOwner.dataset_id == Dataset.id)
            .where(Dataset.id == dataset_id, DatasetOwner.user_id == user.user_id)
        ).first()
    if row is None:
        raise Problem(404, f"dataset {dataset_id} not found")
    return row[0], row[1]


def _owned_bytes(s: Any, user: Principal) -> int:
    from sqlalchemy import func

    total = s.scalar(
        select(func.coalesce(func.sum(Dataset.size), 0))
        .join(DatasetOwner, DatasetOwner.dataset_id == Dataset.id)
        .where(DatasetOwner.user_id == user.user_id)
    )
    return int(total or 0)


_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "description": "an array as .npy, a DataFrame as Parquet, text (strings) as "
        "their int64 offsets (.npy) followed by their UTF-8 bytes, or a sparse X as "
        "memogrid's CSR body (memogrid.sparse), streamed",
        "content": {
            NPY_TYPES[0]: {"schema": {"type": "string", "format": "binary"}},
            PARQUET_TYPES[0]: {"schema": {"type": "string", "format": "binary"}},
            TEXT_TYPE: {"schema": {"type": "string", "format": "binary"}},
            SPARSE_TYPE: {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


@router.post(
    "/datasets",
    status_code=201,
    response_model=DatasetOut,
    openapi_extra=_UPLOAD_BODY,
    responses={
        200: {"model": DatasetOut, "description": "already stored: nothing written"},
        413: {"description": "larger than the upload limit"},
        415: {"description": "neither .npy, Parquet, text nor a sparse matrix"},
        422: {"description": "the content is refused (object dtype, bad header, ...)"},
    },
)
async def upload_dataset(
    request: Request,
    response: Response,
    svc: Annotated[Services, Depends(services)],
    user: CurrentUser,
) -> DatasetOut:
    """Upload an array, text, a DataFrame or a sparse X; its id is the SHA-256
    of its content."""
    limit = svc.settings.upload_max_bytes
    quota = svc.settings.user_max_bytes
    try:
        kind = media_kind(request.headers.get("content-type"))
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise UploadError(413, f"the upload of {length} bytes exceeds the limit of {limit}")
        # refused early only if it cannot fit at all: re-sending a dataset
        # you hold already is fine near the quota (checked once it is hashed)
        if length is not None and length.isdigit() and int(length) > quota:
            raise UploadError(
                413, f"the upload would take your datasets past your quota of {quota} bytes"
            )
    except UploadError as exc:
        raise Problem(exc.status or 422, exc.message) from None

    def recorded(dataset_id: str) -> int | None:
        with svc.db.read() as s:
            return s.scalars(select(Dataset.size).where(Dataset.id == dataset_id)).first()

    with svc.uploads.take(user.user_id):
        return await _receive(request, response, svc, user, kind, recorded)


async def _receive(
    request: Request,
    response: Response,
    svc: Services,
    user: Principal,
    kind: str,
    recorded: Any,
) -> DatasetOut:
    limit = svc.settings.upload_max_bytes
    upload = await anyio.to_thread.run_sync(Upload, svc.store, kind, limit, recorded)
    try:
        buf = bytearray()
        async for chunk in request.stream():
            buf += chunk
            if len(buf) >= _BATCH:
                data, buf = bytes(buf), bytearray()
                await anyio.to_thread.run_sync(upload.feed, data)
        if buf:
            await anyio.to_thread.run_sync(upload.feed, bytes(buf))
        if upload.received == 0:
            raise UploadError(422, "the upload is empty")
        info = await anyio.to_thread.run_sync(upload.finish)
    except UploadError as exc:
        upload.abort()
        raise Problem(exc.status or 422, exc.message) from None
    except BaseException:
        upload.abort()
        raise
    try:
        created = await anyio.to_thread.run_sync(_record, svc, user, info)
    except Problem:
        raise
    except BaseException:  # the database failed: the file must not outlive its record
        await anyio.to_thread.run_sync(_forget_unrecorded, svc, info.id)
        raise
    if not created:
        response.status_code = 200
    return _out(*get_dataset(svc, user, info.id))


class UploadSlots:
    """Uploads under way, per user, at most ``per_user`` at once.

    An upload is spooled to disk (up to the upload limit) before its content
    is known and held against its owner's quota: without a bound, one user's
    parallel uploads filled the disk past any quota before one was refused.
    """

    def __init__(self, per_user: int):
        self.per_user = per_user
        self._under_way: dict[str, int] = {}
        self._lock = threading.Lock()

    @contextmanager
    def take(self, user_id: str) -> Iterator[None]:
        with self._lock:
            n = self._under_way.get(user_id, 0)
            if n >= self.per_user:
                raise Problem(
                    429,
                    f"you have {n} uploads under way, the most at once "
                    "(MEMOGRID_USER_MAX_UPLOADS); send this one when one has ended",
                    headers={"Retry-After": "2"},
                )
            self._under_way[user_id] = n + 1
        try:
            yield
        finally:
            with self._lock:
                left = self._under_way[user_id] - 1
                if left:
                    self._under_way[user_id] = left
                else:
                    del self._under_way[user_id]


def _record(svc: Services, user: Principal, info: DatasetInfo) -> bool:
    """Record the dataset and ``user``'s ownership; False if they owned it already.

    The quota is checked here against what the user holds now, under their
    lock: uploads streamed at the same time each count the others'.
    """
    with svc.db.write() as s:
        lock_user(s, user.user_id)
        used = _owned_bytes(s, user)
        # inserted first, unless there: a row locked below that did not
        # exist yet locked nothing, and two users uploading the same new
        # content at once both inserted it (a 500 on PostgreSQL)
        row = dict(
            id=info.id,
            kind=info.kind,
            shape=info.shape,
            dtype=info.dtype,
            columns=info.columns,
            size=info.size,
            created_at=utcnow(),
        )
        ds = None
        while ds is None:  # again if a delete by anyone took it in between
            insert_ignoring_duplicates(s, Dataset, [row])
            # waits for a delete of the same content by anyone to commit (or not)
            ds = s.scalars(select(Dataset).where(Dataset.id == info.id).with_for_update()).first()
        if ds.size != info.size:  # its file was damaged, and this upload replaced it
            ds.size = info.size
        if s.get(DatasetOwner, (info.id, user.user_id)) is not None:
            return False
        if used + info.size > svc.settings.user_max_bytes:
            unowned = not s.scalars(
                select(DatasetOwner.user_id).where(DatasetOwner.dataset_id == info.id).limit(1)
            ).first()
            if unowned:
                s.delete(ds)
                _remove_files(svc, info.id)
            raise Problem(
                413,
                f"the dataset ({info.size} bytes) would take your datasets past your "
                f"quota of {svc.settings.user_max_bytes} bytes",
            )
        if not svc.store.exists(info.id):
            # the last other holder deleted the same content (and its files)
            # after this upload found them in place: nothing to point at
            raise Problem(
                409,
                f"dataset {info.id} was deleted by its last other holder while it was "
                "being uploaded; upload it again",
            )
        s.add(DatasetOwner(dataset_id=info.id, user_id=user.user_id, created_at=utcnow()))
    return True


def _forget_unrecorded(svc: Services, dataset_id: str) -> None:
    """Remove the files of an upload whose recording failed, unless a row
    records the content (another holder's); left for the sweep at the next
    start (:meth:`DatasetStore.sweep_unrecorded`) if the database is away."""
    try:
        with svc.db.write() as s:
            # waits for another upload of the same content recording it now
            if s.get(Dataset, dataset_id, with_for_update=True) is None:
                _remove_files(svc, dataset_id)
    except Exception:
        log.warning("could not tell whether dataset %s is held; left in place", dataset_id)


def _remove_files(svc: Services, dataset_id: str) -> None:
    for suffix in SUFFIXES:
        svc.store._path(dataset_id, suffix).unlink(missing_ok=True)


@router.get("/datasets/{dataset_id}", response_model=DatasetOut)
def read_dataset(
    dataset_id: DatasetPath, svc: Annotated[Services, Depends(services)], user: CurrentUser
) -> DatasetOut:
    """A dataset's shape, dtype or columns, size and upload time."""
    ds, owner = get_dataset(svc, user, dataset_id)
    if not svc.store.holds(dataset_id, ds.size):
        raise Problem(404, _GONE.format(dataset_id))
    return _out(ds, owner)


#: a dataset whose row is there but whose file is not (removed by hand) or
#: is damaged: not held, so clients upload it again, which puts the file back
_GONE = "dataset {} is recorded but its file is gone from the store or damaged: upload it again"


@router.head(
    "/datasets/{dataset_id}",
    responses={200: {"description": "stored"}, 404: {"description": "not stored"}},
)
def dataset_exists(
    dataset_id: DatasetPath, svc: Annotated[Services, Depends(services)], user: CurrentUser
) -> Response:
    """Whether you hold this dataset: clients skip uploads the service already has for you.

    Only your own datasets count: whether someone else uploaded the same
    content is never revealed.
    """
    with svc.db.read() as s:
        size = s.scalars(
            select(Dataset.size)
            .join(DatasetOwner, DatasetOwner.dataset_id == Dataset.id)
            .where(Dataset.id == dataset_id, DatasetOwner.user_id == user.user_id)
        ).first()
    # a file gone from the store, or damaged, is not held: the client uploads it again
    held = size is not None and svc.store.holds(dataset_id, size)
    return Response(status_code=200 if held else 404)


@router.delete(
    "/datasets/{dataset_id}",
    status_code=204,
    responses={409: {"description": "a queued or running job uses it"}},
)
def delete_dataset(
    dataset_id: DatasetPath, svc: Annotated[Services, Depends(services)], user: CurrentUser
) -> Response:
    """Delete your dataset; refused while one of your queued or running jobs reads it.

    The bytes go once no one else holds the same content and no job reads it.
    """
    live = (JobState.QUEUED.value, JobState.RUNNING.value)
    with svc.db.write() as s:
        lock_user(s, user.user_id)  # a job being queued on it sees the delete, or we its job
        owned = s.get(DatasetOwner, (dataset_id, user.user_id))
        if owned is None:
            raise Problem(404, f"dataset {dataset_id} not found")
        users = s.scalars(
            select(Job.id)
            .join(JobDataset, JobDataset.job_id == Job.id)
            .where(
                JobDataset.dataset_id == dataset_id,
                Job.owner_id == user.user_id,
                Job.state.in_(live),
            )
            .limit(5)
        ).all()
        if users:
            raise Problem(
                409,
                f"dataset {dataset_id} is used by queued or running jobs: {', '.join(users)}",
            )
        # the content's row is locked before its holders are counted: an
        # upload of the same content recording its owner meanwhile is seen
        # (it waits for this, or this for it), never deleted by the cascade
        ds = s.scalars(select(Dataset).where(Dataset.id == dataset_id).with_for_update()).first()
        s.delete(owned)
        s.flush()
        others = s.scalars(
            select(DatasetOwner.user_id).where(DatasetOwner.dataset_id == dataset_id).limit(1)
        ).first()
        in_use = s.scalars(
            select(Job.id)
            .join(JobDataset, JobDataset.job_id == Job.id)
            .where(JobDataset.dataset_id == dataset_id, Job.state.in_(live))
            .limit(1)
        ).first()
        gone = others is None and in_use is None
        if gone:
            if ds is not None:
                s.delete(ds)
            # before the commit, while the row is held: an upload of the same
            # content recording itself meanwhile waits, then finds no files
            _remove_files(svc, dataset_id)
    return Response(status_code=204)
