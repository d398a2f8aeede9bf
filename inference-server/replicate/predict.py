"""Replicate (cog) predictor: the same data plane as the HTTP server, behind cog's interface.

cog calls setup() once per container and predict() per request. The engine lives on a private
event loop in a background thread so that concurrent predictions still share one batcher.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.join(_ROOT, "src") not in sys.path:
    sys.path.insert(0, os.path.join(_ROOT, "src"))
os.environ.setdefault("FERRY_MODEL", os.path.join(_ROOT, "model"))

from cog import BasePredictor, ConcatenateIterator, Input

from ferry_server.app import build_dataplane
from ferry_server.config import Settings
from ferry_server.dataplane import DataPlane
from ferry_server.engine.base import GenerationRequest, TokenChunk

_DONE = object()


class Predictor(BasePredictor):  # type: ignore[misc]
    """Text completion with Ferry's engine; streams tokens (Replicate's LLM convention)."""

    def setup(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="ferry-cog-loop", daemon=True
        )
        self._thread.start()
        self._dp: DataPlane = self._run(self._start())

    async def _start(self) -> DataPlane:
        dp = build_dataplane(Settings.from_env())
        await dp.start()
        await dp.wait_loaded()
        return dp

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def predict(
        self,
        prompt: str = Input(description="Text to complete"),
        max_tokens: int = Input(description="Maximum tokens to generate", default=128, ge=1),
        temperature: float = Input(description="Sampling temperature", default=0.7, ge=0.0),
        top_p: float = Input(description="Nucleus sampling", default=1.0, ge=0.0, le=1.0),
        seed: int = Input(description="Random seed (-1 for none)", default=-1),
    ) -> ConcatenateIterator[str]:
        req = self._dp.build_request(
            prompt,
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=None if seed < 0 else seed,
        )
        yield from self._stream(req)

    def _stream(self, req: GenerationRequest) -> Iterator[str]:
        chunks: asyncio.Queue[Any] | None = None
        ready: Future[asyncio.Queue[Any]] = Future()

        async def pump() -> None:
            q: asyncio.Queue[Any] = asyncio.Queue()
            ready.set_result(q)
            try:
                async with self._dp.admitted():
                    async for chunk in self._dp.stream(req):
                        q.put_nowait(chunk)
            except BaseException as exc:
                q.put_nowait(exc)
            q.put_nowait(_DONE)

        asyncio.run_coroutine_threadsafe(pump(), self._loop)
        chunks = ready.result()
        while True:
            item = asyncio.run_coroutine_threadsafe(chunks.get(), self._loop).result()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, TokenChunk)
            if item.text:
                yield item.text

    def shutdown(self) -> None:
        """Release the model and stop the loop thread (not part of cog's interface)."""
        self._run(self._dp.stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
