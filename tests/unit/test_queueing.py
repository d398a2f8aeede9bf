from __future__ import annotations

import asyncio

from ferry import queueing


async def test_keys_are_deduplicated_and_never_processed_concurrently() -> None:
    seen: list[queueing.Key] = []
    running: set[queueing.Key] = set()
    overlap = False
    release = asyncio.Event()

    async def work(key: queueing.Key) -> queueing.Outcome:
        nonlocal overlap
        overlap = overlap or key in running
        running.add(key)
        seen.append(key)
        await release.wait()
        running.discard(key)
        return queueing.Outcome()

    q = queueing.WorkQueue(work, workers=4)
    q.start()
    for _ in range(5):
        q.add(("iep", "ns", "a"))
    await asyncio.sleep(0.05)
    for _ in range(5):
        q.add(("iep", "ns", "a"))  # while active: marks it dirty, processed once more
    release.set()
    await asyncio.sleep(0.1)
    await q.stop()
    assert seen == [("iep", "ns", "a"), ("iep", "ns", "a")]
    assert not overlap


async def test_requeue_after_delay_and_backoff_on_error() -> None:
    calls: list[float] = []
    loop = asyncio.get_running_loop()

    async def work(key: queueing.Key) -> queueing.Outcome:
        calls.append(loop.time())
        if len(calls) < 3:
            return queueing.Outcome(error=True)
        return queueing.Outcome(requeue_after=None)

    q = queueing.WorkQueue(work, workers=1, base_backoff=0.05, max_backoff=1.0)
    q.start()
    q.add(("iep", "ns", "b"))
    await asyncio.sleep(0.5)
    await q.stop()
    assert len(calls) == 3
    first_gap, second_gap = calls[1] - calls[0], calls[2] - calls[1]
    assert first_gap >= 0.045
    assert second_gap >= 0.095  # doubled


async def test_an_earlier_timer_wins_and_forget_cancels() -> None:
    calls: list[queueing.Key] = []

    async def work(key: queueing.Key) -> queueing.Outcome:
        calls.append(key)
        return queueing.Outcome()

    q = queueing.WorkQueue(work, workers=1)
    q.start()
    q.add_after(("iep", "ns", "c"), 0.05)
    q.add_after(("iep", "ns", "c"), 5.0)  # later: ignored, the earlier one stays
    q.add_after(("iep", "ns", "d"), 0.05)
    q.forget(("iep", "ns", "d"))
    await asyncio.sleep(0.2)
    await q.stop()
    assert calls == [("iep", "ns", "c")]
