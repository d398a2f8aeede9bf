"""Integration fixtures: a session-wide operator subprocess and a namespace per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ferry import devcluster
from tests.integration import kit

PATTERN = "ferry-it-*"


@pytest.fixture(scope="session")
def operator(
    cluster: devcluster.Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[kit.Operator]:
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    op = kit.Operator(cluster, [PATTERN], log)
    op.start()
    yield op
    op.stop()


@pytest.fixture
def ns(cluster: devcluster.Cluster, operator: kit.Operator) -> Iterator[kit.Namespace]:
    name = kit.unique("ferry-it")
    cluster.kubectl("create", "namespace", name)
    yield kit.Namespace(cluster, name)
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def own_operator(
    cluster: devcluster.Cluster, tmp_path: Path
) -> Iterator[tuple[kit.Namespace, kit.Operator]]:
    """A namespace outside the session operator's pattern, with an operator of its own."""
    name = kit.unique("ferry-solo")
    cluster.kubectl("create", "namespace", name)
    op = kit.Operator(cluster, [name], tmp_path / "operator.log")
    namespace = kit.Namespace(cluster, name)
    yield namespace, op
    if op.proc is None:
        op.start()
    namespace.kubectl("delete", "inferenceendpoints", "--all", "--timeout=60s", check=False)
    op.stop()
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
