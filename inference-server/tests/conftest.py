"""Fixtures: a tiny locally built model, and the real server started as a subprocess."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from ferry_server.devtools import build_model

# A token that must never show up in any log or test output.
AUTH_TOKEN = "sekret-" + "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
SERVED_NAME = "ferry/tiny"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """`python -m ferry_server` on 127.0.0.1 with a given environment."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        full_env = {
            k: v for k, v in os.environ.items() if not k.startswith(("FERRY_", "HF_"))
        }
        full_env.update(
            {
                "FERRY_HOST": "127.0.0.1",
                "FERRY_PORT": str(self.port),
                "FERRY_DEVICE": "cpu",
                "FERRY_LOG_LEVEL": "info",
                "HF_HUB_OFFLINE": "1",
                "HF_HOME": str(log_path.parent / "hf-empty"),
                "TOKENIZERS_PARALLELISM": "false",
                "OMP_NUM_THREADS": "1",
                # Tests that are about the drain set their own; the rest exit at once.
                "FERRY_DRAIN_PROPAGATION_S": "0",
                **env,
            }
        )
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ferry_server"],
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited early:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"server not ready after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.proc.send_signal(sig)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Byte-level BPE tokenizer (GPT-2, Llama 3, Qwen)."""
    return build_model(tmp_path_factory.mktemp("model") / "tiny", preset="tiny")


@pytest.fixture(scope="session")
def sp_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SentencePiece-style BPE with byte fallback (Llama 2, Mistral)."""
    return build_model(tmp_path_factory.mktemp("model") / "tiny-sp", preset="tiny",
                       tokenizer="sentencepiece")


@pytest.fixture(scope="session")
def hf_home(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    """An HF_HOME whose hub cache holds the tiny model as ferry/tiny at revision main."""
    home = tmp_path_factory.mktemp("hf-home")
    repo = home / "hub" / "models--ferry--tiny"
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(tiny_model, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    return home


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Any]:
    started: list[ServerProcess] = []

    def _start(env: dict[str, str], wait: bool = True) -> ServerProcess:
        srv = ServerProcess(env, tmp_path / f"server-{len(started)}.log")
        started.append(srv)
        if wait:
            srv.wait_ready()
        return srv

    yield _start
    for srv in started:
        srv.stop()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, hf_home: Path) -> Iterator[ServerProcess]:
    """The shared server: hf:// model from an offline cache, auth on, small batches."""
    logdir = tmp_path_factory.mktemp("shared-server")
    srv = ServerProcess(
        {
            "FERRY_MODEL": "hf://ferry/tiny@main",
            "HF_HOME": str(hf_home),
            "FERRY_AUTH_TOKEN": AUTH_TOKEN,
            "FERRY_MAX_BATCH_SIZE": "8",
            "FERRY_BATCH_WINDOW_MS": "10",
            "FERRY_MAX_TOKENS_LIMIT": "1000",
        },
        logdir / "server.log",
    )
    srv.wait_ready()
    yield srv
    srv.stop()


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {AUTH_TOKEN}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=60.0) as c:
        yield c


@pytest.fixture
def openai_client(server: ServerProcess) -> Iterator[openai.OpenAI]:
    """The official client against the shared server; no retries, so every call is one."""
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key=AUTH_TOKEN, max_retries=0,
                       timeout=120.0) as c:
        yield c


def metric_value(text: str, name: str, labels: str = "") -> float:
    """Value of one sample in Prometheus text format (0 if absent)."""
    key = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(key + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0
