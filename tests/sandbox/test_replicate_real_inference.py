"""Real predictions behind the Replicate fake: Ferry's cog predictor (`inference-server/
replicate/predict.py`) in real processes, set up and called as cog would, reached with the
real `replicate` client (D7).

Needs the inference server's venv (`make -C inference-server venv`); without it the sandbox
refuses to start and these tests fail, saying so. The instance's cold boot is stepped on the
fake's clock; the predictor's own setup takes real seconds.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.sandbox.conftest import Sandbox, launch, server_python_flags
from tests.sandbox.test_replicate_fake import Rep


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Sandbox, Rep]]:
    sb = launch(
        tmp_path_factory.mktemp("real-replicate"),
        "--inference", "on", "--max-processes", "1", "--speed", "0",
        "--validate-responses", *server_python_flags(),
    )  # fmt: skip
    rep = Rep(json.loads(sb.urls_file.read_text())["replicate"])
    yield sb, rep
    rep.close()
    assert sb.stop() == 0, sb.log()


def processes(rep: Rep) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = rep.admin("GET", "/state").json()["processes"]
    return found


def wait_for(check: Callable[[], bool], what: str, sb: Sandbox, limit: float = 120) -> None:
    deadline = time.monotonic() + limit
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen in {limit}s:\n{sb.log()}")
        time.sleep(0.1)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except (ProcessLookupError, OSError):
        return False


def predict(rep: Rep, sb: Sandbox, deployment: str, prompt: str) -> dict[str, Any]:
    """A prediction through the deployment, stepping the cold boot on the fake's clock."""
    made = rep.client.deployments.predictions.create(
        f"ferry-sandbox/{deployment}", input={"prompt": prompt, "max_tokens": 6, "seed": 1}
    )
    assert made.status == "starting"
    rep.advance(60)  # the instance's cold boot, on the sandbox clock
    result: dict[str, Any] = {}

    def finished() -> bool:
        result.update(rep.http.get(f"/v1/predictions/{made.id}").json())
        return result["status"] in ("succeeded", "failed", "canceled", "aborted")

    wait_for(finished, f"prediction {made.id} finishing", sb)
    return result


def test_a_prediction_through_a_deployment_returns_real_tokens(
    real: tuple[Sandbox, Rep],
) -> None:
    sb, rep = real
    rep.create("chat", max_instances=1)
    time.sleep(0.5)
    assert processes(rep) == [], "no prediction yet: no process (D7)"
    done = predict(rep, sb, "chat", "Hello")
    assert done["status"] == "succeeded", done
    assert isinstance(done["output"], list)
    assert all(isinstance(token, str) for token in done["output"])
    assert "".join(done["output"]).strip(), "the predictor generated text"
    assert done["metrics"]["predict_time"] >= 0
    [process] = processes(rep)
    assert alive(process["pid"])
    again = rep.client.deployments.predictions.create(
        "ferry-sandbox/chat", input={"prompt": "Hello", "max_tokens": 6, "seed": 1}, wait=60
    )
    assert again.status == "succeeded", "a warm instance answers within Prefer: wait"
    assert again.output == done["output"], "the same seed gives the same tokens"


def test_the_cap_stops_the_least_recently_used_process(real: tuple[Sandbox, Rep]) -> None:
    sb, rep = real
    rep.admin("POST", "/reset").raise_for_status()
    wait_for(lambda: processes(rep) == [], "the reset stopping processes", sb)
    rep.create("a", max_instances=1)
    rep.create("b", max_instances=1)
    assert predict(rep, sb, "a", "hi")["status"] == "succeeded"
    [first] = processes(rep)
    assert predict(rep, sb, "b", "hi")["status"] == "succeeded"
    [second] = processes(rep)  # --max-processes 1: a's process went first
    assert second["key"] != first["key"]
    wait_for(lambda: not alive(first["pid"]), "a's process exiting", sb, limit=30)


def test_stopping_the_sandbox_leaves_no_predictor_processes(
    start_sandbox: Callable[..., Sandbox],
) -> None:
    sb = start_sandbox("--inference", "on", "--replicate-boot-seconds", "0", *server_python_flags())
    rep = Rep(json.loads(sb.urls_file.read_text())["replicate"])
    rep.create("stop", max_instances=1)
    done = rep.client.deployments.predictions.create(
        "ferry-sandbox/stop", input={"prompt": "hi", "max_tokens": 2}, wait=60
    )
    assert done.status == "succeeded", done.error
    pids = [p["pid"] for p in processes(rep)]
    assert pids
    assert all(alive(pid) for pid in pids)
    rep.close()
    assert sb.stop() == 0
    assert not any(alive(pid) for pid in pids), json.dumps(pids)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{rep.api}/_sandbox")
