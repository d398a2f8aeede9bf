"""Load sources: the model server's exposition parsed, pods scraped, Prometheus queried.

HTTP goes through httpx transports that answer as the real servers do (the model
server's text format; Prometheus's documented /api/v1/query shape).
"""

from __future__ import annotations

from typing import Any

import httpx

from ferry import sampling

EXPOSITION = """# HELP ferry_inflight_requests Requests being served
# TYPE ferry_inflight_requests gauge
ferry_inflight_requests 5.0
# HELP ferry_queue_depth Requests waiting for a batch slot
# TYPE ferry_queue_depth gauge
ferry_queue_depth 2.0
ferry_spot_notice_deadline_seconds 1.7964e+09
ferry_requests_total{route="/v1/completions",status="200"} 40.0
ferry_inflight_requests_created 1.7e+09
"""


def test_parse_reads_only_the_three_metrics() -> None:
    assert sampling.parse_metrics(EXPOSITION) == {
        "ferry_inflight_requests": 5.0,
        "ferry_queue_depth": 2.0,
        "ferry_spot_notice_deadline_seconds": 1.7964e9,
    }
    assert sampling.parse_metrics("ferry_inflight_requests NaN\ngarbage") == {}


def pod(name: str, ip: str | None = "10.0.0.1") -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "nodeName": "n1",
            "containers": [{"ports": [{"name": "http", "containerPort": 8000}]}],
        },
        "status": {"podIP": ip} if ip else {},
    }


async def test_pod_metrics_scrapes_each_pod_and_skips_the_silent() -> None:
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        if "p2" in str(request.url):
            return httpx.Response(503)
        return httpx.Response(200, text=EXPOSITION)

    source = sampling.PodMetrics(
        "http://proxy/{namespace}/{name}/{ip}/{port}/metrics",
        transport=httpx.MockTransport(answer),
    )
    loads = await source.sample("team-a", [pod("p1"), pod("p2"), pod("p3", ip=None)])
    await source.close()
    assert seen == [
        "http://proxy/team-a/p1/10.0.0.1/8000/metrics",
        "http://proxy/team-a/p2/10.0.0.1/8000/metrics",
    ]
    assert loads == [sampling.PodLoad("p1", "n1", 5.0, 2.0, 1.7964e9)]


async def test_prometheus_source_queries_per_pod_series() -> None:
    queries: list[str] = []
    values = {
        "ferry_inflight_requests": {"p1": "3", "p2": "4"},
        "ferry_queue_depth": {"p1": "1"},
        "ferry_spot_notice_deadline_seconds": {"p1": "0", "p2": "0"},
    }

    def answer(request: httpx.Request) -> httpx.Response:
        query = request.url.params["query"]
        queries.append(query)
        metric = next(m for m in values if m in query)
        result = [
            {"metric": {"pod": p, "namespace": "team-a"}, "value": [1.7e9, v]}
            for p, v in values[metric].items()
        ]
        return httpx.Response(
            200, json={"status": "success", "data": {"resultType": "vector", "result": result}}
        )

    source = sampling.Prometheus("http://prom:9090/", transport=httpx.MockTransport(answer))
    loads = await source.sample("team-a", [pod("p1"), pod("p2")])
    await source.close()
    assert loads == [
        sampling.PodLoad("p1", "n1", 3.0, 1.0, 0.0),
        sampling.PodLoad("p2", "n1", 4.0, 0.0, 0.0),
    ]
    assert queries[0] == 'sum by (pod) (ferry_inflight_requests{namespace="team-a",pod=~"p1|p2"})'


async def test_prometheus_errors_give_no_sample() -> None:
    source = sampling.Prometheus(
        "http://prom:9090",
        transport=httpx.MockTransport(
            lambda r: httpx.Response(200, json={"status": "error", "error": "bad query"})
        ),
    )
    assert await source.sample("team-a", [pod("p1")]) == []
    await source.close()
