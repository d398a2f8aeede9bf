"""Transformers engine: CPU or GPU, with a dynamic batcher that streams token by token.

Batching design: requests wait in an asyncio queue. A background task takes the first one,
then keeps collecting for `batch_window_ms` (or until `max_batch_size`), and hands the batch to
a single worker thread. The worker left-pads the prompts, runs prefill once, then decodes step
by step with the KV cache, sampling each row with its own temperature/top_p/seed and pushing
each row's new text to that request's queue as soon as it is final (see detokenizer.py). Rows
that finish early (EOS, stop string, their own max_tokens, client gone) stop within one decode
step; the batch ends when every row is done. Requests arriving while a batch runs form the next
batch (static batching per window, not continuous batching; vLLM covers that on GPUs).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

from ferry_server.config import Settings
from ferry_server.engine import sampling
from ferry_server.engine.base import (
    LOGIT_BIAS,
    LOGPROBS,
    PENALTIES,
    FinishReason,
    GenerationRequest,
    TokenChunk,
    TokenLogprob,
)
from ferry_server.engine.detokenizer import Detokenizer, TokenizerInfo, token_text
from ferry_server.engine.tokenizing import HFTokenizerEngine
from ferry_server.errors import (
    InvalidInput,
    ModelLoadError,
    ModelNotReady,
    ModelTooLarge,
    Overloaded,
)
from ferry_server.metrics import Metrics
from ferry_server.model_source import (
    check_fits,
    cpu_free_bytes,
    format_bytes,
    resolve_model_dir,
    weight_bytes,
)

log = logging.getLogger("ferry_server.engine")

_FALLBACK_CONTEXT = 2048


@dataclass
class _Pending:
    """A request waiting for, or running in, a batch."""

    request: GenerationRequest
    input_ids: list[int]
    max_tokens: int
    detok: Detokenizer
    loop: asyncio.AbstractEventLoop
    out: asyncio.Queue[TokenChunk | BaseException]
    cancelled: bool = False
    done: bool = False
    emitted: int = 0  # characters of detok.text already sent
    # Tokens since the last chunk; they ride on the next one, with or without their text.
    new_ids: list[int] = field(default_factory=list)
    new_logprobs: list[TokenLogprob] = field(default_factory=list)

    def push(self, item: TokenChunk | BaseException) -> None:
        self.loop.call_soon_threadsafe(self.out.put_nowait, item)


class TransformersEngine(HFTokenizerEngine):
    """Serves a Hugging Face causal LM with transformers + torch."""

    name = "transformers"
    features = frozenset({LOGPROBS, LOGIT_BIAS, PENALTIES})

    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        super().__init__()
        self.settings = settings
        self._metrics = metrics
        self._model: Any = None
        self._tokenizer: Any = None
        self._info: TokenizerInfo | None = None
        self._vocab = 0
        self._torch: Any = None
        self._device = "cpu"
        self._max_context = _FALLBACK_CONTEXT
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="ferry-gen"
        )
        self._batcher: asyncio.Task[None] | None = None
        self._ready = False
        self._failed = False

    # ---- lifecycle -------------------------------------------------------------------------

    async def load(self) -> None:
        await asyncio.to_thread(self._load_sync)
        self._batcher = asyncio.create_task(self._batch_loop(), name="ferry-batcher")
        self._ready = True
        if self.settings.warmup:
            t0 = time.perf_counter()
            await self.generate(GenerationRequest(prompt="Hello", max_tokens=2, ignore_eos=True))
            self.timings.phases["warmup"] = time.perf_counter() - t0
        else:
            self.timings.phases["warmup"] = 0.0

    def _load_sync(self) -> None:
        t0 = time.perf_counter()
        import torch
        import transformers as _transformers

        transformers: Any = _transformers
        self._torch = torch
        self.timings.phases["import"] = time.perf_counter() - t0

        t1 = time.perf_counter()
        ref = self.settings.model
        model_dir = resolve_model_dir(ref)
        size = weight_bytes(model_dir)
        device = self._pick_device(torch)
        free = self._free_bytes(torch, device)
        check_fits(ref, size, device, free)
        dtype = self._pick_dtype(torch, device)
        log.info(
            "loading model %s (%s of safetensors) onto %s as %s",
            ref, format_bytes(size), device, str(dtype).removeprefix("torch."),
        )
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(str(model_dir))
            model: Any = transformers.AutoModelForCausalLM.from_pretrained(
                str(model_dir),
                use_safetensors=True,
                low_cpu_mem_usage=True,
                device_map=device,
                dtype=dtype,
            )
        except torch.cuda.OutOfMemoryError as exc:
            raise ModelTooLarge(
                f"model {ref} ({format_bytes(size)}) ran out of memory while loading onto "
                f"{device}, which had {format_bytes(free)} free"
            ) from exc
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"model {ref} could not be loaded: {exc}") from exc
        model.eval()
        self._model = model
        self._tokenizer = tokenizer
        self._info = TokenizerInfo(tokenizer)
        self._vocab = int(model.config.vocab_size)
        self._device = device
        ctx = getattr(model.config, "max_position_embeddings", None) or getattr(
            model.config, "n_positions", None
        )
        self._max_context = int(ctx) if ctx else _FALLBACK_CONTEXT
        self.timings.phases["weight_load"] = time.perf_counter() - t1

    def _pick_device(self, torch: Any) -> str:
        want = self.settings.device
        if want == "auto":
            return "cuda:0" if torch.cuda.is_available() else "cpu"
        if want == "cuda":
            want = "cuda:0"
        if want.startswith("cuda") and not torch.cuda.is_available():
            raise ModelLoadError(f"FERRY_DEVICE={want} but no CUDA device is available")
        return want

    def _free_bytes(self, torch: Any, device: str) -> int:
        if device.startswith("cuda"):
            free, _total = torch.cuda.mem_get_info(torch.device(device))
            return int(free)
        return cpu_free_bytes()

    def _pick_dtype(self, torch: Any, device: str) -> Any:
        want = self.settings.dtype
        if want == "auto":
            if device.startswith("cuda"):
                return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            return torch.float32
        table = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
        if want not in table:
            raise ModelLoadError(f"FERRY_DTYPE must be auto, float32, float16 or bfloat16: {want}")
        return table[want]

    async def close(self) -> None:
        self._ready = False
        if self._batcher is not None:
            self._batcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._batcher
            self._batcher = None
        while not self._queue.empty():
            self._queue.get_nowait().push(ModelNotReady("engine is shutting down"))
        self._executor.shutdown(wait=True)
        self._model = None

    def healthy(self) -> bool:
        return self._ready and self._batcher is not None and not self._batcher.done()

    # ---- requests --------------------------------------------------------------------------

    def queue_depth(self) -> int:
        return self._queue.qsize()

    def _encode(self, request: GenerationRequest) -> tuple[list[int], int]:
        """Prompt ids, and the tokens left to generate within the model's context."""
        tok = self._tokenizer
        ids: list[int] = list(tok.encode(request.prompt, add_special_tokens=False))
        if tok.bos_token_id is not None and (not ids or ids[0] != tok.bos_token_id):
            ids = [int(tok.bos_token_id), *ids]
        if not ids:
            raise InvalidInput("prompt must not be empty", param="prompt")
        outside = sorted(k for k in request.logit_bias if not 0 <= k < self._vocab)
        if outside:
            raise InvalidInput(
                f"logit_bias names token {outside[0]}, outside this model's vocabulary of "
                f"{self._vocab} tokens",
                param="logit_bias",
            )
        room = self._max_context - len(ids)
        if request.fit_context:
            if room < 1:
                raise InvalidInput(
                    f"the prompt ({len(ids)} tokens) fills the model's context of "
                    f"{self._max_context}; nothing is left to generate",
                    param="messages",
                )
            return ids, min(request.max_tokens, room)
        total = len(ids) + request.max_tokens
        if total > self._max_context:
            raise InvalidInput(
                f"prompt ({len(ids)} tokens) plus max_tokens ({request.max_tokens}) is "
                f"{total} tokens, over the model's context of {self._max_context}",
                param="max_tokens",
            )
        return ids, request.max_tokens

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[TokenChunk, None]:
        if not self.healthy() or self._info is None:
            raise ModelNotReady("model is not loaded")
        if self._queue.qsize() >= self.settings.max_queue:
            raise Overloaded("the request queue is full; retry later")
        ids, max_tokens = self._encode(request)
        pending = _Pending(
            request=request, input_ids=ids, max_tokens=max_tokens,
            detok=Detokenizer(self._info), loop=asyncio.get_running_loop(), out=asyncio.Queue(),
        )
        self._queue.put_nowait(pending)
        try:
            while True:
                item = await pending.out.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.finish_reason is not None:
                    return
        finally:
            # The client is gone (or done): the worker drops the row at its next step.
            pending.cancelled = True

    # ---- batching --------------------------------------------------------------------------

    async def _batch_loop(self) -> None:
        loop = asyncio.get_running_loop()
        window = self.settings.batch_window_ms / 1000.0
        max_batch = self.settings.max_batch_size
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + window
            while len(batch) < max_batch:
                if not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                    continue
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break
            gone = sum(p.cancelled for p in batch)
            batch = [p for p in batch if not p.cancelled]
            if self._metrics is not None and gone:
                self._metrics.aborted.inc(gone)
            if not batch:
                continue
            if self._metrics is not None:
                self._metrics.batch_size.observe(len(batch))
            try:
                await loop.run_in_executor(self._executor, self._run_batch, batch)
            except Exception as exc:  # a failed batch fails its requests, not the server
                log.exception("batch of %d failed", len(batch))
                for p in batch:
                    if not p.done:
                        p.done = True
                        p.push(exc)
            finally:
                if self._metrics is not None:
                    self._metrics.decoding.set(0)

    def _run_batch(self, batch: list[_Pending]) -> None:
        torch = self._torch
        model = self._model
        tok = self._tokenizer
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        pad_id = int(pad_id) if pad_id is not None else 0
        eos_ids = self._eos_ids()
        width = max(len(p.input_ids) for p in batch)
        rows = [[pad_id] * (width - len(p.input_ids)) + p.input_ids for p in batch]
        masks = [[0] * (width - len(p.input_ids)) + [1] * len(p.input_ids) for p in batch]
        gens = [self._generator(p.request.seed) for p in batch]
        steps = max(p.max_tokens for p in batch)
        with torch.inference_mode():
            input_ids = torch.tensor(rows, dtype=torch.long, device=self._device)
            attn = torch.tensor(masks, dtype=torch.long, device=self._device)
            position_ids = (attn.cumsum(-1) - 1).clamp(min=0)
            past: Any = None
            for _ in range(steps):
                active = sum(not p.done for p in batch)
                if self._metrics is not None:
                    self._metrics.decoding.set(active)
                out = model(
                    input_ids=input_ids,
                    attention_mask=attn,
                    position_ids=position_ids,
                    past_key_values=past,
                    use_cache=True,
                )
                past = out.past_key_values
                logits = out.logits[:, -1, :].float()
                next_ids = self._sample(logits, batch, gens)
                if self._metrics is not None:
                    self._metrics.tokens.inc(active)
                for i, p in enumerate(batch):
                    if not p.done:
                        token = int(next_ids[i])
                        self._advance(p, token, eos_ids, self._logprobs(p, logits[i], token))
                if all(p.done for p in batch):
                    break
                input_ids = next_ids.unsqueeze(-1).to(self._device)
                attn = torch.cat([attn, attn.new_ones((len(batch), 1))], dim=-1)
                position_ids = position_ids[:, -1:] + 1

    def _eos_ids(self) -> set[int]:
        ids: set[int] = set()
        if self._tokenizer.eos_token_id is not None:
            ids.add(int(self._tokenizer.eos_token_id))
        gen_cfg = getattr(self._model, "generation_config", None)
        cfg_eos = getattr(gen_cfg, "eos_token_id", None)
        if isinstance(cfg_eos, int):
            ids.add(cfg_eos)
        elif isinstance(cfg_eos, list):
            ids.update(int(x) for x in cfg_eos)
        return ids

    def _generator(self, seed: int | None) -> Any:
        if seed is None:
            return None
        gen = self._torch.Generator(device=self._device)
        gen.manual_seed(seed)
        return gen

    def _sample(self, logits: Any, batch: list[_Pending], gens: list[Any]) -> Any:
        torch = self._torch
        chosen = logits.argmax(dim=-1)
        for i, p in enumerate(batch):
            if p.done or sampling.is_plain_greedy(p.request):
                continue
            row = sampling.adjust(torch, logits[i], p.request, p.detok.ids)
            chosen[i] = sampling.choose(torch, row, p.request, gens[i])
        return chosen.cpu()

    def _logprobs(self, p: _Pending, raw_row: Any, token: int) -> TokenLogprob | None:
        k = p.request.logprobs
        if k is None or p.cancelled or self._info is None:
            return None
        info = self._info
        logprob, top = sampling.logprobs(raw_row, token, k)

        def entry(tid: int, lp: float) -> TokenLogprob:
            raw = info.token_bytes(tid)
            return TokenLogprob(token=token_text(raw), token_bytes=raw, logprob=lp)

        first = entry(token, logprob)
        return TokenLogprob(first.token, first.token_bytes, logprob,
                            tuple(entry(t, lp) for t, lp in top),
                            special=token in info.special_ids)

    def _advance(
        self, p: _Pending, token: int, eos_ids: set[int], logprob: TokenLogprob | None
    ) -> None:
        req = p.request
        if p.cancelled:
            p.done = True
            if self._metrics is not None:
                self._metrics.aborted.inc()
            return
        if token in eos_ids and not req.ignore_eos:
            self._finish(p, "stop")
            return
        p.detok.add(token)
        p.new_ids.append(token)
        if logprob is not None:
            p.new_logprobs.append(logprob)
        text = p.detok.text
        cut = self._stop_at(p, text)
        if cut is not None:
            self._finish(p, "stop", cut)
            return
        if len(p.detok.ids) >= p.max_tokens:
            self._finish(p, "length")
            return
        # Hold back anything that may be the start of a stop string.
        safe = len(text) - (max(len(s) for s in req.stop) - 1 if req.stop else 0)
        if safe > p.emitted:
            self._push(p, text[p.emitted:safe])
            p.emitted = safe

    def _stop_at(self, p: _Pending, text: str) -> int | None:
        """Where the first stop string starts in `text`, if one is there."""
        if not p.request.stop:
            return None
        start = max(0, p.emitted - max(len(s) for s in p.request.stop))
        hits = [h for h in (text.find(s, start) for s in p.request.stop) if h >= 0]
        return min(hits) if hits else None

    def _push(self, p: _Pending, text: str, **final: Any) -> None:
        p.push(TokenChunk(text=text, token_ids=tuple(p.new_ids),
                          logprobs=tuple(p.new_logprobs), **final))
        p.new_ids.clear()
        p.new_logprobs.clear()

    def _finish(self, p: _Pending, reason: FinishReason, cut: int | None = None) -> None:
        p.done = True
        if cut is None:
            p.detok.finish()
            cut = self._stop_at(p, p.detok.text)
            if cut is not None:
                reason = "stop"
        text = p.detok.text if cut is None else p.detok.text[:cut]
        self._push(p, text[p.emitted:], finish_reason=reason,
                   prompt_tokens=len(p.input_ids), completion_tokens=len(p.detok.ids))
