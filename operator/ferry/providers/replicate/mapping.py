"""Replicate's pure mappers: providerRef, hardware, names, releases, D15 adoption, errors.

No I/O: `client.ReplicateProvider` reads and writes through the `replicate` package and
hands what it read to these functions; unit tests call them directly. `error_for` maps
the three kinds of failure the client raises (`ReplicateError`, pydantic v1 validation
errors for answers that do not fit its models, httpx transport errors) onto Ferry's.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from pydantic import v1 as pydantic_v1
from replicate.exceptions import ReplicateError

from ferry.logic import gpus, naming
from ferry.providers.base import (
    ClientConfig,
    Observation,
    PermanentProviderError,
    Problem,
    ProviderError,
    Target,
    TransientProviderError,
)

PLATFORM = "Replicate"
#: How much older than Ferry's create-pending mark an adopted deployment may look (D15):
#: the mark is stamped by the operator's clock, `created_at` by Replicate's.
CLOCK_SKEW = timedelta(seconds=60)
#: The longest wait between delete attempts, in poll intervals.
OFFLINE_BACKOFF_CAP = 5

_REF = re.compile(r"^(?P<owner>[^/:]+)/(?P<name>[^/:]+)(?::(?P<version>[A-Za-z0-9]+))?$")


@dataclass(frozen=True)
class ModelRef:
    """`model.providerRef` taken apart: owner/name, and the version when pinned."""

    owner: str
    name: str
    version: str | None

    @property
    def model(self) -> str:
        return f"{self.owner}/{self.name}"


def parse_ref(text: str) -> ModelRef:
    """`owner/model[:version]`; the CRD enforces the shape, so a mismatch is a bug upstream."""
    found = _REF.match(text)
    if found is None:
        raise PermanentProviderError(
            f"model.providerRef {text!r} is not owner/model or owner/model:version",
            reason="InvalidModelRef",
        )
    return ModelRef(found["owner"], found["name"], found["version"])


def model_ref(target: Target) -> ModelRef:
    ref = target.endpoint.spec.model.provider_ref
    if not ref:
        raise PermanentProviderError(
            "a replicate endpoint needs model.providerRef (owner/model or owner/model:version)",
            reason="InvalidModelRef",
        )
    return parse_ref(ref)


def deployment_name(target: Target) -> str:
    """The deployment's name under the token's account: deterministic per endpoint."""
    return naming.platform_name(target.namespace, target.name)


def split_name(external_name: str, owner: str) -> tuple[str, str]:
    """(owner, name) from a recorded `owner/name` (a bare name is the account's)."""
    head, _, tail = external_name.partition("/")
    return (head, tail) if tail else (owner, head)


def hardware_sku(target: Target) -> str:
    """The hardware SKU for (gpu.type, gpu.count); admission rejects pairs with none (D8)."""
    gpu = target.endpoint.spec.gpu
    sku = gpus.replicate_hardware(gpu.type, gpu.count)
    if sku is None:
        raise PermanentProviderError(
            f"Replicate has no hardware for {gpu.count} x {gpu.type} (spec.gpu)",
            reason="GPUNotOffered",
        )
    return sku


def check_offered(sku: str, hardware: list[dict[str, Any]], target: Target) -> None:
    """Raise GPUNotOffered naming what `/v1/hardware` lists when it lacks `sku`."""
    if any(h.get("sku") == sku for h in hardware):
        return
    gpu = target.endpoint.spec.gpu
    offered = ", ".join(f"{h.get('sku')} ({h.get('name')})" for h in hardware)
    raise PermanentProviderError(
        f"Replicate's hardware list no longer offers {sku} for {gpu.count} x {gpu.type}"
        f" (spec.gpu); it offers {offered}",
        reason="GPUNotOffered",
    )


def wanted_version(
    ref: ModelRef, recorded: str | None, deployed: Mapping[str, Any] | None
) -> str | None:
    """The version to run: pinned, else the one resolved before (status), else the one
    the deployment already runs; None means "resolve the latest now" (first create)."""
    if ref.version:
        return ref.version
    if recorded:
        return recorded
    release = (deployed or {}).get("current_release") or {}
    if release.get("model") == ref.model and release.get("version"):
        return str(release["version"])
    return None


def desired(target: Target, version: str, sku: str) -> dict[str, Any]:
    """The release Ferry wants: the create body less name and model."""
    scaling = target.endpoint.spec.scaling
    return {
        "version": version,
        "hardware": sku,
        "min_instances": scaling.min_replicas,
        "max_instances": scaling.max_replicas,
    }


def diff(
    want: Mapping[str, Any], deployment: Mapping[str, Any]
) -> tuple[list[str], dict[str, Any]]:
    """(changed fields, the PATCH body setting exactly those): every PATCH is a release."""
    release = deployment.get("current_release") or {}
    config = release.get("configuration") or {}
    have = {"version": release.get("version"), **config}
    patch = {k: v for k, v in want.items() if have.get(k) != v}
    return list(patch), patch


def adoption_refusal(
    deployment: Mapping[str, Any], account: str, pending: str | None
) -> str | None:
    """Why a same-named deployment is not this endpoint's (D15), or None to adopt it.

    It is Ferry's only if a create is pending for the endpoint, the deployment is at its
    first release, was created no earlier than the pending mark (less clock skew) and
    belongs to the token's account.
    """
    release = deployment.get("current_release") or {}
    if not pending:
        return "Ferry has no create pending for this endpoint"
    if deployment.get("owner") != account:
        return f"it belongs to {deployment.get('owner')}, not to the token's account {account}"
    if release.get("number") != 1:
        return f"it is at release {release.get('number')}, not its first"
    try:
        made = datetime.fromisoformat(str(release.get("created_at")).replace("Z", "+00:00"))
        mark = datetime.strptime(pending, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return "its creation time cannot be compared with Ferry's create-pending mark"
    if made < mark - CLOCK_SKEW:
        return f"it was created at {release.get('created_at')}, before Ferry's create ({pending})"
    return None


def observation(
    deployment: Mapping[str, Any], want: Mapping[str, Any], ref: ModelRef, api: str
) -> Observation:
    """What Ferry reports: release, version and URL; no instance count (D17)."""
    owner, name = deployment["owner"], deployment["name"]
    release = deployment.get("current_release") or {}
    problem = None
    changed, _ = diff(want, deployment)
    if release and release.get("model") != ref.model:
        problem = Problem(
            "ModelImmutable",
            f"deployment {owner}/{name} runs {release.get('model')} and Replicate cannot"
            f" change a deployment's model to {ref.model} (spec.model.providerRef): set it"
            " back, or create a new endpoint for the other model",
        )
        changed = []
    return Observation(
        exists=True,
        up_to_date=not changed,
        external_name=f"{owner}/{name}",
        url=f"{api}/v1/deployments/{owner}/{name}/predictions",
        desired_replicas=None,
        ready_replicas=None,
        diff=changed,
        problem=problem,
        resolved_model_version=str(want["version"]),
        release_number=release.get("number"),
        detail=release_detail(release),
    )


def release_detail(release: Mapping[str, Any]) -> str | None:
    """`release N on <hardware>, instances min-max`: what the deployment read gives."""
    if not release:
        return None
    config = release.get("configuration") or {}
    return (
        f"release {release.get('number')} on {config.get('hardware')},"
        f" instances {config.get('min_instances')}-{config.get('max_instances')}"
    )


def offline_wait(refusals: int, poll: float) -> float:
    """Seconds until the next delete attempt: one poll interval, doubling, capped."""
    return float(min(poll * 2 ** max(0, refusals - 1), poll * OFFLINE_BACKOFF_CAP))


class NotFound(PermanentProviderError):
    """Replicate answered 404 (callers to whom absence means something catch it)."""


class Refused(PermanentProviderError):
    """Replicate refused a request (a 4xx other than 401/403/404/429); `detail` is its word."""

    def __init__(self, message: str, *, reason: str, detail: str) -> None:
        super().__init__(message, reason=reason)
        self.detail = detail


def error_for(
    exc: BaseException,
    *,
    what: str,
    config: ClientConfig,
    write: bool,
    retry_after: float | None = None,
    timeout: float = 10.0,
) -> ProviderError:
    """Map what the replicate client raised onto Ferry's errors (never credentials).

    An unanswered or failed write may have been applied (`maybe_applied`): the client
    never retries POST or PATCH and has no idempotency key.
    """
    if isinstance(exc, ReplicateError):
        status = exc.status or 0
        detail = ": ".join(dict.fromkeys(str(p) for p in (exc.detail, exc.title) if p)) or "-"
        if status in (401, 403):
            return PermanentProviderError(
                f"{PLATFORM} rejected the credentials in Secret {config.secret_name} of"
                f" ProviderConfig {config.config_name} (HTTP {status}) for {what}; put a valid"
                " API token under the key token in that Secret",
                reason="CredentialsRejected",
            )
        if status == 429:
            return TransientProviderError(
                f"{PLATFORM} is throttling requests ({what}); retrying"
                + (f" in {retry_after:.0f}s" if retry_after is not None else ""),
                retry_after=retry_after,
                reason="Throttled",
            )
        if status >= 500:
            return TransientProviderError(
                f"{PLATFORM} failed {what} with HTTP {status}: {detail}",
                retry_after=retry_after,
                reason="ProviderUnavailable",
                maybe_applied=write,
            )
        if status == 404:
            return NotFound(
                f"{PLATFORM} found nothing for {what} (HTTP 404): {detail}", reason="NotFound"
            )
        return Refused(
            f"{PLATFORM} refused {what} (HTTP {status}): {detail}",
            reason="InvalidRequest" if status in (400, 409, 422) else "ProviderRefused",
            detail=detail,
        )
    if isinstance(exc, pydantic_v1.ValidationError | json.JSONDecodeError):
        fields = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in (exc.errors() if isinstance(exc, pydantic_v1.ValidationError) else [])
        )
        message = f"{PLATFORM}'s answer to {what} does not fit the replicate client's models"
        message += f" ({fields})" if fields else " (not JSON)"
        if write:
            # The call was answered 2xx: it happened. Look it up rather than repeat it.
            return TransientProviderError(message, reason="UnexpectedAnswer", maybe_applied=True)
        return PermanentProviderError(message, reason="UnexpectedAnswer")
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        unsent = isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout)
        return TransientProviderError(
            f"{PLATFORM} did not answer {what} within {timeout:.0f}s",
            reason="ProviderTimeout",
            maybe_applied=write and not unsent,
        )
    if isinstance(exc, httpx.HTTPError):
        return TransientProviderError(
            f"cannot reach {PLATFORM} for {what}: {type(exc).__name__}",
            reason="ProviderUnreachable",
            maybe_applied=write and not isinstance(exc, httpx.ConnectError),
        )
    raise exc
