"""Faults injected on demand: throttling, server errors, slow answers and lost responses.

A fault matches calls by HTTP method and route template (the path with its `{placeholders}`,
exactly as `GET /_sandbox/calls` lists it) and fires for the next `count` matching calls, or
until cleared when `count` is null. The first matching fault, in the order added, wins.
Kinds (what the caller sees; whether the call's effect happens):

- `status`: an error status (default 503) with a problem body; the call has no effect.
- `rate_limit`: 429 with `Retry-After` (integer seconds) and the rate-limit headers; no effect.
- `delay`: the call is answered normally after `delaySeconds` of wall time.
- `lose_response`: the call takes effect (a create creates), then the answer never comes: the
  request is held open until the client gives up and disconnects (any sane client timeout),
  at most `holdSeconds` (default 600), after which it is answered 504. This is the "create
  applied but response lost" case: the client cannot tell whether its call happened.

Delays and holds are wall time, not sandbox time: they exist to exercise clients' timeouts.
Owned per fake (`http.Surface` consults it on every platform route); edited through
`/_sandbox/faults`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Literal

import pydantic

FaultKind = Literal["status", "rate_limit", "delay", "lose_response"]


class FaultSpec(pydantic.BaseModel):
    """Body of `POST /_sandbox/faults` (camelCase on the wire)."""

    model_config = pydantic.ConfigDict(extra="forbid", populate_by_name=True)

    method: str = pydantic.Field(description="HTTP method, or * for any")
    route: str = pydantic.Field(description="route template, e.g. /v2/serverless/{id}")
    kind: FaultKind
    status: int = pydantic.Field(503, ge=400, le=599, description="for kind=status")
    retry_after_seconds: int = pydantic.Field(
        1, ge=0, alias="retryAfterSeconds", description="for kind=rate_limit"
    )
    delay_seconds: float = pydantic.Field(
        1.0, ge=0, le=3600, alias="delaySeconds", description="for kind=delay"
    )
    hold_seconds: float = pydantic.Field(
        600.0, ge=0, le=3600, alias="holdSeconds", description="for kind=lose_response"
    )
    count: int | None = pydantic.Field(
        1, ge=1, description="fire for the next N matching calls; null = until cleared"
    )


@dataclass
class Fault:
    """One armed fault and how often it has fired."""

    id: str
    spec: FaultSpec
    remaining: int | None
    fired: int = 0

    def matches(self, method: str, route: str) -> bool:
        """True when this fault applies to a call of `method` on `route`."""
        wanted = self.spec.method.upper()
        return (wanted in ("*", method.upper())) and self.spec.route == route

    def describe(self) -> dict[str, object]:
        """Admin view: the spec (camelCase) plus `id`, `remaining` and `fired`."""
        body = self.spec.model_dump(by_alias=True)
        body.update({"id": self.id, "remaining": self.remaining, "fired": self.fired})
        return body


class FaultTable:
    """The armed faults of one fake, consulted once per platform call."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._ids = itertools.count(1)

    def add(self, spec: FaultSpec) -> Fault:
        """Arm a fault; returns it with its id (`f1`, `f2`, ...)."""
        fault = Fault(id=f"f{next(self._ids)}", spec=spec, remaining=spec.count)
        self._faults.append(fault)
        return fault

    def take(self, method: str, route: str) -> Fault | None:
        """The fault this call triggers, if any, consuming one of its count."""
        for fault in self._faults:
            if fault.matches(method, route):
                fault.fired += 1
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                return fault
        return None

    def remove(self, fault_id: str) -> bool:
        """Disarm one fault; False when no fault has that id."""
        for fault in self._faults:
            if fault.id == fault_id:
                self._faults.remove(fault)
                return True
        return False

    def clear(self) -> None:
        """Disarm every fault."""
        self._faults.clear()

    def describe(self) -> list[dict[str, object]]:
        """Admin view of the armed faults, in matching order."""
        return [f.describe() for f in self._faults]
