"""An in-memory copy of the objects Ferry watches, kept current by watch events.

controller-runtime reads from informer caches rather than the API server; this is
the same idea at Ferry's scale. `ferry.handlers` stores every watch event's body
here; `ferry.kube` answers reads from it and stores what its own writes return, so
a reconcile right after a write does not read an older copy. A read that misses
goes to the API server: a miss may just mean the watch has not delivered yet.

Entries expire after `ttl` seconds without news. A watch that reconnects lists
what exists but never says what vanished meanwhile, so an entry nobody refreshed is
not trusted: the periodic drift check of a settled endpoint always reads live.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

Key = tuple[str, str, str]  # (kind, namespace, name)


def _version(obj: dict[str, Any]) -> int | None:
    raw = (obj.get("metadata") or {}).get("resourceVersion")
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


class ObjectCache:
    """Latest known body per (kind, namespace, name); never goes back in time."""

    def __init__(self, ttl: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._objects: dict[Key, dict[str, Any]] = {}
        self._stored: dict[Key, float] = {}
        self._ttl = ttl
        self._clock = clock

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        key = (kind, namespace, name)
        stored = self._stored.get(key)
        if stored is None or self._clock() - stored > self._ttl:
            return None
        return self._objects.get(key)

    def store(self, kind: str, obj: dict[str, Any]) -> dict[str, Any] | None:
        """Keep `obj` unless a newer version is already held; return the previous one."""
        meta = obj.get("metadata") or {}
        key = (kind, meta.get("namespace") or "", meta.get("name") or "")
        previous = self._objects.get(key)
        if previous is not None:
            old, new = _version(previous), _version(obj)
            # resourceVersions are etcd revisions in practice; when they are not
            # numbers, the latest event wins.
            if old is not None and new is not None and new < old:
                return previous
        self._objects[key] = obj
        self._stored[key] = self._clock()
        return previous

    def drop(self, kind: str, namespace: str, name: str) -> None:
        self._objects.pop((kind, namespace, name), None)
        self._stored.pop((kind, namespace, name), None)

    def __len__(self) -> int:
        return len(self._objects)


#: Metadata a reconcile acts on. Status is Ferry's own output, so an event that
#: only changes status (Ferry's own write coming back) needs no reconcile.
_WATCHED_META = ("generation", "annotations", "labels", "finalizers", "deletionTimestamp")


def meaningful_change(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    """Whether an endpoint event changes anything the reconciler reads (a predicate)."""
    if old is None:
        return True
    old_meta, new_meta = old.get("metadata") or {}, new.get("metadata") or {}
    return any(old_meta.get(f) != new_meta.get(f) for f in _WATCHED_META)


class PodIndex:
    """Which endpoints have pods on which node, kept by pod watch events.

    The drain controller reads its pods live; this index only answers "whose pods
    are on node N?" when N's notice changes, so a stale entry costs one needless
    look, never a missed one.
    """

    def __init__(self) -> None:
        self._pods: dict[tuple[str, str], tuple[str, tuple[str, str]]] = {}

    def store(self, namespace: str, pod: str, node: str | None, endpoint: str | None) -> None:
        """Remember that `pod` of `endpoint` runs on `node` (None forgets it)."""
        if node and endpoint:
            self._pods[(namespace, pod)] = (node, (namespace, endpoint))
        else:
            self._pods.pop((namespace, pod), None)

    def endpoints_on(self, node: str) -> set[tuple[str, str]]:
        """(namespace, endpoint) of every endpoint with a pod on `node`."""
        return {owner for where, owner in self._pods.values() if where == node}

    def __len__(self) -> int:
        return len(self._pods)
