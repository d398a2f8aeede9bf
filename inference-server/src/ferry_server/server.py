"""Run the app under uvicorn with Ferry's own SIGTERM handling (graceful drain, then exit).

uvicorn's default SIGTERM handling closes the listening socket at once, so clients that arrive
during shutdown get connection errors. Ferry instead turns readiness off, keeps accepting
requests for FERRY_DRAIN_PROPAGATION_S (Kubernetes removes the pod from its Services only after
the SIGTERM, so requests keep arriving for a moment), then answers new requests with 503 +
Retry-After, lets accepted requests finish, and only then asks uvicorn to exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Iterator

import uvicorn

from ferry_server.app import build_dataplane, create_app
from ferry_server.config import Settings

log = logging.getLogger("ferry_server")


class _Server(uvicorn.Server):
    """uvicorn.Server that leaves signal handling to Ferry."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def configure_logging(level: str) -> None:
    """Plain line logs on stderr; no request bodies or headers are ever logged."""
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # One line per HTTP call the server makes (the spot watcher polls every few seconds)
    # says nothing a person needs; failures are logged by the callers.
    logging.getLogger("httpx").setLevel(logging.WARNING)


async def serve(settings: Settings) -> int:
    """Serve until drained or failed; return the process exit code."""
    dp = build_dataplane(settings)
    app = create_app(settings, dp)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=max(1, int(settings.drain_grace_s * 0.1)),
    )
    server = _Server(config)
    exit_code = 0
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        if dp.draining:
            log.warning("second %s: exiting without waiting for in-flight requests", sig.name)
            server.force_exit = True
            server.should_exit = True
            return
        # SIGINT is a person at a terminal: no load balancer to wait for.
        dp.begin_drain(f"received {sig.name}", propagate=sig == signal.SIGTERM)

    def on_drained() -> None:
        server.should_exit = True

    def on_fatal() -> None:
        nonlocal exit_code
        exit_code = 1
        server.should_exit = True

    dp.on_drained = on_drained
    dp.on_fatal = on_fatal
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    log.info("starting Ferry inference server: %r", settings)
    try:
        await server.serve()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    if exit_code == 0 and not server.started:
        exit_code = 1
    return exit_code


def main() -> None:
    """Entry point for `python -m ferry_server` and the `ferry-server` script."""
    try:
        settings = Settings.from_env()
    except ValueError as exc:
        print(f"ferry-server: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(settings.log_level)
    raise SystemExit(asyncio.run(serve(settings)))
