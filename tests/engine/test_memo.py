"""Every unique (prefix, fold) is fit once: within, across and between searches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline

from memogrid_service.engine.search import SearchRunner
from tests.helpers.counting import (
    LOG_ENV,
    CountingLogisticRegression,
    CountingPCA,
    SlowCountingPCA,
    fit_counts,
)
from tests.helpers.parity import assert_cv_results_equal
from tests.helpers.seed_search import seed_data, seed_pipeline

ROOT = Path(__file__).resolve().parents[2]
SEED_GRID = {
    "pca__n_components": [5, 10, 20],
    "logistic__C": [1e-4, 1.0, 1e4],
    "logistic__l1_ratio": [0, 1],
}


def test_seed_grid_fits_15_pca_not_90(runner, fit_log):
    X, y = seed_data()
    res = runner.search(seed_pipeline(), X, y, param_grid=SEED_GRID, cv=5, refit=False)
    counts = fit_counts(fit_log)
    assert counts["CountingPCA"] == 15
    assert counts["CountingLogisticRegression"] == 90
    assert res.stats.step_fits == 15 and res.stats.final_fits == 90
    # the counter is real: scikit-learn itself fits PCA 90 times
    fit_log.unlink()
    GridSearchCV(seed_pipeline(), SEED_GRID, cv=5, refit=False).fit(X, y)
    assert fit_counts(fit_log)["CountingPCA"] == 90


def _run_in_process(tmp_path, grid, log):
    env = dict(os.environ, **{LOG_ENV: str(log)})
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.helpers.seed_search",
            str(tmp_path / "data"),
            str(tmp_path / "cache"),
            json.dumps(grid),
        ],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_second_process_fits_nothing_and_overlap_fits_no_pca(tmp_path):
    first_log, second_log, third_log = (tmp_path / f"{n}.log" for n in "abc")
    first = _run_in_process(tmp_path, SEED_GRID, first_log)
    c1 = fit_counts(first_log)
    # 15 fold fits + 1 refit on all rows for each step
    assert c1["CountingPCA"] == 16 and c1["CountingLogisticRegression"] == 91
    assert first["stats"]["refit"] == "fit"

    second = _run_in_process(tmp_path, SEED_GRID, second_log)
    assert fit_counts(second_log) == {}
    assert second["stats"]["fits"] == 0 and second["stats"]["refit"] == "hit"
    assert second["stats"]["score_hits"] == 90
    assert second["mean"] == first["mean"] and second["best"] == first["best"]

    overlap = dict(SEED_GRID, logistic__C=[1e-2, 1e2])
    third = _run_in_process(tmp_path, overlap, third_log)
    c3 = fit_counts(third_log)
    assert c3["CountingPCA"] == 0
    assert c3["CountingLogisticRegression"] == 60 + (
        third["best"]["logistic__C"] not in (1e-4, 1.0, 1e4)
    )
    assert third["stats"]["step_fits"] == 0 and third["stats"]["step_hits"] == 15


_NOTEBOOK = """
import json, pickle, sys
import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

class Centred(TransformerMixin, BaseEstimator):
    def __init__(self, k=1.0):
        self.k = k

    def fit(self, X, y=None):
        self.mean_ = X.mean(axis=0)
        return self

    def transform(self, X):
        return np.clip(X - self.mean_, -self.k, self.k)

def squash(X):
    return np.tanh(X)

if __name__ == "__main__":
    from memogrid_service.engine.cluster import close_client, make_client
    from memogrid_service.engine.search import SearchRunner
    from memogrid_service.store.cache import ResultCache
    from memogrid_service.store.datasets import DatasetStore

    data, cache, grid = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    X, y = make_classification(n_samples=120, n_features=6, random_state=0)
    pipe = Pipeline(
        [("c", Centred()), ("f", FunctionTransformer(squash)), ("lr", LogisticRegression())]
    )
    client = make_client(n_workers=1)  # a process of its own: one is enough
    try:
        runner = SearchRunner(client, DatasetStore(data), ResultCache(cache))
        res = runner.search(pipe, X, y, param_grid=grid, cv=3)
    finally:
        close_client(client)
    best = res.best_estimator_
    print(json.dumps({
        "stats": res.stats.as_dict(),
        "mean": res.cv_results_["mean_test_score"].tolist(),
        "own_class": type(best[0]) is Centred,
        "own_function": best[1].func is squash,
        "pickles": type(pickle.loads(pickle.dumps(best))[0]) is Centred,
    }))
"""


def test_a_notebooks_classes_are_memoized_across_processes(tmp_path):
    """A class and a function of ``__main__`` (a notebook's, a script's),
    which pickle cannot name: their fitted steps and refit are cached
    (by value) all the same, so a second process fits nothing and one
    changing only the final step fits no step; its best estimator is made
    of the caller's own class and function, and pickles as scikit-learn's."""
    script = tmp_path / "notebook.py"
    script.write_text(_NOTEBOOK)

    def run(grid):
        out = subprocess.run(
            [sys.executable, str(script), *(str(tmp_path / d) for d in "dc"), json.dumps(grid)],
            cwd=ROOT,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
            check=True,
            capture_output=True,
            text=True,
            timeout=300,
        )
        return json.loads(out.stdout.strip().splitlines()[-1])

    grid = {"c__k": [0.5, 1.0], "lr__C": [0.1, 1.0]}
    first = run(grid)
    assert first["stats"]["step_fits"] == 2 * 3 * 2 and first["stats"]["refit"] == "fit"
    for got in (first, second := run(grid), third := run(dict(grid, lr__C=[10.0]))):
        assert got["own_class"] and got["own_function"] and got["pickles"], got
    assert second["stats"]["fits"] == 0 and second["stats"]["refit"] == "hit"
    assert second["mean"] == first["mean"]
    # each (k, fold)'s chain read back from its last step
    assert third["stats"]["step_fits"] == 0 and third["stats"]["step_hits"] == 2 * 3


def test_refit_is_cached_like_folds(runner, fit_log):
    X, y = seed_data()
    grid = {"pca__n_components": [5, 10], "logistic__C": [1.0]}
    a = runner.search(seed_pipeline(), X, y, param_grid=grid, cv=3)
    assert a.stats.refit == "fit"
    fit_log.unlink()
    b = runner.search(seed_pipeline(), X, y, param_grid=grid, cv=3)
    assert b.stats.refit == "hit" and fit_counts(fit_log) == {}
    assert np.array_equal(a.best_estimator_.predict(X), b.best_estimator_.predict(X))
    pca_a = a.best_estimator_.named_steps["pca"]
    pca_b = b.best_estimator_.named_steps["pca"]
    assert np.array_equal(pca_a.components_, pca_b.components_)


def _searches_at_once(dask_client, store, pipe, X, y, grids, **kwargs) -> list:
    """Searches over ``grids`` started together on one client, with no cache."""
    barrier = threading.Barrier(len(grids))
    results: list = [None] * len(grids)

    def go(i):
        runner = SearchRunner(dask_client, store, None)
        barrier.wait()
        results[i] = runner.search(pipe, X, y, param_grid=grids[i], **kwargs)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(grids))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results


def test_concurrent_searches_share_steps_on_one_scheduler(dask_client, store, fit_log):
    # No persistent cache: only the scheduler's key dedup can share work.
    X, y = seed_data()
    pipe = Pipeline(
        [
            ("pca", SlowCountingPCA()),
            ("logistic", CountingLogisticRegression(random_state=0)),
        ]
    )
    grids = [
        {"pca__n_components": [5, 10, 20], "logistic__C": [0.1, 1.0]},
        {"pca__n_components": [5, 10, 20], "logistic__C": [10.0, 100.0]},
    ]
    results = _searches_at_once(dask_client, store, pipe, X, y, grids, cv=5, refit=False)
    counts = fit_counts(fit_log)
    assert counts["CountingPCA"] == 15, counts
    assert counts["CountingLogisticRegression"] == 60
    # each search's counts: every PCA fit counted once, by one search; the
    # other search was served the same fit and counts it as shared
    stats = [r.stats for r in results]
    assert sum(s.step_fits for s in stats) == 15, stats
    assert sum(s.step_shared for s in stats) == 15, stats
    assert [s.final_fits for s in stats] == [30, 30] and not any(s.final_shared for s in stats)
    for s in stats:
        assert s.misses == s.fits + s.shared == 45  # nothing was in a cache
    reference = Pipeline(  # the same maths without the sleep
        [
            ("pca", CountingPCA()),
            ("logistic", CountingLogisticRegression(random_state=0)),
        ]
    )
    for res, grid in zip(results, grids, strict=True):
        sk = GridSearchCV(reference, grid, cv=5, refit=False).fit(X, y)
        assert_cv_results_equal(res.cv_results_, sk.cv_results_)


def test_identical_searches_at_once_count_each_fit_once(dask_client, store, fit_log):
    # whatever the timing, summed over the two searches, the fits counted are
    # the fits that ran, the refit's included; what one search was served
    # from a computation the other counted is "shared"
    X, y = seed_data()
    pipe = Pipeline(
        [
            ("pca", SlowCountingPCA()),
            ("logistic", CountingLogisticRegression(random_state=0)),
        ]
    )
    grid = {"pca__n_components": [5, 10], "logistic__C": [0.1, 1.0]}
    results = _searches_at_once(dask_client, store, pipe, X, y, [grid, grid], cv=3)
    counts = fit_counts(fit_log)
    stats = [r.stats for r in results]
    assert counts["CountingPCA"] == sum(s.step_fits + s.refit_step_fits for s in stats), stats
    refits = sum(s.refit == "fit" for s in stats)
    assert counts["CountingLogisticRegression"] == sum(s.final_fits for s in stats) + refits
    assert counts["CountingPCA"] < 2 * (6 + 1), counts  # the searches did share fits
    for s in stats:
        assert s.step_fits + s.step_shared == 6 and s.final_fits + s.final_shared == 12, s
        assert s.refit in ("fit", "shared")
    assert results[0].best_params_ == results[1].best_params_


def test_counted_fits_are_forgotten_when_no_search_runs_and_past_a_bound(monkeypatch):
    from memogrid_service.engine import search
    from memogrid_service.engine.tasks import ScoreOutput

    class Client:  # what the counts hang on: any object a weak reference can name
        pass

    client = Client()
    fit = ScoreOutput({"fit_time": 0.5, "score_time": 0.1}, (("step-a", "fit", 0.25),))
    with search._counting_fits(client) as a, search._counting_fits(client) as b:
        assert a.output("s", fit) is fit
        shared = b.output("s", fit)
        assert shared.final == "shared" and shared.provenance[0][1] == "shared"
        assert a.output("s", fit) is fit  # a search's own fit stays its own
    with search._counting_fits(client) as c:  # none ran in between: forgotten
        assert c.output("s", fit) is fit
    monkeypatch.setattr(search.SharedFits, "KEPT", 3)
    with search._counting_fits(client) as a, search._counting_fits(client) as b:
        a.output("s", fit)  # two entries: the step and the score
        a.output("t", ScoreOutput({"fit_time": 0.7, "score_time": 0.1}))
        a.output("u", ScoreOutput({"fit_time": 0.8, "score_time": 0.1}))
        assert len(search._shared_fits[client].counted) == 3
        assert b.output("s", fit).final == "fit"  # the oldest was let go


def test_corrupt_or_missing_entries_are_recomputed(runner, cache, fit_log):
    from sklearn.datasets import make_classification

    # big enough that every step output is a file of its own
    X, y = make_classification(n_samples=1500, n_features=60, random_state=0)
    grid = {"pca__n_components": [30, 40], "logistic__C": [0.1, 1.0]}
    first = runner.search(seed_pipeline(), X, y, param_grid=grid, cv=3, refit=False)
    files = sorted(Path(cache.directory).rglob("*.val"))
    assert files, "large step outputs are stored as files"
    files[0].write_bytes(files[0].read_bytes()[:100])  # truncated
    files[1].unlink()  # missing
    with open(files[2], "r+b") as f:  # one flipped byte
        f.seek(200)
        b = f.read(1)
        f.seek(200)
        f.write(bytes([b[0] ^ 0xFF]))
    # drop the scores so that the damaged steps must be read again
    for key in list(cache._cache.iterkeys()):
        if key.startswith("score-"):
            cache.discard(key)
    fit_log.unlink()
    runner.resident.clear()  # as after a restart: the steps must come from disk
    again = runner.search(seed_pipeline(), X, y, param_grid=grid, cv=3, refit=False)
    assert_cv_results_equal(again.cv_results_, first.cv_results_)
    assert again.stats.step_fits == 3
    assert fit_counts(fit_log)["CountingPCA"] == 3
    assert again.stats.step_hits == 3


def test_stats_count_hits_misses_and_fits(runner):
    X, y = seed_data()
    grid = {"pca__n_components": [5, 10], "logistic__C": [0.1, 1.0]}
    a = runner.search(seed_pipeline(), X, y, param_grid=grid, cv=3, refit=False)
    assert (a.stats.hits, a.stats.misses, a.stats.fits) == (0, 18, 18)
    b = runner.search(
        seed_pipeline(),
        X,
        y,
        param_grid=dict(grid, logistic__C=[1.0, 5.0]),
        cv=3,
        refit=False,
    )
    assert b.stats.score_hits == 6 and b.stats.step_hits == 6 and b.stats.final_fits == 6
    assert b.stats.step_fits == 0


def test_runs_without_a_cache(dask_client, store, fit_log):
    X, y = seed_data()
    runner = SearchRunner(dask_client, store, None)
    grid = {"pca__n_components": [5], "logistic__C": [0.1, 1.0]}
    res = runner.search(seed_pipeline(), X, y, param_grid=grid, cv=3)
    sk = GridSearchCV(seed_pipeline(), grid, cv=3).fit(X, y)
    assert_cv_results_equal(res.cv_results_, sk.cv_results_)


def _scaler_pca_lr():
    from tests.helpers.counting import CountingScaler

    return Pipeline(
        [
            ("scale", CountingScaler()),
            ("pca", CountingPCA()),
            ("logistic", CountingLogisticRegression(random_state=0)),
        ]
    )


def test_cached_step_does_not_run_its_parents(runner, cache, fit_log):
    X, y = seed_data()
    grid = {"pca__n_components": [5, 10], "logistic__C": [0.1]}
    runner.search(_scaler_pca_lr(), X, y, param_grid=grid, cv=3, refit=False)
    # drop the scaler's fold outputs: a search that needed them would refit it
    scaler_steps = [k for k in cache._cache.iterkeys() if k.endswith("/data")]
    fit_log.write_text("")
    dropped = 0
    for key in scaler_steps:
        value = cache.get(key)
        if value[0].shape[1] == X.shape[1]:  # the scaler keeps every column
            cache.discard(key)
            dropped += 1
    assert dropped == 3
    runner.resident.clear()  # the PCA outputs must come from disk
    res = runner.search(
        _scaler_pca_lr(), X, y, param_grid=dict(grid, logistic__C=[1.0]), cv=3, refit=False
    )
    assert fit_counts(fit_log) == {"CountingLogisticRegression": 6}
    assert res.stats.step_fits == 0 and res.stats.step_hits == 6


def test_cached_step_evicted_after_planning_is_recomputed(runner, cache, fit_log):
    import dask

    X, y = seed_data()
    grid = {"pca__n_components": [5], "logistic__C": [0.1]}
    runner.search(_scaler_pca_lr(), X, y, param_grid=grid, cv=3, refit=False)
    runner.resident.clear()  # the steps must come from disk
    prepared = runner.prepare(
        _scaler_pca_lr(), X, y, param_grid=dict(grid, logistic__C=[2.0]), cv=3, refit=False
    )
    dsk, _ = runner.graph(prepared.plan, list(prepared.plan.scores), prepared.ctx, prepared.scoring)
    from memogrid_service.engine.tasks import run_cached_step, run_step

    tasks = [t for t in dsk.values() if isinstance(t, tuple)]
    loaders = [t for t in tasks if t[0] is run_cached_step]
    assert not any(t[0] is run_step for t in tasks)
    assert len(loaders) == 3  # one cached PCA step per fold, no scaler task
    for key in list(cache._cache.iterkeys()):
        if key.startswith("step-"):
            cache.discard(key)  # everything evicted between planning and running
    fit_log.write_text("")
    out = dask.get(dsk, list(prepared.plan.scores))
    counts = fit_counts(fit_log)
    assert counts["CountingScaler"] == 3 and counts["CountingPCA"] == 3
    assert all(o.exception is None for o in out)


def test_edited_user_code_is_fit_again_not_replayed(runner):
    """A notebook cell redefines a transformer class or a function and the
    search runs again on the same cache: the new code runs, as in-process."""
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import FunctionTransformer

    from tests.engine.test_keys import _user_module

    X, y = make_classification(n_samples=120, n_features=6, random_state=0)
    grid = {"lr__C": [0.01, 2.0]}
    for factor in (1, 0):  # the edit zeroes the features: chance-level scores
        cell = _user_module(factor, name="notebook_cell")
        for first in (cell.Featurize(k=3), FunctionTransformer(cell.featurize)):
            pipe = Pipeline([("f", first), ("lr", LogisticRegression())])
            ours = runner.search(pipe, X, y, param_grid=grid, cv=3)
            sk = GridSearchCV(pipe, grid, cv=3).fit(X, y)
            assert ours.stats.final_fits == 6 and ours.stats.step_fits == 3
            assert_cv_results_equal(ours.cv_results_, sk.cv_results_)


def test_failing_fits_are_remembered_not_fit_again(runner, fit_log):
    """A failing candidate's folds (a PCA asking for more components than
    there are features; a final estimator refusing its C) are results too:
    the same search again fits nothing and reports the same failures."""
    import warnings

    from sklearn.exceptions import FitFailedWarning

    X, y = seed_data()
    grid = {"pca__n_components": [5, 500], "logistic__C": [1.0, -1.0]}
    runs = []
    for _ in range(2):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res = runner.search(seed_pipeline(), X, y, param_grid=grid, cv=3, refit=False)
        runs.append((res, [str(w.message) for w in caught if w.category is FitFailedWarning]))
    (cold, cold_warned), (warm, warm_warned) = runs
    assert cold.stats.fits > 0 and warm.stats.fits == 0
    assert warm.stats.score_hits == 12
    assert cold_warned == warm_warned and "9 fits failed out of a total of 12" in cold_warned[0]
    assert_cv_results_equal(cold.cv_results_, warm.cv_results_)
    counts = fit_counts(fit_log)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk = GridSearchCV(seed_pipeline(), grid, cv=3, refit=False).fit(X, y)
    assert_cv_results_equal(warm.cv_results_, sk.cv_results_)
    assert counts["CountingPCA"] == 6  # 3 folds x 2 settings, once: the failing ones too


@pytest.mark.parametrize("kind", ["import", "memory", "warning"])
def test_failures_that_may_not_come_again_are_fit_again(runner, fit_log, kind):
    """A failure that depends on the process, not the estimator (a missing
    optional library, memory, a warning raised as an error) is not kept:
    the next search fits again. The estimator's own refusal is kept."""
    import warnings

    from tests.helpers.counting import FailingClassifier

    X, y = seed_data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for failing in (kind, "value"):
            for _ in range(2):
                grid = {"kind": [failing, "none"]}
                runner.search(FailingClassifier(), X, y, param_grid=grid, cv=3, refit=False)
    counts = fit_counts(fit_log)
    assert counts[f"FailingClassifier-{kind}"] == 6  # both searches fit it
    assert counts["FailingClassifier-value"] == 3  # the second found it cached
    assert counts["FailingClassifier-none"] == 3


def test_a_failure_cached_by_another_installation_is_fit_again(runner, cache, fit_log):
    """A cached failure's traceback names the files of the installation
    that fitted it; scikit-learn groups failures by that text, so one from
    elsewhere is not mixed with fresh ones: it is fit again here."""
    import warnings

    from memogrid_service.engine.tasks import ENV_KEY
    from tests.helpers.counting import FailingClassifier

    X, y = seed_data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        grid = {"kind": ["value", "none"]}
        first = runner.search(FailingClassifier(), X, y, param_grid=grid, cv=3, refit=False)
        moved = 0
        for key in list(cache._cache.iterkeys()):
            value = cache.get(key)
            if isinstance(value, dict) and value.get("fit_error") is not None:
                cache.set(key, {**value, ENV_KEY: "another installation"})
                moved += 1
        assert moved == 3
        again = runner.search(FailingClassifier(), X, y, param_grid=grid, cv=3, refit=False)
    assert first.stats.final_fits == 6 and again.stats.final_fits == 3
    assert fit_counts(fit_log)["FailingClassifier-value"] == 6
    assert first.cv_results_["split0_test_score"][0] != first.cv_results_["split0_test_score"][0]


def test_a_step_failure_keeps_whether_it_repeats_across_workers(runner, cache):
    """A step's failure reaches its score task pickled when the two run on
    different workers, and plain pickling drops an exception's chain (dask
    keeps it only while tblib's support is installed): whether it would
    come again is decided where it was raised, so a step failing for a
    missing library is not cached by a score task elsewhere."""
    import pickle

    from sklearn.linear_model import LogisticRegression

    from memogrid_service.engine.tasks import run_score, run_step
    from memogrid_service.store.cache import drain_writes
    from tests.helpers.counting import FailingTransformer

    X, y = seed_data()
    for kind, kept in (("import", False), ("value", True)):
        pipe = Pipeline([("f", FailingTransformer(kind)), ("lr", LogisticRegression())])
        prepared = runner.prepare(pipe, X, y, param_grid={"lr__C": [1.0]}, cv=3)
        plan = prepared.plan
        score = plan.scores[plan.grid[0][0]]
        node = plan.steps[score.parent]
        fold = plan.folds[score.fold]
        step = run_step(prepared.ctx, node, fold, None)
        assert step.error is not None
        moved = pickle.loads(pickle.dumps(step))
        moved.exception.__cause__ = moved.exception.__context__ = None  # plain pickle's
        out = run_score(prepared.ctx, score, prepared.scoring, fold, moved, None)
        assert out.final == "skipped"
        drain_writes()
        assert (cache.get(score.key) is not None) is kept, kind


PICKY = """
from sklearn.linear_model import LogisticRegression


class Picky(LogisticRegression):
    def __init__(self, C=1.0):
        super().__init__(C=C)

    def fit(self, X, y, sample_weight=None):
        if self.C < 0.5:
            raise ValueError("C too small")
        return super().fit(X, y)
"""


def test_a_failure_in_moved_or_unreadable_user_code_is_fit_again(runner, tmp_path):
    """The key holds the user's code, not its place: moved down its file, a
    failing estimator keeps its key, but a cached failure's traceback would
    name the old line. The files a traceback names outside the installation
    are checked on every hit; code that cannot be read back (sent by value,
    as a notebook's is) leaves its failures uncached."""
    import types
    import warnings

    from memogrid_service.engine.tasks import _holds, failure_record

    X, y = seed_data()
    path = tmp_path / "cell.py"

    def failing(pad):
        source = "\n" * pad + PICKY
        path.write_text(source)
        cell = types.ModuleType("cell")
        exec(compile(source, str(path), "exec"), cell.__dict__)
        try:
            cell.Picky(C=0.1).fit(X, y)
        except ValueError as exc:
            return cell, failure_record(exc)
        raise AssertionError("Picky(C=0.1) fits")

    cell, record = failing(0)
    assert record is not None and str(path) in record["files"] and _holds(record)
    failing(10)  # the same code, ten lines down
    assert not _holds(record)
    # in a worker, the class came by value: its code names no file to read
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        runs = [
            runner.search(cell.Picky(), X, y, param_grid={"C": [0.1, 1.0]}, cv=3, refit=False)
            for _ in range(2)
        ]
    assert [r.stats.final_fits for r in runs] == [6, 3]


def test_a_failure_raised_in_compiled_code_is_remembered(runner):
    """libsvm's refusal of an infeasible nu is raised from a compiled
    extension, whose traceback frame names its source by a relative path:
    installed code, kept like any other failure."""
    import warnings

    from sklearn.svm import NuSVC

    X, _ = seed_data()
    X = X[:60]
    y = np.array([0] * 48 + [1] * 12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fits = [
            runner.search(NuSVC(), X, y, param_grid={"nu": [0.9, 0.1]}, cv=3).stats.final_fits
            for _ in range(2)
        ]
    assert fits == [6, 0]


def test_a_malformed_failure_record_is_a_miss():
    """Records come back from the cache: one that is not what the engine
    writes (files not a mapping of absolute paths, a device, a descriptor
    number) is not used, and reading it never blocks or fails."""
    from memogrid_service.engine.tasks import _holds, _installation

    for files in (None, 1.0, [], {0: "x"}, {"/dev/zero": "x"}, {"relative.py": "x"}):
        assert not _holds({"installation": _installation(), "files": files})
    assert _holds({"installation": _installation(), "files": {}})
    assert not _holds({"installation": "elsewhere", "files": {}}) and not _holds("x")


def test_a_failed_step_fit_is_counted(runner, fit_log):
    """A step whose fit fails was fit all the same: the stats count it, so a
    failure fit again (one that may not repeat) is not reported as a run
    served from the cache."""
    import warnings

    from sklearn.linear_model import LogisticRegression

    from tests.helpers.counting import FailingTransformer

    X, y = seed_data()
    pipe = Pipeline([("f", FailingTransformer()), ("lr", LogisticRegression())])
    grid = {"f__kind": ["import", "none"]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        runs = [runner.search(pipe, X, y, param_grid=grid, cv=3, refit=False) for _ in range(2)]
    assert [r.stats.step_fits for r in runs] == [6, 3]
    assert fit_counts(fit_log)["FailingClassifier-import"] == 6
