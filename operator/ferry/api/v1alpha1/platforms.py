"""What each backend sells and what Ferry reserves: tables the API and the mappers share.

These tables are data the CRD's CEL rules are generated from (so `kubectl apply`
rejects a GPU a backend does not sell, or a reserved env name) and the same data the
provider mappers read (`ferry.logic.gpus` re-exports them), so the two cannot
disagree. Identifiers follow ../shared/design/providers.md ("GPU identifiers per
platform"); the sandbox's fakes serve catalogues from the same note, so a test that
passes proves the mapping against that note, not against the live platforms, whose
catalogues win at run time.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

PROVIDERS: Final = ("local", "modal", "replicate", "runpod")

#: Portable GPU names, the values of `spec.gpu.type` and `spec.gpu.fallback`.
GPU_TYPES: Final = (
    "T4",
    "L4",
    "A10G",
    "L40S",
    "A100-40GB",
    "A100-80GB",
    "H100",
    "H200",
    "RTX4090",
)

#: local: portable name -> the `nvidia.com/gpu.product` values (NVIDIA GPU feature
#: discovery) that stand for it, so "A100-80GB" lands on SXM and PCIe boards alike.
#: Every portable name is offered: what the cluster has decides placement.
LOCAL_GPU_PRODUCTS: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {
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
)

#: runpod: portable name -> the set of RunPod GPU type ids (`/v2/catalog/gpus` `id`)
#: it stands for. Pools come from the live catalogue, never from this table.
RUNPOD_GPU_TYPES: Final[Mapping[str, frozenset[str]]] = MappingProxyType(
    {
        "L4": frozenset({"NVIDIA L4"}),
        "L40S": frozenset({"NVIDIA L40S"}),
        "A100-80GB": frozenset({"NVIDIA A100 80GB PCIe", "NVIDIA A100-SXM4-80GB"}),
        "H100": frozenset({"NVIDIA H100 PCIe", "NVIDIA H100 80GB HBM3", "NVIDIA H100 NVL"}),
        "H200": frozenset({"NVIDIA H200"}),
        "RTX4090": frozenset({"NVIDIA GeForce RTX 4090"}),
    }
)

#: modal: portable name -> Modal's `gpu=` string (a count is appended as `:N`).
MODAL_GPUS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "T4": "T4",
        "L4": "L4",
        "A10G": "A10G",
        "L40S": "L40S",
        "A100-40GB": "A100-40GB",
        "A100-80GB": "A100-80GB",
        "H100": "H100",
        "H200": "H200",
    }
)

#: replicate: (portable name, GPUs per instance) -> hardware SKU (`GET /v1/hardware`).
#: Only pairs with a SKU exist; there is no fallback.
REPLICATE_HARDWARE: Final[Mapping[tuple[str, int], str]] = MappingProxyType(
    {
        ("T4", 1): "gpu-t4",
        ("L40S", 1): "gpu-l40s",
        ("L40S", 2): "gpu-l40s-2x",
        ("A100-80GB", 1): "gpu-a100-large",
        ("A100-80GB", 2): "gpu-a100-large-2x",
        ("H100", 1): "gpu-h100",
    }
)


def offered_gpus(provider: str) -> tuple[str, ...]:
    """Portable GPU names `provider` sells, in `GPU_TYPES` order."""
    if provider == "local":
        offered: set[str] = set(LOCAL_GPU_PRODUCTS)
    elif provider == "runpod":
        offered = set(RUNPOD_GPU_TYPES)
    elif provider == "modal":
        offered = set(MODAL_GPUS)
    elif provider == "replicate":
        offered = {gpu for gpu, _ in REPLICATE_HARDWARE}
    else:
        raise ValueError(f"unknown provider {provider!r}")
    return tuple(gpu for gpu in GPU_TYPES if gpu in offered)


# --- environment the operator sets (D19) -------------------------------------------

ENV_MODEL: Final = "FERRY_MODEL"
ENV_PORT: Final = "FERRY_PORT"
ENV_DRAIN_GRACE_S: Final = "FERRY_DRAIN_GRACE_S"
ENV_PLATFORM: Final = "FERRY_PLATFORM"
ENV_ENDPOINT_UID: Final = "FERRY_ENDPOINT_UID"

#: Names the operator sets in the model server's environment; `spec.server.env` may not
#: use them (the CRD rejects them). Add every variable the operator starts setting here.
#: The server's other `FERRY_*` tuning variables stay the user's.
RESERVED_ENV_NAMES: Final = (
    ENV_MODEL,
    ENV_PORT,
    ENV_DRAIN_GRACE_S,
    ENV_PLATFORM,
    ENV_ENDPOINT_UID,
)

# --- images and URLs -----------------------------------------------------------------

#: Ferry's model-server image (built from inference-server/): what a modal endpoint
#: runs when `spec.server.image` is unset.
MODEL_SERVER_IMAGE: Final = "ghcr.io/ferry-dev/inference-server:0.1.0"

#: Each platform's API, used when a ProviderConfig sets no `spec.baseUrl`.
PLATFORM_BASE_URLS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "modal": "https://api.modal.com",
        "replicate": "https://api.replicate.com",
        "runpod": "https://api.runpod.io",
    }
)
#: RunPod's job plane, used when a runpod ProviderConfig sets no `spec.inferenceBaseUrl`.
RUNPOD_INFERENCE_BASE_URL: Final = "https://api.runpod.ai"
