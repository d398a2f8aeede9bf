"""The RunPod fake's job plane (`https://api.runpod.ai` stand-in) and the worker webhooks.

Three groups of routes on one port, none of them in the REST v2 spec (so none is
spec-validated):

- The job API: `POST /v2/{id}/run` and `/runsync` (`{"input": ...}`), `GET /v2/{id}/status/{job}`,
  `GET|POST /v2/{id}/stream/{job}`, `POST /v2/{id}/cancel/{job}`, `GET /v2/{id}/health`.
  Auth: the API key, as `Bearer <key>` or raw. Errors are `{"error": "..."}`.
- BEYOND THE SPEC: the OpenAI-compatible route of RunPod's vLLM worker convention,
  `POST /v2/{id}/openai/v1/chat/completions`, `.../completions`, `GET .../models`. It queues a
  job with input `{"openai_route": "/v1/...", "openai_input": <body>}` and answers with the
  handler's output: the first item of the output list as JSON, or, for `stream: true`, the
  handler's SSE chunks as they arrive. A failed job whose error is the JSON text
  `{"status", "body"}` (what Ferry's handler sends) is answered with that status and body.
- Sandbox-internal: the webhooks the real `runpod` worker SDK polls. `GET .../job-take/{w}`
  and `.../job-take-batch/{w}?batch_size=N` (long-polled; 204 = no job, else `{id, input}` or a
  list of them), `POST .../job-done/{w}/{job}` and `.../job-stream/{w}/{job}` (a JSON body sent
  as form-urlencoded), `GET .../job-stop/{w}` (`{"jobsToStop": [...]}`). Auth is the raw
  worker key. These are not counted or faulted.

Built by `app`.
"""

from __future__ import annotations

import contextlib
import hmac
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ferry.sandbox.http import AuthCheck, Call, Notifier, Problem, Surface
from ferry.sandbox.runpod.jobs import INFERENCE_OFF_MESSAGE, Job
from ferry.sandbox.runpod.platform import RunPodPlatform

TAKE_POLL_S = 5.0
STOP_POLL_S = 5.0
STREAM_POLL_S = 5.0
RUNSYNC_DEFAULT_MS = 90_000
RUNSYNC_MAX_MS = 300_000
OPENAI_WAIT_S = 600.0

OPENAI_ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/models")


def key_auth(token: str) -> AuthCheck:
    """The job plane's key: `Authorization: Bearer <key>` or the raw key."""
    expected = token.encode()

    def check(request: Request) -> str | None:
        header = request.headers.get("authorization", "").strip()
        if not header:
            return "missing api key"
        presented = (
            header.split(" ", 1)[1].strip() if header.lower().startswith("bearer ") else header
        )
        if not hmac.compare_digest(presented.encode(), expected):
            return "invalid api key"
        return None

    return check


def routes(
    surface: Surface,
    platform: RunPodPlatform,
    notifier: Notifier,
    *,
    api_auth: AuthCheck,
    worker_auth: AuthCheck,
) -> list[Route]:
    """The job-plane, OpenAI and worker routes on `surface`."""

    def job_input(call: Call) -> Any:
        if not isinstance(call.body, dict) or "input" not in call.body:
            raise Problem(400, 'the request body must be a JSON object with an "input" field')
        return call.body["input"]

    async def run(call: Call) -> Response:
        job = platform.submit(call.params["id"], job_input(call))
        return JSONResponse({"id": job.id, "status": job.status})

    async def runsync(call: Call) -> Response:
        job = platform.submit(call.params["id"], job_input(call))
        try:
            wait_ms = int(call.request.query_params.get("wait", RUNSYNC_DEFAULT_MS))
        except ValueError:
            raise Problem(400, "wait must be an integer number of milliseconds") from None
        await notifier.wait_until(lambda: job.done, min(max(wait_ms, 0), RUNSYNC_MAX_MS) / 1000)
        return JSONResponse(job.describe(platform.clock.now()))

    async def status(call: Call) -> Response:
        job = platform.job(call.params["id"], call.params["jobId"])
        return JSONResponse(job.describe(platform.clock.now()))

    async def stream(call: Call) -> Response:
        job = platform.job(call.params["id"], call.params["jobId"])
        await notifier.wait_until(
            lambda: job.done or len(job.stream) > job.stream_read, STREAM_POLL_S
        )
        parts = job.stream[job.stream_read :]
        job.stream_read = len(job.stream)
        body: dict[str, Any] = {"status": job.status, "stream": [{"output": p} for p in parts]}
        if job.error is not None:
            body["error"] = job.error
        return JSONResponse(body)

    async def cancel(call: Call) -> Response:
        job = platform.cancel(call.params["id"], call.params["jobId"])
        return JSONResponse({"id": job.id, "status": job.status})

    async def health(call: Call) -> Response:
        return JSONResponse(platform.health(call.params["id"]))

    def openai(route: str) -> Any:
        async def handler(call: Call) -> Response:
            return await _openai(platform, notifier, call, route)

        return handler

    async def take(call: Call) -> Response:
        endpoint_id, worker_id = call.params["id"], call.params["workerId"]
        batch = call.route.endswith("job-take-batch/{workerId}")
        try:
            wanted = max(1, int(call.request.query_params.get("batch_size", "1"))) if batch else 1
        except ValueError:
            wanted = 1
        taken: list[Job] = []

        def got() -> bool:
            if platform.worker(endpoint_id, worker_id) is None:
                return True
            taken.extend(platform.take(endpoint_id, worker_id, wanted))
            return bool(taken)

        await notifier.wait_until(got, TAKE_POLL_S)
        if not taken:
            return Response(status_code=204)
        jobs = [{"id": j.id, "input": j.input} for j in taken]
        return JSONResponse(jobs if batch else jobs[0])

    async def done(call: Call) -> Response:
        platform.job_done(
            call.params["id"], call.params["workerId"], call.params["jobId"], call.body
        )
        return JSONResponse({})

    async def partial(call: Call) -> Response:
        platform.job_stream(
            call.params["id"], call.params["workerId"], call.params["jobId"], call.body
        )
        return JSONResponse({})

    async def stop(call: Call) -> Response:
        endpoint_id, worker_id = call.params["id"], call.params["workerId"]
        signals: list[str] = []

        def got() -> bool:
            if platform.worker(endpoint_id, worker_id) is None:
                return True
            signals.extend(platform.stop_signals(endpoint_id, worker_id))
            return bool(signals)

        await notifier.wait_until(got, STOP_POLL_S)
        if not signals:
            return Response(status_code=204)
        return JSONResponse({"jobsToStop": signals})

    api = [
        ("POST", "/v2/{id}/run", run),
        ("POST", "/v2/{id}/runsync", runsync),
        ("GET", "/v2/{id}/status/{jobId}", status),
        ("GET", "/v2/{id}/stream/{jobId}", stream),
        ("POST", "/v2/{id}/stream/{jobId}", stream),
        ("POST", "/v2/{id}/cancel/{jobId}", cancel),
        ("GET", "/v2/{id}/health", health),
        # Beyond the REST spec: RunPod's vLLM-worker convention for OpenAI clients (D1).
        ("POST", "/v2/{id}/openai/v1/chat/completions", openai("/v1/chat/completions")),
        ("POST", "/v2/{id}/openai/v1/completions", openai("/v1/completions")),
        ("GET", "/v2/{id}/openai/v1/models", openai("/v1/models")),
    ]
    worker = [
        ("GET", "/v2/{id}/job-take/{workerId}", take),
        ("GET", "/v2/{id}/job-take-batch/{workerId}", take),
        ("POST", "/v2/{id}/job-done/{workerId}/{jobId}", done),
        ("POST", "/v2/{id}/job-stream/{workerId}/{jobId}", partial),
        ("GET", "/v2/{id}/job-stop/{workerId}", stop),
    ]
    return [surface.route(m, t, h, auth=api_auth, spec=False) for m, t, h in api] + [
        surface.route(m, t, h, auth=worker_auth, spec=False, counted=False) for m, t, h in worker
    ]


# ---- the OpenAI route (beyond the spec) ------------------------------------------------------


def _openai_error(status: int, message: str, kind: str) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": kind, "param": None, "code": None}},
        status_code=status,
    )


async def _openai(platform: RunPodPlatform, notifier: Notifier, call: Call, route: str) -> Response:
    endpoint_id = call.params["id"]
    if route == "/v1/models":
        body: dict[str, Any] = {}
    elif isinstance(call.body, dict):
        body = call.body
    else:
        return _openai_error(400, "the request body must be a JSON object", "invalid_request_error")
    try:
        job = platform.submit(endpoint_id, {"openai_route": route, "openai_input": body})
    except Problem as exc:
        return _openai_error(exc.status, exc.detail, "invalid_request_error")
    if body.get("stream") is not True:
        await notifier.wait_until(lambda: job.done, OPENAI_WAIT_S)
        return _openai_result(platform, job)
    await notifier.wait_until(lambda: job.done or bool(job.stream), OPENAI_WAIT_S)
    if not job.stream:
        return _openai_result(platform, job)

    async def events() -> AsyncIterator[bytes]:
        sent = 0
        try:
            while True:
                while sent < len(job.stream):
                    chunk = _sse_bytes(job.stream[sent])
                    yield chunk
                    sent += 1
                    if chunk.rstrip().endswith(b"data: [DONE]"):
                        return  # the client has its whole answer; the job completes by itself
                if job.done:
                    if job.status != "COMPLETED":
                        message = _error_message(job)
                        error = {"error": {"message": message, "type": "worker_error"}}
                        yield _sse_bytes(error)
                    return
                await notifier.wait_until(_progressed(job, sent), OPENAI_WAIT_S)
        finally:
            finished = (
                sent
                and job.stream
                and _sse_bytes(job.stream[sent - 1]).rstrip().endswith(b"data: [DONE]")
            )
            if not job.done and not finished:  # the client went away: stop the job
                with contextlib.suppress(Problem):
                    platform.cancel(job.endpoint_id, job.id)

    return StreamingResponse(
        events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )


def _progressed(job: Job, seen: int) -> Callable[[], bool]:
    return lambda: job.done or len(job.stream) > seen


def _sse_bytes(part: Any) -> bytes:
    if isinstance(part, str):
        return part.encode()
    return f"data: {json.dumps(part, separators=(',', ':'))}\n\n".encode()


def _error_message(job: Job) -> str:
    error = job.error
    if isinstance(error, str):
        try:
            parsed = json.loads(error)
        except ValueError:
            return error
        if isinstance(parsed, dict) and isinstance(parsed.get("body"), dict):
            inner = parsed["body"].get("error")
            if isinstance(inner, dict) and isinstance(inner.get("message"), str):
                return str(inner["message"])
        return error
    return json.dumps(error) if error is not None else f"job {job.status.lower()}"


def _openai_result(platform: RunPodPlatform, job: Job) -> Response:
    if not job.done:
        return _openai_error(
            504, f"job {job.id} did not finish in time (status {job.status})", "timeout"
        )
    if job.status == "COMPLETED":
        output = job.output
        if isinstance(output, list) and output and isinstance(output[0], dict):
            return JSONResponse(output[0])
        if isinstance(output, dict):
            return JSONResponse(output)
        return _openai_error(502, "the worker returned no OpenAI response body", "worker_error")
    if job.status == "TIMED_OUT":
        return _openai_error(504, _error_message(job), "timeout")
    if job.status == "CANCELLED":
        return _openai_error(503, f"job {job.id} was cancelled", "cancelled")
    error = job.error
    if isinstance(error, str):
        try:
            parsed = json.loads(error)
        except ValueError:
            parsed = None
        if (
            isinstance(parsed, dict)
            and isinstance(parsed.get("status"), int)
            and isinstance(parsed.get("body"), dict)
        ):
            return JSONResponse(parsed["body"], status_code=parsed["status"])
        if error == INFERENCE_OFF_MESSAGE:
            return _openai_error(503, error, "sandbox_inference_off")
    return _openai_error(500, _error_message(job), "worker_error")
