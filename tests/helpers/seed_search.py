"""Run a seed-shaped search in a fresh process; print its stats as JSON.

Usage: python -m tests.helpers.seed_search DATA_DIR CACHE_DIR GRID_JSON
"""

from __future__ import annotations

import json
import sys

from sklearn.datasets import make_classification
from sklearn.pipeline import Pipeline

from memogrid_service.engine.cluster import close_client, make_client
from memogrid_service.engine.search import SearchRunner
from memogrid_service.store.cache import ResultCache
from memogrid_service.store.datasets import DatasetStore
from tests.helpers.counting import CountingLogisticRegression, CountingPCA


def seed_data():
    return make_classification(n_samples=400, n_features=40, n_redundant=20, random_state=42)


def seed_pipeline():
    return Pipeline(
        [
            ("pca", CountingPCA()),
            (
                "logistic",
                CountingLogisticRegression(solver="liblinear", random_state=0),
            ),
        ]
    )


def main() -> None:
    data_dir, cache_dir, grid_json = sys.argv[1:4]
    X, y = seed_data()
    client = make_client(processes=False, n_workers=1, threads_per_worker=2)
    try:
        runner = SearchRunner(client, DatasetStore(data_dir), ResultCache(cache_dir))
        res = runner.search(seed_pipeline(), X, y, param_grid=json.loads(grid_json), cv=5)
        print(
            json.dumps(
                {
                    "stats": res.stats.as_dict(),
                    "best": res.best_params_,
                    "mean": res.cv_results_["mean_test_score"].tolist(),
                }
            )
        )
    finally:
        close_client(client)


if __name__ == "__main__":
    main()
