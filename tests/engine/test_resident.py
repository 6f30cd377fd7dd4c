"""Step outputs stay in worker memory between searches, within a byte budget."""

from __future__ import annotations

import time

import numpy as np
import pytest
from distributed import wait
from sklearn.exceptions import FitFailedWarning
from sklearn.model_selection import GridSearchCV

from memogrid_service.engine.search import RESIDENT_KEY_BYTES, ResidentOutputs, SearchRunner
from memogrid_service.engine.tasks import StepOutput
from tests.helpers.counting import fit_counts
from tests.helpers.parity import assert_cv_results_equal
from tests.helpers.seed_search import seed_data, seed_pipeline

GRID = {"pca__n_components": [5, 10], "logistic__C": [0.1, 1.0]}
OVERLAP = dict(GRID, logistic__C=[0.5, 2.0])


def _drop_steps(cache) -> int:
    """Remove every step entry from the disk cache; return how many."""
    keys = [k for k in cache._cache.iterkeys() if k.startswith("step-")]
    for key in keys:
        cache.discard(key)
    return len(keys)


def _scheduler_keys(client) -> set[str]:
    return set(client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.tasks)))


def test_overlapping_search_takes_its_steps_from_worker_memory(dask_client, store, cache, fit_log):
    X, y = seed_data()
    runner = SearchRunner(dask_client, store, cache)
    runner.search(seed_pipeline(), X, y, param_grid=GRID, cv=3, refit=False)
    assert len(runner.resident) == 6  # 2 PCA settings x 3 folds
    assert runner.resident.nbytes >= X.shape[0] * (5 + 10) * 3 * 8  # every fold's rows
    assert _drop_steps(cache) >= 6  # nothing to read from disk any more
    fit_log.write_text("")
    res = runner.search(seed_pipeline(), X, y, param_grid=OVERLAP, cv=3, refit=False)
    assert fit_counts(fit_log) == {"CountingLogisticRegression": 12}
    assert res.stats.step_fits == 0 and res.stats.step_hits == 6 and res.stats.resident == 6
    sk = GridSearchCV(seed_pipeline(), OVERLAP, cv=3, refit=False).fit(X, y)
    assert_cv_results_equal(res.cv_results_, sk.cv_results_)

    # the same with nothing kept: the dropped steps are fitted again
    fit_log.write_text("")
    cold = SearchRunner(dask_client, store, cache, resident_bytes=0)
    runner.resident.clear()
    assert cold.resident is None
    again = cold.search(
        seed_pipeline(), X, y, param_grid=dict(GRID, logistic__C=[3.0]), cv=3, refit=False
    )
    assert fit_counts(fit_log)["CountingPCA"] == 6
    assert again.stats.step_fits == 6 and again.stats.resident == 0


def test_the_refit_reuses_its_prefix_from_worker_memory(dask_client, store, cache, fit_log):
    X, y = seed_data()
    grid = {"pca__n_components": [10], "logistic__C": [0.1, 1.0]}
    runner = SearchRunner(dask_client, store, cache)
    first = runner.search(seed_pipeline(), X, y, param_grid=grid, cv=3)
    assert first.stats.refit == "fit" and first.stats.refit_step_fits == 1
    assert len(runner.resident) == 4  # three folds and all rows
    _drop_steps(cache)
    fit_log.write_text("")
    overlap = dict(grid, logistic__C=[0.3, 3.0])
    res = runner.search(seed_pipeline(), X, y, param_grid=overlap, cv=3)
    assert fit_counts(fit_log) == {"CountingLogisticRegression": 7}  # 6 folds + the refit
    assert res.stats.refit == "fit" and res.stats.refit_step_fits == 0
    sk = GridSearchCV(seed_pipeline(), overlap, cv=3).fit(X, y)
    assert_cv_results_equal(res.cv_results_, sk.cv_results_)
    assert (
        res.best_estimator_.decision_function(X).tobytes()
        == sk.best_estimator_.decision_function(X).tobytes()
    )


def test_failed_steps_are_not_kept(dask_client, store, cache, fit_log):
    X, y = seed_data()
    grid = {"pca__n_components": [5, 500], "logistic__C": [1.0]}  # 500 > 40 features: fails
    runner = SearchRunner(dask_client, store, cache)
    with pytest.warns(FitFailedWarning), pytest.warns(UserWarning, match="non-finite"):
        runner.search(seed_pipeline(), X, y, param_grid=grid, cv=3, refit=False)
    assert len(runner.resident) == 3  # only the working PCA's folds
    fit_log.write_text("")
    with pytest.warns(FitFailedWarning), pytest.warns(UserWarning, match="non-finite"):
        res = runner.search(
            seed_pipeline(), X, y, param_grid=dict(grid, logistic__C=[2.0]), cv=3, refit=False
        )
    assert fit_counts(fit_log)["CountingPCA"] == 3  # the failing one is tried again
    assert res.stats.resident == 3


def test_resident_outputs_keep_the_most_recently_used_within_budget(dask_client):
    futures = {k: dask_client.submit(np.zeros, 10, key=f"resident-test-{k}") for k in "abcd"}
    wait(list(futures.values()))
    held = ResidentOutputs(budget=100)
    held.keep([("a", futures["a"], 40), ("b", futures["b"], 40)])
    assert held.get("a").key == futures["a"].key and held.get("c") is None  # a is newer now
    held.keep([("c", futures["c"], 40)])  # over budget: b is the least recently used
    assert held.keys() == ["a", "c"] and held.nbytes == 80
    held.keep([("d", futures["d"], 101)])  # larger than the whole budget: not kept
    assert held.keys() == ["a", "c"]
    held.keep([("a", futures["a"], 40)])  # the same output again: still held, now newest
    assert held.keys() == ["c", "a"] and held.nbytes == 80
    del futures
    deadline = time.monotonic() + 10
    while {"resident-test-b", "resident-test-d"} & _scheduler_keys(dask_client):
        assert time.monotonic() < deadline, "released outputs stay on the cluster"
        time.sleep(0.05)
    assert {"resident-test-a", "resident-test-c"} <= _scheduler_keys(dask_client)
    assert held.get("a").result().shape == (10,)
    held.clear()
    assert len(held) == 0 and held.nbytes == 0
    while {"resident-test-a", "resident-test-c"} & _scheduler_keys(dask_client):
        assert time.monotonic() < deadline, "cleared outputs stay on the cluster"
        time.sleep(0.05)


def test_a_search_keeps_no_more_than_the_budget(dask_client, store, cache):
    X, y = seed_data()
    # roughly one PCA(10) fold output, and what holding its key costs
    one_fold = 400 * 2 // 3 * 10 * 8 + RESIDENT_KEY_BYTES
    runner = SearchRunner(dask_client, store, cache, resident_bytes=2 * one_fold)
    runner.search(seed_pipeline(), X, y, param_grid=GRID, cv=3, refit=False)
    assert 1 <= len(runner.resident) < 6
    assert runner.resident.nbytes <= 2 * one_fold


def test_held_outputs_count_what_holding_their_keys_costs(dask_client):
    """Counted by their own bytes alone, tiny outputs (a scaler's on small
    data) piled up by the hundred thousand within the budget, each costing
    the service and a worker tens of kB dask does not count."""
    futures = [dask_client.submit(np.zeros, 1, key=f"resident-cost-{i}") for i in range(10)]
    wait(futures)
    held = ResidentOutputs(budget=1000, key_bytes=200)
    held.keep([(str(i), f, 8) for i, f in enumerate(futures)])
    assert held.keys() == ["6", "7", "8", "9"] and held.nbytes == 4 * 208
    held.clear()


def test_dask_knows_the_size_of_a_step_output():
    from dask.sizeof import sizeof

    out = StepOutput("k", (), np.zeros((100, 10)), np.zeros((50, 10)))
    assert sizeof(out) >= 150 * 10 * 8
    # a fitted model that keeps its training rows counts with them
    from sklearn.neighbors import KNeighborsTransformer

    model = KNeighborsTransformer(n_neighbors=2).fit(np.zeros((1000, 50)))
    assert sizeof(StepOutput("k", (model,), None, None)) >= 1000 * 50 * 8


def test_a_held_output_that_failed_is_let_go(dask_client):
    def boom():
        raise RuntimeError("lost")

    bad = dask_client.submit(boom, key="resident-test-bad")
    wait([bad])
    held = ResidentOutputs(budget=100)
    held.keep([("bad", bad, 10)])
    assert held.get("bad") is None  # the search loads or fits it instead
    assert len(held) == 0 and held.nbytes == 0


def test_a_search_keeps_its_inputs_when_another_lets_them_go(dask_client, store, cache):
    """Between a search taking a held output and dask receiving its graph,
    another search's keep() may evict that output: the search must not lose it."""
    X, y = seed_data()
    runner = SearchRunner(dask_client, store, cache)
    runner.search(seed_pipeline(), X, y, param_grid=GRID, cv=3, refit=False)
    _drop_steps(cache)  # nothing to fall back on
    take = runner.resident.get

    def take_then_evict(key):
        got = take(key)
        runner.resident.clear()  # as a concurrent search's eviction would
        return got

    runner.resident.get = take_then_evict
    res = runner.search(seed_pipeline(), X, y, param_grid=OVERLAP, cv=3, refit=False)
    assert res.stats.resident == 1 and res.stats.step_fits == 5  # the rest was let go
    sk = GridSearchCV(seed_pipeline(), OVERLAP, cv=3, refit=False).fit(X, y)
    assert_cv_results_equal(res.cv_results_, sk.cv_results_)


def _scaler_pca_lr():
    from sklearn.pipeline import Pipeline

    from tests.helpers.counting import CountingLogisticRegression, CountingPCA, CountingScaler

    return Pipeline(
        [
            ("scale", CountingScaler()),
            ("pca", CountingPCA()),
            ("logistic", CountingLogisticRegression(solver="liblinear", random_state=0)),
        ]
    )


def test_steps_held_and_loaded_in_one_search_count_once_each(
    dask_client, store, cache, fit_log, caplog
):
    """A held PCA output and its scaler loaded from the cache for another
    chain: every step is a hit, none is fitted, and dask never sees the
    scaler's key with two recipes."""
    X, y = seed_data()
    grid = {"pca": ["passthrough", CountingPCAFactory(5)], "logistic__C": [1.0]}
    runner = SearchRunner(dask_client, store, cache)
    runner.search(_scaler_pca_lr(), X, y, param_grid=grid, cv=3, refit=False)
    assert len(runner.resident) == 6  # the scaler's and the PCA's outputs, 3 folds each
    pca_keys = [k for k in runner.resident.keys() if _is_pca_output(runner, k)]
    for key in set(runner.resident.keys()) - set(pca_keys):
        runner.resident.discard(key)  # the scaler's outputs must come from disk
    assert len(runner.resident) == 3
    fit_log.write_text("")
    with caplog.at_level("WARNING", logger="distributed.scheduler"):
        res = runner.search(
            _scaler_pca_lr(), X, y, param_grid=dict(grid, logistic__C=[2.0]), cv=3, refit=False
        )
    assert "different `run_spec`" not in caplog.text
    assert fit_counts(fit_log) == {"CountingLogisticRegression": 6}
    assert res.stats.step_fits == 0 and res.stats.resident == 3
    assert res.stats.step_hits == 6  # 3 PCA outputs held, 3 scaler outputs loaded
    sk = GridSearchCV(_scaler_pca_lr(), dict(grid, logistic__C=[2.0]), cv=3, refit=False)
    assert_cv_results_equal(res.cv_results_, sk.fit(X, y).cv_results_)


def CountingPCAFactory(n):  # noqa: N802 - reads as the estimator it builds
    from tests.helpers.counting import CountingPCA

    return CountingPCA(n_components=n)


def _is_pca_output(runner, key) -> bool:
    out = runner.resident.get(key).result()
    return type(out.models[-1]).__name__ == "CountingPCA"


def test_compact_drops_the_memory_a_view_pins_and_keeps_its_order():
    from memogrid_service.engine.tasks import compact

    u = np.asfortranarray(np.random.default_rng(0).normal(size=(500, 100)))
    view = u[:, :5]  # what PCA(svd_solver="full").fit_transform returns
    assert view.flags.f_contiguous and view.base is not None
    out = compact(view)
    assert out.base is None and out.flags.f_contiguous and np.array_equal(out, view)
    rows = np.ones((500, 100))[:, :5]  # a C-ordered strided view
    out = compact(rows)
    assert out.base is None and out.flags.c_contiguous and np.array_equal(out, rows)
    own = np.ones((50, 5))
    assert compact(own) is own
    most = np.ones((50, 5))[:40]  # a view of most of its base: not worth a copy
    assert compact(most) is most
    # F-ordered but not contiguous: a C-ordered copy on the way to another
    # worker unless copied here, in its own order
    rows_of_f = np.asfortranarray(np.ones((100, 10)))[:60]
    assert not (rows_of_f.flags.c_contiguous or rows_of_f.flags.f_contiguous)
    out = compact(rows_of_f)
    assert out.flags.f_contiguous and np.array_equal(out, rows_of_f)
    assert compact([1, 2]) == [1, 2]


def test_held_full_svd_outputs_hold_only_their_own_rows(dask_client, store, cache):
    from sklearn.datasets import make_classification
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    X, y = make_classification(n_samples=600, n_features=200, random_state=0)
    pipe = Pipeline([("pca", PCA(svd_solver="full")), ("lr", LogisticRegression())])
    runner = SearchRunner(dask_client, store, cache)
    runner.search(pipe, X, y, param_grid={"pca__n_components": [3]}, cv=3, refit=False)
    assert len(runner.resident) == 3

    def pinned(out: StepOutput) -> int:
        """Bytes of memory behind the output's training rows."""
        root = out.Xt_train
        while isinstance(root.base, np.ndarray):
            root = root.base
        return int(root.nbytes)

    for key in runner.resident.keys():
        held = runner.resident.get(key)
        try:
            # runs where the output lives (a copy sent elsewhere would carry
            # only the view's bytes): what that worker holds
            where = list(dask_client.who_has([held])[held.key])
            nbytes = dask_client.submit(
                pinned, held, pure=False, workers=where, allow_other_workers=False
            ).result()
        finally:
            held.release()
        assert nbytes == 400 * 3 * 8  # the 3 components of 400 training rows, not U's 200


def test_a_restarted_workers_held_outputs_are_let_go_not_rebuilt(store, cache, fit_log):
    """A worker restarted (to stop a cancelled fit, or frozen) loses what it
    held. dask rebuilt every held output elsewhere, reading the disk cache,
    whether any search wanted it or not; they are let go instead, and a
    later search loads the ones it needs."""
    from memogrid_service.engine.cluster import close_client, make_client

    client = make_client(n_workers=2)
    try:
        X, y = seed_data()
        runner = SearchRunner(client, store, cache)
        runner.search(seed_pipeline(), X, y, param_grid=GRID, cv=3, refit=False)
        with runner.resident._lock:
            futures = {key: future for key, (future, _) in runner.resident._held.items()}
        assert len(futures) == 6
        dask_keys = {key: future.key for key, future in futures.items()}
        holders = client.who_has(list(futures.values()))
        del futures  # the set's own: no reference of the test's keeps them
        by_worker: dict[str, set[str]] = {}
        for key, dask_key in dask_keys.items():
            for addr in holders[dask_key]:
                by_worker.setdefault(addr, set()).add(key)
        victim = max(by_worker, key=lambda a: len(by_worker[a]))
        elsewhere = {k for a, ks in by_worker.items() if a != victim for k in ks}
        lost = set(dask_keys) - elsewhere
        assert lost  # the worker held some outputs alone

        runner._restart([victim])
        client.wait_for_workers(2, timeout=60)
        assert set(runner.resident.keys()) == elsewhere
        time.sleep(1.0)  # time enough for dask to have started rebuilding them
        assert not {dask_keys[k] for k in lost} & _scheduler_keys(client)

        fit_log.write_text("")
        res = runner.search(seed_pipeline(), X, y, param_grid=OVERLAP, cv=3, refit=False)
        assert fit_counts(fit_log) == {"CountingLogisticRegression": 12}  # no PCA refitted
        assert res.stats.resident == len(elsewhere)
        assert res.stats.step_hits == 6
        sk = GridSearchCV(seed_pipeline(), OVERLAP, cv=3, refit=False).fit(X, y)
        assert_cv_results_equal(res.cv_results_, sk.cv_results_)
    finally:
        close_client(client)
