"""The generic managed-resource lifecycle for InferenceEndpoints.

Modelled on crossplane-runtime's managed reconciler: one reconcile reads the
endpoint, connects to its provider and drives observe -> create | update | delete,
then records conditions, events and status. Providers only implement the four
verbs; everything about finalizers, external names, the create-pending marker,
pausing, deletion policy and requeueing lives here, once.

It is level-triggered: `reconcile()` can be called any number of times for the same
object and converges. It returns when to look again (`Result.requeue_after`), which
is how drift at the provider is found without a Kubernetes event. No kopf here: the
work queue in `ferry.queueing` calls it, and `ferry.handlers` feeds that queue.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from ferry import kube as kube_api
from ferry import metrics
from ferry.api.v1alpha1 import types
from ferry.logic import conditions, naming
from ferry.logic import credentials as credentials_logic
from ferry.logic.conditions import Phase
from ferry.providers.base import (
    Credentials,
    Observation,
    PermanentProviderError,
    Provider,
    ProviderError,
    TransientProviderError,
)

log = logging.getLogger(__name__)

ProviderFactory = Callable[
    [types.InferenceEndpoint, types.ProviderConfig | None, Credentials | None], Provider
]


@dataclass(frozen=True)
class Result:
    """When to reconcile this object again; `error` asks the queue for backoff."""

    requeue_after: float | None = None
    error: bool = False


@dataclass(frozen=True)
class Timing:
    """Requeue intervals, in seconds."""

    # How often a settled endpoint is observed to catch drift at the provider.
    poll: float = 60.0
    # How often an endpoint that is still converging is looked at.
    short: float = 3.0
    # After a provider delete was sent, how soon to check that it is gone.
    deleting: float = 2.0


def _now() -> datetime:
    return datetime.now(UTC)


class Reconciler:
    """Drives one InferenceEndpoint towards its spec."""

    def __init__(
        self,
        kube: kube_api.Kube,
        factories: Mapping[str, ProviderFactory],
        *,
        timing: Timing | None = None,
        clock: Callable[[], datetime] = _now,
        rng: random.Random | None = None,
    ) -> None:
        self._kube = kube
        self._factories = dict(factories)
        self._timing = timing or Timing()
        self._clock = clock
        self._rng = rng or random.Random()

    async def reconcile(self, namespace: str, name: str) -> Result:
        raw = await self._kube.get_endpoint(namespace, name)
        if raw is None:
            return Result()
        try:
            ep = types.InferenceEndpoint.model_validate(raw)
        except ValidationError as err:
            # The API server validated it, so this is an operator/CRD version skew.
            log.error("cannot read InferenceEndpoint %s/%s: %s", namespace, name, err)
            return Result(error=True)
        with metrics.RECONCILE_SECONDS.time():
            try:
                result = await self._reconcile(ep)
            except kube_api.Conflict:
                # Someone wrote the object since we read it: read it again now.
                metrics.RECONCILES.labels(result="conflict").inc()
                return Result(requeue_after=0.0)
            except kube_api.KubeError as err:
                log.warning("reconcile of %s/%s: %s", namespace, name, err)
                metrics.RECONCILES.labels(result="error").inc()
                return Result(error=True)
            except ProviderError as err:
                metrics.RECONCILES.labels(result="error").inc()
                return await self._fail(ep, err)
        metrics.RECONCILES.labels(result="ok").inc()
        return result

    async def reconcile_provider_config(self, namespace: str, name: str) -> list[str]:
        """Set a ProviderConfig's Ready condition; return the endpoints that use it.

        Ready means the credentials Secret exists and has the keys its provider
        needs. Endpoints that use the config are returned so the caller can requeue
        them at once rather than waiting for their backoff to expire.
        """
        raw = await self._kube.get_provider_config(namespace, name)
        if raw is None:
            return []
        config = types.ProviderConfig.model_validate(raw)
        phase = Phase("ready", "CredentialsFound", "credentials Secret found with every key")
        ref = config.spec.credentials_secret_ref
        if ref is not None:
            data = await self._kube.get_secret_data(namespace, ref.name)
            if data is None:
                phase = Phase("stalled", "CredentialsNotFound", f"Secret {ref.name} not found")
            else:
                absent = credentials_logic.missing_keys(config.spec.provider, set(data))
                if absent:
                    message = f"Secret {ref.name} lacks the key(s) {', '.join(absent)}"
                    phase = Phase("stalled", "CredentialsIncomplete", message)
        conds = conditions.compute(phase, config.status.conditions, None, self._clock())
        ready = [c for c in conds if c.type == conditions.READY]
        if ready != [c for c in config.status.conditions if c.type == conditions.READY]:
            body = [c.model_dump(by_alias=True, exclude_none=True) for c in ready]
            await self._kube.patch_provider_config_status(namespace, name, {"conditions": body})
        users = await self._kube.list_endpoints(namespace)
        return [
            e["metadata"]["name"]
            for e in users
            if ((e.get("spec") or {}).get("providerConfigRef") or {}).get("name") == name
        ]

    # --- the lifecycle ------------------------------------------------------------

    async def _reconcile(self, ep: types.InferenceEndpoint) -> Result:
        meta = ep.metadata
        annotations = meta.annotations
        if naming.is_paused(annotations):
            # Paused means hands off entirely, deletion included (as in Crossplane).
            await self._record(
                ep,
                Phase(
                    "paused", "ReconcilePaused", f"{naming.PAUSED} is set; Ferry changes nothing"
                ),
                None,
            )
            return Result()
        deleting = meta.deletion_timestamp is not None
        if deleting and naming.FINALIZER not in meta.finalizers:
            return Result()

        external_name = annotations.get(naming.EXTERNAL_NAME) or None
        if deleting and external_name is None and not self._create_incomplete(annotations):
            # Nothing was ever created or adopted for this endpoint: nothing to delete
            # (so no provider or credentials are needed), and a same-named resource
            # that is not ours must be left alone.
            await self._remove_finalizer(ep)
            return Result()

        provider = await self._connect(ep)
        if deleting:
            return await self._delete(ep, provider, external_name)

        observation = await provider.observe(ep, external_name)
        if not observation.exists:
            return await self._create(ep, provider, external_name)

        if naming.FINALIZER not in meta.finalizers:
            ep = await self._patch_meta(ep, self._with_finalizer(ep), check_version=True)

        if observation.external_name and observation.external_name != external_name:
            # Found by tag or default name: record the handle so it is adopted for good.
            ep = await self._patch_meta(
                ep, {"metadata": {"annotations": {naming.EXTERNAL_NAME: observation.external_name}}}
            )

        if not observation.up_to_date:
            await provider.update(ep, observation)
            shown = ", ".join(observation.diff[:5]) + (" ..." if len(observation.diff) > 5 else "")
            log.info("updated %s/%s at %s: %s", meta.namespace, meta.name, provider.name, shown)
            await self._kube.post_event(
                ep, "Normal", "Updated", f"updated the {provider.name} resource: {shown}"
            )
            await self._record(
                ep,
                Phase("progressing", "Updating", f"applying changes: {shown}"),
                observation,
            )
            return Result(requeue_after=self._timing.short)

        phase = self._phase(observation)
        await self._record(ep, phase, observation)
        if phase.kind == "ready":
            return Result(requeue_after=self._jitter(self._timing.poll))
        if phase.kind == "stalled":
            # Capacity may appear and pods may get scheduled: keep looking, slower.
            return Result(requeue_after=self._timing.short * 5)
        return Result(requeue_after=self._timing.short)

    async def _create(
        self, ep: types.InferenceEndpoint, provider: Provider, external_name: str | None
    ) -> Result:
        annotations = ep.metadata.annotations
        if self._create_incomplete(annotations):
            # A previous create was sent but its outcome never recorded (we died in
            # between). observe() already looked for it by name and tag and found
            # nothing, so creating again cannot make a twin.
            log.warning(
                "%s/%s: an earlier create has no recorded outcome and nothing was found;"
                " creating again",
                ep.metadata.namespace,
                ep.metadata.name,
            )
        stamp = conditions.rfc3339(self._clock())
        # Written with a version check: of two operators racing, only one creates.
        # The finalizer goes on in the same write, before anything exists outside.
        patch = self._with_finalizer(ep)
        patch["metadata"]["annotations"] = {naming.CREATE_PENDING: stamp}
        ep = await self._patch_meta(ep, patch, check_version=True)
        try:
            created = await provider.create(ep)
        except ProviderError:
            await self._patch_meta(
                ep,
                {
                    "metadata": {
                        "annotations": {naming.CREATE_FAILED: conditions.rfc3339(self._clock())}
                    }
                },
            )
            raise
        ep = await self._patch_meta(
            ep,
            {
                "metadata": {
                    "annotations": {
                        naming.EXTERNAL_NAME: created,
                        naming.CREATE_SUCCEEDED: conditions.rfc3339(self._clock()),
                    }
                }
            },
        )
        verb = "Created" if external_name is None else "Recreated"
        await self._kube.post_event(
            ep, "Normal", verb, f"{verb.lower()} {created} on {provider.name}"
        )
        await self._record(
            ep,
            Phase(
                "progressing",
                "Creating",
                f"created {created} on {provider.name}; waiting for replicas",
            ),
            Observation(exists=True, external_name=created),
        )
        return Result(requeue_after=self._timing.short)

    async def _delete(
        self, ep: types.InferenceEndpoint, provider: Provider, external_name: str | None
    ) -> Result:
        meta = ep.metadata
        if ep.spec.deletion_policy == "Orphan":
            if external_name:
                await provider.orphan(ep, external_name)
                await self._kube.post_event(
                    ep, "Normal", "Orphaned", f"left {external_name} running on {provider.name}"
                )
            await self._remove_finalizer(ep)
            return Result()
        observation = await provider.observe(ep, external_name)
        if observation.exists and observation.external_name:
            await provider.delete(ep, observation.external_name)
            await self._record(
                ep,
                Phase(
                    "deleting",
                    "Deleting",
                    f"deleting {observation.external_name} on {provider.name}",
                ),
                observation,
            )
            return Result(requeue_after=self._timing.deleting)
        log.info("%s/%s: external resource gone; removing finalizer", meta.namespace, meta.name)
        await self._remove_finalizer(ep)
        return Result()

    # --- helpers ------------------------------------------------------------------

    async def _connect(self, ep: types.InferenceEndpoint) -> Provider:
        """The provider client for `ep`, with its ProviderConfig and credentials."""
        spec = ep.spec
        namespace = ep.metadata.namespace or "default"
        config: types.ProviderConfig | None = None
        credentials: Credentials | None = None
        if spec.provider_config_ref is not None:
            ref = spec.provider_config_ref.name
            raw = await self._kube.get_provider_config(namespace, ref)
            if raw is None:
                raise PermanentProviderError(
                    f"ProviderConfig {ref} not found in namespace {namespace}",
                    reason="ProviderConfigNotFound",
                )
            config = types.ProviderConfig.model_validate(raw)
            if config.spec.provider != spec.provider:
                raise PermanentProviderError(
                    f"ProviderConfig {ref} is for {config.spec.provider}, but this endpoint"
                    f" uses {spec.provider}",
                    reason="ProviderConfigMismatch",
                )
            secret_ref = config.spec.credentials_secret_ref
            if secret_ref is not None:
                data = await self._kube.get_secret_data(namespace, secret_ref.name)
                if data is None:
                    raise PermanentProviderError(
                        f"Secret {secret_ref.name} named by ProviderConfig {ref} not found"
                        f" in namespace {namespace}",
                        reason="CredentialsNotFound",
                    )
                absent = credentials_logic.missing_keys(spec.provider, set(data))
                if absent:
                    raise PermanentProviderError(
                        f"Secret {secret_ref.name} named by ProviderConfig {ref} lacks the"
                        f" key(s) {', '.join(absent)} that {spec.provider} needs",
                        reason="CredentialsIncomplete",
                    )
                credentials = Credentials(data)
        factory = self._factories.get(spec.provider)
        if factory is None:
            supported = ", ".join(sorted(self._factories))
            raise PermanentProviderError(
                f"provider {spec.provider} is not available in this Ferry build"
                f" (available: {supported})",
                reason="ProviderNotSupported",
            )
        return factory(ep, config, credentials)

    @staticmethod
    def _phase(observation: Observation) -> Phase:
        ready, desired = observation.ready_replicas, observation.desired_replicas
        if observation.problem is not None:
            problem = observation.problem
            return Phase(
                "stalled" if problem.stalled else "progressing", problem.reason, problem.message
            )
        if desired == 0:
            return Phase("ready", "ScaledToZero", "no replicas running (minReplicas is 0)")
        if ready >= desired and not observation.progressing:
            return Phase("ready", "Available", f"{ready}/{desired} replicas ready")
        return Phase(
            "progressing",
            "RollingOut" if observation.progressing and ready else "WaitingForReplicas",
            f"{ready}/{desired} replicas ready",
        )

    @staticmethod
    def _create_incomplete(annotations: dict[str, str]) -> bool:
        pending = annotations.get(naming.CREATE_PENDING)
        if not pending:
            return False
        outcomes = [annotations.get(naming.CREATE_SUCCEEDED), annotations.get(naming.CREATE_FAILED)]
        # RFC 3339 UTC stamps of one format compare correctly as strings.
        return all(o is None or o < pending for o in outcomes)

    async def _record(
        self, ep: types.InferenceEndpoint, phase: Phase, observation: Observation | None
    ) -> None:
        """Write status (only when it changed) and an event when the Ready reason changes."""
        old = ep.status
        new = old.model_copy(deep=True)
        new.observed_generation = ep.metadata.generation
        new.provider = ep.spec.provider
        if observation is not None and observation.exists:
            new.external_name = observation.external_name or old.external_name
            new.url = observation.url or old.url
            new.desired_replicas = observation.desired_replicas
            new.ready_replicas = observation.ready_replicas
            new.replicas = f"{observation.ready_replicas}/{observation.desired_replicas}"
        new.conditions = conditions.compute(
            phase, old.conditions, ep.metadata.generation, self._clock()
        )
        if new == old:
            return
        body = new.model_dump(by_alias=True, exclude_none=True)
        await self._kube.patch_endpoint_status(
            ep.metadata.namespace or "default", ep.metadata.name, body
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
            warn = phase.kind == "stalled" or (was_ready and phase.kind == "progressing")
            event_type = "Warning" if warn else "Normal"
            await self._kube.post_event(ep, event_type, phase.reason, phase.message)

    async def _fail(self, ep: types.InferenceEndpoint, err: ProviderError) -> Result:
        message = str(err)
        log.warning(
            "reconcile of %s/%s failed (%s): %s",
            ep.metadata.namespace,
            ep.metadata.name,
            err.reason,
            message,
        )
        permanent = isinstance(err, PermanentProviderError)
        phase = Phase("stalled" if permanent else "progressing", err.reason, message)
        try:
            await self._record(ep, phase, None)
        except (kube_api.KubeError, kube_api.Conflict) as status_err:
            log.warning("cannot record failure on %s: %s", ep.metadata.name, status_err)
        retry_after = err.retry_after if isinstance(err, TransientProviderError) else None
        return Result(requeue_after=retry_after, error=True)

    async def _patch_meta(
        self, ep: types.InferenceEndpoint, patch: dict[str, Any], *, check_version: bool = False
    ) -> types.InferenceEndpoint:
        meta = ep.metadata
        raw = await self._kube.patch_endpoint(
            meta.namespace or "default",
            meta.name,
            patch,
            resource_version=meta.resource_version if check_version else None,
        )
        return types.InferenceEndpoint.model_validate(raw)

    @staticmethod
    def _with_finalizer(ep: types.InferenceEndpoint) -> dict[str, Any]:
        # The list is replaced whole, so callers check the version: no one else's
        # finalizer is lost.
        finalizers = ep.metadata.finalizers
        if naming.FINALIZER not in finalizers:
            finalizers = [*finalizers, naming.FINALIZER]
        return {"metadata": {"finalizers": finalizers}}

    async def _remove_finalizer(self, ep: types.InferenceEndpoint) -> None:
        remaining = [f for f in ep.metadata.finalizers if f != naming.FINALIZER]
        # The whole list is replaced, so check the version: another finalizer may
        # have been added or removed since we read it.
        await self._patch_meta(ep, {"metadata": {"finalizers": remaining}}, check_version=True)

    def _jitter(self, seconds: float) -> float:
        # Spread periodic observes so 1,000 endpoints do not poll in lockstep.
        return seconds * (1.0 + 0.2 * self._rng.random())
