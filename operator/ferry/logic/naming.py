"""Names, labels and annotation keys shared by the reconciler and the providers."""

from __future__ import annotations

import hashlib

FINALIZER = "ferry.dev/finalizer"
EXTERNAL_NAME = "ferry.dev/external-name"
# Crossplane's create-pending trio: "pending" is written (with a conflict-checked
# update) before a create is sent; "succeeded" or "failed" after the answer. A pending
# mark newer than both means the operator died mid-create: look before creating again.
CREATE_PENDING = "ferry.dev/external-create-pending"
CREATE_SUCCEEDED = "ferry.dev/external-create-succeeded"
CREATE_FAILED = "ferry.dev/external-create-failed"
PAUSED = "ferry.dev/paused"
FIELD_MANAGER = "ferry"

LABEL_ENDPOINT = "ferry.dev/endpoint"
LABEL_ENDPOINT_UID = "ferry.dev/endpoint-uid"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
MANAGED_BY = "ferry"


def endpoint_labels(instance: str, endpoint: str, uid: str | None) -> dict[str, str]:
    """Labels on everything Ferry creates for one endpoint; the UID tags it as ours.

    `instance` is the external name (the objects' own name), which can differ from
    the endpoint's name when an existing Deployment was adopted.
    """
    labels = {
        **selector_labels(instance),
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_ENDPOINT: endpoint,
    }
    if uid:
        labels[LABEL_ENDPOINT_UID] = uid
    return labels


def selector_labels(instance: str) -> dict[str, str]:
    """The immutable subset used as a Deployment selector, keyed by the external name."""
    return {LABEL_NAME: "ferry-endpoint", LABEL_INSTANCE: instance}


def is_paused(annotations: dict[str, str]) -> bool:
    return annotations.get(PAUSED, "").strip().lower() in {"true", "1", "yes"}


def short_hash(text: str, length: int = 8) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]
