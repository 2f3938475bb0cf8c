"""Waiting for a condition with a deadline (never a bare sleep)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

POLL_S = 0.02  # how often the condition is evaluated, not a wait for anything


async def wait_for(predicate: Callable[[], Awaitable[T | None]], timeout: float, what: str) -> T:
    """Await `predicate` until it returns something truthy; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = await predicate()
        if last:
            return last  # type: ignore[no-any-return]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last={last!r}")
        await asyncio.sleep(POLL_S)


async def stays(predicate: Callable[[], Awaitable[bool]], duration: float, what: str) -> None:
    """Assert that `predicate` holds for the whole `duration` (checked every POLL_S)."""
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        assert await predicate(), what
        await asyncio.sleep(POLL_S)
