"""The OpenAI API as the official `openai` client speaks it, against the real server process.

The client builds its response objects without validating them, so every response here is
validated again against the client's typed models (`typed`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from conftest import AUTH_TOKEN, SERVED_NAME, ServerProcess, metric_value
from openai.types import Completion
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import BaseModel
from transformers import AutoTokenizer
from transformers.models.gpt2.tokenization_gpt2 import bytes_to_unicode

from ferry_server.engine.detokenizer import token_text

IGNORE_EOS = {"ignore_eos": True}  # vLLM's extension: a random model would stop anywhere
USER_HI = [{"role": "user", "content": "hi"}]


def typed(obj: BaseModel) -> BaseModel:
    """Validate a response the client built (unvalidated) against its own typed model."""
    if isinstance(obj, Completion) and any(c.finish_reason is None for c in obj.choices):
        # openai-python types CompletionChoice.finish_reason as non-null, yet OpenAI's API
        # itself streams null there until the last chunk, as this server does.
        data = obj.to_dict()
        for c in data["choices"]:
            c["finish_reason"] = c["finish_reason"] or "stop"
        return Completion.model_validate(data)
    return type(obj).model_validate(obj.to_dict())


def chat(client: openai.OpenAI, **kw: Any) -> Any:
    kw.setdefault("messages", USER_HI)
    kw.setdefault("temperature", 0.0)
    kw.setdefault("extra_body", IGNORE_EOS)
    return client.chat.completions.create(model=SERVED_NAME, **kw)


def complete(client: openai.OpenAI, **kw: Any) -> Any:
    kw.setdefault("prompt", "Once upon a time")
    kw.setdefault("temperature", 0.0)
    kw.setdefault("extra_body", IGNORE_EOS)
    return client.completions.create(model=SERVED_NAME, **kw)


def raw_events(create: Callable[..., Any], **kw: Any) -> list[Any]:
    """The SSE events exactly as sent, through the client's streaming raw response."""
    with create(model=SERVED_NAME, **kw) as resp:
        lines = [line for line in resp.iter_lines() if line.startswith("data: ")]
    data = [line.removeprefix("data: ") for line in lines]
    return [d if d == "[DONE]" else json.loads(d) for d in data]


@pytest.fixture(scope="module")
def tokenizer(tiny_model: Path) -> Any:
    """The shared server's tokenizer (hf://ferry/tiny is a copy of tiny_model)."""
    return AutoTokenizer.from_pretrained(str(tiny_model))


# ---- 1. max_tokens defaults ---------------------------------------------------------------


def test_chat_without_max_tokens_runs_to_the_limit_or_the_context(
    openai_client: openai.OpenAI,
) -> None:
    short = typed(chat(openai_client))
    assert isinstance(short, ChatCompletion)
    assert short.choices[0].finish_reason == "length"
    assert short.usage is not None
    assert short.usage.completion_tokens == 1000  # the server's FERRY_MAX_TOKENS_LIMIT

    long = typed(chat(openai_client, messages=[{"role": "user", "content": "word " * 200}]))
    assert isinstance(long, ChatCompletion)
    assert long.usage is not None
    assert long.usage.completion_tokens < 1000
    assert long.usage.prompt_tokens + long.usage.completion_tokens == 1024  # the context

    legacy = typed(complete(openai_client))
    assert isinstance(legacy, Completion)
    assert legacy.usage is not None
    assert legacy.usage.completion_tokens == 16  # completions keep OpenAI's legacy default


# ---- 2. message content ---------------------------------------------------------------------


def test_content_parts_are_joined_in_order_and_assistant_content_may_be_null(
    openai_client: openai.OpenAI,
) -> None:
    def answer(messages: list[dict[str, Any]]) -> tuple[str | None, int]:
        out = typed(chat(openai_client, messages=messages, max_tokens=8))
        assert isinstance(out, ChatCompletion)
        assert out.usage is not None
        return out.choices[0].message.content, out.usage.prompt_tokens

    one_part = [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    assert answer(one_part) == answer(USER_HI)
    two_parts = [{"role": "user", "content": [{"type": "text", "text": "Be brief."},
                                              {"type": "text", "text": "What is a GPU?"}]}]
    joined = [{"role": "user", "content": "Be brief.\nWhat is a GPU?"}]
    assert answer(two_parts) == answer(joined)
    history = [*USER_HI, {"role": "assistant", "content": None},
               {"role": "user", "content": "again"}]
    text, _ = answer(history)
    assert text


@pytest.mark.parametrize(("messages", "param"), [
    ([{"role": "system", "content": "Describe it."},
      {"role": "user", "content": [
          {"type": "text", "text": "What is this?"},
          {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}],
     "messages[1].content[1]"),
    ([{"role": "user", "content": [{"type": "input_audio",
                                    "input_audio": {"data": "AAAA", "format": "wav"}}]}],
     "messages[0].content[0]"),
    ([{"role": "user", "content": None}], "messages[0].content"),
], ids=["image", "audio", "null-user-content"])
def test_content_the_server_cannot_read_is_a_400_naming_it(
    openai_client: openai.OpenAI, messages: list[dict[str, Any]], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        chat(openai_client, messages=messages, max_tokens=4)
    assert err.value.param == param
    assert param in err.value.message


# ---- 3. stream_options ----------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_include_usage_adds_exactly_one_usage_chunk_before_done(
    openai_client: openai.OpenAI, endpoint: str
) -> None:
    call = chat if endpoint == "chat" else complete
    whole = call(openai_client, max_tokens=12)
    chunks = [typed(c) for c in call(openai_client, max_tokens=12, stream=True,
                                     stream_options={"include_usage": True})]
    with_usage = [c for c in chunks if getattr(c, "usage", None) is not None]
    assert with_usage == [chunks[-1]]
    last = chunks[-1]
    assert isinstance(last, ChatCompletionChunk | Completion)
    assert last.choices == []
    assert last.usage == whole.usage
    assert last.usage is not None
    assert last.usage.completion_tokens == 12

    create = (openai_client.chat.completions.with_streaming_response.create
              if endpoint == "chat" else openai_client.completions.with_streaming_response.create)
    args: dict[str, Any] = {"max_tokens": 12, "temperature": 0.0, "extra_body": IGNORE_EOS,
                            "stream": True}
    args.update({"messages": USER_HI} if endpoint == "chat" else {"prompt": "Once upon a time"})
    asked = raw_events(create, stream_options={"include_usage": True}, **args)
    assert asked[-1] == "[DONE]"
    assert asked[-2]["choices"] == []
    assert asked[-2]["usage"]["total_tokens"] == whole.usage.total_tokens
    assert all(e["usage"] is None for e in asked[:-2])
    not_asked = raw_events(create, **args)
    assert not_asked[-1] == "[DONE]"
    assert not any("usage" in e for e in not_asked[:-1])
    assert all(e["choices"] for e in not_asked[:-1])


# ---- 4. logprobs, n, penalties, logit_bias: honoured ----------------------------------------


def test_chat_logprobs_with_top_logprobs_streamed_and_not(openai_client: openai.OpenAI) -> None:
    out = typed(chat(openai_client, max_tokens=10, logprobs=True, top_logprobs=3))
    assert isinstance(out, ChatCompletion)
    logprobs = out.choices[0].logprobs
    assert logprobs is not None
    assert logprobs.content is not None
    assert len(logprobs.content) == 10
    for e in logprobs.content:
        assert e.logprob <= 0
        assert [t.logprob for t in e.top_logprobs] == sorted(
            (t.logprob for t in e.top_logprobs), reverse=True)
        assert len(e.top_logprobs) == 3
        # Greedy: the chosen token is the most likely one.
        assert (e.token, e.logprob) == (e.top_logprobs[0].token, e.top_logprobs[0].logprob)
        assert e.bytes is not None
        assert e.token == token_text(bytes(e.bytes))
    streamed = [
        e
        for chunk in chat(openai_client, max_tokens=10, logprobs=True, top_logprobs=3,
                          stream=True)
        for choice in typed(chunk).choices  # type: ignore[attr-defined]
        if choice.logprobs is not None and choice.logprobs.content
        for e in choice.logprobs.content
    ]
    assert [(e.token, e.logprob) for e in streamed] == [
        (e.token, e.logprob) for e in logprobs.content]
    plain = chat(openai_client, max_tokens=10, logprobs=False)
    assert plain.choices[0].logprobs is None


def test_completion_logprobs(openai_client: openai.OpenAI) -> None:
    out = typed(complete(openai_client, max_tokens=8, logprobs=2))
    assert isinstance(out, Completion)
    lp = out.choices[0].logprobs
    assert lp is not None
    assert lp.tokens is not None
    assert lp.token_logprobs is not None
    assert lp.top_logprobs is not None
    assert lp.text_offset is not None
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 8
    for token, logprob, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=True):
        assert 2 <= len(top) <= 3
        assert top[token] == logprob == max(top.values())
    assert lp.text_offset[0] == 0
    assert lp.text_offset == sorted(lp.text_offset)


def test_completion_text_offsets_count_characters_even_for_split_ones(
    openai_client: openai.OpenAI,
) -> None:
    """Sampled text splits characters across tokens (their label is `bytes:\\x..`): the
    offsets still count the characters each token completes, streamed or not."""
    split = 0
    for seed in range(12):
        kw: dict[str, Any] = {"max_tokens": 16, "logprobs": 1, "seed": seed, "temperature": 1.0}
        out = complete(openai_client, **kw)
        lp = out.choices[0].logprobs
        text = out.choices[0].text
        split += sum(t.startswith("bytes:") for t in lp.tokens)
        assert all(0 <= o <= len(text) for o in lp.text_offset), (text, lp.text_offset)
        assert lp.text_offset == sorted(lp.text_offset)
        streamed = [
            o
            for chunk in complete(openai_client, stream=True, **kw)
            if chunk.choices and chunk.choices[0].logprobs
            for o in chunk.choices[0].logprobs.text_offset
        ]
        assert streamed == lp.text_offset
    assert split, "no seed split a character: the test would not see the bug it guards"


def test_n_choices_seeded_streamed_and_not(openai_client: openai.OpenAI) -> None:
    kw: dict[str, Any] = {"max_tokens": 12, "n": 3, "seed": 11, "temperature": 1.0}
    a = typed(complete(openai_client, **kw))
    b = typed(complete(openai_client, **kw))
    single = complete(openai_client, max_tokens=12)
    assert isinstance(a, Completion)
    assert isinstance(b, Completion)
    assert [c.index for c in a.choices] == [0, 1, 2]
    assert [c.text for c in a.choices] == [c.text for c in b.choices]
    assert len({c.text for c in a.choices}) > 1, "choices share a seed"
    assert a.usage is not None
    assert a.usage.completion_tokens == 36
    assert a.usage.prompt_tokens == single.usage.prompt_tokens

    kw = {"max_tokens": 10, "n": 2, "seed": 5, "temperature": 1.0}
    whole = chat(openai_client, **kw)
    texts = ["", ""]
    finished = [None, None]
    for chunk in chat(openai_client, stream=True, **kw):
        for choice in typed(chunk).choices:  # type: ignore[attr-defined]
            texts[choice.index] += choice.delta.content or ""
            finished[choice.index] = choice.finish_reason or finished[choice.index]
    assert texts == [c.message.content for c in whole.choices]
    assert finished == ["length", "length"]


def test_logit_bias_and_penalties_follow_openais_formula(
    openai_client: openai.OpenAI, tokenizer: Any
) -> None:
    tid = tokenizer.encode(" quick", add_special_tokens=False)[0]
    piece = tokenizer.decode([tid])
    kw: dict[str, Any] = {"prompt": "Hello", "max_tokens": 8}
    forced = complete(openai_client, logit_bias={str(tid): 10}, **kw)
    assert forced.choices[0].text == piece * 8
    # presence_penalty subtracts 2 once: +10 still wins. frequency_penalty subtracts 2 per
    # occurrence: by the fifth the bias is used up and other tokens win.
    presence = complete(openai_client, logit_bias={str(tid): 10}, presence_penalty=2.0, **kw)
    assert presence.choices[0].text == piece * 8
    frequency = complete(openai_client, logit_bias={str(tid): 10}, frequency_penalty=2.0, **kw)
    assert 3 <= frequency.choices[0].text.count(piece) < 8
    # -100 bans a token: the greedy choice's id, from its bytes (byte-level BPE vocabulary).
    greedy = chat(openai_client, max_tokens=1, logprobs=True).choices[0].logprobs.content[0]
    to_char = bytes_to_unicode()
    first = tokenizer.convert_tokens_to_ids("".join(to_char[b] for b in greedy.bytes))
    banned = chat(openai_client, max_tokens=1, logprobs=True, logit_bias={str(first): -100})
    assert banned.choices[0].logprobs.content[0].bytes != greedy.bytes
    with pytest.raises(openai.BadRequestError) as err:
        complete(openai_client, logit_bias={"999999": 5}, **kw)
    assert err.value.param == "logit_bias"


# ---- 4. everything else: a 400 naming the parameter ----------------------------------------

TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
REJECTED: list[tuple[str, dict[str, Any], str]] = [
    ("chat", {"response_format": {"type": "json_object"}}, "response_format"),
    ("chat", {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
     "response_format"),
    ("chat", {"tools": [TOOL]}, "tools"),
    ("chat", {"tool_choice": "auto"}, "tool_choice"),
    ("chat", {"functions": [{"name": "f", "parameters": {}}]}, "functions"),
    ("chat", {"function_call": "auto"}, "function_call"),
    ("chat", {"parallel_tool_calls": True}, "parallel_tool_calls"),
    ("chat", {"top_logprobs": 2}, "top_logprobs"),
    ("chat", {"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ("chat", {"stream_options": {"include_usage": True}}, "stream_options"),
    ("chat", {"store": True}, "store"),
    ("chat", {"metadata": {"k": "v"}}, "metadata"),
    ("chat", {"reasoning_effort": "high"}, "reasoning_effort"),
    ("chat", {"presence_penalty": 3.0}, "presence_penalty"),
    ("chat", {"extra_body": {"frobnicate": 1}}, "frobnicate"),
    ("chat", {"messages": [{"role": "user", "content": "hi", "tool_call_id": "x"}]},
     "messages[0].tool_call_id"),
    ("chat", {"messages": [{"role": "user", "content": "hi"},
                           {"role": "assistant", "content": None, "tool_calls": [
                               {"id": "a", "type": "function",
                                "function": {"name": "f", "arguments": "{}"}}]}]},
     "messages[1].tool_calls"),
    ("chat", {"messages": [{"role": "tool", "content": "r"}]}, "messages[0].role"),
    ("completions", {"suffix": "the end"}, "suffix"),
    ("completions", {"best_of": 2}, "best_of"),
    ("completions", {"echo": True}, "echo"),
    ("completions", {"logprobs": 6}, "logprobs"),
    ("completions", {"prompt": [1, 2, 3]}, "prompt"),
]


@pytest.mark.parametrize(("endpoint", "kw", "param"), REJECTED,
                         ids=[f"{e}-{p}" for e, _, p in REJECTED])
def test_parameters_not_honoured_are_a_400_naming_them(
    openai_client: openai.OpenAI, endpoint: str, kw: dict[str, Any], param: str
) -> None:
    call = chat if endpoint == "chat" else complete
    with pytest.raises(openai.BadRequestError) as err:
        call(openai_client, max_tokens=2, **kw)
    assert err.value.param == param
    assert param in err.value.message
    assert err.value.type == "invalid_request_error"


ACCEPTED: list[tuple[str, dict[str, Any]]] = [
    ("chat", {"response_format": {"type": "text"}}),
    ("chat", {"tools": []}),
    ("chat", {"tool_choice": "none"}),
    ("chat", {"user": "alice"}),
    ("chat", {"logprobs": False}),
    ("chat", {"messages": [{"role": "user", "content": "hi", "name": "alice"}]}),
    ("chat", {"max_completion_tokens": 2, "max_tokens": 2}),
    ("completions", {"best_of": 1}),
    ("completions", {"echo": False}),
    ("completions", {"user": "alice"}),
    ("chat", {"extra_body": {"ignore_eos": None}}),
]


@pytest.mark.parametrize(("endpoint", "kw"), ACCEPTED,
                         ids=[f"{e}-{next(iter(k))}" for e, k in ACCEPTED])
def test_values_that_change_nothing_are_accepted(
    openai_client: openai.OpenAI, endpoint: str, kw: dict[str, Any]
) -> None:
    call = chat if endpoint == "chat" else complete
    out = typed(call(openai_client, **{"max_tokens": 2, **kw}))
    assert out.usage is not None  # type: ignore[attr-defined]
    assert out.usage.completion_tokens == 2  # type: ignore[attr-defined]


def test_the_largest_seed_works_with_several_choices(openai_client: openai.OpenAI) -> None:
    out = typed(chat(openai_client, max_tokens=2, seed=2**63 - 1, n=2, temperature=1.0))
    assert len(out.choices) == 2


# ---- 5. a client that goes away -------------------------------------------------------------


def test_abandoned_non_streaming_request_stops_generating(server: ServerProcess) -> None:
    max_tokens = 1000

    async def scenario() -> tuple[str, str]:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as probe:

            async def metrics_when(ok: Callable[[str], bool]) -> str:
                for _ in range(3000):  # generous: 60 s
                    text = (await probe.get("/metrics")).text
                    if ok(text):
                        return text
                    await asyncio.sleep(0.02)
                raise AssertionError(f"metrics never reached the expected state:\n{text}")

            before = await metrics_when(lambda m: metric_value(m, "ferry_inflight_requests") == 0)
            async with openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key=AUTH_TOKEN,
                                          max_retries=0) as client:
                task = asyncio.create_task(client.completions.create(
                    model=SERVED_NAME, prompt="nobody will read this", max_tokens=max_tokens,
                    temperature=0.0, extra_body=IGNORE_EOS))
                await metrics_when(lambda m: metric_value(m, "ferry_decoding_requests") >= 1)
                task.cancel()  # the client goes away; its connection closes
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            after = await metrics_when(
                lambda m: metric_value(m, "ferry_decoding_requests") == 0
                and metric_value(m, "ferry_inflight_requests") == 0)
        return before, after

    before, after = asyncio.run(scenario())

    def delta(name: str, labels: str = "") -> float:
        return metric_value(after, name, labels) - metric_value(before, name, labels)

    assert delta("ferry_aborted_requests_total") == 1
    assert 0 < delta("ferry_generated_tokens_total") < max_tokens
    assert delta("ferry_requests_total", 'route="/v1/completions",status="499"') == 1


def test_an_invalid_streaming_request_is_a_plain_400(openai_client: openai.OpenAI) -> None:
    # Validation happens before the first byte: a status code, never a broken event stream.
    with pytest.raises(openai.BadRequestError) as err:
        chat(openai_client, max_tokens=10**6, stream=True)
    assert err.value.param == "max_tokens"
