"""Modal end to end: the real control plane, the operator as a process, and the Modal fake of
`ferry sandbox` (the pinned `modal` client over real gRPC; apps, functions, autoscaler and
containers on the fake's clock; real model-server processes behind web functions).

What is simulated: the platform itself (the sandbox), and containers of functions that never
receive a request. What is real: the API server, the operator, every gRPC call the `modal`
client makes, and the model-server process that answers the prompt test.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
import yaml

from ferry import sandboxing
from tests.integration import kit

CONFIG = "modal"
RPC = "/modal.client.ModalClient/"
HF_TOKEN = "hf_integration_7d3c9e"
AUTH_TOKEN = "bearer-integration-41aa"


@pytest.fixture
def modal_fake(sandbox: kit.Sandbox) -> kit.Fake:
    return sandbox.fakes["modal"]


@pytest.fixture
def md(ns: kit.Namespace, sandbox: kit.Sandbox, modal_fake: kit.Fake) -> Iterator[kit.Namespace]:
    """A namespace whose ProviderConfig `modal` points at the sandbox's Modal fake."""
    kit.use_sandbox(ns, sandbox.urls, "modal", CONFIG)
    yield ns
    # Leave nothing deployed on the fake for the next test's call counts.
    ns.kubectl("delete", "inferenceendpoints", "--all", "--timeout=90s", check=False)
    modal_fake.clear_faults()


def endpoint(name: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "provider": "modal",
        "model": {"uri": "hf://ferry-dev/tiny-llm"},
        "server": {"image": "ghcr.io/ferry-dev/inference-server:0.1.0"},
        "gpu": {"type": "L4", "fallback": ["A10G"]},
        "scaling": {"minReplicas": 1, "maxReplicas": 2},
        "providerConfigRef": {"name": CONFIG},
    }
    body.update(spec)
    return kit.endpoint(name, **body)


def app_name(ns: kit.Namespace, name: str) -> str:
    return f"ferry-{ns.name}-{name}"


def apps(fake: kit.Fake, name: str) -> list[dict[str, Any]]:
    """Every app the fake holds that was ever named or created as `name`."""
    state = fake.call("GET", "/_sandbox/state").json()
    return [a for a in state["apps"] if name in (a["name"], a.get("description", a["name"]))]


def deployed(fake: kit.Fake, name: str) -> dict[str, Any]:
    found = [a for a in apps(fake, name) if a["state"] == "deployed"]
    assert len(found) == 1, f"expected one deployed app {name}, found {found}"
    return found[0]


def serve(fake: kit.Fake, name: str) -> dict[str, Any]:
    function: dict[str, Any] = deployed(fake, name)["functions"]["serve"]
    return function


def calls(fake: kit.Fake, rpc: str) -> int:
    return fake.calls("POST", RPC + rpc)


def test_create_reports_ready_with_both_urls(md: kit.Namespace, modal_fake: kit.Fake) -> None:
    md.apply(
        endpoint("llm", scaling={"minReplicas": 1, "maxReplicas": 3, "targetInflightRequests": 4})
    )
    obj = kit.wait_for(lambda: kit.ready_now(md, "llm"), "Modal endpoint Ready", timeout=90)
    status = obj["status"]
    fn = serve(modal_fake, app_name(md, "llm"))
    assert status["externalName"] == app_name(md, "llm")
    assert status["url"] == fn["webUrl"]
    assert status["openaiBaseUrl"] == f"{fn['webUrl']}/v1"
    assert status["address"] == status["openaiBaseUrl"]
    assert "readyReplicas" not in status, "Modal gives no ready count (D17)"
    kit.wait_for(
        lambda: (kit.ready_now(md, "llm") or {}).get("status", {}).get("runningContainers") == 1,
        "runningContainers from Modal's stats",
        timeout=30,
    )
    assert fn["gpus"] == ["L4:1", "A10G:1"]
    assert (fn["targetInputs"], fn["maxInputs"]) == (4, 8)
    assert fn["settings"] == {
        "minContainers": 1,
        "maxContainers": 3,
        "bufferContainers": 0,
        "scaledownWindow": 60,
    }
    table = md.kubectl("get", "iep", "llm").stdout
    assert status["openaiBaseUrl"] in table


def test_bounds_change_is_one_autoscaler_update_and_no_redeploy(
    md: kit.Namespace, modal_fake: kit.Fake
) -> None:
    md.apply(endpoint("scaled"))
    kit.wait_for(lambda: kit.ready_now(md, "scaled"), "endpoint Ready", timeout=90)
    name = app_name(md, "scaled")
    publishes = calls(modal_fake, "AppPublish")
    updates = calls(modal_fake, "FunctionUpdateSchedulingParams")

    md.apply(endpoint("scaled", scaling={"minReplicas": 0, "maxReplicas": 4}))
    kit.wait_for(lambda: kit.ready_now(md, "scaled"), "Ready at the new generation")
    kit.wait_for(
        lambda: serve(modal_fake, name)["settings"]["maxContainers"] == 4, "max_containers 4"
    )
    time.sleep(4)  # one more poll interval: nothing else may be sent
    assert calls(modal_fake, "FunctionUpdateSchedulingParams") - updates == 1
    assert calls(modal_fake, "AppPublish") == publishes, "no redeploy"
    assert serve(modal_fake, name)["settings"]["minContainers"] == 0


def test_image_change_redeploys_and_reapplies_the_autoscaler(
    md: kit.Namespace, modal_fake: kit.Fake
) -> None:
    bounds = {"minReplicas": 1, "maxReplicas": 4}
    md.apply(endpoint("rolled"))
    kit.wait_for(lambda: kit.ready_now(md, "rolled"), "endpoint Ready", timeout=90)
    name = app_name(md, "rolled")
    md.apply(endpoint("rolled", scaling=bounds))
    kit.wait_for(lambda: serve(modal_fake, name)["settings"]["maxContainers"] == 4, "bounds live")
    before = serve(modal_fake, name)
    publishes = calls(modal_fake, "AppPublish")
    updates = calls(modal_fake, "FunctionUpdateSchedulingParams")

    md.apply(
        endpoint(
            "rolled", scaling=bounds, server={"image": "ghcr.io/ferry-dev/inference-server:0.2.0"}
        )
    )
    kit.wait_for(
        lambda: serve(modal_fake, name)["imageId"] != before["imageId"], "redeployed", timeout=60
    )
    kit.wait_for(lambda: kit.ready_now(md, "rolled"), "Ready at the new image", timeout=60)
    after = serve(modal_fake, name)
    assert calls(modal_fake, "AppPublish") == publishes + 1
    assert after["id"] == before["id"], "the same function, redeployed"
    assert after["overrideResets"] == before["overrideResets"] + 1, "the redeploy reset them"
    assert calls(modal_fake, "FunctionUpdateSchedulingParams") == updates + 1, "then re-applied"
    assert after["settings"]["maxContainers"] == 4
    images = modal_fake.call("GET", "/_sandbox/images").json()["images"]
    assert any(
        "FROM ghcr.io/ferry-dev/inference-server:0.2.0" in str(i["definition"]) for i in images
    )
    events = [e["reason"] for e in md.events("rolled")]
    assert "Updated" in events


def test_drift_on_the_platform_is_put_back(md: kit.Namespace, modal_fake: kit.Fake) -> None:
    md.apply(endpoint("drifty"))
    kit.wait_for(lambda: kit.ready_now(md, "drifty"), "endpoint Ready", timeout=90)
    name = app_name(md, "drifty")
    modal_fake.call(
        "PATCH",
        f"/_sandbox/apps/{name}/functions/serve/autoscaler",
        json={"maxContainers": 9, "minContainers": 0},
    ).raise_for_status()
    kit.wait_for(
        lambda: serve(modal_fake, name)["settings"]["maxContainers"] == 2,
        "autoscaler drift corrected",
        timeout=30,
    )
    assert serve(modal_fake, name)["settings"]["minContainers"] == 1

    modal_fake.call("POST", f"/_sandbox/apps/{name}/stop").raise_for_status()
    kit.wait_for(
        lambda: [a for a in apps(modal_fake, name) if a["state"] == "deployed"],
        "the stopped app deployed again",
        timeout=60,
    )
    kit.wait_for(lambda: kit.ready_now(md, "drifty"), "Ready again", timeout=60)
    assert [e["reason"] for e in md.events("drifty")].count("Recreated") == 1


def test_delete_stops_the_app_and_orphan_leaves_it(md: kit.Namespace, modal_fake: kit.Fake) -> None:
    md.apply(endpoint("gone"))
    md.apply(endpoint("kept", deletionPolicy="Orphan"))
    kit.wait_for(
        lambda: kit.ready_now(md, "gone") and kit.ready_now(md, "kept"), "both Ready", timeout=90
    )
    md.kubectl("delete", "inferenceendpoint", "gone", "kept", "--timeout=60s")
    assert not [a for a in apps(modal_fake, app_name(md, "gone")) if a["state"] == "deployed"]
    kept = deployed(modal_fake, app_name(md, "kept"))
    assert kept["functions"]["serve"]["containers"], "still running on Modal"
    modal_fake.call("POST", f"/_sandbox/apps/{kept['name']}/stop").raise_for_status()


def test_missing_incomplete_and_rejected_tokens(
    md: kit.Namespace, sandbox: kit.Sandbox, operator: kit.Operator
) -> None:
    wrong = "as-wrong-" + "9e8d7c6b5a"
    md.kubectl("delete", "secret", CONFIG)
    md.apply(endpoint("creds"))
    cond = kit.wait_for(
        lambda: kit.reason(md, "creds", "Stalled", "CredentialsNotFound"), "no Secret"
    )
    assert CONFIG in cond["message"]

    secret = sandboxing.provider_objects(sandbox.urls, "modal", CONFIG, md.name)[0]
    secret["stringData"] = {"tokenId": "ak-ferry-sandbox"}
    md.apply(secret)
    cond = kit.wait_for(
        lambda: kit.reason(md, "creds", "Stalled", "CredentialsIncomplete"),
        "no secret key",
        timeout=90,
    )
    assert "tokenSecret" in cond["message"]

    secret["stringData"] = {"tokenId": "ak-ferry-sandbox", "tokenSecret": wrong}
    md.kubectl("delete", "secret", CONFIG)
    md.apply(secret)
    cond = kit.wait_for(
        lambda: kit.reason(md, "creds", "Stalled", "CredentialsRejected"),
        "token refused",
        timeout=90,
    )
    assert f"Secret {CONFIG}" in cond["message"]
    assert f"ProviderConfig {CONFIG}" in cond["message"]
    texts = [
        md.kubectl("get", "events", "-o", "yaml").stdout,
        md.kubectl("get", "iep", "creds", "-o", "yaml").stdout,
        md.kubectl("describe", "iep", "creds").stdout,
        operator.logs(),
    ]
    for text in texts:
        assert wrong not in text
        assert sandbox.fakes["modal"].token not in text


@pytest.mark.parametrize(
    ("fault", "want"),
    [
        ({"kind": "rate_limit", "retryAfterSeconds": 1}, "Throttled"),
        ({"kind": "status", "status": 503}, "ProviderUnavailable"),
    ],
    ids=["throttling-storm", "unavailable-storm"],
)
def test_a_storm_converges_with_bounded_calls(
    md: kit.Namespace, modal_fake: kit.Fake, fault: dict[str, Any], want: str
) -> None:
    md.apply(endpoint("stormy"))
    kit.wait_for(lambda: kit.ready_now(md, "stormy"), "endpoint Ready", timeout=90)
    before = calls(modal_fake, "FunctionGet")
    modal_fake.fault(method="POST", route=RPC + "FunctionGet", count=None, **fault)
    started = time.monotonic()
    kit.wait_for(
        lambda: kit.reason(md, "stormy", "Reconciling", want), f"{want} shown in status", timeout=15
    )
    time.sleep(max(0.0, 15 - (time.monotonic() - started)))
    during = calls(modal_fake, "FunctionGet") - before
    modal_fake.clear_faults()
    # Healthy, this endpoint is read ~5 times in 15 s. Throttling is not retried inside the
    # client (the queue waits the server's hint); UNAVAILABLE gets Modal's 3 retries per call,
    # then the queue's backoff: bounded either way, never a hot loop.
    assert during <= 60, f"{during} FunctionGet calls in 15 s during the storm"
    kit.wait_for(lambda: kit.ready_now(md, "stormy"), "Ready after the storm", timeout=90)


def test_a_slow_server_never_holds_a_reconcile_past_its_deadline(
    md: kit.Namespace, modal_fake: kit.Fake
) -> None:
    md.apply(endpoint("slow"))
    kit.wait_for(lambda: kit.ready_now(md, "slow"), "endpoint Ready", timeout=90)
    modal_fake.fault(
        method="POST", route=RPC + "FunctionGet", kind="delay", delaySeconds=600, count=None
    )
    started = time.monotonic()
    cond = kit.wait_for(
        lambda: kit.reason(md, "slow", "Reconciling", "ProviderTimeout"),
        "the call timed out",
        timeout=20,
    )
    assert time.monotonic() - started < 20
    assert "within 3s" in cond["message"], "cut at the call timeout, not the reconcile deadline"
    modal_fake.clear_faults()
    kit.wait_for(lambda: kit.ready_now(md, "slow"), "Ready once the server answers", timeout=60)


def test_operator_killed_mid_deploy_leaves_one_app(
    own_operator: tuple[kit.Namespace, kit.Operator], sandbox: kit.Sandbox
) -> None:
    ns, op = own_operator
    fake = sandbox.fakes["modal"]
    kit.use_sandbox(ns, sandbox.urls, "modal", CONFIG)
    creates = calls(fake, "FunctionCreate")
    fake.fault(method="POST", route=RPC + "FunctionCreate", kind="delay", delaySeconds=120)
    op.start()
    ns.apply(endpoint("mid"))
    kit.wait_for(lambda: calls(fake, "FunctionCreate") > creates, "the deploy reached Modal")
    op.kill()  # mid-deploy: the function was being created, nothing published
    op.start()
    kit.wait_for(lambda: kit.ready_now(ns, "mid"), "Ready after the restart", timeout=120)
    name = app_name(ns, "mid")
    deployed(fake, name)
    # The abandoned deploy's app never published; once its client's heartbeats stop for long
    # enough on the fake's clock, Modal stops it.
    fake.call("POST", "/_sandbox/clock", json={"advanceSeconds": 91}).raise_for_status()
    states = sorted(a["state"] for a in apps(fake, name))
    assert states == ["deployed", "stopped"], "one app serves; the abandoned one is stopped"


def test_secrets_travel_as_modal_secrets_and_a_prompt_returns_tokens(
    md: kit.Namespace, sandbox: kit.Sandbox, modal_fake: kit.Fake
) -> None:
    md.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "model-creds", "annotations": {"ferry.dev/export-to": "modal"}},
            "stringData": {"hf": HF_TOKEN, "bearer": AUTH_TOKEN},
        }
    )
    env = [
        {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "model-creds", "key": "hf"}}},
        {
            "name": "FERRY_AUTH_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": "model-creds", "key": "bearer"}},
        },
    ]
    md.apply(
        endpoint(
            "chat",
            server={"image": "ghcr.io/ferry-dev/inference-server:0.1.0", "env": env},
            scaling={"minReplicas": 0, "maxReplicas": 1},
        )
    )
    obj = kit.wait_for(lambda: kit.ready_now(md, "chat"), "endpoint Ready", timeout=90)
    images = modal_fake.call("GET", "/_sandbox/images").text
    state = modal_fake.call("GET", "/_sandbox/state").text
    for text in (images, state, yaml.safe_dump(obj)):
        assert HF_TOKEN not in text
        assert AUTH_TOKEN not in text
    fn = serve(modal_fake, app_name(md, "chat"))
    secret_keys = modal_fake.call("GET", "/_sandbox/state").json()["secrets"][fn["secretIds"][0]]
    assert {"HF_TOKEN", "FERRY_AUTH_TOKEN"} <= set(secret_keys)
    assert fn["containers"] == [], "minReplicas 0: the first prompt starts a container"

    client = openai.OpenAI(base_url=obj["status"]["openaiBaseUrl"], api_key=AUTH_TOKEN, timeout=300)
    reply = client.chat.completions.create(
        model="ferry-dev/tiny-llm",
        messages=[{"role": "user", "content": "Hello"}],
        max_tokens=8,
        extra_body={"ignore_eos": True},
    )
    assert reply.choices[0].message.content
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 8
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(
            base_url=obj["status"]["openaiBaseUrl"], api_key="not-the-token", timeout=60
        ).models.list()
    billing = modal_fake.call("GET", "/_sandbox/billing").json()
    assert billing["apps"][app_name(md, "chat")]["serve"]["containerSeconds"] > 0
