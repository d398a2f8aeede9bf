"""Go/Kubernetes durations, read the way the CRD admits them."""

from __future__ import annotations

import re

import pytest

from ferry.api.v1alpha1 import types
from ferry.logic import durations


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("500ms", 0.5),
        ("4s", 4.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("1.5h", 5400.0),
        ("0.5s", 0.5),
        ("1m30s", 90.0),
        ("2h45m30s500ms", 9930.5),
        ("0s", 0.0),
        ("90s", 90.0),
        ("1m1m", 120.0),
    ],
)
def test_seconds(text: str, want: float) -> None:
    assert durations.seconds(text) == pytest.approx(want)


@pytest.mark.parametrize(
    "text",
    ["", "5", "five minutes", "-5s", "+5s", "5 m", "5d", "1.s", ".5s", "5us", "1h 30m", "5M"],
)
def test_rejects_what_the_crd_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        durations.seconds(text)
    assert not re.fullmatch(types.DURATION_PATTERN, text)


def test_length_is_bounded_like_the_crd() -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        durations.seconds("1s" * 9)


@pytest.mark.parametrize(("text", "want"), [("1s", 1), ("1.2s", 2), ("500ms", 1), ("2m", 120)])
def test_whole_seconds_round_up(text: str, want: int) -> None:
    assert durations.whole_seconds(text) == want


def test_optional() -> None:
    assert durations.optional_seconds(None) is None
    assert durations.optional_seconds("1m") == 60.0
