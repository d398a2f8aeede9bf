"""Portable GPU names and what each backend calls them.

The tables live in `ferry.api.v1alpha1.platforms`, because the CRD's CEL rules are
generated from them; this module re-exports them for the provider mappers and adds
the lookups they need. Local nodes: NVIDIA's GPU feature discovery labels nodes with
`nvidia.com/gpu.product`, and `PRODUCTS` lists the products each portable name stands
for, so an endpoint asking for "A100-80GB" lands on SXM and PCIe boards alike.
"""

from __future__ import annotations

from collections.abc import Sequence

from ferry.api.v1alpha1.platforms import (
    GPU_TYPES,
    LOCAL_GPU_PRODUCTS,
    MODAL_GPUS,
    REPLICATE_HARDWARE,
    RUNPOD_GPU_TYPES,
    offered_gpus,
)

__all__ = [
    "GPU_RESOURCE",
    "GPU_TYPES",
    "MODAL_GPUS",
    "PRODUCTS",
    "PRODUCT_LABEL",
    "REPLICATE_HARDWARE",
    "RUNPOD_GPU_TYPES",
    "modal_gpus",
    "offered_gpus",
    "products",
    "replicate_hardware",
    "runpod_gpu_type_ids",
]

PRODUCT_LABEL = "nvidia.com/gpu.product"
GPU_RESOURCE = "nvidia.com/gpu"

#: local: portable name -> `nvidia.com/gpu.product` values.
PRODUCTS = LOCAL_GPU_PRODUCTS


def products(gpu_types: Sequence[str]) -> list[str]:
    """Node product label values for `gpu_types`, in order, without repeats."""
    seen: list[str] = []
    for gpu in gpu_types:
        for product in PRODUCTS[gpu]:
            if product not in seen:
                seen.append(product)
    return seen


def runpod_gpu_type_ids(gpu_types: Sequence[str]) -> list[str]:
    """RunPod GPU type ids for `gpu_types` (a set on RunPod's side), sorted, no repeats.

    Raises KeyError for a name RunPod does not sell (the CRD rejects those at apply).
    """
    ids: set[str] = set()
    for gpu in gpu_types:
        ids |= RUNPOD_GPU_TYPES[gpu]
    return sorted(ids)


def modal_gpus(gpu_types: Sequence[str], count: int) -> list[str]:
    """Modal `gpu=` strings for `gpu_types` in rank order, with `:N` when `count` > 1.

    Raises KeyError for a name Modal does not sell (the CRD rejects those at apply).
    """
    suffix = f":{count}" if count > 1 else ""
    ranked: list[str] = []
    for gpu in gpu_types:
        name = MODAL_GPUS[gpu] + suffix
        if name not in ranked:
            ranked.append(name)
    return ranked


def replicate_hardware(gpu_type: str, count: int) -> str | None:
    """The Replicate hardware SKU for (`gpu_type`, `count`), or None where none exists."""
    return REPLICATE_HARDWARE.get((gpu_type, count))
