"""The RunPod fake's state machine: endpoints, releases, workers, jobs and scaling, on the clock.

Everything here is synchronous and reads time only from the injected `SandboxClock`, so unit
tests drive it by stepping the clock and calling `tick()`; the HTTP layers (`management`,
`jobplane`) call into it and wait on `on_change` notifications. What it models:

- Workers: THROTTLED until a listed pool has capacity (`set_capacity`; ample by default) ->
  INITIALIZING for the cold boot (`boot_seconds` on the clock; a worker backed by a real
  process also waits for the process's first job poll, i.e. its model is loaded, D17) ->
  RUNNING while it holds jobs / IDLE -> gone after the endpoint's `idleTimeout` of idleness,
  never below `workers.min`. A process that dies leaves its worker UNHEALTHY for a while.
- Scaling: QUEUE_DELAY starts a worker at once when none exists, then one more each time the
  oldest queued job has waited over `queueDelay` (at most one per `queueDelay`); REQUEST_COUNT
  keeps ceil((queued + in progress) / requestCount) workers and retires idle ones above that.
  Never above `workers.max`; lowering `max` retires the surplus (busy ones after their jobs).
- Releases: a container change makes the running workers stale; stale idle workers are
  replaced, busy ones finish their jobs first.
- Jobs: IN_QUEUE until a ready worker takes one (`delayTime` includes the cold start), then
  IN_PROGRESS -> COMPLETED | FAILED | CANCELLED | TIMED_OUT (the endpoint's `timeout`, ms).
- Real inference (D7): with inference on, an endpoint with queued jobs gets one worker backed
  by a real model-server process (`ProcessBackend`), a new worker (or one replacing a
  simulated one when at `workers.max`); only that worker runs the endpoint's jobs. At most
  the backend's limit of processes exist; the least recently used idle one is demoted to a
  simulated worker to make room. With inference off every worker is simulated: a job runs
  for `sim_job_seconds` and then fails with a message saying no model ran.
- Billing: each worker from placement to gone, at its pool's price x gpu count (`billing`).
"""

from __future__ import annotations

import math
import secrets
import string
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ferry.sandbox.clock import SandboxClock, rfc3339, step_through
from ferry.sandbox.http import Problem
from ferry.sandbox.runpod import billing, catalog, endpoints
from ferry.sandbox.runpod.endpoints import Endpoint
from ferry.sandbox.runpod.jobs import INFERENCE_OFF_MESSAGE, JOB_RETENTION_S, Job
from ferry.sandbox.runpod.workers import ProcessBackend, Worker


def new_id(length: int = 14) -> str:
    """A RunPod-looking id: lowercase letters and digits."""
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


@dataclass
class Options:
    """Knobs of the fake (CLI flags)."""

    boot_seconds: float = 3.0
    sim_job_seconds: float = 1.0
    inference: bool = True
    unhealthy_linger_seconds: float = 30.0
    data_center: str = "SANDBOX-1"


class RunPodPlatform:
    """All RunPod state of one sandbox."""

    def __init__(
        self,
        clock: SandboxClock,
        options: Options | None = None,
        processes: ProcessBackend | None = None,
        *,
        jobs_url: str = "http://127.0.0.1:0",
    ) -> None:
        self.clock = clock
        self.options = options or Options()
        self.processes = processes
        self.jobs_url = jobs_url
        self.endpoints: dict[str, Endpoint] = {}
        self.workers: dict[str, Worker] = {}
        self.jobs: dict[str, Job] = {}
        self.queues: dict[str, deque[str]] = {}
        self.capacity: dict[str, int | None] = {}
        self.segments: dict[str, billing.Segment] = {}
        self.retired: dict[str, Worker] = {}
        self._by_endpoint: dict[str, dict[str, Worker]] = {}
        self._running: dict[str, Job] = {}
        self._finished: deque[tuple[float, str]] = deque()
        self._last_scale_up: dict[str, float] = {}
        self._listeners: list[Callable[[], None]] = []
        if self.options.inference and processes is None:
            raise ValueError("inference on needs a process backend")

    # ---- notifications -------------------------------------------------------------------

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call `listener` whenever state may have changed (long-polls re-check)."""
        self._listeners.append(listener)

    def _changed(self) -> None:
        for listener in self._listeners:
            listener()

    def reset(self) -> None:
        """Forget every endpoint, worker, job, billing record and capacity limit."""
        for worker in list(self.workers.values()):
            if worker.backed and self.processes is not None:
                self.processes.terminate(worker.id)
        self.endpoints.clear()
        self.workers.clear()
        self.jobs.clear()
        self.queues.clear()
        self.capacity.clear()
        self.segments.clear()
        self.retired.clear()
        self._by_endpoint.clear()
        self._running.clear()
        self._finished.clear()
        self._last_scale_up.clear()
        self._changed()

    def stop_workers(self) -> None:
        """Every worker goes (their processes are told to stop); used at shutdown."""
        now = self.clock.now()
        for worker in list(self.workers.values()):
            self._gone(worker, now)
        self._changed()

    # ---- management API --------------------------------------------------------------------

    def create_endpoint(self, body: dict[str, Any]) -> Endpoint:
        """`POST /v2/serverless` with a schema-valid body; raises Problem on RunPod's rules."""
        ep = endpoints.create(
            body, endpoint_id=new_id(), release_id=new_id(8), now=self.clock.now()
        )
        self.endpoints[ep.id] = ep
        self.queues[ep.id] = deque()
        self.tick()
        return ep

    def endpoint(self, endpoint_id: str) -> Endpoint:
        """The endpoint, or Problem(404)."""
        ep = self.endpoints.get(endpoint_id)
        if ep is None:
            raise Problem(404, f"serverless endpoint {endpoint_id!r} not found")
        return ep

    def update_endpoint(self, endpoint_id: str, body: dict[str, Any]) -> Endpoint:
        """`PATCH /v2/serverless/{id}` with a schema-valid body."""
        ep = self.endpoint(endpoint_id)
        endpoints.patch(ep, body, release_id=new_id(8), now=self.clock.now())
        self.tick()
        return ep

    def delete_endpoint(self, endpoint_id: str) -> None:
        """`DELETE /v2/serverless/{id}`: workers go, queued and running jobs are cancelled."""
        self.endpoint(endpoint_id)
        now = self.clock.now()
        for worker in self._workers_of(endpoint_id):
            self._gone(worker, now)
        for job_id in list(self.queues.pop(endpoint_id, ())):
            self._finish(self.jobs[job_id], "CANCELLED", now)
        for job in list(self._running.values()):
            if job.endpoint_id == endpoint_id:
                self._finish(job, "CANCELLED", now)
        del self.endpoints[endpoint_id]
        self._by_endpoint.pop(endpoint_id, None)
        self._changed()

    def list_endpoints(self) -> list[Endpoint]:
        """Every live endpoint, oldest first."""
        return sorted(self.endpoints.values(), key=lambda e: e.created_at)

    def workers_view(self, endpoint_id: str) -> dict[str, Any]:
        """The spec's `ListEndpointWorkersResponse`."""
        ep = self.endpoint(endpoint_id)
        now = self.clock.now()
        summary = {"running": 0, "idle": 0, "initializing": 0, "throttled": 0, "unhealthy": 0}
        rows = []
        for w in self._workers_of(endpoint_id):
            status = w.status(now)
            summary[status.lower()] += 1
            rows.append(
                {
                    "id": w.id,
                    "status": status,
                    "isStale": w.version != ep.version,
                    "version": w.version,
                    "gpuCount": w.gpu_count,
                    "image": w.image,
                    "uptimeSeconds": int(now - w.placed_at) if w.placed_at is not None else None,
                    "gpuTypeId": w.gpu_type,
                    "dataCenterId": w.data_center,
                    "startedAt": rfc3339(w.placed_at) if w.placed_at is not None else None,
                }
            )
        return {
            "workers": rows,
            "summary": {**summary, "total": len(rows)},
            "endpointVersion": ep.version,
        }

    def releases_view(self, endpoint_id: str) -> dict[str, Any]:
        """The spec's `ListEndpointReleasesResponse`, newest release first."""
        ep = self.endpoint(endpoint_id)
        workers = self._workers_of(endpoint_id)
        on_latest = sum(1 for w in workers if w.version == ep.version)
        return {
            "endpointVersion": ep.version,
            "rollout": {
                "inProgress": on_latest < len(workers),
                "workersOnLatest": on_latest,
                "workersTotal": len(workers),
                "percentOnLatest": (on_latest * 100 // len(workers)) if workers else 0,
            },
            "releases": [
                {
                    "id": r.id,
                    "version": r.version,
                    "source": "MANUAL",
                    "buildId": None,
                    "createdByUserId": None,
                    "workerCount": sum(1 for w in workers if w.version == r.version),
                    "createdAt": rfc3339(r.created_at),
                    "diff": r.diff,
                }
                for r in reversed(ep.releases)
            ],
        }

    def billing_view(self, query: dict[str, str]) -> dict[str, Any]:
        """The spec's `ListServerlessBillingResponse` for `query`."""
        return billing.records(list(self.segments.values()), self.clock.now(), query)

    def billed_seconds(self) -> dict[str, Any]:
        """Admin view: per endpoint, billed seconds `{boot, run, idle, total}`, GPU-seconds, USD."""
        now = self.clock.now()
        out: dict[str, dict[str, Any]] = {}
        for worker in [*self.retired.values(), *self.workers.values()]:
            secs = worker.seconds(now, self.options.boot_seconds)
            row = out.setdefault(
                worker.endpoint_id,
                {
                    "boot": 0.0,
                    "run": 0.0,
                    "idle": 0.0,
                    "total": 0.0,
                    "gpuSeconds": 0.0,
                    "usd": 0.0,
                    "workers": 0,
                },
            )
            for key in ("boot", "run", "idle", "total"):
                row[key] += secs[key]
            row["gpuSeconds"] += secs["total"] * worker.gpu_count
            row["usd"] += secs["total"] * worker.usd_per_second
            row["workers"] += 1
        return {
            "endpoints": {
                k: {kk: (round(vv, 6) if isinstance(vv, float) else vv) for kk, vv in v.items()}
                for k, v in out.items()
            },
            "catalogue": {"date": catalog.CATALOGUE_DATE, "source": catalog.CATALOGUE_SOURCE},
        }

    # ---- capacity ------------------------------------------------------------------------

    def set_capacity(self, pool: str, workers: int | None) -> None:
        """Limit `pool` to `workers` placed workers at once (None: ample). Raises Problem(400)."""
        if pool not in catalog.POOLS:
            raise Problem(400, f"unknown pool {pool!r}; pools are {', '.join(catalog.POOLS)}")
        if workers is None:
            self.capacity.pop(pool, None)
        else:
            self.capacity[pool] = workers
        self.tick()

    def capacity_view(self) -> dict[str, Any]:
        """Admin view: per pool `{capacity (null = ample), inUse}`."""
        used = self._pool_use()
        return {
            p: {"capacity": self.capacity.get(p), "inUse": used.get(p, 0)} for p in catalog.POOLS
        }

    def _pool_use(self) -> dict[str, int]:
        used: dict[str, int] = {}
        for w in self.workers.values():
            if w.pool is not None:
                used[w.pool] = used.get(w.pool, 0) + 1
        return used

    # ---- job plane -----------------------------------------------------------------------

    def submit(self, endpoint_id: str, job_input: Any, *, job_id: str | None = None) -> Job:
        """Queue a job (`/run`, `/runsync`, the OpenAI route)."""
        ep = self.endpoint(endpoint_id)
        if ep.type != "QUEUE":
            raise Problem(
                400, f"endpoint {endpoint_id} is a load-balancing endpoint: it takes no queued jobs"
            )
        job = Job(
            id=job_id or f"{uuid.uuid4()}-u1",
            endpoint_id=endpoint_id,
            input=job_input,
            submitted_at=self.clock.now(),
        )
        self.jobs[job.id] = job
        self.queues[endpoint_id].append(job.id)
        self.tick()
        return job

    def job(self, endpoint_id: str, job_id: str) -> Job:
        """A job of this endpoint, or Problem(404)."""
        job = self.jobs.get(job_id)
        if job is None or job.endpoint_id != endpoint_id:
            raise Problem(404, f"job {job_id!r} not found on endpoint {endpoint_id}")
        return job

    def cancel(self, endpoint_id: str, job_id: str) -> Job:
        """`/cancel/{job}`: a queued job leaves the queue; a running one is told to stop."""
        job = self.job(endpoint_id, job_id)
        if not job.done:
            if job.status == "IN_QUEUE":
                self.queues[endpoint_id].remove(job.id)
            self._finish(job, "CANCELLED", self.clock.now())
            self._changed()
        return job

    def health(self, endpoint_id: str) -> dict[str, Any]:
        """`/health`: job counts by status and worker counts by state."""
        self.endpoint(endpoint_id)
        now = self.clock.now()
        jobs = {"completed": 0, "failed": 0, "inProgress": 0, "inQueue": 0, "retried": 0}
        key = {
            "COMPLETED": "completed",
            "FAILED": "failed",
            "IN_PROGRESS": "inProgress",
            "IN_QUEUE": "inQueue",
        }
        for job in self.jobs.values():
            if job.endpoint_id == endpoint_id and job.status in key:
                jobs[key[job.status]] += 1
        workers = {"idle": 0, "initializing": 0, "running": 0, "throttled": 0, "unhealthy": 0}
        for w in self._workers_of(endpoint_id):
            workers[w.status(now).lower()] += 1
        return {"jobs": jobs, "workers": {**workers, "ready": workers["idle"] + workers["running"]}}

    # ---- worker webhooks (the real RunPod worker loop) -------------------------------------

    def worker(self, endpoint_id: str, worker_id: str) -> Worker | None:
        """A live worker of this endpoint, or None (retired workers get no more jobs)."""
        worker = self.workers.get(worker_id)
        if worker is None or worker.endpoint_id != endpoint_id:
            return None
        return worker

    def take(self, endpoint_id: str, worker_id: str, max_jobs: int) -> list[Job]:
        """A worker's job poll: marks its process ready, hands it up to `max_jobs` jobs."""
        worker = self.worker(endpoint_id, worker_id)
        if worker is None:
            return []
        now = self.clock.now()
        if worker.backed and worker.process_ready_at is None:
            worker.process_ready_at = now  # the handler loads its model before polling (D17)
            self._became_ready(worker, now)
            self._changed()
        if not worker.booted(now) or worker.retiring or worker.unhealthy is not None:
            return []
        taken: list[Job] = []
        queue = self.queues.get(endpoint_id, deque())
        while queue and len(taken) < max_jobs:
            job = self.jobs[queue.popleft()]
            self._start(job, worker, now)
            taken.append(job)
        if taken and self.processes is not None:
            self.processes.touch(worker.id)
        if taken:
            self._changed()
        return taken

    def job_done(self, endpoint_id: str, worker_id: str, job_id: str, payload: Any) -> None:
        """A worker's result: `{"output": ...}` or `{"error": ...}`."""
        job = self.jobs.get(job_id)
        if job is None or job.endpoint_id != endpoint_id or job.worker_id != worker_id or job.done:
            return  # cancelled or timed out meanwhile: the late result is dropped
        now = self.clock.now()
        if isinstance(payload, dict) and payload.get("error") is not None:
            job.error = payload["error"]
            self._finish(job, "FAILED", now)
        else:
            job.output = payload.get("output") if isinstance(payload, dict) else payload
            self._finish(job, "COMPLETED", now)
        self._changed()

    def job_stream(self, endpoint_id: str, worker_id: str, job_id: str, payload: Any) -> None:
        """A worker's partial output (`{"output": part}`) for a streaming handler."""
        job = self.jobs.get(job_id)
        if job is None or job.endpoint_id != endpoint_id or job.worker_id != worker_id or job.done:
            return
        job.stream.append(payload.get("output") if isinstance(payload, dict) else payload)
        self._changed()

    def stop_signals(self, endpoint_id: str, worker_id: str) -> list[str]:
        """Job ids `worker_id` must stop (cancelled or timed out), each handed out once."""
        worker = self.worker(endpoint_id, worker_id)
        if worker is None or not worker.stop_requests:
            return []
        ids, worker.stop_requests = worker.stop_requests, []
        return ids

    def process_exited(self, worker_id: str, code: int, tail: str) -> None:
        """A worker's real process ended on its own: the worker turns UNHEALTHY.

        Its jobs fail with the process's last output; if it never became ready, the jobs
        waiting for it fail too rather than waiting for a model server that cannot start.
        """
        worker = self.workers.get(worker_id)
        if worker is None or worker.unhealthy is not None:
            return
        now = self.clock.now()
        message = (
            f"ferry sandbox: the model-server process of worker {worker_id} exited with code {code}"
            + (f"; its last output:\n{tail}" if tail else "")
        )
        worker.unhealthy, worker.unhealthy_at = message, now
        for job_id in list(worker.jobs):
            job = self.jobs[job_id]
            job.error = message
            self._finish(job, "FAILED", now)
        if worker.process_ready_at is None:
            queue = self.queues.get(worker.endpoint_id, deque())
            while queue:
                job = self.jobs[queue.popleft()]
                job.error = message
                self._finish(job, "FAILED", now)
        self._changed()

    # ---- the clock -----------------------------------------------------------------------

    def tick(self) -> None:
        """Bring every worker and job up to the clock's now (idempotent; call it often)."""
        now = self.clock.now()
        for worker in list(self.workers.values()):
            if (
                worker.unhealthy_at is not None
                and now - worker.unhealthy_at >= self.options.unhealthy_linger_seconds
            ):
                self._gone(worker, now)
            elif (
                worker.ready_at is not None
                and worker.idle_since is None
                and worker.booted(now)
                and not worker.jobs
            ):
                self._became_ready(worker, now)
        self._expire_jobs(now)
        for ep in list(self.endpoints.values()):
            self._scale(ep, now)
        self._place_throttled(now)
        if not self.options.inference:
            self._simulate(now)
        self._changed()

    def advance(self, seconds: float) -> None:
        """Step the clock by `seconds`, stopping at every event inside the step, in order.

        A boot ending, a simulated job finishing, an idle timeout or a queue delay expiring
        inside the step happen at their own time, so one big step ends where the same time
        passing at speed 1 would have.
        """
        step_through(self.clock, seconds, self.next_event, self.tick)

    def next_event(self, now: float) -> float | None:
        """The earliest moment after `now` at which `tick()` would change something."""
        times: list[float] = []
        for w in self.workers.values():
            ep = self.endpoints.get(w.endpoint_id)
            if w.ready_at is not None and w.ready_at > now:
                times.append(w.ready_at)
            if w.unhealthy_at is not None:
                times.append(w.unhealthy_at + self.options.unhealthy_linger_seconds)
            if ep is not None and ep.idle_timeout and w.idle_since is not None and not w.jobs:
                times.append(w.idle_since + ep.idle_timeout)
        for job in self._running.values():
            if job.started_at is None:
                continue
            if not self.options.inference:
                times.append(job.started_at + self.options.sim_job_seconds)
            ep = self.endpoints.get(job.endpoint_id)
            if ep is not None and ep.timeout_ms > 0:
                times.append(job.started_at + ep.timeout_ms / 1000)
        for ep in self.endpoints.values():
            queue = self.queues.get(ep.id)
            if queue and ep.scaler == "QUEUE_DELAY":
                delay = float(ep.scaling["queueDelay"])
                times.append(self.jobs[queue[0]].submitted_at + delay)
                times.append(self._last_scale_up.get(ep.id, now) + delay)
        # Comparisons in the scaler are strict ("waited more than"): step just past the moment.
        later = [t + 1e-6 for t in times if t + 1e-6 > now]
        return min(later) if later else None

    # ---- internals -----------------------------------------------------------------------

    def _workers_of(self, endpoint_id: str) -> list[Worker]:
        """The endpoint's live workers, oldest first."""
        return list(self._by_endpoint.get(endpoint_id, {}).values())

    def _add_worker(self, ep: Endpoint, now: float, *, backed: bool) -> Worker:
        worker = Worker(
            id=new_id(),
            endpoint_id=ep.id,
            version=ep.version,
            image=ep.image,
            gpu_count=ep.gpu.count,
            created_at=now,
            backed=backed,
        )
        self.workers[worker.id] = worker
        self._by_endpoint.setdefault(ep.id, {})[worker.id] = worker
        self._place(worker, ep, now)
        return worker

    def _place(self, worker: Worker, ep: Endpoint, now: float) -> bool:
        """Put a throttled worker on a GPU in a listed pool with room (False: still throttled)."""
        used = self._pool_use()
        eligible = ep.gpu.eligible_types()
        for pool in ep.gpu.pools:
            cap = self.capacity.get(pool)
            types = [t for t in eligible if catalog.BY_ID[t].pool == pool]
            if not types or (cap is not None and used.get(pool, 0) >= cap):
                continue
            price = catalog.price_per_hour(pool) or 0.0
            worker.pool, worker.gpu_type = pool, types[0]
            worker.data_center = (
                ep.data_center_ids[0] if ep.data_center_ids else self.options.data_center
            )
            worker.placed_at, worker.ready_at = now, now + self.options.boot_seconds
            worker.usd_per_second = price * worker.gpu_count / 3600.0
            self.segments[worker.id] = billing.Segment(ep.id, now, None, worker.usd_per_second)
            if worker.backed:
                assert self.processes is not None
                self.processes.launch(worker, ep)
            return True
        return False

    def _place_throttled(self, now: float) -> None:
        for worker in sorted(self.workers.values(), key=lambda w: w.created_at):
            if worker.placed_at is None:
                ep = self.endpoints.get(worker.endpoint_id)
                if ep is not None:
                    self._place(worker, ep, now)

    def _became_ready(self, worker: Worker, now: float) -> None:
        """Start the idle timer at the moment the boot ended (not at the tick that saw it)."""
        if worker.idle_since is None and not worker.jobs and worker.booted(now):
            assert worker.ready_at is not None
            worker.idle_since = max(worker.ready_at, worker.process_ready_at or worker.ready_at)

    def _start(self, job: Job, worker: Worker, now: float) -> None:
        job.status, job.started_at, job.worker_id = "IN_PROGRESS", now, worker.id
        self._running[job.id] = job
        if not worker.jobs:
            worker.busy_since = now
        worker.jobs.add(job.id)
        worker.idle_since = None

    def _finish(self, job: Job, status: str, now: float) -> None:
        was_running = job.status == "IN_PROGRESS"
        job.status, job.finished_at = status, now
        self._running.pop(job.id, None)
        self._finished.append((now, job.id))
        worker = self.workers.get(job.worker_id or "")
        if worker is not None and job.id in worker.jobs:
            worker.jobs.discard(job.id)
            if was_running and status in ("CANCELLED", "TIMED_OUT") and worker.backed:
                worker.stop_requests.append(job.id)
            if not worker.jobs:
                if worker.busy_since is not None:
                    worker.busy_seconds += now - worker.busy_since
                    worker.busy_since = None
                worker.idle_since = now
                if worker.retiring:
                    self._gone(worker, now)

    def _gone(self, worker: Worker, now: float) -> None:
        if worker.busy_since is not None:
            worker.busy_seconds += now - worker.busy_since
            worker.busy_since = None
        worker.gone_at = now
        self.workers.pop(worker.id, None)
        self._by_endpoint.get(worker.endpoint_id, {}).pop(worker.id, None)
        self.retired[worker.id] = worker
        segment = self.segments.get(worker.id)
        if segment is not None:
            segment.end = now
        if worker.backed and self.processes is not None:
            self.processes.terminate(worker.id)

    def _retire(self, worker: Worker, now: float) -> None:
        """Retire now if idle, else after its jobs (it takes no new ones)."""
        if worker.jobs:
            worker.retiring = True
        else:
            self._gone(worker, now)

    def _expire_jobs(self, now: float) -> None:
        while self._finished and self._finished[0][0] < now - JOB_RETENTION_S:
            _, job_id = self._finished.popleft()
            self.jobs.pop(job_id, None)
        for job in list(self._running.values()):
            if job.started_at is None:
                continue
            ep = self.endpoints.get(job.endpoint_id)
            if ep is not None and ep.timeout_ms > 0 and now - job.started_at > ep.timeout_ms / 1000:
                job.error = f"job exceeded the endpoint's execution timeout of {ep.timeout_ms} ms"
                self._finish(job, "TIMED_OUT", now)

    def _simulate(self, now: float) -> None:
        """Inference off: ready workers take one job each, which fails after sim_job_seconds."""
        for worker in list(self.workers.values()):
            for job_id in list(worker.jobs):
                job = self.jobs[job_id]
                if (
                    job.started_at is not None
                    and now - job.started_at >= self.options.sim_job_seconds
                ):
                    job.error = INFERENCE_OFF_MESSAGE
                    self._finish(job, "FAILED", now)
        for worker in sorted(self.workers.values(), key=lambda w: w.created_at):
            queue = self.queues.get(worker.endpoint_id)
            if (
                queue
                and not worker.jobs
                and not worker.retiring
                and worker.booted(now)
                and worker.unhealthy is None
            ):
                self._start(self.jobs[queue.popleft()], worker, now)

    def _scale(self, ep: Endpoint, now: float) -> None:
        workers = [w for w in self._workers_of(ep.id) if not w.retiring and w.unhealthy is None]
        # Releases: stale workers are replaced once idle.
        for w in list(workers):
            if w.version != ep.version:
                self._retire(w, now)
                workers.remove(w)
        # Above max (e.g. after a PATCH): throttled first, then booting, then idle, then busy.
        order = {"THROTTLED": 0, "INITIALIZING": 1, "IDLE": 2, "RUNNING": 3}
        while len(workers) > ep.workers_max:
            victim = min(workers, key=lambda w: (order[w.status(now)], w.backed, -w.created_at))
            self._retire(victim, now)
            workers.remove(victim)
        queue = self.queues.get(ep.id, deque())
        if self.options.inference and queue and ep.workers_max > 0:
            workers = self._ensure_backed(ep, workers, now)
        wanted = self._wanted(ep, workers, len(queue), now)
        if self.options.inference and queue and not any(w.backed for w in workers):
            # Only a real-process worker can run these jobs and none could start (every
            # process is busy): simulated workers would not help; the jobs wait for a slot.
            wanted = min(wanted, max(ep.workers_min, len(workers)))
        while len(workers) < wanted:
            workers.append(self._add_worker(ep, now, backed=False))
            self._last_scale_up[ep.id] = now
        self._scale_down(ep, workers, wanted, now)

    def _wanted(self, ep: Endpoint, workers: list[Worker], queued: int, now: float) -> int:
        """How many workers the scaler wants now (clamped to min/max)."""
        if ep.scaler == "REQUEST_COUNT":
            in_progress = sum(len(w.jobs) for w in workers)
            demand = math.ceil((queued + in_progress) / int(ep.scaling["requestCount"]))
            return max(ep.workers_min, min(ep.workers_max, demand))
        wanted = max(ep.workers_min, len(workers))
        cold_start = any(w.backed and not w.booted(now) for w in workers)
        if queued and not workers:
            wanted = max(wanted, 1)
        elif queued and not (self.options.inference and cold_start):
            # With inference on only the real-process worker runs jobs: while it boots, more
            # simulated workers would not shorten the wait.
            oldest = self.jobs[self.queues[ep.id][0]].submitted_at
            delay = float(ep.scaling["queueDelay"])
            last = self._last_scale_up.get(ep.id, -math.inf)
            if now - oldest > delay and now - last >= delay:
                wanted = len(workers) + 1
        return min(wanted, ep.workers_max)

    def _scale_down(self, ep: Endpoint, workers: list[Worker], wanted: int, now: float) -> None:
        idle = [w for w in workers if w.status(now) in ("IDLE", "THROTTLED")]
        # Simulated before backed (keep the warm real process), longest idle first.
        idle.sort(key=lambda w: (w.backed, w.idle_since if w.idle_since is not None else now))
        alive = len(workers)
        for w in idle:
            if ep.scaler == "REQUEST_COUNT":
                if alive <= wanted:
                    break
            else:
                if alive <= ep.workers_min:
                    break
                timeout = ep.idle_timeout or endpoints.DEFAULT_IDLE_TIMEOUT_S
                since = w.idle_since if w.idle_since is not None else w.created_at
                if now - since < timeout:
                    continue
            self._gone(w, now)
            alive -= 1

    def _ensure_backed(self, ep: Endpoint, workers: list[Worker], now: float) -> list[Worker]:
        """Inference on: make sure an endpoint with queued jobs has one real-process worker."""
        assert self.processes is not None
        if any(w.backed for w in workers):
            return workers
        if not self.processes.has_room():
            victim = self.processes.least_recently_used(
                lambda wid: wid in self.workers and not self.workers[wid].jobs
            )
            if victim is None:
                return workers  # every process is busy: the jobs wait
            self._demote(self.workers[victim])
        if len(workers) >= ep.workers_max:
            order = {"THROTTLED": 0, "INITIALIZING": 1, "IDLE": 2, "RUNNING": 3}
            replaced = min(workers, key=lambda w: order[w.status(now)])
            self._gone(replaced, now)
            workers = [w for w in workers if w is not replaced]
        workers.append(self._add_worker(ep, now, backed=True))
        self._last_scale_up[ep.id] = now
        return workers

    def _demote(self, worker: Worker) -> None:
        """Stop a worker's real process; it carries on as a simulated worker."""
        assert self.processes is not None
        self.processes.terminate(worker.id)
        worker.backed = False
