"""Assembles the Modal fake: its state, its gRPC server, its HTTP app and its ticker.

`ModalSandbox` owns one `ModalPlatform` on one `SandboxClock`, the gRPC servicer (Modal's API
on plain HTTP/2, served by grpclib on a socket `__main__` binds) and the HTTP app (web
functions' URLs + the `/_sandbox` admin routes, served by uvicorn like the other fakes). The
gRPC port cannot carry HTTP/1 admin calls, so the admin routes live on the web port; the URLs
file names it `admin`. Tests may build one in-process.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grpclib.server import Server
from starlette.types import ASGIApp

from ferry.sandbox import modelserver
from ferry.sandbox.calls import CallCounter
from ferry.sandbox.clock import SandboxClock
from ferry.sandbox.fake import PlatformFake
from ferry.sandbox.faults import FaultTable
from ferry.sandbox.http import Surface, admin_routes, bearer_auth
from ferry.sandbox.modal import inference, platform, web
from ferry.sandbox.modal.platform import ModalPlatform, Options
from ferry.sandbox.modal.servicer import DetailsCodec, ModalServicer
from ferry.sandbox.processes import ProcessPool

log = logging.getLogger("ferry.sandbox.modal")

#: The token id the fake accepts; the token secret is the sandbox's `--token`.
TOKEN_ID = "ak-ferry-sandbox"


@dataclass
class ModalConfig:
    """How to run the Modal fake (from the CLI flags)."""

    token: str
    token_id: str = TOKEN_ID
    speed: float = 1.0
    inference: bool = True
    max_processes: int = 2
    boot_seconds: float = 1.0
    server: modelserver.ModelServer | None = None
    state_dir: Path = Path(".")


class ModalSandbox(PlatformFake):
    """One Modal fake: `servicer` (gRPC) and `web_app` (web functions + admin)."""

    label = "Modal"
    platform: ModalPlatform

    def __init__(self, config: ModalConfig, clock: SandboxClock | None = None) -> None:
        super().__init__(config.speed, clock)
        self.config = config
        self.api_url = ""
        self.web_url = ""
        self.backend: inference.ContainerProcesses | None = None
        if config.inference:
            if config.server is None:
                raise ValueError("inference on needs a located model server")
            self.pool = ProcessPool(
                config.max_processes, config.state_dir / "modal-logs", on_exit=self._exited
            )
            self.backend = inference.ContainerProcesses(
                server=config.server,
                pool=self.pool,
                home=config.state_dir / "home",
                on_ready=self._ready,
                on_failed=self._failed,
            )
        self.platform = ModalPlatform(
            self.clock,
            Options(boot_seconds=config.boot_seconds, inference=config.inference),
            self.backend,
        )
        self.platform.on_change(self.notifier.pulse)
        # The RPCs it does not implement get their bodies at import (see `servicer`), which
        # mypy cannot see.
        self.servicer = ModalServicer(  # type: ignore[abstract]
            self.platform,
            token_id=config.token_id,
            token_secret=config.token,
            faults=self.faults,
            calls=self.calls,
        )
        self.web = web.WebFunctions(
            self.platform,
            self.notifier,
            self.backend.port_of if self.backend else lambda _container: None,
        )
        auth = bearer_auth(config.token)
        routes = admin_routes(
            auth=auth,
            clock=self.clock,
            faults=self.faults,
            calls=self.calls,
            describe=self.describe,
            reset=self.reset,
            advance=self._advance,
            on_clock_change=self._clock_changed,
        )
        admin = Surface(name="admin", faults=FaultTable(), calls=CallCounter(), log=log)
        routes += web.admin_routes(self.platform, admin, auth, self._processes)
        routes += web.web_routes(self.web)
        self.web_app: ASGIApp = web.app(routes)
        self._grpc: Server | None = None

    # ---- lifecycle -----------------------------------------------------------------------

    def set_urls(self, api_url: str, web_url: str) -> None:
        """Tell the fake where it is served (web functions' URLs live on the web port)."""
        self.api_url = api_url
        self.web_url = web_url
        self.platform.web_url = web_url

    async def start_grpc(self, sock: socket.socket) -> None:
        """Serve the gRPC API on an already bound socket."""
        self._grpc = Server([self.servicer], status_details_codec=DetailsCodec())
        await self._grpc.start(sock=sock)

    def stop_platform(self) -> None:
        self.platform.stop_containers()

    async def close(self) -> None:
        """Stop every container process, then the web app and the gRPC server."""
        await super().close()
        await self.web.close()
        if self._grpc is not None:
            self._grpc.close()
            await self._grpc.wait_closed()

    async def reset(self) -> None:
        """Forget all state, stored replies, faults and call counts (the clock keeps running)."""
        await super().reset()
        self.servicer.forget_replies()

    def _ready(self, container_id: str) -> None:
        self.platform.process_ready(container_id)

    def _failed(self, container_id: str, why: str) -> None:
        log.warning("container %s cannot start: %s", container_id, why)
        self.platform.process_exited(container_id)

    def _exited(self, key: str, code: int, tail: str) -> None:
        log.warning("container %s: its process exited (%s); log ends:\n%s", key, code, tail)
        self.platform.process_exited(key)

    def _processes(self) -> list[dict[str, object]]:
        return self.pool.describe() if self.pool else []

    def describe(self) -> dict[str, Any]:
        """`GET /_sandbox`: what this fake is and how it runs."""
        return {
            **self.describe_runtime("modal", self.config),
            "api": self.api_url,
            "web": self.web_url,
            "workspace": platform.WORKSPACE,
            "implementedRpcs": self.servicer.implemented,
            "bootSeconds": self.config.boot_seconds,
        }
