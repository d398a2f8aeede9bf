"""The generic lifecycle, case by case, against an in-memory Kubernetes and a provider
built from functions (as crossplane-runtime tests its managed reconciler).

Time is injected: the reconciler's clock is a variable the test moves, and its
retry sleep is recorded, never slept.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ferry import configuring, connecting, reconciler
from ferry import kube as kube_api
from ferry.logic import naming
from ferry.providers.base import (
    Backend,
    ClientConfig,
    Observation,
    PermanentProviderError,
    Problem,
    ProviderError,
    Target,
    TransientProviderError,
)
from tests.unit.fakekube import FakeKube

NS = "team-a"
T0 = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class Platform:
    """A remote platform with ids it assigns, a tag per resource, and scripted faults."""

    can_search: bool = True
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    faults: dict[str, list[ProviderError]] = field(default_factory=dict)
    # The next create is applied but its answer never arrives.
    lose_next_create: bool = False
    # The list (search by tag) does not show resources created in the last N observes.
    list_lag: int = 0
    up_to_date: bool = True
    hang: bool = False
    problem: Problem | None = None
    clients_built: int = 0
    clients_closed: int = 0

    def _enter(self, verb: str) -> None:
        self.calls.append(verb)
        queued = self.faults.get(verb) or []
        if queued:
            raise queued.pop(0)

    def connect(self, config: ClientConfig) -> FuncProvider:
        self.clients_built += 1
        return FuncProvider(self, config)


class FuncProvider:
    name = "runpod"

    def __init__(self, platform: Platform, config: ClientConfig) -> None:
        self.platform = platform
        self.config = config
        self.can_search = platform.can_search

    def external_name_for(self, target: Target) -> str | None:
        return None

    async def observe(self, target: Target, external_name: str | None) -> Observation:
        p = self.platform
        p._enter("observe")
        if p.hang:
            await asyncio.Event().wait()
        if external_name is not None:
            found = p.resources.get(external_name)
        elif p.can_search and p.list_lag <= 0:
            found = next((r for r in p.resources.values() if r["tag"] == target.uid), None)
        else:
            p.list_lag -= 1
            found = None
        if found is None:
            return Observation.absent()
        return Observation(
            exists=True,
            up_to_date=p.up_to_date,
            external_name=found["id"],
            url=f"https://jobs.test/v2/{found['id']}",
            openai_base_url=f"https://jobs.test/v2/{found['id']}/openai/v1",
            desired_replicas=1,
            ready_replicas=found.get("ready", 1),
            diff=[] if p.up_to_date else ["workers.max"],
            problem=p.problem,
        )

    async def create(self, target: Target, external_name: str | None) -> str:
        p = self.platform
        p._enter("create")
        rid = f"r{len(p.resources) + 1}"
        p.resources[rid] = {"id": rid, "tag": target.uid, "env": dict(target.env)}
        if p.lose_next_create:
            p.lose_next_create = False
            raise TransientProviderError("read timed out", maybe_applied=True)
        return rid

    async def update(self, target: Target, observation: Observation) -> None:
        self.platform._enter("update")
        self.platform.up_to_date = True

    async def delete(self, target: Target, external_name: str) -> None:
        self.platform._enter("delete")
        self.platform.resources.pop(external_name, None)

    async def orphan(self, target: Target, external_name: str) -> None:
        self.platform._enter("orphan")

    async def close(self) -> None:
        self.platform.clients_closed += 1


@dataclass
class World:
    kube: FakeKube
    platform: Platform
    clock: Clock
    rec: reconciler.Reconciler
    connector: connecting.Connector
    sleeps: list[float]

    async def run(self, name: str = "llm") -> Any:
        return await self.rec.reconcile(NS, name)

    def ep(self, name: str = "llm") -> dict[str, Any]:
        found = self.kube.obj("InferenceEndpoint", name)
        assert found is not None
        return found

    def annotations(self, name: str = "llm") -> dict[str, str]:
        return dict(self.ep(name)["metadata"].get("annotations") or {})

    def condition(self, ctype: str, name: str = "llm") -> dict[str, Any]:
        for c in (self.ep(name).get("status") or {}).get("conditions") or []:
            if c["type"] == ctype:
                return dict(c)
        raise AssertionError(f"no {ctype} condition")


EXPORT = {naming.EXPORT_TO: "runpod"}


def endpoint(name: str = "llm", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "provider": "runpod",
        "model": {"uri": "hf://acme/tiny"},
        "server": {"image": "ghcr.io/ferry-dev/inference-server:0.1.0"},
        "gpu": {"type": "L4"},
        "providerConfigRef": {"name": "rp"},
    }
    body.update(spec)
    return {
        "apiVersion": "ferry.dev/v1alpha1",
        "kind": "InferenceEndpoint",
        "metadata": {"name": name, "namespace": NS},
        "spec": body,
    }


def provider_config(**spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"provider": "runpod", "credentialsSecretRef": {"name": "rp-token"}}
    body.update(spec)
    return {
        "apiVersion": "ferry.dev/v1alpha1",
        "kind": "ProviderConfig",
        "metadata": {"name": "rp", "namespace": NS},
        "spec": body,
    }


@pytest.fixture
def world() -> World:
    kube = FakeKube()
    platform = Platform()
    clock = Clock()
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    backend = Backend(
        "runpod",
        connect=platform.connect,
        required_keys=("token",),
        default_base_url="https://api.runpod.io",
        default_inference_base_url="https://api.runpod.ai",
    )
    connector = connecting.Connector(kube, {"runpod": backend}, clock=clock, retire_after=0)
    rec = reconciler.Reconciler(
        kube,
        connector,
        timing=reconciler.Timing(creation_grace=30.0, deadline=5.0),
        clock=clock,
        sleep=sleep,
    )
    kube.put(provider_config())
    kube.put_secret("rp-token", {"token": "s3cr3t-token"}, EXPORT)
    kube.put(endpoint())
    return World(kube, platform, clock, rec, connector, sleeps)


# --- create ---------------------------------------------------------------------------


async def test_create_records_pending_then_name_and_success(world: World) -> None:
    out = await world.run()
    ann = world.annotations()
    assert world.platform.calls == ["observe", "create"]
    assert ann[naming.EXTERNAL_NAME] == "r1"
    assert ann[naming.CREATE_PENDING] <= ann[naming.CREATE_SUCCEEDED]
    assert naming.FINALIZER in world.ep()["metadata"]["finalizers"]
    assert world.condition("Reconciling")["reason"] == "Creating"
    assert "Created" in world.kube.reasons()
    assert out.requeue_after is not None
    assert not out.error
    # The ProviderConfig is now held by the endpoint that uses it (D5).
    pc = world.kube.obj("ProviderConfig", "rp")
    assert pc is not None
    assert naming.FINALIZER in pc["metadata"]["finalizers"]


async def test_create_failed_is_marked_and_shown(world: World) -> None:
    world.platform.faults["create"] = [
        PermanentProviderError("GPU pool ADA_24 has no such card", reason="InvalidRequest")
    ]
    out = await world.run()
    ann = world.annotations()
    assert naming.CREATE_FAILED in ann
    assert naming.EXTERNAL_NAME not in ann
    stalled = world.condition("Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "InvalidRequest")
    assert "ADA_24" in stalled["message"]
    assert out.error


async def test_failed_mark_write_failing_never_hides_the_provider_error(world: World) -> None:
    world.platform.faults["create"] = [
        PermanentProviderError("image not found", reason="InvalidRequest")
    ]
    # The pending write succeeds; every failed-mark attempt after it fails.
    original = world.kube.patch

    async def flaky(kind: str, ns: str, name: str, patch: dict[str, Any], **kw: Any) -> Any:
        if naming.CREATE_FAILED in str(patch):
            raise kube_api.Unavailable("etcd leader lost")
        return await original(kind, ns, name, patch, **kw)

    world.kube.patch = flaky  # type: ignore[method-assign]
    out = await world.run()
    stalled = world.condition("Stalled")
    assert stalled["reason"] == "InvalidRequest"
    assert "image not found" in stalled["message"]
    assert out.error
    assert len(world.sleeps) == 4, "the failed mark is retried, with backoff"


async def test_create_with_lost_answer_is_looked_up_not_repeated(world: World) -> None:
    world.platform.lose_next_create = True
    await world.run()
    world.platform.list_lag = 1  # the list lags behind the create once
    ann = world.annotations()
    assert naming.CREATE_FAILED not in ann, "a maybe-applied create is not a failed one"
    # Within the grace period: look, don't create.
    world.clock.advance(5)
    out = await world.run()
    assert world.condition("Reconciling")["reason"] == "CreatePending"
    assert out.requeue_after is not None
    assert out.requeue_after <= 30
    # The list now shows it: adopted by tag, never created twice.
    world.clock.advance(5)
    await world.run()
    assert world.platform.calls.count("create") == 1
    assert len(world.platform.resources) == 1
    assert world.annotations()[naming.EXTERNAL_NAME] == "r1"


async def test_incomplete_create_on_a_platform_that_cannot_be_searched_stalls(
    world: World,
) -> None:
    world.platform.can_search = False
    world.kube.put(endpoint("lost"))
    ep = world.kube.objects[("InferenceEndpoint", NS, "lost")]
    ep["metadata"]["annotations"] = {naming.CREATE_PENDING: "2026-11-30T11:00:00Z"}
    await world.run("lost")
    stalled = world.condition("Stalled", "lost")
    assert (stalled["status"], stalled["reason"]) == ("True", "CreateIncomplete")
    assert naming.CREATE_PENDING in stalled["message"]
    assert "create" not in world.platform.calls


async def test_incomplete_create_found_nothing_after_grace_creates_once(world: World) -> None:
    ep = world.kube.objects[("InferenceEndpoint", NS, "llm")]
    ep["metadata"]["annotations"] = {naming.CREATE_PENDING: "2026-11-30T11:59:50Z"}
    await world.run()
    assert "create" not in world.platform.calls, "still within the grace period"
    world.clock.advance(30)
    await world.run()
    assert world.platform.calls.count("create") == 1


async def test_transient_error_honours_retry_after(world: World) -> None:
    world.platform.faults["observe"] = [
        TransientProviderError("429 Too Many Requests", retry_after=17, reason="Throttled")
    ]
    out = await world.run()
    assert (out.requeue_after, out.error) == (17, True)
    reconciling = world.condition("Reconciling")
    assert (reconciling["status"], reconciling["reason"]) == ("True", "Throttled")
    assert world.condition("Stalled")["status"] == "False"


async def test_conflict_on_the_pending_write_requeues_without_creating(world: World) -> None:
    world.kube.fail("patch", kube_api.Conflict("changed"))
    out = await world.run()
    assert out.requeue_after == 0.0
    assert "create" not in world.platform.calls


async def test_deadline_bounds_a_reconcile(world: World) -> None:
    world.platform.hang = True
    world.rec._timing = reconciler.Timing(deadline=0.05)
    out = await world.run()
    assert out.error
    assert world.condition("Reconciling")["reason"] == "DeadlineExceeded"


# --- steady state ---------------------------------------------------------------------


async def test_drift_is_updated_with_an_event(world: World) -> None:
    await world.run()
    world.platform.up_to_date = False
    await world.run()
    assert world.platform.calls[-1] == "update"
    assert "Updated" in world.kube.reasons()


async def test_ready_status_carries_both_urls(world: World) -> None:
    await world.run()
    await world.run()
    status = world.ep()["status"]
    assert status["url"] == "https://jobs.test/v2/r1"
    assert status["openaiBaseUrl"] == "https://jobs.test/v2/r1/openai/v1"
    assert status["address"] == status["openaiBaseUrl"]
    assert world.condition("Ready")["status"] == "True"


async def test_losing_ready_emits_a_warning_event(world: World) -> None:
    await world.run()
    await world.run()
    assert world.condition("Ready")["status"] == "True"
    world.platform.resources["r1"]["ready"] = 0
    await world.run()
    assert world.condition("Ready")["status"] == "False"
    last = world.kube.events[-1]
    assert (last[1], last[2]) == ("Warning", "WaitingForReplicas")


async def test_one_client_per_provider_config_replaced_when_the_secret_changes(
    world: World,
) -> None:
    world.kube.put(endpoint("second"))
    await world.run()
    await world.run("second")
    await world.run()
    assert world.platform.clients_built == 1
    world.kube.put_secret("rp-token", {"token": "rotated"}, EXPORT)
    await world.run()
    assert (world.platform.clients_built, world.platform.clients_closed) == (2, 0), (
        "reconciles that connected before the change may still be using the old client"
    )
    for _ in range(3):
        await asyncio.sleep(0)  # the retirement runs (its grace is 0 here)
    assert world.platform.clients_closed == 1


# --- export rules ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("annotations", "config", "reason", "named"),
    [
        ({}, {}, "SecretNotExportable", naming.EXPORT_TO),
        ({naming.EXPORT_TO: "modal"}, {}, "SecretNotExportable", "runpod"),
        (EXPORT, {"baseUrl": "http://evil.test"}, "BaseUrlNotExportable", naming.EXPORT_BASE_URLS),
        (
            EXPORT,
            {"inferenceBaseUrl": "http://evil.test"},
            "BaseUrlNotExportable",
            "inferenceBaseUrl",
        ),
    ],
    ids=["no-export-annotation", "exported-elsewhere", "base-url", "inference-base-url"],
)
async def test_secrets_leave_only_where_they_say(
    world: World, annotations: dict[str, str], config: dict[str, str], reason: str, named: str
) -> None:
    world.kube.put_secret("rp-token", {"token": "s3cr3t-token"}, annotations)
    world.kube.put(provider_config(**config))
    await world.run()
    stalled = world.condition("Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", reason)
    assert named in stalled["message"]
    assert "rp-token" in stalled["message"]
    assert world.platform.clients_built == 0, "no client was ever given the token"


async def test_a_listed_base_url_is_allowed(world: World) -> None:
    world.kube.put_secret(
        "rp-token",
        {"token": "t"},
        {**EXPORT, naming.EXPORT_BASE_URLS: "http://127.0.0.1:18080, http://127.0.0.1:18081"},
    )
    world.kube.put(
        provider_config(
            baseUrl="http://127.0.0.1:18080/", inferenceBaseUrl="http://127.0.0.1:18081"
        )
    )
    await world.run()
    assert world.platform.calls == ["observe", "create"]


async def test_env_secret_values_need_the_export_annotation_too(world: World) -> None:
    env = [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}]
    world.kube.put(endpoint(server={"image": "img:1", "env": env}))
    world.kube.put_secret("hf", {"token": "hf_abc"})
    await world.run()
    stalled = world.condition("Stalled")
    assert stalled["reason"] == "SecretNotExportable"
    assert "spec.server.env[0]" in stalled["message"]
    world.kube.put_secret("hf", {"token": "hf_abc"}, EXPORT)
    await world.run()
    assert world.platform.resources["r1"]["env"] == {"HF_TOKEN": "hf_abc"}


async def test_missing_and_incomplete_credentials(world: World) -> None:
    del world.kube.secrets[(NS, "rp-token")]
    await world.run()
    assert world.condition("Stalled")["reason"] == "CredentialsNotFound"
    world.kube.put_secret("rp-token", {"other": "x"}, EXPORT)
    await world.run()
    stalled = world.condition("Stalled")
    assert stalled["reason"] == "CredentialsIncomplete"
    assert "token" in stalled["message"]


# --- deletion ---------------------------------------------------------------------------


async def created(world: World, name: str = "llm") -> None:
    await world.run(name)
    await world.run(name)


async def test_delete_removes_then_releases_the_finalizer(world: World) -> None:
    await created(world)
    world.kube.mark_deleted("InferenceEndpoint", "llm")
    await world.run()
    assert world.platform.resources == {}
    await world.run()
    assert world.kube.obj("InferenceEndpoint", "llm") is None


async def test_paused_while_deleting_changes_nothing(world: World) -> None:
    await created(world)
    world.kube.objects[("InferenceEndpoint", NS, "llm")]["metadata"]["annotations"][
        naming.PAUSED
    ] = "true"
    world.kube.mark_deleted("InferenceEndpoint", "llm")
    before = list(world.platform.calls)
    await world.run()
    assert world.platform.calls == before
    assert naming.FINALIZER in world.ep()["metadata"]["finalizers"]


async def test_orphan_without_an_external_name_needs_no_provider(world: World) -> None:
    world.kube.put(endpoint("never", deletionPolicy="Orphan"))
    obj = world.kube.objects[("InferenceEndpoint", NS, "never")]
    obj["metadata"]["finalizers"] = [naming.FINALIZER]
    del world.kube.secrets[(NS, "rp-token")]
    world.kube.mark_deleted("InferenceEndpoint", "never")
    await world.run("never")
    assert world.kube.obj("InferenceEndpoint", "never") is None
    assert world.platform.calls == []


async def test_orphan_leaves_the_resource_even_without_credentials(world: World) -> None:
    await created(world)
    world.kube.objects[("InferenceEndpoint", NS, "llm")]["spec"]["deletionPolicy"] = "Orphan"
    del world.kube.secrets[(NS, "rp-token")]
    world.connector._clients.clear()
    world.kube.mark_deleted("InferenceEndpoint", "llm")
    await world.run()
    assert world.kube.obj("InferenceEndpoint", "llm") is None
    assert "r1" in world.platform.resources
    assert "Orphaned" in world.kube.reasons()


async def test_credentials_gone_during_deletion_uses_the_last_client(world: World) -> None:
    await created(world)
    del world.kube.secrets[(NS, "rp-token")]
    world.kube.mark_deleted("InferenceEndpoint", "llm")
    await world.run()
    await world.run()
    assert world.platform.resources == {}
    assert world.kube.obj("InferenceEndpoint", "llm") is None


@pytest.mark.parametrize("terminating", [False, True], ids=["namespace-live", "namespace-deleted"])
async def test_credentials_gone_with_no_client_says_how_out(
    world: World, terminating: bool
) -> None:
    await created(world)
    del world.kube.secrets[(NS, "rp-token")]
    world.connector._clients.clear()
    world.kube.put(
        {
            "kind": "Namespace",
            "metadata": {"name": NS, "namespace": ""},
            "status": {"phase": "Terminating" if terminating else "Active"},
        }
    )
    world.kube.mark_deleted("InferenceEndpoint", "llm")
    out = await world.run()
    stalled = world.condition("Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "CredentialsGone")
    assert "rp-token" in stalled["message"]
    assert "deletionPolicy: Orphan" in stalled["message"]
    assert ("restore Secret rp-token" in stalled["message"]) is (not terminating)
    assert out.error
    assert "r1" in world.platform.resources, "never silently leaked or deleted"
    assert naming.FINALIZER in world.ep()["metadata"]["finalizers"]


# --- critical annotations ----------------------------------------------------------------


async def test_success_mark_is_retried_on_api_errors(world: World) -> None:
    original = world.kube.patch
    failures = [kube_api.Unavailable("etcd leader changed"), kube_api.TooManyRequests("slow")]

    async def flaky(kind: str, ns: str, name: str, patch: dict[str, Any], **kw: Any) -> Any:
        if naming.CREATE_SUCCEEDED in str(patch) and failures:
            raise failures.pop(0)
        return await original(kind, ns, name, patch, **kw)

    world.kube.patch = flaky  # type: ignore[method-assign]
    await world.run()
    assert world.annotations()[naming.EXTERNAL_NAME] == "r1"
    assert world.sleeps == [0.2, 0.4]


# --- the ProviderConfig controller ---------------------------------------------------------


async def test_provider_config_finalizer_follows_use(world: World) -> None:
    configs = configuring.ConfigReconciler(world.kube, world.connector, world.clock)
    users = await configs.reconcile(NS, "rp")
    assert users == ["llm"]
    pc = world.kube.obj("ProviderConfig", "rp")
    assert pc is not None
    assert naming.FINALIZER in pc["metadata"]["finalizers"]
    assert pc["status"]["conditions"][0]["reason"] == "CredentialsFound"
    world.kube.mark_deleted("ProviderConfig", "rp")
    await configs.reconcile(NS, "rp")
    pc = world.kube.obj("ProviderConfig", "rp")
    assert pc is not None, "held while an endpoint uses it"
    assert pc["status"]["conditions"][0]["reason"] == "InUse"
    del world.kube.objects[("InferenceEndpoint", NS, "llm")]
    await configs.reconcile(NS, "rp")
    assert world.kube.obj("ProviderConfig", "rp") is None


async def test_old_crd_defaults_are_stripped_before_anything_else(world: World) -> None:
    world.kube.put(
        endpoint(
            "old",
            server={"image": "img:1", "port": 8000, "args": [], "env": []},
            spot={"policy": "on-demand", "drainGraceSeconds": 120},
        )
    )
    out = await world.run("old")
    spec = world.ep("old")["spec"]
    assert spec["server"] == {"image": "img:1"}
    assert "spot" not in spec
    assert world.platform.calls == [], "the platform is contacted only after the migration"
    assert out.requeue_after == 0.0


async def test_a_capacity_wait_turns_stalled_after_capacity_timeout(world: World) -> None:
    world.kube.put(endpoint(scaling={"minReplicas": 1, "maxReplicas": 1, "capacityTimeout": "5m"}))
    await world.run()
    world.platform.problem = Problem(
        "WaitingForCapacity", "1 worker throttled: no capacity in ADA_24", stalled=False
    )
    await world.run()
    reconciling = world.condition("Reconciling")
    assert (reconciling["status"], reconciling["reason"]) == ("True", "WaitingForCapacity")
    since = world.ep()["status"]["waitingForCapacitySince"]
    world.clock.advance(299)
    await world.run()
    assert world.condition("Stalled")["status"] == "False"
    assert world.ep()["status"]["waitingForCapacitySince"] == since, "the wait keeps its start"
    world.clock.advance(2)
    await world.run()
    stalled = world.condition("Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "InsufficientGPUCapacity")
    assert "capacityTimeout" in stalled["message"]
    world.platform.problem = None
    await world.run()
    assert world.condition("Ready")["status"] == "True"
    assert "waitingForCapacitySince" not in world.ep()["status"]


async def test_every_unlisted_base_url_is_named_at_once(world: World) -> None:
    world.kube.put(
        provider_config(baseUrl="http://127.0.0.1:1", inferenceBaseUrl="http://127.0.0.1:2")
    )
    await world.run()
    message = world.condition("Stalled")["message"]
    assert "spec.baseUrl http://127.0.0.1:1 and spec.inferenceBaseUrl http://127.0.0.1:2" in message
    assert "ferry.dev/export-base-urls: http://127.0.0.1:1,http://127.0.0.1:2" in message


async def test_a_provider_config_shows_credentials_its_platform_rejected(world: World) -> None:
    world.platform.faults["observe"] = [
        PermanentProviderError("RunPod rejected the credentials", reason="CredentialsRejected")
    ]
    await world.run()
    configs = configuring.ConfigReconciler(world.kube, world.connector, world.clock)
    await configs.reconcile(NS, "rp")
    pc = world.kube.obj("ProviderConfig", "rp")
    assert pc is not None
    ready = pc["status"]["conditions"][0]
    assert (ready["status"], ready["reason"]) == ("False", "CredentialsRejected")
    assert "seen by endpoint llm" in ready["message"]


async def test_a_secret_problem_is_looked_at_again_soon(world: World) -> None:
    del world.kube.secrets[(NS, "rp-token")]
    first = await world.run()
    second = await world.run()
    assert first.requeue_after == second.requeue_after == 15.0, "no backoff grown to a minute"


async def test_leaving_ready_for_an_update_is_a_normal_event(world: World) -> None:
    await created(world)
    world.platform.up_to_date = False
    await world.run()
    updating = [e for e in world.kube.events if e[2] == "Updating"]
    assert updating, "losing Ready is announced"
    assert updating[-1][1] == "Normal"


async def test_the_same_failure_again_is_not_logged_again(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    again = PermanentProviderError("GPU pool gone", reason="GPUNotOffered")
    world.platform.faults["observe"] = [again, again]
    with caplog.at_level("DEBUG", logger="ferry.reconciler"):
        await world.run()
        await world.run()
    levels = [r.levelname for r in caplog.records if "GPU pool gone" in r.getMessage()]
    assert levels == ["WARNING", "DEBUG"]


async def test_an_old_crd_that_puts_defaults_back_does_not_make_a_patch_loop(
    world: World,
) -> None:
    world.kube.put(endpoint("old", spot={"policy": "on-demand", "drainGraceSeconds": 120}))
    original = world.kube.patch
    migrations: list[dict[str, Any]] = []

    async def old_crd(kind: str, ns: str, name: str, patch: dict[str, Any], **kw: Any) -> Any:
        result = await original(kind, ns, name, patch, **kw)
        if kind != "InferenceEndpoint":
            return result
        if "spot" in (patch.get("spec") or {}):
            migrations.append(patch)
        obj = world.kube.objects[(kind, ns, name)]
        obj["spec"].setdefault("spot", {"policy": "on-demand", "drainGraceSeconds": 120})
        return {**result, "spec": obj["spec"]}

    world.kube.patch = old_crd  # type: ignore[method-assign]
    for _ in range(4):
        await world.run("old")
    assert len(migrations) == 1, "the migration is not tried again"
    assert world.platform.calls, "the endpoint is reconciled with the fields as they are"


async def test_an_unexpected_error_is_shown_not_crashed(world: World) -> None:
    world.platform.faults["observe"] = [KeyError("id")]  # type: ignore[list-item]
    out = await world.run()
    reconciling = world.condition("Reconciling")
    assert (reconciling["status"], reconciling["reason"]) == ("True", "InternalError")
    assert "KeyError" in reconciling["message"]
    assert out.error


async def test_a_deleted_provider_config_retires_its_client(world: World) -> None:
    await world.run()
    configs = configuring.ConfigReconciler(world.kube, world.connector, world.clock)
    del world.kube.objects[("ProviderConfig", NS, "rp")]
    await configs.reconcile(NS, "rp")
    for _ in range(3):
        await asyncio.sleep(0)
    assert world.platform.clients_closed == 1
