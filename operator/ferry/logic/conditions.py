"""Compute the conditions of an endpoint: kstatus's Ready, Reconciling, Stalled, and
SpotInterrupted.

The reconciler reduces every outcome of a reconcile to a `Phase`; this module turns
that into the three kstatus conditions, keeping `lastTransitionTime` when a
condition's status did not change. `SpotInterrupted` is True while a termination
notice drains some of a local endpoint's replicas (`ferry.draining`); it stays
False once one is over, and never appears on an endpoint that was never
interrupted. The clock is passed in, never read here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from ferry.api.v1alpha1 import types

READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"
SPOT_INTERRUPTED = "SpotInterrupted"

PhaseKind = Literal["ready", "progressing", "stalled", "paused", "deleting"]


@dataclass(frozen=True)
class Phase:
    """Where an endpoint stands after one reconcile.

    `reason` is CamelCase and machine-readable; `message` is a sentence for people.
    """

    kind: PhaseKind
    reason: str
    message: str


def rfc3339(now: datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def _condition(
    previous: dict[str, types.Condition],
    ctype: str,
    status: types.ConditionStatus,
    reason: str,
    message: str,
    generation: int | None,
    now: datetime,
) -> types.Condition:
    old = previous.get(ctype)
    since = old.last_transition_time if old is not None and old.status == status else rfc3339(now)
    return types.Condition(
        type=ctype,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=since,
        observed_generation=generation,
    )


def compute(
    phase: Phase,
    previous: list[types.Condition],
    generation: int | None,
    now: datetime,
) -> list[types.Condition]:
    """The three kstatus conditions for `phase`.

    Ready is True only when the endpoint serves at its desired size. Reconciling is
    True while Ferry is making progress; Stalled is True when it cannot progress
    without a change (bad credentials, no GPU capacity, unsupported provider).
    A paused endpoint keeps its Ready condition and reports why nothing moves.
    """
    prev = {c.type: c for c in previous}
    kind = phase.kind
    if kind == "paused":
        ready_old = prev.get(READY)
        ready = (
            ready_old
            if ready_old is not None
            else _condition(prev, READY, "Unknown", phase.reason, phase.message, generation, now)
        )
        return [
            ready,
            _condition(prev, RECONCILING, "False", phase.reason, phase.message, generation, now),
            _condition(prev, STALLED, "False", phase.reason, phase.message, generation, now),
        ]
    ready_status: types.ConditionStatus = "True" if kind == "ready" else "False"
    reconciling: types.ConditionStatus = "True" if kind in ("progressing", "deleting") else "False"
    stalled: types.ConditionStatus = "True" if kind == "stalled" else "False"
    quiet = "Reconciled" if kind == "ready" else phase.reason
    return [
        _condition(prev, READY, ready_status, phase.reason, phase.message, generation, now),
        _condition(
            prev,
            RECONCILING,
            reconciling,
            phase.reason if reconciling == "True" else quiet,
            phase.message if reconciling == "True" else "",
            generation,
            now,
        ),
        _condition(
            prev,
            STALLED,
            stalled,
            phase.reason if stalled == "True" else quiet,
            phase.message if stalled == "True" else "",
            generation,
            now,
        ),
    ]


def spot_interrupted(
    previous: list[types.Condition],
    interruption: tuple[str, str] | None,
    generation: int | None,
    now: datetime,
) -> types.Condition | None:
    """The SpotInterrupted condition for a drain's (reason, message), or None.

    None (no condition at all) when no drain runs and none ever did; status False,
    reason `NotInterrupted`, once the last one is over.
    """
    prev = {c.type: c for c in previous}
    if interruption is not None:
        reason, message = interruption
        return _condition(prev, SPOT_INTERRUPTED, "True", reason, message, generation, now)
    if SPOT_INTERRUPTED not in prev:
        return None
    return _condition(prev, SPOT_INTERRUPTED, "False", "NotInterrupted", "", generation, now)
