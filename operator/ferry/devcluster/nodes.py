"""Simulated GPU node pools: the Node manifests kwok takes over.

Pure data: `manifests(pools)` turns `NodePool`s into Node dicts; the cluster module
creates them. kwok manages only nodes labelled `type=kwok` and annotated
`kwok.x-k8s.io/node: fake`, marks them Ready and runs their pods.

Label and taint convention (the local provider's node selection relies on it):

- `ferry.dev/gpu-type`: the portable GPU name of `ferry.api.v1alpha1` (L4, H100, ...).
- `nvidia.com/gpu.product` / `nvidia.com/gpu.count`: what NVIDIA's GPU feature
  discovery sets on real nodes; `nvidia.com/gpu` is the extended resource.
- `ferry.dev/capacity-type`: `spot` | `on-demand`, mirrored into the cloud labels
  `karpenter.sh/capacity-type` (spot|on-demand), `eks.amazonaws.com/capacityType`
  (SPOT|ON_DEMAND) and, on spot only, `cloud.google.com/gke-spot: "true"`.
- `ferry.dev/pool`: the pool name.
- Spot nodes carry the taint `ferry.dev/spot=true:NoSchedule`, so only workloads that
  chose spot land there: a spot policy adds the matching toleration
  (key `ferry.dev/spot`, operator Exists, effect NoSchedule) plus a node affinity on
  `ferry.dev/capacity-type`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from ferry.logic import gpus

CapacityType = Literal["spot", "on-demand"]

SPOT_TAINT_KEY = "ferry.dev/spot"
GPU_TYPE_LABEL = "ferry.dev/gpu-type"
CAPACITY_TYPE_LABEL = "ferry.dev/capacity-type"
POOL_LABEL = "ferry.dev/pool"
KWOK_SELECTOR = "type=kwok"

#: Portable GPU name -> the product string NVIDIA GPU feature discovery reports
#: (the first of the products the operator's node affinity accepts for it).
GPU_PRODUCTS = {gpu: products[0] for gpu, products in gpus.PRODUCTS.items()}


@dataclass(frozen=True)
class NodePool:
    """`count` identical nodes named `<name>-<i>`."""

    name: str
    gpu_type: str
    count: int = 1
    gpus_per_node: int = 8
    capacity_type: CapacityType = "on-demand"
    instance_type: str = "ferry-local"
    cpu: str = "96"
    memory: str = "768Gi"
    pods: int = 110


DEFAULT_POOLS: tuple[NodePool, ...] = (
    NodePool("gpu-ondemand", "L4", count=2, instance_type="g6.48xlarge"),
    NodePool("gpu-spot", "L4", count=2, capacity_type="spot", instance_type="g6.48xlarge"),
    NodePool("gpu-h100", "H100", count=1, instance_type="p5.48xlarge", cpu="192", memory="2048Gi"),
)


def node_manifest(pool: NodePool, index: int) -> dict[str, Any]:
    """The Node object for the `index`-th node of `pool`, status included.

    The API server keeps status on create, so capacity is set here rather than
    patched afterwards; kwok's node stages then add conditions and addresses.
    """
    if pool.gpu_type not in GPU_PRODUCTS:
        raise ValueError(
            f"node pool {pool.name}: unknown GPU type {pool.gpu_type!r}; "
            f"use one of {', '.join(GPU_PRODUCTS)}"
        )
    name = f"{pool.name}-{index}"
    spot = pool.capacity_type == "spot"
    labels = {
        "type": "kwok",
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "kubernetes.io/hostname": name,
        "node.kubernetes.io/instance-type": pool.instance_type,
        POOL_LABEL: pool.name,
        GPU_TYPE_LABEL: pool.gpu_type,
        CAPACITY_TYPE_LABEL: pool.capacity_type,
        "nvidia.com/gpu.present": "true",
        "nvidia.com/gpu.product": GPU_PRODUCTS[pool.gpu_type],
        "nvidia.com/gpu.count": str(pool.gpus_per_node),
        "karpenter.sh/capacity-type": pool.capacity_type,
        "eks.amazonaws.com/capacityType": "SPOT" if spot else "ON_DEMAND",
    }
    if spot:
        labels["cloud.google.com/gke-spot"] = "true"
    resources = {
        "cpu": pool.cpu,
        "memory": pool.memory,
        "pods": str(pool.pods),
        "ephemeral-storage": "1Ti",
        "nvidia.com/gpu": str(pool.gpus_per_node),
    }
    spec: dict[str, Any] = {}
    if spot:
        spec["taints"] = [{"key": SPOT_TAINT_KEY, "value": "true", "effect": "NoSchedule"}]
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {
                "kwok.x-k8s.io/node": "fake",
                "node.alpha.kubernetes.io/ttl": "0",
            },
        },
        "spec": spec,
        "status": {
            "capacity": dict(resources),
            "allocatable": dict(resources),
        },
    }


def manifests(pools: tuple[NodePool, ...] | list[NodePool]) -> list[dict[str, Any]]:
    """Node dicts for every node of every pool, in pool order."""
    names = [p.name for p in pools]
    if len(set(names)) != len(names):
        raise ValueError(f"node pool names must be unique, got {names}")
    return [node_manifest(p, i) for p in pools for i in range(p.count)]
