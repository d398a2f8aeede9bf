from __future__ import annotations

import pytest

from ferry.api.v1alpha1 import types
from ferry.logic import scaling


@pytest.mark.parametrize(
    ("lo", "hi", "current", "want"),
    [
        (1, 3, None, 1),
        (0, 3, None, 0),
        (2, 4, 3, 3),
        (2, 4, 9, 4),
        (2, 4, 0, 2),
        (1, 1, 5, 1),
    ],
    ids=["new-starts-at-min", "new-zero", "inside-kept", "above-clamped", "below-raised", "fixed"],
)
def test_decide_replicas_stays_in_bounds(lo: int, hi: int, current: int | None, want: int) -> None:
    spec = types.ScalingSpec(min_replicas=lo, max_replicas=hi)
    assert scaling.decide_replicas(spec, current) == want
