"""One Replicate instance's predictor: Ferry's cog `Predictor`, driven the way cog drives it.

Run as a script by the inference server's Python (`<server-python> -I cog_worker.py`), not
imported by the sandbox: it uses the standard library and the predictor's own imports only.
No container engine is present, so instead of cog's HTTP server this loop plays cog's part:
import `predict.Predictor` from `FERRY_COG_PREDICTOR_DIR`, call `setup()` once, then take one
prediction at a time from the fake (`GET <FERRY_COG_WORKER_URL>/next`, a long-poll answered
204 when there is nothing), call `predict(**input)` with the signature's defaults filled in
(as cog does), join the streamed chunks into the output list and post it back
(`POST <FERRY_COG_WORKER_URL>/predictions/<id>`). `410 Gone` means the instance was retired:
the loop exits. Started by `inference.InstanceProcesses`.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import sys
import traceback
import urllib.error
import urllib.request
from typing import Any


def _call(method: str, url: str, key: str, body: Any = None, timeout: float = 60.0) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Authorization", f"Bearer {key}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        raw = response.read()
        return json.loads(raw) if raw else None


def arguments(predict: Any, given: dict[str, Any]) -> dict[str, Any]:
    """`given` for `predict`'s parameters, with cog `Input(default=...)` defaults filled in."""
    out: dict[str, Any] = {}
    for name, param in inspect.signature(predict).parameters.items():
        if name in given:
            out[name] = given[name]
        elif param.default is not inspect.Parameter.empty:
            default = param.default
            out[name] = getattr(default, "default", default)
    return out


def main() -> int:
    base = os.environ["FERRY_COG_WORKER_URL"]
    key = os.environ["FERRY_COG_WORKER_KEY"]
    sys.path.insert(0, os.environ["FERRY_COG_PREDICTOR_DIR"])
    # The cog predictor under test (inference-server/replicate/predict.py).
    predictor = importlib.import_module("predict").Predictor()
    predictor.setup()
    print("ferry cog worker: setup done, taking predictions", flush=True)
    while True:
        try:
            job = _call("GET", f"{base}/next", key, timeout=30.0)
        except urllib.error.HTTPError as err:
            if err.code == 410:
                return 0
            raise
        if not job:
            continue
        answer: dict[str, Any]
        try:
            chunks = predictor.predict(**arguments(predictor.predict, job["input"]))
            answer = {"output": [str(c) for c in chunks]}
        except Exception as exc:  # the model's error is the prediction's error, as in cog
            answer = {"error": f"{type(exc).__name__}: {exc}", "logs": traceback.format_exc()}
        try:
            _call("POST", f"{base}/predictions/{job['id']}", key, answer)
        except urllib.error.HTTPError as err:
            if err.code == 410:
                return 0
            raise


if __name__ == "__main__":
    raise SystemExit(main())
