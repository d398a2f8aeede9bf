"""RunPod serverless entrypoint: RunPod jobs in, the same data plane and HTTP API out.

`python -m ferry_server.providers.runpod_handler` is a RunPod queue worker. It loads the model
first, and only then starts the runpod SDK's job loop (D17): a worker asks for jobs, and so
counts as ready, only once its model is loaded. The model lives on an event loop of its own
(a thread), because the SDK runs handlers on a loop it creates itself; each job is bridged
onto the model's loop, and a job the SDK stops (cancel, timeout) is cancelled there too.

The handler is an async generator and the worker runs with `return_aggregate_stream`, as
RunPod's own vLLM worker does: a job's output is the list of what the handler yielded, and a
streaming client sees each item as it is yielded. Two input forms:

- Native: `{"prompt": str}` or `{"messages": [{"role", "content"}...]}`, plus optional
  `max_tokens`, `temperature`, `top_p`, `stop`, `seed`, `ignore_eos` and `stream` (bool).
  Without `stream` one item `{"text", "finish_reason", "usage"}`; with it, one item per chunk
  `{"text", "finish_reason"}`, the last also carrying `usage`. A bad job yields
  `{"error": message}`, which fails the job.
- OpenAI (RunPod's vLLM-worker convention, how `/v2/{id}/openai/v1/...` reaches a worker):
  `{"openai_route": "/v1/chat/completions" | "/v1/completions" | "/v1/models",
  "openai_input": <the request body>}`. The body goes through this server's own HTTP app
  in-process, so validation and response shaping are exactly the HTTP API's. One item: the
  response body; with `"stream": true`, the server-sent-event text as the HTTP API streams
  it (each item a string of `data: ...` events). An error yields `{"error": "<JSON text>"}`,
  the JSON being `{"status": <HTTP status>, "body": <the OpenAI error body>}`: the SDK turns
  an `error` value into a string, so status and body travel as JSON text; the job fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import threading
from collections.abc import AsyncIterator
from typing import Any

from starlette.types import ASGIApp, Message

from ferry_server.app import build_dataplane, create_app
from ferry_server.config import Settings
from ferry_server.dataplane import DataPlane
from ferry_server.engine.base import GenerationRequest
from ferry_server.errors import FerryError, InvalidInput

log = logging.getLogger("ferry_server.runpod")

OPENAI_ROUTES = {"/v1/chat/completions": "POST", "/v1/completions": "POST", "/v1/models": "GET"}


# ---- native jobs -------------------------------------------------------------------------


def _opt_int(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{name} must be an integer", param=name)
    return value


def _num(value: Any, default: float, name: str) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(f"{name} must be a number", param=name)
    return float(value)


#: Keys of a native job input; anything else is named in an error, never ignored.
NATIVE_KEYS = frozenset(
    {"prompt", "messages", "max_tokens", "temperature", "top_p", "stop", "seed", "ignore_eos",
     "stream"}
)


def _to_request(dp: DataPlane, job_input: dict[str, Any]) -> GenerationRequest:
    unknown = sorted(set(job_input) - NATIVE_KEYS)
    if unknown:
        raise InvalidInput(
            f"unsupported job input field(s) {', '.join(unknown)}; native jobs take"
            f" {', '.join(sorted(NATIVE_KEYS))} (or send openai_route + openai_input)",
            param=unknown[0],
        )
    if "messages" in job_input:
        messages = job_input["messages"]
        if not isinstance(messages, list) or not messages or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str)
            and isinstance(m.get("content"), str) for m in messages
        ):
            raise InvalidInput("messages must be a non-empty list of {role, content}", "messages")
        prompt = dp.engine.apply_chat_template(
            [{"role": m["role"], "content": m["content"]} for m in messages]
        )
    else:
        raw = job_input.get("prompt")
        if not isinstance(raw, str):
            raise InvalidInput("input.prompt (string) or input.messages is required", "prompt")
        prompt = raw
    stop = job_input.get("stop")
    if stop is not None and not (isinstance(stop, str) or (
            isinstance(stop, list) and all(isinstance(s, str) for s in stop))):
        raise InvalidInput("stop must be a string or list of strings", param="stop")
    return dp.build_request(
        prompt,
        max_tokens=_opt_int(job_input.get("max_tokens"), "max_tokens"),
        temperature=_num(job_input.get("temperature"), 1.0, "temperature"),
        top_p=_num(job_input.get("top_p"), 1.0, "top_p"),
        stop=stop,
        seed=_opt_int(job_input.get("seed"), "seed"),
        ignore_eos=job_input.get("ignore_eos") is True,
        # Chat has no small default: the context and the server's limit bound it.
        fit_context="messages" in job_input,
    )


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


async def _native(dp: DataPlane, job_input: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    try:
        stream = job_input.get("stream", False)
        if not isinstance(stream, bool):
            raise InvalidInput("stream must be true or false", param="stream")
        req = _to_request(dp, job_input)
        async with dp.admitted():
            if not stream:
                r = await dp.complete(req)
                yield {
                    "text": r.text,
                    "finish_reason": r.finish_reason,
                    "usage": _usage(r.prompt_tokens, r.completion_tokens),
                }
                return
            async for chunk in dp.stream(req):
                item: dict[str, Any] = {"text": chunk.text, "finish_reason": chunk.finish_reason}
                if chunk.finish_reason is not None:
                    item["usage"] = _usage(chunk.prompt_tokens, chunk.completion_tokens)
                yield item
    except FerryError as exc:
        yield {"error": str(exc)}


# ---- OpenAI jobs: the server's own HTTP app, called in-process ------------------------------


def _openai_error(status: int, message: str, kind: str, param: str | None = None) -> dict[str, Any]:
    body = {"error": {"message": message, "type": kind, "param": param, "code": None}}
    return {"error": json.dumps({"status": status, "body": body})}


async def _openai(
    app: ASGIApp, settings: Settings, route: Any, body: Any
) -> AsyncIterator[Any]:
    method = OPENAI_ROUTES.get(route) if isinstance(route, str) else None
    if method is None:
        routes = ", ".join(OPENAI_ROUTES)
        yield _openai_error(404, f"openai_route must be one of {routes}", "not_found_error")
        return
    if method == "POST" and not isinstance(body, dict):
        yield _openai_error(400, "openai_input must be a JSON object", "invalid_request_error")
        return
    headers = {"content-type": "application/json"}
    if settings.auth_token:
        # RunPod authenticated the caller; the server's own token guard must not refuse it.
        headers["authorization"] = f"Bearer {settings.auth_token}"
    payload = json.dumps(body).encode() if method == "POST" else b""
    async with _asgi_call(app, method, route, payload, headers) as (status, ctype, chunks):
        if status < 400 and ctype.startswith("text/event-stream"):
            async for chunk in chunks:
                if chunk:
                    yield chunk.decode()
            return
        raw = b"".join([c async for c in chunks])
    try:
        parsed = json.loads(raw) if raw else None
    except ValueError:
        parsed = None
    if status >= 400:
        if not isinstance(parsed, dict):
            parsed = {"error": {"message": raw.decode(errors="replace") or f"HTTP {status}",
                                "type": "internal_error", "param": None, "code": None}}
        yield {"error": json.dumps({"status": status, "body": parsed})}
        return
    yield parsed


@contextlib.asynccontextmanager
async def _asgi_call(
    app: ASGIApp, method: str, path: str, body: bytes, headers: dict[str, str]
) -> AsyncIterator[tuple[int, str, AsyncIterator[bytes]]]:
    """Call an ASGI app in-process and stream its response: (status, content type, chunks).

    Unlike httpx's ASGI transport this does not buffer the body, so server-sent events reach
    the caller as the app sends them. Leaving the block early tells the app the client left.
    """
    messages: asyncio.Queue[Message] = asyncio.Queue()
    gone = asyncio.Event()
    sent_body = False

    async def receive() -> Message:
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            return {"type": "http.request", "body": body, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        await messages.put(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 0),
        "server": ("127.0.0.1", 0),
    }
    async def run_app() -> None:
        await app(scope, receive, send)

    task = asyncio.create_task(run_app())

    async def next_message() -> Message | None:
        getter = asyncio.ensure_future(messages.get())
        done, _ = await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
        if getter in done:
            return getter.result()
        getter.cancel()
        if not messages.empty():
            return messages.get_nowait()
        task.result()  # re-raise what the app raised
        return None

    async def chunks() -> AsyncIterator[bytes]:
        while True:
            message = await next_message()
            if message is None or message["type"] != "http.response.body":
                return
            yield bytes(message.get("body", b""))
            if not message.get("more_body", False):
                return

    try:
        start = await next_message()
        if start is None or start["type"] != "http.response.start":
            raise RuntimeError("the server's app answered without a response")
        ctype = ""
        for key, value in start.get("headers", []):
            if key.lower() == b"content-type":
                ctype = value.decode()
        yield int(start["status"]), ctype, chunks()
    finally:
        gone.set()
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


async def process(
    job: dict[str, Any], dp: DataPlane, app: ASGIApp, settings: Settings
) -> AsyncIterator[Any]:
    """Everything one job yields, on the model's event loop (see the module docstring)."""
    job_input = job.get("input")
    if not isinstance(job_input, dict):
        yield {"error": "job input must be an object"}
        return
    if "openai_route" in job_input:
        async for item in _openai(app, settings, job_input["openai_route"],
                                  job_input.get("openai_input", {})):
            yield item
        return
    async for item in _native(dp, job_input):
        yield item


# ---- the worker process ------------------------------------------------------------------


class ModelWorker:
    """The data plane and the server's app on a dedicated event loop thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="ferry-model",
                                        daemon=True)
        self.dataplane: DataPlane | None = None
        self.app: ASGIApp | None = None

    def start(self) -> None:
        """Load the model; returns once it is loaded (raises FerryError if it cannot be)."""
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._load(), self.loop).result()

    async def _load(self) -> None:
        dp = build_dataplane(self.settings)
        await dp.start()
        await dp.wait_loaded()
        self.dataplane = dp
        # The app's lifespan is not run: the data plane is already started.
        self.app = create_app(self.settings, dp)

    def stop(self, timeout: float = 30.0) -> None:
        """Release the model and stop the loop thread."""
        if self.dataplane is not None:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self.dataplane.stop(), self.loop).result(timeout)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)

    async def run(self, job: dict[str, Any]) -> AsyncIterator[Any]:
        """`process(job)` on the model's loop, its items delivered on the caller's loop."""
        assert self.dataplane is not None
        assert self.app is not None
        caller = asyncio.get_running_loop()
        items: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        dp, app = self.dataplane, self.app

        def put(kind: str, value: Any) -> None:
            with contextlib.suppress(RuntimeError):  # the caller's loop already closed
                caller.call_soon_threadsafe(items.put_nowait, (kind, value))

        async def produce() -> None:
            try:
                async for item in process(job, dp, app, self.settings):
                    put("item", item)
            except Exception as exc:
                put("raise", exc)
            finally:
                put("end", None)

        future = asyncio.run_coroutine_threadsafe(produce(), self.loop)
        try:
            while True:
                kind, value = await items.get()
                if kind == "item":
                    yield value
                elif kind == "raise":
                    raise value
                else:
                    return
        finally:
            if not future.done():
                future.cancel()  # the SDK stopped the job: stop generating too


_worker: ModelWorker | None = None


async def handler(job: dict[str, Any]) -> AsyncIterator[Any]:
    """The RunPod handler (an async generator; see the module docstring)."""
    if _worker is None:
        raise RuntimeError("the model is not loaded: start the worker with main()")
    async for item in _worker.run(job):
        yield item


def main() -> None:  # pragma: no cover - exercised as a subprocess in the tests
    """Load the model, then run the runpod SDK's worker loop until it is told to stop."""
    global _worker
    try:
        settings = Settings.from_env()
    except ValueError as exc:
        print(f"ferry-server (runpod): {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    from ferry_server.server import configure_logging

    configure_logging(settings.log_level)
    worker = ModelWorker(settings)
    try:
        worker.start()
    except FerryError as exc:
        log.error("cannot start the RunPod worker: %s", exc)
        raise SystemExit(1) from None
    _worker = worker
    log.info("model loaded; starting the RunPod job loop")

    import runpod

    batch = settings.max_batch_size
    try:
        runpod.serverless.start(
            {
                "handler": handler,
                # Let RunPod send up to a batch's worth of jobs at once so the batcher can fill.
                "concurrency_modifier": lambda _current: batch,
                "return_aggregate_stream": True,
            }
        )
    finally:
        _worker = None
        worker.stop()


if __name__ == "__main__":  # pragma: no cover
    main()
