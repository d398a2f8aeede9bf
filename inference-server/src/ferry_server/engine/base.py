"""The engine interface: an async context manager that loads a model and generates text."""

from __future__ import annotations

import abc
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
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
    # max_tokens is an upper bound (the server's limit) that the engine lowers to the context
    # the prompt leaves: chat requests without max_tokens, which have no small default.
    fit_context: bool = False
    # None: no logprobs; k >= 0: each generated token's logprob plus the k most likely ones.
    logprobs: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: Mapping[int, float] = field(default_factory=dict)


@dataclass(frozen=True)
class TokenLogprob:
    """A token as OpenAI reports it: text, raw bytes and log probability (plus alternatives)."""

    token: str
    token_bytes: bytes
    logprob: float
    top: tuple[TokenLogprob, ...] = ()
    #: A special token (e.g. padding): it adds nothing to the decoded text.
    special: bool = False


@dataclass(frozen=True)
class TokenChunk:
    """A piece of streamed output; `finish_reason` is set on the last chunk only.

    `token_ids` and `logprobs` cover the tokens generated since the previous chunk; their text
    may come in a later chunk (a character split across tokens is sent once it is complete).
    """

    text: str
    finish_reason: FinishReason | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    token_ids: tuple[int, ...] = ()
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class GenerationResult:
    """A finished completion."""

    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    token_ids: tuple[int, ...] = ()
    logprobs: tuple[TokenLogprob, ...] = ()


async def collect(stream: AsyncIterator[TokenChunk]) -> GenerationResult:
    """Drain a chunk stream into one result; the last chunk supplies reason and token counts."""
    parts: list[str] = []
    ids: list[int] = []
    logprobs: list[TokenLogprob] = []
    last = TokenChunk(text="")
    async for chunk in stream:
        parts.append(chunk.text)
        ids.extend(chunk.token_ids)
        logprobs.extend(chunk.logprobs)
        last = chunk
    return GenerationResult(
        text="".join(parts),
        finish_reason=last.finish_reason or "length",
        prompt_tokens=last.prompt_tokens,
        completion_tokens=last.completion_tokens,
        token_ids=tuple(ids),
        logprobs=tuple(logprobs),
    )


@dataclass
class LoadTimings:
    """Cold-start phases in seconds: import, weight_load, warmup."""

    phases: dict[str, float] = field(default_factory=dict)


# Optional request features; the data plane rejects a request using one its engine lacks.
LOGPROBS = "logprobs"
LOGIT_BIAS = "logit_bias"
PENALTIES = "penalties"


class Engine(abc.ABC):
    """Loads a model on `__aenter__`, frees it on `__aexit__`, and generates in between."""

    name: str = "engine"
    features: frozenset[str] = frozenset()

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
    def stream(self, request: GenerationRequest) -> AsyncGenerator[TokenChunk, None]:
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
