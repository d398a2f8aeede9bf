"""The autoscaling controller: the one writer of a local endpoint's replica count (D10).

Every `interval` seconds per local endpoint it samples the load of the ready pods
through a `sampling.LoadSource`, keeps the history the windows need, asks
`logic.autoscaling.decide` for the count and writes `spec.replicas = count + surge`
(the surge a drain asks for, `ferry.draining`) under its own field manager, with
the count recorded beside it. Under `scaling.autoscaler: external` an HPA or KEDA
owns the count and this controller never writes it; it still samples pods on spot
capacity, because a model server's own spot notice (D11) reaches Ferry that way:
`on_notice(node, deadline, pod)` hands it to the drain controller.

Its queue, rate limiter and metrics label are its own; `ferry.controllers` builds
it and `ferry.handlers` enqueues endpoints on their events.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ferry import kube as kube_api
from ferry import metrics, recording, sampling
from ferry.api.v1alpha1 import types
from ferry.logic import autoscaling, defaults, naming, scaling
from ferry.providers import local
from ferry.queueing import Outcome

log = logging.getLogger(__name__)

NoticeSink = Callable[[str, float, str], None]


def _ready(pod: dict[str, Any]) -> bool:
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    conds = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)


class Autoscaler:
    """Samples load and sets replica counts of local endpoints under Ferry's autoscaler."""

    def __init__(
        self,
        kube: kube_api.Api,
        source: sampling.LoadSource,
        *,
        interval: float = 5.0,
        on_notice: NoticeSink | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] | None = None,
    ) -> None:
        self._kube = kube
        self._source = source
        self._interval = interval
        self._on_notice = on_notice
        self._clock = clock
        self._histories: dict[tuple[str, str], autoscaling.History] = {}
        self._recorder = recording.Recorder(kube, wall or (lambda: datetime.now(UTC)))

    def forget(self, namespace: str, name: str) -> None:
        """Drop the load history of an endpoint that is gone."""
        self._histories.pop((namespace, name), None)

    async def reconcile(self, namespace: str, name: str) -> Outcome:
        """One pass over the endpoint: sample, decide, write. Says when to look again."""
        try:
            raw = await self._kube.get(kube_api.ENDPOINT, namespace, name)
            if raw is None:
                self.forget(namespace, name)
                return Outcome()
            ep = types.InferenceEndpoint.model_validate(raw)
            if ep.spec.provider != "local" or ep.metadata.deletion_timestamp:
                self.forget(namespace, name)
                return Outcome()
            if naming.is_paused(ep.metadata.annotations):
                return Outcome(requeue_after=self._interval)
            return await self._reconcile(ep)
        except kube_api.Conflict:
            return Outcome(requeue_after=0.0)
        except kube_api.KubeError as err:
            log.warning("autoscaling %s/%s: %s", namespace, name, err)
            return Outcome(error=True)

    async def _reconcile(self, ep: types.InferenceEndpoint) -> Outcome:
        ns = ep.metadata.namespace or "default"
        dep_name = ep.metadata.annotations.get(naming.EXTERNAL_NAME) or local.external_name_for(ep)
        deployment = await self._kube.get("Deployment", ns, dep_name)
        if deployment is None:
            # Not created yet: the endpoint reconciler makes it (at minReplicas).
            return Outcome(requeue_after=self._interval)
        external = defaults.autoscaler(ep.spec) == "external"
        policy = autoscaling.Policy.from_spec(ep.spec)
        spot_capacity = defaults.spot_policy(ep.spec) != "on-demand"
        wants_load = not external and policy.min_replicas != policy.max_replicas
        key = (ns, ep.metadata.name)
        history = self._histories.get(key)
        now = self._clock()
        fresh = (
            history is not None
            and history.samples
            and now - history.samples[-1].at < (self._interval / 2)
        )
        if (wants_load or spot_capacity) and not fresh:
            history = await self._sample(ep, dep_name, policy, history, now)
        if external:
            return Outcome(requeue_after=self._interval if spot_capacity else None)

        current = scaling.normal_replicas(deployment)
        decision = autoscaling.decide(
            policy, history or autoscaling.History(since=now), current, now
        )
        surge = scaling.wanted_surge(await self._kube.get("PodDisruptionBudget", ns, dep_name))
        replicas = decision.replicas + surge
        annotations = (deployment.get("metadata") or {}).get("annotations") or {}
        recorded = annotations.get(scaling.NORMAL_ANNOTATION)
        if scaling.spec_replicas(deployment) != replicas or recorded != str(decision.replicas):
            await self._kube.patch(
                "Deployment",
                ns,
                dep_name,
                {
                    "metadata": {
                        "annotations": {scaling.NORMAL_ANNOTATION: str(decision.replicas)}
                    },
                    "spec": {"replicas": replicas},
                },
                resource_version=(deployment.get("metadata") or {}).get("resourceVersion"),
                field_manager=scaling.FIELD_MANAGER,
            )
        if decision.replicas != current:
            metrics.SCALINGS.labels(reason=decision.reason).inc()
            log.info(
                "%s/%s: %d -> %d replicas (%s: %s)",
                ns,
                ep.metadata.name,
                current,
                decision.replicas,
                decision.reason,
                decision.message,
            )
            await self._recorder.event(
                ep,
                "Normal",
                "Scaled",
                f"{current} -> {decision.replicas} replica(s): {decision.reason},"
                f" {decision.message}",
            )
        return Outcome(requeue_after=self._interval if wants_load or spot_capacity else None)

    async def _sample(
        self,
        ep: types.InferenceEndpoint,
        dep_name: str,
        policy: autoscaling.Policy,
        history: autoscaling.History | None,
        now: float,
    ) -> autoscaling.History | None:
        ns = ep.metadata.namespace or "default"
        pods = await self._kube.list("Pod", ns, naming.selector_labels(dep_name))
        ready = [p for p in pods if _ready(p)]
        if not ready:
            return history
        loads = await self._source.sample(ns, ready)
        for load in loads:
            if load.notice_deadline > 0 and load.node and self._on_notice is not None:
                self._on_notice(load.node, load.notice_deadline, load.pod)
        if not loads:
            return history
        sample = autoscaling.Sample(
            at=now,
            inflight=sum(load.inflight for load in loads),
            queue=sum(load.queue for load in loads),
        )
        base = history or autoscaling.History(since=now)
        updated = base.add(sample, autoscaling.keep_seconds(policy))
        self._histories[(ns, ep.metadata.name)] = updated
        return updated
