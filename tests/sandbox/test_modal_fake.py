"""The Modal fake over real sockets: `python -m ferry.sandbox` (inference off, clock frozen),
its gRPC API driven by grpclib stubs and by the real `modal` client (through Ferry's provider),
its web port by HTTP.

Status details are decoded with the `modal` client's own codec, so "carries a retry policy"
means "Modal's client would see one".
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from modal._utils.grpc_utils import custom_detail_codec
from modal_proto import api_grpc, api_pb2

from ferry.api.v1alpha1 import types
from ferry.providers.base import ClientConfig, Credentials, Target
from ferry.providers.modal import ModalProvider
from ferry.sandbox.__main__ import main
from tests.sandbox.conftest import Sandbox

RPC = "/modal.client.ModalClient/"


class Modal:
    """The Modal entry of a running sandbox: a gRPC stub and the admin routes."""

    def __init__(self, entry: dict[str, Any]) -> None:
        self.entry = entry
        api = urlparse(entry["api"])
        self.channel = Channel(api.hostname, api.port, status_details_codec=custom_detail_codec)
        self.stub = api_grpc.ModalClientStub(self.channel)
        self.admin_url = entry["admin"]
        self.metadata = {
            "x-modal-token-id": entry["credentials"]["tokenId"],
            "x-modal-token-secret": entry["credentials"]["tokenSecret"],
        }

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(
            method,
            f"{self.admin_url}{path}",
            headers={"Authorization": f"Bearer {self.entry['token']}"},
            timeout=30.0,
            **kwargs,
        )

    def calls(self, rpc: str) -> int:
        for row in self.admin("GET", "/calls").json()["calls"]:
            if row["route"] == RPC + rpc:
                return int(row["count"])
        return 0

    def fault(self, rpc: str, **spec: Any) -> None:
        self.admin("POST", "/faults", json={"method": "POST", "route": RPC + rpc, **spec})


@pytest.fixture
async def modal(sandbox_session: Sandbox) -> AsyncIterator[Modal]:
    entry = json.loads(sandbox_session.urls_file.read_text())["modal"]
    fake = Modal(entry)
    fake.admin("POST", "/reset").raise_for_status()
    yield fake
    fake.channel.close()


def provider(fake: Modal) -> ModalProvider:
    return ModalProvider(
        ClientConfig(
            provider="modal",
            base_url=fake.entry["api"],
            inference_base_url=None,
            credentials=Credentials(fake.entry["credentials"]),
            config_name="modal",
            secret_name="modal-token",
            call_timeout=5.0,
        )
    )


def target(min_replicas: int = 1) -> Target:
    ep = types.InferenceEndpoint.model_validate(
        {
            "metadata": {"name": "llm", "namespace": "sb", "uid": "uid-1", "generation": 1},
            "spec": {
                "provider": "modal",
                "model": {"uri": "hf://acme/tiny"},
                "gpu": {"type": "T4"},
                "scaling": {"minReplicas": min_replicas, "maxReplicas": 2, "scaleDownDelay": "10s"},
                "providerConfigRef": {"name": "modal"},
            },
        }
    )
    return Target(ep, (("HF_TOKEN", "hf_sandbox_secret_1"),))


async def deploy(fake: Modal, t: Target) -> ModalProvider:
    p = provider(fake)
    await p.create(t, None)
    for _ in range(300):
        if (await p.observe(t, "ferry-sb-llm")).problem is None:
            return p
        await asyncio.sleep(0.02)
    raise AssertionError("the deploy did not finish")


async def test_an_rpc_the_fake_does_not_implement_says_so_and_is_counted(modal: Modal) -> None:
    with pytest.raises(GRPCError) as err:
        await modal.stub.SandboxList(api_pb2.SandboxListRequest(), metadata=modal.metadata)
    assert err.value.status is Status.UNIMPLEMENTED
    assert "SandboxList" in (err.value.message or "")
    assert modal.calls("SandboxList") == 1


@pytest.mark.parametrize(
    "metadata",
    [{}, {"x-modal-token-id": "ak-ferry-sandbox", "x-modal-token-secret": "wrong"}],
    ids=["no-token", "wrong-secret"],
)
async def test_tokens_are_checked(modal: Modal, metadata: dict[str, str]) -> None:
    with pytest.raises(GRPCError) as err:
        await modal.stub.AppCreate(api_pb2.AppCreateRequest(description="x"), metadata=metadata)
    assert err.value.status is Status.UNAUTHENTICATED


async def test_a_repeated_idempotency_key_replays_the_stored_reply(modal: Modal) -> None:
    request = api_pb2.AppCreateRequest(description="ferry-sb-llm")
    first = await modal.stub.AppCreate(
        request, metadata={**modal.metadata, "x-idempotency-key": "k-1"}
    )
    again = await modal.stub.AppCreate(
        request, metadata={**modal.metadata, "x-idempotency-key": "k-1"}
    )
    other = await modal.stub.AppCreate(
        request, metadata={**modal.metadata, "x-idempotency-key": "k-2"}
    )
    assert first.app_id == again.app_id != other.app_id
    assert len(modal.admin("GET", "/state").json()["apps"]) == 2


async def test_a_lost_reply_is_applied_then_replayed_to_the_retry(modal: Modal) -> None:
    modal.fault("AppCreate", kind="lose_response", holdSeconds=0.2)
    meta = {**modal.metadata, "x-idempotency-key": "k-lost"}
    request = api_pb2.AppCreateRequest(description="ferry-sb-llm")
    with pytest.raises(GRPCError) as err:
        await modal.stub.AppCreate(request, metadata=meta)
    assert err.value.status is Status.DEADLINE_EXCEEDED
    assert len(modal.admin("GET", "/state").json()["apps"]) == 1, "it took effect"
    retry = await modal.stub.AppCreate(request, metadata=meta)
    (app,) = modal.admin("GET", "/state").json()["apps"]
    assert retry.app_id == app["id"]


async def test_throttling_is_resource_exhausted_with_modals_retry_policy(modal: Modal) -> None:
    modal.fault("FunctionGet", kind="rate_limit", retryAfterSeconds=5)
    with pytest.raises(GRPCError) as err:
        await modal.stub.FunctionGet(
            api_pb2.FunctionGetRequest(app_name="a", object_tag="serve"), metadata=modal.metadata
        )
    assert err.value.status is Status.RESOURCE_EXHAUSTED
    assert [type(d).__name__ for d in err.value.details or ()] == ["RPCRetryPolicy"]
    assert err.value.details[0].retry_after_secs == 5  # type: ignore[index]


@pytest.mark.parametrize(
    ("http", "grpc"),
    [(503, Status.UNAVAILABLE), (500, Status.INTERNAL), (504, Status.DEADLINE_EXCEEDED)],
)
async def test_status_faults_are_the_matching_grpc_codes(
    modal: Modal, http: int, grpc: Status
) -> None:
    modal.fault("FunctionGet", kind="status", status=http)
    with pytest.raises(GRPCError) as err:
        await modal.stub.FunctionGet(
            api_pb2.FunctionGetRequest(app_name="a", object_tag="serve"), metadata=modal.metadata
        )
    assert err.value.status is grpc


async def test_a_deployed_function_scales_on_the_clock_and_bills(modal: Modal) -> None:
    p = await deploy(modal, target(min_replicas=1))
    try:
        (app,) = modal.admin("GET", "/state").json()["apps"]
        fn = app["functions"]["serve"]
        assert [c["ready"] for c in fn["containers"]] == [False], "booting on the frozen clock"
        modal.admin("POST", "/clock", json={"advanceSeconds": 1}).raise_for_status()
        fn = modal.admin("GET", "/state").json()["apps"][0]["functions"]["serve"]
        assert [c["ready"] for c in fn["containers"]] == [True]

        modal.admin(
            "PATCH", "/apps/ferry-sb-llm/functions/serve/autoscaler", json={"minContainers": 0}
        ).raise_for_status()
        modal.admin("POST", "/clock", json={"advanceSeconds": 10}).raise_for_status()
        fn = modal.admin("GET", "/state").json()["apps"][0]["functions"]["serve"]
        assert fn["containers"] == [], "idle past the 10 s scale-down window, min 0"
        billed = modal.admin("GET", "/billing").json()["apps"]["ferry-sb-llm"]["serve"]
        assert billed["gpu"] == "T4"
        assert billed["containerSeconds"] == pytest.approx(11, abs=0.5)

        images = modal.admin("GET", "/images").text
        assert "hf_sandbox_secret_1" not in images
        assert "hf_sandbox_secret_1" not in modal.admin("GET", "/state").text

        modal.admin("POST", "/apps/ferry-sb-llm/stop").raise_for_status()
        assert not (await p.observe(target(), "ferry-sb-llm")).exists
    finally:
        await p.close()


async def test_a_web_url_answers_from_a_container_and_says_no_model_ran(modal: Modal) -> None:
    p = await deploy(modal, target(min_replicas=0))
    try:
        url = (await p.observe(target(0), "ferry-sb-llm")).openai_base_url
        assert url is not None
        async with httpx.AsyncClient(timeout=30) as http:
            unknown = await http.get(f"{modal.entry['web']}/sandbox--nothing/v1/models")
            assert unknown.status_code == 404
            pending = asyncio.create_task(http.get(f"{url}/models"))
            for _ in range(100):  # scale from zero: a container is placed for the request
                fn = modal.admin("GET", "/state").json()["apps"][0]["functions"]["serve"]
                if fn["containers"]:
                    break
                await asyncio.sleep(0.02)
            assert not pending.done(), "it waits for the container to boot"
            modal.admin("POST", "/clock", json={"advanceSeconds": 1}).raise_for_status()
            answer = await pending
        assert answer.status_code == 503
        assert "inference off" in answer.json()["error"]
    finally:
        await p.close()


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--modal-port", "70000"], "--modal-port"),
        (["--modal-port", "18090", "--modal-web-port", "18090"], "must differ"),
        (["--modal-boot-seconds", "-1"], "--modal-boot-seconds"),
    ],
    ids=["port-range", "same-port", "boot-seconds"],
)
def test_bad_modal_flags_exit_2_with_a_sentence(
    argv: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert words in err
    assert "Traceback" not in err


def test_the_banner_and_urls_file_name_the_modal_fake(sandbox_session: Sandbox) -> None:
    entry = json.loads(sandbox_session.urls_file.read_text())["modal"]
    assert entry["api"].startswith("http://127.0.0.1:")
    assert entry["admin"] == f"{entry['web']}/_sandbox"
    assert set(entry["credentials"]) == {"tokenId", "tokenSecret"}
    log = sandbox_session.log()
    assert f"Modal API     {entry['api']}" in log
    assert f"admin         {entry['admin']}" in log
