"""One-time clean-up of stored objects after the per-backend API change (D8).

The CRD used to default `server.port`, `server.args`, `server.env`,
`scaling.targetInflightRequests`, `spot` and the ProviderConfig's `defaults.regions`.
Objects stored then still hold those values, and the per-backend rules, which re-run
on every spec edit, reject most of them on remote backends: the next edit of such an
endpoint would fail for a field its owner never wrote. At start-up the operator
removes, on endpoints whose provider is not `local`, every field still equal to its
old default (a user's own value differs, or was the default and meant the same),
logs what it removed and patches the object with the JSON merge patch built here.
Pure functions: the caller reads, patches and logs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: (path under spec, old CRD default) for InferenceEndpoint.
OLD_ENDPOINT_DEFAULTS: tuple[tuple[tuple[str, ...], Any], ...] = (
    (("server", "port"), 8000),
    (("server", "args"), []),
    (("server", "env"), []),
    (("scaling", "targetInflightRequests"), 8),
    (("spot", "policy"), "on-demand"),
    (("spot", "drainGraceSeconds"), 120),
    (("gpu", "fallback"), []),
)
#: (path under spec, old CRD default) for ProviderConfig.
OLD_PROVIDER_CONFIG_DEFAULTS: tuple[tuple[tuple[str, ...], Any], ...] = (
    (("defaults", "regions"), []),
)
#: Objects removed as a whole once the migration has emptied them.
_DROP_WHEN_EMPTY = {("server",), ("spot",), ("defaults",)}


@dataclass(frozen=True)
class Migration:
    """A JSON merge patch for one object and the fields it removes, for the log."""

    patch: dict[str, Any]
    removed: tuple[str, ...]


def endpoint_migration(obj: Mapping[str, Any]) -> Migration | None:
    """The patch that strips old CRD defaults from a non-local endpoint, or None.

    `obj` is the endpoint as read from the API server (a dict). Local endpoints
    honour every one of those fields and keep them.
    """
    spec = obj.get("spec") or {}
    if spec.get("provider", "local") == "local":
        return None
    return _strip(spec, OLD_ENDPOINT_DEFAULTS)


def provider_config_migration(obj: Mapping[str, Any]) -> Migration | None:
    """The patch that strips the old `defaults.regions: []` from a ProviderConfig, or None."""
    return _strip(obj.get("spec") or {}, OLD_PROVIDER_CONFIG_DEFAULTS)


def _strip(
    spec: Mapping[str, Any], old: tuple[tuple[tuple[str, ...], Any], ...]
) -> Migration | None:
    removed: list[tuple[str, ...]] = []
    for path, default in old:
        parent = _get(spec, path[:-1])
        if isinstance(parent, Mapping) and path[-1] in parent and parent[path[-1]] == default:
            removed.append(path)
    if not removed:
        return None
    patch: dict[str, Any] = {}
    for path in removed:
        _set(patch, path, None)
    # A parent left empty goes too, so nothing the user never wrote remains.
    for parent_path in sorted({p[:-1] for p in removed}):
        if parent_path not in _DROP_WHEN_EMPTY:
            continue
        parent = _get(spec, parent_path)
        assert isinstance(parent, Mapping)
        leaves = {p[-1] for p in removed if p[:-1] == parent_path}
        if set(parent) <= leaves:
            _set(patch, parent_path, None)
    return Migration(patch={"spec": patch}, removed=tuple("spec." + ".".join(p) for p in removed))


def _get(node: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return node


def _set(patch: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = patch
    for key in path[:-1]:
        child = node.setdefault(key, {})
        if child is None:  # the parent itself is already being removed
            return
        node = child
    node[path[-1]] = value
