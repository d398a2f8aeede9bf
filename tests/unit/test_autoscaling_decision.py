"""Ferry's autoscaler decision, case by case (time is a number the test chooses)."""

from __future__ import annotations

import pytest

from ferry.logic import autoscaling
from tests.unit.factories import endpoint

A = autoscaling


def history(*loads: tuple[float, float, float], since: float = 0.0) -> A.History:
    """Samples (at, inflight, queue), oldest first."""
    h = A.History(since=since)
    for at, inflight, queue in loads:
        h = h.add(A.Sample(at, inflight, queue), keep=10_000)
    return h


POLICY = A.Policy(min_replicas=1, max_replicas=4, target=8, up_delay=0, down_delay=60)


@pytest.mark.parametrize(
    ("inflight", "queue", "need"),
    [(0, 0, 0), (1, 0, 1), (8, 0, 1), (9, 0, 2), (16, 0, 2), (16, 3, 3), (0, 2, 1), (7, 1, 1)],
    ids=["idle", "one", "at-target", "over", "two-full", "queue-breaks-tie", "queued-only", "room"],
)
def test_demand_is_inflight_over_target_with_queue_as_tie_breaker(
    inflight: float, queue: float, need: int
) -> None:
    assert A.demand(POLICY, A.Sample(0, inflight, queue)) == need


@pytest.mark.parametrize(
    ("loads", "current", "now", "want", "reason"),
    [
        ([(10, 30, 0)], 1, 10, 4, "LoadAbove"),
        ([(10, 100, 50)], 2, 10, 4, "LoadAbove"),  # never beyond max
        ([(0, 9, 0), (30, 9, 0), (60, 0, 0)], 2, 60, 2, "LoadSteady"),  # one low sample
        ([(0, 0, 0), (30, 0, 0), (60, 0, 0)], 3, 60, 1, "LoadBelow"),  # low all window
        ([(30, 0, 0), (60, 0, 0)], 3, 60, 3, "LoadSteady"),  # window not seen whole yet
        ([], 2, 10, 2, "NoLoadSignal"),
        ([(10, 0, 0)], 0, 10, 1, "BelowMinimum"),
        ([(10, 0, 0)], 9, 10, 4, "AboveMaximum"),
    ],
    ids=[
        "step-up",
        "capped-at-max",
        "down-waits-for-window",
        "down-after-window",
        "history-too-short",
        "no-signal",
        "below-min",
        "above-max",
    ],
)
def test_decisions(
    loads: list[tuple[float, float, float]], current: int, now: float, want: int, reason: str
) -> None:
    decision = A.decide(POLICY, history(*loads, since=loads[0][0] if loads else 0), current, now)
    assert (decision.replicas, decision.reason) == (want, reason)


def test_scale_up_window_needs_load_high_throughout() -> None:
    policy = A.Policy(min_replicas=1, max_replicas=8, target=1, up_delay=20, down_delay=60)
    spiky = history((0, 1, 0), (10, 5, 0), (20, 1, 0), (30, 6, 0))
    assert A.decide(policy, spiky, 1, 30).replicas == 1
    sustained = history((0, 1, 0), (10, 5, 0), (20, 4, 0), (30, 6, 0))
    assert A.decide(policy, sustained, 1, 30).replicas == 4


def test_buffer_replicas_idle_above_demand_within_bounds() -> None:
    policy = A.Policy(min_replicas=0, max_replicas=5, target=8, buffer=2, down_delay=60)
    assert A.decide(policy, history((0, 9, 0)), 1, 0).replicas == 4
    assert A.decide(policy, history((0, 40, 0)), 1, 0).replicas == 5


def test_scale_to_zero_after_idle_window_and_not_before() -> None:
    policy = A.Policy(min_replicas=0, max_replicas=3, target=8, down_delay=30, zero_after=120)
    idle = history((0, 4, 0), *((t, 0, 0) for t in range(10, 200, 10)))
    assert A.decide(policy, idle, 1, 119).replicas == 1  # 119 s idle (busy at t=0)
    zero = A.decide(policy, idle, 1, 120)
    assert (zero.replicas, zero.reason) == (0, "ScaledToZero")
    # minReplicas > 0 never goes below it, however long the idle.
    floor = A.Policy(min_replicas=2, max_replicas=3, target=8, down_delay=30, zero_after=None)
    assert A.decide(floor, idle, 3, 190).replicas == 2


def test_zero_follows_the_scale_down_window_when_scale_to_zero_after_is_unset() -> None:
    policy = A.Policy(min_replicas=0, max_replicas=3, target=8, down_delay=60)
    idle = history(*((t, 0, 0) for t in range(0, 70, 10)))
    assert A.decide(policy, idle, 2, 50).replicas == 2
    assert A.decide(policy, idle, 2, 60).replicas == 0


def test_policy_from_spec_applies_local_defaults() -> None:
    ep = endpoint(
        scaling={
            "minReplicas": 0,
            "maxReplicas": 6,
            "targetInflightRequests": 4,
            "scaleDownDelay": "90s",
            "scaleToZeroAfter": "10m",
            "bufferReplicas": 1,
        }
    )
    policy = A.Policy.from_spec(ep.spec)
    assert policy == A.Policy(
        min_replicas=0,
        max_replicas=6,
        target=4,
        buffer=1,
        up_delay=A.SCALE_UP_DELAY_SECONDS,
        down_delay=90.0,
        zero_after=600.0,
    )
    unset = A.Policy.from_spec(endpoint().spec)
    assert (unset.target, unset.up_delay, unset.down_delay) == (8, 0.0, 300.0)


def test_history_keeps_only_what_the_windows_need() -> None:
    h = A.History(since=0)
    for t in range(0, 1000, 5):
        h = h.add(A.Sample(t, 1, 0), keep=60)
    assert h.samples[0].at >= 995 - 60
    assert h.last_busy == 995
