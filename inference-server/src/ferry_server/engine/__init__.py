"""Engines: load a model and generate tokens behind one interface."""

from ferry_server.engine.base import (
    Engine,
    FinishReason,
    GenerationRequest,
    GenerationResult,
    TokenChunk,
)
from ferry_server.engine.factory import create_engine

__all__ = [
    "Engine",
    "FinishReason",
    "GenerationRequest",
    "GenerationResult",
    "TokenChunk",
    "create_engine",
]
