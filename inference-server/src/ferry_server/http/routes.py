"""Routers: OpenAI-compatible API, the simple /generate, health probes and /metrics."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST

from ferry_server.dataplane import DataPlane
from ferry_server.http.responses import Shape
from ferry_server.http.schemas import ChatCompletionRequest, CompletionRequest, GenerateRequest

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
CLIENT_CLOSED = 499  # nginx's "client closed request", for the request metrics
T = TypeVar("T")


def _dp(request: Request) -> DataPlane:
    dp: DataPlane = request.app.state.dataplane
    return dp


health = APIRouter()


@health.get("/healthz")
async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "alive" if _dp(request).live() else "dead"})


@health.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    dp = _dp(request)
    ready = dp.ready()
    body = {"ready": ready, **dp.describe()}
    headers = {} if ready else {"Retry-After": "5"}
    return JSONResponse(body, status_code=200 if ready else 503, headers=headers)


@health.get("/metrics")
async def metrics(request: Request) -> Response:
    dp = _dp(request)
    dp.metrics.queue_depth.set(dp.engine.queue_depth())
    return Response(dp.metrics.render(), media_type=CONTENT_TYPE_LATEST)


openai = APIRouter(prefix="/v1")


@openai.get("/models")
async def list_models(request: Request) -> JSONResponse:
    dp = _dp(request)
    return JSONResponse(
        {
            "object": "list",
            "data": [
                {
                    "id": dp.settings.served_model_name,
                    "object": "model",
                    "created": 0,
                    "owned_by": "ferry",
                }
            ],
        }
    )


async def _serve(
    request: Request, dp: DataPlane, body: CompletionRequest | ChatCompletionRequest, chat: bool
) -> Response:
    dp.check_model(body.model)
    reqs = body.generation_requests(dp)
    n = 1 if body.n is None else body.n
    shape = Shape(chat, dp.settings.served_model_name, reqs[0].logprobs is not None, n)
    if body.stream:
        streams = await dp.primed_streams(reqs)
        return StreamingResponse(
            shape.events(streams, body.include_usage),
            media_type="text/event-stream", headers=SSE_HEADERS,
        )
    results = await unless_disconnected(request, dp.complete_all(reqs))
    if results is None:
        return Response(status_code=CLIENT_CLOSED)
    return JSONResponse(shape.body(results))


@openai.post("/completions", response_model=None)
async def completions(body: CompletionRequest, request: Request) -> Response:
    return await _serve(request, _dp(request), body, chat=False)


@openai.post("/chat/completions", response_model=None)
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
    return await _serve(request, _dp(request), body, chat=True)


simple = APIRouter()


@simple.post("/generate", response_model=None)
async def generate(body: GenerateRequest, request: Request) -> Response:
    dp = _dp(request)
    req = dp.build_request(
        body.prompt, max_tokens=body.max_new_tokens, temperature=body.temperature
    )
    r = await unless_disconnected(request, dp.complete(req))
    if r is None:
        return Response(status_code=CLIENT_CLOSED)
    return JSONResponse({"text": r.text, "finish_reason": r.finish_reason})


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T | None:
    """Await `work`, or cancel it and return None as soon as the client disconnects.

    A non-streamed request would otherwise generate to max_tokens for nobody, holding its
    batch slot; cancelling reaches the engine, which drops the row at its next decode step.
    (Streamed responses stop on their own: Starlette cancels them on disconnect.)
    """
    job = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({job, watch}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        job.cancel()
        raise
    finally:
        watch.cancel()
    if job.done():
        return job.result()
    job.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await job
    return None


async def _disconnected(request: Request) -> None:
    # The body has been read, so the server's next message is the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass
