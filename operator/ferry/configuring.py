"""The ProviderConfig controller: its Ready condition and its finalizer.

Ready says whether endpoints can use the config: its Secret exists, has the keys
the provider needs and allows export to it (checks shared with `ferry.connecting`).
The finalizer (D5) is held while any endpoint in the namespace names the config,
so deleting a ProviderConfig, or its whole namespace, never strands an endpoint
that still has to delete what it made; it is dropped once nothing uses it.
Called by the work queue; returns the endpoints to wake when the config changed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from ferry import connecting
from ferry import kube as kube_api
from ferry.api.v1alpha1 import types
from ferry.logic import conditions, migrations, naming
from ferry.logic.conditions import Phase
from ferry.providers.base import PermanentProviderError

log = logging.getLogger(__name__)


def users_of(endpoints: list[dict[str, object]], name: str) -> list[str]:
    """Names of the endpoints (raw dicts) whose spec.providerConfigRef is `name`."""
    found = []
    for e in endpoints:
        spec = e.get("spec")
        ref = spec.get("providerConfigRef") if isinstance(spec, dict) else None
        if isinstance(ref, dict) and ref.get("name") == name:
            meta = e.get("metadata")
            if isinstance(meta, dict):
                found.append(str(meta.get("name")))
    return sorted(found)


#: The reason an endpoint reports when the platform refused the credentials.
REJECTED = "CredentialsRejected"


def rejected_by_platform(endpoints: list[dict[str, Any]], name: str) -> str | None:
    """The message of an endpoint using `name` whose platform refused the credentials."""
    for e in endpoints:
        if ((e.get("spec") or {}).get("providerConfigRef") or {}).get("name") != name:
            continue
        for cond in (e.get("status") or {}).get("conditions") or []:
            if cond.get("type") == "Stalled" and cond.get("reason") == REJECTED:
                who = (e.get("metadata") or {}).get("name")
                return f"{cond.get('message', '')} (seen by endpoint {who})"
    return None


class ConfigReconciler:
    """Reconciles one ProviderConfig; see the module docstring."""

    def __init__(
        self,
        kube: kube_api.Api,
        connector: connecting.Connector,
        clock: Callable[[], datetime],
    ) -> None:
        self._kube = kube
        self._connector = connector
        self._clock = clock

    async def reconcile(self, namespace: str, name: str) -> list[str]:
        """Set Ready and the finalizer; return the endpoints that use the config."""
        raw = await self._kube.get(kube_api.PROVIDER_CONFIG, namespace, name)
        if raw is None:
            self._connector.forget(namespace, name)
            return []
        migration = migrations.provider_config_migration(raw)
        if migration is not None:
            # Stored from the old CRD default (D8); the next read sees it gone.
            log.warning("%s/%s: removing %s", namespace, name, ", ".join(migration.removed))
            raw = await self._kube.patch(kube_api.PROVIDER_CONFIG, namespace, name, migration.patch)
        config = types.ProviderConfig.model_validate(raw)
        endpoints = await self._kube.list(kube_api.ENDPOINT, namespace)
        users = users_of(endpoints, name)
        meta = config.metadata
        holding = naming.FINALIZER in meta.finalizers
        if meta.deletion_timestamp:
            if users:
                shown = ", ".join(users[:5]) + (" ..." if len(users) > 5 else "")
                phase = Phase(
                    "progressing",
                    "InUse",
                    f"deletion waits until no endpoint uses it; used by {shown}",
                )
                await self._set_ready(config, phase)
            elif holding:
                await self._set_finalizers(
                    config, [f for f in meta.finalizers if f != naming.FINALIZER]
                )
            return users
        # The finalizer first: the status write below moves the resourceVersion
        # that this version-checked write is based on.
        if users and not holding:
            await self._set_finalizers(config, [*meta.finalizers, naming.FINALIZER])
        elif not users and holding:
            await self._set_finalizers(
                config, [f for f in meta.finalizers if f != naming.FINALIZER]
            )
        try:
            await self._connector.check_config(config)
            phase = Phase("ready", "CredentialsFound", "credentials Secret found with every key")
        except PermanentProviderError as err:
            phase = Phase("stalled", err.reason, str(err))
        rejected = rejected_by_platform(endpoints, name)
        if phase.kind == "ready" and rejected is not None:
            # The keys are there, but the platform said no: say so here too.
            phase = Phase("stalled", REJECTED, rejected)
        await self._set_ready(config, phase)
        return users

    async def _set_ready(self, config: types.ProviderConfig, phase: Phase) -> None:
        old = config.status.conditions
        ready = [
            c
            for c in conditions.compute(phase, old, config.metadata.generation, self._clock())
            if c.type == conditions.READY
        ]
        if ready == [c for c in old if c.type == conditions.READY]:
            return
        body = [c.model_dump(by_alias=True, exclude_none=True) for c in ready]
        await self._kube.patch_status(
            kube_api.PROVIDER_CONFIG,
            config.metadata.namespace or "default",
            config.metadata.name,
            {"conditions": body},
        )

    async def _set_finalizers(self, config: types.ProviderConfig, finalizers: list[str]) -> None:
        # The list is replaced whole: check the version so no one else's is lost.
        await self._kube.patch(
            kube_api.PROVIDER_CONFIG,
            config.metadata.namespace or "default",
            config.metadata.name,
            {"metadata": {"finalizers": finalizers}},
            resource_version=config.metadata.resource_version,
        )
