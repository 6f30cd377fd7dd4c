"""Cross-job queries on a large database: 10,000 jobs and 1,000,000 result rows.

    python -m benchmarks.query_bench [--backend sqlite|postgresql|both] [--jobs 10000]

Seeds a fresh database through the service's own migrations with ``--jobs``
finished jobs over 10 datasets, each job 20 candidates x 5 splits (so
10,000 jobs give 1,000,000 split rows, 200,000 candidates and 400,000
parameter rows), then times the API's queries through the real ASGI app
(median and worst of 30 calls): a dataset's leaderboard, all results where
a parameter has a value (with and without a dataset filter), the job list
filtered by dataset and state, and one job's status.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

PG_URL = os.environ.get("MEMOGRID_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
CANDIDATES, SPLITS, DATASETS = 20, 5, 10
C_VALUES = [1e-3, 1e-2, 1e-1, 1.0, 10.0]
N_VALUES = [5, 10, 20, 50]


def seed(db, n_jobs: int, owner: str) -> list[str]:
    """``n_jobs`` finished jobs, all ``owner``'s (the worst case for one user's queries)."""
    from sqlalchemy import insert

    from memogrid_service.db.models import Candidate, CandidateParam, Job, JobDataset, SplitResult
    from memogrid_service.runner.jobs import param_key, param_text

    rng = np.random.default_rng(0)
    datasets = [secrets.token_hex(32) for _ in range(DATASETS)]
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    batch = 200
    for start in range(0, n_jobs, batch):
        jobs, roles, splits, cands, params = [], [], [], [], []
        for j in range(start, min(start + batch, n_jobs)):
            job_id = uuid.uuid4().hex
            did = datasets[j % DATASETS]
            created = t0 + timedelta(minutes=j)
            jobs.append(
                dict(
                    id=job_id,
                    owner_id=owner,
                    state="succeeded",
                    kind="grid",
                    request={},
                    x_id=did,
                    created_at=created,
                    started_at=created,
                    finished_at=created,
                    n_candidates=CANDIDATES,
                    n_splits=SPLITS,
                    progress_done=100,
                    progress_total=100,
                    cache_hits=0,
                    cache_misses=100,
                    fits=100,
                    cancel_requested=False,
                    attempts=1,
                    has_estimator=False,
                    refit_metric="score",
                )
            )
            roles.append(dict(job_id=job_id, role="X", dataset_id=did))
            scores = rng.random((CANDIDATES, SPLITS))
            for c in range(CANDIDATES):
                p = {"logistic__C": C_VALUES[c % 5], "pca__n_components": N_VALUES[c // 5]}
                cands.append(
                    dict(
                        job_id=job_id,
                        idx=c,
                        owner_id=owner,
                        dataset_id=did,
                        metric="score",
                        params=p,
                        mean_score=float(scores[c].mean()),
                        std_score=float(scores[c].std()),
                        rank=1,
                    )
                )
                for name, value in p.items():
                    text = param_text(value)
                    params.append(
                        dict(
                            job_id=job_id,
                            idx=c,
                            owner_id=owner,
                            name=name,
                            value=text,
                            value_key=param_key(text),
                        )
                    )
                for s in range(SPLITS):
                    splits.append(
                        dict(
                            job_id=job_id,
                            candidate=c,
                            split=s,
                            test_scores={"score": float(scores[c, s])},
                            train_scores=None,
                            fit_time=0.1,
                            score_time=0.01,
                            fit_failed=False,
                            cached=False,
                        )
                    )
        with db.write() as s:
            s.execute(insert(Job), jobs)
            s.execute(insert(JobDataset), roles)
            s.execute(insert(Candidate), cands)
            s.execute(insert(CandidateParam), params)
            s.execute(insert(SplitResult), splits)
    if db.is_sqlite:
        with db.write_engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE")
    else:
        with db.write_engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE")
    return datasets


def timed(http, url: str, params: dict | None = None, n: int = 30) -> tuple[float, float, int]:
    times = []
    rows = 0
    for _ in range(n):
        start = time.perf_counter()
        r = http.get(url, params=params)
        times.append(time.perf_counter() - start)
        r.raise_for_status()
        body = r.json()
        rows = len(body) if isinstance(body, list) else len(body.get("items", [body]))
    return statistics.median(times), max(times), rows


def run(backend: str, n_jobs: int) -> None:
    from fastapi.testclient import TestClient
    from sqlalchemy import create_engine, text

    from memogrid_service.api.app import create_app
    from memogrid_service.db import migrate
    from memogrid_service.db.session import Database
    from memogrid_service.settings import Settings

    root = Path(tempfile.mkdtemp(prefix="mg-query-"))
    schema = None
    if backend == "sqlite":
        url = f"sqlite:///{root / 'bench.db'}"
    else:
        schema = f"bench_{secrets.token_hex(4)}"
        admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f"CREATE SCHEMA {schema}"))
        url = f"{PG_URL}?options=-csearch_path%3D{schema}"
    try:
        db = Database(url)
        migrate.upgrade(db.write_engine)
        start = time.perf_counter()
        from memogrid_service.api.auth import create_token, ensure_user

        token = create_token(db, "bench")
        datasets = seed(db, n_jobs, ensure_user(db, "bench"))
        took = time.perf_counter() - start
        db.dispose()
        print(
            f"{backend}: seeded {n_jobs} jobs, {n_jobs * CANDIDATES * SPLITS} split rows, "
            f"{n_jobs * CANDIDATES} candidates in {took:.0f} s"
        )
        settings = Settings(data_dir=root / "data", database_url=url)
        app = create_app(settings, dask_client=object(), start_runner=False)
        with TestClient(app, headers={"authorization": f"Bearer {token}"}) as http:
            some_job = http.get("/v1/jobs", params={"limit": 1}).json()["items"][0]["id"]
            queries = [
                (
                    "leaderboard of one dataset (top 20)",
                    f"/v1/datasets/{datasets[3]}/leaderboard",
                    {"limit": 20},
                ),
                (
                    "results where logistic__C = 0.1 (100)",
                    "/v1/results",
                    {"param": "logistic__C", "value": "0.1", "limit": 100},
                ),
                (
                    "  ... and on one dataset (100)",
                    "/v1/results",
                    {"param": "logistic__C", "value": "0.1", "dataset": datasets[5], "limit": 100},
                ),
                (
                    "jobs on one dataset, succeeded (50)",
                    "/v1/jobs",
                    {"dataset": datasets[7], "state": "succeeded", "limit": 50},
                ),
                ("one job's status", f"/v1/jobs/{some_job}", None),
            ]
            for label, path, params in queries:
                med, worst, rows = timed(http, path, params)
                print(
                    f"  {label:<42} median {med * 1000:7.1f} ms   worst {worst * 1000:7.1f} ms"
                    f"   ({rows} rows)"
                )
    finally:
        if schema is not None:
            with admin.connect() as conn:
                conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
            admin.dispose()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    ap.add_argument("--jobs", type=int, default=10_000)
    args = ap.parse_args()
    for backend in ("sqlite", "postgresql"):
        if args.backend in (backend, "both"):
            run(backend, args.jobs)


if __name__ == "__main__":
    main()
