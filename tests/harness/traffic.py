"""A load generator that routes like a Service: only to pods ready in the EndpointSlice.

It watches the EndpointSlices of one Service (the real ones the EndpointSlice
controller writes from pod readiness) and, as kube-proxy does, sends each new
request to one of the endpoints whose `conditions.ready` is true; the pod's
address is translated to its process on 127.0.0.1 (`ProcessKubelet`). kube-proxy
picks the backend when a connection opens, so each request opens its own
connection (HTTP/1.1, `Connection: close`) at the moment it is sent, to a pod
ready at that moment: a pooling HTTP client would bind a request to a pod and then
queue it inside the client for seconds under load, which no Service does. A fixed
number of workers each keep one request in flight, so `concurrency` requests are in
flight all the time. Every outcome is counted: served (200), failed (any other
status, e.g. a draining server's 503), connection errors (refused, reset, closed
mid-answer) and no endpoint (a Service with nothing ready refuses the connection,
counted with the connection errors). `ready_low` is the fewest ready endpoints seen
while the load ran. Slice changes reach routing after `propagation` seconds, as
kube-proxy's syncs do (1 s by default); 0 routes on the change itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any

from lightkube import AsyncClient
from lightkube.resources.discovery_v1 import EndpointSlice
from lightkube.types import OnErrorAction, OnErrorResult

from tests.harness.processes import ProcessKubelet

#: How long an EndpointSlice change takes to reach routing: kube-proxy's default
#: minimum sync period (--iptables-min-sync-period, 1 s); ingress controllers and
#: cloud load balancers are often slower.
PROPAGATION_SECONDS = 1.0


def _retry(_: Exception, count: int) -> OnErrorResult:
    return OnErrorResult(OnErrorAction.RETRY, sleep=min(2.0, 0.2 * count))


@dataclass
class Tally:
    """What happened to the requests sent."""

    sent: int = 0
    ok: int = 0
    failed: int = 0
    connection_errors: int = 0
    no_endpoint: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    #: (time, pod, what) of every request that did not get a 200.
    failures: list[tuple[float, str, str]] = field(default_factory=list)
    ready_low: int | None = None
    ready_samples: list[tuple[float, int]] = field(default_factory=list)
    by_pod: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "ok": self.ok,
            "failed": self.failed,
            "connection_errors": self.connection_errors,
            "no_endpoint": self.no_endpoint,
            "statuses": dict(self.statuses),
            "errors": dict(self.errors),
            "ready_low": self.ready_low,
            "by_pod": dict(self.by_pod),
        }


class Traffic:
    """Requests to one Service's ready endpoints, `concurrency` at a time."""

    def __init__(
        self,
        client: AsyncClient,
        kubelet: ProcessKubelet,
        namespace: str,
        service: str,
        *,
        model: str,
        max_tokens: int = 2,
        propagation: float = PROPAGATION_SECONDS,
    ) -> None:
        self.client = client
        self.kubelet = kubelet
        self.namespace = namespace
        self.service = service
        self.model = model
        self.max_tokens = max_tokens
        self.propagation = propagation
        self.tally = Tally()
        self._slices: dict[str, list[str]] = {}
        self._rr = itertools.count()
        self._watch: asyncio.Task[None] | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()
        self.inflight = 0

    def ready_pods(self) -> list[str]:
        return sorted({p for pods in self._slices.values() for p in pods})

    async def watch(self) -> None:
        """Follow the Service's EndpointSlices (starts routing knowledge, sends nothing)."""
        if self._watch is None:
            self._watch = asyncio.create_task(self._follow())

    async def _follow(self) -> None:
        labels: dict[str, Any] = {"kubernetes.io/service-name": self.service}
        async for kind, obj in self.client.watch(
            EndpointSlice, namespace=self.namespace, labels=labels, on_error=_retry
        ):
            doc = obj.to_dict()
            name = doc["metadata"]["name"]
            ready = [
                str(e["targetRef"]["name"])
                for e in doc.get("endpoints") or []
                if (e.get("conditions") or {}).get("ready") and e.get("targetRef")
            ]
            if self.propagation > 0:
                # kube-proxy applies endpoint changes on its next sync, not at once.
                asyncio.get_running_loop().call_later(
                    self.propagation, self._apply, name, kind, ready
                )
            else:
                self._apply(name, kind, ready)

    def _apply(self, name: str, kind: str, ready: list[str]) -> None:
        if kind == "DELETED":
            self._slices.pop(name, None)
        else:
            self._slices[name] = ready
        self._note_ready()

    def _note_ready(self) -> None:
        count = len(self.ready_pods())
        self.tally.ready_samples.append((time.monotonic(), count))
        if self._workers and (self.tally.ready_low is None or count < self.tally.ready_low):
            self.tally.ready_low = count

    async def start(self, concurrency: int) -> None:
        """Keep `concurrency` requests in flight until `stop`."""
        await self.watch()
        self._stop.clear()
        self._workers = [asyncio.create_task(self._worker()) for _ in range(concurrency)]
        self._note_ready()

    async def stop(self) -> Tally:
        self._stop.set()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []
        return self.tally

    async def close(self) -> None:
        await self.stop()
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch

    async def _worker(self) -> None:
        payload = json.dumps(
            {"model": self.model, "prompt": "Hello", "max_tokens": self.max_tokens}
        ).encode()
        request = (
            b"POST /v1/completions HTTP/1.1\r\nHost: service\r\nConnection: close\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (len(payload), payload)
        )
        while not self._stop.is_set():
            pods = self.ready_pods()
            target = None
            if pods:
                pod = pods[next(self._rr) % len(pods)]
                run = self.kubelet.process_of(self.namespace, pod)
                target = (pod, run.port) if run is not None else None
            self.tally.sent += 1
            if target is None:
                self.tally.no_endpoint += 1
                self.tally.connection_errors += 1
                self.tally.failures.append((time.monotonic(), "-", "no ready endpoint"))
                # A client whose connection was refused tries again after a moment.
                await asyncio.sleep(0.5)
                continue
            pod, port = target
            self.inflight += 1
            try:
                status = await self._send(port, request)
            except (OSError, asyncio.IncompleteReadError, ValueError) as err:
                self.tally.connection_errors += 1
                name = type(err).__name__
                self.tally.errors[name] = self.tally.errors.get(name, 0) + 1
                self.tally.failures.append((time.monotonic(), pod, f"{name}: {err}"))
                continue
            finally:
                self.inflight -= 1
            self.tally.statuses[status] = self.tally.statuses.get(status, 0) + 1
            if status == 200:
                self.tally.ok += 1
                self.tally.by_pod[pod] = self.tally.by_pod.get(pod, 0) + 1
            else:
                self.tally.failed += 1
                self.tally.failures.append((time.monotonic(), pod, f"HTTP {status}"))

    @staticmethod
    async def _send(port: int, request: bytes) -> int:
        """One request on a new connection; the status code once the whole body is read."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(request)
            await writer.drain()
            status = int((await reader.readline()).split()[1])
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            await reader.readexactly(length)
            return status
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
