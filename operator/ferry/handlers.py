"""kopf wiring: the only module that imports kopf.

kopf supplies the watches; Ferry's own work queue (ferry.queueing) supplies the
controller-runtime semantics kopf lacks: one reconcile per object at a time,
requeue after a delay (periodic observe for drift), per-object backoff, and our
own finalizer instead of kopf's. So every handler here only stores the event's body
in the watch cache (ferry.caching) and enqueues a key, and `ProviderError`s become
requeues in the reconciler's `Result`, not kopf errors.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import kopf
from prometheus_client import start_http_server

from ferry import caching, configuring, connecting, providers, queueing, reconciler
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
    kube = kube_api.Kube.from_env(cfg.kubeconfig)
    connector = connecting.Connector(
        kube,
        providers.registry(kube),
        call_timeout=cfg.call_timeout,
        shared_ttl=cfg.poll_interval,
    )
    rec = reconciler.Reconciler(
        kube,
        connector,
        timing=reconciler.Timing(
            poll=cfg.poll_interval,
            short=cfg.short_requeue,
            deadline=cfg.reconcile_timeout,
            creation_grace=cfg.creation_grace,
        ),
    )
    configs = configuring.ConfigReconciler(kube, connector, reconciler.now)

    async def work(key: queueing.Key) -> queueing.Outcome:
        kind, namespace, name = key
        if kind == PROVIDER_CONFIG:
            try:
                users = await configs.reconcile(namespace, name)
            except kube_api.KubeError as err:
                log.warning("cannot check ProviderConfig %s/%s: %s", namespace, name, err)
                return queueing.Outcome(error=True)
            for user in users:
                queue.add((ENDPOINT, namespace, user))
            # Secrets are not watched (that would need cluster-wide read on them):
            # look again on the poll interval so a fixed Secret is noticed.
            return queueing.Outcome(requeue_after=cfg.poll_interval)
        return await rec.reconcile(namespace, name)

    queue = queueing.WorkQueue(work, workers=cfg.workers)
    queue.start()
    memo.kube = kube
    memo.queue = queue
    memo.connector = connector
    if cfg.metrics_port:
        start_http_server(cfg.metrics_port, addr=cfg.metrics_host)
        log.info("metrics on http://%s:%d/metrics", cfg.metrics_host, cfg.metrics_port)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    queue: queueing.WorkQueue | None = getattr(memo, "queue", None)
    if queue is not None:
        await queue.stop()
    connector: connecting.Connector | None = getattr(memo, "connector", None)
    if connector is not None:
        await connector.close()
    kube: kube_api.Kube | None = getattr(memo, "kube", None)
    if kube is not None:
        await kube.close()


def _remember(memo: Any, kind: str, type: str | None, body: Mapping[str, Any]) -> Any:
    """Keep the watch cache current; return the body it held before (or None)."""
    cache: caching.ObjectCache = memo.kube.cache
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
    key = (ENDPOINT, namespace or "default", name)
    previous = _remember(memo, ENDPOINT, type, body)
    if type == "DELETED":
        memo.queue.forget(key)
        config = (spec.get("providerConfigRef") or {}).get("name")
        if config:
            # The ProviderConfig may now be unused: let it drop its finalizer.
            memo.queue.add((PROVIDER_CONFIG, namespace or "default", config))
        return
    if type is None or caching.meaningful_change(previous, body):
        memo.queue.add(key)


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
    if type == "DELETED":
        memo.queue.forget(key)
        return
    if type is None or caching.meaningful_change(previous, body):
        memo.queue.add(key)


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
        # Rollout progress and drift of an owned object wake its endpoint at once.
        _remember(memo, kind, type, body)
        endpoint = _owner(body)
        if endpoint:
            memo.queue.add((ENDPOINT, namespace or "default", endpoint))

    kopf.on.event(group, version, plural, labels=OWNED, id=f"{plural}_event")(owned_event)


def _owner(body: Mapping[str, Any]) -> str | None:
    """The endpoint controlling an owned object (its label may be a shortened name)."""
    for ref in (body.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("kind") == ENDPOINT and ref.get("apiVersion") == types.API_VERSION:
            return str(ref.get("name"))
    return None


for _owned in OWNED_RESOURCES:
    _watch_owned(*_owned)


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
