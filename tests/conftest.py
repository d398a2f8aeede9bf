"""Session-wide fixtures: one real control plane for the whole test session.

The control plane (etcd, kube-apiserver, controller manager, scheduler, kwok GPU
nodes) starts once, lazily, for the first test that needs it; the CRDs are
installed from `crds/` so a stale file cannot hide. `USE_EXISTING_CLUSTER=true`
runs against the cluster in $KUBECONFIG instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ferry import devcluster

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def cluster() -> Iterator[devcluster.Cluster]:
    handle = devcluster.connect_or_start()
    try:
        handle.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
        handle.kubectl(
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/inferenceendpoints.ferry.dev",
            "crd/providerconfigs.ferry.dev",
        )
        yield handle
    finally:
        handle.stop()
