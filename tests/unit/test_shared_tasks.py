"""shared.tasks: named, referenced, logged, cancelled on close; the backoff curve."""

from __future__ import annotations

import asyncio

import pytest
from structlog.testing import capture_logs

from shared.tasks import BackgroundTasks, backoff_delay, raise_if_cancelled, spawn
from tests.unit.scheduler.waiting import wait_for


async def _forever(started: asyncio.Event) -> None:
    started.set()
    await asyncio.Event().wait()


async def test_spawned_tasks_are_named_and_cancelled_on_close() -> None:
    started = asyncio.Event()
    async with BackgroundTasks("watcher") as tasks:
        task = tasks.spawn("event-stream", _forever(started))
        await asyncio.wait_for(started.wait(), 5)
        assert task.get_name() == "watcher:event-stream"
        assert tasks.names == ["watcher:event-stream"]
        assert len(tasks) == 1
    assert task.cancelled()
    assert len(tasks) == 0
    assert tasks.healthy()


async def test_a_crash_is_logged_with_the_task_name_and_marks_unhealthy() -> None:
    async def boom() -> None:
        raise RuntimeError("kaput")

    with capture_logs() as logs:
        async with BackgroundTasks("scheduler") as tasks:
            task = tasks.spawn("resync", boom())
            await asyncio.wait([task], timeout=5)
            await asyncio.sleep(0)  # let the done-callback run after the task finished
            assert not tasks.healthy()
            assert isinstance(tasks.crashed["scheduler:resync"], RuntimeError)
    crash = [e for e in logs if e["event"] == "background task crashed"]
    assert len(crash) == 1
    assert crash[0]["task"] == "scheduler:resync"
    assert crash[0]["log_level"] == "error"


async def test_an_unexpected_clean_exit_is_a_warning_but_finite_work_is_not() -> None:
    async def done() -> int:
        return 1

    with capture_logs() as logs:
        async with BackgroundTasks("svc") as tasks:
            t1 = tasks.spawn("loop", done())
            t2 = tasks.spawn("once", done(), forever=False)
            await asyncio.wait([t1, t2], timeout=5)
            await asyncio.sleep(0)
    exits = [e for e in logs if e["event"] == "background task exited"]
    assert [e["task"] for e in exits] == ["svc:loop"]
    assert tasks.healthy()


async def test_close_while_being_cancelled_reraises_cancelled_error() -> None:
    started = asyncio.Event()
    tasks = BackgroundTasks("svc")

    async def stubborn() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await asyncio.Event().wait()  # ignores the first cancellation

    inner = tasks.spawn("stubborn", stubborn())
    await asyncio.wait_for(started.wait(), 5)
    closer = asyncio.create_task(tasks.close(timeout_s=None))
    await asyncio.sleep(0)
    closer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closer
    inner.cancel()
    await asyncio.wait([inner], timeout=5)
    assert inner.done()


async def test_spawn_after_close_is_refused() -> None:
    tasks = BackgroundTasks("svc")
    await tasks.close()

    async def nothing() -> None:
        return None

    with pytest.raises(RuntimeError, match="closed"):
        tasks.spawn("late", nothing())


async def test_module_spawn_keeps_a_reference_and_logs_failures() -> None:
    async def boom() -> None:
        raise ValueError("bad")

    with capture_logs() as logs:
        task = spawn("notify", boom())
        await asyncio.wait([task], timeout=5)
        await asyncio.sleep(0)
    assert task.get_name() == "notify"
    assert [e["task"] for e in logs if e["event"] == "background task crashed"] == ["notify"]


def test_backoff_grows_exponentially_and_is_capped() -> None:
    for attempt in range(1, 20):
        delay = backoff_delay(attempt, initial_s=0.5, max_s=30.0, jitter_s=1.0)
        base = min(0.5 * 2 ** (attempt - 1), 30.0)
        assert base <= delay <= min(base + 1.0, 30.0) or delay == 30.0
        assert delay <= 30.0
    assert backoff_delay(0, 1.0, 10.0, 0.0) == 1.0


async def _swallows_one_cancel(turns: list[int], check: bool) -> None:
    """A loop whose first cancellation is lost below it, as Python 3.11's wait_for loses
    one when the awaited result arrives in the same turn as the cancel."""
    swallowed = False
    while True:
        if check:
            raise_if_cancelled()
        turns.append(1)
        try:
            await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            if swallowed:
                raise
            swallowed = True  # lost: the loop goes on


async def _until_turns(turns: list[int], count: int) -> None:
    """Wait (with a deadline) until the loop has run `count` turns."""
    await wait_for(lambda: len(turns) >= count, 5, message=f"{count} turns of the loop")


async def test_raise_if_cancelled_ends_a_loop_whose_cancel_was_swallowed() -> None:
    turns: list[int] = []
    task = asyncio.create_task(_swallows_one_cancel(turns, check=True))
    await _until_turns(turns, 3)
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=2)
    assert task in done and task.cancelled()


async def test_close_cancels_again_a_task_that_lost_its_cancel() -> None:
    turns: list[int] = []
    tasks = BackgroundTasks("t")
    task = tasks.spawn("loop", _swallows_one_cancel(turns, check=False))
    await _until_turns(turns, 3)
    with capture_logs() as logs:
        await tasks.close(timeout_s=5)
    assert task.cancelled()
    assert not [e for e in logs if e["event"] == "background task ignored cancellation"]


async def test_raise_if_cancelled_in_a_task_nobody_cancelled_does_nothing() -> None:
    raise_if_cancelled()
