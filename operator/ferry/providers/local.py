"""The local provider: the endpoint runs as a Deployment on this cluster's GPU nodes.

The external resource is a Deployment (plus a Service and a PodDisruptionBudget of
the same name) in the endpoint's namespace; its name is the external name. All
three are written with server-side apply, so create and update are the same call
and drift is repaired by re-applying. Ready replicas come from the real Deployment
status; a pod the scheduler cannot place is reported as a problem with the
scheduler's own words.
"""

from __future__ import annotations

from typing import Any

from ferry import kube as kube_api
from ferry.api.v1alpha1 import types
from ferry.logic import defaults, diff, manifests, naming, scaling
from ferry.providers.base import (
    Observation,
    PermanentProviderError,
    Problem,
    Target,
    TransientProviderError,
)

OWNED_KINDS = ("Deployment", "Service", "PodDisruptionBudget")


def external_name_for(ep: types.InferenceEndpoint) -> str:
    """The endpoint's name as a DNS-1035 label (a Service name), hashed when it is not one."""
    return naming.fit(ep.metadata.name)


def _desired(ep: types.InferenceEndpoint, name: str, replicas: int) -> list[dict[str, Any]]:
    return [
        manifests.deployment(ep, name, replicas),
        manifests.service(ep, name),
        manifests.pod_disruption_budget(ep, name),
    ]


def _deployment_replicas(deployment: dict[str, Any] | None) -> int | None:
    if deployment is None:
        return None
    replicas = deployment.get("spec", {}).get("replicas")
    return int(replicas) if replicas is not None else None


def rollout_state(deployment: dict[str, Any]) -> tuple[int, bool, Problem | None]:
    """(ready replicas, still progressing, problem) from a Deployment's status."""
    spec_replicas = int(deployment.get("spec", {}).get("replicas") or 0)
    status = deployment.get("status") or {}
    generation = deployment.get("metadata", {}).get("generation")
    ready = int(status.get("readyReplicas") or 0)
    updated = int(status.get("updatedReplicas") or 0)
    total = int(status.get("replicas") or 0)
    observed = status.get("observedGeneration")
    progressing = (
        observed != generation
        or updated < spec_replicas
        or total > updated
        or ready < spec_replicas
    )
    problem = None
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            problem = Problem("ProgressDeadlineExceeded", cond.get("message", ""), stalled=True)
        if cond.get("type") == "ReplicaFailure" and cond.get("status") == "True":
            problem = Problem("ReplicaFailure", cond.get("message", ""), stalled=True)
    return ready, progressing, problem


def pod_problem(pods: list[dict[str, Any]]) -> Problem | None:
    """The first scheduling or container failure among `pods`, in the cluster's words."""
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
                reason = (
                    "InsufficientGPUCapacity" if "nvidia.com/gpu" in message else "Unschedulable"
                )
                return Problem(reason, f"pods cannot be scheduled: {message}", stalled=True)
        for cs in status.get("containerStatuses") or []:
            waiting = (cs.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in {"ImagePullBackOff", "ErrImagePull", "CrashLoopBackOff"}:
                return Problem(
                    waiting["reason"],
                    f"container {cs.get('name')}: {waiting.get('message') or waiting['reason']}",
                    stalled=True,
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
        replicas = scaling.decide_replicas(ep.spec.scaling, _deployment_replicas(deployment))
        diffs: list[str] = []
        live: dict[str, dict[str, Any] | None] = {"Deployment": deployment}
        for kind in OWNED_KINDS[1:]:
            live[kind] = await self._get(kind, ns, name)
        for manifest in _desired(ep, name, replicas):
            have = live[manifest["kind"]]
            if have is None:
                diffs.append(f"{manifest['kind']} {name} is missing")
                continue
            diffs.extend(
                f"{manifest['kind']}{path}"
                for path in diff.missing({k: manifest[k] for k in ("metadata", "spec")}, have)
            )
        ready, progressing, problem = rollout_state(deployment)
        if problem is None and ready < replicas:
            pods = await self._call(self._kube.list("Pod", ns, naming.selector_labels(name)))
            problem = pod_problem(pods)
        url = manifests.service_url(ns, name, defaults.server_port(ep.spec))
        return Observation(
            exists=True,
            up_to_date=not diffs,
            external_name=name,
            url=url,
            openai_base_url=f"{url}/v1",
            desired_replicas=replicas,
            ready_replicas=min(ready, replicas),
            progressing=progressing,
            diff=diffs,
            problem=problem,
        )

    async def create(self, target: Target, external_name: str | None) -> str:
        ep = target.endpoint
        name = external_name or external_name_for(ep)
        await self._apply_all(ep, name, scaling.decide_replicas(ep.spec.scaling, None))
        return name

    async def update(self, target: Target, observation: Observation) -> None:
        ep = target.endpoint
        name = observation.external_name or external_name_for(ep)
        await self._apply_all(ep, name, observation.desired_replicas or 0)

    async def delete(self, target: Target, external_name: str) -> None:
        for kind in reversed(OWNED_KINDS):
            await self._call(self._kube.delete(kind, target.namespace, external_name))

    async def orphan(self, target: Target, external_name: str) -> None:
        # Re-applying without ownerReferences drops the ones Ferry set (it owns
        # those fields), so garbage collection leaves the objects alone.
        ep = target.endpoint
        ns = target.namespace
        deployment = await self._get("Deployment", ns, external_name)
        if deployment is None:
            return
        replicas = _deployment_replicas(deployment) or 0
        for manifest in _desired(ep, external_name, replicas):
            manifest["metadata"].pop("ownerReferences", None)
            await self._call(self._kube.apply(manifest))

    async def close(self) -> None:
        """Nothing to release: the Kubernetes client belongs to the operator."""

    async def _apply_all(self, ep: types.InferenceEndpoint, name: str, replicas: int) -> None:
        for manifest in _desired(ep, name, replicas):
            await self._call(self._kube.apply(manifest))

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
