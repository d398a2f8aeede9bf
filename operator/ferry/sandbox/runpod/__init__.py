"""The RunPod fake: REST v2 management API, the job plane, and workers on the sandbox clock.

- `catalog`: the GPU types, pools and serverless prices the fake sells (data, dated, sourced).
- `endpoints`: endpoint records; create/PATCH semantics beyond what the spec's schema says.
- `billing`: worker seconds x price, cut into the spec's time buckets (D18).
- `jobs`, `workers`: job and worker records; `workers.ProcessBackend` is the process seam.
- `platform`: the state machine (endpoints, releases, workers, jobs, scaling) on the clock.
- `inference`: real model-server processes behind workers (the real RunPod worker loop).
- `management`, `jobplane`: the HTTP surfaces; `app`: assembles them with the admin routes.
"""
