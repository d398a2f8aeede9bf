"""ASGI middleware: bearer auth, drain admission, in-flight tracking and request metrics.

Probes (/healthz, /readyz) and /metrics skip all of it: they need no token, are answered while
draining, and are not counted as requests. Request bodies and headers are never logged.
"""

from __future__ import annotations

import hmac
import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ferry_server.dataplane import DataPlane
from ferry_server.errors import FerryError, Unauthorized
from ferry_server.http.errors import error_response

log = logging.getLogger("ferry_server.http")

EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
ROUTES = frozenset({"/v1/completions", "/v1/chat/completions", "/v1/models", "/generate"})


class FerryMiddleware:
    """One pass over each API request; see the module docstring."""

    def __init__(self, app: ASGIApp, dataplane: DataPlane, auth_token: str) -> None:
        self.app = app
        self.dataplane = dataplane
        self._token = auth_token.encode() if auth_token else b""

    def _authorized(self, scope: Scope) -> bool:
        if not self._token:
            return True
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                scheme, _, presented = value.partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(
                    presented.strip(), self._token
                )
        return False

    def _closing(self, start: Message) -> Message:
        """While draining, ask the client to close its connection after this response: a
        kept-alive connection would otherwise keep reaching this replica after it left
        the Service's endpoints, and get a 503 once admission stops."""
        if not self.dataplane.draining:
            return start
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"connection"]
        return {**start, "headers": [*headers, (b"connection", b"close")]}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        route = path if path in ROUTES else "other"
        metrics = self.dataplane.metrics
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message = self._closing(message)
            await send(message)

        try:
            if not self._authorized(scope):
                log.warning("rejected unauthenticated request to %s", route)
                raise Unauthorized("missing or invalid bearer token")
            self.dataplane.admit()
        except FerryError as exc:
            response = error_response(exc)
            status = response.status_code

            async def send_closing(message: Message) -> None:
                if message["type"] == "http.response.start":
                    message = self._closing(message)
                await send(message)

            await response(scope, receive, send_closing)
            metrics.requests.labels(route=route, status=str(status)).inc()
            return
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.dataplane.release()
            metrics.requests.labels(route=route, status=str(status)).inc()
            metrics.latency.labels(route=route).observe(time.perf_counter() - start)
