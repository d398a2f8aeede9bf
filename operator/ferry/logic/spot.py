"""Which nodes are going away: termination notices and drains, read from Node objects.

Pure functions over Node dicts (as the API server returns them). `notice(node)`
recognises every signal Ferry honours (decisions.md, "Scaling and drains"):

- aws-node-termination-handler: its taints (`aws-node-termination-handler/spot-itn`,
  `.../rebalance-recommendation`, `.../scheduled-maintenance`,
  `.../asg-lifecycle-termination`), or, with tainting off (its default), a cordon
  plus its `aws-node-termination-handler/action` or `/event-id` label;
- Karpenter: `karpenter.sh/disrupted:NoSchedule` (v1; `karpenter.sh/disruption` before);
- AKS node auto-drain: `remediator.kubernetes.azure.com/unschedulable`, with a cordon;
- GKE graceful node shutdown: the kubelet reports Ready=False "node is shutting down"
  (no taint);
- a plain cordon: a termination notice on a spot node, a voluntary drain elsewhere
  (`kubectl drain`, cluster upgrades);
- Ferry's own annotation `ferry.dev/termination-notice` (an RFC 3339 deadline, or any
  other value for "soon") for every other source;
- and a pod's own report (the model server's `ferry_spot_notice_deadline_seconds`,
  D11), which `reported(...)` turns into a notice for the pod's node.

A notice says whether the node is being terminated (a deadline applies, explicit or
the cloud's documented minimum from when Ferry first saw it) or voluntarily drained
(no deadline: a drain waits for its replacement, the PodDisruptionBudget holds it).
`ferry.draining` calls this for the nodes under an endpoint's pods.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

#: Ferry's annotation for signals no tool above covers: an RFC 3339 deadline.
NOTICE_ANNOTATION = "ferry.dev/termination-notice"

NTH = "aws-node-termination-handler"
NTH_TAINTS = {
    f"{NTH}/spot-itn": "a spot interruption notice",
    f"{NTH}/asg-lifecycle-termination": "an Auto Scaling group termination",
    f"{NTH}/scheduled-maintenance": "a scheduled maintenance event",
    f"{NTH}/rebalance-recommendation": "a rebalance recommendation",
}
NTH_LABELS = (f"{NTH}/action", f"{NTH}/event-id")
KARPENTER_TAINTS = ("karpenter.sh/disrupted", "karpenter.sh/disruption")
AKS_TAINT = "remediator.kubernetes.azure.com/unschedulable"
SHUTDOWN_MESSAGE = "node is shutting down"

#: The capacity-type labels of the common clouds and autoscalers: (key, spot value).
SPOT_LABELS: tuple[tuple[str, str], ...] = (
    ("karpenter.sh/capacity-type", "spot"),
    ("eks.amazonaws.com/capacityType", "SPOT"),
    ("cloud.google.com/gke-spot", "true"),
    ("cloud.google.com/gke-preemptible", "true"),
    ("kubernetes.azure.com/scalesetpriority", "spot"),
)

#: Documented minimum warnings: AWS spot 2 minutes; GCE/GKE and Azure spot 30 s.
AWS_WINDOW = 120.0
GCP_WINDOW = 30.0
AZURE_WINDOW = 30.0


@dataclass(frozen=True)
class Notice:
    """Why a node is going away.

    `style` names the signal (a taint key, `cordon`, `gke-shutdown`, ...);
    `termination` is True when the node will be terminated, False for a voluntary
    drain. A termination has either an explicit `deadline` or a `window` in seconds
    counted from when Ferry first saw the notice (the cloud's documented minimum).
    """

    style: str
    detail: str
    termination: bool
    deadline: datetime | None = None
    window: float | None = None

    def deadline_from(self, first_seen: datetime) -> datetime | None:
        """When the node goes: the explicit deadline, else first sighting + window."""
        if self.deadline is not None:
            return self.deadline
        if self.window is not None:
            return first_seen + timedelta(seconds=self.window)
        return None


def is_spot(labels: dict[str, str]) -> bool:
    """Whether a node's labels say it is spot (preemptible) capacity."""
    return any(labels.get(key, "").lower() == value.lower() for key, value in SPOT_LABELS)


def spot_window(labels: dict[str, str]) -> float:
    """The shortest documented warning for a spot node of this cloud, in seconds."""
    if any(key.startswith("cloud.google.com/") for key in labels):
        return GCP_WINDOW
    if any(key.startswith("kubernetes.azure.com/") for key in labels):
        return AZURE_WINDOW
    return AWS_WINDOW


def parse_time(value: str) -> datetime | None:
    """An RFC 3339 timestamp as an aware datetime (UTC when it names no zone), or None."""
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _taints(node: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t.get("key", ""): t for t in (node.get("spec") or {}).get("taints") or []}


def _shutting_down(node: dict[str, Any]) -> dict[str, Any] | None:
    for cond in (node.get("status") or {}).get("conditions") or []:
        if (
            cond.get("type") == "Ready"
            and cond.get("status") != "True"
            and SHUTDOWN_MESSAGE in (cond.get("message") or "")
        ):
            return dict(cond)
    return None


def notice(node: dict[str, Any]) -> Notice | None:
    """The notice a Node carries, or None when nothing says it is going away.

    The strongest signal wins: an explicit deadline over an estimated one, a
    termination over a voluntary drain.
    """
    meta = node.get("metadata") or {}
    labels: dict[str, str] = meta.get("labels") or {}
    annotations: dict[str, str] = meta.get("annotations") or {}
    taints = _taints(node)
    cordoned = bool((node.get("spec") or {}).get("unschedulable"))
    spot = is_spot(labels)
    window = spot_window(labels)

    raw = annotations.get(NOTICE_ANNOTATION)
    if raw is not None:
        when = parse_time(raw)
        detail = f"annotation {NOTICE_ANNOTATION}={raw}"
        if when is not None:
            return Notice(NOTICE_ANNOTATION, detail, True, deadline=when)
        return Notice(NOTICE_ANNOTATION, detail, True, window=window)
    for key, what in NTH_TAINTS.items():
        if key in taints:
            detail = f"taint {key} ({what})"
            if key.endswith("/spot-itn"):
                return Notice(key, detail, True, window=AWS_WINDOW)
            if key.endswith("/asg-lifecycle-termination"):
                return Notice(key, detail, True, window=AWS_WINDOW)
            return Notice(key, detail, False)
    shutdown = _shutting_down(node)
    if shutdown is not None:
        since = parse_time(shutdown.get("lastTransitionTime") or "")
        detail = f"graceful node shutdown ({shutdown.get('message')})"
        if since is not None:
            return Notice("gke-shutdown", detail, True, deadline=since + timedelta(seconds=window))
        return Notice("gke-shutdown", detail, True, window=window)
    if AKS_TAINT in taints:
        return Notice(AKS_TAINT, f"taint {AKS_TAINT} (AKS node auto-drain)", True, window=window)
    for key in KARPENTER_TAINTS:
        if key in taints:
            detail = f"taint {key} (Karpenter disruption)"
            # Karpenter taints spot nodes it was told are interrupted, and every node it
            # consolidates or replaces; only the first has a deadline.
            return Notice(key, detail, spot, window=window if spot else None)
    if cordoned:
        nth = [label for label in NTH_LABELS if label in labels]
        if nth:
            event = labels.get(f"{NTH}/event-id", "")
            termination = spot or event.startswith(("spot-itn", "asg-lifecycle"))
            detail = f"cordon with label {nth[0]}={labels[nth[0]]}"
            return Notice(nth[0], detail, termination, window=AWS_WINDOW if termination else None)
        if spot:
            return Notice("cordon", "cordon of a spot node", True, window=window)
        return Notice("cordon", "cordon (a voluntary drain)", False)
    return None


def reported(deadline_unix: float, pod: str) -> Notice:
    """The notice a model server reported for its own node (D11)."""
    deadline = datetime.fromtimestamp(deadline_unix, tz=UTC)
    return Notice(
        "pod-report",
        f"the model server in pod {pod} saw a spot notice (deadline {deadline:%H:%M:%SZ})",
        True,
        deadline=deadline,
    )
