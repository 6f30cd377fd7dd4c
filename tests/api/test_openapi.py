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
        ("delete", "/v1/jobs/{job_id}"),
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


def test_the_schema_documents_the_answers_routes_give(api, api_as, settings):
    """Answers the schema did not list (found by fuzzing it): a user's 403
    from /cache, /health's 422 for an unknown parameter, a 413 for a body
    over the limit; and a HEAD's 200 was said to carry JSON."""
    import numpy as np

    from tests.api.conftest import upload

    paths = api.get("/v1/openapi.json").json()["paths"]

    def documented(method: str, path: str, status: int) -> bool:
        return str(status) in paths[path][method]["responses"]

    r = api_as("bob").get("/v1/cache")
    assert r.status_code == 403 and documented("get", "/v1/cache", 403)
    r = api.get("/v1/health", params={"x": "1"})
    assert r.status_code == 422 and documented("get", "/v1/health", 422)
    settings.request_max_bytes = 4096
    for path, doc in (("/v1/jobs", "/v1/jobs"), ("/v1/jobs/" + "0" * 32 + "/cancel", None)):
        r = api.post(
            path, content=b"{" + b" " * 5000 + b"}", headers={"content-type": "application/json"}
        )
        assert r.status_code == 413, r.text
        assert documented("post", doc or "/v1/jobs/{job_id}/cancel", 413)
    did = upload(api, np.arange(6.0))
    head = api.head(f"/v1/datasets/{did}")
    assert head.status_code == 200 and not head.content
    assert all(
        "content" not in r for r in paths["/v1/datasets/{dataset_id}"]["head"]["responses"].values()
    )
