"""The Replicate fake's state machine: models, deployments, releases, instances, predictions.

Synchronous, and reading time only from the injected `SandboxClock`, so unit tests drive it by
stepping the clock and calling `tick()`; the HTTP layer (`api`) calls into it and waits on
`on_change` notifications. What it models:

- Deployments under the one account, unique by name; every PATCH with a field makes a release
  (`current_release.number` + 1). The model cannot change; version and hardware changes make
  the running instances stale (replaced once idle).
- Instances: a cold boot of `boot_seconds` on the clock (slow: Replicate is known for it),
  then idle or busy with one prediction at a time (cog's default). Kept at `min_instances`,
  scaled up for waiting predictions up to `max_instances`, idle ones above the minimum retired
  after `idle_seconds`; lowering `max_instances` retires the surplus at once (busy ones after
  their prediction). Replicate reports none of this through its API (D17); the admin routes do.
- Predictions: `starting` until an instance takes one, `processing`, then `succeeded`,
  `failed` or `canceled`; `aborted` when its `Cancel-After` deadline passes before it started.
- Real inference (D7): with inference on, a deployment with waiting predictions gets one
  instance backed by a real process running the cog predictor (`ProcessBackend`), and only
  that instance runs its predictions; at most the backend's limit of processes exist, the
  least recently used idle one is demoted to a simulated instance to make room. With
  inference off a prediction runs `sim_seconds` and fails saying no model ran.
- Deletion: refused while the deployment is online (instances, or predictions not finished)
  or was online within `offline_seconds` (15 minutes), as the platform documents.
- Billing (D18): instance seconds from creation to gone, as boot, idle and busy, at the
  hardware's list price (`billed_seconds`).
"""

from __future__ import annotations

import base64
import secrets
import string
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import jsonschema

from ferry.sandbox.clock import SandboxClock, rfc3339, step_through
from ferry.sandbox.http import Problem
from ferry.sandbox.replicate import catalog

INFERENCE_OFF_MESSAGE = (
    "ferry sandbox: inference is off, so no model ran this prediction; start the sandbox"
    " with --inference on for real tokens"
)
RETENTION_S = 3600.0
PAGE_SIZE = 100
#: Deployment names the fake accepts (the platform documents none: the fake's choice).
NAME_CHARS = set(string.ascii_lowercase + string.digits + "-_.")
FINISHED = ("succeeded", "failed", "canceled", "aborted")


def new_id(length: int = 26) -> str:
    """A Replicate-looking id: lowercase base32 (`gm3qorzdhgbfurvjtvhg6dckhu`)."""
    return base64.b32encode(secrets.token_bytes(20)).decode().lower()[:length]


@dataclass
class Options:
    """Knobs of the fake (CLI flags)."""

    boot_seconds: float = 60.0
    idle_seconds: float = 60.0
    offline_seconds: float = 900.0
    sim_seconds: float = 1.0
    inference: bool = True


class ProcessBackend(Protocol):
    """Real processes for backed instances (`inference.InstanceProcesses`)."""

    def has_room(self) -> bool: ...

    def launch(self, instance: Instance) -> None: ...

    def terminate(self, instance_id: str) -> None: ...

    def touch(self, instance_id: str) -> None: ...

    def least_recently_used(self, evictable: Callable[[str], bool]) -> str | None: ...


@dataclass
class Version:
    id: str
    created_at: float

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "created_at": rfc3339(self.created_at),
            "cog_version": catalog.COG_VERSION,
            "openapi_schema": catalog.openapi_schema(),
        }


@dataclass
class Model:
    owner: str
    name: str
    description: str
    versions: list[Version] = field(default_factory=list)
    run_count: int = 0

    @property
    def id(self) -> str:
        return f"{self.owner}/{self.name}"

    def to_json(self) -> dict[str, Any]:
        latest = self.versions[-1].to_json() if self.versions else None
        return {
            "url": f"https://replicate.com/{self.owner}/{self.name}",
            "owner": self.owner,
            "name": self.name,
            "description": self.description,
            "visibility": "public",
            "github_url": None,
            "paper_url": None,
            "license_url": None,
            "run_count": self.run_count,
            "cover_image_url": None,
            "default_example": None,
            "latest_version": latest,
        }


@dataclass
class Release:
    number: int
    model: str
    version: str
    created_at: float
    hardware: str
    min_instances: int
    max_instances: int

    def to_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "model": self.model,
            "version": self.version,
            "created_at": rfc3339(self.created_at),
            # The client requires `name` here, though the spec does not (providers.md).
            "created_by": dict(catalog.ACCOUNT),
            "configuration": {
                "hardware": self.hardware,
                "min_instances": self.min_instances,
                "max_instances": self.max_instances,
            },
        }


@dataclass
class Deployment:
    owner: str
    name: str
    releases: list[Release]
    #: When it last went offline (no instances, no unfinished predictions); None while online.
    offline_since: float | None

    @property
    def key(self) -> str:
        return f"{self.owner}/{self.name}"

    @property
    def release(self) -> Release:
        return self.releases[-1]

    def to_json(self) -> dict[str, Any]:
        return {"owner": self.owner, "name": self.name, "current_release": self.release.to_json()}


@dataclass
class Instance:
    id: str
    deployment: str
    version: str
    hardware: str
    created_at: float
    ready_at: float
    backed: bool = False
    process_ready_at: float | None = None
    prediction: str | None = None
    idle_since: float | None = None
    busy_since: float | None = None
    busy_seconds: float = 0.0
    retiring: bool = False
    gone_at: float | None = None

    def booted(self, now: float) -> bool:
        """Past its cold boot, and (backed) its predictor's setup is done."""
        return self.ready_at <= now and (not self.backed or self.process_ready_at is not None)

    def state(self, now: float) -> str:
        if not self.booted(now):
            return "booting"
        return "busy" if self.prediction else "idle"

    def seconds(self, now: float) -> dict[str, float]:
        """Billed seconds so far: boot, busy, idle, total."""
        end = self.gone_at if self.gone_at is not None else now
        boot = max(0.0, min(end, self.ready_at) - self.created_at)
        busy = self.busy_seconds + (end - self.busy_since if self.busy_since is not None else 0.0)
        total = max(0.0, end - self.created_at)
        return {"boot": boot, "busy": busy, "idle": max(0.0, total - boot - busy), "total": total}


@dataclass
class Prediction:
    id: str
    deployment: str
    model: str
    version: str
    input: dict[str, Any]
    created_at: float
    deadline: float | None = None
    status: str = "starting"
    output: Any = None
    error: str | None = None
    logs: str = ""
    instance: str | None = None
    handed_out: bool = False
    started_at: float | None = None
    completed_at: float | None = None

    @property
    def done(self) -> bool:
        return self.status in FINISHED

    def to_json(self, api_url: str) -> dict[str, Any]:
        get = f"{api_url}/v1/predictions/{self.id}"
        body: dict[str, Any] = {
            "id": self.id,
            "model": self.model,
            "version": self.version,
            "input": self.input,
            "output": self.output,
            "logs": self.logs,
            "error": self.error,
            "status": self.status,
            "source": "api",
            "data_removed": False,
            "deployment": self.deployment,
            "created_at": rfc3339(self.created_at),
            "urls": {"get": get, "cancel": f"{get}/cancel", "web": get},
        }
        if self.started_at is not None:
            body["started_at"] = rfc3339(self.started_at)
        if self.completed_at is not None:
            body["completed_at"] = rfc3339(self.completed_at)
            body["metrics"] = {"total_time": round(self.completed_at - self.created_at, 3)}
            if self.started_at is not None:
                body["metrics"]["predict_time"] = round(self.completed_at - self.started_at, 3)
        if self.deadline is not None:
            body["deadline"] = rfc3339(self.deadline)
        return body


class ReplicatePlatform:
    """All Replicate state of one sandbox."""

    def __init__(
        self,
        clock: SandboxClock,
        options: Options | None = None,
        processes: ProcessBackend | None = None,
    ) -> None:
        self.clock = clock
        self.options = options or Options()
        self.processes = processes
        self.api_url = "http://127.0.0.1:0"
        self.account = dict(catalog.ACCOUNT)
        self.models: dict[str, Model] = {}
        self.deployments: dict[str, Deployment] = {}
        self.instances: dict[str, Instance] = {}
        self.retired: list[Instance] = []
        self.predictions: dict[str, Prediction] = {}
        self._queues: dict[str, deque[str]] = {}
        self._finished: deque[tuple[float, str]] = deque()
        self._listeners: list[Callable[[], None]] = []
        if self.options.inference and processes is None:
            raise ValueError("inference on needs a process backend")
        self._seed()

    def _seed(self) -> None:
        now = self.clock.now()
        for owner, name, description, versions in catalog.SEED_MODELS:
            model = Model(owner, name, description)
            for n in range(1, versions + 1):
                model.versions.append(Version(catalog.version_id(model.id, n), now))
            self.models[model.id] = model

    # ---- notifications -------------------------------------------------------------------

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call `listener` whenever state may have changed (long-polls re-check)."""
        self._listeners.append(listener)

    def _changed(self) -> None:
        for listener in self._listeners:
            listener()

    def reset(self) -> None:
        """Forget every deployment, instance, prediction and added model."""
        self.stop_instances()
        self.models.clear()
        self.deployments.clear()
        self.instances.clear()
        self.retired.clear()
        self.predictions.clear()
        self._queues.clear()
        self._finished.clear()
        self._seed()
        self._changed()

    def stop_instances(self) -> None:
        """Every instance goes (their processes are told to stop); used at shutdown."""
        now = self.clock.now()
        for instance in list(self.instances.values()):
            self._gone(instance, now)
        self._changed()

    # ---- models --------------------------------------------------------------------------

    def model(self, owner: str, name: str) -> Model:
        """The model, or Problem(404)."""
        model = self.models.get(f"{owner}/{name}")
        if model is None:
            raise Problem(404, f"model {owner}/{name} not found")
        return model

    def version(self, owner: str, name: str, version_id: str) -> Version:
        """A version of the model, or Problem(404)."""
        for version in self.model(owner, name).versions:
            if version.id == version_id:
                return version
        raise Problem(404, f"version {version_id} of model {owner}/{name} not found")

    def add_version(self, owner: str, name: str, description: str = "") -> Model:
        """Admin: a new model, or a new latest version of an existing one."""
        model = self.models.setdefault(f"{owner}/{name}", Model(owner, name, description))
        number = len(model.versions) + 1
        model.versions.append(Version(catalog.version_id(model.id, number), self.clock.now()))
        return model

    # ---- deployments ---------------------------------------------------------------------

    def create_deployment(self, body: dict[str, Any]) -> Deployment:
        """`POST /v1/deployments` with a schema-valid body; Problem on Replicate's rules."""
        name = str(body["name"])
        if not name or not set(name) <= NAME_CHARS or len(name) > 100:
            raise Problem(
                422, f"deployment name {name!r}: use lowercase letters, digits, '-', '_' and '.'"
            )
        key = f"{self.account['username']}/{name}"
        if key in self.deployments:
            raise Problem(409, f"a deployment named {name} already exists")
        owner, _, model_name = str(body["model"]).partition("/")
        self.version(owner, model_name, str(body["version"]))
        self._check_config(body["hardware"], body["min_instances"], body["max_instances"])
        now = self.clock.now()
        release = Release(
            1,
            f"{owner}/{model_name}",
            str(body["version"]),
            now,
            str(body["hardware"]),
            int(body["min_instances"]),
            int(body["max_instances"]),
        )
        deployment = Deployment(str(self.account["username"]), name, [release], now)
        self.deployments[key] = deployment
        self._queues[key] = deque()
        self.tick()
        return deployment

    def deployment(self, owner: str, name: str) -> Deployment:
        """The deployment, or Problem(404)."""
        found = self.deployments.get(f"{owner}/{name}")
        if found is None:
            raise Problem(404, f"deployment {owner}/{name} not found")
        return found

    def list_deployments(self, start: int) -> tuple[list[Deployment], int | None]:
        """A page of deployments from `start`, oldest first, and where the next page starts."""
        ordered = sorted(
            self.deployments.values(), key=lambda d: (d.releases[0].created_at, d.name)
        )
        page = ordered[start : start + PAGE_SIZE]
        return page, (start + PAGE_SIZE if start + PAGE_SIZE < len(ordered) else None)

    def update_deployment(self, owner: str, name: str, body: dict[str, Any]) -> Deployment:
        """`PATCH /v1/deployments/{owner}/{name}`: any field makes a new release."""
        deployment = self.deployment(owner, name)
        if not body:
            return deployment
        old = deployment.release
        model_owner, _, model_name = old.model.partition("/")
        version = str(body.get("version", old.version))
        if version != old.version:
            self.version(model_owner, model_name, version)
        hardware = str(body.get("hardware", old.hardware))
        low = int(body.get("min_instances", old.min_instances))
        high = int(body.get("max_instances", old.max_instances))
        self._check_config(hardware, low, high)
        deployment.releases.append(
            Release(old.number + 1, old.model, version, self.clock.now(), hardware, low, high)
        )
        self.tick()
        return deployment

    def delete_deployment(self, owner: str, name: str) -> None:
        """`DELETE`: only a deployment offline and unused for `offline_seconds` goes."""
        deployment = self.deployment(owner, name)
        now = self.clock.now()
        since = deployment.offline_since
        if since is None or now - since < self.options.offline_seconds:
            minutes = self.options.offline_seconds / 60
            state = (
                "it is online (instances running or predictions unfinished)"
                if since is None
                else f"it has been offline for {now - since:.0f}s only"
            )
            # The status code of this refusal is not in Replicate's spec: 409 is the fake's
            # choice (a conflict with the deployment's current state).
            raise Problem(
                409,
                f"deployment {owner}/{name} cannot be deleted yet: {state}; Replicate deletes a"
                f" deployment only once it has been offline and unused for {minutes:.0f} minutes",
            )
        del self.deployments[deployment.key]
        self._queues.pop(deployment.key, None)
        self._changed()

    def _check_config(self, hardware: Any, low: Any, high: Any) -> None:
        if hardware not in catalog.BY_SKU:
            skus = ", ".join(catalog.BY_SKU)
            raise Problem(422, f"hardware {hardware!r} is not available; choose one of {skus}")
        if int(low) > int(high):
            raise Problem(422, f"min_instances ({low}) must not exceed max_instances ({high})")

    # ---- predictions ---------------------------------------------------------------------

    def create_prediction(
        self, owner: str, name: str, body: dict[str, Any], deadline_s: float | None
    ) -> Prediction:
        """`POST .../predictions`: queue a prediction for the deployment's current release."""
        deployment = self.deployment(owner, name)
        release = deployment.release
        payload = dict(body.get("input") or {})
        errors = sorted(
            jsonschema.Draft202012Validator(catalog.INPUT_SCHEMA).iter_errors(payload),
            key=lambda e: list(e.absolute_path),
        )
        if errors:
            where = ".".join(str(p) for p in errors[0].absolute_path) or "input"
            raise Problem(
                422,
                f"input.{where}: {errors[0].message}".replace("input.input", "input"),
                errors=[
                    f"input.{'.'.join(str(p) for p in e.absolute_path)}: {e.message}"
                    for e in errors
                ],
            )
        now = self.clock.now()
        prediction = Prediction(
            id=new_id(),
            deployment=deployment.key,
            model=release.model,
            version=release.version,
            input=payload,
            created_at=now,
            deadline=now + deadline_s if deadline_s is not None else None,
        )
        self.predictions[prediction.id] = prediction
        self._queues[deployment.key].append(prediction.id)
        self.models[release.model].run_count += 1
        self.tick()
        return prediction

    def prediction(self, prediction_id: str) -> Prediction:
        """A prediction, or Problem(404)."""
        found = self.predictions.get(prediction_id)
        if found is None:
            raise Problem(404, f"prediction {prediction_id} not found")
        return found

    def cancel(self, prediction_id: str) -> Prediction:
        """`POST /v1/predictions/{id}/cancel`; a finished prediction stays as it is."""
        prediction = self.prediction(prediction_id)
        if not prediction.done:
            self._finish(prediction, "canceled", self.clock.now())
            self._changed()
        return prediction

    # ---- instance processes (the cog worker) ---------------------------------------------

    def take(self, instance_id: str) -> Prediction | None:
        """A backed instance's poll: marks its predictor ready and hands out its prediction.

        Raises Problem(410) when the instance is gone (its worker should exit).
        """
        instance = self.instances.get(instance_id)
        if instance is None:
            raise Problem(410, f"instance {instance_id} is gone")
        now = self.clock.now()
        if instance.process_ready_at is None:
            instance.process_ready_at = now  # setup() has finished: the model is loaded
            self.tick()
        prediction = self.predictions.get(instance.prediction or "")
        if prediction is None or prediction.handed_out or prediction.done:
            return None
        prediction.handed_out = True
        if self.processes is not None:
            self.processes.touch(instance.id)
        return prediction

    def result(self, instance_id: str, prediction_id: str, payload: dict[str, Any]) -> None:
        """A worker's answer `{output}` or `{error}` (and `logs`); late answers are dropped."""
        prediction = self.predictions.get(prediction_id)
        if prediction is None or prediction.instance != instance_id or prediction.done:
            return
        prediction.logs = str(payload.get("logs") or "")
        if payload.get("error"):
            prediction.error = str(payload["error"])
            self._finish(prediction, "failed", self.clock.now())
        else:
            prediction.output = payload.get("output")
            self._finish(prediction, "succeeded", self.clock.now())
        self._changed()

    def process_exited(self, instance_id: str, code: int, tail: str) -> None:
        """A backed instance's process ended on its own: it goes, and its work fails."""
        instance = self.instances.get(instance_id)
        if instance is None:
            return
        now = self.clock.now()
        message = (
            f"ferry sandbox: the predictor process of instance {instance_id} exited with code"
            f" {code}" + (f"; its last output:\n{tail}" if tail else "")
        )
        failed = [instance.prediction] if instance.prediction else []
        if instance.process_ready_at is None:
            # It never became ready: what waits for it would wait forever.
            failed += list(self._queues.get(instance.deployment, ()))
            self._queues.get(instance.deployment, deque()).clear()
        for prediction_id in failed:
            prediction = self.predictions[prediction_id]
            if not prediction.done:
                prediction.error = message
                self._finish(prediction, "failed", now)
        instance.backed = False  # its process is gone already: nothing to terminate
        self._gone(instance, now)
        self._changed()

    # ---- the clock -----------------------------------------------------------------------

    def tick(self) -> None:
        """Bring every instance and prediction up to the clock's now (idempotent)."""
        now = self.clock.now()
        for instance in self.instances.values():
            if instance.idle_since is None and instance.prediction is None and instance.booted(now):
                instance.idle_since = max(instance.ready_at, instance.process_ready_at or 0.0)
        self._expire(now)
        if not self.options.inference:
            self._simulate(now)  # first, so an instance freed now takes the next one now
        for deployment in list(self.deployments.values()):
            self._scale(deployment, now)
            self._assign(deployment, now)
        for deployment in self.deployments.values():
            self._mark_offline(deployment, now)
        self._changed()

    def advance(self, seconds: float) -> None:
        """Step the clock, stopping at every event inside the step, in time order."""
        step_through(self.clock, seconds, self.next_event, self.tick)

    def next_event(self, now: float) -> float | None:
        """The earliest moment after `now` at which `tick()` would change something."""
        times: list[float] = []
        for instance in self.instances.values():
            times.append(instance.ready_at)
            if instance.idle_since is not None and instance.prediction is None:
                times.append(instance.idle_since + self.options.idle_seconds)
        for prediction in self.predictions.values():
            if prediction.done:
                continue
            if prediction.deadline is not None:
                times.append(prediction.deadline)
            if not self.options.inference and prediction.started_at is not None:
                times.append(prediction.started_at + self.options.sim_seconds)
        later = [t + 1e-6 for t in times if t + 1e-6 > now]
        return min(later) if later else None

    # ---- views ---------------------------------------------------------------------------

    def billed_seconds(self) -> dict[str, Any]:
        """Admin view: per deployment, instance seconds `{boot, idle, busy, total}` and USD."""
        now = self.clock.now()
        out: dict[str, dict[str, Any]] = {}
        for instance in [*self.retired, *self.instances.values()]:
            secs = instance.seconds(now)
            row = out.setdefault(
                instance.deployment,
                {"boot": 0.0, "idle": 0.0, "busy": 0.0, "total": 0.0, "usd": 0.0, "instances": 0},
            )
            for key in ("boot", "idle", "busy", "total"):
                row[key] += secs[key]
            price = catalog.BY_SKU[instance.hardware].usd_per_second
            row["usd"] = (
                None if price is None or row["usd"] is None else row["usd"] + secs["total"] * price
            )
            row["instances"] += 1
        return {
            "deployments": {
                k: {kk: (round(vv, 6) if isinstance(vv, float) else vv) for kk, vv in v.items()}
                for k, v in out.items()
            },
            "catalogue": {"date": catalog.CATALOGUE_DATE, "source": catalog.CATALOGUE_SOURCE},
        }

    def instances_of(self, key: str) -> list[Instance]:
        """The deployment's live instances, oldest first."""
        return [i for i in self.instances.values() if i.deployment == key]

    def state_view(self) -> dict[str, Any]:
        """Admin view: deployments with their instances and predictions by status."""
        now = self.clock.now()
        return {
            "deployments": {
                d.key: {
                    "release": d.release.number,
                    "offlineSince": rfc3339(d.offline_since) if d.offline_since else None,
                    "queued": len(self._queues.get(d.key, ())),
                    "instances": [
                        {
                            "id": i.id,
                            "state": i.state(now),
                            "version": i.version,
                            "hardware": i.hardware,
                            "backed": i.backed,
                            "stale": i.version != d.release.version
                            or i.hardware != d.release.hardware,
                        }
                        for i in self.instances_of(d.key)
                    ],
                }
                for d in self.deployments.values()
            },
            "predictions": {
                s: sum(1 for p in self.predictions.values() if p.status == s)
                for s in ("starting", "processing", *FINISHED)
            },
        }

    # ---- internals -----------------------------------------------------------------------

    def _add_instance(self, deployment: Deployment, now: float, *, backed: bool) -> Instance:
        release = deployment.release
        instance = Instance(
            id=new_id(12),
            deployment=deployment.key,
            version=release.version,
            hardware=release.hardware,
            created_at=now,
            ready_at=now + self.options.boot_seconds,
            backed=backed,
        )
        self.instances[instance.id] = instance
        deployment.offline_since = None
        if backed:
            assert self.processes is not None
            self.processes.launch(instance)
        return instance

    def _gone(self, instance: Instance, now: float) -> None:
        if instance.busy_since is not None:
            instance.busy_seconds += now - instance.busy_since
            instance.busy_since = None
        instance.gone_at = now
        self.instances.pop(instance.id, None)
        self.retired.append(instance)
        if instance.backed and self.processes is not None:
            self.processes.terminate(instance.id)
        deployment = self.deployments.get(instance.deployment)
        if deployment is not None:
            self._mark_offline(deployment, now)

    def _retire(self, instance: Instance, now: float) -> None:
        if instance.prediction:
            instance.retiring = True
        else:
            self._gone(instance, now)

    def _mark_offline(self, deployment: Deployment, now: float) -> None:
        online = bool(self.instances_of(deployment.key)) or bool(self._queues.get(deployment.key))
        if online:
            deployment.offline_since = None
        elif deployment.offline_since is None:
            deployment.offline_since = now

    def _scale(self, deployment: Deployment, now: float) -> None:
        release = deployment.release
        live = [i for i in self.instances_of(deployment.key) if not i.retiring]
        for instance in list(live):
            if instance.version != release.version or instance.hardware != release.hardware:
                self._retire(instance, now)  # a release changed what it runs: replaced
                live.remove(instance)
        order = {"booting": 0, "idle": 1, "busy": 2}
        while len(live) > release.max_instances:
            victim = min(live, key=lambda i: (order[i.state(now)], i.backed, -i.created_at))
            self._retire(victim, now)
            live.remove(victim)
        queued = len(self._queues.get(deployment.key, ()))
        if self.options.inference:
            if queued and release.max_instances > 0:
                live = self._ensure_backed(deployment, live, now)
            # Only the backed instance runs predictions: more simulated ones would not help.
            wanted = release.min_instances
        else:
            busy = sum(1 for i in live if i.prediction)
            wanted = min(release.max_instances, max(release.min_instances, busy + queued))
        while len(live) < wanted:
            live.append(self._add_instance(deployment, now, backed=False))
        idle = sorted(
            (i for i in live if i.state(now) == "idle"),
            key=lambda i: (i.backed, i.idle_since or now),
        )
        alive = len(live)
        for instance in idle:
            if alive <= max(release.min_instances, wanted):
                break
            if now - (instance.idle_since or now) >= self.options.idle_seconds:
                self._gone(instance, now)
                alive -= 1

    def _ensure_backed(
        self, deployment: Deployment, live: list[Instance], now: float
    ) -> list[Instance]:
        assert self.processes is not None
        if any(i.backed for i in live):
            return live
        if not self.processes.has_room():
            victim = self.processes.least_recently_used(
                lambda iid: iid in self.instances and self.instances[iid].prediction is None
            )
            if victim is None:
                return live  # every process is busy: the predictions wait
            self.processes.terminate(victim)
            self.instances[victim].backed = False
        if len(live) >= deployment.release.max_instances:
            spare = [i for i in live if i.prediction is None]
            if not spare:
                return live
            self._gone(spare[0], now)
            live = [i for i in live if i is not spare[0]]
        live.append(self._add_instance(deployment, now, backed=True))
        return live

    def _assign(self, deployment: Deployment, now: float) -> None:
        queue = self._queues.get(deployment.key)
        if not queue:
            return
        for instance in self.instances_of(deployment.key):
            if not queue:
                break
            if self.options.inference and not instance.backed:
                continue
            if instance.prediction or instance.retiring or not instance.booted(now):
                continue
            prediction = self.predictions[queue.popleft()]
            prediction.status, prediction.started_at = "processing", now
            prediction.instance = instance.id
            instance.prediction = prediction.id
            instance.busy_since, instance.idle_since = now, None

    def _simulate(self, now: float) -> None:
        for instance in list(self.instances.values()):
            prediction = self.predictions.get(instance.prediction or "")
            started = prediction.started_at if prediction is not None else None
            if prediction is not None and started is not None:
                if now - started < self.options.sim_seconds:
                    continue
                prediction.error = INFERENCE_OFF_MESSAGE
                self._finish(prediction, "failed", now)

    def _finish(self, prediction: Prediction, status: str, now: float) -> None:
        prediction.status, prediction.completed_at = status, now
        self._finished.append((now, prediction.id))
        queue = self._queues.get(prediction.deployment)
        if queue is not None and prediction.id in queue:
            queue.remove(prediction.id)
        instance = self.instances.get(prediction.instance or "")
        if instance is not None and instance.prediction == prediction.id:
            instance.prediction = None
            if instance.busy_since is not None:
                instance.busy_seconds += now - instance.busy_since
                instance.busy_since = None
            instance.idle_since = now
            if instance.retiring:
                self._gone(instance, now)

    def _expire(self, now: float) -> None:
        for prediction in list(self.predictions.values()):
            if prediction.done or prediction.deadline is None or now < prediction.deadline:
                continue
            if prediction.status == "starting":
                prediction.error = "the prediction's deadline passed before it started"
                self._finish(prediction, "aborted", now)
            else:
                prediction.error = "the prediction's deadline passed while it ran"
                self._finish(prediction, "canceled", now)
        while self._finished and self._finished[0][0] < now - RETENTION_S:
            _, prediction_id = self._finished.popleft()
            self.predictions.pop(prediction_id, None)
        # Finished instances are kept for billing; bound that memory too.
        if len(self.retired) > 10_000:
            del self.retired[: len(self.retired) - 10_000]


def page_start(cursor: str | None) -> int:
    """The list offset a `cursor` query value stands for (the fake's cursors are offsets)."""
    if not cursor:
        return 0
    try:
        start = int(cursor)
    except ValueError:
        raise Problem(400, f"cursor {cursor!r} is not one this API handed out") from None
    if start < 0:
        raise Problem(400, f"cursor {cursor!r} is not one this API handed out")
    return start
