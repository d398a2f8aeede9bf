"""The GPUs the RunPod fake sells: type ids, serverless pools and per-pool prices.

Data, not logic: dated and sourced. Pools and type ids follow Ferry's design notes
(providers.md, "RunPod: serverless endpoints"), which the operator's own GPU table also
follows, so a test passing against the sandbox proves the mapping against those notes, not
against RunPod's live catalogue (which wins in production: the operator reads `pool` from
`GET /v2/catalog/gpus`).

Public sources disagree on the L4's pool (AMPERE_24 with the A5000 and 3090, or ADA_24 with
the RTX 4090). The sandbox follows ADA_24, the pool Ferry's operator is told to expect.

Prices: RunPod's v2 catalogue quotes one serverless rate per pool, in USD per GPU-hour.
The figures are providers.md's list prices (USD per GPU-second, as published in 2025-2026)
x 3600. AMPERE_24 takes the L4 row's rate (the source placing L4 there); ADA_24 takes the
RTX 4090 row's. providers.md records no serverless price for AMPERE_16 or AMPERE_48: those
GPUs carry no `price.serverless` (the spec allows its absence) and bill 0 USD, while their
seconds are still counted (see `GET /_sandbox/billing`). Pod prices and pod counts are not
modelled (the sandbox sells serverless only): they are 0 so the spec's required fields exist.
"""

from __future__ import annotations

from dataclasses import dataclass

CATALOGUE_DATE = "2026-01"
CATALOGUE_SOURCE = (
    "Ferry design notes providers.md: pools per RunPod's public GPU pages; serverless list "
    "prices as published in 2025-2026 (per GPU-second x 3600)"
)

# USD per GPU per hour, one serverless rate per pool.
POOL_PRICE_PER_GPU_HOUR: dict[str, float | None] = {
    "AMPERE_16": None,
    "AMPERE_24": round(0.00019 * 3600, 6),
    "ADA_24": round(0.00031 * 3600, 6),
    "AMPERE_48": None,
    "ADA_48_PRO": round(0.00053 * 3600, 6),
    "AMPERE_80": round(0.00076 * 3600, 6),
    "ADA_80_PRO": round(0.00116 * 3600, 6),
    "HOPPER_141": round(0.00155 * 3600, 6),
}


@dataclass(frozen=True)
class GpuType:
    """One GPU type: its RunPod id, display name, pool (None: not serverless) and VRAM (GB)."""

    id: str
    name: str
    pool: str | None
    memory_gb: int

    @property
    def price_per_hour(self) -> float | None:
        """Serverless USD per GPU-hour of this type's pool (None when not recorded)."""
        return POOL_PRICE_PER_GPU_HOUR.get(self.pool) if self.pool else None

    def to_json(self) -> dict[str, object]:
        """The spec's `GpuType` shape."""
        price: dict[str, float] = {"secure": 0.0, "community": 0.0}
        if self.price_per_hour is not None:
            price["serverless"] = self.price_per_hour
        return {
            "id": self.id,
            "name": self.name,
            "pool": self.pool,
            "manufacturer": "NVIDIA",
            "memory": self.memory_gb,
            "secure": True,
            "community": False,
            "price": price,
            "maxCount": {"secure": 8, "community": 0},
        }


GPUS: tuple[GpuType, ...] = (
    GpuType("NVIDIA RTX A4000", "RTX A4000", "AMPERE_16", 16),
    GpuType("NVIDIA RTX A5000", "RTX A5000", "AMPERE_24", 24),
    GpuType("NVIDIA GeForce RTX 3090", "RTX 3090", "AMPERE_24", 24),
    GpuType("NVIDIA GeForce RTX 4090", "RTX 4090", "ADA_24", 24),
    GpuType("NVIDIA L4", "L4", "ADA_24", 24),
    GpuType("NVIDIA RTX A6000", "RTX A6000", "AMPERE_48", 48),
    GpuType("NVIDIA A40", "A40", "AMPERE_48", 48),
    GpuType("NVIDIA L40", "L40", "ADA_48_PRO", 48),
    GpuType("NVIDIA L40S", "L40S", "ADA_48_PRO", 48),
    GpuType("NVIDIA RTX 6000 Ada Generation", "RTX 6000 Ada", "ADA_48_PRO", 48),
    GpuType("NVIDIA A100 80GB PCIe", "A100 PCIe", "AMPERE_80", 80),
    GpuType("NVIDIA A100-SXM4-80GB", "A100 SXM", "AMPERE_80", 80),
    GpuType("NVIDIA H100 PCIe", "H100 PCIe", "ADA_80_PRO", 80),
    GpuType("NVIDIA H100 80GB HBM3", "H100 SXM", "ADA_80_PRO", 80),
    GpuType("NVIDIA H100 NVL", "H100 NVL", "ADA_80_PRO", 94),
    GpuType("NVIDIA H200", "H200 SXM", "HOPPER_141", 141),
    # Sold for pods only: no serverless pool.
    GpuType("NVIDIA GeForce RTX 3070", "RTX 3070", None, 8),
)

BY_ID: dict[str, GpuType] = {g.id: g for g in GPUS}
POOLS: tuple[str, ...] = tuple(dict.fromkeys(g.pool for g in GPUS if g.pool))


def types_in_pools(pools: list[str]) -> list[str]:
    """GPU type ids in any of `pools`, in catalogue order."""
    wanted = set(pools)
    return [g.id for g in GPUS if g.pool in wanted]


def price_per_hour(pool: str) -> float | None:
    """Serverless USD per GPU-hour for `pool` (None when not recorded)."""
    return POOL_PRICE_PER_GPU_HOUR.get(pool)
