"""A real Kubernetes control plane on 127.0.0.1 for tests and local runs.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok run as
local processes (see docs in `shared/design/control-plane.md`); kwok simulates the
GPU nodes of `ferry.devcluster.nodes`. Test fixtures call `connect_or_start()`;
people run `python -m ferry.devcluster up`.
"""

from ferry.devcluster.binaries import BuildError, ensure_binaries
from ferry.devcluster.cluster import Cluster, DevCluster, ExistingCluster, connect_or_start
from ferry.devcluster.nodes import DEFAULT_POOLS, NodePool
from ferry.devcluster.supervising import StartupError

__all__ = [
    "DEFAULT_POOLS",
    "BuildError",
    "Cluster",
    "DevCluster",
    "ExistingCluster",
    "NodePool",
    "StartupError",
    "connect_or_start",
    "ensure_binaries",
]
