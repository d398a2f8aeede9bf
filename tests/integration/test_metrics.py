"""The operator's Prometheus endpoint reports its reconciles and work queue."""

from __future__ import annotations

from pathlib import Path

import httpx

from ferry import devcluster
from tests.integration import kit
from tests.integration.test_lifecycle import ready


def _sample(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_metrics_count_reconciles(cluster: devcluster.Cluster, tmp_path: Path) -> None:
    name = kit.unique("ferry-solo")
    cluster.kubectl("create", "namespace", name)
    port = kit.free_port()
    op = kit.Operator(cluster, [name], tmp_path / "operator.log", metrics_port=port)
    op.start()
    try:
        ns = kit.Namespace(cluster, name)
        ns.apply(kit.endpoint("measured"))
        kit.wait_for(lambda: ready(ns, "measured"), "endpoint Ready")
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert _sample(text, 'ferry_reconcile_total{result="ok"}') >= 2
        assert _sample(text, "ferry_reconcile_duration_seconds_count") >= 2
        assert "ferry_workqueue_depth" in text
        ns.kubectl("delete", "inferenceendpoint", "measured", "--timeout=60s")
    finally:
        op.stop()
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
