"""Assembles the Replicate fake: its state, its HTTP app, its admin and worker routes, its ticker.

`ReplicateSandbox` owns one `ReplicatePlatform` on a `SandboxClock` of its own and one app on
one port: the platform API under `/v1` and the `/_sandbox/` routes. `__main__` binds and
serves it; tests may build one in-process. Replicate-specific admin routes (sandbox-only,
bearer token, never counted, faulted or spec-validated), beside the shared ones from
`ferry.sandbox.http.admin_routes`:

- `GET /_sandbox/billing` -> billed instance seconds per deployment `{boot, idle, busy, total,
  usd, instances}` (D18: Replicate's API has no billing route, so this one is sandbox-only).
- `PATCH /_sandbox/deployments/{owner}/{name}`: change a deployment behind the operator's back
  (drift): the body, validation and effect of the platform's PATCH (a release), not counted.
- `POST /_sandbox/models {owner, name, description?}` -> a new model, or a new latest version
  of an existing one (201, the model with its versions).
- `GET /_sandbox/state`: deployments with their instances, predictions by status, processes.

The worker routes (`/_sandbox/workers/{instance}/next` and `.../predictions/{id}`) are how a
real predictor process (`cog_worker.py`) takes predictions; they take the sandbox's worker key,
not the API token.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydantic
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from ferry.sandbox import modelserver
from ferry.sandbox.calls import CallCounter
from ferry.sandbox.clock import SandboxClock
from ferry.sandbox.fake import PlatformFake
from ferry.sandbox.faults import FaultTable
from ferry.sandbox.http import (
    AuthCheck,
    Call,
    Notifier,
    Problem,
    Surface,
    admin_json,
    admin_routes,
    bearer_auth,
    parse_admin,
    platform_app,
    problem_response,
)
from ferry.sandbox.processes import ProcessPool
from ferry.sandbox.replicate import api, catalog, inference
from ferry.sandbox.replicate.platform import Options, ReplicatePlatform
from ferry.sandbox.validation import SpecValidator, SpecViolation

log = logging.getLogger("ferry.sandbox.replicate")

SPEC_FILE = "replicate.json"
SPEC_SERVER = "https://api.replicate.com"
WORKER_POLL_S = 10.0


@dataclass
class ReplicateConfig:
    """How to run the Replicate fake (from the CLI flags)."""

    token: str
    speed: float = 1.0
    inference: bool = True
    max_processes: int = 2
    boot_seconds: float = 60.0
    sim_seconds: float = 1.0
    validate_responses: bool = False
    server: modelserver.ModelServer | None = None
    state_dir: Path = Path(".")


class NewModel(pydantic.BaseModel):
    """Body of `POST /_sandbox/models`."""

    model_config = pydantic.ConfigDict(extra="forbid")

    owner: str = pydantic.Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    name: str = pydantic.Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    description: str = ""


def loadable(spec: dict[str, Any]) -> dict[str, Any]:
    """The published spec as its authors meant it, in a form the validator loads.

    It is an OpenAPI 3.1 document with two 3.0-isms: `models.search` uses the HTTP method
    QUERY (OpenAPI 3.2), which openapi-spec-validator rightly rejects (the fake serves no
    such route, so it is dropped), and `nullable: true`, which 3.1 ignores: it becomes the
    3.1 form, `null` added to the schema's types, since the platform does answer nulls there.
    """
    for item in spec.get("paths", {}).values():
        item.pop("query", None)

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            if node.pop("nullable", False) is True and isinstance(node.get("type"), str):
                node["type"] = [node["type"], "null"]
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(spec)
    return spec


class ReplicateSpec(SpecValidator):
    """replicate.json; answers with an error status are not checked: the spec documents none."""

    def __init__(self) -> None:
        super().__init__(SPEC_FILE, SPEC_SERVER, adapt=loadable)

    def check_response(
        self,
        method: str,
        path: str,
        *,
        query: Any,
        request_headers: Any,
        status: int,
        headers: Any,
        body: bytes | None,
    ) -> None:
        if status >= 400:
            return
        super().check_response(
            method,
            path,
            query=query,
            request_headers=request_headers,
            status=status,
            headers=headers,
            body=body,
        )


class ReplicateSandbox(PlatformFake):
    """One Replicate fake: `app` (the platform API, admin and worker routes)."""

    label = "Replicate"
    platform: ReplicatePlatform

    def __init__(self, config: ReplicateConfig, clock: SandboxClock | None = None) -> None:
        super().__init__(config.speed, clock)
        self.config = config
        self.notifier = Notifier()
        self.worker_key = "wk-" + secrets.token_urlsafe(24)
        self.api_url = ""
        self.pool: ProcessPool | None = None
        backend: inference.InstanceProcesses | None = None
        if config.inference:
            if config.server is None:
                raise ValueError("inference on needs a located model server")
            self.pool = ProcessPool(
                config.max_processes, config.state_dir / "logs", on_exit=self._process_exited
            )
            backend = inference.InstanceProcesses(
                server=config.server,
                pool=self.pool,
                api_url=lambda: self.api_url,
                worker_key=self.worker_key,
                home=config.state_dir / "home",
            )
        self.platform = ReplicatePlatform(
            self.clock,
            Options(
                boot_seconds=config.boot_seconds,
                sim_seconds=config.sim_seconds,
                inference=config.inference,
            ),
            backend,
        )
        self.platform.on_change(self.notifier.pulse)
        self.validator = ReplicateSpec()
        auth = bearer_auth(config.token)
        surface = Surface(
            name="Replicate API",
            faults=self.faults,
            calls=self.calls,
            log=log,
            validator=self.validator,
            validate_responses=config.validate_responses,
            render_error=problem_response,
        )
        routes = api.routes(surface, self.platform, self.notifier, auth)
        routes += admin_routes(
            auth=auth,
            clock=self.clock,
            faults=self.faults,
            calls=self.calls,
            describe=self.describe,
            reset=self.reset,
            advance=self._advance,
            on_clock_change=self._clock_changed,
        )
        routes += self._admin_routes(auth)
        routes += self._worker_routes(bearer_auth(self.worker_key))
        self.app: ASGIApp = platform_app(routes, problem_response, log)

    # ---- lifecycle -----------------------------------------------------------------------

    def set_url(self, api_url: str) -> None:
        """Tell the fake where it is served (prediction URLs, the workers' routes)."""
        self.api_url = api_url
        self.platform.api_url = api_url

    def stop_platform(self) -> None:
        self.platform.stop_instances()

    def _process_exited(self, key: str, code: int, tail: str) -> None:
        self.platform.process_exited(key, code, tail)

    def describe(self) -> dict[str, Any]:
        """`GET /_sandbox`: what this fake is and how it runs."""
        return {
            **self.describe_runtime("replicate", self.config),
            "api": self.api_url,
            "account": self.platform.account["username"],
            "bootSeconds": self.config.boot_seconds,
            "idleSeconds": self.platform.options.idle_seconds,
            "offlineSecondsBeforeDelete": self.platform.options.offline_seconds,
            "validateResponses": self.config.validate_responses,
            "catalogue": {"date": catalog.CATALOGUE_DATE, "source": catalog.CATALOGUE_SOURCE},
        }

    # ---- admin and worker routes ---------------------------------------------------------

    def _admin_routes(self, auth: AuthCheck) -> list[Route]:
        admin = Surface(name="admin", faults=FaultTable(), calls=CallCounter(), log=log)

        async def billing(_call: Call) -> Response:
            self.platform.tick()
            return admin_json(self.platform.billed_seconds())

        async def drift(call: Call) -> Response:
            owner, name = call.params["owner"], call.params["name"]
            try:
                self.validator.check_request(
                    "PATCH",
                    f"/v1/deployments/{owner}/{name}",
                    query={},
                    headers={"authorization": f"Bearer {self.config.token}"},
                    body=call.raw or None,
                    content_type=call.request.headers.get("content-type", "application/json"),
                )
            except SpecViolation as exc:
                raise Problem(400, exc.detail, errors=exc.errors) from None
            found = self.platform.update_deployment(owner, name, call.body or {})
            return admin_json(found.to_json())

        async def add_model(call: Call) -> Response:
            body: NewModel = parse_admin(NewModel, call.raw)
            model = self.platform.add_version(body.owner, body.name, body.description)
            view = model.to_json()
            view["versions"] = [v.id for v in model.versions]
            return admin_json(view, status=201)

        async def state(_call: Call) -> Response:
            self.platform.tick()
            view = self.platform.state_view()
            view["processes"] = self.pool.describe() if self.pool else []
            return admin_json(view)

        table = [
            ("GET", "/_sandbox/billing", billing),
            ("PATCH", "/_sandbox/deployments/{owner}/{name}", drift),
            ("POST", "/_sandbox/models", add_model),
            ("GET", "/_sandbox/state", state),
        ]
        return [admin.route(m, t, h, auth=auth, spec=False, counted=False) for m, t, h in table]

    def _worker_routes(self, auth: AuthCheck) -> list[Route]:
        workers = Surface(name="workers", faults=FaultTable(), calls=CallCounter(), log=log)

        async def take(call: Call) -> Response:
            instance = call.params["instance"]
            found: list[Any] = []

            def ready() -> bool:
                found[:] = [self.platform.take(instance)]
                return found[0] is not None

            await self.notifier.wait_until(ready, WORKER_POLL_S)
            prediction = found[0] if found else None
            if prediction is None:
                return Response(status_code=204)
            return JSONResponse({"id": prediction.id, "input": prediction.input})

        async def result(call: Call) -> Response:
            if not isinstance(call.body, dict):
                raise Problem(400, "a result is a JSON object with output or error")
            self.platform.result(call.params["instance"], call.params["prediction"], call.body)
            if call.params["instance"] not in self.platform.instances:
                raise Problem(410, "this instance is gone")
            return Response(status_code=204)

        table = [
            ("GET", "/_sandbox/workers/{instance}/next", take),
            ("POST", "/_sandbox/workers/{instance}/predictions/{prediction}", result),
        ]
        # Sandbox-internal traffic beyond the spec: not counted, faulted or validated.
        return [workers.route(m, t, h, auth=auth, spec=False, counted=False) for m, t, h in table]
