"""`ferry sandbox`: stateful local fakes of the serverless GPU platforms Ferry drives.

Each platform is one subpackage (`runpod`, `replicate`, `modal`) that serves its real API
shape (Modal's: gRPC) on 127.0.0.1, so the operator and the platforms' own clients talk to it
unchanged, only the base URL differs. What the fakes share lives beside them:

- `clock`: the sandbox clock (wall time x speed + offset) every fake's timing follows (D6).
- `faults`, `calls`: faults injected on demand and call counts per (method, route template).
- `validation`: request/response checks against the published OpenAPI specs in `specs/`.
- `http`: the per-route pipeline (auth, faults, counting, validation, the sandbox label) and
  the admin routes under `/_sandbox/` that every fake serves.
- `processes`: the capped, least-recently-used pool of real model-server processes (D7).
- `modelserver`: where the inference server's Python lives and the tiny local model it serves.
- `serving`: runs the fakes' ASGI apps on their ports.

`python -m ferry.sandbox` (and `ferry sandbox`, which calls `ferry.sandbox.__main__.main`) is
the command. Nothing here imports the operator's reconciler, providers, Kubernetes client or
handlers: an import-linter contract keeps the fakes independent of what they test.
"""
