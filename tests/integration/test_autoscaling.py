"""Ferry's autoscaler on real load, and an external autoscaler's bounds.

The load test runs real model servers on the process harness (their `/metrics`
read by the operator through the harness's forwarder, D12) and a load generator
routing like a Service; the bounds test needs only kwok pods and a real
HorizontalPodAutoscaler object.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from tests.harness import Harness, fixtures
from tests.integration import kit

# This module's operator, namespaces, harness and nodes (tests.harness.fixtures).
operator = fixtures.operator
ns = fixtures.ns
harness = fixtures.harness
proc_nodes = fixtures.proc_nodes
kwok_nodes = fixtures.kwok_nodes


def replicas(ns: kit.Namespace, name: str) -> int | None:
    dep = ns.get("deployment", name)
    count: int | None = (dep or {}).get("spec", {}).get("replicas")
    return count


class Watch:
    """Every replica count the Deployment had, polled in the background."""

    def __init__(self, ns: kit.Namespace, name: str) -> None:
        self.seen: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ns, name), daemon=True)
        self._thread.start()

    def _run(self, ns: kit.Namespace, name: str) -> None:
        while not self._stop.is_set():
            count = replicas(ns, name)
            if count is not None and (not self.seen or self.seen[-1][1] != count):
                self.seen.append((time.monotonic(), count))
            time.sleep(0.3)

    def since(self, start: float) -> list[int]:
        before = [c for t, c in self.seen if t < start][-1:]
        return before + [c for t, c in self.seen if t >= start]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def test_load_scales_to_max_and_not_beyond_then_down_to_min_and_to_zero(
    ns: kit.Namespace, harness: Harness, proc_nodes: Callable[..., list[str]]
) -> None:
    proc_nodes("T4", 3)
    scaling: dict[str, Any] = {
        "minReplicas": 1,
        "maxReplicas": 2,
        "targetInflightRequests": 2,
        "scaleDownDelay": "5s",
    }
    ns.apply(kit.endpoint("llm", gpu={"type": "T4"}, scaling=scaling))
    traffic = harness.traffic(ns.name, "llm")
    kit.wait_for(lambda: len(traffic.ready_pods()) == 1, "one ready replica", timeout=120)
    watch = Watch(ns, "llm")
    try:
        # A load step: 12 requests in flight against a target of 2 per replica asks
        # for 6 replicas; maxReplicas is 2.
        harness.run(traffic.start(12))
        stepped = time.monotonic()
        kit.wait_for(lambda: len(traffic.ready_pods()) == 2, "two ready replicas", timeout=120)
        time.sleep(4.0)  # the load goes on: the count must stay at the bound
        harness.run(traffic.stop())
        assert max(watch.since(stepped)) == 2

        # Load stops: back to minReplicas after the scale-down window, never below.
        stopped = time.monotonic()
        kit.wait_for(lambda: replicas(ns, "llm") == 1, "back to minReplicas", timeout=60)
        time.sleep(8.0)
        assert min(watch.since(stopped)) == 1
        assert replicas(ns, "llm") == 1

        # With minReplicas 0 the idle endpoint goes to zero after scaleToZeroAfter.
        scaling.update({"minReplicas": 0, "scaleToZeroAfter": "30s"})
        ns.apply(kit.endpoint("llm", gpu={"type": "T4"}, scaling=scaling))
        zero_from = time.monotonic()
        kit.wait_for(lambda: replicas(ns, "llm") == 0, "scaled to zero", timeout=120)
        # Idle since the load stopped: the window counts from the last busy sample,
        # taken up to one sampling interval (1 s here) before the load's last request.
        assert time.monotonic() - stopped >= 28
    finally:
        watch.stop()
        harness.run(traffic.close())
    assert zero_from > stopped
    obj = ns.get("inferenceendpoint", "llm")
    assert kit.condition(obj, "Ready")["reason"] == "ScaledToZero"  # type: ignore[index]
    scaled = [e["message"] for e in ns.events("llm") if e["reason"] == "Scaled"]
    assert any("1 -> 2" in m and "LoadAbove" in m for m in scaled), scaled
    assert any("2 -> 1" in m and "LoadBelow" in m for m in scaled), scaled
    assert any("1 -> 0" in m and "ScaledToZero" in m for m in scaled), scaled


def test_an_external_autoscalers_bounds_are_checked_not_overridden(
    ns: kit.Namespace, kwok_nodes: Callable[..., list[str]]
) -> None:
    kwok_nodes("L40S", 2)
    scaling = {"minReplicas": 1, "maxReplicas": 3, "autoscaler": "external"}
    ns.apply(kit.endpoint("llm", gpu={"type": "L40S"}, scaling=scaling))

    def reason() -> str | None:
        cond = kit.condition(ns.get("inferenceendpoint", "llm"), "Ready")
        return cond["reason"] if cond and cond["status"] == "True" else None

    kit.wait_for(lambda: reason() == "ExternalAutoscalerNotFound", "Ready, no autoscaler found")

    def hpa(high: int) -> dict[str, Any]:
        return {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "llm"},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "llm"},
                "minReplicas": 1,
                "maxReplicas": high,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "cpu",
                            "target": {"type": "Utilization", "averageUtilization": 80},
                        },
                    }
                ],
            },
        }

    ns.apply(hpa(5))
    kit.wait_for(lambda: reason() == "ExternalAutoscalerBoundsDiffer", "bounds differ")
    cond = kit.condition(ns.get("inferenceendpoint", "llm"), "Ready")
    assert cond is not None
    assert "between 1 and 5" in cond["message"]
    assert "1 to 3" in cond["message"]
    ns.apply(hpa(3))
    kit.wait_for(lambda: reason() == "Available", "bounds agree")
    # A person (or the HPA) sets the count: Ferry leaves it alone under external.
    ns.kubectl("scale", "deployment/llm", "--replicas=2")
    time.sleep(3.0)
    assert replicas(ns, "llm") == 2
