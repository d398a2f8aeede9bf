"""A deduplicating, delaying work queue with a pool of workers.

This is controller-runtime's workqueue in asyncio: a key (namespace, name) is queued
at most once however many watch events arrive for it, is never processed by two
workers at once, and can be re-added after a delay. Failures back off per key,
exponentially, until a success resets it (the queue's rate limiter). Each
controller has its own queue, named by its `name` (the `controller` label of the
queue metrics); `ferry.controllers` builds them and `ferry.handlers` feeds them
from kopf's watch events.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ferry import metrics

log = logging.getLogger(__name__)

#: (kind, namespace, name): one object of one kind.
Key = tuple[str, str, str]


@dataclass(frozen=True)
class Outcome:
    """What a worker function says about a key after processing it."""

    requeue_after: float | None = None
    error: bool = False


Work = Callable[[Key], Awaitable[Outcome]]


class WorkQueue:
    """Queue keys now or later; `workers` coroutines process them one key at a time."""

    def __init__(
        self,
        work: Work,
        *,
        name: str = "endpoints",
        workers: int = 16,
        base_backoff: float = 1.0,
        max_backoff: float = 60.0,
    ) -> None:
        self.name = name
        self._work = work
        self._workers = workers
        self._base = base_backoff
        self._max = max_backoff
        self._queue: asyncio.Queue[Key] = asyncio.Queue()
        self._queued: set[Key] = set()
        self._active: set[Key] = set()
        self._dirty: set[Key] = set()  # re-added while being processed
        self._timers: dict[Key, asyncio.TimerHandle] = {}
        self._failures: dict[Key, int] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._run(i)) for i in range(self._workers)]

    async def stop(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    def add(self, key: Key) -> None:
        """Process `key` as soon as a worker is free (at most once in the queue)."""
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        if key in self._active:
            self._dirty.add(key)
            return
        if key in self._queued:
            return
        self._queued.add(key)
        self._queue.put_nowait(key)
        metrics.QUEUE_DEPTH.labels(controller=self.name).set(len(self._queued))

    def add_after(self, key: Key, delay: float) -> None:
        """Process `key` after `delay` seconds, unless something adds it sooner."""
        if delay <= 0:
            self.add(key)
            return
        existing = self._timers.get(key)
        loop = asyncio.get_running_loop()
        if existing is not None and existing.when() <= loop.time() + delay:
            return
        if existing is not None:
            existing.cancel()
        self._timers[key] = loop.call_later(delay, self._fire, key)

    def forget(self, key: Key) -> None:
        """Drop timers and backoff for a key whose object is gone."""
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        self._failures.pop(key, None)

    def backoff(self, key: Key) -> float:
        failures = self._failures.get(key, 0)
        return float(min(self._max, self._base * (2 ** max(0, failures - 1))))

    def _fire(self, key: Key) -> None:
        self._timers.pop(key, None)
        self.add(key)

    async def _run(self, index: int) -> None:
        while True:
            key = await self._queue.get()
            self._queued.discard(key)
            metrics.QUEUE_DEPTH.labels(controller=self.name).set(len(self._queued))
            self._active.add(key)
            try:
                with metrics.WORK_SECONDS.labels(controller=self.name).time():
                    outcome = await self._work(key)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s: work on %s %s/%s crashed", self.name, *key)
                outcome = Outcome(error=True)
            finally:
                self._active.discard(key)
            result = "error" if outcome.error else "ok"
            metrics.WORK.labels(controller=self.name, result=result).inc()
            self._after(key, outcome)

    def _after(self, key: Key, outcome: Outcome) -> None:
        if outcome.error:
            self._failures[key] = self._failures.get(key, 0) + 1
            metrics.QUEUE_RETRIES.labels(controller=self.name).inc()
            delay = (
                outcome.requeue_after if outcome.requeue_after is not None else self.backoff(key)
            )
        else:
            self._failures.pop(key, None)
            delay = outcome.requeue_after if outcome.requeue_after is not None else -1.0
        if key in self._dirty:
            self._dirty.discard(key)
            self.add(key)
            if delay > 0:
                self.add_after(key, delay)
        elif delay >= 0:
            self.add_after(key, delay)
