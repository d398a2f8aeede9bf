"""Drains on the local control plane with kwok spot and on-demand GPU nodes.

Each test adds its own L40S nodes (one GPU each, so where a pod can go is known)
and removes them after. Ferry's events give the order it claims; the cluster's own
watch (`Timeline`: when each pod became Ready, when it got a deletion timestamp,
how many endpoints the Service had ready) is what the assertions trust.
Timings here are kwok's (pods Ready at once): drain timings come from the process
harness (test_drains_requests.py, benchmarks/bench_drains.py).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ferry import devcluster
from tests.harness import Harness, Timeline, fixtures
from tests.integration import kit

# This module's operator, namespaces, harness and nodes (tests.harness.fixtures).
operator = fixtures.operator
ns = fixtures.ns
harness = fixtures.harness
kwok_nodes = fixtures.kwok_nodes

GPU = "L40S"
ORDER = ["TerminationNotice", "ReplacementReady", "OutOfService", "PodDrained", "DrainComplete"]


def spot_endpoint(name: str, **scaling: Any) -> dict[str, Any]:
    return kit.endpoint(
        name,
        gpu={"type": GPU},
        scaling={"minReplicas": 1, "maxReplicas": 1, **scaling},
        spot={"policy": "spot", "drainGraceSeconds": 5},
    )


def ready(ns: kit.Namespace, name: str) -> dict[str, Any] | None:
    obj = ns.get("inferenceendpoint", name)
    cond = kit.condition(obj, "Ready")
    return obj if cond and cond["status"] == "True" else None


def pod_node(ns: kit.Namespace, name: str) -> str:
    pods = [
        p
        for p in ns.items("pods", f"app.kubernetes.io/instance={name}")
        if not p["metadata"].get("deletionTimestamp")
    ]
    assert len(pods) == 1, pods
    node: str = pods[0]["spec"]["nodeName"]
    return node


def ferry_events(ns: kit.Namespace, name: str) -> list[dict[str, Any]]:
    """Ferry's events on the endpoint, in the order they were posted (eventTime, µs)."""
    events = [e for e in ns.events(name) if e.get("reportingComponent") == "ferry.dev/operator"]
    return sorted(events, key=lambda e: e.get("eventTime") or e.get("firstTimestamp") or "")


def reasons(ns: kit.Namespace, name: str) -> list[str]:
    return [e["reason"] for e in ferry_events(ns, name)]


def drained(ns: kit.Namespace, name: str) -> list[str] | None:
    found = reasons(ns, name)
    return found if "DrainComplete" in found else None


def kubectl(cluster: devcluster.Cluster, *args: str) -> None:
    cluster.kubectl(*args)


def _in_two_minutes() -> str:
    return (datetime.now(UTC) + timedelta(seconds=120)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _nth_taint(c: devcluster.Cluster, node: str) -> None:
    kubectl(c, "taint", "node", node, "aws-node-termination-handler/spot-itn=i-1:NoSchedule")


def _nth_cordon_and_label(c: devcluster.Cluster, node: str) -> None:
    # aws-node-termination-handler with tainting off (its default).
    kubectl(c, "label", "node", node, "aws-node-termination-handler/event-id=spot-itn-1")
    kubectl(c, "cordon", node)


def _karpenter(c: devcluster.Cluster, node: str) -> None:
    kubectl(c, "taint", "node", node, "karpenter.sh/disrupted:NoSchedule")


def _aks(c: devcluster.Cluster, node: str) -> None:
    kubectl(c, "taint", "node", node, "remediator.kubernetes.azure.com/unschedulable=t:NoSchedule")
    kubectl(c, "cordon", node)


def _cordon(c: devcluster.Cluster, node: str) -> None:
    kubectl(c, "cordon", node)


def _annotation(c: devcluster.Cluster, node: str) -> None:
    kubectl(c, "annotate", "node", node, f"ferry.dev/termination-notice={_in_two_minutes()}")


# GKE's graceful node shutdown and a model server's own report need a kubelet that
# can say so: see test_drains_requests.py.
NOTICES: dict[str, Callable[[devcluster.Cluster, str], None]] = {
    "nth-spot-itn-taint": _nth_taint,
    "nth-cordon-and-label": _nth_cordon_and_label,
    "karpenter-disrupted": _karpenter,
    "aks-remediator": _aks,
    "plain-cordon-of-spot": _cordon,
    "ferry-annotation": _annotation,
}


@pytest.mark.parametrize("style", list(NOTICES), ids=list(NOTICES))
def test_each_notice_style_brings_replacements_up_before_any_eviction(
    cluster: devcluster.Cluster,
    ns: kit.Namespace,
    harness: Harness,
    kwok_nodes: Callable[..., list[str]],
    style: str,
) -> None:
    kwok_nodes(GPU, 2, spot=True)
    line: Timeline = harness.timeline(ns.name)
    try:
        ns.apply(spot_endpoint("llm"))
        kit.wait_for(lambda: ready(ns, "llm"), "endpoint Ready")
        doomed_node = pod_node(ns, "llm")
        kit.wait_for(lambda: line.ready_now() == 1, "one ready endpoint in the slice")
        noticed = time.monotonic()

        NOTICES[style](cluster, doomed_node)
        found = kit.wait_for(lambda: drained(ns, "llm"), "DrainComplete", timeout=90)
    finally:
        harness.run(line.stop())

    # The order Ferry says it kept...
    assert [r for r in found if r in ORDER] == ORDER, found
    # ...and what the cluster saw: a replacement Ready on another node before the pod
    # on the noticed one got its deletion, and never a moment without a ready endpoint.
    doomed = [p for p in line.pods.values() if p.node == doomed_node]
    replacements = [p for p in line.pods.values() if p.node != doomed_node and p.created]
    assert len(doomed) == 1
    assert doomed[0].deleting is not None
    first_ready = min(p.ready for p in replacements if p.ready)
    assert first_ready < doomed[0].deleting
    assert line.ready_low_after(noticed) == 1
    obj = ns.get("inferenceendpoint", "llm")
    spot_cond = kit.condition(obj, "SpotInterrupted")
    assert spot_cond is not None
    assert (spot_cond["status"], spot_cond["reason"]) == ("False", "NotInterrupted")
    assert kit.condition(obj, "Ready")["status"] == "True"  # type: ignore[index]
    assert "surgeReplicas" not in obj["status"]  # type: ignore[index]
    dep = ns.get("deployment", "llm")
    assert dep is not None
    assert dep["spec"]["replicas"] == 1  # back to the normal count
    complete = next(e for e in ferry_events(ns, "llm") if e["reason"] == "DrainComplete")
    assert "replacements Ready after" in complete["message"]


def test_no_room_anywhere_drains_at_once_and_waits_for_capacity(
    cluster: devcluster.Cluster,
    ns: kit.Namespace,
    harness: Harness,
    kwok_nodes: Callable[..., list[str]],
) -> None:
    (only,) = kwok_nodes(GPU, 1, spot=True)
    ns.apply(spot_endpoint("llm"))
    kit.wait_for(lambda: ready(ns, "llm"), "endpoint Ready")
    kubectl(cluster, "taint", "node", only, "aws-node-termination-handler/spot-itn=i-2:NoSchedule")

    found = kit.wait_for(lambda: drained(ns, "llm"), "DrainComplete", timeout=90)
    assert found.index("DrainWithoutReplacement") < found.index("OutOfService")
    warning = next(e for e in ferry_events(ns, "llm") if e["reason"] == "DrainWithoutReplacement")
    assert warning["type"] == "Warning"
    assert "no node can run a replacement" in warning["message"]
    complete = next(e for e in ferry_events(ns, "llm") if e["reason"] == "DrainComplete")
    assert "without replacements" in complete["message"]

    # The replacement waits for a node: a clear condition, progressing, not failed.
    def waiting() -> dict[str, Any] | None:
        obj = ns.get("inferenceendpoint", "llm")
        cond = kit.condition(obj, "Ready")
        return obj if cond and cond["reason"] == "WaitingForCapacity" else None

    obj = kit.wait_for(waiting, "Ready=False with WaitingForCapacity")
    assert kit.condition(obj, "Reconciling")["status"] == "True"  # type: ignore[index]
    assert kit.condition(obj, "Stalled")["status"] == "False"  # type: ignore[index]
    assert "nodes are available" in kit.condition(obj, "Ready")["message"]  # type: ignore[index]

    # Capacity arrives (a cluster autoscaler's node): Ready with nothing else changed.
    kwok_nodes(GPU, 1, spot=True)
    kit.wait_for(lambda: ready(ns, "llm"), "Ready once a node arrives")


def test_kubectl_drain_never_takes_a_one_replica_endpoint_to_zero(
    cluster: devcluster.Cluster,
    ns: kit.Namespace,
    harness: Harness,
    kwok_nodes: Callable[..., list[str]],
) -> None:
    kwok_nodes(GPU, 2)
    line = harness.timeline(ns.name)
    try:
        ns.apply(
            kit.endpoint("llm", gpu={"type": GPU}, scaling={"minReplicas": 1, "maxReplicas": 1})
        )
        kit.wait_for(lambda: ready(ns, "llm"), "endpoint Ready")
        node = pod_node(ns, "llm")
        kit.wait_for(lambda: line.ready_now() == 1, "one ready endpoint in the slice")
        started = time.monotonic()
        out = subprocess.run(
            [
                str(cluster.kubectl_path),
                "--kubeconfig",
                str(cluster.kubeconfig_path),
                "drain",
                node,
                "--ignore-daemonsets",
                "--delete-emptydir-data",
                "--pod-selector=app.kubernetes.io/instance=llm",
                "--timeout=120s",
            ],
            capture_output=True,
            text=True,
            timeout=150,
            check=False,
        )
    finally:
        harness.run(line.stop())
    assert out.returncode == 0, out.stdout + out.stderr
    # The budget held the only replica until its replacement was Ready elsewhere...
    assert "disruption budget" in out.stdout + out.stderr
    old = next(p for p in line.pods.values() if p.node == node)
    new = next(p for p in line.pods.values() if p.node != node)
    assert old.deleting is not None
    assert new.ready is not None
    assert new.ready < old.deleting
    # ...so the Service never had zero ready endpoints.
    assert line.ready_low_after(started) == 1
    found = reasons(ns, "llm")
    assert "NodeDraining" in found
    assert "TerminationNotice" not in found  # a voluntary drain, not a spot interruption
    assert kit.condition(ns.get("inferenceendpoint", "llm"), "SpotInterrupted") is None


def test_external_autoscaler_drain_surges_with_a_temporary_deployment(
    cluster: devcluster.Cluster,
    ns: kit.Namespace,
    harness: Harness,
    kwok_nodes: Callable[..., list[str]],
) -> None:
    kwok_nodes(GPU, 3, spot=True)
    line = harness.timeline(ns.name)
    try:
        ns.apply(spot_endpoint("llm", autoscaler="external"))
        kit.wait_for(lambda: ready(ns, "llm"), "endpoint Ready")
        doomed_node = pod_node(ns, "llm")
        kit.wait_for(lambda: line.ready_now() == 1, "one ready endpoint in the slice")
        noticed = time.monotonic()
        kubectl(
            cluster,
            "taint",
            "node",
            doomed_node,
            "aws-node-termination-handler/spot-itn=i-3:NoSchedule",
        )
        found = kit.wait_for(lambda: drained(ns, "llm"), "DrainComplete", timeout=90)
        kit.wait_for(lambda: ns.get("deployment", "llm-surge") is None, "surge Deployment removed")
    finally:
        harness.run(line.stop())
    assert "Evicted" in found  # the HPA owns the count: the doomed pod is evicted
    surge = [p for p in line.pods.values() if p.labels.get("ferry.dev/surge") == "true"]
    assert surge, "no pod of a surge Deployment was seen"
    assert all(p.node != doomed_node for p in surge)
    doomed = next(p for p in line.pods.values() if p.node == doomed_node)
    assert doomed.deleting is not None
    assert min(p.ready for p in surge if p.ready) < doomed.deleting
    assert line.ready_low_after(noticed) is not None
    assert line.ready_low_after(noticed) >= 1  # type: ignore[operator]
    dep = ns.get("deployment", "llm")
    assert dep is not None
    assert dep["spec"]["replicas"] == 1  # Ferry never wrote the external autoscaler's count
