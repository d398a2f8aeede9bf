"""Data plane: liveness, readiness, admission/drain and inference on top of an engine.

Every entrypoint (HTTP, RunPod, Replicate) goes through this layer, so validation, drain
semantics and metrics are the same on every platform.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from ferry_server.config import Settings
from ferry_server.engine.base import (
    Engine,
    GenerationRequest,
    GenerationResult,
    TokenChunk,
    collect,
)
from ferry_server.errors import (
    Draining,
    FerryError,
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
)
from ferry_server.metrics import Metrics

log = logging.getLogger("ferry_server.dataplane")


class DataPlane:
    """Owns the engine's lifecycle and the server's drain state."""

    def __init__(self, settings: Settings, engine: Engine, metrics: Metrics) -> None:
        self.settings = settings
        self.engine = engine
        self.metrics = metrics
        self.draining = False
        self.drain_reason = ""
        self.load_error: str | None = None
        self.on_drained: Callable[[], None] | None = None
        self.on_fatal: Callable[[], None] | None = None
        self._loaded = False
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._load_task: asyncio.Task[None] | None = None
        self._drain_task: asyncio.Task[None] | None = None

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the engine in the background so /healthz answers during the cold start."""
        self._load_task = asyncio.create_task(self._load(), name="ferry-load")

    async def wait_loaded(self) -> None:
        """Wait for the background load; raise ModelNotReady if it failed."""
        if self._load_task is not None:
            await asyncio.shield(self._load_task)
        if not self._loaded:
            raise ModelNotReady(self.load_error or "model is not loaded")

    async def _load(self) -> None:
        try:
            await self.engine.load()
        except FerryError as exc:
            self.load_error = str(exc)
            log.error("model load failed: %s", exc)
            if self.on_fatal is not None:
                self.on_fatal()
            return
        except Exception as exc:
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.exception("model load failed")
            if self.on_fatal is not None:
                self.on_fatal()
            return
        for phase, seconds in self.engine.timings.phases.items():
            self.metrics.model_load.labels(phase=phase).set(seconds)
        self._loaded = True
        self._update_ready()
        log.info(
            "model %s ready on %s engine (%s)",
            self.settings.served_model_name,
            self.engine.name,
            ", ".join(f"{k} {v:.2f}s" for k, v in self.engine.timings.phases.items()),
        )

    async def stop(self) -> None:
        """Stop loading (if still running) and release the engine."""
        if self._load_task is not None and not self._load_task.done():
            self._load_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._load_task
        if self._drain_task is not None and not self._drain_task.done():
            self._drain_task.cancel()
        await self.engine.close()

    # ---- probes ----------------------------------------------------------------------------

    def live(self) -> bool:
        """The process is up and its event loop answers; deliberately cheap."""
        return True

    def ready(self) -> bool:
        """Model loaded, engine healthy, and not draining."""
        return self._loaded and not self.draining and self.engine.healthy()

    def _update_ready(self) -> None:
        self.metrics.ready.set(1 if self.ready() else 0)

    # ---- admission and drain ---------------------------------------------------------------

    @property
    def inflight(self) -> int:
        return self._inflight

    def admit(self) -> None:
        """Count a request in, or refuse it with Draining."""
        if self.draining:
            raise Draining("server is draining; retry on another replica")
        self._inflight += 1
        self._idle.clear()
        self.metrics.inflight.set(self._inflight)

    def release(self) -> None:
        """Count a request out."""
        self._inflight -= 1
        self.metrics.inflight.set(self._inflight)
        if self._inflight == 0:
            self._idle.set()

    @contextlib.asynccontextmanager
    async def admitted(self) -> AsyncIterator[None]:
        """Admission for non-HTTP entrypoints (RunPod, Replicate)."""
        self.admit()
        try:
            yield
        finally:
            self.release()

    def begin_drain(self, reason: str) -> None:
        """Turn readiness off now, refuse new requests, and exit once in-flight work is done."""
        if self.draining:
            return
        self.draining = True
        self.drain_reason = reason
        self.metrics.draining.set(1)
        self._update_ready()
        log.warning("draining (%s): %d request(s) in flight", reason, self._inflight)
        self._drain_task = asyncio.get_running_loop().create_task(self._drain(), name="ferry-drain")

    async def _drain(self) -> None:
        grace = self.settings.drain_grace_s
        budget = max(grace - min(2.0, grace * 0.2), grace * 0.5)
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=budget)
            log.info("drain complete: no requests in flight")
        except TimeoutError:
            log.error("drain grace ran out with %d request(s) in flight", self._inflight)
        if self.on_drained is not None:
            self.on_drained()

    # ---- inference -------------------------------------------------------------------------

    def check_model(self, model: str | None) -> None:
        """Reject a `model` field that names another model."""
        if model and model != self.settings.served_model_name:
            raise ModelNotFound(
                f"model {model!r} is not served here; this server serves "
                f"{self.settings.served_model_name!r}"
            )

    def build_request(
        self,
        prompt: str,
        *,
        max_tokens: int | None,
        temperature: float = 1.0,
        top_p: float = 1.0,
        stop: str | list[str] | None = None,
        seed: int | None = None,
        ignore_eos: bool = False,
    ) -> GenerationRequest:
        """Validate sampling parameters against the server's limits."""
        limit = self.settings.max_tokens_limit
        n = 16 if max_tokens is None else max_tokens
        if n < 1:
            raise InvalidInput(f"max_tokens must be at least 1, got {n}", param="max_tokens")
        if n > limit:
            raise InvalidInput(
                f"max_tokens is {n}, over this server's limit of {limit}", param="max_tokens"
            )
        if not 0.0 <= temperature <= 5.0:
            raise InvalidInput(
                f"temperature must be between 0 and 5, got {temperature}", param="temperature"
            )
        if not 0.0 < top_p <= 1.0:
            raise InvalidInput(f"top_p must be in (0, 1], got {top_p}", param="top_p")
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        if len(stops) > 4 or any(not s for s in stops):
            raise InvalidInput("stop takes at most 4 non-empty strings", param="stop")
        return GenerationRequest(
            prompt=prompt,
            max_tokens=n,
            temperature=temperature,
            top_p=top_p,
            stop=tuple(stops),
            seed=seed,
            ignore_eos=ignore_eos,
        )

    def _require_ready(self) -> None:
        if self.draining:
            raise Draining("server is draining; retry on another replica")
        if not self._loaded:
            raise ModelNotReady(self.load_error or "model is still loading")

    async def complete(self, request: GenerationRequest) -> GenerationResult:
        """Generate a whole completion."""
        return await collect(self.stream(request))

    async def stream(self, request: GenerationRequest) -> AsyncIterator[TokenChunk]:
        """Stream a completion, recording time to first token and tokens/s."""
        self._require_ready()
        start = time.perf_counter()
        first = True
        self.metrics.queue_depth.set(self.engine.queue_depth() + 1)
        async for chunk in self.engine.stream(request):
            if first:
                self.metrics.ttft.observe(time.perf_counter() - start)
                self.metrics.queue_depth.set(self.engine.queue_depth())
                first = False
            if chunk.finish_reason is not None:
                elapsed = time.perf_counter() - start
                self.metrics.tokens.inc(chunk.completion_tokens)
                if elapsed > 0 and chunk.completion_tokens:
                    self.metrics.tokens_per_second.observe(chunk.completion_tokens / elapsed)
            yield chunk

    async def primed_stream(self, request: GenerationRequest) -> AsyncIterator[TokenChunk]:
        """Like `stream`, but errors before the first chunk raise here, not mid-response.

        HTTP handlers await this so that validation and readiness failures become proper
        status codes instead of a broken event stream.
        """
        agen = self.stream(request)
        first = await anext(agen)
        return _prepend(first, agen)

    def describe(self) -> dict[str, Any]:
        """State for /readyz bodies and logs."""
        return {
            "model": self.settings.served_model_name,
            "engine": self.engine.name,
            "loaded": self._loaded,
            "draining": self.draining,
            "inflight": self._inflight,
            "load_error": self.load_error,
        }


async def _prepend(first: TokenChunk, rest: AsyncIterator[TokenChunk]) -> AsyncIterator[TokenChunk]:
    yield first
    async for chunk in rest:
        yield chunk
