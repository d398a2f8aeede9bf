"""Portable GPU names and how Kubernetes nodes advertise them.

NVIDIA's GPU feature discovery labels nodes with `nvidia.com/gpu.product`; the values
below are the products each portable name stands for, so that an endpoint asking
for "A100-80GB" lands on SXM and PCIe boards alike.
"""

from __future__ import annotations

from collections.abc import Sequence

PRODUCT_LABEL = "nvidia.com/gpu.product"
GPU_RESOURCE = "nvidia.com/gpu"

PRODUCTS: dict[str, tuple[str, ...]] = {
    "T4": ("Tesla-T4", "NVIDIA-Tesla-T4"),
    "L4": ("NVIDIA-L4",),
    "A10G": ("NVIDIA-A10G",),
    "L40S": ("NVIDIA-L40S",),
    "A100-40GB": ("NVIDIA-A100-SXM4-40GB", "NVIDIA-A100-PCIE-40GB"),
    "A100-80GB": ("NVIDIA-A100-SXM4-80GB", "NVIDIA-A100-80GB-PCIe"),
    "H100": ("NVIDIA-H100-80GB-HBM3", "NVIDIA-H100-PCIe", "NVIDIA-H100-NVL"),
    "H200": ("NVIDIA-H200", "NVIDIA-H200-141GB-HBM3"),
    "RTX4090": ("NVIDIA-GeForce-RTX-4090",),
}


def products(gpu_types: Sequence[str]) -> list[str]:
    """Node product label values for `gpu_types`, in order, without repeats."""
    seen: list[str] = []
    for gpu in gpu_types:
        for product in PRODUCTS[gpu]:
            if product not in seen:
                seen.append(product)
    return seen
