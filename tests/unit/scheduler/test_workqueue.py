"""The keyed work queue: one pass per key at a time, re-runs, concurrency, delays, waiters."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from services.scheduler.workqueue import Result, WorkQueue
from tests.unit.scheduler.waiting import wait_for


class Recorder:
    """A pass function that records calls and can be held open per key."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.running: Counter[str] = Counter()
        self.max_running_per_key = 0
        self.max_running = 0
        self.gates: dict[str, asyncio.Event] = {}
        self.results: dict[str, Callable[[int], Result]] = {}
        self.failures: dict[str, int] = {}

    async def __call__(self, key: str) -> Result:
        self.calls[key] += 1
        self.running[key] += 1
        self.max_running_per_key = max(self.max_running_per_key, self.running[key])
        self.max_running = max(self.max_running, sum(self.running.values()))
        try:
            gate = self.gates.get(key)
            if gate is not None:
                await gate.wait()
            if self.failures.get(key, 0) > 0:
                self.failures[key] -= 1
                raise RuntimeError(f"{key} failed")
            make = self.results.get(key)
            return make(self.calls[key]) if make else Result()
        finally:
            self.running[key] -= 1


QueueFactory = Callable[..., Awaitable[WorkQueue]]


@pytest.fixture
async def queue_factory() -> AsyncIterator[QueueFactory]:
    queues: list[WorkQueue] = []

    async def make(process: Recorder, **kw: object) -> WorkQueue:
        q = WorkQueue(process, **kw)  # type: ignore[arg-type]
        await q.start()
        queues.append(q)
        return q

    yield make
    for q in queues:
        await q.stop()


async def test_a_key_is_never_processed_twice_at_once(queue_factory: QueueFactory) -> None:
    rec = Recorder()
    rec.gates["a"] = asyncio.Event()
    q = await queue_factory(rec, concurrency=4)
    q.add("a")
    await wait_for(lambda: rec.calls["a"] == 1)
    for _ in range(5):
        q.add("a")  # re-added while running: marks it dirty, once
    rec.gates["a"].set()
    await wait_for(lambda: q.is_idle())
    assert rec.calls["a"] == 2
    assert rec.max_running_per_key == 1


async def test_adding_a_queued_key_again_does_nothing(queue_factory: QueueFactory) -> None:
    rec = Recorder()
    rec.gates["blocker"] = asyncio.Event()
    q = await queue_factory(rec, concurrency=1)
    q.add("blocker")
    await wait_for(lambda: rec.calls["blocker"] == 1)
    for _ in range(3):
        q.add("b")
    assert q.depth() == 1
    rec.gates["blocker"].set()
    await wait_for(lambda: q.is_idle())
    assert rec.calls["b"] == 1


async def test_concurrency_is_bounded(queue_factory: QueueFactory) -> None:
    rec = Recorder()
    gate = asyncio.Event()
    for k in "abcdefgh":
        rec.gates[k] = gate
    q = await queue_factory(rec, concurrency=3)
    for k in "abcdefgh":
        q.add(k)
    await wait_for(lambda: sum(rec.running.values()) == 3)
    gate.set()
    await wait_for(lambda: q.is_idle())
    assert rec.max_running == 3
    assert all(rec.calls[k] == 1 for k in "abcdefgh")


async def test_failed_pass_is_retried_with_backoff(queue_factory: QueueFactory) -> None:
    rec = Recorder()
    rec.failures["a"] = 3
    q = await queue_factory(rec, backoff_initial_s=0.01, backoff_max_s=0.05)
    q.add("a")
    await wait_for(lambda: rec.calls["a"] == 4 and q.is_idle() and q.pending_retries() == 0)
    assert rec.calls["a"] == 4


async def test_requeue_after_runs_the_key_again_later(queue_factory: QueueFactory) -> None:
    rec = Recorder()
    rec.results["a"] = lambda n: Result(requeue_after=0.02 if n < 3 else None)
    q = await queue_factory(rec)
    q.add("a")
    await wait_for(lambda: rec.calls["a"] == 3 and q.pending_retries() == 0 and q.is_idle())
    assert rec.calls["a"] == 3


async def test_add_cancels_a_pending_delayed_add(queue_factory: QueueFactory) -> None:
    rec = Recorder()
    q = await queue_factory(rec)
    q.add_after("a", 60.0)
    assert q.pending_retries() == 1
    q.add("a")
    await wait_for(lambda: rec.calls["a"] == 1 and q.is_idle())
    assert q.pending_retries() == 0


async def test_run_waits_for_a_pass_started_after_the_call(queue_factory: QueueFactory) -> None:
    rec = Recorder()
    rec.gates["a"] = asyncio.Event()
    q = await queue_factory(rec)
    q.add("a")
    await wait_for(lambda: rec.calls["a"] == 1)
    waiter = asyncio.create_task(q.run("a", timeout_s=5))
    await asyncio.sleep(0)  # let run() register (not a wait for a condition)
    rec.gates["a"].set()
    await waiter
    # The pass already running when run() was called does not count: a second one ran.
    assert rec.calls["a"] == 2


async def test_run_raises_what_the_pass_raised(queue_factory: QueueFactory) -> None:
    rec = Recorder()
    rec.failures["a"] = 1
    q = await queue_factory(rec, backoff_initial_s=0.01)
    with pytest.raises(RuntimeError):
        await q.run("a", timeout_s=5)
    await wait_for(lambda: rec.calls["a"] == 2 and q.is_idle() and q.pending_retries() == 0)


async def test_run_times_out(queue_factory: QueueFactory) -> None:
    rec = Recorder()
    rec.gates["a"] = asyncio.Event()
    q = await queue_factory(rec)
    with pytest.raises(TimeoutError):
        await q.run("a", timeout_s=0.05)
    rec.gates["a"].set()
    await wait_for(lambda: q.is_idle())
