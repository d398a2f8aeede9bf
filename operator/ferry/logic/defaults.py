"""The defaults the operator applies per backend (decisions.md D8, D2).

Fields that only some backends honour carry no default in the CRD, so admission can
tell a user's value from a default; the operator reads them through these functions
instead of the raw spec. Each takes the endpoint spec and answers for its provider:
a value where the backend honours the field (the user's, else the backend's default),
None where the backend has no such setting. Pure functions, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ferry.api.v1alpha1 import platforms, types
from ferry.logic import durations

#: Ferry's model-server image: what a modal endpoint runs when `server.image` is unset.
MODEL_SERVER_IMAGE = platforms.MODEL_SERVER_IMAGE
#: The model server's port (local `server.port` default; fixed elsewhere).
SERVER_PORT = 8000
#: local: Ferry's autoscaler target per replica.
TARGET_INFLIGHT_REQUESTS = 8
SPOT_POLICY: types.SpotPolicy = "on-demand"
DRAIN_GRACE_SECONDS = 60
#: local and runpod: how long replicas may wait for capacity before Stalled.
CAPACITY_TIMEOUT_SECONDS = 600.0
#: runpod: the QUEUE_DELAY target when neither scaler field is set.
RUNPOD_QUEUE_DELAY_SECONDS = 4.0
#: runpod: idle timeout under QUEUE_DELAY when `scaleDownDelay` is unset.
RUNPOD_IDLE_TIMEOUT_SECONDS = 60
#: modal: `scaledown_window` when `scaleDownDelay` is unset.
MODAL_SCALEDOWN_WINDOW_SECONDS = 60


def server_image(spec: types.InferenceEndpointSpec) -> str | None:
    """The model-server image: the user's; on modal Ferry's image when unset; None on replicate."""
    if spec.provider == "replicate":
        return None
    if spec.server.image:
        return spec.server.image
    return MODEL_SERVER_IMAGE if spec.provider == "modal" else None


def server_port(spec: types.InferenceEndpointSpec) -> int:
    """The port the model server listens on: `server.port` (local), else 8000."""
    return spec.server.port if spec.server.port is not None else SERVER_PORT


def server_args(spec: types.InferenceEndpointSpec) -> list[str]:
    """Arguments appended to the server's command (local only; empty when unset)."""
    return list(spec.server.args or [])


def server_env(spec: types.InferenceEndpointSpec) -> list[types.EnvVar]:
    """The user's environment variables for the server (empty when unset)."""
    return list(spec.server.env or [])


def gpu_fallback(spec: types.InferenceEndpointSpec) -> list[str]:
    """The fallback GPU types in the user's order (empty when unset)."""
    return list(spec.gpu.fallback or [])


def target_inflight(spec: types.InferenceEndpointSpec) -> int | None:
    """In-flight requests per replica to target.

    local: the user's value, else 8. runpod: the user's value, which selects the
    REQUEST_COUNT scaler (None: QUEUE_DELAY, see `runpod_scaling`). modal: the user's
    value for `@modal.concurrent(target_inputs=…)`, else None (no concurrency
    setting). replicate: None.
    """
    target = spec.scaling.target_inflight_requests
    if spec.provider == "local":
        return target if target is not None else TARGET_INFLIGHT_REQUESTS
    if spec.provider in ("runpod", "modal"):
        return target
    return None


def spot_policy(spec: types.InferenceEndpointSpec) -> types.SpotPolicy:
    """`spot.policy`, else on-demand (every remote backend runs what its platform chooses)."""
    return spec.spot.policy or SPOT_POLICY


def drain_grace_seconds(spec: types.InferenceEndpointSpec) -> int:
    """`spot.drainGraceSeconds`, else 60: the model server's FERRY_DRAIN_GRACE_S."""
    grace = spec.spot.drain_grace_seconds
    return grace if grace is not None else DRAIN_GRACE_SECONDS


def autoscaler(spec: types.InferenceEndpointSpec) -> types.AutoscalerKind:
    """Who sets the replica count on local: Ferry (default) or an external autoscaler."""
    return spec.scaling.autoscaler or "ferry"


def buffer_replicas(spec: types.InferenceEndpointSpec) -> int:
    """Idle replicas kept above demand (local, modal): the user's value, else 0."""
    return spec.scaling.buffer_replicas or 0


def capacity_timeout_seconds(spec: types.InferenceEndpointSpec) -> float | None:
    """How long replicas may wait for GPU capacity before Stalled (local, runpod; 10 m).

    None for modal and replicate, which report no shortage.
    """
    if spec.provider not in ("local", "runpod"):
        return None
    value = durations.optional_seconds(spec.scaling.capacity_timeout)
    return value if value is not None else CAPACITY_TIMEOUT_SECONDS


def scale_down_delay_seconds(spec: types.InferenceEndpointSpec) -> float | None:
    """local: the scale-down window the user set, else None (Ferry's autoscaler decides)."""
    if spec.provider != "local":
        return None
    return durations.optional_seconds(spec.scaling.scale_down_delay)


def scale_up_delay_seconds(spec: types.InferenceEndpointSpec) -> float | None:
    """local: the scale-up window the user set, else None (Ferry's autoscaler decides)."""
    if spec.provider != "local":
        return None
    return durations.optional_seconds(spec.scaling.scale_up_delay)


def scale_to_zero_after_seconds(spec: types.InferenceEndpointSpec) -> float | None:
    """local: idle time before scaling to zero, when set (it needs minReplicas 0)."""
    if spec.provider != "local":
        return None
    return durations.optional_seconds(spec.scaling.scale_to_zero_after)


@dataclass(frozen=True)
class RunPodScaling:
    """A RunPod endpoint's scaler and idle timeout (decisions.md D2)."""

    type: Literal["QUEUE_DELAY", "REQUEST_COUNT"]
    #: QUEUE_DELAY: the target queue wait in seconds (≥ 0.5).
    queue_delay_seconds: float | None
    #: REQUEST_COUNT: in-flight requests per worker.
    request_count: int | None
    #: `workers.idleTimeout` in whole seconds; None under REQUEST_COUNT (RunPod rejects it).
    idle_timeout_seconds: int | None

    def scaling_body(self) -> dict[str, float | int | str]:
        """The `scaling` object of RunPod's REST API."""
        if self.type == "REQUEST_COUNT":
            return {"type": self.type, "requestCount": int(self.request_count or 1)}
        return {"type": self.type, "queueDelay": float(self.queue_delay_seconds or 0.0)}


def runpod_scaling(spec: types.InferenceEndpointSpec) -> RunPodScaling:
    """RunPod's scaler: REQUEST_COUNT when targetInflightRequests is set (no idle
    timeout), else QUEUE_DELAY with targetQueueDelay (4 s by default) and the idle
    timeout from scaleDownDelay (60 s by default), rounded up to whole seconds.
    """
    scaling = spec.scaling
    if scaling.target_inflight_requests is not None:
        return RunPodScaling("REQUEST_COUNT", None, scaling.target_inflight_requests, None)
    delay = durations.optional_seconds(scaling.target_queue_delay)
    idle = (
        durations.whole_seconds(scaling.scale_down_delay)
        if scaling.scale_down_delay is not None
        else RUNPOD_IDLE_TIMEOUT_SECONDS
    )
    return RunPodScaling(
        "QUEUE_DELAY", delay if delay is not None else RUNPOD_QUEUE_DELAY_SECONDS, None, idle
    )


def modal_scaledown_window_seconds(spec: types.InferenceEndpointSpec) -> int:
    """Modal's `scaledown_window`: scaleDownDelay rounded up to whole seconds, else 60."""
    delay = spec.scaling.scale_down_delay
    return durations.whole_seconds(delay) if delay is not None else MODAL_SCALEDOWN_WINDOW_SECONDS
