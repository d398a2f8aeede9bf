"""Modal apps through the `modal` package (pinned): one client per ProviderConfig.

The external resource is a deployed Modal app named for the endpoint (`mapping.app_name`)
holding one web function, `serve`. Calls per endpoint per poll (D4): the function (hydrated),
its autoscaler settings and its current stats; nothing shared.

The client, configured without process-wide surprises:

- `modal.Client.from_credentials(token id, token secret)` per ProviderConfig, never the
  per-process `from_env` singleton. `from_credentials` takes its server URL from Modal's
  config, which reads `MODAL_SERVER_URL` from the environment: there is no argument for it.
  So `ClientConfig.base_url` is put there for the duration of that one call, under a lock,
  and the previous value restored (the URL is read once, when the client is made). For the
  platform's default URL the variable is left unset, so Modal's own default (with its
  fail-over host) applies.
- Before `modal` is imported (it reads its config file's path at import): a throwaway
  `MODAL_CONFIG_PATH` (a developer's `~/.modal.toml` must not choose tokens, profiles or the
  server), `MODAL_DISABLE_API_PROXY=1` (an HTTP(S)_PROXY meant for other traffic must not
  carry the token), and `MODAL_MAX_THROTTLE_WAIT=0`: Modal's client would otherwise retry a
  throttled call without limit; instead the error reaches Ferry with the server's retry hint
  and the work queue waits that long.
- Modal's client has no per-attempt deadline (a slow server hangs a call, a dead one takes
  about a minute to fail): every call here runs under `ClientConfig.call_timeout`.

A deploy is a long operation (D13): `create` and a redeploying `update` start it as a task held
per endpoint and return at once; `observe` reports `Deploying` until it ends, then its outcome.
If the operator restarts mid-deploy the task is gone with it: the next observe finds no
published function (and creates again: the app name is deterministic, so the deploy finds
the same app by name and never makes a second one; an app that never published is stopped by
Modal once its deploying client stops heartbeating) or a function not known to match the
endpoint's generation (`mapping.settled`) and redeploys it.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import sys
import tempfile
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime
from types import ModuleType
from typing import Any, TypeVar

from ferry.logic import conditions
from ferry.providers.base import (
    Backend,
    ClientConfig,
    Observation,
    PermanentProviderError,
    ProviderError,
    Target,
    TransientProviderError,
)
from ferry.providers.modal import mapping

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Longest one deploy may take, image pull or build included (seconds).
DEPLOY_TIMEOUT_S = 1800.0

_server_url_lock: asyncio.Lock | None = None


def load_modal() -> ModuleType:
    """Import `modal` after setting the process-wide options it reads (module docstring)."""
    if "modal" not in sys.modules:
        scratch = tempfile.mkdtemp(prefix="ferry-modal-")
        os.environ["MODAL_CONFIG_PATH"] = os.path.join(scratch, "modal.toml")
        os.environ["MODAL_DISABLE_API_PROXY"] = "1"
    # Read by the client at every throttled call: (re)set for every provider built.
    os.environ["MODAL_MAX_THROTTLE_WAIT"] = "0"
    return importlib.import_module("modal")


class ServerFactory:
    """Stands for `ferry_server.providers.modal_app:asgi_app` in a deploy.

    Modal sends a `serialized=True` function as a pickle; this one pickles as
    `getattr(importlib.import_module(module), attr)`: no code, no source, nothing tied to the
    operator's Python version. In the container it unpickles to the model server's own factory
    from the image, which Modal calls (no arguments) to get the ASGI app it serves.
    """

    def __init__(self, module: str = mapping.SERVER_MODULE, attr: str = mapping.SERVER_FACTORY):
        self.module = module
        self.attr = attr
        # What Modal's decorators read to name and check the function.
        self.__module__ = module
        self.__qualname__ = attr
        self.__name__ = attr

    def __call__(self) -> Any:
        raise RuntimeError(f"{self.module}:{self.attr} runs only inside a Modal container")

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (getattr, (_Module(self.module), self.attr))


class _Module:
    def __init__(self, name: str) -> None:
        self.name = name

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (importlib.import_module, (self.name,))


def build_app(modal_mod: ModuleType, want: mapping.Deployment) -> tuple[Any, Any]:
    """The `modal.App` for `want` and its web function (nothing is sent until deploy)."""
    app = modal_mod.App(want.app, include_source=False)
    served: Any = modal_mod.asgi_app()(ServerFactory())
    if want.target_inputs:
        served = modal_mod.concurrent(target_inputs=want.target_inputs, max_inputs=want.max_inputs)(
            served
        )
    function = app.function(
        image=modal_mod.Image.from_registry(want.image),
        # Every env value, Secret-sourced or not, travels as a Modal secret: none is baked
        # into the image definition.
        secrets=[modal_mod.Secret.from_dict(dict(want.env))],
        gpu=list(want.gpus),
        min_containers=want.autoscaler.min_containers,
        max_containers=want.autoscaler.max_containers,
        buffer_containers=want.autoscaler.buffer_containers,
        scaledown_window=want.autoscaler.scaledown_window,
        timeout=mapping.FUNCTION_TIMEOUT_S,
        serialized=True,
        include_source=False,
        name=mapping.FUNCTION,
    )(served)
    return app, function


class NotFound(TransientProviderError):
    """Modal answered NOT_FOUND. Observe and delete read it as "absent"; anywhere else it is
    transient (something vanished between two calls: the next observe sees it gone)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="NotFound")


@dataclass
class Deploy:
    """A deploy in flight (or just ended) for one endpoint."""

    key: str
    since: str
    task: asyncio.Task[mapping.Record]


class ModalProvider:
    """Deployed apps on one Modal workspace (one ProviderConfig)."""

    name = mapping.NAME
    can_search = True

    def __init__(self, config: ClientConfig, *, deploy_timeout: float = DEPLOY_TIMEOUT_S) -> None:
        self._config = config
        self._deploy_timeout = deploy_timeout
        self._modal = load_modal()
        self._client: Any = None
        self._client_lock = asyncio.Lock()
        self._deploys: dict[str, Deploy] = {}
        self._failed: dict[str, tuple[str, ProviderError]] = {}
        self._records: dict[str, mapping.Record] = {}
        self._plans: dict[str, tuple[Any, mapping.Plan]] = {}
        self._last: dict[str, Observation] = {}

    def external_name_for(self, target: Target) -> str | None:
        return mapping.app_name(target)

    # --- the verbs ------------------------------------------------------------------------

    async def observe(self, target: Target, external_name: str | None) -> Observation:
        uid = target.uid
        want = mapping.desired(target)
        app = external_name or want.app
        deploy = self._deploys.get(uid)
        if deploy is not None and not deploy.task.done():
            if deploy.key == want.key:
                return mapping.deploying(app, deploy.since, self._last.get(uid))
            return Observation(
                exists=True,
                external_name=app,
                desired_replicas=None,
                ready_replicas=None,
                diff=["the spec changed during a deploy"],
            )
        if deploy is not None:
            self._finished(uid, deploy)
        failed = self._failed.get(uid)
        if failed is not None:
            if failed[0] == want.key:
                raise failed[1]
            del self._failed[uid]
        client = await self._modal_client()
        fn = self._modal.Function.from_name(app, mapping.FUNCTION, client=client)
        try:
            await self._call(f"read function {mapping.FUNCTION} of app {app}", fn.hydrate.aio())
        except NotFound:
            return Observation.absent()
        settings, stats, info = await asyncio.gather(
            self._call(f"read the autoscaler of app {app}", fn.autoscaler.settings.aio()),
            self._call(f"read the stats of app {app}", fn.get_current_stats.aio()),
            fn.info.aio(),  # answered from the hydrate above: no call
        )
        seen = _seen(info, settings, stats)
        record = self._records.get(uid)
        is_settled = mapping.settled(target.endpoint)
        if record is None and is_settled and not mapping.readable_diff(want, seen):
            # Deployed at this generation, as Ferry recorded before it restarted: adopt the
            # live ids as the baseline, so a redeploy by someone else is noticed from now on.
            record = self._records[uid] = mapping.Record(
                want.key, want.image, want.env_digest, seen.image_id, seen.secret_ids
            )
        todo = mapping.plan(want, seen, record, is_settled)
        seen_now = mapping.observation(want, seen, todo)
        self._last[uid] = seen_now
        if todo.diff:
            self._plans[uid] = (fn, todo)
        return seen_now

    async def create(self, target: Target, external_name: str | None) -> str:
        want = mapping.desired(target)
        self._start_deploy(target.uid, want)
        return want.app

    async def update(self, target: Target, observation: Observation) -> None:
        uid = target.uid
        held = self._plans.pop(uid, None)
        deploying = self._deploys.get(uid)
        if held is None and deploying is not None and not deploying.task.done():
            # The spec changed while a deploy ran: deploy the new spec instead.
            self._start_deploy(uid, mapping.desired(target))
            return
        if held is None:
            return  # nothing read to act on; the next observe plans again
        fn, todo = held
        if todo.redeploy:
            self._start_deploy(uid, mapping.desired(target))
            return
        await self._call(
            f"update the autoscaler of app {observation.external_name}",
            fn.autoscaler.update.aio(**todo.autoscaler),
        )

    async def delete(self, target: Target, external_name: str) -> None:
        self._forget(target.uid)
        client = await self._modal_client()
        try:
            app = await self._call(
                f"look up app {external_name}",
                self._modal.App.lookup.aio(external_name, client=client),
            )
        except NotFound:
            return  # gone already: success
        await self._call(f"stop app {external_name}", app.stop.aio(client=client))

    async def orphan(self, target: Target, external_name: str) -> None:
        """Nothing to release on Modal; a deploy in flight finishes on its own."""
        self._deploys.pop(target.uid, None)
        self._forget(target.uid)

    async def close(self) -> None:
        for deploy in self._deploys.values():
            deploy.task.cancel()
        self._deploys.clear()
        if self._client is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self._config.call_timeout):
                    await self._client.close.aio()
            self._client = None

    # --- deploys --------------------------------------------------------------------------

    def _start_deploy(self, uid: str, want: mapping.Deployment) -> None:
        old = self._deploys.pop(uid, None)
        if old is not None:
            old.task.cancel()
        self._failed.pop(uid, None)
        self._plans.pop(uid, None)
        now = self._config.clock() if self._config.clock else datetime.now(UTC)
        task = asyncio.get_running_loop().create_task(
            self._deploy(want), name=f"modal-deploy-{want.app}"
        )
        self._deploys[uid] = Deploy(want.key, conditions.rfc3339(now), task)
        log.info("deploying app %s on Modal (generation %d)", want.app, want.generation)

    async def _deploy(self, want: mapping.Deployment) -> mapping.Record:
        what = f"deploy app {want.app}"
        client = await self._modal_client()
        app, function = build_app(self._modal, want)
        try:
            async with asyncio.timeout(self._deploy_timeout):
                await app.deploy.aio(
                    name=want.app, client=client, tag=f"generation-{want.generation}"
                )
                # A redeploy resets live autoscaler overrides to the definition's settings:
                # state them again so the live settings are the spec's whatever Modal kept.
                await self._call(
                    f"set the autoscaler of app {want.app}",
                    function.autoscaler.update.aio(**vars(want.autoscaler)),
                )
        except TimeoutError:
            raise TransientProviderError(
                f"{mapping.PLATFORM} did not finish {what} within {self._deploy_timeout:.0f}s",
                reason="DeployTimeout",
            ) from None
        except ProviderError:
            raise
        except Exception as exc:
            raise self._error(exc, what) from None
        info = await function.info.aio()
        log.info("deployed app %s on Modal", want.app)
        return mapping.Record(
            want.key,
            want.image,
            want.env_digest,
            info.image_info.image_id or "",
            tuple(info.secrets),
        )

    def _finished(self, uid: str, deploy: Deploy) -> None:
        """Take a finished deploy's outcome: a record, or its error (raised once, or kept for
        as long as the spec stays the same when retrying cannot help)."""
        del self._deploys[uid]
        if deploy.task.cancelled():
            return
        error = deploy.task.exception()
        if error is None:
            self._records[uid] = deploy.task.result()
            return
        if not isinstance(error, ProviderError):
            error = self._error(error, "deploy")
        if isinstance(error, PermanentProviderError):
            self._failed[uid] = (deploy.key, error)
        raise error

    def _forget(self, uid: str) -> None:
        deploy = self._deploys.pop(uid, None)
        if deploy is not None:
            deploy.task.cancel()
        self._failed.pop(uid, None)
        self._records.pop(uid, None)
        self._plans.pop(uid, None)
        self._last.pop(uid, None)

    # --- the client and its calls -----------------------------------------------------------

    async def _modal_client(self) -> Any:
        async with self._client_lock:
            if self._client is None:
                self._client = await self._connect()
            return self._client

    async def _connect(self) -> Any:
        global _server_url_lock
        if _server_url_lock is None:
            _server_url_lock = asyncio.Lock()
        creds = self._config.credentials
        url = self._config.base_url
        async with _server_url_lock:
            previous = os.environ.get("MODAL_SERVER_URL")
            if url and url.rstrip("/") != mapping.DEFAULT_API:
                os.environ["MODAL_SERVER_URL"] = url
            else:
                # The platform's own: Modal's built-in default, with its fail-over host.
                os.environ.pop("MODAL_SERVER_URL", None)
            try:
                return await self._call(
                    "connect",
                    self._modal.Client.from_credentials.aio(
                        creds.get("tokenId") or "", creds.get("tokenSecret") or ""
                    ),
                )
            finally:
                if previous is None:
                    os.environ.pop("MODAL_SERVER_URL", None)
                else:
                    os.environ["MODAL_SERVER_URL"] = previous

    async def _call(self, what: str, call: Awaitable[T]) -> T:
        """One Modal call under Ferry's deadline, its failure as Ferry's error."""
        try:
            async with asyncio.timeout(self._config.call_timeout):
                return await call
        except TimeoutError:
            raise TransientProviderError(
                f"{mapping.PLATFORM} did not answer {what} within {self._config.call_timeout:.0f}s",
                reason="ProviderTimeout",
            ) from None
        except Exception as exc:
            raise self._error(exc, what) from None

    def _error(self, exc: BaseException, what: str) -> ProviderError:
        status = _status(self._modal.exception, exc)
        message = _scrub(str(exc), self._config)
        if status == "NOT_FOUND":
            return NotFound(f"{mapping.PLATFORM} found nothing to {what}: {message}")
        if status == "CLIENT":
            return PermanentProviderError(
                f"{mapping.PLATFORM}'s client refused {what}: {message}", reason="InvalidRequest"
            )
        return mapping.error_for(status, message, _retry_after(exc), what, self._config)


def _status(errors: ModuleType, exc: BaseException) -> str | None:
    """The gRPC status name of a failed call (None: no answer came; CLIENT: refused before
    sending). Modal's exception types say it; `_grpc_status` is what its error middleware
    records (Modal deprecates reading it through grpclib's `status`)."""
    recorded = getattr(exc, "_grpc_status", None)
    if recorded is not None:
        return str(recorded.name)
    by_type = (
        (errors.NotFoundError, "NOT_FOUND"),
        (errors.AuthError, "UNAUTHENTICATED"),
        (errors.PermissionDeniedError, "PERMISSION_DENIED"),
        (errors.ResourceExhaustedError, "RESOURCE_EXHAUSTED"),
        (errors.UnimplementedError, "UNIMPLEMENTED"),
        (errors.ServiceError, "UNAVAILABLE"),
        (errors.InternalError, "INTERNAL"),
        (errors.ConnectionError, None),
    )
    for kind, name in by_type:
        if isinstance(exc, kind):
            return name
    if isinstance(exc, errors.Error):
        return "CLIENT"
    return None


def _retry_after(exc: BaseException) -> float | None:
    """The server's RPCRetryPolicy hint, from the details Modal's middleware records."""
    for detail in getattr(exc, "_grpc_details", None) or ():
        secs = getattr(detail, "retry_after_secs", None)
        if secs is not None and type(detail).__name__ == "RPCRetryPolicy":
            return float(secs)
    return None


def _scrub(message: str, config: ClientConfig) -> str:
    """Modal's own words, with the token pair cut out should a message ever echo it."""
    for value in config.credentials.values.values():
        if value:
            message = message.replace(value, "<redacted>")
    return message[:300]


def _seen(info: Any, settings: Any, stats: Any) -> mapping.Seen:
    concurrency = info.concurrency_info
    return mapping.Seen(
        web_url=info.web_info.web_url if info.web_info else "",
        gpus=tuple((str(kind), int(count)) for kind, count in info.gpus),
        concurrency=(concurrency.target_inputs, concurrency.max_inputs) if concurrency else None,
        image_id=info.image_info.image_id or "",
        secret_ids=tuple(info.secrets),
        autoscaler=mapping.Autoscaler(
            min_containers=settings.min_containers or 0,
            max_containers=settings.max_containers,
            buffer_containers=settings.buffer_containers or 0,
            scaledown_window=settings.scaledown_window or 0,
        ),
        running_containers=int(stats.num_total_runners),
    )


BACKEND = Backend(
    mapping.NAME,
    connect=ModalProvider,
    required_keys=("tokenId", "tokenSecret"),
    default_base_url=mapping.DEFAULT_API,
)
