"""Request bodies of the OpenAI-compatible API; each converts itself into generation requests.

Every parameter is either honoured or rejected with a 400 naming it, never accepted and dropped:
* types are strict, so a wrong type is a 400, never a silent coercion;
* unknown fields are rejected (`extra="forbid"`); `null` counts as absent, as in OpenAI's API;
* OpenAI parameters the server knows but does not honour are in UNSUPPORTED, with the values
  that change nothing (accepted) and the reason given for any other value;
* `user` is accepted and ignored: OpenAI itself treats it as metadata about the caller.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ferry_server.dataplane import DataPlane
from ferry_server.engine.base import GenerationRequest
from ferry_server.errors import InvalidInput

MAX_N = 128  # OpenAI's own bound on n
MAX_TOP_LOGPROBS = 20  # chat's top_logprobs, as OpenAI
MAX_COMPLETION_LOGPROBS = 5  # completions' logprobs, as OpenAI

_TOOLS = "tool and function calling are not supported"
# name -> (values that leave the request unchanged, why any other value is refused)
UNSUPPORTED: dict[str, tuple[tuple[Any, ...], str]] = {
    "response_format": (({"type": "text"},), "output is not constrained to JSON or a schema"),
    "tools": (([],), _TOOLS),
    "tool_choice": (("none",), _TOOLS),
    "functions": (([],), _TOOLS),
    "function_call": (("none",), _TOOLS),
    "parallel_tool_calls": ((), _TOOLS),
    "suffix": (("",), "inserting text before a suffix is not supported"),
    "echo": ((False,), "echoing the prompt back is not supported"),
    "best_of": ((1,), "best_of is not supported; n returns several completions"),
}


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class StreamOptions(_Strict):
    """`stream_options`: only `include_usage` exists for these endpoints."""

    include_usage: bool | None = None


class _Sampling(_Strict):
    """Fields shared by the OpenAI endpoints.

    Each request lists it first among its bases so that these fields come after the
    endpoint's own ones (pydantic orders fields by reversed MRO), keeping the field order,
    and with it which validation error is reported first, as if they were written inline.
    """

    temperature: float | None = None
    top_p: float | None = None
    n: int | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    # vLLM's extension: keep generating past the end-of-text token (null: the default).
    ignore_eos: bool | None = None

    @property
    def include_usage(self) -> bool:
        """Whether a streamed response ends with a usage chunk."""
        return bool(self.stream_options and self.stream_options.include_usage)

    def _check(self) -> int:
        """Reject what is not honoured; return n."""
        for name in type(self).model_fields:
            if name in UNSUPPORTED:
                value = getattr(self, name)
                neutral, why = UNSUPPORTED[name]
                if value is not None and value not in neutral:
                    raise InvalidInput(f"{name} is not supported by this server: {why}", name)
        if self.stream_options is not None and not self.stream:
            raise InvalidInput("stream_options is only allowed with stream: true",
                               "stream_options")
        n = 1 if self.n is None else self.n
        if not 1 <= n <= MAX_N:
            raise InvalidInput(f"n must be between 1 and {MAX_N}, got {n}", "n")
        return n

    def _requests(
        self, dp: DataPlane, prompts: list[str], n: int, **fields: Any
    ) -> list[GenerationRequest]:
        """n requests per prompt, in OpenAI's choice order (prompt-major).

        With a seed, choice i samples with seed + i: n identical samples would be pointless.
        """
        try:
            bias = {int(k): v for k, v in (self.logit_bias or {}).items()}
        except ValueError:
            raise InvalidInput("logit_bias keys must be token ids (integers)",
                               "logit_bias") from None
        return [
            dp.build_request(
                prompt,
                temperature=1.0 if self.temperature is None else self.temperature,
                top_p=1.0 if self.top_p is None else self.top_p,
                stop=self.stop,
                # The client's own seed is checked as sent; the derived ones wrap.
                seed=self.seed if self.seed is None or i == 0 else wrap_seed(self.seed + i),
                ignore_eos=bool(self.ignore_eos),
                presence_penalty=self.presence_penalty or 0.0,
                frequency_penalty=self.frequency_penalty or 0.0,
                logit_bias=bias,
                **fields,
            )
            for prompt in prompts
            for i in range(n)
        ]


class _CompletionFields(_Strict):
    model: str | None = None
    prompt: str | list[str]
    max_tokens: int | None = None
    logprobs: int | None = None
    suffix: str | None = None
    echo: bool | None = None
    best_of: int | None = None


class CompletionRequest(_Sampling, _CompletionFields):
    """POST /v1/completions."""

    def generation_requests(self, dp: DataPlane) -> list[GenerationRequest]:
        n = self._check()
        prompts = [self.prompt] if isinstance(self.prompt, str) else self.prompt
        if not prompts:
            raise InvalidInput("prompt must not be an empty list", "prompt")
        if self.logprobs is not None and not 0 <= self.logprobs <= MAX_COMPLETION_LOGPROBS:
            raise InvalidInput(
                f"logprobs must be between 0 and {MAX_COMPLETION_LOGPROBS}, got {self.logprobs}",
                "logprobs",
            )
        return self._requests(dp, prompts, n, max_tokens=self.max_tokens, logprobs=self.logprobs)


def wrap_seed(seed: int) -> int:
    """`seed` folded into the signed 64-bit range (choice i of n uses seed + i)."""
    return (seed + 2**63) % 2**64 - 2**63


class ChatMessage(_Strict):
    """One chat turn: text, or a list of text parts; `content: null` only for the assistant."""

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None  # passed to the model's chat template, which may use it
    # Known OpenAI fields of tool-call history: refused by name, as `tools` is.
    tool_calls: Any = None
    tool_call_id: Any = None
    function_call: Any = None

    def rendered(self, i: int) -> dict[str, str]:
        """The message as the chat template takes it; text parts joined with newlines."""
        for field in ("tool_calls", "tool_call_id", "function_call"):
            if getattr(self, field) is not None:
                raise InvalidInput(f"messages[{i}].{field}: {_TOOLS}", f"messages[{i}].{field}")
        if self.role == "tool":
            raise InvalidInput(f"messages[{i}].role tool: {_TOOLS}", f"messages[{i}].role")
        where = f"messages[{i}].content"
        if self.content is None:
            if self.role != "assistant":
                raise InvalidInput(f"{where} is required for a {self.role} message", where)
            text = ""
        elif isinstance(self.content, str):
            text = self.content
        else:
            text = "\n".join(_text_part(part, f"{where}[{j}]")
                             for j, part in enumerate(self.content))
        message = {"role": self.role, "content": text}
        if self.name is not None:
            message["name"] = self.name
        return message


def _text_part(part: dict[str, Any], where: str) -> str:
    kind = part.get("type")
    if kind != "text":
        raise InvalidInput(
            f"{where}: content parts of type {kind!r} are not supported; this server reads "
            "text parts only",
            where,
        )
    unknown = sorted(set(part) - {"type", "text"})
    if unknown:
        raise InvalidInput(f"{where}.{unknown[0]}: unknown field in a text part",
                           f"{where}.{unknown[0]}")
    text = part.get("text")
    if not isinstance(text, str):
        raise InvalidInput(f"{where}.text must be a string", f"{where}.text")
    return text


class _ChatFields(_Strict):
    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    response_format: dict[str, Any] | None = None
    tools: list[Any] | None = None
    tool_choice: str | dict[str, Any] | None = None
    functions: list[Any] | None = None
    function_call: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None


class ChatCompletionRequest(_Sampling, _ChatFields):
    """POST /v1/chat/completions."""

    def generation_requests(self, dp: DataPlane) -> list[GenerationRequest]:
        n = self._check()
        if (self.max_tokens is not None and self.max_completion_tokens is not None
                and self.max_tokens != self.max_completion_tokens):
            raise InvalidInput(
                "max_tokens and max_completion_tokens disagree; set only max_completion_tokens",
                "max_tokens",
            )
        if self.top_logprobs is not None:
            if not self.logprobs:
                raise InvalidInput("top_logprobs requires logprobs: true", "top_logprobs")
            if not 0 <= self.top_logprobs <= MAX_TOP_LOGPROBS:
                raise InvalidInput(
                    f"top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}, "
                    f"got {self.top_logprobs}",
                    "top_logprobs",
                )
        messages = [m.rendered(i) for i, m in enumerate(self.messages)]
        prompt = dp.engine.apply_chat_template(messages)
        max_tokens = (
            self.max_completion_tokens if self.max_completion_tokens is not None
            else self.max_tokens
        )
        return self._requests(
            dp, [prompt], n,
            max_tokens=max_tokens,
            # No max_tokens: up to the context and the server's limit, never a small default.
            fit_context=True,
            logprobs=(self.top_logprobs or 0) if self.logprobs else None,
        )


class GenerateRequest(_Strict):
    """POST /generate, the minimal API from the serverless reference article."""

    prompt: str
    max_new_tokens: int = 50
    temperature: float = 0.0
