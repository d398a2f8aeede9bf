"""Fixtures: `python -m ferry.sandbox` as a real process on random ports, driven over HTTP.

`sandbox` (session) runs with inference off, the clock frozen (speed 0, stepped through
`POST /_sandbox/clock`) and every management answer checked against the published spec (an
off-spec answer is a 500, which fails the test that got it). Each test starts from
`POST /_sandbox/reset`. `start_sandbox` starts further instances with other flags.
`FERRY_SANDBOX_SERVER_PYTHON` overrides the inference server's Python for inference-on runs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Sandbox:
    """A running sandbox process and clients for its three surfaces."""

    proc: subprocess.Popen[bytes]
    log_path: Path
    urls_file: Path
    api_url: str = ""
    jobs_url: str = ""
    token: str = ""
    clients: list[httpx.Client] = field(default_factory=list)
    cached: dict[str, httpx.Client] = field(default_factory=dict)

    def client(self, base: str, **kwargs: Any) -> httpx.Client:
        headers = kwargs.pop("headers", {"Authorization": f"Bearer {self.token}"})
        c = httpx.Client(
            base_url=base, headers=headers, timeout=kwargs.pop("timeout", 30.0), **kwargs
        )
        self.clients.append(c)
        return c

    @property
    def api(self) -> httpx.Client:
        """A management-API client with the token (one per sandbox)."""
        if "api" not in self.cached:
            self.cached["api"] = self.client(self.api_url)
        return self.cached["api"]

    @property
    def jobs(self) -> httpx.Client:
        """A job-plane client with the token (one per sandbox)."""
        if "jobs" not in self.cached:
            self.cached["jobs"] = self.client(self.jobs_url)
        return self.cached["jobs"]

    def advance(self, seconds: float) -> dict[str, Any]:
        r = httpx.post(
            f"{self.api_url}/_sandbox/clock",
            json={"advanceSeconds": seconds},
            headers={"Authorization": f"Bearer {self.token}"},
        )
        r.raise_for_status()
        body: dict[str, Any] = r.json()
        return body

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(
            method,
            f"{self.api_url}/_sandbox{path}",
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=30.0,
            **kwargs,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        for c in self.clients:
            c.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def launch(tmp: Path, *flags: str, wait: bool = True, timeout: float = 180.0) -> Sandbox:
    tmp.mkdir(parents=True, exist_ok=True)
    urls = tmp / "urls.json"
    log_path = tmp / "sandbox.log"
    cmd = [
        sys.executable,
        "-m",
        "ferry.sandbox",
        # Every fake on a random port: sandboxes of other sessions may hold the defaults.
        "--random-ports",
        "--urls-file",
        str(urls),
        "--state-dir",
        str(tmp / "state"),
        *flags,
    ]
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    sb = Sandbox(proc=proc, log_path=log_path, urls_file=urls)
    if not wait:
        return sb
    deadline = time.monotonic() + timeout
    while not urls.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the sandbox exited with {proc.returncode}:\n{sb.log()}")
        if time.monotonic() > deadline:
            sb.stop()
            raise AssertionError(f"the sandbox did not start in {timeout}s:\n{sb.log()}")
        time.sleep(0.05)
    info = json.loads(urls.read_text())["runpod"]
    sb.api_url, sb.jobs_url, sb.token = info["api"], info["jobs"], info["token"]
    return sb


def server_python_flags() -> list[str]:
    override = os.environ.get("FERRY_SANDBOX_SERVER_PYTHON")
    return ["--server-python", override] if override else []


@pytest.fixture(scope="session")
def sandbox_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    sb = launch(
        tmp_path_factory.mktemp("sandbox"),
        "--inference",
        "off",
        "--speed",
        "0",
        "--validate-responses",
        "--boot-seconds",
        "3",
        "--sim-job-seconds",
        "1",
    )
    yield sb
    assert sb.stop() == 0, sb.log()


@pytest.fixture
def sandbox(sandbox_session: Sandbox) -> Sandbox:
    sandbox_session.admin("POST", "/reset").raise_for_status()
    return sandbox_session


@pytest.fixture
def start_sandbox(tmp_path: Path) -> Iterator[Callable[..., Sandbox]]:
    started: list[Sandbox] = []

    def start(*flags: str, wait: bool = True) -> Sandbox:
        sb = launch(tmp_path / f"sb{len(started)}", *flags, wait=wait)
        started.append(sb)
        return sb

    yield start
    for sb in started:
        sb.stop()


def endpoint_body(**overrides: Any) -> dict[str, Any]:
    """A create body like the one Ferry's operator sends."""
    body: dict[str, Any] = {
        "name": "ferry-default-llama",
        "type": "QUEUE",
        "image": "ghcr.io/ferry/inference-server:latest",
        "gpu": {"pools": ["ADA_24"], "count": 1, "excludedTypes": ["NVIDIA GeForce RTX 4090"]},
        "workers": {"min": 0, "max": 3, "idleTimeout": 60},
        "scaling": {"type": "QUEUE_DELAY", "queueDelay": 4},
        "env": {"FERRY_ENDPOINT_UID": "0b7c-uid", "FERRY_MODEL": "hf://org/tiny@main"},
    }
    body.update(overrides)
    return body
