"""Real inference behind the Modal fake: the factory a deploy names
(`ferry_server.providers.modal_app:asgi_app`) served in real processes, reached through the
function's web URL with the official `openai` client, lazily and capped (D7).

Deploys go through Ferry's provider and the real `modal` client. Needs the inference server's
venv (`make -C inference-server venv`); without it the sandbox refuses to start and these
tests fail, saying so.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from ferry.api.v1alpha1 import types
from ferry.providers.base import ClientConfig, Credentials, Target
from ferry.providers.modal import ModalProvider
from tests.sandbox.conftest import Sandbox, server_python_flags

AUTH = "bearer-sandbox-0c7e"


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    from tests.sandbox.conftest import launch

    sb = launch(
        tmp_path_factory.mktemp("modal-real"),
        "--inference", "on", "--max-processes", "1", "--modal-boot-seconds", "1",
        *server_python_flags(),
    )  # fmt: skip
    yield sb
    assert sb.stop() == 0, sb.log()


def target(name: str) -> Target:
    ep = types.InferenceEndpoint.model_validate(
        {
            "metadata": {"name": name, "namespace": "sb", "uid": f"uid-{name}", "generation": 1},
            "spec": {
                "provider": "modal",
                "model": {"uri": "hf://org/tiny-llama", "revision": "main"},
                "gpu": {"type": "L4"},
                "scaling": {"minReplicas": 0, "maxReplicas": 1},
                "providerConfigRef": {"name": "modal"},
            },
        }
    )
    return Target(ep, (("FERRY_AUTH_TOKEN", AUTH),))


async def deploy(provider: ModalProvider, t: Target) -> str:
    await provider.create(t, None)
    for _ in range(500):
        seen = await provider.observe(t, f"ferry-sb-{t.name}")
        if seen.problem is None and seen.openai_base_url:
            return seen.openai_base_url
        await asyncio.sleep(0.02)
    raise AssertionError("the deploy did not finish")


def processes(entry: dict[str, Any], sb: Sandbox) -> list[dict[str, Any]]:
    state = httpx.get(
        f"{entry['admin']}/state", headers={"Authorization": f"Bearer {entry['token']}"}
    ).json()
    found: list[dict[str, Any]] = state["processes"]
    return found


async def test_scale_from_zero_is_a_real_process_streaming_tokens_capped_lru(real: Sandbox) -> None:
    entry = json.loads(real.urls_file.read_text())["modal"]
    provider = ModalProvider(
        ClientConfig(
            provider="modal",
            base_url=entry["api"],
            inference_base_url=None,
            credentials=Credentials(entry["credentials"]),
            config_name="modal",
            secret_name="modal-token",
            call_timeout=10.0,
        )
    )
    try:
        first = await deploy(provider, target("one"))
        assert processes(entry, real) == [], "no request yet: no process (D7)"
        async with openai.AsyncOpenAI(base_url=first, api_key=AUTH, timeout=300) as client:
            stream = await client.chat.completions.create(
                model="org/tiny-llama",
                messages=[{"role": "user", "content": "Hello"}],
                max_tokens=6,
                stream=True,
                extra_body={"ignore_eos": True},
            )
            pieces = [c.choices[0].delta.content async for c in stream if c.choices]
        assert len([p for p in pieces if p]) >= 1
        (one,) = processes(entry, real)

        second = await deploy(provider, target("two"))
        async with openai.AsyncOpenAI(base_url=second, api_key=AUTH, timeout=300) as client:
            reply = await client.completions.create(
                model="org/tiny-llama", prompt="Hi", max_tokens=4, extra_body={"ignore_eos": True}
            )
        assert reply.usage is not None
        assert reply.usage.completion_tokens == 4
        (two,) = processes(entry, real)
        assert two["key"] != one["key"], "one process at a time: the idle one made room"
    finally:
        await provider.close()
