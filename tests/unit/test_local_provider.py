"""The local provider: its pure readers (rollout, scheduling, drains, external
autoscalers) and its verbs against the in-memory Kubernetes."""

from __future__ import annotations

from typing import Any

from ferry.providers import local


def deployment(
    spec: int, ready: int, updated: int, total: int, gen: int = 2, obs: int = 2
) -> dict[str, Any]:
    return {
        "metadata": {"generation": gen},
        "spec": {"replicas": spec},
        "status": {
            "observedGeneration": obs,
            "readyReplicas": ready,
            "updatedReplicas": updated,
            "replicas": total,
        },
    }


def test_rollout_complete() -> None:
    assert local.rollout_state(deployment(2, 2, 2, 2), 2) == (2, False, None)


def test_rollout_in_progress_while_old_pods_remain() -> None:
    ready, progressing, _ = local.rollout_state(deployment(2, 2, 1, 3), 2)
    assert (ready, progressing) == (2, True)


def test_rollout_not_observed_yet() -> None:
    assert local.rollout_state(deployment(1, 1, 1, 1, gen=3, obs=2), 1)[1] is True


def test_a_drain_surge_is_not_waited_for() -> None:
    # 3 replicas asked for (2 normal + 1 surge), 2 ready: the endpoint serves its count.
    assert local.rollout_state(deployment(3, 2, 3, 3), 2) == (2, False, None)
    assert local.rollout_state(deployment(3, 1, 3, 3), 2)[1] is True


def test_progress_deadline_is_a_problem() -> None:
    dep = deployment(1, 0, 1, 1)
    dep["status"]["conditions"] = [
        {
            "type": "Progressing",
            "status": "False",
            "reason": "ProgressDeadlineExceeded",
            "message": "slow",
        }
    ]
    problem = local.rollout_state(dep, 1)[2]
    assert problem is not None
    assert problem.reason == "ProgressDeadlineExceeded"


def test_unschedulable_pod_is_a_capacity_wait_in_the_schedulers_words() -> None:
    pods = [
        {
            "metadata": {},
            "status": {
                "conditions": [
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": "0/5 nodes are available: 5 Insufficient nvidia.com/gpu.",
                    }
                ]
            },
        }
    ]
    problem = local.pod_problem(pods)
    assert problem is not None
    # A cluster autoscaler or Karpenter may add a node: progressing, not stalled, until
    # the reconciler's capacityTimeout says otherwise.
    assert (problem.reason, problem.stalled) == ("WaitingForCapacity", False)
    assert "Insufficient nvidia.com/gpu" in problem.message


def test_crash_loop_is_a_problem_and_healthy_pods_are_not() -> None:
    crashing = {
        "metadata": {},
        "status": {
            "containerStatuses": [
                {"name": "server", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}
            ]
        },
    }
    healthy = {
        "metadata": {},
        "status": {"conditions": [{"type": "PodScheduled", "status": "True"}]},
    }
    assert local.pod_problem([healthy]) is None
    crash = local.pod_problem([healthy, crashing])
    assert crash is not None
    assert crash.reason == "CrashLoopBackOff"


def _hpa(name: str, target: str, low: int | None, high: int) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "scaleTargetRef": {"kind": "Deployment", "name": target},
        "maxReplicas": high,
    }
    if low is not None:
        spec["minReplicas"] = low
    return {"metadata": {"name": name}, "spec": spec}


def test_external_autoscaler_bounds_are_compared_with_the_spec() -> None:
    from ferry.api.v1alpha1 import types

    spec = types.ScalingSpec(min_replicas=2, max_replicas=5)
    same = local.autoscaler_bounds([_hpa("h", "llm", 2, 5)], [], "llm")
    assert local.bounds_warning(same, spec, "llm") is None
    # The HPA's default minReplicas is 1.
    differs = local.bounds_warning(
        local.autoscaler_bounds([_hpa("h", "llm", None, 5)], [], "llm"), spec, "llm"
    )
    assert differs is not None
    assert differs.reason == "ExternalAutoscalerBoundsDiffer"
    assert "HorizontalPodAutoscaler h scales Deployment llm between 1 and 5" in differs.message
    # A ScaledObject wins over the HPA KEDA makes from it (defaults 0 and 100).
    keda = {"metadata": {"name": "so"}, "spec": {"scaleTargetRef": {"name": "llm"}}}
    found = local.autoscaler_bounds([_hpa("keda-hpa-so", "llm", 1, 100)], [keda], "llm")
    assert found == ("ScaledObject so", 0, 100)
    other = local.autoscaler_bounds([_hpa("h", "other", 2, 5)], [], "llm")
    missing = local.bounds_warning(other, spec, "llm")
    assert missing is not None
    assert missing.reason == "ExternalAutoscalerNotFound"


async def test_observe_prefers_a_capacity_wait_over_the_progress_deadline() -> None:
    from ferry.providers.base import Target
    from tests.unit.factories import endpoint
    from tests.unit.fakekube import FakeKube

    kube = FakeKube()
    ep = endpoint(scaling={"minReplicas": 2, "maxReplicas": 2})
    dep = deployment(2, 1, 2, 2)
    dep["kind"] = "Deployment"
    dep["metadata"].update(
        {"name": "llm", "labels": {"ferry.dev/endpoint-uid": "uid-1"}, "generation": 2}
    )
    dep["status"]["conditions"] = [
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
    ]
    kube.put(dep)
    kube.put(
        {
            "kind": "Pod",
            "metadata": {
                "name": "p",
                "labels": {
                    "app.kubernetes.io/name": "ferry-endpoint",
                    "app.kubernetes.io/instance": "llm",
                },
            },
            "status": {
                "conditions": [
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": "0/4 nodes are available: 4 Insufficient nvidia.com/gpu.",
                    }
                ]
            },
        }
    )
    seen = await local.LocalProvider(kube).observe(Target(ep), "llm")
    assert seen.problem is not None
    assert (seen.problem.reason, seen.problem.stalled) == ("WaitingForCapacity", False)
    assert (seen.desired_replicas, seen.ready_replicas) == (2, 1)
