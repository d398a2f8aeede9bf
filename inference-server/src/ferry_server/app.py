"""Build the FastAPI app: engine + data plane + routers, with the model loaded in the background."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

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


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    errors = exc.errors()
    if not errors:
        return "invalid request body", None
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    if first.get("type") == "json_invalid":
        return "request body is not valid JSON", None
    if first.get("type") == "missing" and not loc:
        return "request body is missing", None
    where = ".".join(loc) or "body"
    # Never echo the offending input back: it may be a large or private prompt.
    return f"{where}: {first.get('msg', 'invalid value')}", (loc[0] if loc else None)


def build_dataplane(settings: Settings) -> DataPlane:
    """Engine + metrics + data plane for these settings (the engine is not loaded yet)."""
    metrics = Metrics()
    engine = create_engine(settings, on_batch=metrics.batch_size.observe)
    return DataPlane(settings, engine, metrics)


def create_app(settings: Settings | None = None, dataplane: DataPlane | None = None) -> FastAPI:
    """The server's ASGI app; every platform entrypoint serves this same app."""
    settings = settings or Settings.from_env()
    dp = dataplane or build_dataplane(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        watcher: SpotWatcher | None = None
        await dp.start()
        if settings.spot_metadata_url:
            watcher = SpotWatcher(
                settings.spot_metadata_url,
                settings.spot_poll_interval_s,
                on_notice=lambda _body: dp.begin_drain("spot termination notice"),
            )
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
