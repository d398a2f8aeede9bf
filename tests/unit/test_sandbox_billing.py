"""Billing buckets of the RunPod fake (ferry.sandbox.runpod.billing)."""

from __future__ import annotations

import pytest

from ferry.sandbox.clock import parse_rfc3339 as t
from ferry.sandbox.http import Problem
from ferry.sandbox.runpod import billing


@pytest.mark.parametrize(
    ("size", "moment", "start", "after"),
    [
        ("hour", "2026-03-31T23:59:59Z", "2026-03-31T23:00:00Z", "2026-04-01T00:00:00Z"),
        ("day", "2026-03-31T23:59:59Z", "2026-03-31T00:00:00Z", "2026-04-01T00:00:00Z"),
        ("week", "2026-04-02T10:00:00Z", "2026-03-30T00:00:00Z", "2026-04-06T00:00:00Z"),
        ("month", "2026-12-15T10:00:00Z", "2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z"),
        ("year", "2026-12-15T10:00:00Z", "2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z"),
    ],
    ids=["hour", "day", "week-from-monday", "month-december", "year"],
)
def test_buckets(size: str, moment: str, start: str, after: str) -> None:
    floor = billing.bucket_floor(t(moment), size)
    assert floor == t(start)
    assert billing.bucket_next(floor, size) == t(after)


def test_a_worker_billed_across_an_hour_boundary_splits_into_two_records() -> None:
    rate = 0.00155 * 2  # HOPPER_141, two GPUs, USD per second
    seg = billing.Segment("ep1", t("2026-05-01T10:59:00Z"), t("2026-05-01T11:01:00Z"), rate)
    other = billing.Segment("ep2", t("2026-05-01T10:00:00Z"), None, 0.0)
    now = t("2026-05-01T11:30:00Z")
    report = billing.records([seg, other], now, {"bucketSize": "hour", "serverlessId": "ep1"})
    assert [(r["startTime"], r["gpuAmount"]) for r in report["records"]] == [
        ("2026-05-01T10:00:00Z", pytest.approx(60 * rate)),
        ("2026-05-01T11:00:00Z", pytest.approx(60 * rate)),
    ]
    assert report["metadata"]["totals"]["totalAmount"] == pytest.approx(120 * rate)
    assert report["metadata"]["uniqueServerlessCount"] == 1
    assert report["metadata"]["query"]["serverlessId"] == "ep1"


def test_window_resolution() -> None:
    now = t("2026-05-13T15:20:00Z")
    start, end, size = billing.resolve_window(now, {"bucketSize": "day", "lastN": "3"})
    assert (start, end, size) == (t("2026-05-11T00:00:00Z"), t("2026-05-14T00:00:00Z"), "day")
    start, end, _ = billing.resolve_window(
        now, {"startTime": "2026-05-01T10:30:00Z", "endTime": "2026-05-02T00:00:00Z"}
    )
    assert (start, end) == (t("2026-05-01T00:00:00Z"), t("2026-05-02T00:00:00Z"))
    with pytest.raises(Problem, match="mutually exclusive"):
        billing.resolve_window(now, {"lastN": "1", "endTime": "2026-05-02T00:00:00Z"})
    with pytest.raises(Problem, match="after"):
        billing.resolve_window(
            now, {"startTime": "2026-05-03T00:00:00Z", "endTime": "2026-05-02T00:00:00Z"}
        )
