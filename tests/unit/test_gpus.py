"""One GPU table per backend, tied to the portable names."""

from __future__ import annotations

import pytest

from ferry.api.v1alpha1 import platforms, types
from ferry.logic import gpus

REMOTE = {
    "runpod": set(gpus.RUNPOD_GPU_TYPES),
    "modal": set(gpus.MODAL_GPUS),
    "replicate": {gpu for gpu, _ in gpus.REPLICATE_HARDWARE},
}


def test_every_table_speaks_portable_names() -> None:
    portable = set(platforms.GPU_TYPES)
    assert set(gpus.PRODUCTS) == portable, "local must map every portable name to node products"
    for provider, names in REMOTE.items():
        assert names <= portable, f"{provider} lists {names - portable}, not portable names"


def test_no_name_is_listed_in_one_place_only() -> None:
    for gpu in platforms.GPU_TYPES:
        sold_by = [p for p, names in REMOTE.items() if gpu in names]
        assert sold_by, f"{gpu} is sold by no remote backend: drop it or map it"


def test_the_tables_hold_what_providers_md_lists() -> None:
    assert gpus.RUNPOD_GPU_TYPES["H100"] == {
        "NVIDIA H100 PCIe",
        "NVIDIA H100 80GB HBM3",
        "NVIDIA H100 NVL",
    }
    assert gpus.RUNPOD_GPU_TYPES["A100-80GB"] == {"NVIDIA A100 80GB PCIe", "NVIDIA A100-SXM4-80GB"}
    assert set(gpus.MODAL_GPUS.values()) == {
        "T4",
        "L4",
        "A10G",
        "L40S",
        "A100-40GB",
        "A100-80GB",
        "H100",
        "H200",
    }
    assert dict(gpus.REPLICATE_HARDWARE) == {
        ("T4", 1): "gpu-t4",
        ("L40S", 1): "gpu-l40s",
        ("L40S", 2): "gpu-l40s-2x",
        ("A100-80GB", 1): "gpu-a100-large",
        ("A100-80GB", 2): "gpu-a100-large-2x",
        ("H100", 1): "gpu-h100",
    }


def test_runpod_ids_are_a_set_over_type_and_fallbacks() -> None:
    assert gpus.runpod_gpu_type_ids(["H100", "L4", "H100"]) == [
        "NVIDIA H100 80GB HBM3",
        "NVIDIA H100 NVL",
        "NVIDIA H100 PCIe",
        "NVIDIA L4",
    ]
    with pytest.raises(KeyError):
        gpus.runpod_gpu_type_ids(["T4"])


def test_modal_gpus_rank_and_count() -> None:
    assert gpus.modal_gpus(["H100", "A100-80GB"], 1) == ["H100", "A100-80GB"]
    assert gpus.modal_gpus(["H100"], 2) == ["H100:2"]


def test_replicate_hardware_by_type_and_count() -> None:
    assert gpus.replicate_hardware("L40S", 2) == "gpu-l40s-2x"
    assert gpus.replicate_hardware("H100", 2) is None
    assert gpus.replicate_hardware("L4", 1) is None


def test_offered_gpus_follow_the_tables() -> None:
    assert gpus.offered_gpus("local") == platforms.GPU_TYPES
    assert gpus.offered_gpus("runpod") == ("L4", "L40S", "A100-80GB", "H100", "H200", "RTX4090")
    assert gpus.offered_gpus("replicate") == ("T4", "L40S", "A100-80GB", "H100")
    assert "RTX4090" not in gpus.offered_gpus("modal")
    with pytest.raises(ValueError, match="unknown provider"):
        gpus.offered_gpus("lambda")


def test_cel_offers_what_the_tables_offer() -> None:
    from ferry.api.v1alpha1 import rules

    texts = {r["fieldPath"]: r for r in rules.endpoint_rules() if "runpod" in r["message"]}
    gpu_rule = texts[".gpu.type"]
    for gpu in platforms.GPU_TYPES:
        assert (f"'{gpu}'" in gpu_rule["rule"]) is (gpu in gpus.RUNPOD_GPU_TYPES)
    assert types.GPU_TYPES == platforms.GPU_TYPES


def test_products_are_ordered_without_repeats() -> None:
    assert gpus.products(["H100", "H100", "L4"]) == [
        "NVIDIA-H100-80GB-HBM3",
        "NVIDIA-H100-PCIe",
        "NVIDIA-H100-NVL",
        "NVIDIA-L4",
    ]
