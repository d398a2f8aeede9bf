"""Kubernetes/Go duration strings, as the API's duration fields carry them.

The grammar is the subset of Go's `time.ParseDuration` that the CRD's pattern
(`types.DURATION_PATTERN`) admits: one or more `<number><unit>` with units `h`, `m`,
`s` and `ms`, and an optional decimal fraction (`500ms`, `4s`, `1.5m`, `1h30m`). No
sign, no bare `0`: what the API server accepted, this module reads.
"""

from __future__ import annotations

import math
import re

from ferry.api.v1alpha1 import types

_WHOLE = re.compile(types.DURATION_PATTERN)
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(h|ms|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def seconds(text: str) -> float:
    """The length of the duration `text` in seconds; ValueError if it is not one."""
    if len(text) > types.DURATION_MAX_LENGTH or not _WHOLE.fullmatch(text):
        raise ValueError(
            f"invalid duration {text!r}: use a number and a unit (h, m, s or ms),"
            " e.g. 500ms, 4s, 5m or 1h30m"
        )
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in _PART.findall(text))


def whole_seconds(text: str) -> int:
    """`seconds(text)` rounded up to a whole second, for platforms that take integers."""
    return math.ceil(round(seconds(text), 9))


def optional_seconds(text: str | None) -> float | None:
    """`seconds(text)`, or None when the field is unset."""
    return None if text is None else seconds(text)
