"""The Replicate fake's state machine on a stepped clock: releases, instances, billing, the
offline rule, predictions (inference off) and the seed model's schema against the predictor.

No sockets: `ReplicatePlatform` is driven directly; its HTTP surface is tested over real
sockets in tests/sandbox/test_replicate_*.py.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

from ferry.sandbox.clock import SandboxClock
from ferry.sandbox.http import Problem
from ferry.sandbox.replicate import catalog
from ferry.sandbox.replicate.platform import Options, ReplicatePlatform

ROOT = Path(__file__).resolve().parents[2]
MODEL = "ferry-dev/tiny-llm"
V1 = catalog.version_id(MODEL, 1)
V2 = catalog.version_id(MODEL, 2)


def platform(**options: Any) -> ReplicatePlatform:
    opts = Options(boot_seconds=60, idle_seconds=60, sim_seconds=1, inference=False)
    for key, value in options.items():
        setattr(opts, key, value)
    return ReplicatePlatform(SandboxClock(0, start=1_800_000_000.0), opts)


def deployment_body(name: str = "d", **body: Any) -> dict[str, Any]:
    """A `POST /v1/deployments` body of the seed model (also used over HTTP elsewhere)."""
    return {
        "name": name,
        "model": MODEL,
        "version": V1,
        "hardware": "gpu-l40s",
        "min_instances": 0,
        "max_instances": 2,
        **body,
    }


def create(p: ReplicatePlatform, name: str = "d", **body: Any) -> str:
    return p.create_deployment(deployment_body(name, **body)).key


def states(p: ReplicatePlatform, key: str) -> list[str]:
    now = p.clock.now()
    return sorted(i.state(now) for i in p.instances_of(key))


def test_the_seed_model_has_two_versions_the_latest_last() -> None:
    model = platform().model("ferry-dev", "tiny-llm")
    assert [v.id for v in model.versions] == [V1, V2]
    assert model.to_json()["latest_version"]["id"] == V2
    assert len(V1) == 64


def test_min_instances_boot_slowly_on_the_clock_and_bill_boot_then_idle() -> None:
    p = platform()
    key = create(p, min_instances=1)
    assert states(p, key) == ["booting"]
    p.advance(59)
    assert states(p, key) == ["booting"]
    p.advance(1)
    assert states(p, key) == ["idle"]
    p.advance(40)
    row = p.billed_seconds()["deployments"][key]
    assert row["boot"] == pytest.approx(60)
    assert row["idle"] == pytest.approx(40)
    assert row["busy"] == 0
    assert row["usd"] == pytest.approx(100 * 0.000975)


def test_every_patch_is_a_release_and_a_new_version_replaces_the_instances() -> None:
    p = platform()
    key = create(p, min_instances=1)
    p.advance(60)
    old = {i.id for i in p.instances_of(key)}
    owner, name = key.split("/")
    p.update_deployment(owner, name, {"max_instances": 3})
    assert p.deployment(owner, name).release.number == 2
    assert {i.id for i in p.instances_of(key)} == old, "a bounds change keeps the instances"
    p.update_deployment(owner, name, {"version": V2})
    assert p.deployment(owner, name).release.number == 3
    assert not {i.id for i in p.instances_of(key)} & old, "a new version boots new instances"
    p.update_deployment(owner, name, {})
    assert p.deployment(owner, name).release.number == 3, "an empty PATCH changes nothing"


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"version": "f" * 64}, 404, "version"),
        ({"hardware": "gpu-b200"}, 422, "gpu-b200"),
        ({"min_instances": 3, "max_instances": 1}, 422, "min_instances"),
        ({"name": "Bad/Name"}, 422, "Bad/Name"),
    ],
    ids=["unknown-version", "unknown-hardware", "min-above-max", "bad-name"],
)
def test_creates_the_platform_would_refuse_are_refused_naming_why(
    body: dict[str, Any], status: int, words: str
) -> None:
    with pytest.raises(Problem) as info:
        create(platform(), **body)
    assert info.value.status == status
    assert words in info.value.detail


def test_names_are_unique_per_account() -> None:
    p = platform()
    create(p, "same")
    with pytest.raises(Problem) as info:
        create(p, "same")
    assert info.value.status == 409


def test_delete_waits_for_fifteen_minutes_offline_after_the_last_instance() -> None:
    p = platform()
    key = create(p, min_instances=1)
    owner, name = key.split("/")
    p.advance(120)
    with pytest.raises(Problem) as info:
        p.delete_deployment(owner, name)
    assert info.value.status == 409
    assert "online" in info.value.detail
    p.update_deployment(owner, name, {"min_instances": 0, "max_instances": 0})
    assert p.instances_of(key) == [], "max 0 retires the surplus at once"
    p.advance(899)
    with pytest.raises(Problem) as info:
        p.delete_deployment(owner, name)
    assert "offline for 899s only" in info.value.detail
    p.advance(1)
    p.delete_deployment(owner, name)
    with pytest.raises(Problem):
        p.deployment(owner, name)


def test_a_deployment_never_used_counts_as_offline_from_its_creation() -> None:
    p = platform()
    owner, name = create(p).split("/")
    p.advance(900)
    p.delete_deployment(owner, name)


def test_waiting_predictions_scale_up_to_max_then_idle_instances_go() -> None:
    p = platform()
    key = create(p, max_instances=2)
    owner, name = key.split("/")
    made = [p.create_prediction(owner, name, {"input": {"prompt": "x"}}, None) for _ in range(3)]
    assert states(p, key) == ["booting", "booting"]
    p.advance(60)
    assert sorted(m.status for m in made) == ["processing", "processing", "starting"]
    p.advance(1)
    assert [m.status for m in made[:2]] == ["failed", "failed"]
    assert "inference is off" in (made[0].error or "")
    p.advance(1)
    assert made[2].status == "failed"
    row = p.billed_seconds()["deployments"][key]
    assert row["busy"] == pytest.approx(3)
    p.advance(60)
    assert p.instances_of(key) == [], "idle instances above min_instances go after idle_seconds"
    assert p.deployment(owner, name).offline_since == pytest.approx(p.clock.now(), abs=1)


def test_a_deadline_aborts_a_prediction_that_never_started() -> None:
    p = platform()
    owner, name = create(p, max_instances=0).split("/")
    made = p.create_prediction(owner, name, {"input": {"prompt": "x"}}, 30)
    p.advance(30)
    assert made.status == "aborted"
    assert made.to_json("http://x")["status"] == "aborted"


def test_an_input_the_version_does_not_take_is_422_naming_it() -> None:
    p = platform()
    owner, name = create(p).split("/")
    with pytest.raises(Problem) as info:
        p.create_prediction(owner, name, {"input": {"prompt": "x", "max_tokens": 0}}, None)
    assert info.value.status == 422
    assert "input.max_tokens" in info.value.detail
    with pytest.raises(Problem) as info:
        p.create_prediction(owner, name, {"input": {}}, None)
    assert "prompt" in info.value.detail


def test_the_seed_schema_mirrors_the_cog_predictors_signature() -> None:
    """The version's Input schema is what inference-server/replicate/predict.py takes."""
    tree = ast.parse((ROOT / "inference-server" / "replicate" / "predict.py").read_text())
    predict = next(
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef) and node.name == "predict"
    )
    params = {a.arg: d for a, d in zip(predict.args.args[1:], predict.args.defaults, strict=True)}
    assert list(params) == list(catalog.INPUT_SCHEMA["properties"])
    for name, default in params.items():
        assert isinstance(default, ast.Call)
        given = {k.arg: ast.literal_eval(k.value) for k in default.keywords}
        prop = catalog.INPUT_SCHEMA["properties"][name]
        assert given.get("description") == prop["description"], name
        if "default" in given:
            assert given["default"] == prop["default"], name
        else:
            assert name in catalog.INPUT_SCHEMA["required"], name
        for cog_key, schema_key in (("ge", "minimum"), ("le", "maximum")):
            if cog_key in given:
                assert given[cog_key] == prop[schema_key], (name, cog_key)
