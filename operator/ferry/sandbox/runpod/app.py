"""Assembles the RunPod fake: its state, its two HTTP apps, its admin routes and its ticker.

`RunPodSandbox` owns one `RunPodPlatform` on one `SandboxClock`, the management app (port A:
REST v2 + `/_sandbox/` admin) and the job-plane app (port B). `__main__` binds and serves
them; tests may build one in-process. RunPod-specific admin routes (sandbox-only, bearer
token, not spec-validated), beside the shared ones from `ferry.sandbox.http.admin_routes`:

- `GET /_sandbox/capacity` -> `{pool: {capacity, inUse}}`; `PUT /_sandbox/capacity
  {"pools": {"ADA_24": 0, "AMPERE_80": null}}` limits how many workers a pool places at once
  (null = ample, the default); workers beyond it are THROTTLED.
- `GET /_sandbox/billing` -> billed seconds per endpoint `{boot, run, idle, total, gpuSeconds,
  usd, workers}` (the spec's `/v2/billing/serverless` gives the USD buckets).
- `PATCH /_sandbox/endpoints/{id}`: change an endpoint behind the operator's back (drift). Same
  body, validation and effect as `PATCH /v2/serverless/{id}`, but not counted as a platform call.
- `GET /_sandbox/state`: endpoints with their workers and job counts, and the real processes.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydantic
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from ferry.sandbox import modelserver
from ferry.sandbox.calls import CallCounter
from ferry.sandbox.clock import SandboxClock
from ferry.sandbox.fake import PlatformFake
from ferry.sandbox.faults import FaultTable
from ferry.sandbox.http import (
    Call,
    Problem,
    RateLimiter,
    Surface,
    admin_json,
    admin_routes,
    bearer_auth,
    json_error_response,
    parse_admin,
    platform_app,
    problem_response,
)
from ferry.sandbox.processes import ProcessPool
from ferry.sandbox.runpod import catalog, inference, jobplane, management
from ferry.sandbox.runpod.platform import Options, RunPodPlatform
from ferry.sandbox.validation import SpecValidator, SpecViolation

log = logging.getLogger("ferry.sandbox.runpod")

SPEC_FILE = "runpod-v2.json"
SPEC_SERVER = "https://api.runpod.io"


@dataclass
class RunPodConfig:
    """How to run the RunPod fake (from the CLI flags)."""

    token: str
    speed: float = 1.0
    inference: bool = True
    max_processes: int = 2
    boot_seconds: float = 3.0
    sim_job_seconds: float = 1.0
    validate_responses: bool = False
    rate_limit_per_minute: int = 60_000
    server: modelserver.ModelServer | None = None
    state_dir: Path = Path(".")


class CapacityChange(pydantic.BaseModel):
    """Body of `PUT /_sandbox/capacity`."""

    model_config = pydantic.ConfigDict(extra="forbid")

    pools: dict[str, int | None]


class RunPodSandbox(PlatformFake):
    """One RunPod fake: `api_app` (management + admin) and `jobs_app` (job plane)."""

    label = "RunPod"
    platform: RunPodPlatform

    def __init__(self, config: RunPodConfig, clock: SandboxClock | None = None) -> None:
        super().__init__(config.speed, clock)
        self.config = config
        self.worker_key = "wk-" + secrets.token_urlsafe(24)
        self.api_url = ""
        backend: inference.WorkerProcesses | None = None
        if config.inference:
            if config.server is None:
                raise ValueError("inference on needs a located model server")
            self.pool = ProcessPool(
                config.max_processes, config.state_dir / "logs", on_exit=self._process_exited
            )
            backend = inference.WorkerProcesses(
                server=config.server,
                pool=self.pool,
                jobs_url=lambda: self.platform.jobs_url,
                worker_key=self.worker_key,
                home=config.state_dir / "home",
            )
        self.platform = RunPodPlatform(
            self.clock,
            Options(
                boot_seconds=config.boot_seconds,
                sim_job_seconds=config.sim_job_seconds,
                inference=config.inference,
            ),
            backend,
        )
        self.platform.on_change(self.notifier.pulse)
        self.validator = SpecValidator(SPEC_FILE, SPEC_SERVER)
        auth = bearer_auth(config.token)
        api_surface = Surface(
            name="RunPod management API",
            faults=self.faults,
            calls=self.calls,
            log=log,
            validator=self.validator,
            validate_responses=config.validate_responses,
            rate_limiter=RateLimiter(config.rate_limit_per_minute),
            render_error=problem_response,
        )
        jobs_surface = Surface(
            name="RunPod job plane",
            faults=self.faults,
            calls=self.calls,
            log=log,
            render_error=json_error_response,
        )
        api_routes = management.routes(api_surface, self.platform, auth)
        admin = admin_routes(
            auth=auth,
            clock=self.clock,
            faults=self.faults,
            calls=self.calls,
            describe=self.describe,
            reset=self.reset,
            advance=self._advance,
            on_clock_change=self._clock_changed,
        )
        admin += self._admin_routes(auth)
        jobs_routes = jobplane.routes(
            jobs_surface,
            self.platform,
            self.notifier,
            api_auth=jobplane.key_auth(config.token),
            worker_auth=jobplane.key_auth(self.worker_key),
        )
        self.api_app: ASGIApp = platform_app(api_routes + admin, problem_response, log)
        self.jobs_app: ASGIApp = platform_app(jobs_routes, json_error_response, log)

    # ---- lifecycle -----------------------------------------------------------------------

    def set_urls(self, api_url: str, jobs_url: str) -> None:
        """Tell the fake where it is served (endpoints' `requestUrls`, workers' webhooks)."""
        self.api_url = api_url
        self.platform.jobs_url = jobs_url

    def stop_platform(self) -> None:
        # The workers go first, so their pending job polls are answered at once and each
        # process's runpod loop sees SIGTERM between polls and exits promptly.
        self.platform.stop_workers()

    def _process_exited(self, key: str, code: int, tail: str) -> None:
        self.platform.process_exited(key, code, tail)

    def describe(self) -> dict[str, Any]:
        """`GET /_sandbox`: what this fake is and how it runs."""
        return {
            **self.describe_runtime("runpod", self.config),
            "api": self.api_url,
            "jobs": self.platform.jobs_url,
            "openaiBaseUrl": f"{self.platform.jobs_url}/v2/{{endpoint_id}}/openai/v1",
            "bootSeconds": self.config.boot_seconds,
            "simJobSeconds": self.config.sim_job_seconds,
            "validateResponses": self.config.validate_responses,
            "catalogue": {"date": catalog.CATALOGUE_DATE, "source": catalog.CATALOGUE_SOURCE},
        }

    # ---- RunPod admin routes ---------------------------------------------------------------

    def _admin_routes(self, auth: Any) -> list[Route]:
        admin = Surface(name="admin", faults=FaultTable(), calls=CallCounter(), log=log)

        async def get_capacity(_call: Call) -> Response:
            return admin_json(self.platform.capacity_view())

        async def put_capacity(call: Call) -> Response:
            change: CapacityChange = parse_admin(CapacityChange, call.raw)
            for pool, workers in change.pools.items():
                if workers is not None and workers < 0:
                    raise Problem(400, f"capacity of {pool} must be 0 or more, or null for ample")
                self.platform.set_capacity(pool, workers)
            return admin_json(self.platform.capacity_view())

        async def get_billing(_call: Call) -> Response:
            self.platform.tick()
            return admin_json(self.platform.billed_seconds())

        async def drift(call: Call) -> Response:
            endpoint_id = call.params["id"]
            try:
                self.validator.check_request(
                    "PATCH",
                    f"/v2/serverless/{endpoint_id}",
                    query={},
                    headers={"authorization": f"Bearer {self.config.token}"},
                    body=call.raw or None,
                    content_type=call.request.headers.get("content-type", "application/json"),
                )
            except SpecViolation as exc:
                raise Problem(400, exc.detail, errors=exc.errors) from None
            ep = self.platform.update_endpoint(endpoint_id, call.body)
            return admin_json(ep.to_json(self.platform.jobs_url))

        async def state(_call: Call) -> Response:
            self.platform.tick()
            return admin_json(
                {
                    "endpoints": {
                        ep.id: {
                            "name": ep.name,
                            "version": ep.version,
                            "queued": len(self.platform.queues.get(ep.id, ())),
                            "workers": self.platform.workers_view(ep.id)["workers"],
                        }
                        for ep in self.platform.list_endpoints()
                    },
                    "jobs": {
                        status: sum(1 for j in self.platform.jobs.values() if j.status == status)
                        for status in (
                            "IN_QUEUE",
                            "IN_PROGRESS",
                            "COMPLETED",
                            "FAILED",
                            "CANCELLED",
                            "TIMED_OUT",
                        )
                    },
                    "processes": self.pool.describe() if self.pool else [],
                }
            )

        table = [
            ("GET", "/_sandbox/capacity", get_capacity),
            ("PUT", "/_sandbox/capacity", put_capacity),
            ("GET", "/_sandbox/billing", get_billing),
            ("PATCH", "/_sandbox/endpoints/{id}", drift),
            ("GET", "/_sandbox/state", state),
        ]
        return [admin.route(m, t, h, auth=auth, spec=False, counted=False) for m, t, h in table]
