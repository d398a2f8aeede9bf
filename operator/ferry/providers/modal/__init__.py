"""Modal: deployed apps with one web function serving Ferry's model server.

`mapping` holds the pure functions (the desired deployment, the plan, the observation, the
error tree); `client` the provider over the pinned `modal` package. `BACKEND` is the
registry entry (`ferry.providers.registry`).
"""

from __future__ import annotations

from ferry.providers.modal.client import BACKEND, ModalProvider

__all__ = ["BACKEND", "ModalProvider"]
