"""A kubelet for pods that run real model-server processes on 127.0.0.1.

`ProcessKubelet` owns Node objects of its own (not kwok's: no `type=kwok` label), so
the real scheduler places pods there and nothing but this class touches those
pods. For each pod bound to one of its nodes it does what a kubelet does, with a
local process instead of a container:

- starts `python -m ferry_server` (the inference server's own venv) with the pod's
  environment, except that the model is the locally built tiny model (no image or
  weights can be pulled here) and the server listens on a free 127.0.0.1 port
  instead of the container port (pod IPs are fictional: each pod gets a unique
  10.250.x.y address that only routing tables in this harness know);
- runs the pod's own startup and readiness probes, at the periods and thresholds
  its spec gives, and reports Ready = containers ready AND every readiness gate
  True, as the kubelet does;
- on deletion sends SIGTERM, waits for the process to exit (SIGKILL after the
  grace period), then removes the pod, as the kubelet does;
- keeps its nodes alive (Lease and status heartbeats);
- serves each node's instance metadata (IMDSv2, AWS's spot `instance-action`) on a
  port of its own, so a model server's spot watcher sees notices a test posts;
- forwards `GET /pods/<namespace>/<pod>/metrics` to that pod's process: the
  operator's `FERRY_POD_METRICS_URL` points here instead of at pod IPs.

Everything runs on one asyncio loop (see `tests.harness.Harness`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from lightkube import AsyncClient, codecs
from lightkube.core.exceptions import ApiError
from lightkube.resources.core_v1 import Node, Pod
from lightkube.types import OnErrorAction, OnErrorResult, PatchType
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from ferry.devcluster import nodes as node_pools
from ferry.sandbox import modelserver

PROCESS_LABEL = "proc"
IMDS_PATH = "/latest/meta-data/spot/instance-action"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _retry(_: Exception, count: int) -> OnErrorResult:
    return OnErrorResult(OnErrorAction.RETRY, sleep=min(2.0, 0.2 * count))


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Running:
    """One pod's process and what the kubelet knows of it."""

    namespace: str
    name: str
    uid: str
    node: str
    ip: str
    port: int
    proc: asyncio.subprocess.Process
    log: Path
    started: float
    containers_ready: bool = False
    reported_ready: bool | None = None
    terminating: bool = False
    ready_at: float | None = None
    gone_at: float | None = None
    sigterm_at: float | None = None
    probe_task: asyncio.Task[None] | None = None
    gates: dict[str, bool] = field(default_factory=dict)
    gate_types: tuple[str, ...] = ()


class Imds:
    """One node's IMDSv2 instance metadata: a token, then the spot `instance-action`."""

    def __init__(self) -> None:
        self.port = free_port()
        self.action: dict[str, str] | None = None
        self.server: uvicorn.Server | None = None

    def app(self) -> Starlette:
        async def token(request: Request) -> Response:
            return PlainTextResponse("harness-token")

        async def action(request: Request) -> Response:
            if request.headers.get("X-aws-ec2-metadata-token") != "harness-token":
                return Response(status_code=401)
            if self.action is None:
                return Response(status_code=404)
            return PlainTextResponse(json.dumps(self.action))

        return Starlette(
            routes=[
                Route("/latest/api/token", token, methods=["PUT"]),
                Route(IMDS_PATH, action),
            ]
        )


class ProcessKubelet:
    """See the module docstring."""

    def __init__(
        self,
        client: AsyncClient,
        server: Callable[[], modelserver.ModelServer],
        workdir: Path,
        *,
        log_level: str = "warning",
    ) -> None:
        self.client = client
        # Found (or the tiny model built) only when a pod first lands on a node here.
        self.server = server
        self.workdir = workdir
        self.log_level = log_level
        self.nodes: dict[str, Imds] = {}
        #: Nodes whose kubelet reports a graceful node shutdown (GKE's spot preemption),
        #: and since when.
        self.shutting_down: dict[str, str] = {}
        self.pods: dict[tuple[str, str], Running] = {}
        self.history: list[tuple[float, str, str]] = []  # (time, pod, what)
        self.proxy_port = free_port()
        self._ips = itertools.count(1)
        self._tasks: list[asyncio.Task[Any]] = []
        self._servers: list[uvicorn.Server] = []
        self._http = httpx.AsyncClient(timeout=5.0, trust_env=False)

    # --- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._serve(self._proxy_app(), self.proxy_port)))
        self._tasks.append(asyncio.create_task(self._watch_pods()))
        self._tasks.append(asyncio.create_task(self._heartbeats()))

    async def stop(self) -> None:
        for run in list(self.pods.values()):
            await self._kill(run)
        for server in self._servers:
            server.should_exit = True
        await asyncio.sleep(0.2)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for name in list(self.nodes):
            with contextlib.suppress(ApiError):
                await self.client.delete(Node, name)
        await self._http.aclose()

    async def _serve(self, app: Starlette, port: int, imds: Imds | None = None) -> None:
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", lifespan="off")
        # Not the main thread: uvicorn leaves signal handling alone.
        server = uvicorn.Server(config)
        self._servers.append(server)
        if imds is not None:
            imds.server = server
        await server.serve()

    # --- nodes ------------------------------------------------------------------------

    async def add_node(
        self, name: str, gpu_type: str, *, gpus: int = 1, capacity: str = "on-demand"
    ) -> str:
        """Create a GPU node this kubelet runs; returns its name."""
        pool = node_pools.NodePool(
            name,
            gpu_type,
            count=1,
            gpus_per_node=gpus,
            capacity_type=capacity,  # type: ignore[arg-type]
        )
        manifest = node_pools.node_manifest(pool, 0)
        manifest["metadata"]["name"] = name
        manifest["metadata"]["labels"]["kubernetes.io/hostname"] = name
        manifest["metadata"]["labels"]["type"] = PROCESS_LABEL
        manifest["metadata"]["annotations"] = {"node.alpha.kubernetes.io/ttl": "0"}
        manifest["status"]["conditions"] = [self._ready_condition()]
        manifest["status"]["addresses"] = [{"type": "InternalIP", "address": "127.0.0.1"}]
        imds = Imds()
        self.nodes[name] = imds
        self._tasks.append(asyncio.create_task(self._serve(imds.app(), imds.port, imds)))
        await self.client.create(codecs.from_dict(manifest))
        await self._heartbeat(name)
        return name

    async def remove_node(self, name: str) -> None:
        """The node goes away: its processes die, its metadata service stops."""
        imds = self.nodes.pop(name, None)
        self.shutting_down.pop(name, None)
        if imds is not None and imds.server is not None:
            imds.server.should_exit = True
        for run in list(self.pods.values()):
            if run.node == name:
                await self._kill(run)
        with contextlib.suppress(ApiError):
            await self.client.delete(Node, name)

    def post_notice(self, node: str, seconds: float = 120.0) -> None:
        """The cloud's spot interruption notice for `node`, as its metadata shows it."""
        when = datetime.fromtimestamp(time.time() + seconds, tz=UTC)
        self.nodes[node].action = {"action": "terminate", "time": when.isoformat()}

    @staticmethod
    def _ready_condition() -> dict[str, Any]:
        now = _now()
        return {
            "type": "Ready",
            "status": "True",
            "reason": "KubeletReady",
            "message": "harness kubelet is posting ready status",
            "lastHeartbeatTime": now,
            "lastTransitionTime": now,
        }

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(5.0)
            for name in list(self.nodes):
                with contextlib.suppress(ApiError, httpx.HTTPError):
                    await self._heartbeat(name)

    async def shut_down(self, name: str) -> None:
        """Begin a graceful node shutdown: the kubelet reports the node NotReady with the
        kubelet's own words (pods are left to the operator here)."""
        self.shutting_down[name] = _now()
        self.history.append((time.monotonic(), name, "shutting down"))
        await self._heartbeat(name)

    async def _heartbeat(self, name: str) -> None:
        renew = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": name, "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": renew},
        }
        await self.client.apply(
            codecs.from_dict(lease), field_manager="harness-kubelet", force=True
        )
        cond: dict[str, Any] = {"type": "Ready", "status": "True", "lastHeartbeatTime": _now()}
        if name in self.shutting_down:
            cond.update(
                {
                    "status": "False",
                    "reason": "KubeletNotReady",
                    "message": "node is shutting down",
                    "lastTransitionTime": self.shutting_down[name],
                }
            )
        await self.client.patch(
            Node.Status,
            name,
            {"status": {"conditions": [cond]}},
            patch_type=PatchType.STRATEGIC,
        )

    # --- pods -------------------------------------------------------------------------

    async def _watch_pods(self) -> None:
        async for kind, pod in self.client.watch(Pod, namespace="*", on_error=_retry):
            try:
                await self._on_pod(kind, pod.to_dict())
            except (ApiError, httpx.HTTPError, OSError) as err:
                print(f"harness kubelet: {err}")

    async def _on_pod(self, kind: str, pod: dict[str, Any]) -> None:
        meta = pod.get("metadata") or {}
        node = (pod.get("spec") or {}).get("nodeName")
        if node not in self.nodes:
            return
        key = (str(meta.get("namespace")), str(meta.get("name")))
        run = self.pods.get(key)
        if run is not None and run.uid != meta.get("uid"):
            run = None
        if kind == "DELETED":
            if run is not None and not run.terminating:
                # Removed without a graceful deletion (a force delete): the kubelet kills it.
                await self._kill(run)
            return
        if run is None:
            if meta.get("deletionTimestamp"):
                await self._remove(pod)
                return
            run = await self._start(pod, node)
            self.pods[key] = run
        run.gates = {
            c["type"]: c.get("status") == "True"
            for c in (pod.get("status") or {}).get("conditions") or []
            if c.get("type") in run.gate_types
        }
        if meta.get("deletionTimestamp") and not run.terminating:
            run.terminating = True
            self._tasks.append(asyncio.create_task(self._terminate(run, pod)))
        await self._report(run)

    async def _start(self, pod: dict[str, Any], node: str) -> Running:
        meta = pod["metadata"]
        container = pod["spec"]["containers"][0]
        port = free_port()
        n = next(self._ips)
        ip = f"10.250.{n // 250}.{n % 250 + 1}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FERRY_", "HF_"))}
        for var in container.get("env") or []:
            if "value" in var:
                env[var["name"]] = var["value"]
        if "FERRY_SPOT_METADATA_URL" in env:
            # The link-local metadata address is per instance: this node's.
            env["FERRY_SPOT_METADATA_URL"] = f"http://127.0.0.1:{self.nodes[node].port}{IMDS_PATH}"
        env.update(
            {
                "FERRY_MODEL": str(self.server().model_dir),
                "FERRY_HOST": "127.0.0.1",
                "FERRY_PORT": str(port),
                "FERRY_DEVICE": "cpu",
                "FERRY_LOG_LEVEL": self.log_level,
                "HF_HUB_OFFLINE": "1",
                "OMP_NUM_THREADS": "1",
                "TOKENIZERS_PARALLELISM": "false",
                "PYTHONUNBUFFERED": "1",
            }
        )
        log = self.workdir / f"{meta['namespace']}-{meta['name']}.log"
        with log.open("wb") as out:
            proc = await asyncio.create_subprocess_exec(
                str(self.server().python), "-m", "ferry_server", env=env, stdout=out, stderr=out
            )
        gate_types = tuple(g["conditionType"] for g in pod["spec"].get("readinessGates") or [])
        run = Running(
            namespace=meta["namespace"],
            name=meta["name"],
            uid=meta["uid"],
            node=node,
            ip=ip,
            port=port,
            proc=proc,
            log=log,
            started=time.monotonic(),
            gate_types=gate_types,
        )
        self.history.append((time.monotonic(), run.name, "started"))
        run.probe_task = asyncio.create_task(self._probe(run, container))
        return run

    async def _probe(self, run: Running, container: dict[str, Any]) -> None:
        """The pod's startup probe, then its readiness probe, at their own periods."""
        startup = container.get("startupProbe") or {}
        readiness = container.get("readinessProbe") or {}
        base = f"http://127.0.0.1:{run.port}"
        period = float(startup.get("periodSeconds", 10))
        while not run.terminating:
            if await self._get(f"{base}{startup.get('httpGet', {}).get('path', '/healthz')}"):
                break
            await asyncio.sleep(period)
        period = float(readiness.get("periodSeconds", 10))
        threshold = int(readiness.get("failureThreshold", 3))
        path = readiness.get("httpGet", {}).get("path", "/readyz")
        failures = 0
        while not run.terminating:
            if await self._get(f"{base}{path}"):
                failures = 0
                run.containers_ready = True
            else:
                failures += 1
                if failures >= threshold:
                    run.containers_ready = False
            await self._report(run)
            await asyncio.sleep(period)

    async def _get(self, url: str) -> bool:
        try:
            return (await self._http.get(url, timeout=1.0)).status_code == 200
        except httpx.HTTPError:
            return False

    async def _report(self, run: Running) -> None:
        """Pod status as a kubelet reports it: Ready needs the containers and every gate."""
        ready = (
            run.containers_ready
            and not run.terminating
            and all(run.gates.get(t, False) for t in run.gate_types)
        )
        if ready == run.reported_ready:
            return
        run.reported_ready = ready
        if ready and run.ready_at is None:
            run.ready_at = time.monotonic()
        self.history.append((time.monotonic(), run.name, "ready" if ready else "unready"))
        now = _now()
        status = {
            "phase": "Running",
            "hostIP": "127.0.0.1",
            "podIP": run.ip,
            "podIPs": [{"ip": run.ip}],
            "startTime": now,
            "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                {
                    "type": "ContainersReady",
                    "status": "True" if run.containers_ready else "False",
                    "lastTransitionTime": now,
                },
                {
                    "type": "Ready",
                    "status": "True" if ready else "False",
                    "lastTransitionTime": now,
                },
            ],
            "containerStatuses": [
                {
                    "name": "server",
                    "image": "ferry-model-server",
                    "imageID": "harness://ferry-model-server",
                    "ready": run.containers_ready,
                    "restartCount": 0,
                    "started": True,
                    "state": {"running": {"startedAt": now}},
                }
            ],
        }
        with contextlib.suppress(ApiError):
            await self.client.patch(
                Pod.Status,
                run.name,
                {"status": status},
                namespace=run.namespace,
                patch_type=PatchType.STRATEGIC,
            )

    async def _terminate(self, run: Running, pod: dict[str, Any]) -> None:
        """SIGTERM, wait for the process (SIGKILL after the grace period), remove the pod."""
        grace = (pod.get("metadata") or {}).get("deletionGracePeriodSeconds")
        if grace is None:
            grace = (pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
        run.sigterm_at = time.monotonic()
        self.history.append((run.sigterm_at, run.name, "sigterm"))
        if run.proc.returncode is None:
            run.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(run.proc.wait(), timeout=float(grace))
        except TimeoutError:
            run.proc.kill()
            await run.proc.wait()
            self.history.append((time.monotonic(), run.name, "killed"))
        with contextlib.suppress(ApiError):
            await self.client.delete(Pod, run.name, namespace=run.namespace, grace_period=0)
        run.gone_at = time.monotonic()
        self.history.append((run.gone_at, run.name, "gone"))

    async def _remove(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        with contextlib.suppress(ApiError):
            await self.client.delete(Pod, meta["name"], namespace=meta["namespace"], grace_period=0)

    async def _kill(self, run: Running) -> None:
        if run.proc.returncode is None:
            run.proc.kill()
            await run.proc.wait()
        if run.probe_task is not None:
            run.probe_task.cancel()

    def process_of(self, namespace: str, pod: str) -> Running | None:
        """The live process behind a pod, if this kubelet runs it."""
        run = self.pods.get((namespace, pod))
        return run if run is not None and run.proc.returncode is None else None

    # --- the operator's view of pod metrics --------------------------------------------

    def _proxy_app(self) -> Starlette:
        async def metrics(request: Request) -> Response:
            run = self.process_of(request.path_params["ns"], request.path_params["pod"])
            if run is None:
                return Response(status_code=404)
            try:
                upstream = await self._http.get(f"http://127.0.0.1:{run.port}/metrics")
            except httpx.HTTPError:
                return Response(status_code=502)
            return PlainTextResponse(upstream.text, status_code=upstream.status_code)

        return Starlette(routes=[Route("/pods/{ns}/{pod}/metrics", metrics)])

    @property
    def metrics_url(self) -> str:
        """What the operator's FERRY_POD_METRICS_URL should be."""
        return f"http://127.0.0.1:{self.proxy_port}/pods/{{namespace}}/{{name}}/metrics"
