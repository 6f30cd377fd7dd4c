"""A notebook user's whole session over plain HTTP against a real uvicorn."""

from __future__ import annotations

import io
import time

import httpx
import numpy as np
import pytest
import skops.io as sio
from sklearn.datasets import make_classification
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline

import memogrid
from memogrid.wire import decode_cv_results, decode_value
from tests.e2e.server import Server
from tests.helpers.parity import assert_cv_results_equal

pytestmark = pytest.mark.slow

GRID = {"pca__n_components": [5, 10, 20], "logistic__C": [1e-4, 1e-2, 1, 1e2, 1e4, 1e6]}
SPEC = {
    "class": "sklearn.pipeline.Pipeline",
    "params": {
        "steps": [
            ["pca", {"class": "sklearn.decomposition.PCA"}],
            [
                "logistic",
                {
                    "class": "sklearn.linear_model.LogisticRegression",
                    "params": {"solver": "liblinear", "random_state": 0},
                },
            ],
        ]
    },
}


def _npy(arr) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _wait(http: httpx.Client, job_id: str) -> dict:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        body = http.get(f"/v1/jobs/{job_id}").raise_for_status().json()
        if body["state"] in ("succeeded", "failed", "cancelled"):
            return body
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish")


def test_notebook_session_over_http(tmp_path, db_url, monkeypatch):
    X, y = make_classification(n_samples=300, n_features=30, n_redundant=10, random_state=42)
    with Server(tmp_path / "data", {"MEMOGRID_DATABASE_URL": db_url}) as server:
        http = httpx.Client(
            base_url=server.url,
            timeout=30,
            headers={"authorization": f"Bearer {server.token}"},
        )
        assert httpx.get(f"{server.url}/v1/jobs").status_code == 401
        ids = []
        for arr in (X, y):
            r = http.post(
                "/v1/datasets", content=_npy(arr), headers={"content-type": "application/x-npy"}
            )
            assert r.status_code == 201, r.text
            ids.append(r.json()["id"])
        xid, yid = ids
        assert http.head(f"/v1/datasets/{xid}").status_code == 200

        r = http.post("/v1/jobs", json={"estimator": SPEC, "param_grid": GRID, "X": xid, "y": yid})
        assert r.status_code == 202, r.text
        job = r.json()["id"]
        status = _wait(http, job)
        assert status["state"] == "succeeded", status["error"]

        sk = GridSearchCV(
            Pipeline(
                [
                    ("pca", PCA()),
                    ("logistic", LogisticRegression(solver="liblinear", random_state=0)),
                ]
            ),
            GRID,
        ).fit(X, y)
        res = http.get(f"/v1/jobs/{job}/results").json()
        assert_cv_results_equal(decode_cv_results(res["cv_results"]), sk.cv_results_)
        assert decode_value(res["best_params"]) == sk.best_params_
        assert res["best_score"] == sk.best_score_

        blob = http.get(f"/v1/jobs/{job}/estimator").raise_for_status().content
        trusted = [t for t in sio.get_untrusted_types(data=blob) if t.startswith("sklearn.")]
        best = sio.loads(blob, trusted=trusted)
        assert np.array_equal(best.predict(X), sk.best_estimator_.predict(X))

        grid2 = dict(GRID, logistic__C=[1, 3])
        job2 = http.post(
            "/v1/jobs", json={"estimator": SPEC, "param_grid": grid2, "X": xid, "y": yid}
        ).json()["id"]
        status2 = _wait(http, job2)
        assert status2["state"] == "succeeded"
        assert status2["progress"]["cache_hits"] >= 15  # C=1 for every PCA and fold
        assert status2["progress"]["fits"] == 15  # only the C=3 logistic fits

        board = http.get(f"/v1/datasets/{xid}/leaderboard", params={"limit": 100}).json()
        assert {row["job_id"] for row in board} == {job, job2}
        assert len(board) == 18 + 6

        # the drop-in makes its own client from the environment: the job it
        # leaves stays usable after fit (it held that client, closed)
        monkeypatch.setenv("MEMOGRID_URL", server.url)
        monkeypatch.setenv("MEMOGRID_TOKEN", server.token)
        search = memogrid.GridSearchCV(LogisticRegression(), {"C": [0.1, 1.0]}, progress=False)
        search.fit(X, y)
        assert search.job_.status()["state"] == "succeeded"
        assert len(search.job_.splits()) == 2 * 5
