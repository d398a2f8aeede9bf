"""RunPod endpoint records and the create/PATCH rules the spec's schema cannot express.

The schema check (`validation`) has already refused unknown fields, wrong types and bad enums
when these functions run; what is left are RunPod's semantic rules, each answered 400 with a
sentence naming the field: exactly one of `gpu`/`cpu`; pools must be catalogue pools;
`excludedTypes` must be GPU types inside the listed pools and leave at least one; a non-empty
`allowedCudaVersions` excludes `minCudaVersion`; `idleTimeout` is refused under the
`REQUEST_COUNT` scaler; `workers.min <= workers.max`. PATCH is partial; `env` replaces the
whole env; `gpu.pools` without `excludedTypes` clears the exclusions; container changes
(image, env, args, ports, disk, registry) roll a new release. The sandbox models GPU `QUEUE`
and `LOAD_BALANCER` endpoints; CPU endpoints and templates are refused with a sandbox message.
Used by `platform`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from ferry.sandbox.clock import rfc3339
from ferry.sandbox.http import Problem
from ferry.sandbox.runpod import catalog

# Spec defaults (CreateEndpointRequest): workers 0 / 3 / 10 s, timeout 300000 ms, flashboot OFF.
DEFAULT_WORKERS_MIN = 0
DEFAULT_WORKERS_MAX = 3
DEFAULT_IDLE_TIMEOUT_S = 10
DEFAULT_TIMEOUT_MS = 300_000

# Container settings whose change rolls a release, and the names RunPod's release diffs use.
CONTAINER_FIELDS = {
    "image": "template.imageName",
    "env": "template.env",
    "args": "template.dockerArgs",
    "ports": "template.ports",
    "disk": "template.containerDiskInGb",
    "registry": "template.containerRegistryAuthId",
}


@dataclass
class GpuSelection:
    """`gpu`: pools, GPUs per worker, excluded types and CUDA constraints."""

    pools: list[str]
    count: int = 1
    excluded: list[str] = field(default_factory=list)
    allowed_cuda: list[str] = field(default_factory=list)
    min_cuda: str | None = None

    def eligible_types(self) -> list[str]:
        """GPU type ids workers may run on: the pools' types minus the exclusions."""
        return [t for t in catalog.types_in_pools(self.pools) if t not in self.excluded]

    def to_json(self) -> dict[str, Any]:
        """The spec's `EndpointGpuConfig`."""
        body: dict[str, Any] = {
            "pools": list(self.pools),
            "count": self.count,
            "allowedCudaVersions": list(self.allowed_cuda),
            "minCudaVersion": self.min_cuda,
        }
        if self.excluded:
            body["excludedTypes"] = list(self.excluded)
        return body


@dataclass
class Release:
    """One configuration version of an endpoint and what changed in it."""

    id: str
    version: int
    created_at: float
    diff: list[dict[str, Any]]


@dataclass
class Endpoint:
    """One serverless endpoint as the fake stores it."""

    id: str
    name: str
    type: str
    gpu: GpuSelection
    scaling: dict[str, Any]
    workers_min: int
    workers_max: int
    idle_timeout: int | None
    created_at: float
    image: str | None = None
    args: str = ""
    disk: int | None = None
    ports: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    registry: str | None = None
    data_center_ids: list[str] = field(default_factory=list)
    network_volumes: list[str] = field(default_factory=list)
    timeout_ms: int = DEFAULT_TIMEOUT_MS
    flashboot: str = "OFF"
    version: int = 1
    releases: list[Release] = field(default_factory=list)

    @property
    def scaler(self) -> str:
        """`QUEUE_DELAY` or `REQUEST_COUNT`."""
        return str(self.scaling["type"])

    def container(self) -> dict[str, Any]:
        """The container settings, keyed by body field name (for release diffs)."""
        return {
            "image": self.image,
            "env": dict(self.env),
            "args": self.args,
            "ports": list(self.ports),
            "disk": self.disk,
            "registry": self.registry,
        }

    def request_urls(self, jobs_url: str) -> dict[str, str]:
        """`requestUrls` for this endpoint's type, on the fake's job plane."""
        base = f"{jobs_url}/v2/{self.id}"
        if self.type == "LOAD_BALANCER":
            return {"base": base, "health": f"{base}/ping"}
        return {
            "run": f"{base}/run",
            "runSync": f"{base}/runsync",
            "status": f"{base}/status/{{job_id}}",
            "stream": f"{base}/stream/{{job_id}}",
            "cancel": f"{base}/cancel/{{job_id}}",
            "retry": f"{base}/retry/{{job_id}}",
            "purgeQueue": f"{base}/purge-queue",
            "health": f"{base}/health",
        }

    def to_json(self, jobs_url: str) -> dict[str, Any]:
        """The spec's `Endpoint`."""
        workers: dict[str, Any] = {"min": self.workers_min, "max": self.workers_max}
        if self.idle_timeout is not None:
            workers["idleTimeout"] = self.idle_timeout
        body: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "type": self.type,
            "requestUrls": self.request_urls(jobs_url),
            "image": self.image or "",
            "args": self.args,
            "ports": list(self.ports),
            "env": dict(self.env),
            "registry": self.registry,
            "gpu": self.gpu.to_json(),
            "workers": workers,
            "scaling": copy.deepcopy(self.scaling),
            "dataCenterIds": list(self.data_center_ids),
            "networkVolumes": list(self.network_volumes),
            "timeout": self.timeout_ms,
            "flashboot": self.flashboot,
            "createdAt": rfc3339(self.created_at),
        }
        if self.disk is not None:
            body["disk"] = self.disk
        return body


def create(body: dict[str, Any], *, endpoint_id: str, release_id: str, now: float) -> Endpoint:
    """A new endpoint from a schema-valid create body; raises Problem(400/404) on RunPod's rules."""
    _refuse_unmodelled(body)
    if "gpu" not in body:
        raise Problem(400, "exactly one of gpu or cpu is required; neither was given")
    gpu = _gpu_selection(body["gpu"], current=None)
    scaling = dict(body["scaling"])
    workers = body.get("workers") or {}
    idle: int | None = workers.get("idleTimeout")
    if scaling["type"] == "REQUEST_COUNT":
        if idle is not None:
            raise _idle_under_request_count()
    elif idle is None:
        idle = DEFAULT_IDLE_TIMEOUT_S
    ep = Endpoint(
        id=endpoint_id,
        name=body["name"],
        type=body["type"],
        gpu=gpu,
        scaling=scaling,
        workers_min=workers.get("min", DEFAULT_WORKERS_MIN),
        workers_max=workers.get("max", DEFAULT_WORKERS_MAX),
        idle_timeout=idle,
        created_at=now,
        image=body.get("image"),
        args=body.get("args", ""),
        disk=body.get("disk"),
        ports=list(body.get("ports", [])),
        env=dict(body.get("env", {})),
        registry=body.get("registry"),
        data_center_ids=list(body.get("dataCenterIds", [])),
        network_volumes=list(body.get("networkVolumes", [])),
        timeout_ms=body.get("timeout", DEFAULT_TIMEOUT_MS),
        flashboot=body.get("flashboot", "OFF"),
    )
    _check_workers(ep.workers_min, ep.workers_max)
    ep.releases.append(Release(id=release_id, version=1, created_at=now, diff=[]))
    return ep


def patch(ep: Endpoint, body: dict[str, Any], *, release_id: str, now: float) -> bool:
    """Apply a schema-valid PATCH body in place; True when it rolled a new release.

    All checks run before anything changes, so a refused PATCH leaves the endpoint as it was.
    """
    _refuse_unmodelled(body)
    gpu = _gpu_selection(body["gpu"], current=ep.gpu) if "gpu" in body else ep.gpu
    scaling = dict(body["scaling"]) if "scaling" in body else ep.scaling
    workers = body.get("workers") or {}
    idle = workers.get("idleTimeout", ep.idle_timeout)
    if scaling["type"] == "REQUEST_COUNT":
        if "idleTimeout" in workers:
            raise _idle_under_request_count()
        idle = None
    elif idle is None:
        idle = DEFAULT_IDLE_TIMEOUT_S
    wmin = workers.get("min", ep.workers_min)
    wmax = workers.get("max", ep.workers_max)
    _check_workers(wmin, wmax)

    before = ep.container()
    ep.gpu, ep.scaling, ep.idle_timeout = gpu, scaling, idle
    ep.workers_min, ep.workers_max = wmin, wmax
    simple = {
        "name": "name",
        "image": "image",
        "args": "args",
        "disk": "disk",
        "registry": "registry",
        "timeout": "timeout_ms",
        "flashboot": "flashboot",
    }
    for key, attr in simple.items():
        if key in body:
            setattr(ep, attr, body[key])
    if "ports" in body:
        ep.ports = list(body["ports"])
    if "env" in body:
        ep.env = dict(body["env"])  # PATCH env replaces the whole env
    if "dataCenterIds" in body:
        ep.data_center_ids = list(body["dataCenterIds"])
    if "networkVolumes" in body:
        ep.network_volumes = list(body["networkVolumes"])

    after = ep.container()
    diff = [
        {"field": CONTAINER_FIELDS[k], "old": before[k], "new": after[k]}
        for k in CONTAINER_FIELDS
        if before[k] != after[k]
    ]
    if not diff:
        return False
    ep.version += 1
    ep.releases.append(Release(id=release_id, version=ep.version, created_at=now, diff=diff))
    return True


def _refuse_unmodelled(body: dict[str, Any]) -> None:
    if "cpu" in body:
        if "gpu" in body:
            raise Problem(400, "exactly one of gpu or cpu is allowed; both were given")
        raise Problem(
            400,
            "cpu: the Ferry sandbox models GPU endpoints only; CPU endpoints are not simulated",
        )
    if "templateId" in body:
        raise Problem(
            404, f"template {body['templateId']!r} not found: the Ferry sandbox serves no templates"
        )


def _gpu_selection(gpu: dict[str, Any], current: GpuSelection | None) -> GpuSelection:
    """The selection a create's or PATCH's `gpu` block results in (checked)."""
    if current is None or "pools" in gpu:
        pools = list(dict.fromkeys(gpu["pools"]))
        unknown = [p for p in pools if p not in catalog.POOLS]
        if unknown:
            raise Problem(
                400,
                f"gpu.pools: {', '.join(unknown)} is not a serverless GPU pool; "
                f"pools are {', '.join(catalog.POOLS)} (GET /v2/catalog/gpus)",
            )
        # Supplying pools replaces the whole selection: exclusions not restated are cleared.
        excluded = list(dict.fromkeys(t.strip() for t in gpu.get("excludedTypes", [])))
        in_pools = catalog.types_in_pools(pools)
        outside = [t for t in excluded if t not in in_pools]
        if outside:
            raise Problem(
                400,
                f"gpu.excludedTypes: {', '.join(repr(t) for t in outside)} is not a GPU type in "
                f"the pools {', '.join(pools)}",
            )
        if in_pools and all(t in excluded for t in in_pools):
            raise Problem(400, "gpu.excludedTypes excludes every GPU type in gpu.pools")
    else:
        pools, excluded = list(current.pools), list(current.excluded)
    allowed = list(gpu.get("allowedCudaVersions", current.allowed_cuda if current else []))
    min_cuda = gpu.get("minCudaVersion", current.min_cuda if current else None)
    if min_cuda == "":
        min_cuda = None  # PATCH: an explicit "" clears the floor
    if allowed and min_cuda is not None:
        raise Problem(400, "gpu.allowedCudaVersions and gpu.minCudaVersion are mutually exclusive")
    count = gpu.get("count", current.count if current else 1)
    return GpuSelection(
        pools=pools, count=count, excluded=excluded, allowed_cuda=allowed, min_cuda=min_cuda
    )


def _check_workers(wmin: int, wmax: int) -> None:
    if wmin > wmax:
        raise Problem(400, f"workers.min ({wmin}) must not exceed workers.max ({wmax})")


def _idle_under_request_count() -> Problem:
    return Problem(
        400,
        "workers.idleTimeout does not apply to the REQUEST_COUNT scaler on a queue endpoint; "
        "remove it or use QUEUE_DELAY",
    )
