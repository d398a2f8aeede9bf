"""Runs the fakes' ASGI apps on their ports, in one event loop, until told to stop.

Ports are bound before anything is served, so a port in use is reported at once as a sentence
rather than a traceback, and port 0 yields a random free port whose number is known before
the URLs file is written. uvicorn's own signal handling is switched off: `__main__` owns
SIGINT/SIGTERM so that worker processes are stopped before the sandbox exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import uvicorn
from starlette.types import ASGIApp


class PortInUse(Exception):
    """A requested port could not be bound; the message names it."""


@dataclass
class Listener:
    """One bound socket and the app it will serve."""

    name: str
    app: ASGIApp
    sock: socket.socket

    @property
    def port(self) -> int:
        """The bound port (the real one when 0 was asked for)."""
        return int(self.sock.getsockname()[1])

    def url(self, host: str) -> str:
        """`http://host:port`, with IPv6 hosts bracketed."""
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{self.port}"


def bind(name: str, app: ASGIApp, host: str, port: int) -> Listener:
    """Bind `host:port` for `app`; raises PortInUse with a sentence when it cannot."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise PortInUse(
            f"cannot listen on {host}:{port} for the {name} ({exc.strerror}); "
            "pick another port, or 0 for a random one"
        ) from None
    sock.listen(2048)
    sock.setblocking(False)
    return Listener(name=name, app=app, sock=sock)


class _Server(uvicorn.Server):
    """uvicorn.Server that leaves signal handling to the sandbox."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Serving:
    """Serves every listener until `stop()`; `wait_started()` returns once all accept."""

    def __init__(self, listeners: list[Listener], log_level: str = "warning") -> None:
        self.listeners = listeners
        self._servers = [
            _Server(
                uvicorn.Config(
                    lst.app,
                    log_config=None,  # the sandbox's own log format: every line says sandbox
                    log_level=log_level,
                    access_log=False,
                    lifespan="off",
                    timeout_graceful_shutdown=2,
                    timeout_keep_alive=30,
                )
            )
            for lst in listeners
        ]

    async def run(self) -> None:
        """Serve until stopped."""
        await asyncio.gather(
            *(
                srv.serve(sockets=[lst.sock])
                for srv, lst in zip(self._servers, self.listeners, strict=True)
            )
        )

    async def wait_started(self, limit_s: float = 30.0) -> None:
        """Return once every server accepts connections."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit_s
        while not all(srv.started for srv in self._servers):
            if loop.time() > deadline:
                raise TimeoutError("the sandbox's servers did not start")
            await asyncio.sleep(0.02)

    def stop(self) -> None:
        """Ask every server to stop (in-flight requests get a short grace)."""
        for srv in self._servers:
            srv.should_exit = True
