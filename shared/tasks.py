"""Background tasks that are named, referenced, logged when they die, and cancelled on close.

`BackgroundTasks` is the one way a service starts long-running asyncio work (a consumer
loop, the event-stream reader, a resync timer). It keeps a strong reference to every
task (the event loop only keeps weak ones), names it, logs an unexpected exit with the
task's name and traceback, remembers which tasks crashed (so /healthz can fail), and on
close cancels and awaits everything it started, cancelling again what a library lost the
cancellation of. `CancelledError` is never swallowed: closing a group while the closer
itself is being cancelled re-raises. `raise_if_cancelled()` is the check long-running
loops make each turn (why: its docstring).

It is not a supervisor: a crashed task is not restarted here. Loops that must survive
failures catch and back off inside themselves; a crash means a bug, surfaces in the
log and in `healthy()`, and the process supervisor restarts the service.

`spawn()` is the module-level form for short one-off work that needs no cancellation on
shutdown; anything that must stop with the service belongs to a `BackgroundTasks`.

`capped_backoff()` / `backoff_delay()` are the one backoff curve (capped exponential with
jitter, computed by tenacity) for loops that retry by themselves: reconnects, nak delays.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, TypeVar, cast

from tenacity import RetryCallState, wait_exponential_jitter

from shared.logging import get_logger

__all__ = ["BackgroundTasks", "backoff_delay", "capped_backoff", "raise_if_cancelled", "spawn"]

log = get_logger(__name__)

T = TypeVar("T")


def _log_exit(task: asyncio.Task[Any], *, expected_to_run_forever: bool) -> BaseException | None:
    """Retrieve the task's outcome (so asyncio never warns it was lost) and log a crash."""
    if task.cancelled():
        return None
    exc = task.exception()
    name = task.get_name()
    if exc is not None:
        log.error(
            "background task crashed",
            task=name,
            error=type(exc).__name__,
            exc_info=(type(exc), exc, exc.__traceback__),
        )
    elif expected_to_run_forever:
        log.warning("background task exited", task=name)
    return exc


# How often close() cancels again a task that has not ended yet.
RECANCEL_S = 0.5


def raise_if_cancelled() -> None:
    """Raise CancelledError if the current task was asked to stop and something below it
    swallowed the request.

    Python 3.11's asyncio.wait_for returns the awaited result instead of raising when
    that result arrives in the same loop turn as the cancel (fixed in 3.12), and nats-py
    awaits every request and KV write that way: in a loop of KV writes about one cancel
    in five was lost. The task still counts the request (`Task.cancelling()`), so every
    long-running loop calls this at the top of each turn.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class BackgroundTasks:
    """A group of named background tasks owned by one component.

    ```
    async with BackgroundTasks("watcher") as tasks:
        tasks.spawn("event-stream", read_stream())
        ...
    # every task is cancelled and awaited here
    ```
    """

    def __init__(self, owner: str = "service") -> None:
        self.owner = owner
        self._tasks: set[asyncio.Task[Any]] = set()
        self._forever: set[asyncio.Task[Any]] = set()
        self._closed = False
        self.crashed: dict[str, BaseException] = {}

    def spawn(
        self, name: str, coro: Coroutine[Any, Any, T], *, forever: bool = True
    ) -> asyncio.Task[T]:
        """Start `coro` as a task named `<owner>:<name>` and keep it until it ends or close().

        `forever=True` (the default) means an exit without an exception is also unexpected
        and logged as a warning; pass False for work that is supposed to finish.
        """
        if self._closed:
            coro.close()  # never awaited otherwise, and Python would warn about it
            raise RuntimeError(f"BackgroundTasks({self.owner}) is closed; cannot start {name}")
        task = asyncio.get_running_loop().create_task(coro, name=f"{self.owner}:{name}")
        self._tasks.add(task)
        if forever:
            self._forever.add(task)
        task.add_done_callback(self._on_done)
        return task

    def _on_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        forever = task in self._forever
        self._forever.discard(task)
        # During close() every exit is expected; only a real exception is still worth a line.
        exc = _log_exit(task, expected_to_run_forever=forever and not self._closed)
        if exc is not None:
            self.crashed[task.get_name()] = exc

    def healthy(self) -> bool:
        """False once any task of the group has died with an exception (a /healthz check)."""
        return not self.crashed

    @property
    def names(self) -> list[str]:
        return sorted(t.get_name() for t in self._tasks)

    def __len__(self) -> int:
        return len(self._tasks)

    async def close(self, timeout_s: float | None = 10.0) -> None:
        """Cancel every running task and wait for them to finish (at most `timeout_s`)."""
        self._closed = True
        tasks = [t for t in self._tasks if not t.done()]
        for task in tasks:
            task.cancel()
        if not tasks:
            return
        # asyncio.wait never raises the tasks' exceptions and never swallows our own
        # cancellation: if close() is cancelled, CancelledError propagates from here.
        # A task whose cancellation was lost below it (see raise_if_cancelled) is
        # cancelled again every RECANCEL_S: its next await then ends it.
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s
        pending = set(tasks)
        while pending:
            wait_s = RECANCEL_S if deadline is None else min(RECANCEL_S,
                                                             deadline - loop.time())
            if wait_s <= 0:
                break
            _done, pending = await asyncio.wait(pending, timeout=wait_s)
            for task in pending:
                task.cancel()
        for task in pending:
            log.error("background task ignored cancellation", task=task.get_name())

    async def __aenter__(self) -> BackgroundTasks:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


# Strong references for spawn(): the loop keeps only weak ones, so an unreferenced task
# can be garbage-collected mid-flight (asyncio docs, "Important" note on create_task).
_detached: set[asyncio.Task[Any]] = set()


def _on_detached_done(task: asyncio.Task[Any]) -> None:
    _detached.discard(task)
    _log_exit(task, expected_to_run_forever=False)


def spawn(name: str, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
    """Start a named one-off task that is referenced until it ends and logged if it fails.

    For short work that may outlive its caller (a best-effort notification). It is not
    cancelled on shutdown: use `BackgroundTasks` for anything that must be.
    """
    task = asyncio.get_running_loop().create_task(coro, name=name)
    _detached.add(task)
    task.add_done_callback(_on_detached_done)
    return task


def capped_backoff(
    initial_s: float = 0.5, max_s: float = 30.0, jitter_s: float = 1.0
) -> wait_exponential_jitter:
    """tenacity wait strategy: `min(initial_s * 2**(n-1) + uniform(0, jitter_s), max_s)`."""
    try:
        return wait_exponential_jitter(multiplier=initial_s, max=max_s, jitter=jitter_s)
    except TypeError:  # tenacity < 9.1 calls the multiplier `initial`
        return wait_exponential_jitter(initial=initial_s, max=max_s, jitter=jitter_s)


def backoff_delay(
    attempt: int, initial_s: float = 0.5, max_s: float = 30.0, jitter_s: float = 1.0
) -> float:
    """Seconds to wait before retry number `attempt` (1-based) of a hand-written loop.

    For loops tenacity cannot wrap, such as a long-lived stream whose failure count
    resets after each successful connection.
    """
    state = RetryCallState(retry_object=cast(Any, None), fn=None, args=(), kwargs={})
    state.attempt_number = max(1, attempt)
    return float(capped_backoff(initial_s, max_s, jitter_s)(state))
