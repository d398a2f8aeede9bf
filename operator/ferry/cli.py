"""The `ferry` command.

- `ferry run`: the operator, against the cluster in the kubeconfig (or in-cluster).
- `ferry up`: what `make run` calls. With a kubeconfig it runs the operator against
  that cluster. Without one it starts the embedded local control plane with its
  simulated GPU nodes and the platform sandbox, installs the CRDs, points a
  ProviderConfig at the sandbox, applies `examples/`, starts the operator, shows
  the endpoints reaching Ready, prints the command that sends one a prompt and
  keeps the operator in the foreground until Ctrl-C.
- `ferry sandbox`: the local fakes of the serverless platforms (`ferry.sandbox`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import yaml

from ferry import sandboxing
from ferry.settings import Settings

if TYPE_CHECKING:
    from ferry.devcluster import Cluster

REPO = Path(__file__).resolve().parents[2]
#: The Secret and ProviderConfig `ferry up` points at the sandbox (namespace default).
SANDBOX_CONFIG = "runpod-sandbox"


def _run_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("run", help="run the operator against the configured cluster")
    p.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        help="watch only this namespace (repeatable; glob patterns allowed). Default: all.",
    )
    p.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, then $KUBECONFIG)")
    p.add_argument("--workers", type=int, help="concurrent reconciles (default 32)")
    p.add_argument("--poll-interval", type=float, help="seconds between drift checks (default 60)")
    p.add_argument("--metrics-port", type=int, help="Prometheus port, 0 to disable (default 8080)")
    p.add_argument("--metrics-host", help="address for the metrics server (default 0.0.0.0)")
    p.add_argument("--health-port", type=int, help="liveness endpoint port (default off)")
    p.add_argument("-v", "--verbose", action="store_true")


def _settings(args: argparse.Namespace) -> Settings:
    cfg = Settings(
        namespaces=list(args.namespace), kubeconfig=args.kubeconfig, verbose=args.verbose
    )
    if args.workers is not None:
        cfg.workers = args.workers
    if args.poll_interval is not None:
        cfg.poll_interval = args.poll_interval
    if args.metrics_port is not None:
        cfg.metrics_port = args.metrics_port
    if args.metrics_host is not None:
        cfg.metrics_host = args.metrics_host
    if args.health_port is not None:
        cfg.liveness_port = args.health_port
    cfg.__post_init__()
    return cfg


def cmd_run(args: argparse.Namespace) -> int:
    if args.kubeconfig:
        # kopf picks its login handlers when it is imported, from $KUBECONFIG: set it
        # first. The reconciler's own client is given the path directly.
        os.environ["KUBECONFIG"] = args.kubeconfig
    in_cluster = Path("/var/run/secrets/kubernetes.io/serviceaccount/token").exists()
    if not (has_kubeconfig() or in_cluster):
        _say(
            "no cluster configured: pass --kubeconfig, set KUBECONFIG, run in a pod,"
            " or use `ferry up` (make run) for a local control plane"
        )
        return 2
    from ferry import handlers

    handlers.run(_settings(args))
    return 0


def has_kubeconfig() -> bool:
    """Whether $KUBECONFIG or ~/.kube/config names a file (then `up` uses that cluster)."""
    env = os.environ.get("KUBECONFIG")
    if env:
        return any(Path(p).exists() for p in env.split(os.pathsep) if p)
    return (Path.home() / ".kube" / "config").exists()


def _say(message: str) -> None:
    print(f"ferry: {message}", file=sys.stderr, flush=True)


def cmd_up(args: argparse.Namespace) -> int:
    if has_kubeconfig() and not args.embedded:
        _say("using the cluster in your kubeconfig (pass --embedded for a local one)")
        return cmd_run(args)

    from ferry import devcluster

    cluster = devcluster.DevCluster()
    state = Path(tempfile.mkdtemp(prefix="ferry-up-"))
    sandbox = sandboxing.SandboxProcess(state, ["--inference", args.sandbox_inference])
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    # Also SIGINT: a shell starts background jobs with SIGINT ignored, and `kill -INT`
    # must still stop everything.
    signal.signal(signal.SIGINT, on_signal)
    operator: subprocess.Popen[bytes] | None = None
    try:
        _say("starting the local control plane (etcd, kube-apiserver, scheduler, kwok GPU nodes)")
        cluster.start()
        kubeconfig = str(cluster.kubeconfig_path)
        _say(f"control plane ready; export KUBECONFIG={kubeconfig}")
        crds = args.crds or str(REPO / "crds")
        examples = args.examples or str(REPO / "examples")
        cluster.kubectl("apply", "--server-side", "-f", crds)
        cluster.kubectl(
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/inferenceendpoints.ferry.dev",
            "crd/providerconfigs.ferry.dev",
        )
        # Established is not served yet: wait until the new kinds can be listed.
        deadline = time.monotonic() + 30
        while cluster.kubectl("get", "iep,fpc", "-A", check=False).returncode != 0:
            if time.monotonic() > deadline:
                break
            time.sleep(0.5)
        _say(
            "starting the platform sandbox (local fakes of RunPod, Replicate and Modal; the"
            " first start builds a tiny model, about a minute)"
        )
        urls = sandbox.start()
        objects = [
            obj
            for platform in sorted(urls)
            for obj in sandboxing.provider_objects(urls, platform, f"{platform}-sandbox", "default")
        ]
        # Server-side apply: no last-applied annotation keeps a copy of the token.
        cluster.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(objects))
        print(sandbox.banner(), flush=True)
        _say(
            f"sandbox URLs and tokens: {sandbox.urls_file}; ProviderConfigs"
            f" {', '.join(f'default/{p}-sandbox' for p in sorted(urls))} point at it"
        )
        env = {**os.environ, "KUBECONFIG": kubeconfig}
        cmd = [sys.executable, "-m", "ferry", "run", "--kubeconfig", kubeconfig]
        cmd += ["--metrics-port", str(args.metrics_port or 0), "--metrics-host", "127.0.0.1"]
        operator = subprocess.Popen(cmd, env=env)
        _say(f"operator started (pid {operator.pid}); applying {examples}")
        cluster.kubectl("apply", "-f", examples)
        if _watch_until_ready(cluster, operator, timeout=args.ready_timeout):
            _show_prompt(cluster, kubeconfig)
        _say("operator running in the foreground; Ctrl-C stops it and the control plane")
        return operator.wait()
    except KeyboardInterrupt:
        if not stopping:
            _say("interrupted")
        return 0
    except (devcluster.StartupError, devcluster.BuildError) as err:
        _say(f"cannot start the local control plane: {err}")
        return 1
    except sandboxing.SandboxError as err:
        _say(f"cannot start the platform sandbox: {err}")
        return 1
    finally:
        if operator is not None and operator.poll() is None:
            operator.send_signal(signal.SIGINT)
            try:
                operator.wait(timeout=20)
            except subprocess.TimeoutExpired:
                operator.kill()
        _say("stopping the platform sandbox and the local control plane")
        sandbox.stop()
        cluster.stop()
        shutil.rmtree(state, ignore_errors=True)


def _watch_until_ready(
    cluster: Cluster, operator: subprocess.Popen[bytes], *, timeout: float
) -> bool:
    def kubectl(*args: str) -> str:
        return cluster.kubectl(*args, check=False).stdout

    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if operator.poll() is not None:
            raise SystemExit(f"ferry: the operator exited with status {operator.returncode}")
        table = kubectl("get", "inferenceendpoints", "-A")
        if table != last:
            print(table, end="", flush=True)
            last = table
        statuses = kubectl(
            "get",
            "inferenceendpoints",
            "-A",
            "-o",
            "jsonpath={range .items[*]}{.status.conditions[?(@.type=='Ready')].status}{'\\n'}{end}",
        ).split()
        if statuses and all(s == "True" for s in statuses):
            _say(f"all {len(statuses)} endpoints are Ready")
            return True
        time.sleep(2)
    _say(f"not every endpoint is Ready after {timeout:.0f}s; see `kubectl describe iep -A`")
    return False


def _show_prompt(cluster: Cluster, kubeconfig: str) -> None:
    """Print the one command that sends a sandbox endpoint a prompt."""
    listed = cluster.kubectl("get", "iep", "-A", "-o", "json", check=False).stdout
    items: list[dict[str, Any]] = json.loads(listed or "{}").get("items", [])
    remote = [
        i
        for i in items
        if ((i.get("spec") or {}).get("providerConfigRef") or {}).get("name") == SANDBOX_CONFIG
        and (i.get("status") or {}).get("openaiBaseUrl")
    ]
    if not remote:
        return
    ep = remote[0]
    model = str(ep["spec"]["model"].get("uri", "")).removeprefix("hf://")
    body = json.dumps(
        {"model": model, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 24}
    )
    token = f"$(kubectl get secret {SANDBOX_CONFIG} -o jsonpath='{{.data.token}}' | base64 -d)"
    kubectl_dir = Path(cluster.kubectl_path).parent
    _say(f"send {ep['metadata']['name']} (RunPod, sandbox) a prompt:")
    print(
        f"\n  export KUBECONFIG={kubeconfig} PATH={kubectl_dir}:$PATH\n"
        f"  curl -s {ep['status']['openaiBaseUrl']}/chat/completions \\\n"
        f'    -H "Authorization: Bearer {token}" \\\n'
        f"    -H 'Content-Type: application/json' \\\n"
        f"    -d '{body}'\n",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["sandbox"]:
        # The sandbox has its own flags and help; hand it the rest untouched.
        from ferry.sandbox.__main__ import main as sandbox_main

        return sandbox_main(argv[1:])
    parser = argparse.ArgumentParser(prog="ferry", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("sandbox", help="local fakes of RunPod, Replicate and Modal (see --help)")
    _run_parser(sub)
    up = sub.add_parser("up", help="everything locally: control plane, CRDs, examples, operator")
    for action in sub.choices["run"]._actions[1:]:
        up._add_action(action)
    up.add_argument("--embedded", action="store_true", help="ignore any kubeconfig")
    up.add_argument("--examples", help="manifests to apply (default: examples/)")
    up.add_argument("--crds", help="CRD directory (default: crds/)")
    up.add_argument("--ready-timeout", type=float, default=300.0)
    up.add_argument(
        "--sandbox-inference",
        choices=("on", "off"),
        default="on",
        help="real model-server processes behind the sandbox (default on)",
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            return cmd_run(args)
        return cmd_up(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
