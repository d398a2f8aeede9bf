"""Operator settings: flags of `ferry run`, each with a FERRY_* environment default."""

from __future__ import annotations

import os
from dataclasses import dataclass, field


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise SystemExit(f"{name} must be a number of seconds, not {raw!r}") from None


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"{name} must be a whole number, not {raw!r}") from None


@dataclass
class Settings:
    """Everything `ferry run` can be told."""

    namespaces: list[str] = field(default_factory=list)
    kubeconfig: str | None = None
    workers: int = field(default_factory=lambda: _env_int("FERRY_WORKERS", 32))
    poll_interval: float = field(default_factory=lambda: _env_float("FERRY_POLL_INTERVAL", 60.0))
    short_requeue: float = field(default_factory=lambda: _env_float("FERRY_SHORT_REQUEUE", 3.0))
    metrics_port: int = field(default_factory=lambda: _env_int("FERRY_METRICS_PORT", 8080))
    metrics_host: str = field(
        default_factory=lambda: os.environ.get("FERRY_METRICS_HOST", "0.0.0.0")
    )
    liveness_port: int = field(default_factory=lambda: _env_int("FERRY_HEALTH_PORT", 0))
    # Deadlines: one reconcile, and each platform call inside it (seconds).
    reconcile_timeout: float = field(
        default_factory=lambda: _env_float("FERRY_RECONCILE_TIMEOUT", 60.0)
    )
    call_timeout: float = field(default_factory=lambda: _env_float("FERRY_CALL_TIMEOUT", 10.0))
    # How long a platform's list may lag behind a create whose answer was lost.
    creation_grace: float = field(default_factory=lambda: _env_float("FERRY_CREATION_GRACE", 30.0))
    # Ferry's autoscaler: how often each local endpoint's load is sampled (seconds).
    autoscale_interval: float = field(
        default_factory=lambda: _env_float("FERRY_AUTOSCALE_INTERVAL", 5.0)
    )
    # Where load samples come from (D12): each ready pod's /metrics, or Prometheus.
    load_source: str = field(default_factory=lambda: os.environ.get("FERRY_LOAD_SOURCE", "pods"))
    # A pod's metrics URL; {ip}, {port}, {namespace} and {name} are the pod's.
    pod_metrics_url: str = field(
        default_factory=lambda: os.environ.get(
            "FERRY_POD_METRICS_URL", "http://{ip}:{port}/metrics"
        )
    )
    prometheus_url: str = field(default_factory=lambda: os.environ.get("FERRY_PROMETHEUS_URL", ""))
    scrape_timeout: float = field(default_factory=lambda: _env_float("FERRY_SCRAPE_TIMEOUT", 2.0))
    # While a drain runs, how often it is looked at without a new event (seconds).
    drain_interval: float = field(default_factory=lambda: _env_float("FERRY_DRAIN_INTERVAL", 2.0))
    verbose: bool = False

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise SystemExit(f"--workers must be at least 1, not {self.workers}")
        if self.poll_interval <= 0 or self.short_requeue <= 0:
            raise SystemExit("--poll-interval and the short requeue must be positive")
        if self.call_timeout <= 0 or self.reconcile_timeout < self.call_timeout:
            raise SystemExit(
                "FERRY_CALL_TIMEOUT must be positive and at most FERRY_RECONCILE_TIMEOUT"
            )
        if self.creation_grace < 0:
            raise SystemExit("FERRY_CREATION_GRACE must not be negative")
        if self.autoscale_interval <= 0 or self.drain_interval <= 0 or self.scrape_timeout <= 0:
            raise SystemExit(
                "FERRY_AUTOSCALE_INTERVAL, FERRY_DRAIN_INTERVAL and FERRY_SCRAPE_TIMEOUT must be"
                " positive"
            )
        if self.load_source not in ("pods", "prometheus"):
            raise SystemExit(
                f"FERRY_LOAD_SOURCE must be pods or prometheus, not {self.load_source!r}"
            )
        if self.load_source == "prometheus" and not self.prometheus_url:
            raise SystemExit("FERRY_LOAD_SOURCE=prometheus needs FERRY_PROMETHEUS_URL")
