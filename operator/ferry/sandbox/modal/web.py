"""The Modal fake's HTTP port: web functions' URLs, and the sandbox admin routes.

Modal serves a web function at `https://<workspace>--<label>.modal.run`; the fake serves it at
`http://<host>:<web port>/<workspace>--<label>` (a path instead of a host name, so nothing
needs DNS: sandbox-only, not part of any spec). A request there counts as demand for the
function (its containers scale on the sandbox clock), waits for a ready container, and is
forwarded to that container's real model server (inference on), streaming included, or
answered 503 saying no model ran (inference off).

Admin routes (sandbox-only, bearer token, never counted or faulted), beside the shared ones
from `ferry.sandbox.http.admin_routes` (clock, faults, calls, reset):

- `GET /_sandbox/state`: apps, functions (settings in force, live overrides and how often a
  redeploy reset them, containers), secrets' keys (never values), real processes.
- `GET /_sandbox/images`: every image definition the fake was sent, as JSON.
- `GET /_sandbox/billing`: billed container seconds and GPU-seconds per app and function (D18).
- `PATCH /_sandbox/apps/{app}/functions/{tag}/autoscaler {minContainers?, maxContainers?,
  bufferContainers?, scaledownWindow?}`: change live settings behind the operator's back, with
  FunctionUpdateSchedulingParams' effect (drift).
- `POST /_sandbox/apps/{app}/stop`: stop a deployed app behind the operator's back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pydantic
from modal_proto import api_pb2
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from ferry.sandbox.http import (
    AuthCheck,
    Call,
    Notifier,
    Problem,
    SandboxLabel,
    Surface,
    admin_json,
    parse_admin,
)
from ferry.sandbox.modal.platform import Container, Function, ModalPlatform, Refused

log = logging.getLogger("ferry.sandbox.modal")

#: Longest a request waits for a ready container (wall seconds), as Modal queues inputs.
QUEUE_LIMIT_S = 600.0
INFERENCE_OFF_MESSAGE = (
    "the Ferry sandbox runs no model for this function: it was started with --inference off"
)
_HOP_HEADERS = {"host", "content-length", "connection", "transfer-encoding", "keep-alive"}


class AutoscalerChange(pydantic.BaseModel):
    """Body of `PATCH /_sandbox/apps/{app}/functions/{tag}/autoscaler`."""

    model_config = pydantic.ConfigDict(extra="forbid", populate_by_name=True)

    min_containers: int | None = pydantic.Field(None, ge=0, alias="minContainers")
    max_containers: int | None = pydantic.Field(None, ge=0, alias="maxContainers")
    buffer_containers: int | None = pydantic.Field(None, ge=0, alias="bufferContainers")
    scaledown_window: int | None = pydantic.Field(None, alias="scaledownWindow")


class WebFunctions:
    """Serves requests to web functions' URLs from their containers."""

    def __init__(
        self,
        state: ModalPlatform,
        notifier: Notifier,
        port_of: Callable[[str], int | None],
    ) -> None:
        self.state = state
        self.notifier = notifier
        self.port_of = port_of
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(600.0, connect=5.0))

    async def close(self) -> None:
        await self._http.aclose()

    async def serve(self, request: Request) -> Response:
        """Any method on `/<workspace>--<label>/<path>`."""
        fn = self.state.web_function(request.path_params["host"])
        if fn is None:
            return JSONResponse(
                {"error": f"no deployed web function answers at {request.path_params['host']}"},
                status_code=404,
            )
        body = await request.body()
        self.state.arrive(fn)
        container = await self._container(fn)
        if container is None:
            self.state.leave(fn, None)
            return JSONResponse(
                {"error": f"no container of {fn.tag} became ready in {QUEUE_LIMIT_S:.0f}s"},
                status_code=503,
            )
        port = self.port_of(container.id) if container.backed else None
        if port is None:
            self.state.leave(fn, container)
            return JSONResponse({"error": INFERENCE_OFF_MESSAGE}, status_code=503)
        try:
            upstream = await self._http.send(
                self._http.build_request(
                    request.method,
                    f"http://127.0.0.1:{port}/{request.path_params.get('path', '')}",
                    params=request.query_params,
                    headers={
                        k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS
                    },
                    content=body,
                ),
                stream=True,
            )
        except httpx.HTTPError as exc:
            self.state.leave(fn, container)
            return JSONResponse(
                {"error": f"the container's model server did not answer: {exc!r}"}, status_code=502
            )

        async def relay() -> AsyncIterator[bytes]:
            async for chunk in upstream.aiter_raw():
                yield chunk

        async def finish() -> None:
            await upstream.aclose()
            self.state.leave(fn, container)

        headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_HEADERS}
        return StreamingResponse(
            relay(),
            status_code=upstream.status_code,
            headers=headers,
            background=BackgroundTask(finish),
        )

    async def _container(self, fn: Function) -> Container | None:
        got: list[Container] = []

        def assigned() -> bool:
            container = self.state.assign(fn)
            if container is not None:
                got.append(container)
            return bool(got)

        deadline = time.monotonic() + QUEUE_LIMIT_S
        try:
            while not await self.notifier.wait_until(assigned, 1.0):
                if time.monotonic() > deadline:
                    return None
                self.state.tick()
        except asyncio.CancelledError:
            self.state.leave(fn, got[0] if got else None)
            raise
        return got[0]


def admin_routes(
    state: ModalPlatform,
    surface: Surface,
    auth: AuthCheck,
    processes: Callable[[], list[dict[str, object]]],
) -> list[Route]:
    """The Modal-specific `/_sandbox` routes (see the module docstring)."""

    async def get_state(_call: Call) -> Response:
        state.tick()
        return admin_json({**state.describe_state(), "processes": processes()})

    async def get_images(_call: Call) -> Response:
        return admin_json({"images": state.describe_images()})

    async def get_billing(_call: Call) -> Response:
        state.tick()
        return admin_json(state.billed_seconds())

    async def drift_autoscaler(call: Call) -> Response:
        change: AutoscalerChange = parse_admin(AutoscalerChange, call.raw)
        settings = api_pb2.AutoscalerSettings(
            **{k: v for k, v in change.model_dump().items() if v is not None}
        )
        try:
            fn = state.deployed_function(call.params["app"], call.params["tag"], "")
            current = state.update_settings(fn.id, settings)
        except Refused as exc:
            raise Problem(404 if exc.status.name == "NOT_FOUND" else 400, exc.message) from None
        return admin_json(_settings_json(current))

    async def stop(call: Call) -> Response:
        app = state.deployed_app(call.params["app"], "")
        if app is None:
            raise Problem(404, f"no app deployed as {call.params['app']!r}")
        state.stop_app(app.id)
        return Response(status_code=204)

    table: list[tuple[str, str, Any]] = [
        ("GET", "/_sandbox/state", get_state),
        ("GET", "/_sandbox/images", get_images),
        ("GET", "/_sandbox/billing", get_billing),
        ("PATCH", "/_sandbox/apps/{app}/functions/{tag}/autoscaler", drift_autoscaler),
        ("POST", "/_sandbox/apps/{app}/stop", stop),
    ]
    return [surface.route(m, t, h, auth=auth, spec=False, counted=False) for m, t, h in table]


def _settings_json(settings: api_pb2.AutoscalerSettings) -> dict[str, Any]:
    return {fd.json_name: value for fd, value in settings.ListFields()}


def web_routes(web: WebFunctions) -> list[Route]:
    """Web functions' URLs (any method, any path under the function's prefix)."""
    methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
    return [
        Route("/{host:str}/{path:path}", web.serve, methods=methods),
        Route("/{host:str}", web.serve, methods=methods),
    ]


def app(routes: list[Route]) -> ASGIApp:
    """The web port's app: every answer labelled as the sandbox's, unknown paths a JSON 404."""

    async def not_found(request: Request, _exc: Exception) -> Response:
        return JSONResponse(
            {"error": f"no route {request.method} {request.url.path} on the Ferry sandbox"},
            status_code=404,
        )

    return SandboxLabel(Starlette(routes=routes, exception_handlers={404: not_found}))
