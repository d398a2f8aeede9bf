"""Helpers for integration tests: namespaces, an operator process, waiting."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import yaml

from ferry import devcluster, sandboxing

T = TypeVar("T")


def wait_for(
    check: Callable[[], T | None], what: str, timeout: float = 60.0, every: float = 0.25
) -> T:
    """Poll `check` until it returns something truthy; fail naming `what` on timeout."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


class Operator:
    """`ferry run` as a real subprocess, watching the given namespace pattern."""

    def __init__(
        self,
        cluster: devcluster.Cluster,
        namespaces: list[str],
        log_path: Path,
        metrics_port: int = 0,
        env: dict[str, str] | None = None,
    ) -> None:
        self.env = dict(env or {})
        self.cluster = cluster
        self.namespaces = namespaces
        self.log_path = log_path
        self.metrics_port = metrics_port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        cmd = [
            sys.executable,
            "-m",
            "ferry",
            "run",
            "--kubeconfig",
            str(self.cluster.kubeconfig_path),
        ]
        for ns in self.namespaces:
            cmd += ["--namespace", ns]
        cmd += ["--metrics-port", str(self.metrics_port), "--metrics-host", "127.0.0.1"]
        cmd += ["--poll-interval", "3"]
        # Short deadlines so that lost answers and grace periods play out in seconds.
        env = {
            **os.environ,
            "FERRY_SHORT_REQUEUE": "1",
            "FERRY_CALL_TIMEOUT": "3",
            "FERRY_CREATION_GRACE": "6",
            **self.env,
        }
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """Die without cleanup, as a crashed or evicted operator would."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class Namespace:
    """One test's namespace and the kubectl verbs tests use in it."""

    def __init__(self, cluster: devcluster.Cluster, name: str) -> None:
        self.cluster = cluster
        self.name = name

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return self.cluster.kubectl("-n", self.name, *args, check=check, input=input)

    def apply(
        self, manifest: dict[str, Any] | str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        text = manifest if isinstance(manifest, str) else yaml.safe_dump(manifest)
        return self.kubectl("apply", "-f", "-", input=text, check=check)

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        out = self.kubectl("get", kind, name, "-o", "yaml", check=False)
        if out.returncode != 0:
            if "NotFound" in out.stderr:
                return None
            raise AssertionError(out.stderr)
        doc: dict[str, Any] = yaml.safe_load(out.stdout)
        return doc

    def items(self, kind: str, selector: str | None = None) -> list[dict[str, Any]]:
        args = ["get", kind, "-o", "yaml"]
        if selector:
            args += ["-l", selector]
        doc = yaml.safe_load(self.kubectl(*args).stdout)
        items: list[dict[str, Any]] = doc.get("items", [])
        return items

    def events(self, involved: str) -> list[dict[str, Any]]:
        return [
            e for e in self.items("events") if e.get("involvedObject", {}).get("name") == involved
        ]


def condition(obj: dict[str, Any] | None, ctype: str) -> dict[str, Any] | None:
    if not obj:
        return None
    for cond in obj.get("status", {}).get("conditions", []) or []:
        if cond.get("type") == ctype:
            return dict(cond)
    return None


def ready_now(ns: Namespace, name: str) -> dict[str, Any] | None:
    """The endpoint when it is Ready at its current generation, else None."""
    obj = ns.get("inferenceendpoint", name)
    cond = condition(obj, "Ready")
    if not obj or not cond or cond["status"] != "True":
        return None
    current = obj.get("status", {}).get("observedGeneration") == obj["metadata"]["generation"]
    return obj if current else None


def reason(ns: Namespace, name: str, ctype: str, want: str) -> dict[str, Any] | None:
    """Condition `ctype` of the endpoint when it is True with reason `want`, else None."""
    cond = condition(ns.get("inferenceendpoint", name), ctype)
    return cond if cond and cond["status"] == "True" and cond["reason"] == want else None


def use_sandbox(ns: Namespace, urls: dict[str, Any], platform: str, config: str) -> None:
    """A Secret and ProviderConfig `config` in `ns` aiming `platform` at the sandbox."""
    objects = sandboxing.provider_objects(urls, platform, config, ns.name)
    ns.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects))


def endpoint(name: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "provider": "local",
        "model": {"uri": "hf://acme/tiny-llm"},
        "server": {"image": "ghcr.io/ferry-dev/inference-server:0.1.0"},
        "gpu": {"type": "L4"},
        "scaling": {"minReplicas": 1, "maxReplicas": 3},
    }
    annotations = spec.pop("annotations", None)
    body.update(spec)
    meta: dict[str, Any] = {"name": name}
    if annotations:
        meta["annotations"] = annotations
    return {
        "apiVersion": "ferry.dev/v1alpha1",
        "kind": "InferenceEndpoint",
        "metadata": meta,
        "spec": body,
    }


def provider_config(name: str, provider: str, secret: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"provider": provider}
    if secret:
        spec["credentialsSecretRef"] = {"name": secret}
    return {
        "apiVersion": "ferry.dev/v1alpha1",
        "kind": "ProviderConfig",
        "metadata": {"name": name},
        "spec": spec,
    }


class Fake:
    """One platform fake of the sandbox, driven over HTTP (platform and `/_sandbox` routes)."""

    def __init__(self, urls: dict[str, Any]) -> None:
        self.entry = urls
        # The HTTP port that serves `/_sandbox` (a gRPC fake's API port cannot: its `admin`).
        self.api = str(urls.get("admin", urls["api"])).removesuffix("/_sandbox")
        self.token = urls.get("token", "")
        self._http = httpx.Client(headers={"Authorization": f"Bearer {self.token}"}, timeout=30.0)

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A call to the fake's API port (a platform or a `/_sandbox` admin route)."""
        return self._http.request(method, f"{self.api}{path}", **kwargs)

    def calls(self, method: str, route: str) -> int:
        for row in self.call("GET", "/_sandbox/calls").json()["calls"]:
            if (row["method"], row["route"]) == (method, route):
                return int(row["count"])
        return 0

    def fault(self, **spec: Any) -> None:
        self.call("POST", "/_sandbox/faults", json=spec).raise_for_status()

    def clear_faults(self) -> None:
        self.call("DELETE", "/_sandbox/faults").raise_for_status()

    def close(self) -> None:
        self._http.close()


class Sandbox(Fake):
    """The platform sandbox of the test session: its RunPod fake, and the others by name."""

    def __init__(self, process: sandboxing.SandboxProcess) -> None:
        self.process = process
        self.urls = process.urls
        super().__init__(self.urls["runpod"])
        self.jobs = self.urls["runpod"]["jobs"]
        self.fakes = {p: Fake(u) for p, u in self.urls.items() if p != "runpod"}

    def endpoints(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.call("GET", "/v2/serverless").json()["endpoints"]
        return found

    def tagged(self, uid: str) -> list[dict[str, Any]]:
        return [
            e for e in self.endpoints() if (e.get("env") or {}).get("FERRY_ENDPOINT_UID") == uid
        ]

    def close(self) -> None:
        for fake in self.fakes.values():
            fake.close()
        super().close()
