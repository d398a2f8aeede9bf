"""The Modal fake's state machine: apps, functions, images, secrets, autoscaler settings and
containers on the sandbox clock.

Synchronous, and it reads time only from the injected `SandboxClock`, so unit tests drive it by
stepping the clock and calling `tick()`; the gRPC servicer (`servicer`) and the web surface
(`web`) call into it. What it models of Modal (facts: ../shared/design/providers.md):

- Apps: `AppCreate` makes an initializing app; `AppPublish` deploys it under a name in an
  environment (a second app published under that name replaces the first). An initializing app
  whose client stops heartbeating for `HEARTBEAT_TIMEOUT_S` is stopped, as Modal stops a deploy
  whose client went away. `AppStop` stops an app: its containers go and its functions are no
  longer found.
- Functions: precreated, then created (the definition is held until the app is published),
  then live at a version. A publish is a redeploy: every function's live autoscaler overrides
  are reset to the definition's settings (Modal's documented rule), and containers of the
  previous version are replaced (idle ones at once, busy ones when their requests finish).
- Images are content-addressed (one id per definition, as Modal dedups them) and every
  definition sent is recorded, so a test can check what an image carries; secrets keep their
  values here and nowhere else (views show keys only).
- Containers: wanted = max(min, demand + buffer while there is demand), at most max, where
  demand = ceil(requests / target inputs per container). A container is placed at once and is
  ready `boot_seconds` later on the clock (Modal's warm pool makes cold starts short); one
  backed by a real process is ready only when its server also says it is (the model loaded,
  D17). Idle containers above the wanted count go after `scaledown_window`.
- Real processes (D7): with inference on, a function that receives requests gets one container
  backed by a real model-server process (`ProcessBackend`); at most the backend's limit exist,
  the least recently used idle one is demoted to a simulated container to make room.
- Billing (D18): each container from placement to gone, x its GPU count, at the list price of
  its GPU (`GPU_PRICES`); `billed_seconds` is what the admin route shows.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from google.protobuf import json_format
from grpclib.const import Status
from modal_proto import api_pb2

from ferry.sandbox.clock import SandboxClock, rfc3339

WORKSPACE = "sandbox"
ENVIRONMENT = "main"
IMAGE_BUILDER_VERSION = "2024.10"
#: An initializing app is stopped when its client sends no heartbeat for this long (clock s).
HEARTBEAT_TIMEOUT_S = 90.0
#: Modal's scale-down window when a function sets none.
DEFAULT_SCALEDOWN_WINDOW_S = 60
#: Modal `gpu=` types the fake places (providers.md, "GPU identifiers per platform").
OFFERED_GPUS = ("T4", "L4", "A10G", "L40S", "A100-40GB", "A100-80GB", "H100", "H200", "B200")
#: USD per GPU-second, Modal's list prices as published in 2025-2026 (providers.md); None where
#: the note records no price. Billed seconds are exact either way.
GPU_PRICES: dict[str, float | None] = {
    "T4": 0.000164,
    "L4": 0.000222,
    "A10G": None,
    "L40S": 0.000542,
    "A100-40GB": None,
    "A100-80GB": 0.000694,
    "H100": 0.001097,
    "H200": None,
    "B200": None,
}
PRICES_DATE = "2025-2026"
PRICES_SOURCE = "Modal's published per-second GPU prices, as recorded in providers.md"


class Refused(Exception):
    """A call Modal would refuse: the servicer answers it with `status` and the message."""

    def __init__(self, status: Status, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def new_id(prefix: str) -> str:
    """A Modal-looking object id (`ap-…`, `fu-…`): hydration checks the prefix."""
    alphabet = string.ascii_letters + string.digits
    return f"{prefix}-" + "".join(secrets.choice(alphabet) for _ in range(22))


class ProcessBackend(Protocol):
    """Real model-server processes behind containers (`inference.ContainerProcesses`)."""

    def has_room(self) -> bool: ...

    def launch(self, container: Container, function: Function, env: dict[str, str]) -> None: ...

    def terminate(self, container_id: str) -> None: ...

    def touch(self, container_id: str) -> None: ...

    def least_recently_used(self, evictable: Callable[[str], bool]) -> str | None: ...


@dataclass
class Options:
    """Knobs of the fake (CLI flags)."""

    boot_seconds: float = 1.0
    inference: bool = True


@dataclass
class Container:
    """One container of a function, billed from placement until it is gone."""

    id: str
    function_id: str
    version: int
    gpu: str
    gpu_count: int
    placed_at: float
    ready_at: float
    busy: int = 0
    idle_since: float | None = None
    backed: bool = False
    process_ready: bool = False
    gone_at: float | None = None

    def ready(self, now: float) -> bool:
        """Booted on the clock and, when backed by a process, that server is ready."""
        return now >= self.ready_at and (not self.backed or self.process_ready)


@dataclass
class Function:
    """A function of an app: its live definition, overrides and containers."""

    id: str
    app_id: str
    tag: str
    web_url: str
    function_type: int
    webhook_config: api_pb2.WebhookConfig
    #: The definition a FunctionCreate sent, live once its app is published.
    pending: api_pb2.FunctionData | None = None
    data: api_pb2.FunctionData | None = None
    version: int = 0
    overrides: api_pb2.AutoscalerSettings = field(default_factory=api_pb2.AutoscalerSettings)
    override_resets: int = 0
    containers: dict[str, Container] = field(default_factory=dict)
    requests: int = 0

    def first(self) -> api_pb2.Function:
        """The rank-0 definition (settings common to every ranked GPU)."""
        assert self.data is not None
        first: api_pb2.Function = self.data.ranked_functions[0].function
        return first

    def per_container(self) -> int:
        """Inputs one container takes before another is wanted."""
        fn = self.first()
        return fn.target_concurrent_inputs or fn.max_concurrent_inputs or 1


@dataclass
class App:
    """An app: initializing, deployed under a name, or stopped."""

    id: str
    environment: str
    description: str
    created_at: float
    heartbeat_at: float
    state: str = "initializing"
    name: str = ""
    deployment_tag: str = ""
    functions: dict[str, str] = field(default_factory=dict)
    deployments: int = 0
    deployed_at: float | None = None
    stopped_at: float | None = None


@dataclass
class Segment:
    """One container's billed span."""

    app_name: str
    tag: str
    gpu: str
    gpu_count: int
    start: float
    end: float | None


@dataclass
class Stats:
    """FunctionStats as the fake computes them."""

    backlog: int
    total: int
    running: int
    headroom: int


def function_data(definition: api_pb2.Function) -> api_pb2.FunctionData:
    """Wrap a single-GPU definition (FunctionCreate's `function`) the way a ranked list comes:
    the fields FunctionData shares with Function, and the definition as rank 0."""
    shared = {f.name for f in api_pb2.FunctionData.DESCRIPTOR.fields} - {"ranked_functions"}
    fields = json_format.MessageToDict(definition, preserving_proto_field_name=True)
    data = api_pb2.FunctionData()
    json_format.ParseDict({k: v for k, v in fields.items() if k in shared}, data)
    data.ranked_functions.add(rank=0).function.CopyFrom(definition)
    return data


def merged(
    defaults: api_pb2.AutoscalerSettings, overrides: api_pb2.AutoscalerSettings
) -> api_pb2.AutoscalerSettings:
    """Settings in force: each field from the overrides when set there, else the definition's."""
    out = api_pb2.AutoscalerSettings()
    out.CopyFrom(defaults)
    for fd, value in overrides.ListFields():
        setattr(out, fd.name, value)
    if not out.HasField("scaledown_window"):
        out.scaledown_window = DEFAULT_SCALEDOWN_WINDOW_S
    return out


def check_settings(settings: api_pb2.AutoscalerSettings, what: str) -> None:
    """Modal's bounds on autoscaler settings; raises Refused(INVALID_ARGUMENT) naming the field."""
    lo = settings.min_containers if settings.HasField("min_containers") else 0
    hi = settings.max_containers if settings.HasField("max_containers") else 0
    if hi and lo > hi:
        raise Refused(
            Status.INVALID_ARGUMENT,
            f"{what}: min_containers ({lo}) cannot be greater than max_containers ({hi})",
        )
    if settings.HasField("scaledown_window") and not 2 <= settings.scaledown_window <= 3600:
        raise Refused(
            Status.INVALID_ARGUMENT, f"{what}: scaledown_window must be between 2 and 3600 seconds"
        )


def label_for(app_name: str, tag: str, requested: str) -> str:
    """The web URL label: the requested one, else `<app>-<function>`, DNS-shaped (≤ 63 with the
    workspace prefix, shortened with a hash like Modal does)."""
    raw = (requested or f"{app_name}-{tag}").lower()
    label = "".join(c if c.isalnum() else "-" for c in raw).strip("-")
    room = 63 - len(WORKSPACE) - 2
    if len(label) > room:
        digest = hashlib.sha256(raw.encode()).hexdigest()[:6]
        label = f"{label[: room - 7].rstrip('-')}-{digest}"
    return label


class ModalPlatform:
    """All Modal state of one sandbox."""

    def __init__(
        self,
        clock: SandboxClock,
        options: Options | None = None,
        processes: ProcessBackend | None = None,
        *,
        web_url: str = "http://127.0.0.1:0",
    ) -> None:
        self.clock = clock
        self.options = options or Options()
        self.processes = processes
        self.web_url = web_url
        self.environment_id = new_id("en")
        self.apps: dict[str, App] = {}
        self.deployed: dict[tuple[str, str], str] = {}
        self.functions: dict[str, Function] = {}
        self.by_label: dict[str, str] = {}
        self.images: dict[str, api_pb2.Image] = {}
        self._image_ids: dict[str, str] = {}
        self.secrets: dict[str, dict[str, str]] = {}
        self._named_secrets: dict[tuple[str, str], str] = {}
        self.mounts: dict[str, str] = {}
        self.segments: dict[str, Segment] = {}
        self.secret_env: Callable[[str], dict[str, str]] = self._env_of
        self._listeners: list[Callable[[], None]] = []
        if self.options.inference and processes is None:
            raise ValueError("inference on needs a process backend")

    # ---- notifications -------------------------------------------------------------------

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call `listener` whenever state may have changed (waiting requests re-check)."""
        self._listeners.append(listener)

    def _changed(self) -> None:
        for listener in self._listeners:
            listener()

    def reset(self) -> None:
        """Forget every app, function, image, secret, container and billing record."""
        now = self.clock.now()
        for fn in self.functions.values():
            for container in list(fn.containers.values()):
                self._gone(fn, container, now)
        self.apps.clear()
        self.deployed.clear()
        self.functions.clear()
        self.by_label.clear()
        self.images.clear()
        self._image_ids.clear()
        self.secrets.clear()
        self._named_secrets.clear()
        self.mounts.clear()
        self.segments.clear()
        self._changed()

    # ---- apps ----------------------------------------------------------------------------

    def app(self, app_id: str) -> App:
        """The app, or Refused(NOT_FOUND)."""
        app = self.apps.get(app_id)
        if app is None:
            raise Refused(Status.NOT_FOUND, f"App {app_id} not found")
        return app

    def deployed_app(self, name: str, environment: str) -> App | None:
        """The app deployed under `name` in `environment`, if any."""
        app_id = self.deployed.get((environment or ENVIRONMENT, name))
        return self.apps[app_id] if app_id else None

    def create_app(self, description: str, environment: str) -> App:
        """AppCreate: a new initializing app."""
        now = self.clock.now()
        app = App(new_id("ap"), environment or ENVIRONMENT, description, now, now)
        self.apps[app.id] = app
        return app

    def lookup_app(self, name: str, environment: str, create_if_missing: bool) -> App:
        """AppGetOrCreate: the deployed app of that name (or an empty one created for it)."""
        app = self.deployed_app(name, environment)
        if app is not None:
            return app
        if not create_if_missing:
            raise Refused(Status.NOT_FOUND, f"App '{name}' not found in environment")
        app = self.create_app(name, environment)
        self._deploy(app, name, "", [])
        return app

    def heartbeat(self, app_id: str) -> None:
        """AppHeartbeat: the deploying client is alive."""
        self.app(app_id).heartbeat_at = self.clock.now()

    def disconnect(self, app_id: str) -> None:
        """AppClientDisconnect: a failed deploy stops an app that never published."""
        app = self.app(app_id)
        if app.state == "initializing":
            self._stop(app, self.clock.now())

    def stop_app(self, app_id: str) -> None:
        """AppStop: containers go; its functions are not found any more."""
        self._stop(self.app(app_id), self.clock.now())
        self._changed()

    def _stop(self, app: App, now: float) -> None:
        if app.state == "stopped":
            return
        app.state, app.stopped_at = "stopped", now
        if app.name and self.deployed.get((app.environment, app.name)) == app.id:
            del self.deployed[(app.environment, app.name)]
        for function_id in app.functions.values():
            fn = self.functions[function_id]
            for container in list(fn.containers.values()):
                self._gone(fn, container, now)
            self.by_label.pop(fn.web_url.rsplit("/", 1)[-1], None)

    def publish(self, app_id: str, name: str, tag: str, function_ids: list[str]) -> float:
        """AppPublish: deploy (or redeploy) the app under `name`; returns deployed_at."""
        app = self.app(app_id)
        if app.state == "stopped":
            raise Refused(Status.FAILED_PRECONDITION, f"App {app_id} is stopped")
        for function_id in function_ids:
            fn = self.functions.get(function_id)
            if fn is None or fn.app_id != app_id or (fn.pending is None and fn.data is None):
                raise Refused(
                    Status.INVALID_ARGUMENT, f"Function {function_id} was not created in this app"
                )
        self._deploy(app, name, tag, function_ids)
        self.tick()
        return app.deployed_at or self.clock.now()

    def _deploy(self, app: App, name: str, tag: str, function_ids: list[str]) -> None:
        now = self.clock.now()
        previous = self.deployed.get((app.environment, name))
        if previous and previous != app.id:
            self._stop(self.apps[previous], now)
        live = set(function_ids)
        for function_id in list(app.functions.values()):
            if function_id not in live:
                fn = self.functions[function_id]
                for container in list(fn.containers.values()):
                    self._gone(fn, container, now)
                del app.functions[fn.tag]
        for function_id in function_ids:
            fn = self.functions[function_id]
            if fn.pending is not None:
                fn.data, fn.pending = fn.pending, None
            fn.version += 1
            # Modal: re-deploying an app wipes live autoscaler overrides.
            if fn.overrides.ListFields():
                fn.override_resets += 1
            fn.overrides = api_pb2.AutoscalerSettings()
            self.by_label[fn.web_url.rsplit("/", 1)[-1]] = fn.id
        app.state, app.name, app.deployment_tag = "deployed", name, tag
        app.deployments += 1
        app.deployed_at = now
        self.deployed[(app.environment, name)] = app.id

    # ---- functions -----------------------------------------------------------------------

    def precreate(
        self,
        app_id: str,
        tag: str,
        existing_id: str,
        function_type: int,
        webhook_config: api_pb2.WebhookConfig,
    ) -> Function:
        """FunctionPrecreate: the function's id (kept across redeploys) and web URL."""
        app = self.app(app_id)
        fn = self.functions.get(existing_id) if existing_id else None
        if fn is None:
            fn = self.functions.get(app.functions.get(tag, ""))
        label = label_for(app.description or tag, tag, webhook_config.requested_suffix)
        url = f"{self.web_url}/{WORKSPACE}--{label}" if webhook_config.type else ""
        if fn is None:
            fn = Function(new_id("fu"), app_id, tag, url, function_type, webhook_config)
            self.functions[fn.id] = fn
        else:
            fn.web_url, fn.webhook_config = url or fn.web_url, webhook_config
        app.functions[tag] = fn.id
        return fn

    def create_function(
        self, app_id: str, existing_id: str, data: api_pb2.FunctionData
    ) -> Function:
        """FunctionCreate: check the definition and hold it until the app is published."""
        if not data.ranked_functions:
            raise Refused(Status.INVALID_ARGUMENT, "a function needs at least one definition")
        first = data.ranked_functions[0].function
        tag = data.function_name or first.function_name
        if not tag:
            raise Refused(Status.INVALID_ARGUMENT, "function_name is required")
        for ranked in data.ranked_functions:
            self._check_definition(ranked.function, tag)
        check_settings(data.autoscaler_settings, f"Function '{tag}'")
        app = self.app(app_id)
        fn = self.functions.get(existing_id) or self.functions.get(app.functions.get(tag, ""))
        if fn is None:
            raise Refused(Status.FAILED_PRECONDITION, f"Function '{tag}' was not precreated")
        fn.pending = data
        return fn

    def _check_definition(self, definition: api_pb2.Function, tag: str) -> None:
        if definition.image_id not in self.images:
            raise Refused(
                Status.NOT_FOUND, f"Function '{tag}': image {definition.image_id} unknown"
            )
        for secret_id in definition.secret_ids:
            if secret_id not in self.secrets:
                raise Refused(Status.NOT_FOUND, f"Function '{tag}': secret {secret_id} unknown")
        gpu = definition.resources.gpu_config
        if gpu.count and gpu.gpu_type not in OFFERED_GPUS:
            raise Refused(
                Status.INVALID_ARGUMENT,
                f"Function '{tag}': GPU type {gpu.gpu_type!r} is not available; choose one of"
                f" {', '.join(OFFERED_GPUS)}",
            )
        target, most = definition.target_concurrent_inputs, definition.max_concurrent_inputs
        if target and most and target > most:
            raise Refused(
                Status.INVALID_ARGUMENT,
                f"Function '{tag}': target_inputs ({target}) cannot exceed max_inputs ({most})",
            )

    def deployed_function(self, app_name: str, tag: str, environment: str) -> Function:
        """FunctionGet: the live function, or Refused(NOT_FOUND)."""
        app = self.deployed_app(app_name, environment)
        fn = self.functions.get(app.functions.get(tag, "")) if app else None
        if fn is None or fn.data is None:
            raise Refused(Status.NOT_FOUND, f"Function '{tag}' not found in app '{app_name}'")
        return fn

    def live_function(self, function_id: str) -> Function:
        """A function of a deployed app by id, or Refused(NOT_FOUND)."""
        fn = self.functions.get(function_id)
        if fn is None or fn.data is None or self.apps[fn.app_id].state != "deployed":
            raise Refused(Status.NOT_FOUND, f"Function {function_id} not found")
        return fn

    def settings(self, function_id: str) -> api_pb2.AutoscalerSettings:
        """The autoscaler settings in force for the function."""
        fn = self.live_function(function_id)
        assert fn.data is not None
        return merged(fn.data.autoscaler_settings, fn.overrides)

    def update_settings(
        self, function_id: str, change: api_pb2.AutoscalerSettings
    ) -> api_pb2.AutoscalerSettings:
        """FunctionUpdateSchedulingParams: the set fields become live overrides."""
        fn = self.live_function(function_id)
        assert fn.data is not None
        wanted = api_pb2.AutoscalerSettings()
        wanted.CopyFrom(fn.overrides)
        for fd, value in change.ListFields():
            setattr(wanted, fd.name, value)
        check_settings(merged(fn.data.autoscaler_settings, wanted), f"Function '{fn.tag}'")
        fn.overrides = wanted
        self.tick()
        return self.settings(function_id)

    def stats(self, function_id: str) -> Stats:
        """FunctionGetCurrentStats."""
        fn = self.live_function(function_id)
        now = self.clock.now()
        running = sum(c.busy for c in fn.containers.values())
        most = fn.first().max_concurrent_inputs or fn.per_container()
        headroom = sum(max(0, most - c.busy) for c in fn.containers.values() if c.ready(now))
        return Stats(max(0, fn.requests - running), len(fn.containers), running, headroom)

    # ---- images, secrets, mounts ----------------------------------------------------------

    def image(self, definition: api_pb2.Image) -> str:
        """ImageGetOrCreate: one id per definition; every definition sent is recorded."""
        key = hashlib.sha256(definition.SerializeToString(deterministic=True)).hexdigest()
        image_id = self._image_ids.get(key)
        if image_id is None:
            image_id = self._image_ids[key] = new_id("im")
            stored = api_pb2.Image()
            stored.CopyFrom(definition)
            self.images[image_id] = stored
        return image_id

    def secret(self, request: api_pb2.SecretGetOrCreateRequest) -> str:
        """SecretGetOrCreate: an app's anonymous secret, or a named one (looked up or made)."""
        kind = request.object_creation_type
        if kind in (
            api_pb2.OBJECT_CREATION_TYPE_ANONYMOUS_OWNED_BY_APP,
            api_pb2.OBJECT_CREATION_TYPE_EPHEMERAL,
        ):
            secret_id = new_id("st")
            self.secrets[secret_id] = dict(request.env_dict)
            return secret_id
        key = (request.environment_name or ENVIRONMENT, request.deployment_name)
        secret_id = self._named_secrets.get(key, "")
        if kind == api_pb2.OBJECT_CREATION_TYPE_UNSPECIFIED:
            if not secret_id:
                raise Refused(Status.NOT_FOUND, f"Secret '{request.deployment_name}' not found")
            missing = set(request.required_keys) - set(self.secrets[secret_id])
            if missing:
                raise Refused(
                    Status.NOT_FOUND,
                    f"Secret '{request.deployment_name}' lacks {', '.join(sorted(missing))}",
                )
            return secret_id
        if secret_id and kind == api_pb2.OBJECT_CREATION_TYPE_CREATE_FAIL_IF_EXISTS:
            raise Refused(Status.ALREADY_EXISTS, f"Secret '{request.deployment_name}' exists")
        if not secret_id or kind == api_pb2.OBJECT_CREATION_TYPE_CREATE_OVERWRITE_IF_EXISTS:
            secret_id = secret_id or new_id("st")
            self.secrets[secret_id] = dict(request.env_dict)
            self._named_secrets[key] = secret_id
        return secret_id

    def mount(self, name: str) -> str:
        """MountGetOrCreate: the client mount (by name) or a file mount: an id, nothing stored."""
        if name not in self.mounts:
            self.mounts[name] = new_id("mo")
        return self.mounts[name]

    def _env_of(self, function_id: str) -> dict[str, str]:
        fn = self.functions[function_id]
        env: dict[str, str] = {}
        for secret_id in fn.first().secret_ids:
            env.update(self.secrets.get(secret_id, {}))
        return env

    # ---- containers on the clock ----------------------------------------------------------

    def tick(self) -> None:
        """Bring containers in line with demand and settings at the clock's now."""
        now = self.clock.now()
        for app in self.apps.values():
            if app.state == "initializing" and now - app.heartbeat_at > HEARTBEAT_TIMEOUT_S:
                self._stop(app, now)
        for fn in self.functions.values():
            if fn.data is not None and self.apps[fn.app_id].state == "deployed":
                self._scale(fn, now)
        self._changed()

    def advance(self, seconds: float) -> None:
        """Step the clock, stopping at every boot and scale-down inside the step, in order."""
        end = self.clock.now() + seconds
        while True:
            upcoming = [t for t in self._events() if self.clock.now() < t <= end]
            if not upcoming:
                break
            self.clock.advance(min(upcoming) - self.clock.now())
            self.tick()
        if end > self.clock.now():
            self.clock.advance(end - self.clock.now())
        self.tick()

    def _events(self) -> list[float]:
        times: list[float] = []
        for fn in self.functions.values():
            if fn.data is None:
                continue
            window = merged(fn.data.autoscaler_settings, fn.overrides).scaledown_window
            for c in fn.containers.values():
                times.append(c.ready_at)
                if c.idle_since is not None:
                    times.append(c.idle_since + window)
        times += [a.heartbeat_at + HEARTBEAT_TIMEOUT_S for a in self.apps.values()]
        return times

    def wanted(self, fn: Function) -> int:
        """Containers the autoscaler wants for `fn` now."""
        assert fn.data is not None
        settings = merged(fn.data.autoscaler_settings, fn.overrides)
        demand = math.ceil(fn.requests / fn.per_container())
        want = max(settings.min_containers, demand + (settings.buffer_containers if demand else 0))
        return min(want, settings.max_containers) if settings.max_containers else want

    def _scale(self, fn: Function, now: float) -> None:
        assert fn.data is not None
        window = merged(fn.data.autoscaler_settings, fn.overrides).scaledown_window
        for c in list(fn.containers.values()):
            if c.version != fn.version and c.busy == 0:
                self._gone(fn, c, now)  # replaced by the new version
        fresh = [c for c in fn.containers.values() if c.version == fn.version]
        want = self.wanted(fn)
        for _ in range(want - len(fresh)):
            self._place(fn, now)
        surplus = len(fresh) - want
        idle = sorted(
            (c for c in fresh if c.busy == 0 and c.idle_since is not None),
            key=lambda c: (c.backed, c.idle_since),
        )
        for c in idle:
            if surplus <= 0:
                break
            assert c.idle_since is not None
            if now - c.idle_since >= window:
                self._gone(fn, c, now)
                surplus -= 1

    def _place(self, fn: Function, now: float) -> Container:
        resources = fn.first().resources.gpu_config
        gpu = resources.gpu_type if resources.count else "CPU"
        container = Container(
            id=new_id("ta"),
            function_id=fn.id,
            version=fn.version,
            gpu=gpu,
            gpu_count=resources.count,
            placed_at=now,
            ready_at=now + self.options.boot_seconds,
            # Idle from the moment it is up: booting is not idling.
            idle_since=now + self.options.boot_seconds,
        )
        fn.containers[container.id] = container
        app = self.apps[fn.app_id]
        self.segments[container.id] = Segment(app.name, fn.tag, gpu, resources.count, now, None)
        return container

    def _gone(self, fn: Function, container: Container, now: float) -> None:
        fn.containers.pop(container.id, None)
        container.gone_at = now
        segment = self.segments.get(container.id)
        if segment is not None and segment.end is None:
            segment.end = now
        if container.backed and self.processes is not None:
            self.processes.terminate(container.id)

    # ---- requests through the web URL -----------------------------------------------------

    def web_function(self, host: str) -> Function | None:
        """The live web function answering at `<workspace>--<label>`, if any."""
        fn = self.functions.get(self.by_label.get(host, ""))
        if fn is None or fn.data is None or self.apps[fn.app_id].state != "deployed":
            return None
        return fn

    def arrive(self, fn: Function) -> None:
        """A request for `fn` arrived: it counts towards demand until it leaves."""
        fn.requests += 1
        self.tick()

    def assign(self, fn: Function) -> Container | None:
        """A ready container with room for one more input, or None (wait and ask again).

        With inference on, only the function's process-backed container serves; one is
        arranged here (a process started, making room by demoting the least recently used
        idle one) when there is none.
        """
        now = self.clock.now()
        most = fn.first().max_concurrent_inputs or max(fn.per_container(), 1)
        pool = [c for c in fn.containers.values() if c.version == fn.version]
        if self.options.inference:
            backed = next((c for c in pool if c.backed), None)
            if backed is None:
                backed = self._back(fn, pool, now)
            pool = [backed] if backed is not None else []
        for c in sorted(pool, key=lambda c: c.busy):
            if c.ready(now) and c.busy < most:
                c.busy += 1
                c.idle_since = None
                if c.backed and self.processes is not None:
                    self.processes.touch(c.id)
                return c
        return None

    def _back(self, fn: Function, pool: list[Container], now: float) -> Container | None:
        assert self.processes is not None
        if not pool:
            return None
        if not self.processes.has_room():
            victim = self.processes.least_recently_used(self._evictable)
            if victim is None:
                return None
            self._demote(victim)
        container = min(pool, key=lambda c: (c.busy, not c.ready(now)))
        container.backed, container.process_ready = True, False
        self.processes.launch(container, fn, self.secret_env(fn.id))
        return container

    def _evictable(self, container_id: str) -> bool:
        for fn in self.functions.values():
            c = fn.containers.get(container_id)
            if c is not None:
                return c.busy == 0
        return True

    def _demote(self, container_id: str) -> None:
        assert self.processes is not None
        self.processes.terminate(container_id)
        for fn in self.functions.values():
            c = fn.containers.get(container_id)
            if c is not None:
                c.backed = c.process_ready = False

    def leave(self, fn: Function, container: Container | None) -> None:
        """A request finished (or gave up waiting)."""
        fn.requests = max(0, fn.requests - 1)
        if container is not None and container.id in fn.containers:
            container.busy = max(0, container.busy - 1)
            if container.busy == 0:
                container.idle_since = self.clock.now()
        self.tick()

    def process_ready(self, container_id: str) -> None:
        """The real server behind a container answers ready (its model is loaded)."""
        for fn in self.functions.values():
            c = fn.containers.get(container_id)
            if c is not None and c.backed:
                c.process_ready = True
        self._changed()

    def process_exited(self, container_id: str) -> None:
        """A container's process died: the container goes (a new one replaces it)."""
        now = self.clock.now()
        for fn in self.functions.values():
            c = fn.containers.get(container_id)
            if c is not None:
                c.backed = False  # the process is gone already: nothing to terminate
                self._gone(fn, c, now)
        self.tick()

    def stop_containers(self) -> None:
        """Every container goes (their processes are told to stop); used at shutdown."""
        now = self.clock.now()
        for fn in self.functions.values():
            for c in list(fn.containers.values()):
                self._gone(fn, c, now)

    # ---- admin views ----------------------------------------------------------------------

    def billed_seconds(self) -> dict[str, Any]:
        """Billed container seconds per app and function, with GPU-seconds and list-price USD."""
        now = self.clock.now()
        apps: dict[str, dict[str, Any]] = {}
        for segment in self.segments.values():
            seconds = (segment.end if segment.end is not None else now) - segment.start
            row = apps.setdefault(segment.app_name, {}).setdefault(
                segment.tag,
                {"gpu": segment.gpu, "containerSeconds": 0.0, "gpuSeconds": 0.0, "usd": 0.0},
            )
            row["containerSeconds"] += seconds
            row["gpuSeconds"] += seconds * segment.gpu_count
            price = GPU_PRICES.get(segment.gpu)
            row["usd"] = None if price is None else row["usd"] + seconds * segment.gpu_count * price
        return {
            "sandboxOnly": True,
            "prices": {"usdPerGpuSecond": GPU_PRICES, "date": PRICES_DATE, "source": PRICES_SOURCE},
            "apps": apps,
        }

    def describe_state(self) -> dict[str, Any]:
        """Apps, functions (settings, overrides, containers) and secrets' keys, never values."""
        now = self.clock.now()
        apps = []
        for app in sorted(self.apps.values(), key=lambda a: a.created_at):
            functions = {}
            for tag, function_id in app.functions.items():
                fn = self.functions[function_id]
                functions[tag] = self._describe_function(fn, now)
            apps.append(
                {
                    "id": app.id,
                    "name": app.name,
                    "description": app.description,
                    "state": app.state,
                    "environment": app.environment,
                    "deployments": app.deployments,
                    "deploymentTag": app.deployment_tag,
                    "createdAt": rfc3339(app.created_at),
                    "deployedAt": rfc3339(app.deployed_at) if app.deployed_at else None,
                    "functions": functions,
                }
            )
        return {
            "apps": apps,
            "secrets": {sid: sorted(env) for sid, env in self.secrets.items()},
        }

    def _describe_function(self, fn: Function, now: float) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": fn.id,
            "webUrl": fn.web_url,
            "version": fn.version,
            "requests": fn.requests,
            "overrides": json_format.MessageToDict(fn.overrides),
            "overrideResets": fn.override_resets,
            "containers": [
                {
                    "id": c.id,
                    "version": c.version,
                    "gpu": c.gpu,
                    "ready": c.ready(now),
                    "busy": c.busy,
                    "backed": c.backed,
                }
                for c in fn.containers.values()
            ],
        }
        if fn.data is not None:
            first = fn.first()
            body.update(
                {
                    "settings": json_format.MessageToDict(
                        merged(fn.data.autoscaler_settings, fn.overrides)
                    ),
                    "gpus": [
                        f"{r.function.resources.gpu_config.gpu_type}"
                        f":{r.function.resources.gpu_config.count}"
                        for r in fn.data.ranked_functions
                    ],
                    "imageId": first.image_id,
                    "secretIds": list(first.secret_ids),
                    "targetInputs": first.target_concurrent_inputs,
                    "maxInputs": first.max_concurrent_inputs,
                    "wanted": self.wanted(fn),
                }
            )
        return body

    def describe_images(self) -> list[dict[str, Any]]:
        """Every image definition the fake was sent, as JSON (what a test inspects)."""
        return [
            {"id": image_id, "definition": json_format.MessageToDict(image)}
            for image_id, image in self.images.items()
        ]
