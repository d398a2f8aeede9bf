from __future__ import annotations

import pytest

from ferry.logic import credentials


@pytest.mark.parametrize(
    ("provider", "present", "want"),
    [
        ("modal", {"tokenId"}, ["tokenSecret"]),
        ("modal", {"tokenId", "tokenSecret"}, []),
        ("replicate", set(), ["token"]),
        ("runpod", {"token", "extra"}, []),
        ("local", set(), []),
    ],
    ids=["modal-half", "modal-full", "replicate-empty", "runpod-extra", "local"],
)
def test_missing_keys(provider: str, present: set[str], want: list[str]) -> None:
    assert credentials.missing_keys(provider, present) == want
