"""The Modal fake: Modal's gRPC API (`modal.client.ModalClient`), web functions, containers on
the sandbox clock.

- `platform`: the state machine (apps, functions, images, secrets, autoscaler settings with the
  reset-on-redeploy rule, containers, billing) on the clock.
- `servicer`: the gRPC servicer (grpclib) of the real `modal` client: call counts, faults as gRPC
  errors with retry policies, token checks, idempotent replay; UNIMPLEMENTED for the rest.
- `inference`: real model-server processes behind containers, running the factory a deploy names.
- `web`: web functions' URLs (forwarded to containers) and the Modal admin routes.
- `app`: assembles them; `ferry.sandbox.__main__` serves it.
"""
