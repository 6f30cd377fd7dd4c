"""The job runner: claims queued jobs from SQL and runs them on the engine.

One background thread polls for queued jobs and claims one at a time with
a guarded ``UPDATE ... WHERE state = 'queued'`` (so two runners never run
the same job); each claimed job runs in its own thread, up to
``max_concurrent``. A heartbeat thread extends the lease on every running
job and turns a cancel request written by the API into the engine's cancel
event. A job whose lease lapsed (its runner died) is requeued and run again:
its finished fits come back from the cache and its result rows are written
once (``insert_ignoring_duplicates``).

Every state change goes through :func:`~memogrid_service.runner.states.transition`.
"""

from __future__ import annotations

import functools
import logging
import os
import secrets
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import and_, func, or_, select, true, update

from memogrid.layout import mark_strides, unmark
from memogrid.spec import Allowlist, SpecError
from memogrid.wire import float_token

from ..db.models import Candidate, CandidateParam, Dataset, DatasetOwner, Job, SplitResult
from ..db.ops import aware, first_line, insert_ignoring_duplicates, rowcount, utcnow
from ..db.session import Database
from ..engine.search import SearchCancelled, SearchRunner, SearchStats, WarningLog
from ..engine.tasks import ScoreOutput
from ..specs.jobs import DatasetShape, compile_job
from ..store.datasets import DataRef, DatasetDamaged, sweep_stale
from .states import InvalidTransition, JobEvent, JobState, transition

log = logging.getLogger("memogrid.runner")

#: the suffix of a best estimator's file while it is written
PARTIAL_SUFFIX = ".tmp"
#: a job's refit estimator is ``<job id>.skops`` in the estimators directory
ESTIMATOR_SUFFIX = ".skops"


def estimator_path(directory: Path, job_id: str) -> Path:
    return directory / f"{job_id}{ESTIMATOR_SUFFIX}"


def dataset_lookup(
    db: Database, owner_id: str | None = None
) -> Callable[[str], DatasetShape | None]:
    """Dataset shapes from SQL, for :func:`compile_job`; only ``owner_id``'s if given."""

    def lookup(did: str) -> DatasetShape | None:
        with db.read() as s:
            ds = s.get(Dataset, did)
            if ds is None:
                return None
            if owner_id is not None and s.get(DatasetOwner, (did, owner_id)) is None:
                return None
            return DatasetShape(int(ds.shape[0]), ds.kind, ds.dtype, len(ds.shape), ds.size)

    return lookup


def _split_row(job_id: str, cand: int, split: int, o: ScoreOutput) -> dict[str, Any]:
    r = o.result

    def number(v: Any) -> Any:
        # a failed fit under error_score="raise" carries no score: keep NaN
        return float_token(float(v)) if isinstance(v, (int, float, np.number)) else "NaN"

    def scores(value: Any) -> dict[str, Any] | None:
        if value is None:
            return None
        if isinstance(value, dict):
            return {k: number(v) for k, v in value.items()}
        return {"score": number(value)}

    return {
        "job_id": job_id,
        "candidate": cand,
        "split": split,
        "test_scores": scores(r.get("test_scores")) or {},
        "train_scores": scores(r.get("train_scores")),
        "fit_time": float(r.get("fit_time", 0.0)),
        "score_time": float(r.get("score_time", 0.0)),
        "fit_failed": r.get("fit_error") is not None,
        "cached": o.final == "hit",
    }


class _Recorder:
    """Buffers split results and progress; writes them to SQL in batches."""

    def __init__(
        self,
        db: Database,
        job_id: str,
        grid: list[list[str]],
        held: Any,
        cancel: threading.Event,
        interval: float = 0.5,
    ):
        self.db, self.job_id, self.interval = db, job_id, interval
        #: the WHERE clause true while this attempt holds the job
        self.held, self.cancel = held, cancel
        #: a flush found the job held by another attempt
        self.lost = False
        self.where: dict[str, list[tuple[int, int]]] = {}
        for cand, row in enumerate(grid):
            for split, skey in enumerate(row):
                self.where.setdefault(skey, []).append((cand, split))
        self.rows: list[dict[str, Any]] = []
        # the engine's own counting, kept live: hits and fits of steps and scores
        self.stats = SearchStats()
        self._seen_steps: set[str] = set()
        self.done = 0
        self._last = 0.0
        self._lock = threading.Lock()

    def on_result(self, skey: str, o: ScoreOutput) -> None:
        with self._lock:
            self.done += 1
            SearchRunner._count(o, self._seen_steps, self.stats)
            for cand, split in self.where.get(skey, ()):
                self.rows.append(_split_row(self.job_id, cand, split, o))

    def on_progress(self, done: int, total: int, hits: int, o: ScoreOutput | None) -> None:
        import time

        now = time.monotonic()
        with self._lock:
            due = now - self._last >= self.interval or done == total
            if due:
                self._last = now
        if due:
            self.on_progress_flush()

    def on_progress_flush(self) -> None:
        """:meth:`flush` while the search runs: a database that fails it
        (a dropped connection) is tried again at the next report, the rows
        kept; the search's end flushes for certain."""
        try:
            self.flush()
        except Exception as exc:
            if not _database_trouble(exc):
                raise
            log.warning("job %s: progress not written (%s); trying again", self.job_id, exc)

    def flush(self) -> None:
        with self._lock:
            rows, self.rows = self.rows, []
            done, stats = self.done, self.stats
            hits, misses, fits = stats.hits, stats.misses, stats.fits
        try:
            self._write(rows, done, hits, misses, fits)
        except BaseException:
            with self._lock:  # not written: the next flush writes them
                self.rows[:0] = rows
            raise

    def _write(
        self, rows: list[dict[str, Any]], done: int, hits: int, misses: int, fits: int
    ) -> None:
        with self.db.write() as s:
            # nothing of an attempt whose job another attempt holds now (its
            # lease lapsed): its rows and counts went over the other's
            held = s.execute(
                update(Job)
                .where(self.held)
                .values(
                    progress_done=done,
                    cache_hits=hits,
                    cache_misses=misses,
                    fits=fits,
                )
            )
            if rowcount(held) != 1:
                self.lost = True
                self.cancel.set()
                return
            insert_ignoring_duplicates(s, SplitResult, rows)


def _database_trouble(exc: BaseException) -> bool:
    """Whether ``exc`` is the database away for a while (a connection cut,
    a server shutting down or starting, SQLite busy), not anything the job
    did: worth running the job again. A full disk, a timeout or a refused
    row is not: the job fails saying so."""
    from sqlalchemy.exc import DBAPIError, InterfaceError

    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated or isinstance(exc, InterfaceError):
        return True
    state = str(getattr(exc.orig, "sqlstate", None) or "")
    # PostgreSQL's connection exceptions, and its operator's shutdowns and restarts
    return state.startswith(("08", "57P")) or "database is locked" in str(exc.orig)


def _cluster_lost(exc: BaseException) -> bool:
    """Whether ``exc`` says the dask scheduler went away under a search."""
    from distributed.comm.core import CommClosedError

    said = str(exc)
    return (
        isinstance(exc, CommClosedError)
        or "scheduler-connection-lost" in said
        or "lost the connection to the scheduler" in said
    )


@dataclass
class _Active:
    cancel: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    started: float = field(default_factory=time.monotonic)
    #: stopped for running past the runner's ``max_seconds``
    timed_out: bool = False
    #: what the search warned about so far: kept if it fails after all
    warnings: WarningLog = field(default_factory=WarningLog)


class JobRunner:
    """Runs queued jobs from the database on a :class:`SearchRunner`."""

    def __init__(
        self,
        db: Database,
        search: SearchRunner,
        allow: Allowlist,
        estimators_dir: Path,
        *,
        max_concurrent: int = 2,
        user_max_running: int | None = None,
        poll_interval: float = 0.2,
        lease_seconds: float = 30.0,
        max_attempts: int = 3,
        grid_max_fits: int | None = None,
        max_seconds: float = 0.0,
    ):
        self.grid_max_fits = grid_max_fits
        self.max_seconds = max_seconds
        self.db = db
        self.search = search
        self.allow = allow
        self.estimators_dir = Path(estimators_dir)
        self.estimators_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        # a best estimator's write killed with its process (see _store_result)
        sweep_stale(self.estimators_dir, lambda name: name.endswith(PARTIAL_SUFFIX))
        self._sweep_deleted_estimators()
        self.max_concurrent = max_concurrent
        # one user's jobs never take every slot: two that ran for hours kept
        # every other user's queued for as long
        self.user_max_running = user_max_running or max(1, max_concurrent - 1)
        self.poll_interval = poll_interval
        self.lease = timedelta(seconds=lease_seconds)
        self.max_attempts = max_attempts
        self.owner = f"{os.uname().nodename}:{os.getpid()}:{secrets.token_hex(4)}"
        self._active: dict[str, _Active] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        # the heartbeat outlives the jobs' threads in a stop: a job storing
        # its result as the runner stops keeps its lease to the end
        self._beat_stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._cluster_down_logged = False

    def _sweep_deleted_estimators(self) -> None:
        """Remove estimator files no job has: a delete whose process died
        between its commit and the file's removal (api.jobs.delete_job).
        Only files an hour old: a success being committed meanwhile in
        another process has put its file in place just before."""
        try:
            with self.db.read() as s:
                kept = set(s.scalars(select(Job.id).where(Job.has_estimator)))
        except Exception:  # noqa: BLE001 - the database may be away: next start
            log.warning("could not list the jobs to sweep their estimators", exc_info=True)
            return
        sweep_stale(
            self.estimators_dir,
            lambda name: (
                name.endswith(ESTIMATOR_SUFFIX) and name[: -len(ESTIMATOR_SUFFIX)] not in kept
            ),
        )

    # -- lifecycle --------------------------------------------------------
    def start(self) -> None:
        for name, target in (("memogrid-runner", self._loop), ("memogrid-lease", self._beat)):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def wake(self) -> None:
        """A job was queued: look for it now rather than at the next poll."""
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop claiming; cancel and requeue running jobs so none is lost."""
        with self._lock:  # a claim landing now is requeued by the loop (see _loop)
            self._stop.set()
            active = list(self._active.items())
        self._wake.set()
        for _, a in active:
            a.cancel.set()
        for _, a in active:
            if a.thread is not None:
                a.thread.join(timeout)
        self._beat_stop.set()
        for t in self._threads:
            t.join(timeout)

    @property
    def active_jobs(self) -> list[str]:
        with self._lock:
            return list(self._active)

    def _cluster_up(self) -> bool:
        """Whether the dask client is connected (connected again if dask
        closed it): while its scheduler is away jobs wait queued, rather
        than each failing at once."""
        up = self.search.ensure_connected()
        if not up and not self._cluster_down_logged:
            log.warning("the dask scheduler is away: jobs wait queued until it is back")
        self._cluster_down_logged = not up
        # with no worker connected jobs are still claimed: a scheduler that
        # scales its workers with the work it is given (adaptive) needs tasks
        # to start any; GET /v1/jobs/{id} says what the job waits for
        return up

    # -- claiming ---------------------------------------------------------
    def _loop(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                self.requeue_expired()
                while (
                    len(self.active_jobs) < self.max_concurrent
                    and not self._stop.is_set()
                    and self._cluster_up()
                ):
                    job_id = self.claim()
                    if job_id is None:
                        break
                    if not self._start(job_id):
                        # claimed as stop() looked at the jobs running:
                        # nobody would cancel it nor renew its lease
                        self._requeue(job_id)
                        break
                failures = 0
            except Exception as exc:  # the loop must outlive a database hiccup
                # the whole traceback once a streak, then a line now and then,
                # waiting longer each time (up to 5 s): an outage of the
                # database logged a traceback every 0.2 s
                failures += 1
                if failures == 1:
                    log.exception("job runner loop failed; retrying")
                elif failures % 20 == 0:
                    log.warning("job runner loop still failing (%d times): %r", failures, exc)
            self._wake.wait(min(5.0, self.poll_interval * 2 ** min(failures, 5)))
            self._wake.clear()

    def _start(self, job_id: str) -> bool:
        """Run a claimed job in a thread of its own, unless the runner is stopping."""
        with self._lock:
            if self._stop.is_set():
                return False
            a = self._active[job_id] = _Active()
            a.thread = threading.Thread(
                target=self._run, args=(job_id, a), name=f"memogrid-job-{job_id[:8]}"
            )
            a.thread.start()
        return True

    def claim(self) -> str | None:
        """Claim a queued job: the oldest of those whose owner has the fewest
        jobs running, so one user's queue does not hold the others' back, and
        runs fewer than ``user_max_running`` here, so one user's long jobs do
        not hold every slot; ``None`` when there is none.

        A job whose cancel was asked for while it ran, then requeued (its
        runner died), is cancelled here. A job already claimed
        ``max_attempts`` times (each time its runner died under it) is failed
        with that reason instead of run again.
        """
        new_state = transition(JobState.QUEUED, JobEvent.CLAIM)
        # each owner's jobs running: anywhere (n), and on this runner (here)
        running = (
            select(
                Job.owner_id,
                func.count().label("n"),
                func.count().filter(Job.lease_owner == self.owner).label("here"),
            )
            .where(Job.state == JobState.RUNNING.value)
            .group_by(Job.owner_id)
            .subquery()
        )
        # a job requeued (its lease lapsed) while this runner's attempt at it
        # still winds down waits for that attempt to end: claimed again here
        # at once, the old attempt's end (a cancel) was written over the new
        with self._lock:
            leaving = list(self._active)
        with self.db.write() as s:
            row = s.execute(
                select(Job.id, Job.attempts, Job.cancel_requested)
                .outerjoin(running, running.c.owner_id == Job.owner_id)
                .where(
                    Job.state == JobState.QUEUED.value,
                    Job.id.not_in(leaving),
                    func.coalesce(running.c.here, 0) < self.user_max_running,
                )
                .order_by(func.coalesce(running.c.n, 0), Job.created_at, Job.id)
                .limit(1)
            ).first()
            if row is None:
                return None
            job_id, attempts, cancel_requested = row
            now = self._clock(s)
            if cancel_requested:  # the user's cancel stands, whatever the attempts
                s.execute(
                    update(Job)
                    .where(Job.id == job_id, Job.state == JobState.QUEUED.value)
                    .values(
                        state=transition(JobState.QUEUED, JobEvent.CANCEL).value, finished_at=now
                    )
                )
                self._wake.set()  # look at the next one at once
                return None
            if attempts >= self.max_attempts:  # claimed and failed in one step
                s.execute(
                    update(Job)
                    .where(Job.id == job_id, Job.state == JobState.QUEUED.value)
                    .values(
                        state=transition(JobState.RUNNING, JobEvent.FAIL).value,
                        finished_at=now,
                        error=f"this job was started {attempts} times without finishing "
                        "(its runner stopped, or lost its dask scheduler or its database); "
                        "not trying again",
                    )
                )
                self._wake.set()  # look at the next one at once
                return None
            claimed = rowcount(
                s.execute(
                    update(Job)
                    .where(Job.id == job_id, Job.state == JobState.QUEUED.value)
                    .values(
                        state=new_state.value,
                        started_at=now,
                        lease_owner=self.owner,
                        lease_expires=now + self.lease,
                        attempts=Job.attempts + 1,
                    )
                )
            )
        return job_id if claimed == 1 else None

    def requeue_expired(self) -> int:
        """Requeue running jobs whose runner stopped renewing its lease."""
        state = transition(JobState.RUNNING, JobEvent.REQUEUE)
        with self._lock:
            mine = list(self._active)
        # this runner's own jobs are alive while it runs them; one it holds
        # but no longer runs (its end could not be written: the database
        # was away) is requeued like any other
        not_running_here = Job.lease_owner.is_distinct_from(self.owner)
        if mine:
            not_running_here = or_(not_running_here, Job.id.not_in(mine))
        else:
            not_running_here = true()
        with self.db.write() as s:
            n = rowcount(
                s.execute(
                    update(Job)
                    .where(
                        Job.state == JobState.RUNNING.value,
                        Job.lease_expires < self._clock(s),
                        not_running_here,
                    )
                    .values(state=state.value, lease_owner=None, lease_expires=None)
                )
            )
        if n:
            log.warning("requeued %d job(s) whose runner stopped renewing its lease", n)
        return n

    def _clock(self, s: Any) -> datetime:
        """What leases are timed by: the database's clock, which every
        runner on it shares (a runner whose host clock ran ahead took over
        jobs whose leases were being renewed); a SQLite file's is this host's."""
        if self.db.is_sqlite:
            return utcnow()
        now = aware(s.scalar(select(func.now())))
        assert now is not None
        return now

    def _beat(self) -> None:
        interval = max(0.2, min(self.lease.total_seconds() / 3, 0.5))
        while not self._beat_stop.wait(interval):
            with self._lock:
                active = dict(self._active)
            if not active:
                continue
            try:
                with self.db.write() as s:
                    s.execute(
                        update(Job)
                        .where(Job.id.in_(active), Job.lease_owner == self.owner)
                        .values(lease_expires=self._clock(s) + self.lease)
                    )
                    held = set(
                        s.scalars(
                            select(Job.id).where(
                                Job.id.in_(active),
                                Job.lease_owner == self.owner,
                                Job.state == JobState.RUNNING.value,
                            )
                        ).all()
                    )
                    wanted = s.scalars(
                        select(Job.id).where(Job.id.in_(active), Job.cancel_requested)
                    ).all()
                for job_id in set(wanted) | (set(active) - held):
                    # asked to cancel, or no longer ours (another runner took
                    # it over after our lease lapsed): stop working on it
                    active[job_id].cancel.set()
            except Exception:
                log.exception("lease heartbeat failed; retrying")
            # whatever the database said (the limit is this runner's clock's)
            now = time.monotonic()
            for a in active.values():
                if self.max_seconds and now - a.started > self.max_seconds:
                    a.timed_out = True
                    a.cancel.set()

    # -- running ----------------------------------------------------------
    def _finish(self, job_id: str, event: JobEvent, session: Any = None, **values: Any) -> bool:
        """Move a job this runner holds to its final state (in ``session`` if given)."""
        if session is not None:
            return self._finish_in(session, job_id, event, **values)
        with self.db.write() as s:
            return self._finish_in(s, job_id, event, **values)

    def _finish_in(self, s: Any, job_id: str, event: JobEvent, **values: Any) -> bool:
        state = transition(JobState.RUNNING, event)
        n = rowcount(
            s.execute(
                update(Job)
                .where(self._held(job_id))
                .values(
                    state=state.value,
                    finished_at=self._clock(s),  # the clock started_at was read from
                    lease_owner=None,
                    lease_expires=None,
                    **values,
                )
            )
        )
        return n == 1

    def _held(self, job_id: str) -> Any:
        """True of ``job_id``'s row while this runner holds it, running."""
        return and_(
            Job.id == job_id,
            Job.state == JobState.RUNNING.value,
            Job.lease_owner == self.owner,
        )

    def _run(self, job_id: str, active: _Active) -> None:
        try:
            self._execute(job_id, active)
        except SearchCancelled:
            if active.timed_out and not self._cancel_requested(job_id):
                self._finish(
                    job_id,
                    JobEvent.FAIL,
                    error=f"the job ran longer than the service's limit of {self.max_seconds:g} "
                    "seconds (MEMOGRID_JOB_MAX_SECONDS) and was stopped",
                )
            elif self._stop.is_set() and not self._cancel_requested(job_id):
                self._requeue(job_id)  # shutting down: another start resumes it
            else:
                self._finish(job_id, JobEvent.CANCEL)
        except LeaseLost:
            log.warning(
                "job %s was taken over by another runner, or deleted: nothing of it is written",
                job_id,
            )
        except InvalidTransition:
            log.exception("job %s changed state under its runner", job_id)
        except Exception as exc:
            cut_off = _cluster_lost(exc) or self.search.client.status != "running"
            if cut_off or _database_trouble(exc):
                # not the job's doing: run it again once the scheduler (or
                # the database) is back (the attempt counts, but for a
                # stop's, when service and scheduler go down together:
                # max_attempts ends a loop). What the attempt computed is
                # in the cache; should the database still be away, the
                # lease lapses and a runner requeues the job then.
                lost = "dask scheduler" if cut_off else "database connection"
                log.warning("job %s lost its %s (%s): queued again", job_id, lost, exc)
                try:
                    self._requeue(job_id, give_back=self._stop.is_set())
                except Exception:
                    log.exception("could not requeue job %s; its lease will lapse", job_id)
                return
            log.info("job %s failed: %s", job_id, exc)
            if isinstance(exc, DatasetDamaged):
                # a worker found it damaged, where its view of the store may
                # not let it set the file aside: the service does, so that
                # the client's next submit uploads it again
                self.search.store.recheck(exc.dataset_id)
            # what came before the failure, and how often
            warned = active.warnings
            self._finish(
                job_id,
                JobEvent.FAIL,
                error=_describe(exc),
                warnings=warned.texts or None,
                stats=(
                    {"warning_counts": warned.repeated(), "warning_sources": warned.sources}
                    if warned.texts
                    else None
                ),
            )
        finally:
            with self._lock:
                if self._active.get(job_id) is active:
                    del self._active[job_id]
            self._wake.set()

    def _cancel_requested(self, job_id: str) -> bool:
        with self.db.read() as s:
            return bool(s.scalar(select(Job.cancel_requested).where(Job.id == job_id)))

    def _requeue(self, job_id: str, give_back: bool = True) -> None:
        """Put a job back in the queue because this runner is stopping (or
        lost its cluster: ``give_back`` false).

        A clean stop is not the job's fault: the claim's attempt is given
        back, so only runners that died under a job (crashes, lost leases,
        lost schedulers) count towards ``max_attempts``.
        """
        state = transition(JobState.RUNNING, JobEvent.REQUEUE)
        with self.db.write() as s:
            s.execute(
                update(Job)
                .where(Job.id == job_id, Job.lease_owner == self.owner)
                .values(
                    state=state.value,
                    lease_owner=None,
                    lease_expires=None,
                    attempts=Job.attempts - (1 if give_back else 0),
                )
            )

    def _execute(self, job_id: str, active: _Active) -> None:
        with self.db.read() as s:
            job = s.get(Job, job_id)
            assert job is not None
            request, cancel_requested = job.request, job.cancel_requested
            owner_id = job.owner_id
        if cancel_requested:
            raise SearchCancelled()
        compiled = compile_job(
            request,
            self.allow,
            dataset_lookup(self.db),
            self.search.store.values,
            grid_max_fits=2**62,
        )
        root = str(self.search.store.root)

        def resolve(did: str, as_object: bool) -> DataRef:
            return DataRef(root, did, as_object)

        t0 = time.perf_counter()
        import sklearn

        # the caller's settings: the engine reads them here, and its tasks run under them
        with sklearn.config_context(**compiled.sklearn_config):
            prepared = self.search.prepare(
                compiled.estimator,
                compiled.data("X", resolve),
                compiled.data("y", resolve),
                **compiled.engine_kwargs(resolve),
            )
        fits = len(prepared.candidates) * prepared.n_splits
        if self.grid_max_fits is not None and fits > self.grid_max_fits:
            raise SpecError(
                "cv",
                f"the search has {len(prepared.candidates)} candidates x {prepared.n_splits} "
                f"folds = {fits} fits, above the limit of {self.grid_max_fits}",
            )
        with self.db.write() as s:
            held = s.execute(
                update(Job)
                .where(self._held(job_id))
                .values(
                    n_candidates=len(prepared.candidates),
                    n_splits=prepared.n_splits,
                    progress_total=prepared.total,
                    refit_metric=prepared.refit_metric,
                )
            )
            if rowcount(held) != 1:
                raise LeaseLost(job_id)
        recorder = _Recorder(self.db, job_id, prepared.plan.grid, self._held(job_id), active.cancel)
        t1 = time.perf_counter()
        result = self.search.run(
            prepared,
            on_progress=recorder.on_progress,
            cancel=active.cancel,
            on_result=recorder.on_result,
            reemit_warnings=False,
            warnings_into=active.warnings,
        )
        recorder.flush()
        if recorder.lost:
            raise LeaseLost(job_id)
        timings = {"prepare": t1 - t0, "run": time.perf_counter() - t1}
        self._store_result(
            job_id,
            owner_id,
            compiled.datasets["X"],
            prepared.refit_metric,
            result,
            timings,
            _metric_name(compiled.scoring),
        )

    def _store_result(
        self,
        job_id: str,
        owner_id: str,
        x_id: str,
        metric: Any,
        result: Any,
        timings: dict[str, float],
        single: str = "score",
    ) -> None:
        """Write the job's success: candidates, results, the best estimator.

        Candidates are ranked by ``metric`` (the refit metric's name among
        several) and stored under its name: ``single`` for a job with one
        scorer (its name, where scoring named one), as the leaderboard
        tells metrics apart.

        The estimator goes to this attempt's own file, put in its place only
        inside the success's transaction (and taken away if that commit
        fails): an attempt whose job another attempt holds now (its lease
        lapsed) replaced the estimator of the job that other attempt finished.
        """
        t0 = time.perf_counter()
        from memogrid.spec import to_spec
        from memogrid.wire import encode_cv_results, encode_value

        def value_json(v: Any) -> Any:
            return to_spec(v, self.allow)

        cv = result.cv_results_
        if not isinstance(metric, str) or f"mean_test_{metric}" not in cv:
            # several metrics and none to refit by (refit=False or a
            # callable): the candidates are stored and ranked by the first
            metric = next(k.removeprefix("mean_test_") for k in cv if k.startswith("mean_test_"))
        encoded = encode_cv_results(cv, value_json)
        means = cv.get(f"mean_test_{metric}")
        stds = cv.get(f"std_test_{metric}")
        ranks = cv.get(f"rank_test_{metric}")
        candidates, params = [], []
        for i, p in enumerate(cv["params"]):
            p_json = {k: value_json(v) for k, v in p.items()}
            candidates.append(
                {
                    "job_id": job_id,
                    "idx": i,
                    "owner_id": owner_id,
                    "dataset_id": x_id,
                    "metric": single if metric == "score" else metric,
                    "params": p_json,
                    "mean_score": _number_or_none(means[i]) if means is not None else None,
                    "std_score": _number_or_none(stds[i]) if stds is not None else None,
                    "rank": int(ranks[i]) if ranks is not None else 0,
                }
            )
            for name, value in p_json.items():
                text = param_text(value)
                params.append(
                    {
                        "job_id": job_id,
                        "idx": i,
                        "owner_id": owner_id,
                        "name": name,
                        "value": text,
                        "value_key": param_key(text),
                    }
                )
        best_score = result.best_score_
        best_params = (
            None if result.best_params_ is None else encode_value(result.best_params_, value_json)
        )
        final = estimator_path(self.estimators_dir, job_id)
        tmp = self.estimators_dir / f"{job_id}.{secrets.token_hex(4)}{PARTIAL_SUFFIX}"
        placed = False
        try:
            notes: list[str] = []
            has_estimator = self._dump_estimator(result.best_estimator_, tmp, notes)
            timings["store"] = time.perf_counter() - t0
            stats = dict(
                result.stats.as_dict(),
                refit_time=result.refit_time_,
                # exact, NaN and infinities included (the column holds finite ones)
                best_score=None if best_score is None else float_token(best_score),
                refit_warnings=result.refit_warnings,
                warning_counts=result.warning_counts,
                warning_sources=result.warning_sources,
                timings=timings,
            )
            # the candidates become visible together with the success, or not at all
            with self.db.write() as s:
                # locked as the cancel route locks it: a cancel answered 202
                # is either seen here or waits for the success and is refused
                asked = select(Job.cancel_requested).where(self._held(job_id)).with_for_update()
                row = s.execute(asked).first()
                if row is None:  # requeued and taken by another runner, or deleted since
                    raise LeaseLost(job_id)
                if row.cancel_requested:
                    raise SearchCancelled()
                insert_ignoring_duplicates(s, Candidate, candidates)
                insert_ignoring_duplicates(s, CandidateParam, params)
                done = self._finish(
                    job_id,
                    JobEvent.SUCCEED,
                    session=s,
                    cv_results=encoded,
                    best_index=None if result.best_index_ is None else int(result.best_index_),
                    best_score=None if best_score is None else _finite_or_none(best_score),
                    best_params=best_params,
                    warnings=[*result.warnings, *notes],
                    stats=stats,
                    has_estimator=has_estimator,
                )
                if not done:  # the lease was lost: roll back, another runner owns the job
                    raise LeaseLost(job_id)
                if has_estimator:  # before the commit: a success always has its file
                    os.replace(tmp, final)
                    placed = True
        except BaseException:
            # the commit failed: no success, so no file of one (this attempt
            # held the job: no other attempt's file is there to remove);
            # unless only its answer was lost and the success stands
            if placed and not self._succeeded(job_id):
                final.unlink(missing_ok=True)
            raise
        finally:
            tmp.unlink(missing_ok=True)

    def _succeeded(self, job_id: str) -> bool:
        """Whether the job's success is written, as far as the database says
        now (not, if it says nothing)."""
        try:
            with self.db.read() as s:
                state = s.scalar(select(Job.state).where(Job.id == job_id))
        except Exception:  # noqa: BLE001 - unknown: as if it failed
            return False
        return state == JobState.SUCCEEDED.value

    def _dump_estimator(self, estimator: Any, path: Path, notes: list[str]) -> bool:
        """Write the best estimator to ``path`` with skops; False (and a note
        saying why) if there is none or skops cannot store it."""
        if estimator is None:
            return False
        import skops.io as sio

        from memogrid.wire import ESTIMATOR_NOT_STORED

        _skops_stores_constants()
        # views with strides of their own (PCA's components_) are stored
        # C-ordered: their strides go along, for the client to restore
        marked = mark_strides(estimator)
        try:
            sio.dump(estimator, path)
        except Exception as exc:  # skops cannot store every model (Birch)
            # the search stands; the drop-in refits the best candidate itself
            if isinstance(exc, OSError):  # the service's disk, not the model
                log.warning("could not store a refit estimator at %s: %s", path, exc)
            notes.append(f"{ESTIMATOR_NOT_STORED}: {_describe(exc)}")
            return False
        finally:
            unmark(marked)
        try:  # nor read back every model it stores (pandas.Timestamp categories)
            sio.load(path, trusted=sio.get_untrusted_types(file=path))
        except Exception as exc:  # noqa: BLE001 - whatever skops raises
            path.unlink(missing_ok=True)
            notes.append(f"{ESTIMATOR_NOT_STORED}: skops cannot load it back: {_describe(exc)}")
            return False
        return True


class LeaseLost(RuntimeError):
    """This runner no longer holds the job (another took it over, or its
    owner deleted it): its results are not ours to write."""


@functools.cache
def _skops_stores_constants() -> None:
    """Teach skops to store the :data:`memogrid.spec.CONSTANTS` (pd.NA).

    skops cannot store pd.NA (it rebuilds objects from their state, and the
    singleton has none): a best estimator holding one
    (``SimpleImputer(missing_values=pd.NA)``) is written as a call of its
    type with no arguments, which gives the singleton back, and loads under
    skops' own loader once the client trusts the type (the spec named it).
    skops has no public hook for this; its dispatcher is the one place.
    """
    from skops.io._utils import _get_state, get_module, get_state

    from memogrid.spec import CONSTANTS, constant_value

    for name in CONSTANTS:
        value = constant_value(name, "")
        kind = type(value)
        assert kind() is value, name  # a singleton type

        def state(obj: Any, save_context: Any, kind: type = kind) -> dict[str, Any]:
            return {
                "__class__": kind.__name__,
                "__module__": get_module(kind),
                "__loader__": "ConstructorFromReduceNode",
                "content": get_state((), save_context),
            }

        _get_state.register(kind)(state)


def _metric_name(scoring: Any) -> str:
    """The name a job's one metric is stored under: the scorer's name where
    scoring named one, else "score" (the estimator's own score, or a scorer
    of the caller's making)."""
    return scoring if isinstance(scoring, str) else "score"


def param_text(value: Any) -> str:
    """The canonical JSON text of a parameter value (sorted keys, no spaces,
    a dict's pairs in one order: see :func:`unordered_dicts`)."""
    import json

    return json.dumps(
        unordered_dicts(value), sort_keys=True, separators=(",", ":"), allow_nan=False
    )


def unordered_dicts(value: Any) -> Any:
    """A spec value with every Python dict's pairs (``{"dict": [[key, value],
    ...]}``) sorted by their key's JSON: equal dicts (``{0: 1, 1: 5}`` and
    ``{1: 5, 0: 1}``), which scikit-learn takes alike, one stored text."""
    import json

    if isinstance(value, list):
        return [unordered_dicts(v) for v in value]
    if not isinstance(value, dict):
        return value
    out = {k: unordered_dicts(v) for k, v in value.items()}
    pairs = out.get("dict")
    if set(out) == {"dict"} and isinstance(pairs, list):
        if all(isinstance(p, list) and len(p) == 2 for p in pairs):
            out["dict"] = sorted(pairs, key=lambda p: json.dumps(p[0], sort_keys=True))
    return out


def param_key(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()


def _finite_or_none(value: Any) -> float | None:
    import math

    v = float(value)
    return v if math.isfinite(v) else None


def _number_or_none(value: Any) -> float | None:
    """``value``, an infinity included (both databases hold one and rank it
    as scikit-learn does, first or last); None for NaN, ranked nowhere."""
    v = float(value)
    return None if v != v else v


#: the longest error a job keeps (scikit-learn's "All the N fits failed"
#: message holds a traceback per distinct failure)
_ERROR_MAX = 64 << 10


def _describe(exc: BaseException) -> str:
    from sqlalchemy.exc import StatementError

    if isinstance(exc, SpecError):
        return f"invalid job: {exc}"
    if isinstance(exc, StatementError):
        # not the statement and its parameters (the service's own rows)
        return f"the service's database failed the job: {first_line(exc)}"
    if isinstance(exc, OSError) and (exc.filename or exc.filename2):
        # not the service's paths (its log has them)
        return f"{type(exc).__name__}: {exc.strerror or 'input/output error'}"
    # "Name: message" as it is (the client raises the message again as
    # scikit-learn's search raised it), without the line end the formatter adds
    text = "".join(traceback.format_exception_only(type(exc), exc)).removesuffix("\n")
    return text[:_ERROR_MAX]
