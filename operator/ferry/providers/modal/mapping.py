"""Pure mapping between an InferenceEndpoint and a Modal deployment: no `modal` import, no I/O.

- `desired(target)` is the deployment Ferry wants: an app named for the endpoint with one
  web function, `serve`, running the model server's ASGI factory on `server.image`, its GPUs
  (Ferry's portable names as Modal's ranked list), its concurrency (`@modal.concurrent`) and
  its autoscaler settings, the env travelling as one Modal secret (D8 table, D19).
- `plan(...)` compares that with what observe read (`Seen`) and with what Ferry's own last
  deploy made (`Record`): image, env, GPU and concurrency changes need a redeploy; bound and
  delay changes go through the live autoscaler.
- `observation(...)` is what Ferry reports (D1 URLs, D17: containers, never a ready count).
- `error_for(...)` turns a gRPC status from Modal into Ferry's error tree.

Modal returns neither an image reference nor a secret's values, so image and env cannot be
read back: the provider remembers, per endpoint, the image, an env digest and the object ids
its last deploy produced (`Record`), and a live function whose ids differ was redeployed by
someone else. After an operator restart there is no record: the deployed function is taken to
match the spec when the endpoint's own status says it was Ready at its current generation
(`settled`, the state D13 records on the endpoint); otherwise it is redeployed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from ferry.api.v1alpha1 import platforms, types
from ferry.logic import conditions, defaults, gpus, naming, serverenv
from ferry.providers.base import (
    ClientConfig,
    Observation,
    PermanentProviderError,
    Problem,
    ProviderError,
    Target,
    TransientProviderError,
)

NAME = "modal"
PLATFORM = "Modal"
DEFAULT_API = platforms.PLATFORM_BASE_URLS[NAME]
#: The web function's name within the app.
FUNCTION = "serve"
#: What the function runs in the container: the model server's ASGI factory (D17: the app's
#: lifespan starts loading the model when the container starts).
SERVER_MODULE = "ferry_server.providers.modal_app"
SERVER_FACTORY = "asgi_app"
#: Longest a request (and the container's start-up) may take, seconds.
FUNCTION_TIMEOUT_S = 600

#: gRPC statuses Modal's client itself retries; Ferry retries them on the next reconcile.
TRANSIENT = frozenset({"UNAVAILABLE", "INTERNAL", "UNKNOWN", "DEADLINE_EXCEEDED", "CANCELLED"})


def app_name(target: Target) -> str:
    """The app's deterministic name: `ferry-<namespace>-<name>`, ≤ 63 lowercase letters, digits
    and dashes (a hash suffix when shortened), which Modal's app names (≤ 64, `_` and `.` too)
    accept as is."""
    return naming.platform_name(target.namespace, target.name)


def env_for(target: Target) -> dict[str, str]:
    """The server's environment: the user's (Secret values resolved), then Ferry's own names.

    All of it goes to Modal as one secret attached to the function, never into the image."""
    return serverenv.platform_env(target.endpoint.spec, NAME, target.uid, target.env)


def digest(env: Mapping[str, str]) -> str:
    """A digest of env values: kept in memory to notice a change, never shown."""
    return hashlib.sha256(json.dumps(sorted(env.items())).encode()).hexdigest()


@dataclass(frozen=True)
class Autoscaler:
    """Modal's live autoscaler settings (`fn.autoscaler.update` names); max None = no limit."""

    min_containers: int
    max_containers: int | None
    buffer_containers: int
    scaledown_window: int

    def changes(self, seen: Autoscaler) -> dict[str, int | None]:
        """The settings that differ from `seen`, as `fn.autoscaler.update` keyword arguments."""
        return {key: value for key, value in vars(self).items() if getattr(seen, key) != value}


@dataclass(frozen=True)
class Deployment:
    """The Modal deployment Ferry wants for one endpoint."""

    app: str
    image: str
    env: Mapping[str, str] = field(repr=False)
    #: Modal `gpu=` strings in rank order (`H100:2` for two per container).
    gpus: tuple[str, ...]
    #: `@modal.concurrent(target_inputs=…)`; None when the spec sets no target.
    target_inputs: int | None
    autoscaler: Autoscaler
    generation: int

    @property
    def env_digest(self) -> str:
        return digest(self.env)

    @property
    def max_inputs(self) -> int | None:
        """`@modal.concurrent(max_inputs=…)`: twice the target (D8)."""
        return 2 * self.target_inputs if self.target_inputs else None

    @property
    def key(self) -> str:
        """Everything a redeploy would change, in one string (no values shown: a digest)."""
        gpu = ",".join(self.gpus)
        parts = [self.app, self.image, self.env_digest, gpu, str(self.target_inputs)]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()

    def gpu_pairs(self) -> list[tuple[str, int]]:
        """The ranked GPUs as Modal reports them back: (TYPE, count)."""
        pairs = []
        for gpu in self.gpus:
            kind, _, count = gpu.partition(":")
            pairs.append((kind.upper(), int(count or 1)))
        return pairs


def desired(target: Target) -> Deployment:
    """The deployment for `target` (the D8 table's modal column)."""
    spec = target.endpoint.spec
    image = defaults.server_image(spec) or defaults.MODEL_SERVER_IMAGE
    return Deployment(
        app=app_name(target),
        image=image,
        env=env_for(target),
        gpus=tuple(gpus.modal_gpus([spec.gpu.type, *defaults.gpu_fallback(spec)], spec.gpu.count)),
        target_inputs=defaults.target_inflight(spec),
        autoscaler=Autoscaler(
            min_containers=spec.scaling.min_replicas,
            max_containers=spec.scaling.max_replicas,
            buffer_containers=defaults.buffer_replicas(spec),
            scaledown_window=defaults.modal_scaledown_window_seconds(spec),
        ),
        generation=target.endpoint.metadata.generation or 0,
    )


@dataclass(frozen=True)
class Record:
    """What Ferry's last deploy of an endpoint made, kept in memory by the provider."""

    key: str
    image: str
    env_digest: str
    image_id: str
    secret_ids: tuple[str, ...]


@dataclass(frozen=True)
class Seen:
    """One observe's reads: the function (hydrated), its autoscaler settings, its stats."""

    web_url: str
    gpus: tuple[tuple[str, int], ...]
    #: (target_inputs, max_inputs), None when the function has no concurrency setting.
    concurrency: tuple[int | None, int | None] | None
    image_id: str
    secret_ids: tuple[str, ...]
    autoscaler: Autoscaler
    running_containers: int


@dataclass(frozen=True)
class Plan:
    """What an update must do: redeploy (and why), and/or change live autoscaler settings."""

    redeploy: tuple[str, ...] = ()
    autoscaler: Mapping[str, int | None] = field(default_factory=dict)
    #: Fields Modal reports differently from what Ferry's last deploy of this very spec sent:
    #: deploying again would loop, so they are reported instead.
    mismatch: tuple[str, ...] = ()

    @property
    def diff(self) -> list[str]:
        return [*self.redeploy, *(f"autoscaler.{key}" for key in self.autoscaler)]


def settled(endpoint: types.InferenceEndpoint) -> bool:
    """True when the endpoint's status says Ferry saw it deployed at its current generation."""
    generation = endpoint.metadata.generation
    ready = next((c for c in endpoint.status.conditions if c.type == conditions.READY), None)
    return (
        ready is not None
        and ready.status == "True"
        and generation is not None
        and ready.observed_generation == generation
        and endpoint.status.observed_generation == generation
    )


def readable_diff(want: Deployment, seen: Seen) -> list[str]:
    """Redeploy fields the function's own data shows: its GPUs and its concurrency."""
    changed = []
    if list(seen.gpus) != want.gpu_pairs():
        changed.append("gpu")
    concurrency = (want.target_inputs, want.max_inputs) if want.target_inputs else None
    if seen.concurrency != concurrency:
        changed.append("scaling.targetInflightRequests")
    return changed


def plan(want: Deployment, seen: Seen, record: Record | None, is_settled: bool) -> Plan:
    """What to change so that the deployment `seen` (and `record`) matches `want`.

    The ids Ferry's deploy got back are compared only where Modal reports them on both sides.
    """
    readable = readable_diff(want, seen)
    redeploy: list[str] = []
    if record is None:
        if not is_settled:
            redeploy.append("deployment (not known to match this generation)")
    else:
        if record.image != want.image:
            redeploy.append("server.image")
        if record.env_digest != want.env_digest:
            redeploy.append("server.env (values not shown)")
        ids = (record.image_id, record.secret_ids)
        live = (seen.image_id, seen.secret_ids)
        if all(ids) and all(live) and ids != live:
            redeploy.append("deployment (redeployed outside Ferry)")
    autoscaler = want.autoscaler.changes(seen.autoscaler)
    if readable and not redeploy and record is not None and record.key == want.key:
        return Plan((), autoscaler, tuple(readable))
    return Plan((*readable, *redeploy), autoscaler)


def observation(want: Deployment, seen: Seen, todo: Plan) -> Observation:
    """What Ferry reports of a deployed function: its URLs and running containers (D1, D17)."""
    problem = None
    if todo.mismatch:
        problem = Problem(
            "DeployedStateDiffers",
            f"Modal reports {', '.join(todo.mismatch)} of app {want.app} differently from what"
            " Ferry deployed for this spec; not deploying it again (check the app on Modal)",
        )
    return Observation(
        exists=True,
        up_to_date=not todo.diff,
        external_name=want.app,
        url=seen.web_url or None,
        openai_base_url=f"{seen.web_url}/v1" if seen.web_url else None,
        desired_replicas=None,
        ready_replicas=None,
        diff=todo.diff,
        problem=problem,
        running_containers=seen.running_containers,
    )


def deploying(app: str, since: str, last: Observation | None) -> Observation:
    """A deploy in flight (D13): up to date as far as the reconciler goes, Ready waits."""
    return Observation(
        exists=True,
        up_to_date=True,
        external_name=app,
        url=last.url if last else None,
        openai_base_url=last.openai_base_url if last else None,
        desired_replicas=None,
        ready_replicas=None,
        running_containers=last.running_containers if last else None,
        problem=Problem("Deploying", f"deploying app {app} on Modal (started {since})", False),
    )


def error_for(
    status: str | None,
    message: str,
    retry_after: float | None,
    what: str,
    config: ClientConfig,
) -> ProviderError:
    """Ferry's error for a failed Modal call: `status` is the gRPC status name (None: no answer
    at all), `retry_after` the server's RPCRetryPolicy hint, `what` names the call."""
    detail = message.strip().rstrip(".") or status or "no detail"
    if status in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
        return PermanentProviderError(
            f"{PLATFORM} rejected the credentials in Secret {config.secret_name} of"
            f" ProviderConfig {config.config_name} ({status}) for {what}; put a valid token id"
            " and secret in that Secret",
            reason="CredentialsRejected",
        )
    if status == "RESOURCE_EXHAUSTED":
        return TransientProviderError(
            f"{PLATFORM} is throttling requests ({what}); retrying"
            + (f" in {retry_after:.0f}s" if retry_after is not None else ""),
            retry_after=retry_after,
            reason="Throttled",
        )
    if status is None or status in TRANSIENT or status == "NOT_FOUND":
        return TransientProviderError(
            f"{PLATFORM} failed {what}: {detail}",
            retry_after=retry_after,
            reason="ProviderUnavailable",
        )
    return PermanentProviderError(
        f"{PLATFORM} refused {what} ({status}): {detail}",
        reason="InvalidRequest" if status != "UNIMPLEMENTED" else "ProviderRefused",
    )
