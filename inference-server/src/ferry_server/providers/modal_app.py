"""Modal entrypoint: the same ASGI app, plus the GPU/scaling parameters the operator passes.

The operator sets FERRY_MODAL_* variables (or calls `build_modal_app` with ModalParams);
`modal deploy -m ferry_server.providers.modal_app` deploys it. Importing this module does not
require the `modal` package; only `build_modal_app` does.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI

from ferry_server.app import create_app
from ferry_server.config import Settings


def asgi_app() -> FastAPI:
    """Factory Modal calls inside the container: the standard Ferry app, configured from env."""
    return create_app(Settings.from_env())


@dataclass(frozen=True)
class ModalParams:
    """What the operator decides for a Modal deployment."""

    app_name: str = "ferry-endpoint"
    image: str = "ghcr.io/ferry/inference-server:latest"
    gpu: str | None = "A10G"
    min_containers: int = 0
    max_containers: int = 1
    scaledown_window_s: int = 300
    timeout_s: int = 600
    max_concurrent_inputs: int = 32

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ModalParams:
        e = os.environ if env is None else env
        d = cls()
        gpu = e.get("FERRY_MODAL_GPU", d.gpu or "")
        params = cls(
            app_name=e.get("FERRY_MODAL_APP_NAME", d.app_name),
            image=e.get("FERRY_MODAL_IMAGE", d.image),
            gpu=None if gpu.lower() in ("", "none", "cpu") else gpu,
            min_containers=int(e.get("FERRY_MODAL_MIN_CONTAINERS", d.min_containers)),
            max_containers=int(e.get("FERRY_MODAL_MAX_CONTAINERS", d.max_containers)),
            scaledown_window_s=int(e.get("FERRY_MODAL_SCALEDOWN_WINDOW_S", d.scaledown_window_s)),
            timeout_s=int(e.get("FERRY_MODAL_TIMEOUT_S", d.timeout_s)),
            max_concurrent_inputs=int(
                e.get("FERRY_MODAL_MAX_CONCURRENT_INPUTS", d.max_concurrent_inputs)
            ),
        )
        params.validate()
        return params

    def validate(self) -> None:
        if self.min_containers < 0:
            raise ValueError("min_containers must not be negative")
        if self.max_containers < max(self.min_containers, 1):
            raise ValueError("max_containers must be at least max(min_containers, 1)")
        if self.scaledown_window_s < 2:
            raise ValueError("scaledown_window_s must be at least 2 seconds")

    def function_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `modal.App.function`, in Modal's own names."""
        return {
            "gpu": self.gpu,
            "min_containers": self.min_containers,
            "max_containers": self.max_containers,
            "scaledown_window": self.scaledown_window_s,
            "timeout": self.timeout_s,
        }


def server_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The server's variables to pass on (FERRY_* and HF_*, not the FERRY_MODAL_* parameters).

    They may hold credentials (a Hugging Face token, FERRY_AUTH_TOKEN): they travel as a Modal
    secret, never as environment baked into the image definition.
    """
    source = os.environ if env is None else env
    return {k: v for k, v in source.items()
            if k.startswith(("FERRY_", "HF_")) and not k.startswith("FERRY_MODAL_")}


def build_modal_app(params: ModalParams | None = None, env: Mapping[str, str] | None = None) -> Any:
    """A `modal.App` whose one function serves `asgi_app()` with the operator's parameters."""
    import modal

    p = params or ModalParams.from_env()
    app = modal.App(p.app_name, image=modal.Image.from_registry(p.image))
    passed: dict[str, str | None] = dict(server_env(env))
    register_modal_function(app, p, secrets=[modal.Secret.from_dict(passed)] if passed else [])
    return app


def register_modal_function(app: Any, params: ModalParams, secrets: Sequence[Any] = ()) -> Any:
    """Register the web function serving `asgi_app()` on `app` with `secrets` (Modal secrets
    whose variables the server reads); returns the modal.Function."""
    import modal

    def serve() -> FastAPI:
        return asgi_app()

    web = modal.asgi_app()(serve)
    concurrent: Any = modal.concurrent(max_inputs=params.max_concurrent_inputs)(web)
    return app.function(serialized=True, secrets=list(secrets), **params.function_kwargs())(
        concurrent
    )


if os.environ.get("FERRY_MODAL_DEPLOY") == "1":  # pragma: no cover - only under `modal deploy`
    app = build_modal_app()
