"""The pydantic models accept what the CRD accepts and speak camelCase; the D8 table."""

from __future__ import annotations

from typing import Any, get_args

import pytest
from pydantic import ValidationError

from ferry.api import crdgen
from ferry.api.v1alpha1 import platforms, rules, types
from tests.unit.factories import endpoint


def test_backend_specific_fields_have_no_default() -> None:
    spec = endpoint().spec
    assert spec.server.port is None
    assert spec.server.args is None
    assert spec.server.env is None
    assert spec.scaling.target_inflight_requests is None
    assert spec.spot.policy is None
    assert spec.spot.drain_grace_seconds is None
    assert spec.gpu.fallback is None
    # Generic defaults stay.
    assert spec.gpu.count == 1
    assert (spec.scaling.min_replicas, spec.scaling.max_replicas) == (1, 1)
    assert spec.deletion_policy == "Delete"


def test_new_scaling_fields_speak_camel_case() -> None:
    ep = endpoint(
        scaling={
            "minReplicas": 0,
            "maxReplicas": 3,
            "targetQueueDelay": "500ms",
            "scaleDownDelay": "1m30s",
            "scaleUpDelay": "10s",
            "capacityTimeout": "10m",
            "bufferReplicas": 1,
            "autoscaler": "ferry",
        }
    )
    dumped = ep.spec.scaling.model_dump(by_alias=True, exclude_none=True)
    assert dumped == {
        "minReplicas": 0,
        "maxReplicas": 3,
        "targetQueueDelay": "500ms",
        "scaleDownDelay": "1m30s",
        "scaleUpDelay": "10s",
        "bufferReplicas": 1,
        "autoscaler": "ferry",
        "capacityTimeout": "10m",
    }


def test_status_serialises_in_camel_case_without_nulls() -> None:
    status = types.InferenceEndpointStatus(
        observed_generation=2,
        ready_replicas=1,
        openai_base_url="http://x/v1",
        address="http://x/v1",
        resolved_model_version="abc",
        release_number=3,
        running_containers=2,
        surge_replicas=1,
    )
    assert status.model_dump(by_alias=True, exclude_none=True) == {
        "observedGeneration": 2,
        "conditions": [],
        "openaiBaseUrl": "http://x/v1",
        "address": "http://x/v1",
        "readyReplicas": 1,
        "surgeReplicas": 1,
        "runningContainers": 2,
        "resolvedModelVersion": "abc",
        "releaseNumber": 3,
    }


@pytest.mark.parametrize(
    "spec",
    [
        {"gpu": {"type": "B300"}},
        {"scaling": {"minReplicas": -1}},
        {"surprise": True},
        {"scaling": {"scaleDownDelay": "five minutes"}},
        {"scaling": {"scaleDownDelay": "-5s"}},
        {"scaling": {"autoscaler": "keda"}},
        {"spot": {"drainGraceSeconds": 0}},
        {"scaling": {"bufferReplicas": -1}},
    ],
    ids=[
        "unknown-gpu",
        "negative-min",
        "unknown-field",
        "bad-duration",
        "negative-duration",
        "bad-autoscaler",
        "zero-drain",
        "negative-buffer",
    ],
)
def test_bad_specs_are_rejected(spec: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        endpoint(**spec)


def test_provider_config_speaks_the_new_fields() -> None:
    spec = types.ProviderConfigSpec.model_validate(
        {
            "provider": "runpod",
            "credentialsSecretRef": {"name": "rp"},
            "baseUrl": "http://127.0.0.1:1",
            "inferenceBaseUrl": "http://127.0.0.1:2",
            "defaults": {"regions": ["US-TX-3"]},
        }
    )
    assert spec.inference_base_url == "http://127.0.0.1:2"
    assert spec.defaults.regions == ["US-TX-3"]
    for removed in ("spotPolicy", "gpuType", "owner"):
        with pytest.raises(ValidationError):
            types.ProviderConfigSpec.model_validate(
                {"provider": "runpod", "defaults": {removed: "x"}}
            )


def test_credentials_never_print_their_values() -> None:
    from ferry.providers.base import Credentials

    creds = Credentials({"token": "s3cr3t-value"})
    assert "s3cr3t-value" not in repr(creds)
    assert "s3cr3t-value" not in str(creds)
    assert creds.get("token") == "s3cr3t-value"


# --- the D8 table -------------------------------------------------------------------

Y, N = "yes", "rejected"
#: decisions.md D8, transcribed: (field, local, runpod, modal, replicate).
D8: list[tuple[str, str, str, str, str]] = [
    ("model.uri", Y, Y, Y, N),
    ("model.providerRef", N, N, N, Y),
    ("server.image", Y, Y, Y, N),
    ("server.env", Y, Y, Y, N),
    ("server.port", Y, N, N, N),
    ("server.args", Y, N, N, N),
    ("gpu.fallback", Y, Y, Y, N),
    ("scaling.targetInflightRequests", Y, Y, Y, N),
    ("scaling.targetQueueDelay", N, Y, N, N),
    ("scaling.scaleDownDelay", Y, Y, Y, N),
    ("scaling.scaleToZeroAfter", Y, N, N, N),
    ("scaling.scaleUpDelay", Y, N, N, N),
    ("scaling.bufferReplicas", Y, N, Y, N),
    ("scaling.autoscaler", Y, N, N, N),
    ("scaling.capacityTimeout", Y, Y, N, N),
    ("spot", Y, N, N, N),
]
ORDER = ("local", "runpod", "modal", "replicate")


@pytest.mark.parametrize("row", D8, ids=[r[0] for r in D8])
def test_rejections_follow_decision_d8(row: tuple[str, str, str, str, str]) -> None:
    field, *cells = row
    for provider, cell in zip(ORDER, cells, strict=True):
        assert (field in rules.rejected_fields(provider)) is (cell == N), (field, provider)


def test_every_rejected_field_is_in_the_table() -> None:
    listed = {row[0] for row in D8}
    assert {row.field for row in rules.REJECTED} <= listed


def _spec_schema() -> dict[str, Any]:
    spec_model = types.InferenceEndpoint.model_fields["spec"].annotation
    assert isinstance(spec_model, type)
    return crdgen.structural_schema(spec_model)


def _exists(schema: dict[str, Any], path: str) -> bool:
    node = schema
    for part in path.strip(".").split("."):
        props = node.get("properties", {})
        if part not in props:
            return False
        node = props[part]
    return True


def test_every_rule_names_a_field_that_exists() -> None:
    schema = _spec_schema()
    for rule in rules.endpoint_rules():
        assert "fieldPath" in rule, rule
        assert _exists(schema, rule["fieldPath"]), rule["fieldPath"]
        assert "provider" in rule["message"], rule["message"]


def test_rejection_messages_name_field_backend_and_way_out() -> None:
    messages = [r["message"] for r in rules.endpoint_rules()]
    assert (
        "server.port is not supported by the runpod provider (queue workers listen on"
        " nothing); remove it"
    ) in messages


def test_reserved_env_names_are_one_list() -> None:
    rule = rules.reserved_env_rule()
    for name in platforms.RESERVED_ENV_NAMES:
        assert f"'{name}'" in rule["rule"]
    assert rule["fieldPath"] == ".name"
    assert set(platforms.RESERVED_ENV_NAMES) == {
        "FERRY_MODEL",
        "FERRY_PORT",
        "FERRY_DRAIN_GRACE_S",
        "FERRY_PLATFORM",
        "FERRY_ENDPOINT_UID",
    }


def test_gpu_literal_is_the_portable_list() -> None:
    assert get_args(types.GpuType) == platforms.GPU_TYPES
    assert get_args(types.ProviderName) == platforms.PROVIDERS


def test_model_server_image_is_defined_once() -> None:
    from ferry.logic import defaults

    assert defaults.MODEL_SERVER_IMAGE == platforms.MODEL_SERVER_IMAGE
    schema = _spec_schema()
    assert (
        platforms.MODEL_SERVER_IMAGE
        in schema["properties"]["server"]["properties"]["image"]["description"]
    )
