"""The per-backend defaults the operator applies where the CRD has none (D8, D2)."""

from __future__ import annotations

from typing import Any

import pytest

from ferry.api.v1alpha1 import types
from ferry.logic import defaults
from tests.unit.factories import endpoint

REMOTE_BODY: dict[str, dict[str, Any]] = {
    "runpod": {"server": {"image": "ghcr.io/ferry-dev/inference-server:0.1.0"}},
    "modal": {"server": {}},
    "replicate": {"model": {"providerRef": "acme/llm"}, "server": {}},
}


def spec(provider: str = "local", **fields: Any) -> types.InferenceEndpointSpec:
    body: dict[str, Any] = {"provider": provider, **REMOTE_BODY.get(provider, {})}
    if provider != "local":
        body["providerConfigRef"] = {"name": "pc"}
    body.update(fields)
    return endpoint(**body).spec


def test_local_defaults() -> None:
    s = spec()
    assert defaults.server_port(s) == 8000
    assert defaults.server_args(s) == []
    assert defaults.server_env(s) == []
    assert defaults.gpu_fallback(s) == []
    assert defaults.target_inflight(s) == 8
    assert defaults.spot_policy(s) == "on-demand"
    assert defaults.drain_grace_seconds(s) == 60
    assert defaults.capacity_timeout_seconds(s) == 600.0
    assert defaults.autoscaler(s) == "ferry"
    assert defaults.buffer_replicas(s) == 0
    assert defaults.scale_down_delay_seconds(s) is None
    assert defaults.scale_up_delay_seconds(s) is None
    assert defaults.scale_to_zero_after_seconds(s) is None


def test_local_user_values_win() -> None:
    s = spec(
        server={"image": "i", "port": 9000, "args": ["--x"]},
        scaling={
            "minReplicas": 0,
            "maxReplicas": 4,
            "targetInflightRequests": 3,
            "scaleDownDelay": "2m",
            "scaleUpDelay": "15s",
            "scaleToZeroAfter": "10m",
            "capacityTimeout": "90s",
            "bufferReplicas": 1,
            "autoscaler": "ferry",
        },
        spot={"policy": "spot", "drainGraceSeconds": 30},
        gpu={"type": "H100", "fallback": ["A100-80GB"]},
    )
    assert defaults.server_port(s) == 9000
    assert defaults.server_args(s) == ["--x"]
    assert defaults.gpu_fallback(s) == ["A100-80GB"]
    assert defaults.target_inflight(s) == 3
    assert defaults.spot_policy(s) == "spot"
    assert defaults.drain_grace_seconds(s) == 30
    assert defaults.capacity_timeout_seconds(s) == 90.0
    assert defaults.scale_down_delay_seconds(s) == 120.0
    assert defaults.scale_up_delay_seconds(s) == 15.0
    assert defaults.scale_to_zero_after_seconds(s) == 600.0
    assert defaults.buffer_replicas(s) == 1


def test_server_image_per_backend() -> None:
    assert defaults.server_image(spec()) == "ghcr.io/acme/server:1"
    assert defaults.server_image(spec("modal")) == defaults.MODEL_SERVER_IMAGE
    assert defaults.server_image(spec("modal", server={"image": "mine:1"})) == "mine:1"
    assert defaults.server_image(spec("runpod")) == "ghcr.io/ferry-dev/inference-server:0.1.0"
    assert defaults.server_image(spec("replicate")) is None


def test_runpod_queue_delay_by_default() -> None:
    got = defaults.runpod_scaling(spec("runpod"))
    assert got == defaults.RunPodScaling("QUEUE_DELAY", 4.0, None, 60)
    assert got.scaling_body() == {"type": "QUEUE_DELAY", "queueDelay": 4.0}


def test_runpod_queue_delay_and_idle_timeout_from_the_spec() -> None:
    s = spec("runpod", scaling={"targetQueueDelay": "500ms", "scaleDownDelay": "1.5s"})
    assert defaults.runpod_scaling(s) == defaults.RunPodScaling("QUEUE_DELAY", 0.5, None, 2)


def test_runpod_request_count_has_no_idle_timeout() -> None:
    got = defaults.runpod_scaling(spec("runpod", scaling={"targetInflightRequests": 4}))
    assert got == defaults.RunPodScaling("REQUEST_COUNT", None, 4, None)
    assert got.scaling_body() == {"type": "REQUEST_COUNT", "requestCount": 4}


def test_modal_scaledown_window() -> None:
    assert defaults.modal_scaledown_window_seconds(spec("modal")) == 60
    s = spec("modal", scaling={"scaleDownDelay": "2.5s"})
    assert defaults.modal_scaledown_window_seconds(s) == 3


@pytest.mark.parametrize(
    ("provider", "inflight", "want"),
    [
        ("local", None, 8),
        ("runpod", None, None),
        ("runpod", 5, 5),
        ("modal", None, None),
        ("modal", 32, 32),
        ("replicate", None, None),
    ],
)
def test_target_inflight_per_backend(provider: str, inflight: int | None, want: int | None) -> None:
    scaling: dict[str, Any] = {}
    if inflight is not None:
        scaling["targetInflightRequests"] = inflight
    assert defaults.target_inflight(spec(provider, scaling=scaling)) == want


@pytest.mark.parametrize(
    ("provider", "want"),
    [("local", 600.0), ("runpod", 600.0), ("modal", None), ("replicate", None)],
)
def test_capacity_timeout_per_backend(provider: str, want: float | None) -> None:
    assert defaults.capacity_timeout_seconds(spec(provider)) == want


def test_remote_backends_have_no_local_windows() -> None:
    s = spec("modal", scaling={"scaleDownDelay": "5m"})
    assert defaults.scale_down_delay_seconds(s) is None
    assert defaults.scale_up_delay_seconds(s) is None
    assert defaults.scale_to_zero_after_seconds(s) is None
