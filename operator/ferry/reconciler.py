"""The generic managed-resource lifecycle for InferenceEndpoints.

Modelled on crossplane-runtime's managed reconciler: one reconcile reads the
endpoint, connects to its provider (`ferry.connecting`) and drives observe ->
create | update | delete, then records conditions, events and status
(`ferry.recording`). Providers only implement the verbs; everything about
finalizers, external names, the create-pending marker, pausing, deletion policy,
deadlines and requeueing lives here, once.

It is level-triggered: `reconcile()` can be called any number of times for the same
object and converges. It returns when to look again (`queueing.Outcome`), which is
how drift at the provider is found without a Kubernetes event. No kopf here: the
work queue in `ferry.queueing` calls it, and `ferry.handlers` feeds that queue.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from ferry import connecting, metrics, recording
from ferry import kube as kube_api
from ferry.api.v1alpha1 import types
from ferry.logic import conditions, defaults, migrations, naming
from ferry.logic.conditions import Phase, PhaseKind
from ferry.providers.base import (
    Observation,
    PermanentProviderError,
    ProviderError,
    TransientProviderError,
)
from ferry.queueing import Outcome

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Timing:
    """Requeue intervals and deadlines, in seconds."""

    # How often a settled endpoint is observed to catch drift at the provider.
    poll: float = 60.0
    # How often an endpoint that is still converging is looked at.
    short: float = 3.0
    # After a provider delete was sent, how soon to check that it is gone.
    deleting: float = 2.0
    # Longest one reconcile may take, platform calls included.
    deadline: float = 60.0
    # After a create whose answer was lost, how long a platform's list may lag
    # behind it before Ferry concludes nothing was made (Crossplane's creation
    # grace period).
    creation_grace: float = 30.0
    # Attempts at a critical annotation write (create succeeded/failed).
    critical_attempts: int = 5


def now() -> datetime:
    """The wall clock, in UTC: the default clock of the controllers."""
    return datetime.now(UTC)


def _parse(stamp: str) -> datetime | None:
    try:
        return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None


class Reconciler:
    """Drives one InferenceEndpoint towards its spec."""

    def __init__(
        self,
        kube: kube_api.Api,
        connector: connecting.Connector,
        *,
        timing: Timing | None = None,
        clock: Callable[[], datetime] = now,
        rng: random.Random | None = None,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        self._kube = kube
        self._connector = connector
        self._timing = timing or Timing()
        self._clock = clock
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._recorder = recording.Recorder(kube, clock)
        # Endpoints whose old defaults the installed (old) CRD keeps putting back.
        self._unmigratable: set[tuple[str, str]] = set()

    async def reconcile(self, namespace: str, name: str) -> Outcome:
        """One pass over the endpoint `namespace/name`; says when to look again."""
        try:
            raw = await self._kube.get(kube_api.ENDPOINT, namespace, name)
        except kube_api.KubeError as err:
            log.warning("cannot read InferenceEndpoint %s/%s: %s", namespace, name, err)
            return Outcome(error=True)
        if raw is None:
            return Outcome()
        migration = migrations.endpoint_migration(raw)
        if migration is not None and (namespace, name) not in self._unmigratable:
            return await self._migrate(namespace, name, migration)
        try:
            ep = types.InferenceEndpoint.model_validate(raw)
        except ValidationError as err:
            # The API server validated it, so this is an operator/CRD version skew.
            log.error("cannot read InferenceEndpoint %s/%s: %s", namespace, name, err)
            return Outcome(error=True)
        with metrics.RECONCILE_SECONDS.time():
            try:
                async with asyncio.timeout(self._timing.deadline):
                    outcome = await self._reconcile(ep)
            except kube_api.Conflict:
                # Someone wrote the object since we read it: read it again now.
                metrics.RECONCILES.labels(result="conflict").inc()
                return Outcome(requeue_after=0.0)
            except kube_api.KubeError as err:
                log.warning("reconcile of %s/%s: %s", namespace, name, err)
                metrics.RECONCILES.labels(result="error").inc()
                retry = err.retry_after if isinstance(err, kube_api.TooManyRequests) else None
                return Outcome(requeue_after=retry, error=True)
            except TimeoutError:
                metrics.RECONCILES.labels(result="error").inc()
                return await self._fail(
                    ep,
                    TransientProviderError(
                        f"reconcile did not finish within {self._timing.deadline:.0f}s;"
                        f" {ep.spec.provider} is slow to answer, trying again",
                        reason="DeadlineExceeded",
                    ),
                )
            except ProviderError as err:
                metrics.RECONCILES.labels(result="error").inc()
                return await self._fail(ep, err)
            except (ValueError, KeyError, TypeError, AttributeError) as err:
                # A bug, or an answer no provider code expected: say so where the user
                # looks, once, and keep the stack trace for the operator's log.
                log.exception("reconcile of %s/%s hit an unexpected error", namespace, name)
                metrics.RECONCILES.labels(result="error").inc()
                return await self._fail(
                    ep,
                    TransientProviderError(
                        f"Ferry hit an unexpected {type(err).__name__} reconciling this endpoint"
                        " (a bug or an answer it did not expect; details in the operator's log);"
                        " retrying with backoff",
                        reason="InternalError",
                    ),
                )
        metrics.RECONCILES.labels(result="ok").inc()
        return outcome

    async def _migrate(self, namespace: str, name: str, migration: migrations.Migration) -> Outcome:
        """Strip the old CRD defaults a remote endpoint still stores (D8), once."""
        log.warning(
            "%s/%s: removing fields stored from the old CRD defaults, which its provider"
            " does not honour: %s",
            namespace,
            name,
            ", ".join(migration.removed),
        )
        try:
            patched = await self._kube.patch(kube_api.ENDPOINT, namespace, name, migration.patch)
        except kube_api.KubeError as err:
            log.warning("cannot migrate InferenceEndpoint %s/%s: %s", namespace, name, err)
            return Outcome(error=True)
        if migrations.endpoint_migration(patched) is not None:
            # The installed CRD puts its old defaults straight back (helm does not upgrade
            # CRDs): patching again would loop. Work with the fields as they are.
            log.error(
                "%s/%s: the installed CRD still defaults %s; apply crds/ from this release"
                " (kubectl apply --server-side -f crds/) so that kubectl apply can check"
                " remote endpoints per backend",
                namespace,
                name,
                ", ".join(migration.removed),
            )
            self._unmigratable.add((namespace, name))
        return Outcome(requeue_after=0.0)

    # --- the lifecycle ------------------------------------------------------------

    async def _reconcile(self, ep: types.InferenceEndpoint) -> Outcome:
        meta = ep.metadata
        annotations = meta.annotations
        if naming.is_paused(annotations):
            # Paused means hands off entirely, deletion included (as in Crossplane).
            message = f"{naming.PAUSED} is set; Ferry changes nothing"
            await self._recorder.record(ep, Phase("paused", "ReconcilePaused", message), None)
            return Outcome()
        deleting = meta.deletion_timestamp is not None
        if deleting and naming.FINALIZER not in meta.finalizers:
            return Outcome()

        external_name = annotations.get(naming.EXTERNAL_NAME) or None
        incomplete = self._create_incomplete(annotations)
        if deleting and external_name is None and not incomplete:
            # Nothing was ever created or adopted for this endpoint: nothing to delete
            # (so no provider or credentials are needed), and a same-named resource
            # that is not ours must be left alone.
            await self._remove_finalizer(ep)
            return Outcome()
        if deleting and ep.spec.deletion_policy == "Orphan":
            return await self._orphan(ep, external_name)

        conn = await self._connector.connect(ep, deleting=deleting)
        if deleting:
            return await self._delete(ep, conn, external_name, incomplete)
        await self._hold_config(conn.config)

        observation = await conn.provider.observe(conn.target, external_name)
        if not observation.exists:
            return await self._create(ep, conn, external_name, incomplete)

        if naming.FINALIZER not in meta.finalizers:
            ep = await self._patch_meta(ep, self._with_finalizer(ep), check_version=True)

        if observation.external_name and observation.external_name != external_name:
            # Found by tag or default name: record the handle so it is adopted for good.
            ep = await self._patch_meta(
                ep, {"metadata": {"annotations": {naming.EXTERNAL_NAME: observation.external_name}}}
            )

        provider = conn.provider
        if not observation.up_to_date:
            await provider.update(conn.target, observation)
            shown = ", ".join(observation.diff[:5]) + (" ..." if len(observation.diff) > 5 else "")
            log.info("updated %s/%s at %s: %s", meta.namespace, meta.name, provider.name, shown)
            await self._recorder.event(
                ep, "Normal", "Updated", f"updated the {provider.name} resource: {shown}"
            )
            await self._recorder.record(
                ep, Phase("progressing", "Updating", f"applying changes: {shown}"), observation
            )
            return Outcome(requeue_after=self._timing.short)

        phase = self._waited(ep, self._phase(observation))
        await self._recorder.record(ep, phase, observation)
        if phase.kind == "ready":
            return Outcome(requeue_after=self._jitter(self._timing.poll))
        if phase.kind == "stalled":
            # Capacity may appear and pods may get scheduled: keep looking, slower.
            return Outcome(requeue_after=self._timing.short * 5)
        return Outcome(requeue_after=self._timing.short)

    async def _create(
        self,
        ep: types.InferenceEndpoint,
        conn: connecting.Connection,
        external_name: str | None,
        incomplete: bool,
    ) -> Outcome:
        provider, target = conn.provider, conn.target
        if incomplete:
            self._check_lookup(ep, provider.name, provider.can_search)
            # The grace period is over and observe() looked for it by name or tag:
            # nothing was made, so creating now cannot make a twin.
            log.warning(
                "%s/%s: an earlier create has no recorded outcome and nothing was found"
                " on %s; creating again",
                ep.metadata.namespace,
                ep.metadata.name,
                provider.name,
            )
        # Written with a version check: of two operators racing, only one creates.
        # The finalizer goes on in the same write, before anything exists outside.
        patch = self._with_finalizer(ep)
        patch["metadata"]["annotations"] = {naming.CREATE_PENDING: self._stamp()}
        ep = await self._patch_meta(ep, patch, check_version=True)
        try:
            created = await provider.create(target, external_name)
        except ProviderError as err:
            if isinstance(err, TransientProviderError) and err.maybe_applied:
                # The create may have happened: leave the pending mark alone, so the
                # next reconcile looks it up (after the grace period) instead of
                # creating again.
                raise
            try:
                await self._critical(ep, {naming.CREATE_FAILED: self._stamp()})
            except kube_api.KubeError as mark_err:
                # The provider's own error is what the user needs to read.
                log.warning("cannot record the failed create on %s: %s", ep.metadata.name, mark_err)
            raise
        ep = await self._critical(
            ep, {naming.EXTERNAL_NAME: created, naming.CREATE_SUCCEEDED: self._stamp()}
        )
        verb = "Created" if external_name is None else "Recreated"
        await self._recorder.event(
            ep, "Normal", verb, f"{verb.lower()} {created} on {provider.name}"
        )
        await self._recorder.record(
            ep,
            Phase(
                "progressing", "Creating", f"created {created} on {provider.name}; waiting for it"
            ),
            Observation(exists=True, external_name=created, desired_replicas=None),
        )
        return Outcome(requeue_after=self._timing.short)

    def _check_lookup(self, ep: types.InferenceEndpoint, provider: str, can_search: bool) -> None:
        """After a create with no recorded outcome: raise to stall or wait; return to go on."""
        if not can_search:
            raise PermanentProviderError(
                f"an earlier create on {provider} has no recorded outcome and {provider}"
                " cannot be searched for what it made; check the platform, delete any twin,"
                f" then remove the annotation {naming.CREATE_PENDING} (or set"
                f" {naming.EXTERNAL_NAME} to the resource's id) to continue",
                reason="CreateIncomplete",
            )
        pending = _parse(ep.metadata.annotations.get(naming.CREATE_PENDING, ""))
        waited = (self._clock() - pending).total_seconds() if pending else float("inf")
        left = self._timing.creation_grace - waited
        if left > 0:
            raise TransientProviderError(
                f"an earlier create on {provider} has no recorded outcome; looking for it"
                f" again for {left:.0f}s before creating (lists can lag behind a create)",
                retry_after=min(left, self._timing.short),
                reason="CreatePending",
            )

    async def _delete(
        self,
        ep: types.InferenceEndpoint,
        conn: connecting.Connection,
        external_name: str | None,
        incomplete: bool,
    ) -> Outcome:
        provider = conn.provider
        if external_name is None and incomplete:
            # Whatever the lost create made must be found before the finalizer goes.
            self._check_lookup(ep, provider.name, provider.can_search)
        observation = await provider.observe(conn.target, external_name)
        if observation.exists and observation.external_name:
            await provider.delete(conn.target, observation.external_name)
            await self._recorder.record(
                ep,
                Phase(
                    "deleting",
                    "Deleting",
                    f"deleting {observation.external_name} on {provider.name}",
                ),
                observation,
            )
            return Outcome(requeue_after=self._timing.deleting)
        meta = ep.metadata
        log.info("%s/%s: external resource gone; removing finalizer", meta.namespace, meta.name)
        await self._remove_finalizer(ep)
        return Outcome()

    async def _orphan(self, ep: types.InferenceEndpoint, external_name: str | None) -> Outcome:
        if external_name:
            try:
                conn = await self._connector.connect(ep, deleting=True)
            except PermanentProviderError as err:
                if not self._connector.backend(ep.spec.provider).required_keys:
                    raise
                # Orphaning a remote resource means not touching it: no client needed.
                log.info(
                    "orphaning %s without contacting %s: %s", external_name, ep.spec.provider, err
                )
            else:
                await conn.provider.orphan(conn.target, external_name)
            await self._recorder.event(
                ep, "Normal", "Orphaned", f"left {external_name} running on {ep.spec.provider}"
            )
        await self._remove_finalizer(ep)
        return Outcome()

    # --- helpers ------------------------------------------------------------------

    async def _hold_config(self, config: types.ProviderConfig | None) -> None:
        """Put the finalizer on a ProviderConfig this endpoint uses (D5)."""
        if config is None or config.metadata.deletion_timestamp:
            return
        if naming.FINALIZER in config.metadata.finalizers:
            return
        await self._kube.patch(
            kube_api.PROVIDER_CONFIG,
            config.metadata.namespace or "default",
            config.metadata.name,
            {"metadata": {"finalizers": [*config.metadata.finalizers, naming.FINALIZER]}},
            resource_version=config.metadata.resource_version,
        )

    def _waited(self, ep: types.InferenceEndpoint, phase: Phase) -> Phase:
        """A capacity wait turns Stalled once it outlasts scaling.capacityTimeout."""
        if phase.reason != recording.CAPACITY_WAIT:
            return phase
        timeout = defaults.capacity_timeout_seconds(ep.spec)
        since = _parse(ep.status.waiting_for_capacity_since or "")
        if timeout is None or since is None:
            return phase
        waited = (self._clock() - since).total_seconds()
        if waited < timeout:
            return phase
        return Phase(
            "stalled",
            recording.CAPACITY_STALL,
            f"{phase.message}; waited {waited:.0f}s, longer than scaling.capacityTimeout"
            f" ({timeout:.0f}s)",
        )

    @staticmethod
    def _phase(observation: Observation) -> Phase:
        ready, desired = observation.ready_replicas, observation.desired_replicas
        if observation.problem is not None:
            problem = observation.problem
            return Phase(
                "stalled" if problem.stalled else "progressing", problem.reason, problem.message
            )
        if ready is None or desired is None:
            # The platform reports no ready count (D17): deployed at the current spec
            # is what Ready can mean.
            running = observation.running_containers
            details = [observation.detail] if observation.detail else []
            if running is not None:
                details.append(f"{running} container{'' if running == 1 else 's'} running")
            shown = "".join(f"; {d}" for d in details)
            return Phase("ready", "Available", f"deployed at the current spec{shown}")
        warning = observation.warning
        if desired == 0:
            if warning is not None:
                return Phase("ready", warning.reason, warning.message)
            return Phase("ready", "ScaledToZero", "no replicas running (minReplicas is 0)")
        if ready >= desired and not observation.progressing:
            if warning is not None:
                # Serving, with something a person should fix (kstatus: still Ready).
                return Phase(
                    "ready", warning.reason, f"{ready}/{desired} replicas ready; {warning.message}"
                )
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

    async def _fail(self, ep: types.InferenceEndpoint, err: ProviderError) -> Outcome:
        message = str(err)
        permanent = isinstance(err, PermanentProviderError)
        kind: PhaseKind = "stalled" if permanent else "progressing"
        if ep.metadata.deletion_timestamp is not None and not permanent:
            kind = "deleting"
        changed = True
        try:
            changed = await self._recorder.record(ep, Phase(kind, err.reason, message), None)
        except kube_api.KubeError as status_err:
            log.warning("cannot record failure on %s: %s", ep.metadata.name, status_err)
        # The same failure again (a stalled endpoint retried) is not news for the log.
        log.log(
            logging.WARNING if changed else logging.DEBUG,
            "reconcile of %s/%s failed (%s): %s",
            ep.metadata.namespace,
            ep.metadata.name,
            err.reason,
            message,
        )
        retry_after = err.retry_after if isinstance(err, TransientProviderError) else None
        if retry_after is None and err.reason in connecting.SECRET_REASONS:
            # Secrets are not watched: look again soon, so a fixed Secret is noticed in
            # seconds rather than after a backoff grown to a minute.
            retry_after = self._timing.short * 5
        return Outcome(requeue_after=retry_after, error=True)

    async def _critical(
        self, ep: types.InferenceEndpoint, annotations: dict[str, str]
    ) -> types.InferenceEndpoint:
        """Write a create outcome, retrying: losing it would send the next reconcile
        looking for a resource it already knows."""
        delay = 0.2
        for attempt in range(1, self._timing.critical_attempts + 1):
            try:
                return await self._patch_meta(ep, {"metadata": {"annotations": annotations}})
            except (kube_api.Unavailable, kube_api.TooManyRequests, kube_api.Conflict) as err:
                if attempt == self._timing.critical_attempts:
                    raise
                log.info("retrying a critical annotation write on %s: %s", ep.metadata.name, err)
                await self._sleep(delay)
                delay = min(delay * 2, 2.0)
        raise AssertionError("unreachable")

    async def _patch_meta(
        self, ep: types.InferenceEndpoint, patch: dict[str, Any], *, check_version: bool = False
    ) -> types.InferenceEndpoint:
        meta = ep.metadata
        raw = await self._kube.patch(
            kube_api.ENDPOINT,
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

    def _stamp(self) -> str:
        return conditions.rfc3339(self._clock())

    def _jitter(self, seconds: float) -> float:
        # Spread periodic observes so 1,000 endpoints do not poll in lockstep.
        return seconds * (1.0 + 0.2 * self._rng.random())
