"""An in-memory Kubernetes API for unit tests of the controllers (implements kube.Api).

Objects live in a dict; every write bumps a resourceVersion; a merge patch with a
stale resourceVersion raises Conflict, as the API server does. Faults are queued
per verb: `fail("patch", kube.Unavailable("..."))` makes the next patch raise.
Secrets and events are kept apart, the way Ferry reads and writes them.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from typing import Any

from ferry import caching
from ferry import kube as kube_api

Key = tuple[str, str, str]


def merge(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge(result.get(key), value)
    return result


class FakeKube:
    """See the module docstring."""

    def __init__(self) -> None:
        self.cache = caching.ObjectCache()
        self.objects: dict[Key, dict[str, Any]] = {}
        self.secrets: dict[tuple[str, str], kube_api.SecretData] = {}
        self.events: list[tuple[str, str, str, str]] = []  # (object, type, reason, message)
        self.calls: defaultdict[str, int] = defaultdict(int)
        # (verb, kind, name, field manager) of every write, in order.
        self.writes: list[tuple[str, str, str, str | None]] = []
        # Pods whose eviction the disruption budget refuses (429).
        self.refuse_eviction: set[str] = set()
        self.evicted: list[str] = []
        self._faults: defaultdict[str, list[Exception]] = defaultdict(list)
        self._version = 100

    # --- test set-up -------------------------------------------------------------------

    def put(self, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj.setdefault("metadata", {})
        meta.setdefault("namespace", "" if obj["kind"] == "Node" else "team-a")
        meta.setdefault("uid", f"uid-{meta['name']}")
        meta.setdefault("generation", 1)
        meta["resourceVersion"] = self._bump()
        self.objects[(obj["kind"], meta["namespace"], meta["name"])] = copy.deepcopy(obj)
        return obj

    def put_secret(
        self,
        name: str,
        data: dict[str, str],
        annotations: dict[str, str] | None = None,
        namespace: str = "team-a",
    ) -> None:
        self.secrets[(namespace, name)] = kube_api.SecretData(
            name=name, resource_version=self._bump(), annotations=annotations or {}, data=data
        )

    def fail(self, verb: str, *errors: Exception) -> None:
        """The next calls of `verb` raise `errors`, in order."""
        self._faults[verb].extend(errors)

    def obj(self, kind: str, name: str, namespace: str = "team-a") -> dict[str, Any] | None:
        found = self.objects.get((kind, namespace, name))
        return copy.deepcopy(found) if found is not None else None

    def reasons(self) -> list[str]:
        return [reason for _, _, reason, _ in self.events]

    def _bump(self) -> str:
        self._version += 1
        return str(self._version)

    def _enter(self, verb: str) -> None:
        self.calls[verb] += 1
        if self._faults[verb]:
            raise self._faults[verb].pop(0)

    # --- kube.Api -----------------------------------------------------------------------

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        self._enter("get")
        return self.obj(kind, name, namespace)

    async def list(
        self, kind: str, namespace: str | None = None, labels: dict[str, str] | None = None
    ) -> list[dict[str, Any]]:
        self._enter("list")
        out = []
        for (k, ns, _), obj in self.objects.items():
            have = (obj.get("metadata") or {}).get("labels") or {}
            if (
                k == kind
                and namespace in (None, ns)
                and all(have.get(a) == b for a, b in (labels or {}).items())
            ):
                out.append(copy.deepcopy(obj))
        return out

    async def patch(
        self,
        kind: str,
        namespace: str,
        name: str,
        patch: dict[str, Any],
        resource_version: str | None = None,
        field_manager: str | None = None,
    ) -> dict[str, Any]:
        self._enter("patch")
        self.writes.append(("patch", kind, name, field_manager))
        key = (kind, namespace, name)
        current = self.objects.get(key)
        if current is None:
            raise kube_api.NotFound(f"{kind} {namespace}/{name} not found")
        if resource_version is not None and resource_version != current["metadata"].get(
            "resourceVersion"
        ):
            raise kube_api.Conflict(f"{kind} {namespace}/{name} changed")
        updated = merge(current, patch)
        updated["metadata"]["resourceVersion"] = self._bump()
        meta = updated["metadata"]
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            del self.objects[key]
        else:
            self.objects[key] = updated
        return copy.deepcopy(updated)

    async def patch_status(
        self, kind: str, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any] | None:
        self._enter("patch_status")
        key = (kind, namespace, name)
        current = self.objects.get(key)
        if current is None:
            return None
        current["status"] = merge(current.get("status") or {}, status)
        current["metadata"]["resourceVersion"] = self._bump()
        return copy.deepcopy(current)

    async def set_pod_condition(
        self, namespace: str, name: str, ctype: str, status: str, reason: str, message: str
    ) -> None:
        self._enter("set_pod_condition")
        self.writes.append(("condition", "Pod", f"{name}:{ctype}={status}", None))
        pod = self.objects.get(("Pod", namespace, name))
        if pod is None:
            return
        conditions = [
            c for c in (pod.get("status") or {}).get("conditions") or [] if c["type"] != ctype
        ]
        conditions.append({"type": ctype, "status": status, "reason": reason, "message": message})
        pod.setdefault("status", {})["conditions"] = conditions
        pod["metadata"]["resourceVersion"] = self._bump()

    async def evict(self, namespace: str, name: str) -> bool:
        self._enter("evict")
        self.writes.append(("evict", "Pod", name, None))
        if name in self.refuse_eviction:
            return False
        pod = self.objects.get(("Pod", namespace, name))
        if pod is not None:
            pod["metadata"]["deletionTimestamp"] = "2026-11-30T00:00:00Z"
            self.evicted.append(name)
        return True

    async def apply(self, manifest: dict[str, Any], field_manager: str = "ferry") -> dict[str, Any]:
        self._enter("apply")
        self.writes.append(("apply", manifest["kind"], manifest["metadata"]["name"], field_manager))
        meta = manifest["metadata"]
        key = (manifest["kind"], meta.get("namespace") or "", meta["name"])
        obj = merge(self.objects.get(key) or {}, copy.deepcopy(manifest))
        obj["metadata"]["resourceVersion"] = self._bump()
        self.objects[key] = obj
        return copy.deepcopy(obj)

    async def delete(self, kind: str, namespace: str, name: str) -> None:
        self._enter("delete")
        self.writes.append(("delete", kind, name, None))
        self.objects.pop((kind, namespace, name), None)

    async def get_secret(self, namespace: str, name: str) -> kube_api.SecretData | None:
        self._enter("get_secret")
        return self.secrets.get((namespace, name))

    async def post_event(
        self, obj: dict[str, Any], event_type: str, reason: str, message: str
    ) -> None:
        self.events.append((obj["metadata"]["name"], event_type, reason, message))

    # --- what the API server does on delete ----------------------------------------------

    def mark_deleted(self, kind: str, name: str, namespace: str = "team-a") -> None:
        obj = self.objects[(kind, namespace, name)]
        obj["metadata"]["deletionTimestamp"] = "2026-11-30T00:00:00Z"
        if not obj["metadata"].get("finalizers"):
            del self.objects[(kind, namespace, name)]
