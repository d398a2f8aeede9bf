"""The Replicate provider: deployments through the `replicate` package (1.0.7), async only.

The external resource is a deployment of a model version published on Replicate
(`model.providerRef`). Deployment names are unique per owner and the owner is always
the token's account, so the name is deterministic (`ferry-<namespace>-<name>`, fitted
to 63 characters with a hash) and the external name Ferry records is `<owner>/<name>`.
A same-named deployment found before Ferry recorded one is adopted only under D15.

`owner/model` without a version resolves to the model's latest version once, at
create; after that the version in status (`resolvedModelVersion`), else the version
the deployment runs, is kept, so a new upload never changes an endpoint silently.
Every PATCH makes a release; Replicate reports no instance counts, so Ready means
the current release matches the spec (D17). A deployment is deleted only once it has
been offline and unused for 15 minutes: delete scales it to zero and is retried as
polled state (D13), with backoff.

The pure mappers are in `mapping`; this module makes the calls. Calls per endpoint
per poll (D4): the deployment. The account is read once per client, the hardware list
at most once per poll interval per ProviderConfig and only when a create or an update
sends hardware. The reconciler calls the verbs; `ferry.providers.registry` holds
`BACKEND`. Facts: ../shared/design/providers.md.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
from pydantic import v1 as pydantic_v1
from replicate.__about__ import __version__ as REPLICATE_VERSION
from replicate.client import Client as ReplicateClient
from replicate.exceptions import ReplicateError
from replicate.version import Versions

from ferry.api.v1alpha1 import platforms
from ferry.logic import naming
from ferry.providers import http as platform_http
from ferry.providers.base import (
    Backend,
    ClientConfig,
    Observation,
    PermanentProviderError,
    Target,
    TransientProviderError,
)
from ferry.providers.replicate.mapping import (
    ModelRef,
    NotFound,
    Refused,
    adoption_refusal,
    check_offered,
    deployment_name,
    desired,
    diff,
    error_for,
    hardware_sku,
    model_ref,
    observation,
    offline_wait,
    split_name,
    wanted_version,
)

NAME = "replicate"
DEFAULT_API = platforms.PLATFORM_BASE_URLS[NAME]

T = TypeVar("T")

#: The Retry-After of the last answer seen by this task (set by a response hook).
_RETRY_AFTER: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "replicate_retry_after", default=None
)
_CAUGHT = (
    ReplicateError,
    pydantic_v1.ValidationError,
    json.JSONDecodeError,
    httpx.HTTPError,
    TimeoutError,
)


async def _remember_retry_after(response: httpx.Response) -> None:
    _RETRY_AFTER.set(platform_http.retry_after(response))


class _Client(ReplicateClient):
    """The replicate client over an httpx client Ferry builds.

    The package wraps every transport in its own retry layer, which sleeps any integer
    Retry-After in full and repeats a GET or DELETE up to 10 times inside one call, and
    drops the header from the error it raises. Ferry bounds each call, schedules retries
    itself (the work queue, D13) and hands Retry-After to the queue, so the connection is
    Ferry's; request building, answers and errors stay the package's (1.0.7).
    """

    def __init__(self, http: httpx.AsyncClient) -> None:
        super().__init__(base_url=str(http.base_url))
        self._ferry_http = http

    @property
    def _async_client(self) -> httpx.AsyncClient:
        return self._ferry_http

    @property
    def _client(self) -> httpx.Client:
        raise RuntimeError("Ferry calls Replicate through the async API only")


class ReplicateProvider:
    """Deployments on one Replicate account (one ProviderConfig)."""

    name = NAME
    can_search = True

    def __init__(
        self,
        config: ClientConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        policy: platform_http.RetryPolicy | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self._config = config
        self._api = config.base_url or DEFAULT_API
        if self._api.rstrip("/").endswith("/v1"):
            raise PermanentProviderError(
                f"ProviderConfig {config.config_name} sets spec.baseUrl {self._api}, but the"
                " replicate client adds /v1 to every path itself: remove the trailing /v1",
                reason="InvalidBaseUrl",
            )
        token = config.credentials.get("token") or ""
        self._http = httpx.AsyncClient(
            base_url=self._api,
            headers={
                "Authorization": f"Bearer {token}",
                "User-Agent": f"ferry replicate-python/{REPLICATE_VERSION}",
            },
            timeout=httpx.Timeout(config.call_timeout),
            transport=transport,
            follow_redirects=False,
            event_hooks={"response": [_remember_retry_after]},
        )
        self._client = _Client(self._http)
        self._policy = policy or platform_http.RetryPolicy()
        self._sleep = sleep
        self._monotonic = monotonic
        self._rng = rng or random.Random()
        # One read in flight per shared item, however many endpoints wait for it.
        self._inflight: dict[str, asyncio.Future[Any]] = {}
        self._account: str | None = None
        self._hardware: tuple[float, list[dict[str, Any]]] | None = None
        # The deployment as the last observe read it, so update and delete need no read.
        self._seen: dict[str, dict[str, Any]] = {}
        # Delete attempts refused so far, per deployment: the backoff.
        self._refusals: dict[str, int] = {}

    def external_name_for(self, target: Target) -> str | None:
        """The deployment name; the recorded external name is `<account>/<name>`."""
        return deployment_name(target)

    async def observe(self, target: Target, external_name: str | None) -> Observation:
        account = await self.account()
        owner, name = split_name(external_name or deployment_name(target), account)
        deployment = await self._deployment(owner, name)
        if deployment is None:
            return Observation.absent()
        if external_name is None:
            pending = target.endpoint.metadata.annotations.get(naming.CREATE_PENDING)
            refusal = adoption_refusal(deployment, account, pending)
            if refusal is not None:
                if target.endpoint.metadata.deletion_timestamp is not None:
                    return Observation.absent()  # nothing of this endpoint's to delete
                raise PermanentProviderError(
                    f"a Replicate deployment {owner}/{name} already exists and is not this"
                    f" endpoint's ({refusal}); Ferry leaves it alone: delete or rename it on"
                    " Replicate, or rename this endpoint",
                    reason="ExternalResourceOwnedElsewhere",
                )
        self._seen[f"{owner}/{name}"] = deployment
        ref = model_ref(target)
        version = wanted_version(ref, target.endpoint.status.resolved_model_version, deployment)
        if version is None:
            version = await self._latest(ref)
        return observation(
            deployment, desired(target, version, hardware_sku(target)), ref, self._api
        )

    async def create(self, target: Target, external_name: str | None) -> str:
        account = await self.account()
        _, name = split_name(external_name or deployment_name(target), account)
        ref = model_ref(target)
        version = wanted_version(ref, target.endpoint.status.resolved_model_version, None)
        if version is None:
            version = await self._latest(ref)
        else:
            await self._check_version(ref, version)
        want = desired(target, version, hardware_sku(target))
        check_offered(want["hardware"], await self.hardware(), target)
        made = await self._call(
            f"create deployment {name}",
            lambda: self._client.deployments.async_create(
                name=name,
                model=ref.model,
                version=want["version"],
                hardware=want["hardware"],
                min_instances=want["min_instances"],
                max_instances=want["max_instances"],
            ),
            write=True,
        )
        return str(made.id)

    async def update(self, target: Target, observation: Observation) -> None:
        external = observation.external_name or ""
        owner, name = split_name(external, await self.account())
        current = self._seen.pop(external, None) or await self._deployment(owner, name)
        if current is None:
            return  # gone since observe: the next observe finds it absent and creates it
        ref = model_ref(target)
        version = wanted_version(ref, target.endpoint.status.resolved_model_version, current)
        if version is None:
            version = await self._latest(ref)
        _, patch = diff(desired(target, version, hardware_sku(target)), current)
        if "version" in patch:
            await self._check_version(ref, version)
        if "hardware" in patch:
            check_offered(patch["hardware"], await self.hardware(), target)
        if patch:
            await self._patch(owner, name, patch)

    async def delete(self, target: Target, external_name: str) -> None:
        owner, name = split_name(external_name, await self.account())
        current = self._seen.pop(f"{owner}/{name}", None) or await self._deployment(owner, name)
        config = ((current or {}).get("current_release") or {}).get("configuration") or {}
        try:
            if config.get("min_instances") or config.get("max_instances"):
                # Replicate deletes only deployments offline and unused for a while: no
                # instances kept, and none started for new predictions.
                await self._patch(owner, name, {"min_instances": 0, "max_instances": 0})
            await self._call(
                f"delete deployment {owner}/{name}",
                lambda: self._client.deployments.async_delete(owner, name),
                write=True,
            )
        except NotFound:
            pass
        except Refused as err:
            refusals = self._refusals.get(f"{owner}/{name}", 0) + 1
            self._refusals[f"{owner}/{name}"] = refusals
            wait = offline_wait(refusals, self._config.shared_ttl)
            raise TransientProviderError(
                f"waiting for Replicate to take the deployment offline, next try in {wait:.0f}s:"
                f" {owner}/{name} is scaled to zero, and Replicate deletes only deployments"
                " offline and unused for 15 minutes (spec.deletionPolicy: Orphan finishes at"
                " once and leaves it to you)",
                retry_after=wait,
                reason="WaitingForOffline",
            ) from err
        self._refusals.pop(f"{owner}/{name}", None)

    async def orphan(self, target: Target, external_name: str) -> None:
        """Nothing to release: the deployment carries no mark of Ferry's."""
        self._seen.pop(external_name, None)

    async def close(self) -> None:
        await self._http.aclose()

    # --- reads shared by every endpoint of this account -----------------------------------

    async def account(self) -> str:
        """The token's account (`GET /v1/account`): the owner of every deployment it makes.

        Read once per client: a client is rebuilt when the Secret changes (D14).
        """
        if self._account is None:

            async def read() -> str:
                found = await self._call(
                    "read the token's account", self._client.accounts.async_current
                )
                return str(found.username)

            self._account = await self._once("account", read)
        return self._account

    async def hardware(self) -> list[dict[str, Any]]:
        """`GET /v1/hardware`, read at most once per poll interval for this account."""
        now = self._monotonic()
        if self._hardware is None or now - self._hardware[0] > self._config.shared_ttl:

            async def read() -> list[dict[str, Any]]:
                listed = await self._call("list the hardware", self._client.hardware.async_list)
                return [{"sku": h.sku, "name": h.name} for h in listed]

            self._hardware = (now, await self._once("hardware", read))
        return self._hardware[1]

    async def _once(self, key: str, read: Callable[[], Awaitable[T]]) -> T:
        """`read()`, shared by every caller that asks while it runs (a failure included)."""
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.ensure_future(read())
            self._inflight[key] = task

            def done(finished: asyncio.Future[Any]) -> None:
                self._inflight.pop(key, None)
                if not finished.cancelled():
                    finished.exception()  # retrieved here: each waiter gets it too

            task.add_done_callback(done)
        # A caller that gives up (its reconcile's deadline) leaves the read to the others.
        result: T = await asyncio.shield(task)
        return result

    # --- calls ----------------------------------------------------------------------------

    async def _deployment(self, owner: str, name: str) -> dict[str, Any] | None:
        try:
            found = await self._call(
                f"read deployment {owner}/{name}",
                lambda: self._client.deployments.async_get(f"{owner}/{name}"),
            )
        except NotFound:
            return None
        body: dict[str, Any] = found.dict()
        return body

    async def _patch(self, owner: str, name: str, patch: dict[str, Any]) -> None:
        await self._call(
            f"update deployment {owner}/{name} ({', '.join(patch)})",
            lambda: self._client.deployments.async_update(owner, name, **patch),
            write=True,
        )

    async def _latest(self, ref: ModelRef) -> str:
        try:
            model = await self._call(
                f"read model {ref.model}", lambda: self._client.models.async_get(ref.model)
            )
        except NotFound:
            raise PermanentProviderError(
                f"Replicate has no model {ref.model} (spec.model.providerRef) that the token's"
                " account can see; check the name",
                reason="ModelNotFound",
            ) from None
        if model.latest_version is None:
            raise PermanentProviderError(
                f"Replicate's model {ref.model} (spec.model.providerRef) has no version to"
                " deploy yet",
                reason="ModelNotFound",
            )
        return str(model.latest_version.id)

    async def _check_version(self, ref: ModelRef, version: str) -> None:
        try:
            await self._call(
                f"read version {version} of {ref.model}",
                lambda: Versions(self._client, (ref.owner, ref.name)).async_get(version),
            )
        except NotFound:
            raise PermanentProviderError(
                f"Replicate has no version {version} of model {ref.model}"
                f" (spec.model.providerRef {ref.model}:{version}); check the version id",
                reason="ModelNotFound",
            ) from None

    async def _call(self, what: str, call: Callable[[], Awaitable[T]], *, write: bool = False) -> T:
        """One platform call with a deadline; reads get a few bounded retries, writes none."""
        policy = self._policy
        for attempt in range(1, policy.max_attempts + 1):
            _RETRY_AFTER.set(None)
            try:
                async with asyncio.timeout(self._config.call_timeout):
                    return await call()
            except _CAUGHT as exc:
                err = error_for(
                    exc,
                    what=what,
                    config=self._config,
                    write=write,
                    retry_after=_RETRY_AFTER.get(),
                    timeout=self._config.call_timeout,
                )
            if (
                write
                or attempt == policy.max_attempts
                or not isinstance(err, TransientProviderError)
            ):
                raise err
            wait = err.retry_after
            if wait is None:
                ceiling = min(policy.max_backoff, policy.base_backoff * 2 ** (attempt - 1))
                wait = self._rng.uniform(ceiling / 2, ceiling)
            if wait > policy.max_inline_wait:
                raise err
            await self._sleep(wait)
        raise AssertionError("unreachable: the last attempt always returns or raises")


BACKEND = Backend(
    NAME,
    connect=ReplicateProvider,
    required_keys=("token",),
    default_base_url=DEFAULT_API,
    exports_env=False,
)
