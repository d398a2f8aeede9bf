"""The real model-server processes behind a fake: capped, least recently used first out (D7).

A fake starts a real process only when it needs one (an endpoint received a job) and keeps at
most `limit` alive; when it needs another it asks for the least recently used idle key and
stops that process first. Bookkeeping is synchronous (so a fake's state machine can reserve a
slot and never overshoot the cap); spawning and stopping run as background tasks. Each process
gets its own session and, on Linux, dies with the sandbox (PR_SET_PDEATHSIG), so neither
Ctrl-C nor a crash of the sandbox leaves orphans. Output goes to one log file per process.
Used by the platforms' inference backends (e.g. `runpod.inference`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

log = logging.getLogger("ferry.sandbox.processes")

ExitCallback = Callable[[str, int, str], None]
"""on_exit(key, returncode, last log lines): a process ended without being asked to."""


@dataclass
class ManagedProcess:
    """One real process and what is known about it."""

    key: str
    argv: list[str]
    log_path: Path
    reserved_at: float
    pid: int | None = None
    state: str = "starting"  # starting | running | stopping | exited
    returncode: int | None = None
    last_used: float = field(default_factory=time.monotonic)
    proc: asyncio.subprocess.Process | None = None
    task: asyncio.Task[None] | None = None

    def tail(self, lines: int = 15) -> str:
        """The last `lines` lines of the process's output (for error messages)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def describe(self) -> dict[str, object]:
        """Admin view: `{key, pid, state, returncode, log}`."""
        return {
            "key": self.key,
            "pid": self.pid,
            "state": self.state,
            "returncode": self.returncode,
            "log": str(self.log_path),
        }


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)


class ProcessPool:
    """At most `limit` real processes, by key, with their logs under `log_dir`."""

    def __init__(
        self, limit: int, log_dir: Path, on_exit: ExitCallback, grace_s: float = 5.0
    ) -> None:
        if limit < 0:
            raise ValueError(f"the process limit must be 0 or more, got {limit}")
        self.limit = limit
        self.log_dir = log_dir
        self.grace_s = grace_s
        self._on_exit = on_exit
        self._live: dict[str, ManagedProcess] = {}
        self._stopping: set[asyncio.Task[None]] = set()

    # ---- synchronous bookkeeping ---------------------------------------------------------

    def in_use(self) -> int:
        """Slots taken (processes starting or running)."""
        return len(self._live)

    def has_room(self) -> bool:
        """True when one more process may start now."""
        return len(self._live) < self.limit

    def holds(self, key: str) -> bool:
        """True when `key` has a process starting or running."""
        return key in self._live

    def touch(self, key: str) -> None:
        """Mark `key` used now (it moves to the back of the eviction order)."""
        if key in self._live:
            self._live[key].last_used = time.monotonic()

    def least_recently_used(self, evictable: Callable[[str], bool]) -> str | None:
        """The least recently used key among those `evictable` allows, or None."""
        candidates = [p for p in self._live.values() if evictable(p.key)]
        if not candidates:
            return None
        return min(candidates, key=lambda p: p.last_used).key

    def launch(self, key: str, argv: Sequence[str], env: Mapping[str, str]) -> ManagedProcess:
        """Take a slot for `key` now and start its process in the background.

        Raises RuntimeError when the pool is full or `key` already has a process.
        """
        if key in self._live:
            raise RuntimeError(f"{key} already has a process")
        if not self.has_room():
            raise RuntimeError(f"no room for {key}: {self.limit} process(es) already running")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        managed = ManagedProcess(
            key=key, argv=list(argv), log_path=self.log_dir / f"{key}.log", reserved_at=time.time()
        )
        self._live[key] = managed
        managed.task = asyncio.get_running_loop().create_task(
            self._run(managed, dict(env)), name=f"sandbox-process-{key}"
        )
        return managed

    def terminate(self, key: str) -> None:
        """Free `key`'s slot now and stop its process in the background (SIGTERM, then SIGKILL)."""
        managed = self._live.pop(key, None)
        if managed is None:
            return
        managed.state = "stopping"
        task = asyncio.get_running_loop().create_task(
            self._stop(managed), name=f"sandbox-stop-{key}"
        )
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    def describe(self) -> list[dict[str, object]]:
        """Admin view of the live processes."""
        return [p.describe() for p in self._live.values()]

    # ---- asynchronous work ---------------------------------------------------------------

    async def _run(self, managed: ManagedProcess, env: dict[str, str]) -> None:
        try:
            with _open_log(managed.log_path) as out:
                proc = await asyncio.create_subprocess_exec(
                    *managed.argv,
                    env=env,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=out,
                    stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=_die_with_parent,
                )
        except OSError as exc:
            managed.state, managed.returncode = "exited", -1
            managed.log_path.write_text(f"could not start {managed.argv[0]}: {exc}\n")
            self._exited(managed)
            return
        managed.proc, managed.pid = proc, proc.pid
        if managed.state == "starting":
            managed.state = "running"
        log.info("started process %s (pid %d), log %s", managed.key, proc.pid, managed.log_path)
        code = await proc.wait()
        managed.returncode = code
        if managed.state != "stopping":
            managed.state = "exited"
            self._exited(managed)

    def _exited(self, managed: ManagedProcess) -> None:
        if self._live.get(managed.key) is managed:
            del self._live[managed.key]
            log.warning("process %s exited with code %s", managed.key, managed.returncode)
            self._on_exit(managed.key, managed.returncode or 0, managed.tail())

    async def _stop(self, managed: ManagedProcess) -> None:
        # The spawn may still be in flight: wait until there is a pid (or the spawn failed).
        for _ in range(200):
            if managed.proc is not None or (managed.task is not None and managed.task.done()):
                break
            await asyncio.sleep(0.05)
        proc = managed.proc
        if proc is None or proc.returncode is not None:
            return
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), timeout=self.grace_s)
        except TimeoutError:
            log.warning(
                "process %s ignored SIGTERM for %.0fs: killing it", managed.key, self.grace_s
            )
            _signal_group(proc.pid, signal.SIGKILL)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), timeout=self.grace_s)
        log.info("stopped process %s", managed.key)

    async def stop_all(self) -> None:
        """Stop every process and wait for them (used at shutdown)."""
        for key in list(self._live):
            self.terminate(key)
        if self._stopping:
            await asyncio.gather(*list(self._stopping), return_exceptions=True)


def _open_log(path: Path) -> IO[bytes]:
    return open(path, "ab")  # the caller closes it


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
