"""Real inference behind the RunPod fake: the inference server's RunPod worker, in real
processes, under the real `runpod` SDK loop, reached with the official `openai` client (D7).

Needs the inference server's venv (`make -C inference-server venv`); without it the sandbox
refuses to start and these tests fail, saying so.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.sandbox.conftest import Sandbox, endpoint_body, server_python_flags


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    from tests.sandbox.conftest import launch

    sb = launch(
        tmp_path_factory.mktemp("real"),
        "--inference", "on", "--max-processes", "1", "--boot-seconds", "1",
        "--validate-responses", *server_python_flags(),
    )  # fmt: skip
    yield sb
    assert sb.stop() == 0, sb.log()


def processes(sb: Sandbox) -> list[dict[str, Any]]:
    state: list[dict[str, Any]] = sb.admin("GET", "/state").json()["processes"]
    return state


def wait_for(check: Callable[[], bool], what: str, sb: Sandbox, limit: float = 120) -> None:
    deadline = time.monotonic() + limit
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen in {limit}s:\n{sb.log()}")
        time.sleep(0.1)


def test_openai_client_gets_real_tokens_from_a_lazily_started_worker(real: Sandbox) -> None:
    ep = real.api.post(
        "/v2/serverless",
        json=endpoint_body(env={"FERRY_MODEL": "hf://org/tiny-llama@main", "FERRY_DEVICE": "cpu"}),
    ).json()
    time.sleep(0.5)
    assert processes(real) == []  # no request yet: no process (D7)
    client = openai.OpenAI(
        base_url=f"{real.jobs_url}/v2/{ep['id']}/openai/v1", api_key=real.token, timeout=180
    )
    chat = client.chat.completions.create(
        model="org/tiny-llama",
        messages=[{"role": "user", "content": "hello"}],
        max_tokens=5,
        temperature=0,
        extra_body={"ignore_eos": True},
    )
    assert chat.usage is not None
    assert chat.usage.completion_tokens == 5
    assert isinstance(chat.choices[0].message.content, str)
    assert chat.choices[0].message.content
    assert chat.model == "org/tiny-llama"  # the endpoint's model name, served by the tiny model
    [proc] = processes(real)
    assert proc["state"] == "running"
    workers = real.api.get(f"/v2/serverless/{ep['id']}/workers").json()["workers"]
    assert [w["id"] for w in workers] == [proc["key"]]
    assert workers[0]["status"] in ("IDLE", "RUNNING")

    stream = client.chat.completions.create(
        model="org/tiny-llama",
        messages=[{"role": "user", "content": "hello"}],
        max_tokens=5,
        temperature=0,
        stream=True,
        extra_body={"ignore_eos": True},
    )
    chunks = [c for c in stream if c.choices]
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == chat.choices[0].message.content  # greedy: the same tokens, streamed
    assert chunks[-1].choices[0].finish_reason == "length"

    models = client.models.list()
    assert [m.id for m in models.data] == ["org/tiny-llama"]
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.completions.create(model="org/tiny-llama", prompt="x", max_tokens=10**6)

    native = real.jobs.post(
        f"/v2/{ep['id']}/runsync",
        json={"input": {"prompt": "hello", "max_tokens": 3, "ignore_eos": True}},
    ).json()
    assert native["status"] == "COMPLETED", native
    assert native["output"][0]["usage"]["completion_tokens"] == 3
    assert native["delayTime"] >= 0
    assert native["executionTime"] > 0


def test_the_cap_stops_the_least_recently_used_process(real: Sandbox) -> None:
    real.admin("POST", "/reset").raise_for_status()
    wait_for(lambda: processes(real) == [], "the reset stopping processes", real)
    a = real.api.post("/v2/serverless", json=endpoint_body(name="a")).json()
    b = real.api.post("/v2/serverless", json=endpoint_body(name="b")).json()
    job = {"input": {"prompt": "hi", "max_tokens": 2}}
    first = real.jobs.post(f"/v2/{a['id']}/runsync", json=job).json()
    assert first["status"] == "COMPLETED", first
    [proc_a] = processes(real)
    second = real.jobs.post(f"/v2/{b['id']}/runsync", json=job).json()
    assert second["status"] == "COMPLETED", second
    [proc_b] = processes(real)  # --max-processes 1: a's process went first
    assert proc_b["key"] != proc_a["key"]
    b_workers = real.api.get(f"/v2/serverless/{b['id']}/workers").json()["workers"]
    assert proc_b["key"] in [w["id"] for w in b_workers]
    wait_for(lambda: not _alive(proc_a["pid"]), "a's process exiting", real, limit=30)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def test_stopping_the_sandbox_leaves_no_worker_processes(
    start_sandbox: Callable[..., Sandbox],
) -> None:
    sb = start_sandbox("--inference", "on", "--boot-seconds", "0", *server_python_flags())
    ep = sb.api.post("/v2/serverless", json=endpoint_body()).json()
    done = sb.jobs.post(
        f"/v2/{ep['id']}/runsync", json={"input": {"prompt": "hi", "max_tokens": 2}}
    ).json()
    assert done["status"] == "COMPLETED", done
    pids = [p["pid"] for p in processes(sb)]
    assert pids
    assert all(_alive(pid) for pid in pids)
    assert sb.stop() == 0
    assert not any(_alive(pid) for pid in pids), json.dumps(pids)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{sb.api_url}/_sandbox")
