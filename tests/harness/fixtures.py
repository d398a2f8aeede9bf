"""Fixtures for the drain, capacity and autoscaling integration tests.

A module's tests share one `Harness` (process kubelet, metrics forwarder) and one
operator of their own (`operator`, shadowing the session's), watching `ferry-dr-*`
namespaces with short intervals and its pod metrics read through the harness: the
session operator keeps its settings and never sees these endpoints.
GPU nodes a test adds (kwok's or the harness's) are removed after it, so the
session's other tests never see them. Import the fixtures into a test module.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from lightkube import codecs
from lightkube.core.exceptions import ApiError
from lightkube.resources.core_v1 import Node

from ferry import devcluster
from ferry.devcluster import nodes
from tests.harness import Harness
from tests.integration import kit

PATTERN = "ferry-dr-*"


@pytest.fixture(scope="module")
def harness(
    cluster: devcluster.Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Harness]:
    handle = Harness(Path(cluster.kubeconfig_path), tmp_path_factory.mktemp("harness")).start()
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def operator(
    cluster: devcluster.Cluster, harness: Harness, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[kit.Operator]:
    env = {
        "FERRY_DRAIN_INTERVAL": "0.5",
        "FERRY_AUTOSCALE_INTERVAL": "1",
        "FERRY_SCRAPE_TIMEOUT": "1",
        "FERRY_POD_METRICS_URL": harness.metrics_url,
    }
    log = tmp_path_factory.mktemp("drain-operator") / "operator.log"
    op = kit.Operator(cluster, [PATTERN], log, env=env)
    op.start()
    yield op
    op.stop()


@pytest.fixture
def ns(cluster: devcluster.Cluster, operator: kit.Operator) -> Iterator[kit.Namespace]:
    """A namespace this module's operator watches. Both fixtures take the session
    fixtures' names, so a module that imports them uses its own operator (and a
    failing test's report shows that operator's log)."""
    name = kit.unique("ferry-dr")
    cluster.kubectl("create", "namespace", name)
    yield kit.Namespace(cluster, name)
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def kwok_nodes(cluster: devcluster.Cluster) -> Iterator[Callable[..., list[str]]]:
    """Add kwok GPU nodes for one test: `kwok_nodes(gpu, count, spot=..., gpus=...)`."""
    made: list[str] = []
    client = cluster.client()

    def add(gpu: str, count: int = 1, *, spot: bool = False, gpus: int = 1) -> list[str]:
        pool = nodes.NodePool(
            kit.unique(f"dr-{gpu.lower()}-{'spot' if spot else 'od'}"),
            gpu,
            count=count,
            gpus_per_node=gpus,
            capacity_type="spot" if spot else "on-demand",
        )
        names = []
        for manifest in nodes.manifests([pool]):
            client.create(codecs.from_dict(manifest))
            names.append(manifest["metadata"]["name"])
        made.extend(names)
        kit.wait_for(
            lambda: all(
                any(
                    c.type == "Ready" and c.status == "True"
                    for c in (client.get(Node, n).status.conditions or [])  # type: ignore[union-attr]
                )
                for n in names
            ),
            "kwok marks the new nodes Ready",
        )
        return names

    yield add
    with client:
        for name in made:
            with contextlib.suppress(ApiError):
                client.delete(Node, name)


@pytest.fixture
def proc_nodes(harness: Harness) -> Iterator[Callable[..., list[str]]]:
    """Add process-harness GPU nodes for one test: `proc_nodes(gpu, count, spot=...)`."""
    made: list[str] = []

    def add(gpu: str, count: int = 1, *, spot: bool = False) -> list[str]:
        names = [
            harness.add_node(kit.unique(f"proc-{'spot' if spot else 'od'}"), gpu, spot=spot)
            for _ in range(count)
        ]
        made.extend(names)
        return names

    yield add
    for name in made:
        harness.remove_node(name)
