"""Incremental detokenization: stream text that always adds up to `tokenizer.decode(ids)`.

Used by the transformers engine, one `Detokenizer` per generated sequence, on its worker thread.

`decode` is not prefix-stable, so text cannot be sent as soon as a token arrives:
* a character split across byte-level BPE tokens decodes to U+FFFD until its last byte arrives;
* SentencePiece byte fallback (`<0xE6>` tokens) turns a whole run of byte tokens into one
  U+FFFD per byte if the run is not valid UTF-8, so a later byte token can change characters
  that were already complete ("日" + `<0xE6>` decodes to four U+FFFD);
* `clean_up_tokenization_spaces` (Llama 3, GPT-2) rewrites " ." to "." and " 's" to "'s", so a
  trailing space may still disappear.
Text is therefore held back while any of these can still change it, and `finish` returns the
rest from one decode of every id, the same call a client would make.

Decoding is windowed (as in vLLM and Hugging Face's TextStreamer): each step decodes only the
tokens since the last emission plus the ones before them, so a step costs the same at token 10
and at token 2,000.
"""

from __future__ import annotations

import functools
import json
import logging
from typing import Any

log = logging.getLogger("ferry_server.engine")

_REPLACEMENT = "\ufffd"
# What transformers' clean_up_tokenization rewrites (each loses its leading space).
_CLEANUP_PATTERNS = (" .", " ?", " !", " ,", " ' ", " n't", " 'm", " 's", " 've", " 're")
_CLEANUP_REACH = max(len(p) for p in _CLEANUP_PATTERNS)


@functools.cache
def _byte_level_decoder() -> dict[str, int]:
    """GPT-2's byte-to-unicode table, inverted: a byte-level BPE token's characters -> bytes."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


def token_text(raw: bytes) -> str:
    """A token's text as OpenAI's logprobs show it: "bytes:\\xe6\\x97" when it is not whole
    UTF-8 (part of a character), so such tokens stay apart as `top_logprobs` keys."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes:" + "".join(f"\\x{b:02x}" for b in raw)


class TokenizerInfo:
    """What the detokenizer and logprobs need to know about a Hugging Face tokenizer."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.cleanup = bool(getattr(tokenizer, "clean_up_tokenization_spaces", False))
        self.byte_ids = self._byte_fallback_ids(tokenizer)
        # Skipped when decoding, so they neither add text nor close a run of byte tokens.
        self.special_ids = frozenset(int(i) for i in getattr(tokenizer, "all_special_ids", ()))
        self.byte_level = self._decoder_kind(tokenizer) == "ByteLevel"

    @staticmethod
    def _byte_fallback_ids(tokenizer: Any) -> dict[int, int]:
        """SentencePiece byte-fallback tokens (`<0x00>`..`<0xFF>`) -> the byte each stands for."""
        unk = getattr(tokenizer, "unk_token_id", None)
        ids: dict[int, int] = {}
        for b in range(256):
            tid = tokenizer.convert_tokens_to_ids(f"<0x{b:02X}>")
            if tid is None or tid == unk:
                return {}
            ids[int(tid)] = b
        return ids

    @staticmethod
    def _decoder_kind(tokenizer: Any) -> str:
        backend = getattr(tokenizer, "backend_tokenizer", None)
        decoder = getattr(backend, "decoder", None)
        if decoder is None:  # a slow tokenizer; GPT-2's keeps its byte table
            return "ByteLevel" if hasattr(tokenizer, "byte_decoder") else ""
        state = json.loads(decoder.__getstate__())
        kinds = [d.get("type") for d in state.get("decoders", [state])]
        return "ByteLevel" if "ByteLevel" in kinds else str(kinds[0] if kinds else "")

    def decode(self, ids: list[int], *, cleanup: bool | None = None) -> str:
        """`tokenizer.decode` without special tokens; `cleanup=None` keeps the tokenizer's own."""
        if cleanup is None:
            return str(self.tokenizer.decode(ids, skip_special_tokens=True))
        return str(
            self.tokenizer.decode(ids, skip_special_tokens=True,
                                  clean_up_tokenization_spaces=cleanup)
        )

    def clean(self, text: str) -> str:
        """The tokenizer's clean-up of tokenization spaces, as its `decode` applies it."""
        return str(self.tokenizer.clean_up_tokenization(text)) if self.cleanup else text

    @functools.lru_cache(maxsize=65536)  # noqa: B019 - one instance per loaded model
    def token_bytes(self, token_id: int) -> bytes:
        """The raw bytes a token stands for (what OpenAI's logprobs call `bytes`)."""
        if token_id in self.byte_ids:
            return bytes([self.byte_ids[token_id]])
        piece = self.tokenizer.convert_ids_to_tokens(token_id)
        if not isinstance(piece, str):
            return b""
        if self.byte_level:
            table = _byte_level_decoder()
            if all(c in table for c in piece):
                return bytes(table[c] for c in piece)
            return piece.encode()
        if "\u2581" in piece:  # SentencePiece's word-boundary marker stands for a space
            return piece.replace("\u2581", " ").encode()
        return self.decode([token_id], cleanup=False).encode()


class Detokenizer:
    """Text of one growing token sequence; `add` returns only text that can no longer change."""

    def __init__(self, info: TokenizerInfo) -> None:
        self.info = info
        self.ids: list[int] = []
        self._prefix = 0  # window start: the tokens of the emission before the last one
        self._read = 0  # tokens whose text is in self._raw
        self._raw = ""  # decoded text of ids[:read], before clean-up of tokenization spaces
        self.text = ""  # text handed out so far; always a prefix of decode(ids)

    def add(self, token_id: int) -> str:
        """Append one token; return the text that became final (often "")."""
        self.ids.append(token_id)
        if token_id in self.info.special_ids:
            return ""  # skipped by decode: an open run of byte tokens stays open
        if token_id in self.info.byte_ids:
            return ""  # the run is open: the next byte token may turn all of it into U+FFFD
        before = self.info.decode(self.ids[self._prefix:self._read], cleanup=False)
        after = self.info.decode(self.ids[self._prefix:], cleanup=False)
        if after.endswith(_REPLACEMENT) or not after.startswith(before):
            return ""
        if len(after) > len(before):
            self._raw += after[len(before):]
            self._prefix, self._read = self._read, len(self.ids)
        stable = self._raw
        if self.info.cleanup:
            stable = self.info.clean(stable[:_stable_cleanup_cut(stable)])
        if len(stable) <= len(self.text) or not stable.startswith(self.text):
            return ""
        new = stable[len(self.text):]
        self.text = stable
        return new

    def finish(self) -> str:
        """The rest of the text: `decode(ids)` minus what `add` already returned."""
        full = self.info.decode(self.ids)
        if not full.startswith(self.text):
            # Cannot happen for the tokenizer families the tests cover; if a new one breaks the
            # invariant, say so rather than send text that does not add up silently.
            log.error("incremental detokenization diverged from decode(); streamed text differs")
            return ""
        rest = full[len(self.text):]
        self.text = full
        return rest


def _stable_cleanup_cut(raw: str) -> int:
    """Where to cut `raw` so that no clean-up rewrite can span the cut, whatever comes next."""
    cut = len(raw)
    moved = True
    while moved:
        moved = False
        for start in range(max(cut - _CLEANUP_REACH + 1, 0), cut):
            known = raw[start:]
            if any(
                start + len(p) > cut and (p.startswith(known) or known.startswith(p))
                for p in _CLEANUP_PATTERNS
            ):
                cut, moved = start, True
                break
    return cut
