"""Build the FastAPI app: engine + data plane + routers, with the model loaded in the background."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from ferry_server.config import Settings
from ferry_server.dataplane import DataPlane
from ferry_server.engine import create_engine
from ferry_server.errors import FerryError
from ferry_server.http.errors import error_body, error_response
from ferry_server.http.middleware import FerryMiddleware
from ferry_server.http.routes import health, openai, simple
from ferry_server.metrics import Metrics
from ferry_server.spot import SpotWatcher

log = logging.getLogger("ferry_server")


# Union members pydantic adds to an error's location ("prompt" -> "str" / "list[str]").
_UNION_TAGS = frozenset({"str", "int", "float", "bool", "list", "dict", "none"})


def param_path(loc: Sequence[int | str]) -> str:
    """An error location as OpenAI names parameters: ("messages", 0, "content") ->
    "messages[0].content"."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in _UNION_TAGS or "[" in part or "-" in part:
            break
        else:
            path += f".{part}" if path else part
    return path


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    errors = exc.errors()
    if not errors:
        return "invalid request body", None
    first = errors[0]
    loc = [p for p in first.get("loc", ()) if p != "body"]
    if first.get("type") == "json_invalid":
        return "request body is not valid JSON", None
    if first.get("type") == "missing" and not loc:
        return "request body is missing", None
    where = param_path(loc) or "body"
    if first.get("type") == "extra_forbidden":
        return (f"{where}: unknown parameter; this server rejects what it does not honour "
                "rather than ignore it", where)
    # Never echo the offending input back: it may be a large or private prompt.
    return f"{where}: {first.get('msg', 'invalid value')}", (where if loc else None)


def build_dataplane(settings: Settings) -> DataPlane:
    """Engine + metrics + data plane for these settings (the engine is not loaded yet)."""
    metrics = Metrics()
    return DataPlane(settings, create_engine(settings, metrics), metrics)


def create_app(settings: Settings | None = None, dataplane: DataPlane | None = None) -> FastAPI:
    """The server's ASGI app; every platform entrypoint serves this same app."""
    settings = settings or Settings.from_env()
    dp = dataplane or build_dataplane(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        watcher: SpotWatcher | None = None
        await dp.start()
        if settings.spot_metadata_url:
            # Reports notices only (D11); the drain comes with SIGTERM, ordered by the operator.
            watcher = SpotWatcher(
                settings.spot_metadata_url,
                settings.spot_poll_interval_s,
                on_notice=dp.report_spot_notice,
                on_error=lambda _error: dp.metrics.spot_errors.inc(),
            )
            dp.spot = watcher
            watcher.start()
            log.info("watching %s for spot termination notices", settings.spot_metadata_url)
        try:
            yield
        finally:
            if watcher is not None:
                await watcher.stop()
            await dp.stop()

    app = FastAPI(
        title="Ferry inference server",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.dataplane = dp
    app.state.settings = settings

    @app.exception_handler(FerryError)
    async def _ferry_error(_request: Request, exc: FerryError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(exc)
        return JSONResponse(error_body(message, "invalid_request_error", param), status_code=400)

    app.include_router(health)
    app.include_router(openai)
    app.include_router(simple)
    app.add_middleware(FerryMiddleware, dataplane=dp, auth_token=settings.auth_token)
    return app
