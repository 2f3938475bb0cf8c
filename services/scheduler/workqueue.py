"""A work queue keyed by app: the reconcile loop's scheduler (controller-runtime's model).

Semantics, the ones the operator relies on:
- a key is never processed by two workers at once;
- adding a key that is already queued does nothing; adding a key while it is being
  processed marks it dirty, and it runs exactly once more after the current pass;
- at most `concurrency` keys are processed at a time;
- a pass returns `Result(requeue_after=s)` to run again in `s` seconds; a pass that
  raises is retried after a capped exponential backoff with jitter that grows with the
  key's consecutive failures and resets on success; delays live here, never in a sleep
  inside a pass;
- `run(key)` lets a caller (a command handler) enqueue a key and wait for the outcome of
  the first pass that *starts after* the call, so it never mistakes an older pass, which
  read older state, for its own.

It knows nothing of apps, NATS or Nomad: it calls `process(key)` and schedules.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from shared.logging import get_logger
from shared.tasks import BackgroundTasks, backoff_delay, raise_if_cancelled

log = get_logger(__name__)


@dataclass(frozen=True)
class Result:
    """What a pass asks of the queue: run again after `requeue_after` seconds, or not."""

    requeue_after: float | None = None


Process = Callable[[str], Awaitable[Result]]

_WAKEUP = "\x00wakeup"  # not a valid key: put on the queue to wake workers at stop


class WorkQueue:
    def __init__(
        self,
        process: Process,
        *,
        concurrency: int = 4,
        name: str = "reconcile",
        backoff_initial_s: float = 0.2,
        backoff_max_s: float = 30.0,
    ) -> None:
        self._process = process
        self.concurrency = max(1, concurrency)
        self.name = name
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()
        self._processing: set[str] = set()
        self._dirty: set[str] = set()
        self._failures: dict[str, int] = {}
        self._timers: dict[str, tuple[float, asyncio.TimerHandle]] = {}
        # Callers waiting for the next pass of a key, and those waiting on the running one.
        self._waiting: dict[str, list[asyncio.Future[Result]]] = {}
        self._running_waiters: dict[str, list[asyncio.Future[Result]]] = {}
        self._tasks = BackgroundTasks(f"workqueue:{name}")
        self._closed = False
        self.passes = 0

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        for i in range(self.concurrency):
            self._tasks.spawn(f"worker-{i}", self._worker())

    async def stop(self) -> None:
        """Stop taking keys; passes in progress are cancelled (each pass is idempotent)."""
        self._closed = True
        # Wake idle workers, so that one whose cancellation was swallowed (Python 3.11's
        # asyncio.wait_for can lose a cancel that races a result; nats-py uses it) still
        # sees `_closed` and returns instead of waiting for a key forever.
        for _ in range(self.concurrency):
            self._queue.put_nowait(_WAKEUP)
        for _, handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        await self._tasks.close()
        for waiters in (*self._waiting.values(), *self._running_waiters.values()):
            for fut in waiters:
                if not fut.done():
                    fut.cancel()
        self._waiting.clear()
        self._running_waiters.clear()

    def healthy(self) -> bool:
        return self._tasks.healthy()

    # -- adding keys -----------------------------------------------------------------

    def add(self, key: str) -> None:
        """Make sure `key` gets a pass that starts after this call."""
        if self._closed:
            return
        self._cancel_timer(key)
        if key in self._processing:
            self._dirty.add(key)
            return
        if key in self._queued:
            return
        self._queued.add(key)
        self._queue.put_nowait(key)

    def add_after(self, key: str, delay_s: float) -> None:
        """Add `key` in `delay_s` seconds; an earlier pending add for the key wins."""
        if self._closed:
            return
        if delay_s <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        due = loop.time() + delay_s
        current = self._timers.get(key)
        if current is not None:
            if current[0] <= due:
                return
            current[1].cancel()
        handle = loop.call_at(due, self._timer_fired, key)
        self._timers[key] = (due, handle)

    async def run(self, key: str, timeout_s: float | None = None) -> Result:
        """Add `key` and wait for the outcome of the first pass that starts afterwards.

        Raises what that pass raised, or TimeoutError after `timeout_s`.
        """
        fut: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append(fut)
        self.add(key)
        try:
            return await asyncio.wait_for(fut, timeout_s)
        finally:
            if not fut.done():
                fut.cancel()
            for table in (self._waiting, self._running_waiters):
                waiters = table.get(key)
                if waiters and fut in waiters:
                    waiters.remove(fut)

    # -- introspection (metrics, tests) -------------------------------------------------

    def depth(self) -> int:
        return self._queue.qsize()

    def is_idle(self) -> bool:
        return not (self._queued or self._processing or self._dirty)

    def pending_retries(self) -> int:
        return len(self._timers)

    # -- internals -------------------------------------------------------------------

    def _timer_fired(self, key: str) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def _cancel_timer(self, key: str) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer[1].cancel()

    async def _next_key(self) -> str:
        key = await self._queue.get()
        self._queued.discard(key)
        return key

    async def _worker(self) -> None:
        while not self._closed:
            raise_if_cancelled()
            key = await self._next_key()
            if self._closed or key == _WAKEUP:
                return
            await self._work_on(key)

    async def _work_on(self, key: str) -> None:
        self._processing.add(key)
        waiters = self._waiting.pop(key, [])
        self._running_waiters[key] = waiters
        try:
            outcome = await self._run_pass(key)
        finally:
            self._processing.discard(key)
            self._running_waiters.pop(key, None)
            if key in self._dirty:
                self._dirty.discard(key)
                self.add(key)
        for fut in waiters:
            if fut.done():
                continue
            if isinstance(outcome, BaseException):
                fut.set_exception(outcome)
            else:
                fut.set_result(outcome)

    async def _run_pass(self, key: str) -> Result | Exception:
        self.passes += 1
        try:
            result = await self._process(key)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failures = self._failures.get(key, 0) + 1
            self._failures[key] = failures
            delay = backoff_delay(
                failures, self.backoff_initial_s, self.backoff_max_s, self.backoff_initial_s
            )
            log.warning("reconcile pass failed; requeued", queue=self.name, key=key,
                        failures=failures, retry_in_s=round(delay, 3), error=str(exc)[:500],
                        error_type=type(exc).__name__)
            self.add_after(key, delay)
            return exc
        self._failures.pop(key, None)
        if result.requeue_after is not None:
            self.add_after(key, result.requeue_after)
        return result

