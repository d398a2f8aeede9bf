"""kopf wiring: the only module that imports kopf, and it only maps events to queues.

kopf supplies the watches; Ferry's own work queues (ferry.queueing) supply the
controller-runtime semantics kopf lacks: one reconcile per object at a time,
requeue after a delay (periodic observe for drift), per-object backoff, and our
own finalizer instead of kopf's. At start-up the composition root
(`ferry.controllers`) builds every controller from the settings kopf's memo
carries; each handler here stores the event's body in the watch cache
(ferry.caching) and enqueues keys on the controllers' queues, and nothing more.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import kopf

from ferry import caching, controllers, draining
from ferry import kube as kube_api
from ferry.api.v1alpha1 import types
from ferry.logic import naming
from ferry.settings import Settings

log = logging.getLogger(__name__)

ENDPOINT = kube_api.ENDPOINT
PROVIDER_CONFIG = kube_api.PROVIDER_CONFIG


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    cfg: Settings = memo.settings
    settings.posting.enabled = False  # Ferry posts its own, meaningful events.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    settings.batching.worker_limit = None
    built = controllers.build(cfg)
    built.start()
    memo.controllers = built


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    built: controllers.Controllers | None = getattr(memo, "controllers", None)
    if built is not None:
        await built.stop()


def _remember(memo: Any, kind: str, type: str | None, body: Mapping[str, Any]) -> Any:
    """Keep the watch cache current; return the body it held before (or None)."""
    cache: caching.ObjectCache = memo.controllers.kube.cache
    meta = body.get("metadata") or {}
    if type == "DELETED":
        cache.drop(kind, meta.get("namespace") or "", meta.get("name") or "")
        return None
    return cache.store(kind, dict(body))


@kopf.on.event(types.GROUP, types.VERSION, "inferenceendpoints")
async def endpoint_event(
    *,
    type: str | None,
    body: Mapping[str, Any],
    spec: Mapping[str, Any],
    namespace: str | None,
    name: str,
    memo: Any,
    **_: Any,
) -> None:
    ns = namespace or "default"
    previous = _remember(memo, ENDPOINT, type, body)
    built: controllers.Controllers = memo.controllers
    if type == "DELETED":
        built.endpoint_gone(ns, name)
        config = (spec.get("providerConfigRef") or {}).get("name")
        if config:
            # The ProviderConfig may now be unused: let it drop its finalizer.
            built.endpoints.add((PROVIDER_CONFIG, ns, config))
        return
    if type is None or caching.meaningful_change(previous, body):
        built.endpoint_changed(ns, name)


@kopf.on.event(types.GROUP, types.VERSION, "providerconfigs")
async def provider_config_event(
    *,
    type: str | None,
    body: Mapping[str, Any],
    namespace: str | None,
    name: str,
    memo: Any,
    **_: Any,
) -> None:
    key = (PROVIDER_CONFIG, namespace or "default", name)
    previous = _remember(memo, PROVIDER_CONFIG, type, body)
    queue = memo.controllers.endpoints
    if type == "DELETED":
        queue.forget(key)
        return
    if type is None or caching.meaningful_change(previous, body):
        queue.add(key)


OWNED = {naming.LABEL_MANAGED_BY: naming.MANAGED_BY}
#: (kind, group, version, plural) of what the local provider creates.
OWNED_RESOURCES = (
    ("Deployment", "apps", "v1", "deployments"),
    ("Service", "", "v1", "services"),
    ("PodDisruptionBudget", "policy", "v1", "poddisruptionbudgets"),
)


def _watch_owned(kind: str, group: str, version: str, plural: str) -> None:
    async def owned_event(
        *,
        type: str | None,
        body: Mapping[str, Any],
        labels: Mapping[str, str],
        namespace: str | None,
        memo: Any,
        **_: Any,
    ) -> None:
        # Rollout progress and drift of an owned object wake its endpoint at once;
        # a Deployment's count matters to the autoscaler (the one writer of it).
        _remember(memo, kind, type, body)
        endpoint = _owner(body)
        if endpoint:
            key = (ENDPOINT, namespace or "default", endpoint)
            memo.controllers.endpoints.add(key)
            if kind == "Deployment":
                memo.controllers.autoscaling.add(key)

    kopf.on.event(group, version, plural, labels=OWNED, id=f"{plural}_event")(owned_event)


def _owner(body: Mapping[str, Any]) -> str | None:
    """The endpoint controlling an owned object (its label may be a shortened name)."""
    for ref in (body.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("kind") == ENDPOINT and ref.get("apiVersion") == types.API_VERSION:
            return str(ref.get("name"))
    return None


for _owned in OWNED_RESOURCES:
    _watch_owned(*_owned)


@kopf.on.event("", "v1", "pods", labels=OWNED)
async def pod_event(
    *,
    type: str | None,
    body: Mapping[str, Any],
    labels: Mapping[str, str],
    namespace: str | None,
    name: str,
    memo: Any,
    **_: Any,
) -> None:
    """A pod of an endpoint changed: its drain controller looks (gates, replacements)."""
    ns = namespace or "default"
    built: controllers.Controllers = memo.controllers
    # Pods belong to ReplicaSets: their Deployment (the instance label) names the
    # endpoint through its owner reference.
    deployment = built.kube.cache.get("Deployment", ns, labels.get(naming.LABEL_INSTANCE, ""))
    endpoint = _owner(deployment) if deployment is not None else labels.get(naming.LABEL_ENDPOINT)
    node = (body.get("spec") or {}).get("nodeName")
    built.pods.store(ns, name, None if type == "DELETED" else node, endpoint)
    if endpoint:
        built.drains.add((ENDPOINT, ns, endpoint))


@kopf.on.event("", "v1", "nodes")
async def node_event(
    *, type: str | None, body: Mapping[str, Any], name: str, memo: Any, **_: Any
) -> None:
    """A node's notice appeared, changed or went away: drain what runs there."""
    previous = _remember(memo, "Node", type, body)
    built: controllers.Controllers = memo.controllers
    if type == "DELETED":
        built.drainer.node_gone(name)
    if type is None or type == "DELETED" or draining.notice_changed(previous, dict(body)):
        built.node_noticed(name)


def run(cfg: Settings) -> None:
    """Run the operator in the foreground until SIGINT/SIGTERM."""
    liveness = f"http://0.0.0.0:{cfg.liveness_port}/healthz" if cfg.liveness_port else None
    kopf.configure(verbose=cfg.verbose, log_format=kopf.LogFormat.PLAIN)
    if not cfg.verbose:
        # One line per HTTP request drowns the reconciler's own messages.
        # kopf's per-object "Handler ... succeeded" lines say nothing for enqueue-only
        # handlers.
        for noisy in ("httpx", "httpx2", "httpcore", "httpcore2", "kopf.objects"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    asyncio.run(
        kopf.operator(
            standalone=True,
            clusterwide=not cfg.namespaces,
            namespaces=cfg.namespaces,
            liveness_endpoint=liveness,
            memo=kopf.Memo(settings=cfg),
        )
    )
