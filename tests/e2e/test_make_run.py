"""`make run`'s main job end to end: `ferry up` on the embedded control plane."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def test_ferry_up_brings_the_examples_to_ready_and_cleans_up(tmp_path: Path) -> None:
    log = tmp_path / "up.log"
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ferry", "up", "--embedded", "--metrics-port", "0"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        deadline = time.monotonic() + 420
        while "endpoints are Ready" not in log.read_text(errors="replace"):
            assert proc.poll() is None, f"ferry up exited early:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"examples never Ready:\n{log.read_text()}"
            time.sleep(0.5)
        text = log.read_text()
        assert "all 5 endpoints are Ready" in text
        for name in ("tiny-llm", "llama-spot", "tiny-runpod", "tiny-replicate", "tiny-modal"):
            assert name in text
        for fake in ("RunPod API", "Replicate API", "Modal API", "/_sandbox"):
            assert fake in text, "where each fake and its admin routes are is shown"
        assert "Available" in text
        # The one command it prints sends the RunPod endpoint (in the sandbox) a prompt.
        command = text.split("a prompt:", 1)[1].split("\n\n", 2)[1]
        assert "curl" in command
        reply = subprocess.run(
            ["bash", "-c", command], capture_output=True, text=True, timeout=300, check=True
        )
        answer = json.loads(reply.stdout)
        assert answer["object"] == "chat.completion"
        assert answer["choices"][0]["message"]["content"]
        assert answer["usage"]["completion_tokens"] > 0
        state = next(line for line in text.splitlines() if "state in " in line)
        state_dir = Path(state.split("state in ", 1)[1].split(";", 1)[0])
        assert state_dir.exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    text = log.read_text()
    assert code == 0, text
    assert "stopping the platform sandbox and the local control plane" in text
    assert "Traceback" not in text
    assert not state_dir.exists(), "the control plane's state was left behind"
