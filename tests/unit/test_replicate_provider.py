"""The Replicate mappers: providerRef, hardware, names, releases, adoption (D15), errors.

Pure functions only; the client's calls go through the sandbox's Replicate fake in
tests/sandbox/test_replicate_client.py and tests/integration/test_replicate.py.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from pydantic import v1 as pydantic_v1
from replicate.deployment import Deployment
from replicate.exceptions import ReplicateError

from ferry.api.v1alpha1 import types
from ferry.providers.base import (
    ClientConfig,
    Credentials,
    PermanentProviderError,
    Target,
    TransientProviderError,
)
from ferry.providers.replicate import ReplicateProvider
from ferry.providers.replicate import mapping as replicate

TOKEN = "r8_" + "0a1b2c3d4e5f"
V1 = "1" * 64
V2 = "2" * 64


def target(
    name: str = "llm",
    ref: str = "acme/tiny-llm",
    status: dict[str, Any] | None = None,
    annotations: dict[str, str] | None = None,
    deleting: bool = False,
    **spec: Any,
) -> Target:
    body: dict[str, Any] = {
        "provider": "replicate",
        "model": {"providerRef": ref},
        "gpu": {"type": "L40S", "count": 1},
        "scaling": {"minReplicas": 1, "maxReplicas": 4},
        "providerConfigRef": {"name": "rep"},
    }
    body.update(spec)
    meta: dict[str, Any] = {
        "name": name,
        "namespace": "team-a",
        "uid": "uid-7",
        "annotations": annotations or {},
    }
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    ep = types.InferenceEndpoint.model_validate(
        {"metadata": meta, "spec": body, "status": status or {}}
    )
    return Target(ep)


def config(base_url: str = "http://replicate.test", token: str = TOKEN) -> ClientConfig:
    return ClientConfig(
        provider="replicate",
        base_url=base_url,
        inference_base_url=None,
        credentials=Credentials({"token": token}),
        config_name="rep",
        secret_name="rep-token",
        call_timeout=2.0,
        shared_ttl=30.0,
    )


def deployment(
    version: str = V1,
    number: int = 1,
    model: str = "acme/tiny-llm",
    owner: str = "ferry-sandbox",
    created_at: str = "2026-11-30T10:00:00Z",
    **configuration: Any,
) -> dict[str, Any]:
    conf = {"hardware": "gpu-l40s", "min_instances": 1, "max_instances": 4, **configuration}
    return {
        "owner": owner,
        "name": "ferry-team-a-llm",
        "current_release": {
            "number": number,
            "model": model,
            "version": version,
            "created_at": created_at,
            "created_by": {"type": "user", "username": owner, "name": "Ferry"},
            "configuration": conf,
        },
    }


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("acme/tiny-llm", replicate.ModelRef("acme", "tiny-llm", None)),
        (f"acme/tiny-llm:{V1}", replicate.ModelRef("acme", "tiny-llm", V1)),
        ("meta/llama-3.1_8b.x:abc123", replicate.ModelRef("meta", "llama-3.1_8b.x", "abc123")),
    ],
    ids=["unpinned", "pinned", "dots-underscores"],
)
def test_provider_ref_is_model_and_version(text: str, want: replicate.ModelRef) -> None:
    assert replicate.parse_ref(text) == want
    assert want.model == text.split(":")[0]


@pytest.mark.parametrize("text", ["acme", "acme/x/y", "acme/x:", "/x"], ids=str)
def test_a_malformed_provider_ref_is_permanent(text: str) -> None:
    with pytest.raises(PermanentProviderError) as info:
        replicate.parse_ref(text)
    assert info.value.reason == "InvalidModelRef"


def test_deployment_names_are_deterministic_and_fit_63_characters() -> None:
    assert replicate.deployment_name(target()) == "ferry-team-a-llm"
    long = replicate.deployment_name(target(name="a" * 80))
    assert len(long) <= 63
    assert long != replicate.deployment_name(target(name="a" * 79))
    assert replicate.split_name("alice/ferry-x", "bob") == ("alice", "ferry-x")
    assert replicate.split_name("ferry-x", "bob") == ("bob", "ferry-x")


@pytest.mark.parametrize(
    ("gpu", "sku"),
    [
        ({"type": "T4", "count": 1}, "gpu-t4"),
        ({"type": "L40S", "count": 2}, "gpu-l40s-2x"),
        ({"type": "A100-80GB", "count": 1}, "gpu-a100-large"),
        ({"type": "H100", "count": 1}, "gpu-h100"),
    ],
    ids=["t4", "l40s-2x", "a100", "h100"],
)
def test_gpu_type_and_count_map_to_one_sku(gpu: dict[str, Any], sku: str) -> None:
    assert replicate.hardware_sku(target(gpu=gpu)) == sku


def test_a_sku_the_live_list_lacks_names_what_it_offers() -> None:
    listed = [{"sku": "gpu-t4", "name": "Nvidia T4 GPU"}, {"sku": "cpu", "name": "CPU"}]
    replicate.check_offered("gpu-t4", listed, target())
    with pytest.raises(PermanentProviderError) as info:
        replicate.check_offered("gpu-l40s", listed, target())
    assert info.value.reason == "GPUNotOffered"
    assert "gpu-l40s" in str(info.value)
    assert "gpu-t4 (Nvidia T4 GPU)" in str(info.value)


@pytest.mark.parametrize(
    ("ref", "recorded", "deployed", "want"),
    [
        (f"acme/tiny-llm:{V2}", V1, deployment(V1), V2),
        ("acme/tiny-llm", V1, deployment(V2), V1),
        ("acme/tiny-llm", None, deployment(V2), V2),
        ("acme/tiny-llm", None, deployment(V2, model="acme/other"), None),
        ("acme/tiny-llm", None, None, None),
    ],
    ids=["pinned-wins", "status-keeps-it", "deployed-one", "other-model", "resolve-latest"],
)
def test_the_version_is_resolved_once(
    ref: str, recorded: str | None, deployed: dict[str, Any] | None, want: str | None
) -> None:
    assert replicate.wanted_version(replicate.parse_ref(ref), recorded, deployed) == want


@pytest.mark.parametrize(
    ("live", "changed"),
    [
        (deployment(), []),
        (deployment(max_instances=9), ["max_instances"]),
        (deployment(V2, min_instances=0), ["version", "min_instances"]),
        (deployment(hardware="gpu-t4"), ["hardware"]),
    ],
    ids=["same", "drifted-max", "version-and-min", "hardware"],
)
def test_diff_patches_only_what_differs(live: dict[str, Any], changed: list[str]) -> None:
    want = replicate.desired(target(), V1, "gpu-l40s")
    assert want == {"version": V1, "hardware": "gpu-l40s", "min_instances": 1, "max_instances": 4}
    names, patch = replicate.diff(want, live)
    assert names == changed
    assert patch == {k: want[k] for k in changed}


MARK = "2026-11-30T10:00:00Z"


@pytest.mark.parametrize(
    ("live", "pending", "words"),
    [
        (deployment(), MARK, None),
        (deployment(created_at="2026-11-30T09:59:30Z"), MARK, None),
        (deployment(), None, "no create pending"),
        (deployment(owner="mallory"), MARK, "belongs to mallory"),
        (deployment(number=2), MARK, "release 2"),
        (deployment(created_at="2026-11-30T09:50:00Z"), MARK, "before Ferry's create"),
    ],
    ids=["ours", "within-skew", "no-mark", "other-owner", "second-release", "older"],
)
def test_adoption_after_a_lost_create_follows_d15(
    live: dict[str, Any], pending: str | None, words: str | None
) -> None:
    refusal = replicate.adoption_refusal(live, "ferry-sandbox", pending)
    if words is None:
        assert refusal is None
    else:
        assert refusal is not None
        assert words in refusal


def test_observation_gives_release_version_and_url_but_no_counts() -> None:
    ref = replicate.parse_ref("acme/tiny-llm")
    want = replicate.desired(target(), V1, "gpu-l40s")
    seen = replicate.observation(deployment(number=3), want, ref, "http://replicate.test")
    assert seen.exists
    assert seen.up_to_date
    assert seen.external_name == "ferry-sandbox/ferry-team-a-llm"
    assert seen.url == (
        "http://replicate.test/v1/deployments/ferry-sandbox/ferry-team-a-llm/predictions"
    )
    assert seen.openai_base_url is None
    assert seen.ready_replicas is None
    assert seen.desired_replicas is None
    assert seen.release_number == 3
    assert seen.resolved_model_version == V1
    assert seen.detail == "release 3 on gpu-l40s, instances 1-4"
    drifted = replicate.observation(deployment(max_instances=9), want, ref, "http://x")
    assert not drifted.up_to_date
    assert drifted.diff == ["max_instances"]


def test_a_model_change_is_stalled_not_patched() -> None:
    ref = replicate.parse_ref("acme/other")
    want = replicate.desired(target(ref="acme/other"), V1, "gpu-l40s")
    seen = replicate.observation(deployment(V2), want, ref, "http://x")
    assert seen.up_to_date, "nothing to PATCH: a deployment's model cannot change"
    assert seen.problem is not None
    assert seen.problem.reason == "ModelImmutable"
    assert seen.problem.stalled
    assert "acme/tiny-llm" in seen.problem.message
    assert "acme/other" in seen.problem.message


@pytest.mark.parametrize(
    ("refusals", "wait"),
    [(1, 30.0), (2, 60.0), (3, 120.0), (4, 150.0), (9, 150.0)],
    ids=["first", "second", "third", "capped", "stays-capped"],
)
def test_delete_retries_back_off_to_five_poll_intervals(refusals: int, wait: float) -> None:
    assert replicate.offline_wait(refusals, 30.0) == wait


def replicate_error(status: int, detail: str = "said so") -> ReplicateError:
    return ReplicateError(title="Problem", status=status, detail=detail)


def validation_error() -> pydantic_v1.ValidationError:
    try:
        Deployment.parse_obj({"owner": "x", "name": "y", "current_release": {"number": "one"}})
    except pydantic_v1.ValidationError as err:
        return err
    raise AssertionError("the client's model accepted a bad body")


@pytest.mark.parametrize(
    ("exc", "write", "kind", "reason", "maybe_applied"),
    [
        (replicate_error(401), False, PermanentProviderError, "CredentialsRejected", False),
        (replicate_error(403), True, PermanentProviderError, "CredentialsRejected", False),
        (replicate_error(429), False, TransientProviderError, "Throttled", False),
        (replicate_error(503), False, TransientProviderError, "ProviderUnavailable", False),
        (replicate_error(500), True, TransientProviderError, "ProviderUnavailable", True),
        (replicate_error(404), False, replicate.NotFound, "NotFound", False),
        (replicate_error(422), True, replicate.Refused, "InvalidRequest", False),
        (replicate_error(402), True, replicate.Refused, "ProviderRefused", False),
        (validation_error(), False, PermanentProviderError, "UnexpectedAnswer", False),
        (validation_error(), True, TransientProviderError, "UnexpectedAnswer", True),
        (
            json.JSONDecodeError("x", "<html>", 0),
            False,
            PermanentProviderError,
            "UnexpectedAnswer",
            False,
        ),
        (httpx.ConnectError("refused"), True, TransientProviderError, "ProviderUnreachable", False),
        (
            httpx.RemoteProtocolError("cut"),
            True,
            TransientProviderError,
            "ProviderUnreachable",
            True,
        ),
        (httpx.ReadTimeout("slow"), True, TransientProviderError, "ProviderTimeout", True),
        (httpx.ConnectTimeout("slow"), True, TransientProviderError, "ProviderTimeout", False),
        (TimeoutError(), False, TransientProviderError, "ProviderTimeout", False),
    ],
    ids=[
        "401",
        "403",
        "429",
        "503-read",
        "500-write-maybe-applied",
        "404",
        "422",
        "402",
        "bad-body-read",
        "bad-body-write-happened",
        "not-json",
        "connect-refused-unsent",
        "cut-write-maybe-applied",
        "read-timeout-write",
        "connect-timeout-unsent",
        "deadline",
    ],
)
def test_every_client_failure_maps_onto_ferrys_errors(
    exc: BaseException, write: bool, kind: type[Exception], reason: str, maybe_applied: bool
) -> None:
    err = replicate.error_for(
        exc, what="create deployment x", config=config(), write=write, retry_after=7.0
    )
    assert type(err) is kind
    assert err.reason == reason
    assert getattr(err, "maybe_applied", False) is maybe_applied
    assert TOKEN not in str(err)
    assert "create deployment x" in str(err)


def test_rejected_credentials_name_the_secret_and_the_provider_config() -> None:
    err = replicate.error_for(replicate_error(401), what="read", config=config(), write=False)
    assert "Secret rep-token" in str(err)
    assert "ProviderConfig rep" in str(err)


def test_throttling_hands_retry_after_to_the_queue_and_refusals_keep_the_platforms_words() -> None:
    err = replicate.error_for(
        replicate_error(429), what="x", config=config(), write=False, retry_after=30
    )
    assert isinstance(err, TransientProviderError)
    assert err.retry_after == 30
    refused = replicate.error_for(
        replicate_error(409, "still online"), what="x", config=config(), write=True
    )
    assert isinstance(refused, replicate.Refused)
    assert refused.detail == "still online: Problem"


def test_a_base_url_ending_in_v1_is_refused_naming_the_provider_config() -> None:
    with pytest.raises(PermanentProviderError) as info:
        ReplicateProvider(config("https://api.replicate.com/v1"))
    assert info.value.reason == "InvalidBaseUrl"
    assert "ProviderConfig rep" in str(info.value)
