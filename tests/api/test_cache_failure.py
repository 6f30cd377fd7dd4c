"""An unusable cache while the service runs: jobs go on uncached, the service stays up."""

from __future__ import annotations

import shutil

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV

from memogrid import Client
from memogrid_service.store.cache import ResultCache
from tests.helpers.parity import assert_cv_results_equal


def test_jobs_continue_without_a_usable_cache(api, settings):
    X = np.random.RandomState(2).normal(size=(90, 4))
    y = (X[:, 0] - X[:, 2] > 0).astype(int)
    # the cache directory turns into a file under the running service: no
    # process can open a cache there any more (a stand-in for a dead disk)
    shutil.rmtree(settings.cache_dir)
    settings.cache_dir.write_text("not a directory")
    assert not ResultCache(settings.cache_dir).usable
    with Client(http=api) as client:
        grid = {"C": [0.1, 1.0, 10.0]}
        for _ in range(2):
            job = client.submit(LogisticRegression(), grid, X, y, cv=3).wait(progress=False)
            # nothing could be stored, so the second run fits everything again
            assert job.stats["final_fits"] == 9
        sk = GridSearchCV(LogisticRegression(), grid, cv=3).fit(X, y)
        assert_cv_results_equal(job.cv_results_, sk.cv_results_)
        assert client.health()["status"] == "ok"
