"""Operator crashes and restarts: no twins, nothing stuck, deletion still completes."""

from __future__ import annotations

import yaml

from ferry.api.v1alpha1 import types
from ferry.logic import manifests
from tests.integration import kit
from tests.integration.test_lifecycle import ready


def test_restart_makes_no_duplicates(own_operator: tuple[kit.Namespace, kit.Operator]) -> None:
    ns, op = own_operator
    op.start()
    for i in range(3):
        ns.apply(kit.endpoint(f"llm-{i}"))
    for i in range(3):
        kit.wait_for(lambda i=i: ready(ns, f"llm-{i}"), f"llm-{i} Ready")
    before = {d["metadata"]["name"]: d["metadata"]["uid"] for d in ns.items("deployments")}
    op.kill()
    op.start()
    # After the restart every endpoint is observed again and stays Ready.
    for i in range(3):
        kit.wait_for(lambda i=i: ready(ns, f"llm-{i}"), f"llm-{i} Ready after restart")
    ns.apply(kit.endpoint("llm-0", scaling={"minReplicas": 2, "maxReplicas": 3}))
    kit.wait_for(
        lambda: (ready(ns, "llm-0") or {}).get("status", {}).get("replicas") == "2/2",
        "restarted operator acting on a change",
    )
    after = {d["metadata"]["name"]: d["metadata"]["uid"] for d in ns.items("deployments")}
    assert after == before
    assert len(ns.items("services")) == 3


def test_deletion_while_the_operator_is_down(
    own_operator: tuple[kit.Namespace, kit.Operator],
) -> None:
    ns, op = own_operator
    op.start()
    ns.apply(kit.endpoint("gone"))
    kit.wait_for(lambda: ready(ns, "gone"), "endpoint Ready")
    op.kill()
    ns.kubectl("delete", "inferenceendpoint", "gone", "--wait=false")
    obj = ns.get("inferenceendpoint", "gone")
    assert obj is not None, "deleted without the finalizer running"
    assert obj["metadata"].get("deletionTimestamp")
    op.start()
    kit.wait_for(
        lambda: ns.get("inferenceendpoint", "gone") is None, "endpoint finalized after restart"
    )
    kit.wait_for(lambda: ns.get("deployment", "gone") is None, "Deployment deleted")


def test_crash_between_create_and_record_does_not_make_a_twin(
    own_operator: tuple[kit.Namespace, kit.Operator],
) -> None:
    ns, op = own_operator
    # The state a crash after "create sent" leaves behind: a pending mark with no
    # outcome, and the Deployment already there.
    ns.apply(kit.endpoint("crashy"))
    ns.kubectl(
        "annotate",
        "inferenceendpoint",
        "crashy",
        "ferry.dev/external-create-pending=2026-01-01T00:00:00Z",
    )
    live = types.InferenceEndpoint.model_validate(ns.get("inferenceendpoint", "crashy"))
    ns.kubectl(
        "apply",
        "--server-side",
        "--field-manager=ferry",
        "-f",
        "-",
        input=yaml.safe_dump(manifests.deployment(live, "crashy", 1)),
    )
    op.start()
    obj = kit.wait_for(
        lambda: (
            (ns.get("inferenceendpoint", "crashy") or {})
            .get("metadata", {})
            .get("annotations", {})
            .get("ferry.dev/external-name")
        ),
        "the existing Deployment recorded as the external resource",
    )
    assert obj == "crashy"
    assert [d["metadata"]["name"] for d in ns.items("deployments")] == ["crashy"]
