"""Graceful drain on SIGTERM, spot termination notices, and load failures."""

from __future__ import annotations

import asyncio
import http.server
import threading
import time
from collections.abc import Callable, Iterator
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


async def _drain_scenario(
    srv: ServerProcess, n: int, trigger: Callable[[], None], max_tokens: int
) -> tuple[list[httpx.Response], httpx.Response, httpx.Response]:
    limits = httpx.Limits(max_connections=n + 10)
    async with httpx.AsyncClient(base_url=srv.url, timeout=120, limits=limits) as c:
        tasks = [
            asyncio.create_task(c.post("/v1/completions",
                                       json={"prompt": f"request {i}", "max_tokens": max_tokens,
                                             **GREEDY}))
            for i in range(n)
        ]
        await _wait_inflight(c, n)
        trigger()
        # Readiness flips at once and new work is refused while the accepted work finishes.
        deadline = time.monotonic() + 10
        ready = await c.get("/readyz")
        while ready.status_code == 200 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            ready = await c.get("/readyz")
        rejected = await c.post("/v1/completions", json={"prompt": "late", "max_tokens": 2})
        done = await asyncio.gather(*tasks)
    return list(done), ready, rejected


def _assert_drained(
    srv: ServerProcess, done: list[httpx.Response], ready: httpx.Response,
    rejected: httpx.Response, n: int, max_tokens: int,
) -> None:
    assert ready.status_code == 503
    assert ready.json()["draining"] is True
    assert rejected.status_code == 503, rejected.text
    assert rejected.headers["retry-after"]
    assert rejected.json()["error"]["type"] == "draining"
    assert [r.status_code for r in done] == [200] * n
    assert all(r.json()["usage"]["completion_tokens"] == max_tokens for r in done)
    assert srv.proc.wait(timeout=20) == 0
    assert "drain complete" in srv.log()


def test_sigterm_drains_50_inflight_requests(start_server: Any, tiny_model: Path) -> None:
    srv = start_server({"FERRY_MODEL": str(tiny_model), "FERRY_MAX_BATCH_SIZE": "4",
                        "FERRY_DRAIN_GRACE_S": "60"})
    n, max_tokens = 50, 48
    t0 = time.monotonic()
    done, ready, rejected = asyncio.run(_drain_scenario(srv, n, srv.signal, max_tokens))
    _assert_drained(srv, done, ready, rejected, n, max_tokens)
    assert time.monotonic() - t0 < 60


class _FakeMetadata(http.server.BaseHTTPRequestHandler):
    armed = False
    polls = 0

    def do_GET(self) -> None:
        type(self).polls += 1
        if self.path == "/latest/meta-data/spot/instance-action" and type(self).armed:
            body = b'{"action": "terminate", "time": "2026-01-01T00:00:00Z"}'
            self.send_response(200)
        else:
            body = b"Not Found"
            self.send_response(404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def fake_metadata() -> Iterator[tuple[str, type[_FakeMetadata]]]:
    handler = type("Handler", (_FakeMetadata,), {"armed": False, "polls": 0})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    httpd.shutdown()
    httpd.server_close()


def test_spot_notice_drains(
    start_server: Any, tiny_model: Path, fake_metadata: tuple[str, type[_FakeMetadata]]
) -> None:
    base, handler = fake_metadata
    srv = start_server({
        "FERRY_MODEL": str(tiny_model),
        "FERRY_SPOT_METADATA_URL": f"{base}/latest/meta-data/spot/instance-action",
        "FERRY_SPOT_POLL_INTERVAL_S": "0.1",
        "FERRY_MAX_BATCH_SIZE": "2",
    })
    polls_before = handler.polls
    time.sleep(0.5)
    assert handler.polls > polls_before, "watcher is not polling"
    assert httpx.get(f"{srv.url}/readyz").status_code == 200

    def arm() -> None:
        handler.armed = True

    n, max_tokens = 8, 48
    done, ready, rejected = asyncio.run(_drain_scenario(srv, n, arm, max_tokens))
    _assert_drained(srv, done, ready, rejected, n, max_tokens)
    assert "spot termination notice received" in srv.log()


def test_missing_model_fails_fast_with_clear_error(start_server: Any, tmp_path: Path) -> None:
    srv = start_server({"FERRY_MODEL": "hf://ferry/does-not-exist@main",
                        "HF_HOME": str(tmp_path / "empty-hf")}, wait=False)
    assert srv.proc.wait(timeout=120) == 1
    log = srv.log()
    assert "ferry/does-not-exist@main could not be found" in log
    assert "HF_HUB_OFFLINE" in log
    assert "Traceback" not in log
