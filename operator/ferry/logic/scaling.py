"""Replica counts of a local endpoint's Deployment: who set what, read back from it.

One writer owns `spec.replicas` (D10): Ferry's autoscaler (field manager
`FIELD_MANAGER`), or an HPA/KEDA under `scaling.autoscaler: external`. Ferry's
autoscaler writes `replicas = normal + surge` and records `normal` in an
annotation on the Deployment, in the same write; a drain asks for its surge in an
annotation on the endpoint's PodDisruptionBudget (`ferry.draining`; a Deployment's
annotations would bump its generation and read as a rollout), so every reader can
tell the count the load wants from the replicas a drain added. Pure functions over
object dicts; the provider and the controllers call them.
"""

from __future__ import annotations

from typing import Any

from ferry.api.v1alpha1 import types

#: The field manager of Ferry's autoscaler: the one writer of replicas (D10).
FIELD_MANAGER = "ferry-autoscaler"
#: The count the autoscaler chose, before any drain surge (written with replicas).
NORMAL_ANNOTATION = "ferry.dev/normal-replicas"
#: The replicas a drain wants above the normal count (on the PodDisruptionBudget,
#: written by the drain controller).
SURGE_ANNOTATION = "ferry.dev/surge-replicas"


def clamp(replicas: int, scaling: types.ScalingSpec) -> int:
    """`replicas` forced into the endpoint's bounds."""
    return max(scaling.min_replicas, min(scaling.max_replicas, replicas))


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _annotations(deployment: dict[str, Any]) -> dict[str, str]:
    return (deployment.get("metadata") or {}).get("annotations") or {}


def spec_replicas(deployment: dict[str, Any]) -> int:
    """`spec.replicas` (1, the API server's default, when unset)."""
    value = _int((deployment.get("spec") or {}).get("replicas"))
    return value if value is not None else 1


def wanted_surge(budget: dict[str, Any] | None) -> int:
    """The surge a drain asks for on the PodDisruptionBudget `budget` (0 when none)."""
    if budget is None:
        return 0
    return max(0, _int(_annotations(budget).get(SURGE_ANNOTATION)) or 0)


def normal_replicas(deployment: dict[str, Any]) -> int:
    """The count without surge: what the autoscaler recorded, else `spec.replicas`."""
    recorded = _int(_annotations(deployment).get(NORMAL_ANNOTATION))
    replicas = spec_replicas(deployment)
    if recorded is None:
        return replicas
    return max(0, min(recorded, replicas))


def applied_surge(deployment: dict[str, Any]) -> int:
    """The replicas the current count carries above the normal one."""
    return max(0, spec_replicas(deployment) - normal_replicas(deployment))


def owned_by_others(deployment: dict[str, Any], manager: str) -> bool:
    """Whether a field manager other than `manager` owns `spec.replicas`.

    Then `manager` may leave replicas out of its server-side apply without the API
    server resetting them to 1 (it only drops fields nobody else owns).
    """
    for entry in (deployment.get("metadata") or {}).get("managedFields") or []:
        if entry.get("manager") == manager:
            continue
        fields = (entry.get("fieldsV1") or {}).get("f:spec") or {}
        if "f:replicas" in fields:
            return True
    return False
