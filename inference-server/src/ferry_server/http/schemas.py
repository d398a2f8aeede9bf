"""Request bodies; strict types so a wrong type is a 400, never a silent coercion."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class _Sampling(_Strict):
    """Sampling fields shared by the OpenAI endpoints.

    Each request lists it first among its bases so that these fields come after the
    endpoint's own ones (pydantic orders fields by reversed MRO), keeping the field order,
    and with it which validation error is reported first, as if they were written inline.
    """

    temperature: float = 1.0
    top_p: float = 1.0
    n: int = 1
    stream: bool = False
    stop: str | list[str] | None = None
    seed: int | None = None
    ignore_eos: bool = False


class _CompletionFields(_Strict):
    model: str | None = None
    prompt: str | list[str]
    max_tokens: int | None = None


class CompletionRequest(_Sampling, _CompletionFields):
    """POST /v1/completions."""


class ChatMessage(_Strict):
    """One chat turn."""

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str


class _ChatFields(_Strict):
    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = None
    max_completion_tokens: int | None = None


class ChatCompletionRequest(_Sampling, _ChatFields):
    """POST /v1/chat/completions."""


class GenerateRequest(_Strict):
    """POST /generate, the minimal API from the serverless reference article."""

    prompt: str
    max_new_tokens: int = 50
    temperature: float = 0.0
