"""Load samples for Ferry's autoscaler (D12), and the spot notices model servers report (D11).

A `LoadSource` reads, for an endpoint's ready pods, each pod's requests in flight,
requests queued and spot-notice deadline: the model server's
`ferry_inflight_requests`, `ferry_queue_depth` and
`ferry_spot_notice_deadline_seconds`. Two sources, chosen by settings:

- `PodMetrics` (default): GET each ready pod's `/metrics` at
  `http://{ip}:{port}/metrics` (the URL is a template: tests route it to processes
  on 127.0.0.1). The operator must be able to reach pods on their serving port: under
  a default-deny NetworkPolicy the endpoints' namespaces need one admitting the
  operator's pods to the model server's port (the README shows it).
- `Prometheus`: one instant query per metric against a Prometheus that scrapes the
  pods (series labelled `namespace` and `pod`, as the Prometheus Operator's pod
  monitors label them).

A pod that does not answer is left out of the sample (counted in
`ferry_load_scrape_errors_total`); `ferry.autoscaling` holds the count when no pod
answers. Nothing here decides anything.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from ferry import metrics

log = logging.getLogger(__name__)

INFLIGHT = "ferry_inflight_requests"
QUEUE = "ferry_queue_depth"
NOTICE = "ferry_spot_notice_deadline_seconds"
_WANTED = (INFLIGHT, QUEUE, NOTICE)
_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


@dataclass(frozen=True)
class PodLoad:
    """One pod's answer: requests in flight (queued included) and queued, and the
    Unix time its spot notice says the node goes (0: no notice)."""

    pod: str
    node: str | None
    inflight: float
    queue: float
    notice_deadline: float = 0.0


class LoadSource(Protocol):
    """Where load samples come from."""

    name: str

    async def sample(self, namespace: str, pods: list[dict[str, Any]]) -> list[PodLoad]:
        """Loads of the given ready pods (Pod dicts); pods that gave no answer are missing."""
        ...

    async def close(self) -> None: ...


def parse_metrics(text: str) -> dict[str, float]:
    """The three metrics Ferry reads from a Prometheus text exposition, summed over
    series; metrics absent from `text` are absent from the result."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None or match.group(1) not in _WANTED:
            continue
        try:
            value = float(match.group(3))
        except ValueError:
            continue
        if math.isfinite(value):
            found[match.group(1)] = found.get(match.group(1), 0.0) + value
    return found


def _port(pod: dict[str, Any]) -> int | None:
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == "http" or len(container.get("ports") or []) == 1:
                return int(port["containerPort"])
    return None


class PodMetrics:
    """GET each ready pod's /metrics (D12's default source)."""

    name = "pods"

    def __init__(
        self,
        url_template: str = "http://{ip}:{port}/metrics",
        timeout: float = 2.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._template = url_template
        self._client = httpx.AsyncClient(timeout=timeout, transport=transport, trust_env=False)

    async def sample(self, namespace: str, pods: list[dict[str, Any]]) -> list[PodLoad]:
        answers = await asyncio.gather(*(self._one(namespace, pod) for pod in pods))
        return [a for a in answers if a is not None]

    async def _one(self, namespace: str, pod: dict[str, Any]) -> PodLoad | None:
        meta = pod.get("metadata") or {}
        ip = (pod.get("status") or {}).get("podIP")
        port = _port(pod)
        if not ip or port is None:
            return None
        url = self._template.format(ip=ip, port=port, namespace=namespace, name=meta.get("name"))
        try:
            resp = await self._client.get(url)
            resp.raise_for_status()
        except httpx.HTTPError as err:
            metrics.SCRAPE_ERRORS.labels(source=self.name).inc()
            log.debug("no load sample from pod %s/%s: %s", namespace, meta.get("name"), err)
            return None
        values = parse_metrics(resp.text)
        if INFLIGHT not in values:
            metrics.SCRAPE_ERRORS.labels(source=self.name).inc()
            return None
        return PodLoad(
            pod=str(meta.get("name")),
            node=(pod.get("spec") or {}).get("nodeName"),
            inflight=values[INFLIGHT],
            queue=values.get(QUEUE, 0.0),
            notice_deadline=values.get(NOTICE, 0.0),
        )

    async def close(self) -> None:
        await self._client.aclose()


class Prometheus:
    """Instant queries against a Prometheus that scrapes the model servers."""

    name = "prometheus"

    def __init__(
        self, base_url: str, timeout: float = 2.0, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), timeout=timeout, transport=transport, trust_env=False
        )

    async def sample(self, namespace: str, pods: list[dict[str, Any]]) -> list[PodLoad]:
        names = [str((p.get("metadata") or {}).get("name")) for p in pods]
        if not names:
            return []
        selector = f'namespace="{namespace}",pod=~"{"|".join(re.escape(n) for n in names)}"'
        try:
            values = {m: await self._query(f"sum by (pod) ({m}{{{selector}}})") for m in _WANTED}
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as err:
            metrics.SCRAPE_ERRORS.labels(source=self.name).inc()
            log.debug("no load sample from Prometheus for %s: %s", namespace, err)
            return []
        nodes = {
            str((p.get("metadata") or {}).get("name")): (p.get("spec") or {}).get("nodeName")
            for p in pods
        }
        return [
            PodLoad(
                pod=name,
                node=nodes.get(name),
                inflight=values[INFLIGHT][name],
                queue=values[QUEUE].get(name, 0.0),
                notice_deadline=values[NOTICE].get(name, 0.0),
            )
            for name in names
            if name in values[INFLIGHT]
        ]

    async def _query(self, query: str) -> dict[str, float]:
        resp = await self._client.get("/api/v1/query", params={"query": query})
        resp.raise_for_status()
        doc = resp.json()
        if doc.get("status") != "success":
            raise ValueError(f"Prometheus answered {doc.get('status')}: {doc.get('error')}")
        out: dict[str, float] = {}
        for series in doc["data"]["result"]:
            pod = series["metric"].get("pod")
            if pod is not None:
                out[str(pod)] = float(series["value"][1])
        return out

    async def close(self) -> None:
        await self._client.aclose()
