"""The Replicate fake's HTTP API (`https://api.replicate.com` stand-in, paths under `/v1`).

Exactly the routes Ferry's operator and a caller of a deployment use, each validated against
the published spec (responses too when `validate_responses` is on): the account, hardware,
models and their versions, deployments (create answers 200, list pages with cursors,
PATCH makes a release, DELETE follows the offline rule), predictions through a deployment
(`Prefer: wait=N` holds the answer up to N wall seconds; `Cancel-After` sets a deadline), and
a prediction's read and cancel. `Authorization: Bearer <token>`; errors are problem bodies
`{title, status, detail}`, which the replicate client reads into `ReplicateError`. Built by
`app`.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ferry.sandbox.http import AuthCheck, Call, Notifier, Problem, Surface
from ferry.sandbox.replicate import catalog
from ferry.sandbox.replicate.platform import ReplicatePlatform, page_start

_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s?)?$")
MIN_CANCEL_AFTER_S = 5.0


def wait_seconds(prefer: str | None) -> float | None:
    """`Prefer: wait=N` -> N seconds, at most 60; bare `wait` -> 60.

    The spec's pattern admits 1-99 though its text says 1-60: the text is taken as the limit.
    """
    if not prefer:
        return None
    _, _, value = prefer.partition("=")
    return min(float(value), 60.0) if value else 60.0


def cancel_after(header: str | None) -> float | None:
    """`Cancel-After` (`30`, `90s`, `5m`, `1h30m45s`) in seconds; at least 5 s."""
    if header is None:
        return None
    found = _DURATION.match(header.strip())
    if not header.strip() or found is None:
        raise Problem(400, f"Cancel-After {header!r} is not a duration such as 30s, 5m or 1h30m")
    hours, minutes, seconds = (int(g) if g else 0 for g in found.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total < MIN_CANCEL_AFTER_S:
        raise Problem(400, f"Cancel-After {header!r} is below the minimum of 5 seconds")
    return float(total)


def routes(
    surface: Surface, platform: ReplicatePlatform, notifier: Notifier, auth: AuthCheck
) -> list[Route]:
    """The platform routes on `surface` (spec-validated)."""

    def api() -> str:
        return platform.api_url

    async def account(_call: Call) -> Response:
        return JSONResponse(platform.account)

    async def hardware(_call: Call) -> Response:
        return JSONResponse([h.to_json() for h in catalog.HARDWARE])

    async def model(call: Call) -> Response:
        p = call.params
        return JSONResponse(platform.model(p["model_owner"], p["model_name"]).to_json())

    async def versions(call: Call) -> Response:
        found = platform.model(call.params["model_owner"], call.params["model_name"])
        results = [v.to_json() for v in reversed(found.versions)]
        return JSONResponse({"next": None, "previous": None, "results": results})

    async def version(call: Call) -> Response:
        p = call.params
        found = platform.version(p["model_owner"], p["model_name"], p["version_id"])
        return JSONResponse(found.to_json())

    async def list_deployments(call: Call) -> Response:
        start = page_start(call.request.query_params.get("cursor"))
        page, following = platform.list_deployments(start)
        previous = max(0, start - 100) if start else None
        return JSONResponse(
            {
                "next": f"{api()}/v1/deployments?cursor={following}" if following else None,
                "previous": f"{api()}/v1/deployments?cursor={previous}"
                if previous is not None
                else None,
                "results": [d.to_json() for d in page],
            }
        )

    async def create(call: Call) -> Response:
        return JSONResponse(platform.create_deployment(call.body).to_json())

    async def get_one(call: Call) -> Response:
        p = call.params
        return JSONResponse(
            platform.deployment(p["deployment_owner"], p["deployment_name"]).to_json()
        )

    async def update(call: Call) -> Response:
        p = call.params
        found = platform.update_deployment(
            p["deployment_owner"], p["deployment_name"], call.body or {}
        )
        return JSONResponse(found.to_json())

    async def delete(call: Call) -> Response:
        platform.delete_deployment(call.params["deployment_owner"], call.params["deployment_name"])
        return Response(status_code=204)

    async def predict(call: Call) -> Response:
        p = call.params
        headers = call.request.headers
        deadline = cancel_after(headers.get("cancel-after"))
        prediction = platform.create_prediction(
            p["deployment_owner"], p["deployment_name"], call.body, deadline
        )
        wait = wait_seconds(headers.get("prefer"))
        if wait is None:
            return JSONResponse(prediction.to_json(api()), status_code=201)
        done = await notifier.wait_until(lambda: prediction.done, wait)
        return JSONResponse(prediction.to_json(api()), status_code=201 if done else 202)

    async def get_prediction(call: Call) -> Response:
        return JSONResponse(platform.prediction(call.params["prediction_id"]).to_json(api()))

    async def cancel(call: Call) -> Response:
        return JSONResponse(platform.cancel(call.params["prediction_id"]).to_json(api()))

    deployment = "/v1/deployments/{deployment_owner}/{deployment_name}"
    model_path = "/v1/models/{model_owner}/{model_name}"
    table: list[tuple[str, str, Any]] = [
        ("GET", "/v1/account", account),
        ("GET", "/v1/hardware", hardware),
        ("GET", model_path, model),
        ("GET", f"{model_path}/versions", versions),
        ("GET", f"{model_path}/versions/{{version_id}}", version),
        ("GET", "/v1/deployments", list_deployments),
        ("POST", "/v1/deployments", create),
        ("GET", deployment, get_one),
        ("PATCH", deployment, update),
        ("DELETE", deployment, delete),
        ("POST", f"{deployment}/predictions", predict),
        ("GET", "/v1/predictions/{prediction_id}", get_prediction),
        ("POST", "/v1/predictions/{prediction_id}/cancel", cancel),
    ]
    return [surface.route(m, t, h, auth=auth, spec=True) for m, t, h in table]
