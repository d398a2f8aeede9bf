"""The RunPod mappers: spec -> create body, live state -> diff/PATCH and observation."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import httpx
import pytest

from ferry.api.v1alpha1 import types
from ferry.providers import runpod
from ferry.providers.base import (
    ClientConfig,
    Credentials,
    PermanentProviderError,
    Target,
    TransientProviderError,
)

CATALOGUE = [
    {"id": "NVIDIA GeForce RTX 4090", "name": "RTX 4090", "pool": "ADA_24"},
    {"id": "NVIDIA L4", "name": "L4", "pool": "ADA_24"},
    {"id": "NVIDIA L40", "name": "L40", "pool": "ADA_48_PRO"},
    {"id": "NVIDIA L40S", "name": "L40S", "pool": "ADA_48_PRO"},
    {"id": "NVIDIA RTX 6000 Ada Generation", "name": "RTX 6000 Ada", "pool": "ADA_48_PRO"},
    {"id": "NVIDIA H100 PCIe", "name": "H100 PCIe", "pool": "ADA_80_PRO"},
    {"id": "NVIDIA H100 80GB HBM3", "name": "H100 SXM", "pool": "ADA_80_PRO"},
    {"id": "NVIDIA H100 NVL", "name": "H100 NVL", "pool": "ADA_80_PRO"},
    {"id": "NVIDIA H200", "name": "H200", "pool": None},
]


def target(name: str = "llm", env: tuple[tuple[str, str], ...] = (), **spec: Any) -> Target:
    body: dict[str, Any] = {
        "provider": "runpod",
        "model": {"uri": "hf://acme/tiny", "revision": "v2"},
        "server": {"image": "ghcr.io/ferry-dev/inference-server:0.1.0"},
        "gpu": {"type": "L4"},
        "scaling": {"minReplicas": 1, "maxReplicas": 3},
        "providerConfigRef": {"name": "rp"},
    }
    body.update(spec)
    ep = types.InferenceEndpoint.model_validate(
        {
            "metadata": {"name": name, "namespace": "team-a", "uid": "uid-7"},
            "spec": body,
        }
    )
    return Target(ep, env)


def test_create_body_is_a_queue_endpoint_tagged_with_the_uid() -> None:
    body = runpod.desired(target(env=(("HF_TOKEN", "hf_x"),)), CATALOGUE, ("EU-RO-1",))
    assert body == {
        "name": "ferry-team-a-llm",
        "type": "QUEUE",
        "image": "ghcr.io/ferry-dev/inference-server:0.1.0",
        "env": {
            "HF_TOKEN": "hf_x",
            "FERRY_MODEL": "hf://acme/tiny@v2",
            "FERRY_PLATFORM": "runpod",
            "FERRY_ENDPOINT_UID": "uid-7",
        },
        "gpu": {"pools": ["ADA_24"], "count": 1, "excludedTypes": ["NVIDIA GeForce RTX 4090"]},
        "workers": {"min": 1, "max": 3, "idleTimeout": 60},
        "scaling": {"type": "QUEUE_DELAY", "queueDelay": 4.0},
        "dataCenterIds": ["EU-RO-1"],
    }


@pytest.mark.parametrize(
    ("scaling", "want_scaling", "want_workers"),
    [
        (
            {"targetInflightRequests": 6},
            {"type": "REQUEST_COUNT", "requestCount": 6},
            {"min": 0, "max": 2},
        ),
        (
            {"targetQueueDelay": "500ms", "scaleDownDelay": "2m"},
            {"type": "QUEUE_DELAY", "queueDelay": 0.5},
            {"min": 0, "max": 2, "idleTimeout": 120},
        ),
    ],
    ids=["request-count-has-no-idle-timeout", "queue-delay-with-idle-timeout"],
)
def test_scaler_follows_d2(
    scaling: dict[str, Any], want_scaling: dict[str, Any], want_workers: dict[str, int]
) -> None:
    spec = {"minReplicas": 0, "maxReplicas": 2, **scaling}
    body = runpod.desired(target(scaling=spec), CATALOGUE, ())
    assert (body["scaling"], body["workers"]) == (want_scaling, want_workers)


def test_fallback_cards_join_their_pools_and_only_pool_mates_are_excluded() -> None:
    body = runpod.desired(target(gpu={"type": "L40S", "fallback": ["H100"]}), CATALOGUE, ())
    assert body["gpu"] == {
        "pools": ["ADA_48_PRO", "ADA_80_PRO"],
        "count": 1,
        "excludedTypes": ["NVIDIA L40", "NVIDIA RTX 6000 Ada Generation"],
    }


def test_a_card_in_no_serverless_pool_names_what_is_offered() -> None:
    with pytest.raises(PermanentProviderError) as info:
        runpod.desired(target(gpu={"type": "H200"}), CATALOGUE, ())
    assert info.value.reason == "GPUNotOffered"
    assert "H200" in str(info.value)
    assert "RTX 4090" in str(info.value)


def test_long_names_are_shortened_with_a_hash() -> None:
    name = "a" * 70
    fitted = runpod.endpoint_name(target(name=name))
    assert len(fitted) <= 63
    assert fitted.startswith("ferry-team-a-aaa")
    assert fitted != runpod.endpoint_name(target(name="a" * 69))


def live(**changes: Any) -> dict[str, Any]:
    body = runpod.desired(target(), CATALOGUE, ())
    state = {**copy.deepcopy(body), "id": "abc123", "createdAt": "2026-11-30T00:00:00Z"}
    state.update(changes)
    return state


@pytest.mark.parametrize(
    ("have", "changed", "patch_keys"),
    [
        (live(), [], set()),
        (live(workers={"min": 1, "max": 9, "idleTimeout": 60}), ["workers.max"], {"workers"}),
        (live(image="other:1"), ["image"], {"image"}),
        (
            live(env={"FERRY_MODEL": "hf://acme/tiny@v2"}),
            ["env (values not shown)"],
            {"env"},
        ),
        (
            live(gpu={"pools": ["ADA_24"], "count": 1, "excludedTypes": []}),
            ["gpu.excludedTypes"],
            {"gpu"},
        ),
        (
            live(scaling={"type": "QUEUE_DELAY", "queueDelay": 8}),
            ["scaling"],
            {"scaling", "workers"},
        ),
    ],
    ids=["in-sync", "bounds", "image", "env-drift-restates-tag", "pool-mates", "scaler"],
)
def test_diff_patches_only_what_differs(
    have: dict[str, Any], changed: list[str], patch_keys: set[str]
) -> None:
    want = runpod.desired(target(), CATALOGUE, ())
    got_changed, patch = runpod.diff(want, have)
    assert got_changed == changed
    assert set(patch) == patch_keys
    if "env" in patch:
        assert patch["env"]["FERRY_ENDPOINT_UID"] == "uid-7", "the tag is restated"
    if "gpu" in patch:
        assert "excludedTypes" in patch["gpu"], "pools alone would clear the exclusions"


def summary(stale: int = 0, **counts: int) -> dict[str, Any]:
    """A workers answer with `counts` workers per state (the first `stale` of an old release)."""
    base = {"running": 0, "idle": 0, "initializing": 0, "throttled": 0, "unhealthy": 0}
    base.update(counts)
    base["total"] = sum(base.values())
    rows = [
        {"id": f"w{state}{i}", "status": state.upper(), "isStale": False}
        for state, n in counts.items()
        for i in range(n)
    ]
    for row in rows[:stale]:
        row["isStale"] = True
    return {"workers": rows, "summary": base}


def test_observation_counts_warm_workers_and_builds_both_urls() -> None:
    want = runpod.desired(target(), CATALOGUE, ())
    obs = runpod.observation(live(), summary(running=1, idle=1, initializing=1), want, "http://j")
    assert obs.exists
    assert obs.up_to_date
    assert (obs.ready_replicas, obs.desired_replicas) == (2, 1)
    assert obs.url == "http://j/v2/abc123"
    assert obs.openai_base_url == "http://j/v2/abc123/openai/v1"
    assert obs.problem is None


def test_workers_of_an_older_release_mean_the_rollout_is_not_done() -> None:
    want = runpod.desired(target(), CATALOGUE, ())
    obs = runpod.observation(live(), summary(stale=1, idle=1, initializing=1), want, "http://j")
    assert obs.ready_replicas == 0, "a warm worker of the old image is not ready at the spec"
    assert obs.progressing


def test_throttled_workers_wait_for_capacity_naming_the_pools() -> None:
    want = runpod.desired(target(), CATALOGUE, ())
    obs = runpod.observation(live(), summary(throttled=1), want, "http://j")
    assert obs.problem is not None
    assert (obs.problem.reason, obs.problem.stalled) == ("WaitingForCapacity", False)
    assert "ADA_24" in obs.problem.message


def test_tagged_finds_ferrys_endpoint_by_uid_oldest_first() -> None:
    mine_new = live(id="new", createdAt="2026-11-30T02:00:00Z")
    mine_old = live(id="old", createdAt="2026-11-30T01:00:00Z")
    theirs = live(id="x", env={"FERRY_ENDPOINT_UID": "someone-else"})
    assert runpod.tagged([theirs, mine_new, mine_old], "uid-7") == mine_old
    assert runpod.tagged([theirs], "uid-7") is None


async def test_the_catalogue_is_read_once_per_interval_however_many_ask() -> None:
    reads: list[str] = []

    async def answer(request: httpx.Request) -> httpx.Response:
        reads.append(request.url.path)
        await asyncio.sleep(0)  # let the other callers pile up behind this read
        return httpx.Response(200, json={"gpus": CATALOGUE})

    now = [0.0]
    config = ClientConfig(
        provider="runpod",
        base_url="http://api.test",
        inference_base_url="http://jobs.test",
        credentials=Credentials({"token": "t"}),
        config_name="rp",
        secret_name="rp-token",
        shared_ttl=30.0,
    )
    provider = runpod.RunPodProvider(
        config, transport=httpx.MockTransport(answer), monotonic=lambda: now[0]
    )
    await asyncio.gather(*(provider.catalogue() for _ in range(20)))
    assert reads == ["/v2/catalog/gpus"]
    now[0] = 31.0
    await asyncio.gather(*(provider.catalogue() for _ in range(20)))
    assert len(reads) == 2
    await provider.close()


async def test_an_answer_that_is_not_json_is_said_so_not_crashed() -> None:
    async def proxy_page(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="<html>gateway</html>")

    config = ClientConfig(
        provider="runpod",
        base_url="http://api.test",
        inference_base_url="http://jobs.test",
        credentials=Credentials({"token": "t"}),
        config_name="rp",
        secret_name="rp-token",
    )
    provider = runpod.RunPodProvider(config, transport=httpx.MockTransport(proxy_page))
    with pytest.raises(TransientProviderError) as info:
        await provider.observe(target(), "abc123")
    assert info.value.reason == "UnexpectedAnswer"
    assert "no JSON object" in str(info.value)
    await provider.close()
