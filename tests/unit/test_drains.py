"""Drain planning step by step: replacement first, out of service, removal, the shortcuts.

Pure: pods and notices are built here, time is a variable the test moves.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from ferry.logic import drains, spot

T0 = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)
SPOT_ITN = spot.Notice("aws-node-termination-handler/spot-itn", "taint", True, window=120.0)
CORDON = spot.Notice("cordon", "cordon (a voluntary drain)", False)


def pod(
    name: str,
    node: str | None = "safe",
    *,
    ready: bool = True,
    gate: bool | None = True,
    unschedulable: str | None = None,
    surge: bool = False,
    terminating: bool = False,
) -> drains.Pod:
    return drains.Pod(
        name=name,
        node=node,
        running=node is not None and unschedulable is None,
        ready=ready,
        in_service=gate,
        terminating=terminating,
        unschedulable=unschedulable,
        surge=surge,
    )


def plan(
    pods: list[drains.Pod],
    *,
    notice: spot.Notice = SPOT_ITN,
    normal: int = 1,
    applied: int = 0,
    mode: drains.Mode = "ferry",
    grace: float = 30.0,
    record: drains.Record | None = None,
    at: float = 0.0,
) -> drains.Plan:
    return drains.plan(
        pods=pods,
        notices={"doomed": notice},
        normal=normal,
        applied_surge=applied,
        mode=mode,
        drain_grace=grace,
        record=record,
        now=T0 + timedelta(seconds=at),
    )


def reasons(p: drains.Plan) -> list[str]:
    return [e.reason for e in p.events]


def test_a_notice_asks_for_replacements_first_and_takes_nothing_out() -> None:
    first = plan([pod("old", "doomed")])
    assert first.surge == 1
    assert first.out_of_service == ()
    assert first.evict == ()
    assert reasons(first) == ["TerminationNotice"]
    assert "in 120s, estimated" in first.events[0].message
    assert first.interruption is not None
    assert first.interruption.reason == "ReplacingNoticedReplicas"
    # Woken again at the cutoff: deadline - drain grace - the propagation margin.
    assert first.wake_after == 120.0 - 30.0 - drains.PROPAGATION_MARGIN
    assert first.record is not None
    assert first.record.nodes["doomed"].deadline == "2026-11-30T12:02:00.000Z"


def test_the_doomed_pod_leaves_service_once_its_replacement_is_ready() -> None:
    first = plan([pod("old", "doomed")])
    # The replacement is starting: the doomed pod keeps serving.
    waiting = plan(
        [pod("old", "doomed"), pod("new", ready=False, gate=None)],
        applied=1,
        record=first.record,
        at=3,
    )
    assert waiting.out_of_service == ()
    assert waiting.gate_true == ("new",)
    assert reasons(waiting) == []
    ready = plan([pod("old", "doomed"), pod("new")], applied=1, record=waiting.record, at=40)
    assert ready.out_of_service == ("old",)
    assert reasons(ready) == ["ReplacementReady", "OutOfService"]
    assert "40.0s after the notice" in ready.events[0].message
    assert ready.surge == 1
    assert ready.interruption is not None
    assert ready.interruption.reason == "DrainingNoticedReplicas"


def test_removal_lowers_the_count_first_when_every_replacement_is_ready() -> None:
    rec = plan([pod("old", "doomed")]).record
    out = pod("old", "doomed", ready=False, gate=False)
    lowered = plan([out, pod("new")], applied=1, record=rec, at=41)
    # The ReplicaSet removes the unready, cheapest pod itself: nothing to evict yet.
    assert (lowered.surge, lowered.evict) == (0, ())
    # Once lowered, a doomed pod still there is evicted (the ReplicaSet chose otherwise).
    after = plan([out, pod("new")], applied=0, record=lowered.record, at=42)
    assert after.evict == ("old",)
    assert reasons(after) == ["Evicted"]


def test_removal_evicts_first_while_a_replacement_is_pending() -> None:
    # Two doomed pods, one replacement Ready and one still starting: lowering the
    # count now would make the ReplicaSet remove the starting one.
    rec = plan([pod("a", "doomed"), pod("b", "doomed")], normal=2).record
    pods = [
        pod("a", "doomed", ready=False, gate=False),
        pod("b", "doomed"),
        pod("new1"),
        pod("new2", ready=False),
    ]
    step = plan(pods, normal=2, applied=2, record=rec, at=30)
    assert step.evict == ("a",)
    assert step.surge == 1
    assert step.out_of_service == ()


def test_one_replica_at_a_time_leaves_service_as_replacements_come_up() -> None:
    doomed = [pod("a", "doomed"), pod("b", "doomed")]
    rec = plan(doomed, normal=2).record
    one_ready = plan(
        [*doomed, pod("n1"), pod("n2", ready=False)], normal=2, applied=2, record=rec, at=20
    )
    assert one_ready.out_of_service == ("a",)
    both = plan(
        [pod("a", "doomed", ready=False, gate=False), pod("b", "doomed"), pod("n1"), pod("n2")],
        normal=2,
        applied=2,
        record=one_ready.record,
        at=25,
    )
    assert both.out_of_service == ("b",)
    assert reasons(both) == ["ReplacementReady", "OutOfService"]


def test_no_room_anywhere_drains_at_once_and_says_so() -> None:
    rec = plan([pod("old", "doomed")]).record
    stuck = pod("new", None, ready=False, gate=None, unschedulable="0/5 nodes: Insufficient gpu")
    step = plan([pod("old", "doomed"), stuck], applied=1, record=rec, at=2)
    assert step.out_of_service == ("old",)
    assert reasons(step) == ["DrainWithoutReplacement", "OutOfService"]
    assert "Insufficient gpu" in step.events[0].message
    assert step.interruption is not None
    assert step.interruption.reason == "NoCapacityForReplacement"
    # Out of service and unready: evicted (the pending replacement stays, for when a
    # node arrives), and the surge goes.
    gone = plan(
        [pod("old", "doomed", ready=False, gate=False), stuck],
        applied=1,
        record=step.record,
        at=3,
    )
    assert gone.evict == ("old",)
    assert gone.surge == 0


def test_a_notice_shorter_than_the_drain_grace_drains_at_once() -> None:
    gke = spot.Notice("gke-shutdown", "graceful node shutdown", True, window=30.0)
    step = plan([pod("old", "doomed")], notice=gke, grace=60.0)
    assert step.out_of_service == ("old",)
    assert reasons(step) == ["TerminationNotice", "DrainWithoutReplacement", "OutOfService"]
    assert step.interruption is not None
    assert step.interruption.reason == "NoticeTooShort"


def test_the_cutoff_drains_without_the_replacement_it_waited_for() -> None:
    rec = plan([pod("old", "doomed")]).record
    slow = [pod("old", "doomed"), pod("new", ready=False)]
    before = plan(slow, applied=1, record=rec, at=79)
    assert before.out_of_service == ()
    at_cutoff = plan(slow, applied=1, record=rec, at=80)
    assert at_cutoff.out_of_service == ("old",)
    assert reasons(at_cutoff) == ["DrainWithoutReplacement", "OutOfService"]


def test_a_voluntary_drain_with_no_room_waits_for_its_replacement() -> None:
    rec = plan([pod("old", "doomed")], notice=CORDON).record
    stuck = pod("new", None, ready=False, gate=None, unschedulable="no node")
    step = plan([pod("old", "doomed"), stuck], notice=CORDON, applied=1, record=rec, at=600)
    assert step.out_of_service == ()
    assert step.evict == ()
    assert step.interruption is None  # not a spot interruption
    assert step.wake_after is None


def test_the_end_of_a_drain_returns_to_the_normal_count_with_timings() -> None:
    rec = plan([pod("old", "doomed")]).record
    assert rec is not None
    rec = replace(rec, out=("old",), replaced_at="2026-11-30T12:00:40.000Z")
    done = plan([pod("new")], applied=0, record=rec, at=42.5)
    assert done.record is None
    assert done.surge == 0
    assert reasons(done) == ["PodDrained", "DrainComplete"]
    assert "replacements Ready after 40.0s" in done.events[1].message
    assert "gone after 42.5s" in done.events[1].message


def test_a_restarted_operator_posts_nothing_twice() -> None:
    first = plan([pod("old", "doomed")])
    again = plan([pod("old", "doomed")], applied=1, record=first.record, at=1)
    assert reasons(again) == []
    round_trip = drains.Record.from_json(first.record.to_json() if first.record else None)
    assert round_trip == first.record


def test_an_uncordoned_node_serves_again() -> None:
    rec = plan([pod("old", "doomed")], notice=CORDON).record
    back = drains.plan(
        pods=[pod("old", "doomed", gate=False, ready=False), pod("new")],
        notices={},
        normal=1,
        applied_surge=1,
        mode="ferry",
        drain_grace=30,
        record=rec,
        now=T0 + timedelta(seconds=5),
    )
    assert "old" in back.gate_true
    assert back.surge == 0
    assert reasons(back) == ["DrainComplete"]


def test_external_mode_surges_with_a_second_deployment_until_the_main_one_recovers() -> None:
    rec = plan([pod("old", "doomed")], mode="external").record
    step = plan(
        [pod("old", "doomed", ready=False, gate=False), pod("s1", surge=True)],
        mode="external",
        applied=1,
        record=rec,
        at=30,
    )
    # Evicted (the HPA owns the count, so the ReplicaSet recreates it elsewhere).
    assert step.evict == ("old",)
    assert step.surge == 1
    # The main Deployment's replacement is not Ready yet: the surge stays.
    waiting = plan(
        [pod("s1", surge=True), pod("main2", ready=False)],
        mode="external",
        applied=1,
        record=step.record,
        at=31,
    )
    assert (waiting.surge, waiting.remove_surge, waiting.out_of_service) == (1, False, ())
    # Ready: the surge pods leave service first, then the surge Deployment goes.
    leaving = plan(
        [pod("s1", surge=True), pod("main2")],
        mode="external",
        applied=1,
        record=waiting.record,
        at=60,
    )
    assert leaving.out_of_service == ("s1",)
    assert leaving.remove_surge is False
    gone = plan(
        [pod("s1", surge=True, ready=False, gate=False), pod("main2")],
        mode="external",
        applied=1,
        record=leaving.record,
        at=61,
    )
    assert gone.remove_surge is True
    assert gone.record is None
    assert "s1" not in gone.gate_true


def test_a_pod_out_of_service_goes_once_its_requests_are_done() -> None:
    rec = plan([pod("old", "doomed")]).record
    out = plan([pod("old", "doomed"), pod("new")], applied=1, record=rec, at=10).record
    busy = replace(pod("old", "doomed", ready=False, gate=False), busy=True)
    waiting = plan([busy, pod("new")], applied=1, record=out, at=12)
    assert (waiting.surge, waiting.evict) == (1, ())  # its requests are still running
    done = plan([replace(busy, busy=False), pod("new")], applied=1, record=out, at=13)
    assert done.surge == 0
    # A server that never finishes gets drainGraceSeconds, then goes anyway.
    late = plan([busy, pod("new")], applied=1, record=out, at=10 + 30)
    assert late.surge == 0
