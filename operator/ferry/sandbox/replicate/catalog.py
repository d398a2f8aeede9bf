"""What the Replicate fake sells and serves: its account, hardware, prices and seed models.

The hardware list follows ../shared/design/providers.md ("GPU identifiers per platform";
`GET /v1/hardware` returns `{name, sku}`), and prices its list-price table (USD per
GPU-second, 2025-2026): a test that passes proves Ferry's mapping against that note, not
against the live platform. A40 SKUs are offered without a recorded price. The seed model
`ferry-dev/tiny-llm` has two versions whose input and output schema mirror
`inference-server/replicate/predict.py` (the cog predictor every prediction runs); version
ids are deterministic so examples can pin one. Read by `platform` and `api`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

CATALOGUE_DATE = "2026-06"
CATALOGUE_SOURCE = "shared/design/providers.md (Replicate hardware SKUs and list prices)"

ACCOUNT = {"type": "user", "username": "ferry-sandbox", "name": "Ferry Sandbox"}


@dataclass(frozen=True)
class Hardware:
    """One SKU of `GET /v1/hardware`, with what billing needs."""

    sku: str
    name: str
    gpus: int
    usd_per_gpu_second: float | None

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "sku": self.sku}

    @property
    def usd_per_second(self) -> float | None:
        return None if self.usd_per_gpu_second is None else self.usd_per_gpu_second * self.gpus


HARDWARE: tuple[Hardware, ...] = (
    Hardware("cpu", "CPU", 0, None),
    Hardware("gpu-t4", "Nvidia T4 GPU", 1, 0.000225),
    Hardware("gpu-a40-small", "Nvidia A40 GPU", 1, None),
    Hardware("gpu-a40-large", "Nvidia A40 (Large) GPU", 1, None),
    Hardware("gpu-l40s", "Nvidia L40S GPU", 1, 0.000975),
    Hardware("gpu-l40s-2x", "2x Nvidia L40S GPU", 2, 0.000975),
    Hardware("gpu-a100-large", "Nvidia A100 (80GB) GPU", 1, 0.0014),
    Hardware("gpu-a100-large-2x", "2x Nvidia A100 (80GB) GPU", 2, 0.0014),
    Hardware("gpu-h100", "Nvidia H100 GPU", 1, 0.001525),
)
BY_SKU = {h.sku: h for h in HARDWARE}

#: cog's schema of inference-server/replicate/predict.py: `Predictor.predict`'s inputs.
INPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Input",
    "required": ["prompt"],
    "properties": {
        "prompt": {
            "type": "string",
            "title": "Prompt",
            "x-order": 0,
            "description": "Text to complete",
        },
        "max_tokens": {
            "type": "integer",
            "title": "Max Tokens",
            "x-order": 1,
            "default": 128,
            "minimum": 1,
            "description": "Maximum tokens to generate",
        },
        "temperature": {
            "type": "number",
            "title": "Temperature",
            "x-order": 2,
            "default": 0.7,
            "minimum": 0,
            "description": "Sampling temperature",
        },
        "top_p": {
            "type": "number",
            "title": "Top P",
            "x-order": 3,
            "default": 1.0,
            "minimum": 0,
            "maximum": 1,
            "description": "Nucleus sampling",
        },
        "seed": {
            "type": "integer",
            "title": "Seed",
            "x-order": 4,
            "default": -1,
            "description": "Random seed (-1 for none)",
        },
    },
}
OUTPUT_SCHEMA: dict[str, Any] = {
    "type": "array",
    "title": "Output",
    "items": {"type": "string"},
    "x-cog-array-type": "iterator",
    "x-cog-array-display": "concatenate",
}
COG_VERSION = "0.23.1"


def openapi_schema() -> dict[str, Any]:
    """The version's `openapi_schema`, as cog generates it (the parts clients read)."""
    return {
        "openapi": "3.0.2",
        "info": {"title": "Cog", "version": "0.1.0"},
        "paths": {},
        "components": {"schemas": {"Input": INPUT_SCHEMA, "Output": OUTPUT_SCHEMA}},
    }


def version_id(model: str, number: int) -> str:
    """A 64-hex version id, the same in every sandbox: `sha256("<owner>/<name>@<n>")`."""
    return hashlib.sha256(f"{model}@{number}".encode()).hexdigest()


#: Seed models: (owner, name, description, number of versions).
SEED_MODELS: tuple[tuple[str, str, str, int], ...] = (
    (
        "ferry-dev",
        "tiny-llm",
        "The sandbox's tiny language model, served by Ferry's cog predictor",
        2,
    ),
)
