"""Real RunPod workers: Ferry's model server running the real `runpod` worker loop (D7).

A backed worker is `<server-python> -m ferry_server.providers.runpod_handler`: the inference
server's RunPod entrypoint, which loads its model and then runs `runpod.serverless.start`. The
runpod SDK polls the fake's job plane through the webhook URLs below exactly as it polls
RunPod, so the sandbox exercises the SDK's real loop. `worker_env` is the whole environment
the process gets; nothing else of the sandbox's environment leaks in except the basics a
process needs (PATH, locale, temp dirs). Used by `platform` through `WorkerProcesses`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import quote_plus

from ferry.sandbox import modelserver
from ferry.sandbox.processes import ProcessPool
from ferry.sandbox.runpod.endpoints import Endpoint
from ferry.sandbox.runpod.workers import Worker

HANDLER_MODULE = "ferry_server.providers.runpod_handler"
_DROPPED_PREFIXES = ("FERRY_", "RUNPOD_", "HF_", "PYTHON", "VIRTUAL_ENV", "CONDA")


def worker_env(
    *,
    endpoint: Endpoint,
    worker: Worker,
    jobs_url: str,
    worker_key: str,
    model_dir: Path,
    home: Path,
    base_env: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of a backed worker's process.

    - the runpod SDK's webhooks on the fake's job plane: `RUNPOD_WEBHOOK_GET_JOB` (already
      holding a `?`: the SDK appends `&job_in_progress=0|1`), `RUNPOD_WEBHOOK_POST_OUTPUT` and
      `RUNPOD_WEBHOOK_POST_STREAM` (`$ID` is the job id, filled in by the SDK);
      `RUNPOD_AI_API_KEY` (sent raw in `Authorization`), `RUNPOD_POD_ID` (the worker id),
      `RUNPOD_ENDPOINT_ID`, `RUNPOD_GPU_COUNT`; the SDK's GPU and system checks off; INFO logs.
    - `HOME` is a directory of the sandbox's own, so a developer's `~/.runpod/config.toml`
      cannot replace the worker key; `HF_HUB_OFFLINE=1`: nothing is downloaded.
    - the endpoint's own `FERRY_*` variables (others are not passed to a local process), then
      `FERRY_MODEL` = the sandbox's tiny model whatever the endpoint names, served under the
      endpoint's model name so clients can keep sending it.
    """
    source = os.environ if base_env is None else base_env
    env = {k: v for k, v in source.items() if not k.startswith(_DROPPED_PREFIXES)}
    gpu = quote_plus(worker.gpu_type or "")
    base = f"{jobs_url}/v2/{endpoint.id}"
    env.update(
        {
            "RUNPOD_WEBHOOK_GET_JOB": f"{base}/job-take/{worker.id}?gpu={gpu}",
            "RUNPOD_WEBHOOK_POST_OUTPUT": f"{base}/job-done/{worker.id}/$ID?gpu={gpu}",
            "RUNPOD_WEBHOOK_POST_STREAM": f"{base}/job-stream/{worker.id}/$ID?gpu={gpu}",
            "RUNPOD_AI_API_KEY": worker_key,
            "RUNPOD_POD_ID": worker.id,
            "RUNPOD_ENDPOINT_ID": endpoint.id,
            "RUNPOD_GPU_COUNT": str(worker.gpu_count),
            "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true",
            "RUNPOD_SKIP_GPU_CHECK": "true",
            "RUNPOD_LOG_LEVEL": "INFO",
            "HOME": str(home),
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "OMP_NUM_THREADS": source.get("OMP_NUM_THREADS", "1"),
        }
    )
    ferry_env = {k: v for k, v in endpoint.env.items() if k.startswith("FERRY_")}
    env.update(ferry_env)
    if "FERRY_MODEL_NAME" not in ferry_env and ferry_env.get("FERRY_MODEL"):
        env["FERRY_MODEL_NAME"] = modelserver.served_model_name(ferry_env["FERRY_MODEL"])
    env["FERRY_MODEL"] = str(model_dir)
    return env


class WorkerProcesses:
    """`platform.ProcessBackend` over a `ProcessPool`: one process per backed worker."""

    def __init__(
        self,
        *,
        server: modelserver.ModelServer,
        pool: ProcessPool,
        jobs_url: Callable[[], str],
        worker_key: str,
        home: Path,
    ) -> None:
        self.server = server
        self.pool = pool
        self._jobs_url = jobs_url
        self.worker_key = worker_key
        self.home = home

    def has_room(self) -> bool:
        """True when the pool may start one more process."""
        return self.pool.has_room()

    def launch(self, worker: Worker, endpoint: Endpoint) -> None:
        """Start the worker's process (the slot is taken now)."""
        self.home.mkdir(parents=True, exist_ok=True)
        env = worker_env(
            endpoint=endpoint,
            worker=worker,
            jobs_url=self._jobs_url(),
            worker_key=self.worker_key,
            model_dir=self.server.model_dir,
            home=self.home,
        )
        self.pool.launch(worker.id, [str(self.server.python), "-m", HANDLER_MODULE], env)

    def terminate(self, worker_id: str) -> None:
        """Stop the worker's process (the slot is free now)."""
        self.pool.terminate(worker_id)

    def touch(self, worker_id: str) -> None:
        """The worker just took a job."""
        self.pool.touch(worker_id)

    def least_recently_used(self, evictable: Callable[[str], bool]) -> str | None:
        """The least recently used evictable worker id."""
        return self.pool.least_recently_used(evictable)
