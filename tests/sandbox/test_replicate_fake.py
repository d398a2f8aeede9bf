"""The Replicate fake over real sockets, through the real `replicate` client where it can be.

The session sandbox (tests/sandbox/conftest.py) runs with inference off, its clocks frozen
(stepped through `POST /_sandbox/clock`) and every answer checked against the published
spec, so each call here also proves the answer's shape (an off-spec answer is a 500).
`rep` resets the Replicate fake before each test.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pydantic import v1 as pydantic_v1
from replicate.client import Client
from replicate.exceptions import ReplicateError

from ferry.sandbox.replicate import catalog
from tests.sandbox.conftest import Sandbox
from tests.unit.test_replicate_fake_platform import deployment_body

MODEL = "ferry-dev/tiny-llm"
V1 = catalog.version_id(MODEL, 1)
V2 = catalog.version_id(MODEL, 2)
DEPLOYMENT = "/v1/deployments/{deployment_owner}/{deployment_name}"


class Rep:
    """The Replicate fake of a running sandbox: the real client, raw HTTP, admin."""

    def __init__(self, info: dict[str, Any]) -> None:
        self.api = info["api"]
        self.token = info["token"]
        self.client = Client(api_token=self.token, base_url=self.api)
        self.http = httpx.Client(
            base_url=self.api, headers={"Authorization": f"Bearer {self.token}"}, timeout=30
        )

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.request(method, f"/_sandbox{path}", **kwargs)

    def advance(self, seconds: float) -> None:
        self.admin("POST", "/clock", json={"advanceSeconds": seconds}).raise_for_status()

    def calls(self, method: str, route: str) -> int:
        rows = self.admin("GET", "/calls").json()["calls"]
        return sum(r["count"] for r in rows if (r["method"], r["route"]) == (method, route))

    def create(self, name: str = "llm", **body: Any) -> dict[str, Any]:
        r = self.http.post("/v1/deployments", json=deployment_body(name, **body))
        assert r.status_code == 200, r.text
        made: dict[str, Any] = r.json()
        return made

    def fault(self, **spec: Any) -> None:
        self.admin("POST", "/faults", json=spec).raise_for_status()

    def lose_next_create(self) -> None:
        """The next create happens, and its answer never comes (held until the caller quits)."""
        self.fault(method="POST", route="/v1/deployments", kind="lose_response", holdSeconds=30)

    def close(self) -> None:
        self.http.close()
        close_client(self.client)


def close_client(client: Client) -> None:
    """The replicate client opens an httpx client lazily and has no close of its own."""
    client._client.close()


@pytest.fixture
def rep(sandbox_session: Sandbox) -> Iterator[Rep]:
    handle = Rep(json.loads(sandbox_session.urls_file.read_text())["replicate"])
    handle.admin("POST", "/reset").raise_for_status()
    yield handle
    handle.close()


def test_account_hardware_and_models_parse_in_the_real_client(rep: Rep) -> None:
    account = rep.client.accounts.current()
    assert (account.type, account.username, account.name) == (
        "user",
        "ferry-sandbox",
        "Ferry Sandbox",
    )
    skus = {h.sku for h in rep.client.hardware.list()}
    assert {"gpu-t4", "gpu-l40s", "gpu-l40s-2x", "gpu-a100-large", "gpu-h100", "cpu"} <= skus
    model = rep.client.models.get(MODEL)
    assert model.latest_version is not None
    assert model.latest_version.id == V2
    assert [v.id for v in model.versions.list()] == [V2, V1]
    assert model.versions.get(V1).openapi_schema["components"]["schemas"]["Input"]
    with pytest.raises(ReplicateError) as info:
        rep.client.models.get("nobody/nothing")
    assert info.value.status == 404


def test_create_answers_200_with_release_one_created_by_a_named_account(rep: Rep) -> None:
    made = rep.client.deployments.create(
        name="ferry-sandbox/first",
        model=MODEL,
        version=V1,
        hardware="gpu-t4",
        min_instances=0,
        max_instances=3,
    )
    assert (made.owner, made.name) == ("ferry-sandbox", "first"), "the client strips owner/"
    release = made.current_release
    assert release is not None
    assert (release.number, release.model, release.version) == (1, MODEL, V1)
    assert release.created_by is not None
    assert release.created_by.name == "Ferry Sandbox"
    assert release.configuration.hardware == "gpu-t4"
    again = rep.http.post("/v1/deployments", json=deployment_body("first"))
    assert again.status_code == 409
    assert again.headers["content-type"].startswith("application/problem+json")
    assert "already exists" in again.json()["detail"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"min_instances": 6}, "min_instances"),
        ({"max_instances": 21}, "max_instances"),
        ({"min_instances": "1"}, "min_instances"),
        ({"hardware": None}, "hardware"),
    ],
    ids=["min-above-5", "max-above-20", "min-not-integer", "hardware-null"],
)
def test_bodies_off_the_spec_are_400_naming_the_field(
    rep: Rep, change: dict[str, Any], field: str
) -> None:
    body = deployment_body("x", **change)
    r = rep.http.post("/v1/deployments", json=body)
    assert r.status_code == 400, r.text
    assert field in r.json()["detail"]
    with pytest.raises(ReplicateError) as info:
        rep.client.deployments.create(**body)
    assert info.value.status == 400
    assert field in (info.value.detail or "")


def test_each_patch_is_a_release_and_the_model_stays(rep: Rep) -> None:
    rep.create("rel")
    updated = rep.client.deployments.update("ferry-sandbox", "rel", max_instances=5)
    assert updated.current_release is not None
    assert updated.current_release.number == 2
    updated = rep.client.deployments.update("ferry-sandbox", "rel", version=V2, hardware="gpu-h100")
    assert updated.current_release is not None
    release = updated.current_release
    assert (release.number, release.version, release.model) == (3, V2, MODEL)
    assert release.configuration.hardware == "gpu-h100"
    assert release.configuration.max_instances == 5
    r = rep.http.patch("/v1/deployments/ferry-sandbox/rel", json={"model": "other/model"})
    assert r.status_code == 200, "model is not a PATCH field: the spec ignores it"
    assert r.json()["current_release"]["model"] == MODEL


def test_the_list_pages_with_cursors_the_client_follows(rep: Rep) -> None:
    for i in range(101):
        rep.create(f"d{i:03d}")
    first = rep.client.deployments.list()
    assert len(first.results) == 100
    assert first.next is not None
    second = rep.client.deployments.list(first.next)
    assert [d.name for d in second.results] == ["d100"]
    assert second.next is None


def test_delete_is_refused_while_recently_online_then_allowed(rep: Rep) -> None:
    rep.create("del", min_instances=1)
    rep.advance(120)
    with pytest.raises(ReplicateError) as info:
        rep.client.deployments.delete("ferry-sandbox", "del")
    assert info.value.status == 409
    assert "offline and unused for 15 minutes" in (info.value.detail or "")
    rep.client.deployments.update("ferry-sandbox", "del", min_instances=0, max_instances=0)
    rep.advance(899)
    with pytest.raises(ReplicateError):
        rep.client.deployments.delete("ferry-sandbox", "del")
    rep.advance(1)
    assert rep.client.deployments.delete("ferry-sandbox", "del") is True
    with pytest.raises(ReplicateError) as info:
        rep.client.deployments.get("ferry-sandbox/del")
    assert info.value.status == 404


def test_predictions_start_after_the_cold_boot_and_bill_it(rep: Rep) -> None:
    rep.create("pred", max_instances=1)
    prediction = rep.client.deployments.predictions.create(
        "ferry-sandbox/pred", input={"prompt": "Hello", "max_tokens": 4}, wait=1
    )
    assert prediction.status == "starting", "the instance boots for 60s on the sandbox clock"
    assert prediction.urls is not None
    assert prediction.urls["get"] == f"{rep.api}/v1/predictions/{prediction.id}"
    rep.advance(60)
    assert rep.client.predictions.get(prediction.id).status == "processing"
    rep.advance(1)
    done = rep.client.predictions.get(prediction.id)
    assert done.status == "failed"
    assert "inference is off" in (done.error or "")
    bill = rep.admin("GET", "/billing").json()["deployments"]["ferry-sandbox/pred"]
    assert (bill["boot"], bill["busy"], bill["instances"]) == (60, 1, 1)


def test_a_prefer_header_off_the_spec_pattern_is_refused(rep: Rep) -> None:
    rep.create("wait")
    r = rep.http.post(
        "/v1/deployments/ferry-sandbox/wait/predictions",
        json={"input": {"prompt": "x"}},
        headers={"Prefer": "wait=100"},
    )
    assert r.status_code == 400
    assert "Prefer" in r.json()["detail"]


def test_aborted_is_in_the_spec_but_not_in_the_clients_models(rep: Rep) -> None:
    """providers.md: read predictions as raw JSON where `aborted` can appear."""
    rep.create("abort", max_instances=0)
    r = rep.http.post(
        "/v1/deployments/ferry-sandbox/abort/predictions",
        json={"input": {"prompt": "x"}},
        headers={"Cancel-After": "10s"},
    )
    assert r.status_code == 201
    rep.advance(10)
    raw = rep.http.get(f"/v1/predictions/{r.json()['id']}").json()
    assert raw["status"] == "aborted"
    with pytest.raises(pydantic_v1.ValidationError):
        rep.client.predictions.get(raw["id"])


def test_credentials_are_checked_and_every_answer_says_sandbox(rep: Rep) -> None:
    wrong = Client(api_token="r8_wrong", base_url=rep.api)
    with pytest.raises(ReplicateError) as info:
        wrong.accounts.current()
    close_client(wrong)
    assert info.value.status == 401
    r = httpx.get(f"{rep.api}/v1/account")
    assert r.status_code == 401
    assert r.headers["x-ferry-sandbox"] == "true"


def test_drift_through_admin_is_a_release_and_not_counted(rep: Rep) -> None:
    rep.create("drift")
    before = rep.calls("PATCH", DEPLOYMENT)
    r = rep.admin("PATCH", "/deployments/ferry-sandbox/drift", json={"max_instances": 9})
    assert r.status_code == 200, r.text
    assert r.json()["current_release"]["number"] == 2
    assert rep.calls("PATCH", DEPLOYMENT) == before
    bad = rep.admin("PATCH", "/deployments/ferry-sandbox/drift", json={"max_instances": 99})
    assert bad.status_code == 400
    assert "max_instances" in bad.json()["detail"]


def test_a_new_model_version_becomes_the_latest(rep: Rep) -> None:
    r = rep.admin("POST", "/models", json={"owner": "ferry-dev", "name": "tiny-llm"})
    assert r.status_code == 201
    assert r.json()["versions"][-1] == catalog.version_id(MODEL, 3)
    assert rep.client.models.get(MODEL).latest_version.id == catalog.version_id(MODEL, 3)  # type: ignore[union-attr]
    rep.admin("POST", "/reset").raise_for_status()
    assert rep.client.models.get(MODEL).latest_version.id == V2  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("fault", "status"),
    [
        ({"kind": "rate_limit", "retryAfterSeconds": 7}, 429),
        ({"kind": "status", "status": 503}, 503),
    ],
    ids=["429", "503"],
)
def test_faults_answer_on_the_route_and_are_counted(
    rep: Rep, fault: dict[str, Any], status: int
) -> None:
    rep.fault(method="GET", route="/v1/account", **fault)
    r = rep.http.get("/v1/account")
    assert r.status_code == status
    if status == 429:
        assert r.headers["retry-after"] == "7"
    assert rep.http.get("/v1/account").status_code == 200
    assert rep.calls("GET", "/v1/account") == 2


def test_a_lost_create_response_still_creates(rep: Rep) -> None:
    rep.lose_next_create()
    with pytest.raises(httpx.ReadTimeout):
        rep.http.post("/v1/deployments", json=deployment_body("lost"), timeout=1.0)
    found = rep.client.deployments.get("ferry-sandbox/lost")
    assert found.current_release is not None
    assert found.current_release.number == 1
