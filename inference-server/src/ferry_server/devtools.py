"""Build a tiny causal LM locally (random weights, locally trained tokenizer) for tests/benchmarks.

Nothing is downloaded: the tokenizer is a byte-level BPE trained with `tokenizers` on a small
built-in corpus, and the model is a Llama config with random weights, saved as safetensors so
the server's real loading path is exercised.
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
] * 20

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


def build_tokenizer(vocab_size: int) -> Any:
    """A byte-level BPE tokenizer trained on CORPUS, wrapped as PreTrainedTokenizerFast."""
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tf: Any = transformers

    specials = ["<|pad|>", "<|bos|>", "<|eos|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    fast = tf.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<|pad|>",
        bos_token="<|bos|>",
        eos_token="<|eos|>",
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_model(path: str | Path, preset: str = "tiny", seed: int = 0) -> Path:
    """Write a random-weight Llama model plus tokenizer to `path` (safetensors)."""
    import torch
    import transformers

    tf: Any = transformers

    p = PRESETS[preset]
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(p["vocab"])
    config = tf.LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=p["hidden"],
        intermediate_size=p["ffn"],
        num_hidden_layers=p["layers"],
        num_attention_heads=p["heads"],
        num_key_value_heads=p["kv_heads"],
        max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = tf.LlamaForCausalLM(config)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out
