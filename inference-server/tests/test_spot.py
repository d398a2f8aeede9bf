"""Spot notices over IMDSv2: the watcher in-process (clock injected) against a fake metadata
service on 127.0.0.1, and the real server process reporting a notice and keeping on serving."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from conftest import ServerProcess, metric_value
from imds import FakeIMDS, fake_imds

from ferry_server.spot import Notice, SpotWatcher

DEADLINE = "2026-01-01T00:00:00Z"
DEADLINE_UNIX = 1_767_225_600.0


class Clock:
    def __init__(self) -> None:
        self.now = DEADLINE_UNIX - 120

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def imds() -> Iterator[FakeIMDS]:
    with fake_imds() as state:
        yield state


def poll(watcher: SpotWatcher, times: int = 1) -> Notice | None:
    async def run() -> Notice | None:
        notice = None
        async with httpx.AsyncClient(timeout=watcher.timeout_s, trust_env=False) as client:
            for _ in range(times):
                notice = await watcher.check_once(client)
        return notice

    return asyncio.run(run())


def make_watcher(imds: FakeIMDS, clock: Clock, seen: list[Notice], **kw: Any) -> SpotWatcher:
    return SpotWatcher(imds.url, 5.0, seen.append, clock=clock, **kw)


def test_token_flow_notice_and_refresh(imds: FakeIMDS) -> None:
    clock, seen = Clock(), []
    watcher = make_watcher(imds, clock, seen, token_ttl_s=600)
    assert poll(watcher, times=3) is None
    assert (imds.issued, imds.authorized_gets, imds.tokenless_gets) == (1, 3, 0)
    assert imds.token_puts_without_ttl == 0

    imds.notice = f'{{"action": "terminate", "time": "{DEADLINE}"}}'
    notice = poll(watcher, times=2)
    assert notice == Notice("terminate", DEADLINE_UNIX, False, clock.now)
    assert seen == [notice], "on_notice runs once per notice"

    imds.revoke_tokens()  # a 401: the watcher fetches a new token and asks again
    assert poll(watcher) == notice
    assert imds.issued == 2
    assert watcher.failed_polls == 0

    clock.now += 600  # the token's TTL: renewed before it runs out, without a 401 first
    poll(watcher)
    assert imds.issued == 3


def test_persistent_401_is_a_rate_limited_warning_not_no_notice(
    imds: FakeIMDS, caplog: pytest.LogCaptureFixture
) -> None:
    clock, seen = Clock(), []
    errors: list[str] = []
    watcher = make_watcher(imds, clock, seen, on_error=errors.append, warn_every_s=60)
    imds.reject_all_tokens = True
    with caplog.at_level(logging.WARNING, logger="ferry_server.spot"):
        poll(watcher, times=5)
        clock.now += 59
        poll(watcher)
        clock.now += 1
        poll(watcher)
    warnings = [r.getMessage() for r in caplog.records if "cannot read spot notices" in r.message]
    assert len(warnings) == 2
    assert "401 to a fresh token" in warnings[0]
    assert "(1 failed poll(s))" in warnings[0]
    assert "(6 failed poll(s))" in warnings[1]
    assert len(errors) == 7
    assert watcher.status()["state"] == "failing"
    assert watcher.status()["failed_polls"] == 7

    imds.reject_all_tokens = False
    poll(watcher)
    assert watcher.status() == {"url": imds.url, "state": "ok", "failed_polls": 0,
                                "last_error": None}


def test_forbidden_and_silent_metadata_services_are_failures(imds: FakeIMDS) -> None:
    clock, seen = Clock(), []
    watcher = make_watcher(imds, clock, seen, timeout_s=0.2)
    imds.forbid_token = True
    poll(watcher)
    assert "403" in (watcher.last_error or "")
    imds.forbid_token = False
    imds.hang.set()  # e.g. a pod behind the default metadata hop limit of 1
    poll(watcher)
    assert "hop limit" in (watcher.last_error or "")
    assert watcher.failed_polls == 2
    assert seen == []


def test_server_reports_a_notice_keeps_serving_and_drains_on_sigterm_only(
    start_server: Any, tiny_model: Path, imds: FakeIMDS
) -> None:
    srv: ServerProcess = start_server({
        "FERRY_MODEL": str(tiny_model),
        "FERRY_SPOT_METADATA_URL": imds.url,
        "FERRY_SPOT_POLL_INTERVAL_S": "0.1",
        "FERRY_DRAIN_PROPAGATION_S": "3",
        "FERRY_DRAIN_GRACE_S": "30",
    })
    client = openai.OpenAI(base_url=f"{srv.url}/v1", api_key="unused", max_retries=0)

    def readyz() -> httpx.Response:
        return httpx.get(f"{srv.url}/readyz", timeout=10)

    def wait_for(what: str, ok: Any) -> None:
        for _ in range(1500):  # generous: 30 s
            if ok():
                return
            time.sleep(0.02)
        raise AssertionError(f"never saw {what}:\n{readyz().text}\n{srv.log()}")

    wait_for("an authorized poll", lambda: imds.authorized_gets >= 2)
    assert imds.tokenless_gets == 0
    body = readyz().json()
    assert body["spot_notice"] is None
    assert body["spot_watch"]["state"] == "ok"
    text = httpx.get(f"{srv.url}/metrics").text
    assert metric_value(text, "ferry_spot_notice_deadline_seconds") == 0

    imds.notice = f'{{"action": "terminate", "time": "{DEADLINE}"}}'
    wait_for("the notice on /readyz", lambda: readyz().json()["spot_notice"] is not None)
    ready = readyz()
    assert ready.status_code == 200  # D11: reported, not acted on
    assert ready.json()["ready"] is True
    assert ready.json()["spot_notice"]["action"] == "terminate"
    assert ready.json()["spot_notice"]["deadline"] == DEADLINE
    text = httpx.get(f"{srv.url}/metrics").text
    assert metric_value(text, "ferry_spot_notice_deadline_seconds") == DEADLINE_UNIX
    out = client.completions.create(model="tiny", prompt="still here?", max_tokens=3,
                                    extra_body={"ignore_eos": True})
    assert out.usage is not None
    assert out.usage.completion_tokens == 3
    assert "spot termination notice: terminate" in srv.log()
    assert "draining" not in srv.log()

    # The operator's replacement is up; it deletes the pod: SIGTERM. Requests that arrive
    # while Services still route here (the propagation delay) are served, even on an idle
    # server; readiness is off from the start.
    srv.signal()
    wait_for("readiness off", lambda: readyz().status_code == 503)
    assert readyz().json()["accepting"] is True
    late = client.completions.create(model="tiny", prompt="after SIGTERM", max_tokens=3,
                                     extra_body={"ignore_eos": True})
    assert late.usage is not None
    assert late.usage.completion_tokens == 3
    assert srv.proc.wait(timeout=60) == 0
    assert "drain complete" in srv.log()
