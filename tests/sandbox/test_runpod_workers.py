"""Workers and jobs on the sandbox clock, stepped through the admin route (inference off)."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx

from ferry.sandbox.runpod.jobs import INFERENCE_OFF_MESSAGE
from tests.sandbox.conftest import Sandbox, endpoint_body


def summary(sandbox: Sandbox, endpoint_id: str) -> dict[str, int]:
    body: dict[str, int] = sandbox.api.get(f"/v2/serverless/{endpoint_id}/workers").json()[
        "summary"
    ]
    return body


def test_min_workers_boot_on_the_clock(sandbox: Sandbox) -> None:
    ep = sandbox.api.post("/v2/serverless", json=endpoint_body(workers={"min": 2, "max": 3})).json()
    assert summary(sandbox, ep["id"])["initializing"] == 2
    sandbox.advance(2.9)
    assert summary(sandbox, ep["id"])["initializing"] == 2
    sandbox.advance(0.2)
    s = summary(sandbox, ep["id"])
    assert (s["idle"], s["initializing"], s["total"]) == (2, 0, 2)


def test_a_job_waits_in_queue_through_the_cold_start(sandbox: Sandbox) -> None:
    ep = sandbox.api.post("/v2/serverless", json=endpoint_body()).json()
    jobs = sandbox.jobs
    job = jobs.post(f"/v2/{ep['id']}/run", json={"input": {"prompt": "hi"}}).json()
    assert job["status"] == "IN_QUEUE"
    assert summary(sandbox, ep["id"])["initializing"] == 1
    sandbox.advance(3)
    status = jobs.get(f"/v2/{ep['id']}/status/{job['id']}").json()
    assert status["status"] == "IN_PROGRESS"
    assert status["delayTime"] == 3000
    assert summary(sandbox, ep["id"])["running"] == 1
    sandbox.advance(1)
    status = jobs.get(f"/v2/{ep['id']}/status/{job['id']}").json()
    assert status["status"] == "FAILED"
    assert status["error"] == INFERENCE_OFF_MESSAGE
    assert status["executionTime"] == 1000
    health = jobs.get(f"/v2/{ep['id']}/health").json()
    assert health["jobs"]["failed"] == 1
    assert health["workers"]["idle"] == 1


def test_idle_workers_go_after_the_idle_timeout_but_never_below_min(sandbox: Sandbox) -> None:
    body = endpoint_body(workers={"min": 1, "max": 3, "idleTimeout": 30})
    ep = sandbox.api.post("/v2/serverless", json=body).json()
    for _ in range(3):
        sandbox.jobs.post(f"/v2/{ep['id']}/run", json={"input": {}})
    sandbox.advance(3)  # the min worker boots and takes a job
    sandbox.advance(5)  # the queue has waited over queueDelay (4 s): one more worker
    assert summary(sandbox, ep["id"])["total"] == 2
    sandbox.advance(10)
    assert summary(sandbox, ep["id"])["idle"] == 2
    sandbox.advance(31)
    s = summary(sandbox, ep["id"])
    assert (s["total"], s["idle"]) == (1, 1)
    sandbox.advance(300)
    assert summary(sandbox, ep["id"])["total"] == 1


def test_request_count_scaler_and_max(sandbox: Sandbox) -> None:
    body = endpoint_body(
        workers={"min": 0, "max": 3}, scaling={"type": "REQUEST_COUNT", "requestCount": 2}
    )
    ep = sandbox.api.post("/v2/serverless", json=body).json()
    for _ in range(9):
        sandbox.jobs.post(f"/v2/{ep['id']}/run", json={"input": {}})
    assert summary(sandbox, ep["id"])["total"] == 3  # ceil(9 / 2) = 5, capped at max 3
    sandbox.advance(3)
    assert summary(sandbox, ep["id"])["running"] == 3
    for _ in range(3):
        sandbox.advance(1)
    sandbox.advance(1)
    assert summary(sandbox, ep["id"])["total"] == 0  # all done: back to min, no idle timeout


def test_a_pool_without_capacity_throttles_workers_and_bills_nothing(sandbox: Sandbox) -> None:
    sandbox.admin("PUT", "/capacity", json={"pools": {"ADA_24": 0}}).raise_for_status()
    ep = sandbox.api.post("/v2/serverless", json=endpoint_body(workers={"min": 1, "max": 1})).json()
    sandbox.advance(50)
    assert summary(sandbox, ep["id"])["throttled"] == 1
    assert ep["id"] not in sandbox.admin("GET", "/billing").json()["endpoints"] or (
        sandbox.admin("GET", "/billing").json()["endpoints"][ep["id"]]["total"] == 0
    )
    sandbox.admin("PUT", "/capacity", json={"pools": {"ADA_24": None}}).raise_for_status()
    assert summary(sandbox, ep["id"])["initializing"] == 1
    capacity = sandbox.admin("GET", "/capacity").json()
    assert capacity["ADA_24"] == {"capacity": None, "inUse": 1}


def test_lowering_max_retires_the_surplus(sandbox: Sandbox) -> None:
    ep = sandbox.api.post("/v2/serverless", json=endpoint_body(workers={"min": 3, "max": 3})).json()
    sandbox.advance(3)
    sandbox.api.patch(f"/v2/serverless/{ep['id']}", json={"workers": {"min": 1, "max": 1}})
    assert summary(sandbox, ep["id"])["total"] == 1


def test_cancel_and_runsync(sandbox: Sandbox) -> None:
    ep = sandbox.api.post("/v2/serverless", json=endpoint_body()).json()
    jobs = sandbox.jobs
    queued = jobs.post(f"/v2/{ep['id']}/run", json={"input": {}}).json()
    cancelled = jobs.post(f"/v2/{ep['id']}/cancel/{queued['id']}").json()
    assert cancelled == {"id": queued["id"], "status": "CANCELLED"}
    pending = jobs.post(f"/v2/{ep['id']}/runsync", params={"wait": 200}, json={"input": {}}).json()
    assert pending["status"] in ("IN_QUEUE", "IN_PROGRESS")
    assert jobs.post(f"/v2/{ep['id']}/run", json={"nope": 1}).status_code == 400
    assert jobs.get(f"/v2/{ep['id']}/status/no-such-job").status_code == 404
    assert (
        httpx.post(f"{sandbox.jobs_url}/v2/{ep['id']}/run", json={"input": {}}).status_code == 401
    )


def test_openai_route_with_inference_off_says_so(sandbox: Sandbox) -> None:
    ep = sandbox.api.post("/v2/serverless", json=endpoint_body()).json()
    result: dict[str, Any] = {}

    def call() -> None:
        result["r"] = sandbox.jobs.post(
            f"/v2/{ep['id']}/openai/v1/chat/completions",
            json={"model": "x", "messages": [{"role": "user", "content": "hi"}]},
        )

    t = threading.Thread(target=call)
    t.start()
    for _ in range(200):
        if sandbox.admin("GET", "/state").json()["jobs"]["IN_QUEUE"] == 1:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("the OpenAI request never queued a job")
    sandbox.advance(3)
    sandbox.advance(1)
    t.join(30)
    r = result["r"]
    assert r.status_code == 503
    assert r.json()["error"]["type"] == "sandbox_inference_off"
    assert "inference is off" in r.json()["error"]["message"]
