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
