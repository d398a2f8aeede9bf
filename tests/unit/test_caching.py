from __future__ import annotations

from typing import Any

import pytest

from ferry import caching


def obj(name: str, version: str, **meta: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "resourceVersion": version, **meta}}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_never_goes_back_in_time() -> None:
    cache = caching.ObjectCache()
    cache.store("Deployment", obj("a", "10"))
    cache.store("Deployment", obj("a", "9"))  # a late watch event
    assert cache.get("Deployment", "ns", "a") == obj("a", "10")
    cache.store("Deployment", obj("a", "11"))
    assert cache.get("Deployment", "ns", "a") == obj("a", "11")


def test_entries_expire_and_drop() -> None:
    clock = Clock()
    cache = caching.ObjectCache(ttl=30, clock=clock)
    cache.store("Service", obj("s", "1"))
    clock.now = 29
    assert cache.get("Service", "ns", "s") is not None
    clock.now = 31
    assert cache.get("Service", "ns", "s") is None, "an unrefreshed entry is not trusted"
    cache.store("Service", obj("s", "2"))
    cache.drop("Service", "ns", "s")
    assert cache.get("Service", "ns", "s") is None


@pytest.mark.parametrize(
    ("old", "new", "want"),
    [
        (None, obj("e", "1"), True),
        (obj("e", "1", generation=1), obj("e", "2", generation=1), False),
        (obj("e", "1", generation=1), obj("e", "2", generation=2), True),
        (
            obj("e", "1", annotations={}),
            obj("e", "2", annotations={"ferry.dev/paused": "true"}),
            True,
        ),
        (obj("e", "1"), obj("e", "2", deletionTimestamp="2026-01-01T00:00:00Z"), True),
    ],
    ids=["first-sight", "status-only", "spec-change", "annotation", "deletion"],
)
def test_meaningful_change(old: dict[str, Any] | None, new: dict[str, Any], want: bool) -> None:
    assert caching.meaningful_change(old, new) is want
