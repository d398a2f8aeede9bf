"""RunPod serverless endpoints through RunPod's REST API v2 (Ferry's own HTTP client).

The external resource is a `QUEUE` endpoint (D2) running Ferry's model-server image
in its RunPod worker mode; the external name is the id RunPod assigns. Names are not
unique and there is no labels field or idempotency key, so every endpoint Ferry
makes carries the Kubernetes endpoint's UID in its env (`FERRY_ENDPOINT_UID`,
restated on every env PATCH) and is found again by listing and matching that tag.

Pure mappers first (`desired`, `diff`, `observation`), the client below. Calls per
endpoint per poll (D4): the endpoint and its workers; the GPU catalogue is read once
per ProviderConfig per poll and shared. Facts: ../shared/design/providers.md.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from ferry.api.v1alpha1 import platforms
from ferry.logic import defaults, gpus, naming, serverenv
from ferry.providers import http
from ferry.providers.base import (
    Backend,
    ClientConfig,
    Observation,
    PermanentProviderError,
    Problem,
    Target,
    TransientProviderError,
)
from ferry.providers.http import PlatformClient

NAME = "runpod"
PLATFORM = "RunPod"
DEFAULT_API = platforms.PLATFORM_BASE_URLS[NAME]
DEFAULT_JOBS = platforms.RUNPOD_INFERENCE_BASE_URL

Catalogue = list[dict[str, Any]]
#: Worker states whose model is loaded (the handler loads it before polling, D17).
WARM = frozenset({"RUNNING", "IDLE"})


# --- pure mapping ----------------------------------------------------------------------


def endpoint_name(target: Target) -> str:
    """A recognisable RunPod name (not a handle: RunPod names are not unique)."""
    return naming.platform_name(target.namespace, target.name)


def env_for(target: Target) -> dict[str, str]:
    """The worker env, tagged with the endpoint's UID: how a lost create is found again."""
    return serverenv.platform_env(target.endpoint.spec, NAME, target.uid, target.env)


def gpu_selection(catalogue: Catalogue, wanted: list[str], count: int) -> dict[str, Any]:
    """`gpu` for the create body (D3): the pools holding the wanted cards, and every
    other card of those pools excluded, so asking for L4 never lands on its pool-mates.

    Raises PermanentProviderError naming what the live catalogue offers when a wanted
    card is in no serverless pool.
    """
    pool_of = {g["id"]: g.get("pool") for g in catalogue}
    pools: set[str] = set()
    for gpu in wanted:
        found = {str(pool_of[i]) for i in gpus.runpod_gpu_type_ids([gpu]) if pool_of.get(i)}
        if not found:
            offered = sorted({g["name"] for g in catalogue if g.get("pool")})
            raise PermanentProviderError(
                f"RunPod's catalogue has no serverless pool with {gpu} (spec.gpu); it offers"
                f" {', '.join(offered)}",
                reason="GPUNotOffered",
            )
        pools |= found
    ids = set(gpus.runpod_gpu_type_ids(wanted))
    excluded = sorted(g["id"] for g in catalogue if g.get("pool") in pools and g["id"] not in ids)
    return {"pools": sorted(pools), "count": count, "excludedTypes": excluded}


def desired(target: Target, catalogue: Catalogue, regions: tuple[str, ...]) -> dict[str, Any]:
    """The create body for `target` (and the state every observe compares against)."""
    spec = target.endpoint.spec
    scaler = defaults.runpod_scaling(spec)
    workers: dict[str, int] = {
        "min": spec.scaling.min_replicas,
        "max": spec.scaling.max_replicas,
    }
    if scaler.idle_timeout_seconds is not None:
        workers["idleTimeout"] = scaler.idle_timeout_seconds
    image = defaults.server_image(spec)
    body: dict[str, Any] = {
        "name": endpoint_name(target),
        "type": "QUEUE",
        "image": image,
        "env": env_for(target),
        "gpu": gpu_selection(
            catalogue, [spec.gpu.type, *defaults.gpu_fallback(spec)], spec.gpu.count
        ),
        "workers": workers,
        "scaling": scaler.scaling_body(),
        "dataCenterIds": list(regions),
    }
    return body


def _same(want: Any, have: Any, as_set: bool = False) -> bool:
    if as_set and isinstance(want, list) and isinstance(have, list):
        return sorted(want) == sorted(have)
    return bool(want == have)


def diff(want: Mapping[str, Any], have: Mapping[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """(changed field paths, the PATCH body that sets exactly those) from create bodies.

    RunPod's PATCH quirks shape the body: `env` replaces the whole env (so it is sent
    whole, tag included), and `gpu.pools` without `excludedTypes` clears the
    exclusions (so the gpu selection is sent whole).
    """
    changed: list[str] = []
    patch: dict[str, Any] = {}
    for key in ("name", "image", "env"):
        if not _same(want[key], have.get(key)):
            changed.append(key if key != "env" else "env (values not shown)")
            patch[key] = want[key]
    have_gpu = have.get("gpu") or {}
    gpu_diff = [
        f"gpu.{k}"
        for k in ("pools", "count", "excludedTypes")
        if not _same(want["gpu"][k], have_gpu.get(k, [] if k != "count" else None), as_set=True)
    ]
    if gpu_diff:
        changed += gpu_diff
        patch["gpu"] = want["gpu"]
    have_workers = have.get("workers") or {}
    worker_diff = [
        f"workers.{k}" for k in want["workers"] if want["workers"][k] != have_workers.get(k)
    ]
    if worker_diff:
        changed += worker_diff
        patch["workers"] = want["workers"]
    if not _same(want["scaling"], have.get("scaling")):
        changed.append("scaling")
        patch["scaling"] = want["scaling"]
        # A scaler switch may change whether an idle timeout is allowed.
        patch["workers"] = want["workers"]
    if not _same(want["dataCenterIds"], have.get("dataCenterIds") or [], as_set=True):
        changed.append("dataCenterIds")
        patch["dataCenterIds"] = want["dataCenterIds"]
    return changed, patch


def observation(
    endpoint: Mapping[str, Any],
    workers: Mapping[str, Any],
    want: Mapping[str, Any],
    jobs_url: str,
) -> Observation:
    """What Ferry reports of a RunPod endpoint.

    Ready counts warm workers of the current release only (running or idle: the model
    is loaded, D17); desired is the minimum Ferry keeps warm. Workers of an older
    release (`isStale`) mean a rollout is still in progress. Throttled workers are a
    capacity wait.
    """
    summary = workers.get("summary") or {}
    rows = workers.get("workers") or []
    warm = sum(1 for w in rows if w.get("status") in WARM and not w.get("isStale"))
    stale = sum(1 for w in rows if w.get("isStale"))
    throttled = int(summary.get("throttled", 0))
    minimum = int((endpoint.get("workers") or {}).get("min", 0))
    changed, _ = diff(want, endpoint)
    problem = None
    if throttled and warm < max(minimum, 1):
        pools = ", ".join((endpoint.get("gpu") or {}).get("pools") or [])
        problem = Problem(
            "WaitingForCapacity",
            f"{throttled} RunPod worker(s) throttled: no capacity in GPU pool(s) {pools}",
            stalled=False,
        )
    base = f"{jobs_url}/v2/{endpoint['id']}"
    return Observation(
        exists=True,
        up_to_date=not changed,
        external_name=str(endpoint["id"]),
        url=base,
        openai_base_url=f"{base}/openai/v1",
        desired_replicas=minimum,
        ready_replicas=warm,
        progressing=stale > 0 or (int(summary.get("initializing", 0)) > 0 and warm < minimum),
        diff=changed,
        problem=problem,
    )


def tagged(endpoints: list[dict[str, Any]], uid: str) -> dict[str, Any] | None:
    """The endpoint whose env carries `uid` as Ferry's tag (the oldest, if twins)."""
    mine = [e for e in endpoints if (e.get("env") or {}).get(platforms.ENV_ENDPOINT_UID) == uid]
    return min(mine, key=lambda e: str(e.get("createdAt", ""))) if mine else None


# --- the client ---------------------------------------------------------------------------


class RunPodProvider:
    """Serverless endpoints on one RunPod account (one ProviderConfig)."""

    name = NAME
    can_search = True

    def __init__(
        self,
        config: ClientConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._api = config.base_url or DEFAULT_API
        self._jobs = config.inference_base_url or DEFAULT_JOBS
        token = config.credentials.get("token") or ""
        self._http = PlatformClient(
            config, PLATFORM, headers={"Authorization": f"Bearer {token}"}, transport=transport
        )
        self._monotonic = monotonic
        self._catalogue: tuple[float, Catalogue] | None = None
        # One read when the catalogue goes stale, however many reconciles need it then.
        self._catalogue_lock = asyncio.Lock()
        # The endpoint as the last observe read it, so an update sends a PATCH of
        # what differs without reading it again.
        self._seen: dict[str, dict[str, Any]] = {}

    def external_name_for(self, target: Target) -> str | None:
        return None  # RunPod assigns the id.

    async def observe(self, target: Target, external_name: str | None) -> Observation:
        if external_name is not None:
            response = await self._http.request(
                "GET",
                f"{self._api}/v2/serverless/{external_name}",
                what=f"read endpoint {external_name}",
                ok_statuses=frozenset({404}),
            )
            endpoint = (
                self._json(response, "read an endpoint") if response.status_code != 404 else None
            )
        else:
            response = await self._http.request(
                "GET", f"{self._api}/v2/serverless", what="list endpoints"
            )
            listed = self._json(response, "list endpoints").get("endpoints") or []
            endpoint = tagged(listed, target.uid)
        if endpoint is None:
            return Observation.absent()
        self._seen[str(endpoint["id"])] = endpoint
        workers = await self._http.request(
            "GET",
            f"{self._api}/v2/serverless/{endpoint['id']}/workers",
            what=f"read the workers of endpoint {endpoint['id']}",
        )
        want = desired(target, await self.catalogue(), self._config.regions)
        return observation(endpoint, self._json(workers, "list workers"), want, self._jobs)

    async def create(self, target: Target, external_name: str | None) -> str:
        body = desired(target, await self.catalogue(), self._config.regions)
        response = await self._http.request(
            "POST", f"{self._api}/v2/serverless", json=body, what=f"create endpoint {body['name']}"
        )
        made = self._json(response, "create an endpoint").get("id")
        if not made:
            raise TransientProviderError(
                "RunPod answered the create without an endpoint id",
                reason="UnexpectedAnswer",
                maybe_applied=True,
            )
        return str(made)

    async def update(self, target: Target, observation: Observation) -> None:
        rid = observation.external_name or ""
        current = self._seen.pop(rid, None)
        if current is None:
            read = await self._http.request(
                "GET", f"{self._api}/v2/serverless/{rid}", what=f"read endpoint {rid}"
            )
            current = self._json(read, "read an endpoint")
        _, patch = diff(desired(target, await self.catalogue(), self._config.regions), current)
        if patch:
            await self._http.request(
                "PATCH",
                f"{self._api}/v2/serverless/{rid}",
                json=patch,
                what=f"update endpoint {rid}",
            )

    async def delete(self, target: Target, external_name: str) -> None:
        await self._http.request(
            "DELETE",
            f"{self._api}/v2/serverless/{external_name}",
            what=f"delete endpoint {external_name}",
            ok_statuses=frozenset({404}),
        )
        self._seen.pop(external_name, None)

    async def orphan(self, target: Target, external_name: str) -> None:
        """Nothing to release: the endpoint keeps running under its own id."""

    async def close(self) -> None:
        await self._http.close()

    @staticmethod
    def _json(response: httpx.Response, what: str) -> dict[str, Any]:
        return http.json_object(response, PLATFORM, what)

    async def catalogue(self) -> Catalogue:
        """`/v2/catalog/gpus`, read at most once per poll interval for this account (D3)."""
        async with self._catalogue_lock:
            now = self._monotonic()
            held = self._catalogue
            if held is None or now - held[0] > self._config.shared_ttl:
                response = await self._http.request(
                    "GET", f"{self._api}/v2/catalog/gpus", what="read the GPU catalogue"
                )
                gpus = self._json(response, "read the GPU catalogue").get("gpus") or []
                held = (now, list(gpus))
                self._catalogue = held
            return held[1]


BACKEND = Backend(
    NAME,
    connect=RunPodProvider,
    required_keys=("token",),
    default_base_url=DEFAULT_API,
    default_inference_base_url=DEFAULT_JOBS,
)
