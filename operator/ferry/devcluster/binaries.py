"""Locating (and if need be building) the control-plane binaries.

`ensure_binaries()` delegates to `hack/build-controlplane.sh`, which owns the pins,
the cache under ~/.cache/ferry/k8s and the KUBEBUILDER_ASSETS convention; a warm
cache makes it return at once. Called by `DevCluster.start()` and the `build` CLI.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import TextIO

#: Binaries the full plane needs; kubectl and helm are conveniences for tests.
REQUIRED = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")


class BuildError(RuntimeError):
    """The build script failed or could not be found."""


def build_script() -> Path:
    """The build script: FERRY_BUILD_SCRIPT, else `hack/` of this source checkout."""
    env = os.environ.get("FERRY_BUILD_SCRIPT")
    if env:
        return Path(env)
    # operator/ferry/devcluster/binaries.py -> repository root is three levels up.
    return Path(__file__).resolve().parents[3] / "hack" / "build-controlplane.sh"


def ensure_binaries(stream: TextIO | None = None) -> Path:
    """Return the directory holding the plane's binaries, building them if missing.

    The script's progress lines (it writes them to stderr) are copied to `stream`
    (default: sys.stderr) as they arrive, so a cold build is never a silent wait.
    KUBEBUILDER_ASSETS is passed through: the script returns it unbuilt when it
    already holds etcd and kube-apiserver.
    """
    out = stream or sys.stderr
    script = build_script()
    if not script.is_file():
        raise BuildError(
            f"cannot find the control-plane build script at {script}; "
            "set FERRY_BUILD_SCRIPT to hack/build-controlplane.sh of a Ferry checkout"
        )
    proc = subprocess.Popen(
        ["bash", str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    tail: list[str] = []

    def relay(src: TextIO) -> None:
        for line in src:
            tail[:] = [*tail[-29:], line]
            out.write(line)
            out.flush()

    # A thread, because the script's stdout must be drained concurrently too.
    relay_thread = threading.Thread(target=relay, args=(proc.stderr,), daemon=True)
    relay_thread.start()
    with proc:
        stdout = proc.stdout.read()
        rc = proc.wait()
        relay_thread.join(timeout=5)
    if rc != 0:
        raise BuildError(
            f"{script} failed with exit status {rc}; its last lines were:\n" + "".join(tail)
        )
    lines = stdout.strip().splitlines()
    if not lines or not Path(lines[-1]).is_dir():
        raise BuildError(f"{script} did not print a bin directory (stdout: {stdout!r})")
    return Path(lines[-1])


def missing(bin_dir: Path, names: tuple[str, ...] = REQUIRED) -> list[str]:
    """Names from `names` that are not executable files in `bin_dir`."""
    return [n for n in names if not os.access(bin_dir / n, os.X_OK)]
