"""The local provider end to end: create, ready, update, drift, bounds, delete."""

from __future__ import annotations

from typing import Any

from tests.integration import kit


def ready(ns: kit.Namespace, name: str, generation: int | None = None) -> dict[str, Any] | None:
    obj = ns.get("inferenceendpoint", name)
    cond = kit.condition(obj, "Ready")
    if not obj or not cond or cond["status"] != "True":
        return None
    if generation is not None and obj["status"].get("observedGeneration") != generation:
        return None
    return obj


def test_create_runs_pods_on_a_gpu_node_and_reports_ready(ns: kit.Namespace) -> None:
    ns.apply(kit.endpoint("llm", scaling={"minReplicas": 2, "maxReplicas": 3}))
    obj = kit.wait_for(lambda: ready(ns, "llm"), "endpoint Ready")

    status = obj["status"]
    assert status["observedGeneration"] == obj["metadata"]["generation"]
    assert status["readyReplicas"] == 2
    assert status["desiredReplicas"] == 2
    assert status["replicas"] == "2/2"
    assert status["url"] == f"http://llm.{ns.name}.svc.cluster.local:8000"
    assert status["externalName"] == "llm"
    types = {c["type"]: c["status"] for c in status["conditions"]}
    assert types == {"Ready": "True", "Reconciling": "False", "Stalled": "False"}
    assert "ferry.dev/finalizer" in obj["metadata"]["finalizers"]
    assert obj["metadata"]["annotations"]["ferry.dev/external-name"] == "llm"

    dep = ns.get("deployment", "llm")
    assert dep is not None
    assert dep["metadata"]["ownerReferences"][0]["uid"] == obj["metadata"]["uid"]
    assert ns.get("service", "llm") is not None
    assert ns.get("poddisruptionbudget", "llm") is not None
    pods = ns.items("pods", "app.kubernetes.io/instance=llm")
    assert len(pods) == 2
    for pod in pods:
        assert pod["status"]["phase"] == "Running"
        node = ns.cluster.kubectl("get", "node", pod["spec"]["nodeName"], "-o", "yaml").stdout
        assert "nvidia.com/gpu.product: NVIDIA-L4" in node
        assert "karpenter.sh/capacity-type: on-demand" in node

    table = ns.kubectl("get", "iep").stdout
    assert "local" in table
    assert "L4" in table
    assert "2/2" in table
    assert "Available" in table


def test_spec_update_rolls_out_in_place(ns: kit.Namespace) -> None:
    ns.apply(kit.endpoint("llm"))
    first = kit.wait_for(lambda: ready(ns, "llm"), "endpoint Ready")
    dep_uid = ns.get("deployment", "llm")["metadata"]["uid"]  # type: ignore[index]

    ns.apply(kit.endpoint("llm", server={"image": "ghcr.io/ferry-dev/inference-server:0.2.0"}))
    generation = first["metadata"]["generation"] + 1
    kit.wait_for(lambda: ready(ns, "llm", generation), "Ready at the new generation")

    dep = ns.get("deployment", "llm")
    assert dep is not None
    assert dep["metadata"]["uid"] == dep_uid, "the Deployment was replaced, not updated"
    image = dep["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == "ghcr.io/ferry-dev/inference-server:0.2.0"
    kit.wait_for(
        lambda: all(
            p["spec"]["containers"][0]["image"].endswith("0.2.0")
            for p in ns.items("pods", "app.kubernetes.io/instance=llm")
            if not p["metadata"].get("deletionTimestamp")
        ),
        "pods running the new image",
    )


def test_drift_is_put_back(ns: kit.Namespace) -> None:
    ns.apply(kit.endpoint("llm"))
    kit.wait_for(lambda: ready(ns, "llm"), "endpoint Ready")
    ns.kubectl("set", "image", "deployment/llm", "server=evil/image:latest")
    ns.kubectl("delete", "service", "llm")

    def repaired() -> bool:
        dep = ns.get("deployment", "llm")
        image = dep["spec"]["template"]["spec"]["containers"][0]["image"] if dep else ""
        return (
            image == "ghcr.io/ferry-dev/inference-server:0.1.0"
            and ns.get("service", "llm") is not None
        )

    kit.wait_for(repaired, "the Deployment image and the Service restored")
    assert any(e["reason"] == "Updated" for e in ns.events("llm"))


def test_replicas_belong_to_ferrys_autoscaler(ns: kit.Namespace) -> None:
    # One writer owns the count (D10): Ferry's autoscaler, which keeps it within the
    # bounds and puts back any other write (here: no load signal, so minReplicas).
    ns.apply(kit.endpoint("llm", scaling={"minReplicas": 1, "maxReplicas": 2}))
    kit.wait_for(lambda: ready(ns, "llm"), "endpoint Ready")

    def replicas() -> int | None:
        count: int | None = (ns.get("deployment", "llm") or {}).get("spec", {}).get("replicas")
        return count

    ns.kubectl("scale", "deployment/llm", "--replicas=5")
    kit.wait_for(lambda: replicas() == 1, "the count back to the autoscaler's")
    ns.kubectl("scale", "deployment/llm", "--replicas=2")  # inside the bounds, still not its
    kit.wait_for(lambda: replicas() == 1, "the count back to the autoscaler's again")
    obj = kit.wait_for(lambda: ready(ns, "llm"), "Ready again")
    kit.wait_for(lambda: (ready(ns, "llm") or {}).get("status", {}).get("replicas") == "1/1", "1/1")
    assert obj["spec"]["scaling"]["maxReplicas"] == 2


def test_unschedulable_gpu_request_waits_for_capacity_not_hung(ns: kit.Namespace) -> None:
    # One H100 node with 8 GPUs: the first replica fits, the second cannot. A cluster
    # autoscaler may add a node, so this is a capacity wait (Stalled only after
    # scaling.capacityTimeout: tests/integration/test_capacity.py).
    ns.apply(
        kit.endpoint(
            "huge", gpu={"type": "H100", "count": 8}, scaling={"minReplicas": 2, "maxReplicas": 2}
        )
    )

    def waiting() -> dict[str, Any] | None:
        obj = ns.get("inferenceendpoint", "huge")
        cond = kit.condition(obj, "Ready")
        if cond and cond["status"] == "False" and cond["reason"] == "WaitingForCapacity":
            return obj
        return None

    obj = kit.wait_for(waiting, "Ready=False with WaitingForCapacity", timeout=90)
    ready_cond = kit.condition(obj, "Ready")
    assert ready_cond is not None
    assert "nvidia.com/gpu" in ready_cond["message"]
    assert kit.condition(obj, "Reconciling")["status"] == "True"  # type: ignore[index]
    assert kit.condition(obj, "Stalled")["status"] == "False"  # type: ignore[index]
    assert obj["status"]["waitingForCapacitySince"]


def test_delete_removes_everything(ns: kit.Namespace) -> None:
    ns.apply(kit.endpoint("llm"))
    kit.wait_for(lambda: ready(ns, "llm"), "endpoint Ready")
    ns.kubectl("delete", "inferenceendpoint", "llm", "--timeout=60s")
    kit.wait_for(lambda: ns.get("deployment", "llm") is None, "Deployment deleted")
    kit.wait_for(lambda: ns.get("service", "llm") is None, "Service deleted")
    kit.wait_for(lambda: ns.get("poddisruptionbudget", "llm") is None, "PDB deleted")
    assert ns.get("inferenceendpoint", "llm") is None


def test_orphan_leaves_the_deployment_running(ns: kit.Namespace) -> None:
    ns.apply(kit.endpoint("keep", deletionPolicy="Orphan"))
    kit.wait_for(lambda: ready(ns, "keep"), "endpoint Ready")
    ns.kubectl("delete", "inferenceendpoint", "keep", "--timeout=60s")
    assert ns.get("inferenceendpoint", "keep") is None
    dep = ns.get("deployment", "keep")
    assert dep is not None
    assert not dep["metadata"].get("ownerReferences")
    # Garbage collection would have removed it by now if it were still owned.
    ns.kubectl("wait", "--for=condition=Available", "deployment/keep", "--timeout=30s")
    assert ns.get("service", "keep") is not None


def test_adoption_via_external_name(ns: kit.Namespace) -> None:
    # An endpoint orphans its Deployment; a new endpoint with another name adopts it.
    ns.apply(kit.endpoint("old", deletionPolicy="Orphan"))
    kit.wait_for(lambda: ready(ns, "old"), "old endpoint Ready")
    ns.kubectl("delete", "inferenceendpoint", "old", "--timeout=60s")
    orphan_uid = ns.get("deployment", "old")["metadata"]["uid"]  # type: ignore[index]

    ns.apply(kit.endpoint("new", annotations={"ferry.dev/external-name": "old"}))
    obj = kit.wait_for(lambda: ready(ns, "new"), "adopting endpoint Ready")
    assert obj["status"]["externalName"] == "old"
    dep = ns.get("deployment", "old")
    assert dep is not None
    assert dep["metadata"]["uid"] == orphan_uid
    assert dep["metadata"]["ownerReferences"][0]["uid"] == obj["metadata"]["uid"]
    assert ns.get("deployment", "new") is None, "a twin was created instead of adopting"


def test_a_same_named_deployment_is_not_taken_without_asking(ns: kit.Namespace) -> None:
    ns.kubectl("create", "deployment", "taken", "--image=busybox")
    ns.apply(kit.endpoint("taken"))

    def stalled() -> dict[str, Any] | None:
        cond = kit.condition(ns.get("inferenceendpoint", "taken"), "Stalled")
        return cond if cond and cond["status"] == "True" else None

    cond = kit.wait_for(stalled, "Stalled because the name is taken")
    assert cond["reason"] == "ExternalResourceOwnedElsewhere"
    dep = ns.get("deployment", "taken")
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "busybox"  # type: ignore[index]


def test_paused_endpoint_is_left_alone(ns: kit.Namespace) -> None:
    ns.apply(kit.endpoint("llm"))
    kit.wait_for(lambda: ready(ns, "llm"), "endpoint Ready")
    ns.kubectl("annotate", "inferenceendpoint", "llm", "ferry.dev/paused=true")
    kit.wait_for(
        lambda: (
            (kit.condition(ns.get("inferenceendpoint", "llm"), "Reconciling") or {}).get("reason")
            == "ReconcilePaused"
        ),
        "paused reported",
    )
    ns.kubectl("set", "image", "deployment/llm", "server=hand/edited:1")
    ns.apply(kit.endpoint("llm", server={"image": "ghcr.io/ferry-dev/inference-server:0.3.0"}))
    import time

    time.sleep(6)  # two poll intervals of the test operator
    dep = ns.get("deployment", "llm")
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "hand/edited:1"  # type: ignore[index]

    ns.kubectl("annotate", "inferenceendpoint", "llm", "ferry.dev/paused-")
    kit.wait_for(
        lambda: (
            (ns.get("deployment", "llm") or {})["spec"]["template"]["spec"]["containers"][0][
                "image"
            ]
            == "ghcr.io/ferry-dev/inference-server:0.3.0"
        ),
        "the new spec applied after unpausing",
    )


def test_scale_to_zero_endpoint_is_ready_with_no_replicas(ns: kit.Namespace) -> None:
    ns.apply(
        kit.endpoint("idle", scaling={"minReplicas": 0, "maxReplicas": 2, "scaleToZeroAfter": "5m"})
    )
    obj = kit.wait_for(lambda: ready(ns, "idle"), "endpoint Ready")
    assert kit.condition(obj, "Ready")["reason"] == "ScaledToZero"  # type: ignore[index]
    assert ns.get("deployment", "idle")["spec"]["replicas"] == 0  # type: ignore[index]
