"""Names, labels and annotation keys shared by the reconciler and the providers.

Also the one rule for names Ferry derives from an endpoint's: `fit` turns any name
the API server accepts for an InferenceEndpoint (a DNS subdomain of up to 253
characters) into one a platform or a label accepts, shortening with a hash rather
than failing.
"""

from __future__ import annotations

import hashlib
import re

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
# Secrets leave the cluster only when they say where they may go (decisions.md,
# "Secrets leaving the cluster"): the providers, and any non-default base URLs.
EXPORT_TO = "ferry.dev/export-to"
EXPORT_BASE_URLS = "ferry.dev/export-base-urls"

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
        # A label value holds at most 63 characters; an endpoint name may hold 253.
        # Watches map objects back to their endpoint by ownerReference, not by this.
        LABEL_ENDPOINT: fit(endpoint),
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


#: Longest external name, and of a Kubernetes label value.
MAX_NAME = 63
_INVALID = re.compile(r"[^a-z0-9-]+")


def fit(name: str, *, max_length: int = MAX_NAME, prefix: str = "") -> str:
    """`prefix + name` as lowercase letters, digits and dashes, starting with a letter.

    A name that already fits is returned unchanged; any other gets a hash of the
    original as a suffix, so two different names never fit to the same one.
    Shape: at most `max_length` characters, no leading or trailing dash.
    """
    wanted = f"{prefix}{name}"
    cleaned = _INVALID.sub("-", wanted.lower()).strip("-")
    if cleaned and not cleaned[0].isalpha():
        cleaned = f"x-{cleaned}"
    if cleaned == wanted and len(cleaned) <= max_length:
        return cleaned
    digest = short_hash(wanted)
    head = cleaned[: max_length - len(digest) - 1].rstrip("-") or "x"
    return f"{head}-{digest}"


def platform_name(namespace: str, name: str) -> str:
    """A remote resource's name for an endpoint: `ferry-<namespace>-<name>`, fitted."""
    return fit(f"{namespace}-{name}", prefix="ferry-")


def annotation_list(annotations: dict[str, str], key: str) -> list[str]:
    """A comma-separated annotation as a list of trimmed, non-empty items."""
    return [item.strip() for item in annotations.get(key, "").split(",") if item.strip()]
