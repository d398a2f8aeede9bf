"""Server settings, read from FERRY_* environment variables (see README.md)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "")
    if raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from exc


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "")
    if raw.strip() == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be a number, got {raw!r}") from exc


# FERRY_DRAIN_GRACE_S, the operator's spot.drainGraceSeconds: one range on both sides (D19).
DRAIN_GRACE_RANGE_S = (1, 3600)


@dataclass(frozen=True)
class Settings:
    """Everything the server process needs to know, resolved once at start-up."""

    model: str = ""
    model_name: str = ""
    engine: str = "auto"
    device: str = "auto"
    dtype: str = "auto"
    host: str = "0.0.0.0"
    port: int = 8000
    auth_token_env: str = "FERRY_AUTH_TOKEN"
    auth_token: str = ""
    max_batch_size: int = 8
    batch_window_ms: float = 5.0
    drain_grace_s: float = 30.0
    drain_propagation_s: float = 5.0
    spot_metadata_url: str = ""
    spot_poll_interval_s: float = 5.0
    max_tokens_limit: int = 2048
    max_queue: int = 1024
    warmup: bool = True
    log_level: str = "info"

    @property
    def served_model_name(self) -> str:
        """The name clients use in the `model` field."""
        if self.model_name:
            return self.model_name
        ref = self.model.rstrip("/")
        if ref.startswith("hf://"):
            return ref.removeprefix("hf://").split("@", 1)[0]
        return os.path.basename(ref) or "model"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read settings from the environment; the auth token is read from the named variable."""
        e = os.environ if env is None else env
        token_env = e.get("FERRY_AUTH_TOKEN_ENV", "FERRY_AUTH_TOKEN") or "FERRY_AUTH_TOKEN"
        settings = cls(
            model=e.get("FERRY_MODEL", ""),
            model_name=e.get("FERRY_MODEL_NAME", ""),
            engine=e.get("FERRY_ENGINE", "auto"),
            device=e.get("FERRY_DEVICE", "auto"),
            dtype=e.get("FERRY_DTYPE", "auto"),
            host=e.get("FERRY_HOST", "0.0.0.0"),
            port=_int(e, "FERRY_PORT", 8000),
            auth_token_env=token_env,
            auth_token=e.get(token_env, ""),
            max_batch_size=_int(e, "FERRY_MAX_BATCH_SIZE", 8),
            batch_window_ms=_float(e, "FERRY_BATCH_WINDOW_MS", 5.0),
            drain_grace_s=_float(e, "FERRY_DRAIN_GRACE_S", 30.0),
            drain_propagation_s=_float(e, "FERRY_DRAIN_PROPAGATION_S", 5.0),
            spot_metadata_url=e.get("FERRY_SPOT_METADATA_URL", ""),
            spot_poll_interval_s=_float(e, "FERRY_SPOT_POLL_INTERVAL_S", 5.0),
            max_tokens_limit=_int(e, "FERRY_MAX_TOKENS_LIMIT", 2048),
            max_queue=_int(e, "FERRY_MAX_QUEUE", 1024),
            warmup=e.get("FERRY_WARMUP", "1").lower() not in ("0", "false", "no"),
            log_level=e.get("FERRY_LOG_LEVEL", "info"),
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        """Reject settings that cannot work, naming the variable at fault."""
        if self.engine not in ("auto", "transformers", "vllm"):
            raise ValueError(
                f"FERRY_ENGINE must be auto, transformers or vllm, got {self.engine!r}"
            )
        if self.max_batch_size < 1:
            raise ValueError("FERRY_MAX_BATCH_SIZE must be at least 1")
        if self.batch_window_ms < 0:
            raise ValueError("FERRY_BATCH_WINDOW_MS must not be negative")
        lo, hi = DRAIN_GRACE_RANGE_S
        if not lo <= self.drain_grace_s <= hi:
            # The operator's spot.drainGraceSeconds has the same range (D19), so a value the
            # API server accepted always starts here.
            raise ValueError(
                f"FERRY_DRAIN_GRACE_S must be between {lo} and {hi} seconds (the range of "
                f"spot.drainGraceSeconds), got {self.drain_grace_s:g}"
            )
        if not 0 <= self.drain_propagation_s <= hi:
            raise ValueError(
                f"FERRY_DRAIN_PROPAGATION_S must be between 0 and {hi} seconds, "
                f"got {self.drain_propagation_s:g}"
            )
        if self.spot_poll_interval_s <= 0:
            raise ValueError("FERRY_SPOT_POLL_INTERVAL_S must be positive")
        if self.max_tokens_limit < 1:
            raise ValueError("FERRY_MAX_TOKENS_LIMIT must be at least 1")

    def __repr__(self) -> str:
        # Never let the token reach a log line through repr().
        fields = {k: v for k, v in self.__dict__.items() if k != "auth_token"}
        fields["auth_token"] = "<set>" if self.auth_token else "<unset>"
        inner = ", ".join(f"{k}={v!r}" for k, v in fields.items())
        return f"Settings({inner})"
