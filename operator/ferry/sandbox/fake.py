"""What every platform fake does the same way: its clock, faults, call counts and lifecycle.

`PlatformFake` is the base of `runpod.app.RunPodSandbox`, `replicate.app.ReplicateSandbox`
and `modal.app.ModalSandbox`: it owns the sandbox clock (D6), the fault table and call
counter its surfaces consult, the notifier that wakes long-polls, the optional pool of real
processes (D7), and the ticker, reset, clock-step and close steps `__main__` and the admin
routes drive. A subclass builds its `platform` (the state machine) and its apps, and says
how to stop what its platform runs.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from ferry.sandbox.calls import CallCounter
from ferry.sandbox.clock import SandboxClock
from ferry.sandbox.faults import FaultTable
from ferry.sandbox.http import Notifier
from ferry.sandbox.modelserver import ModelServer
from ferry.sandbox.processes import ProcessPool

#: How often the ticker moves a fake's state along its clock (wall seconds).
TICK_INTERVAL_S = 0.1


class PlatformState(Protocol):
    """A fake's state machine, driven only by its clock."""

    def tick(self) -> None:
        """Apply everything that is due by the clock's now."""

    def advance(self, seconds: float) -> None:
        """Step the clock by `seconds`, stopping at every event inside the step."""

    def reset(self) -> None:
        """Forget every resource."""


class RuntimeConfig(Protocol):
    """What every fake's config says about real processes."""

    @property
    def inference(self) -> bool: ...

    @property
    def max_processes(self) -> int: ...

    @property
    def server(self) -> ModelServer | None: ...


class PlatformFake:
    """The shared half of a fake; see the module docstring."""

    #: The platform's name, for logs ("RunPod").
    label = "platform"
    platform: PlatformState

    def __init__(self, speed: float, clock: SandboxClock | None) -> None:
        self.clock = clock or SandboxClock(speed)
        self.faults = FaultTable()
        self.calls = CallCounter()
        self.notifier = Notifier()
        self.pool: ProcessPool | None = None
        self.log = logging.getLogger(f"ferry.sandbox.{self.label.lower()}")

    async def run_ticker(self) -> None:
        """Keep the platform moving with the clock until cancelled."""
        while True:
            try:
                self.platform.tick()
            except Exception:
                self.log.exception("sandbox bug: the %s fake's tick failed", self.label)
            await asyncio.sleep(TICK_INTERVAL_S)

    async def close(self) -> None:
        """Stop what the platform runs, then its real processes, and wait for them."""
        self.stop_platform()
        if self.pool is not None:
            await self.pool.stop_all()

    def stop_platform(self) -> None:
        """Stop the platform's workers, instances or containers (each fake says which)."""
        raise NotImplementedError

    async def reset(self) -> None:
        """Forget all state, faults and call counts (the clock keeps running)."""
        self.platform.reset()
        self.faults.clear()
        self.calls.reset()

    def describe_runtime(self, platform: str, config: RuntimeConfig) -> dict[str, Any]:
        """The part of `GET /_sandbox` every fake shares: what runs its models, its clock."""
        server = config.server
        return {
            "sandbox": "ferry",
            "platform": platform,
            "inference": "on" if config.inference else "off",
            "maxProcesses": config.max_processes if config.inference else 0,
            "model": str(server.model_dir) if server else None,
            "clock": self.clock.describe(),
        }

    async def _advance(self, seconds: float) -> None:
        self.platform.advance(seconds)

    async def _clock_changed(self) -> None:
        self.platform.tick()
