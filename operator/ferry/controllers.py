"""The composition root: every controller, built from settings, as peers.

Three controllers, each with its own work queue, rate limiter (the queue's
backoff) and `controller` metrics label (controller-runtime's shape):

- `endpoints`: the lifecycle of InferenceEndpoints and ProviderConfigs
  (`ferry.reconciler`, `ferry.configuring`);
- `drains`: replacement-first drains off nodes going away (`ferry.draining`);
- `autoscaling`: load samples and the replica count (`ferry.autoscaling`).

They share one Kubernetes client and its watch cache, and talk only through their
queues (a drain wakes the autoscaler when it changes the surge, and the endpoint
when its status should show the drain) and the notice hand-over from the
autoscaler's samples to the drain controller. `ferry.handlers` builds this once
at start-up and maps kopf's events onto the queues.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from prometheus_client import start_http_server

from ferry import (
    autoscaling,
    caching,
    configuring,
    connecting,
    draining,
    kube,
    providers,
    queueing,
    reconciler,
    sampling,
)
from ferry.settings import Settings

log = logging.getLogger(__name__)

ENDPOINT = kube.ENDPOINT
PROVIDER_CONFIG = kube.PROVIDER_CONFIG


@dataclass
class Controllers:
    """The running operator: its client, its controllers and their queues."""

    settings: Settings
    kube: kube.Kube
    connector: connecting.Connector
    source: sampling.LoadSource
    drainer: draining.Drainer
    autoscaler: autoscaling.Autoscaler
    endpoints: queueing.WorkQueue
    drains: queueing.WorkQueue
    autoscaling: queueing.WorkQueue
    pods: caching.PodIndex

    def start(self) -> None:
        for queue in (self.endpoints, self.drains, self.autoscaling):
            queue.start()
        cfg = self.settings
        if cfg.metrics_port:
            start_http_server(cfg.metrics_port, addr=cfg.metrics_host)
            log.info("metrics on http://%s:%d/metrics", cfg.metrics_host, cfg.metrics_port)

    async def stop(self) -> None:
        for queue in (self.autoscaling, self.drains, self.endpoints):
            await queue.stop()
        await self.source.close()
        await self.connector.close()
        await self.kube.close()

    def endpoint_changed(self, namespace: str, name: str) -> None:
        """An endpoint was created or changed: every controller looks at it."""
        key = (ENDPOINT, namespace, name)
        for queue in (self.endpoints, self.drains, self.autoscaling):
            queue.add(key)

    def endpoint_gone(self, namespace: str, name: str) -> None:
        key = (ENDPOINT, namespace, name)
        for queue in (self.endpoints, self.drains, self.autoscaling):
            queue.forget(key)
        self.autoscaler.forget(namespace, name)

    def node_noticed(self, node: str) -> None:
        """A node's notice changed: every endpoint with pods there looks again."""
        _wake_node(self.pods, self.drains, node)


def _wake_node(pods: caching.PodIndex, drains: queueing.WorkQueue, node: str) -> None:
    for namespace, endpoint in pods.endpoints_on(node):
        drains.add((ENDPOINT, namespace, endpoint))


def load_source(cfg: Settings) -> sampling.LoadSource:
    """The D12 load source the settings name."""
    if cfg.load_source == "prometheus":
        return sampling.Prometheus(cfg.prometheus_url, timeout=cfg.scrape_timeout)
    return sampling.PodMetrics(cfg.pod_metrics_url, timeout=cfg.scrape_timeout)


def build(cfg: Settings) -> Controllers:
    """Every controller of the operator, wired, not started."""
    client = kube.Kube.from_env(cfg.kubeconfig)
    connector = connecting.Connector(
        client,
        providers.registry(client),
        call_timeout=cfg.call_timeout,
        shared_ttl=cfg.poll_interval,
        retire_after=cfg.reconcile_timeout,
    )
    rec = reconciler.Reconciler(
        client,
        connector,
        timing=reconciler.Timing(
            poll=cfg.poll_interval,
            short=cfg.short_requeue,
            deadline=cfg.reconcile_timeout,
            creation_grace=cfg.creation_grace,
        ),
    )
    configs = configuring.ConfigReconciler(client, connector, reconciler.now)
    source = load_source(cfg)
    queues: dict[str, queueing.WorkQueue] = {}

    def wake(name: str) -> draining.Wake:
        return lambda namespace, endpoint: queues[name].add((ENDPOINT, namespace, endpoint))

    drainer = draining.Drainer(
        client,
        interval=cfg.drain_interval,
        source=source,
        wake_autoscaler=wake("autoscaling"),
        wake_endpoint=wake("endpoints"),
    )
    pods = caching.PodIndex()

    def notice_reported(node: str, deadline: float, pod: str) -> None:
        # A model server's own spot notice (D11) counts as a notice for its node.
        if drainer.report(node, deadline, pod):
            _wake_node(pods, queues["drains"], node)

    autoscaler = autoscaling.Autoscaler(
        client, source, interval=cfg.autoscale_interval, on_notice=notice_reported
    )

    async def work(key: queueing.Key) -> queueing.Outcome:
        kind, namespace, name = key
        if kind == PROVIDER_CONFIG:
            try:
                users = await configs.reconcile(namespace, name)
            except kube.Conflict:
                # Written since it was read (an endpoint took its finalizer): read it again.
                return queueing.Outcome(requeue_after=0.0)
            except kube.KubeError as err:
                log.warning("cannot check ProviderConfig %s/%s: %s", namespace, name, err)
                return queueing.Outcome(error=True)
            for user in users:
                queues["endpoints"].add((ENDPOINT, namespace, user))
            # Secrets are not watched (that would need cluster-wide read on them):
            # look again on the poll interval so a fixed Secret is noticed.
            return queueing.Outcome(requeue_after=cfg.poll_interval)
        return await rec.reconcile(namespace, name)

    async def drain(key: queueing.Key) -> queueing.Outcome:
        return await drainer.reconcile(key[1], key[2])

    async def scale(key: queueing.Key) -> queueing.Outcome:
        return await autoscaler.reconcile(key[1], key[2])

    queues["endpoints"] = queueing.WorkQueue(work, name="endpoints", workers=cfg.workers)
    # Drains are rare and urgent: their own workers, a short backoff.
    queues["drains"] = queueing.WorkQueue(
        drain, name="drains", workers=max(2, cfg.workers // 4), max_backoff=10.0
    )
    queues["autoscaling"] = queueing.WorkQueue(
        scale, name="autoscaling", workers=max(2, cfg.workers // 2), max_backoff=30.0
    )
    return Controllers(
        settings=cfg,
        kube=client,
        connector=connector,
        source=source,
        drainer=drainer,
        autoscaler=autoscaler,
        endpoints=queues["endpoints"],
        drains=queues["drains"],
        autoscaling=queues["autoscaling"],
        pods=pods,
    )
