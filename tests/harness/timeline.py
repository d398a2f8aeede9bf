"""The cluster's own account of a drain: pod and EndpointSlice changes as a watch sees them.

Tests assert on this rather than on Ferry's own events alone: when each pod became
Ready, when it got a deletion timestamp (or vanished), on which node, and how many
endpoints the Service had ready at every change.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

from lightkube import AsyncClient
from lightkube.resources.core_v1 import Pod
from lightkube.resources.discovery_v1 import EndpointSlice
from lightkube.types import OnErrorAction, OnErrorResult


def _retry(_: Exception, count: int) -> OnErrorResult:
    return OnErrorResult(OnErrorAction.RETRY, sleep=min(2.0, 0.2 * count))


@dataclass
class PodLife:
    """One pod as the watch saw it (monotonic seconds)."""

    name: str
    node: str | None = None
    created: float | None = None
    ready: float | None = None
    deleting: float | None = None
    gone: float | None = None
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class Timeline:
    """Pods of one namespace and the ready endpoint count of its Services' slices."""

    client: AsyncClient
    namespace: str
    pods: dict[str, PodLife] = field(default_factory=dict)
    ready_counts: list[tuple[float, int]] = field(default_factory=list)
    _slices: dict[str, int] = field(default_factory=dict)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._watch_pods()),
            asyncio.create_task(self._watch_slices()),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _watch_pods(self) -> None:
        async for kind, obj in self.client.watch(Pod, namespace=self.namespace, on_error=_retry):
            self._pod(kind, obj.to_dict())

    def _pod(self, kind: str, doc: dict[str, Any]) -> None:
        now = time.monotonic()
        meta = doc.get("metadata") or {}
        life = self.pods.setdefault(meta["name"], PodLife(meta["name"], created=now))
        life.node = (doc.get("spec") or {}).get("nodeName") or life.node
        life.labels = dict(meta.get("labels") or {})
        conds = (doc.get("status") or {}).get("conditions") or []
        if life.ready is None and any(
            c.get("type") == "Ready" and c.get("status") == "True" for c in conds
        ):
            life.ready = now
        if meta.get("deletionTimestamp") and life.deleting is None:
            life.deleting = now
        if kind == "DELETED":
            life.gone = now
            life.deleting = life.deleting or now

    async def _watch_slices(self) -> None:
        async for kind, obj in self.client.watch(
            EndpointSlice, namespace=self.namespace, on_error=_retry
        ):
            doc = obj.to_dict()
            name = doc["metadata"]["name"]
            if kind == "DELETED":
                self._slices.pop(name, None)
            else:
                self._slices[name] = sum(
                    1
                    for e in doc.get("endpoints") or []
                    if (e.get("conditions") or {}).get("ready")
                )
            self.ready_counts.append((time.monotonic(), sum(self._slices.values())))

    def ready_now(self) -> int | None:
        """Ready endpoints at the last slice change (None: no slice seen)."""
        return self.ready_counts[-1][1] if self.ready_counts else None

    def ready_low_after(self, start: float) -> int | None:
        """The fewest ready endpoints seen from `start` on (None: no slice seen)."""
        seen = [count for at, count in self.ready_counts if at >= start]
        before = [count for at, count in self.ready_counts if at < start]
        if before:
            seen.append(before[-1])
        return min(seen) if seen else None
