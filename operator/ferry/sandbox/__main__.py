"""`python -m ferry.sandbox` (and `ferry sandbox`): local fakes of the serverless GPU platforms.

Runs on 127.0.0.1 by default and says it is a sandbox everywhere it shows: the banner, every
log line, every response (`X-Ferry-Sandbox: true`). Flags:

  --host 127.0.0.1            address to listen on (loopback unless you say otherwise)
  --runpod-api-port 18080     RunPod management API (REST v2) + /_sandbox admin; 0 = random
  --runpod-jobs-port 18081    RunPod job plane (run/status/stream/..., /openai/v1); 0 = random
  --replicate-port 18082      Replicate API (/v1) + /_sandbox admin; 0 = random
  --modal-port 18083          Modal API (gRPC on plain HTTP/2); 0 = random
  --modal-web-port 18084      Modal web functions' URLs + the Modal fake's /_sandbox admin
  --random-ports              every port above picked at random
  --token ferry-sandbox-token the API key the fakes accept (Bearer)
  --speed 1                   sandbox seconds per wall second (0 freezes; step it via admin)
  --inference on|off          real model-server processes (on) or every worker simulated (off)
  --max-processes 2           real processes at once; least recently used goes first
  --server-python PATH        the inference server's Python (default: the source tree's
                              inference-server/.venv/bin/python)
  --boot-seconds 3            a worker's cold boot on the sandbox clock
  --sim-job-seconds 1         how long a simulated job runs (inference off)
  --replicate-boot-seconds 60 a Replicate instance's cold boot on the sandbox clock (slow, as
                              on the platform)
  --modal-boot-seconds 1      a Modal container's cold start on the sandbox clock (fast: warm
                              pool)
  --validate-responses        check every management answer against the spec (tests)
  --urls-file PATH            once listening, write {"runpod": {"api", "jobs", "token",
                              "admin"}, "replicate": {"api", "token", "admin"}, "modal": {"api",
                              "web", "token", "credentials", "admin"}} there (removed on exit)
  --state-dir PATH            worker logs and HOME (default: a temporary directory)
  --cache-dir PATH            where the tiny model is cached (default ~/.cache/ferry/sandbox)
  --log-level info

Ctrl-C or SIGTERM stops the servers and every worker process. `main(argv)` returns the exit
code (0 stopped cleanly, 2 bad usage or cannot start) and never shows a traceback for either.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from ferry.sandbox import modelserver, serving
from ferry.sandbox.modal.app import ModalConfig, ModalSandbox
from ferry.sandbox.replicate.app import ReplicateConfig, ReplicateSandbox
from ferry.sandbox.runpod.app import RunPodConfig, RunPodSandbox

DEFAULT_TOKEN = "ferry-sandbox-token"
DEFAULT_RUNPOD_API_PORT = 18080
DEFAULT_RUNPOD_JOBS_PORT = 18081
DEFAULT_REPLICATE_PORT = 18082
DEFAULT_MODAL_PORT = 18083
DEFAULT_MODAL_WEB_PORT = 18084

log = logging.getLogger("ferry.sandbox")


class _Usage(Exception):
    """A flag value that cannot work; the message says which and why."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ferry sandbox",
        description="Local fakes of serverless GPU platforms (RunPod, Replicate, Modal) for trying "
        "Ferry with no account. A sandbox: nothing here is a real cloud.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument(
        "--runpod-api-port",
        type=int,
        default=DEFAULT_RUNPOD_API_PORT,
        help=f"RunPod management API port, 0 = random (default {DEFAULT_RUNPOD_API_PORT})",
    )
    p.add_argument(
        "--runpod-jobs-port",
        type=int,
        default=DEFAULT_RUNPOD_JOBS_PORT,
        help=f"RunPod job plane port, 0 = random (default {DEFAULT_RUNPOD_JOBS_PORT})",
    )
    p.add_argument(
        "--replicate-port",
        type=int,
        default=DEFAULT_REPLICATE_PORT,
        help=f"Replicate API port, 0 = random (default {DEFAULT_REPLICATE_PORT})",
    )
    p.add_argument(
        "--modal-port",
        type=int,
        default=DEFAULT_MODAL_PORT,
        help=f"Modal API (gRPC) port, 0 = random (default {DEFAULT_MODAL_PORT})",
    )
    p.add_argument(
        "--modal-web-port",
        type=int,
        default=DEFAULT_MODAL_WEB_PORT,
        help=f"Modal web functions + admin port, 0 = random (default {DEFAULT_MODAL_WEB_PORT})",
    )
    p.add_argument(
        "--random-ports",
        action="store_true",
        help="every platform's ports picked at random (tests, several sandboxes at once)",
    )
    p.add_argument(
        "--token", default=DEFAULT_TOKEN, help=f"API key the fakes accept (default {DEFAULT_TOKEN})"
    )
    p.add_argument(
        "--speed", type=float, default=1.0, help="sandbox seconds per wall second (default 1)"
    )
    p.add_argument(
        "--inference",
        choices=("on", "off"),
        default="on",
        help="real model-server processes, or every worker simulated (default on)",
    )
    p.add_argument(
        "--max-processes", type=int, default=2, help="real processes at once (default 2)"
    )
    p.add_argument("--server-python", type=Path, help="the inference server's Python")
    p.add_argument(
        "--boot-seconds",
        type=float,
        default=3.0,
        help="a worker's cold boot on the sandbox clock (default 3)",
    )
    p.add_argument(
        "--sim-job-seconds",
        type=float,
        default=1.0,
        help="how long a simulated job runs with inference off (default 1)",
    )
    p.add_argument(
        "--replicate-boot-seconds",
        type=float,
        default=60.0,
        help="a Replicate instance's cold boot on the sandbox clock (default 60)",
    )
    p.add_argument(
        "--modal-boot-seconds",
        type=float,
        default=1.0,
        help="a Modal container's cold start on the sandbox clock (default 1)",
    )
    p.add_argument(
        "--validate-responses",
        action="store_true",
        help="check every management answer against the published spec",
    )
    p.add_argument("--urls-file", type=Path, help="write the fakes' URLs and token here as JSON")
    p.add_argument("--state-dir", type=Path, help="worker logs and HOME (default: a temp dir)")
    p.add_argument(
        "--cache-dir", type=Path, help="tiny-model cache (default ~/.cache/ferry/sandbox)"
    )
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    return p


def _check(args: argparse.Namespace) -> None:
    if args.random_ports:
        for name in vars(args):
            if name.endswith("_port"):
                setattr(args, name, 0)
    for name in (
        "runpod_api_port",
        "runpod_jobs_port",
        "replicate_port",
        "modal_port",
        "modal_web_port",
    ):
        port = getattr(args, name)
        if not 0 <= port <= 65535:
            raise _Usage(f"--{name.replace('_', '-')} must be between 0 and 65535, got {port}")
    if args.runpod_api_port and args.runpod_api_port == args.runpod_jobs_port:
        raise _Usage("--runpod-api-port and --runpod-jobs-port must differ")
    if args.speed < 0:
        raise _Usage(f"--speed must be 0 or more, got {args.speed}")
    if args.max_processes < 0:
        raise _Usage(f"--max-processes must be 0 or more, got {args.max_processes}")
    if args.boot_seconds < 0 or args.sim_job_seconds < 0:
        raise _Usage("--boot-seconds and --sim-job-seconds must be 0 or more")
    if args.replicate_boot_seconds < 0:
        raise _Usage("--replicate-boot-seconds must be 0 or more")
    if args.modal_boot_seconds < 0:
        raise _Usage("--modal-boot-seconds must be 0 or more")
    if args.modal_port and args.modal_port == args.modal_web_port:
        raise _Usage("--modal-port and --modal-web-port must differ")
    if not args.token.strip():
        raise _Usage("--token must not be empty")
    if not args.host.strip():
        raise _Usage("--host must not be empty")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv: list[str] | None = None) -> int:
    """Run the sandbox until Ctrl-C/SIGTERM; returns the process exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed the usage and the error
        return int(exc.code or 0)
    try:
        _check(args)
    except _Usage as exc:
        parser.print_usage(sys.stderr)
        print(f"ferry sandbox: error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s [ferry sandbox] %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return asyncio.run(_serve(args))
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        return 130


def _say(message: str) -> None:
    print(f"ferry sandbox: {message}", file=sys.stderr, flush=True)


async def _serve(args: argparse.Namespace) -> int:
    if not _is_loopback(args.host):
        _say(f"warning: listening on {args.host}, not loopback: anyone who can reach it can use it")
    state_dir = args.state_dir or Path(tempfile.mkdtemp(prefix="ferry-sandbox-"))
    state_dir.mkdir(parents=True, exist_ok=True)
    server: modelserver.ModelServer | None = None
    if args.inference == "on":
        _say("checking the inference server and the tiny model (built once, then cached)...")
        try:
            server = await asyncio.to_thread(
                modelserver.locate,
                args.server_python,
                args.cache_dir or modelserver.default_cache_dir(),
            )
        except modelserver.ModelServerMissing as exc:
            _say(f"cannot run real inference: {exc}")
            return 2
    sandbox = RunPodSandbox(
        RunPodConfig(
            token=args.token,
            speed=args.speed,
            inference=args.inference == "on",
            max_processes=args.max_processes,
            boot_seconds=args.boot_seconds,
            sim_job_seconds=args.sim_job_seconds,
            validate_responses=args.validate_responses,
            server=server,
            state_dir=state_dir,
        )
    )
    replicate = ReplicateSandbox(
        ReplicateConfig(
            token=args.token,
            speed=args.speed,
            inference=args.inference == "on",
            max_processes=args.max_processes,
            boot_seconds=args.replicate_boot_seconds,
            sim_seconds=args.sim_job_seconds,
            validate_responses=args.validate_responses,
            server=server,
            state_dir=state_dir / "replicate",
        )
    )
    modal = ModalSandbox(
        ModalConfig(
            token=args.token,
            speed=args.speed,
            inference=args.inference == "on",
            max_processes=args.max_processes,
            boot_seconds=args.modal_boot_seconds,
            server=server,
            state_dir=state_dir / "modal",
        )
    )
    try:
        api = serving.bind(
            "RunPod management API", sandbox.api_app, args.host, args.runpod_api_port
        )
        try:
            jobs = serving.bind(
                "RunPod job plane", sandbox.jobs_app, args.host, args.runpod_jobs_port
            )
        except serving.PortInUse:
            api.sock.close()
            raise
        try:
            rep_api = serving.bind("Replicate API", replicate.app, args.host, args.replicate_port)
        except serving.PortInUse:
            api.sock.close()
            jobs.sock.close()
            raise
        try:
            # The gRPC socket is served by grpclib, not uvicorn: its listener's app is unused.
            modal_api = serving.bind("Modal API", modal.web_app, args.host, args.modal_port)
            try:
                modal_web = serving.bind(
                    "Modal web functions", modal.web_app, args.host, args.modal_web_port
                )
            except serving.PortInUse:
                modal_api.sock.close()
                raise
        except serving.PortInUse:
            for taken in (api, jobs, rep_api):
                taken.sock.close()
            raise
    except serving.PortInUse as exc:
        _say(str(exc))
        return 2
    sandbox.set_urls(api.url(args.host), jobs.url(args.host))
    replicate.set_url(rep_api.url(args.host))
    modal.set_urls(modal_api.url(args.host), modal_web.url(args.host))
    await modal.start_grpc(modal_api.sock)
    runner = serving.Serving([api, jobs, rep_api, modal_web], log_level="warning")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    serve_task = asyncio.create_task(runner.run(), name="sandbox-serve")
    ticker = asyncio.create_task(sandbox.run_ticker(), name="sandbox-ticker")
    rep_ticker = asyncio.create_task(replicate.run_ticker(), name="sandbox-replicate-ticker")
    modal_ticker = asyncio.create_task(modal.run_ticker(), name="sandbox-modal-ticker")
    try:
        await runner.wait_started()
        _banner(args, sandbox, server, state_dir, replicate, modal)
        if args.urls_file:
            _write_urls(args.urls_file, sandbox, args.token, replicate, modal)
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({stopped, serve_task}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
    finally:
        _say("stopping: worker processes, then servers")
        ticker.cancel()
        rep_ticker.cancel()
        modal_ticker.cancel()
        await sandbox.close()
        await replicate.close()
        await modal.close()
        runner.stop()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(serve_task, timeout=10)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if args.urls_file:
            with contextlib.suppress(OSError):
                args.urls_file.unlink()
        if args.state_dir is None:
            shutil.rmtree(state_dir, ignore_errors=True)
    _say("stopped")
    return 0


def _banner(
    args: argparse.Namespace,
    sandbox: RunPodSandbox,
    server: modelserver.ModelServer | None,
    state_dir: Path,
    replicate: ReplicateSandbox,
    modal: ModalSandbox,
) -> None:
    jobs = sandbox.platform.jobs_url
    if server is not None:
        inference = (
            f"on: Ferry's model server in real processes (at most {args.max_processes}), "
            f"serving the sandbox's tiny model {server.model_dir} whatever model an endpoint names"
        )
    else:
        inference = "off: every worker is simulated; jobs fail with a message saying no model ran"
    lines = [
        "Ferry sandbox: local fakes of serverless GPU platforms. Nothing here is a real cloud.",
        f"  RunPod API    {sandbox.api_url}   (REST v2 management; Bearer {args.token})",
        f"  RunPod jobs   {jobs}   (job plane; OpenAI: {jobs}/v2/<endpoint id>/openai/v1)",
        f"  admin         {sandbox.api_url}/_sandbox   (clock, faults, calls, capacity, billing)",
        f"  Replicate API {replicate.api_url}   (/v1 deployments and predictions; Bearer"
        f" {args.token}; account {replicate.platform.account['username']})",
        f"  admin         {replicate.api_url}/_sandbox   (clock, faults, calls, models, billing;"
        f" instance cold boot {args.replicate_boot_seconds:g}s on its clock)",
        f"  Modal API     {modal.api_url}   (gRPC, plain HTTP/2: MODAL_SERVER_URL; token id"
        f" {modal.config.token_id}, token secret {args.token})",
        f"  Modal web     {modal.web_url}/sandbox--<label>   (web functions; OpenAI: <url>/v1)",
        f"  admin         {modal.web_url}/_sandbox   (clock, faults, calls, state, images, billing;"
        f" container cold start {args.modal_boot_seconds:g}s on its clock)",
        f"  inference     {inference}",
        f"  clock         speed {args.speed:g}; worker boot {args.boot_seconds:g}s on the clock",
        f"  worker logs   {state_dir / 'logs'}",
        "Ctrl-C stops the sandbox and its worker processes.",
    ]
    print("\n".join(lines), file=sys.stderr, flush=True)


def _write_urls(
    path: Path,
    sandbox: RunPodSandbox,
    token: str,
    replicate: ReplicateSandbox,
    modal: ModalSandbox,
) -> None:
    body = {
        "runpod": {
            "api": sandbox.api_url,
            "jobs": sandbox.platform.jobs_url,
            "token": token,
            "admin": f"{sandbox.api_url}/_sandbox",
        },
        "replicate": {
            "api": replicate.api_url,
            "token": token,
            "admin": f"{replicate.api_url}/_sandbox",
        },
        "modal": {
            # `api` is the gRPC server (a ProviderConfig's baseUrl); admin calls go to the web
            # port, which `admin` names.
            "api": modal.api_url,
            "web": modal.web_url,
            "token": token,
            "credentials": {"tokenId": modal.config.token_id, "tokenSecret": token},
            "admin": f"{modal.web_url}/_sandbox",
        },
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(path.name + ".tmp")
    scratch.write_text(json.dumps(body, indent=2) + "\n")
    os.replace(scratch, path)


if __name__ == "__main__":
    raise SystemExit(main())
