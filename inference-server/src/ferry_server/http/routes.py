"""Routers: OpenAI-compatible API, the simple /generate, health probes and /metrics."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST

from ferry_server.dataplane import DataPlane
from ferry_server.engine.base import GenerationResult, TokenChunk
from ferry_server.errors import InvalidInput
from ferry_server.http.schemas import ChatCompletionRequest, CompletionRequest, GenerateRequest

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _dp(request: Request) -> DataPlane:
    dp: DataPlane = request.app.state.dataplane
    return dp


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _sse(payload: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


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


@openai.post("/completions", response_model=None)
async def completions(body: CompletionRequest, request: Request) -> Response:
    dp = _dp(request)
    dp.check_model(body.model)
    if body.n != 1:
        raise InvalidInput("only n=1 is supported", param="n")
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    if not prompts:
        raise InvalidInput("prompt must not be an empty list", param="prompt")
    reqs = [
        dp.build_request(
            p,
            max_tokens=body.max_tokens,
            temperature=body.temperature,
            top_p=body.top_p,
            stop=body.stop,
            seed=body.seed,
            ignore_eos=body.ignore_eos,
        )
        for p in prompts
    ]
    cid = f"cmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    model = dp.settings.served_model_name
    if body.stream:
        if len(reqs) != 1:
            raise InvalidInput("streaming takes a single prompt", param="prompt")
        chunks = await dp.primed_stream(reqs[0])

        async def events() -> AsyncIterator[bytes]:
            async for c in chunks:
                payload: dict[str, Any] = {
                    "id": cid,
                    "object": "text_completion",
                    "created": created,
                    "model": model,
                    "choices": [
                        {"index": 0, "text": c.text, "finish_reason": c.finish_reason,
                         "logprobs": None}
                    ],
                }
                if c.finish_reason is not None:
                    payload["usage"] = _usage(c.prompt_tokens, c.completion_tokens)
                yield _sse(payload)
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream", headers=SSE_HEADERS)

    results: list[GenerationResult] = await asyncio.gather(*(dp.complete(r) for r in reqs))
    return JSONResponse(
        {
            "id": cid,
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": [
                {"index": i, "text": r.text, "finish_reason": r.finish_reason, "logprobs": None}
                for i, r in enumerate(results)
            ],
            "usage": _usage(
                sum(r.prompt_tokens for r in results), sum(r.completion_tokens for r in results)
            ),
        }
    )


@openai.post("/chat/completions", response_model=None)
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
    dp = _dp(request)
    dp.check_model(body.model)
    if body.n != 1:
        raise InvalidInput("only n=1 is supported", param="n")
    prompt = dp.engine.apply_chat_template([m.model_dump() for m in body.messages])
    req = dp.build_request(
        prompt,
        max_tokens=body.max_completion_tokens or body.max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        stop=body.stop,
        seed=body.seed,
        ignore_eos=body.ignore_eos,
    )
    cid = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    model = dp.settings.served_model_name
    if body.stream:
        chunks = await dp.primed_stream(req)

        async def events() -> AsyncIterator[bytes]:
            base = {"id": cid, "object": "chat.completion.chunk", "created": created,
                    "model": model}
            yield _sse({**base, "choices": [
                {"index": 0, "delta": {"role": "assistant", "content": ""},
                 "finish_reason": None}]})
            c: TokenChunk
            async for c in chunks:
                delta = {"content": c.text} if c.text else {}
                payload: dict[str, Any] = {**base, "choices": [
                    {"index": 0, "delta": delta, "finish_reason": c.finish_reason}]}
                if c.finish_reason is not None:
                    payload["usage"] = _usage(c.prompt_tokens, c.completion_tokens)
                yield _sse(payload)
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream", headers=SSE_HEADERS)

    r = await dp.complete(req)
    return JSONResponse(
        {
            "id": cid,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": r.text},
                    "finish_reason": r.finish_reason,
                }
            ],
            "usage": _usage(r.prompt_tokens, r.completion_tokens),
        }
    )


simple = APIRouter()


@simple.post("/generate")
async def generate(body: GenerateRequest, request: Request) -> JSONResponse:
    dp = _dp(request)
    req = dp.build_request(
        body.prompt, max_tokens=body.max_new_tokens, temperature=body.temperature
    )
    r = await dp.complete(req)
    return JSONResponse({"text": r.text, "finish_reason": r.finish_reason})
