"""RunPod workers as the fake keeps them, and the seam to real model-server processes.

A `Worker`'s status is derived from the clock: THROTTLED until placed on a GPU, INITIALIZING
until its cold boot is over (and, when a real process backs it, until that process has asked
for its first job: its model is loaded), then RUNNING while it holds jobs, else IDLE;
UNHEALTHY when its process died. `ProcessBackend` is what `platform` calls to start and stop
real processes (`inference.WorkerProcesses` in the product, a recording fake in unit tests).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from ferry.sandbox.runpod.endpoints import Endpoint


@dataclass
class Worker:
    """One worker of an endpoint (simulated, or backed by a real process)."""

    id: str
    endpoint_id: str
    version: int
    image: str | None
    gpu_count: int
    created_at: float
    backed: bool = False
    process_ready_at: float | None = None
    placed_at: float | None = None
    ready_at: float | None = None
    pool: str | None = None
    gpu_type: str | None = None
    data_center: str | None = None
    usd_per_second: float = 0.0
    jobs: set[str] = field(default_factory=set)
    idle_since: float | None = None
    busy_since: float | None = None
    busy_seconds: float = 0.0
    retiring: bool = False
    unhealthy: str | None = None
    unhealthy_at: float | None = None
    gone_at: float | None = None
    stop_requests: list[str] = field(default_factory=list)

    def booted(self, now: float) -> bool:
        """Clock boot done and, when backed, the process has polled (model loaded)."""
        if self.ready_at is None or now < self.ready_at:
            return False
        return not self.backed or self.process_ready_at is not None

    def status(self, now: float) -> str:
        """RUNNING | IDLE | INITIALIZING | THROTTLED | UNHEALTHY."""
        if self.unhealthy is not None:
            return "UNHEALTHY"
        if self.placed_at is None:
            return "THROTTLED"
        if not self.booted(now):
            return "INITIALIZING"
        return "RUNNING" if self.jobs else "IDLE"

    def seconds(self, now: float, boot_seconds: float) -> dict[str, float]:
        """Billed seconds so far: `{boot, run, idle, total}` (0 while never placed)."""
        if self.placed_at is None:
            return {"boot": 0.0, "run": 0.0, "idle": 0.0, "total": 0.0}
        end = self.gone_at if self.gone_at is not None else now
        total = max(0.0, end - self.placed_at)
        boot_end = self.placed_at + boot_seconds
        if self.backed and self.process_ready_at is not None:
            boot_end = max(boot_end, self.process_ready_at)
        boot = min(total, max(0.0, boot_end - self.placed_at))
        run = self.busy_seconds + ((end - self.busy_since) if self.busy_since is not None else 0.0)
        run = min(run, total - boot)
        return {"boot": boot, "run": run, "idle": max(0.0, total - boot - run), "total": total}


class ProcessBackend(Protocol):
    """Real model-server processes behind workers (see `inference.WorkerProcesses`)."""

    def has_room(self) -> bool:
        """True when one more process may start."""

    def launch(self, worker: Worker, endpoint: Endpoint) -> None:
        """Start `worker`'s process (its slot is taken at once)."""

    def terminate(self, worker_id: str) -> None:
        """Stop `worker_id`'s process (its slot is free at once)."""

    def touch(self, worker_id: str) -> None:
        """`worker_id`'s process was just used."""

    def least_recently_used(self, evictable: Callable[[str], bool]) -> str | None:
        """The least recently used worker id among those `evictable` allows."""
