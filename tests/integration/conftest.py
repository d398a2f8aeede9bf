"""Integration fixtures: a session-wide operator subprocess and a namespace per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ferry import devcluster, sandboxing
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


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[kit.Sandbox]:
    """`ferry sandbox` for the session: real inference, capped at one process."""
    process = sandboxing.SandboxProcess(
        tmp_path_factory.mktemp("sandbox"),
        ["--inference", "on", "--max-processes", "1", "--boot-seconds", "1"],
    )
    process.start()
    handle = kit.Sandbox(process)
    yield handle
    handle.close()
    process.stop()


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


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    report = yield
    if call.when == "call" and getattr(report, "failed", False):
        # Show what the operator said while the test ran: the first thing to read.
        for name in ("operator", "own_operator"):
            op = item.funcargs.get(name) if hasattr(item, "funcargs") else None  # type: ignore[attr-defined]
            if isinstance(op, tuple):
                op = op[1]
            if isinstance(op, kit.Operator):
                tail = "\n".join(op.logs().splitlines()[-80:])
                report.sections.append((f"{name} log (last 80 lines)", tail))  # type: ignore[attr-defined]
    return report
