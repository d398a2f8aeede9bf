"""Prometheus metrics of the operator itself (served by `ferry run` on --metrics-port)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECONCILES = Counter(
    "ferry_reconcile_total", "Reconciles of InferenceEndpoints by outcome.", ["result"]
)
RECONCILE_SECONDS = Histogram(
    "ferry_reconcile_duration_seconds",
    "Time one reconcile took.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
QUEUE_DEPTH = Gauge("ferry_workqueue_depth", "Endpoints waiting to be reconciled now.")
QUEUE_RETRIES = Counter("ferry_workqueue_retries_total", "Reconciles requeued with backoff.")
