"""``/v1/datasets``: streamed uploads, lookups, existence checks, deletion."""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, Path, Request, Response
from sqlalchemy import select

from ..db.models import Dataset, Job, JobDataset
from ..db.ops import aware, utcnow
from ..runner.states import JobState
from ..store.uploads import NPY_TYPES, PARQUET_TYPES, DatasetInfo, Upload, UploadError, media_kind
from .app import Services, services
from .problems import Problem
from .schemas import DatasetOut

router = APIRouter(tags=["datasets"])

DatasetPath = Annotated[
    str, Path(pattern=r"^[0-9a-f]{64}$", description="the dataset's SHA-256 content id")
]
#: bytes handed to the writing thread at a time (hashing stays off the event loop)
_BATCH = 4 << 20


def _out(ds: Dataset) -> DatasetOut:
    return DatasetOut(
        id=ds.id,
        kind=ds.kind,  # type: ignore[arg-type]
        shape=ds.shape,
        dtype=ds.dtype,
        columns=ds.columns,
        size=ds.size,
        created_at=aware(ds.created_at),  # type: ignore[arg-type]
    )


def get_dataset(svc: Services, dataset_id: str) -> Dataset:
    with svc.db.read() as s:
        ds = s.get(Dataset, dataset_id)
    if ds is None:
        raise Problem(404, f"dataset {dataset_id} not found")
    return ds


_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "description": "an array as .npy, or a DataFrame as Parquet, streamed",
        "content": {
            NPY_TYPES[0]: {"schema": {"type": "string", "format": "binary"}},
            PARQUET_TYPES[0]: {"schema": {"type": "string", "format": "binary"}},
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
        415: {"description": "neither .npy nor Parquet"},
        422: {"description": "the content is refused (object dtype, bad header, ...)"},
    },
)
async def upload_dataset(
    request: Request, response: Response, svc: Annotated[Services, Depends(services)]
) -> DatasetOut:
    """Upload an array or DataFrame; its id is the SHA-256 of its content."""
    limit = svc.settings.upload_max_bytes
    try:
        kind = media_kind(request.headers.get("content-type"))
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise UploadError(413, f"the upload of {length} bytes exceeds the limit of {limit}")
    except UploadError as exc:
        raise Problem(exc.status or 422, exc.message) from None
    upload = await anyio.to_thread.run_sync(Upload, svc.store, kind, limit)
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
    created = await anyio.to_thread.run_sync(_record, svc, info)
    if not created:
        response.status_code = 200
    return _out(get_dataset(svc, info.id))


def _record(svc: Services, info: DatasetInfo) -> bool:
    with svc.db.write() as s:
        if s.get(Dataset, info.id) is not None:
            return False
        s.add(
            Dataset(
                id=info.id,
                kind=info.kind,
                shape=info.shape,
                dtype=info.dtype,
                columns=info.columns,
                size=info.size,
                created_at=utcnow(),
            )
        )
    return True


@router.get("/datasets/{dataset_id}", response_model=DatasetOut)
def read_dataset(
    dataset_id: DatasetPath, svc: Annotated[Services, Depends(services)]
) -> DatasetOut:
    """A dataset's shape, dtype or columns, size and upload time."""
    return _out(get_dataset(svc, dataset_id))


@router.head(
    "/datasets/{dataset_id}",
    responses={200: {"description": "stored"}, 404: {"description": "not stored"}},
)
def dataset_exists(
    dataset_id: DatasetPath, svc: Annotated[Services, Depends(services)]
) -> Response:
    """Whether a dataset is stored: clients skip uploads the service already holds."""
    with svc.db.read() as s:
        found = s.get(Dataset, dataset_id) is not None
    return Response(status_code=200 if found else 404)


@router.delete(
    "/datasets/{dataset_id}",
    status_code=204,
    responses={409: {"description": "a queued or running job uses it"}},
)
def delete_dataset(
    dataset_id: DatasetPath, svc: Annotated[Services, Depends(services)]
) -> Response:
    """Delete a dataset; refused while a queued or running job reads it."""
    live = (JobState.QUEUED.value, JobState.RUNNING.value)
    with svc.db.write() as s:
        ds = s.get(Dataset, dataset_id)
        if ds is None:
            raise Problem(404, f"dataset {dataset_id} not found")
        users = s.scalars(
            select(Job.id)
            .join(JobDataset, JobDataset.job_id == Job.id)
            .where(JobDataset.dataset_id == dataset_id, Job.state.in_(live))
            .limit(5)
        ).all()
        if users:
            raise Problem(
                409,
                f"dataset {dataset_id} is used by queued or running jobs: {', '.join(users)}",
            )
        # finished jobs keep their record of what they read
        s.delete(ds)
    for suffix in (".npy", ".parquet"):
        svc.store._path(dataset_id, suffix).unlink(missing_ok=True)
    return Response(status_code=204)
