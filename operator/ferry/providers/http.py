"""One HTTP stack for every remote provider Ferry calls with its own client.

`PlatformClient` wraps one `httpx.AsyncClient` per ProviderConfig (a connection
pool, not one per endpoint) and owns the retry rules, so that every backend fails
the same way:

- every attempt has a deadline (`ClientConfig.call_timeout`), and a call makes at
  most `max_attempts` attempts: never a hot loop;
- 429 honours `Retry-After`: a short wait is slept inside the call, a long one is
  handed to the work queue as `TransientProviderError(retry_after=...)` so no
  reconcile sits on it;
- 5xx and timeouts are retried with jittered exponential backoff, but only for
  requests that are safe to repeat. A POST that was sent and got no answer (or a
  5xx) may have been applied: it is never repeated here, and the error says
  `maybe_applied`, so the reconciler looks the resource up instead of creating twice;
- answers map onto Ferry's errors: 401/403 -> `CredentialsRejected` naming the
  ProviderConfig and Secret, other 4xx -> permanent with the platform's own detail.

The transport, the sleep and the random source are injected (tests and the sandbox).
Credentials go in a header and never into a message.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from ferry.providers.base import ClientConfig, PermanentProviderError, TransientProviderError

log = logging.getLogger(__name__)

#: Methods whose repetition changes nothing more than the first attempt did.
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH"})


@dataclass(frozen=True)
class RetryPolicy:
    """Bounds on one call: attempts, backoff (seconds) and the longest inline 429 wait."""

    max_attempts: int = 3
    base_backoff: float = 0.2
    max_backoff: float = 2.0
    max_inline_wait: float = 2.0


def retry_after(response: httpx.Response) -> float | None:
    """`Retry-After` in seconds when it is an integer (RunPod's form), else None."""
    raw = response.headers.get("Retry-After", "").strip()
    try:
        return max(0.0, float(raw)) if raw else None
    except ValueError:
        return None


def problem_detail(response: httpx.Response) -> str:
    """The platform's own words for an error answer (problem+json or any JSON/text)."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    if isinstance(body, dict):
        parts = [str(body.get(k)) for k in ("detail", "title", "error", "message") if body.get(k)]
        errors = body.get("errors")
        if isinstance(errors, list) and errors:
            parts.append("; ".join(str(e) for e in errors[:5]))
        if parts:
            return ": ".join(dict.fromkeys(parts))
    return str(body)[:300]


def json_object(response: httpx.Response, platform: str, what: str) -> dict[str, Any]:
    """The answer's JSON object; an answer that is not one is the platform's fault, said so.

    Raises TransientProviderError (reason UnexpectedAnswer): it may be a proxy's error page.
    """
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise TransientProviderError(
            f"{platform} answered {what} with HTTP {response.status_code} but no JSON object",
            reason="UnexpectedAnswer",
        )
    return body


class PlatformClient:
    """HTTP calls to one platform account; see the module docstring."""

    def __init__(
        self,
        config: ClientConfig,
        platform: str,
        *,
        headers: Mapping[str, str],
        transport: httpx.AsyncBaseTransport | None = None,
        policy: RetryPolicy | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.platform = platform
        self._policy = policy or RetryPolicy()
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._http = httpx.AsyncClient(
            headers=dict(headers),
            timeout=httpx.Timeout(config.call_timeout),
            transport=transport,
            follow_redirects=False,
        )

    async def close(self) -> None:
        await self._http.aclose()

    async def request(
        self,
        method: str,
        url: str,
        *,
        what: str,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        ok_statuses: frozenset[int] = frozenset(),
    ) -> httpx.Response:
        """Send one request with the retry rules; return a 2xx (or `ok_statuses`) answer.

        `what` names the call in messages ("create endpoint llm"). Raises
        `TransientProviderError` (throttled, unavailable, timed out; `maybe_applied`
        for an unanswered write) or `PermanentProviderError` (rejected credentials,
        a request the platform refuses).
        """
        policy = self._policy
        safe = method in IDEMPOTENT
        for attempt in range(1, policy.max_attempts + 1):
            last = attempt == policy.max_attempts
            try:
                response = await self._http.request(method, url, json=json, params=params)
            except httpx.TimeoutException as err:
                sent = not isinstance(err, httpx.ConnectTimeout | httpx.PoolTimeout)
                if (safe or not sent) and not last:
                    await self._backoff(attempt)
                    continue
                raise TransientProviderError(
                    f"{self.platform} did not answer {what} within {self.config.call_timeout:.0f}s",
                    reason="ProviderTimeout",
                    maybe_applied=sent and not safe,
                ) from err
            except httpx.TransportError as err:
                sent = not isinstance(err, httpx.ConnectError)
                if (safe or not sent) and not last:
                    await self._backoff(attempt)
                    continue
                raise TransientProviderError(
                    f"cannot reach {self.platform} for {what}: {type(err).__name__}",
                    reason="ProviderUnreachable",
                    maybe_applied=sent and not safe,
                ) from err
            status = response.status_code
            if 200 <= status < 300 or status in ok_statuses:
                return response
            if status == 429:
                wait = retry_after(response)
                if not last and (wait is None or wait <= policy.max_inline_wait):
                    await self._sleep(wait if wait is not None else self._delay(attempt))
                    continue
                raise TransientProviderError(
                    f"{self.platform} is throttling requests ({what}); retrying"
                    + (f" in {wait:.0f}s" if wait is not None else ""),
                    retry_after=wait,
                    reason="Throttled",
                )
            if status >= 500:
                if safe and not last:
                    await self._backoff(attempt)
                    continue
                raise TransientProviderError(
                    f"{self.platform} failed {what} with HTTP {status}: {problem_detail(response)}",
                    retry_after=retry_after(response),
                    reason="ProviderUnavailable",
                    maybe_applied=not safe,
                )
            if status in (401, 403):
                raise PermanentProviderError(
                    f"{self.platform} rejected the credentials in Secret"
                    f" {self.config.secret_name} of ProviderConfig {self.config.config_name}"
                    f" (HTTP {status}) for {what}; put a valid key in that Secret",
                    reason="CredentialsRejected",
                )
            raise PermanentProviderError(
                f"{self.platform} refused {what} (HTTP {status}): {problem_detail(response)}",
                reason="InvalidRequest" if status in (400, 409, 422) else "ProviderRefused",
            )
        raise AssertionError("unreachable: the last attempt always returns or raises")

    def _delay(self, attempt: int) -> float:
        p = self._policy
        ceiling = min(p.max_backoff, p.base_backoff * 2 ** (attempt - 1))
        # Full jitter: many endpoints retrying together spread out.
        return self._rng.uniform(ceiling / 2, ceiling)

    async def _backoff(self, attempt: int) -> None:
        await self._sleep(self._delay(attempt))
