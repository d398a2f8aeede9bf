"""Ferry's autoscaler decision: spec, load samples, current replicas, time -> replicas.

Pure. `decide(policy, history, current, now)` is the whole algorithm (decisions.md
D10, D12); `ferry.autoscaling` feeds it samples from the model servers' `/metrics`
(or Prometheus) and writes what it returns.

- Demand is in-flight requests against `scaling.targetInflightRequests` per replica:
  ceil(in-flight / target). Queue depth breaks the tie: with requests queued, a load
  that is an exact multiple of the target asks for one replica more.
- `bufferReplicas` idle replicas are kept above any non-zero demand.
- Windows are stabilization windows, as the HPA's: a scale up takes the lowest
  recommendation of the last `scaleUpDelay`, a scale down the highest of the last
  `scaleDownDelay`, so load must stay high (low) for the whole window, and a window
  longer than the samples seen so far (after a restart) does not act yet.
- With minReplicas 0, the count goes to zero after `scaleToZeroAfter` of no load at
  all (the scale-down window when unset), and never below one before that.
- The result is always within [minReplicas, maxReplicas]; a count found outside is
  brought back at once.

Times are seconds on one clock (the caller's, monotonic in practice).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ferry.api.v1alpha1 import types
from ferry.logic import defaults

#: Windows when the spec sets none: scale up at once (as the HPA), down after 5 min.
SCALE_UP_DELAY_SECONDS = 0.0
SCALE_DOWN_DELAY_SECONDS = 300.0


@dataclass(frozen=True)
class Policy:
    """The autoscaling fields of one endpoint, defaults applied; seconds."""

    min_replicas: int
    max_replicas: int
    target: int
    buffer: int = 0
    up_delay: float = SCALE_UP_DELAY_SECONDS
    down_delay: float = SCALE_DOWN_DELAY_SECONDS
    #: Idle time before zero (minReplicas 0); None: the scale-down window.
    zero_after: float | None = None

    @staticmethod
    def from_spec(spec: types.InferenceEndpointSpec) -> Policy:
        """The policy of a local endpoint under Ferry's autoscaler."""
        scaling = spec.scaling
        up = defaults.scale_up_delay_seconds(spec)
        down = defaults.scale_down_delay_seconds(spec)
        return Policy(
            min_replicas=scaling.min_replicas,
            max_replicas=scaling.max_replicas,
            target=defaults.target_inflight(spec) or defaults.TARGET_INFLIGHT_REQUESTS,
            buffer=defaults.buffer_replicas(spec),
            up_delay=up if up is not None else SCALE_UP_DELAY_SECONDS,
            down_delay=down if down is not None else SCALE_DOWN_DELAY_SECONDS,
            zero_after=defaults.scale_to_zero_after_seconds(spec),
        )

    @property
    def zero_window(self) -> float:
        """Seconds without load before zero: scaleToZeroAfter, else the down window."""
        return self.zero_after if self.zero_after is not None else self.down_delay


@dataclass(frozen=True)
class Sample:
    """Load summed over the ready replicas at one moment: requests in flight (queued
    ones included, as the model server counts them) and requests queued."""

    at: float
    inflight: float
    queue: float = 0.0

    @property
    def busy(self) -> bool:
        """Whether any request was in flight or queued."""
        return self.inflight > 0 or self.queue > 0


@dataclass(frozen=True)
class History:
    """Samples since `since` (oldest first, only as far back as the longest window),
    and the last time any showed load (None: none since `since`)."""

    since: float
    samples: tuple[Sample, ...] = ()
    last_busy: float | None = None

    def add(self, sample: Sample, keep: float) -> History:
        """This history with `sample` appended and samples older than `keep` s dropped."""
        cutoff = sample.at - keep
        kept = tuple(s for s in self.samples if s.at >= cutoff)
        return History(
            since=self.since,
            samples=(*kept, sample),
            last_busy=sample.at if sample.busy else self.last_busy,
        )


@dataclass(frozen=True)
class Decision:
    """Replicas to run (within the bounds), why (CamelCase) and a sentence."""

    replicas: int
    reason: str
    message: str


def demand(policy: Policy, sample: Sample) -> int:
    """Replicas the load of `sample` needs, before buffer and bounds."""
    load = max(0.0, sample.inflight)
    need = math.ceil(load / policy.target)
    if sample.queue > 0:
        need = max(need, math.floor(load / policy.target) + 1)
    return need


def recommend(policy: Policy, sample: Sample) -> int:
    """Replicas for `sample` alone: demand plus buffer, within the bounds."""
    need = demand(policy, sample)
    wanted = need + policy.buffer if need > 0 else 0
    return max(policy.min_replicas, min(policy.max_replicas, wanted))


def keep_seconds(policy: Policy) -> float:
    """How far back `decide` looks at samples."""
    return max(policy.up_delay, policy.down_delay)


def decide(policy: Policy, history: History, current: int, now: float) -> Decision:
    """Replicas to run next; see the module docstring. Never outside the bounds."""
    lo, hi = policy.min_replicas, policy.max_replicas
    if current < lo:
        return Decision(lo, "BelowMinimum", f"{current} replica(s) is below minReplicas {lo}")
    if current > hi:
        return Decision(hi, "AboveMaximum", f"{current} replica(s) is above maxReplicas {hi}")
    if not history.samples:
        return Decision(current, "NoLoadSignal", "no load samples yet; keeping the count")
    observed = now - history.since
    idle_for = now - (history.last_busy if history.last_busy is not None else history.since)
    idle = not history.samples[-1].busy
    if lo == 0 and current > 0 and idle and idle_for >= policy.zero_window:
        return Decision(0, "ScaledToZero", f"no requests for {idle_for:.0f}s")
    floor = 1 if lo == 0 and current > 0 else lo

    up_window = [s for s in history.samples if s.at >= now - policy.up_delay]
    if not up_window:
        up_window = [history.samples[-1]]
    if observed >= policy.up_delay or policy.up_delay == 0:
        up = min(recommend(policy, s) for s in up_window)
        if up > current:
            load = history.samples[-1]
            return Decision(
                up,
                "LoadAbove",
                f"{load.inflight:g} request(s) in flight, {load.queue:g} queued, target"
                f" {policy.target} per replica"
                + (f" for {policy.up_delay:g}s" if policy.up_delay else ""),
            )
    if observed >= policy.down_delay:
        down_window = [s for s in history.samples if s.at >= now - policy.down_delay]
        down = max(max(recommend(policy, s) for s in down_window), floor)
        if down < current:
            return Decision(
                down,
                "LoadBelow",
                f"load has needed at most {down} replica(s) for {policy.down_delay:g}s",
            )
    return Decision(current, "LoadSteady", f"{current} replica(s) fit the load")
