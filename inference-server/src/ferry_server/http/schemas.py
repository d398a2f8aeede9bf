"""Request bodies; strict types so a wrong type is a 400, never a silent coercion."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class CompletionRequest(_Strict):
    """POST /v1/completions."""

    model: str | None = None
    prompt: str | list[str]
    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    n: int = 1
    stream: bool = False
    stop: str | list[str] | None = None
    seed: int | None = None
    ignore_eos: bool = False


class ChatMessage(_Strict):
    """One chat turn."""

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str


class ChatCompletionRequest(_Strict):
    """POST /v1/chat/completions."""

    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    n: int = 1
    stream: bool = False
    stop: str | list[str] | None = None
    seed: int | None = None
    ignore_eos: bool = False


class GenerateRequest(_Strict):
    """POST /generate, the minimal API from the serverless reference article."""

    prompt: str
    max_new_tokens: int = 50
    temperature: float = 0.0
