"""Old CRD defaults are stripped once from non-local endpoints (D8)."""

from __future__ import annotations

import copy
from typing import Any

from ferry.logic import migrations

OLD_RUNPOD: dict[str, Any] = {
    "apiVersion": "ferry.dev/v1alpha1",
    "kind": "InferenceEndpoint",
    "metadata": {"name": "rp", "namespace": "ns"},
    "spec": {
        "provider": "runpod",
        "model": {"uri": "hf://a/b"},
        "server": {"image": "img", "port": 8000, "args": [], "env": []},
        "gpu": {"type": "L4", "count": 1, "fallback": []},
        "scaling": {"minReplicas": 1, "maxReplicas": 1, "targetInflightRequests": 8},
        "spot": {"policy": "on-demand", "drainGraceSeconds": 120},
        "deletionPolicy": "Delete",
        "providerConfigRef": {"name": "pc"},
    },
}


def _apply(obj: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7386 JSON merge patch, as the API server applies it."""
    out = copy.deepcopy(obj)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _apply(out[key], value)
        else:
            out[key] = value
    return out


def test_remote_endpoint_loses_every_old_default() -> None:
    got = migrations.endpoint_migration(OLD_RUNPOD)
    assert got is not None
    assert got.removed == (
        "spec.server.port",
        "spec.server.args",
        "spec.server.env",
        "spec.scaling.targetInflightRequests",
        "spec.spot.policy",
        "spec.spot.drainGraceSeconds",
        "spec.gpu.fallback",
    )
    assert got.patch == {
        "spec": {
            "server": {"port": None, "args": None, "env": None},
            "scaling": {"targetInflightRequests": None},
            "spot": None,
            "gpu": {"fallback": None},
        }
    }
    migrated = _apply(OLD_RUNPOD, got.patch)
    assert migrated["spec"]["server"] == {"image": "img"}
    assert "spot" not in migrated["spec"]
    assert migrated["spec"]["scaling"] == {"minReplicas": 1, "maxReplicas": 1}
    assert migrations.endpoint_migration(migrated) is None


def test_users_own_values_stay() -> None:
    obj = copy.deepcopy(OLD_RUNPOD)
    obj["spec"]["server"] = {"image": "img", "env": [{"name": "A", "value": "1"}]}
    obj["spec"]["scaling"]["targetInflightRequests"] = 4
    obj["spec"]["spot"] = {"policy": "spot", "drainGraceSeconds": 120}
    obj["spec"]["gpu"] = {"type": "L4", "count": 1}
    got = migrations.endpoint_migration(obj)
    assert got is not None
    assert got.removed == ("spec.spot.drainGraceSeconds",)
    assert got.patch == {"spec": {"spot": {"drainGraceSeconds": None}}}


def test_replicate_server_object_goes_when_emptied() -> None:
    obj = copy.deepcopy(OLD_RUNPOD)
    obj["spec"].update(provider="replicate", model={"providerRef": "a/b"})
    obj["spec"]["server"] = {"port": 8000, "args": [], "env": []}
    got = migrations.endpoint_migration(obj)
    assert got is not None
    assert got.patch["spec"]["server"] is None
    assert "server" not in _apply(obj, got.patch)["spec"]


def test_local_endpoints_are_left_alone() -> None:
    obj = copy.deepcopy(OLD_RUNPOD)
    obj["spec"]["provider"] = "local"
    assert migrations.endpoint_migration(obj) is None


def test_nothing_to_do_is_none() -> None:
    obj = {"spec": {"provider": "modal", "model": {"uri": "hf://a/b"}, "gpu": {"type": "L4"}}}
    assert migrations.endpoint_migration(obj) is None
    assert migrations.endpoint_migration({}) is None


def test_input_is_not_modified() -> None:
    before = copy.deepcopy(OLD_RUNPOD)
    migrations.endpoint_migration(OLD_RUNPOD)
    assert before == OLD_RUNPOD


def test_provider_config_regions_default() -> None:
    obj = {"spec": {"provider": "modal", "defaults": {"regions": []}}}
    got = migrations.provider_config_migration(obj)
    assert got is not None
    assert got.patch == {"spec": {"defaults": None}}
    assert got.removed == ("spec.defaults.regions",)
    kept = {"spec": {"provider": "runpod", "defaults": {"regions": ["US-TX-3"]}}}
    assert migrations.provider_config_migration(kept) is None
