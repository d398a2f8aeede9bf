"""The sandbox clock: wall time x a speed factor, plus steps taken on purpose (D6).

Every fake reads time only from its `SandboxClock`: worker boots, idle timeouts, queue delays
and billing all follow it, so tests step the clock (admin route `POST /_sandbox/clock`, or
`advance()` in-process) instead of sleeping. Speed 0 freezes it between steps. Owned by each
platform's state object; read by everything that schedules or bills.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime


class SandboxClock:
    """Epoch seconds on the sandbox's timeline.

    `now() = start + (monotonic elapsed since the last re-anchor) x speed + steps`. The start is
    the wall time at construction, so timestamps look like real ones. Changing the speed
    re-anchors, so time never jumps or runs backwards.
    """

    def __init__(
        self,
        speed: float = 1.0,
        *,
        start: float | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if speed < 0:
            raise ValueError(f"clock speed must be 0 or more, got {speed}")
        self._monotonic = monotonic
        self._anchor_value = time.time() if start is None else start
        self._anchor_mono = monotonic()
        self._speed = speed
        self._stepped = 0.0
        self._listeners: list[Callable[[], None]] = []

    @property
    def speed(self) -> float:
        """Sandbox seconds per wall second (0 = frozen between steps)."""
        return self._speed

    @property
    def stepped(self) -> float:
        """Total seconds added by `advance()` since construction."""
        return self._stepped

    def now(self) -> float:
        """Current sandbox time, epoch seconds."""
        elapsed = (self._monotonic() - self._anchor_mono) * self._speed
        return self._anchor_value + elapsed

    def advance(self, seconds: float) -> float:
        """Step the clock forward by `seconds` (>= 0); returns the new time."""
        if seconds < 0:
            raise ValueError(f"the clock only moves forward; got {seconds} seconds")
        self._anchor_value += seconds
        self._stepped += seconds
        self._notify()
        return self.now()

    def set_speed(self, speed: float) -> None:
        """Change the speed factor from now on (>= 0)."""
        if speed < 0:
            raise ValueError(f"clock speed must be 0 or more, got {speed}")
        self._anchor_value = self.now()
        self._anchor_mono = self._monotonic()
        self._speed = speed
        self._notify()

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call `listener` after every step or speed change (fakes re-evaluate their state)."""
        self._listeners.append(listener)

    def _notify(self) -> None:
        for listener in self._listeners:
            listener()

    def describe(self) -> dict[str, object]:
        """Admin view: `{now (RFC 3339), epoch, speed, steppedSeconds}`."""
        now = self.now()
        return {
            "now": rfc3339(now),
            "epoch": now,
            "speed": self._speed,
            "steppedSeconds": self._stepped,
        }


def step_through(
    clock: SandboxClock,
    seconds: float,
    next_event: Callable[[float], float | None],
    tick: Callable[[], None],
) -> None:
    """Step `clock` by `seconds`, stopping at every event inside the step, in time order.

    `next_event(now)` is the earliest moment after `now` at which `tick()` would change
    something (a boot ending, an idle timeout, a deadline); the fake ticks there, so one big
    step ends where the same time passing at speed 1 would have. Used by the fakes' `advance`.
    """
    target = clock.now() + seconds
    for _ in range(100_000):
        now = clock.now()
        when = next_event(now)
        if when is None or when > target:
            break
        clock.advance(when - now)
        tick()
    clock.advance(max(0.0, target - clock.now()))
    tick()


def rfc3339(epoch: float) -> str:
    """`2026-06-01T12:00:00Z` (UTC, whole seconds), as the platforms' APIs write times."""
    return datetime.fromtimestamp(int(epoch), tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str) -> float:
    """Epoch seconds from an RFC 3339 timestamp; raises ValueError when it is not one."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no time zone")
    return value.timestamp()
