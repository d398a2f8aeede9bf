"""Spot/preemption notice watcher: polls a cloud metadata URL and starts a drain on notice.

AWS-style `/latest/meta-data/spot/instance-action` answers 404 until a stop is scheduled, then
200 with a JSON body. GCE-style `.../instance/preempted` answers 200 with `FALSE` or `TRUE`.
Off unless FERRY_SPOT_METADATA_URL is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import httpx

log = logging.getLogger("ferry_server.spot")


def is_termination_notice(status_code: int, body: str) -> bool:
    """True when a metadata response announces that this instance will be reclaimed."""
    if status_code != 200:
        return False
    text = body.strip()
    if not text:
        return False
    return text.upper() not in ("FALSE", "NONE", "NULL")


class SpotWatcher:
    """Poll `url` every `interval_s` seconds; call `on_notice` once when a notice appears."""

    def __init__(
        self,
        url: str,
        interval_s: float,
        on_notice: Callable[[str], None],
        timeout_s: float = 2.0,
    ) -> None:
        self.url = url
        self.interval_s = interval_s
        self.on_notice = on_notice
        self.timeout_s = timeout_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="ferry-spot")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def check_once(self, client: httpx.AsyncClient) -> bool:
        """One poll; True if a notice was seen. Network errors count as no notice."""
        try:
            resp = await client.get(self.url, headers={"Metadata-Flavor": "Google"})
        except httpx.HTTPError as exc:
            log.debug("spot metadata poll failed: %s", exc)
            return False
        if is_termination_notice(resp.status_code, resp.text):
            log.warning("spot termination notice received: %s", resp.text.strip()[:200])
            self.on_notice(resp.text.strip()[:200])
            return True
        return False

    async def _run(self) -> None:
        async with httpx.AsyncClient(timeout=self.timeout_s, trust_env=False) as client:
            while True:
                if await self.check_once(client):
                    return
                await asyncio.sleep(self.interval_s)
