"""Benchmark workloads and the serial lower bound they are measured against."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.datasets import make_classification
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import check_scoring
from sklearn.model_selection import ParameterGrid, check_cv
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler


@dataclass
class Workload:
    name: str
    title: str
    X: np.ndarray
    y: np.ndarray
    pipe: Pipeline
    grid: dict[str, list[Any]]
    overlap_grid: dict[str, list[Any]]
    cv: int = 5
    extra: dict[str, Any] = field(default_factory=dict)


def workload_a() -> Workload:
    """The seed's workload: PCA x3 -> liblinear LogisticRegression x6, cv=5."""
    X, y = make_classification(n_samples=10000, n_features=500, n_redundant=250, random_state=42)
    pipe = Pipeline(
        [
            ("pca", PCA()),
            ("logistic", LogisticRegression(solver="liblinear", random_state=0)),
        ]
    )
    grid = {
        "pca__n_components": [50, 100, 250],
        "logistic__C": [1e-4, 1.0, 1e4],
        "logistic__l1_ratio": [0, 1],
    }
    overlap = dict(grid, logistic__C=[1e-2, 1e2])
    return Workload(
        "A", "seed: 10000x500, PCA x3 -> LogisticRegression x6", X, y, pipe, grid, overlap
    )


def workload_b(n_samples: int = 20000, n_features: int = 1000) -> Workload:
    """An expensive prefix and a cheap final step."""
    X, y = make_classification(
        n_samples=n_samples, n_features=n_features, n_informative=50, random_state=0
    )
    pipe = Pipeline(
        [
            ("scale", StandardScaler()),
            ("pca", PCA(svd_solver="full")),
            ("logistic", LogisticRegression(max_iter=200)),
        ]
    )
    grid = {"pca__n_components": [20, 50, 100], "logistic__C": [1e-2, 1.0, 1e2]}
    overlap = dict(grid, logistic__C=[1e-1, 1e1])
    return Workload(
        "B",
        f"expensive prefix: {n_samples}x{n_features}, scaler -> full-SVD PCA x3 -> "
        "LogisticRegression x3",
        X,
        y,
        pipe,
        grid,
        overlap,
    )


def _chain_options(pipe: Pipeline, grid: dict[str, list[Any]]) -> tuple[list, list]:
    """Per transformer position, its distinct configured options; and the finals."""
    per_step: list[dict[str, Any]] = []
    for name, _ in pipe.steps:
        prefix = name + "__"
        sub = {k[len(prefix) :]: v for k, v in grid.items() if k.startswith(prefix)}
        per_step.append(sub)
    transformers = [
        [clone(step).set_params(**p) for p in ParameterGrid(sub)]
        for (_, step), sub in zip(pipe.steps[:-1], per_step[:-1], strict=True)
    ]
    finals = [clone(pipe.steps[-1][1]).set_params(**p) for p in ParameterGrid(per_step[-1])]
    return transformers, finals


def serial_unique_fits(
    w: Workload,
    grid: dict[str, list[Any]],
    *,
    fit_transformers: bool,
    refit_params: dict[str, Any] | None,
    refit_transformers: bool,
) -> float:
    """Seconds a plain serial loop takes over only the fits an engine run must do.

    Every distinct transformer prefix is fit once per fold (timed only when
    ``fit_transformers``), every final estimator once per prefix and fold,
    and scored like the search; then the refit of the best candidate (its
    transformers timed only when ``refit_transformers``). BLAS is held to
    one thread, as in the engine's tasks, so the loop is truly serial.
    """
    from threadpoolctl import threadpool_limits

    transformers, finals = _chain_options(w.pipe, grid)
    scorer = check_scoring(w.pipe)
    cv = check_cv(w.cv, w.y, classifier=True)
    elapsed = 0.0
    with threadpool_limits(1):
        for train, test in cv.split(w.X, w.y):
            Xtr, Xte, ytr, yte = w.X[train], w.X[test], w.y[train], w.y[test]
            start = time.perf_counter()
            prefixes = [(Xtr, Xte)]
            for options in transformers:
                prefixes = [
                    (e.fit_transform(a, ytr), e.transform(b))
                    for a, b in prefixes
                    for e in (clone(o) for o in options)
                ]
            if fit_transformers:
                elapsed += time.perf_counter() - start
            start = time.perf_counter()
            for a, b in prefixes:
                for fin in finals:
                    scorer(clone(fin).fit(a, ytr), b, yte)
            elapsed += time.perf_counter() - start
        if refit_params is not None:
            best = clone(w.pipe).set_params(**refit_params)
            start = time.perf_counter()
            Xt = w.X
            for _, step in best.steps[:-1]:
                Xt = step.fit_transform(Xt, w.y)
            if refit_transformers:
                elapsed += time.perf_counter() - start
            start = time.perf_counter()
            best.steps[-1][1].fit(Xt, w.y)
            elapsed += time.perf_counter() - start
    return elapsed


def _serial_copy(args: tuple[Workload, dict[str, list[Any]], dict[str, Any]]) -> float:
    w, grid, fits = args
    return serial_unique_fits(w, grid, **fits)


def contended_serial(
    w: Workload, grid: dict[str, list[Any]], copies: int, fits: dict[str, Any]
) -> float:
    """Seconds :func:`serial_unique_fits` (``fits`` its keyword arguments) takes
    when ``copies`` of it run at once.

    Compared with one copy alone, this shows how much of the ideal
    ``serial / cores`` the machine itself can deliver: cores that slow each
    other down (shared caches, memory bandwidth, a busy host) cap any
    scheduler's speed-up below the core count.
    """
    import multiprocessing as mp

    with mp.get_context("fork").Pool(copies) as pool:
        return max(pool.map(_serial_copy, [(w, grid, fits)] * copies))


@contextmanager
def temp_runner(client: Any, prefix: str, **kwargs: Any) -> Iterator[Any]:
    """A SearchRunner over a fresh dataset store and cache, removed afterwards
    (with the step outputs it kept in worker memory)."""
    from memogrid_service.engine.search import SearchRunner
    from memogrid_service.store.cache import ResultCache
    from memogrid_service.store.datasets import DatasetStore

    root = tempfile.mkdtemp(prefix=prefix)
    runner = SearchRunner(
        client,
        DatasetStore(os.path.join(root, "data")),
        ResultCache(os.path.join(root, "cache")),
        **kwargs,
    )
    try:
        yield runner
    finally:
        # the next cold run must not find this one's outputs in worker memory
        if runner.resident is not None:
            runner.resident.clear()
        shutil.rmtree(root, ignore_errors=True)
