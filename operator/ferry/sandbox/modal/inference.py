"""Real Modal containers: the model-server factory a deploy named, served by a real process (D7).

A Modal web function deployed by Ferry is a *reference*: the function Modal's container runs
is `ferry_server.providers.modal_app:asgi_app`, the model server's ASGI factory, sent as a
pickle that names that module and attribute and carries no code (see
`ferry.providers.modal`). `factory_reference` reads that name back without running anything
from the pickle, and a backed container is `<server-python> -c RUNNER <module> <attr> <port>`:
the named factory's app under uvicorn with its lifespan, which starts loading the model at
once, as Modal's ASGI runner does at container start (D17). The container is ready when the
server's `/readyz` says so. `container_env` is the whole environment the process gets.

Used by `platform` through `ContainerProcesses`; `web` forwards requests to `port_of`.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import pickle
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx

from ferry.sandbox import modelserver
from ferry.sandbox.modal.platform import Container, Function
from ferry.sandbox.processes import ProcessPool

log = logging.getLogger("ferry.sandbox.modal")

RUNNER = (
    "import importlib, sys, uvicorn; "
    "factory = getattr(importlib.import_module(sys.argv[1]), sys.argv[2]); "
    "uvicorn.run(factory(), host='127.0.0.1', port=int(sys.argv[3]), log_level='info', "
    "lifespan='on')"
)
_KEPT_PREFIXES = ("FERRY_",)
_DROPPED_PREFIXES = ("FERRY_", "MODAL_", "HF_", "PYTHON", "VIRTUAL_ENV", "CONDA", "RUNPOD_")
READY_POLL_S = 0.25


class NotAReference(Exception):
    """The deployed function is not a plain reference to an importable factory."""


class _ReferenceReader(pickle.Unpickler):
    """Reads `getattr(importlib.import_module(module), attr)` out of a pickle without importing
    or calling anything: those two globals become recorders, every other global is refused."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("importlib", "import_module"):
            return lambda mod: ("module", mod)
        if (module, name) == ("builtins", "getattr"):
            return lambda obj, attr: ("attr", obj, attr)
        raise NotAReference(f"the function pickle refers to {module}.{name}")


def factory_reference(serialized: bytes) -> tuple[str, str]:
    """(module, attribute) of the factory a serialized Modal function names.

    Raises NotAReference for anything else (a pickled body, a closure): the sandbox runs only
    what the Ferry model server itself provides.
    """
    try:
        value = _ReferenceReader(io.BytesIO(serialized)).load()
    except NotAReference:
        raise
    except Exception as exc:
        raise NotAReference(f"the function pickle cannot be read: {exc}") from None
    match value:
        case ("attr", ("module", str(module)), str(attr)):
            return module, attr
    raise NotAReference("the function pickle is not getattr(import_module(...), ...)")


def free_port() -> int:
    """A free loopback port for a container's server."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def container_env(
    *,
    function_env: Mapping[str, str],
    model_dir: Path,
    home: Path,
    base_env: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of a backed container's process.

    The sandbox's own environment minus anything Ferry, Modal or Hugging Face (a developer's
    tokens stay out); the function's secrets' `FERRY_*` variables (others are not passed to a
    local process); then `FERRY_MODEL` = the sandbox's tiny model whatever the endpoint names,
    served under the endpoint's model name so clients can keep sending it; CPU, offline.
    """
    source = os.environ if base_env is None else base_env
    env = {k: v for k, v in source.items() if not k.startswith(_DROPPED_PREFIXES)}
    env.update({k: v for k, v in function_env.items() if k.startswith(_KEPT_PREFIXES)})
    if "FERRY_MODEL_NAME" not in function_env and function_env.get("FERRY_MODEL"):
        env["FERRY_MODEL_NAME"] = modelserver.served_model_name(function_env["FERRY_MODEL"])
    env.update(
        {
            "FERRY_MODEL": str(model_dir),
            "FERRY_DEVICE": "cpu",
            "HOME": str(home),
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "OMP_NUM_THREADS": source.get("OMP_NUM_THREADS", "1"),
        }
    )
    return env


class ContainerProcesses:
    """`platform.ProcessBackend` over a `ProcessPool`: one process per backed container."""

    def __init__(
        self,
        *,
        server: modelserver.ModelServer,
        pool: ProcessPool,
        home: Path,
        on_ready: Callable[[str], None],
        on_failed: Callable[[str, str], None],
    ) -> None:
        self.server = server
        self.pool = pool
        self.home = home
        self._on_ready = on_ready
        self._on_failed = on_failed
        self._ports: dict[str, int] = {}
        self._watchers: dict[str, asyncio.Task[None]] = {}

    def port_of(self, container_id: str) -> int | None:
        """The loopback port a backed container's server listens on."""
        return self._ports.get(container_id)

    def has_room(self) -> bool:
        return self.pool.has_room()

    def launch(self, container: Container, function: Function, env: dict[str, str]) -> None:
        """Start the container's process (the slot is taken now) and watch for readiness."""
        definition = function.first()
        try:
            module, attr = factory_reference(definition.function_serialized)
        except NotAReference as exc:
            # The container fails to start, as it would on Modal with a broken function (told
            # after this call returns: the platform is in the middle of placing it).
            asyncio.get_running_loop().call_soon(self._on_failed, container.id, str(exc))
            return
        self.home.mkdir(parents=True, exist_ok=True)
        port = free_port()
        self._ports[container.id] = port
        argv = [str(self.server.python), "-c", RUNNER, module, attr, str(port)]
        process_env = container_env(
            function_env=env, model_dir=self.server.model_dir, home=self.home
        )
        self.pool.launch(container.id, argv, process_env)
        self._watchers[container.id] = asyncio.get_running_loop().create_task(
            self._watch(container.id, port), name=f"sandbox-ready-{container.id}"
        )

    async def _watch(self, container_id: str, port: int) -> None:
        async with httpx.AsyncClient(timeout=2.0) as http:
            while self.pool.holds(container_id):
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                        log.info("container %s: the model server is ready", container_id)
                        self._on_ready(container_id)
                        return
                await asyncio.sleep(READY_POLL_S)

    def terminate(self, container_id: str) -> None:
        """Stop the container's process (the slot is free now)."""
        self.pool.terminate(container_id)
        self._ports.pop(container_id, None)
        watcher = self._watchers.pop(container_id, None)
        if watcher is not None:
            watcher.cancel()

    def touch(self, container_id: str) -> None:
        self.pool.touch(container_id)

    def least_recently_used(self, evictable: Callable[[str], bool]) -> str | None:
        return self.pool.least_recently_used(evictable)
