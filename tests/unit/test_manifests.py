from __future__ import annotations

from typing import Any

import pytest

from ferry.logic import manifests
from tests.unit.factories import endpoint


def _required_terms(dep: dict[str, Any]) -> list[dict[str, Any]]:
    affinity = dep["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]
    terms: list[dict[str, Any]] = affinity["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    return terms


def test_deployment_requests_gpus_and_probes_readiness() -> None:
    ep = endpoint(gpu={"type": "A100-80GB", "count": 2})
    dep = manifests.deployment(ep, "llm", 3)
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert dep["spec"]["replicas"] == 3
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert dep["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["FERRY_MODEL"] == "hf://acme/tiny-llm@v1"
    products = _required_terms(dep)[0]["matchExpressions"][0]["values"]
    assert products == ["NVIDIA-A100-SXM4-80GB", "NVIDIA-A100-80GB-PCIe"]


def test_grace_period_covers_drain() -> None:
    ep = endpoint(spot={"policy": "spot", "drainGraceSeconds": 90})
    dep = manifests.deployment(ep, "llm", 1)
    assert dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 95


@pytest.mark.parametrize(
    ("policy", "terms", "tolerates_spot"),
    [
        ("on-demand", 1, False),
        ("spot", len(manifests.SPOT_LABELS), True),
        ("spot-with-fallback", 1, True),
    ],
    ids=["on-demand", "spot", "spot-with-fallback"],
)
def test_spot_policy_placement(policy: str, terms: int, tolerates_spot: bool) -> None:
    dep = manifests.deployment(endpoint(spot={"policy": policy}), "llm", 1)
    required = _required_terms(dep)
    assert len(required) == terms
    tolerations = {t["key"] for t in dep["spec"]["template"]["spec"]["tolerations"]}
    assert ("ferry.dev/spot" in tolerations) is tolerates_spot
    if policy == "on-demand":
        ops = {(e["key"], e["operator"]) for e in required[0]["matchExpressions"][1:]}
        assert ("karpenter.sh/capacity-type", "NotIn") in ops
    if policy == "spot":
        keys = {t["matchExpressions"][1]["key"] for t in required}
        assert keys == {k for k, _ in manifests.SPOT_LABELS}


def test_fallback_gpus_are_allowed_and_ranked() -> None:
    dep = manifests.deployment(endpoint(gpu={"type": "H100", "fallback": ["A100-80GB"]}), "x", 1)
    allowed = _required_terms(dep)[0]["matchExpressions"][0]["values"]
    assert "NVIDIA-H100-80GB-HBM3" in allowed
    assert "NVIDIA-A100-SXM4-80GB" in allowed
    preferred = dep["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    weights = [p["weight"] for p in preferred]
    assert weights == sorted(weights, reverse=True)
    assert weights[0] > weights[1]


def test_secret_env_is_a_reference_not_a_value() -> None:
    ep = endpoint(
        server={
            "image": "img",
            "env": [
                {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "t"}}}
            ],
        }
    )
    env = manifests.deployment(ep, "llm", 1)["spec"]["template"]["spec"]["containers"][0]["env"]
    hf = next(e for e in env if e["name"] == "HF_TOKEN")
    assert hf == {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "t"}}}


def test_service_and_pdb_select_the_pods() -> None:
    ep = endpoint()
    dep = manifests.deployment(ep, "adopted", 1)
    svc = manifests.service(ep, "adopted")
    pdb = manifests.pod_disruption_budget(ep, "adopted", 2)
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    for selector in (svc["spec"]["selector"], pdb["spec"]["selector"]["matchLabels"]):
        assert selector.items() <= pod_labels.items()
    assert dep["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pod_labels["ferry.dev/endpoint"] == "llm"
    assert (
        manifests.service_url("ns", "adopted", 8000) == "http://adopted.ns.svc.cluster.local:8000"
    )


def test_server_env_matches_the_inference_server_settings() -> None:
    ep = endpoint(
        spot={"policy": "on-demand", "drainGraceSeconds": 45}, server={"image": "i", "port": 9000}
    )
    container = manifests.deployment(ep, "llm", 1)["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["FERRY_DRAIN_GRACE_S"] == "45"
    assert env["FERRY_PORT"] == "9000"
    assert container["ports"][0]["containerPort"] == 9000


def test_unset_backend_fields_get_the_local_defaults() -> None:
    ep = endpoint()
    dep = manifests.deployment(ep, "llm", 1)
    pod = dep["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["FERRY_PORT"] == "8000"
    assert env["FERRY_DRAIN_GRACE_S"] == "60"
    assert pod["terminationGracePeriodSeconds"] == 65
    assert container["args"] == []
    assert container["ports"][0]["containerPort"] == 8000
    assert manifests.service(ep, "llm")["spec"]["ports"][0]["port"] == 8000
    tolerations = {t["key"] for t in pod["tolerations"]}
    assert "ferry.dev/spot" not in tolerations


def test_pods_wait_for_ferrys_readiness_gate() -> None:
    pod = manifests.deployment(endpoint(), "llm", 1)["spec"]["template"]["spec"]
    assert pod["readinessGates"] == [{"conditionType": "ferry.dev/in-service"}]


def test_replicas_left_out_when_another_writer_owns_them() -> None:
    assert "replicas" not in manifests.deployment(endpoint(), "llm", None)["spec"]
    assert manifests.deployment(endpoint(), "llm", 0)["spec"]["replicas"] == 0


@pytest.mark.parametrize(
    ("timeout", "seconds"),
    [(None, 600), ("30s", 30), ("2h", 7200)],
    ids=["default-10m", "30s", "2h"],
)
def test_progress_deadline_covers_capacity_wait_and_startup(
    timeout: str | None, seconds: int
) -> None:
    # D20: the Deployment never reports ProgressDeadlineExceeded before Ferry's own
    # capacityTimeout plus the startup probe's allowance have passed.
    scaling: dict[str, Any] = {"minReplicas": 1, "maxReplicas": 1}
    if timeout:
        scaling["capacityTimeout"] = timeout
    dep = manifests.deployment(endpoint(scaling=scaling), "llm", 1)
    probe = dep["spec"]["template"]["spec"]["containers"][0]["startupProbe"]
    allowance = probe["periodSeconds"] * probe["failureThreshold"]
    assert dep["spec"]["progressDeadlineSeconds"] >= seconds + allowance


@pytest.mark.parametrize(
    ("normal", "budget"),
    [
        (0, {"minAvailable": 1}),
        (1, {"minAvailable": 1}),
        (2, {"maxUnavailable": 1}),
        (5, {"maxUnavailable": 1}),
    ],
    ids=["zero", "one", "two", "five"],
)
def test_pdb_never_lets_a_drain_take_the_only_replica(normal: int, budget: dict[str, int]) -> None:
    spec = manifests.pod_disruption_budget(endpoint(), "llm", normal)["spec"]
    assert {k: v for k, v in spec.items() if k in ("minAvailable", "maxUnavailable")} == budget
    # Pods Ferry took out of service (not Ready) may always be evicted.
    assert spec["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


def test_surge_deployment_is_the_same_pods_kept_off_noticed_nodes() -> None:
    ep = endpoint(scaling={"minReplicas": 1, "maxReplicas": 2, "autoscaler": "external"})
    main = manifests.deployment(ep, "llm", None)
    surge = manifests.surge_deployment(ep, "llm", 2, ["spot-b", "spot-a"])
    assert surge["metadata"]["name"] == "llm-surge"
    assert surge["spec"]["replicas"] == 2
    pod_labels = surge["spec"]["template"]["metadata"]["labels"]
    # The Service and PDB select its pods; the main Deployment's selector does too, but
    # it never adopts them (they have a controller) and the surge selector is narrower.
    assert manifests.service(ep, "llm")["spec"]["selector"].items() <= pod_labels.items()
    assert surge["spec"]["selector"]["matchLabels"]["ferry.dev/surge"] == "true"
    assert (
        main["spec"]["selector"]["matchLabels"].items()
        < surge["spec"]["selector"]["matchLabels"].items()
    )
    assert (
        surge["spec"]["template"]["spec"]["containers"]
        == main["spec"]["template"]["spec"]["containers"]
    )
    for term in _required_terms(surge):
        away = term["matchExpressions"][-1]
        assert away == {
            "key": "kubernetes.io/hostname",
            "operator": "NotIn",
            "values": ["spot-a", "spot-b"],
        }
