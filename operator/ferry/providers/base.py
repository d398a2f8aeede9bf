"""The provider interface, its observation type, its error tree and the registry entry.

Modelled on Crossplane's ExternalClient. The contract every provider keeps:

- every call is idempotent: `create` never fails on "already exists", `delete`
  accepts "not found";
- `observe` never changes anything;
- nothing blocks the event loop (async I/O only), and every platform call has a
  deadline of its own;
- errors are `TransientProviderError` (retry later, maybe after `retry_after`) or
  `PermanentProviderError` (needs a change by a person); messages are sentences a
  user can act on and never contain credentials.

One provider object serves every endpoint of one ProviderConfig (it holds that
account's HTTP client), so the verbs take the endpoint as a `Target`. Providers
never import kopf or each other; `ferry.providers` registers them in one table.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from ferry.api.v1alpha1 import types


class ProviderError(Exception):
    """Something went wrong talking to a provider."""

    def __init__(self, message: str, *, reason: str = "ProviderError") -> None:
        super().__init__(message)
        self.reason = reason


class TransientProviderError(ProviderError):
    """Worth retrying: throttling, timeouts, 5xx, capacity that may come back.

    `maybe_applied` is True when a write was sent but no answer came back (a
    timeout, a dropped connection, a 5xx): the platform may have done it, so a
    create is looked up by tag before it is ever sent again.
    """

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        reason: str = "ProviderUnavailable",
        maybe_applied: bool = False,
    ) -> None:
        super().__init__(message, reason=reason)
        self.retry_after = retry_after
        self.maybe_applied = maybe_applied


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
    """What a provider saw of the external resource.

    `ready_replicas` is None where the platform reports no such count (Modal,
    Replicate: D17); Ferry never invents one. `pending_since` is when the platform
    started waiting for capacity, when it says so. `surge_replicas` counts replicas
    a drain runs above `desired_replicas` (None: no drain); `interruption` is a
    termination drain in progress (the SpotInterrupted condition); `warning` is
    something a person should know about a ready resource (its reason becomes
    Ready's, e.g. ExternalAutoscalerBoundsDiffer).
    """

    exists: bool
    up_to_date: bool = False
    external_name: str | None = None
    url: str | None = None
    openai_base_url: str | None = None
    desired_replicas: int | None = 0
    ready_replicas: int | None = 0
    # Still rolling out (new replicas not ready yet); Ready waits for it to finish.
    progressing: bool = False
    diff: list[str] = field(default_factory=list)
    problem: Problem | None = None
    running_containers: int | None = None
    resolved_model_version: str | None = None
    release_number: int | None = None
    #: What the platform says of the resource, in a few words, for people (it ends
    #: Ready's message where no replica count exists, e.g. a Replicate release).
    detail: str | None = None
    surge_replicas: int | None = None
    interruption: Problem | None = None
    warning: Problem | None = None

    @staticmethod
    def absent() -> Observation:
        return Observation(exists=False)


@dataclass(frozen=True)
class Credentials:
    """Secret values from a ProviderConfig's Secret. Never printed."""

    values: Mapping[str, str] = field(repr=False)

    def __repr__(self) -> str:
        return f"Credentials(keys={sorted(self.values)})"

    def get(self, key: str) -> str | None:
        return self.values.get(key)


@dataclass(frozen=True)
class Target:
    """What a provider is asked to make real: the endpoint as read, plus the values
    its `server.env` references, resolved from Secrets that may leave the cluster.

    `env` is ordered as `server.env` lists it and is never printed.
    """

    endpoint: types.InferenceEndpoint
    env: tuple[tuple[str, str], ...] = field(default=(), repr=False)

    @property
    def uid(self) -> str:
        return self.endpoint.metadata.uid or ""

    @property
    def namespace(self) -> str:
        return self.endpoint.metadata.namespace or "default"

    @property
    def name(self) -> str:
        return self.endpoint.metadata.name


@dataclass(frozen=True)
class ClientConfig:
    """Everything the connector hands a remote provider's factory for one account.

    `config_name` and `secret_name` only serve messages ("rejected by RunPod:
    check Secret runpod-token of ProviderConfig runpod"). Times are seconds.
    """

    provider: str
    base_url: str
    inference_base_url: str | None
    credentials: Credentials
    config_name: str
    secret_name: str
    regions: tuple[str, ...] = ()
    call_timeout: float = 10.0
    #: How long account-wide reads (a GPU catalogue) are shared: the poll interval.
    shared_ttl: float = 60.0
    clock: Callable[[], datetime] | None = None


class Provider(Protocol):
    """One backend account. Every verb is idempotent and bounded in time."""

    name: str
    #: observe(target, None) finds what an earlier create made for this endpoint
    #: (by a deterministic name or a tag), so a create whose answer was lost can be
    #: looked up instead of repeated.
    can_search: bool

    def external_name_for(self, target: Target) -> str | None:
        """The name create will use, when it is deterministic; None when the platform
        assigns an id."""
        ...

    async def observe(self, target: Target, external_name: str | None) -> Observation:
        """Look at the external resource; `external_name` None means "find it by tag"."""
        ...

    async def create(self, target: Target, external_name: str | None) -> str:
        """Create the external resource and return its external name.

        `external_name` is the recorded one (a re-create after the resource vanished
        keeps a deterministic name); platforms that assign ids return the new id.
        """
        ...

    async def update(self, target: Target, observation: Observation) -> None:
        """Bring the external resource to the spec (also repairs drift)."""
        ...

    async def delete(self, target: Target, external_name: str) -> None:
        """Start deleting; the reconciler observes until it is gone."""
        ...

    async def orphan(self, target: Target, external_name: str) -> None:
        """Release the external resource so that it outlives the endpoint."""
        ...

    async def close(self) -> None:
        """Release connections; called when the ProviderConfig or its Secret changed."""
        ...


@dataclass(frozen=True)
class Backend:
    """A provider's entry in the registry (`ferry.providers.registry`).

    `required_keys` are the credential Secret keys; `default_base_url` and
    `default_inference_base_url` are the platform's own (the export rules compare
    against them); `connect` builds one client per ProviderConfig.
    """

    name: str
    connect: Callable[[ClientConfig], Provider]
    required_keys: tuple[str, ...] = ()
    default_base_url: str | None = None
    default_inference_base_url: str | None = None
    #: The platform receives server.env values: Secrets they reference must allow it.
    exports_env: bool = True
