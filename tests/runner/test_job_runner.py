"""The job runner against a real database and dask cluster, without HTTP."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import timedelta

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sqlalchemy import delete, func, select, update

from memogrid_service.api.app import close_services, open_services
from memogrid_service.db.models import Dataset, Job, JobDataset, SplitResult
from memogrid_service.db.ops import utcnow
from memogrid_service.runner.jobs import JobRunner
from memogrid_service.runner.states import JobEvent
from memogrid_service.settings import Settings

SPEC = {
    "class": "sklearn.pipeline.Pipeline",
    "params": {
        "steps": [
            ["scale", {"class": "sklearn.preprocessing.StandardScaler"}],
            ["svc", {"class": "sklearn.svm.SVC"}],
        ]
    },
}


@pytest.fixture
def svc(tmp_path, db_url, dask_client):
    settings = Settings(data_dir=tmp_path / "data", database_url=db_url, lease_seconds=1.0)
    services, _ = open_services(settings, dask_client)
    yield services
    close_services(services, None)


def _owner(svc) -> str:
    from memogrid_service.api.auth import ensure_user

    return ensure_user(svc.db, "runner-tests")


def _dataset(svc, arr) -> str:
    ref = svc.store.put(arr)
    with svc.db.write() as s:
        if s.get(Dataset, ref.dataset_id) is None:
            s.add(
                Dataset(
                    id=ref.dataset_id,
                    kind="array",
                    shape=list(arr.shape),
                    dtype=arr.dtype.str,
                    size=arr.nbytes,
                    created_at=utcnow(),
                )
            )
    return ref.dataset_id


def _queue(svc, grid, n=1, data=None, owner=None, **values) -> list[str]:
    """Queue ``n`` jobs over ``grid`` (their rows' other ``values`` given)."""
    X, y = data or make_classification(n_samples=120, n_features=6, random_state=0)
    xid, yid = _dataset(svc, X), _dataset(svc, y)
    ids = []
    for _ in range(n):
        job_id = uuid.uuid4().hex
        with svc.db.write() as s:
            row = dict(
                id=job_id,
                owner_id=owner or _owner(svc),
                state="queued",
                kind="grid",
                request={"estimator": SPEC, "param_grid": grid, "X": xid, "y": yid, "cv": 3},
                x_id=xid,
                created_at=utcnow(),
            )  # the counters and flags take the model's defaults
            s.add(Job(**(row | values)))
            s.flush()
            s.add(JobDataset(job_id=job_id, role="X", dataset_id=xid))
        ids.append(job_id)
    return ids


#: a grid whose search lasts long enough to act on it while it runs
LONG_GRID = {"svc__C": list(np.logspace(-2, 2, 40)), "svc__gamma": [0.1, 1.0]}


def _start_long_job(svc, n_samples: int, random_state: int) -> str:
    """Queue a search over ``LONG_GRID`` and start the runner; the job's id."""
    data = make_classification(n_samples=n_samples, n_features=10, random_state=random_state)
    (job_id,) = _queue(svc, LONG_GRID, data=data)
    svc.runner.start()
    return job_id


def _set_job(svc, job_id: str, **values) -> None:
    """Change a job's row behind the runner's back."""
    with svc.db.write() as s:
        s.execute(update(Job).where(Job.id == job_id).values(**values))


def _state(svc, job_id):
    from sqlalchemy.orm import undefer

    with svc.db.read() as s:
        return s.get(Job, job_id, options=[undefer("*")])


def _wait(svc, job_id, states=("succeeded", "failed", "cancelled"), timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = _state(svc, job_id)
        if job.state in states:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} stuck in {job.state}")


def test_concurrent_claims_take_each_job_once(svc):
    ids = _queue(svc, {"svc__C": [1.0]}, n=12)
    runners = [
        JobRunner(svc.db, svc.search, svc.allow, svc.settings.estimators_dir, user_max_running=12)
        for _ in range(4)
    ]
    claimed: list[tuple[int, str]] = []
    lock = threading.Lock()

    def claim_all(i):
        while True:
            job_id = runners[i].claim()
            if job_id is None:
                return
            with lock:
                claimed.append((i, job_id))

    threads = [threading.Thread(target=claim_all, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(j for _, j in claimed) == sorted(ids)
    for job_id in ids:
        job = _state(svc, job_id)
        assert job.state == "running" and job.attempts == 1 and job.lease_owner


def test_a_users_queue_does_not_hold_the_others_back(svc):
    """Claims go first to the owner with the fewest jobs running, oldest
    first among those: the second user's one job runs next, not after the
    first user's whole queue."""
    from memogrid_service.api.auth import ensure_user

    ann, bob = ensure_user(svc.db, "ann"), ensure_user(svc.db, "bob")
    runner = JobRunner(
        svc.db, svc.search, svc.allow, svc.settings.estimators_dir, user_max_running=3
    )
    anns = _queue(svc, {"svc__C": [1.0]}, n=3, owner=ann)
    (bobs,) = _queue(svc, {"svc__C": [1.0]}, owner=bob)
    assert runner.claim() == anns[0]  # nobody runs anything: the oldest
    assert runner.claim() == bobs  # ann runs one, bob none
    assert runner.claim() == anns[1]  # one each: the oldest
    assert runner.claim() == anns[2]
    assert runner.claim() is None


def test_one_users_jobs_never_hold_every_slot(svc):
    """Two of one user's jobs that ran for hours held both of a service's
    slots, and every other user's jobs waited queued as long. A user runs
    one fewer than the slots at once on one service (another service, its
    own share); the slot left takes another user's job."""
    from memogrid_service.api.auth import ensure_user

    ann, bob = ensure_user(svc.db, "ann"), ensure_user(svc.db, "bob")
    runner, other = (
        JobRunner(svc.db, svc.search, svc.allow, svc.settings.estimators_dir, max_concurrent=3)
        for _ in range(2)
    )
    assert runner.user_max_running == 2
    anns = _queue(svc, {"svc__C": [1.0]}, n=4, owner=ann)
    assert [runner.claim(), runner.claim(), runner.claim()] == [*anns[:2], None]
    assert other.claim() == anns[2]  # its own share on another service
    (bobs,) = _queue(svc, {"svc__C": [1.0]}, owner=bob)
    assert runner.claim() == bobs
    _set_job(svc, anns[0], state="succeeded")  # one of ann's ends: her next may run
    assert runner.claim() == anns[3]


def test_a_deleted_jobs_estimator_left_by_a_crash_is_swept_when_a_runner_starts(svc):
    """A job deleted in a process that died between the delete's commit and
    its estimator's removal left the file for good; a starting runner
    removes such files once an hour old (a younger one may be a success
    another process is committing)."""
    import os
    import time

    kept, gone = _queue(svc, {"svc__C": [1.0]}, n=2)
    _set_job(svc, kept, state="succeeded", has_estimator=True)
    _set_job(svc, gone, state="succeeded", has_estimator=True)
    d = svc.settings.estimators_dir
    files = {name: d / f"{name}.skops" for name in (kept, gone, "0" * 32, "1" * 32)}
    for path in files.values():
        path.write_bytes(b"skops")
    with svc.db.write() as s:
        s.execute(delete(Job).where(Job.id == gone))
    old = time.time() - 7200
    for name in (kept, gone, "0" * 32):  # "1" * 32 is new: being committed elsewhere
        os.utime(files[name], (old, old))
    JobRunner(svc.db, svc.search, svc.allow, d)
    assert {p.name for p in d.iterdir() if p.suffix == ".skops"} == {
        f"{kept}.skops",
        f"{'1' * 32}.skops",
    }


def test_a_job_this_runner_holds_but_no_longer_runs_is_requeued(svc):
    """A job whose end could not be written (the database was away) is left
    running under this runner's name but no thread runs it: once its lease
    lapses it is requeued, as a dead runner's job is (it stayed running)."""
    (job_id,) = _queue(svc, {"svc__C": [1.0]})
    runner = JobRunner(svc.db, svc.search, svc.allow, svc.settings.estimators_dir)
    assert runner.claim() == job_id  # claimed, then its thread died
    assert runner.requeue_expired() == 0  # its lease still runs
    _set_job(svc, job_id, lease_expires=utcnow() - timedelta(seconds=1))
    assert runner.requeue_expired() == 1
    assert _state(svc, job_id).state == "queued"


def test_a_job_requeued_while_its_old_attempt_winds_down_is_not_claimed_by_it(svc):
    """This runner lost a job's lease and is still stopping its attempt when
    the job is requeued: it does not claim the job again until that attempt
    has ended. Claimed at once, the old attempt's cancel was written over the
    new attempt (a job nobody cancelled ended cancelled)."""
    from memogrid_service.runner.jobs import _Active

    first, second = _queue(svc, {"svc__C": [1.0]}, n=2)
    runner = JobRunner(svc.db, svc.search, svc.allow, svc.settings.estimators_dir, max_concurrent=3)
    assert runner.claim() == first
    runner._active[first] = _Active()  # its thread is still winding down
    _set_job(svc, first, state="queued", lease_owner=None, lease_expires=None)
    assert runner.claim() == second  # the next job, not the one still leaving
    assert runner.claim() is None
    assert runner._finish(first, JobEvent.CANCEL) is False  # the old attempt's end
    assert _state(svc, first).state == "queued"
    del runner._active[first]
    assert runner.claim() == first


def test_a_job_that_lost_its_scheduler_is_queued_again_not_failed(svc, monkeypatch):
    """A search cut off by its scheduler going away is the cluster's doing,
    not the job's: it waits queued (counting the attempt) and runs again;
    no job is claimed while the client is not connected."""
    from distributed.client import FutureCancelledError

    (job_id,) = _queue(svc, {"svc__C": [1.0]})
    run = svc.search.run
    lost = {"n": 0}

    def cut_off(*args, **kwargs):
        if lost["n"] == 0:
            lost["n"] += 1
            raise FutureCancelledError("score-x", "scheduler-connection-lost", "lost")
        return run(*args, **kwargs)

    monkeypatch.setattr(svc.search, "run", cut_off)
    down = {"now": False}
    monkeypatch.setattr(svc.runner, "_cluster_up", lambda: not down["now"])
    svc.runner.start()
    job = _wait(svc, job_id)
    assert job.state == "succeeded" and job.attempts == 2 and lost["n"] == 1
    down["now"] = True
    (waiting,) = _queue(svc, {"svc__C": [2.0]})
    svc.runner.wake()
    time.sleep(1.0)
    assert _state(svc, waiting).state == "queued"
    down["now"] = False
    svc.runner.wake()
    assert _wait(svc, waiting).state == "succeeded"


def test_a_database_away_is_logged_once_and_retried_ever_more_slowly(svc, monkeypatch, caplog):
    """The claiming loop logged a whole traceback every 0.2 s while the
    database was away; now once, then a line now and then, waiting longer."""
    calls = []

    def away():
        calls.append(time.monotonic())
        raise OSError("database away")

    monkeypatch.setattr(svc.runner, "requeue_expired", away)
    with caplog.at_level("WARNING", logger="memogrid_service.runner.jobs"):
        svc.runner.start()
        time.sleep(3.0)
        svc.runner.stop()
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1 and 3 <= len(calls) <= 6, (len(tracebacks), len(calls))
    assert calls[-1] - calls[-2] > calls[1] - calls[0]


def test_a_lapsed_lease_is_requeued_and_finished_once(svc):
    (job_id,) = _queue(svc, {"svc__C": [0.1, 1.0, 10.0]})
    dead = JobRunner(svc.db, svc.search, svc.allow, svc.settings.estimators_dir)
    assert dead.claim() == job_id
    # the dead runner wrote some split rows before dying
    with svc.db.write() as s:
        s.add(
            SplitResult(
                job_id=job_id,
                candidate=0,
                split=0,
                test_scores={"score": 0.5},
                fit_time=0.0,
                score_time=0.0,
                fit_failed=False,
                cached=False,
            )
        )
        s.execute(update(Job).where(Job.id == job_id).values(lease_expires=utcnow() - timedelta(1)))
    svc.runner.start()
    job = _wait(svc, job_id)
    assert job.state == "succeeded" and job.attempts == 2
    with svc.db.read() as s:
        n = s.scalar(
            select(func.count()).select_from(SplitResult).where(SplitResult.job_id == job_id)
        )
    assert n == 3 * 3  # written once each, the dead runner's row kept


def test_stopping_the_runner_requeues_its_jobs_and_a_new_one_resumes(svc):
    job_id = _start_long_job(svc, n_samples=2000, random_state=1)
    deadline = time.monotonic() + 60
    while _state(svc, job_id).progress_done == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    svc.runner.stop()
    job = _state(svc, job_id)
    # a clean stop gives the attempt back: only runners dying count towards
    # max_attempts (three restarts of the service must not fail a job)
    assert job.state == "queued" and job.lease_owner is None and job.attempts == 0
    fresh = JobRunner(svc.db, svc.search, svc.allow, svc.settings.estimators_dir)
    fresh.start()
    try:
        job = _wait(svc, job_id)
    finally:
        fresh.stop()
    assert job.state == "succeeded" and job.attempts == 1
    assert job.stats["score_hits"] > 0  # what the first run finished came from the cache


def test_a_cancel_request_stops_a_running_job(svc):
    job_id = _start_long_job(svc, n_samples=400, random_state=2)
    _wait(svc, job_id, states=("running",))
    _set_job(svc, job_id, cancel_requested=True)
    t0 = time.monotonic()
    job = _wait(svc, job_id, timeout=20)
    assert job.state == "cancelled" and time.monotonic() - t0 < 10
    assert job.finished_at is not None


def test_a_job_past_the_time_limit_is_stopped_and_failed_saying_so(tmp_path, db_url, dask_client):
    settings = Settings(
        data_dir=tmp_path / "data", database_url=db_url, lease_seconds=1.0, job_max_seconds=1.0
    )
    services, _ = open_services(settings, dask_client)
    try:
        job_id = _start_long_job(services, n_samples=900, random_state=7)
        start = time.monotonic()
        job = _wait(services, job_id)
        assert job.state == "failed" and "MEMOGRID_JOB_MAX_SECONDS" in job.error, job.error
        assert time.monotonic() - start < 10
        assert job.progress_done < job.progress_total
    finally:
        close_services(services, None)


def test_a_job_whose_spec_broke_fails_with_the_reason(svc):
    (job_id,) = _queue(svc, {"svc__nope": [1]})
    svc.runner.start()
    job = _wait(svc, job_id)
    assert job.state == "failed" and "svc__nope" in job.error


def test_a_job_whose_runner_keeps_dying_is_failed_after_max_attempts(svc):
    (job_id,) = _queue(svc, {"svc__C": [1.0]})
    _set_job(svc, job_id, attempts=3)
    runner = JobRunner(svc.db, svc.search, svc.allow, svc.settings.estimators_dir, max_attempts=3)
    assert runner.claim() is None
    job = _state(svc, job_id)
    assert job.state == "failed" and "3 times" in job.error


def test_a_runner_that_lost_its_lease_stops_and_writes_nothing(svc):
    job_id = _start_long_job(svc, n_samples=2000, random_state=3)
    _wait(svc, job_id, states=("running",))
    # another runner took the job over (as after a long stall of this one)
    # and keeps renewing its lease
    _set_job(svc, job_id, lease_owner="someone-else", lease_expires=utcnow() + timedelta(minutes=5))
    deadline = time.monotonic() + 20
    while svc.runner.active_jobs and time.monotonic() < deadline:
        time.sleep(0.05)
    assert svc.runner.active_jobs == []
    job = _state(svc, job_id)
    # still the other runner's: running, no results or candidates written by this one
    assert job.state == "running" and job.lease_owner == "someone-else"
    assert job.cv_results is None
    from memogrid_service.db.models import Candidate

    with svc.db.read() as s:
        assert s.scalar(select(func.count()).select_from(Candidate)) == 0


def test_a_job_deleted_while_its_result_is_stored_is_not_written(svc, monkeypatch, caplog):
    """Its lease lapsed, another runner finished it and its owner deleted it
    while this runner was storing its result: the candidates' insert hit
    the deleted row's foreign key and the job was logged as failed with an
    IntegrityError. The runner now sees it no longer holds the job first."""
    import logging

    from memogrid_service.db.models import Candidate

    (job_id,) = _queue(svc, {"svc__C": [0.5, 2.0]})
    dump = JobRunner._dump_estimator

    def deleted_meanwhile(self, *args):
        with svc.db.write() as s:
            s.execute(delete(Job).where(Job.id == job_id))
        return dump(self, *args)

    monkeypatch.setattr(JobRunner, "_dump_estimator", deleted_meanwhile)
    with caplog.at_level(logging.INFO, logger="memogrid.runner"):
        svc.runner.start()
        deadline = time.monotonic() + 60
        while "or deleted" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
    assert f"job {job_id} was taken over by another runner, or deleted" in caplog.text
    assert "IntegrityError" not in caplog.text and f"job {job_id} failed" not in caplog.text
    with svc.db.read() as s:
        assert s.scalar(select(func.count()).select_from(Candidate)) == 0
    assert not list(svc.settings.estimators_dir.iterdir())


def test_the_service_keeps_step_outputs_in_memory_within_its_setting(tmp_path, db_url, dask_client):
    def scheduler_keys() -> set[str]:
        return set(dask_client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.tasks)))

    for budget in (0, 2**30):
        settings = Settings(
            data_dir=tmp_path / f"data-{budget}", database_url=db_url, resident_bytes=budget
        )
        svc, _ = open_services(settings, dask_client)
        try:
            (job_id,) = _queue(svc, {"svc__C": [0.5, 1.0]})
            svc.runner.start()
            assert _wait(svc, job_id).state == "succeeded"
            held = svc.search.resident.keys() if svc.search.resident is not None else []
        finally:
            close_services(svc, None)
        if budget == 0:
            assert svc.search.resident is None
        else:
            # the scaler's output on each fold and on all rows (the refit's)
            assert len(held) == 4 and svc.search.resident.budget == budget
            deadline = time.monotonic() + 10
            while set(held) & scheduler_keys():  # closing the service lets them go
                assert time.monotonic() < deadline, "closed service's outputs stay on workers"
                time.sleep(0.05)


# -- attempts that lost their job, cancels across requeues, stops ----------


def test_an_attempt_whose_job_another_finished_writes_nothing_over_it(svc):
    """Runner A froze holding a job; B requeued it and ran it to success;
    A's attempt then ran to its end. Only its final state was refused: its
    progress counters went over B's, and its estimator replaced B's file."""
    from memogrid_service.runner.jobs import _Active

    (job_id,) = _queue(svc, {"svc__C": [0.1, 1.0, 10.0]})
    a = JobRunner(svc.db, svc.search, svc.allow, svc.settings.estimators_dir)
    assert a.claim() == job_id
    _set_job(svc, job_id, lease_expires=utcnow() - timedelta(seconds=5))  # A froze
    svc.runner.start()  # B
    done = _wait(svc, job_id)
    assert done.state == "succeeded" and done.attempts == 2
    before = (done.progress_done, done.cache_hits, done.cache_misses, done.fits)
    est = svc.settings.estimators_dir / f"{job_id}.skops"
    written = est.read_bytes()
    stamp = est.stat().st_mtime_ns
    a._active[job_id] = attempt = _Active()
    a._run(job_id, attempt)  # A's attempt resumes and runs to its end
    after = _state(svc, job_id)
    assert after.state == "succeeded"
    assert (after.progress_done, after.cache_hits, after.cache_misses, after.fits) == before
    assert est.stat().st_mtime_ns == stamp and est.read_bytes() == written
    assert not list(svc.settings.estimators_dir.glob("*.tmp"))


def test_a_cancel_asked_for_before_a_requeue_ends_the_job_cancelled(svc):
    """The user cancelled a running job; its runner died before acting on
    it; on its last allowed attempt the requeued job was failed as 'the
    service stopped ... 3 times', the cancel lost. It ends cancelled."""
    first, last = _queue(svc, {"svc__C": [1.0]}, n=2)
    _set_job(svc, last, attempts=2)
    a = JobRunner(
        svc.db, svc.search, svc.allow, svc.settings.estimators_dir, max_attempts=3, max_concurrent=3
    )
    assert a.claim() == first and a.claim() == last
    for job_id in (first, last):
        _set_job(svc, job_id, cancel_requested=True)  # POST /cancel on a running job
        _set_job(svc, job_id, lease_expires=utcnow() - timedelta(seconds=5))  # A died
    b = JobRunner(svc.db, svc.search, svc.allow, svc.settings.estimators_dir, max_attempts=3)
    assert b.requeue_expired() == 2
    assert b.claim() is None and b.claim() is None and b.claim() is None
    for job_id, attempts in ((first, 1), (last, 3)):
        job = _state(svc, job_id)
        assert (job.state, job.attempts, job.error) == ("cancelled", attempts, None)
        assert job.finished_at is not None


def test_a_job_claimed_as_the_runner_stops_is_requeued_not_left_running(svc, monkeypatch):
    """stop() looked at the jobs running while a claim was committing: that
    job got a thread nobody cancelled and no heartbeat (the heartbeat ends
    with the stop), running on after the runner had stopped."""
    runner = svc.runner
    claim = runner.claim
    claimed = threading.Event()

    def claim_landing_during_stop():
        job_id = claim()
        if job_id is not None:
            claimed.set()
            runner._stop.wait(10)
        return job_id

    monkeypatch.setattr(runner, "claim", claim_landing_during_stop)
    job_id = _start_long_job(svc, n_samples=500, random_state=5)
    assert claimed.wait(20)
    runner.stop(timeout=10)
    job = _state(svc, job_id)
    assert (job.state, job.attempts, runner.active_jobs) == ("queued", 0, [])


def test_a_job_storing_its_result_as_the_runner_stops_keeps_its_lease(svc, monkeypatch):
    """The heartbeat ended at once on stop() while stop() waited for the
    jobs' threads: a job storing its result (a large estimator) lost its
    lease meanwhile, another service requeued it, and the finished search
    was thrown away."""
    runner = svc.runner
    store = runner._store_result
    storing = threading.Event()
    other = JobRunner(svc.db, svc.search, svc.allow, svc.settings.estimators_dir)

    def slow_store(*args, **kwargs):
        storing.set()
        time.sleep(2.5)  # lease_seconds=1
        other.requeue_expired()  # the other service's loop, meanwhile
        return store(*args, **kwargs)

    monkeypatch.setattr(runner, "_store_result", slow_store)
    (job_id,) = _queue(svc, {"svc__C": [1.0]})
    runner.start()
    assert storing.wait(60)
    runner.stop()
    job = _state(svc, job_id)
    assert (job.state, job.attempts) == ("succeeded", 1)


def test_a_job_cut_off_from_its_scheduler_as_the_runner_stops_is_requeued(svc, monkeypatch):
    """Service and scheduler stopped together (compose down): the search
    lost its scheduler while the runner stopped, and the job was failed for
    good; it is queued again, its attempt given back as a stop's."""
    from distributed.client import FutureCancelledError

    runner = svc.runner
    entered = threading.Event()

    def cut_off(*args, **kwargs):
        entered.set()
        runner._stop.wait(10)
        raise FutureCancelledError("score-x", "scheduler-connection-lost", "lost")

    monkeypatch.setattr(svc.search, "run", cut_off)
    (job_id,) = _queue(svc, {"svc__C": [1.0]})
    runner.start()
    assert entered.wait(20)
    runner.stop()
    job = _state(svc, job_id)
    assert (job.state, job.attempts, job.error) == ("queued", 0, None)


def _fail_each_success(svc, monkeypatch, error, committed=False) -> None:
    """Every success's write raises ``error()``: in its transaction (so it
    rolls back), or, ``committed``, after its commit (only the answer lost)."""
    from contextlib import contextmanager

    runner, write, finish = svc.runner, svc.db.write, svc.runner._finish
    # per thread: another thread's write ending meanwhile (a lease's renewal)
    # is not the success's
    succeeding = threading.local()

    def finish_spy(job_id, event, session=None, **values):
        if event == JobEvent.SUCCEED:
            succeeding.now = True
        return finish(job_id, event, session=session, **values)

    def take() -> bool:
        now, succeeding.now = getattr(succeeding, "now", False), False
        return now

    @contextmanager
    def write_failing_the_success():
        with write() as s:
            yield s
            if not committed and take():
                raise error()
        if committed and take():
            raise error()

    monkeypatch.setattr(runner, "_finish", finish_spy)
    monkeypatch.setattr(svc.db, "write", write_failing_the_success)


def _lost_connection() -> Exception:
    from sqlalchemy.exc import OperationalError

    return OperationalError(
        "UPDATE jobs SET ...",
        {},
        Exception("server closed the connection"),
        connection_invalidated=True,  # as SQLAlchemy marks a connection it lost
    )


def test_a_success_whose_commit_fails_leaves_no_estimator_file(svc, monkeypatch):
    """The best estimator's file is put in place inside the success's
    transaction: a commit that fails takes the file away again (a job not
    succeeded held a file nothing would remove)."""
    _fail_each_success(svc, monkeypatch, _lost_connection)
    (job_id,) = _queue(svc, {"svc__C": [1.0]})
    svc.runner.start()
    # the database's failure, not the job's: tried again, up to max_attempts
    job = _wait(svc, job_id)
    assert job.state == "failed" and f"started {svc.runner.max_attempts} times" in job.error
    assert "database" in job.error and "UPDATE" not in job.error
    assert not list(svc.settings.estimators_dir.iterdir())


def test_a_database_refusing_the_results_fails_the_job_saying_why(svc, monkeypatch):
    """Not every database error is the database away: a full disk fails the
    job at once with the database's words (not three runs ending in "started
    3 times"), and no SQL."""
    from sqlalchemy.exc import OperationalError

    class DiskFull(Exception):
        sqlstate = "53100"

    def disk_full():
        return OperationalError(
            "INSERT INTO candidates ...", {}, DiskFull("could not extend file: disk full")
        )

    _fail_each_success(svc, monkeypatch, disk_full)
    (job_id,) = _queue(svc, {"svc__C": [1.0]})
    svc.runner.start()
    job = _wait(svc, job_id)
    assert (job.state, job.attempts) == ("failed", 1)
    assert "could not extend file" in job.error and "INSERT" not in job.error, job.error


def test_a_success_whose_commit_answer_is_lost_keeps_its_estimator(svc, monkeypatch):
    """The success committed but its answer never came (the connection
    dropped after COMMIT): the job stands succeeded, so its estimator file
    stays (it was removed, and the job's estimator was a 404)."""
    _fail_each_success(svc, monkeypatch, _lost_connection, committed=True)
    (job_id,) = _queue(svc, {"svc__C": [1.0]})
    svc.runner.start()
    _wait(svc, job_id)
    time.sleep(0.5)  # what the runner does after the lost answer
    job = _state(svc, job_id)
    assert (job.state, job.has_estimator, job.attempts) == ("succeeded", True, 1)
    assert (svc.settings.estimators_dir / f"{job_id}.skops").exists()


def test_a_progress_write_the_database_drops_is_written_at_the_next(svc, monkeypatch):
    """A progress flush whose connection the database dropped failed the
    job for good; its rows are kept and written by the next flush, and the
    job succeeds in its first attempt with every split result."""
    from memogrid_service.runner import jobs

    write = jobs._Recorder._write
    failed = []

    def drop_first(self, rows, *args):
        if rows and not failed:  # the first with results in it
            failed.append(len(rows))
            raise _lost_connection()
        return write(self, rows, *args)

    monkeypatch.setattr(jobs._Recorder, "_write", drop_first)
    (job_id,) = _queue(svc, {"svc__C": [0.5, 1.0, 2.0]})
    svc.runner.start()
    job = _wait(svc, job_id)
    assert failed and failed[0] > 0
    assert (job.state, job.attempts, job.progress_done) == ("succeeded", 1, 9), job.error
    with svc.db.read() as s:
        n = s.scalar(select(func.count()).where(SplitResult.job_id == job_id))
    assert n == 9


def test_progress_counts_fits_a_concurrent_search_made_as_misses_not_fits(svc):
    """A result another search running at the same time fitted (the
    engine says "shared") is a cache miss of this job, not one of its fits."""
    from memogrid_service.engine.tasks import ScoreOutput
    from memogrid_service.runner.jobs import _Recorder

    (job_id,) = _queue(svc, {"svc__C": [0.5]})
    grid = [["s0", "s1", "s2"]]
    recorder = _Recorder(svc.db, job_id, grid, Job.id == job_id, threading.Event())
    result = {"test_scores": 0.5, "fit_time": 0.1, "score_time": 0.01}
    recorder.on_result("s0", ScoreOutput(result, (("step-a", "fit", 0.2),), "fit"))
    recorder.on_result("s1", ScoreOutput(result, (("step-b", "shared", 0.2),), "shared"))
    recorder.on_result("s2", ScoreOutput(result, (("step-a", "fit", 0.2),), "hit"))
    recorder.flush()
    job = _state(svc, job_id)
    assert (job.progress_done, job.cache_hits, job.cache_misses, job.fits) == (3, 1, 4, 2)


def test_a_job_whose_database_connection_fails_at_its_end_runs_again(svc, monkeypatch):
    """The database failing the search's last write is not the job's doing:
    the job is queued again (the attempt counts) and finishes, its fits
    taken from the cache, not failed with the driver's text."""
    from memogrid_service.runner import jobs

    write = jobs._Recorder._write
    first: list = []

    def fail_first_attempt(self, *args):
        first[:] = first or [self]
        if first[0] is self:
            raise _lost_connection()
        return write(self, *args)

    monkeypatch.setattr(jobs._Recorder, "_write", fail_first_attempt)
    (job_id,) = _queue(svc, {"svc__C": [0.5, 1.0]})
    svc.runner.start()
    job = _wait(svc, job_id)
    assert (job.state, job.attempts, job.error) == ("succeeded", 2, None)
    assert job.stats["score_hits"] == 6 and job.stats["final_fits"] == 0, job.stats


def test_a_connection_postgresql_terminates_mid_job_does_not_fail_it(svc, db_url):
    """For real: the job's row is locked so the runner's next write waits,
    PostgreSQL terminates that waiting connection, the lock goes. The job
    ends succeeded, its results whole, the error nowhere."""
    if not db_url.startswith("postgresql"):
        pytest.skip("terminating a connection is PostgreSQL's")
    import psycopg
    from sqlalchemy.engine import make_url

    job_id = _start_long_job(svc, n_samples=600, random_state=5)
    deadline = time.monotonic() + 60
    while _state(svc, job_id).progress_done < 1:
        assert time.monotonic() < deadline, "the job made no progress"
        time.sleep(0.05)
    url = make_url(db_url)
    options = url.query["options"]
    with psycopg.connect(
        host=url.host,
        port=url.port or 5432,
        user=url.username,
        dbname=url.database,
        options=options,
    ) as locker:
        locker.execute("SELECT 1 FROM jobs WHERE id = %s FOR UPDATE", (job_id,))
        mine = locker.info.backend_pid
        blocked: dict = {}
        # the heartbeat waits too (it retries by itself), and the progress
        # write behind it: wait for that one, then cut every waiting connection
        while not any("progress_done" in query for query in blocked.values()):
            assert time.monotonic() < deadline, "no progress write waited on the lock"
            time.sleep(0.1)
            # (activity is read once per transaction, and this one holds the lock)
            locker.execute("SELECT pg_stat_clear_snapshot()")
            waiting = locker.execute(
                "SELECT pid, pg_blocking_pids(pid), query FROM pg_stat_activity "
                "WHERE cardinality(pg_blocking_pids(pid)) > 0"
            ).fetchall()
            blocked = {}
            grew = True
            while grew:  # those waiting on the lock, or on one who waits on it
                grew = False
                for pid, by, query in waiting:
                    if pid not in blocked and ({mine} | set(blocked)) & set(by):
                        blocked[pid], grew = query, True
        for pid in blocked:
            locker.execute("SELECT pg_terminate_backend(%s)", (pid,))
        locker.rollback()
    job = _wait(svc, job_id, timeout=120)
    assert job.state == "succeeded", job.error
    total = len(LONG_GRID["svc__C"]) * len(LONG_GRID["svc__gamma"]) * 3
    with svc.db.read() as s:
        n = s.scalar(select(func.count()).where(SplitResult.job_id == job_id))
    assert n == total and job.progress_done == total


def test_a_runner_whose_clock_runs_ahead_takes_over_no_renewed_lease(svc, db_url, monkeypatch):
    """Leases are timed by the database's clock: a runner on a host whose
    clock ran a minute ahead requeued jobs another runner was renewing, and
    they ran twice. (A SQLite file's runners share one host's clock.)"""
    if not db_url.startswith("postgresql"):
        pytest.skip("runners on several hosts share a PostgreSQL database")
    from memogrid_service.runner import jobs

    job_id = _start_long_job(svc, n_samples=2000, random_state=7)
    _wait(svc, job_id, states=("running",))
    ahead = JobRunner(svc.db, svc.search, svc.allow, svc.settings.estimators_dir)
    monkeypatch.setattr(jobs, "utcnow", lambda: utcnow() + timedelta(seconds=60))
    assert ahead.requeue_expired() == 0
    job = _state(svc, job_id)
    assert (job.state, job.lease_owner) == ("running", svc.runner.owner)
    monkeypatch.undo()
    assert _wait(svc, job_id, timeout=120).attempts == 1
