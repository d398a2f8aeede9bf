"""The HTTP pipeline every fake's platform routes go through, and the shared admin routes.

`Surface` turns a handler into a Starlette route that, in order: counts the call (`calls`),
applies an armed fault (`faults`), checks the caller's credentials, validates the request
against the published spec (spec routes only; `validation`), runs the handler, adds the
surface's headers, and, when response validation is on, checks the answer against the spec.
`SandboxLabel` marks every response `X-Ferry-Sandbox: true`. `admin_routes` serves the
sandbox-only controls under `/_sandbox/` (clock, faults, call counts, reset), which are never
counted, faulted or spec-validated. Used by each platform's app module.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pydantic
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ferry.sandbox.calls import CallCounter
from ferry.sandbox.clock import SandboxClock
from ferry.sandbox.faults import Fault, FaultSpec, FaultTable
from ferry.sandbox.validation import SpecValidator, SpecViolation

SANDBOX_HEADER = "X-Ferry-Sandbox"
PROBLEM_JSON = "application/problem+json"

TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


class Problem(Exception):
    """Raised by handlers: the call fails with `status` and a sentence the caller can act on."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        errors: list[str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = errors
        self.headers = dict(headers or {})


ErrorRenderer = Callable[[int, str, "list[str] | None", "Mapping[str, str]"], Response]


def problem_response(
    status: int,
    detail: str,
    errors: list[str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """An RFC 9457 problem body `{title, status, detail, errors?}` (RunPod's error shape)."""
    body: dict[str, Any] = {
        "title": TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    if errors:
        body["errors"] = errors
    return JSONResponse(
        body, status_code=status, headers=dict(headers or {}), media_type=PROBLEM_JSON
    )


def json_error_response(
    status: int,
    detail: str,
    errors: list[str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """A plain `{"error": detail}` body, as RunPod's job plane answers errors."""
    body: dict[str, Any] = {"error": detail}
    if errors:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


class SandboxLabel:
    """ASGI middleware: every response says `X-Ferry-Sandbox: true`, errors and 404s included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def labelled(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((SANDBOX_HEADER.lower().encode(), b"true"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, labelled)


class RateLimiter:
    """A fixed one-minute window per fake, reported in IETF `RateLimit` headers (wall time).

    The quota is generous (the sandbox is not where rate limits are tested: inject
    `rate_limit` faults for that), but exceeding it is answered 429 like the platform does.
    """

    def __init__(self, per_minute: int, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self._monotonic = monotonic
        self._window_start = monotonic()
        self._used = 0

    def hit(self) -> tuple[int, int]:
        """Count one call; returns (remaining, seconds until the window resets)."""
        now = self._monotonic()
        if now - self._window_start >= 60:
            self._window_start, self._used = now, 0
        self._used += 1
        reset = max(1, int(60 - (now - self._window_start)))
        return self.per_minute - self._used, reset

    def headers(self, remaining: int, reset: int) -> dict[str, str]:
        """`RateLimit` and `RateLimit-Policy` for the current window."""
        return {
            "RateLimit": f'"minute";r={max(0, remaining)};t={reset}',
            "RateLimit-Policy": f'"minute";q={self.per_minute};w=60',
        }


AuthCheck = Callable[[Request], "str | None"]
"""Returns None when the caller may proceed, else the 401 detail."""


def bearer_auth(token: str) -> AuthCheck:
    """`Authorization: Bearer <token>`; anything else is a 401 naming what was wrong."""
    expected = token.encode()

    def check(request: Request) -> str | None:
        header = request.headers.get("authorization")
        if not header:
            return "missing bearer token"
        scheme, _, presented = header.partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            return "malformed authorization header: expected 'Bearer <api key>'"
        if not hmac.compare_digest(presented.strip().encode(), expected):
            return "invalid api key"
        return None

    return check


@dataclass
class Call:
    """What a handler receives: the request, its route template, path params and JSON body."""

    request: Request
    route: str
    params: dict[str, str]
    body: Any
    raw: bytes


Handler = Callable[[Call], Awaitable[Response]]


class Surface:
    """One HTTP surface of a fake (a management API, a job plane): its routes' pipeline.

    `validator` is the spec the surface's spec routes are checked against; `rate_limiter` adds
    the rate-limit headers (and its 429) to every authenticated answer; `render_error` shapes
    error bodies the way this surface of the platform does.
    """

    def __init__(
        self,
        *,
        name: str,
        faults: FaultTable,
        calls: CallCounter,
        log: logging.Logger,
        validator: SpecValidator | None = None,
        validate_responses: bool = False,
        rate_limiter: RateLimiter | None = None,
        render_error: ErrorRenderer = problem_response,
    ) -> None:
        self.name = name
        self.faults = faults
        self.calls = calls
        self.log = log
        self.validator = validator
        self.validate_responses = validate_responses
        self.rate_limiter = rate_limiter
        self.render_error = render_error

    def route(
        self,
        method: str,
        template: str,
        handler: Handler,
        *,
        auth: AuthCheck,
        spec: bool,
        counted: bool = True,
    ) -> Route:
        """A Starlette route for `method template` running `handler` through the pipeline.

        `spec=False` marks a route beyond the published spec: it is never spec-validated.
        `counted=False` keeps it out of the call counts (sandbox-internal traffic).
        """
        if spec and self.validator is None:
            raise ValueError(f"{self.name}: spec route {method} {template} needs a validator")

        async def endpoint(request: Request) -> Response:
            return await self._serve(request, method, template, handler, auth, spec, counted)

        return Route(template, endpoint, methods=[method])

    async def _serve(
        self,
        request: Request,
        method: str,
        template: str,
        handler: Handler,
        auth: AuthCheck,
        spec: bool,
        counted: bool,
    ) -> Response:
        if counted:
            self.calls.count(method, template)
            fault = self.faults.take(method, template)
        else:
            fault = None
        extra: dict[str, str] = {}
        if fault is not None:
            early = await self._fault_before(fault)
            if early is not None:
                return early
        denied = auth(request)
        if denied is not None:
            return self.render_error(401, denied, None, {"WWW-Authenticate": "Bearer"})
        if self.rate_limiter is not None:
            remaining, reset = self.rate_limiter.hit()
            extra = self.rate_limiter.headers(remaining, reset)
            if remaining < 0:
                return self.render_error(
                    429,
                    f"rate limit of {self.rate_limiter.per_minute} requests per minute exceeded",
                    None,
                    {**extra, "Retry-After": str(reset)},
                )
        raw = await request.body()
        query = dict(request.query_params)
        if spec:
            assert self.validator is not None
            try:
                self.validator.check_request(
                    method,
                    request.url.path,
                    query=query,
                    headers=dict(request.headers),
                    body=raw or None,
                    content_type=request.headers.get("content-type", ""),
                )
            except SpecViolation as exc:
                return self.render_error(400, exc.detail, exc.errors, extra)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
            if not _is_form(request):
                return self.render_error(400, "request body is not valid JSON", None, extra)
        call = Call(
            request=request,
            route=template,
            params={k: str(v) for k, v in request.path_params.items()},
            body=body,
            raw=raw,
        )
        try:
            response = await handler(call)
        except Problem as exc:
            response = self.render_error(
                exc.status, exc.detail, exc.errors, {**extra, **exc.headers}
            )
        for key, value in extra.items():
            response.headers.setdefault(key, value)
        if spec and self.validate_responses and not isinstance(response, StreamingResponse):
            response = self._checked(request, method, query, response)
        if fault is not None and fault.spec.kind == "lose_response":
            await _hold_until_disconnect(request, fault.spec.hold_seconds)
            self.log.info("lost the response to %s %s (fault %s)", method, template, fault.id)
            return self.render_error(504, "the sandbox lost this response on purpose", None, {})
        return response

    async def _fault_before(self, fault: Fault) -> Response | None:
        spec = fault.spec
        self.log.info("fault %s: %s on %s %s", fault.id, spec.kind, spec.method, spec.route)
        if spec.kind == "status":
            return self.render_error(
                spec.status,
                f"injected fault {fault.id}: the sandbox answers {spec.status}",
                None,
                {},
            )
        if spec.kind == "rate_limit":
            headers = {"Retry-After": str(spec.retry_after_seconds)}
            if self.rate_limiter is not None:
                headers.update(self.rate_limiter.headers(0, max(1, spec.retry_after_seconds)))
            return self.render_error(
                429,
                f"injected fault {fault.id}: rate limit exceeded for the minute window",
                None,
                headers,
            )
        if spec.kind == "delay":
            await asyncio.sleep(spec.delay_seconds)
        return None

    def _checked(
        self, request: Request, method: str, query: dict[str, str], response: Response
    ) -> Response:
        assert self.validator is not None
        try:
            self.validator.check_response(
                method,
                request.url.path,
                query=query,
                request_headers=dict(request.headers),
                status=response.status_code,
                headers=dict(response.headers),
                body=bytes(response.body) if response.body else None,
            )
        except SpecViolation as exc:
            # A fake that answers off-spec would teach the operator a shape the platform never
            # sends: fail the call (and the test that made it) instead.
            self.log.error(
                "sandbox bug: %s %s answered off-spec: %s", method, request.url.path, exc.detail
            )
            return problem_response(500, f"sandbox bug: {exc.detail}", exc.errors)
        return response


def _is_form(request: Request) -> bool:
    return request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded")


async def _hold_until_disconnect(request: Request, limit: float) -> None:
    """Wait until the client hangs up (or `limit` wall seconds pass)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while (left := deadline - loop.time()) > 0:
        try:
            message = await asyncio.wait_for(request.receive(), timeout=left)
        except TimeoutError:
            return
        if message["type"] == "http.disconnect":
            return


# ---- admin routes (sandbox-only; never counted, faulted or spec-validated) -----------------


class ClockChange(pydantic.BaseModel):
    """Body of `POST /_sandbox/clock`: step forward and/or change the speed."""

    model_config = pydantic.ConfigDict(extra="forbid", populate_by_name=True)

    advance_seconds: float | None = pydantic.Field(None, ge=0, alias="advanceSeconds")
    speed: float | None = pydantic.Field(None, ge=0)


def parse_admin(model: type[pydantic.BaseModel], raw: bytes) -> Any:
    """Validate an admin body with pydantic; a bad body is a 400 naming the field."""
    try:
        return model.model_validate_json(raw or b"{}")
    except pydantic.ValidationError as exc:
        errors = [
            f"$.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
            if err["loc"]
            else f"$: {err['msg']}"
            for err in exc.errors()
        ]
        fields = ", ".join((info.alias or name) for name, info in model.model_fields.items())
        raise Problem(
            400, f"invalid admin request: {errors[0]} (this route takes: {fields})", errors=errors
        ) from None


def admin_json(body: Any, status: int = 200) -> JSONResponse:
    """An admin answer (plain JSON)."""
    return JSONResponse(body, status_code=status)


def admin_routes(
    *,
    auth: AuthCheck,
    clock: SandboxClock,
    faults: FaultTable,
    calls: CallCounter,
    describe: Callable[[], dict[str, Any]],
    reset: Callable[[], Awaitable[None]],
    advance: Callable[[float], Awaitable[None]],
    on_clock_change: Callable[[], Awaitable[None]],
) -> list[Route]:
    """The controls every fake serves under `/_sandbox/` on its API port.

    - `GET /_sandbox`: what this fake is and its options.
    - `GET /_sandbox/clock`; `POST /_sandbox/clock {advanceSeconds?, speed?}`. A step is
      handed to `advance`, so a fake can stop at every event inside it, in time order.
    - `GET /_sandbox/faults`; `POST /_sandbox/faults {method, route, kind, ...}` (201);
      `DELETE /_sandbox/faults` (all); `DELETE /_sandbox/faults/{faultId}`.
    - `GET /_sandbox/calls`; `DELETE /_sandbox/calls`.
    - `POST /_sandbox/reset`: forget all state (the clock keeps running forward).
    """
    admin = Surface(
        name="admin",
        faults=FaultTable(),
        calls=CallCounter(),
        log=logging.getLogger("ferry.sandbox.admin"),
    )

    async def index(_call: Call) -> Response:
        shared = [f"{method} {template}" for method, template, _ in table]
        return admin_json({**describe(), "adminRoutes": shared})

    async def get_clock(_call: Call) -> Response:
        return admin_json(clock.describe())

    async def post_clock(call: Call) -> Response:
        change: ClockChange = parse_admin(ClockChange, call.raw)
        if change.speed is not None:
            clock.set_speed(change.speed)
        if change.advance_seconds:
            await advance(change.advance_seconds)
        await on_clock_change()
        return admin_json(clock.describe())

    async def list_faults(_call: Call) -> Response:
        return admin_json({"faults": faults.describe()})

    async def add_fault(call: Call) -> Response:
        spec: FaultSpec = parse_admin(FaultSpec, call.raw)
        return admin_json(faults.add(spec).describe(), status=201)

    async def clear_faults(_call: Call) -> Response:
        faults.clear()
        return Response(status_code=204)

    async def delete_fault(call: Call) -> Response:
        if not faults.remove(call.params["faultId"]):
            raise Problem(404, f"no armed fault {call.params['faultId']!r}")
        return Response(status_code=204)

    async def get_calls(_call: Call) -> Response:
        return admin_json(calls.describe())

    async def reset_calls(_call: Call) -> Response:
        calls.reset()
        return Response(status_code=204)

    async def reset_all(_call: Call) -> Response:
        await reset()
        return admin_json({"reset": True, "clock": clock.describe()})

    table: list[tuple[str, str, Handler]] = [
        ("GET", "/_sandbox", index),
        ("GET", "/_sandbox/clock", get_clock),
        ("POST", "/_sandbox/clock", post_clock),
        ("GET", "/_sandbox/faults", list_faults),
        ("POST", "/_sandbox/faults", add_fault),
        ("DELETE", "/_sandbox/faults", clear_faults),
        ("DELETE", "/_sandbox/faults/{faultId}", delete_fault),
        ("GET", "/_sandbox/calls", get_calls),
        ("DELETE", "/_sandbox/calls", reset_calls),
        ("POST", "/_sandbox/reset", reset_all),
    ]
    return [admin.route(m, t, h, auth=auth, spec=False, counted=False) for m, t, h in table]


def platform_app(routes: list[Route], render: ErrorRenderer, log: logging.Logger) -> ASGIApp:
    """A fake's Starlette app: unknown routes and methods answered in the platform's error
    shape, a crash answered 500 naming it as a sandbox bug, every answer labelled."""

    async def not_found(_request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 404
        detail = (
            "no such route on the Ferry sandbox" if status == 404 else "method not allowed here"
        )
        return render(status, detail, None, {})

    async def crashed(request: Request, exc: Exception) -> Response:
        log.error("sandbox bug while serving %s %s: %r", request.method, request.url.path, exc)
        return problem_response(500, f"sandbox bug: {exc!r}")

    app = Starlette(
        routes=routes,
        exception_handlers={404: not_found, 405: not_found, Exception: crashed},
    )
    return SandboxLabel(app)


class Notifier:
    """Wakes long-polls when a fake's state changes (`pulse`, from sync code in the loop)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def pulse(self) -> None:
        """Wake every current waiter."""
        self._event.set()
        self._event = asyncio.Event()

    async def wait_until(self, ready: Callable[[], bool], limit_s: float) -> bool:
        """Wait (wall time) until `ready()` holds; False when `limit_s` passed first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit_s
        while not ready():
            left = deadline - loop.time()
            if left <= 0:
                return False
            event = self._event
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout=min(left, 1.0))
        return True
