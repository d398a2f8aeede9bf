"""Spec checks of the sandbox (ferry.sandbox.validation) against RunPod's published spec."""

from __future__ import annotations

import json

import pytest

from ferry.sandbox.validation import SpecValidator, SpecViolation

AUTH = {"authorization": "Bearer t"}
GOOD = {
    "name": "x",
    "type": "QUEUE",
    "image": "img",
    "gpu": {"pools": ["ADA_24"]},
    "scaling": {"type": "QUEUE_DELAY", "queueDelay": 4},
}


@pytest.fixture(scope="module")
def spec() -> SpecValidator:
    return SpecValidator("runpod-v2.json", "https://api.runpod.io")


def check(
    spec: SpecValidator, body: object, method: str = "POST", path: str = "/v2/serverless"
) -> None:
    spec.check_request(
        method,
        path,
        query={},
        headers=AUTH,
        body=json.dumps(body).encode(),
        content_type="application/json",
    )


def test_a_valid_create_passes_and_an_image_is_required_without_a_template(
    spec: SpecValidator,
) -> None:
    check(spec, GOOD)
    with pytest.raises(SpecViolation, match="'image' is a required property"):
        check(spec, {k: v for k, v in GOOD.items() if k != "image"})


def test_violations_name_the_field_without_the_allof_echo(spec: SpecValidator) -> None:
    with pytest.raises(SpecViolation) as caught:
        check(spec, {**GOOD, "workers": {"min": -1}})
    assert caught.value.errors == ["$.workers.min: -1 is less than the minimum of 0"]
    with pytest.raises(SpecViolation, match=r"'type' was unexpected"):
        check(spec, {"type": "QUEUE"}, method="PATCH", path="/v2/serverless/abc")


def test_bad_json_and_bad_query_parameters(spec: SpecValidator) -> None:
    with pytest.raises(SpecViolation, match="not valid JSON"):
        spec.check_request(
            "POST",
            "/v2/serverless",
            query={},
            headers=AUTH,
            body=b"{",
            content_type="application/json",
        )
    with pytest.raises(SpecViolation, match=r"^query parameter lastN"):
        spec.check_request(
            "GET",
            "/v2/billing/serverless",
            query={"lastN": "0"},
            headers=AUTH,
            body=None,
            content_type="",
        )


def test_responses_are_checked_problem_json_included(spec: SpecValidator) -> None:
    problem = {"title": "Not Found", "status": 404, "detail": "gone"}
    spec.check_response(
        "GET",
        "/v2/serverless/abc",
        query={},
        request_headers=AUTH,
        status=404,
        headers={"content-type": "application/problem+json"},
        body=json.dumps(problem).encode(),
    )
    with pytest.raises(SpecViolation, match="'detail' is a required property"):
        spec.check_response(
            "GET",
            "/v2/serverless/abc",
            query={},
            request_headers=AUTH,
            status=404,
            headers={"content-type": "application/problem+json"},
            body=json.dumps({"title": "Not Found", "status": 404}).encode(),
        )
    with pytest.raises(SpecViolation, match="'summary' is a required property"):
        spec.check_response(
            "GET",
            "/v2/serverless/abc/workers",
            query={},
            request_headers=AUTH,
            status=200,
            headers={"content-type": "application/json"},
            body=json.dumps({"workers": []}).encode(),
        )
