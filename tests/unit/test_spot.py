"""Every notice style Ferry honours, read from Node objects as the clouds' tools leave them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ferry.logic import spot

T0 = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)
AWS_SPOT = {"karpenter.sh/capacity-type": "spot", "eks.amazonaws.com/capacityType": "SPOT"}
ON_DEMAND = {"karpenter.sh/capacity-type": "on-demand"}
GKE_SPOT = {"cloud.google.com/gke-spot": "true"}
AKS_SPOT = {"kubernetes.azure.com/scalesetpriority": "spot"}


def node(
    labels: dict[str, str] | None = None,
    taints: list[dict[str, str]] | None = None,
    cordoned: bool = False,
    annotations: dict[str, str] | None = None,
    ready: dict[str, str] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"taints": taints or []}
    if cordoned:
        spec["unschedulable"] = True
    return {
        "metadata": {"name": "n1", "labels": labels or {}, "annotations": annotations or {}},
        "spec": spec,
        "status": {"conditions": [{"type": "Ready", "status": "True", **(ready or {})}]},
    }


def taint(key: str, value: str = "", effect: str = "NoSchedule") -> dict[str, str]:
    return {"key": key, "value": value, "effect": effect}


# (node, style, termination, window (s) or None, explicit deadline or None)
CASES: list[tuple[str, dict[str, Any], str, bool, float | None, datetime | None]] = [
    (
        "nth-spot-itn-taint",
        node(AWS_SPOT, [taint("aws-node-termination-handler/spot-itn", "evt-1")]),
        "aws-node-termination-handler/spot-itn",
        True,
        120.0,
        None,
    ),
    (
        "nth-asg-lifecycle-taint",
        node(ON_DEMAND, [taint("aws-node-termination-handler/asg-lifecycle-termination")]),
        "aws-node-termination-handler/asg-lifecycle-termination",
        True,
        120.0,
        None,
    ),
    (
        "nth-rebalance-taint",
        node(AWS_SPOT, [taint("aws-node-termination-handler/rebalance-recommendation")]),
        "aws-node-termination-handler/rebalance-recommendation",
        False,
        None,
        None,
    ),
    (
        "nth-scheduled-maintenance-taint",
        node(ON_DEMAND, [taint("aws-node-termination-handler/scheduled-maintenance")]),
        "aws-node-termination-handler/scheduled-maintenance",
        False,
        None,
        None,
    ),
    (
        "nth-cordon-and-action-label",
        node({**AWS_SPOT, "aws-node-termination-handler/action": "x"}, cordoned=True),
        "aws-node-termination-handler/action",
        True,
        120.0,
        None,
    ),
    (
        "nth-cordon-and-event-id-on-demand",
        node(
            {**ON_DEMAND, "aws-node-termination-handler/event-id": "asg-lifecycle-term-1"},
            cordoned=True,
        ),
        "aws-node-termination-handler/event-id",
        True,
        120.0,
        None,
    ),
    (
        "karpenter-disrupted-spot",
        node(AWS_SPOT, [taint("karpenter.sh/disrupted")]),
        "karpenter.sh/disrupted",
        True,
        120.0,
        None,
    ),
    (
        "karpenter-consolidation-on-demand",
        node(ON_DEMAND, [taint("karpenter.sh/disrupted")]),
        "karpenter.sh/disrupted",
        False,
        None,
        None,
    ),
    (
        "aks-remediator",
        node(AKS_SPOT, [taint("remediator.kubernetes.azure.com/unschedulable")], cordoned=True),
        "remediator.kubernetes.azure.com/unschedulable",
        True,
        30.0,
        None,
    ),
    (
        "gke-graceful-shutdown",
        node(
            GKE_SPOT,
            ready={
                "status": "False",
                "reason": "KubeletNotReady",
                "message": "node is shutting down",
                "lastTransitionTime": "2026-11-30T12:00:00Z",
            },
        ),
        "gke-shutdown",
        True,
        None,
        T0 + timedelta(seconds=30),
    ),
    ("plain-cordon-spot", node(AWS_SPOT, cordoned=True), "cordon", True, 120.0, None),
    ("plain-cordon-gke-spot", node(GKE_SPOT, cordoned=True), "cordon", True, 30.0, None),
    ("plain-cordon-on-demand", node(ON_DEMAND, cordoned=True), "cordon", False, None, None),
    (
        "ferry-annotation-deadline",
        node(ON_DEMAND, annotations={spot.NOTICE_ANNOTATION: "2026-11-30T12:01:30Z"}),
        spot.NOTICE_ANNOTATION,
        True,
        None,
        T0 + timedelta(seconds=90),
    ),
    (
        "ferry-annotation-no-time",
        node(AWS_SPOT, annotations={spot.NOTICE_ANNOTATION: "soon"}),
        spot.NOTICE_ANNOTATION,
        True,
        120.0,
        None,
    ),
]


@pytest.mark.parametrize(
    ("obj", "style", "termination", "window", "deadline"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_every_notice_style_is_recognised(
    obj: dict[str, Any],
    style: str,
    termination: bool,
    window: float | None,
    deadline: datetime | None,
) -> None:
    found = spot.notice(obj)
    assert found is not None
    assert (found.style, found.termination) == (style, termination)
    assert found.window == window
    assert found.deadline == deadline
    seen = T0 + timedelta(seconds=5)
    expected = deadline or (seen + timedelta(seconds=window) if window else None)
    assert found.deadline_from(seen) == expected


@pytest.mark.parametrize(
    "obj",
    [
        node(AWS_SPOT),
        node(ON_DEMAND, [taint("nvidia.com/gpu")]),
        node(ON_DEMAND, ready={"status": "False", "message": "container runtime is down"}),
        node({"aws-node-termination-handler/action": "UncordonAfterReboot"}),
    ],
    ids=["healthy-spot", "gpu-taint", "not-ready-for-another-reason", "nth-label-no-cordon"],
)
def test_nodes_that_are_not_going_away(obj: dict[str, Any]) -> None:
    assert spot.notice(obj) is None


@pytest.mark.parametrize(
    ("labels", "is_spot"),
    [
        ({"karpenter.sh/capacity-type": "spot"}, True),
        ({"eks.amazonaws.com/capacityType": "SPOT"}, True),
        ({"cloud.google.com/gke-spot": "true"}, True),
        ({"cloud.google.com/gke-preemptible": "true"}, True),
        ({"kubernetes.azure.com/scalesetpriority": "spot"}, True),
        ({"karpenter.sh/capacity-type": "on-demand"}, False),
        ({"eks.amazonaws.com/capacityType": "ON_DEMAND"}, False),
        ({}, False),
    ],
    ids=[
        "karpenter",
        "eks",
        "gke-spot",
        "gke-preemptible",
        "aks",
        "karpenter-od",
        "eks-od",
        "none",
    ],
)
def test_spot_capacity_labels(labels: dict[str, str], is_spot: bool) -> None:
    assert spot.is_spot(labels) is is_spot


def test_a_pods_own_report_is_a_notice_with_its_deadline() -> None:
    found = spot.reported(T0.timestamp() + 42, "llm-abc")
    assert found.termination
    assert found.deadline == T0 + timedelta(seconds=42)
    assert "llm-abc" in found.detail
