"""The keyed work queue: one worker per key, re-adds run once more, delays in the queue."""

from __future__ import annotations

import asyncio

from services.watcher.workqueue import KeyedQueue


async def test_a_key_added_many_times_while_waiting_runs_once() -> None:
    q = KeyedQueue()
    for _ in range(5):
        q.add("web")
    assert len(q) == 1
    assert await q.get() == "web"
    q.done("web")
    assert q.idle


async def test_a_key_added_while_active_runs_again_afterwards_and_never_twice_at_once() -> None:
    q = KeyedQueue()
    q.add("web")
    key = await q.get()
    q.add("web")  # while being processed
    assert len(q) == 0  # not handed to a second worker
    q.done(key)
    assert len(q) == 1
    assert await q.get() == "web"
    q.done("web")


async def test_delayed_add_fires_later_and_the_earliest_wins() -> None:
    q = KeyedQueue()
    q.add("web", 30.0)
    q.add("web", 0.01)
    assert len(q) == 0
    assert await asyncio.wait_for(q.get(), 5.0) == "web"
    q.done("web")
    q.close()


async def test_wait_not_busy_returns_when_processing_ends() -> None:
    q = KeyedQueue()
    q.add("a")
    key = await q.get()
    waiter = asyncio.create_task(q.wait_not_busy())
    await asyncio.sleep(0)
    assert not waiter.done()
    q.done(key)
    await asyncio.wait_for(waiter, 1.0)
