"""The engine interface: an async context manager that loads a model and generates text."""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt to complete, already validated by the data plane."""

    prompt: str
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    ignore_eos: bool = False


@dataclass(frozen=True)
class TokenChunk:
    """A piece of streamed output; `finish_reason` is set on the last chunk only."""

    text: str
    finish_reason: FinishReason | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True)
class GenerationResult:
    """A finished completion."""

    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int


async def collect(stream: AsyncIterator[TokenChunk]) -> GenerationResult:
    """Drain a chunk stream into one result; the last chunk supplies reason and token counts."""
    parts: list[str] = []
    last = TokenChunk(text="")
    async for chunk in stream:
        parts.append(chunk.text)
        last = chunk
    return GenerationResult(
        text="".join(parts),
        finish_reason=last.finish_reason or "length",
        prompt_tokens=last.prompt_tokens,
        completion_tokens=last.completion_tokens,
    )


@dataclass
class LoadTimings:
    """Cold-start phases in seconds: import, weight_load, warmup."""

    phases: dict[str, float] = field(default_factory=dict)


class Engine(abc.ABC):
    """Loads a model on `__aenter__`, frees it on `__aexit__`, and generates in between."""

    name: str = "engine"

    def __init__(self) -> None:
        self.timings = LoadTimings()

    @abc.abstractmethod
    async def load(self) -> None:
        """Import the backend, load weights onto the device and warm up."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop background work and release the model."""

    @abc.abstractmethod
    def healthy(self) -> bool:
        """True while the model is loaded and the engine can serve."""

    @abc.abstractmethod
    def count_tokens(self, text: str) -> int:
        """Number of prompt tokens `text` encodes to."""

    @property
    @abc.abstractmethod
    def max_context(self) -> int:
        """The longest prompt + completion the model accepts, in tokens."""

    @abc.abstractmethod
    def apply_chat_template(self, messages: list[dict[str, str]]) -> str:
        """Render chat messages into one prompt string."""

    @abc.abstractmethod
    def stream(self, request: GenerationRequest) -> AsyncIterator[TokenChunk]:
        """Yield the completion piece by piece; the last chunk carries the finish reason."""

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        """Run a request to completion."""
        return await collect(self.stream(request))

    def queue_depth(self) -> int:
        """Requests waiting for a batch slot."""
        return 0

    async def __aenter__(self) -> Engine:
        await self.load()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
