"""Prometheus metrics of the operator itself (served by `ferry run` on --metrics-port).

Every controller (endpoints, drains, autoscaling) is one `controller` label value on
the work-queue metrics, which `ferry.queueing` records for all of them alike.
"""

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
QUEUE_DEPTH = Gauge(
    "ferry_workqueue_depth", "Keys waiting to be processed now, per controller.", ["controller"]
)
QUEUE_RETRIES = Counter(
    "ferry_workqueue_retries_total", "Keys requeued with backoff, per controller.", ["controller"]
)
WORK = Counter(
    "ferry_controller_runs_total",
    "Keys processed by each controller, by outcome (ok, error).",
    ["controller", "result"],
)
WORK_SECONDS = Histogram(
    "ferry_controller_run_seconds",
    "Time one key took, per controller.",
    ["controller"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
DRAINS = Gauge("ferry_drains_active", "Endpoints with a drain in progress.")
EVICTIONS = Counter(
    "ferry_evictions_total",
    "Evictions of noticed pods, by result (evicted, refused by the disruption budget).",
    ["result"],
)
SCALINGS = Counter(
    "ferry_autoscaler_changes_total",
    "Replica changes by Ferry's autoscaler, by reason.",
    ["reason"],
)
SCRAPE_ERRORS = Counter(
    "ferry_load_scrape_errors_total", "Load samples that could not be read, by source.", ["source"]
)
