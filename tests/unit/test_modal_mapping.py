"""The Modal mappers: spec -> deployment, what was read -> plan and observation, errors."""

from __future__ import annotations

from typing import Any

import pytest

from ferry.api.v1alpha1 import types
from ferry.providers.base import (
    ClientConfig,
    Credentials,
    PermanentProviderError,
    Target,
    TransientProviderError,
)
from ferry.providers.modal import mapping

CONFIG = ClientConfig(
    provider="modal",
    base_url="http://127.0.0.1:1",
    inference_base_url=None,
    credentials=Credentials({"tokenId": "ak-1", "tokenSecret": "as-very-secret"}),
    config_name="modal",
    secret_name="modal-token",
)


def target(
    name: str = "llm",
    env: tuple[tuple[str, str], ...] = (),
    status: dict[str, Any] | None = None,
    **spec: Any,
) -> Target:
    body: dict[str, Any] = {
        "provider": "modal",
        "model": {"uri": "hf://acme/tiny", "revision": "v2"},
        "gpu": {"type": "L4"},
        "scaling": {"minReplicas": 1, "maxReplicas": 3},
        "providerConfigRef": {"name": "modal"},
    }
    body.update(spec)
    ep = types.InferenceEndpoint.model_validate(
        {
            "metadata": {"name": name, "namespace": "team-a", "uid": "uid-7", "generation": 4},
            "spec": body,
            "status": status or {},
        }
    )
    return Target(ep, env)


def seen(want: mapping.Deployment, **changes: Any) -> mapping.Seen:
    """What observe reads of a function deployed exactly as `want`, with `changes`."""
    fields: dict[str, Any] = {
        "web_url": "https://ws--ferry-team-a-llm-serve.modal.run",
        "gpus": tuple(want.gpu_pairs()),
        "concurrency": (want.target_inputs, want.max_inputs) if want.target_inputs else None,
        "image_id": "im-1",
        "secret_ids": ("st-1",),
        "autoscaler": want.autoscaler,
        "running_containers": 2,
    }
    fields.update(changes)
    return mapping.Seen(**fields)


def record(want: mapping.Deployment, **changes: Any) -> mapping.Record:
    fields: dict[str, Any] = {
        "key": "an older deploy",
        "image": want.image,
        "env_digest": want.env_digest,
        "image_id": "im-1",
        "secret_ids": ("st-1",),
    }
    fields.update(changes)
    return mapping.Record(**fields)


def test_the_deployment_follows_the_d8_table_and_defaults() -> None:
    want = mapping.desired(
        target(
            env=(("HF_TOKEN", "hf_x"),), gpu={"type": "H100", "count": 2, "fallback": ["A100-80GB"]}
        )
    )
    assert want.app == "ferry-team-a-llm"
    assert want.image == "ghcr.io/ferry-dev/inference-server:0.1.0", "Ferry's image when unset"
    assert dict(want.env) == {
        "HF_TOKEN": "hf_x",
        "FERRY_MODEL": "hf://acme/tiny@v2",
        "FERRY_PLATFORM": "modal",
        "FERRY_ENDPOINT_UID": "uid-7",
    }
    assert want.gpus == ("H100:2", "A100-80GB:2"), "a ranked list, the count on each"
    assert want.gpu_pairs() == [("H100", 2), ("A100-80GB", 2)]
    assert want.target_inputs is None
    assert want.max_inputs is None
    assert want.autoscaler == mapping.Autoscaler(1, 3, 0, 60)
    assert want.generation == 4
    assert "hf_x" not in repr(want), "env values are never printed"


def test_scaling_fields_map_to_modal_settings() -> None:
    want = mapping.desired(
        target(
            server={"image": "ghcr.io/acme/server:2"},
            scaling={
                "minReplicas": 0,
                "maxReplicas": 8,
                "targetInflightRequests": 12,
                "bufferReplicas": 2,
                "scaleDownDelay": "90500ms",
            },
        )
    )
    assert want.image == "ghcr.io/acme/server:2"
    assert (want.target_inputs, want.max_inputs) == (12, 24)
    assert want.autoscaler == mapping.Autoscaler(0, 8, 2, 91), "the window rounds up to seconds"


def test_a_long_endpoint_name_fits_modal_app_names() -> None:
    name = mapping.app_name(target(name="x" * 200))
    assert len(name) <= 63
    assert name.startswith("ferry-team-a-x")
    assert name != mapping.app_name(target(name="x" * 199))


def test_the_key_changes_with_what_a_redeploy_changes_only() -> None:
    base = mapping.desired(target())
    assert mapping.desired(target()).key == base.key
    assert mapping.desired(target(env=(("A", "1"),))).key != base.key
    assert mapping.desired(target(server={"image": "x:2"})).key != base.key
    assert mapping.desired(target(gpu={"type": "T4"})).key != base.key
    scaled = mapping.desired(target(scaling={"minReplicas": 0, "maxReplicas": 9}))
    assert scaled.key == base.key, "bounds go through the live autoscaler, not a redeploy"


@pytest.mark.parametrize(
    ("change", "redeploy", "autoscaler"),
    [
        ({}, (), {}),
        ({"seen": {"gpus": (("A10G", 1),)}}, ("gpu",), {}),
        ({"seen": {"concurrency": (4, 8)}}, ("scaling.targetInflightRequests",), {}),
        ({"record": {"image": "old:1"}}, ("server.image",), {}),
        ({"record": {"env_digest": "0" * 64}}, ("server.env (values not shown)",), {}),
        (
            {"seen": {"secret_ids": ("st-other",)}},
            ("deployment (redeployed outside Ferry)",),
            {},
        ),
        (
            {"seen": {"autoscaler": mapping.Autoscaler(0, None, 0, 60)}},
            (),
            {"min_containers": 1, "max_containers": 3},
        ),
        (
            {"seen": {"autoscaler": mapping.Autoscaler(1, 3, 4, 300)}},
            (),
            {"buffer_containers": 0, "scaledown_window": 60},
        ),
    ],
    ids=[
        "in-line",
        "gpu",
        "concurrency",
        "image",
        "env",
        "redeployed-elsewhere",
        "bounds",
        "buffer-and-window",
    ],
)
def test_plan(
    change: dict[str, Any], redeploy: tuple[str, ...], autoscaler: dict[str, Any]
) -> None:
    want = mapping.desired(target())
    todo = mapping.plan(
        want, seen(want, **change.get("seen", {})), record(want, **change.get("record", {})), False
    )
    assert todo.redeploy == redeploy
    assert dict(todo.autoscaler) == autoscaler
    assert todo.diff == [*redeploy, *(f"autoscaler.{k}" for k in autoscaler)]


READY = {
    "type": "Ready",
    "status": "True",
    "reason": "Available",
    "lastTransitionTime": "2026-01-01T00:00:00Z",
    "observedGeneration": 4,
}
READY_AT_4: dict[str, Any] = {"observedGeneration": 4, "conditions": [READY]}


@pytest.mark.parametrize(
    ("status", "is_settled"),
    [
        (READY_AT_4, True),
        ({**READY_AT_4, "observedGeneration": 3}, False),
        (
            {
                "observedGeneration": 4,
                "conditions": [{**READY, "status": "False"}],
            },
            False,
        ),
        ({}, False),
    ],
    ids=["ready-at-this-generation", "older-generation", "not-ready", "no-status"],
)
def test_without_a_record_only_a_settled_endpoint_is_trusted(
    status: dict[str, Any], is_settled: bool
) -> None:
    t = target(status=status)
    want = mapping.desired(t)
    assert mapping.settled(t.endpoint) is is_settled
    todo = mapping.plan(want, seen(want), None, mapping.settled(t.endpoint))
    assert bool(todo.redeploy) is not is_settled


def test_the_observation_reports_urls_and_containers_but_no_ready_count() -> None:
    want = mapping.desired(target())
    obs = mapping.observation(want, seen(want), mapping.Plan())
    assert obs.exists
    assert obs.up_to_date
    assert obs.external_name == "ferry-team-a-llm"
    assert obs.url == "https://ws--ferry-team-a-llm-serve.modal.run"
    assert obs.openai_base_url == "https://ws--ferry-team-a-llm-serve.modal.run/v1"
    assert obs.running_containers == 2
    assert obs.ready_replicas is None
    assert obs.desired_replicas is None


def test_a_deploy_in_flight_is_progressing_and_keeps_the_last_urls() -> None:
    want = mapping.desired(target())
    last = mapping.observation(want, seen(want), mapping.Plan())
    obs = mapping.deploying("ferry-team-a-llm", "2026-01-01T00:00:00Z", last)
    assert obs.up_to_date
    assert obs.problem is not None
    assert obs.problem.reason == "Deploying"
    assert not obs.problem.stalled
    assert obs.openai_base_url == last.openai_base_url


@pytest.mark.parametrize(
    ("status", "kind", "reason", "retry_after"),
    [
        ("UNAUTHENTICATED", PermanentProviderError, "CredentialsRejected", None),
        ("PERMISSION_DENIED", PermanentProviderError, "CredentialsRejected", None),
        ("RESOURCE_EXHAUSTED", TransientProviderError, "Throttled", 7.0),
        ("UNAVAILABLE", TransientProviderError, "ProviderUnavailable", None),
        ("INTERNAL", TransientProviderError, "ProviderUnavailable", None),
        (None, TransientProviderError, "ProviderUnavailable", None),
        ("INVALID_ARGUMENT", PermanentProviderError, "InvalidRequest", None),
        ("UNIMPLEMENTED", PermanentProviderError, "ProviderRefused", None),
    ],
)
def test_errors(status: str | None, kind: type, reason: str, retry_after: float | None) -> None:
    err = mapping.error_for(status, "detail", 7.0 if retry_after else None, "read function", CONFIG)
    assert isinstance(err, kind)
    assert err.reason == reason
    if isinstance(err, TransientProviderError):
        assert err.retry_after == retry_after
    if reason == "CredentialsRejected":
        assert "Secret modal-token" in str(err)
        assert "ProviderConfig modal" in str(err)
    assert "as-very-secret" not in str(err)


def test_what_modal_reports_differently_after_deploying_this_spec_is_not_redeployed() -> None:
    want = mapping.desired(target())
    odd = seen(want, gpus=(("L4", 2),))
    todo = mapping.plan(want, odd, record(want, key=want.key), False)
    assert todo.redeploy == ()
    assert todo.mismatch == ("gpu",)
    obs = mapping.observation(want, odd, todo)
    assert obs.up_to_date
    assert obs.problem is not None
    assert obs.problem.reason == "DeployedStateDiffers"
    assert obs.problem.stalled


def test_ids_are_compared_only_where_modal_reports_them() -> None:
    want = mapping.desired(target())
    todo = mapping.plan(want, seen(want, image_id="", secret_ids=()), record(want), False)
    assert todo.diff == []
