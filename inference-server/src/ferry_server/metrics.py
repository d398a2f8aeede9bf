"""Prometheus metrics, one registry per server so tests and embedded apps do not collide."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    """All server metrics; `/metrics` and health probes are not counted as requests."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "ferry_requests", "HTTP requests served", ["route", "status"], registry=r
        )
        self.latency = Histogram(
            "ferry_request_duration_seconds", "HTTP request latency", ["route"],
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.ttft = Histogram(
            "ferry_time_to_first_token_seconds", "Time from request to first generated text",
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.tokens = Counter(
            "ferry_generated_tokens",
            "Tokens generated, counted as each decode step makes them (rate() gives tokens/s)",
            registry=r,
        )
        self.tokens_per_second = Histogram(
            "ferry_request_tokens_per_second", "Per-request generation speed in tokens/s",
            buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000), registry=r,
        )
        self.inflight = Gauge("ferry_inflight_requests", "Requests being served", registry=r)
        self.decoding = Gauge(
            "ferry_decoding_requests", "Requests the engine is generating tokens for right now",
            registry=r,
        )
        self.aborted = Counter(
            "ferry_aborted_requests",
            "Requests whose generation stopped early because the client went away", registry=r,
        )
        self.queue_depth = Gauge(
            "ferry_queue_depth", "Requests waiting for a batch slot", registry=r
        )
        self.batch_size = Histogram(
            "ferry_batch_size", "Requests per engine batch", buckets=BATCH_BUCKETS, registry=r
        )
        self.model_load = Gauge(
            "ferry_model_load_seconds", "Cold start by phase (import, weight_load, warmup)",
            ["phase"], registry=r,
        )
        self.ready = Gauge("ferry_ready", "1 when the model is loaded and not draining", registry=r)
        self.draining = Gauge("ferry_draining", "1 once SIGTERM has started a drain", registry=r)
        self.spot_notice_deadline = Gauge(
            "ferry_spot_notice_deadline_seconds",
            "Unix time by which a spot/preemption notice says this instance goes away; "
            "0 while there is no notice",
            registry=r,
        )
        self.spot_errors = Counter(
            "ferry_spot_metadata_errors",
            "Spot notice polls that got no answer (401/403, timeouts, 5xx): a notice could be "
            "missed",
            registry=r,
        )

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)
