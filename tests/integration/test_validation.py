"""Bad manifests are refused by the API server itself, naming the field at fault."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration import kit

CASES: list[tuple[str, dict[str, Any], list[str]]] = [
    (
        "min-above-max",
        {"scaling": {"minReplicas": 3, "maxReplicas": 1}},
        ["spec.scaling.minReplicas", "less than or equal"],
    ),
    ("unknown-gpu", {"gpu": {"type": "B300"}}, ["spec.gpu.type", "Unsupported value", "H100"]),
    ("unknown-provider", {"provider": "lambda"}, ["spec.provider", "Unsupported value", "runpod"]),
    (
        "gpu-count-too-high",
        {"gpu": {"type": "L4", "count": 16}},
        ["spec.gpu.count", "less than or equal to 8"],
    ),
    (
        "negative-min",
        {"scaling": {"minReplicas": -1, "maxReplicas": 1}},
        ["spec.scaling.minReplicas", "greater than or equal to 0"],
    ),
    (
        "bad-model-uri",
        {"model": {"uri": "ftp://somewhere/model"}},
        ["spec.model.uri", "should match"],
    ),
    (
        "uri-and-ref",
        {"model": {"uri": "hf://a/b", "providerRef": "a/b:1"}},
        ["spec.model", "exactly one of model.uri or model.providerRef"],
    ),
    (
        "no-model-source",
        {"model": {}},
        ["spec.model", "exactly one of model.uri or model.providerRef"],
    ),
    (
        "local-without-image",
        {"server": {"port": 8000}},
        ["spec.server.image", "required when provider is local"],
    ),
    (
        "replicate-without-ref",
        {"provider": "replicate", "providerConfigRef": {"name": "r"}},
        ["spec.model.providerRef", "replicate needs model.providerRef"],
    ),
    (
        "remote-without-config",
        {"provider": "runpod"},
        ["spec.providerConfigRef", "required for the modal, replicate and runpod"],
    ),
    (
        "fallback-repeats-type",
        {"gpu": {"type": "L4", "fallback": ["L4"]}},
        ["spec.gpu.fallback", "must not repeat gpu.type"],
    ),
    (
        "bad-spot-policy",
        {"spot": {"policy": "sometimes"}},
        ["spec.spot.policy", "Unsupported value", "spot-with-fallback"],
    ),
    (
        "drain-too-long",
        {"spot": {"drainGraceSeconds": 7200}},
        ["spec.spot.drainGraceSeconds", "less than or equal to 3600"],
    ),
    (
        "scale-to-zero-needs-min-zero",
        {"scaling": {"minReplicas": 1, "maxReplicas": 2, "scaleToZeroAfter": "5m"}},
        ["spec.scaling.scaleToZeroAfter", "requires scaling.minReplicas: 0"],
    ),
    (
        "bad-duration",
        {"scaling": {"minReplicas": 0, "maxReplicas": 2, "scaleToZeroAfter": "five minutes"}},
        ["spec.scaling.scaleToZeroAfter", "should match"],
    ),
    ("unknown-field", {"replicas": 3}, ["unknown field", "spec.replicas"]),
    (
        "bad-deletion-policy",
        {"deletionPolicy": "Keep"},
        ["spec.deletionPolicy", "Unsupported value", "Orphan"],
    ),
    (
        "env-value-and-secret",
        {
            "server": {
                "image": "i",
                "env": [
                    {
                        "name": "A",
                        "value": "x",
                        "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}},
                    }
                ],
            }
        },
        ["spec.server.env[0]", "exactly one of value or valueFrom"],
    ),
    (
        "bad-env-name",
        {"server": {"image": "i", "env": [{"name": "1BAD", "value": "x"}]}},
        ["spec.server.env[0].name", "should match"],
    ),
]


@pytest.mark.parametrize(("case", "spec", "expect"), CASES, ids=[c[0] for c in CASES])
def test_invalid_manifest_is_rejected_naming_the_field(
    ns: kit.Namespace, case: str, spec: dict[str, Any], expect: list[str]
) -> None:
    result = ns.apply(kit.endpoint(f"bad-{case}", **spec), check=False)
    assert result.returncode != 0, f"{case} was accepted"
    for fragment in expect:
        assert fragment in result.stderr, f"{fragment!r} not in: {result.stderr}"
    assert ns.get("inferenceendpoint", f"bad-{case}") is None


def test_provider_is_immutable(ns: kit.Namespace) -> None:
    ns.apply(kit.endpoint("fixed", scaling={"minReplicas": 0, "maxReplicas": 1}))
    changed = kit.endpoint("fixed", provider="modal", providerConfigRef={"name": "m"})
    result = ns.apply(changed, check=False)
    assert result.returncode != 0
    assert "spec.provider" in result.stderr
    assert "immutable" in result.stderr
