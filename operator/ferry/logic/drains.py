"""Planning a drain: which pods to replace, take out of service and evict, and when.

Pure: `plan(...)` takes what the drain controller (`ferry.draining`) read — the
endpoint's pods, the notices on their nodes, the normal replica count, the record
of the drain so far and the time — and returns what to do next. Nothing here
talks to Kubernetes.

The order it keeps (decisions.md D10, D11):

1. Replacement first: the surge is one replica per doomed pod (a pod on a noticed
   node), above the normal count for as long as needed, even at maxReplicas.
2. Out of service, then drained: a doomed pod leaves service (its readiness gate
   False, so Services stop sending to it) only once enough replacements are Ready
   to keep the normal count serving; its in-flight requests finish on SIGTERM.
3. Removed: a pod out of service, no longer Ready and with no request left in
   flight (or after drainGraceSeconds of waiting) is evicted, and the surge drops by
   one, so the ReplicaSet ends with the replacements, not the doomed pods. Waiting
   for its requests before the SIGTERM means none of them meets a server that has
   stopped accepting, however long they queued in it.

A termination notice has a deadline: at the cutoff (deadline - drainGraceSeconds -
a propagation margin) every doomed pod goes through 2 and 3 whether or not its
replacement is Ready, and so it does at once when no node can take a replacement
("the window is too short"; "no room anywhere": the fastest safe drain). A voluntary
drain (a cordon, Karpenter consolidation) has no deadline and always waits for its
replacement: the PodDisruptionBudget holds the drainer meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

from ferry.logic import spot

#: The readiness gate Ferry controls (pods are Ready only while it is True).
GATE = "ferry.dev/in-service"
#: ReplicaSets remove pods of lower cost first when they scale down.
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
DOOMED_COST = "-1000000"
#: Seconds between a pod leaving service and the node going, beyond the drain grace:
#: the model server's propagation delay (5 s by default) plus slack.
PROPAGATION_MARGIN = 10.0

Mode = Literal["ferry", "external"]


@dataclass(frozen=True)
class Pod:
    """What a drain needs to know about one pod of the endpoint."""

    name: str
    node: str | None
    running: bool
    ready: bool
    #: The readiness gate's condition: True, False, or None while unset.
    in_service: bool | None
    terminating: bool = False
    #: The scheduler's message while the pod cannot be placed.
    unschedulable: str | None = None
    #: Created by the temporary surge Deployment (scaling.autoscaler: external).
    surge: bool = False
    #: Requests still in flight in it: True/False as its metrics said, None unknown.
    busy: bool | None = None

    @staticmethod
    def from_object(obj: dict[str, Any], surge_label: str) -> Pod:
        """Read a Pod dict as the API server returns it."""
        meta = obj.get("metadata") or {}
        status = obj.get("status") or {}
        conds = {c.get("type"): c for c in status.get("conditions") or []}
        gate = conds.get(GATE)
        scheduled = conds.get("PodScheduled") or {}
        unschedulable = None
        if scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
            unschedulable = scheduled.get("message") or "no node can run this pod"
        return Pod(
            name=meta.get("name") or "",
            node=(obj.get("spec") or {}).get("nodeName"),
            running=status.get("phase") == "Running",
            ready=(conds.get("Ready") or {}).get("status") == "True",
            in_service=None if gate is None else gate.get("status") == "True",
            terminating=bool(meta.get("deletionTimestamp")),
            unschedulable=unschedulable,
            surge=(meta.get("labels") or {}).get(surge_label) == "true",
        )


@dataclass(frozen=True)
class NodeRecord:
    """A noticed node as the drain first saw it."""

    style: str
    seen: str
    deadline: str | None
    termination: bool


@dataclass(frozen=True)
class Record:
    """The drain so far, kept on the Deployment so a restarted operator resumes it.

    Times are RFC 3339; `out`, `evicted` and `removed` name pods already through
    those steps, so each event is posted once.
    """

    since: str
    nodes: dict[str, NodeRecord] = field(default_factory=dict)
    replaced_at: str | None = None
    shortcut: str | None = None
    out: tuple[str, ...] = ()
    evicted: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    #: When each pod left service.
    out_at: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The annotation's JSON value."""
        return {
            "since": self.since,
            "nodes": {
                name: {
                    "style": n.style,
                    "seen": n.seen,
                    "deadline": n.deadline,
                    "termination": n.termination,
                }
                for name, n in sorted(self.nodes.items())
            },
            "replacedAt": self.replaced_at,
            "shortcut": self.shortcut,
            "out": list(self.out),
            "evicted": list(self.evicted),
            "removed": list(self.removed),
            "outAt": dict(sorted(self.out_at.items())),
        }

    @staticmethod
    def from_json(doc: Any) -> Record | None:
        """The record an annotation holds; None when it is missing or unreadable."""
        if not isinstance(doc, dict) or not isinstance(doc.get("since"), str):
            return None
        nodes = {}
        for name, n in (doc.get("nodes") or {}).items():
            if isinstance(n, dict) and isinstance(n.get("seen"), str):
                nodes[str(name)] = NodeRecord(
                    style=str(n.get("style") or ""),
                    seen=n["seen"],
                    deadline=n.get("deadline") if isinstance(n.get("deadline"), str) else None,
                    termination=bool(n.get("termination")),
                )
        return Record(
            since=doc["since"],
            nodes=nodes,
            replaced_at=doc.get("replacedAt") if isinstance(doc.get("replacedAt"), str) else None,
            shortcut=doc.get("shortcut") if isinstance(doc.get("shortcut"), str) else None,
            out=tuple(str(p) for p in doc.get("out") or []),
            evicted=tuple(str(p) for p in doc.get("evicted") or []),
            removed=tuple(str(p) for p in doc.get("removed") or []),
            out_at={str(k): v for k, v in (doc.get("outAt") or {}).items() if isinstance(v, str)},
        )


@dataclass(frozen=True)
class Event:
    """An event to post on the endpoint: type (Normal|Warning), reason, message."""

    type: str
    reason: str
    message: str


@dataclass(frozen=True)
class Interruption:
    """The SpotInterrupted condition while a termination drain runs."""

    reason: str
    message: str


@dataclass(frozen=True)
class Plan:
    """What the drain controller does next.

    `surge` is the replicas wanted above the normal count (ferry mode: raised on the
    Deployment; external mode: the surge Deployment's count). Evictions run before
    the surge changes; when the plan lowers the surge instead of evicting, the
    ReplicaSet removes the doomed pods itself (they rank first) and starts nothing
    in their place.
    """

    gate_true: tuple[str, ...] = ()
    out_of_service: tuple[str, ...] = ()
    evict: tuple[str, ...] = ()
    surge: int = 0
    record: Record | None = None
    interruption: Interruption | None = None
    events: tuple[Event, ...] = ()
    #: Seconds until something is due (a cutoff); None when only events matter.
    wake_after: float | None = None
    #: The surge Deployment's pods are out of service and can go (external mode).
    remove_surge: bool = False


def _stamp(t: datetime) -> str:
    # Milliseconds: drain steps are often less than a second apart.
    return t.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _secs(since: str, now: datetime) -> float:
    start = spot.parse_time(since)
    return max(0.0, (now - start).total_seconds()) if start is not None else 0.0


def plan(
    *,
    pods: list[Pod],
    notices: dict[str, spot.Notice],
    normal: int,
    applied_surge: int,
    mode: Mode,
    drain_grace: float,
    record: Record | None,
    now: datetime,
) -> Plan:
    """The next steps of the endpoint's drain (see the module docstring).

    `pods`: the endpoint's pods (the surge Deployment's included); `notices`: node
    name -> notice, for nodes under those pods; `normal`: the replica count without
    surge; `applied_surge`: the surge the replica count carries now (ferry mode) or
    the surge Deployment's count (external); `drain_grace`: spot.drainGraceSeconds;
    `record`: the drain so far, None when none runs. Never raises.
    """
    live = [p for p in pods if not p.terminating]
    doomed = [p for p in live if p.node is not None and p.node in notices]
    keep = [p for p in live if p not in doomed]
    # A new pod gets its gate True as soon as it is seen, so it serves once ready;
    # a pod whose node's notice went away (an uncordon) serves again.
    gate_true = tuple(p.name for p in keep if p.in_service is not True)
    events: list[Event] = []
    if record is not None:
        record, events = _gone(record, live, now)

    if not doomed:
        return _finish(keep, normal, applied_surge, mode, record, now, gate_true, events)

    rec = record or Record(since=_stamp(now))
    rec, noticed = _notice(rec, doomed, notices, now)
    events.extend(noticed)

    deadlines = [d for n in rec.nodes.values() if (d := _parse(n.deadline)) is not None]
    cutoff = min(deadlines).timestamp() - drain_grace - PROPAGATION_MARGIN if deadlines else None
    past_cutoff = cutoff is not None and now.timestamp() >= cutoff
    termination = any(rec.nodes[p.node].termination for p in doomed if p.node in rec.nodes)

    ready_keep = sum(1 for p in keep if p.ready)
    pending = [p for p in keep if not p.ready]
    no_room = ready_keep < normal and bool(pending) and all(p.unschedulable for p in pending)
    if termination and rec.shortcut is None and ready_keep < normal and (past_cutoff or no_room):
        rec = replace(rec, shortcut="NoticeTooShort" if past_cutoff else "NoCapacityForReplacement")
        why = (
            "the notice leaves too little time to start a replacement"
            if past_cutoff
            else f"no node can run a replacement ({pending[0].unschedulable})"
        )
        events.append(
            Event(
                "Warning",
                "DrainWithoutReplacement",
                f"{why}; draining {len(doomed)} pod(s) now, each with {drain_grace:.0f}s to"
                f" finish its requests, {_secs(rec.since, now):.1f}s after the notice",
            )
        )
    if rec.replaced_at is None and ready_keep >= normal:
        rec = replace(rec, replaced_at=_stamp(now))
        events.append(
            Event(
                "Normal",
                "ReplacementReady",
                f"{ready_keep} replica(s) Ready off the noticed node(s)"
                f" {_secs(rec.since, now):.1f}s after the notice",
            )
        )

    # 2. Out of service, keeping `normal` replicas serving while replacements come up.
    serving = [p for p in doomed if p.ready and p.in_service is not False]
    if rec.shortcut is not None:
        allowed = len(serving)
    else:
        allowed = max(0, min(len(serving), ready_keep + len(serving) - normal))
    # Doomed pods that serve nothing (still starting) leave at no cost.
    idle = [p for p in doomed if not p.ready and p.in_service is not False]
    out = tuple(p.name for p in [*serving[:allowed], *idle])
    events += _steps(
        rec, doomed, out, rec.out, now, "OutOfService",
        "pod {pod} on node {node} out of service (readiness gate " + GATE + " False)",
    )  # fmt: skip
    out_at = {**{name: _stamp(now) for name in out if name not in rec.out_at}, **rec.out_at}
    rec = replace(rec, out=tuple(dict.fromkeys([*rec.out, *out])), out_at=out_at)

    # 3. Removal, once out of service, no longer Ready, and its requests done (an
    # unknown count is taken as done: the server still drains on SIGTERM).
    def drained(pod: Pod) -> bool:
        left = _parse(rec.out_at.get(pod.name))
        waited = (now - left).total_seconds() if left is not None else drain_grace
        return not pod.busy or waited >= drain_grace or past_cutoff

    removable = [p for p in doomed if p.in_service is False and not p.ready and drained(p)]
    surge = len(doomed)
    evict: tuple[str, ...] = ()
    if removable:
        after = surge - len(removable)
        # With every other pod running and Ready, the ReplicaSet ranks these first (not
        # Ready, lowest deletion cost): lowering the count removes them and starts
        # nothing new. With a replacement still pending it would remove that one
        # instead, so evict first (and the lower count then drops what the
        # ReplicaSet started meanwhile).
        if mode == "ferry" and all(p.ready for p in keep) and applied_surge > after:
            surge = after
        else:
            evict = tuple(p.name for p in removable)
            surge = after
    events += _steps(
        rec, doomed, evict, rec.evicted, now, "Evicted", "evicting pod {pod} from node {node}"
    )
    rec = replace(rec, evicted=tuple(dict.fromkeys([*rec.evicted, *evict])))

    if mode == "external":
        # The surge Deployment covers what the main one lacks until its own
        # replacements (the ReplicaSet recreates evicted pods) are Ready.
        main_ready = sum(1 for p in keep if p.ready and not p.surge)
        surge = max(len(doomed), normal - main_ready, 0)

    wake = None
    if cutoff is not None and not past_cutoff:
        wake = max(0.5, cutoff - now.timestamp())
    return Plan(
        gate_true=gate_true,
        out_of_service=out,
        evict=evict,
        surge=surge,
        record=rec,
        interruption=_interruption(rec, doomed, ready_keep, normal, now) if termination else None,
        events=tuple(events),
        wake_after=wake,
    )


def _steps(
    rec: Record,
    doomed: list[Pod],
    names: tuple[str, ...],
    done: tuple[str, ...],
    now: datetime,
    reason: str,
    text: str,
) -> list[Event]:
    """An event per pod of `names` not yet through this step, with its timing."""
    return [
        Event(
            "Normal",
            reason,
            text.format(pod=pod.name, node=pod.node)
            + f" {_secs(rec.since, now):.1f}s after the notice",
        )
        for pod in doomed
        if pod.name in names and pod.name not in done
    ]


def _notice(
    rec: Record, doomed: list[Pod], notices: dict[str, spot.Notice], now: datetime
) -> tuple[Record, list[Event]]:
    """Record each newly noticed node, with an event saying what comes next."""
    nodes = dict(rec.nodes)
    events = []
    for name in sorted({p.node for p in doomed if p.node is not None} - set(nodes)):
        note = notices[name]
        deadline = note.deadline_from(now)
        nodes[name] = NodeRecord(
            note.style, _stamp(now), _stamp(deadline) if deadline else None, note.termination
        )
        count = sum(1 for p in doomed if p.node == name)
        when = ""
        if deadline is not None:
            left = max(0.0, (deadline - now).total_seconds())
            guess = ", estimated" if note.deadline is None else ""
            when = f"; it goes at {_stamp(deadline)} (in {left:.0f}s{guess})"
        events.append(
            Event(
                "Warning" if note.termination else "Normal",
                "TerminationNotice" if note.termination else "NodeDraining",
                f"node {name}: {note.detail}{when}; starting {count} replacement(s) before"
                f" draining {count} pod(s)",
            )
        )
    return replace(rec, nodes=nodes), events


def _gone(rec: Record, live: list[Pod], now: datetime) -> tuple[Record, list[Event]]:
    """Events for doomed pods that have left since the last pass."""
    names = {p.name for p in live}
    events = []
    removed = list(rec.removed)
    for name in [*rec.out, *rec.evicted]:
        if name in names or name in removed:
            continue
        removed.append(name)
        how = "evicted" if name in rec.evicted else "removed by its ReplicaSet as the surge ended"
        events.append(
            Event(
                "Normal",
                "PodDrained",
                f"pod {name} is gone ({how}) {_secs(rec.since, now):.1f}s after the notice",
            )
        )
    return replace(rec, removed=tuple(removed)), events


def _parse(stamp: str | None) -> datetime | None:
    return spot.parse_time(stamp) if stamp else None


def _interruption(
    rec: Record, doomed: list[Pod], ready_keep: int, normal: int, now: datetime
) -> Interruption:
    nodes = ", ".join(sorted(rec.nodes))
    left = [f"{name} goes at {n.deadline}" for name, n in sorted(rec.nodes.items()) if n.deadline]
    when = f" ({'; '.join(left)})" if left else ""
    # No running clock in here: the condition changes only when the drain moves.
    progress = (
        f"{ready_keep}/{normal} replica(s) Ready elsewhere, {len(doomed)} pod(s) still on"
        f" the noticed node(s) since {rec.since}"
    )
    if rec.shortcut == "NoCapacityForReplacement":
        return Interruption(
            "NoCapacityForReplacement",
            f"termination notice for {nodes}{when}; no node can run a replacement, so the"
            f" noticed pods drain without one: {progress}",
        )
    if rec.shortcut == "NoticeTooShort":
        return Interruption(
            "NoticeTooShort",
            f"termination notice for {nodes}{when}; too little time to start a replacement,"
            f" so the noticed pods drain without one: {progress}",
        )
    reason = "ReplacingNoticedReplicas" if ready_keep < normal else "DrainingNoticedReplicas"
    return Interruption(reason, f"termination notice for {nodes}{when}: {progress}")


def _finish(
    keep: list[Pod],
    normal: int,
    applied_surge: int,
    mode: Mode,
    record: Record | None,
    now: datetime,
    gate_true: tuple[str, ...],
    events: list[Event],
) -> Plan:
    """No doomed pod left: return to the normal count and close the record."""
    if record is None:
        return Plan(gate_true=gate_true)
    if mode == "external":
        # The surge Deployment stays until the main one serves the normal count
        # again; then its pods leave service before it goes.
        main_ready = sum(1 for p in keep if p.ready and not p.surge)
        surge_pods = [p for p in keep if p.surge]
        if main_ready < normal and surge_pods:
            return Plan(
                gate_true=gate_true, surge=applied_surge, record=record, events=tuple(events)
            )
        gate_true = tuple(n for n in gate_true if not any(p.name == n and p.surge for p in keep))
        leaving = tuple(p.name for p in surge_pods if p.in_service is not False)
        if leaving or any(p.ready for p in surge_pods):
            return Plan(
                gate_true=gate_true,
                out_of_service=leaving,
                surge=applied_surge,
                record=record,
                events=tuple(events),
            )
    replaced = (
        f"replacements Ready after {_secs(record.since, _parse(record.replaced_at) or now):.1f}s, "
        if record.replaced_at
        else "without replacements, "
    )
    events.append(
        Event(
            "Normal",
            "DrainComplete",
            f"drained {', '.join(sorted(record.nodes)) or 'the noticed nodes'}: {replaced}last"
            f" noticed pod gone after {_secs(record.since, now):.1f}s; back to {normal}"
            " replica(s)",
        )
    )
    return Plan(
        gate_true=gate_true,
        surge=0,
        record=None,
        events=tuple(events),
        remove_surge=mode == "external",
    )
