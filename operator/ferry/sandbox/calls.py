"""Call counts per (method, route template), the figure tests and benchmarks assert on.

Every request that reaches a fake's platform route is counted once, including those answered
by an injected fault, so "a 429 storm converges with a bounded number of calls" can be checked.
Admin routes (`/_sandbox/...`) and unknown paths are not counted. Written by `http.Surface`,
read and reset through `GET/DELETE /_sandbox/calls`.
"""

from __future__ import annotations

from collections import Counter


class CallCounter:
    """Counts calls by (METHOD, route template)."""

    def __init__(self) -> None:
        self._counts: Counter[tuple[str, str]] = Counter()

    def count(self, method: str, route: str) -> None:
        """Record one call of `method` on the route template `route` (`/v2/serverless/{id}`)."""
        self._counts[(method.upper(), route)] += 1

    def get(self, method: str, route: str) -> int:
        """Calls so far of `method` on `route`."""
        return self._counts[(method.upper(), route)]

    def total(self) -> int:
        """All counted calls."""
        return sum(self._counts.values())

    def reset(self) -> None:
        """Forget every count."""
        self._counts.clear()

    def describe(self) -> dict[str, object]:
        """Admin view: `{total, calls: [{method, route, count}]}`, sorted by route then method."""
        rows = [
            {"method": method, "route": route, "count": n}
            for (method, route), n in sorted(self._counts.items(), key=lambda kv: kv[0][::-1])
        ]
        return {"total": self.total(), "calls": rows}
