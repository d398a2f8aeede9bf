"""vLLM engine for GPUs: continuous batching and paged attention come from vLLM itself.

Used when FERRY_ENGINE=vllm, or FERRY_ENGINE=auto with vLLM installed and a GPU present.
It resolves the model through the same code path (local path or hf://) and size check as the
transformers engine. It is not exercised by the CPU test suite.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncGenerator
from typing import Any

from ferry_server.config import Settings
from ferry_server.engine.base import PENALTIES, GenerationRequest, TokenChunk
from ferry_server.engine.tokenizing import HFTokenizerEngine
from ferry_server.errors import InvalidInput, ModelNotReady
from ferry_server.metrics import Metrics
from ferry_server.model_source import resolve_model_dir, weight_bytes


class VLLMEngine(HFTokenizerEngine):
    """Serves a model with vllm.AsyncLLMEngine.

    Logprobs and logit_bias are not wired to vLLM yet (nothing here tests them), so the data
    plane rejects them for this engine rather than answer without them.
    """

    name = "vllm"
    features = frozenset({PENALTIES})

    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        super().__init__()
        self.settings = settings
        self._metrics = metrics
        self._engine: Any = None
        self._tokenizer: Any = None
        self._max_context = 2048

    async def load(self) -> None:
        t0 = time.perf_counter()
        from vllm import AsyncEngineArgs, AsyncLLMEngine

        self.timings.phases["import"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        model_dir = resolve_model_dir(self.settings.model)
        weight_bytes(model_dir)
        args = AsyncEngineArgs(
            model=str(model_dir),
            dtype=self.settings.dtype,
            max_num_seqs=max(self.settings.max_batch_size, 1),
            load_format="safetensors",
        )
        self._engine = AsyncLLMEngine.from_engine_args(args)
        self._tokenizer = await self._engine.get_tokenizer()
        model_config = await self._engine.get_model_config()
        self._max_context = int(model_config.max_model_len)
        self.timings.phases["weight_load"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        if self.settings.warmup:
            await self.generate(GenerationRequest(prompt="Hello", max_tokens=2, ignore_eos=True))
        self.timings.phases["warmup"] = time.perf_counter() - t2

    async def close(self) -> None:
        if self._engine is not None and hasattr(self._engine, "shutdown_background_loop"):
            self._engine.shutdown_background_loop()
        self._engine = None

    def healthy(self) -> bool:
        return self._engine is not None and not getattr(self._engine, "errored", False)

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[TokenChunk, None]:
        if not self.healthy():
            raise ModelNotReady("model is not loaded")
        from vllm import SamplingParams

        n_prompt = self.count_tokens(request.prompt)
        max_tokens = request.max_tokens
        if request.fit_context:
            max_tokens = min(max_tokens, self._max_context - n_prompt)
            if max_tokens < 1:
                raise InvalidInput(
                    f"the prompt ({n_prompt} tokens) fills the model's context of "
                    f"{self._max_context}; nothing is left to generate",
                    param="messages",
                )
        elif n_prompt + max_tokens > self._max_context:
            raise InvalidInput(
                f"prompt ({n_prompt} tokens) plus max_tokens ({max_tokens}) is over "
                f"the model's context of {self._max_context}",
                param="max_tokens",
            )
        params = SamplingParams(
            max_tokens=max_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            stop=list(request.stop) or None,
            seed=request.seed,
            ignore_eos=request.ignore_eos,
            presence_penalty=request.presence_penalty,
            frequency_penalty=request.frequency_penalty,
        )
        sent = 0  # characters and token ids already in a chunk
        sent_ids = 0
        counted = 0
        final: Any = None
        async for output in self._engine.generate(request.prompt, params, uuid.uuid4().hex):
            final = output
            choice = output.outputs[0]
            if self._metrics is not None:
                self._metrics.tokens.inc(len(choice.token_ids) - counted)
            counted = len(choice.token_ids)
            if len(choice.text) > sent and not output.finished:
                yield TokenChunk(text=choice.text[sent:],
                                 token_ids=tuple(int(t) for t in choice.token_ids[sent_ids:]))
                sent = len(choice.text)
                sent_ids = len(choice.token_ids)
        if final is None:
            raise ModelNotReady("vLLM returned no output")
        choice = final.outputs[0]
        yield TokenChunk(
            text=choice.text[sent:],
            finish_reason="length" if choice.finish_reason == "length" else "stop",
            prompt_tokens=len(final.prompt_token_ids or []),
            completion_tokens=len(choice.token_ids),
            token_ids=tuple(int(t) for t in choice.token_ids[sent_ids:]),
        )
