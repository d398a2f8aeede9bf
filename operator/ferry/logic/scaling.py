"""Replica decisions: every count Ferry asks for lies within [minReplicas, maxReplicas]."""

from __future__ import annotations

from ferry.api.v1alpha1 import types


def clamp(replicas: int, scaling: types.ScalingSpec) -> int:
    """`replicas` forced into the endpoint's bounds."""
    return max(scaling.min_replicas, min(scaling.max_replicas, replicas))


def decide_replicas(scaling: types.ScalingSpec, current: int | None) -> int:
    """Replicas to run next.

    A new endpoint starts at minReplicas. An existing one keeps whatever an
    autoscaler (HPA, KEDA, a person) set, as long as it is within the bounds;
    outside them it is brought back to the nearest bound.
    """
    if current is None:
        return scaling.min_replicas
    return clamp(current, scaling)
