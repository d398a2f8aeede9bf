"""Status and events of InferenceEndpoints: what a person sees in `kubectl get/describe`.

The reconciler reduces each reconcile to a `Phase` (and, when it looked, an
`Observation`); `Recorder.record` writes the status subresource only when it
changed, and posts an event when Ready flips or a new reason for being stuck
appears. Status carries only numbers the platform gave (D17): a count it does not
report stays unset.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from ferry import kube as kube_api
from ferry.api.v1alpha1 import types
from ferry.logic import conditions
from ferry.logic.conditions import Phase
from ferry.providers.base import Observation

log = logging.getLogger(__name__)

#: Reasons of a capacity wait: progressing, then stalled after scaling.capacityTimeout.
CAPACITY_WAIT = "WaitingForCapacity"
CAPACITY_STALL = "InsufficientGPUCapacity"


def _replicas_column(observation: Observation) -> str | None:
    """The READY printer column: ready/desired, or what the platform does say."""
    ready, desired = observation.ready_replicas, observation.desired_replicas
    if ready is not None and desired is not None:
        return f"{ready}/{desired}"
    if observation.running_containers is not None:
        return f"{observation.running_containers} running"
    return None


def status_for(
    ep: types.InferenceEndpoint,
    phase: Phase,
    observation: Observation | None,
    now: datetime,
) -> types.InferenceEndpointStatus:
    """The status `ep` should carry after a reconcile that ended in `phase`."""
    old = ep.status
    new = old.model_copy(deep=True)
    new.observed_generation = ep.metadata.generation
    new.provider = ep.spec.provider
    if observation is not None and observation.exists:
        new.external_name = observation.external_name or old.external_name
        new.url = observation.url or old.url
        new.openai_base_url = observation.openai_base_url
        new.address = new.openai_base_url or new.url
        new.desired_replicas = observation.desired_replicas
        new.ready_replicas = observation.ready_replicas
        new.replicas = _replicas_column(observation)
        new.running_containers = observation.running_containers
        new.resolved_model_version = (
            observation.resolved_model_version or old.resolved_model_version
        )
        new.release_number = observation.release_number
        new.surge_replicas = observation.surge_replicas
    if phase.reason in (CAPACITY_WAIT, CAPACITY_STALL):
        new.waiting_for_capacity_since = old.waiting_for_capacity_since or conditions.rfc3339(now)
    elif phase.kind != "paused":
        new.waiting_for_capacity_since = None
    new.conditions = conditions.compute(phase, old.conditions, ep.metadata.generation, now)
    if observation is not None and observation.exists:
        problem = observation.interruption
        interruption = (problem.reason, problem.message) if problem is not None else None
    else:
        # Nothing was observed: keep what was known.
        old_spot = next((c for c in old.conditions if c.type == conditions.SPOT_INTERRUPTED), None)
        interruption = (
            (old_spot.reason, old_spot.message)
            if old_spot is not None and old_spot.status == "True"
            else None
        )
    spot = conditions.spot_interrupted(old.conditions, interruption, ep.metadata.generation, now)
    if spot is not None:
        new.conditions.append(spot)
    return new


class Recorder:
    """Writes endpoint status and events through the Kubernetes API."""

    def __init__(self, kube: kube_api.Api, clock: Callable[[], datetime]) -> None:
        self._kube = kube
        self._clock = clock

    async def record(
        self, ep: types.InferenceEndpoint, phase: Phase, observation: Observation | None
    ) -> bool:
        """Write status (only when it changed) and an event when the Ready reason changes.

        Returns whether anything changed.
        """
        old = ep.status
        new = status_for(ep, phase, observation, self._clock())
        if new == old:
            return False
        body: dict[str, Any] = new.model_dump(by_alias=True, exclude_none=True)
        # A merge patch keeps what it does not mention: clear what went away.
        for gone in old.model_dump(by_alias=True, exclude_none=True).keys() - body.keys():
            body[gone] = None
        await self._kube.patch_status(
            kube_api.ENDPOINT, ep.metadata.namespace or "default", ep.metadata.name, body
        )
        # Events for what a person wants to see in `kubectl describe`: becoming
        # Ready, losing it, and each new reason for being stuck. Progress steps in
        # between are in the conditions already.
        old_ready = next((c for c in old.conditions if c.type == conditions.READY), None)
        was_ready = old_ready is not None and old_ready.status == "True"
        is_ready = phase.kind == "ready" or (phase.kind == "paused" and was_ready)
        new_problem = phase.kind == "stalled" and (
            old_ready is None or old_ready.reason != phase.reason
        )
        if was_ready != is_ready or new_problem:
            # Leaving Ready to apply a change someone made is expected, not a warning.
            warn = phase.kind == "stalled" or (
                was_ready and phase.kind == "progressing" and phase.reason != "Updating"
            )
            await self.event(ep, "Warning" if warn else "Normal", phase.reason, phase.message)
        return True

    async def event(
        self, ep: types.InferenceEndpoint, event_type: str, reason: str, message: str
    ) -> None:
        """Post an event on `ep`; never raises."""
        await self._kube.post_event(_ref(ep), event_type, reason, message)


def _ref(ep: types.InferenceEndpoint) -> dict[str, Any]:
    return {
        "apiVersion": types.API_VERSION,
        "kind": kube_api.ENDPOINT,
        "metadata": {
            "name": ep.metadata.name,
            "namespace": ep.metadata.namespace,
            "uid": ep.metadata.uid,
            "resourceVersion": ep.metadata.resource_version,
        },
    }
