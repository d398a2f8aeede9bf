"""Streamed text == non-streamed text == tokenizer.decode(ids), for each tokenizer family a served
model may use, with characters split across several tokens (emoji, CJK, accents).

Families, built locally with `tokenizers`: byte-level BPE (GPT-2, Llama 3, Qwen), the same with
`clean_up_tokenization_spaces` on (as Llama 3 ships it), and SentencePiece-style BPE with byte
fallback (Llama 2, Mistral).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from conftest import AUTH_TOKEN, ServerProcess
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from ferry_server.config import Settings
from ferry_server.devtools import build_model, build_tokenizer
from ferry_server.engine.base import GenerationRequest
from ferry_server.engine.detokenizer import Detokenizer, TokenizerInfo, _stable_cleanup_cut
from ferry_server.engine.transformers_engine import TransformersEngine

TEXTS = [
    "Hello world 🚀 日本語 Ωmega 🦀 naïve ⛵",
    "I 'm sure it 's fine , is n't it ? Yes ! ' quoted ' . We 've been here , they 're not .",
    "👨‍👩‍👧 family ½ ∑ \U0001d518\U0001d52b\U0001d526 ☃☃☃ 中文文本 한국어",
]
VARIANTS = [("byte-level", False), ("byte-level", True), ("sentencepiece", False),
            ("sentencepiece", True)]
VARIANT_IDS = ["byte-level", "byte-level-cleanup", "sentencepiece", "sentencepiece-cleanup"]


def stream_text(info: TokenizerInfo, ids: list[int]) -> tuple[str, list[str]]:
    detok = Detokenizer(info)
    pieces = [detok.add(i) for i in ids]
    return "".join(pieces) + detok.finish(), pieces


@pytest.mark.parametrize(("family", "cleanup"), VARIANTS, ids=VARIANT_IDS)
def test_incremental_detokenizer_adds_up_to_decode(family: str, cleanup: bool) -> None:
    tok = build_tokenizer(512, family, cleanup)
    info = TokenizerInfo(tok)
    rng = random.Random(0)
    encoded = [tok.encode(t, add_special_tokens=False) for t in TEXTS]
    noise = [[rng.randrange(len(tok)) for _ in range(rng.randrange(1, 40))] for _ in range(800)]
    for ids in encoded + noise:
        text, _ = stream_text(info, ids)
        assert text == tok.decode(ids, skip_special_tokens=True), ids
    for ids, source in zip(encoded, TEXTS, strict=True):
        text, pieces = stream_text(info, ids)
        assert text == tok.decode(ids, skip_special_tokens=True)
        # It streams: most of the text is out before the end, not all held back.
        assert len("".join(pieces)) >= len(text) - 4, pieces
        if not cleanup:
            assert text == source
    split = [t for t in encoded[0] if len(info.token_bytes(t)) and not _whole(info, t)]
    assert split, "the test text should put parts of characters in tokens"


def _whole(info: TokenizerInfo, token: int) -> bool:
    try:
        info.token_bytes(token).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def test_why_byte_runs_are_held_back() -> None:
    # SentencePiece byte fallback decodes a whole run of byte tokens at once: one more byte
    # turns the complete "日" into four U+FFFD. Text from an open run cannot be sent yet.
    tok = build_tokenizer(512, "sentencepiece")
    byte = {b: tok.convert_tokens_to_ids(f"<0x{b:02X}>") for b in b"\xe6\x97\xa5"}
    run = [byte[0xE6], byte[0x97], byte[0xA5]]
    assert tok.decode(run) == "日"
    assert tok.decode([*run, byte[0xE6]]) == "\ufffd" * 4


def test_clean_up_cut_never_splits_a_rewrite() -> None:
    clean = PreTrainedTokenizerBase.clean_up_tokenization
    rng = random.Random(1)
    alphabet = " .?!,'ntsmvera"
    for _ in range(20000):
        raw = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 10)))
        more = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 6)))
        assert clean(raw + more).startswith(clean(raw[:_stable_cleanup_cut(raw)])), (raw, more)


# ---- the engine, in-process, per family -----------------------------------------------------


@pytest.fixture(scope="module")
def cleanup_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_model(tmp_path_factory.mktemp("model") / "tiny-cleanup", preset="tiny",
                       cleanup=True)


def reference_ids(path: Path, tok: Any, prompt: str, n: int) -> list[int]:
    """Greedy ids from plain transformers `generate`, independent of the server's batcher."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(path)).eval()
    model.generation_config.eos_token_id = None  # like ignore_eos: never stop early
    ids = [tok.bos_token_id, *tok.encode(prompt, add_special_tokens=False)]
    with torch.inference_mode():
        out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids)),
                             max_new_tokens=n, do_sample=False, pad_token_id=tok.pad_token_id)
    return [int(t) for t in out[0, len(ids):]]


@pytest.mark.parametrize("model", ["tiny_model", "cleanup_model", "sp_model"])
def test_engine_streams_exactly_what_decode_gives(
    model: str, request: pytest.FixtureRequest
) -> None:
    path: Path = request.getfixturevalue(model)
    tok = AutoTokenizer.from_pretrained(str(path))
    info = TokenizerInfo(tok)
    settings = Settings(model=str(path), device="cpu", warmup=False, max_batch_size=4)
    greedy = [reference_ids(path, tok, prompt, 120) for prompt in TEXTS]

    async def run() -> list[tuple[list[Any], Any, list[int] | None]]:
        engine = TransformersEngine(settings)
        await engine.load()
        try:
            runs = []
            for i, prompt in enumerate(TEXTS):
                for sampling in ({"temperature": 0.0}, {"temperature": 1.0, "seed": i}):
                    req = GenerationRequest(prompt=prompt, max_tokens=120, ignore_eos=True,
                                            **sampling)  # type: ignore[arg-type]
                    chunks = [c async for c in engine.stream(req)]
                    reference = greedy[i] if sampling["temperature"] == 0.0 else None
                    runs.append((chunks, await engine.generate(req), reference))
            return runs
        finally:
            await engine.close()

    split_chars = 0
    for chunks, whole, reference in asyncio.run(run()):
        streamed = "".join(c.text for c in chunks)
        if reference is not None:
            assert streamed == tok.decode(reference, skip_special_tokens=True)
        ids = [i for c in chunks for i in c.token_ids]
        assert streamed == whole.text == tok.decode(ids, skip_special_tokens=True)
        assert tuple(ids) == whole.token_ids
        assert reference is None or ids == reference
        assert len(ids) == whole.completion_tokens == 120
        assert sum(bool(c.text) for c in chunks) > 10, "text should stream, not come at the end"
        split_chars += sum(not _whole(info, t) for t in ids)
    assert split_chars > 0, "no token held part of a character: the test proves nothing"


# ---- over HTTP, through the openai client ---------------------------------------------------


@pytest.fixture(scope="module")
def sp_server(tmp_path_factory: pytest.TempPathFactory, sp_model: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess({"FERRY_MODEL": str(sp_model), "FERRY_AUTH_TOKEN": AUTH_TOKEN},
                        tmp_path_factory.mktemp("sp-server") / "server.log")
    srv.wait_ready()
    yield srv
    srv.stop()


@pytest.mark.parametrize("which", ["server", "sp_server"], ids=["byte-level", "sentencepiece"])
def test_streamed_equals_non_streamed_over_http(which: str, request: pytest.FixtureRequest) -> None:
    srv: ServerProcess = request.getfixturevalue(which)
    client = openai.OpenAI(base_url=f"{srv.url}/v1", api_key=AUTH_TOKEN, max_retries=0)
    model = client.models.list().data[0].id
    extra = {"ignore_eos": True}
    for i, text in enumerate(TEXTS):
        kw: dict[str, Any] = {"model": model, "max_tokens": 80, "temperature": 1.0, "seed": i,
                              "extra_body": extra}
        messages: Any = [{"role": "user", "content": text}]
        whole = client.chat.completions.create(messages=messages, **kw)
        parts = client.chat.completions.create(messages=messages, stream=True, **kw)
        streamed = "".join(c.choices[0].delta.content or "" for c in parts if c.choices)
        assert streamed == whole.choices[0].message.content
        whole_c = client.completions.create(prompt=text, **kw)
        parts_c = client.completions.create(prompt=text, stream=True, **kw)
        assert "".join(c.choices[0].text for c in parts_c) == whole_c.choices[0].text
