"""The drain and autoscaling controllers against the in-memory Kubernetes.

What they read (endpoint, Deployment, PodDisruptionBudget, pods, nodes) is put in
the fake; what they write is checked there. Clocks are variables; the load source
is a table the test fills.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from ferry import autoscaling, draining, sampling
from ferry.logic import drains, scaling
from ferry.providers import local
from tests.unit.fakekube import FakeKube

NS = "team-a"
T0 = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)


def endpoint(**scaling_spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "ferry.dev/v1alpha1",
        "kind": "InferenceEndpoint",
        "metadata": {"name": "llm", "uid": "uid-llm"},
        "spec": {
            "provider": "local",
            "model": {"uri": "hf://acme/tiny"},
            "server": {"image": "img"},
            "gpu": {"type": "L4"},
            "scaling": {"minReplicas": 1, "maxReplicas": 1, **scaling_spec},
            "spot": {"policy": "spot", "drainGraceSeconds": 30},
        },
    }


def cluster(replicas: int = 1, **scaling_spec: Any) -> FakeKube:
    kube = FakeKube()
    kube.put(endpoint(**scaling_spec))
    kube.put(
        {
            "kind": "Deployment",
            "metadata": {"name": "llm", "annotations": {scaling.NORMAL_ANNOTATION: str(replicas)}},
            "spec": {"replicas": replicas},
        }
    )
    kube.put({"kind": "PodDisruptionBudget", "metadata": {"name": "llm"}, "spec": {}})
    for name in ("spot-a", "spot-b"):
        kube.put({"kind": "Node", "metadata": {"name": name, "labels": {}}, "spec": {}})
    return kube


def add_pod(kube: FakeKube, name: str, node: str | None, *, ready: bool, gate: bool) -> None:
    conditions = [{"type": "Ready", "status": "True" if ready else "False"}]
    conditions.append({"type": drains.GATE, "status": "True" if gate else "False"})
    kube.put(
        {
            "kind": "Pod",
            "metadata": {
                "name": name,
                "labels": {
                    "app.kubernetes.io/name": "ferry-endpoint",
                    "app.kubernetes.io/instance": "llm",
                },
            },
            "spec": {"nodeName": node},
            "status": {"phase": "Running", "podIP": "10.0.0.9", "conditions": conditions},
        }
    )


def annotations(kube: FakeKube, kind: str) -> dict[str, str]:
    obj = kube.obj(kind, "llm")
    assert obj is not None
    result: dict[str, str] = obj["metadata"].get("annotations") or {}
    return result


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


async def test_drain_controller_runs_replacement_first_to_the_end() -> None:
    kube = cluster()
    add_pod(kube, "old", "spot-a", ready=True, gate=True)
    node = kube.objects[("Node", "", "spot-a")]
    node["spec"]["taints"] = [
        {"key": "aws-node-termination-handler/spot-itn", "effect": "NoSchedule"}
    ]
    clock = Clock()
    woken: list[str] = []
    drainer = draining.Drainer(
        kube, clock=clock, wake_autoscaler=lambda ns, n: woken.append(f"scale {n}")
    )

    outcome = await drainer.reconcile(NS, "llm")
    # 1. Replacement first: the autoscaler is asked for one replica more.
    assert annotations(kube, "PodDisruptionBudget")[scaling.SURGE_ANNOTATION] == "1"
    assert woken == ["scale llm"]
    assert kube.reasons() == ["TerminationNotice"]
    assert outcome.requeue_after is not None
    assert outcome.requeue_after <= 2.0
    surge, interruption = local.drain_state(kube.obj("PodDisruptionBudget", "llm"))
    assert surge == 1
    assert interruption is not None
    assert interruption.reason == "ReplacingNoticedReplicas"

    # The autoscaler raised the count; the replacement is up on the other node.
    kube.objects[("Deployment", NS, "llm")]["spec"]["replicas"] = 2
    add_pod(kube, "new", "spot-b", ready=True, gate=False)
    clock.now += timedelta(seconds=20)
    await drainer.reconcile(NS, "llm")
    pods = {p: kube.obj("Pod", p) for p in ("old", "new")}
    gates = {
        p: next(c["status"] for c in o["status"]["conditions"] if c["type"] == drains.GATE)
        for p, o in pods.items()
        if o
    }
    # 2. The new pod serves, the doomed one leaves service with the lowest deletion cost.
    assert gates == {"old": "False", "new": "True"}
    assert pods["old"]["metadata"]["annotations"][drains.DELETION_COST] == drains.DOOMED_COST  # type: ignore[index]
    assert kube.reasons()[-2:] == ["ReplacementReady", "OutOfService"]

    # 3. Out of service and unready: the count drops first (the ReplicaSet removes it).
    kube.objects[("Pod", NS, "old")]["status"]["conditions"][0]["status"] = "False"
    await drainer.reconcile(NS, "llm")
    assert annotations(kube, "PodDisruptionBudget")[scaling.SURGE_ANNOTATION] == "0"
    assert kube.evicted == []

    # The ReplicaSet removed it: the drain is over, with timings.
    kube.objects[("Deployment", NS, "llm")]["spec"]["replicas"] = 1
    del kube.objects[("Pod", NS, "old")]
    clock.now += timedelta(seconds=5)
    outcome = await drainer.reconcile(NS, "llm")
    assert outcome.requeue_after is None
    assert kube.reasons()[-2:] == ["PodDrained", "DrainComplete"]
    assert local.DRAIN_ANNOTATION not in annotations(kube, "PodDisruptionBudget")
    assert local.drain_state(kube.obj("PodDisruptionBudget", "llm")) == (None, None)


async def test_a_refused_eviction_is_retried_soon() -> None:
    kube = cluster(replicas=1)
    # A replacement still starting: evict first (the budget refuses, as a PDB would).
    add_pod(kube, "old", "spot-a", ready=False, gate=False)
    add_pod(kube, "new", None, ready=False, gate=True)
    kube.objects[("Node", "", "spot-a")]["spec"]["unschedulable"] = True
    kube.objects[("Node", "", "spot-a")]["metadata"]["labels"] = {
        "karpenter.sh/capacity-type": "spot"
    }
    kube.refuse_eviction.add("old")
    drainer = draining.Drainer(kube, clock=Clock())
    outcome = await drainer.reconcile(NS, "llm")
    assert ("evict", "Pod", "old", None) in kube.writes
    assert outcome.requeue_after is not None
    assert outcome.requeue_after <= 1.0


async def test_a_pods_own_notice_drains_its_node() -> None:
    kube = cluster()
    add_pod(kube, "old", "spot-a", ready=True, gate=True)
    drainer = draining.Drainer(kube, clock=Clock())
    assert drainer.report("spot-a", (T0 + timedelta(seconds=90)).timestamp(), "old")
    assert not drainer.report("spot-a", (T0 + timedelta(seconds=90)).timestamp(), "old")
    await drainer.reconcile(NS, "llm")
    record = json.loads(annotations(kube, "PodDisruptionBudget")[local.DRAIN_ANNOTATION])
    assert record["record"]["nodes"]["spot-a"]["style"] == "pod-report"
    assert record["record"]["nodes"]["spot-a"]["deadline"] == "2026-11-30T12:01:30.000Z"


async def test_new_pods_get_their_gate_and_nothing_else_happens() -> None:
    kube = cluster()
    add_pod(kube, "p", "spot-a", ready=False, gate=False)
    drainer = draining.Drainer(kube, clock=Clock())
    outcome = await drainer.reconcile(NS, "llm")
    assert outcome.requeue_after is None
    assert [w for w in kube.writes if w[0] != "condition"] == []
    assert ("condition", "Pod", f"p:{drains.GATE}=True", None) in kube.writes


class Loads:
    """A load source answering from a table: pod -> (inflight, queue, notice deadline)."""

    name = "table"

    def __init__(self) -> None:
        self.table: dict[str, tuple[float, float, float]] = {}

    async def sample(self, namespace: str, pods: list[dict[str, Any]]) -> list[sampling.PodLoad]:
        out = []
        for p in pods:
            name = p["metadata"]["name"]
            if name in self.table:
                i, q, d = self.table[name]
                out.append(sampling.PodLoad(name, p["spec"].get("nodeName"), i, q, d))
        return out

    async def close(self) -> None:
        pass


async def test_autoscaler_writes_count_plus_surge_as_the_one_writer() -> None:
    kube = cluster(replicas=1, maxReplicas=3, targetInflightRequests=4)
    add_pod(kube, "p1", "spot-a", ready=True, gate=True)
    loads = Loads()
    loads.table["p1"] = (10, 0, 0)
    now = [100.0]
    scaler = autoscaling.Autoscaler(kube, loads, interval=5, clock=lambda: now[0])
    outcome = await scaler.reconcile(NS, "llm")
    dep = kube.obj("Deployment", "llm")
    assert dep is not None
    assert dep["spec"]["replicas"] == 3  # ceil(10/4), capped at maxReplicas
    assert dep["metadata"]["annotations"][scaling.NORMAL_ANNOTATION] == "3"
    assert ("patch", "Deployment", "llm", scaling.FIELD_MANAGER) in kube.writes
    assert kube.reasons() == ["Scaled"]
    assert outcome.requeue_after == 5

    # A drain asks for one more: replicas carry it above maxReplicas, the count stays 3.
    kube.objects[("PodDisruptionBudget", NS, "llm")]["metadata"]["annotations"] = {
        scaling.SURGE_ANNOTATION: "1"
    }
    now[0] += 1  # fresh sample: decided on the history it has
    await scaler.reconcile(NS, "llm")
    dep = kube.obj("Deployment", "llm")
    assert dep is not None
    assert (dep["spec"]["replicas"], dep["metadata"]["annotations"][scaling.NORMAL_ANNOTATION]) == (
        4,
        "3",
    )


async def test_autoscaler_never_writes_under_an_external_autoscaler_but_passes_notices() -> None:
    kube = cluster(replicas=5, maxReplicas=3, autoscaler="external")
    add_pod(kube, "p1", "spot-a", ready=True, gate=True)
    loads = Loads()
    loads.table["p1"] = (1, 0, 1.8e9)
    told: list[tuple[str, float, str]] = []
    scaler = autoscaling.Autoscaler(
        kube, loads, clock=lambda: 0.0, on_notice=lambda *a: told.append(a)
    )
    await scaler.reconcile(NS, "llm")
    assert [w for w in kube.writes if w[1] == "Deployment"] == []
    assert told == [("spot-a", 1.8e9, "p1")]


async def test_autoscaler_without_load_keeps_the_count_within_bounds() -> None:
    kube = cluster(replicas=7, maxReplicas=3)
    scaler = autoscaling.Autoscaler(kube, Loads(), clock=lambda: 0.0)
    await scaler.reconcile(NS, "llm")
    dep = kube.obj("Deployment", "llm")
    assert dep is not None
    assert dep["spec"]["replicas"] == 3
