"""The running watcher: stream follower, relist timer and reconcile workers on one queue.

Three sources feed the keyed work queue: the event stream (apps its events touch), the
relist (every app in `shaman_apps`, after each stream (re)connect and every
`relist_interval_s`), and the reconcilers themselves (look again after a delay: a
deadline to watch, a temporary failure backing off). `reconcile_concurrency` workers
drain the queue; one app is never reconciled twice at once.

`stop()` stops the stream and the timers, lets in-flight reconciles finish (bounded),
and stores the checkpoint. Not here: what a reconcile does (reconciler.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from services.watcher import metrics
from services.watcher.reconciler import Reconciler
from services.watcher.stream import StreamFollower
from services.watcher.workqueue import KeyedQueue
from shared.bus import TypedKV
from shared.errors import ShamanError, TemporaryError
from shared.logging import get_logger
from shared.records import AppRecord
from shared.tasks import BackgroundTasks, backoff_delay, raise_if_cancelled

log = get_logger(__name__)

RELIST_KEY = "\x00relist"  # a queue key no app can have: "relist everything"
STOP_TIMEOUT_S = 10.0


class Watcher:
    def __init__(
        self,
        reconciler: Reconciler,
        follower: StreamFollower,
        apps: TypedKV[AppRecord],
        queue: KeyedQueue,
        *,
        concurrency: int = 4,
        relist_interval_s: float = 30.0,
    ) -> None:
        self.reconciler = reconciler
        self.follower = follower
        self.apps = apps
        self.queue = queue
        self.concurrency = max(1, concurrency)
        self.relist_interval_s = relist_interval_s
        self.tasks = BackgroundTasks("watcher")
        self._workers = BackgroundTasks("watcher-workers")
        self._failures: dict[str, int] = {}
        self._closing = False
        self.relists = 0

    async def start(self) -> None:
        await self.follower.load()
        for n in range(self.concurrency):
            self._workers.spawn(f"worker-{n}", self._work())
        self.queue.add(RELIST_KEY)  # at start, before the stream says anything
        self.tasks.spawn("event-stream", self.follower.run())
        self.tasks.spawn("checkpoint", self.follower.flush_loop())
        self.tasks.spawn("relist-timer", self._relist_timer())

    def healthy(self) -> bool:
        return self.tasks.healthy() and self._workers.healthy()

    async def stop(self) -> None:
        self._closing = True
        await self.tasks.close()
        # In-flight reconciles finish; queued ones are dropped (the next start relists).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.queue.wait_not_busy(), STOP_TIMEOUT_S)
        await self._workers.close()
        self.queue.close()
        with contextlib.suppress(ShamanError):
            await self.follower.flush()

    def request_relist(self) -> None:
        self.queue.add(RELIST_KEY)

    async def _relist_timer(self) -> None:
        while True:
            raise_if_cancelled()
            await asyncio.sleep(self.relist_interval_s)
            self.request_relist()

    async def _relist(self) -> None:
        self.relists += 1
        for app in await self.apps.keys():
            self.queue.add(app)
        await self.reconciler.settle_pending_rollbacks()

    async def _work(self) -> None:
        while True:
            raise_if_cancelled()
            key = await self.queue.get()
            if self._closing:
                self.queue.done(key)
                continue
            started = time.monotonic()
            try:
                if key == RELIST_KEY:
                    await self._relist()
                    after = None
                else:
                    after = await self.reconciler.reconcile(key)
            except asyncio.CancelledError:
                self.queue.done(key)
                raise
            except Exception as exc:
                failures = self._failures.get(key, 0) + 1
                self._failures[key] = failures
                delay = backoff_delay(failures, 0.2, 30.0, 0.5)
                if isinstance(exc, TemporaryError) and exc.retry_after_s:
                    delay = max(delay, exc.retry_after_s)
                if isinstance(exc, ShamanError):
                    log.warning("reconcile failed; retrying", app=key, attempt=failures,
                                retry_in_s=round(delay, 2), error=str(exc))
                else:
                    log.exception("reconcile crashed; retrying", app=key, attempt=failures,
                                  retry_in_s=round(delay, 2))
                metrics.RECONCILES.labels("error").inc()
                self.queue.done(key)
                self.queue.add(key, delay)
                continue
            self._failures.pop(key, None)
            metrics.RECONCILES.labels("ok").inc()
            metrics.RECONCILE_SECONDS.observe(time.monotonic() - started)
            self.queue.done(key)
            if after is not None:
                self.queue.add(key, after)
