"""Waiting for a condition with a deadline (never a bare sleep)."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

POLL_S = 0.05  # how often the condition is evaluated, not a wait for anything


async def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Evaluate `predicate` (sync or async) until it returns something truthy; fail after
    `timeout` seconds with `what` and the last value seen."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = predicate()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last={last!r}")
        await asyncio.sleep(POLL_S)


def wait_for_sync(predicate: Callable[[], T | None], timeout: float, what: str) -> T:
    """The same for code outside the event loop (process supervision)."""
    deadline = time.monotonic() + timeout
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last={last!r}")
        time.sleep(POLL_S)
