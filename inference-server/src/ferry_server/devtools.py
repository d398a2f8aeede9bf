"""Build a tiny causal LM locally (random weights, locally trained tokenizer) for tests/benchmarks.

Nothing is downloaded: the tokenizer is trained with `tokenizers` on a small built-in corpus, in
either of the two families served models use — byte-level BPE (GPT-2, Llama 3, Qwen) or
SentencePiece-style BPE with byte fallback (Llama 2, Mistral) — and the model is a Llama config
with random weights, saved as safetensors so the server's real loading path is exercised.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Ferry runs model endpoints on local pods, Modal, RunPod and Replicate.",
    "Hello, how are you today? I am fine, thank you.",
    "GPUs are expensive, so idle endpoints should scale to zero.",
    "A spot instance can be reclaimed with two minutes of notice.",
    "Kubernetes sends SIGTERM and waits for the grace period before SIGKILL.",
    "Once upon a time there was a small language model that liked to count: one two three.",
    "def add(a, b):\n    return a + b\n",
    "user: what is the capital of France?\nassistant: Paris.",
    # Characters of several UTF-8 bytes, so that some tokens hold part of a character.
    "日本語のテキスト, 中文文本, 한국어 텍스트. Ship it 🚀🎉 naïve café",
    "\u2013 \u201cquotes\u201d \u2026",
] * 20

TOKENIZER_FAMILIES = ("byte-level", "sentencepiece")

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

PRESETS: dict[str, dict[str, int]] = {
    # ~0.2 M parameters: tests.
    "tiny": {"hidden": 64, "layers": 2, "heads": 4, "kv_heads": 2, "ffn": 128, "vocab": 512},
    # ~9 M parameters: CPU benchmark.
    "small": {"hidden": 256, "layers": 4, "heads": 8, "kv_heads": 4, "ffn": 688, "vocab": 4096},
    # ~0.5 B parameters: GPU benchmark (vLLM comparison).
    "large": {"hidden": 1024, "layers": 24, "heads": 16, "kv_heads": 8, "ffn": 2816,
              "vocab": 32000},
}


def build_tokenizer(vocab_size: int, family: str = "byte-level", cleanup: bool = False) -> Any:
    """A tokenizer of `family` trained on CORPUS, wrapped as PreTrainedTokenizerFast.

    `cleanup` sets `clean_up_tokenization_spaces`, which some real tokenizers turn on.
    """
    import transformers

    tf: Any = transformers
    specials: tuple[str, str, str, str | None]
    if family == "byte-level":
        tok, specials = _byte_level_bpe(vocab_size), ("<|pad|>", "<|bos|>", "<|eos|>", None)
    elif family == "sentencepiece":
        tok, specials = _sentencepiece_bpe(vocab_size), ("<pad>", "<s>", "</s>", "<unk>")
    else:
        raise ValueError(f"unknown tokenizer family {family!r}; one of {TOKENIZER_FAMILIES}")
    pad, bos, eos, unk = specials
    fast = tf.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=pad,
        bos_token=bos,
        eos_token=eos,
        unk_token=unk,
        clean_up_tokenization_spaces=cleanup,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _byte_level_bpe(vocab_size: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|pad|>", "<|bos|>", "<|eos|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    return tok


def _sentencepiece_bpe(vocab_size: int) -> Any:
    """Llama-2-style: "▁" for spaces, BPE over characters, `<0xNN>` tokens for the rest."""
    import json

    from tokenizers import Tokenizer, decoders, models, normalizers, trainers

    specials = ["<unk>", "<s>", "</s>", "<pad>"]
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tok.normalizer = normalizers.Sequence(
        [normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")]
    )
    tok.decoder = decoders.Sequence([
        decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
        decoders.Strip(" ", 1, 0),
    ])
    trainer = trainers.BpeTrainer(
        vocab_size=max(vocab_size - len(byte_tokens), 64),
        special_tokens=specials,
        limit_alphabet=80,  # rarer characters are left to byte fallback, as in real models
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    # SentencePiece models keep the 256 byte tokens right after the specials (Llama 2: ids 3-258).
    spec = json.loads(tok.to_str())
    learned = sorted(spec["model"]["vocab"].items(), key=lambda kv: kv[1])
    names = specials + byte_tokens + [t for t, _ in learned if t not in specials]
    spec["model"]["vocab"] = {t: i for i, t in enumerate(names)}
    return Tokenizer.from_str(json.dumps(spec))


def build_model(
    path: str | Path,
    preset: str = "tiny",
    seed: int = 0,
    tokenizer: str = "byte-level",
    cleanup: bool = False,
) -> Path:
    """Write a random-weight Llama model plus a `tokenizer`-family tokenizer to `path`."""
    import torch
    import transformers

    tf: Any = transformers

    p = PRESETS[preset]
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(p["vocab"], family=tokenizer, cleanup=cleanup)
    config = tf.LlamaConfig(
        vocab_size=len(tok),
        hidden_size=p["hidden"],
        intermediate_size=p["ffn"],
        num_hidden_layers=p["layers"],
        num_attention_heads=p["heads"],
        num_key_value_heads=p["kv_heads"],
        max_position_embeddings=1024,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = tf.LlamaForCausalLM(config)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out
