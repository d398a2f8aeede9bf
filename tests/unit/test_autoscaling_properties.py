"""Properties of Ferry's autoscaler decision, over generated policies and load series.

Each series is run through the decision as the controller would (one sample per
step, the count carried from one decision to the next). Time is the step number
times the sample interval; nothing sleeps.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from ferry.logic import autoscaling as A

STEP = 5.0  # seconds between samples


@st.composite
def policies(draw: st.DrawFn) -> A.Policy:
    lo = draw(st.integers(0, 4))
    hi = draw(st.integers(max(lo, 1), 12))
    zero = draw(st.one_of(st.none(), st.sampled_from([30.0, 60.0, 300.0])))
    return A.Policy(
        min_replicas=lo,
        max_replicas=hi,
        target=draw(st.integers(1, 16)),
        buffer=draw(st.integers(0, 3)),
        up_delay=draw(st.sampled_from([0.0, 10.0, 30.0])),
        down_delay=draw(st.sampled_from([0.0, 15.0, 60.0, 120.0])),
        zero_after=zero if lo == 0 else None,
    )


loads = st.lists(st.tuples(st.integers(0, 200), st.integers(0, 50)), min_size=1, max_size=60)


@dataclass
class Step:
    at: float
    before: int
    after: int
    sample: A.Sample


def run(policy: A.Policy, series: list[tuple[int, int]], start: int) -> list[Step]:
    history = A.History(since=0.0)
    current = start
    steps = []
    for i, (inflight, queue) in enumerate(series):
        now = i * STEP
        sample = A.Sample(now, inflight, queue)
        history = history.add(sample, A.keep_seconds(policy))
        decision = A.decide(policy, history, current, now)
        steps.append(Step(now, current, decision.replicas, sample))
        current = decision.replicas
    return steps


@settings(max_examples=300, deadline=None)
@given(policies(), loads, st.integers(0, 20))
def test_always_within_bounds(policy: A.Policy, series: list[tuple[int, int]], start: int) -> None:
    for step in run(policy, series, start):
        assert policy.min_replicas <= step.after <= policy.max_replicas


@settings(max_examples=300, deadline=None)
@given(
    policies(),
    loads,
    st.lists(st.tuples(st.integers(0, 50), st.integers(0, 10)), min_size=60, max_size=60),
    st.integers(0, 12),
)
def test_monotonic_in_load(
    policy: A.Policy, series: list[tuple[int, int]], extra: list[tuple[int, int]], current: int
) -> None:
    # The same moment, the same count: more load in any sample never means fewer replicas.
    current = max(policy.min_replicas, min(policy.max_replicas, current))
    more = [(i + a, q + b) for (i, q), (a, b) in zip(series, extra, strict=False)]
    now = (len(series) - 1) * STEP
    low, high = A.History(since=0.0), A.History(since=0.0)
    for k, ((i1, q1), (i2, q2)) in enumerate(zip(series, more, strict=True)):
        low = low.add(A.Sample(k * STEP, i1, q1), A.keep_seconds(policy))
        high = high.add(A.Sample(k * STEP, i2, q2), A.keep_seconds(policy))
    assert (
        A.decide(policy, high, current, now).replicas
        >= A.decide(policy, low, current, now).replicas
    )


@settings(max_examples=300, deadline=None)
@given(policies(), loads, st.integers(0, 12))
def test_no_flapping_inside_the_windows(
    policy: A.Policy, series: list[tuple[int, int]], start: int
) -> None:
    steps = run(policy, series, max(policy.min_replicas, min(policy.max_replicas, start)))
    changes = [s for s in steps if s.after != s.before]
    for step in changes:
        recs = [
            A.recommend(policy, s.sample)
            for s in steps
            if step.at - (policy.down_delay if step.after < step.before else policy.up_delay)
            <= s.at
            <= step.at
        ]
        if step.after > step.before:
            # Up only when every sample of the scale-up window asked for at least as many.
            assert min(recs) >= step.after
        elif step.after > 0:
            # Down only when no sample of the scale-down window asked for more.
            assert max(recs) <= step.after
            assert step.at >= policy.down_delay
    # Never down within the scale-down window (or the idle window) after an up, and
    # never up within the scale-up window after a down (one sample's slack).
    for first, second in itertools.pairwise(changes):
        gap = second.at - first.at
        went_up = first.after > first.before
        goes_down = second.after < second.before
        if went_up and goes_down:
            assert gap >= min(policy.down_delay, policy.zero_window)
        if not went_up and not goes_down and first.after < first.before:
            assert gap >= policy.up_delay - STEP


@settings(max_examples=200, deadline=None)
@given(policies(), st.integers(1, 12))
def test_constant_load_settles(policy: A.Policy, inflight: int) -> None:
    # With the load steady, the count changes at most twice (the bounds, then the load)
    # and then stays put: no oscillation.
    steps = run(policy, [(inflight, 0)] * 80, policy.max_replicas)
    tail = [s.after for s in steps[-20:]]
    assert len(set(tail)) == 1
    assert sum(1 for s in steps if s.after != s.before) <= 2
