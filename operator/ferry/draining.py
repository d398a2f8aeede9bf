"""The drain controller: replacement first, then out of service, then evicted.

For one local endpoint at a time it reads the pods, the Nodes under them (a notice
is `logic.spot`'s reading of a Node, or a model server's own report handed over by
`ferry.autoscaling`) and the drain record on the Deployment, asks
`logic.drains.plan` what comes next, and does it:

- readiness gate `ferry.dev/in-service` True on every pod as it appears, False
  (with the lowest pod-deletion-cost) on a doomed pod once it may leave service;
- a doomed pod out of service is asked (through the load source, D12) whether
  requests are still in flight in it: it is removed once they are done;
- evictions through the eviction subresource, so the PodDisruptionBudget decides;
- the surge: under Ferry's autoscaler an annotation the autoscaler adds to the
  count (one writer of replicas, D10), under an external autoscaler a temporary
  second Deployment, removed after the drain;
- the record (and the SpotInterrupted detail the endpoint's status shows) and the
  surge it asks for as annotations on the endpoint's PodDisruptionBudget (on the
  Deployment they would bump its generation), and events with timings on the
  endpoint.

Level-triggered and restartable: everything it needs is read back from the
cluster. Its queue, rate limiter and metrics label are its own; `ferry.controllers`
builds it and `ferry.handlers` enqueues endpoints when their pods or the nodes
under them change.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from ferry import kube as kube_api
from ferry import metrics, recording, sampling
from ferry.api.v1alpha1 import types
from ferry.logic import defaults, drains, manifests, naming, scaling, spot
from ferry.providers import local
from ferry.queueing import Outcome

log = logging.getLogger(__name__)

#: Field manager of the drain controller's writes (annotations, the surge Deployment).
FIELD_MANAGER = "ferry-drains"

Wake = Callable[[str, str], None]


@dataclass(frozen=True)
class Subject:
    """The endpoint being drained and the objects a pass writes to."""

    ep: types.InferenceEndpoint
    ns: str
    deployment: str
    budget: dict[str, Any]


def _now() -> datetime:
    return datetime.now(UTC)


class Drainer:
    """Drains local endpoints off nodes that are going away."""

    def __init__(
        self,
        kube: kube_api.Api,
        *,
        interval: float = 2.0,
        source: sampling.LoadSource | None = None,
        clock: Callable[[], datetime] = _now,
        wake_autoscaler: Wake | None = None,
        wake_endpoint: Wake | None = None,
    ) -> None:
        self._kube = kube
        self._interval = interval
        self._source = source
        self._clock = clock
        self._wake_autoscaler = wake_autoscaler
        self._wake_endpoint = wake_endpoint
        self._recorder = recording.Recorder(kube, clock)
        #: Notices model servers reported: node -> (deadline, pod).
        self._reported: dict[str, tuple[float, str]] = {}
        self._active: set[tuple[str, str]] = set()

    def report(self, node: str, deadline: float, pod: str) -> bool:
        """A model server on `node` saw a spot notice; True when it is news."""
        known = self._reported.get(node)
        if known is not None and known[0] == deadline:
            return False
        self._reported[node] = (deadline, pod)
        log.warning("pod %s reports a spot notice for node %s", pod, node)
        return True

    def node_gone(self, node: str) -> None:
        """Forget what pods reported about a node that no longer exists."""
        self._reported.pop(node, None)

    async def reconcile(self, namespace: str, name: str) -> Outcome:
        """One pass over the endpoint's drain; says when to look again."""
        try:
            raw = await self._kube.get(kube_api.ENDPOINT, namespace, name)
            ep = types.InferenceEndpoint.model_validate(raw) if raw is not None else None
            if (
                ep is None
                or ep.spec.provider != "local"
                or ep.metadata.deletion_timestamp
                or naming.is_paused(ep.metadata.annotations)
            ):
                self._set_active(namespace, name, False)
                return Outcome()
            return await self._reconcile(ep)
        except kube_api.Conflict:
            return Outcome(requeue_after=0.0)
        except kube_api.KubeError as err:
            log.warning("drain of %s/%s: %s", namespace, name, err)
            return Outcome(error=True)

    def _set_active(self, namespace: str, name: str, active: bool) -> None:
        key = (namespace, name)
        if active:
            self._active.add(key)
        else:
            self._active.discard(key)
        metrics.DRAINS.set(len(self._active))

    async def _reconcile(self, ep: types.InferenceEndpoint) -> Outcome:
        ns = ep.metadata.namespace or "default"
        dep_name = ep.metadata.annotations.get(naming.EXTERNAL_NAME) or local.external_name_for(ep)
        deployment = await self._kube.get("Deployment", ns, dep_name)
        budget = await self._kube.get("PodDisruptionBudget", ns, dep_name)
        if deployment is None or budget is None:
            # Not made yet (the endpoint controller makes all three): come back.
            return Outcome(requeue_after=self._interval)
        external = defaults.autoscaler(ep.spec) == "external"
        mode: drains.Mode = "external" if external else "ferry"
        objects = await self._kube.list("Pod", ns, naming.selector_labels(dep_name))
        pods = [drains.Pod.from_object(o, manifests.SURGE_LABEL) for o in objects]
        notices = await self._notices({p.node for p in pods if p.node and not p.terminating})
        pods = await self._busy(ns, objects, pods, notices)
        annotations = (budget.get("metadata") or {}).get("annotations") or {}
        record = _record(annotations.get(local.DRAIN_ANNOTATION))
        surge_deployment = None
        if external:
            normal = scaling.spec_replicas(deployment)
            surge_deployment = await self._kube.get(
                "Deployment", ns, manifests.surge_name(dep_name)
            )
            applied = scaling.spec_replicas(surge_deployment) if surge_deployment else 0
        else:
            normal = scaling.normal_replicas(deployment)
            applied = scaling.applied_surge(deployment)
        plan = drains.plan(
            pods=pods,
            notices=notices,
            normal=normal,
            applied_surge=applied,
            mode=mode,
            drain_grace=float(defaults.drain_grace_seconds(ep.spec)),
            record=record,
            now=self._clock(),
        )
        # Record, announce, act: the record only keeps each event from being posted
        # twice; what to do is worked out again from the cluster on every pass, so a
        # write that fails after the record is simply done on the next one.
        subject = Subject(ep, ns, dep_name, budget)
        await self._write_record(subject, plan)
        for event in plan.events:
            log.info("%s/%s: %s: %s", ns, ep.metadata.name, event.reason, event.message)
            await self._recorder.event(ep, event.type, event.reason, event.message)
        refused = await self._act(subject, plan, surge_deployment)
        self._set_active(ns, ep.metadata.name, plan.record is not None)
        if plan.record is None:
            return Outcome()
        wait = self._interval if plan.wake_after is None else min(self._interval, plan.wake_after)
        # A disruption budget that refused an eviction says to come back in a moment.
        return Outcome(requeue_after=min(wait, 1.0) if refused else wait)

    async def _busy(
        self,
        ns: str,
        objects: list[dict[str, Any]],
        pods: list[drains.Pod],
        notices: dict[str, spot.Notice],
    ) -> list[drains.Pod]:
        """Ask doomed pods out of service whether requests are still in flight in them."""
        leaving = {
            p.name
            for p in pods
            if p.node in notices and p.in_service is False and not p.terminating
        }
        if self._source is None or not leaving:
            return pods
        asked = [o for o in objects if (o.get("metadata") or {}).get("name") in leaving]
        loads = {load.pod: load for load in await self._source.sample(ns, asked)}
        return [
            replace(p, busy=loads[p.name].inflight + loads[p.name].queue > 0)
            if p.name in loads
            else p
            for p in pods
        ]

    async def _notices(self, names: set[str]) -> dict[str, spot.Notice]:
        found: dict[str, spot.Notice] = {}
        now = self._clock().timestamp()
        for name in sorted(names):
            node = await self._kube.get("Node", "", name)
            if node is None:
                continue
            note = spot.notice(node)
            reported = self._reported.get(name)
            if reported is not None and reported[0] > now - 3600:
                told = spot.reported(reported[0], reported[1])
                # The node's own signal wins unless the pod's deadline is sooner.
                if note is None or (
                    note.deadline is not None and told.deadline and told.deadline < note.deadline
                ):
                    note = told
            if note is not None:
                found[name] = note
        return found

    async def _act(
        self, subject: Subject, plan: drains.Plan, surge_deployment: dict[str, Any] | None
    ) -> bool:
        """Carry out the plan's writes; True when a disruption budget refused an eviction."""
        ep, ns = subject.ep, subject.ns
        for pod in plan.gate_true:
            await self._kube.set_pod_condition(
                ns, pod, drains.GATE, "True", "InService", "Ferry routes requests to this pod"
            )
        for pod in plan.out_of_service:
            # The ReplicaSet removes the lowest cost first when the surge ends.
            try:
                await self._kube.patch(
                    "Pod",
                    ns,
                    pod,
                    {"metadata": {"annotations": {drains.DELETION_COST: drains.DOOMED_COST}}},
                    field_manager=FIELD_MANAGER,
                )
            except kube_api.NotFound:
                continue
            await self._kube.set_pod_condition(
                ns,
                pod,
                drains.GATE,
                "False",
                "Draining",
                "its node is going away: Ferry took it out of service before evicting it",
            )
        refused = False
        for pod in plan.evict:
            evicted = await self._kube.evict(ns, pod)
            metrics.EVICTIONS.labels(result="evicted" if evicted else "refused").inc()
            refused = refused or not evicted
        external = surge_deployment is not None or defaults.autoscaler(ep.spec) == "external"
        if external:
            await self._surge_deployment(subject, plan, surge_deployment)
        if scaling.wanted_surge(subject.budget) != plan.surge:
            await self._annotate(subject, scaling.SURGE_ANNOTATION, str(plan.surge))
            if self._wake_autoscaler is not None and not external:
                self._wake_autoscaler(ns, ep.metadata.name)
        return refused

    async def _surge_deployment(
        self, subject: Subject, plan: drains.Plan, current: dict[str, Any] | None
    ) -> None:
        """D10 under an external autoscaler: a temporary second Deployment for the surge."""
        ep, ns, dep_name = subject.ep, subject.ns, subject.deployment
        if plan.remove_surge or plan.record is None:
            if current is not None:
                await self._kube.delete("Deployment", ns, manifests.surge_name(dep_name))
            return
        if current is not None and scaling.spec_replicas(current) == plan.surge:
            return
        avoid = sorted(plan.record.nodes)
        await self._kube.apply(
            manifests.surge_deployment(ep, dep_name, plan.surge, avoid), field_manager=FIELD_MANAGER
        )

    async def _write_record(self, subject: Subject, plan: drains.Plan) -> None:
        annotations = (subject.budget.get("metadata") or {}).get("annotations") or {}
        old = annotations.get(local.DRAIN_ANNOTATION)
        new: str | None = None
        if plan.record is not None:
            interruption = (
                {"reason": plan.interruption.reason, "message": plan.interruption.message}
                if plan.interruption is not None
                else None
            )
            new = json.dumps(
                {"record": plan.record.to_json(), "interruption": interruption},
                sort_keys=True,
                separators=(",", ":"),
            )
        if new == old:
            return
        await self._annotate(subject, local.DRAIN_ANNOTATION, new)
        if self._wake_endpoint is not None:
            # The endpoint's status shows the drain (SpotInterrupted, surgeReplicas).
            self._wake_endpoint(subject.ns, subject.ep.metadata.name)

    async def _annotate(self, subject: Subject, key: str, value: str | None) -> None:
        """Set (None: remove) one annotation of the endpoint's PodDisruptionBudget."""
        await self._kube.patch(
            "PodDisruptionBudget",
            subject.ns,
            subject.deployment,
            {"metadata": {"annotations": {key: value}}},
            field_manager=FIELD_MANAGER,
        )


def _record(raw: str | None) -> drains.Record | None:
    if not raw:
        return None
    try:
        doc = json.loads(raw)
    except ValueError:
        return None
    return drains.Record.from_json(doc.get("record") if isinstance(doc, dict) else None)


def notice_changed(old: dict[str, Any] | None, new: dict[str, Any]) -> bool:
    """Whether a Node event changes what `logic.spot` reads from it (a predicate)."""
    return old is None or spot.notice(old) != spot.notice(new)
