"""The RunPod fake's state machine on a stepped clock (ferry.sandbox.runpod.platform).

No sockets and no sleeping: the clock is frozen and stepped, and real processes are replaced
by a recording backend, so the D7 rules (lazy, capped, least recently used first) are checked
exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from ferry.sandbox.clock import SandboxClock
from ferry.sandbox.http import Problem
from ferry.sandbox.runpod.endpoints import Endpoint
from ferry.sandbox.runpod.platform import Options, RunPodPlatform
from ferry.sandbox.runpod.workers import Worker


class Backend:
    """Records launches and terminations; at most `limit` processes, LRU by touch order."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.live: list[str] = []  # least recently used first
        self.launched: list[tuple[str, str]] = []
        self.terminated: list[str] = []

    def has_room(self) -> bool:
        return len(self.live) < self.limit

    def launch(self, worker: Worker, endpoint: Endpoint) -> None:
        assert self.has_room()
        self.live.append(worker.id)
        self.launched.append((worker.id, endpoint.id))

    def terminate(self, worker_id: str) -> None:
        if worker_id in self.live:
            self.live.remove(worker_id)
            self.terminated.append(worker_id)

    def touch(self, worker_id: str) -> None:
        if worker_id in self.live:
            self.live.remove(worker_id)
            self.live.append(worker_id)

    def least_recently_used(self, evictable: Callable[[str], bool]) -> str | None:
        return next((w for w in self.live if evictable(w)), None)


def body(**overrides: Any) -> dict[str, Any]:
    b: dict[str, Any] = {
        "name": "ep",
        "type": "QUEUE",
        "image": "img",
        "gpu": {"pools": ["ADA_24"]},
        "workers": {"min": 0, "max": 3, "idleTimeout": 20},
        "scaling": {"type": "QUEUE_DELAY", "queueDelay": 4},
    }
    b.update(overrides)
    return b


def make(inference: bool = False, limit: int = 2) -> tuple[RunPodPlatform, Backend]:
    backend = Backend(limit)
    platform = RunPodPlatform(
        SandboxClock(speed=0, start=1_780_000_000.0),
        Options(boot_seconds=3, sim_job_seconds=1, inference=inference),
        backend if inference else None,
    )
    return platform, backend


def statuses(platform: RunPodPlatform, endpoint_id: str) -> list[str]:
    return [w["status"] for w in platform.workers_view(endpoint_id)["workers"]]


def test_queue_delay_adds_a_worker_per_delay_while_jobs_wait() -> None:
    platform, _ = make()
    ep = platform.create_endpoint(body(workers={"min": 0, "max": 2, "idleTimeout": 20}))
    for _ in range(6):
        platform.submit(ep.id, {})
    assert statuses(platform, ep.id) == ["INITIALIZING"]  # none existed: one starts at once
    platform.advance(3.5)
    assert statuses(platform, ep.id) == ["RUNNING"]
    platform.advance(1)  # the oldest job has now waited 4.5 s > queueDelay
    assert sorted(statuses(platform, ep.id)) == ["INITIALIZING", "RUNNING"]
    platform.advance(60)
    assert len(statuses(platform, ep.id)) <= 2  # never above max


def test_delay_time_includes_the_cold_start_and_execution_time_is_measured() -> None:
    platform, _ = make()
    ep = platform.create_endpoint(body())
    job = platform.submit(ep.id, {"prompt": "x"})
    platform.advance(10)
    seen = job.describe(platform.clock.now())
    assert seen["status"] == "FAILED"  # inference off
    assert seen["delayTime"] == 3000
    assert seen["executionTime"] == 1000


def test_idle_timeout_never_goes_below_min_and_stale_workers_are_replaced() -> None:
    platform, _ = make()
    ep = platform.create_endpoint(body(workers={"min": 1, "max": 3, "idleTimeout": 20}))
    platform.advance(3)
    first = platform.workers_view(ep.id)["workers"][0]["id"]
    platform.advance(500)
    assert [w["id"] for w in platform.workers_view(ep.id)["workers"]] == [first]
    platform.update_endpoint(ep.id, {"env": {"A": "1"}})
    view = platform.workers_view(ep.id)
    assert view["endpointVersion"] == 2
    assert [w["id"] for w in view["workers"]] != [first]
    assert view["workers"][0]["version"] == 2


def test_a_busy_stale_worker_finishes_its_job_first() -> None:
    platform, _ = make()
    ep = platform.create_endpoint(body(workers={"min": 1, "max": 1, "idleTimeout": 20}))
    platform.advance(3)
    job = platform.submit(ep.id, {})
    platform.tick()
    assert job.status == "IN_PROGRESS"
    platform.update_endpoint(ep.id, {"image": "img:v2"})
    view = platform.workers_view(ep.id)["workers"]
    # The stale worker keeps its job; its replacement boots beside it.
    assert [(w["status"], w["isStale"]) for w in view] == [
        ("RUNNING", True),
        ("INITIALIZING", False),
    ]
    platform.advance(1)
    assert job.status == "FAILED"
    assert [w["version"] for w in platform.workers_view(ep.id)["workers"]] == [2]


def test_throttled_workers_are_placed_when_capacity_frees_and_only_placed_time_bills() -> None:
    platform, _ = make()
    platform.set_capacity("ADA_24", 1)
    a = platform.create_endpoint(body(workers={"min": 1, "max": 1, "idleTimeout": 20}))
    b = platform.create_endpoint(body(workers={"min": 1, "max": 1, "idleTimeout": 20}))
    assert statuses(platform, b.id) == ["THROTTLED"]
    platform.advance(10)
    platform.delete_endpoint(a.id)
    platform.tick()
    assert statuses(platform, b.id) == ["INITIALIZING"]
    platform.advance(10)
    seconds = platform.billed_seconds()["endpoints"]
    assert seconds[a.id]["total"] == pytest.approx(10)
    assert seconds[b.id]["total"] == pytest.approx(10)
    assert seconds[b.id]["usd"] == pytest.approx(10 * 0.00031)
    with pytest.raises(Problem, match="unknown pool"):
        platform.set_capacity("NOPE", 1)


def test_request_count_scales_on_queued_plus_running() -> None:
    platform, _ = make()
    ep = platform.create_endpoint(
        body(workers={"min": 1, "max": 10}, scaling={"type": "REQUEST_COUNT", "requestCount": 3})
    )
    assert ep.idle_timeout is None
    for _ in range(7):
        platform.submit(ep.id, {})
    assert len(statuses(platform, ep.id)) == 3
    platform.advance(60)
    assert len(statuses(platform, ep.id)) == 1


def test_inference_on_starts_a_real_process_only_for_an_endpoint_with_a_job() -> None:
    platform, backend = make(inference=True, limit=1)
    a = platform.create_endpoint(body(workers={"min": 1, "max": 2, "idleTimeout": 20}))
    b = platform.create_endpoint(body(workers={"min": 0, "max": 1, "idleTimeout": 20}))
    platform.advance(5)
    assert backend.launched == []  # min workers are simulated until a job arrives
    job = platform.submit(a.id, {})
    assert len(backend.launched) == 1
    real, endpoint_id = backend.launched[0]
    assert endpoint_id == a.id
    platform.advance(5)
    # Clock boot is over, but the process has not polled yet: its model is not loaded (D17).
    assert platform.workers[real].status(platform.clock.now()) == "INITIALIZING"
    assert platform.take(a.id, real, 8) == [job]
    assert platform.workers[real].status(platform.clock.now()) == "RUNNING"
    platform.job_done(a.id, real, job.id, {"output": [{"text": "hi"}]})
    assert job.status == "COMPLETED"
    assert job.output == [{"text": "hi"}]
    # Endpoint b gets a job: the cap is 1, so a's idle process is stopped (LRU), and its
    # worker carries on simulated.
    platform.submit(b.id, {})
    assert backend.terminated == [real]
    assert backend.launched[-1][1] == b.id
    assert real in platform.workers
    assert not platform.workers[real].backed


def test_a_busy_process_is_never_evicted() -> None:
    platform, backend = make(inference=True, limit=1)
    a = platform.create_endpoint(body())
    b = platform.create_endpoint(body())
    platform.submit(a.id, {})
    real = backend.launched[0][0]
    platform.advance(3)
    assert len(platform.take(a.id, real, 1)) == 1
    platform.submit(b.id, {})
    assert backend.terminated == []
    assert len(backend.launched) == 1
    assert statuses(platform, b.id) == []  # b's job waits for a slot


def test_at_max_a_simulated_worker_makes_way_for_the_real_one() -> None:
    platform, backend = make(inference=True, limit=2)
    ep = platform.create_endpoint(body(workers={"min": 1, "max": 1, "idleTimeout": 20}))
    platform.advance(3)
    simulated = platform.workers_view(ep.id)["workers"][0]["id"]
    platform.submit(ep.id, {})
    ids = [w["id"] for w in platform.workers_view(ep.id)["workers"]]
    assert simulated not in ids
    assert ids == [backend.launched[0][0]]


def test_a_process_that_dies_before_it_is_ready_fails_the_waiting_jobs() -> None:
    platform, backend = make(inference=True)
    ep = platform.create_endpoint(body())
    job = platform.submit(ep.id, {})
    real = backend.launched[0][0]
    platform.process_exited(real, 1, "ModelLoadError: no weights")
    assert job.status == "FAILED"
    assert "exited with code 1" in job.error
    assert "no weights" in job.error
    assert statuses(platform, ep.id) == ["UNHEALTHY"]
    platform.advance(31)
    assert statuses(platform, ep.id) == []


def test_cancel_and_timeout_send_stop_signals_to_the_worker() -> None:
    platform, backend = make(inference=True)
    ep = platform.create_endpoint(body(timeout=5000))
    first = platform.submit(ep.id, {})
    second = platform.submit(ep.id, {})
    real = backend.launched[0][0]
    platform.advance(3)
    assert platform.take(ep.id, real, 2) == [first, second]
    platform.cancel(ep.id, first.id)
    assert first.status == "CANCELLED"
    platform.advance(6)
    assert second.status == "TIMED_OUT"
    assert platform.stop_signals(ep.id, real) == [first.id, second.id]
    assert platform.stop_signals(ep.id, real) == []
    platform.job_done(ep.id, real, second.id, {"output": "late"})
    assert second.status == "TIMED_OUT"  # a late result is dropped
