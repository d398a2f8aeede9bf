"""Run `ferry sandbox` as a child process and point Ferry at it.

`ferry up` (make run) and the test suites start the platform fakes this way: a
process of its own (`python -m ferry.sandbox`) on random loopback ports, whose
URLs come back through its `--urls-file`. `provider_objects` renders the Secret
and ProviderConfig that aim a namespace's endpoints at it; the Secret carries the
export annotations (decisions.md, "Secrets leaving the cluster") because the
sandbox's URLs are not the platforms' defaults.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ferry.logic import naming


class SandboxError(Exception):
    """The sandbox did not start; the message carries the end of its log."""


class SandboxProcess:
    """`python -m ferry.sandbox` with `args`, its log and URLs under `state_dir`."""

    def __init__(self, state_dir: Path, args: list[str] | None = None) -> None:
        self.state_dir = state_dir
        self.args = list(args or [])
        self.log_path = state_dir / "sandbox.log"
        self.urls_file = state_dir / "sandbox-urls.json"
        self.proc: subprocess.Popen[bytes] | None = None
        self.urls: dict[str, Any] = {}

    def start(self, timeout: float = 600.0) -> dict[str, Any]:
        """Start it and wait until it listens; returns its URLs file's content.

        The first start with inference on builds the tiny model (a minute or two).
        Raises SandboxError when it exits or does not listen within `timeout` s.
        """
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.urls_file.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "ferry.sandbox", "--urls-file", str(self.urls_file)]
        cmd += ["--random-ports"]
        cmd += ["--state-dir", str(self.state_dir / "sandbox"), *self.args]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not self.urls_file.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SandboxError(f"the sandbox did not start; its log ends:\n{self.tail()}")
            time.sleep(0.2)
        self.urls = json.loads(self.urls_file.read_text())
        return self.urls

    def stop(self) -> None:
        """SIGTERM (the sandbox stops its workers), then SIGKILL after 30 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def banner(self) -> str:
        """What the sandbox printed when it came up: each fake's URLs, admin routes, token."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        start = text.rfind("Ferry sandbox:")
        block = text[start:].split("Ctrl-C", 1)[0] if start >= 0 else ""
        return block.rstrip()

    def tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def provider_objects(
    urls: dict[str, Any], platform: str, name: str, namespace: str
) -> list[dict[str, Any]]:
    """A Secret with the sandbox's credentials and a ProviderConfig named `name` using it.

    `urls[platform]` is that fake's entry in the URLs file: `api`, optionally `jobs`
    (a job plane on a URL of its own), and `credentials` (the Secret's keys, e.g.
    `tokenId`/`tokenSecret`) or else `token`.
    """
    fake = urls[platform]
    credentials = fake.get("credentials") or {"token": fake["token"]}
    base_urls = [fake["api"]] + ([fake["jobs"]] if fake.get("jobs") else [])
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"ferry.dev/sandbox": "true"},
            "annotations": {
                naming.EXPORT_TO: platform,
                naming.EXPORT_BASE_URLS: ",".join(base_urls),
            },
        },
        "type": "Opaque",
        "stringData": dict(credentials),
    }
    spec: dict[str, Any] = {
        "provider": platform,
        "credentialsSecretRef": {"name": name},
        "baseUrl": fake["api"],
    }
    if fake.get("jobs"):
        spec["inferenceBaseUrl"] = fake["jobs"]
    config = {
        "apiVersion": "ferry.dev/v1alpha1",
        "kind": "ProviderConfig",
        "metadata": {"name": name, "namespace": namespace, "labels": {"ferry.dev/sandbox": "true"}},
        "spec": spec,
    }
    return [secret, config]
