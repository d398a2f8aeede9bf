"""The RunPod fake's management API (RunPod REST v2, `https://api.runpod.io` stand-in).

Exactly the routes Ferry's operator uses, each validated against the published spec in both
directions (responses when `validate_responses` is on): serverless endpoints (create, list,
get, PATCH, delete), their workers and releases, the GPU catalogue and serverless billing.
`Authorization: Bearer <token>`; errors are `application/problem+json`; every authenticated
answer carries `RateLimit`/`RateLimit-Policy`. Built by `app`.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ferry.sandbox.http import AuthCheck, Call, Problem, Surface
from ferry.sandbox.runpod import catalog
from ferry.sandbox.runpod.platform import RunPodPlatform


def routes(surface: Surface, platform: RunPodPlatform, auth: AuthCheck) -> list[Route]:
    """The management routes on `surface` (spec-validated)."""

    def endpoint_json(endpoint_id: str) -> dict[str, Any]:
        return platform.endpoint(endpoint_id).to_json(platform.jobs_url)

    async def create(call: Call) -> Response:
        ep = platform.create_endpoint(call.body)
        return JSONResponse(ep.to_json(platform.jobs_url), status_code=201)

    async def list_all(_call: Call) -> Response:
        return JSONResponse(
            {"endpoints": [e.to_json(platform.jobs_url) for e in platform.list_endpoints()]}
        )

    async def get_one(call: Call) -> Response:
        return JSONResponse(endpoint_json(call.params["id"]))

    async def update(call: Call) -> Response:
        platform.update_endpoint(call.params["id"], call.body)
        return JSONResponse(endpoint_json(call.params["id"]))

    async def delete(call: Call) -> Response:
        platform.delete_endpoint(call.params["id"])
        return Response(status_code=204)

    async def workers(call: Call) -> Response:
        platform.tick()
        return JSONResponse(platform.workers_view(call.params["id"]))

    async def releases(call: Call) -> Response:
        platform.tick()
        return JSONResponse(platform.releases_view(call.params["id"]))

    async def gpus(call: Call) -> Response:
        return JSONResponse({"gpus": gpu_catalogue(platform, dict(call.request.query_params))})

    async def billing(call: Call) -> Response:
        platform.tick()
        return JSONResponse(platform.billing_view(dict(call.request.query_params)))

    table = [
        ("POST", "/v2/serverless", create),
        ("GET", "/v2/serverless", list_all),
        ("GET", "/v2/serverless/{id}", get_one),
        ("PATCH", "/v2/serverless/{id}", update),
        ("DELETE", "/v2/serverless/{id}", delete),
        ("GET", "/v2/serverless/{id}/workers", workers),
        ("GET", "/v2/serverless/{id}/releases", releases),
        ("GET", "/v2/catalog/gpus", gpus),
        ("GET", "/v2/billing/serverless", billing),
    ]
    return [surface.route(m, t, h, auth=auth, spec=True) for m, t, h in table]


def gpu_catalogue(platform: RunPodPlatform, query: dict[str, str]) -> list[dict[str, Any]]:
    """`GET /v2/catalog/gpus`, with `include=AVAILABILITY&product=...` from the pools' capacity."""
    include = query.get("include")
    product = query.get("product")
    if include and not product:
        raise Problem(400, "product is required with include=AVAILABILITY")
    if product and not include:
        raise Problem(400, "product is valid only with include=AVAILABILITY")
    capacity = platform.capacity_view()
    rows = []
    for gpu in catalog.GPUS:
        row = gpu.to_json()
        if include:
            pool = capacity.get(gpu.pool) if gpu.pool else None
            free = pool is not None and (
                pool["capacity"] is None or pool["inUse"] < pool["capacity"]
            )
            row["availability"] = "HIGH" if free else "NONE"
            if free:
                row["dataCenters"] = [
                    {
                        "id": platform.options.data_center,
                        "name": "Ferry sandbox",
                        "availability": "HIGH",
                    }
                ]
        rows.append(row)
    return rows
