"""The process harness: request-level drains with real model servers on a real control plane.

What is real:
- the control plane: kube-apiserver, scheduler, controller manager (ReplicaSets,
  Deployments, EndpointSlices from pod readiness, PodDisruptionBudgets, evictions,
  garbage collection), and the Ferry operator as a subprocess;
- the model servers: `python -m ferry_server` from the inference server's own venv,
  one process per pod, serving a tiny locally built model over real sockets, with
  its real SIGTERM drain (propagation delay, then in-flight requests finish) and
  its real IMDSv2 spot watcher;
- the requests: HTTP OpenAI completions, counted one by one;
- the probes: each pod's own startup and readiness probes at its own periods.

What is simulated, and how:
- the kubelet (`processes.ProcessKubelet`): a Python stand-in that starts a process
  for each pod the scheduler binds to its nodes, reports its status (Ready =
  containers ready AND every readiness gate), and on deletion sends SIGTERM, waits
  up to the grace period, then removes the pod; its nodes heartbeat through Leases;
- the network: pod IPs are fictional (10.250.x.y); each process listens on a free
  127.0.0.1 port instead of the container port, and the operator reads pods'
  `/metrics` through a local forwarder keyed by pod name (`FERRY_POD_METRICS_URL`);
- the Service: `traffic.Traffic` routes each new request to a pod ready in the
  Service's EndpointSlice, as kube-proxy does (round robin instead of random);
- the image and weights: every pod serves the same tiny model, whatever it names;
- the cloud: a spot notice is posted to a node's instance metadata (IMDSv2) served
  on a port of that node's own, or put on the Node as the clouds' tools do.

`Harness` runs all of it on one asyncio loop in a background thread, with a
synchronous facade for tests and the benchmark.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from lightkube import AsyncClient, KubeConfig

from ferry.sandbox import modelserver
from tests.harness.processes import ProcessKubelet, Running
from tests.harness.timeline import Timeline
from tests.harness.traffic import Tally, Traffic

T = TypeVar("T")

__all__ = ["Harness", "Running", "Tally", "Timeline", "Traffic"]


class Harness:
    """Process kubelet, metadata servers, metrics forwarder and load, on a loop thread."""

    def __init__(self, kubeconfig: Path, workdir: Path) -> None:
        self.kubeconfig = kubeconfig
        self.workdir = workdir
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.kubelet: ProcessKubelet | None = None
        self.client: AsyncClient | None = None
        self._server: modelserver.ModelServer | None = None

    @property
    def server(self) -> modelserver.ModelServer:
        """The inference server's Python and the tiny model (found or built on first use)."""
        if self._server is None:
            self._server = modelserver.locate(None, modelserver.default_cache_dir())
        return self._server

    @property
    def model(self) -> str:
        return modelserver.served_model_name(str(self.server.model_dir))

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 120.0) -> T:
        """Run a coroutine on the harness loop and wait for it."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> Harness:
        self._thread.start()

        async def up() -> ProcessKubelet:
            self.client = AsyncClient(config=KubeConfig.from_file(str(self.kubeconfig)))
            kubelet = ProcessKubelet(self.client, lambda: self.server, self.workdir)
            await kubelet.start()
            return kubelet

        self.kubelet = self.run(up())
        return self

    def stop(self) -> None:
        async def down() -> None:
            if self.kubelet is not None:
                await self.kubelet.stop()
            if self.client is not None:
                await self.client.close()

        try:
            self.run(down(), timeout=60)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)
            self.loop.close()

    @property
    def metrics_url(self) -> str:
        assert self.kubelet is not None
        return self.kubelet.metrics_url

    def add_node(self, name: str, gpu_type: str, *, gpus: int = 1, spot: bool = False) -> str:
        assert self.kubelet is not None
        capacity = "spot" if spot else "on-demand"
        return self.run(self.kubelet.add_node(name, gpu_type, gpus=gpus, capacity=capacity))

    def remove_node(self, name: str) -> None:
        assert self.kubelet is not None
        self.run(self.kubelet.remove_node(name))

    def post_notice(self, node: str, seconds: float = 120.0) -> None:
        assert self.kubelet is not None
        kubelet = self.kubelet
        self.loop.call_soon_threadsafe(kubelet.post_notice, node, seconds)

    def shut_down(self, node: str) -> None:
        """GKE's graceful node shutdown: the node's kubelet reports it NotReady, shutting down."""
        assert self.kubelet is not None
        self.run(self.kubelet.shut_down(node))

    def traffic(self, namespace: str, service: str, max_tokens: int = 2) -> Traffic:
        assert self.kubelet is not None
        assert self.client is not None
        handle = Traffic(
            self.client, self.kubelet, namespace, service, model=self.model, max_tokens=max_tokens
        )
        self.run(handle.watch())
        return handle

    def timeline(self, namespace: str) -> Timeline:
        """Start recording pods and EndpointSlices of `namespace`."""
        assert self.client is not None
        client = self.client

        async def start() -> Timeline:
            line = Timeline(client, namespace)
            line.start()
            return line

        return self.run(start())

    def history(self) -> list[tuple[float, str, str]]:
        assert self.kubelet is not None
        return list(self.kubelet.history)

    def processes(self) -> dict[str, Running]:
        assert self.kubelet is not None
        return {name: run for (_, name), run in self.kubelet.pods.items()}
