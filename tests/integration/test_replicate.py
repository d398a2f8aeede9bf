"""Replicate end to end: the real control plane, the operator as a process, and the Replicate
fake of `ferry sandbox` (real HTTP, spec-validated, instances on its clock, Ferry's cog
predictor in a real process behind predictions).

What is simulated: the platform itself (the sandbox) and its instances' cold boots (stepped
on the fake's clock, never slept). What is real: the API server, the operator and its
`replicate` client, every HTTP call, and the predictor process that answers the prompt test.
Replicate deletes a deployment only once it has been offline for 15 minutes: every deletion
here steps the fake's clock past that.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from replicate.client import Client
from replicate.prediction import Prediction

from ferry import sandboxing
from ferry.sandbox.replicate import catalog
from tests.integration import kit
from tests.unit.test_replicate_fake_platform import deployment_body

CONFIG = "replicate"
MODEL = "ferry-dev/tiny-llm"
V1 = catalog.version_id(MODEL, 1)
V2 = catalog.version_id(MODEL, 2)
OWNER = "ferry-sandbox"
DEPLOYMENT = "/v1/deployments/{deployment_owner}/{deployment_name}"


def fake(sandbox: kit.Sandbox) -> kit.Fake:
    return sandbox.fakes["replicate"]


def step_until_gone(ns: kit.Namespace, sandbox: kit.Sandbox, *names: str) -> None:
    """Step the fake's clock until the endpoints are gone: Replicate's offline wait."""

    def gone() -> bool:
        fake(sandbox).call("POST", "/_sandbox/clock", json={"advanceSeconds": 1000})
        left = {e["metadata"]["name"] for e in ns.items("inferenceendpoints")}
        return not (left & set(names)) if names else not left

    kit.wait_for(gone, f"deletion of {', '.join(names) or 'every endpoint'}", timeout=120, every=1)


@pytest.fixture
def rep(ns: kit.Namespace, sandbox: kit.Sandbox) -> Iterator[kit.Namespace]:
    """A namespace whose ProviderConfig `replicate` points at the sandbox."""
    kit.use_sandbox(ns, sandbox.urls, "replicate", CONFIG)
    yield ns
    fake(sandbox).clear_faults()
    ns.kubectl("delete", "inferenceendpoints", "--all", "--wait=false", check=False)
    step_until_gone(ns, sandbox)


def endpoint(name: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "provider": "replicate",
        "model": {"providerRef": MODEL},
        "gpu": {"type": "L40S", "count": 1},
        "scaling": {"minReplicas": 0, "maxReplicas": 2},
        "providerConfigRef": {"name": CONFIG},
    }
    body.update(spec)
    doc = kit.endpoint(name, **body)
    doc["spec"].pop("server")  # Replicate runs the model's own image (D8)
    return doc


def deployment_of(ns: kit.Namespace, name: str) -> str:
    return f"ferry-{ns.name}-{name}"


def remote(sandbox: kit.Sandbox, ns: kit.Namespace, name: str) -> dict[str, Any]:
    r = fake(sandbox).call("GET", f"/v1/deployments/{OWNER}/{deployment_of(ns, name)}")
    assert r.status_code == 200, r.text
    found: dict[str, Any] = r.json()
    return found


def release(sandbox: kit.Sandbox, ns: kit.Namespace, name: str) -> dict[str, Any]:
    current: dict[str, Any] = remote(sandbox, ns, name)["current_release"]
    return current


def test_create_reports_ready_with_the_predictions_url_and_the_resolved_version(
    rep: kit.Namespace, sandbox: kit.Sandbox
) -> None:
    rep.apply(endpoint("llm"))
    obj = kit.wait_for(lambda: kit.ready_now(rep, "llm"), "Replicate deployment Ready", timeout=60)
    status = obj["status"]
    name = f"{OWNER}/{deployment_of(rep, 'llm')}"
    api = fake(sandbox).api
    assert status["externalName"] == name
    assert status["url"] == f"{api}/v1/deployments/{name}/predictions"
    assert "openaiBaseUrl" not in status, "Replicate has no OpenAI-compatible API (D1)"
    assert status["address"] == status["url"]
    assert status["resolvedModelVersion"] == V2, "owner/model resolves to the latest version"
    assert status["releaseNumber"] == 1
    assert "readyReplicas" not in status, "Replicate reports no instance count (D17)"
    made = release(sandbox, rep, "llm")
    assert made["configuration"] == {"hardware": "gpu-l40s", "min_instances": 0, "max_instances": 2}
    assert status["url"] in rep.kubectl("get", "iep", "llm").stdout

    # A version published later does not move the endpoint (resolved once).
    fake(sandbox).call(
        "POST", "/_sandbox/models", json={"owner": "ferry-dev", "name": "tiny-llm"}
    ).raise_for_status()
    time.sleep(4)  # one more poll interval
    after = rep.get("inferenceendpoint", "llm")
    assert after is not None
    assert after["status"]["resolvedModelVersion"] == V2
    assert release(sandbox, rep, "llm")["version"] == V2


def test_bounds_change_is_one_patch_and_version_change_updates_in_place(
    rep: kit.Namespace, sandbox: kit.Sandbox
) -> None:
    rep.apply(endpoint("scaled", model={"providerRef": f"{MODEL}:{V1}"}))
    kit.wait_for(lambda: kit.ready_now(rep, "scaled"), "endpoint Ready", timeout=60)
    patches = fake(sandbox).calls("PATCH", DEPLOYMENT)
    creates = fake(sandbox).calls("POST", "/v1/deployments")

    rep.apply(
        endpoint(
            "scaled",
            model={"providerRef": f"{MODEL}:{V1}"},
            scaling={"minReplicas": 0, "maxReplicas": 4},
        )
    )
    kit.wait_for(
        lambda: release(sandbox, rep, "scaled")["configuration"]["max_instances"] == 4,
        "max_instances 4",
    )
    kit.wait_for(lambda: kit.ready_now(rep, "scaled"), "Ready at the new generation")
    time.sleep(4)  # one more poll interval: nothing else may be sent
    assert fake(sandbox).calls("PATCH", DEPLOYMENT) - patches == 1

    rep.apply(
        endpoint(
            "scaled",
            model={"providerRef": f"{MODEL}:{V2}"},
            scaling={"minReplicas": 0, "maxReplicas": 4},
        )
    )

    def at_release_3() -> dict[str, Any] | None:
        obj = kit.ready_now(rep, "scaled")
        return obj if obj and obj["status"].get("releaseNumber") == 3 else None

    obj = kit.wait_for(at_release_3, "release 3 Ready")
    assert obj["status"]["resolvedModelVersion"] == V2
    assert release(sandbox, rep, "scaled")["version"] == V2
    assert fake(sandbox).calls("POST", "/v1/deployments") == creates, "an update, not a re-create"
    assert fake(sandbox).calls("PATCH", DEPLOYMENT) - patches == 2


def test_drift_on_the_platform_is_put_back(rep: kit.Namespace, sandbox: kit.Sandbox) -> None:
    rep.apply(endpoint("drifty"))
    kit.wait_for(lambda: kit.ready_now(rep, "drifty"), "endpoint Ready", timeout=60)
    fake(sandbox).call(
        "PATCH",
        f"/_sandbox/deployments/{OWNER}/{deployment_of(rep, 'drifty')}",
        json={"max_instances": 9, "hardware": "gpu-t4"},
    ).raise_for_status()
    kit.wait_for(
        lambda: (
            release(sandbox, rep, "drifty")["configuration"]
            == {"hardware": "gpu-l40s", "min_instances": 0, "max_instances": 2}
        ),
        "drift corrected",
        timeout=30,
    )
    assert "Updated" in [e["reason"] for e in rep.events("drifty")]
    obj = kit.wait_for(lambda: kit.ready_now(rep, "drifty"), "Ready again")
    assert obj["status"]["releaseNumber"] == 3


def test_delete_waits_for_replicates_offline_rule_and_orphan_leaves(
    rep: kit.Namespace, sandbox: kit.Sandbox
) -> None:
    rep.apply(endpoint("gone", scaling={"minReplicas": 1, "maxReplicas": 2}))
    rep.apply(endpoint("kept", deletionPolicy="Orphan"))
    kit.wait_for(
        lambda: kit.ready_now(rep, "gone") and kit.ready_now(rep, "kept"), "both Ready", timeout=60
    )
    kept = deployment_of(rep, "kept")
    rep.kubectl("delete", "inferenceendpoint", "kept", "--timeout=60s")
    assert fake(sandbox).call("GET", f"/v1/deployments/{OWNER}/{kept}").status_code == 200

    rep.kubectl("delete", "inferenceendpoint", "gone", "--wait=false")
    cond = kit.wait_for(
        lambda: kit.reason(rep, "gone", "Reconciling", "WaitingForOffline"), "the offline wait"
    )
    assert cond["message"].startswith(
        "waiting for Replicate to take the deployment offline, next try in"
    )
    assert kit.condition(rep.get("inferenceendpoint", "gone"), "Stalled")["status"] == "False"  # type: ignore[index]
    configuration = release(sandbox, rep, "gone")["configuration"]
    assert (configuration["min_instances"], configuration["max_instances"]) == (0, 0)
    deletes = fake(sandbox).calls("DELETE", DEPLOYMENT)
    time.sleep(6)
    # Backoff from one poll interval (3 s here), doubling: never a hot loop.
    assert fake(sandbox).calls("DELETE", DEPLOYMENT) - deletes <= 3
    assert rep.get("inferenceendpoint", "gone") is not None, "not deleted before Replicate allows"

    fake(sandbox).call("POST", "/_sandbox/clock", json={"advanceSeconds": 900}).raise_for_status()
    kit.wait_for(
        lambda: rep.get("inferenceendpoint", "gone") is None, "deletion completes", timeout=60
    )
    r = fake(sandbox).call("GET", f"/v1/deployments/{OWNER}/{deployment_of(rep, 'gone')}")
    assert r.status_code == 404
    assert fake(sandbox).call("DELETE", f"/v1/deployments/{OWNER}/{kept}").status_code == 204


def test_a_provider_ref_that_does_not_exist_is_stalled_naming_it(
    rep: kit.Namespace, sandbox: kit.Sandbox
) -> None:
    creates = fake(sandbox).calls("POST", "/v1/deployments")
    rep.apply(endpoint("ghost", model={"providerRef": "nobody/no-such-model"}))
    cond = kit.wait_for(
        lambda: kit.reason(rep, "ghost", "Stalled", "ModelNotFound"), "ModelNotFound"
    )
    assert "nobody/no-such-model" in cond["message"]
    pinned = f"{MODEL}:{'0' * 64}"
    rep.apply(endpoint("ghost", model={"providerRef": pinned}))

    def names_the_version() -> dict[str, Any] | None:
        cond = kit.reason(rep, "ghost", "Stalled", "ModelNotFound")
        return cond if cond and pinned in cond["message"] else None

    kit.wait_for(names_the_version, "ModelNotFound naming the version", timeout=60)
    assert fake(sandbox).calls("POST", "/v1/deployments") == creates


def test_a_same_named_deployment_ferry_did_not_make_is_not_taken(
    rep: kit.Namespace, sandbox: kit.Sandbox
) -> None:
    theirs = deployment_of(rep, "taken")
    body = deployment_body(theirs, hardware="gpu-t4", max_instances=1)
    fake(sandbox).call("POST", "/v1/deployments", json=body).raise_for_status()
    patches = fake(sandbox).calls("PATCH", DEPLOYMENT)
    rep.apply(endpoint("taken"))
    cond = kit.wait_for(
        lambda: kit.reason(rep, "taken", "Stalled", "ExternalResourceOwnedElsewhere"), "not taken"
    )
    assert f"{OWNER}/{theirs}" in cond["message"]
    rep.kubectl("delete", "inferenceendpoint", "taken", "--timeout=60s")
    found = fake(sandbox).call("GET", f"/v1/deployments/{OWNER}/{theirs}").json()
    assert found["current_release"]["number"] == 1
    assert found["current_release"]["configuration"]["hardware"] == "gpu-t4"
    assert fake(sandbox).calls("PATCH", DEPLOYMENT) == patches, "never touched"
    fake(sandbox).call("POST", "/_sandbox/clock", json={"advanceSeconds": 1000})
    assert fake(sandbox).call("DELETE", f"/v1/deployments/{OWNER}/{theirs}").status_code == 204


def test_a_prediction_through_the_deployment_returns_tokens(
    rep: kit.Namespace, sandbox: kit.Sandbox
) -> None:
    rep.apply(endpoint("chat", scaling={"minReplicas": 0, "maxReplicas": 1}))
    obj = kit.wait_for(lambda: kit.ready_now(rep, "chat"), "endpoint Ready", timeout=60)
    token = fake(sandbox).token
    # status.url is the platform's own invocation URL: a caller presents its Replicate token.
    made = httpx.post(
        obj["status"]["url"],
        json={"input": {"prompt": "Hello", "max_tokens": 6}},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert made.status_code == 201, made.text
    client = Client(api_token=token, base_url=fake(sandbox).api)
    pid = made.json()["id"]
    assert client.predictions.get(pid).status == "starting", "the cold boot is on the fake's clock"
    fake(sandbox).call("POST", "/_sandbox/clock", json={"advanceSeconds": 60}).raise_for_status()

    def finished() -> Prediction | None:
        found = client.predictions.get(pid)
        return found if found.status in ("succeeded", "failed", "canceled") else None

    prediction = kit.wait_for(finished, "the prediction finishing", timeout=180, every=0.5)
    client._client.close()
    assert prediction.status == "succeeded", prediction.error
    assert isinstance(prediction.output, list)
    assert "".join(prediction.output).strip(), "real tokens from the cog predictor"


# --- storms, crashes -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "want"),
    [
        ({"kind": "rate_limit", "retryAfterSeconds": 1}, "Throttled"),
        ({"kind": "status", "status": 503}, "ProviderUnavailable"),
    ],
    ids=["429-storm", "5xx-storm"],
)
def test_a_storm_converges_with_bounded_calls(
    rep: kit.Namespace, sandbox: kit.Sandbox, fault: dict[str, Any], want: str
) -> None:
    rep.apply(endpoint("stormy"))
    kit.wait_for(lambda: kit.ready_now(rep, "stormy"), "endpoint Ready", timeout=60)
    before = fake(sandbox).calls("GET", DEPLOYMENT)
    fake(sandbox).fault(method="GET", route=DEPLOYMENT, count=None, **fault)
    started = time.monotonic()
    kit.wait_for(
        lambda: kit.reason(rep, "stormy", "Reconciling", want),
        f"{want} shown in status",
        timeout=15,
    )
    time.sleep(max(0.0, 15 - (time.monotonic() - started)))
    during = fake(sandbox).calls("GET", DEPLOYMENT) - before
    fake(sandbox).clear_faults()
    # Healthy, this endpoint is read ~5 times in 15 s; each failed reconcile makes at most
    # three bounded attempts and the queue backs off between them: never a hot loop.
    assert during <= 45, f"{during} reads in 15 s during the storm"
    kit.wait_for(lambda: kit.ready_now(rep, "stormy"), "Ready after the storm", timeout=90)


def test_operator_killed_after_a_lost_create_makes_exactly_one_adopted_under_d15(
    own_operator: tuple[kit.Namespace, kit.Operator], sandbox: kit.Sandbox
) -> None:
    ns, op = own_operator
    kit.use_sandbox(ns, sandbox.urls, "replicate", CONFIG)
    creates = fake(sandbox).calls("POST", "/v1/deployments")
    fake(sandbox).fault(
        method="POST", route="/v1/deployments", kind="lose_response", holdSeconds=60
    )
    op.start()
    ns.apply(endpoint("lost"))
    kit.wait_for(
        lambda: fake(sandbox).calls("POST", "/v1/deployments") > creates,
        "the create reached Replicate",
    )
    op.kill()  # before any answer came back
    op.start()
    obj = kit.wait_for(lambda: kit.ready_now(ns, "lost"), "Ready after the restart", timeout=120)
    name = deployment_of(ns, "lost")
    assert obj["status"]["externalName"] == f"{OWNER}/{name}"
    # Its answer was lost: the deployment was found by name and adopted under D15.
    annotations = obj["metadata"]["annotations"]
    assert "ferry.dev/external-create-pending" in annotations
    assert "ferry.dev/external-create-succeeded" not in annotations
    assert fake(sandbox).calls("POST", "/v1/deployments") == creates + 1, "never created twice"
    assert remote(sandbox, ns, "lost")["current_release"]["number"] == 1
    ns.kubectl("delete", "inferenceendpoint", "lost", "--wait=false")
    step_until_gone(ns, sandbox, "lost")


# --- credentials ---------------------------------------------------------------------------


def test_missing_then_rejected_credentials_never_show_the_token(
    rep: kit.Namespace, sandbox: kit.Sandbox, operator: kit.Operator
) -> None:
    wrong = "r8_wrong_" + "5b4a3c2d1e0f"
    rep.kubectl("delete", "secret", CONFIG)
    rep.apply(endpoint("creds"))
    cond = kit.wait_for(
        lambda: kit.reason(rep, "creds", "Stalled", "CredentialsNotFound"), "no Secret"
    )
    assert f"Secret {CONFIG}" in cond["message"]

    # The replicate client's 401 (a ReplicateError) reads like every backend's refusal.
    secret = sandboxing.provider_objects(sandbox.urls, "replicate", CONFIG, rep.name)[0]
    secret["stringData"] = {"token": wrong}
    rep.apply(secret)
    cond = kit.wait_for(
        lambda: kit.reason(rep, "creds", "Stalled", "CredentialsRejected"),
        "token refused",
        timeout=90,
    )
    assert f"Secret {CONFIG} of ProviderConfig {CONFIG}" in cond["message"]
    shown = "\n".join(
        [
            rep.kubectl("get", "events", "-o", "yaml").stdout,
            rep.kubectl("get", "iep", "creds", "-o", "yaml").stdout,
            operator.logs(),
        ]
    )
    assert wrong not in shown
    assert fake(sandbox).token not in shown
