"""ProviderConfig references checked where Kubernetes can check them, and by Ferry."""

from __future__ import annotations

from typing import Any

from tests.integration import kit


def stalled(ns: kit.Namespace, name: str) -> dict[str, Any] | None:
    obj = ns.get("inferenceendpoint", name)
    cond = kit.condition(obj, "Stalled")
    return obj if cond and cond["status"] == "True" else None


def test_provider_config_for_another_provider_is_refused(ns: kit.Namespace) -> None:
    ns.kubectl("create", "secret", "generic", "rep-creds", "--from-literal=token=t")
    ns.apply(kit.provider_config("rep", "replicate", "rep-creds"))
    ns.apply(
        kit.endpoint(
            "mismatch",
            provider="runpod",
            providerConfigRef={"name": "rep"},
            server={"image": "ghcr.io/ferry-dev/inference-server:0.1.0"},
        )
    )
    obj = kit.wait_for(lambda: stalled(ns, "mismatch"), "Stalled on a mismatched config")
    cond = kit.condition(obj, "Stalled")
    assert cond is not None
    assert cond["reason"] == "ProviderConfigMismatch"
    assert "is for replicate" in cond["message"]
    # Nothing was ever created at the provider, so deletion must not wait on it.
    ns.kubectl("delete", "inferenceendpoint", "mismatch", "--timeout=60s")
    assert ns.get("inferenceendpoint", "mismatch") is None


def test_provider_config_requires_a_secret_for_remote_providers(ns: kit.Namespace) -> None:
    result = ns.apply(kit.provider_config("nocreds", "replicate"), check=False)
    assert result.returncode != 0
    assert "spec.credentialsSecretRef" in result.stderr


def test_a_missing_provider_config_is_named(ns: kit.Namespace) -> None:
    ns.apply(
        kit.endpoint(
            "orphaned-ref",
            provider="runpod",
            providerConfigRef={"name": "nowhere"},
            server={"image": "ghcr.io/ferry-dev/inference-server:0.1.0"},
        )
    )
    obj = kit.wait_for(lambda: stalled(ns, "orphaned-ref"), "Stalled without its ProviderConfig")
    cond = kit.condition(obj, "Stalled")
    assert cond is not None
    assert cond["reason"] == "ProviderConfigNotFound"
    assert "nowhere" in cond["message"]
