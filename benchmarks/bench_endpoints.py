"""Benchmark: 1,000 local endpoints at once, against 1,000 plain Deployments.

Run with `make bench-operator` (or `python benchmarks/bench_endpoints.py -n 1000`).
In one run, on one fresh local control plane with enough simulated GPU nodes:

1. baseline: create N plain Deployments (1 GPU pod each) straight against the API
   server, as fast as the client allows, and time until all are Available;
   then the same for the exact Deployment + Service + PDB Ferry renders per
   endpoint, to separate the operator's overhead from the cluster's extra work;
2. Ferry: create N InferenceEndpoints at once with the operator running as a
   subprocess, time until every one reports Ready=True, and sample the operator's
   peak RSS.

It prints the times and the ratios. Not a test: nothing asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
from lightkube import AsyncClient, KubeConfig, codecs
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import Namespace

from ferry import devcluster
from ferry.api.v1alpha1 import types
from ferry.devcluster import nodes
from ferry.logic import manifests

ROOT = Path(__file__).resolve().parents[1]
IEP = create_namespaced_resource("ferry.dev", "v1alpha1", "InferenceEndpoint", "inferenceendpoints")


def plain_deployment(i: int) -> dict[str, Any]:
    labels = {"app": f"plain-{i}"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": f"plain-{i}", "namespace": "bench-baseline"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "server",
                            "image": "ghcr.io/ferry-dev/inference-server:0.1.0",
                            "resources": {"limits": {"nvidia.com/gpu": "1"}},
                        }
                    ],
                    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
                },
            },
        },
    }


def same_objects(i: int) -> list[dict[str, Any]]:
    """The Deployment, Service and PDB Ferry would make for endpoint i, made by hand."""
    ep = types.InferenceEndpoint.model_validate(
        {**endpoint(i), "metadata": {"name": f"direct-{i}", "namespace": "bench-direct"}}
    )
    name = ep.metadata.name
    return [
        manifests.deployment(ep, name, 1),
        manifests.service(ep, name),
        manifests.pod_disruption_budget(ep, name),
    ]


def endpoint(i: int) -> dict[str, Any]:
    return {
        "apiVersion": "ferry.dev/v1alpha1",
        "kind": "InferenceEndpoint",
        "metadata": {"name": f"ep-{i}", "namespace": "bench-ferry"},
        "spec": {
            "provider": "local",
            "model": {"uri": "hf://ferry-dev/tiny-llm"},
            "server": {"image": "ghcr.io/ferry-dev/inference-server:0.1.0"},
            "gpu": {"type": "L4"},
            "scaling": {"minReplicas": 1, "maxReplicas": 1},
        },
    }


async def create_all(client: AsyncClient, docs: list[dict[str, Any]], concurrency: int) -> float:
    gate = asyncio.Semaphore(concurrency)
    began = time.monotonic()

    async def one(doc: dict[str, Any]) -> None:
        async with gate:
            await client.create(codecs.from_dict(doc))  # type: ignore[call-overload]

    await asyncio.gather(*(one(d) for d in docs))
    return time.monotonic() - began


async def wait_all(count: int, check: Any, what: str, limit: float) -> float:
    began = time.monotonic()
    last = -1
    while time.monotonic() - began < limit:
        done = await check()
        if done != last:
            print(f"  {what}: {done}/{count} after {time.monotonic() - began:.1f}s", flush=True)
            last = done
        if done >= count:
            return time.monotonic() - began
        await asyncio.sleep(2.0)  # listing 1,000 objects is not free either
    raise SystemExit(f"{what}: only {last}/{count} after {limit:.0f}s")


class RssSampler(threading.Thread):
    """Samples a process's RSS every 100 ms and keeps the peak."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.peak = 0
        self.running = True

    def run(self) -> None:
        while self.running:
            try:
                self.peak = max(self.peak, self.proc.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.1)


async def bench(cluster: devcluster.Cluster, n: int, concurrency: int, limit: float) -> None:
    client = AsyncClient(config=KubeConfig.from_file(cluster.kubeconfig_path))
    for ns in ("bench-baseline", "bench-direct", "bench-ferry"):
        await client.create(Namespace(metadata={"name": ns}))  # type: ignore[arg-type]

    async def baseline(namespace: str, docs: list[dict[str, Any]], what: str) -> float:
        print(f"{what}: creating {len(docs)} objects (concurrency {concurrency})", flush=True)
        t_create = await create_all(client, docs, concurrency)

        async def available() -> int:
            count = 0
            async for d in client.list(Deployment, namespace=namespace):
                count += ((d.status and d.status.availableReplicas) or 0) >= 1
            return count

        total = t_create + await wait_all(n, available, "Deployments available", limit)
        print(f"{what}: created in {t_create:.1f}s, all available after {total:.1f}s", flush=True)
        return total

    t_base = await baseline(
        "bench-baseline", [plain_deployment(i) for i in range(n)], "baseline (plain Deployments)"
    )
    t_same = await baseline(
        "bench-direct",
        [doc for i in range(n) for doc in same_objects(i)],
        "baseline (Ferry's objects, created directly)",
    )

    log = Path(tempfile.mkdtemp()) / "operator.log"
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig_path)}
    cmd = [sys.executable, "-m", "ferry", "run", "-n", "bench-ferry", "--metrics-port", "0"]
    with log.open("wb") as out:
        # Started once, before the timed part; a blocking Popen is fine here.
        operator = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)  # noqa: ASYNC220
    sampler = RssSampler(operator.pid)
    sampler.start()
    try:
        await asyncio.sleep(3)  # let the operator list and watch before the burst
        idle_rss = sampler.peak
        print(f"ferry: creating {n} InferenceEndpoints (concurrency {concurrency})", flush=True)
        began = time.monotonic()
        t_iep_create = await create_all(client, [endpoint(i) for i in range(n)], concurrency)

        async def ready() -> int:
            count = 0
            async for obj in client.list(IEP, namespace="bench-ferry"):
                conds = (obj.get("status") or {}).get("conditions") or []
                count += any(c["type"] == "Ready" and c["status"] == "True" for c in conds)
            return count

        await wait_all(n, ready, "endpoints Ready", limit)
        t_ferry = time.monotonic() - began
    finally:
        sampler.running = False
        operator.terminate()
        operator.wait(timeout=30)
        await client.close()

    mib = 1024 * 1024
    print()
    print(f"{'measure':<44}{'value':>12}")
    print(f"{'endpoints / deployments':<44}{n:>12}")
    print(f"{'baseline: plain Deployments all available (s)':<44}{t_base:>12.1f}")
    print(f"{'ferry: endpoints created (s)':<44}{t_iep_create:>12.1f}")
    print(f"{'ferry: endpoints all Ready (s)':<44}{t_ferry:>12.1f}")
    print(f"{'ratio ferry / baseline':<44}{t_ferry / t_base:>12.2f}")
    print(f"{'same objects created directly (s)':<44}{t_same:>12.1f}")
    print(f"{'ratio ferry / same objects directly':<44}{t_ferry / t_same:>12.2f}")
    print(f"{'operator RSS idle (MiB)':<44}{idle_rss / mib:>12.1f}")
    print(f"{'operator peak RSS (MiB)':<44}{sampler.peak / mib:>12.1f}")
    print(f"operator log: {log}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1000, help="endpoints to create (default 1000)")
    parser.add_argument("--concurrency", type=int, default=50, help="parallel creates")
    parser.add_argument("--timeout", type=float, default=1800.0)
    args = parser.parse_args()
    # Dense nodes keep the node count (and kwok's heartbeats) low: this measures
    # the control loop, not the scheduler's bin packing.
    gpus_per_node = 64
    node_count = (3 * args.n) // gpus_per_node + 2  # room for all three runs at once
    pool = nodes.NodePool(
        name="bench", gpu_type="L4", count=node_count, gpus_per_node=gpus_per_node
    )
    with devcluster.DevCluster(pools=[pool]) as cluster:
        cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
        cluster.kubectl("wait", "--for=condition=Established", "crd/inferenceendpoints.ferry.dev")
        asyncio.run(bench(cluster, args.n, args.concurrency, args.timeout))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
