"""Serverless billing as RunPod reports it (D18): USD per endpoint per time bucket.

A worker is billed per second from the moment it is placed on a GPU until it is gone: boot,
run and idle time alike (throttled workers hold no GPU and cost nothing). Its rate is the
catalogue's serverless price per GPU-hour of the pool it landed in, times `gpu.count`, / 3600.
`records` cuts those seconds into the spec's buckets (hour, day, week (ISO, from Monday),
month, year; UTC), resolving the query window the way `GET /v2/billing/serverless` documents:
startTime snapped down, endTime snapped up, `lastN` ending with the current bucket. Pure
functions over `Segment`s; `platform` supplies the segments and the clock's now.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ferry.sandbox.clock import parse_rfc3339, rfc3339
from ferry.sandbox.http import Problem

BUCKETS = ("hour", "day", "week", "month", "year")
DEFAULT_WINDOW_S = 30 * 86400


@dataclass
class Segment:
    """One worker's billed span: [start, end) epoch seconds (end None = still running)."""

    endpoint_id: str
    start: float
    end: float | None
    usd_per_second: float


def bucket_floor(epoch: float, size: str) -> float:
    """Start of the `size` bucket holding `epoch` (UTC)."""
    t = datetime.fromtimestamp(epoch, tz=UTC)
    if size == "hour":
        t = t.replace(minute=0, second=0, microsecond=0)
    elif size == "day":
        t = t.replace(hour=0, minute=0, second=0, microsecond=0)
    elif size == "week":
        t = t.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=t.weekday())
    elif size == "month":
        t = t.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    elif size == "year":
        t = t.replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0)
    else:
        raise ValueError(f"unknown bucket size {size!r}")
    return t.timestamp()


def bucket_next(start: float, size: str) -> float:
    """Start of the bucket after the one starting at `start`."""
    t = datetime.fromtimestamp(start, tz=UTC)
    if size == "hour":
        return (t + timedelta(hours=1)).timestamp()
    if size == "day":
        return (t + timedelta(days=1)).timestamp()
    if size == "week":
        return (t + timedelta(days=7)).timestamp()
    if size == "month":
        return t.replace(year=t.year + t.month // 12, month=t.month % 12 + 1).timestamp()
    if size == "year":
        return t.replace(year=t.year + 1).timestamp()
    raise ValueError(f"unknown bucket size {size!r}")


def _bucket_prev(start: float, size: str) -> float:
    return bucket_floor(start - 1, size)


def resolve_window(now: float, query: dict[str, str]) -> tuple[float, float, str]:
    """(start, end, bucketSize) for a billing query; raises Problem(400) on a bad combination."""
    size = query.get("bucketSize", "day")
    last_n = query.get("lastN")
    if last_n is not None:
        if "startTime" in query or "endTime" in query:
            raise Problem(400, "lastN is mutually exclusive with startTime/endTime")
        end = bucket_next(bucket_floor(now, size), size)
        start = bucket_floor(now, size)
        for _ in range(int(last_n) - 1):
            start = _bucket_prev(start, size)
        return start, end, size
    try:
        start = (
            parse_rfc3339(query["startTime"]) if "startTime" in query else now - DEFAULT_WINDOW_S
        )
        end = parse_rfc3339(query["endTime"]) if "endTime" in query else now
    except ValueError as exc:
        raise Problem(400, f"startTime/endTime: {exc}") from None
    start = bucket_floor(start, size)
    floor_end = bucket_floor(end, size)
    end = floor_end if floor_end == end else bucket_next(floor_end, size)
    if end <= start:
        raise Problem(400, "endTime must be after startTime")
    return start, end, size


def _zero() -> dict[str, float]:
    return {
        "totalAmount": 0.0,
        "gpuAmount": 0.0,
        "cpuAmount": 0.0,
        "diskAmount": 0.0,
        "feeAmount": 0.0,
    }


def records(segments: list[Segment], now: float, query: dict[str, str]) -> dict[str, Any]:
    """The spec's `ListServerlessBillingResponse` for `query` (startTime, endTime, bucketSize,
    lastN, serverlessId). One record per endpoint per bucket in which it was billed."""
    start, end, size = resolve_window(now, query)
    only = query.get("serverlessId")
    amounts: dict[tuple[float, str], float] = defaultdict(float)
    for seg in segments:
        if only is not None and seg.endpoint_id != only:
            continue
        a, b = max(seg.start, start), min(seg.end if seg.end is not None else now, end)
        if b <= a:
            continue
        bucket = bucket_floor(a, size)
        while bucket < b:
            nxt = bucket_next(bucket, size)
            overlap = min(b, nxt) - max(a, bucket)
            if overlap > 0:
                amounts[(bucket, seg.endpoint_id)] += overlap * seg.usd_per_second
            bucket = nxt
    rows: list[dict[str, Any]] = []
    totals = _zero()
    for (bucket, endpoint_id), usd in sorted(amounts.items()):
        usd = round(usd, 6)
        rows.append(
            {
                "startTime": rfc3339(bucket),
                "endTime": rfc3339(bucket_next(bucket, size)),
                "serverlessId": endpoint_id,
                **_zero(),
                "totalAmount": usd,
                "gpuAmount": usd,
            }
        )
        totals["totalAmount"] += usd
        totals["gpuAmount"] += usd
    totals = {k: round(v, 6) for k, v in totals.items()}
    return {
        "records": rows,
        "metadata": {
            "query": {
                "startTime": rfc3339(start),
                "endTime": rfc3339(end),
                "bucketSize": size,
                "serverlessId": only,
            },
            "recordCount": len(rows),
            "uniqueServerlessCount": len({r["serverlessId"] for r in rows}),
            "totals": totals,
        },
    }
