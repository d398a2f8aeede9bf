"""Builders for endpoints used across unit tests."""

from __future__ import annotations

from typing import Any

from ferry.api.v1alpha1 import types


def endpoint(**spec: Any) -> types.InferenceEndpoint:
    body: dict[str, Any] = {
        "provider": "local",
        "model": {"uri": "hf://acme/tiny-llm", "revision": "v1"},
        "server": {"image": "ghcr.io/acme/server:1"},
        "gpu": {"type": "L4"},
    }
    body.update(spec)
    return types.InferenceEndpoint.model_validate(
        {
            "apiVersion": "ferry.dev/v1alpha1",
            "kind": "InferenceEndpoint",
            "metadata": {"name": "llm", "namespace": "team-a", "uid": "uid-1", "generation": 3},
            "spec": body,
        }
    )
