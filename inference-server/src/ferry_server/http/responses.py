"""Response bodies of the OpenAI endpoints and the one SSE shaper both of them stream through.

Shapes follow the `openai` client's typed models (ChatCompletion, ChatCompletionChunk,
Completion); the tests validate every response against them.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Any

from ferry_server.engine.base import GenerationResult, TokenChunk, TokenLogprob
from ferry_server.errors import FerryError
from ferry_server.http.errors import error_body, error_kind

DONE = b"data: [DONE]\n\n"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def sse(payload: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


def _chat_token(e: TokenLogprob) -> dict[str, Any]:
    return {"token": e.token, "logprob": e.logprob, "bytes": list(e.token_bytes)}


def chat_logprobs(entries: Sequence[TokenLogprob]) -> dict[str, Any]:
    """ChoiceLogprobs: each token with its `top_logprobs` alternatives."""
    return {
        "content": [
            {**_chat_token(e), "top_logprobs": [_chat_token(t) for t in e.top]} for e in entries
        ],
        "refusal": None,
    }


def _utf8() -> codecs.IncrementalDecoder:
    return codecs.getincrementaldecoder("utf-8")(errors="replace")


def text_offsets(
    entries: Sequence[TokenLogprob], offset: int, text: codecs.IncrementalDecoder
) -> list[int]:
    """Where each token's text starts, in characters; `text` keeps a split character's bytes."""
    offsets = []
    for e in entries:
        offsets.append(offset)
        if not e.special:  # the decoded text skips special tokens
            offset += len(text.decode(e.token_bytes))
    return offsets


def completion_logprobs(
    entries: Sequence[TokenLogprob], offset: int, text: codecs.IncrementalDecoder
) -> dict[str, Any]:
    """Legacy completions logprobs; `text_offset` counts characters from the completion's start
    (`offset` is where these tokens begin), and each `top_logprobs` dict also holds the
    sampled token, as OpenAI's does.

    A token adds the characters its bytes complete (none while a character is still split
    across tokens), never the length of its `bytes:\\x..` label: `text` is the UTF-8
    decoder that has seen every earlier token of this choice."""
    offsets = text_offsets(entries, offset, text)
    return {
        "tokens": [e.token for e in entries],
        "token_logprobs": [e.logprob for e in entries],
        "top_logprobs": [{**{t.token: t.logprob for t in e.top}, e.token: e.logprob}
                         for e in entries],
        "text_offset": offsets,
    }


class Shape:
    """What differs between chat and completions; `logprobs` says whether they were asked for."""

    def __init__(self, chat: bool, model: str, logprobs: bool, n: int) -> None:
        self.chat = chat
        self.logprobs = logprobs
        self.n = n  # choices per prompt: prompt tokens are counted once per prompt
        self.head = {
            "id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}",
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()),
            "model": model,
        }
        # completions: characters so far and the UTF-8 decoder that counted them, per choice
        self._offsets: dict[int, tuple[int, codecs.IncrementalDecoder]] = {}

    def _logprobs(self, index: int, entries: Sequence[TokenLogprob]) -> dict[str, Any] | None:
        if not self.logprobs:
            return None
        if self.chat:
            return chat_logprobs(entries)
        start, text = self._offsets.get(index) or (0, _utf8())
        counter = _utf8()  # counts this chunk's characters ahead of `text`
        counter.setstate(text.getstate())
        end = start + sum(len(counter.decode(e.token_bytes)) for e in entries if not e.special)
        self._offsets[index] = (end, counter)
        return completion_logprobs(entries, start, text)

    def body(self, results: Sequence[GenerationResult]) -> dict[str, Any]:
        """The whole (non-streamed) response."""
        choices = []
        for i, r in enumerate(results):
            choice: dict[str, Any] = {"index": i, "finish_reason": r.finish_reason,
                                      "logprobs": self._logprobs(i, r.logprobs)}
            if self.chat:
                choice["message"] = {"role": "assistant", "content": r.text, "refusal": None}
            else:
                choice["text"] = r.text
            choices.append(choice)
        prompt = sum(r.prompt_tokens for r in results[:: self.n])
        return {**self.head, "choices": choices,
                "usage": usage(prompt, sum(r.completion_tokens for r in results))}

    def _chunk_choice(self, index: int, chunk: TokenChunk) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": index, "finish_reason": chunk.finish_reason,
                                  "logprobs": self._logprobs(index, chunk.logprobs)}
        if self.chat:
            choice["delta"] = {"content": chunk.text} if chunk.text else {}
        else:
            choice["text"] = chunk.text
        return choice

    async def events(
        self, streams: list[AsyncGenerator[TokenChunk, None]], include_usage: bool
    ) -> AsyncIterator[bytes]:
        """The SSE body: chunks as they come; with include_usage, every chunk has `usage: null`
        and one more chunk with `choices: []` and the totals precedes `data: [DONE]`."""
        head = {**self.head,
                "object": "chat.completion.chunk" if self.chat else "text_completion"}
        extra: dict[str, Any] = {"usage": None} if include_usage else {}
        prompt = [0] * len(streams)
        completion = [0] * len(streams)
        if self.chat:
            for i in range(len(streams)):
                opening = {"index": i, "delta": {"role": "assistant", "content": ""},
                           "logprobs": None, "finish_reason": None}
                yield sse({**head, "choices": [opening], **extra})
        try:
            async for i, chunk in _merge(streams):
                yield sse({**head, "choices": [self._chunk_choice(i, chunk)], **extra})
                if chunk.finish_reason is not None:
                    prompt[i], completion[i] = chunk.prompt_tokens, chunk.completion_tokens
        except FerryError as exc:  # after the 200 is sent: an error event, as OpenAI's API does
            yield sse(error_body(str(exc), error_kind(exc)))
            return
        if include_usage:
            yield sse({**head, "choices": [], "usage": usage(sum(prompt[:: self.n]),
                                                             sum(completion))})
        yield DONE


async def _merge(
    streams: list[AsyncGenerator[TokenChunk, None]],
) -> AsyncIterator[tuple[int, TokenChunk]]:
    """Chunks of several streams as they come, tagged with the stream's index."""
    if len(streams) == 1:
        async with contextlib.aclosing(streams[0]) as only:
            async for chunk in only:
                yield 0, chunk
        return
    queue: asyncio.Queue[tuple[int, TokenChunk | BaseException | None]] = asyncio.Queue()

    async def pump(i: int, stream: AsyncGenerator[TokenChunk, None]) -> None:
        try:
            async with contextlib.aclosing(stream):
                async for chunk in stream:
                    queue.put_nowait((i, chunk))
        except Exception as exc:
            queue.put_nowait((i, exc))
        finally:
            queue.put_nowait((i, None))

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    try:
        running = len(tasks)
        while running:
            i, item = await queue.get()
            if item is None:
                running -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield i, item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
