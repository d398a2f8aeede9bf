"""Replica counts read back from a Deployment: the autoscaler's, a drain's surge, who owns it."""

from __future__ import annotations

from typing import Any

import pytest

from ferry.api.v1alpha1 import types
from ferry.logic import scaling


@pytest.mark.parametrize(
    ("lo", "hi", "current", "want"),
    [(1, 3, 1, 1), (2, 4, 3, 3), (2, 4, 9, 4), (2, 4, 0, 2), (0, 3, 0, 0)],
    ids=["min", "inside", "above", "below", "zero"],
)
def test_clamp_stays_in_bounds(lo: int, hi: int, current: int, want: int) -> None:
    assert scaling.clamp(current, types.ScalingSpec(min_replicas=lo, max_replicas=hi)) == want


def deployment(replicas: int | None, **annotations: str) -> dict[str, Any]:
    spec = {} if replicas is None else {"replicas": replicas}
    return {"metadata": {"annotations": annotations}, "spec": spec}


@pytest.mark.parametrize(
    ("dep", "normal", "applied", "wanted"),
    [
        (deployment(3), 3, 0, 0),
        (deployment(None), 1, 0, 0),
        (deployment(4, **{scaling.NORMAL_ANNOTATION: "3"}), 3, 1, 0),
        (
            deployment(5, **{scaling.NORMAL_ANNOTATION: "3", scaling.SURGE_ANNOTATION: "2"}),
            3,
            2,
            2,
        ),
        # A count below the recorded one (someone scaled down): the lower one is real.
        (deployment(2, **{scaling.NORMAL_ANNOTATION: "3"}), 2, 0, 0),
        (
            deployment(2, **{scaling.NORMAL_ANNOTATION: "x", scaling.SURGE_ANNOTATION: "-1"}),
            2,
            0,
            0,
        ),
    ],
    ids=["plain", "unset-defaults-to-1", "surge-applied", "surge-wanted", "scaled-down", "garbage"],
)
def test_normal_and_surge_read_back(
    dep: dict[str, Any], normal: int, applied: int, wanted: int
) -> None:
    assert scaling.normal_replicas(dep) == normal
    assert scaling.applied_surge(dep) == applied
    assert scaling.wanted_surge(dep) == wanted


def _managed(manager: str, fields: dict[str, Any]) -> dict[str, Any]:
    return {"manager": manager, "operation": "Apply", "fieldsV1": fields}


@pytest.mark.parametrize(
    ("entries", "others"),
    [
        ([_managed("ferry", {"f:spec": {"f:replicas": {}, "f:template": {}}})], False),
        (
            [
                _managed("ferry", {"f:spec": {"f:replicas": {}}}),
                _managed("ferry-autoscaler", {"f:spec": {"f:replicas": {}}}),
            ],
            True,
        ),
        ([_managed("kube-controller-manager", {"f:status": {"f:replicas": {}}})], False),
        ([], False),
    ],
    ids=["only-ferry", "autoscaler-too", "status-only", "none"],
)
def test_replicas_owned_by_another_writer(entries: list[dict[str, Any]], others: bool) -> None:
    dep = {"metadata": {"managedFields": entries}, "spec": {"replicas": 1}}
    assert scaling.owned_by_others(dep, "ferry") is others
