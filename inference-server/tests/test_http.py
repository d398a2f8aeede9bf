"""OpenAI-compatible API, /generate, probes, metrics, auth and malformed requests."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from conftest import AUTH_TOKEN, SERVED_NAME, ServerProcess, metric_value

GREEDY = {"temperature": 0.0, "ignore_eos": True}


def sse_events(text: str) -> list[Any]:
    events: list[Any] = []
    for block in text.split("\n\n"):
        if block.startswith("data: "):
            data = block.removeprefix("data: ")
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


def test_probes_and_models(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "alive"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["ready"] is True
    assert ready.json()["engine"] == "transformers"
    models = client.get("/v1/models").json()
    assert [m["id"] for m in models["data"]] == [SERVED_NAME]


def test_completion_is_deterministic_and_counts_tokens(client: httpx.Client) -> None:
    body = {"model": SERVED_NAME, "prompt": "The quick brown fox", "max_tokens": 8, **GREEDY}
    first = client.post("/v1/completions", json=body)
    assert first.status_code == 200, first.text
    out = first.json()
    assert out["object"] == "text_completion"
    assert out["choices"][0]["finish_reason"] == "length"
    assert out["usage"]["completion_tokens"] == 8
    assert out["usage"]["prompt_tokens"] > 1
    assert out["choices"][0]["text"]
    again = client.post("/v1/completions", json=body).json()
    assert again["choices"][0]["text"] == out["choices"][0]["text"]


def test_seeded_sampling_is_reproducible(client: httpx.Client) -> None:
    body = {"prompt": "Hello", "max_tokens": 12, "temperature": 1.0, "seed": 7,
            "ignore_eos": True}
    a = client.post("/v1/completions", json=body).json()["choices"][0]["text"]
    b = client.post("/v1/completions", json=body).json()["choices"][0]["text"]
    assert a == b


def test_streaming_matches_non_streaming(client: httpx.Client) -> None:
    body = {"prompt": "Once upon a time", "max_tokens": 10, **GREEDY}
    whole = client.post("/v1/completions", json=body).json()["choices"][0]["text"]
    resp = client.post("/v1/completions", json={**body, "stream": True})
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/event-stream")
    events = sse_events(resp.text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert len(chunks) >= 3, "expected token-by-token chunks"
    assert "".join(c["choices"][0]["text"] for c in chunks) == whole
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
    # Usage only comes with stream_options.include_usage (see test_openai_client.py).
    assert not any("usage" in c for c in chunks)


def test_chat_completion_and_streaming(client: httpx.Client) -> None:
    body = {"messages": [{"role": "system", "content": "Be brief."},
                         {"role": "user", "content": "What is a GPU?"}],
            "max_tokens": 6, **GREEDY}
    out = client.post("/v1/chat/completions", json=body).json()
    msg = out["choices"][0]["message"]
    assert out["object"] == "chat.completion"
    assert msg["role"] == "assistant"
    assert out["usage"]["completion_tokens"] == 6
    events = sse_events(client.post("/v1/chat/completions",
                                    json={**body, "stream": True}).text)
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    assert events[-1] == "[DONE]"
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1])
    assert text == msg["content"]
    assert events[-2]["choices"][0]["finish_reason"] == "length"


def test_stop_string_truncates(client: httpx.Client) -> None:
    body = {"prompt": "Kubernetes sends", "max_tokens": 24, **GREEDY}
    full = client.post("/v1/completions", json=body).json()["choices"][0]["text"]
    assert len(full) >= 6
    stop = full[len(full) // 2: len(full) // 2 + 2]
    cut = full.find(stop)
    out = client.post("/v1/completions", json={**body, "stop": [stop]}).json()
    assert out["choices"][0]["text"] == full[:cut]
    assert out["choices"][0]["finish_reason"] == "stop"


def test_generate_endpoint_from_reference_article(client: httpx.Client) -> None:
    resp = client.post("/generate", json={"prompt": "Hello, how are you?", "max_new_tokens": 5})
    assert resp.status_code == 200
    assert isinstance(resp.json()["text"], str)
    assert resp.json()["finish_reason"] in ("stop", "length")


def test_batches_form_under_32_concurrent_clients(server: ServerProcess) -> None:
    headers = {"Authorization": f"Bearer {AUTH_TOKEN}"}
    before = httpx.get(f"{server.url}/metrics").text

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=120) as c:
            return await asyncio.gather(*(
                c.post("/v1/completions", json={"prompt": f"client {i} says", "max_tokens": 16,
                                               **GREEDY})
                for i in range(32)
            ))

    responses = asyncio.run(run())
    assert [r.status_code for r in responses] == [200] * 32
    assert all(r.json()["usage"]["completion_tokens"] == 16 for r in responses)
    after = httpx.get(f"{server.url}/metrics").text
    def delta(name: str, labels: str = "") -> float:
        return metric_value(after, name, labels) - metric_value(before, name, labels)

    n = delta("ferry_batch_size_count")
    total = delta("ferry_batch_size_sum")
    singles = (metric_value(after, "ferry_batch_size_bucket", 'le="1.0"')
               - metric_value(before, "ferry_batch_size_bucket", 'le="1.0"'))
    assert total == 32
    assert n < 32, f"{n} batches for 32 requests: no batching happened"
    assert singles < n, "every batch had a single request"
    assert total / n >= 2


def test_metrics_cover_requests_latency_and_cold_start(client: httpx.Client) -> None:
    client.post("/v1/completions", json={"prompt": "hi", "max_tokens": 2, **GREEDY})
    for _ in range(3):
        client.get("/healthz")
        client.get("/readyz")
    text = client.get("/metrics").text
    assert metric_value(text, "ferry_requests_total",
                        'route="/v1/completions",status="200"') >= 1
    assert metric_value(text, "ferry_request_duration_seconds_count",
                        'route="/v1/completions"') >= 1
    assert metric_value(text, "ferry_time_to_first_token_seconds_count") >= 1
    assert metric_value(text, "ferry_generated_tokens_total") >= 2
    assert metric_value(text, "ferry_request_tokens_per_second_count") >= 1
    for phase in ("import", "weight_load", "warmup"):
        assert metric_value(text, "ferry_model_load_seconds", f'phase="{phase}"') > 0
    assert "ferry_inflight_requests 0.0" in text
    assert "ferry_queue_depth" in text
    assert "ferry_ready 1.0" in text
    assert 'route="/healthz"' not in text
    assert 'route="/readyz"' not in text
    assert 'route="/metrics"' not in text


def test_auth_required_and_secrets_never_logged(server: ServerProcess) -> None:
    marker = "PRIVATE-PROMPT-7f3a"
    url = f"{server.url}/v1/completions"
    body = {"prompt": marker, "max_tokens": 2}
    missing = httpx.post(url, json=body)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert missing.json()["error"]["type"] == "authentication_error"
    wrong = httpx.post(url, json=body, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    basic = httpx.post(url, json=body, headers={"Authorization": f"Basic {AUTH_TOKEN}"})
    assert basic.status_code == 401
    ok = httpx.post(url, json=body, headers={"Authorization": f"Bearer {AUTH_TOKEN}"})
    assert ok.status_code == 200
    # Probes and metrics stay open for the kubelet and Prometheus.
    assert httpx.get(f"{server.url}/readyz").status_code == 200
    assert httpx.get(f"{server.url}/metrics").status_code == 200
    log = server.log()
    assert "rejected unauthenticated request" in log
    assert AUTH_TOKEN not in log
    assert marker not in log


BAD_REQUESTS: list[tuple[str, str, Any, int, str]] = [
    ("bad json", "/v1/completions", b'{"prompt": "x", ', 400, "not valid JSON"),
    ("not an object", "/v1/completions", b'[1, 2]', 400, ""),
    ("empty body", "/v1/completions", b"", 400, ""),
    ("missing prompt", "/v1/completions", {"max_tokens": 3}, 400, "prompt"),
    ("huge max_tokens", "/v1/completions", {"prompt": "x", "max_tokens": 10**9}, 400, "limit"),
    ("zero max_tokens", "/v1/completions", {"prompt": "x", "max_tokens": 0}, 400, "max_tokens"),
    ("string max_tokens", "/v1/completions", {"prompt": "x", "max_tokens": "lots"}, 400,
     "max_tokens"),
    ("numeric prompt", "/v1/completions", {"prompt": 123}, 400, "prompt"),
    ("negative temperature", "/v1/completions", {"prompt": "x", "temperature": -1.0}, 400,
     "temperature"),
    ("over context", "/v1/completions", {"prompt": "word " * 400, "max_tokens": 1000}, 400,
     "context"),
    ("n > 128", "/v1/completions", {"prompt": "x", "n": 129}, 400, "n must be between 1 and 128"),
    ("unknown field", "/v1/completions", {"prompt": "x", "frobnicate": 1}, 400,
     "frobnicate: unknown parameter"),
    ("unknown model", "/v1/completions", {"prompt": "x", "model": "gpt-9"}, 404, "gpt-9"),
    ("huge seed", "/v1/completions", {"prompt": "x", "seed": 2**70}, 400, "seed"),
    ("no messages", "/v1/chat/completions", {"messages": []}, 400, "messages"),
    ("bad role", "/v1/chat/completions", {"messages": [{"role": "robot", "content": "x"}]}, 400,
     "role"),
    ("generate without prompt", "/generate", {"max_new_tokens": 3}, 400, "prompt"),
]


@pytest.mark.parametrize(("path", "body", "status", "needle"),
                         [b[1:] for b in BAD_REQUESTS], ids=[b[0] for b in BAD_REQUESTS])
def test_malformed_requests_get_clear_4xx(
    client: httpx.Client, path: str, body: Any, status: int, needle: str
) -> None:
    if isinstance(body, bytes):
        resp = client.post(path, content=body, headers={"Content-Type": "application/json"})
    else:
        resp = client.post(path, json=body)
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert err["message"]
    assert needle in err["message"]
    # The server keeps serving.
    ok = client.post("/v1/completions", json={"prompt": "still there?", "max_tokens": 2})
    assert ok.status_code == 200
