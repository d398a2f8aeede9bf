"""Spot/preemption notices: poll the cloud's metadata service and report what it says.

The app's lifespan starts one `SpotWatcher` when FERRY_SPOT_METADATA_URL is set; the data plane
shows what it sees. Per D11 a notice is only reported (`ferry_spot_notice_deadline_seconds` on
/metrics, a detail on /readyz, which stays 200): the operator orders drains, and the server
drains on SIGTERM only, so it never takes itself out of service before a replacement is up.

Two flavours, told apart by the URL:
* AWS (`http://169.254.169.254/latest/meta-data/spot/instance-action`): IMDSv2, the default on
  new launch templates, answers a GET without a session token with 401. A token comes from
  `PUT /latest/api/token` with a TTL header and goes with each GET; a 401 means it expired and a
  new one is fetched. 404 means no notice; 200 carries `{"action", "time"}`.
* GCE (`.../computeMetadata/v1/instance/preempted`): `Metadata-Flavor: Google`, `TRUE`/`FALSE`.
A poll that gets no answer (401 even with a fresh token, 403, a timeout, a 5xx) is not "no
notice": it is counted and logged as a warning, at most once a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

log = logging.getLogger("ferry_server.spot")

TOKEN_PATH = "/latest/api/token"
TOKEN_TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
# When a notice carries no time: the shortest warning each cloud documents.
DEFAULT_NOTICE_S = {"aws": 120.0, "gce": 30.0}


@dataclass(frozen=True)
class Notice:
    """A termination notice: what will happen and by when (Unix time)."""

    action: str
    deadline: float
    estimated: bool  # the metadata gave no time; the deadline is the cloud's documented minimum
    seen_at: float

    def describe(self, now: float) -> dict[str, Any]:
        """The /readyz detail."""
        return {
            "action": self.action,
            "deadline": _iso(self.deadline),
            "deadline_unix": self.deadline,
            "deadline_estimated": self.estimated,
            "seconds_left": max(0.0, round(self.deadline - now, 1)),
        }


def _iso(unix: float) -> str:
    return datetime.fromtimestamp(unix, tz=UTC).isoformat().replace("+00:00", "Z")


class MetadataUnavailable(Exception):
    """The metadata service gave no usable answer; whether a notice exists is unknown."""


def flavour(url: str) -> str:
    """`aws` for the EC2 instance metadata service (IMDSv2), else `gce`."""
    return "aws" if urlsplit(url).path.startswith("/latest/") else "gce"


def parse_notice(kind: str, status_code: int, body: str, now: float) -> Notice | None:
    """The notice in one metadata answer, or None when it says there is none.

    Raises MetadataUnavailable for answers that say nothing either way.
    """
    if kind == "aws" and status_code == 404:
        return None
    if status_code != 200:
        raise MetadataUnavailable(f"the metadata service answered {status_code}")
    text = body.strip()
    if kind == "gce":
        if text.upper() in ("", "FALSE"):
            return None
        return Notice("preempt", now + DEFAULT_NOTICE_S["gce"], True, now)
    try:
        doc = json.loads(text)
        action = str(doc["action"])
        when = datetime.fromisoformat(str(doc["time"]).replace("Z", "+00:00")).timestamp()
    except (ValueError, KeyError, TypeError):
        return Notice("terminate", now + DEFAULT_NOTICE_S["aws"], True, now)
    return Notice(action, when, False, now)


class SpotWatcher:
    """Poll `url` every `interval_s`; call `on_notice` when a notice appears or changes.

    `clock` (Unix time) is injected so tests can step through token expiry and warning limits.
    """

    def __init__(
        self,
        url: str,
        interval_s: float,
        on_notice: Callable[[Notice], None],
        *,
        on_error: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
        timeout_s: float = 2.0,
        token_ttl_s: int = 21600,
        warn_every_s: float = 60.0,
    ) -> None:
        self.url = url
        self.kind = flavour(url)
        self.interval_s = interval_s
        self.on_notice = on_notice
        self.on_error = on_error
        self.clock = clock
        self.timeout_s = timeout_s
        self.token_ttl_s = token_ttl_s
        self.warn_every_s = warn_every_s
        self.notice: Notice | None = None
        self.last_error: str | None = None
        self.failed_polls = 0  # since the last good answer
        self._unwarned = 0  # failures not yet in a warning
        self._last_warning: float | None = None
        self._token: str | None = None
        self._token_expires = 0.0
        parts = urlsplit(url)
        self._token_url = f"{parts.scheme}://{parts.netloc}{TOKEN_PATH}"
        self._task: asyncio.Task[None] | None = None

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="ferry-spot")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        async with httpx.AsyncClient(timeout=self.timeout_s, trust_env=False) as client:
            while True:
                await self.check_once(client)
                await asyncio.sleep(self.interval_s)

    def status(self) -> dict[str, Any]:
        """The /readyz detail about the watcher itself."""
        return {
            "url": self.url,
            "state": "failing" if self.failed_polls else "ok",
            "failed_polls": self.failed_polls,
            "last_error": self.last_error,
        }

    # ---- one poll --------------------------------------------------------------------------

    async def check_once(self, client: httpx.AsyncClient) -> Notice | None:
        """Poll once; return the current notice (None: none, or the service gave no answer)."""
        try:
            notice = parse_notice(self.kind, *await self._get(client), now=self.clock())
        except MetadataUnavailable as exc:
            self._failed(str(exc))
            return self.notice
        self._recovered()
        if notice is None or (self.notice is not None and (
            # A notice is never withdrawn; one without a time keeps its first sighting's deadline.
            notice.estimated or (notice.action, notice.deadline)
            == (self.notice.action, self.notice.deadline)
        )):
            return self.notice
        log.warning(
            "spot termination notice: %s by %s (%.0f s left%s); still serving until SIGTERM",
            notice.action, _iso(notice.deadline), notice.deadline - self.clock(),
            ", estimated" if notice.estimated else "",
        )
        self.notice = notice
        self.on_notice(notice)
        return notice

    async def _get(self, client: httpx.AsyncClient) -> tuple[int, str]:
        try:
            if self.kind == "gce":
                resp = await client.get(self.url, headers={"Metadata-Flavor": "Google"})
                return resp.status_code, resp.text
            resp = await client.get(self.url, headers={TOKEN_HEADER: await self._session(client)})
            if resp.status_code == 401:  # the token expired or the service restarted
                self._token = None
                resp = await client.get(
                    self.url, headers={TOKEN_HEADER: await self._session(client)}
                )
                if resp.status_code == 401:
                    raise MetadataUnavailable("the metadata service answered 401 to a fresh token")
        except httpx.TimeoutException as exc:
            raise MetadataUnavailable(f"no answer within {self.timeout_s:g} s ({exc!r})") from exc
        except httpx.HTTPError as exc:
            raise MetadataUnavailable(f"request failed: {exc!r}") from exc
        return resp.status_code, resp.text

    async def _session(self, client: httpx.AsyncClient) -> str:
        """An IMDSv2 session token, fetched again shortly before it expires."""
        now = self.clock()
        if self._token is not None and now < self._token_expires:
            return self._token
        try:
            resp = await client.put(
                self._token_url, headers={TOKEN_TTL_HEADER: str(self.token_ttl_s)}
            )
        except httpx.TimeoutException as exc:
            # In a pod the PUT's answer needs a metadata hop limit of 2 (the default is 1).
            raise MetadataUnavailable(
                f"no answer to the IMDSv2 token request within {self.timeout_s:g} s; in a pod "
                "the instance's metadata hop limit (HttpPutResponseHopLimit) must be at least 2"
            ) from exc
        if resp.status_code != 200 or not resp.text.strip():
            raise MetadataUnavailable(f"the IMDSv2 token request answered {resp.status_code}")
        self._token = resp.text.strip()
        self._token_expires = now + self.token_ttl_s - min(60.0, self.token_ttl_s / 2)
        return self._token

    # ---- failures --------------------------------------------------------------------------

    def _failed(self, error: str) -> None:
        self.failed_polls += 1
        self._unwarned += 1
        self.last_error = error
        if self.on_error is not None:
            self.on_error(error)
        now = self.clock()
        if self._last_warning is None or now - self._last_warning >= self.warn_every_s:
            log.warning(
                "cannot read spot notices from %s: %s (%d failed poll(s)); a notice would be "
                "missed", self.url, error, self._unwarned,
            )
            self._last_warning = now
            self._unwarned = 0

    def _recovered(self) -> None:
        if self.failed_polls:
            log.info("spot notices readable again from %s after %d failed poll(s)",
                     self.url, self.failed_polls)
        self.failed_polls = 0
        self._unwarned = 0
        self.last_error = None
        self._last_warning = None
