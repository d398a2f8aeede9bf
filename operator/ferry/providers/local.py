"""The local provider: the endpoint runs as a Deployment on this cluster's GPU nodes.

The external resource is a Deployment (plus a Service and a PodDisruptionBudget of
the same name) in the endpoint's namespace; its name is the external name. All
three are written with server-side apply, so create and update are the same call
and drift is repaired by re-applying. The replica count is not this module's: one
writer owns it (D10), Ferry's autoscaler (`ferry.autoscaling`) or an external HPA
or KEDA; the provider sets it only when creating the Deployment and otherwise keeps
whatever is there. Ready replicas come from the real Deployment status, counted
against the normal count (without a drain's surge). A pod the scheduler cannot place
yet is a capacity wait in the scheduler's own words (`WaitingForCapacity`, which
the reconciler turns Stalled after scaling.capacityTimeout).
"""

from __future__ import annotations

import json
from typing import Any

from ferry import kube as kube_api
from ferry.api.v1alpha1 import types
from ferry.logic import defaults, diff, drains, manifests, naming, scaling
from ferry.providers.base import (
    Observation,
    PermanentProviderError,
    Problem,
    Target,
    TransientProviderError,
)

OWNED_KINDS = ("Deployment", "Service", "PodDisruptionBudget")
#: The drain record on the PodDisruptionBudget (written by `ferry.draining`).
DRAIN_ANNOTATION = "ferry.dev/drain"
CAPACITY_WAIT = "WaitingForCapacity"


def external_name_for(ep: types.InferenceEndpoint) -> str:
    """The endpoint's name as a DNS-1035 label (a Service name), hashed when it is not one."""
    return naming.fit(ep.metadata.name)


def _desired(
    ep: types.InferenceEndpoint, name: str, replicas: int | None, normal: int
) -> list[dict[str, Any]]:
    return [
        manifests.deployment(ep, name, replicas),
        manifests.service(ep, name),
        manifests.pod_disruption_budget(ep, name, normal),
    ]


def _kept_replicas(deployment: dict[str, Any]) -> int | None:
    """What the provider's apply says about replicas: nothing once another manager
    owns them; the live count otherwise, so an apply never resets it."""
    if scaling.owned_by_others(deployment, naming.FIELD_MANAGER):
        return None
    return scaling.spec_replicas(deployment)


def rollout_state(deployment: dict[str, Any], wanted: int) -> tuple[int, bool, Problem | None]:
    """(ready replicas, still progressing, problem) from a Deployment's status.

    `wanted` is the normal count: replicas a drain runs above it are not waited for.
    A generation the Deployment controller has not observed yet counts as progress
    unless only the count changed (spec and status disagree on replicas): a scale
    down, or a drain's surge, leaves the endpoint serving and must not flip Ready.
    """
    status = deployment.get("status") or {}
    generation = deployment.get("metadata", {}).get("generation")
    ready = int(status.get("readyReplicas") or 0)
    updated = int(status.get("updatedReplicas") or 0)
    total = int(status.get("replicas") or 0)
    observed = status.get("observedGeneration")
    rescaled = int((deployment.get("spec") or {}).get("replicas", 1)) != total
    unobserved = observed != generation and not (rescaled and updated == total)
    progressing = unobserved or updated < wanted or total > updated or ready < wanted
    problem = None
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            problem = Problem("ProgressDeadlineExceeded", cond.get("message", ""), stalled=True)
        if cond.get("type") == "ReplicaFailure" and cond.get("status") == "True":
            problem = Problem("ReplicaFailure", cond.get("message", ""), stalled=True)
    return ready, progressing, problem


def pod_problem(pods: list[dict[str, Any]]) -> Problem | None:
    """The first scheduling or container failure among `pods`, in the cluster's words.

    A pod the scheduler cannot place is waiting for capacity, not failing: a cluster
    autoscaler or Karpenter may add a node (`WaitingForCapacity`, not stalled).
    """
    for pod in pods:
        if pod.get("metadata", {}).get("deletionTimestamp"):
            continue
        status = pod.get("status") or {}
        for cond in status.get("conditions") or []:
            if (
                cond.get("type") == "PodScheduled"
                and cond.get("status") == "False"
                and cond.get("reason") == "Unschedulable"
            ):
                message = cond.get("message") or "no node can run this pod"
                return Problem(
                    CAPACITY_WAIT,
                    f"pods wait for a node that can run them: {message}",
                    stalled=False,
                )
        for cs in status.get("containerStatuses") or []:
            waiting = (cs.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in {"ImagePullBackOff", "ErrImagePull", "CrashLoopBackOff"}:
                return Problem(
                    waiting["reason"],
                    f"container {cs.get('name')}: {waiting.get('message') or waiting['reason']}",
                    stalled=True,
                )
    return None


def drain_state(budget: dict[str, Any] | None) -> tuple[int | None, Problem | None]:
    """(surge replicas, SpotInterrupted detail) of the drain recorded on the endpoint's
    PodDisruptionBudget; (None, None) when no drain runs."""
    raw = ((budget or {}).get("metadata", {}).get("annotations") or {}).get(DRAIN_ANNOTATION)
    try:
        doc = json.loads(raw) if raw else None
    except ValueError:
        doc = None
    if not isinstance(doc, dict) or drains.Record.from_json(doc.get("record")) is None:
        return None, None
    interruption = doc.get("interruption")
    problem = None
    if isinstance(interruption, dict) and interruption.get("reason"):
        problem = Problem(
            str(interruption["reason"]), str(interruption.get("message") or ""), stalled=False
        )
    return scaling.wanted_surge(budget), problem


def autoscaler_bounds(
    hpas: list[dict[str, Any]], scaled_objects: list[dict[str, Any]], deployment: str
) -> tuple[str, int, int] | None:
    """(what, min, max) of the external autoscaler targeting `deployment`, or None.

    A ScaledObject wins over the HPA KEDA makes from it. Defaults as the APIs define
    them: HPA minReplicas 1; ScaledObject minReplicaCount 0, maxReplicaCount 100.
    """
    for obj in scaled_objects:
        spec = obj.get("spec") or {}
        ref = spec.get("scaleTargetRef") or {}
        if ref.get("name") == deployment and ref.get("kind", "Deployment") == "Deployment":
            name = obj.get("metadata", {}).get("name")
            low = int(spec.get("minReplicaCount", 0))
            return f"ScaledObject {name}", low, int(spec.get("maxReplicaCount", 100))
    for obj in hpas:
        spec = obj.get("spec") or {}
        ref = spec.get("scaleTargetRef") or {}
        if ref.get("name") == deployment and ref.get("kind") == "Deployment":
            name = obj.get("metadata", {}).get("name")
            return (
                f"HorizontalPodAutoscaler {name}",
                int(spec.get("minReplicas", 1)),
                int(spec.get("maxReplicas", 0)),
            )
    return None


def bounds_warning(
    found: tuple[str, int, int] | None, scaling_spec: types.ScalingSpec, deployment: str
) -> Problem | None:
    """The warning when the external autoscaler is missing or its bounds are not the spec's."""
    low, high = scaling_spec.min_replicas, scaling_spec.max_replicas
    if found is None:
        return Problem(
            "ExternalAutoscalerNotFound",
            f"scaling.autoscaler is external but no HorizontalPodAutoscaler or ScaledObject"
            f" targets Deployment {deployment}; its replica count stays as it is",
            stalled=False,
        )
    what, got_low, got_high = found
    if (got_low, got_high) != (low, high):
        return Problem(
            "ExternalAutoscalerBoundsDiffer",
            f"{what} scales Deployment {deployment} between {got_low} and {got_high} replicas;"
            f" the endpoint's scaling says {low} to {high}: make them agree",
            stalled=False,
        )
    return None


class LocalProvider:
    """Runs endpoints as Deployments on the cluster's own GPU nodes."""

    name = "local"
    # Names are deterministic: looking up external_name_for(ep) is a search.
    can_search = True

    def __init__(self, kube: kube_api.Api) -> None:
        self._kube = kube

    def external_name_for(self, target: Target) -> str:
        return external_name_for(target.endpoint)

    async def observe(self, target: Target, external_name: str | None) -> Observation:
        ep = target.endpoint
        name = external_name or external_name_for(ep)
        ns = target.namespace
        deployment = await self._get("Deployment", ns, name)
        if deployment is None:
            return Observation.absent()
        self._check_ownership(ep, deployment, name, adopting=external_name is not None)
        external = defaults.autoscaler(ep.spec) == "external"
        # Under Ferry's autoscaler the count it chose is recorded beside the surge a
        # drain adds; an external autoscaler's count is the Deployment's (its surge is
        # a second Deployment).
        normal = (
            scaling.spec_replicas(deployment) if external else scaling.normal_replicas(deployment)
        )
        diffs: list[str] = []
        live: dict[str, dict[str, Any] | None] = {"Deployment": deployment}
        for kind in OWNED_KINDS[1:]:
            live[kind] = await self._get(kind, ns, name)
        for manifest in _desired(ep, name, _kept_replicas(deployment), normal):
            have = live[manifest["kind"]]
            if have is None:
                diffs.append(f"{manifest['kind']} {name} is missing")
                continue
            diffs.extend(
                f"{manifest['kind']}{path}"
                for path in diff.missing({k: manifest[k] for k in ("metadata", "spec")}, have)
            )
        ready, progressing, problem = rollout_state(deployment, normal)
        surge, interruption = drain_state(live["PodDisruptionBudget"])
        if external and surge:
            extra = await self._get("Deployment", ns, manifests.surge_name(name))
            if extra is not None:
                ready += int((extra.get("status") or {}).get("readyReplicas") or 0)
        if ready < normal:
            pods = await self._call(self._kube.list("Pod", ns, naming.selector_labels(name)))
            waiting = pod_problem(pods)
            # D20: Ferry's capacityTimeout governs a capacity wait, not the Deployment's
            # progress deadline.
            if waiting is not None and (problem is None or waiting.reason == CAPACITY_WAIT):
                problem = waiting
        warning = None
        if external:
            warning = bounds_warning(await self._external_bounds(ns, name), ep.spec.scaling, name)
        url = manifests.service_url(ns, name, defaults.server_port(ep.spec))
        return Observation(
            exists=True,
            up_to_date=not diffs,
            external_name=name,
            url=url,
            openai_base_url=f"{url}/v1",
            desired_replicas=normal,
            ready_replicas=min(ready, normal),
            progressing=progressing,
            diff=diffs,
            problem=problem,
            surge_replicas=surge or None,
            interruption=interruption,
            warning=warning,
        )

    async def create(self, target: Target, external_name: str | None) -> str:
        ep = target.endpoint
        name = external_name or external_name_for(ep)
        initial = ep.spec.scaling.min_replicas
        await self._apply_all(ep, name, initial, initial)
        # The count belongs to the autoscaler from here on (D10): writing it under its
        # field manager too lets later applies leave it out without resetting it.
        await self._call(
            self._kube.patch(
                "Deployment",
                target.namespace,
                name,
                {"spec": {"replicas": initial}},
                field_manager=scaling.FIELD_MANAGER,
            )
        )
        return name

    async def update(self, target: Target, observation: Observation) -> None:
        ep = target.endpoint
        name = observation.external_name or external_name_for(ep)
        deployment = await self._get("Deployment", target.namespace, name)
        replicas = None if deployment is None else _kept_replicas(deployment)
        normal = observation.desired_replicas or 0
        await self._apply_all(ep, name, replicas, normal)

    async def delete(self, target: Target, external_name: str) -> None:
        ns = target.namespace
        await self._call(self._kube.delete("Deployment", ns, manifests.surge_name(external_name)))
        for kind in reversed(OWNED_KINDS):
            await self._call(self._kube.delete(kind, ns, external_name))

    async def orphan(self, target: Target, external_name: str) -> None:
        # Re-applying without ownerReferences drops the ones Ferry set (it owns
        # those fields), so garbage collection leaves the objects alone. A drain's
        # temporary surge Deployment is not worth keeping.
        ep = target.endpoint
        ns = target.namespace
        deployment = await self._get("Deployment", ns, external_name)
        if deployment is None:
            return
        await self._call(self._kube.delete("Deployment", ns, manifests.surge_name(external_name)))
        normal = scaling.normal_replicas(deployment)
        for manifest in _desired(ep, external_name, _kept_replicas(deployment), normal):
            manifest["metadata"].pop("ownerReferences", None)
            await self._call(self._kube.apply(manifest))

    async def close(self) -> None:
        """Nothing to release: the Kubernetes client belongs to the operator."""

    async def _apply_all(
        self, ep: types.InferenceEndpoint, name: str, replicas: int | None, normal: int
    ) -> None:
        for manifest in _desired(ep, name, replicas, normal):
            await self._call(self._kube.apply(manifest))

    async def _external_bounds(self, ns: str, name: str) -> tuple[str, int, int] | None:
        """The HPA or ScaledObject targeting the Deployment (KEDA may not be installed)."""
        found: dict[str, list[dict[str, Any]]] = {}
        for kind in ("HorizontalPodAutoscaler", "ScaledObject"):
            try:
                found[kind] = await self._kube.list(kind, ns)
            except kube_api.NotFound:
                found[kind] = []
            except kube_api.KubeError as err:
                raise TransientProviderError(
                    f"cannot read the {kind}s of namespace {ns}: {err}",
                    reason="KubernetesAPIError",
                ) from err
        return autoscaler_bounds(found["HorizontalPodAutoscaler"], found["ScaledObject"], name)

    def _check_ownership(
        self, ep: types.InferenceEndpoint, deployment: dict[str, Any], name: str, *, adopting: bool
    ) -> None:
        owners = deployment.get("metadata", {}).get("ownerReferences") or []
        for owner in owners:
            if owner.get("controller") and owner.get("uid") != ep.metadata.uid:
                raise PermanentProviderError(
                    f"Deployment {name} is controlled by {owner.get('kind')} {owner.get('name')};"
                    " set ferry.dev/external-name to a free name or remove that owner",
                    reason="ExternalResourceOwnedElsewhere",
                )
        if not owners and not adopting:
            labels = deployment.get("metadata", {}).get("labels") or {}
            if labels.get(naming.LABEL_ENDPOINT_UID) != ep.metadata.uid:
                # Not made for this endpoint (by hand, or orphaned by another one):
                # taking it over is a decision for a person, not for a name clash.
                raise PermanentProviderError(
                    f"a Deployment named {name} already exists and was not created for this"
                    f" endpoint; set the annotation {naming.EXTERNAL_NAME}={name} to adopt it,"
                    " or rename the endpoint",
                    reason="ExternalResourceOwnedElsewhere",
                )

    async def _get(self, kind: str, ns: str, name: str) -> dict[str, Any] | None:
        result: dict[str, Any] | None = await self._call(self._kube.get(kind, ns, name))
        return result

    @staticmethod
    async def _call(awaitable: Any) -> Any:
        try:
            return await awaitable
        except kube_api.Conflict as err:
            raise TransientProviderError(str(err), retry_after=1.0, reason="Conflict") from err
        except kube_api.Invalid as err:
            # What Ferry rendered was refused: the same object will be refused again,
            # so this waits for a change to the endpoint, not for a retry.
            raise PermanentProviderError(str(err), reason="InvalidManifest") from err
        except kube_api.Forbidden as err:
            raise PermanentProviderError(
                f"{err}; grant Ferry's service account this permission",
                reason="Forbidden",
            ) from err
        except kube_api.TooManyRequests as err:
            raise TransientProviderError(
                str(err), retry_after=err.retry_after, reason="KubernetesAPIThrottled"
            ) from err
        except kube_api.KubeError as err:
            raise TransientProviderError(str(err), reason="KubernetesAPIError") from err
