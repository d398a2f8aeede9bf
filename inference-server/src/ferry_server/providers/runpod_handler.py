"""RunPod serverless entrypoint: maps a job's input to the same data plane as the HTTP API.

Job input: {"prompt": str} or {"messages": [{"role", "content"}...]}, plus optional
max_tokens, temperature, top_p, stop, seed, ignore_eos. Output: {"text", "finish_reason",
"usage"}, or {"error": message} for a bad job (RunPod marks such jobs failed).
`python -m ferry_server.providers.runpod_handler` starts the RunPod worker.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from ferry_server.app import build_dataplane
from ferry_server.config import Settings
from ferry_server.dataplane import DataPlane
from ferry_server.engine.base import GenerationRequest
from ferry_server.errors import FerryError, InvalidInput

_dataplane: DataPlane | None = None
_lock: asyncio.Lock | None = None


async def get_dataplane() -> DataPlane:
    """Load the model once per worker process, on the first job."""
    global _dataplane, _lock
    if _lock is None:
        _lock = asyncio.Lock()
    async with _lock:
        if _dataplane is None:
            dp = build_dataplane(Settings.from_env())
            await dp.start()
            await dp.wait_loaded()
            _dataplane = dp
    return _dataplane


async def reset() -> None:
    """Release the model (used by tests and on worker shutdown)."""
    global _dataplane, _lock
    if _dataplane is not None:
        await _dataplane.stop()
    _dataplane = None
    _lock = None


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


def _to_request(dp: DataPlane, job_input: Any) -> GenerationRequest:
    if not isinstance(job_input, dict):
        raise InvalidInput("job input must be an object")
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
    )


async def handler(job: dict[str, Any]) -> dict[str, Any]:
    """RunPod handler: one job in, one completion out."""
    dp = await get_dataplane()
    try:
        req = _to_request(dp, job.get("input"))
        async with dp.admitted():
            r = await dp.complete(req)
    except FerryError as exc:
        return {"error": str(exc)}
    return {
        "text": r.text,
        "finish_reason": r.finish_reason,
        "usage": {
            "prompt_tokens": r.prompt_tokens,
            "completion_tokens": r.completion_tokens,
            "total_tokens": r.prompt_tokens + r.completion_tokens,
        },
    }


async def stream_handler(job: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    """Streaming RunPod handler (use with return_aggregate_stream)."""
    dp = await get_dataplane()
    try:
        req = _to_request(dp, job.get("input"))
        async with dp.admitted():
            async for chunk in dp.stream(req):
                yield {"text": chunk.text, "finish_reason": chunk.finish_reason}
    except FerryError as exc:
        yield {"error": str(exc)}


def concurrency_modifier(_current: int) -> int:
    """Let RunPod send up to a batch's worth of jobs at once so the batcher can fill."""
    return Settings.from_env().max_batch_size


def main() -> None:  # pragma: no cover - needs the RunPod runtime
    import runpod

    runpod.serverless.start(
        {"handler": handler, "concurrency_modifier": concurrency_modifier}
    )


if __name__ == "__main__":  # pragma: no cover
    main()
