"""A work queue keyed by app: what the event stream and the timers feed the reconcilers.

The controller-runtime rules (style.md): a key is never processed by two workers at
once; a key added while it is being processed runs once more afterwards; a key added
many times while waiting runs once; delays live in the queue (`add(key, delay_s)`),
never in a handler. Concurrency is bounded by the number of workers that call `get()`.

In memory only, by design: after a restart the watcher relists every app, so nothing
queued here needs to survive.
"""

from __future__ import annotations

import asyncio


class KeyedQueue:
    def __init__(self) -> None:
        self._ready: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()  # in _ready
        self._active: set[str] = set()  # being processed
        self._again: set[str] = set()  # added while active: run once more when done
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self._not_busy = asyncio.Event()
        self._not_busy.set()
        self.added = 0

    def __len__(self) -> int:
        return self._ready.qsize()

    @property
    def idle(self) -> bool:
        """Nothing ready, nothing being processed (delayed keys do not count)."""
        return not self._queued and not self._active

    @property
    def busy(self) -> bool:
        """Some key is being processed right now."""
        return bool(self._active)

    def add(self, key: str, delay_s: float = 0.0) -> None:
        """Schedule `key`; with a delay, the earliest pending schedule wins."""
        if delay_s > 0:
            loop = asyncio.get_running_loop()
            existing = self._timers.get(key)
            when = loop.time() + delay_s
            if existing is not None and existing.when() <= when:
                return
            if existing is not None:
                existing.cancel()
            self._timers[key] = loop.call_at(when, self._fire, key)
            return
        self.added += 1
        if key in self._active:
            self._again.add(key)
            return
        if key in self._queued:
            return
        self._queued.add(key)
        self._idle.clear()
        self._ready.put_nowait(key)

    def _fire(self, key: str) -> None:
        self._timers.pop(key, None)
        self.add(key)

    async def get(self) -> str:
        """The next key to process; the caller must call `done(key)` afterwards."""
        key = await self._ready.get()
        self._queued.discard(key)
        self._active.add(key)
        self._not_busy.clear()
        return key

    def done(self, key: str) -> None:
        self._active.discard(key)
        if not self._active:
            self._not_busy.set()
        if key in self._again:
            self._again.discard(key)
            self.add(key)
        if self.idle:
            self._idle.set()

    async def wait_idle(self) -> None:
        await self._idle.wait()

    async def wait_not_busy(self) -> None:
        await self._not_busy.wait()

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
