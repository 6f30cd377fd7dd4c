"""SQLAlchemy 2 models: datasets, jobs, and their results.

Results are stored three ways, each for one kind of question:

- ``split_results``: one row per (job, candidate, split), written as the
  engine reports them, so progress is visible and nothing is lost;
- ``candidates``: one row per (job, candidate) with the refit metric's mean,
  std and rank, indexed by dataset for the cross-job leaderboard;
- ``candidate_params``: one row per (job, candidate, parameter) holding the
  value's canonical JSON, indexed by (name, hash of the value) for "all results where
  ``C`` is 10".

The job row keeps the scikit-learn shaped ``cv_results_`` (columnar JSON)
so a finished job is read back in one query.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

#: constraint names fixed by convention so migrations are reproducible
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

ID = String(64)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class User(Base):
    """Someone who owns datasets and jobs; authenticated by :class:`Token`."""

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Token(Base):
    """An API token: ``mg_<id>_<secret>``, of which only a hash of the secret is kept."""

    __tablename__ = "tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Dataset(Base):
    """An uploaded array or DataFrame, stored on disk under its content id.

    The bytes are shared; who may use them is :class:`DatasetOwner`.
    """

    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # "array" | "text" | "frame" | "sparse"
    shape: Mapped[list[int]] = mapped_column(JSON)
    #: numpy dtype string for arrays; ``None`` for frames
    dtype: Mapped[str | None] = mapped_column(String(64))
    #: ``[[name, arrow type], ...]`` for frames; ``None`` for arrays
    columns: Mapped[list[Any] | None] = mapped_column(JSON)
    size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class DatasetOwner(Base):
    """A user who uploaded a dataset (each uploader owns it, none sees the others)."""

    __tablename__ = "dataset_owners"

    dataset_id: Mapped[str] = mapped_column(
        ForeignKey("datasets.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index("ix_dataset_owners_user", "user_id", "created_at"),)


class Job(Base):
    """One submitted search and everything known about its run."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    state: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(16))  # "grid" | "random"
    # the large JSON columns load only when read: status polls and listings
    # never touch them
    request: Mapped[dict[str, Any]] = mapped_column(JSON, deferred=True)
    #: X's dataset id (no foreign key: ids are content hashes, and a job's
    #: record outlives the deletion of the data it read)
    x_id: Mapped[str] = mapped_column(ID)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error: Mapped[str | None] = mapped_column(Text)
    n_candidates: Mapped[int] = mapped_column(Integer, default=0)
    n_splits: Mapped[int] = mapped_column(Integer, default=0)
    #: distinct (candidate, split) results done and to do, and how many of
    #: the done ones came from the cache
    progress_done: Mapped[int] = mapped_column(Integer, default=0)
    progress_total: Mapped[int] = mapped_column(Integer, default=0)
    cache_hits: Mapped[int] = mapped_column(Integer, default=0)
    cache_misses: Mapped[int] = mapped_column(Integer, default=0)
    fits: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    refit_metric: Mapped[str | None] = mapped_column(String(128))
    best_index: Mapped[int | None] = mapped_column(Integer)
    best_score: Mapped[float | None] = mapped_column(Float)
    best_params: Mapped[Any | None] = mapped_column(JSON, deferred=True)
    cv_results: Mapped[dict[str, Any] | None] = mapped_column(JSON, deferred=True)
    warnings: Mapped[list[str] | None] = mapped_column(JSON, deferred=True)
    stats: Mapped[dict[str, Any] | None] = mapped_column(JSON, deferred=True)
    has_estimator: Mapped[bool] = mapped_column(Boolean, default=False)

    __table_args__ = (
        # the runner's queue
        Index("ix_jobs_state_created", "state", "created_at"),
        # a user's listings, newest first, and by state; the id breaks ties,
        # so one backward index scan yields the page in order
        Index("ix_jobs_owner_created", "owner_id", "created_at", "id"),
        Index("ix_jobs_owner_state", "owner_id", "state", "created_at", "id"),
    )


class JobDataset(Base):
    """Which datasets a job reads, by role (``X``, ``y``, ``groups``, ``fit:<name>``,
    ``cv`` for explicit folds)."""

    __tablename__ = "job_datasets"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    role: Mapped[str] = mapped_column(String(128), primary_key=True)
    dataset_id: Mapped[str] = mapped_column(ID)

    __table_args__ = (Index("ix_job_datasets_dataset", "dataset_id", "job_id"),)


class SplitResult(Base):
    """One (candidate, split) result, in ``_fit_and_score``'s terms."""

    __tablename__ = "split_results"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    candidate: Mapped[int] = mapped_column(Integer, primary_key=True)
    split: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: ``{metric: score}``; a non-finite score is stored as its string name
    test_scores: Mapped[dict[str, Any]] = mapped_column(JSON)
    train_scores: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    fit_time: Mapped[float] = mapped_column(Float)
    score_time: Mapped[float] = mapped_column(Float)
    fit_failed: Mapped[bool] = mapped_column(Boolean, default=False)
    cached: Mapped[bool] = mapped_column(Boolean, default=False)


class Candidate(Base):
    """One candidate of a finished job, ranked by the job's refit metric."""

    __tablename__ = "candidates"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    idx: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: the job's owner and X's dataset id, repeated here so the leaderboard
    #: is one index scan
    owner_id: Mapped[str] = mapped_column(ID)
    dataset_id: Mapped[str] = mapped_column(ID)
    metric: Mapped[str] = mapped_column(String(128))
    params: Mapped[Any] = mapped_column(JSON)
    mean_score: Mapped[float | None] = mapped_column(Float)
    std_score: Mapped[float | None] = mapped_column(Float)
    rank: Mapped[int] = mapped_column(Integer)

    # best first with ties broken by (job_id, idx): one backward scan, no sort
    __table_args__ = (
        Index("ix_candidates_leaderboard", "owner_id", "dataset_id", "mean_score", "job_id", "idx"),
    )


class CandidateParam(Base):
    """One parameter of one candidate, its value as canonical JSON text."""

    __tablename__ = "candidate_params"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    idx: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    owner_id: Mapped[str] = mapped_column(ID)
    #: the value's canonical JSON (estimator values as specs)
    value: Mapped[str] = mapped_column(Text)
    #: SHA-256 of ``value``: a short, exact index key whatever the value's size
    value_key: Mapped[str] = mapped_column(ID)

    __table_args__ = (
        Index("ix_candidate_params_lookup", "owner_id", "name", "value_key", "job_id", "idx"),
    )
