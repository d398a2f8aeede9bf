"""ProviderConfig credentials are read at reconcile time and never leak."""

from __future__ import annotations

from typing import Any

from tests.integration import kit

SECRET_VALUE = "tok-9f8e7d6c5b4a-do-not-print"


def stalled(ns: kit.Namespace, name: str) -> dict[str, Any] | None:
    obj = ns.get("inferenceendpoint", name)
    cond = kit.condition(obj, "Stalled")
    return obj if cond and cond["status"] == "True" else None


def _remote(name: str, config: str) -> dict[str, Any]:
    return kit.endpoint(
        name,
        provider="modal",
        providerConfigRef={"name": config},
        server={"image": "ghcr.io/ferry-dev/inference-server:0.1.0"},
    )


def test_missing_secret_is_named_and_values_never_leak(
    ns: kit.Namespace, operator: kit.Operator
) -> None:
    ns.apply(kit.provider_config("modal-prod", "modal", "modal-creds"))
    ns.apply(_remote("remote", "modal-prod"))
    obj = kit.wait_for(lambda: stalled(ns, "remote"), "Stalled without credentials")
    cond = kit.condition(obj, "Stalled")
    assert cond is not None
    assert cond["reason"] == "CredentialsNotFound"
    assert "modal-creds" in cond["message"]
    pc_ready = kit.wait_for(
        lambda: kit.condition(ns.get("providerconfig", "modal-prod"), "Ready"),
        "ProviderConfig status",
    )
    assert pc_ready["status"] == "False"
    assert pc_ready["reason"] == "CredentialsNotFound"

    ns.kubectl(
        "create",
        "secret",
        "generic",
        "modal-creds",
        f"--from-literal=tokenSecret={SECRET_VALUE}",
        "--from-literal=tokenId=ak-1",
    )

    def moved_on() -> dict[str, Any] | None:
        got = stalled(ns, "remote")
        cond = kit.condition(got, "Stalled")
        return got if cond and cond["reason"] != "CredentialsNotFound" else None

    obj = kit.wait_for(moved_on, "credentials found", timeout=90)
    kit.wait_for(
        lambda: (
            (kit.condition(ns.get("providerconfig", "modal-prod"), "Ready") or {}).get("reason")
            == "CredentialsFound"
        ),
        "ProviderConfig Ready once its Secret exists",
    )
    # This build has no Modal client yet: it says so instead of pretending.
    assert kit.condition(obj, "Stalled")["reason"] == "ProviderNotSupported"  # type: ignore[index]

    events = ns.kubectl("get", "events", "-o", "yaml").stdout
    status = ns.kubectl("get", "inferenceendpoint", "remote", "-o", "yaml").stdout
    described = ns.kubectl("describe", "inferenceendpoint", "remote").stdout
    for text in (events, status, described, operator.logs()):
        assert SECRET_VALUE not in text

    # Nothing was ever created at the provider, so deletion must not wait on it.
    ns.kubectl("delete", "inferenceendpoint", "remote", "--timeout=60s")
    assert ns.get("inferenceendpoint", "remote") is None


def test_provider_config_for_another_provider_is_refused(ns: kit.Namespace) -> None:
    ns.apply(kit.provider_config("rp", "runpod", "rp-creds"))
    ns.apply(_remote("mismatch", "rp"))
    obj = kit.wait_for(lambda: stalled(ns, "mismatch"), "Stalled on a mismatched config")
    cond = kit.condition(obj, "Stalled")
    assert cond is not None
    assert cond["reason"] == "ProviderConfigMismatch"
    assert "is for runpod" in cond["message"]


def test_provider_config_requires_a_secret_for_remote_providers(ns: kit.Namespace) -> None:
    result = ns.apply(
        kit.provider_config("nocreds", "replicate"),
        check=False,
    )
    assert result.returncode != 0
    assert "spec.credentialsSecretRef" in result.stderr


def test_secret_without_the_needed_keys_is_named(ns: kit.Namespace) -> None:
    ns.kubectl("create", "secret", "generic", "half", f"--from-literal=tokenId={SECRET_VALUE}")
    ns.apply(kit.provider_config("half", "modal", "half"))
    ns.apply(_remote("partial", "half"))
    obj = kit.wait_for(lambda: stalled(ns, "partial"), "Stalled on incomplete credentials")
    cond = kit.condition(obj, "Stalled")
    assert cond is not None
    assert cond["reason"] == "CredentialsIncomplete"
    assert "tokenSecret" in cond["message"]
    assert SECRET_VALUE not in cond["message"]
    table = ns.kubectl("get", "providerconfig", "half").stdout
    assert "modal" in table
    assert "False" in table
