"""Replicate: deployments of model versions published on Replicate.

`mapping` holds the pure functions (providerRef, hardware, names, releases, D15 adoption,
the observation and the error mapping); `client` the provider over the pinned `replicate`
package. `BACKEND` is the registry entry (`ferry.providers.registry`).
"""

from __future__ import annotations

from ferry.providers.replicate.client import BACKEND, ReplicateProvider

__all__ = ["BACKEND", "ReplicateProvider"]
