"""The capped pool of real processes (ferry.sandbox.processes), with small shell processes."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from ferry.sandbox.processes import ProcessPool


async def wait_for(check: Callable[[], bool], limit: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not check():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split()[2] != "Z"


async def test_the_pool_caps_evicts_least_recently_used_and_reports_deaths(
    tmp_path: Path,
) -> None:
    exits: list[tuple[str, int, str]] = []
    pool = ProcessPool(2, tmp_path, on_exit=lambda k, c, t: exits.append((k, c, t)), grace_s=2)
    env = {"PATH": os.environ["PATH"]}
    a = pool.launch("a", ["sleep", "60"], env)
    b = pool.launch("b", ["sleep", "60"], env)
    assert not pool.has_room()
    with pytest.raises(RuntimeError, match="no room"):
        pool.launch("c", ["sleep", "60"], env)
    await wait_for(lambda: a.pid is not None and b.pid is not None)
    pool.touch("a")
    assert pool.least_recently_used(lambda key: True) == "b"
    assert pool.least_recently_used(lambda key: key != "b") == "a"
    pool.terminate("b")
    assert pool.has_room()  # the slot is free at once
    assert b.pid is not None
    pid_b = b.pid
    await wait_for(lambda: not alive(pid_b))
    crash = pool.launch("c", ["sh", "-c", "echo loading; echo boom >&2; exit 3"], env)
    await wait_for(lambda: bool(exits))
    assert exits == [("c", 3, "loading\nboom")]
    assert crash.state == "exited"
    assert not pool.holds("c")
    assert exits[0][0] != "b"  # a process the pool stopped is not reported as a death
    await pool.stop_all()
    assert a.pid is not None
    assert not alive(a.pid)
    assert pool.in_use() == 0


async def test_a_missing_program_is_reported_as_an_exit(tmp_path: Path) -> None:
    exits: list[tuple[str, int, str]] = []
    pool = ProcessPool(1, tmp_path, on_exit=lambda k, c, t: exits.append((k, c, t)))
    pool.launch("x", [str(tmp_path / "no-such-python")], {})
    await wait_for(lambda: bool(exits))
    assert exits[0][0] == "x"
    assert "could not start" in exits[0][2]
    assert pool.has_room()
