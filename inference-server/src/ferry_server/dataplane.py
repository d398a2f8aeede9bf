"""Data plane: liveness, readiness, admission/drain and inference on top of an engine.

Every entrypoint (HTTP, RunPod, Replicate) goes through this layer, so validation, drain
semantics and metrics are the same on every platform.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

from ferry_server.config import Settings
from ferry_server.engine.base import (
    LOGIT_BIAS,
    LOGPROBS,
    PENALTIES,
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
from ferry_server.spot import Notice, SpotWatcher

log = logging.getLogger("ferry_server.dataplane")

# Completions' legacy default; chat has none (bounded by the context and the server's limit).
DEFAULT_MAX_TOKENS = 16


def drain_timeline(grace_s: float, propagation_s: float) -> tuple[float, float]:
    """(propagation delay, deadline), in seconds after SIGTERM.

    The process must be gone by `grace_s` (the pod's terminationGracePeriodSeconds is set a
    little above it), so the deadline keeps a margin for uvicorn's shutdown and the exit, and
    the propagation delay, during which requests are still accepted while Kubernetes takes the
    pod out of its Services, takes at most half of what is left.
    """
    deadline = grace_s - min(2.0, grace_s * 0.2)
    return min(propagation_s, deadline / 2), deadline


class DataPlane:
    """Owns the engine's lifecycle and the server's drain state."""

    def __init__(self, settings: Settings, engine: Engine, metrics: Metrics) -> None:
        self.settings = settings
        self.engine = engine
        self.metrics = metrics
        self.draining = False  # SIGTERM came: readiness is off
        self.accepting = True  # false once the propagation delay is over
        self.drain_reason = ""
        self.spot: SpotWatcher | None = None
        self.spot_notice: Notice | None = None
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
        """Model loaded, engine healthy, and no SIGTERM (a spot notice alone keeps it ready)."""
        return self._loaded and not self.draining and self.engine.healthy()

    def _update_ready(self) -> None:
        self.metrics.ready.set(1 if self.ready() else 0)

    # ---- admission and drain ---------------------------------------------------------------

    @property
    def inflight(self) -> int:
        return self._inflight

    def admit(self) -> None:
        """Count a request in, or refuse it with Draining."""
        if not self.accepting:
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

    def report_spot_notice(self, notice: Notice) -> None:
        """Show a spot notice on /metrics and /readyz and keep serving (D11: the operator
        orders the drain, which reaches this process as SIGTERM)."""
        self.spot_notice = notice
        self.metrics.spot_notice_deadline.set(notice.deadline)

    def begin_drain(self, reason: str, propagate: bool = True) -> None:
        """Turn readiness off now; after the propagation delay refuse new requests; exit once
        in-flight work is done or the grace runs out.

        `propagate=False` (SIGINT, a person at a terminal) skips the delay.
        """
        if self.draining:
            return
        self.draining = True
        self.drain_reason = reason
        self.metrics.draining.set(1)
        self._update_ready()
        propagation, deadline = drain_timeline(
            self.settings.drain_grace_s, self.settings.drain_propagation_s if propagate else 0.0
        )
        log.warning(
            "draining (%s): %d request(s) in flight; accepting new ones for %.1f s more, "
            "exiting within %.1f s", reason, self._inflight, propagation, deadline,
        )
        self._drain_task = asyncio.get_running_loop().create_task(
            self._drain(propagation, deadline), name="ferry-drain"
        )

    async def _drain(self, propagation: float, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        if propagation > 0:
            # Endpoints controllers and load balancers learn of the SIGTERM only now; requests
            # they still send here must not fail (a rolling update would lose them).
            await asyncio.sleep(propagation)
        self.accepting = False
        log.warning("no longer accepting requests: %d in flight", self._inflight)
        try:
            remaining = max(deadline - (loop.time() - started), 0.0)
            await asyncio.wait_for(self._idle.wait(), timeout=remaining)
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
        fit_context: bool = False,
        logprobs: int | None = None,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        logit_bias: dict[int, float] | None = None,
    ) -> GenerationRequest:
        """Validate sampling parameters against the server's limits and the engine.

        `max_tokens=None` means the legacy completions default of 16, or, with
        `fit_context=True` (chat), as many as the context and the server's limit allow.
        """
        limit = self.settings.max_tokens_limit
        n = (limit if fit_context else DEFAULT_MAX_TOKENS) if max_tokens is None else max_tokens
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
        if seed is not None and not -(2**63) <= seed < 2**63:
            raise InvalidInput("seed must fit in 64 bits", param="seed")
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        if len(stops) > 4 or any(not s for s in stops):
            raise InvalidInput("stop takes at most 4 non-empty strings", param="stop")
        for name, value in (("presence_penalty", presence_penalty),
                            ("frequency_penalty", frequency_penalty)):
            if not -2.0 <= value <= 2.0:
                raise InvalidInput(f"{name} must be between -2 and 2, got {value}", param=name)
        bias = dict(logit_bias or {})
        for token, value in bias.items():
            if not -100.0 <= value <= 100.0:
                raise InvalidInput(
                    f"logit_bias for token {token} must be between -100 and 100, got {value}",
                    param="logit_bias",
                )
        self._require_feature(LOGPROBS, logprobs is not None, "logprobs")
        self._require_feature(LOGIT_BIAS, bool(bias), "logit_bias")
        self._require_feature(
            PENALTIES, bool(presence_penalty or frequency_penalty),
            "presence_penalty" if presence_penalty else "frequency_penalty",
        )
        return GenerationRequest(
            prompt=prompt,
            max_tokens=n,
            temperature=temperature,
            top_p=top_p,
            stop=tuple(stops),
            seed=seed,
            ignore_eos=ignore_eos,
            fit_context=fit_context and max_tokens is None,
            logprobs=logprobs,
            presence_penalty=presence_penalty,
            frequency_penalty=frequency_penalty,
            logit_bias=bias,
        )

    def _require_feature(self, feature: str, used: bool, param: str) -> None:
        if used and feature not in self.engine.features:
            raise InvalidInput(
                f"{param} is not supported by the {self.engine.name} engine this server runs",
                param=param,
            )

    def _require_ready(self) -> None:
        if not self._loaded:
            raise ModelNotReady(self.load_error or "model is still loading")

    async def complete(self, request: GenerationRequest) -> GenerationResult:
        """Generate a whole completion."""
        async with contextlib.aclosing(self.stream(request)) as chunks:
            return await collect(chunks)

    async def complete_all(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        """Several completions side by side (they share batches); one failing cancels all."""
        if len(requests) == 1:
            return [await self.complete(requests[0])]
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(self.complete(r)) for r in requests]
        except BaseExceptionGroup as failed:
            # Clients see the first domain error (a 400, a 503), as with a single request.
            first = next((e for e in failed.exceptions if isinstance(e, FerryError)), None)
            if first is None:
                raise
            raise first from None
        return [t.result() for t in tasks]

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[TokenChunk, None]:
        """Stream a completion, recording time to first token and tokens/s."""
        self._require_ready()
        start = time.perf_counter()
        first = True
        self.metrics.queue_depth.set(self.engine.queue_depth() + 1)
        async with contextlib.aclosing(self.engine.stream(request)) as chunks:
            async for chunk in chunks:
                if first:
                    self.metrics.ttft.observe(time.perf_counter() - start)
                    self.metrics.queue_depth.set(self.engine.queue_depth())
                    first = False
                if chunk.finish_reason is not None:
                    elapsed = time.perf_counter() - start
                    if elapsed > 0 and chunk.completion_tokens:
                        self.metrics.tokens_per_second.observe(chunk.completion_tokens / elapsed)
                yield chunk

    async def primed_stream(self, request: GenerationRequest) -> AsyncGenerator[TokenChunk, None]:
        """Like `stream`, but errors before the first chunk raise here, not mid-response.

        HTTP handlers await this so that validation and readiness failures become proper
        status codes instead of a broken event stream.
        """
        agen = self.stream(request)
        first = await anext(agen)
        return _prepend(first, agen)

    async def primed_streams(
        self, requests: list[GenerationRequest]
    ) -> list[AsyncGenerator[TokenChunk, None]]:
        """`primed_stream` for several requests at once (queued together, so they batch)."""
        results = await asyncio.gather(
            *(self.primed_stream(r) for r in requests), return_exceptions=True
        )
        streams = [r for r in results if not isinstance(r, BaseException)]
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            for stream in streams:
                await stream.aclose()
            raise failed[0]
        return streams

    def describe(self) -> dict[str, Any]:
        """State for /readyz bodies and logs."""
        return {
            "model": self.settings.served_model_name,
            "engine": self.engine.name,
            "loaded": self._loaded,
            "draining": self.draining,
            "accepting": self.accepting,
            "inflight": self._inflight,
            "load_error": self.load_error,
            "spot_notice": (
                self.spot_notice.describe(time.time()) if self.spot_notice is not None else None
            ),
            "spot_watch": self.spot.status() if self.spot is not None else None,
        }


async def _prepend(
    first: TokenChunk, rest: AsyncGenerator[TokenChunk, None]
) -> AsyncGenerator[TokenChunk, None]:
    try:
        yield first
        async for chunk in rest:
            yield chunk
    finally:
        await rest.aclose()  # closing this closes the engine's stream too: the row stops
