"""Token counting and chat templating over a Hugging Face tokenizer, shared by the engines."""

from __future__ import annotations

from typing import Any

from ferry_server.engine.base import Engine
from ferry_server.errors import ModelNotReady


class HFTokenizerEngine(Engine):
    """An engine whose `load` sets `_tokenizer` (a HF tokenizer) and `_max_context`."""

    _tokenizer: Any
    _max_context: int

    @property
    def max_context(self) -> int:
        return self._max_context

    def count_tokens(self, text: str) -> int:
        if self._tokenizer is None:
            raise ModelNotReady("model is not loaded")
        return len(self._tokenizer.encode(text, add_special_tokens=False))

    def apply_chat_template(self, messages: list[dict[str, str]]) -> str:
        if self._tokenizer is None:
            raise ModelNotReady("model is not loaded")
        if getattr(self._tokenizer, "chat_template", None):
            rendered = self._tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
            return str(rendered)
        lines = [
            f"{m['role']} ({m['name']}): {m['content']}" if m.get("name")
            else f"{m['role']}: {m['content']}"
            for m in messages
        ]
        return "\n".join([*lines, "assistant:"])
