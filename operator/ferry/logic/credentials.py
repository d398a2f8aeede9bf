"""Which Secret keys each provider's credentials need. Only key names, never values."""

from __future__ import annotations

REQUIRED_KEYS: dict[str, tuple[str, ...]] = {
    "local": (),
    "modal": ("tokenId", "tokenSecret"),
    "replicate": ("token",),
    "runpod": ("token",),
}


def missing_keys(provider: str, present: set[str]) -> list[str]:
    """Required keys for `provider` that the Secret lacks, in a stable order."""
    return [key for key in REQUIRED_KEYS.get(provider, ()) if key not in present]
