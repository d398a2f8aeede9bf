"""RunPod jobs as the fake keeps them: status, timings (ms on the job plane) and output.

A job is IN_QUEUE until a worker takes it, then IN_PROGRESS, then COMPLETED, FAILED,
CANCELLED or TIMED_OUT. `delayTime` runs from submission to the start (so it includes a cold
start), `executionTime` from the start to the end, both on the sandbox clock. Owned by
`platform`; rendered by `jobplane`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TERMINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"})
# Finished jobs are kept this long (sandbox seconds) for /status, then forgotten.
JOB_RETENTION_S = 3600.0
INFERENCE_OFF_MESSAGE = (
    "ferry sandbox: inference is off (--inference off), so no model server runs and this job "
    "produced no output; start the sandbox with --inference on for real tokens"
)


@dataclass
class Job:
    """One job in the queue or done."""

    id: str
    endpoint_id: str
    input: Any
    submitted_at: float
    status: str = "IN_QUEUE"
    started_at: float | None = None
    finished_at: float | None = None
    worker_id: str | None = None
    output: Any = None
    error: Any = None
    stream: list[Any] = field(default_factory=list)
    stream_read: int = 0

    @property
    def done(self) -> bool:
        """True once the job reached a terminal status."""
        return self.status in TERMINAL

    def describe(self, now: float, *, with_output: bool = True) -> dict[str, Any]:
        """The job plane's status body: `{id, status, delayTime, executionTime, ...}` (ms)."""
        start = self.started_at if self.started_at is not None else now
        body: dict[str, Any] = {
            "id": self.id,
            "status": self.status,
            "delayTime": int((start - self.submitted_at) * 1000),
        }
        if self.started_at is not None:
            end = self.finished_at if self.finished_at is not None else now
            body["executionTime"] = int((end - self.started_at) * 1000)
        if self.worker_id is not None:
            body["workerId"] = self.worker_id
        if with_output and self.status == "COMPLETED" and self.output is not None:
            body["output"] = self.output
        if self.error is not None:
            body["error"] = self.error
        return body
