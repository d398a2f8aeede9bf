"""The RunPod fake's management API over real sockets: shapes, rules, auth and labels.

The session sandbox validates every answer against the published spec, so each call here
also proves the answer's shape (an off-spec answer would be a 500).
"""

from __future__ import annotations

import httpx
import pytest

from ferry.sandbox.runpod import catalog
from tests.sandbox.conftest import Sandbox, endpoint_body


def test_create_answers_201_with_an_endpoint_and_names_are_not_unique(sandbox: Sandbox) -> None:
    api = sandbox.api
    first = api.post("/v2/serverless", json=endpoint_body())
    second = api.post("/v2/serverless", json=endpoint_body())
    assert first.status_code == 201, first.text
    assert second.status_code == 201, second.text
    a, b = first.json(), second.json()
    assert a["id"] != b["id"]
    assert a["id"].isalnum()
    assert a["id"] == a["id"].lower()
    assert len(a["id"]) == 14
    assert a["requestUrls"]["run"] == f"{sandbox.jobs_url}/v2/{a['id']}/run"
    assert a["workers"] == {"min": 0, "max": 3, "idleTimeout": 60}
    assert a["gpu"]["excludedTypes"] == ["NVIDIA GeForce RTX 4090"]
    assert a["timeout"] == 300000
    assert a["flashboot"] == "OFF"
    listed = api.get("/v2/serverless").json()["endpoints"]
    assert sorted(e["id"] for e in listed) == sorted([a["id"], b["id"]])
    assert [e["env"]["FERRY_ENDPOINT_UID"] for e in listed] == ["0b7c-uid", "0b7c-uid"]


def test_create_applies_the_spec_defaults(sandbox: Sandbox) -> None:
    body = endpoint_body()
    del body["workers"]
    ep = sandbox.api.post("/v2/serverless", json=body).json()
    assert ep["workers"] == {"min": 0, "max": 3, "idleTimeout": 10}
    rc = endpoint_body(
        workers={"min": 0, "max": 2}, scaling={"type": "REQUEST_COUNT", "requestCount": 4}
    )
    ep = sandbox.api.post("/v2/serverless", json=rc).json()
    assert ep["workers"] == {"min": 0, "max": 2}  # no idle timeout under REQUEST_COUNT


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"bogus": 1}, "bogus"),
        ({"workers": {"min": 0, "max": 3, "idle": 5}}, "idle"),
        ({"scaling": {"type": "QUEUE_DELAY", "queueDelay": 0.1}}, "queueDelay"),
        ({"scaling": {"type": "REQUEST_COUNT"}}, "requestCount"),
        ({"flashboot": True}, "flashboot"),
        ({"type": "SERVERLESS"}, "type"),
        ({"gpu": {"pools": []}}, "pools"),
        ({"name": ""}, "name"),
    ],
    ids=[
        "unknown-field",
        "unknown-nested",
        "queue-delay-min",
        "scaler-variant",
        "flashboot-enum",
        "type-enum",
        "empty-pools",
        "empty-name",
    ],
)
def test_invalid_create_bodies_are_400_naming_the_field(
    sandbox: Sandbox, change: dict[str, object], field: str
) -> None:
    r = sandbox.api.post("/v2/serverless", json=endpoint_body(**change))
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    assert problem["status"] == 400
    assert problem["title"] == "Bad Request"
    assert field in problem["detail"], problem
    assert problem["errors"]
    assert sandbox.api.get("/v2/serverless").json()["endpoints"] == []


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"gpu": {"pools": ["ADA_25"]}}, "ADA_25"),
        ({"gpu": {"pools": ["ADA_24"], "excludedTypes": ["NVIDIA H100 PCIe"]}}, "excludedTypes"),
        (
            {
                "gpu": {
                    "pools": ["ADA_24"],
                    "excludedTypes": ["NVIDIA L4", "NVIDIA GeForce RTX 4090"],
                }
            },
            "every GPU type",
        ),
        (
            {
                "gpu": {
                    "pools": ["ADA_24"],
                    "allowedCudaVersions": ["12.8"],
                    "minCudaVersion": "12.1",
                }
            },
            "mutually exclusive",
        ),
        ({"scaling": {"type": "REQUEST_COUNT", "requestCount": 2}}, "idleTimeout"),
        ({"workers": {"min": 4, "max": 2}}, "workers.min"),
        ({"cpu": [{"id": "cpu5c", "vcpuCount": 4}], "gpu": None}, "cpu"),
    ],
    ids=[
        "unknown-pool",
        "excluded-outside-pools",
        "excludes-everything",
        "cuda-exclusive",
        "idle-under-request-count",
        "min-over-max",
        "cpu",
    ],
)
def test_runpod_rules_beyond_the_schema_are_400(
    sandbox: Sandbox, change: dict[str, object], words: str
) -> None:
    body = endpoint_body(**change)
    if body.get("gpu") is None:
        del body["gpu"]
    r = sandbox.api.post("/v2/serverless", json=body)
    assert r.status_code == 400, r.text
    assert words in r.json()["detail"]


def test_patch_is_partial_env_replaces_and_pools_clear_exclusions(sandbox: Sandbox) -> None:
    api = sandbox.api
    ep = api.post("/v2/serverless", json=endpoint_body()).json()
    url = f"/v2/serverless/{ep['id']}"
    r = api.patch(url, json={"workers": {"min": 1, "max": 5}})
    assert r.status_code == 200, r.text
    assert r.json()["workers"] == {"min": 1, "max": 5, "idleTimeout": 60}
    assert r.json()["image"] == ep["image"]
    r = api.patch(url, json={"env": {"FERRY_ENDPOINT_UID": "0b7c-uid"}})
    assert r.json()["env"] == {"FERRY_ENDPOINT_UID": "0b7c-uid"}
    r = api.patch(url, json={"gpu": {"count": 2}})
    assert r.json()["gpu"]["excludedTypes"] == ["NVIDIA GeForce RTX 4090"]
    assert r.json()["gpu"]["count"] == 2
    r = api.patch(url, json={"gpu": {"pools": ["ADA_24", "AMPERE_24"]}})
    assert "excludedTypes" not in r.json()["gpu"]
    assert r.json()["gpu"]["count"] == 2
    r = api.patch(url, json={"type": "LOAD_BALANCER"})
    assert r.status_code == 400
    assert "type" in r.json()["detail"]
    r = api.patch(url, json={"gpu": {"excludedTypes": ["NVIDIA L4"]}})
    assert r.status_code == 400
    assert "pools" in r.json()["detail"]
    assert api.get(url).json()["gpu"]["pools"] == ["ADA_24", "AMPERE_24"]


def test_image_and_env_changes_roll_releases(sandbox: Sandbox) -> None:
    api = sandbox.api
    ep = api.post("/v2/serverless", json=endpoint_body(workers={"min": 1, "max": 2})).json()
    url = f"/v2/serverless/{ep['id']}"
    sandbox.advance(3)
    api.patch(url, json={"workers": {"min": 1, "max": 3}})
    assert api.get(f"{url}/releases").json()["endpointVersion"] == 1
    api.patch(url, json={"image": "ghcr.io/ferry/inference-server:v2"})
    releases = api.get(f"{url}/releases").json()
    assert releases["endpointVersion"] == 2
    newest = releases["releases"][0]
    assert newest["version"] == 2
    assert newest["diff"] == [
        {
            "field": "template.imageName",
            "old": ep["image"],
            "new": "ghcr.io/ferry/inference-server:v2",
        }
    ]
    workers = api.get(f"{url}/workers").json()
    assert workers["endpointVersion"] == 2
    assert all(w["version"] == 2 and not w["isStale"] for w in workers["workers"])
    assert workers["summary"]["total"] == 1


def test_delete_is_204_then_404(sandbox: Sandbox) -> None:
    api = sandbox.api
    ep = api.post("/v2/serverless", json=endpoint_body()).json()
    assert api.delete(f"/v2/serverless/{ep['id']}").status_code == 204
    for method in ("GET", "DELETE", "PATCH"):
        r = api.request(
            method, f"/v2/serverless/{ep['id']}", json={} if method == "PATCH" else None
        )
        assert r.status_code == 404, (method, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["status"] == 404


@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        ({}, "missing"),
        ({"Authorization": "Bearer nope"}, "invalid"),
        ({"Authorization": "ferry-sandbox-token"}, "malformed"),
    ],
    ids=["missing", "wrong", "not-bearer"],
)
def test_wrong_or_missing_token_is_401_problem(
    sandbox: Sandbox, headers: dict[str, str], detail: str
) -> None:
    r = httpx.get(f"{sandbox.api_url}/v2/serverless", headers=headers)
    assert r.status_code == 401
    assert r.headers["content-type"].startswith("application/problem+json")
    assert detail in r.json()["detail"]
    assert r.headers["x-ferry-sandbox"] == "true"


def test_every_answer_is_labelled_and_rate_limit_headers_are_sent(sandbox: Sandbox) -> None:
    api = sandbox.api
    ok = api.get("/v2/serverless")
    assert ok.headers["x-ferry-sandbox"] == "true"
    assert ok.headers["ratelimit"].startswith('"minute";r=')
    assert ok.headers["ratelimit-policy"].startswith('"minute";q=')
    missing = api.get("/v2/no-such-route")
    assert missing.status_code == 404
    assert missing.headers["x-ferry-sandbox"] == "true"
    assert missing.headers["content-type"].startswith("application/problem+json")
    assert httpx.get(f"{sandbox.jobs_url}/nothing").headers["x-ferry-sandbox"] == "true"


def test_catalogue_follows_the_design_table(sandbox: Sandbox) -> None:
    gpus = {g["id"]: g for g in sandbox.api.get("/v2/catalog/gpus").json()["gpus"]}
    expected = {
        "NVIDIA GeForce RTX 4090": "ADA_24",
        "NVIDIA L4": "ADA_24",
        "NVIDIA RTX A5000": "AMPERE_24",
        "NVIDIA GeForce RTX 3090": "AMPERE_24",
        "NVIDIA RTX A4000": "AMPERE_16",
        "NVIDIA RTX A6000": "AMPERE_48",
        "NVIDIA A40": "AMPERE_48",
        "NVIDIA L40": "ADA_48_PRO",
        "NVIDIA L40S": "ADA_48_PRO",
        "NVIDIA RTX 6000 Ada Generation": "ADA_48_PRO",
        "NVIDIA A100 80GB PCIe": "AMPERE_80",
        "NVIDIA A100-SXM4-80GB": "AMPERE_80",
        "NVIDIA H100 PCIe": "ADA_80_PRO",
        "NVIDIA H100 80GB HBM3": "ADA_80_PRO",
        "NVIDIA H100 NVL": "ADA_80_PRO",
        "NVIDIA H200": "HOPPER_141",
    }
    for gpu_id, pool in expected.items():
        assert gpus[gpu_id]["pool"] == pool, gpu_id
    assert [g for g in gpus.values() if g["pool"] is None]
    # providers.md per-second list prices x 3600, one rate per pool.
    per_second = {
        "ADA_24": 0.00031,
        "AMPERE_24": 0.00019,
        "ADA_48_PRO": 0.00053,
        "AMPERE_80": 0.00076,
        "ADA_80_PRO": 0.00116,
        "HOPPER_141": 0.00155,
    }
    for gpu in gpus.values():
        if gpu["pool"] in per_second:
            assert gpu["price"]["serverless"] == pytest.approx(per_second[gpu["pool"]] * 3600)
    assert set(catalog.POOLS) == {p for p in expected.values()}


def test_catalogue_availability_follows_pool_capacity(sandbox: Sandbox) -> None:
    sandbox.admin("PUT", "/capacity", json={"pools": {"HOPPER_141": 0}}).raise_for_status()
    r = sandbox.api.get(
        "/v2/catalog/gpus", params={"include": "AVAILABILITY", "product": "SERVERLESS"}
    )
    gpus = {g["id"]: g for g in r.json()["gpus"]}
    assert gpus["NVIDIA H200"]["availability"] == "NONE"
    assert gpus["NVIDIA L4"]["availability"] == "HIGH"
    assert (
        sandbox.api.get("/v2/catalog/gpus", params={"include": "AVAILABILITY"}).status_code == 400
    )


def test_billing_charges_boot_run_and_idle_seconds_at_the_pool_price(sandbox: Sandbox) -> None:
    api = sandbox.api
    body = endpoint_body(gpu={"pools": ["HOPPER_141"], "count": 2}, workers={"min": 1, "max": 1})
    ep = api.post("/v2/serverless", json=body).json()
    sandbox.advance(100)
    billed = sandbox.admin("GET", "/billing").json()["endpoints"][ep["id"]]
    assert billed["total"] == pytest.approx(100)
    assert billed["boot"] == pytest.approx(3)
    assert billed["idle"] == pytest.approx(97)
    assert billed["gpuSeconds"] == pytest.approx(200)
    r = api.get("/v2/billing/serverless", params={"bucketSize": "year", "serverlessId": ep["id"]})
    assert r.status_code == 200, r.text
    report = r.json()
    usd = 100 * 2 * 0.00155
    assert report["metadata"]["totals"]["totalAmount"] == pytest.approx(usd, rel=1e-3)
    assert sum(rec["gpuAmount"] for rec in report["records"]) == pytest.approx(usd, rel=1e-3)
    assert all(rec["serverlessId"] == ep["id"] for rec in report["records"])
    bad = api.get(
        "/v2/billing/serverless", params={"lastN": "2", "startTime": "2026-01-01T00:00:00Z"}
    )
    assert bad.status_code == 400
    assert api.get("/v2/billing/serverless", params={"bucketSize": "minute"}).status_code == 400
