"""RunPod end to end: the real control plane, the operator as a process, and the RunPod
fake of `ferry sandbox` (real HTTP, spec-validated, workers on its clock, the real
RunPod worker loop of the model server behind its job plane).

What is simulated: the platform itself (the sandbox), and workers of endpoints that
never receive a job. What is real: the API server, the operator, every HTTP call, and
the model-server process that answers the prompt test.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
import yaml

from ferry import devcluster, sandboxing
from tests.integration import kit

CONFIG = "runpod"


@pytest.fixture
def rp(ns: kit.Namespace, sandbox: kit.Sandbox) -> Iterator[kit.Namespace]:
    """A namespace whose ProviderConfig `runpod` points at the sandbox."""
    kit.use_sandbox(ns, sandbox.urls, "runpod", CONFIG)
    yield ns
    # Leave nothing running on the fake for the next test's call counts.
    ns.kubectl("delete", "inferenceendpoints", "--all", "--timeout=90s", check=False)
    sandbox.clear_faults()


def endpoint(name: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "provider": "runpod",
        "model": {"uri": "hf://ferry-dev/tiny-llm"},
        "server": {"image": "ghcr.io/ferry-dev/inference-server:0.1.0"},
        "gpu": {"type": "L4"},
        "scaling": {"minReplicas": 1, "maxReplicas": 2},
        "providerConfigRef": {"name": CONFIG},
    }
    body.update(spec)
    return kit.endpoint(name, **body)


def remote(sandbox: kit.Sandbox, ns: kit.Namespace, name: str) -> dict[str, Any]:
    uid = ns.get("inferenceendpoint", name)["metadata"]["uid"]  # type: ignore[index]
    found = sandbox.tagged(uid)
    assert len(found) == 1, f"expected exactly one RunPod endpoint for {name}, found {found}"
    return found[0]


def test_create_reports_ready_with_both_urls(rp: kit.Namespace, sandbox: kit.Sandbox) -> None:
    rp.apply(endpoint("llm", gpu={"type": "L4", "fallback": ["RTX4090"]}))
    obj = kit.wait_for(lambda: kit.ready_now(rp, "llm"), "RunPod endpoint Ready", timeout=90)
    made = remote(sandbox, rp, "llm")
    status = obj["status"]
    assert status["externalName"] == made["id"]
    assert status["url"] == f"{sandbox.jobs}/v2/{made['id']}"
    assert status["openaiBaseUrl"] == f"{sandbox.jobs}/v2/{made['id']}/openai/v1"
    assert status["address"] == status["openaiBaseUrl"]
    assert status["readyReplicas"] >= 1
    assert made["type"] == "QUEUE"
    assert made["gpu"]["pools"] == ["ADA_24"]
    assert made["workers"]["min"] == 1
    assert made["workers"]["max"] == 2
    table = rp.kubectl("get", "iep", "llm").stdout
    assert "ADDRESS" in table
    assert status["openaiBaseUrl"] in table


def test_bounds_change_is_one_patch_and_image_change_updates_in_place(
    rp: kit.Namespace, sandbox: kit.Sandbox
) -> None:
    rp.apply(endpoint("scaled"))
    kit.wait_for(lambda: kit.ready_now(rp, "scaled"), "endpoint Ready", timeout=90)
    rid = remote(sandbox, rp, "scaled")["id"]
    patches = sandbox.calls("PATCH", "/v2/serverless/{id}")
    creates = sandbox.calls("POST", "/v2/serverless")

    rp.apply(endpoint("scaled", scaling={"minReplicas": 1, "maxReplicas": 4}))
    kit.wait_for(lambda: kit.ready_now(rp, "scaled"), "Ready at the new generation")
    kit.wait_for(lambda: remote(sandbox, rp, "scaled")["workers"]["max"] == 4, "workers.max 4")
    time.sleep(4)  # one more poll interval: nothing else may be sent
    assert sandbox.calls("PATCH", "/v2/serverless/{id}") - patches == 1

    env = [{"name": "FERRY_MAX_BATCH_SIZE", "value": "4"}]
    rp.apply(
        endpoint(
            "scaled",
            scaling={"minReplicas": 1, "maxReplicas": 4},
            server={"image": "ghcr.io/ferry-dev/inference-server:0.2.0", "env": env},
        )
    )
    kit.wait_for(lambda: remote(sandbox, rp, "scaled")["image"].endswith(":0.2.0"), "image updated")
    made = remote(sandbox, rp, "scaled")
    assert made["id"] == rid, "an update, not a re-create"
    assert made["env"]["FERRY_MAX_BATCH_SIZE"] == "4"
    assert made["env"]["FERRY_ENDPOINT_UID"], "the tag is restated with every env"
    assert sandbox.calls("POST", "/v2/serverless") == creates
    releases = sandbox.call("GET", f"/v2/serverless/{rid}/releases").json()
    assert len(releases.get("releases", [])) >= 2


def test_drift_on_the_platform_is_put_back(rp: kit.Namespace, sandbox: kit.Sandbox) -> None:
    rp.apply(endpoint("drifty"))
    kit.wait_for(lambda: kit.ready_now(rp, "drifty"), "endpoint Ready", timeout=90)
    rid = remote(sandbox, rp, "drifty")["id"]
    sandbox.call(
        "PATCH", f"/_sandbox/endpoints/{rid}", json={"workers": {"min": 0, "max": 9}}
    ).raise_for_status()
    kit.wait_for(
        lambda: remote(sandbox, rp, "drifty")["workers"]["max"] == 2, "drift corrected", timeout=30
    )
    events = [e["reason"] for e in rp.events("drifty")]
    assert "Updated" in events


def test_delete_removes_and_orphan_leaves(rp: kit.Namespace, sandbox: kit.Sandbox) -> None:
    rp.apply(endpoint("gone"))
    rp.apply(endpoint("kept", deletionPolicy="Orphan"))
    kit.wait_for(
        lambda: kit.ready_now(rp, "gone") and kit.ready_now(rp, "kept"), "both Ready", timeout=90
    )
    gone_uid = rp.get("inferenceendpoint", "gone")["metadata"]["uid"]  # type: ignore[index]
    kept = remote(sandbox, rp, "kept")
    rp.kubectl("delete", "inferenceendpoint", "gone", "kept", "--timeout=60s")
    assert sandbox.tagged(gone_uid) == []
    assert sandbox.call("GET", f"/v2/serverless/{kept['id']}").status_code == 200
    sandbox.call("DELETE", f"/v2/serverless/{kept['id']}")


def test_throttled_workers_wait_for_capacity_naming_the_pool(
    rp: kit.Namespace, sandbox: kit.Sandbox
) -> None:
    sandbox.call("PUT", "/_sandbox/capacity", json={"pools": {"ADA_24": 0}}).raise_for_status()
    try:
        rp.apply(endpoint("starved"))
        cond = kit.wait_for(
            lambda: kit.reason(rp, "starved", "Reconciling", "WaitingForCapacity"),
            "WaitingForCapacity",
            timeout=60,
        )
        assert "ADA_24" in cond["message"]
        assert kit.condition(rp.get("inferenceendpoint", "starved"), "Stalled")["status"] == "False"  # type: ignore[index]
    finally:
        sandbox.call("PUT", "/_sandbox/capacity", json={"pools": {"ADA_24": None}})
    kit.wait_for(lambda: kit.ready_now(rp, "starved"), "Ready once capacity is back", timeout=60)


def test_a_prompt_through_the_openai_route_returns_tokens(
    rp: kit.Namespace, sandbox: kit.Sandbox
) -> None:
    rp.apply(endpoint("chat"))
    obj = kit.wait_for(lambda: kit.ready_now(rp, "chat"), "endpoint Ready", timeout=90)
    client = openai.OpenAI(
        base_url=obj["status"]["openaiBaseUrl"], api_key=sandbox.token, timeout=300
    )
    reply = client.chat.completions.create(
        model="ferry-dev/tiny-llm",
        messages=[{"role": "user", "content": "Hello"}],
        max_tokens=8,
        extra_body={"ignore_eos": True},
    )
    assert reply.choices[0].message.content
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 8


# --- storms, crashes, scale ------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "want"),
    [
        ({"kind": "rate_limit", "retryAfterSeconds": 1}, "Throttled"),
        ({"kind": "status", "status": 503}, "ProviderUnavailable"),
    ],
    ids=["429-storm", "5xx-storm"],
)
def test_a_storm_converges_with_bounded_calls(
    rp: kit.Namespace, sandbox: kit.Sandbox, fault: dict[str, Any], want: str
) -> None:
    rp.apply(endpoint("stormy"))
    kit.wait_for(lambda: kit.ready_now(rp, "stormy"), "endpoint Ready", timeout=90)
    route = "/v2/serverless/{id}"
    before = sandbox.calls("GET", route)
    sandbox.fault(method="GET", route=route, count=None, **fault)
    started = time.monotonic()
    kit.wait_for(
        lambda: kit.reason(rp, "stormy", "Reconciling", want), f"{want} shown in status", timeout=15
    )
    time.sleep(max(0.0, 15 - (time.monotonic() - started)))
    during = sandbox.calls("GET", route) - before
    sandbox.clear_faults()
    # Every endpoint in the session is polled; this one would make ~5 reads in 15 s
    # when healthy. Retries are bounded: no more than a few per second, never a hot loop.
    assert during <= 45, f"{during} reads in 15 s during the storm"
    kit.wait_for(lambda: kit.ready_now(rp, "stormy"), "Ready after the storm", timeout=90)


def test_operator_killed_after_a_lost_create_makes_exactly_one(
    own_operator: tuple[kit.Namespace, kit.Operator], sandbox: kit.Sandbox
) -> None:
    ns, op = own_operator
    kit.use_sandbox(ns, sandbox.urls, "runpod", CONFIG)
    creates = sandbox.calls("POST", "/v2/serverless")
    sandbox.fault(method="POST", route="/v2/serverless", kind="lose_response", holdSeconds=60)
    op.start()
    ns.apply(endpoint("lost"))
    kit.wait_for(
        lambda: sandbox.calls("POST", "/v2/serverless") > creates, "the create reached RunPod"
    )
    op.kill()  # before any answer came back
    op.start()
    obj = kit.wait_for(lambda: kit.ready_now(ns, "lost"), "Ready after the restart", timeout=120)
    made = remote(sandbox, ns, "lost")
    assert obj["status"]["externalName"] == made["id"]
    # Its answer was lost: the id came from the lookup by tag, not from the create.
    assert "ferry.dev/external-create-succeeded" not in obj["metadata"]["annotations"]
    assert sandbox.calls("POST", "/v2/serverless") == creates + 1, "never created twice"


def test_a_hundred_endpoints_converge(rp: kit.Namespace, sandbox: kit.Sandbox) -> None:
    docs = [endpoint(f"many-{i}", scaling={"minReplicas": 0, "maxReplicas": 1}) for i in range(100)]
    rp.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))

    def all_ready() -> bool:
        out = rp.kubectl(
            "get",
            "iep",
            "-o",
            "jsonpath={range .items[*]}{.status.conditions[?(@.type=='Ready')].status}{'\\n'}{end}",
        ).stdout.split()
        return len(out) == 100 and all(s == "True" for s in out)

    kit.wait_for(all_ready, "100 RunPod endpoints Ready", timeout=240, every=2)
    uids = {
        e["metadata"]["uid"]
        for e in rp.items("inferenceendpoints")
        if e["metadata"]["name"].startswith("many-")
    }
    tags = [
        e["env"].get("FERRY_ENDPOINT_UID")
        for e in sandbox.endpoints()
        if e["env"].get("FERRY_ENDPOINT_UID") in uids
    ]
    assert len(tags) == 100
    assert len(set(tags)) == 100, "one RunPod endpoint per InferenceEndpoint"


# --- credentials and deletion --------------------------------------------------------------


def test_missing_incomplete_and_rejected_credentials(
    rp: kit.Namespace, sandbox: kit.Sandbox, operator: kit.Operator
) -> None:
    wrong = "rp-wrong-" + "5b4a3c2d1e0f"
    rp.kubectl("delete", "secret", CONFIG)
    rp.apply(endpoint("creds"))
    cond = kit.wait_for(
        lambda: kit.reason(rp, "creds", "Stalled", "CredentialsNotFound"), "no Secret"
    )
    assert CONFIG in cond["message"]

    secret = sandboxing.provider_objects(sandbox.urls, "runpod", CONFIG, rp.name)[0]
    secret["stringData"] = {"key": wrong}
    rp.apply(secret)
    cond = kit.wait_for(
        lambda: kit.reason(rp, "creds", "Stalled", "CredentialsIncomplete"),
        "no token key",
        timeout=90,
    )
    assert "token" in cond["message"]

    secret["stringData"] = {"token": wrong}
    rp.kubectl("delete", "secret", CONFIG)
    rp.apply(secret)
    cond = kit.wait_for(
        lambda: kit.reason(rp, "creds", "Stalled", "CredentialsRejected"),
        "token refused",
        timeout=90,
    )
    assert f"Secret {CONFIG}" in cond["message"]
    assert f"ProviderConfig {CONFIG}" in cond["message"]
    texts = [
        rp.kubectl("get", "events", "-o", "yaml").stdout,
        rp.kubectl("get", "iep", "creds", "-o", "yaml").stdout,
        rp.kubectl("describe", "iep", "creds").stdout,
        operator.logs(),
    ]
    for text in texts:
        assert wrong not in text
        assert sandbox.token not in text


@pytest.mark.parametrize(
    ("change", "want", "named"),
    [
        ("secret", "SecretNotExportable", "ferry.dev/export-to"),
        ("base-url", "BaseUrlNotExportable", "ferry.dev/export-base-urls"),
    ],
    ids=["secret-without-export-annotation", "base-url-not-listed"],
)
def test_secrets_leave_only_where_they_say(
    rp: kit.Namespace, sandbox: kit.Sandbox, change: str, want: str, named: str
) -> None:
    secret, _ = sandboxing.provider_objects(sandbox.urls, "runpod", CONFIG, rp.name)
    if change == "secret":
        del secret["metadata"]["annotations"]["ferry.dev/export-to"]
    else:
        secret["metadata"]["annotations"]["ferry.dev/export-base-urls"] = sandbox.jobs
    rp.kubectl("delete", "secret", CONFIG)
    rp.apply(secret)
    creates = sandbox.calls("POST", "/v2/serverless")
    rp.apply(endpoint("deputy"))
    cond = kit.wait_for(lambda: kit.reason(rp, "deputy", "Stalled", want), want)
    assert named in cond["message"]
    assert CONFIG in cond["message"]
    pc = kit.wait_for(
        lambda: (
            (kit.condition(rp.get("providerconfig", CONFIG), "Ready") or {}).get("reason") == want
        ),
        "the ProviderConfig says so too",
    )
    assert pc
    assert sandbox.calls("POST", "/v2/serverless") == creates


def test_namespace_deletion_completes(
    cluster: devcluster.Cluster, rp: kit.Namespace, sandbox: kit.Sandbox
) -> None:
    rp.apply(endpoint("ns-a"))
    rp.apply(endpoint("ns-b"))
    kit.wait_for(
        lambda: kit.ready_now(rp, "ns-a") and kit.ready_now(rp, "ns-b"), "both Ready", timeout=90
    )
    uids = [rp.get("inferenceendpoint", n)["metadata"]["uid"] for n in ("ns-a", "ns-b")]  # type: ignore[index]
    cluster.kubectl("delete", "namespace", rp.name, "--wait=false")
    kit.wait_for(
        lambda: cluster.kubectl("get", "namespace", rp.name, check=False).returncode != 0,
        "namespace gone",
        timeout=120,
    )
    assert all(sandbox.tagged(uid) == [] for uid in uids), "deleted on RunPod, not leaked"


def test_credentials_gone_during_deletion_say_how_out(
    own_operator: tuple[kit.Namespace, kit.Operator], sandbox: kit.Sandbox
) -> None:
    ns, op = own_operator
    kit.use_sandbox(ns, sandbox.urls, "runpod", CONFIG)
    op.start()
    ns.apply(endpoint("stuck"))
    kit.wait_for(lambda: kit.ready_now(ns, "stuck"), "endpoint Ready", timeout=90)
    made = remote(sandbox, ns, "stuck")
    op.stop()  # a restarted operator holds no client for this ProviderConfig
    ns.kubectl("delete", "secret", CONFIG)
    ns.kubectl("delete", "inferenceendpoint", "stuck", "--wait=false")
    op.start()
    cond = kit.wait_for(
        lambda: kit.reason(ns, "stuck", "Stalled", "CredentialsGone"), "CredentialsGone", timeout=60
    )
    assert f"Secret {CONFIG}" in cond["message"]
    assert "deletionPolicy: Orphan" in cond["message"]
    assert sandbox.call("GET", f"/v2/serverless/{made['id']}").status_code == 200
    ns.kubectl(
        "patch", "iep", "stuck", "--type=merge", "-p", '{"spec":{"deletionPolicy":"Orphan"}}'
    )
    kit.wait_for(lambda: ns.get("inferenceendpoint", "stuck") is None, "deletion completes")
    assert sandbox.call("GET", f"/v2/serverless/{made['id']}").status_code == 200
    sandbox.call("DELETE", f"/v2/serverless/{made['id']}")


def test_a_provider_config_in_use_is_kept_until_its_endpoints_are_gone(
    rp: kit.Namespace, sandbox: kit.Sandbox
) -> None:
    rp.apply(endpoint("user"))
    kit.wait_for(lambda: kit.ready_now(rp, "user"), "endpoint Ready", timeout=90)
    rp.kubectl("delete", "providerconfig", CONFIG, "--wait=false")
    cond = kit.wait_for(
        lambda: (
            (c := kit.condition(rp.get("providerconfig", CONFIG), "Ready"))
            and c["reason"] == "InUse"
            and c
        ),
        "the ProviderConfig held while used",
    )
    assert "user" in cond["message"]
    uid = rp.get("inferenceendpoint", "user")["metadata"]["uid"]  # type: ignore[index]
    rp.kubectl("delete", "inferenceendpoint", "user", "--timeout=60s")
    assert sandbox.tagged(uid) == [], "the endpoint could still delete what it made"
    kit.wait_for(lambda: rp.get("providerconfig", CONFIG) is None, "ProviderConfig released")
