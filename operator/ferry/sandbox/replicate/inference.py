"""Real Replicate instances: Ferry's cog predictor in a process of its own (D7).

A backed instance is `<server-python> -I cog_worker.py`, which imports the `Predictor` of
`inference-server/replicate/predict.py`, runs its `setup()` with the sandbox's tiny model and
then takes predictions from the fake's worker routes (`app`), one at a time, as cog would.
`worker_env` is the whole environment the process gets: nothing of the sandbox's own leaks
in beyond what a process needs (PATH, locale, temp dirs). Used by `platform` through
`InstanceProcesses`; the pool caps how many run at once.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

from ferry.sandbox import modelserver
from ferry.sandbox.processes import ProcessPool
from ferry.sandbox.replicate.platform import Instance

WORKER_SCRIPT = Path(__file__).resolve().parent / "cog_worker.py"
PREDICTOR_DIR = modelserver.REPO / "inference-server" / "replicate"
_DROPPED_PREFIXES = ("FERRY_", "REPLICATE_", "RUNPOD_", "HF_", "PYTHON", "VIRTUAL_ENV", "CONDA")


def worker_env(
    *,
    worker_url: str,
    worker_key: str,
    model_dir: Path,
    home: Path,
    predictor_dir: Path = PREDICTOR_DIR,
    base_env: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of a backed instance's process.

    - `FERRY_COG_WORKER_URL` (this instance's routes on the fake) and `FERRY_COG_WORKER_KEY`
      (a key of the sandbox's own, not the API token), `FERRY_COG_PREDICTOR_DIR`;
    - `FERRY_MODEL` = the sandbox's tiny model, whatever model the deployment names: the
      sandbox proves the plumbing, not the model; `HF_HUB_OFFLINE=1`: nothing is downloaded;
    - `HOME` is a directory of the sandbox's own.
    """
    source = os.environ if base_env is None else base_env
    env = {k: v for k, v in source.items() if not k.startswith(_DROPPED_PREFIXES)}
    env.update(
        {
            "FERRY_COG_WORKER_URL": worker_url,
            "FERRY_COG_WORKER_KEY": worker_key,
            "FERRY_COG_PREDICTOR_DIR": str(predictor_dir),
            "FERRY_MODEL": str(model_dir),
            "HOME": str(home),
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "OMP_NUM_THREADS": source.get("OMP_NUM_THREADS", "1"),
        }
    )
    return env


class InstanceProcesses:
    """`platform.ProcessBackend` over a `ProcessPool`: one process per backed instance."""

    def __init__(
        self,
        *,
        server: modelserver.ModelServer,
        pool: ProcessPool,
        api_url: Callable[[], str],
        worker_key: str,
        home: Path,
    ) -> None:
        self.server = server
        self.pool = pool
        self._api_url = api_url
        self.worker_key = worker_key
        self.home = home

    def has_room(self) -> bool:
        """True when the pool may start one more process."""
        return self.pool.has_room()

    def launch(self, instance: Instance) -> None:
        """Start the instance's predictor process (the slot is taken now)."""
        self.home.mkdir(parents=True, exist_ok=True)
        env = worker_env(
            worker_url=f"{self._api_url()}/_sandbox/workers/{instance.id}",
            worker_key=self.worker_key,
            model_dir=self.server.model_dir,
            home=self.home,
        )
        # -I: the script's own directory (this package, whose `platform` module would shadow
        # the standard library's) is not put on the process's path.
        argv = [str(self.server.python), "-I", str(WORKER_SCRIPT)]
        self.pool.launch(instance.id, argv, env)

    def terminate(self, instance_id: str) -> None:
        """Stop the instance's process (the slot is free now)."""
        self.pool.terminate(instance_id)

    def touch(self, instance_id: str) -> None:
        """The instance just took a prediction."""
        self.pool.touch(instance_id)

    def least_recently_used(self, evictable: Callable[[str], bool]) -> str | None:
        """The least recently used evictable instance id."""
        return self.pool.least_recently_used(evictable)
