"""Pick and build the engine named by the settings."""

from __future__ import annotations

import importlib.util
import os
import shutil

from ferry_server.config import Settings
from ferry_server.engine.base import Engine
from ferry_server.metrics import Metrics


def gpu_present() -> bool:
    """Cheap check for an NVIDIA GPU that does not import torch."""
    return os.path.exists("/dev/nvidia0") or shutil.which("nvidia-smi") is not None


def choose_engine(settings: Settings) -> str:
    """`auto` means vLLM when it is installed and a GPU is present, otherwise transformers."""
    if settings.engine != "auto":
        return settings.engine
    if (
        settings.device in ("auto", "cuda")
        and importlib.util.find_spec("vllm") is not None
        and gpu_present()
    ):
        return "vllm"
    return "transformers"


def create_engine(settings: Settings, metrics: Metrics | None = None) -> Engine:
    """Build (but do not load) the engine for these settings; it reports into `metrics`."""
    kind = choose_engine(settings)
    if kind == "vllm":
        from ferry_server.engine.vllm_engine import VLLMEngine

        return VLLMEngine(settings, metrics)
    from ferry_server.engine.transformers_engine import TransformersEngine

    return TransformersEngine(settings, metrics)
