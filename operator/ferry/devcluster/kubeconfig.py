"""Kubeconfig documents for the local plane, with certificates embedded.

Embedding (rather than pointing at files) keeps the kubeconfig usable after it is
copied elsewhere with `--kubeconfig-out`, as long as the plane is still up.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import yaml

CONTEXT = "ferry-dev"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def render(server: str, ca_pem: bytes, cert_pem: bytes, key_pem: bytes) -> dict[str, Any]:
    """A single-context kubeconfig for `server` authenticating with a client cert."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": CONTEXT,
                "cluster": {"server": server, "certificate-authority-data": _b64(ca_pem)},
            }
        ],
        "users": [
            {
                "name": CONTEXT,
                "user": {
                    "client-certificate-data": _b64(cert_pem),
                    "client-key-data": _b64(key_pem),
                },
            }
        ],
        "contexts": [{"name": CONTEXT, "context": {"cluster": CONTEXT, "user": CONTEXT}}],
        "current-context": CONTEXT,
        "preferences": {},
    }


def write(doc: dict[str, Any], path: Path) -> Path:
    """Write `doc` as YAML, readable only by the owner (it holds a private key)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    path.chmod(0o600)
    return path


def server_of(path: Path) -> str:
    """The server URL of the current context of the kubeconfig at `path`."""
    doc = yaml.safe_load(path.read_text()) or {}
    current = doc.get("current-context")
    contexts = {c["name"]: c["context"] for c in doc.get("contexts") or []}
    clusters = {c["name"]: c["cluster"] for c in doc.get("clusters") or []}
    try:
        return str(clusters[contexts[current]["cluster"]]["server"])
    except (KeyError, TypeError) as e:
        raise ValueError(f"kubeconfig {path} has no usable current context ({e})") from e
