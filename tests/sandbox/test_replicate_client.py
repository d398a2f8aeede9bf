"""Ferry's Replicate provider against the Replicate fake over real sockets.

The verbs the reconciler calls, one at a time, with the fake's call counts: what observe
costs in steady state (D4), one PATCH per change, adoption after a lost create (D15), the
offline wait before a delete (D13), and how the platform's refusals read. The lifecycle
around them (annotations, status, requeues) is tested with the operator in
tests/integration/test_replicate.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from ferry.logic import naming
from ferry.providers.base import (
    ClientConfig,
    PermanentProviderError,
    Target,
    TransientProviderError,
)
from ferry.providers.replicate import ReplicateProvider
from tests.sandbox import test_replicate_fake as fake
from tests.sandbox.test_replicate_fake import DEPLOYMENT, MODEL, V1, V2, Rep
from tests.unit import test_replicate_provider as unit

rep = fake.rep  # the fixture: the Replicate fake of the session sandbox, reset


def target(name: str = "llm", ref: str = MODEL, **kwargs: Any) -> Target:
    return unit.target(name, ref, **kwargs)


def config(rep: Rep, token: str | None = None) -> ClientConfig:
    return unit.config(rep.api, token or rep.token)


@pytest.fixture
async def client(rep: Rep) -> AsyncIterator[ReplicateProvider]:
    made = ReplicateProvider(config(rep))
    yield made
    await made.close()


async def test_create_resolves_the_latest_version_and_observe_reads_one_deployment(
    rep: Rep,
    client: ReplicateProvider,
) -> None:
    assert not (await client.observe(target(), None)).exists
    name = await client.create(target(), None)
    assert name == "ferry-sandbox/ferry-team-a-llm"
    made = rep.client.deployments.get(name)
    assert made.current_release is not None
    assert made.current_release.version == V2, "owner/model deploys the latest version"
    assert made.current_release.configuration.hardware == "gpu-l40s"
    rep.admin("DELETE", "/calls")
    seen = await client.observe(target(), name)
    assert seen.up_to_date
    assert seen.resolved_model_version == V2
    assert seen.release_number == 1
    assert seen.url == f"{rep.api}/v1/deployments/{name}/predictions"
    assert rep.admin("GET", "/calls").json()["total"] == 1, "D4: the deployment, nothing else"


async def test_the_resolved_version_does_not_move_when_a_new_one_is_published(
    rep: Rep,
    client: ReplicateProvider,
) -> None:
    name = await client.create(target(), None)
    rep.admin("POST", "/models", json={"owner": "ferry-dev", "name": "tiny-llm"})
    seen = await client.observe(target(), name)
    assert seen.up_to_date
    assert seen.resolved_model_version == V2
    pinned = target(status={"resolvedModelVersion": V2})
    assert (await client.observe(pinned, name)).up_to_date


async def test_a_change_is_one_patch_of_what_differs(
    rep: Rep,
    client: ReplicateProvider,
) -> None:
    name = await client.create(target(ref=f"{MODEL}:{V1}"), None)
    changed = target(ref=f"{MODEL}:{V2}", scaling={"minReplicas": 2, "maxReplicas": 5})
    seen = await client.observe(changed, name)
    assert sorted(seen.diff) == ["max_instances", "min_instances", "version"]
    rep.admin("DELETE", "/calls")
    await client.update(changed, seen)
    assert rep.calls("PATCH", DEPLOYMENT) == 1
    after = await client.observe(changed, name)
    assert after.up_to_date
    assert after.release_number == 2


async def test_a_lost_create_is_adopted_only_under_d15(
    rep: Rep,
    client: ReplicateProvider,
) -> None:
    rep.create("ferry-team-a-mine")
    mark = rep.http.get("/_sandbox/clock").json()["now"]
    pending = {naming.CREATE_PENDING: mark}
    seen = await client.observe(target("mine", annotations=pending), None)
    assert seen.exists
    assert seen.external_name == "ferry-sandbox/ferry-team-a-mine"

    rep.create("ferry-team-a-theirs")
    with pytest.raises(PermanentProviderError) as info:
        await client.observe(target("theirs"), None)
    assert info.value.reason == "ExternalResourceOwnedElsewhere"
    assert "ferry-sandbox/ferry-team-a-theirs" in str(info.value)
    rep.client.deployments.update("ferry-sandbox", "ferry-team-a-theirs", max_instances=3)
    with pytest.raises(PermanentProviderError) as info:
        await client.observe(target("theirs", annotations=pending), None)
    assert "release 2" in str(info.value)
    gone = await client.observe(target("theirs", deleting=True, annotations=pending), None)
    assert not gone.exists, "deleting an endpoint never touches a deployment that is not its"


async def test_delete_scales_to_zero_then_waits_offline_with_backoff(
    rep: Rep,
    client: ReplicateProvider,
) -> None:
    spec: dict[str, Any] = {"scaling": {"minReplicas": 1, "maxReplicas": 2}}
    name = await client.create(target(**spec), None)
    rep.advance(120)
    waits = []
    for _ in range(3):
        with pytest.raises(TransientProviderError) as info:
            await client.delete(target(**spec), name)
        assert info.value.reason == "WaitingForOffline"
        assert str(info.value).startswith(
            "waiting for Replicate to take the deployment offline, next try in"
        )
        waits.append(info.value.retry_after)
    assert waits == [30.0, 60.0, 120.0]
    assert rep.calls("PATCH", DEPLOYMENT) == 1, "scaled to zero once"
    config = rep.client.deployments.get(name).current_release.configuration  # type: ignore[union-attr]
    assert (config.min_instances, config.max_instances) == (0, 0)
    rep.advance(900)
    await client.delete(target(**spec), name)
    assert not (await client.observe(target(**spec), name)).exists
    await client.delete(target(**spec), name)  # a second delete accepts "not found"


async def test_a_provider_ref_that_does_not_exist_is_named(
    rep: Rep,
    client: ReplicateProvider,
) -> None:
    with pytest.raises(PermanentProviderError) as info:
        await client.create(target(ref="nobody/nothing"), None)
    assert info.value.reason == "ModelNotFound"
    assert "nobody/nothing" in str(info.value)
    with pytest.raises(PermanentProviderError) as info:
        await client.create(target(ref=f"{MODEL}:{'f' * 64}"), None)
    assert info.value.reason == "ModelNotFound"
    assert f"{MODEL}:{'f' * 64}" in str(info.value)
    assert rep.calls("POST", "/v1/deployments") == 0


async def test_rejected_credentials_name_the_secret_never_the_token(rep: Rep) -> None:
    wrong = "r8_" + "0123456789ab"
    bad = ReplicateProvider(config(rep, token=wrong))
    with pytest.raises(PermanentProviderError) as info:
        await bad.observe(target(), None)
    await bad.close()
    assert info.value.reason == "CredentialsRejected"
    assert "Secret rep-token" in str(info.value)
    assert wrong not in str(info.value)


async def test_a_throttled_read_hands_retry_after_to_the_queue(
    rep: Rep,
    client: ReplicateProvider,
) -> None:
    name = await client.create(target(), None)
    rep.fault(method="GET", route=DEPLOYMENT, kind="rate_limit", retryAfterSeconds=20, count=None)
    rep.admin("DELETE", "/calls")
    with pytest.raises(TransientProviderError) as info:
        await client.observe(target(), name)
    assert info.value.reason == "Throttled"
    assert info.value.retry_after == 20
    assert rep.calls("GET", DEPLOYMENT) == 1, "a long Retry-After is not slept in the call"
    rep.admin("DELETE", "/faults")


async def test_an_unanswered_create_may_have_been_applied(
    rep: Rep,
    client: ReplicateProvider,
) -> None:
    rep.lose_next_create()
    with pytest.raises(TransientProviderError) as info:
        await client.create(target(), None)
    assert info.value.maybe_applied
    assert info.value.reason == "ProviderTimeout"
    assert rep.client.deployments.get("ferry-sandbox/ferry-team-a-llm").current_release
