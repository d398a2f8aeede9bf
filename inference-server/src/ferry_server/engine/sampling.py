"""Per-row logit processing, sampling and logprobs for the transformers engine's batches.

Called on the engine's worker thread, one row of a batch at a time; `torch` is passed in because
the engine imports it lazily. Order follows OpenAI's description of the parameters (and vLLM):
logit_bias and the presence/frequency penalties change the raw logits, then temperature scales
them and top_p cuts the tail. Logprobs are reported from the raw logits, the model's own
distribution, whatever the sampling parameters (vLLM's default too).
"""

from __future__ import annotations

from typing import Any

from ferry_server.engine.base import GenerationRequest


def is_plain_greedy(req: GenerationRequest) -> bool:
    """True when the batch-wide argmax already is this row's choice."""
    return (
        req.temperature == 0.0
        and not req.logit_bias
        and req.presence_penalty == 0.0
        and req.frequency_penalty == 0.0
    )


def adjust(torch: Any, row: Any, req: GenerationRequest, generated: list[int]) -> Any:
    """Apply logit_bias and the presence/frequency penalties (OpenAI's formula) to one row."""
    if req.logit_bias:
        ids = torch.tensor(list(req.logit_bias.keys()), device=row.device)
        bias = torch.tensor(list(req.logit_bias.values()), device=row.device, dtype=row.dtype)
        row = row.index_add(0, ids, bias)
    if generated and (req.presence_penalty or req.frequency_penalty):
        seen = torch.tensor(generated, device=row.device)
        counts = torch.bincount(seen, minlength=row.shape[-1]).to(row.dtype)
        row = row - req.frequency_penalty * counts - req.presence_penalty * (counts > 0)
    return row


def choose(torch: Any, row: Any, req: GenerationRequest, generator: Any) -> Any:
    """The next token for one adjusted row: argmax at temperature 0, else top_p sampling."""
    if req.temperature == 0.0:
        return row.argmax()
    row = row / req.temperature
    if req.top_p < 1.0:
        sorted_logits, order = torch.sort(row, descending=True)
        probs = sorted_logits.softmax(-1)
        drop = probs.cumsum(-1) - probs > req.top_p
        sorted_logits[drop] = float("-inf")
        row = torch.full_like(row, float("-inf")).scatter(0, order, sorted_logits)
    return torch.multinomial(row.softmax(-1), 1, generator=generator)[0]


def logprobs(raw_row: Any, token: int, k: int) -> tuple[float, list[tuple[int, float]]]:
    """Log probability of `token` and the `k` most likely tokens, from the raw logits."""
    lp = raw_row.log_softmax(-1)
    top: list[tuple[int, float]] = []
    if k > 0:
        values, ids = lp.topk(k)
        top = list(zip(ids.tolist(), values.tolist(), strict=True))
    return float(lp[token]), top
