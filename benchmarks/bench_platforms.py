"""Benchmark: remote endpoints in the sandbox, in steady state and under a burst of changes.

Run with `make bench-platforms` (or `python benchmarks/bench_platforms.py -n 300`). In one
run, on one fresh local control plane and one `ferry sandbox` (inference off):

1. N endpoints on the sandbox's platforms are created and brought to Ready;
2. steady state: the fakes' call counters are reset and read again after
   `--intervals` poll intervals: platform calls per endpoint per poll interval, by
   route, against the D4 budget (decisions.md) printed beside them as the baseline,
   and the number of writes (which must be none);
3. changes: `--rate` spec changes per second (maxReplicas of distinct endpoints)
   are patched into the API server; for each, the time from the patch to the first
   moment the change is visible on the fake (polled every `--probe` seconds), against
   a baseline measured at the same time: the time from the patch until a plain watch
   on the API server sees it (the floor for any controller);
4. the operator's RSS: idle before the endpoints exist, in steady state, and the peak.

Not a test: nothing asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
from lightkube import AsyncClient, KubeConfig, codecs
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.core_v1 import Namespace
from lightkube.types import PatchType

from ferry import devcluster, sandboxing

ROOT = Path(__file__).resolve().parents[1]
IEP = create_namespaced_resource("ferry.dev", "v1alpha1", "InferenceEndpoint", "inferenceendpoints")
# Registered so that codecs.from_dict can load the sandbox's ProviderConfig.
PROVIDER_CONFIG = create_namespaced_resource(
    "ferry.dev", "v1alpha1", "ProviderConfig", "providerconfigs"
)
NS = "bench-platforms"
#: Reads per endpoint per poll interval that D4 allows, by platform (shared catalogue
#: reads per ProviderConfig are added separately).
# Replicate: the deployment; shared, the hardware list (read only when a create or an
# update sends hardware, so none in steady state).
# Modal: the function, its autoscaler settings and its stats; nothing shared.
D4_PER_ENDPOINT = {"runpod": 2, "replicate": 1, "modal": 3}
D4_SHARED = {"runpod": 1, "replicate": 1, "modal": 0}
WRITES = ("POST", "PATCH", "PUT", "DELETE")


#: What each platform's endpoints run (the rest of the spec is the same for all).
SPECS: dict[str, dict[str, Any]] = {
    "runpod": {
        "model": {"uri": "hf://ferry-dev/tiny-llm"},
        "server": {"image": "ghcr.io/ferry-dev/inference-server:0.1.0"},
        "gpu": {"type": "L4"},
    },
    "replicate": {"model": {"providerRef": "ferry-dev/tiny-llm"}, "gpu": {"type": "L40S"}},
    "modal": {
        "model": {"uri": "hf://ferry-dev/tiny-llm"},
        "server": {"image": "ghcr.io/ferry-dev/inference-server:0.1.0"},
        "gpu": {"type": "L4"},
    },
}


def endpoint(platform: str, i: int) -> dict[str, Any]:
    return {
        "apiVersion": "ferry.dev/v1alpha1",
        "kind": "InferenceEndpoint",
        "metadata": {"name": f"{platform}-{i}", "namespace": NS},
        "spec": {
            "provider": platform,
            **SPECS[platform],
            "scaling": {"minReplicas": 0, "maxReplicas": 2},
            "providerConfigRef": {"name": platform},
        },
    }


class RssSampler(threading.Thread):
    """Samples a process's RSS every 100 ms; keeps the peak and the latest."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.peak = 0
        self.last = 0
        self.running = True

    def run(self) -> None:
        while self.running:
            try:
                self.last = self.proc.memory_info().rss
            except psutil.Error:
                return
            self.peak = max(self.peak, self.last)
            time.sleep(0.1)


class Fake:
    """One platform fake of the sandbox: its counters and its endpoints' state."""

    def __init__(self, urls: dict[str, Any]) -> None:
        self.api = urls["api"]
        self.http = httpx.AsyncClient(
            headers={"Authorization": f"Bearer {urls['token']}"}, timeout=30
        )

    async def calls(self) -> dict[tuple[str, str], int]:
        rows = (await self.http.get(f"{self.api}/_sandbox/calls")).json()["calls"]
        return {(r["method"], r["route"]): int(r["count"]) for r in rows}

    async def reset_calls(self) -> None:
        await self.http.delete(f"{self.api}/_sandbox/calls")

    async def max_workers(self) -> dict[str, int]:
        """uid tag -> workers.max as the fake holds it (an admin-free platform read)."""
        listed = (await self.http.get(f"{self.api}/v2/serverless")).json()["endpoints"]
        return {e["env"].get("FERRY_ENDPOINT_UID", ""): int(e["workers"]["max"]) for e in listed}


def cpu_seconds(operator: int, sandbox: int) -> dict[str, float]:
    """CPU seconds used so far by the operator, the sandbox and the control plane."""
    found: dict[str, float] = {"operator": 0.0, "sandbox": 0.0, "kube-apiserver+etcd": 0.0}
    for proc in psutil.process_iter(["pid", "name"]):
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        used = times.user + times.system
        if proc.pid == operator:
            found["operator"] += used
        elif proc.pid == sandbox:
            found["sandbox"] += used
        elif proc.info["name"] in ("kube-apiserver", "etcd"):
            found["kube-apiserver+etcd"] += used
    return found


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class ReplicateFake(Fake):
    """The Replicate fake: deployments are named after their endpoints, not tagged."""

    async def max_workers(self) -> dict[str, int]:
        """endpoint name -> max_instances as the fake holds it (platform reads, every page)."""
        found: dict[str, int] = {}
        url: str | None = f"{self.api}/v1/deployments"
        while url:
            page = (await self.http.get(url)).json()
            for d in page["results"]:
                name = str(d["name"]).removeprefix(f"ferry-{NS}-")
                found[name] = int(d["current_release"]["configuration"]["max_instances"])
            url = page.get("next")
        return found


class ModalFake(Fake):
    """The Modal fake: gRPC has no verbs, so its read-only RPCs count as reads (GET) and the
    rest as writes (POST); its admin routes are on its web port; apps are named after their
    endpoints."""

    READS = frozenset(
        {"FunctionGet", "FunctionGetSchedulingParams", "FunctionGetCurrentStats", "AppGetLayout"}
        | {"AppGetByDeploymentName"}
    )

    def __init__(self, urls: dict[str, Any]) -> None:
        super().__init__({**urls, "api": urls["admin"].removesuffix("/_sandbox")})

    async def calls(self) -> dict[tuple[str, str], int]:
        found: dict[tuple[str, str], int] = {}
        for (_, route), count in (await super().calls()).items():
            rpc = route.rsplit("/", 1)[-1]
            found[("GET" if rpc in self.READS else "POST", rpc)] = count
        return found

    async def max_workers(self) -> dict[str, int]:
        """endpoint name -> max_containers in force (the admin view, not a platform call)."""
        state = (await self.http.get(f"{self.api}/_sandbox/state")).json()
        return {
            str(app["name"]).removeprefix(f"ferry-{NS}-"): int(
                app["functions"]["serve"]["settings"]["maxContainers"]
            )
            for app in state["apps"]
            if app["state"] == "deployed"
        }


FAKES: dict[str, type[Fake]] = {"replicate": ReplicateFake, "modal": ModalFake}


async def wait_ready(client: AsyncClient, n: int, limit: float) -> float:
    began = time.monotonic()
    last = -1
    while time.monotonic() - began < limit:
        ready = 0
        async for obj in client.list(IEP, namespace=NS):
            conds = (obj.get("status") or {}).get("conditions") or []
            ready += any(c["type"] == "Ready" and c["status"] == "True" for c in conds)
        if ready != last:
            print(f"  Ready: {ready}/{n} after {time.monotonic() - began:.1f}s", flush=True)
            last = ready
        if ready >= n:
            return time.monotonic() - began
        await asyncio.sleep(2)
    raise SystemExit(f"only {last}/{n} endpoints Ready after {limit:.0f}s")


async def changes(
    client: AsyncClient, fakes: dict[str, Fake], uids: dict[str, str], rate: float, probe: float
) -> tuple[list[float], list[float]]:
    """Patch maxReplicas 2 -> 3 on every endpoint at `rate`/s; return (ferry, watch) latencies."""
    patched: dict[str, float] = {}
    seen_fake: dict[str, float] = {}
    seen_watch: dict[str, float] = {}
    done = asyncio.Event()

    async def watch() -> None:
        async for _, obj in client.watch(IEP, namespace=NS):
            name = obj.metadata.name  # type: ignore[union-attr]
            spec = obj.get("spec") or {}
            scaled = (spec.get("scaling") or {}).get("maxReplicas") == 3
            if name in patched and name not in seen_watch and scaled:
                seen_watch[name] = time.monotonic()
            if done.is_set():
                return

    async def poll_fake() -> None:
        by_uid = {uid: name for name, uid in uids.items()}
        while len(seen_fake) < len(uids):
            now = time.monotonic()
            for fake in fakes.values():
                # Keyed by the uid tag (RunPod) or by the endpoint's name (Replicate).
                for key, value in (await fake.max_workers()).items():
                    name = by_uid.get(key, key)
                    if name in uids and value == 3 and name not in seen_fake:
                        seen_fake[name] = now
            await asyncio.sleep(probe)

    watcher = asyncio.create_task(watch())
    poller = asyncio.create_task(poll_fake())
    await asyncio.sleep(1)  # the watch is established
    gap = 1.0 / rate
    began = time.monotonic()
    for i, name in enumerate(uids):
        await asyncio.sleep(max(0.0, began + i * gap - time.monotonic()))
        patched[name] = time.monotonic()
        await client.patch(
            IEP,
            name,
            {"spec": {"scaling": {"maxReplicas": 3}}},
            namespace=NS,
            patch_type=PatchType.MERGE,
        )
    await asyncio.wait_for(poller, timeout=600)
    done.set()
    watcher.cancel()
    ferry = [seen_fake[n] - patched[n] for n in uids]
    watch_lat = [seen_watch[n] - patched[n] for n in uids if n in seen_watch]
    return ferry, watch_lat


async def bench(
    cluster: devcluster.Cluster, urls: dict[str, Any], args: argparse.Namespace
) -> None:
    client = AsyncClient(config=KubeConfig.from_file(cluster.kubeconfig_path))
    await client.create(Namespace(metadata={"name": NS}))  # type: ignore[arg-type]
    platforms = args.platforms.split(",")
    for platform in platforms:
        for doc in sandboxing.provider_objects(urls, platform, platform, NS):
            await client.create(codecs.from_dict(doc))  # type: ignore[call-overload]
    fakes = {p: FAKES.get(p, Fake)(urls[p]) for p in platforms}

    log = Path(tempfile.mkdtemp()) / "operator.log"
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig_path)}
    cmd = [sys.executable, "-m", "ferry", "run", "-n", NS, "--metrics-port", "0"]
    cmd += ["--poll-interval", str(args.poll)]
    with log.open("wb") as out:
        operator = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)  # noqa: ASYNC220
    sampler = RssSampler(operator.pid)
    sampler.start()
    try:
        await asyncio.sleep(3)
        idle_rss = sampler.last
        docs = [endpoint(p, i) for p in platforms for i in range(args.n // len(platforms))]
        print(f"creating {len(docs)} endpoints on {', '.join(platforms)}", flush=True)
        gate = asyncio.Semaphore(50)

        async def create(doc: dict[str, Any]) -> None:
            async with gate:
                await client.create(codecs.from_dict(doc))  # type: ignore[call-overload]

        await asyncio.gather(*(create(d) for d in docs))
        t_ready = await wait_ready(client, len(docs), args.timeout)

        # Let the creation burst's requeues die down before counting.
        await asyncio.sleep(args.poll * 1.5)
        for fake in fakes.values():
            await fake.reset_calls()
        window = args.poll * args.intervals
        print(f"steady state: counting platform calls for {window:.0f}s", flush=True)
        await asyncio.sleep(window)
        counts = {p: await f.calls() for p, f in fakes.items()}
        steady_rss = sampler.last

        uids: dict[str, str] = {}
        async for obj in client.list(IEP, namespace=NS):
            uids[obj.metadata.name] = obj.metadata.uid  # type: ignore[union-attr,index]
        print(f"changes: {len(uids)} patches at {args.rate:.0f}/s", flush=True)
        cpu_before = cpu_seconds(operator.pid, args.sandbox_pid)
        began = time.monotonic()
        ferry_lat, watch_lat = await changes(client, fakes, uids, args.rate, args.probe)
        wall = time.monotonic() - began
        cpu = {k: v - cpu_before[k] for k, v in cpu_seconds(operator.pid, args.sandbox_pid).items()}
    finally:
        sampler.running = False
        operator.terminate()
        operator.wait(timeout=30)
        await client.close()

    mib = 1024 * 1024
    n = len(docs)
    print()
    print(f"endpoints: {n}; Ready after {t_ready:.1f}s; poll interval {args.poll:.0f}s")
    for platform, table in counts.items():
        per = n // len(platforms)
        total_reads = sum(v for (m, _), v in table.items() if m == "GET")
        writes = sum(v for (m, _), v in table.items() if m in WRITES)
        per_ep = total_reads / per / args.intervals
        budget = D4_PER_ENDPOINT[platform] + D4_SHARED[platform] / per
        print(
            f"\n{platform}: calls per endpoint per poll interval, over {args.intervals} intervals"
        )
        for (method, route), value in sorted(table.items()):
            print(f"  {method:<6} {route:<40} {value / per / args.intervals:>8.3f}")
        print(f"  {'all reads':<47} {per_ep:>8.3f}")
        print(f"  {'D4 budget (baseline)':<47} {budget:>8.3f}")
        print(f"  {'ratio reads / budget':<47} {per_ep / budget:>8.2f}")
        print(f"  {'writes in steady state':<47} {writes:>8d}")
    p50, p99 = percentile(ferry_lat, 0.5), percentile(ferry_lat, 0.99)
    w50, w99 = percentile(watch_lat, 0.5), percentile(watch_lat, 0.99)
    print(f"\napply -> PATCH at the fake, {len(ferry_lat)} changes at {args.rate:.0f}/s")
    print(f"  ferry           p50 {p50 * 1000:8.0f} ms   p99 {p99 * 1000:8.0f} ms")
    for platform in platforms:
        lat = [v for n, v in zip(uids, ferry_lat, strict=True) if n.startswith(f"{platform}-")]
        q50, q99 = percentile(lat, 0.5), percentile(lat, 0.99)
        print(f"    {platform:<13} p50 {q50 * 1000:8.0f} ms   p99 {q99 * 1000:8.0f} ms")
    print(f"  watch baseline  p50 {w50 * 1000:8.0f} ms   p99 {w99 * 1000:8.0f} ms")
    print(f"  ratio           p50 {p50 / w50:8.1f}x     p99 {p99 / w99:8.1f}x")
    print(f"  (the fake is polled every {args.probe * 1000:.0f} ms: latencies carry that much)")
    print(f"  mean ferry latency {statistics.mean(ferry_lat) * 1000:.0f} ms")
    shares = ", ".join(f"{k} {v / wall:.0%}" for k, v in cpu.items())
    print(f"  CPU during the changes ({wall:.1f}s wall, 2 cores = 200%): {shares}")
    print(f"\noperator RSS: idle {idle_rss / mib:.1f} MiB, steady {steady_rss / mib:.1f} MiB,")
    print(f"  peak {sampler.peak / mib:.1f} MiB")
    print(f"operator log: {log}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=300, help="endpoints (default 300)")
    parser.add_argument(
        "--platforms",
        default="runpod,replicate,modal",
        help="comma-separated platforms the endpoints are spread over (default all three)",
    )
    parser.add_argument("--poll", type=float, default=30.0, help="operator poll interval (s)")
    parser.add_argument("--intervals", type=int, default=3, help="poll intervals to count")
    parser.add_argument("--rate", type=float, default=100.0, help="spec changes per second")
    parser.add_argument("--probe", type=float, default=0.1, help="fake polling period (s)")
    parser.add_argument("--timeout", type=float, default=900.0)
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="bench-platforms-"))
    sandbox = sandboxing.SandboxProcess(state, ["--inference", "off"])
    urls = sandbox.start()
    assert sandbox.proc is not None
    args.sandbox_pid = sandbox.proc.pid
    try:
        with devcluster.DevCluster() as cluster:
            cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
            cluster.kubectl(
                "wait", "--for=condition=Established", "crd/inferenceendpoints.ferry.dev"
            )
            asyncio.run(bench(cluster, urls, args))
    finally:
        sandbox.stop()
    print(f"sandbox log: {sandbox.log_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
