"""Graceful drain on SIGTERM, drain settings the server refuses, and load failures.

Spot notices, which never drain by themselves (D11), are in test_spot.py.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import ServerProcess

GREEDY = {"temperature": 0.0, "ignore_eos": True}


async def _wait_inflight(c: httpx.AsyncClient, n: int) -> None:
    deadline = time.monotonic() + 60.0
    while time.monotonic() < deadline:
        if (await c.get("/readyz")).json()["inflight"] >= n:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"never saw {n} requests in flight")


async def _until(c: httpx.AsyncClient, what: str, ok: Callable[[httpx.Response], bool]) -> Any:
    for _ in range(1500):  # generous: 30 s
        ready = await c.get("/readyz")
        if ok(ready):
            return ready
        await asyncio.sleep(0.02)
    raise AssertionError(f"never saw {what}: {ready.text}")


class _Upload:
    """A request whose body is still arriving: admitted, and in flight until `finish`."""

    def __init__(self, srv: ServerProcess) -> None:
        self.srv = srv
        body = json.dumps({"prompt": "uploaded slowly", "max_tokens": 4, **GREEDY}).encode()
        self.head = (f"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                     "Connection: close\r\n\r\n").encode() + body[:10]
        self.rest = body[10:]

    async def start(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.srv.port)
        self.writer.write(self.head)
        await self.writer.drain()

    async def finish(self) -> tuple[int, Any]:
        self.writer.write(self.rest)
        await self.writer.drain()
        raw = await self.reader.read()
        self.writer.close()
        head, _, body = raw.partition(b"\r\n\r\n")
        return int(head.split()[1]), json.loads(body)


def test_sigterm_accepts_during_propagation_then_refuses_and_finishes_in_flight(
    start_server: Any, tiny_model: Path
) -> None:
    srv = start_server({"FERRY_MODEL": str(tiny_model), "FERRY_MAX_BATCH_SIZE": "4",
                        "FERRY_DRAIN_GRACE_S": "60", "FERRY_DRAIN_PROPAGATION_S": "3"})
    n, max_tokens = 24, 32

    async def scenario() -> dict[str, Any]:
        limits = httpx.Limits(max_connections=n + 10)
        async with httpx.AsyncClient(base_url=srv.url, timeout=120, limits=limits) as c:
            def post(prompt: str) -> Any:
                return c.post("/v1/completions", json={"prompt": prompt,
                                                       "max_tokens": max_tokens, **GREEDY})

            tasks = [asyncio.create_task(post(f"request {i}")) for i in range(n)]
            upload = _Upload(srv)
            await upload.start()
            await _wait_inflight(c, n + 1)
            srv.signal()
            # Readiness turns off at once; requests still arriving are served until the
            # propagation delay is over.
            propagating = await _until(c, "readiness off", lambda r: r.status_code == 503)
            during = asyncio.create_task(post("sent during the propagation delay"))
            refusing = await _until(c, "refusal", lambda r: not r.json()["accepting"])
            late = await post("too late")
            uploaded = await upload.finish()  # in flight since before SIGTERM: it completes
            return {"propagating": propagating, "refusing": refusing, "late": late,
                    "during": await during, "uploaded": uploaded,
                    "done": await asyncio.gather(*tasks)}

    t0 = time.monotonic()
    r = asyncio.run(scenario())
    assert r["propagating"].json()["draining"] is True
    assert r["propagating"].json()["accepting"] is True
    assert r["refusing"].status_code == 503
    assert r["refusing"].json()["inflight"] >= 1
    assert r["late"].status_code == 503, r["late"].text
    assert r["late"].headers["retry-after"]
    assert r["late"].json()["error"]["type"] == "draining"
    assert r["during"].status_code == 200, r["during"].text
    # Answered while draining: the client is told to reconnect (to another replica).
    assert r["during"].headers["connection"] == "close"
    assert r["late"].headers["connection"] == "close"
    assert r["uploaded"][0] == 200
    assert r["uploaded"][1]["usage"]["completion_tokens"] == 4
    assert [x.status_code for x in r["done"]] == [200] * n
    assert all(x.json()["usage"]["completion_tokens"] == max_tokens for x in r["done"])
    assert srv.proc.wait(timeout=60) == 0
    assert "drain complete" in srv.log()
    assert time.monotonic() - t0 < 60


@pytest.mark.parametrize("grace", ["0", "3601"])
def test_drain_grace_outside_the_operators_range_is_refused_at_start(
    start_server: Any, tiny_model: Path, grace: str
) -> None:
    srv = start_server({"FERRY_MODEL": str(tiny_model), "FERRY_DRAIN_GRACE_S": grace},
                       wait=False)
    assert srv.proc.wait(timeout=60) == 2
    assert "FERRY_DRAIN_GRACE_S must be between 1 and 3600 seconds" in srv.log()


def test_missing_model_fails_fast_with_clear_error(start_server: Any, tmp_path: Path) -> None:
    srv = start_server({"FERRY_MODEL": "hf://ferry/does-not-exist@main",
                        "HF_HOME": str(tmp_path / "empty-hf")}, wait=False)
    assert srv.proc.wait(timeout=120) == 1
    log = srv.log()
    assert "ferry/does-not-exist@main could not be found" in log
    assert "HF_HUB_OFFLINE" in log
    assert "Traceback" not in log
