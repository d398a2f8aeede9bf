"""The local control plane: etcd, kube-apiserver, controller manager, scheduler, kwok.

`DevCluster` starts each component on free 127.0.0.1 ports under one state
directory, waits until each is ready, creates the simulated GPU nodes of
`ferry.devcluster.nodes` and proves that a pod can be admitted. `ExistingCluster`
is the same handle for a cluster someone else runs (USE_EXISTING_CLUSTER=true);
`connect_or_start()` picks between them. Used by the test fixtures and the CLI.
"""

from __future__ import annotations

import atexit
import os
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TextIO

import lightkube
from lightkube import codecs
from lightkube.resources.core_v1 import Node, ServiceAccount

from ferry.devcluster import binaries, kubeconfig, nodes, pki, supervising

# Room for thousands of Services (the benchmark makes one per endpoint).
SERVICE_CIDR = "10.0.0.0/16"
POD_CIDR = "10.244.0.0/16"
#: Controllers that need a cloud provider or real node networking; the rest
#: (GC, deployment, replicaset, disruption, taint eviction, ...) run as usual.
CONTROLLERS = "*,-cloud-node-lifecycle-controller,-service-lb-controller,-node-route-controller"
_STATE_MARKER = ".ferry-devcluster"


def _get(url: str, context: ssl.SSLContext | None = None) -> bool:
    """True when GET `url` answers 200; any connection error means "not yet"."""
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


class Cluster:
    """A handle on a running cluster: where it is and how to talk to it."""

    def __init__(self, bin_dir: Path | None = None) -> None:
        self._bin_dir = bin_dir
        self._kubeconfig: Path | None = None
        self._server: str | None = None

    @property
    def kubeconfig_path(self) -> Path:
        if self._kubeconfig is None:
            raise RuntimeError("the cluster is not started; call start() first")
        return self._kubeconfig

    @property
    def server_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the cluster is not started; call start() first")
        return self._server

    @property
    def bin_dir(self) -> Path | None:
        return self._bin_dir

    def _tool(self, name: str) -> str:
        """The pinned binary if known, else PATH, else the (cached) build's."""
        if self._bin_dir is not None and (self._bin_dir / name).is_file():
            return str(self._bin_dir / name)
        found = shutil.which(name)
        if found is None and self._bin_dir is None:
            self._bin_dir = binaries.ensure_binaries()
            return self._tool(name)
        if found is None:
            raise FileNotFoundError(
                f"no {name} in {self._bin_dir} or on PATH; unset KUBEBUILDER_ASSETS or "
                f"put {name} on PATH"
            )
        return found

    @property
    def helm_path(self) -> Path:
        return Path(self._tool("helm"))

    @property
    def kubectl_path(self) -> Path:
        return Path(self._tool("kubectl"))

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster and capture its output."""
        return subprocess.run(
            [self._tool("kubectl"), "--kubeconfig", str(self.kubeconfig_path), *args],
            capture_output=True,
            text=True,
            check=check,
            input=input,
            timeout=timeout,
        )

    def client(self) -> lightkube.Client:
        """A synchronous lightkube client for this cluster (not for use inside kopf)."""
        return lightkube.Client(
            config=lightkube.KubeConfig.from_file(self.kubeconfig_path),
            field_manager="ferry-devcluster",
        )

    def start(self) -> Self:
        return self

    def stop(self) -> None:
        pass

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class ExistingCluster(Cluster):
    """A cluster this process did not start: start() and stop() do nothing."""

    def __init__(self, kubeconfig_path: Path, bin_dir: Path | None = None) -> None:
        super().__init__(bin_dir)
        self._kubeconfig = kubeconfig_path
        self._server = kubeconfig.server_of(kubeconfig_path)


class DevCluster(Cluster):
    """A throwaway control plane with simulated GPU nodes, on 127.0.0.1 only.

    `state_dir` (default: a fresh temp dir) holds certs, etcd data, the kubeconfig
    and one log per component; it is removed on stop() unless `keep` is set or the
    caller supplied it.
    """

    def __init__(
        self,
        *,
        bin_dir: Path | None = None,
        pools: tuple[nodes.NodePool, ...] | list[nodes.NodePool] = nodes.DEFAULT_POOLS,
        state_dir: Path | None = None,
        keep: bool = False,
        stream: TextIO | None = None,
        ready_timeout: float = 90.0,
    ) -> None:
        super().__init__(bin_dir)
        self.pools = tuple(pools)
        self._state_dir = state_dir
        self._own_dir = state_dir is None
        self.keep = keep
        self.ready_timeout = ready_timeout
        self.progress = supervising.Progress(stream)
        self.procs: list[supervising.Process] = []
        #: Seconds from start() to each milestone, for --print-timing.
        self.timings: dict[str, float] = {}

    @property
    def state_dir(self) -> Path:
        if self._state_dir is None:
            raise RuntimeError("the cluster is not started; call start() first")
        return self._state_dir

    # --- lifecycle --------------------------------------------------------------

    def start(self) -> Self:
        if self.procs:
            return self
        self.progress = supervising.Progress(self.progress.stream)
        atexit.register(self.stop)
        try:
            self._start()
        except BaseException as e:
            # Includes KeyboardInterrupt: a half-started plane must not linger, but
            # after a real failure its logs are worth more than the disk space.
            failed = not isinstance(e, KeyboardInterrupt)
            state = self._state_dir
            self._teardown(remove=not failed and not self.keep)
            if failed and state is not None:
                self.progress.say(f"start failed; logs kept in {state}")
            raise
        self.timings["total"] = self.progress.elapsed()
        self.progress.say(f"control plane ready in {self.timings['total']:.1f}s")
        return self

    def stop(self) -> None:
        self._teardown(remove=not self.keep)

    def _teardown(self, *, remove: bool) -> None:
        atexit.unregister(self.stop)
        if self.procs:
            began = time.monotonic()
            self.progress.say("stopping " + ", ".join(p.name for p in reversed(self.procs)))
            for proc in reversed(self.procs):
                proc.stop()
            self.procs = []
            self.progress.say(f"stopped in {time.monotonic() - began:.1f}s")
        if self._state_dir is not None and self._own_dir and remove:
            shutil.rmtree(self._state_dir, ignore_errors=True)
        if self._own_dir:
            # A later start() gets a fresh temp dir rather than the stale one.
            self._state_dir = None
        self._kubeconfig = self._server = None

    def _mark(self, milestone: str) -> None:
        self.timings[milestone] = self.progress.elapsed()
        self.progress.say(f"{milestone} ready")

    def _start(self) -> None:
        say = self.progress.say
        if self._bin_dir is None:
            say("locating control-plane binaries")
            self._bin_dir = binaries.ensure_binaries(self.progress.stream)
        absent = binaries.missing(self._bin_dir)
        if absent:
            raise binaries.BuildError(
                f"{self._bin_dir} lacks {', '.join(absent)}; unset KUBEBUILDER_ASSETS or "
                "run `python -m ferry.devcluster build`"
            )
        d = self._prepare_dir()
        say(f"state in {d}; generating certificates")
        certs = pki.generate()
        f = pki.write(certs, d / "pki")
        etcd_port, peer_port, api_port, kcm_port, sched_port, kwok_port = supervising.free_ports(6)
        self._mark("certificates")

        etcd = self._spawn(
            "etcd",
            [
                "--name=default",
                f"--data-dir={d / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
                f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
                f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-cluster=default=http://127.0.0.1:{peer_port}",
                # Durability is pointless for a throwaway store; fsync dominates start-up.
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        self._wait(etcd, "/health", lambda: _get(f"http://127.0.0.1:{etcd_port}/health"))

        server = f"https://127.0.0.1:{api_port}"
        apiserver = self._spawn(
            "kube-apiserver",
            [
                f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                f"--secure-port={api_port}",
                "--bind-address=127.0.0.1",
                # Without it the server looks for a default route and refuses to start.
                "--advertise-address=127.0.0.1",
                f"--cert-dir={d / 'apiserver'}",
                f"--tls-cert-file={f.serving_cert}",
                f"--tls-private-key-file={f.serving_key}",
                f"--client-ca-file={f.ca_cert}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=RBAC",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={f.sa_public}",
                f"--service-account-signing-key-file={f.sa_private}",
                "--allow-privileged=true",
                # The `kubernetes` Service cannot point at a loopback address (its
                # Endpoints fail validation every 10s), and no pod here dials it.
                "--endpoint-reconciler-type=none",
            ],
        )
        tls = ssl.create_default_context(cafile=str(f.ca_cert))
        tls.load_cert_chain(str(f.admin_cert), str(f.admin_key))
        self._wait(apiserver, "/readyz", lambda: _get(f"{server}/readyz", tls))

        self._kubeconfig = kubeconfig.write(
            kubeconfig.render(server, certs.ca.cert_pem, certs.admin.cert_pem, certs.admin.key_pem),
            d / "kubeconfig",
        )
        self._server = server
        say(f"kubeconfig at {self._kubeconfig}")

        kc = f"--kubeconfig={self._kubeconfig}"
        # The API server's cert names 127.0.0.1, so the components serve it too and
        # their health checks verify against our CA like everything else.
        serving = [f"--tls-cert-file={f.serving_cert}", f"--tls-private-key-file={f.serving_key}"]
        kcm = self._spawn(
            "kube-controller-manager",
            [
                kc,
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={kcm_port}",
                *serving,
                f"--root-ca-file={f.ca_cert}",
                f"--service-account-private-key-file={f.sa_private}",
                "--use-service-account-credentials=false",
                f"--cluster-signing-cert-file={f.ca_cert}",
                f"--cluster-signing-key-file={f.ca_key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                f"--controllers={CONTROLLERS}",
                # The default 20 QPS makes 1,000 Deployments take minutes to report
                # Available; large real clusters raise it the same way.
                "--kube-api-qps=200",
                "--kube-api-burst=400",
                # kwok's heartbeats lag when the two cores are saturated; simulated
                # nodes never die, so do not mark them (and every pod) NotReady.
                "--node-monitor-grace-period=600s",
            ],
        )
        scheduler = self._spawn(
            "kube-scheduler",
            [
                kc,
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={sched_port}",
                *serving,
                "--kube-api-qps=200",
                "--kube-api-burst=400",
            ],
        )
        kwok = self._spawn(
            "kwok",
            [
                kc,
                "--manage-all-nodes=false",
                f"--manage-nodes-with-label-selector={nodes.KWOK_SELECTOR}",
                "--node-ip=127.0.0.1",
                f"--cidr={POD_CIDR}",
                f"--server-address=127.0.0.1:{kwok_port}",
                "-c",
                str(self._write_stages(d / "kwok.yaml")),
            ],
        )
        self._wait(kcm, "/healthz", lambda: _get(f"https://127.0.0.1:{kcm_port}/healthz", tls))
        self._wait(
            scheduler, "/healthz", lambda: _get(f"https://127.0.0.1:{sched_port}/healthz", tls)
        )
        self._wait(kwok, "/healthz", lambda: _get(f"http://127.0.0.1:{kwok_port}/healthz"))

        with self.client() as client:
            self._create_nodes(client, kwok)
            # ServiceAccount admission rejects pods until the controller manager has
            # created the namespace's default ServiceAccount; a dry-run create proves
            # the whole admission chain accepts pods.
            supervising.wait_for(
                kcm,
                "default ServiceAccount in namespace default",
                lambda: _exists(client, ServiceAccount, "default", "default"),
                self.progress,
                self.ready_timeout,
            )
            probe = codecs.from_dict(
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": "ferry-devcluster-probe", "namespace": "default"},
                    "spec": {"containers": [{"name": "probe", "image": "probe"}]},
                }
            )
            client.create(probe, dry_run=True)
            self._mark("pod admission")

    def _prepare_dir(self) -> Path:
        if self._state_dir is None:
            self._state_dir = Path(tempfile.mkdtemp(prefix="ferry-devcluster-"))
        d = self._state_dir
        if d.exists() and any(d.iterdir()):
            if not (d / _STATE_MARKER).exists():
                raise RuntimeError(
                    f"state dir {d} is not empty and was not made by ferry.devcluster; "
                    "pass an empty or new directory"
                )
            # Old etcd data would carry the previous run's ports and certificates.
            for child in d.iterdir():
                if child.is_dir():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        d.mkdir(parents=True, exist_ok=True)
        (d / _STATE_MARKER).touch()
        return d

    def _spawn(self, name: str, args: list[str]) -> supervising.Process:
        assert self._bin_dir is not None
        proc = supervising.Process(
            name, [str(self._bin_dir / name), *args], self.state_dir / f"{name}.log"
        )
        self.progress.say(f"starting {name} (log: {proc.log})")
        proc.start()
        self.procs.append(proc)
        return proc

    def _wait(self, proc: supervising.Process, what: str, check: Callable[[], bool]) -> None:
        supervising.wait_for(proc, what, check, self.progress, self.ready_timeout)
        self._mark(proc.name)

    def _write_stages(self, path: Path) -> Path:
        # Ferry's own copy of kwok's stages, always: its pod stages honour readiness
        # gates (D16), which kwok's defaults next to the binaries do not.
        stages = resources.files("ferry.devcluster").joinpath("kwok-stages.yaml").read_text()
        path.write_text(stages.strip() + "\n")
        return path

    def _create_nodes(self, client: lightkube.Client, kwok: supervising.Process) -> None:
        manifests = nodes.manifests(self.pools)
        for m in manifests:
            try:
                client.create(codecs.from_dict(m))
            except lightkube.ApiError as e:
                if e.status.code != 409:  # already there from a reused state dir
                    raise
        names = {m["metadata"]["name"] for m in manifests}
        self.progress.say(f"created {len(names)} GPU nodes; waiting for kwok to mark them Ready")

        def all_ready() -> bool:
            ready = {
                n.metadata.name
                for n in client.list(Node, labels={"type": "kwok"})
                if n.metadata
                and n.status
                and any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])
            }
            return names <= ready

        supervising.wait_for(
            kwok, f"{len(names)} nodes Ready", all_ready, self.progress, self.ready_timeout
        )
        self._mark("nodes")


def _exists(client: lightkube.Client, kind: Any, name: str, namespace: str) -> bool:
    try:
        client.get(kind, name, namespace=namespace)
    except lightkube.ApiError as e:
        if e.status.code == 404:
            return False
        raise
    return True


def connect_or_start(**kwargs: Any) -> Cluster:
    """The cluster tests should use, already started.

    With USE_EXISTING_CLUSTER=true: the cluster of KUBECONFIG (default
    ~/.kube/config), untouched. Otherwise a new DevCluster built with `kwargs`;
    the caller stops it (or uses the returned handle as a context manager).
    """
    if os.environ.get("USE_EXISTING_CLUSTER", "").lower() in ("1", "true", "yes"):
        env = os.environ.get("KUBECONFIG", "")
        path = Path(env.split(os.pathsep)[0]) if env else Path.home() / ".kube" / "config"
        assets = os.environ.get("KUBEBUILDER_ASSETS")
        return ExistingCluster(path, Path(assets) if assets else None)
    return DevCluster(**kwargs).start()
