"""Provider clients: one small module per backend behind the interface in base.py.

`registry` is the one table of backends: adding a provider is a module plus a line
here, touching neither the reconciler nor the kopf wiring.
"""

from __future__ import annotations

from ferry import kube as kube_api
from ferry.providers import local, modal, replicate, runpod
from ferry.providers.base import Backend, ClientConfig, Provider


def registry(kube: kube_api.Api) -> dict[str, Backend]:
    """Every backend this build supports, by the name `spec.provider` uses."""
    cluster = local.LocalProvider(kube)

    def connect_local(_config: ClientConfig) -> Provider:
        # One client for the cluster itself: there is no account to connect to.
        return cluster

    backends = [
        Backend("local", connect=connect_local, exports_env=False),
        runpod.BACKEND,
        replicate.BACKEND,
        modal.BACKEND,
    ]
    return {b.name: b for b in backends}
