"""The Replicate provider's call discipline: bounded retries, Retry-After to the queue,
writes never repeated, shared reads made once.

The real `replicate` client builds the requests and parses the answers; the transport
is injected (httpx.MockTransport answers from a script) and sleeps are recorded, not
slept. Behaviour against the sandbox's fake over real sockets is in
tests/sandbox/test_replicate_client.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import pytest

from ferry.providers.base import (
    ClientConfig,
    Credentials,
    PermanentProviderError,
    TransientProviderError,
)
from ferry.providers.http import RetryPolicy
from ferry.providers.replicate import ReplicateProvider

TOKEN = "r8_" + "feedfacecafe"
Answer = Callable[[httpx.Request], httpx.Response]
ACCOUNT = {"type": "user", "username": "ferry-sandbox", "name": "Ferry Sandbox"}


class Script:
    """Answers per path, in order (the last one repeats); records what was asked."""

    def __init__(self, answers: dict[str, list[Answer]]) -> None:
        self.answers = answers
        self.seen: list[tuple[str, str]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append((request.method, request.url.path))
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
        queue = self.answers[f"{request.method} {request.url.path}"]
        return queue.pop(0)(request) if len(queue) > 1 else queue[0](request)

    def count(self, method: str, path: str) -> int:
        return self.seen.count((method, path))


def ok(body: object) -> Answer:
    return lambda _request: httpx.Response(200, json=body)


def status(code: int, headers: dict[str, str] | None = None) -> Answer:
    return lambda _request: httpx.Response(
        code, headers=headers, json={"title": "x", "status": code, "detail": f"said {code}"}
    )


def provider(
    script: Script, sleeps: list[float], now: list[float] | None = None
) -> ReplicateProvider:
    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    clock = now if now is not None else [0.0]
    config = ClientConfig(
        provider="replicate",
        base_url="http://replicate.test",
        inference_base_url=None,
        credentials=Credentials({"token": TOKEN}),
        config_name="rep",
        secret_name="rep-token",
        call_timeout=2.0,
        shared_ttl=30.0,
    )
    return ReplicateProvider(
        config,
        transport=httpx.MockTransport(script),
        policy=RetryPolicy(max_attempts=3, max_inline_wait=2.0),
        sleep=sleep,
        monotonic=lambda: clock[0],
    )


async def test_a_read_is_retried_a_bounded_number_of_times() -> None:
    script = Script({"GET /v1/account": [status(503)]})
    sleeps: list[float] = []
    rep = provider(script, sleeps)
    with pytest.raises(TransientProviderError) as info:
        await rep.account()
    assert info.value.reason == "ProviderUnavailable"
    assert script.count("GET", "/v1/account") == 3
    assert len(sleeps) == 2
    assert all(0 < s <= 2.0 for s in sleeps)
    await rep.close()


async def test_a_short_retry_after_is_slept_a_long_one_goes_to_the_queue() -> None:
    script = Script(
        {"GET /v1/account": [status(429, {"Retry-After": "1"}), status(429, {"Retry-After": "40"})]}
    )
    sleeps: list[float] = []
    rep = provider(script, sleeps)
    with pytest.raises(TransientProviderError) as info:
        await rep.account()
    assert info.value.reason == "Throttled"
    assert info.value.retry_after == 40
    assert sleeps == [1.0]
    assert script.count("GET", "/v1/account") == 2
    await rep.close()


async def test_a_write_is_never_repeated_and_may_have_been_applied() -> None:
    script = Script({"PATCH /v1/deployments/o/n": [status(502)]})
    sleeps: list[float] = []
    rep = provider(script, sleeps)
    with pytest.raises(TransientProviderError) as info:
        await rep._patch("o", "n", {"max_instances": 3})
    assert info.value.maybe_applied
    assert script.count("PATCH", "/v1/deployments/o/n") == 1
    assert sleeps == []
    await rep.close()


async def test_the_account_is_read_once_however_many_endpoints_ask() -> None:
    script = Script({"GET /v1/account": [ok(ACCOUNT)]})
    rep = provider(script, [])
    results = await asyncio.gather(*(rep.account() for _ in range(20)))
    assert set(results) == {"ferry-sandbox"}
    assert script.count("GET", "/v1/account") == 1
    assert await rep.account() == "ferry-sandbox"
    assert script.count("GET", "/v1/account") == 1
    await rep.close()


async def test_the_hardware_list_is_shared_for_one_poll_interval() -> None:
    script = Script({"GET /v1/hardware": [ok([{"sku": "gpu-t4", "name": "Nvidia T4 GPU"}])]})
    now = [100.0]
    rep = provider(script, [], now)
    assert await rep.hardware() == [{"sku": "gpu-t4", "name": "Nvidia T4 GPU"}]
    now[0] += 29
    await rep.hardware()
    assert script.count("GET", "/v1/hardware") == 1
    now[0] += 2
    await rep.hardware()
    assert script.count("GET", "/v1/hardware") == 2
    await rep.close()


async def test_a_body_that_does_not_fit_the_clients_models_is_named() -> None:
    script = Script({"GET /v1/account": [ok({"type": "robot", "username": "x"})]})
    rep = provider(script, [])
    with pytest.raises(PermanentProviderError) as info:
        await rep.account()
    assert info.value.reason == "UnexpectedAnswer"
    assert "type" in str(info.value)
    assert script.count("GET", "/v1/account") == 1, "a misfit answer is not retried"
    await rep.close()
