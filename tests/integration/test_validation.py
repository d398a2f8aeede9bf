"""Bad manifests are refused by the API server itself, naming the field and the backend.

Each case is a real `kubectl apply` against the real API server with the CRDs from
`crds/`: the schema and the CEL rules generated from the API types (decisions.md D8,
D19, the GPU tables) are what answer. A valid manifest per backend is accepted.
The namespace is outside the session operator's pattern: nothing reconciles here.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ferry import devcluster
from ferry.api.v1alpha1 import platforms
from tests.integration import kit

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "ghcr.io/ferry-dev/inference-server:0.1.0"

#: A minimal valid spec per backend; cases override parts of it.
BASE: dict[str, dict[str, Any]] = {
    "local": {
        "provider": "local",
        "model": {"uri": "hf://acme/tiny-llm"},
        "server": {"image": IMAGE},
        "gpu": {"type": "L4"},
        "scaling": {"minReplicas": 1, "maxReplicas": 3},
    },
    "runpod": {
        "provider": "runpod",
        "providerConfigRef": {"name": "rp"},
        "model": {"uri": "hf://acme/tiny-llm"},
        "server": {"image": IMAGE},
        "gpu": {"type": "L4"},
        "scaling": {"minReplicas": 0, "maxReplicas": 3},
    },
    "modal": {
        "provider": "modal",
        "providerConfigRef": {"name": "md"},
        "model": {"uri": "hf://acme/tiny-llm"},
        "gpu": {"type": "L4"},
        "scaling": {"minReplicas": 0, "maxReplicas": 3},
    },
    "replicate": {
        "provider": "replicate",
        "providerConfigRef": {"name": "rep"},
        "model": {"providerRef": "acme/tiny-llm"},
        "gpu": {"type": "T4"},
        "scaling": {"minReplicas": 0, "maxReplicas": 3},
    },
}

DELETE = object()


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`base` with `override` merged in; nested dicts merge, DELETE drops a key."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if value is DELETE:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def endpoint(name: str, backend: str, **override: Any) -> dict[str, Any]:
    """An InferenceEndpoint named `name`: `BASE[backend]` with `override` merged in."""
    return {
        "apiVersion": "ferry.dev/v1alpha1",
        "kind": "InferenceEndpoint",
        "metadata": {"name": name},
        "spec": merge(BASE[backend], override),
    }


def provider_config(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "ferry.dev/v1alpha1",
        "kind": "ProviderConfig",
        "metadata": {"name": name},
        "spec": spec,
    }


@pytest.fixture(scope="module")
def vns(cluster: devcluster.Cluster) -> Iterator[kit.Namespace]:
    name = kit.unique("ferry-val")
    cluster.kubectl("create", "namespace", name)
    yield kit.Namespace(cluster, name)
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def rejected(ns: kit.Namespace, manifest: dict[str, Any], expect: list[str]) -> str:
    """Apply `manifest`, assert the API server refused it with every fragment of `expect`."""
    result = ns.apply(manifest, check=False)
    name = manifest["metadata"]["name"]
    assert result.returncode != 0, f"{name} was accepted"
    for fragment in expect:
        assert fragment in result.stderr, f"{fragment!r} not in: {result.stderr}"
    assert ns.get(manifest["kind"].lower(), name) is None
    return result.stderr


# --- schema and generic rules ---------------------------------------------------------

GENERIC: list[tuple[str, dict[str, Any], list[str]]] = [
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
        {"model": {"uri": "hf://a/b", "providerRef": "a/b"}},
        ["spec.model", "set model.uri or model.providerRef, not both"],
    ),
    (
        "no-model-source",
        {"model": {"uri": DELETE}},
        ["spec.model.uri", "Required value", "model.uri is required by the local provider"],
    ),
    (
        "local-without-image",
        {"server": {"image": DELETE}},
        ["spec.server.image", "Required value", "server.image is required by the local provider"],
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
        "drain-zero",
        {"spot": {"drainGraceSeconds": 0}},
        ["spec.spot.drainGraceSeconds", "greater than or equal to 1"],
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
    (
        "negative-duration",
        {"scaling": {"scaleDownDelay": "-5s"}},
        ["spec.scaling.scaleDownDelay", "should match"],
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
        {"server": {"env": [{"name": "1BAD", "value": "x"}]}},
        ["spec.server.env[0].name", "should match"],
    ),
    (
        "bad-autoscaler",
        {"scaling": {"autoscaler": "keda"}},
        ["spec.scaling.autoscaler", "Unsupported value", "external"],
    ),
    (
        "negative-buffer",
        {"scaling": {"bufferReplicas": -1}},
        ["spec.scaling.bufferReplicas", "greater than or equal to 0"],
    ),
]


@pytest.mark.parametrize(("case", "spec", "expect"), GENERIC, ids=[c[0] for c in GENERIC])
def test_invalid_manifest_is_rejected_naming_the_field(
    vns: kit.Namespace, case: str, spec: dict[str, Any], expect: list[str]
) -> None:
    rejected(vns, endpoint(f"bad-{case}", "local", **spec), expect)


# --- D8: fields a backend does not honour ----------------------------------------------


def _unsupported(field: str, provider: str) -> list[str]:
    return [
        f"spec.{field}",
        "Forbidden",
        f"{field} is not supported by the {provider} provider",
        "remove it",
    ]


#: (provider, override, field): setting `field` on `provider` is rejected (D8 "rejected").
D8_REJECTED: list[tuple[str, dict[str, Any], str]] = [
    ("replicate", {"model": {"uri": "hf://a/b", "providerRef": DELETE}}, "model.uri"),
    ("local", {"model": {"uri": DELETE, "providerRef": "a/b"}}, "model.providerRef"),
    ("runpod", {"model": {"uri": DELETE, "providerRef": "a/b"}}, "model.providerRef"),
    ("modal", {"model": {"uri": DELETE, "providerRef": "a/b"}}, "model.providerRef"),
    ("replicate", {"server": {"image": IMAGE}}, "server.image"),
    ("replicate", {"server": {"env": [{"name": "A", "value": "1"}]}}, "server.env"),
    ("runpod", {"server": {"port": 8000}}, "server.port"),
    ("modal", {"server": {"port": 8000}}, "server.port"),
    ("replicate", {"server": {"port": 8000}}, "server.port"),
    ("runpod", {"server": {"args": ["--x"]}}, "server.args"),
    ("modal", {"server": {"args": ["--x"]}}, "server.args"),
    ("replicate", {"server": {"args": ["--x"]}}, "server.args"),
    ("replicate", {"gpu": {"fallback": ["L40S"]}}, "gpu.fallback"),
    ("replicate", {"scaling": {"targetInflightRequests": 8}}, "scaling.targetInflightRequests"),
    ("local", {"scaling": {"targetQueueDelay": "4s"}}, "scaling.targetQueueDelay"),
    ("modal", {"scaling": {"targetQueueDelay": "4s"}}, "scaling.targetQueueDelay"),
    ("replicate", {"scaling": {"targetQueueDelay": "4s"}}, "scaling.targetQueueDelay"),
    ("replicate", {"scaling": {"scaleDownDelay": "60s"}}, "scaling.scaleDownDelay"),
    ("runpod", {"scaling": {"scaleToZeroAfter": "5m"}}, "scaling.scaleToZeroAfter"),
    ("modal", {"scaling": {"scaleToZeroAfter": "5m"}}, "scaling.scaleToZeroAfter"),
    ("replicate", {"scaling": {"scaleToZeroAfter": "5m"}}, "scaling.scaleToZeroAfter"),
    ("runpod", {"scaling": {"scaleUpDelay": "30s"}}, "scaling.scaleUpDelay"),
    ("modal", {"scaling": {"scaleUpDelay": "30s"}}, "scaling.scaleUpDelay"),
    ("replicate", {"scaling": {"scaleUpDelay": "30s"}}, "scaling.scaleUpDelay"),
    ("runpod", {"scaling": {"bufferReplicas": 1}}, "scaling.bufferReplicas"),
    ("replicate", {"scaling": {"bufferReplicas": 1}}, "scaling.bufferReplicas"),
    ("runpod", {"scaling": {"autoscaler": "ferry"}}, "scaling.autoscaler"),
    ("modal", {"scaling": {"autoscaler": "external"}}, "scaling.autoscaler"),
    ("replicate", {"scaling": {"autoscaler": "ferry"}}, "scaling.autoscaler"),
    ("modal", {"scaling": {"capacityTimeout": "10m"}}, "scaling.capacityTimeout"),
    ("replicate", {"scaling": {"capacityTimeout": "10m"}}, "scaling.capacityTimeout"),
    ("runpod", {"spot": {"policy": "spot"}}, "spot"),
    ("modal", {"spot": {"drainGraceSeconds": 60}}, "spot"),
    ("replicate", {"spot": {"policy": "on-demand"}}, "spot"),
]


@pytest.mark.parametrize(
    ("provider", "override", "field"),
    D8_REJECTED,
    ids=[f"{p}-{f}" for p, _, f in D8_REJECTED],
)
def test_field_the_backend_does_not_honour_is_rejected(
    vns: kit.Namespace, provider: str, override: dict[str, Any], field: str
) -> None:
    name = f"no-{provider}-{field.replace('.', '-').lower()}"
    rejected(vns, endpoint(name, provider, **override), _unsupported(field, provider))


#: (id, provider, override, expected fragments): requirements, bounds and combinations.
D8_RULES: list[tuple[str, str, dict[str, Any], list[str]]] = [
    (
        "replicate-needs-ref",
        "replicate",
        {"model": {"providerRef": DELETE}},
        ["spec.model.providerRef", "Required value", "required by the replicate provider"],
    ),
    (
        "replicate-ref-shape",
        "replicate",
        {"model": {"providerRef": "just-a-name"}},
        ["spec.model.providerRef", "owner/model or owner/model:version"],
    ),
    (
        "runpod-needs-image",
        "runpod",
        {"server": DELETE},
        ["spec.server.image", "Required value", "required by the runpod provider"],
    ),
    (
        "modal-needs-uri",
        "modal",
        {"model": {"uri": DELETE}},
        ["spec.model.uri", "Required value", "required by the modal provider"],
    ),
    (
        "replicate-min-above-5",
        "replicate",
        {"scaling": {"minReplicas": 6, "maxReplicas": 6}},
        ["spec.scaling.minReplicas", "at most 5 on the replicate provider"],
    ),
    (
        "replicate-max-above-20",
        "replicate",
        {"scaling": {"maxReplicas": 21}},
        ["spec.scaling.maxReplicas", "at most 20 on the replicate provider"],
    ),
    (
        "modal-target-above-500",
        "modal",
        {"scaling": {"targetInflightRequests": 501}},
        ["spec.scaling.targetInflightRequests", "at most 500 on the modal provider"],
    ),
    (
        "runpod-two-scalers",
        "runpod",
        {"scaling": {"targetInflightRequests": 4, "targetQueueDelay": "4s"}},
        [
            "spec.scaling.targetQueueDelay",
            "targetInflightRequests and scaling.targetQueueDelay",
            "set one of them on the runpod provider",
        ],
    ),
    (
        "runpod-request-count-with-idle-timeout",
        "runpod",
        {"scaling": {"targetInflightRequests": 4, "scaleDownDelay": "30s"}},
        [
            "spec.scaling.scaleDownDelay",
            "not supported with scaling.targetInflightRequests by the runpod provider",
        ],
    ),
    (
        "runpod-queue-delay-too-short",
        "runpod",
        {"scaling": {"targetQueueDelay": "200ms"}},
        ["spec.scaling.targetQueueDelay", "between 500ms and 1h on the runpod provider"],
    ),
    (
        "runpod-idle-timeout-zero",
        "runpod",
        {"scaling": {"scaleDownDelay": "0s"}},
        ["spec.scaling.scaleDownDelay", "between 1s and 1h on the runpod provider"],
    ),
    (
        "runpod-idle-timeout-too-long",
        "runpod",
        {"scaling": {"scaleDownDelay": "1h1s"}},
        ["spec.scaling.scaleDownDelay", "between 1s and 1h on the runpod provider"],
    ),
    (
        "modal-scaledown-too-short",
        "modal",
        {"scaling": {"scaleDownDelay": "1500ms"}},
        ["spec.scaling.scaleDownDelay", "between 2s and 1h on the modal provider"],
    ),
    (
        "local-scaledown-too-long",
        "local",
        {"scaling": {"scaleDownDelay": "2h"}},
        ["spec.scaling.scaleDownDelay", "between 0s and 1h on the local provider"],
    ),
    (
        "scale-to-zero-too-short",
        "local",
        {"scaling": {"minReplicas": 0, "scaleToZeroAfter": "10s"}},
        ["spec.scaling.scaleToZeroAfter", "must be between 30s and 24h"],
    ),
    (
        "scale-up-too-long",
        "local",
        {"scaling": {"scaleUpDelay": "90m"}},
        ["spec.scaling.scaleUpDelay", "must be between 0s and 1h"],
    ),
    (
        "capacity-timeout-too-short",
        "runpod",
        {"scaling": {"capacityTimeout": "5s"}},
        ["spec.scaling.capacityTimeout", "must be between 30s and 24h"],
    ),
    *[
        (
            f"external-with-{field}",
            "local",
            {"scaling": {"minReplicas": 0, "autoscaler": "external", field: value}},
            [
                f"spec.scaling.{field}",
                "Forbidden",
                f"scaling.{field} is not supported with scaling.autoscaler: external",
            ],
        )
        for field, value in [
            ("targetInflightRequests", 8),
            ("scaleDownDelay", "60s"),
            ("scaleUpDelay", "10s"),
            ("bufferReplicas", 1),
            ("scaleToZeroAfter", "5m"),
        ]
    ],
]


@pytest.mark.parametrize(
    ("case", "provider", "override", "expect"), D8_RULES, ids=[c[0] for c in D8_RULES]
)
def test_backend_rule_is_enforced(
    vns: kit.Namespace, case: str, provider: str, override: dict[str, Any], expect: list[str]
) -> None:
    rejected(vns, endpoint(f"rule-{case}", provider, **override), expect)


# --- GPUs a backend does not sell -------------------------------------------------------

GPUS: list[tuple[str, str, dict[str, Any], list[str]]] = [
    (
        "runpod-t4",
        "runpod",
        {"type": "T4"},
        ["spec.gpu.type", "gpu.type T4 is not sold by the runpod provider", "L40S"],
    ),
    (
        "runpod-fallback-a10g",
        "runpod",
        {"type": "L4", "fallback": ["H100", "A10G"]},
        ["spec.gpu.fallback", "does not sell; it offers L4, L40S", "RTX4090"],
    ),
    (
        "modal-rtx4090",
        "modal",
        {"type": "RTX4090"},
        ["spec.gpu.type", "gpu.type RTX4090 is not sold by the modal provider", "A10G"],
    ),
    (
        "modal-fallback-rtx4090",
        "modal",
        {"type": "H100", "fallback": ["RTX4090"]},
        ["spec.gpu.fallback", "the modal provider does not sell", "A100-80GB"],
    ),
    (
        "replicate-l4",
        "replicate",
        {"type": "L4"},
        ["spec.gpu", "gpu.type L4 with gpu.count 1 matches no hardware", "L40S x2 (gpu-l40s-2x)"],
    ),
    (
        "replicate-two-h100",
        "replicate",
        {"type": "H100", "count": 2},
        ["spec.gpu", "gpu.type H100 with gpu.count 2 matches no hardware", "H100 x1 (gpu-h100)"],
    ),
]


@pytest.mark.parametrize(("case", "provider", "gpu", "expect"), GPUS, ids=[c[0] for c in GPUS])
def test_gpu_the_backend_does_not_sell_is_rejected(
    vns: kit.Namespace, case: str, provider: str, gpu: dict[str, Any], expect: list[str]
) -> None:
    rejected(vns, endpoint(f"gpu-{case}", provider, gpu=gpu), expect)


# --- D19: reserved env names ------------------------------------------------------------


@pytest.mark.parametrize("name", platforms.RESERVED_ENV_NAMES)
@pytest.mark.parametrize("provider", ["local", "runpod", "modal"])
def test_reserved_env_name_is_rejected(vns: kit.Namespace, provider: str, name: str) -> None:
    env = [{"name": "HF_TOKEN", "value": "x"}, {"name": name, "value": "1"}]
    manifest = endpoint(f"env-{provider}-{name.lower().replace('_', '-')}", provider)
    manifest["spec"].setdefault("server", {})["env"] = env
    rejected(
        vns,
        manifest,
        ["spec.server.env[1].name", "Forbidden", f"{name} is reserved", "other FERRY_* names"],
    )


def test_other_ferry_variables_stay_the_users(vns: kit.Namespace) -> None:
    manifest = endpoint(
        "env-tuning", "local", server={"env": [{"name": "FERRY_MAX_BATCH_SIZE", "value": "16"}]}
    )
    vns.apply(manifest)


# --- valid manifests per backend ---------------------------------------------------------

VALID: list[tuple[str, str, dict[str, Any]]] = [
    (
        "local-everything",
        "local",
        {
            "model": {"uri": "hf://acme/tiny-llm", "revision": "main"},
            "server": {
                "image": IMAGE,
                "port": 9000,
                "args": ["--max-batch", "8"],
                "env": [
                    {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "t"}}}
                ],
            },
            "gpu": {"type": "H100", "count": 2, "fallback": ["A100-80GB", "L40S"]},
            "scaling": {
                "minReplicas": 0,
                "maxReplicas": 4,
                "targetInflightRequests": 8,
                "scaleDownDelay": "5m",
                "scaleUpDelay": "30s",
                "scaleToZeroAfter": "1h30m",
                "bufferReplicas": 1,
                "autoscaler": "ferry",
                "capacityTimeout": "10m",
            },
            "spot": {"policy": "spot-with-fallback", "drainGraceSeconds": 1},
            "deletionPolicy": "Orphan",
        },
    ),
    (
        "local-external",
        "local",
        {"scaling": {"autoscaler": "external", "capacityTimeout": "24h"}},
    ),
    (
        "runpod-queue-delay",
        "runpod",
        {
            "server": {"env": [{"name": "FERRY_MAX_BATCH_SIZE", "value": "16"}]},
            "gpu": {"type": "A100-80GB", "fallback": ["H100", "H200"]},
            "scaling": {
                "targetQueueDelay": "500ms",
                "scaleDownDelay": "1h",
                "capacityTimeout": "30s",
            },
        },
    ),
    (
        "runpod-request-count",
        "runpod",
        {"gpu": {"type": "RTX4090", "count": 2}, "scaling": {"targetInflightRequests": 4}},
    ),
    (
        "modal",
        "modal",
        {
            "server": {
                "env": [
                    {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "t"}}}
                ]
            },
            "gpu": {"type": "H100", "count": 8, "fallback": ["A100-80GB", "A100-40GB"]},
            "scaling": {
                "targetInflightRequests": 500,
                "scaleDownDelay": "2s",
                "bufferReplicas": 2,
            },
        },
    ),
    ("modal-own-image", "modal", {"server": {"image": IMAGE}, "gpu": {"type": "T4"}}),
    (
        "replicate",
        "replicate",
        {
            "model": {"providerRef": "acme/tiny-llm:" + "5c7d5dc6dd8bf75c" * 4},
            "gpu": {"type": "L40S", "count": 2},
            "scaling": {"minReplicas": 5, "maxReplicas": 20},
            "deletionPolicy": "Orphan",
        },
    ),
]


@pytest.mark.parametrize(("case", "provider", "override"), VALID, ids=[c[0] for c in VALID])
def test_valid_manifest_per_backend_is_accepted(
    vns: kit.Namespace, case: str, provider: str, override: dict[str, Any]
) -> None:
    manifest = endpoint(f"ok-{case}", provider, **override)
    vns.apply(manifest)
    stored = vns.get("inferenceendpoint", f"ok-{case}")
    assert stored is not None
    # No backend-specific default was added on the way in (D8).
    assert stored["spec"] == merge(
        {"deletionPolicy": "Delete", "scaling": {"minReplicas": 1, "maxReplicas": 1}},
        _with_gpu_count(manifest["spec"]),
    )


def _with_gpu_count(spec: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(spec)
    out["gpu"].setdefault("count", 1)
    return out


def test_examples_are_valid(vns: kit.Namespace) -> None:
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            doc["metadata"].pop("namespace", None)
            result = vns.kubectl(
                "apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(doc), check=False
            )
            assert result.returncode == 0, f"{path.name}: {result.stderr}"


def test_provider_is_immutable(vns: kit.Namespace) -> None:
    vns.apply(endpoint("fixed", "local", scaling={"minReplicas": 0, "maxReplicas": 1}))
    changed = endpoint("fixed", "modal")
    result = vns.apply(changed, check=False)
    assert result.returncode != 0
    assert "spec.provider" in result.stderr
    assert "immutable" in result.stderr


# --- ProviderConfig ----------------------------------------------------------------------

PC_REJECTED: list[tuple[str, dict[str, Any], list[str]]] = [
    (
        "modal-inference-url",
        {"provider": "modal", "inferenceBaseUrl": "http://127.0.0.1:9"},
        ["spec.inferenceBaseUrl", "not supported by the modal provider", "returns each endpoint"],
    ),
    (
        "replicate-inference-url",
        {"provider": "replicate", "inferenceBaseUrl": "http://127.0.0.1:9"},
        ["spec.inferenceBaseUrl", "not supported by the replicate provider", "set baseUrl"],
    ),
    (
        "local-inference-url",
        {"provider": "local", "inferenceBaseUrl": "http://127.0.0.1:9"},
        ["spec.inferenceBaseUrl", "not supported by the local provider"],
    ),
    (
        "local-base-url",
        {"provider": "local", "baseUrl": "http://127.0.0.1:9"},
        ["spec.baseUrl", "not supported by the local provider"],
    ),
    (
        "modal-regions",
        {"provider": "modal", "defaults": {"regions": ["us-east"]}},
        ["spec.defaults.regions", "not supported by the modal provider", "only RunPod"],
    ),
    (
        "replicate-regions",
        {"provider": "replicate", "defaults": {"regions": ["us-east"]}},
        ["spec.defaults.regions", "not supported by the replicate provider"],
    ),
    (
        "removed-spot-policy",
        {"provider": "runpod", "defaults": {"spotPolicy": "spot"}},
        ["unknown field", "spec.defaults.spotPolicy"],
    ),
    (
        "removed-owner",
        {"provider": "replicate", "defaults": {"owner": "acme"}},
        ["unknown field", "spec.defaults.owner"],
    ),
    (
        "bad-inference-url",
        {"provider": "runpod", "inferenceBaseUrl": "api.runpod.ai"},
        ["spec.inferenceBaseUrl", "should match"],
    ),
    (
        "replicate-base-url-with-v1",
        {"provider": "replicate", "baseUrl": "http://127.0.0.1:9/v1"},
        ["spec.baseUrl", "must not end in /v1", "replicate"],
    ),
    (
        "remote-without-credentials",
        {"provider": "runpod", "credentialsSecretRef": DELETE},
        ["spec.credentialsSecretRef", "required for the modal, replicate and runpod"],
    ),
]


@pytest.mark.parametrize(("case", "spec", "expect"), PC_REJECTED, ids=[c[0] for c in PC_REJECTED])
def test_provider_config_rule_is_enforced(
    vns: kit.Namespace, case: str, spec: dict[str, Any], expect: list[str]
) -> None:
    body = merge({"credentialsSecretRef": {"name": "creds"}}, spec)
    rejected(vns, provider_config(f"pc-{case}", body), expect)


def test_runpod_provider_config_takes_every_field(vns: kit.Namespace) -> None:
    spec = {
        "provider": "runpod",
        "credentialsSecretRef": {"name": "creds"},
        "baseUrl": "http://127.0.0.1:18080",
        "inferenceBaseUrl": "http://127.0.0.1:18081",
        "defaults": {"regions": ["EU-RO-1", "US-TX-3"]},
    }
    vns.apply(provider_config("pc-runpod", spec))
    stored = vns.get("providerconfig", "pc-runpod")
    assert stored is not None
    assert stored["spec"] == spec


@pytest.mark.parametrize("provider", ["modal", "replicate"])
def test_other_provider_configs_take_a_base_url(vns: kit.Namespace, provider: str) -> None:
    spec = {
        "provider": provider,
        "credentialsSecretRef": {"name": "creds"},
        "baseUrl": "http://127.0.0.1:18080",
    }
    vns.apply(provider_config(f"pc-{provider}", spec))
    stored = vns.get("providerconfig", f"pc-{provider}")
    assert stored is not None
    assert stored["spec"] == spec
