"""An object the API server refuses as invalid is a permanent error (issue: a duplicate
env key once made the endpoint retry forever as if the refusal were transient)."""

from __future__ import annotations

from typing import Any

from ferry import connecting, providers, reconciler
from ferry import kube as kube_api
from tests.unit.fakekube import FakeKube


def local_endpoint() -> dict[str, Any]:
    return {
        "apiVersion": "ferry.dev/v1alpha1",
        "kind": "InferenceEndpoint",
        "metadata": {"name": "llm", "namespace": "team-a"},
        "spec": {
            "provider": "local",
            "model": {"uri": "hf://acme/tiny"},
            "server": {"image": "img:1"},
            "gpu": {"type": "L4"},
        },
    }


async def test_an_invalid_rendered_object_stalls_instead_of_retrying_as_transient() -> None:
    kube = FakeKube()
    kube.put(local_endpoint())
    kube.fail(
        "apply",
        kube_api.Invalid(
            'Deployment.apps "llm" is invalid: spec.template.spec.containers[0].env[3]:'
            ' Duplicate value: map[string]interface {}{"name":"FERRY_DRAIN_GRACE_S"}'
        ),
    )
    rec = reconciler.Reconciler(kube, connecting.Connector(kube, providers.registry(kube)))
    out = await rec.reconcile("team-a", "llm")
    ep = kube.obj("InferenceEndpoint", "llm")
    assert ep is not None
    stalled = next(c for c in ep["status"]["conditions"] if c["type"] == "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "InvalidManifest")
    assert "Duplicate value" in stalled["message"]
    assert out.error
    assert out.requeue_after is None, "backoff, not a transient retry-after"
