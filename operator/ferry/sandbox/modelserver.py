"""Where the real model server comes from: the inference server's Python and a tiny model.

The fakes run Ferry's own model server (`inference-server/`) for real inference, with the
Python of its virtual environment (by default `inference-server/.venv/bin/python` in the
source tree this package sits in). They serve one tiny model, built locally once with
`ferry_server.devtools.build_model` (random weights, a tokenizer trained on a built-in corpus;
nothing is downloaded) and cached under `~/.cache/ferry/sandbox/models/`, whatever model an
endpoint names: the sandbox proves the plumbing, not the model. Used by `__main__` at start-up
and by the platforms' inference backends.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import ferry

REPO = Path(ferry.__file__).resolve().parents[2]
DEFAULT_SERVER_PYTHON = REPO / "inference-server" / ".venv" / "bin" / "python"

_PROBE = (
    "import ferry_server.devtools as d, ferry_server.providers.runpod_handler, runpod; "
    "print(d.__file__)"
)
_BUILD = (
    "import sys; from ferry_server.devtools import build_model; "
    "build_model(sys.argv[1], preset='tiny')"
)


class ModelServerMissing(Exception):
    """The inference server cannot be run; the message says what to do instead."""


@dataclass(frozen=True)
class ModelServer:
    """A checked inference-server Python and the tiny model directory it serves."""

    python: Path
    model_dir: Path


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/ferry/sandbox`, else `~/.cache/ferry/sandbox`."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ferry" / "sandbox"


def locate(python: Path | None, cache_dir: Path, timeout_s: float = 180.0) -> ModelServer:
    """Check the server Python runs Ferry's RunPod worker, and build the tiny model if needed.

    Raises ModelServerMissing (with the remedy) when the Python is absent or cannot import
    the server, or when the model build fails.
    """
    exe = python or DEFAULT_SERVER_PYTHON
    remedy = (
        "build it with `make -C inference-server venv`, pass --server-python PATH, "
        "or run with --inference off (every worker simulated)"
    )
    if not exe.exists():
        raise ModelServerMissing(f"the inference server's Python was not found at {exe}; {remedy}")
    env = _clean_env()
    probe = subprocess.run(
        [str(exe), "-c", _PROBE],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout_s,
        check=False,
    )
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise ModelServerMissing(
            f"{exe} cannot import Ferry's model server and the runpod package ({last}); {remedy}"
        )
    devtools = Path(probe.stdout.strip().splitlines()[-1])
    return ModelServer(python=exe, model_dir=tiny_model(exe, devtools, cache_dir, timeout_s))


def tiny_model(python: Path, devtools: Path, cache_dir: Path, timeout_s: float = 180.0) -> Path:
    """The cached tiny model, built on first use; the cache key follows the builder's source."""
    key = hashlib.sha256(devtools.read_bytes()).hexdigest()[:12]
    target = cache_dir / "models" / f"tiny-{key}"
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the target and rename: two sandboxes starting at once never see half a model.
    scratch = Path(tempfile.mkdtemp(prefix="tiny-build-", dir=target.parent))
    try:
        built = subprocess.run(
            [str(python), "-c", _BUILD, str(scratch / "model")],
            capture_output=True,
            text=True,
            env=_clean_env(),
            timeout=timeout_s,
            check=False,
        )
        if built.returncode != 0:
            last = (built.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise ModelServerMissing(f"building the sandbox's tiny model failed: {last}")
        try:
            (scratch / "model").rename(target)
        except OSError:
            if not (target / "config.json").exists():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def served_model_name(model_ref: str) -> str:
    """The name the model server answers to for `FERRY_MODEL=model_ref`.

    Mirrors `ferry_server.config.Settings.served_model_name` (the server's venv is separate, so
    it cannot be imported here): `hf://org/name@rev` -> `org/name`, a path -> its last part.
    """
    ref = model_ref.rstrip("/")
    if ref.startswith("hf://"):
        return ref.removeprefix("hf://").split("@", 1)[0]
    return os.path.basename(ref) or "model"


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FERRY_", "RUNPOD_"))}
    env["HF_HUB_OFFLINE"] = "1"
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env
