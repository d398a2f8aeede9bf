"""Compare a desired object with the live one the API server returns.

The live object carries defaults and fields owned by others, so "up to date" means
every field Ferry sets has the value Ferry wants (a subset match), not equality.
"""

from __future__ import annotations

from typing import Any


def missing(desired: Any, actual: Any, path: str = "") -> list[str]:
    """Paths where `actual` does not carry the value `desired` asks for."""
    if desired in ([], {}) and actual is None:
        # The API server drops empty lists and maps: absent is the same as empty.
        return []
    if isinstance(desired, dict):
        if not isinstance(actual, dict):
            return [path or "."]
        out: list[str] = []
        for key, value in desired.items():
            out.extend(missing(value, actual.get(key), f"{path}.{key}"))
        return out
    if isinstance(desired, list):
        if not isinstance(actual, list) or len(actual) != len(desired):
            return [path or "."]
        out = []
        for i, (want, have) in enumerate(zip(desired, actual, strict=True)):
            out.extend(missing(want, have, f"{path}[{i}]"))
        return out
    if desired != actual and not _same_scalar(desired, actual):
        return [path or "."]
    return []


def _same_scalar(desired: Any, actual: Any) -> bool:
    # The API server normalises some scalars (int-or-string ports, quantities).
    return desired is not None and actual is not None and str(desired) == str(actual)
