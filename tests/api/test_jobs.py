"""Jobs over HTTP: submit, run on the engine, read results equal to scikit-learn's."""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline

from memogrid.wire import decode_cv_results, decode_value
from tests.api.conftest import upload, wait_job
from tests.helpers.parity import assert_cv_results_equal

SEED_GRID = {"pca__n_components": [5, 10, 20], "logistic__C": [1e-4, 1e-2, 1, 1e2, 1e4, 1e6]}


def seed_spec():
    return {
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


def seed_pipe():
    return Pipeline(
        [("pca", PCA()), ("logistic", LogisticRegression(solver="liblinear", random_state=0))]
    )


@pytest.fixture(scope="module")
def seed_data():
    return make_classification(n_samples=300, n_features=30, n_redundant=10, random_state=42)


def _upload_sparse(api, dense) -> str:
    from scipy import sparse

    from memogrid.sparse import SPARSE_TYPE, sparse_body

    body = b"".join(sparse_body(sparse.csr_matrix(dense)))
    r = api.post("/v1/datasets", content=body, headers={"content-type": SPARSE_TYPE})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def submit(api, **body):
    r = api.post("/v1/jobs", json=body)
    assert r.status_code == 202, r.text
    assert r.headers["location"] == r.json()["url"]
    return r.json()["id"]


def test_seed_job_matches_sklearn_and_overlap_hits_cache(api, seed_data):
    X, y = seed_data
    xid, yid = upload(api, X), upload(api, y)
    job = submit(api, estimator=seed_spec(), param_grid=SEED_GRID, X=xid, y=yid, cv=5)
    status = wait_job(api, job)
    assert status["state"] == "succeeded", status
    assert status["progress"]["done"] == status["progress"]["total"] == 18 * 5
    assert status["started_at"] and status["finished_at"]

    res = api.get(f"/v1/jobs/{job}/results").json()
    sk = GridSearchCV(seed_pipe(), SEED_GRID, cv=5).fit(X, y)
    ours = decode_cv_results(res["cv_results"])
    assert_cv_results_equal(ours, sk.cv_results_)
    assert res["best_index"] == sk.best_index_
    assert decode_value(res["best_params"]) == sk.best_params_
    assert res["best_score"] == sk.best_score_

    # the refit best estimator, as a skops file loaded with its types audited
    import skops.io as sio

    r = api.get(f"/v1/jobs/{job}/estimator")
    assert r.status_code == 200
    untrusted = sio.get_untrusted_types(data=r.content)
    allowed = [t for t in untrusted if t.startswith("sklearn.")]
    assert untrusted == allowed
    best = sio.loads(r.content, trusted=allowed)
    assert np.array_equal(best.predict(X), sk.best_estimator_.predict(X))

    # split rows, as written while the job ran
    splits = api.get(f"/v1/jobs/{job}/splits").json()
    assert len(splits) == 18 * 5
    assert splits[7]["test_scores"]["score"] == sk.cv_results_["split2_test_score"][1]

    # an overlapping job: the shared PCA settings and candidates come from the cache
    overlap = dict(SEED_GRID, logistic__C=[1e-2, 1e8])
    job2 = submit(api, estimator=seed_spec(), param_grid=overlap, X=xid, y=yid, cv=5)
    status2 = wait_job(api, job2)
    assert status2["state"] == "succeeded", status2
    # C=1e-2 results for every PCA setting and fold, and the 15 fitted PCAs
    assert status2["progress"]["cache_hits"] == 15 + 15
    assert status2["progress"]["fits"] == status2["progress"]["cache_misses"] == 15
    stats = api.get(f"/v1/jobs/{job2}/results").json()["stats"]
    assert stats["score_hits"] == 15 and stats["step_hits"] == 15
    assert stats["step_fits"] == 0 and stats["final_fits"] == 15

    # both jobs in the dataset's leaderboard, best first
    board = api.get(f"/v1/datasets/{xid}/leaderboard", params={"limit": 50}).json()
    assert {row["job_id"] for row in board} == {job, job2}
    scores = [row["mean_score"] for row in board]
    assert scores == sorted(scores, reverse=True)
    assert board[0]["mean_score"] == pytest.approx(sk.best_score_)

    # all results where a parameter had a value, across jobs
    rows = api.get("/v1/results", params={"param": "logistic__C", "value": "0.01"}).json()
    assert len(rows) == 6 and {r["job_id"] for r in rows} == {job, job2}
    assert all(r["params"]["logistic__C"] == 0.01 for r in rows)

    listed = api.get("/v1/jobs", params={"dataset": xid}).json()["items"]
    assert [j["id"] for j in listed] == [job2, job]


def test_failing_candidates_follow_error_score(api, seed_data):
    X, y = seed_data
    xid, yid = upload(api, X), upload(api, y)
    grid = {"pca__n_components": [5, 500]}  # 500 > n_features: fails
    job = submit(api, estimator=seed_spec(), param_grid=grid, X=xid, y=yid, cv=3)
    status = wait_job(api, job)
    assert status["state"] == "succeeded", status["error"]
    res = api.get(f"/v1/jobs/{job}/results").json()
    ours = decode_cv_results(res["cv_results"])
    assert np.isnan(ours["mean_test_score"][1]) and not np.isnan(ours["mean_test_score"][0])
    assert any("fits failed" in w for w in res["warnings"])

    job = submit(
        api, estimator=seed_spec(), param_grid=grid, X=xid, y=yid, cv=3, error_score="raise"
    )
    status = wait_job(api, job)
    assert status["state"] == "failed"
    assert "n_components=500" in status["error"]
    r = api.get(f"/v1/jobs/{job}/results")
    assert r.status_code == 409 and "failed" in r.json()["detail"]
    assert status["error"].strip().splitlines()[0] in r.json()["detail"]
    # every fit failing: scikit-learn's error quotes each failure's traceback,
    # in the job's error; the 409 quotes its first line, naming no file
    job = submit(api, estimator=seed_spec(), param_grid={"pca__n_components": [500]}, X=xid, y=yid)
    status = wait_job(api, job)
    assert status["state"] == "failed" and "Traceback" in status["error"]
    r = api.get(f"/v1/jobs/{job}/results")
    detail = r.json()["detail"]
    assert r.status_code == 409 and "All the 5 fits failed" in detail, detail
    assert "Traceback" not in detail and "\n" not in detail


def _bad(api, body, path_part, message):
    r = api.post("/v1/jobs", json=body)
    assert r.status_code == 422, r.text
    problem = r.json()
    assert r.headers["content-type"].startswith("application/problem+json")
    assert message in problem["detail"], problem
    assert any(path_part in e["path"] for e in problem["errors"]), problem
    return problem


def test_bad_specs_are_422_pointing_at_the_item(api, seed_data, tmp_path):
    X, y = seed_data
    xid, yid = upload(api, X), upload(api, y)
    base = dict(estimator=seed_spec(), param_grid=SEED_GRID, X=xid, y=yid)

    def spec_with(cls, **params):
        s = seed_spec()
        s["params"]["steps"][1][1] = {"class": cls, "params": params}
        return s

    _bad(
        api,
        dict(base, estimator=spec_with("sklearn.linear_model.Nope")),
        "steps[1][1].class",
        "not on the allowlist",
    )
    _bad(api, dict(base, estimator=spec_with("os.system")), "class", "not on the allowlist")
    _bad(api, dict(base, estimator=spec_with("builtins.eval")), "class", "not on the allowlist")
    _bad(
        api,
        dict(base, estimator=spec_with("sklearn.linear_model.LogisticRegression", Cee=1)),
        "params.Cee",
        "no parameter",
    )
    _bad(
        api,
        dict(
            base,
            estimator=spec_with(
                "sklearn.linear_model.LogisticRegression", C={"function": "os.system"}
            ),
        ),
        "params.C",
        "not on the allowlist",
    )
    _bad(api, dict(base, param_grid={"svm__C": [1]}), "param_grid.svm__C", "no parameter")
    _bad(
        api, dict(base, param_grid={"logistic__C": [1], "__class__": [1]}), "__class__", "parameter"
    )
    _bad(api, dict(base, y=upload(api, y[:-5])), "y", "inconsistent numbers of samples")
    # scikit-learn's words for groups of another length (its splitters' check)
    _bad(
        api,
        dict(base, groups=upload(api, np.arange(len(y) - 1) % 3)),
        "groups",
        f"inconsistent numbers of samples: [{len(y)}, {len(y)}, {len(y) - 1}]",
    )
    _bad(api, dict(base, param_grid=[]), "param_grid", "No fits were performed")
    no_space = {k: v for k, v in base.items() if k != "param_grid"}
    _bad(api, dict(no_space, param_distributions=[]), "param_distributions", "no candidates")
    sparse_y = _upload_sparse(api, y[:, None])
    _bad(api, dict(base, y=sparse_y), "y", "a sparse matrix is accepted as X only")
    _bad(api, dict(base, groups=sparse_y), "groups", "accepted as X only")
    weights = dict(base, fit_params={"logistic__sample_weight": sparse_y})
    _bad(api, weights, "fit_params.logistic__sample_weight", "accepted as X only")
    _bad(api, dict(base, X="0" * 64), "X", "unknown dataset")
    _bad(
        api,
        dict(base, param_grid={"logistic__C": list(range(1, 500))}),
        "param_grid",
        "above the limit",
    )
    _bad(api, dict(base, scoring="acuracy"), "scoring", "unknown scorer")
    # splitters whose settings refuse the rows only when they split: the job
    # was accepted and failed at its first fold (scikit-learn's words now)
    n = len(y)
    ms = "sklearn.model_selection."
    for cv, said in (
        ({"class": ms + "TimeSeriesSplit", "params": {"n_splits": n}}, "greater than the number"),
        ({"class": ms + "TimeSeriesSplit", "params": {"test_size": n}}, "Too many splits"),
        ({"class": ms + "ShuffleSplit", "params": {"test_size": 5.0}}, "test_size=5.0 should be"),
        ({"class": ms + "StratifiedShuffleSplit", "params": {"train_size": n + 1}}, "train_size"),
    ):
        _bad(api, dict(base, cv=cv), "cv", said)
    # stored in 255-character columns: PostgreSQL failed such a job after its fits
    long_key = "logistic__" + "x" * 250
    for space in ("param_grid", "param_distributions"):
        grid = {"logistic__C": [1.0], long_key: [1]}
        body = {k: v for k, v in base.items() if k != "param_grid"} | {space: grid}
        _bad(api, body, long_key[:40], "at most 255 characters")
        _bad(api, body | {space: [grid]}, long_key[:40], "at most 255 characters")
    _bad(api, dict(base, x_order="K"), "x_order", "'C' or 'F'")
    marker = tmp_path / "pwned"
    expression = f"__import__('os').system('touch {marker}')"
    _bad(api, dict(base, estimator=expression), "estimator", "")
    _bad(api, dict(base, estimator={"class": expression}), "class", "not on the allowlist")
    _bad(api, dict(base, estimator=spec_with("antigravity.Fly")), "class", "not on the allowlist")
    # nothing named in a request was imported or executed
    assert "antigravity" not in sys.modules and not marker.exists()
    _bad(api, dict(base, nonsense=1), "nonsense", "")
    _bad(
        api,
        dict(base, cv={"class": "sklearn.model_selection.GridSearchCV"}),
        "cv.class",
        "allowlist",
    )
    assert api.get("/v1/jobs").json()["items"] == []


def test_pickle_and_garbage_bodies(api):
    import pickle

    payload = pickle.dumps({"estimator": {"class": "sklearn.svm.SVC"}})
    r = api.post("/v1/jobs", content=payload, headers={"content-type": "application/json"})
    assert r.status_code == 400 and "not UTF-8 JSON" in r.json()["detail"]
    assert r.headers["content-type"].startswith("application/problem+json")
    r = api.post("/v1/jobs", content=payload, headers={"content-type": "application/python-pickle"})
    assert r.status_code == 415 and "application/json" in r.json()["detail"]
    r = api.post("/v1/jobs", content=b"[1, 2", headers={"content-type": "application/json"})
    assert r.status_code in (400, 422)
    assert api.get("/v1/jobs").json()["items"] == []


def test_cancel_queued_and_running(api, seed_data):
    X, y = seed_data
    xid, yid = upload(api, X), upload(api, y)
    big = {"pca__n_components": list(range(2, 30)), "logistic__C": [1e-3, 1e-2, 1e-1, 1, 10, 100]}
    job = submit(api, estimator=seed_spec(), param_grid=big, X=xid, y=yid, cv=5)
    # wait until it runs and has made some progress
    import time

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        body = api.get(f"/v1/jobs/{job}").json()
        if body["state"] == "running" and body["progress"]["done"] > 0:
            break
        time.sleep(0.05)
    assert body["state"] == "running"
    # deleting its data is refused while it runs
    r = api.delete(f"/v1/datasets/{xid}")
    assert r.status_code == 409 and job in r.json()["detail"]
    t0 = time.monotonic()
    r = api.post(f"/v1/jobs/{job}/cancel")
    assert r.status_code == 202 and r.json()["cancel_requested"]
    status = wait_job(api, job, timeout=30)
    assert status["state"] == "cancelled"
    assert time.monotonic() - t0 < 10
    assert status["progress"]["done"] < status["progress"]["total"]
    # results written so far stay readable
    assert isinstance(api.get(f"/v1/jobs/{job}/splits").json(), list)
    assert api.post(f"/v1/jobs/{job}/cancel").status_code == 409
    assert api.delete(f"/v1/datasets/{xid}").status_code == 204


def test_list_filters_and_pagination(api, seed_data):
    X, y = seed_data
    xid, yid = upload(api, X), upload(api, y)
    ids = [
        submit(
            api, estimator=seed_spec(), param_grid={"pca__n_components": [n]}, X=xid, y=yid, cv=2
        )
        for n in (2, 3, 4)
    ]
    for j in ids:
        wait_job(api, j)
    page1 = api.get("/v1/jobs", params={"limit": 2}).json()
    assert [j["id"] for j in page1["items"]] == ids[::-1][:2]
    page2 = api.get("/v1/jobs", params={"limit": 2, "cursor": page1["next_cursor"]}).json()
    assert [j["id"] for j in page2["items"]] == [ids[0]] and page2["next_cursor"] is None
    assert len(api.get("/v1/jobs", params={"state": "succeeded"}).json()["items"]) == 3
    assert api.get("/v1/jobs", params={"state": "failed"}).json()["items"] == []
    created = api.get(f"/v1/jobs/{ids[1]}").json()["created_at"]
    after = api.get("/v1/jobs", params={"created_after": created}).json()["items"]
    assert [j["id"] for j in after] == [ids[2], ids[1]]
    assert api.get("/v1/jobs", params={"cursor": "garbage"}).status_code == 422
    # a cursor's time at another offset, or none, paged otherwise on SQLite
    # (its stored text compared as it stands) than on PostgreSQL
    import base64

    when, job_id = base64.urlsafe_b64decode(page1["next_cursor"]).decode().split("|")
    for other in (when.replace("+00:00", "+05:00"), when.replace("+00:00", "")):
        forged = base64.urlsafe_b64encode(f"{other}|{job_id}".encode()).decode()
        got = api.get("/v1/jobs", params={"cursor": forged})
        assert got.status_code == 422 and "cursor" in got.json()["detail"], got.text
    typo = api.get("/v1/jobs", params={"stat": "failed"})
    assert typo.status_code == 422 and "unknown query parameter 'stat'" in typo.json()["detail"]
    assert api.get("/v1/jobs", params={"created_after": "0.5"}).status_code == 422
    for name, when in (
        ("created_after", "0001-01-01T00:00:00+14:00"),
        ("created_before", "9999-12-31T23:59:59-14:00"),
    ):  # valid ISO 8601, but not a date-time in UTC
        r = api.get("/v1/jobs", params={name: when})
        assert r.status_code == 422 and "outside the date-times" in r.json()["detail"], r.text
    r = api.put("/v1/jobs")
    assert r.status_code == 405 and set(r.headers["allow"].split(", ")) == {"GET", "HEAD", "POST"}
    assert api.get("/v1/jobs", params={"state": "bogus"}).status_code == 422
    assert api.get(f"/v1/jobs/{'0' * 32}").status_code == 404


def test_seeds_left_to_chance_are_drawn_once_and_kept(api, seed_data):
    X, y = seed_data
    xid, yid = upload(api, X), upload(api, y)
    body = {
        "estimator": seed_spec(),
        "param_distributions": {"logistic__C": {"distribution": "loguniform", "args": [0.01, 100]}},
        "n_iter": 3,
        "X": xid,
        "y": yid,
        "cv": {"class": "sklearn.model_selection.KFold", "params": {"shuffle": True}},
    }
    job = submit(api, **body)
    status = wait_job(api, job)
    assert status["state"] == "succeeded"
    request = api.get(f"/v1/jobs/{job}/results").json()["request"]
    # the drawn seeds are part of the job, so a rerun draws the same candidates and folds
    assert isinstance(request["random_state"], int)
    assert isinstance(request["cv"]["params"]["random_state"], int)


def test_ints_and_floats_are_other_values_and_every_job_ranks(api):
    """An int and a float are other values to a query (max_features=1 is one
    feature, 1.0 all of them); a job with several metrics and no refit
    metric keeps its scores, by the first metric."""
    X, y = make_classification(n_samples=80, n_features=5, random_state=1)
    xid, yid = upload(api, X), upload(api, y)
    lr = {"class": "sklearn.linear_model.LogisticRegression"}
    ints = submit(api, estimator=lr, param_grid={"C": [1, 10]}, X=xid, y=yid, cv=3)
    floats = submit(
        api,
        estimator=lr,
        param_grid={"C": [1.0]},
        X=xid,
        y=yid,
        cv=3,
        scoring=["f1", "accuracy"],
        refit=False,
    )
    for job in (ints, floats):
        assert wait_job(api, job)["state"] == "succeeded"
    for value, job in (("1", ints), ("1.0", floats), ("10", ints)):
        rows = api.get("/v1/results", params={"param": "C", "value": value}).json()
        assert [r["job_id"] for r in rows] == [job], value
    assert api.get("/v1/results", params={"param": "C", "value": "10.0"}).json() == []
    board = api.get(f"/v1/datasets/{xid}/leaderboard", params={"limit": 50, "metric": "f1"})
    mine = [row for row in board.json() if row["job_id"] == floats]
    sk = GridSearchCV(LogisticRegression(), {"C": [1.0]}, cv=3, scoring="f1").fit(X, y)
    assert [(r["metric"], r["mean_score"]) for r in mine] == [("f1", sk.best_score_)]


def test_a_cancel_racing_the_jobs_end_is_refused_not_left_on_an_ended_job(api):
    """The job's row is locked before its state is read: on PostgreSQL a job
    ending while the cancel was between its read and its write ended
    succeeded with a cancel asked for (and a 202 saying so)."""
    import threading
    from datetime import timedelta

    from sqlalchemy import select, update

    from memogrid_service.db.models import Job, User
    from memogrid_service.db.ops import utcnow
    from tests.runner.test_job_runner import _queue

    svc = api.app.state.services
    with svc.db.read() as s:
        owner = s.scalars(select(User.id).where(User.is_admin)).first()
    (job_id,) = _queue(  # another service's, running, its lease renewed
        svc,
        {"svc__C": [1.0]},
        owner=owner,
        state="running",
        lease_owner="elsewhere",
        lease_expires=utcnow() + timedelta(minutes=5),
        attempts=1,
    )
    codes = []
    cancel = threading.Thread(
        target=lambda: codes.append(api.post(f"/v1/jobs/{job_id}/cancel").status_code)
    )
    with svc.db.write() as s:  # its runner writing its success
        s.execute(update(Job).where(Job.id == job_id).values(state="succeeded", lease_owner=None))
        cancel.start()
        cancel.join(0.5)
    cancel.join(30)
    assert codes == [409]
    with svc.db.read() as s:
        job = s.get(Job, job_id)
        assert (job.state, job.cancel_requested) == ("succeeded", False)


def test_the_leaderboard_ranks_one_metric_and_ties_as_scikit_learn_does(api):
    """Scores of different metrics ranked in one list (accuracy against
    log loss), a named scorer was stored as "score" so metric= could not
    select it, and tied candidates came last first."""
    X, y = make_classification(n_samples=80, n_features=5, random_state=1)
    xid, yid = upload(api, X), upload(api, y)
    lr = {"class": "sklearn.linear_model.LogisticRegression"}
    tied = submit(api, estimator=lr, param_grid={"C": [1.0, 1.0]}, X=xid, y=yid, cv=3)
    assert wait_job(api, tied)["state"] == "succeeded"
    board = api.get(f"/v1/datasets/{xid}/leaderboard").json()  # one metric: no need to name it
    assert [(r["job_id"], r["candidate"], r["metric"]) for r in board] == [
        (tied, 0, "score"),
        (tied, 1, "score"),
    ]
    named = submit(api, estimator=lr, param_grid={"C": [0.5]}, X=xid, y=yid, cv=3, scoring="f1")
    assert wait_job(api, named)["state"] == "succeeded"
    mixed = api.get(f"/v1/datasets/{xid}/leaderboard")
    assert mixed.status_code == 422 and "several metrics (f1, score)" in mixed.json()["detail"]
    f1 = api.get(f"/v1/datasets/{xid}/leaderboard", params={"metric": "f1"}).json()
    sk = GridSearchCV(LogisticRegression(), {"C": [0.5]}, cv=3, scoring="f1").fit(X, y)
    assert [(r["job_id"], r["mean_score"]) for r in f1] == [(named, sk.best_score_)]
    unknown = api.get(f"/v1/datasets/{xid}/leaderboard", params={"metric": "roc_auc"})
    assert unknown.status_code == 422 and "metrics are f1, score" in unknown.json()["detail"]


def test_a_job_finishing_while_the_leaderboard_reads_does_not_join_its_ranking(api, monkeypatch):
    """The leaderboard reads the metrics used, then the rows: a job ranked
    by another metric that finished in between was ranked with the rest."""
    from contextlib import contextmanager

    from sqlalchemy import update

    from memogrid_service.db.models import Candidate

    X, y = make_classification(n_samples=80, n_features=5, random_state=1)
    xid, yid = upload(api, X), upload(api, y)
    lr = {"class": "sklearn.linear_model.LogisticRegression"}
    first = submit(api, estimator=lr, param_grid={"C": [1.0]}, X=xid, y=yid, cv=3)
    later = submit(api, estimator=lr, param_grid={"C": [0.5]}, X=xid, y=yid, cv=3, scoring="f1")
    for job in (first, later):
        assert wait_job(api, job)["state"] == "succeeded"
    svc = api.app.state.services
    with svc.db.write() as s:  # the f1 job's ranking, as if it had not finished yet
        s.execute(update(Candidate).where(Candidate.job_id == later).values(mean_score=None))
    real_read, reads = svc.db.read, []

    @contextmanager
    def read():
        import traceback

        if any(f.name == "leaderboard" for f in traceback.extract_stack()):
            reads.append(1)
        if len(reads) == 2:  # between the route's two reads, the f1 job's results land
            with svc.db.write() as s:
                s.execute(update(Candidate).where(Candidate.job_id == later).values(mean_score=0.5))
        with real_read() as s:
            yield s

    monkeypatch.setattr(svc.db, "read", read)
    board = api.get(f"/v1/datasets/{xid}/leaderboard")
    assert board.status_code == 200, board.text
    assert len(reads) >= 2
    assert {(r["job_id"], r["metric"]) for r in board.json()} == {(first, "score")}


def test_results_take_a_value_as_a_jobs_grid_writes_it_newest_job_first(api):
    """A value was found only in the service's own stored form: an estimator
    spec without "params", or a numpy float as the README writes it, found
    nothing."""
    X, y = make_classification(n_samples=80, n_features=5, random_state=1)
    xid, yid = upload(api, X), upload(api, y)
    scaler = {"class": "sklearn.preprocessing.StandardScaler"}
    pipe = {
        "class": "sklearn.pipeline.Pipeline",
        "params": {
            "steps": [["sc", scaler], ["lr", {"class": "sklearn.linear_model.LogisticRegression"}]]
        },
    }
    grid = {"sc": [scaler, "passthrough"], "lr__C": [{"numpy": "float32", "value": 0.5}]}
    jobs = [submit(api, estimator=pipe, param_grid=grid, X=xid, y=yid, cv=3) for _ in range(2)]
    for job in jobs:
        assert wait_job(api, job)["state"] == "succeeded"
    for param, value in (
        ("sc", {"class": "sklearn.preprocessing.StandardScaler"}),
        ("sc", {"class": "sklearn.preprocessing.StandardScaler", "params": {}}),
        ("lr__C", {"numpy": "float32", "value": 0.5}),
    ):
        got = api.get("/v1/results", params={"param": param, "value": json.dumps(value)})
        assert got.status_code == 200, got.text
        rows = [(r["job_id"], r["candidate"]) for r in got.json()]
        want = (
            [(jobs[1], 0), (jobs[0], 0)]
            if param == "sc"
            else [(jobs[1], 0), (jobs[1], 1), (jobs[0], 0), (jobs[0], 1)]
        )
        assert rows == want, (param, value, rows)
    bad = api.get("/v1/results", params={"param": "sc", "value": '{"class": "os.system"}'})
    assert bad.status_code == 422 and "allowlist" in bad.json()["detail"]
    assert bad.json()["detail"].startswith("value") and "value: value" not in bad.text


def test_a_best_score_that_is_not_finite_is_kept_as_scikit_learn_gives_it(api):
    """A best score of NaN or an infinity came back as null (and a
    reattached job's best_score_ raised, blaming refit=False), and a
    candidate whose mean was an infinity was left out of the leaderboard."""
    import warnings

    from sklearn.datasets import make_regression
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import LeaveOneOut

    from memogrid import Client

    X, y = make_classification(n_samples=60, n_features=4, random_state=0)
    xid, yid = upload(api, X), upload(api, y)
    lr = {"class": "sklearn.linear_model.LogisticRegression"}
    # C=-1 fails every fit: its error score, an infinity, ranks first
    inf_job = submit(
        api,
        estimator=lr,
        param_grid={"C": [1.0, -1.0]},
        X=xid,
        y=yid,
        cv=3,
        error_score="inf",
        refit=False,
    )
    Xr, yr = make_regression(n_samples=8, n_features=3, random_state=0)
    xr, yr_id = upload(api, Xr), upload(api, yr)
    loo = {"class": "sklearn.model_selection.LeaveOneOut"}
    ridge = {"class": "sklearn.linear_model.Ridge"}
    # r2 of one test row is NaN: every mean is NaN
    nan_job = submit(
        api, estimator=ridge, param_grid={"alpha": [1.0, 2.0]}, X=xr, y=yr_id, cv=loo, scoring="r2"
    )
    for job in (inf_job, nan_job):
        assert wait_job(api, job)["state"] == "succeeded"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk_inf = GridSearchCV(
            LogisticRegression(), {"C": [1.0, -1.0]}, cv=3, error_score=np.inf, refit=False
        ).fit(X, y)
        sk_nan = GridSearchCV(Ridge(), {"alpha": [1.0, 2.0]}, cv=LeaveOneOut(), scoring="r2")
        sk_nan.fit(Xr, yr)
    assert sk_inf.best_score_ == np.inf and np.isnan(sk_nan.best_score_)
    got_inf = api.get(f"/v1/jobs/{inf_job}/results").json()
    got_nan = api.get(f"/v1/jobs/{nan_job}/results").json()
    assert (got_inf["best_index"], got_inf["best_score"]) == (sk_inf.best_index_, "Infinity")
    assert (got_nan["best_index"], got_nan["best_score"]) == (sk_nan.best_index_, "NaN")
    with Client(http=api) as client:
        assert client.job(inf_job).best_score_ == np.inf
        assert np.isnan(client.job(nan_job).best_score_)
        board = client.leaderboard(xid)
    # ranked as scikit-learn ranks them: the infinity first
    assert [(r["candidate"], r["mean_score"], r["rank"]) for r in board] == [
        (1, np.inf, 1),
        (0, sk_inf.cv_results_["mean_test_score"][0], 2),
    ]
    assert api.get(f"/v1/datasets/{xr}/leaderboard").json() == []  # NaN ranks nowhere


def test_results_find_a_dict_value_whatever_the_order_of_its_pairs(api):
    """A dict ({0: 1, 1: 5}) was found only written in the order the job's
    grid wrote it, though scikit-learn takes the two orders alike."""
    X, y = make_classification(n_samples=80, n_features=5, random_state=1)
    xid, yid = upload(api, X), upload(api, y)
    lr = {"class": "sklearn.linear_model.LogisticRegression"}
    weights = {"dict": [[1, 5], [0, 1]]}
    job = submit(api, estimator=lr, param_grid={"class_weight": [weights]}, X=xid, y=yid, cv=3)
    assert wait_job(api, job)["state"] == "succeeded"
    for pairs in ([[1, 5], [0, 1]], [[0, 1], [1, 5]]):
        value = json.dumps({"dict": pairs})
        got = api.get("/v1/results", params={"param": "class_weight", "value": value}).json()
        assert [(r["job_id"], r["candidate"]) for r in got] == [(job, 0)], pairs
    other = json.dumps({"dict": [[0, 1], [1, 6]]})
    assert api.get("/v1/results", params={"param": "class_weight", "value": other}).json() == []


def test_the_services_own_paths_are_not_told_to_users(api, settings):
    """The estimators directory gone (a volume not mounted): the job stands,
    its note said "No such file or directory: '/srv/.../estimators/...'"."""
    import shutil

    X, y = make_classification(n_samples=60, n_features=4, random_state=0)
    xid, yid = upload(api, X), upload(api, y)
    shutil.rmtree(settings.estimators_dir)
    job = submit(
        api,
        estimator={"class": "sklearn.linear_model.LogisticRegression"},
        param_grid={"C": [1.0]},
        X=xid,
        y=yid,
        cv=3,
    )
    assert wait_job(api, job)["state"] == "succeeded"
    res = api.get(f"/v1/jobs/{job}/results").json()
    assert not res["has_estimator"]
    (note,) = [w for w in res["warnings"] if "could not be stored" in w]
    assert "FileNotFoundError" in note and str(settings.data_dir) not in note, note


def test_an_ended_job_is_deleted_with_everything_it_wrote(api, api_as, settings):
    """DELETE /v1/jobs/{id}: only its owner's, only once it has ended; its
    results, candidates, estimator file and dataset roles go with it, and
    the other jobs on the same data keep theirs."""
    from sqlalchemy import func, select

    from memogrid_service.db.models import Candidate, CandidateParam, JobDataset, SplitResult

    X, y = make_classification(n_samples=80, n_features=5, random_state=1)
    xid, yid = upload(api, X), upload(api, y)
    lr = {"class": "sklearn.linear_model.LogisticRegression"}
    gone = submit(api, estimator=lr, param_grid={"C": [0.5, 2.0]}, X=xid, y=yid, cv=3)
    kept = submit(api, estimator=lr, param_grid={"C": [1.0]}, X=xid, y=yid, cv=3)
    assert wait_job(api, gone)["state"] == wait_job(api, kept)["state"] == "succeeded"
    estimator = settings.estimators_dir / f"{gone}.skops"
    assert estimator.exists()
    assert api.get(f"/v1/jobs/{gone}/estimator").status_code == 200
    half = {"param": "C", "value": "0.5"}
    assert [r["job_id"] for r in api.get("/v1/results", params=half).json()] == [gone]

    # another user's job is not found, and stays
    r = api_as("mallory").delete(f"/v1/jobs/{gone}")
    assert r.status_code == 404 and gone in r.json()["detail"]
    assert api.get(f"/v1/jobs/{gone}").status_code == 200

    assert api.delete(f"/v1/jobs/{gone}").status_code == 204
    for path in ("", "/results", "/splits", "/estimator"):
        r = api.get(f"/v1/jobs/{gone}{path}")
        assert r.status_code == 404 and gone in r.json()["detail"], path
    assert api.delete(f"/v1/jobs/{gone}").status_code == 404
    assert not estimator.exists()
    assert [j["id"] for j in api.get("/v1/jobs").json()["items"]] == [kept]
    board = api.get(f"/v1/datasets/{xid}/leaderboard").json()
    assert {r["job_id"] for r in board} == {kept}
    assert api.get("/v1/results", params=half).json() == []
    with api.app.state.services.db.read() as s:
        for table in (SplitResult, Candidate, CandidateParam, JobDataset):
            left = {
                job: s.scalar(select(func.count()).where(table.job_id == job))
                for job in (gone, kept)
            }
            assert left[gone] == 0 and left[kept] > 0, table.__tablename__
    assert api.get(f"/v1/jobs/{kept}/estimator").status_code == 200

    # not while it may still write: queued or running is refused until cancelled
    big = {"C": list(np.logspace(-3, 3, 200))}
    live = submit(api, estimator=lr, param_grid=big, X=xid, y=yid, cv=5)
    r = api.delete(f"/v1/jobs/{live}")
    assert r.status_code == 409 and "cancel it first" in r.json()["detail"]
    deadline = time.monotonic() + 60
    while api.get(f"/v1/jobs/{live}").json()["state"] == "queued":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert api.post(f"/v1/jobs/{live}/cancel").status_code == 202
    r = api.delete(f"/v1/jobs/{live}")  # 204 only if it stopped that fast
    assert r.status_code == 204 or "once it has stopped" in r.json()["detail"], r.text
    if r.status_code == 409:
        assert wait_job(api, live)["state"] == "cancelled"
        assert api.delete(f"/v1/jobs/{live}").status_code == 204
    assert api.get(f"/v1/jobs/{live}").status_code == 404
    assert api.delete(f"/v1/datasets/{xid}").status_code == 204
