"""Pods waiting for GPU capacity: WaitingForCapacity until scaling.capacityTimeout, then Stalled.

Nodes of the GPU types used here exist only while a test adds them (kwok nodes,
removed after), so a pod waits exactly until the test gives it a node.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tests.harness import fixtures
from tests.integration import kit

# This module's operator, namespaces, harness and nodes (tests.harness.fixtures).
operator = fixtures.operator
ns = fixtures.ns
harness = fixtures.harness
kwok_nodes = fixtures.kwok_nodes


def conditions(ns: kit.Namespace, name: str) -> dict[str, tuple[str, str]]:
    obj = ns.get("inferenceendpoint", name) or {}
    return {
        c["type"]: (c["status"], c["reason"])
        for c in (obj.get("status") or {}).get("conditions") or []
    }


def test_a_pending_pod_that_gets_a_node_later_is_ready_without_stalling(
    ns: kit.Namespace, kwok_nodes: Callable[..., list[str]]
) -> None:
    ns.apply(
        kit.endpoint("llm", gpu={"type": "A10G"}, scaling={"minReplicas": 1, "maxReplicas": 1})
    )

    def waiting() -> dict[str, Any] | None:
        obj = ns.get("inferenceendpoint", "llm")
        cond = kit.condition(obj, "Ready")
        return obj if cond and cond["reason"] == "WaitingForCapacity" else None

    obj = kit.wait_for(waiting, "Ready=False with WaitingForCapacity", timeout=90)
    assert conditions(ns, "llm") == {
        "Ready": ("False", "WaitingForCapacity"),
        "Reconciling": ("True", "WaitingForCapacity"),
        "Stalled": ("False", "WaitingForCapacity"),
    }
    assert obj["status"]["waitingForCapacitySince"]
    assert "nodes are available" in kit.condition(obj, "Ready")["message"]  # type: ignore[index]
    # Not a failure: no warning event, nothing a GitOps tool reads as Failed.
    assert not [e for e in ns.events("llm") if e["type"] == "Warning"]

    kwok_nodes("A10G", 1)  # what a cluster autoscaler or Karpenter would add
    stalled_seen = False
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        now = conditions(ns, "llm")
        stalled_seen = stalled_seen or now.get("Stalled", ("", ""))[0] == "True"
        if now.get("Ready", ("", ""))[0] == "True":
            break
        time.sleep(0.5)
    assert conditions(ns, "llm")["Ready"] == ("True", "Available")
    assert not stalled_seen
    assert "waitingForCapacitySince" not in (ns.get("inferenceendpoint", "llm") or {})["status"]
    dep = ns.get("deployment", "llm")
    assert dep is not None
    # D20: the progress deadline outlasts the capacity wait plus the startup allowance.
    assert dep["spec"]["progressDeadlineSeconds"] >= 600 + 1800


def test_a_capacity_wait_turns_stalled_after_capacity_timeout(ns: kit.Namespace) -> None:
    ns.apply(
        kit.endpoint(
            "llm",
            gpu={"type": "RTX4090"},
            scaling={"minReplicas": 1, "maxReplicas": 1, "capacityTimeout": "30s"},
        )
    )
    started = time.monotonic()
    kit.wait_for(
        lambda: conditions(ns, "llm").get("Ready") == ("False", "WaitingForCapacity"),
        "WaitingForCapacity",
        timeout=60,
    )
    obj = kit.wait_for(
        lambda: (
            ns.get("inferenceendpoint", "llm")
            if conditions(ns, "llm").get("Stalled") == ("True", "InsufficientGPUCapacity")
            else None
        ),
        "Stalled with InsufficientGPUCapacity",
        timeout=120,
    )
    # waitingForCapacitySince has whole seconds: the wait may read up to 1 s long.
    assert time.monotonic() - started >= 29
    assert conditions(ns, "llm")["Ready"] == ("False", "InsufficientGPUCapacity")
    assert "scaling.capacityTimeout" in kit.condition(obj, "Stalled")["message"]  # type: ignore[index]
    assert any(
        e["reason"] == "InsufficientGPUCapacity" and e["type"] == "Warning"
        for e in ns.events("llm")
    )
