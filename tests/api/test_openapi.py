"""The OpenAPI schema describes every route, under /v1."""

from __future__ import annotations


def test_schema_covers_every_route(api):
    schema = api.get("/v1/openapi.json").json()
    paths = schema["paths"]
    assert all(p.startswith("/v1/") for p in paths)
    expected = {
        ("post", "/v1/datasets"),
        ("head", "/v1/datasets/{dataset_id}"),
        ("get", "/v1/datasets/{dataset_id}"),
        ("delete", "/v1/datasets/{dataset_id}"),
        ("get", "/v1/datasets/{dataset_id}/leaderboard"),
        ("post", "/v1/jobs"),
        ("get", "/v1/jobs"),
        ("get", "/v1/jobs/{job_id}"),
        ("post", "/v1/jobs/{job_id}/cancel"),
        ("get", "/v1/jobs/{job_id}/results"),
        ("get", "/v1/jobs/{job_id}/splits"),
        ("get", "/v1/jobs/{job_id}/estimator"),
        ("get", "/v1/results"),
        ("get", "/v1/cache"),
        ("get", "/v1/health"),
    }
    present = {(m, p) for p, ops in paths.items() for m in ops}
    assert expected <= present
    upload = paths["/v1/datasets"]["post"]["requestBody"]["content"]
    assert {"application/x-npy", "application/vnd.apache.parquet"} <= set(upload)
    job = paths["/v1/jobs"]["post"]
    assert {"202", "415", "422"} <= set(job["responses"])
    assert "JobRequest" in schema["components"]["schemas"]


def test_docs_and_health(api):
    assert api.get("/v1/docs").status_code == 200
    health = api.get("/v1/health").json()
    assert health["status"] == "ok" and health["schema_revision"]
    cache = api.get("/v1/cache").json()
    assert cache["entries"] >= 0 and cache["size_limit"] > 0
