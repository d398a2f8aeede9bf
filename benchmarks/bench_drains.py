"""Benchmark: drains and rollouts with 1,000 requests in flight, and a load step.

Run with `make bench-drains` (or `python benchmarks/bench_drains.py`). On one fresh
local control plane, with the process harness (`tests/harness`: real model-server
processes standing in for pods, a load generator routing like a Service to pods
ready in the EndpointSlice, pod deletion reaching the process as SIGTERM):

1. spot notice, 1 replica, `--inflight` requests in flight (default 1,000):
   - baseline: what today's tools do (aws-node-termination-handler, Karpenter,
     AKS): cordon the node and evict its pods through the eviction API, on a plain
     Deployment + Service + PodDisruptionBudget (maxUnavailable 1) running the same
     pod template, no Ferry in the loop;
   - Ferry: an InferenceEndpoint on spot; the node gets the termination handler's
     taint (`aws-node-termination-handler/spot-itn`).
   Figures: requests sent / failed, seconds with no ready endpoint, notice ->
   replacement Ready, notice -> last noticed pod gone.
2. rolling update (a new env value), 1 replica, the same load:
   - baseline: the plain Deployment with the model server's pre-D11 behaviour
     (`FERRY_DRAIN_PROPAGATION_S=0`: stop accepting at SIGTERM);
   - Ferry: the endpoint (readiness gate, maxUnavailable 0, the server's
     propagation delay).
   Figures: as above, update -> new pod Ready, update -> old pod gone.
3. load step, minReplicas 1, maxReplicas 3: 0 -> `--step` requests in flight;
   time until the Deployment asks for 3 replicas and until 3 are Ready, against
   one replica's cold start measured in the same run.

Ratios are Ferry / baseline. Not a test: nothing asserts.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.harness import Harness, Tally, Timeline, Traffic  # noqa: E402
from tests.integration import kit  # noqa: E402
from tests.unit.factories import endpoint as endpoint_model  # noqa: E402

from ferry import devcluster  # noqa: E402
from ferry.logic import manifests  # noqa: E402

GPU = "T4"
IMAGE = "ghcr.io/ferry-dev/inference-server:0.1.0"


def wait(check: Any, what: str, timeout: float = 300.0) -> Any:
    return kit.wait_for(check, what, timeout=timeout, every=0.2)


def plain(name: str, namespace: str, propagation: str | None = None) -> list[dict[str, Any]]:
    """The Deployment + Service + PDB a user without Ferry would run: Ferry's pod
    template without its readiness gate, the PDB Ferry used to render."""
    ep = endpoint_model(
        gpu={"type": GPU},
        spot={"policy": "spot", "drainGraceSeconds": 30},
        server={"image": IMAGE},
    )
    ep.metadata.namespace = namespace
    ep.metadata.uid = None
    dep = manifests.deployment(ep, name, 1)
    pod = dep["spec"]["template"]["spec"]
    pod.pop("readinessGates")
    if propagation is not None:
        pod["containers"][0]["env"].append(
            {"name": "FERRY_DRAIN_PROPAGATION_S", "value": propagation}
        )
    svc = manifests.service(ep, name)
    pdb = manifests.pod_disruption_budget(ep, name, 2)  # maxUnavailable: 1
    pdb["spec"].pop("unhealthyPodEvictionPolicy")
    for obj in (dep, svc, pdb):
        obj["metadata"]["labels"].pop("app.kubernetes.io/managed-by")
    dep["spec"]["template"]["metadata"]["labels"].pop("app.kubernetes.io/managed-by")
    return [dep, svc, pdb]


def ferry(name: str, **scaling: Any) -> dict[str, Any]:
    return kit.endpoint(
        name,
        gpu={"type": GPU},
        server={"image": IMAGE},
        scaling={"minReplicas": 1, "maxReplicas": 1, **scaling},
        spot={"policy": "spot", "drainGraceSeconds": 30},
    )


class Run:
    """One scenario's namespace, timeline and load."""

    def __init__(self, cluster: devcluster.Cluster, harness: Harness, name: str) -> None:
        self.cluster = cluster
        self.harness = harness
        self.ns = kit.Namespace(cluster, kit.unique(f"ferry-dr-{name}"))
        cluster.kubectl("create", "namespace", self.ns.name)
        self.line: Timeline = harness.timeline(self.ns.name)
        self.traffic: Traffic | None = None

    def serve(self, service: str, replicas: int = 1) -> Traffic:
        self.traffic = self.harness.traffic(self.ns.name, service)
        traffic = self.traffic
        wait(lambda: len(traffic.ready_pods()) == replicas, f"{replicas} ready endpoint(s)")
        return traffic

    def load(self, inflight: int) -> None:
        assert self.traffic is not None
        traffic = self.traffic
        self.harness.run(traffic.start(inflight))
        wait(lambda: traffic.inflight >= inflight * 0.95, f"{inflight} requests in flight")

    def finish(self) -> Tally:
        assert self.traffic is not None
        tally = self.harness.run(self.traffic.stop())
        self.harness.run(self.traffic.close())
        self.harness.run(self.line.stop())
        self.cluster.kubectl("delete", "namespace", self.ns.name, "--wait=false", check=False)
        return tally

    def pod_on(self, node: str) -> str:
        return next(p.name for p in self.line.pods.values() if p.node == node and not p.gone)

    def zero_ready_seconds(self, start: float, end: float) -> float:
        counts = [(t, c) for t, c in self.line.ready_counts if t <= end]
        total, last_t, last_c = 0.0, start, None
        for t, c in counts:
            if t < start:
                last_c = c
                continue
            if last_c == 0:
                total += t - last_t
            last_t, last_c = t, c
        if last_c == 0:
            total += end - last_t
        return total


def figures(run: Run, tally: Tally, start: float, old: str, end: float) -> dict[str, Any]:
    pods = run.line.pods
    doomed = pods[old]
    new = [p for p in pods.values() if p.name != old and p.created and p.created >= start]
    ready = min((p.ready for p in new if p.ready), default=None)
    gone = doomed.gone or doomed.deleting
    return {
        "sent": tally.sent,
        "failed": tally.failed + tally.connection_errors,
        "zero_ready_s": round(run.zero_ready_seconds(start, end), 1),
        "to_replacement_ready_s": round(ready - start, 1) if ready else None,
        "to_old_pod_gone_s": round(gone - start, 1) if gone else None,
    }


def notice(run: Run, node: str, baseline: bool) -> None:
    """A spot interruption notice for `node`, handled the baseline's way or Ferry's."""
    if baseline:
        # aws-node-termination-handler with its defaults: cordon, then drain.
        run.cluster.kubectl("cordon", node)
        run.cluster.kubectl(
            "drain", node, "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=300s"
        )
    else:
        run.cluster.kubectl(
            "taint", "node", node, "aws-node-termination-handler/spot-itn=bench:NoSchedule"
        )


def rollout(run: Run, node: str, baseline: bool) -> None:
    """A new pod template (one env value more): a rolling update."""
    if baseline:
        run.ns.kubectl("set", "env", "deployment/llm", "ROLL=2")
    else:
        ep = ferry("llm")
        ep["spec"]["server"]["env"] = [{"name": "ROLL", "value": "2"}]
        run.ns.apply(ep)


def disruption_scenario(
    cluster: devcluster.Cluster,
    harness: Harness,
    inflight: int,
    baseline: bool,
    disrupt: Any,
) -> dict[str, Any]:
    """One replica under `inflight` requests, disrupted; figures from the notice on."""
    spot = disrupt is notice
    # Both endpoints run on spot capacity: spot nodes for both scenarios.
    nodes = [harness.add_node(kit.unique("bench"), GPU, spot=True) for _ in range(2)]
    run = Run(cluster, harness, "base" if baseline else "ferry")
    try:
        if baseline:
            # Before D11 the server stopped accepting at SIGTERM: the rollout baseline.
            for obj in plain("llm", run.ns.name, propagation=None if spot else "0"):
                run.ns.apply(obj)
        else:
            run.ns.apply(ferry("llm"))
        run.serve("llm")
        run.load(inflight)
        node = next(p.node for p in run.line.pods.values() if p.ready and p.node)
        old = run.pod_on(node)
        start = time.monotonic()
        disrupt(run, node, baseline)
        wait(lambda: run.line.pods[old].gone is not None, "the old pod gone")
        wait(lambda: run.traffic is not None and len(run.traffic.ready_pods()) >= 1, "serving")
        time.sleep(2.0)
        end = time.monotonic()
        tally = run.finish()
        return figures(run, tally, start, old, end)
    finally:
        for name in nodes:
            harness.remove_node(name)


def step_scenario(cluster: devcluster.Cluster, harness: Harness, step: int) -> dict[str, Any]:
    nodes = [harness.add_node(kit.unique("bench"), GPU, spot=True) for _ in range(3)]
    run = Run(cluster, harness, "step")
    try:
        run.ns.apply(ferry("llm", maxReplicas=3, targetInflightRequests=8))
        run.serve("llm")
        first = next(p for p in run.line.pods.values() if p.ready)
        cold_start = (first.ready or 0) - (first.created or 0)
        start = time.monotonic()
        assert run.traffic is not None
        run.harness.run(run.traffic.start(step))

        def asked() -> bool:
            dep = run.ns.get("deployment", "llm") or {}
            return bool(dep.get("spec", {}).get("replicas", 0) >= 3)

        wait(asked, "the Deployment asks for 3 replicas")
        decided = time.monotonic() - start
        traffic = run.traffic
        wait(lambda: len(traffic.ready_pods()) == 3, "3 replicas ready")
        ready = time.monotonic() - start
        tally = run.finish()
        return {
            "sent": tally.sent,
            "failed": tally.failed + tally.connection_errors,
            "cold_start_s": round(cold_start, 1),
            "to_decision_s": round(decided, 1),
            "to_3_ready_s": round(ready, 1),
        }
    finally:
        for name in nodes:
            harness.remove_node(name)


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None:
        return "n/a"
    if b == 0:
        return "inf" if a else "1.00"
    return f"{a / b:.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inflight", type=int, default=1000, help="requests in flight (1000)")
    parser.add_argument("--step", type=int, default=200, help="load step, in flight (200)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-drains-"))
    with devcluster.connect_or_start() as cluster:
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
        harness = Harness(Path(cluster.kubeconfig_path), work).start()
        env = {
            "FERRY_DRAIN_INTERVAL": "0.5",
            "FERRY_AUTOSCALE_INTERVAL": "1",
            "FERRY_SCRAPE_TIMEOUT": "1",
            "FERRY_POD_METRICS_URL": harness.metrics_url,
        }
        op = kit.Operator(cluster, ["ferry-dr-*"], work / "operator.log", env=env)
        op.start()
        results: dict[str, Any] = {}
        try:
            for name, disrupt in (("notice", notice), ("rollout", rollout)):
                for baseline in (True, False):
                    label = f"{name}/{'baseline' if baseline else 'ferry'}"
                    print(f"running {label} ...", flush=True)
                    results[label] = disruption_scenario(
                        cluster, harness, args.inflight, baseline, disrupt
                    )
                    print(f"  {results[label]}", flush=True)
            print("running load step ...", flush=True)
            results["step/ferry"] = step_scenario(cluster, harness, args.step)
            print(f"  {results['step/ferry']}", flush=True)
        finally:
            op.stop()
            harness.stop()

    print()
    keys = ("sent", "failed", "zero_ready_s", "to_replacement_ready_s", "to_old_pod_gone_s")
    for name in ("notice", "rollout"):
        base, fer = results[f"{name}/baseline"], results[f"{name}/ferry"]
        print(f"{name} ({args.inflight} in flight)     baseline    ferry    ferry/baseline")
        for key in keys:
            print(f"  {key:24} {base[key]!s:>10} {fer[key]!s:>8}    {ratio(fer[key], base[key])}")
    step = results["step/ferry"]
    print(f"load step (0 -> {args.step} in flight, 1 -> 3 replicas)")
    for key in ("sent", "failed", "cold_start_s", "to_decision_s", "to_3_ready_s"):
        print(f"  {key:24} {step[key]!s:>10}")
    print(f"  to_3_ready / one cold start: {ratio(step['to_3_ready_s'], step['cold_start_s'])}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
