"""The shared HTTP stack of remote providers: retries, bounds and error mapping.

The transport is injected (httpx.MockTransport answers from a script) and sleeps are
recorded, not slept.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from ferry.providers.base import (
    ClientConfig,
    Credentials,
    PermanentProviderError,
    TransientProviderError,
)
from ferry.providers.http import PlatformClient, RetryPolicy

TOKEN = "rp_" + "9f8e7d6c5b4a"
Answer = Callable[[httpx.Request], httpx.Response]


def client(answers: list[Answer], sleeps: list[float]) -> tuple[PlatformClient, list[str]]:
    seen: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request.method)
        return answers.pop(0)(request) if len(answers) > 1 else answers[0](request)

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    config = ClientConfig(
        provider="runpod",
        base_url="http://api.test",
        inference_base_url=None,
        credentials=Credentials({"token": TOKEN}),
        config_name="rp",
        secret_name="rp-token",
        call_timeout=1.0,
    )
    pc = PlatformClient(
        config,
        "RunPod",
        headers={"Authorization": f"Bearer {TOKEN}"},
        transport=httpx.MockTransport(handle),
        policy=RetryPolicy(max_attempts=3, max_inline_wait=2.0),
        sleep=sleep,
    )
    return pc, seen


def status(code: int, headers: dict[str, str] | None = None) -> Answer:
    return lambda request: httpx.Response(
        code, headers=headers, json={"title": "x", "status": code, "detail": f"said {code}"}
    )


def raising(exc: type[Exception]) -> Answer:
    def answer(request: httpx.Request) -> httpx.Response:
        raise exc("boom", request=request)  # type: ignore[call-arg]

    return answer


async def test_short_retry_after_is_waited_inline() -> None:
    sleeps: list[float] = []
    pc, seen = client([status(429, {"Retry-After": "1"}), status(200)], sleeps)
    response = await pc.request("GET", "http://api.test/v2/serverless", what="list")
    assert response.status_code == 200
    assert (seen, sleeps) == (["GET", "GET"], [1.0])


async def test_long_retry_after_goes_back_to_the_queue() -> None:
    sleeps: list[float] = []
    pc, seen = client([status(429, {"Retry-After": "30"})], sleeps)
    with pytest.raises(TransientProviderError) as info:
        await pc.request("GET", "http://api.test/v2/serverless", what="list")
    assert (info.value.retry_after, info.value.reason) == (30.0, "Throttled")
    assert seen == ["GET"], "a long wait is not slept inside a reconcile"


async def test_a_429_storm_is_bounded() -> None:
    sleeps: list[float] = []
    pc, seen = client([status(429, {"Retry-After": "1"})], sleeps)
    with pytest.raises(TransientProviderError):
        await pc.request("PATCH", "http://api.test/v2/serverless/x", what="update", json={})
    assert len(seen) == 3


async def test_5xx_retries_reads_with_jitter_then_gives_up() -> None:
    sleeps: list[float] = []
    pc, seen = client([status(503)], sleeps)
    with pytest.raises(TransientProviderError) as info:
        await pc.request("GET", "http://api.test/v2/serverless", what="list")
    assert len(seen) == 3
    assert len(sleeps) == 2
    assert 0.1 <= sleeps[0] <= 0.2
    assert 0.2 <= sleeps[1] <= 0.4
    assert not info.value.maybe_applied


@pytest.mark.parametrize(
    "answer",
    [status(502), raising(httpx.ReadTimeout), raising(httpx.RemoteProtocolError)],
    ids=["5xx", "read-timeout", "dropped-connection"],
)
async def test_an_unanswered_create_is_never_repeated(answer: Answer) -> None:
    sleeps: list[float] = []
    pc, seen = client([answer], sleeps)
    with pytest.raises(TransientProviderError) as info:
        await pc.request("POST", "http://api.test/v2/serverless", what="create", json={})
    assert seen == ["POST"]
    assert info.value.maybe_applied


async def test_a_refused_connection_is_safe_to_retry_even_for_a_create() -> None:
    sleeps: list[float] = []
    pc, seen = client([raising(httpx.ConnectError), status(201)], sleeps)
    response = await pc.request("POST", "http://api.test/v2/serverless", what="create", json={})
    assert response.status_code == 201
    assert seen == ["POST", "POST"]


async def test_rejected_credentials_name_config_and_secret_not_token() -> None:
    pc, _ = client([status(401)], [])
    with pytest.raises(PermanentProviderError) as info:
        await pc.request("GET", "http://api.test/v2/serverless", what="list")
    message = str(info.value)
    assert info.value.reason == "CredentialsRejected"
    assert "rp-token" in message
    assert "ProviderConfig rp" in message
    assert TOKEN not in message


async def test_a_bad_request_carries_the_platforms_detail() -> None:
    pc, _ = client([status(400)], [])
    with pytest.raises(PermanentProviderError) as info:
        await pc.request("POST", "http://api.test/v2/serverless", what="create x", json={})
    assert info.value.reason == "InvalidRequest"
    assert "said 400" in str(info.value)
    assert "create x" in str(info.value)
