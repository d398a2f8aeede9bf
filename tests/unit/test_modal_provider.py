"""The Modal provider: the real `modal` client over real gRPC to the sandbox's Modal fake,
in-process on a loopback port with its clock frozen.

What is real: the pinned `modal` client (its deploy, hydrate, autoscaler and stats calls, its
retries and idempotency keys), grpclib on both sides, the fake's state machine. Nothing is
mocked; faults are the fake's own.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from ferry.api.v1alpha1 import types
from ferry.providers.base import (
    ClientConfig,
    Credentials,
    Observation,
    PermanentProviderError,
    Target,
    TransientProviderError,
)
from ferry.providers.modal import ModalProvider
from ferry.sandbox.clock import SandboxClock
from ferry.sandbox.faults import FaultSpec
from ferry.sandbox.modal.app import ModalConfig, ModalSandbox
from ferry.sandbox.modal.platform import HEARTBEAT_TIMEOUT_S

RPC = "/modal.client.ModalClient/"
TOKEN = "as-sandbox-secret-7c1"
HF_TOKEN = "hf_do_not_leak_5e2a"


@pytest.fixture(scope="module")
async def fake() -> AsyncIterator[ModalSandbox]:
    sandbox = ModalSandbox(ModalConfig(token=TOKEN, inference=False), SandboxClock(speed=0))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    sock.setblocking(False)
    sandbox.set_urls(f"http://127.0.0.1:{sock.getsockname()[1]}", "http://127.0.0.1:9")
    await sandbox.start_grpc(sock)
    yield sandbox
    await sandbox.close()


@pytest.fixture
async def modal_fake(fake: ModalSandbox) -> ModalSandbox:
    await fake.reset()
    return fake


@pytest.fixture
async def connect(modal_fake: ModalSandbox) -> AsyncIterator[Callable[..., ModalProvider]]:
    made: list[ModalProvider] = []

    def make(secret: str = TOKEN, call_timeout: float = 2.0) -> ModalProvider:
        provider = ModalProvider(
            ClientConfig(
                provider="modal",
                base_url=modal_fake.api_url,
                inference_base_url=None,
                credentials=Credentials(
                    {"tokenId": modal_fake.config.token_id, "tokenSecret": secret}
                ),
                config_name="modal",
                secret_name="modal-token",
                call_timeout=call_timeout,
            )
        )
        made.append(provider)
        return provider

    yield make
    for provider in made:
        await provider.close()


def target(status: dict[str, Any] | None = None, generation: int = 1, **spec: Any) -> Target:
    body: dict[str, Any] = {
        "provider": "modal",
        "model": {"uri": "hf://acme/tiny"},
        "gpu": {"type": "L4", "fallback": ["A10G"]},
        "scaling": {"minReplicas": 1, "maxReplicas": 3, "targetInflightRequests": 4},
        "providerConfigRef": {"name": "modal"},
    }
    body.update(spec)
    ep = types.InferenceEndpoint.model_validate(
        {
            "metadata": {
                "name": "llm",
                "namespace": "team-a",
                "uid": "uid-7",
                "generation": generation,
            },
            "spec": body,
            "status": status or {},
        }
    )
    return Target(ep, (("HF_TOKEN", HF_TOKEN),))


APP = "ferry-team-a-llm"


def fault(fake: ModalSandbox, rpc: str, **spec: Any) -> None:
    """Arm a fault on one RPC of the fake."""
    fake.faults.add(FaultSpec(method="POST", route=RPC + rpc, **spec))


def calls(fake: ModalSandbox, rpc: str) -> int:
    return fake.calls.get("POST", RPC + rpc)


def function_state(fake: ModalSandbox) -> dict[str, Any]:
    (app,) = [a for a in fake.platform.describe_state()["apps"] if a["state"] == "deployed"]
    serve: dict[str, Any] = app["functions"]["serve"]
    return serve


async def settled(provider: ModalProvider, t: Target) -> Observation:
    """Observe until no deploy is in flight (the deploy is a task on the fake's sockets)."""
    for _ in range(200):
        seen = await provider.observe(t, APP)
        if seen.problem is None:
            return seen
        await asyncio.sleep(0.02)
    raise AssertionError("the deploy did not finish")


async def deployed(connect: Callable[..., ModalProvider], t: Target) -> ModalProvider:
    provider = connect()
    assert not (await provider.observe(t, None)).exists
    assert await provider.create(t, None) == APP
    await settled(provider, t)
    return provider


async def test_create_deploys_the_spec_and_reports_both_urls(
    modal_fake: ModalSandbox, connect: Callable[..., ModalProvider]
) -> None:
    t = target()
    provider = connect()
    assert await provider.observe(t, None) == Observation.absent()
    await provider.create(t, None)
    deploying = await provider.observe(t, APP)
    assert deploying.exists
    assert deploying.problem is not None
    assert deploying.problem.reason == "Deploying"
    seen = await settled(provider, t)
    assert seen.up_to_date
    assert seen.url == "http://127.0.0.1:9/sandbox--ferry-team-a-llm-serve"
    assert seen.openai_base_url == f"{seen.url}/v1"
    assert seen.running_containers == 1, "min_containers 1"
    assert seen.ready_replicas is None
    fn = function_state(modal_fake)
    assert fn["gpus"] == ["L4:1", "A10G:1"]
    assert (fn["targetInputs"], fn["maxInputs"]) == (4, 8)
    assert fn["settings"] == {
        "minContainers": 1,
        "maxContainers": 3,
        "bufferContainers": 0,
        "scaledownWindow": 60,
    }
    (secret_id,) = fn["secretIds"]
    assert modal_fake.platform.secrets[secret_id] == {
        "HF_TOKEN": HF_TOKEN,
        "FERRY_MODEL": "hf://acme/tiny",
        "FERRY_PLATFORM": "modal",
        "FERRY_ENDPOINT_UID": "uid-7",
    }
    images = str(modal_fake.platform.describe_images())
    assert "FROM ghcr.io/ferry-dev/inference-server:0.1.0" in images
    assert HF_TOKEN not in images, "env travels as a secret, never in the image definition"
    assert "uid-7" not in images


async def test_steady_state_is_three_reads_and_no_writes(
    modal_fake: ModalSandbox, connect: Callable[..., ModalProvider]
) -> None:
    t = target(status=None)
    provider = await deployed(connect, t)
    modal_fake.calls.reset()
    for _ in range(3):
        assert (await provider.observe(t, APP)).up_to_date
    rows: list[dict[str, Any]] = modal_fake.calls.describe()["calls"]  # type: ignore[assignment]
    counts = {row["route"].removeprefix(RPC): row["count"] for row in rows}
    assert counts == {
        "FunctionGet": 3,
        "FunctionGetSchedulingParams": 3,
        "FunctionGetCurrentStats": 3,
    }


async def test_a_deploy_in_flight_reads_nothing(
    modal_fake: ModalSandbox, connect: Callable[..., ModalProvider]
) -> None:
    fault(modal_fake, "AppPublish", kind="delay", delay_seconds=0.5)
    t = target()
    provider = connect()
    await provider.create(t, None)
    for _ in range(5):
        assert (await provider.observe(t, APP)).problem is not None
    assert calls(modal_fake, "FunctionGet") == 0
    await settled(provider, t)


async def test_bounds_change_is_one_autoscaler_update_and_no_redeploy(
    modal_fake: ModalSandbox, connect: Callable[..., ModalProvider]
) -> None:
    provider = await deployed(connect, target())
    publishes = calls(modal_fake, "AppPublish")
    updates = calls(modal_fake, "FunctionUpdateSchedulingParams")
    scaled = target(scaling={"minReplicas": 0, "maxReplicas": 6, "targetInflightRequests": 4})
    seen = await provider.observe(scaled, APP)
    assert seen.diff == ["autoscaler.min_containers", "autoscaler.max_containers"]
    await provider.update(scaled, seen)
    assert (await provider.observe(scaled, APP)).up_to_date
    assert calls(modal_fake, "FunctionUpdateSchedulingParams") == updates + 1
    assert calls(modal_fake, "AppPublish") == publishes
    settings = function_state(modal_fake)["settings"]
    assert (settings["minContainers"], settings["maxContainers"]) == (0, 6)


async def test_image_change_redeploys_and_puts_the_autoscaler_back(
    modal_fake: ModalSandbox, connect: Callable[..., ModalProvider]
) -> None:
    bounds = {"minReplicas": 1, "maxReplicas": 5, "targetInflightRequests": 4}
    provider = await deployed(connect, target())
    scaled = target(scaling=bounds)
    await provider.update(scaled, await provider.observe(scaled, APP))
    resets = function_state(modal_fake)["overrideResets"]
    publishes = calls(modal_fake, "AppPublish")
    updates = calls(modal_fake, "FunctionUpdateSchedulingParams")

    image = target(scaling=bounds, server={"image": "ghcr.io/ferry-dev/inference-server:0.2.0"})
    seen = await provider.observe(image, APP)
    assert seen.diff == ["server.image"]
    await provider.update(image, seen)
    assert (await settled(provider, image)).up_to_date
    fn = function_state(modal_fake)
    assert calls(modal_fake, "AppPublish") == publishes + 1
    assert fn["overrideResets"] == resets + 1, "the redeploy wiped the live overrides"
    assert calls(modal_fake, "FunctionUpdateSchedulingParams") == updates + 1, "then Ferry's again"
    assert fn["settings"]["maxContainers"] == 5
    assert len([a for a in modal_fake.platform.apps.values() if a.name == APP]) == 1


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ({"gpu": {"type": "H100", "count": 2}}, "gpu"),
        (
            {"scaling": {"minReplicas": 1, "maxReplicas": 3, "targetInflightRequests": 9}},
            "scaling.targetInflightRequests",
        ),
    ],
    ids=["gpu", "concurrency-target"],
)
async def test_gpu_and_concurrency_changes_redeploy(
    modal_fake: ModalSandbox,
    connect: Callable[..., ModalProvider],
    spec: dict[str, Any],
    why: str,
) -> None:
    provider = await deployed(connect, target())
    changed = target(**spec)
    seen = await provider.observe(changed, APP)
    assert seen.diff == [why]
    await provider.update(changed, seen)
    assert (await settled(provider, changed)).up_to_date


async def test_env_change_redeploys_without_showing_values(
    modal_fake: ModalSandbox, connect: Callable[..., ModalProvider]
) -> None:
    provider = await deployed(connect, target())
    rotated = Target(target().endpoint, (("HF_TOKEN", "hf_rotated_value"),))
    seen = await provider.observe(rotated, APP)
    assert seen.diff == ["server.env (values not shown)"]
    await provider.update(rotated, seen)
    await settled(provider, rotated)
    (secret_id,) = function_state(modal_fake)["secretIds"]
    assert modal_fake.platform.secrets[secret_id]["HF_TOKEN"] == "hf_rotated_value"


async def test_drift_is_seen_and_put_back(
    modal_fake: ModalSandbox, connect: Callable[..., ModalProvider]
) -> None:
    from modal_proto import api_pb2

    t = target()
    provider = await deployed(connect, t)
    fn = modal_fake.platform.deployed_function(APP, "serve", "")
    modal_fake.platform.update_settings(fn.id, api_pb2.AutoscalerSettings(max_containers=9))
    seen = await provider.observe(t, APP)
    assert seen.diff == ["autoscaler.max_containers"]
    await provider.update(t, seen)
    assert (await provider.observe(t, APP)).up_to_date

    modal_fake.platform.stop_app(modal_fake.platform.deployed[("main", APP)])
    assert not (await provider.observe(t, APP)).exists, "stopped behind Ferry's back: re-create"


async def test_a_redeploy_by_someone_else_is_undone(
    modal_fake: ModalSandbox, connect: Callable[..., ModalProvider]
) -> None:
    t = target()
    provider = await deployed(connect, t)
    other = connect()  # a second client deploys the same app again
    await other.create(t, APP)
    await settled(other, t)
    seen = await provider.observe(t, APP)
    assert seen.diff == ["deployment (redeployed outside Ferry)"]
    assert (await other.observe(t, APP)).up_to_date


@pytest.mark.parametrize(
    ("ready_at_this_generation", "redeploys"),
    [(True, 0), (False, 1)],
    ids=["settled-is-trusted", "unsettled-is-redeployed"],
)
async def test_after_a_restart_the_endpoint_status_decides(
    modal_fake: ModalSandbox,
    connect: Callable[..., ModalProvider],
    ready_at_this_generation: bool,
    redeploys: int,
) -> None:
    await deployed(connect, target())
    ready = {
        "observedGeneration": 1,
        "conditions": [
            {
                "type": "Ready",
                "status": "True" if ready_at_this_generation else "False",
                "reason": "Available" if ready_at_this_generation else "Deploying",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
                "observedGeneration": 1,
            }
        ],
    }
    restarted = connect()  # a new operator process: no record of the deploy
    t = target(status=ready)
    publishes = calls(modal_fake, "AppPublish")
    seen = await restarted.observe(t, APP)
    if seen.diff:
        await restarted.update(t, seen)
        await settled(restarted, t)
    assert calls(modal_fake, "AppPublish") == publishes + redeploys
    assert (await restarted.observe(t, APP)).up_to_date


async def test_delete_stops_the_app_and_a_missing_app_is_success(
    modal_fake: ModalSandbox, connect: Callable[..., ModalProvider]
) -> None:
    t = target()
    provider = await deployed(connect, t)
    await provider.delete(t, APP)
    assert not (await provider.observe(t, APP)).exists
    stops = calls(modal_fake, "AppStop")
    await provider.delete(t, APP)
    assert calls(modal_fake, "AppStop") == stops, "nothing to stop"


async def test_rejected_credentials_name_the_secret_and_leak_nothing(
    modal_fake: ModalSandbox, connect: Callable[..., ModalProvider]
) -> None:
    provider = connect(secret="as-wrong-4f1d")
    with pytest.raises(PermanentProviderError) as err:
        await provider.observe(target(), None)
    assert err.value.reason == "CredentialsRejected"
    assert "Secret modal-token" in str(err.value)
    assert "ProviderConfig modal" in str(err.value)
    assert "as-wrong-4f1d" not in str(err.value)


async def test_throttling_is_handed_back_with_the_server_hint(
    modal_fake: ModalSandbox, connect: Callable[..., ModalProvider]
) -> None:
    fault(modal_fake, "FunctionGet", kind="rate_limit", retry_after_seconds=30, count=None)
    with pytest.raises(TransientProviderError) as err:
        await connect().observe(target(), APP)
    assert err.value.reason == "Throttled"
    assert err.value.retry_after == 30
    assert calls(modal_fake, "FunctionGet") == 1, "Modal's client did not wait and retry itself"


async def test_an_unavailable_storm_fails_after_a_bounded_number_of_calls(
    modal_fake: ModalSandbox, connect: Callable[..., ModalProvider]
) -> None:
    fault(modal_fake, "FunctionGet", kind="status", status=503, count=None)
    with pytest.raises(TransientProviderError) as err:
        await connect(call_timeout=10).observe(target(), APP)
    assert err.value.reason == "ProviderUnavailable"
    assert calls(modal_fake, "FunctionGet") == 4, "one call and Modal's three retries"


async def test_a_slow_server_is_cut_off_at_the_call_timeout(
    modal_fake: ModalSandbox, connect: Callable[..., ModalProvider]
) -> None:
    fault(modal_fake, "FunctionGet", kind="delay", delay_seconds=60)
    with pytest.raises(TransientProviderError) as err:
        await connect(call_timeout=0.5).observe(target(), APP)
    assert err.value.reason == "ProviderTimeout"


async def test_a_refused_deploy_stalls_until_the_spec_changes(
    modal_fake: ModalSandbox, connect: Callable[..., ModalProvider]
) -> None:
    fault(modal_fake, "FunctionCreate", kind="status", status=400)
    t = target()
    provider = connect()
    await provider.create(t, None)
    refused: PermanentProviderError | None = None
    for _ in range(200):
        try:
            await provider.observe(t, APP)
        except PermanentProviderError as err:
            refused = err
            break
        await asyncio.sleep(0.02)
    assert refused is not None, "the refused deploy was never reported"
    assert refused.reason == "InvalidRequest"
    before = modal_fake.calls.total()
    with pytest.raises(PermanentProviderError):
        await provider.observe(t, APP)
    assert modal_fake.calls.total() == before, "the same spec is not deployed again"
    fixed = target(server={"image": "ghcr.io/ferry-dev/inference-server:0.2.0"})
    assert not (await provider.observe(fixed, APP)).exists
    await provider.create(fixed, APP)
    assert (await settled(provider, fixed)).up_to_date


async def test_a_lost_reply_is_replayed_by_idempotency_key(
    modal_fake: ModalSandbox, connect: Callable[..., ModalProvider]
) -> None:
    fault(modal_fake, "AppCreate", kind="lose_response", hold_seconds=0.2)
    t = target()
    provider = connect()
    await provider.create(t, None)
    assert (await settled(provider, t)).up_to_date
    assert calls(modal_fake, "AppCreate") == 2, "Modal's client retried the lost call"
    assert len(modal_fake.platform.apps) == 1, "the retry got the stored reply: one app"


async def test_killed_mid_deploy_leaves_one_app(
    modal_fake: ModalSandbox, connect: Callable[..., ModalProvider]
) -> None:
    fault(modal_fake, "FunctionCreate", kind="delay", delay_seconds=30)
    t = target()
    dying = connect()
    await dying.create(t, None)
    for _ in range(200):
        if calls(modal_fake, "FunctionCreate"):
            break
        await asyncio.sleep(0.02)
    await dying.close()  # the operator process goes; its deploy task with it
    restarted = connect()
    assert not (await restarted.observe(t, APP)).exists
    await restarted.create(t, APP)
    assert (await settled(restarted, t)).up_to_date
    modal_fake.platform.advance(HEARTBEAT_TIMEOUT_S + 1)
    states = sorted(a.state for a in modal_fake.platform.apps.values())
    assert states == ["deployed", "stopped"], "the abandoned deploy's app is stopped by Modal"
    assert list(modal_fake.platform.deployed) == [("main", APP)]


async def test_the_provider_config_url_wins_and_the_process_env_is_left_as_it_was(
    modal_fake: ModalSandbox,
    connect: Callable[..., ModalProvider],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MODAL_SERVER_URL", "http://127.0.0.1:1")  # nothing listens there
    assert not (await connect().observe(target(), None)).exists, "answered by the fake"
    assert os.environ["MODAL_SERVER_URL"] == "http://127.0.0.1:1"


def test_the_function_sent_is_a_reference_to_the_servers_factory_not_code() -> None:
    from modal._serialization import serialize

    from ferry.providers.modal.client import ServerFactory
    from ferry.sandbox.modal.inference import factory_reference

    sent = serialize(ServerFactory())
    assert factory_reference(sent) == ("ferry_server.providers.modal_app", "asgi_app")
    assert b"co_code" not in sent
    assert len(sent) < 200, "names only: no body, no closure"
    with pytest.raises(ModuleNotFoundError, match="ferry_server"):
        pickle.loads(sent)  # resolved where the model server is installed: in the image
