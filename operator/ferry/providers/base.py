"""The provider interface, its observation type and its error tree.

Modelled on Crossplane's ExternalClient. The contract every provider keeps:

- every call is idempotent: `create` never fails on "already exists", `delete`
  accepts "not found";
- `observe` never changes anything;
- nothing blocks the event loop (async I/O only);
- errors are `TransientProviderError` (retry later, maybe after `retry_after`) or
  `PermanentProviderError` (needs a change by a person); messages are sentences a
  user can act on and never contain credentials.

Providers never import kopf or each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from ferry.api.v1alpha1 import types


class ProviderError(Exception):
    """Something went wrong talking to a provider."""

    def __init__(self, message: str, *, reason: str = "ProviderError") -> None:
        super().__init__(message)
        self.reason = reason


class TransientProviderError(ProviderError):
    """Worth retrying: throttling, timeouts, 5xx, capacity that may come back."""

    def __init__(
        self, message: str, *, retry_after: float | None = None, reason: str = "ProviderUnavailable"
    ) -> None:
        super().__init__(message, reason=reason)
        self.retry_after = retry_after


class PermanentProviderError(ProviderError):
    """Retrying will not help until someone changes the spec, credentials or quota."""


@dataclass(frozen=True)
class Problem:
    """Why an existing external resource is not serving (e.g. no GPU capacity)."""

    reason: str
    message: str
    # A stalled problem cannot resolve without a change; others are still progressing.
    stalled: bool = True


@dataclass(frozen=True)
class Observation:
    """What a provider saw of the external resource."""

    exists: bool
    up_to_date: bool = False
    external_name: str | None = None
    url: str | None = None
    desired_replicas: int = 0
    ready_replicas: int = 0
    # Still rolling out (new replicas not ready yet); Ready waits for it to finish.
    progressing: bool = False
    diff: list[str] = field(default_factory=list)
    problem: Problem | None = None

    @staticmethod
    def absent() -> Observation:
        return Observation(exists=False)


@dataclass(frozen=True)
class Credentials:
    """Secret values from a ProviderConfig's Secret. Never printed."""

    values: dict[str, str] = field(repr=False)

    def __repr__(self) -> str:
        return f"Credentials(keys={sorted(self.values)})"

    def get(self, key: str) -> str | None:
        return self.values.get(key)


class Provider(Protocol):
    """One backend. `ep` is the endpoint as read from the API server."""

    name: str

    async def observe(self, ep: types.InferenceEndpoint, external_name: str | None) -> Observation:
        """Look at the external resource; `external_name` None means "find it by tag"."""
        ...

    async def create(self, ep: types.InferenceEndpoint) -> str:
        """Create the external resource and return its external name."""
        ...

    async def update(self, ep: types.InferenceEndpoint, observation: Observation) -> None:
        """Bring the external resource to the spec (also repairs drift)."""
        ...

    async def delete(self, ep: types.InferenceEndpoint, external_name: str) -> None:
        """Start deleting; the reconciler observes until it is gone."""
        ...

    async def orphan(self, ep: types.InferenceEndpoint, external_name: str) -> None:
        """Release the external resource so that it outlives the endpoint."""
        ...
