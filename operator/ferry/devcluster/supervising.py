"""Running, watching and stopping the plane's processes.

Each component runs in its own process group with output to a log file, so that
stop() reaches anything it forked and a failure can quote the component's own
words. Every live process is tracked module-wide and killed at interpreter exit;
when started from the main thread, the kernel also kills it if Python dies hard
(PR_SET_PDEATHSIG), so a crashed test run never leaves orphans behind.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

_PR_SET_PDEATHSIG = 1
_live: set[Process] = set()
_live_lock = threading.Lock()


class StartupError(RuntimeError):
    """A component exited or did not become ready; the message quotes its log."""


class Progress:
    """Timestamped progress lines on stderr: every wait says what it waits for."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream
        self.started = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def say(self, message: str) -> None:
        out = self.stream or sys.stderr
        out.write(f"[devcluster {self.elapsed():6.1f}s] {message}\n")
        out.flush()


def free_ports(count: int) -> list[int]:
    """`count` distinct ports on 127.0.0.1 that were free a moment ago."""
    socks = []
    try:
        # Held open together so the kernel cannot hand out the same port twice.
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


# Loaded up front: preexec_fn runs between fork and exec, where loading is unsafe.
_libc = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


def _die_with_parent() -> None:
    if _libc is not None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class Process:
    """One component: its command line, its log file and its process group."""

    def __init__(self, name: str, args: Sequence[str], log: Path) -> None:
        self.name = name
        self.args = list(args)
        self.log = log
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        # PDEATHSIG fires when the creating *thread* exits, so only use it from the
        # main thread; elsewhere atexit and stop() are the safety net.
        main = threading.current_thread() is threading.main_thread()
        with self.log.open("ab") as log:
            self.popen = subprocess.Popen(
                self.args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent if main else None,
            )
        with _live_lock:
            _live.add(self)

    def exit_code(self) -> int | None:
        """None while running (or never started), else the exit status."""
        return None if self.popen is None else self.popen.poll()

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def failure(self, reason: str) -> StartupError:
        return StartupError(f"{self.name} {reason}; last lines of {self.log}:\n{self.tail()}")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process group, SIGKILL it after `timeout` seconds."""
        popen = self.popen
        if popen is None:
            return
        try:
            if popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(popen.pid, signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    popen.wait(timeout)
            # Kill the group even after a clean exit: a child may have outlived it.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(popen.pid, signal.SIGKILL)
            popen.wait(5)
        finally:
            with _live_lock:
                _live.discard(self)


def wait_for(
    proc: Process,
    what: str,
    check: Callable[[], bool],
    progress: Progress,
    timeout: float,
    interval: float = 0.25,
) -> float:
    """Poll `check` until true; fail fast if `proc` exits. Returns seconds waited."""
    start = time.monotonic()
    last_note = start
    while True:
        if check():
            return time.monotonic() - start
        code = proc.exit_code()
        if code is not None:
            raise proc.failure(f"exited with status {code} while waiting for {what}")
        now = time.monotonic()
        if now - start > timeout:
            raise proc.failure(f"did not report {what} within {timeout:.0f}s")
        if now - last_note >= 5:
            progress.say(f"still waiting for {proc.name}: {what} ({now - start:.0f}s)")
            last_note = now
        time.sleep(interval)


@atexit.register
def _stop_all() -> None:
    with _live_lock:
        procs = list(_live)
    for proc in procs:
        proc.stop(timeout=5)
