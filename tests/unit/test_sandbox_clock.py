"""The sandbox clock and the shared fault table (ferry.sandbox.clock, ferry.sandbox.faults)."""

from __future__ import annotations

import pytest

from ferry.sandbox.calls import CallCounter
from ferry.sandbox.clock import SandboxClock, parse_rfc3339, rfc3339
from ferry.sandbox.faults import FaultSpec, FaultTable


class FakeMonotonic:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_clock_is_wall_time_times_speed_plus_steps() -> None:
    mono = FakeMonotonic()
    clock = SandboxClock(speed=10, start=1_000.0, monotonic=mono)
    assert clock.now() == 1_000.0
    mono.t += 2
    assert clock.now() == 1_020.0
    clock.advance(5)
    assert clock.now() == 1_025.0
    clock.set_speed(0)
    mono.t += 50
    assert clock.now() == 1_025.0  # frozen, and no jump when the speed changed
    clock.set_speed(1)
    mono.t += 1
    assert clock.now() == 1_026.0
    assert clock.stepped == 5


@pytest.mark.parametrize("bad", [-1.0, -0.001], ids=["minus-one", "tiny"])
def test_clock_never_runs_backwards(bad: float) -> None:
    clock = SandboxClock(speed=0, start=0.0)
    with pytest.raises(ValueError, match="forward"):
        clock.advance(bad)
    with pytest.raises(ValueError, match="speed"):
        clock.set_speed(bad)


def test_clock_listeners_hear_steps_and_timestamps_round_trip() -> None:
    clock = SandboxClock(speed=0, start=1_780_000_000.0)
    heard: list[float] = []
    clock.on_change(lambda: heard.append(clock.now()))
    clock.advance(1)
    assert heard == [1_780_000_001.0]
    assert rfc3339(1_780_000_001.0) == "2026-05-28T20:26:41Z"
    assert parse_rfc3339("2026-05-28T20:26:41Z") == 1_780_000_001.0
    with pytest.raises(ValueError, match="time zone"):
        parse_rfc3339("2026-05-28T20:26:41")


def spec(**kw: object) -> FaultSpec:
    return FaultSpec.model_validate({"method": "GET", "route": "/v2/serverless", **kw})


def test_faults_fire_for_their_count_in_order_and_by_method_and_route() -> None:
    table = FaultTable()
    first = table.add(spec(kind="status", status=500, count=2))
    table.add(spec(kind="rate_limit", count=None))
    assert table.take("POST", "/v2/serverless") is None
    assert table.take("GET", "/v2/serverless/{id}") is None
    assert table.take("GET", "/v2/serverless") is first
    assert table.take("get", "/v2/serverless") is first
    forever = table.take("GET", "/v2/serverless")
    assert forever is not None
    assert forever.spec.kind == "rate_limit"
    for _ in range(5):
        assert table.take("GET", "/v2/serverless") is forever
    assert forever.fired == 6
    assert [f["id"] for f in table.describe()] == [forever.id]
    assert table.remove(forever.id)
    assert not table.remove(forever.id)
    assert table.take("GET", "/v2/serverless") is None


def test_any_method_fault_and_call_counter() -> None:
    table = FaultTable()
    table.add(spec(method="*", kind="delay", delaySeconds=0.5))
    assert table.take("DELETE", "/v2/serverless") is not None
    calls = CallCounter()
    calls.count("get", "/a")
    calls.count("GET", "/a")
    calls.count("POST", "/a")
    assert calls.get("GET", "/a") == 2
    assert calls.describe() == {
        "total": 3,
        "calls": [
            {"method": "GET", "route": "/a", "count": 2},
            {"method": "POST", "route": "/a", "count": 1},
        ],
    }
