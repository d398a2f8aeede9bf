"""Resolve a model reference (local path or hf://org/name@revision) and check it fits the device."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ferry_server.errors import ModelLoadError, ModelTooLarge

# Files the server needs from a Hub repository; other formats (.bin, .pt, onnx) are never fetched.
HUB_PATTERNS = ["*.json", "*.safetensors", "tokenizer*", "*.model", "*.txt", "*.jinja"]


@dataclass(frozen=True)
class HubRef:
    """A parsed `hf://org/name@revision` reference."""

    repo_id: str
    revision: str | None


def parse_hf_uri(ref: str) -> HubRef | None:
    """Parse `hf://org/name[@revision]`; return None for anything that is not an hf:// URI."""
    if not ref.startswith("hf://"):
        return None
    body = ref.removeprefix("hf://").strip("/")
    repo_id, _, revision = body.partition("@")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ModelLoadError(f"model URI {ref!r} must look like hf://org/name[@revision]")
    return HubRef(repo_id=repo_id, revision=revision or None)


def resolve_model_dir(ref: str) -> Path:
    """Return a local directory holding the model's config, tokenizer and safetensors weights.

    hf:// references go through the Hugging Face cache under HF_HOME; with HF_HUB_OFFLINE=1
    only what is already cached is used.
    """
    if not ref:
        raise ModelLoadError("no model configured: set FERRY_MODEL to a path or hf://org/name")
    hub = parse_hf_uri(ref)
    if hub is None:
        path = Path(ref).expanduser()
        if not path.is_dir():
            raise ModelLoadError(f"model path {ref!r} does not exist or is not a directory")
        return path
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        local = snapshot_download(
            repo_id=hub.repo_id, revision=hub.revision, allow_patterns=HUB_PATTERNS
        )
    except LocalEntryNotFoundError as exc:
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0", "false", "False")
        hint = " (HF_HUB_OFFLINE is set and it is not in the cache)" if offline else ""
        raise ModelLoadError(
            f"model {hub.repo_id}@{hub.revision or 'main'} could not be found{hint}; "
            f"HF_HOME={os.environ.get('HF_HOME', '~/.cache/huggingface')}"
        ) from exc
    except HfHubHTTPError as exc:
        raise ModelLoadError(f"model {hub.repo_id}: download failed: {exc}") from exc
    return Path(local)


def weight_bytes(model_dir: Path) -> int:
    """Total size of the safetensors weight files."""
    files = list(model_dir.glob("*.safetensors"))
    if not files:
        raise ModelLoadError(
            f"model directory {model_dir} has no .safetensors weights "
            "(only safetensors are loaded)"
        )
    return sum(f.stat().st_size for f in files)


def cpu_free_bytes() -> int:
    """Memory available to this process: MemAvailable, capped by the cgroup limit if any."""
    avail = 0
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    try:
        raw = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
        if raw != "max":
            limit_left = int(raw) - used
            avail = min(avail, limit_left) if avail else limit_left
    except (OSError, ValueError):
        pass
    return avail


def format_bytes(n: float) -> str:
    """Human-readable size, e.g. 1.5 GiB."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


def check_fits(model: str, size_bytes: int, device: str, free_bytes: int) -> None:
    """Raise ModelTooLarge (naming model, size and free memory) if the weights cannot fit."""
    # Weights plus a margin for activations and the KV cache.
    needed = int(size_bytes * 1.1)
    if free_bytes and needed > free_bytes:
        raise ModelTooLarge(
            f"model {model} needs about {format_bytes(size_bytes)} for its weights but device "
            f"{device} has only {format_bytes(free_bytes)} free; use a larger device, a smaller "
            "dtype (FERRY_DTYPE) or a smaller model"
        )
