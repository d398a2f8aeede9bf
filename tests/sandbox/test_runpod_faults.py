"""Faults on demand and call counts, as an operator under test would meet them."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.sandbox.conftest import Sandbox, endpoint_body


def arm(sandbox: Sandbox, **spec: object) -> dict[str, object]:
    r = sandbox.admin("POST", "/faults", json=spec)
    assert r.status_code == 201, r.text
    body: dict[str, object] = r.json()
    return body


def calls(sandbox: Sandbox, method: str, route: str) -> int:
    for row in sandbox.admin("GET", "/calls").json()["calls"]:
        if (row["method"], row["route"]) == (method, route):
            return int(row["count"])
    return 0


def test_rate_limit_fault_answers_429_with_retry_after_then_clears(sandbox: Sandbox) -> None:
    arm(
        sandbox,
        method="POST",
        route="/v2/serverless",
        kind="rate_limit",
        retryAfterSeconds=7,
        count=2,
    )
    api = sandbox.api
    for _ in range(2):
        r = api.post("/v2/serverless", json=endpoint_body())
        assert r.status_code == 429
        assert r.headers["retry-after"] == "7"
        assert r.headers["ratelimit"].startswith('"minute";r=0;')
        assert "ratelimit-policy" in r.headers
        assert r.json()["status"] == 429
    assert api.get("/v2/serverless").json()["endpoints"] == []  # throttled calls did nothing
    assert api.post("/v2/serverless", json=endpoint_body()).status_code == 201
    assert calls(sandbox, "POST", "/v2/serverless") == 3
    assert sandbox.admin("GET", "/faults").json()["faults"] == []


def test_server_error_fault_has_no_effect_and_lasts_until_cleared(sandbox: Sandbox) -> None:
    fault = arm(sandbox, method="*", route="/v2/serverless", kind="status", status=503, count=None)
    api = sandbox.api
    for _ in range(3):
        assert api.post("/v2/serverless", json=endpoint_body()).status_code == 503
    assert api.get("/v2/serverless").status_code == 503
    assert sandbox.admin("DELETE", f"/faults/{fault['id']}").status_code == 204
    assert api.get("/v2/serverless").json()["endpoints"] == []
    assert calls(sandbox, "POST", "/v2/serverless") == 3
    assert calls(sandbox, "GET", "/v2/serverless") == 2


def test_delay_fault_slows_the_answer(sandbox: Sandbox) -> None:
    arm(sandbox, method="GET", route="/v2/serverless/{id}", kind="delay", delaySeconds=1.0)
    ep = sandbox.api.post("/v2/serverless", json=endpoint_body()).json()
    started = time.monotonic()
    assert sandbox.api.get(f"/v2/serverless/{ep['id']}").status_code == 200
    assert time.monotonic() - started >= 1.0
    started = time.monotonic()
    sandbox.api.get(f"/v2/serverless/{ep['id']}")
    assert time.monotonic() - started < 1.0


def test_lost_response_applies_the_create_but_the_client_never_hears(sandbox: Sandbox) -> None:
    arm(sandbox, method="POST", route="/v2/serverless", kind="lose_response")
    impatient = sandbox.client(sandbox.api_url, timeout=1.5)
    with pytest.raises(httpx.ReadTimeout):
        impatient.post("/v2/serverless", json=endpoint_body())
    listed = sandbox.api.get("/v2/serverless").json()["endpoints"]
    assert len(listed) == 1
    assert listed[0]["env"]["FERRY_ENDPOINT_UID"] == "0b7c-uid"


def test_unknown_fault_fields_and_kinds_are_refused(sandbox: Sandbox) -> None:
    r = sandbox.admin("POST", "/faults", json={"method": "GET", "route": "/x", "kind": "explode"})
    assert r.status_code == 400
    assert "kind" in r.json()["detail"]
    r = sandbox.admin(
        "POST", "/faults", json={"method": "GET", "route": "/x", "kind": "delay", "x": 1}
    )
    assert r.status_code == 400


def test_call_counts_are_per_route_template_and_resettable(sandbox: Sandbox) -> None:
    api = sandbox.api
    ids = [api.post("/v2/serverless", json=endpoint_body()).json()["id"] for _ in range(2)]
    for endpoint_id in ids:
        api.get(f"/v2/serverless/{endpoint_id}")
        api.get(f"/v2/serverless/{endpoint_id}/workers")
    assert calls(sandbox, "GET", "/v2/serverless/{id}") == 2
    assert calls(sandbox, "GET", "/v2/serverless/{id}/workers") == 2
    sandbox.admin("GET", "/state")  # admin routes are not counted
    assert sandbox.admin("GET", "/calls").json()["total"] == 6
    assert sandbox.admin("DELETE", "/calls").status_code == 204
    assert sandbox.admin("GET", "/calls").json() == {"total": 0, "calls": []}


def test_drift_through_the_admin_route_is_not_a_platform_call(sandbox: Sandbox) -> None:
    ep = sandbox.api.post("/v2/serverless", json=endpoint_body()).json()
    r = sandbox.admin("PATCH", f"/endpoints/{ep['id']}", json={"workers": {"min": 0, "max": 9}})
    assert r.status_code == 200, r.text
    assert sandbox.api.get(f"/v2/serverless/{ep['id']}").json()["workers"]["max"] == 9
    assert calls(sandbox, "PATCH", "/v2/serverless/{id}") == 0
    bad = sandbox.admin("PATCH", f"/endpoints/{ep['id']}", json={"type": "QUEUE"})
    assert bad.status_code == 400


def test_admin_routes_need_the_token(sandbox: Sandbox) -> None:
    assert httpx.get(f"{sandbox.api_url}/_sandbox/clock").status_code == 401
