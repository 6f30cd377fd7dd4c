"""The search runner: graph contents, progress, cancellation, bad input."""

from __future__ import annotations

import os
import pickle
import sys
import threading
import time

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from memogrid_service.engine.search import SearchCancelled
from tests.helpers.counting import SlowCountingPCA
from tests.helpers.gil import busy_holding_the_gil, hold_the_gil


def test_graph_references_data_instead_of_embedding_it(runner):
    X, y = make_classification(n_samples=5000, n_features=50, random_state=0)
    pipe = Pipeline([("pca", PCA()), ("lr", LogisticRegression())])
    prepared = runner.prepare(
        pipe, X, y, param_grid={"pca__n_components": [2, 4], "lr__C": [1.0, 2.0]}, cv=5
    )
    dsk, _ = runner.graph(prepared.plan, list(prepared.plan.scores), prepared.ctx, prepared.scoring)
    # PCA steps and scores only: folds ride inside the tasks, they are not
    # tasks of their own (a fold task would pin its fold's steps to one worker)
    assert len(dsk) == 10 + 20
    assert all(isinstance(task, tuple) and callable(task[0]) for task in dsk.values())
    size = len(pickle.dumps(dsk))
    # fold index arrays (5 x 5000 int64, shared) dominate; X (2 MB) is not inside
    assert size < X.nbytes / 4, size
    assert prepared.ctx.data.X.dataset_id in {p.stem for p in runner.store.root.iterdir()}


def test_progress_reports_every_result(runner):
    X, y = make_classification(n_samples=200, random_state=0)
    seen = []
    grid = {"C": [0.1, 1.0, 10.0]}
    runner.search(
        LogisticRegression(),
        X,
        y,
        param_grid=grid,
        cv=3,
        on_progress=lambda done, total, hits, out: seen.append((done, total, hits)),
    )
    assert seen[0] == (0, 9, 0)
    assert [d for d, _, _ in seen] == list(range(10))
    seen.clear()
    runner.search(
        LogisticRegression(),
        X,
        y,
        param_grid=grid,
        cv=3,
        on_progress=lambda done, total, hits, out: seen.append((done, total, hits)),
    )
    assert seen == [(9, 9, 9)]


def test_cancel_stops_promptly_and_releases_tasks(runner, dask_client, fit_log):
    X, y = make_classification(n_samples=200, random_state=0)
    pipe = Pipeline([("pca", SlowCountingPCA()), ("lr", LogisticRegression())])
    # warm the workers first: on fresh ones the first fits start only after
    # their imports, and one may begin after the cancel (run alone, this
    # test failed that way)
    runner.search(pipe, X, y, param_grid={"pca__n_components": [1]}, cv=2)
    fit_log.write_text("")
    grid = {"pca__n_components": list(range(1, 21))}  # 100 slow fits
    cancel = threading.Event()
    outcome: dict = {}

    def go():
        try:
            runner.search(pipe, X, y, param_grid=grid, cv=5, cancel=cancel)
        except BaseException as exc:  # noqa: BLE001 - recorded for the test
            outcome["exc"] = exc

    t = threading.Thread(target=go)
    t.start()
    time.sleep(1.0)
    cancel.set()
    start = time.monotonic()
    t.join(10)
    assert not t.is_alive()
    assert time.monotonic() - start < 3
    assert isinstance(outcome.get("exc"), SearchCancelled)
    deadline = time.monotonic() + 5
    while dask_client.processing() and any(dask_client.processing().values()):
        assert time.monotonic() < deadline, "tasks still processing after cancel"
        time.sleep(0.1)
    time.sleep(0.5)  # a fit already running in a worker thread may finish
    fits_at_cancel = len(fit_log.read_text().splitlines())
    time.sleep(1.0)  # but no new one starts
    assert len(fit_log.read_text().splitlines()) == fits_at_cancel
    assert fits_at_cancel < 30


def _cancel_once_running(runner, step, running) -> tuple:
    """Start a search of ``step`` -> LogisticRegression (cv=2) after a warm
    one, cancel it once ``running()`` says both fits are under way, check it
    was cancelled; its X, y."""
    X, y = make_classification(n_samples=60, random_state=0)
    pipe = Pipeline([("step", step), ("lr", LogisticRegression())])
    runner.search(LogisticRegression(), X, y, param_grid={"C": [1.0]}, cv=2)  # warm
    cancel = threading.Event()
    outcome: dict = {}

    def go():
        try:
            runner.search(pipe, X, y, param_grid={"lr__C": [1.0]}, cv=2, cancel=cancel)
        except BaseException as exc:  # noqa: BLE001 - recorded for the test
            outcome["exc"] = exc

    t = threading.Thread(target=go)
    t.start()
    deadline = time.monotonic() + 30
    while not running():
        assert time.monotonic() < deadline
        time.sleep(0.1)
    time.sleep(0.5)
    cancel.set()
    t.join(10)
    assert isinstance(outcome.get("exc"), SearchCancelled)
    return X, y


def test_cancel_stops_the_fits_already_running(runner, dask_client):
    """A fit under way goes on in its worker after its search is cancelled
    (dask cannot interrupt a task): the worker is restarted, so the next
    search does not wait two minutes for a result nobody wants."""
    from tests.helpers.counting import SleepyScaler

    X, y = _cancel_once_running(
        runner,
        SleepyScaler(seconds=120),
        lambda: sum(len(v) for v in dask_client.processing().values()) >= 2,
    )
    start = time.monotonic()
    res = runner.search(LogisticRegression(), X, y, param_grid={"C": [0.5, 2.0]}, cv=2)
    assert res.stats.final_fits == 4 and time.monotonic() - start < 60
    dask_client.wait_for_workers(2, timeout=60)


def test_cancel_stops_fits_that_hold_their_workers_gil(runner, dask_client, fit_log):
    """A cancelled fit holding its worker's GIL (a regex backtracking for
    minutes) kept the worker: it could not say what it ran, and a worker
    that did not answer was asked again until the watch ended. The
    scheduler now answers for it (it runs nothing wanted) and it is
    restarted, so the next search runs at once."""
    from tests.helpers.counting import GILHoldingScaler, fit_counts

    X, y = _cancel_once_running(
        runner,
        GILHoldingScaler(n=32),
        lambda: fit_counts(fit_log)["GILHoldingScaler-start"] >= 2,  # both workers held
    )
    start = time.monotonic()
    try:
        res = runner.search(LogisticRegression(), X, y, param_grid={"C": [0.5, 2.0]}, cv=2)
        assert res.stats.final_fits == 4
        assert time.monotonic() - start < 60  # the regex alone takes minutes
    finally:  # never leave a held worker to the tests after this one
        dask_client.restart_workers(list(dask_client.scheduler_info()["workers"]), timeout=60)
        dask_client.wait_for_workers(2, timeout=60)


def test_stopping_cancelled_work_spares_the_work_still_wanted(store, cache, fit_log):
    """One worker of two threads runs a cancelled search's long fit and
    another search's short one: it is not restarted while the other fit
    runs (that one would be lost and run again), but once it is done."""
    import os

    from memogrid_service.engine.cluster import close_client, make_client
    from memogrid_service.engine.search import SearchRunner
    from tests.helpers.counting import SleepyScaler, fit_counts

    client = make_client(n_workers=1, threads_per_worker=2)
    try:
        runner = SearchRunner(client, store, cache)
        runner.unwanted_grace = 0.5
        X, y = make_classification(n_samples=60, random_state=0)
        kw = dict(param_grid={"lr__C": [1.0]}, cv=[(np.arange(30), np.arange(30, 60))])

        def workers():  # the scheduler's view: a restarted worker has a new address
            return set(client.scheduler_info()["workers"])

        runner.search(LogisticRegression(), X, y, param_grid={"C": [1.0]}, cv=2)  # warm
        first = workers()
        pid = next(iter(client.run(os.getpid).values()))
        cancel = threading.Event()
        outcome: dict = {}

        def long():
            pipe = Pipeline([("slow", SleepyScaler(seconds=120)), ("lr", LogisticRegression())])
            try:
                runner.search(pipe, X, y, cancel=cancel, **kw)
            except SearchCancelled as exc:
                outcome["long"] = exc

        t = threading.Thread(target=long)
        t.start()
        time.sleep(2.0)
        short = Pipeline([("slow", SleepyScaler(seconds=6)), ("lr", LogisticRegression())])
        wanted = threading.Thread(
            target=lambda: outcome.update(short=runner.search(short, X, y, refit=False, **kw))
        )
        wanted.start()
        time.sleep(2.0)
        cancel.set()
        t.join(10)
        wanted.join(60)
        assert isinstance(outcome.get("long"), SearchCancelled)
        assert outcome["short"].stats.step_fits == 1
        # the short fit ran once, to its end: not killed and run again
        counts = fit_counts(fit_log)
        assert counts["SleepyScaler-6-start"] == counts["SleepyScaler-6-end"] == 1, counts
        deadline = time.monotonic() + 30
        # then the cancelled fit's worker is restarted. Asked of the
        # scheduler: a call to the worker itself racing its restart waits
        # dask's connect timeout (30 s) for the one gone away
        while not (workers() - first):
            assert time.monotonic() < deadline, "the cancelled fit was never stopped"
            time.sleep(0.5)
        client.wait_for_workers(1, timeout=30)
        assert pid not in client.run(os.getpid).values()
    finally:
        close_client(client)


def test_a_worker_that_cannot_load_the_check_itself_is_named(runner, monkeypatch):
    """A worker missing the engine's own module cannot run the load check
    (dask returns the ImportError): it was taken for one gone away, and the
    search later failed blaming the user's estimator (WorkerLost)."""
    from memogrid_service.engine import search as search_mod
    from memogrid_service.engine.search import WorkersCannotLoad

    def cannot(blob):
        raise ModuleNotFoundError("No module named 'memogrid_service'")

    monkeypatch.setattr(search_mod, "loads_here", cannot)
    X, y = make_classification(n_samples=60, random_state=0)
    with pytest.raises(WorkersCannotLoad, match="No module named 'memogrid_service'"):
        runner.search(LogisticRegression(), X, y, param_grid={"C": [0.7]}, cv=2)


def test_a_worker_running_other_library_versions_refuses_the_search(runner, cache, monkeypatch):
    """A worker with another scikit-learn computed the search's fits, and
    its results were cached under the keys of the service's versions:
    served as theirs to every later search. It refuses, naming both."""
    from memogrid_service.engine import keys
    from memogrid_service.engine.search import WorkersCannotLoad
    from memogrid_service.engine.tasks import WorkerVersionsDiffer, run_step

    X, y = make_classification(n_samples=60, random_state=0)
    real = keys.LIBRARY_VERSIONS
    other = tuple((d, "0.0.1" if d == "scikit-learn" else v) for d, v in real)
    monkeypatch.setattr(keys, "LIBRARY_VERSIONS", other)  # where the search is prepared
    prepared = runner.prepare(LogisticRegression(), X, y, param_grid={"C": [0.7]}, cv=2)
    monkeypatch.setattr(keys, "LIBRARY_VERSIONS", real)  # what the workers run
    here = dict(real)["scikit-learn"]
    words = f"runs scikit-learn {here} \\(the search's 0.0.1\\)"
    with pytest.raises(WorkersCannotLoad, match=f"the dask worker at .* {words}"):
        runner.run(prepared)
    assert len(cache) == 0  # nothing was run
    # a worker joining after the check: each task looks too
    with pytest.raises(WorkerVersionsDiffer, match=words):
        run_step(prepared.ctx, None, None, None)
    assert runner.search(LogisticRegression(), X, y, param_grid={"C": [0.7]}, cv=2).stats.fits


def test_a_worker_not_seeing_the_dataset_store_says_so(runner, store, tmp_path):
    """A worker without the service's data directory (no shared volume)
    made an empty store of its own and failed the job with "unknown
    dataset id": the dataset the service had just stored. It names itself
    and the store's path."""
    from memogrid_service.store.datasets import DatasetError

    rng = np.random.default_rng(int.from_bytes(os.urandom(4), "little"))  # never loaded before
    X, y = rng.normal(size=(60, 4)), rng.integers(0, 2, 60)
    prepared = runner.prepare(LogisticRegression(), X, y, param_grid={"C": [0.7]}, cv=2)
    store.root.rename(tmp_path / "elsewhere")  # where the workers look, nothing
    with pytest.raises(DatasetError) as err:
        runner.run(prepared)
    message = str(err.value)
    assert "does not see it in the dataset store at" in message
    assert "which is not there" in message and "shared volume" in message
    assert not store.root.exists()  # not made by the workers


def test_the_service_does_not_keep_the_data_it_plans_a_search_with(runner, store):
    """The service read X and y to plan each search and kept them, as a
    worker keeps what its tasks load: 16 datasets, of any size, stayed in it."""
    import pandas as pd

    from memogrid_service.store.datasets import open_store

    rng = np.random.default_rng(int.from_bytes(os.urandom(4), "little"))
    X = pd.DataFrame(rng.normal(size=(60, 4)), columns=list("abcd"))
    y = rng.integers(0, 2, 60)
    prepared = runner.prepare(LogisticRegression(), X, y, param_grid={"C": [0.7]}, cv=2)
    assert prepared.n_splits == 2
    kept = open_store(str(store.root))._loaded
    ids = [store.put(X).dataset_id, store.put(y).dataset_id]
    assert not [k for k in kept if k.split(":")[0] in ids], list(kept)


def test_the_clients_message_logs_are_short(runner, dask_client):
    """dask kept its last 1,000 messages per stream, every search's graph
    among them: the service process grew with each search."""
    from memogrid_service.engine.cluster import SHORT_MESSAGE_LOGS

    X, y = make_classification(n_samples=60, random_state=0)
    runner.search(LogisticRegression(), X, y, param_grid={"C": [0.7]}, cv=2)
    kept = SHORT_MESSAGE_LOGS["distributed.admin.low-level-log-length"]
    assert dask_client.scheduler_comm.recent_message_log.maxlen == kept
    streams = dask_client.cluster.scheduler.stream_comms.values()  # the embedded scheduler's
    assert streams and all(s.recent_message_log.maxlen == kept for s in streams)


def test_a_frozen_worker_does_not_hold_a_search_past_its_cancel(runner, dask_client):
    """Before its first tasks a search asks every worker to load them; a
    worker stopped (SIGSTOP) never answers, and the search waited for it
    past any cancel. It is asked with a timeout, the cancel looked at."""
    import os
    import signal

    X, y = make_classification(n_samples=60, random_state=0)
    pids = dask_client.run(os.getpid)
    frozen = max(pids.values())
    cancel = threading.Event()
    outcome: dict = {}

    def go():
        try:
            runner.search(LogisticRegression(), X, y, param_grid={"C": [0.3]}, cv=2, cancel=cancel)
        except BaseException as exc:  # noqa: BLE001 - recorded for the test
            outcome["exc"] = exc

    # with warnings filters, whether they can apply is asked of every worker
    # first: an unanswered question is a no (filters left out, said so)
    strict = [["error", "", "ConvergenceWarning", "", 0]]
    runner.ask_timeout = 3.0
    os.kill(frozen, signal.SIGSTOP)
    try:
        start = time.monotonic()
        prepared = runner.prepare(
            LogisticRegression(), X, y, param_grid={"C": [0.3]}, cv=2, warning_filters=strict
        )
        assert any("not applied" in w for w in prepared.warnings)
        assert time.monotonic() - start < 60
    finally:
        os.kill(frozen, signal.SIGCONT)
    os.kill(frozen, signal.SIGSTOP)
    try:
        t = threading.Thread(target=go)
        t.start()
        time.sleep(2.0)
        cancel.set()
        t.join(15)
        assert not t.is_alive() and isinstance(outcome.get("exc"), SearchCancelled)
    finally:
        os.kill(frozen, signal.SIGCONT)
    res = runner.search(LogisticRegression(), X, y, param_grid={"C": [0.3]}, cv=2)
    assert res.stats.final_fits == 2
    # a worker that answered once is not asked again: one busy later (a fit
    # holding the GIL, as silent as a stopped one) neither holds a search
    # for ask_timeout nor has its filters left out
    runner.prepare(LogisticRegression(), X, y, param_grid={"C": [0.3]}, warning_filters=strict)
    os.kill(frozen, signal.SIGSTOP)
    try:
        start = time.monotonic()
        prepared = runner.prepare(
            LogisticRegression(), X, y, param_grid={"C": [0.3]}, cv=2, warning_filters=strict
        )
        assert not any("not applied" in w for w in prepared.warnings)
        assert time.monotonic() - start < runner.ask_timeout
    finally:
        os.kill(frozen, signal.SIGCONT)


def test_a_worker_busy_holding_the_gil_does_not_hold_other_searches(runner, dask_client):
    """A worker running a fit that holds the GIL answers nothing until the
    fit ends. Every search started meanwhile asked it to load its objects
    and waited the check's patience (30 s), then waited at its end for the
    worker's cache writes until the fit ended (measured: a 0.3 s search took
    44 s beside a 45 s fit). A worker that loaded objects from the same
    modules before is not asked again, and one silent is not waited for."""
    from memogrid_service.engine.search import LoadCheck

    X, y = make_classification(n_samples=60, random_state=0)
    runner.search(LogisticRegression(), X, y, param_grid={"C": [0.5]}, cv=2)  # all asked
    busy = sorted(dask_client.scheduler_info()["workers"])[0]
    runner.silent_seconds = 2.0
    hold = dask_client.submit(hold_the_gil, 12, workers=[busy], pure=False)
    try:
        while not dask_client.processing(workers=[busy])[busy]:
            time.sleep(0.05)
        time.sleep(0.5)  # it holds the GIL now
        start = time.monotonic()
        LoadCheck(dask_client, [LogisticRegression(C=2.0)], known=runner._loads)()
        assert time.monotonic() - start < 2.0
        # not yet silent for silent_seconds as the drain starts: seen as it
        # falls silent, not waited for until its fit ends
        start = time.monotonic()
        runner._drain_writes()
        assert time.monotonic() - start < 2 * runner.silent_seconds + 1.0
        time.sleep(runner.silent_seconds + 1.0)  # its heartbeats have stopped
        start = time.monotonic()
        runner._drain_writes()
        assert time.monotonic() - start < 2.0
    finally:
        hold.result()


def test_a_stopped_worker_is_restarted_a_busy_one_is_not(runner, dask_client):
    """Without dask's worker-ttl (it restarted workers busy in fits holding
    the GIL), a worker stopped or deadlocked would hold its search until
    cancelled: one silent whose process uses no CPU for frozen_seconds is
    restarted; one silent but computing is left to finish."""
    import signal

    from memogrid_service.engine.tasks import silent_workers

    runner.silent_seconds, runner.frozen_seconds = 1.0, 2.0
    first, second = sorted(dask_client.scheduler_info()["workers"])
    busy = dask_client.submit(busy_holding_the_gil, 8.0, workers=[first], pure=False)
    silent_since: float | None = None
    silent_for = 0.0  # measured, not counted in rounds: a round takes longer on a busy machine
    while not busy.done():
        assert runner._check_frozen() == []
        if first in dask_client.run_on_scheduler(silent_workers, 1.0):
            now = time.monotonic()
            silent_since = now if silent_since is None else silent_since
            silent_for = now - silent_since
        time.sleep(0.5)
    busy.result()
    assert silent_for > runner.frozen_seconds  # silent, and not taken for frozen

    pid = dask_client.run(os.getpid, workers=[second])[second]
    os.kill(pid, signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 30.0
        restarted: list[str] = []
        while time.monotonic() < deadline and not restarted:
            restarted = runner._check_frozen()
            time.sleep(0.5)
        assert restarted == [second]
    finally:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
    dask_client.wait_for_workers(2, timeout=60)
    assert pid not in dask_client.run(os.getpid).values()


def test_a_runner_done_searching_is_not_kept_alive(dask_client, store, cache):
    """The watch for frozen workers held its runner for up to 30 s after
    the last search, and with it the step outputs it kept in worker memory:
    the next test's searches took those (same keys) instead of fitting."""
    import gc
    import weakref

    from memogrid_service.engine.search import SearchRunner

    X, y = make_classification(n_samples=60, random_state=0)
    runner = SearchRunner(dask_client, store, cache)
    runner.search(LogisticRegression(), X, y, param_grid={"C": [0.5]}, cv=2)
    ref = weakref.ref(runner)
    del runner
    deadline = time.monotonic() + 5.0
    while ref() is not None and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.1)
    assert ref() is None


def test_pickled_globals_are_those_unpickling_looks_up():
    """What a load check is spared on: the (module, name) of each global a
    pickle names, as an unpickler looks them up (module and name strings
    memoized and fetched again included); None for code sent by value,
    which imports as it runs. Names, not only modules: a worker that loaded
    one class of a module may lack another (an older version of it)."""
    import io

    from distributed.protocol.pickle import dumps
    from sklearn.linear_model import LogisticRegressionCV, Ridge
    from sklearn.preprocessing import StandardScaler

    from memogrid_service.engine.search import pickled_globals

    class Recording(pickle.Unpickler):
        def __init__(self, blob):
            super().__init__(io.BytesIO(blob))
            self.looked_up = set()

        def find_class(self, module, name):
            self.looked_up.add((module, name))
            return super().find_class(module, name)

    for objects in (
        [LogisticRegression()],
        [LogisticRegression(), LogisticRegressionCV(), LogisticRegression(C=2.0)],
        {"a": Pipeline([("s", StandardScaler()), ("r", Ridge())]), "b": np.arange(3)},
        (PCA(n_components=2), [LogisticRegression(class_weight={0: 1.0, 1: 2.0})]),
    ):
        blob = dumps(objects)
        reader = Recording(blob)
        reader.load()
        assert pickled_globals(blob) == reader.looked_up, objects
    one = pickled_globals(dumps([LogisticRegression()]))
    both = pickled_globals(dumps([LogisticRegressionCV()]))
    assert one is not None and both is not None and not both <= one

    class Notebooks(LogisticRegression):  # sent by value
        pass

    assert pickled_globals(dumps([Notebooks()])) is None
    assert pickled_globals(b"not a pickle") is None


def test_cancelling_one_of_two_identical_searches_spares_the_other(runner, fit_log):
    # both searches want the same score keys (one dask future key per client):
    # cancelling the first must not cancel the second's tasks
    from sklearn.model_selection import GridSearchCV

    from tests.helpers.parity import assert_cv_results_equal

    X, y = make_classification(n_samples=200, random_state=0)
    pipe = Pipeline([("pca", SlowCountingPCA()), ("lr", LogisticRegression())])
    grid = {"pca__n_components": [1, 2, 3, 4, 5, 6]}  # 18 slow step fits
    cancel = threading.Event()
    outcome: dict = {}

    def go(name, stop=None):
        try:
            outcome[name] = runner.search(pipe, X, y, param_grid=grid, cv=3, cancel=stop)
        except BaseException as exc:  # noqa: BLE001 - recorded for the test
            outcome[name] = exc

    first = threading.Thread(target=go, args=("first", cancel))
    second = threading.Thread(target=go, args=("second",))
    first.start()
    time.sleep(0.5)
    second.start()
    time.sleep(0.5)
    cancel.set()
    first.join(30)
    second.join(30)
    assert not first.is_alive() and not second.is_alive()
    assert isinstance(outcome["first"], SearchCancelled)
    res = outcome["second"]
    assert not isinstance(res, BaseException), res
    sk = GridSearchCV(pipe, grid, cv=3).fit(X, y)
    assert_cv_results_equal(res.cv_results_, sk.cv_results_)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "exactly one of param_grid and param_distributions"),
        (
            {"param_grid": {"C": [1.0]}, "param_distributions": {"C": [1.0]}},
            "exactly one of param_grid and param_distributions",
        ),
        ({"param_grid": {"C": [1.0]}, "scoring": "no-such-metric"}, "scoring"),
        ({"param_grid": {"C": [1.0]}, "error_score": "ignore"}, "error_score"),
        ({"param_grid": {"nope": [1.0]}}, "Invalid parameter 'nope'"),
        ({"param_grid": {"C": 1.0}}, "Parameter grid for parameter 'C'"),
        (
            {"param_grid": {"C": [1.0]}, "scoring": ["accuracy", "f1"]},
            "For multi-metric scoring, the parameter refit must be set",
        ),
    ],
)
def test_bad_arguments_fail_with_sklearn_messages(runner, kwargs, message):
    X, y = make_classification(n_samples=60, random_state=0)
    with pytest.raises((ValueError, TypeError), match=message):
        runner.search(LogisticRegression(), X, y, **kwargs)


def test_mismatched_lengths_are_refused(runner):
    X, y = make_classification(n_samples=60, random_state=0)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        runner.search(LogisticRegression(), X, y[:-1], param_grid={"C": [1.0]})


def test_duplicate_candidates_share_tasks(runner):
    X, y = make_classification(n_samples=100, random_state=0)
    pipe = Pipeline([("pca", "passthrough"), ("lr", LogisticRegression())])
    res = runner.search(pipe, X, y, param_grid={"pca": ["passthrough", None], "lr__C": [1.0]}, cv=3)
    # both candidates run the same chain: three final fits, not six
    assert res.stats.final_fits == 3
    prepared = runner.prepare(
        pipe, X, y, param_grid={"pca": ["passthrough", None], "lr__C": [1.0]}, cv=3
    )
    assert prepared.total == 3 and len(prepared.candidates) == 2
    assert np.array_equal(
        res.cv_results_["split0_test_score"][0], res.cv_results_["split0_test_score"][1]
    )


def test_cheap_scores_are_batched_but_reported_one_by_one(dask_client, store, cache):
    from memogrid_service.engine.search import SearchRunner

    X, y = make_classification(n_samples=120, random_state=0)
    grid = {"C": list(np.linspace(0.1, 2.0, 20))}
    runner = SearchRunner(dask_client, store, cache, tasks_per_thread=2)
    prepared = runner.prepare(LogisticRegression(), X, y, param_grid=grid, cv=4)
    _, members = runner.graph(
        prepared.plan, list(prepared.plan.scores), prepared.ctx, prepared.scoring, 5
    )
    assert len(members) == 16 and all(len(m) == 5 for m in members.values())
    seen = []
    res = runner.run(prepared, on_progress=lambda d, t, h, o: seen.append(d))
    assert seen == list(range(81))
    from sklearn.model_selection import GridSearchCV

    from tests.helpers.parity import assert_cv_results_equal

    sk = GridSearchCV(LogisticRegression(), grid, cv=4).fit(X, y)
    assert_cv_results_equal(res.cv_results_, sk.cv_results_)
    again = runner.search(LogisticRegression(), X, y, param_grid=grid, cv=4)
    assert again.stats.score_hits == 80 and again.stats.final_fits == 0


def test_score_batch_sizes():
    from memogrid_service.engine.search import BATCH_BELOW_CELLS, score_batch

    small = BATCH_BELOW_CELLS - 1
    assert score_batch(1000, 2, 32, small) == 16
    assert score_batch(64, 2, 32, small) == 1
    assert score_batch(10**6, 2, 32, small) == 64
    assert score_batch(1000, 0, 32, small) == 32  # no threads known yet: as one
    assert score_batch(1000, 2, 32, BATCH_BELOW_CELLS) == 1


def test_fits_on_large_folds_are_tasks_of_their_own(dask_client, store, cache):
    from distributed import get_task_stream

    from memogrid_service.engine.search import BATCH_BELOW_CELLS, SearchRunner

    runner = SearchRunner(dask_client, store, cache, tasks_per_thread=1, resident_bytes=0)
    grid = {"C": [0.1, 1.0, 10.0, 100.0]}
    counts = {}
    for n_features in (10, 200):
        X, y = make_classification(n_samples=1000, n_features=n_features, random_state=0)
        prepared = runner.prepare(LogisticRegression(), X, y, param_grid=grid, cv=4)
        assert prepared.train_cells == 750 * n_features
        with get_task_stream(dask_client) as ts:
            runner.run(prepared)
        counts[n_features] = sum(1 for t in ts.data if str(t["key"]).startswith("score"))
    assert 750 * 10 < BATCH_BELOW_CELLS <= 750 * 200
    # 16 fits: a task per fold (its 4 fits) on small folds, one per fit on large
    assert counts == {10: 4, 200: 16}


def test_default_cluster_workers_do_not_sample_their_stacks(dask_client):
    # dask's profiler costs a worker ~5% of a core; the default cluster turns it off
    def profiling() -> bool:
        import dask

        return bool(dask.config.get("distributed.worker.profile.enabled"))

    states = dask_client.run(profiling)
    assert len(states) == 2 and not any(states.values())


def test_default_cluster_runs_its_housekeeping_less_often(dask_client):
    """The event-loop tick and monitors run at QUIET_HOUSEKEEPING's intervals
    in the scheduler and in every worker process, not at dask's defaults."""
    from dask.utils import parse_timedelta

    from memogrid_service.engine.cluster import QUIET_HOUSEKEEPING

    tick = parse_timedelta(QUIET_HOUSEKEEPING["distributed.admin.tick.interval"])
    assert tick > parse_timedelta("20ms")  # dask's default

    def intervals(dask_worker=None, dask_scheduler=None):
        import dask

        server = dask_worker or dask_scheduler
        return server._tick_interval, dask.config.get("distributed.worker.memory.monitor-interval")

    memory = QUIET_HOUSEKEEPING["distributed.worker.memory.monitor-interval"]
    seen = list(dask_client.run(intervals).values())
    seen.append(dask_client.run_on_scheduler(intervals))
    assert len(seen) == 3 and all(s == (tick, memory) for s in seen), seen


def test_default_cluster_steals_work_promptly(dask_client):
    from dask.utils import parse_timedelta

    from memogrid_service.engine.cluster import PROMPT_STEALING

    def stealing_interval(dask_scheduler):
        return dask_scheduler.extensions["stealing"]._callback_time

    want = parse_timedelta(PROMPT_STEALING["distributed.scheduler.work-stealing-interval"])
    assert want < 1.0  # dask's default
    assert dask_client.run_on_scheduler(stealing_interval) == want


def _hold_background_writers(hold: bool) -> None:
    """In a worker: stop (or restart) the cache writer thread taking entries."""
    import threading

    from memogrid_service.store import cache as cache_mod

    w = cache_mod._writer
    if hold:
        release = threading.Event()
        take = w._take

        def held(wait: bool, upto: float = float("inf")):
            if wait:  # the background thread: wait until released
                release.wait()
            return take(wait, upto)

        w._take, w._release = held, release  # type: ignore[attr-defined]
    else:
        w._release.set()  # type: ignore[attr-defined]
        del w._take


def test_a_search_returns_only_after_its_cache_entries_are_on_disk(runner, dask_client):
    from memogrid_service.store.cache import ResultCache

    X, y = make_classification(n_samples=300, random_state=0)
    pipe = Pipeline([("pca", PCA()), ("lr", LogisticRegression())])
    prepared = runner.prepare(pipe, X, y, param_grid={"pca__n_components": [2, 3]}, cv=3)
    dask_client.run(_hold_background_writers, True)
    try:
        runner.run(prepared)
    finally:
        dask_client.run(_hold_background_writers, False)
    # with the background writers held, only the search's drain can have
    # written them: a fresh handle reading the disk finds every step and score
    disk = ResultCache(runner.cache.directory)
    expected = [k + "/data" for k in prepared.plan.steps] + list(prepared.plan.scores)
    assert all(k in disk._cache for k in expected)


def test_gc_paused_nests_and_restores_the_collector():
    import gc

    from memogrid_service.engine.search import gc_paused

    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer planner is still at work
    assert gc.isenabled()
    gc.disable()  # a host that turned it off keeps it off
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
    with pytest.raises(KeyError), gc_paused():
        {}["missing"]  # noqa: B018 - a planner that fails
    assert gc.isenabled()


def test_waiting_for_a_task_stops_and_cancels_it_on_cancel(dask_client):
    # how the refit is awaited: the cancel flag is seen within ~0.1 s and the
    # task no other search wants is cancelled
    from memogrid_service.engine.search import _result

    fut = dask_client.submit(time.sleep, 5, pure=False)
    cancel = threading.Event()
    threading.Timer(0.2, cancel.set).start()
    start = time.monotonic()
    with pytest.raises(SearchCancelled):
        _result(fut, cancel)
    assert time.monotonic() - start < 2
    deadline = time.monotonic() + 5
    while fut.status != "cancelled":
        assert time.monotonic() < deadline, fut.status
        time.sleep(0.05)
    done = dask_client.submit(sum, [1, 2], pure=False)
    assert _result(done, threading.Event()) == 3


def _finish_after(seconds):
    time.sleep(seconds)
    return time.time()


def test_finished_scores_are_fetched_in_coalesced_batches(dask_client):
    from distributed import as_completed

    from memogrid_service.engine.search import _coalesced

    # twelve quick tasks: one batch, fetched as soon as the last one ends
    quick = [dask_client.submit(_finish_after, 0.05, pure=False) for _ in range(12)]
    batches = [(b, time.time()) for b in _coalesced(as_completed(quick), 5.0)]
    assert len(batches) == 1 and len(batches[0][0]) == 12
    assert batches[0][1] - max(dask_client.gather(quick)) < 0.15  # not at the interval
    # while slow tasks run, what finished is fetched once the interval is up
    start = time.time()
    mixed = [dask_client.submit(_finish_after, d, pure=False) for d in (0.05, 0.05, 1.5, 1.5)]
    batches = [(b, time.time() - start) for b in _coalesced(as_completed(mixed), 0.2)]
    assert [len(b) for b, _ in batches] == [2, 2]
    assert batches[0][1] < 1.0 <= batches[1][1]
    # every=0: batches as dask yields them (what the search did before)
    again = [dask_client.submit(_finish_after, 0.01 * i, pure=False) for i in range(4)]
    got = [f for b in _coalesced(as_completed(again), 0) for f in b]
    assert sorted(f.key for f in got) == sorted(f.key for f in again)


def test_warning_filters_key_and_apply_only_where_a_process_runs_one_task(runner, store, cache):
    """The caller's warnings filters are process-wide state: applied (and in
    every key) on workers running one task at a time in their own process;
    on a cluster of threads they are not, the keys say so (no filters) and
    the search's notes say why."""
    from distributed import Client, LocalCluster

    from memogrid_service.engine.search import SearchRunner

    X, y = make_classification(n_samples=60, n_features=4, random_state=0)
    strict = [["error", "", "ConvergenceWarning", "", 0]]
    args = (LogisticRegression(max_iter=4), X, y)

    def fold_keys(prepared):
        return [f.key for f in prepared.plan.folds.values()]

    plain = runner.prepare(*args, param_grid={"C": [1.0]})
    filtered = runner.prepare(*args, param_grid={"C": [1.0]}, warning_filters=strict)
    assert set(fold_keys(plain)).isdisjoint(fold_keys(filtered))
    assert not any("warnings filters" in w for w in filtered.warnings)
    for shape in (
        dict(n_workers=1, threads_per_worker=2),
        # one thread each, but the workers share this process (over tcp)
        dict(n_workers=2, threads_per_worker=1, protocol="tcp://"),
    ):
        cluster = LocalCluster(processes=False, dashboard_address=None, **shape)
        with cluster, Client(cluster) as client:
            threaded = SearchRunner(client, store, cache)
            unapplied = threaded.prepare(*args, param_grid={"C": [1.0]}, warning_filters=strict)
            assert fold_keys(unapplied) == fold_keys(plain), shape
            assert any("warnings filters were not applied" in w for w in unapplied.warnings)


def test_the_callers_error_filters_reach_threads_a_fit_starts(runner):
    """LogisticRegressionCV(n_jobs=2) fits its folds through scikit-learn's
    Parallel, in threads: a warning the caller made an error fails the fit
    there too, as in scikit-learn's own search (it was scored)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import GridSearchCV

    from tests.helpers.parity import assert_cv_results_equal

    X, y = make_classification(n_samples=120, n_features=6, random_state=0)
    est = LogisticRegressionCV(Cs=2, cv=2, solver="saga", n_jobs=2, refit=False, random_state=0)
    grid = {"max_iter": [1, 5000]}
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        warnings.filterwarnings("error", category=ConvergenceWarning)
        sk = GridSearchCV(est, grid, cv=2, refit=False).fit(X, y)
        ours = runner.search(
            est,
            X,
            y,
            param_grid=grid,
            cv=2,
            refit=False,
            warning_filters=[["error", "", "ConvergenceWarning", "", 0]],
        )
    assert np.isnan(sk.cv_results_["mean_test_score"][0])
    assert_cv_results_equal(ours.cv_results_, sk.cv_results_)


def test_a_class_the_workers_cannot_import_fails_the_search_at_once(
    runner, cache, tmp_path, monkeypatch, request
):
    """An estimator from a module only this process can import: dask's
    workers could not even unpickle its tasks (the search would wait for
    them forever). The search fails before sending any, naming the module;
    the workers go on serving other searches."""
    import sys

    from memogrid_service.engine.search import WorkersCannotLoad

    (tmp_path / "only_here_mod.py").write_text(
        "from sklearn.preprocessing import StandardScaler\n"
        "class OnlyHere(StandardScaler):\n"
        "    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))  # here, not in the running workers
    from only_here_mod import OnlyHere

    # left in sys.modules while the test runs, as a user's own module is
    # (cloudpickle sends a class of a module not there by value)
    request.addfinalizer(lambda: sys.modules.pop("only_here_mod", None))
    X, y = make_classification(n_samples=60, n_features=4, random_state=0)
    pipe = Pipeline([("scale", OnlyHere()), ("lr", LogisticRegression())])
    start = time.monotonic()
    with pytest.raises(WorkersCannotLoad, match="No module named 'only_here_mod'"):
        runner.search(pipe, X, y, param_grid={"lr__C": [0.1, 1.0]}, cv=3)
    assert time.monotonic() - start < 30
    assert len(cache) == 0  # nothing was run
    # the workers are fine
    res = runner.search(LogisticRegression(), X, y, param_grid={"C": [0.1, 1.0]}, cv=3)
    assert res.stats.final_fits == 6


_SCALE = 1.0


def test_the_callers_own_code_is_left_as_it_is(runner, monkeypatch):
    """A class and a function of ``__main__``, which the workers get by
    value (a notebook's): the search's fitted objects come back without
    rebinding the caller's class to copies of its methods (edits to what
    they read would no longer reach it, nor any key), and the best
    estimator holds the caller's own function, as scikit-learn's does."""
    from sklearn.base import BaseEstimator, TransformerMixin
    from sklearn.preprocessing import FunctionTransformer

    class Scaled(TransformerMixin, BaseEstimator):
        def __init__(self, k=1.0):
            self.k = k

        def fit(self, X, y=None):
            return self

        def transform(self, X):
            return Helper.scaled(X) * self.k

    class Helper:  # a class the code reaches, not a parameter
        @staticmethod
        def scaled(X):
            return X * _SCALE

    def shifted(X):
        return X + 1.0

    main = sys.modules["__main__"]
    for code in (Scaled, Helper, shifted):
        code.__module__, code.__qualname__ = "__main__", code.__name__
        monkeypatch.setattr(main, code.__name__, code, raising=False)
    own = dict(vars(Scaled))
    helper = dict(vars(Helper))
    X, y = make_classification(n_samples=60, n_features=4, random_state=0)
    pipe = Pipeline(
        [("s", Scaled()), ("f", FunctionTransformer(shifted)), ("lr", LogisticRegression())]
    )
    first = runner.search(pipe, X, y, param_grid={"s__k": [1.0, 2.0]}, cv=3)
    assert all(vars(Scaled)[name] is attr for name, attr in own.items()), "rebound"
    assert all(vars(Helper)[name] is attr for name, attr in helper.items()), "rebound"
    best = first.best_estimator_
    assert type(best[0]) is Scaled and best[1].func is shifted
    # an edit to what the class reads reaches it, and the next search's keys
    monkeypatch.setattr(sys.modules[__name__], "_SCALE", 0.0)
    assert not Scaled().fit(X).transform(X).any()
    again = runner.search(pipe, X, y, param_grid={"s__k": [1.0, 2.0]}, cv=3)
    assert again.stats.score_hits == 0
    assert again.cv_results_["mean_test_score"][0] != first.cv_results_["mean_test_score"][0]


def test_an_estimators_n_jobs_starts_no_threads_in_a_worker(runner):
    """A worker is one core's: an estimator's ``n_jobs`` runs sequentially
    there, in fold fits and the refit alike (``n_jobs=10**5`` started that
    many threads and left a worker with thousands)."""
    from tests.helpers.counting import ThreadCountingLogisticRegression

    X, y = make_classification(n_samples=60, n_features=4, random_state=0)
    res = runner.search(
        ThreadCountingLogisticRegression(), X, y, param_grid={"n_jobs": [8, -1]}, cv=3
    )
    assert list(res.cv_results_["mean_test_score"]) == [1.0, 1.0]
    assert res.best_estimator_.fit_threads_ == 1
