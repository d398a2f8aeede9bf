from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ferry.api.v1alpha1 import types
from ferry.logic import conditions
from ferry.logic.conditions import Phase

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
T1 = datetime(2026, 1, 1, 12, 5, 0, tzinfo=UTC)


def by_type(conds: list[types.Condition]) -> dict[str, types.Condition]:
    return {c.type: c for c in conds}


@pytest.mark.parametrize(
    ("kind", "ready", "reconciling", "stalled"),
    [
        ("ready", "True", "False", "False"),
        ("progressing", "False", "True", "False"),
        ("stalled", "False", "False", "True"),
        ("deleting", "False", "True", "False"),
    ],
    ids=["ready", "progressing", "stalled", "deleting"],
)
def test_kstatus_triplet(
    kind: conditions.PhaseKind, ready: str, reconciling: str, stalled: str
) -> None:
    conds = by_type(conditions.compute(Phase(kind, "Why", "because"), [], 7, T0))
    assert (conds["Ready"].status, conds["Reconciling"].status, conds["Stalled"].status) == (
        ready,
        reconciling,
        stalled,
    )
    assert all(c.observed_generation == 7 for c in conds.values())
    assert conds["Ready"].reason == "Why"


def test_transition_time_kept_while_status_unchanged() -> None:
    first = conditions.compute(Phase("progressing", "Creating", "x"), [], 1, T0)
    second = by_type(
        conditions.compute(Phase("progressing", "WaitingForReplicas", "y"), first, 1, T1)
    )
    assert second["Ready"].last_transition_time == "2026-01-01T12:00:00Z"
    assert second["Ready"].reason == "WaitingForReplicas"
    third = by_type(
        conditions.compute(Phase("ready", "Available", "1/1"), list(second.values()), 1, T1)
    )
    assert third["Ready"].last_transition_time == "2026-01-01T12:05:00Z"


def test_paused_keeps_ready_as_it_was() -> None:
    ready = conditions.compute(Phase("ready", "Available", "1/1"), [], 1, T0)
    paused = by_type(conditions.compute(Phase("paused", "ReconcilePaused", "p"), ready, 2, T1))
    assert paused["Ready"].status == "True"
    assert paused["Ready"].reason == "Available"
    assert paused["Reconciling"].reason == "ReconcilePaused"


def test_spot_interrupted_appears_with_a_drain_and_stays_false_after() -> None:
    assert conditions.spot_interrupted([], None, 3, T0) is None
    on = conditions.spot_interrupted([], ("ReplacingNoticedReplicas", "node a goes"), 3, T0)
    assert on is not None
    assert (on.type, on.status, on.reason) == (
        "SpotInterrupted",
        "True",
        "ReplacingNoticedReplicas",
    )
    step = conditions.spot_interrupted([on], ("DrainingNoticedReplicas", "1/1"), 3, T1)
    assert step is not None
    assert step.last_transition_time == on.last_transition_time  # still True
    off = conditions.spot_interrupted([step], None, 3, T1)
    assert off is not None
    assert (off.status, off.reason, off.last_transition_time) == (
        "False",
        "NotInterrupted",
        conditions.rfc3339(T1),
    )


def test_status_shows_the_drain_beside_the_kstatus_conditions() -> None:
    from ferry import recording
    from ferry.providers.base import Observation, Problem
    from tests.unit.factories import endpoint

    ep = endpoint()
    seen = Observation(
        exists=True,
        desired_replicas=1,
        ready_replicas=1,
        surge_replicas=1,
        interruption=Problem("DrainingNoticedReplicas", "node a goes", stalled=False),
    )
    status = recording.status_for(ep, Phase("ready", "Available", "1/1"), seen, T0)
    assert status.surge_replicas == 1
    assert [c.type for c in status.conditions] == [
        "Ready",
        "Reconciling",
        "Stalled",
        "SpotInterrupted",
    ]
    assert by_type(status.conditions)["Ready"].status == "True"
    ep.status = status
    after = recording.status_for(
        ep,
        Phase("ready", "Available", "1/1"),
        Observation(exists=True, desired_replicas=1, ready_replicas=1),
        T1,
    )
    assert after.surge_replicas is None
    assert by_type(after.conditions)["SpotInterrupted"].status == "False"
