"""Drains and rollouts at the request level: real model servers, real requests, none lost.

Pods here land on the process harness's nodes (T4, one GPU each, so every
replacement goes to another node), where each pod is a real `python -m
ferry_server` process. A load generator keeps requests in flight, routing each
new one only to pods ready in the Service's EndpointSlice, as kube-proxy does; pod
deletion reaches the process as SIGTERM. What is real and what is simulated:
`tests/harness/__init__.py`. Requests are tiny (two tokens of a tiny model) so the
tests hold on two shared cores.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tests.harness import Harness, Tally, Traffic, fixtures
from tests.integration import kit

# This module's operator, namespaces and harness (tests.harness.fixtures).
operator = fixtures.operator
ns = fixtures.ns
harness = fixtures.harness
proc_nodes = fixtures.proc_nodes

GPU = "T4"


def endpoint(name: str, replicas: int = 1, spot: bool = True, **extra: Any) -> dict[str, Any]:
    env = [
        # The server watches its instance's metadata for spot notices (D11); the
        # harness points this at the node's own metadata service.
        {
            "name": "FERRY_SPOT_METADATA_URL",
            "value": "http://169.254.169.254/latest/meta-data/spot/instance-action",
        },
        {"name": "FERRY_SPOT_POLL_INTERVAL_S", "value": "1"},
        *extra.pop("env", []),
    ]
    return kit.endpoint(
        name,
        gpu={"type": GPU},
        server={"image": "ghcr.io/ferry-dev/inference-server:0.1.0", "env": env},
        scaling={"minReplicas": replicas, "maxReplicas": replicas},
        spot={"policy": "spot" if spot else "on-demand", "drainGraceSeconds": 30},
        **extra,
    )


def ready(ns: kit.Namespace, name: str, generation: int | None = None) -> bool:
    obj = ns.get("inferenceendpoint", name)
    cond = kit.condition(obj, "Ready")
    if not obj or not cond or cond["status"] != "True":
        return False
    return generation is None or obj["status"].get("observedGeneration") == generation


def reasons(ns: kit.Namespace, name: str) -> list[str]:
    events = [e for e in ns.events(name) if e.get("reportingComponent") == "ferry.dev/operator"]
    events.sort(key=lambda e: e.get("eventTime") or "")
    return [e["reason"] for e in events]


def serving(ns: kit.Namespace, name: str, harness: Harness, count: int) -> Traffic:
    traffic = harness.traffic(ns.name, name)
    kit.wait_for(lambda: ready(ns, name), "endpoint Ready", timeout=180)
    kit.wait_for(lambda: len(traffic.ready_pods()) == count, f"{count} ready endpoint(s)", 60)
    return traffic


def load(harness: Harness, traffic: Traffic, concurrency: int) -> None:
    harness.run(traffic.start(concurrency))
    kit.wait_for(
        lambda: traffic.inflight >= concurrency * 0.8 and traffic.tally.ok > concurrency,
        f"{concurrency} requests in flight",
        timeout=60,
    )


def finish(harness: Harness, traffic: Traffic) -> Tally:
    tally = harness.run(traffic.stop())
    harness.run(traffic.close())
    return tally


def assert_none_lost(tally: Tally, harness: Harness) -> None:
    # On failure, show each lost request beside what the pods went through.
    story = sorted(
        [(round(t, 3), pod, what) for t, pod, what in tally.failures]
        + [(round(t, 3), pod, what) for t, pod, what in harness.history()]
    )
    if tally.failed or tally.connection_errors:
        print("STORY", story)
    assert tally.failed == 0, story
    assert tally.connection_errors == 0, story
    assert tally.ok == tally.sent


def test_a_spot_notice_with_hundreds_of_requests_in_flight_loses_none(
    ns: kit.Namespace, harness: Harness, proc_nodes: Callable[..., list[str]]
) -> None:
    nodes = proc_nodes(GPU, 2, spot=True)
    ns.apply(endpoint("llm"))
    traffic = serving(ns, "llm", harness, 1)
    (first,) = traffic.ready_pods()
    doomed_node = next(r.node for n, r in harness.processes().items() if n == first)
    load(harness, traffic, 200)
    try:
        # The cloud posts the notice where only the model server sees it (instance
        # metadata, no taint): its report is how Ferry learns of it (D11).
        harness.post_notice(doomed_node, seconds=120)
        kit.wait_for(lambda: "DrainComplete" in reasons(ns, "llm"), "DrainComplete", timeout=180)
        kit.wait_for(
            lambda: harness.processes()[first].gone_at is not None,
            "the noticed pod's process exited and the pod is gone",
            timeout=60,
        )
        time.sleep(1.0)
    finally:
        tally = finish(harness, traffic)
    assert_none_lost(tally, harness)
    assert tally.ready_low is not None
    assert tally.ready_low >= 1
    procs = harness.processes()
    replacement = next(r for n, r in procs.items() if n != first and r.node != doomed_node)
    doomed_sigterm = procs[first].sigterm_at
    assert replacement.ready_at is not None
    assert doomed_sigterm is not None
    assert replacement.ready_at < doomed_sigterm
    assert tally.by_pod.get(first, 0) > 0
    assert tally.by_pod.get(replacement.name, 0) > 0
    found = reasons(ns, "llm")
    assert found.index("TerminationNotice") < found.index("ReplacementReady")
    assert found.index("ReplacementReady") < found.index("OutOfService")
    assert set(nodes) >= {doomed_node, replacement.node}


def test_gke_graceful_node_shutdown_is_a_notice(
    ns: kit.Namespace, harness: Harness, proc_nodes: Callable[..., list[str]]
) -> None:
    proc_nodes(GPU, 3, spot=True)
    ns.apply(endpoint("llm", replicas=2))
    traffic = serving(ns, "llm", harness, 2)
    first = traffic.ready_pods()[0]
    doomed_node = harness.processes()[first].node
    load(harness, traffic, 40)
    try:
        harness.shut_down(doomed_node)
        kit.wait_for(lambda: "DrainComplete" in reasons(ns, "llm"), "DrainComplete", timeout=180)
    finally:
        tally = finish(harness, traffic)
    assert_none_lost(tally, harness)
    notice = next(e for e in ns.events("llm") if e["reason"] == "TerminationNotice")
    assert "graceful node shutdown" in notice["message"]
    assert "in 30s" in notice["message"] or "in 29s" in notice["message"]


def test_a_rolling_update_under_load_loses_none(
    ns: kit.Namespace, harness: Harness, proc_nodes: Callable[..., list[str]]
) -> None:
    proc_nodes(GPU, 2)
    ns.apply(endpoint("llm", spot=False))
    traffic = serving(ns, "llm", harness, 1)
    (old,) = traffic.ready_pods()
    generation = ns.get("inferenceendpoint", "llm")["metadata"]["generation"]  # type: ignore[index]
    load(harness, traffic, 100)
    try:
        ns.apply(endpoint("llm", spot=False, env=[{"name": "ROLL", "value": "2"}]))
        kit.wait_for(
            lambda: harness.processes()[old].gone_at is not None,
            "the old pod drained and gone",
            timeout=180,
        )
        kit.wait_for(lambda: ready(ns, "llm", generation + 1), "Ready at the new generation")
        time.sleep(1.0)
    finally:
        tally = finish(harness, traffic)
    assert_none_lost(tally, harness)
    new = [n for n in tally.by_pod if n != old]
    assert tally.by_pod.get(old, 0) > 0
    assert new
    assert tally.ready_low is not None
    assert tally.ready_low >= 1
