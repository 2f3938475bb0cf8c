"""A build's log: scrubbed lines, streamed live as `build.log` events and kept whole.

Lines arrive synchronously from the running commands (`line()`); a background flusher
publishes them in batches (every `flush_interval_s` or `flush_lines` lines, whichever
comes first) as `BuildLog` events on the app's timeline, each with the position of its
first line (`seq`). Publishing is best effort: the build never waits for or fails on a
log batch; a batch NATS cannot take is dropped from the live stream but stays in the
whole log, which `save()` writes to the `shaman_build_logs` object store as
`<app>/<deploy_id>` (at the end, and also at a failure, so a partial log is readable).

Every line passes the build's `Scrubber` before it is kept, so nothing here ever holds
a secret value. This module does not decide what a build is; it only carries its text.
"""

from __future__ import annotations

import asyncio
import contextlib

from nats.js.object_store import ObjectStore

from services.builder.scrub import Scrubber
from shared.bus import Bus
from shared.errors import BackendUnavailable
from shared.events import BuildLog
from shared.logging import get_logger
from shared.tasks import raise_if_cancelled

log = get_logger(__name__)

TRUNCATED = "[log truncated: the stored build log is limited to {limit} bytes]"


def build_log_object(app: str, deploy_id: str) -> str:
    """The object name of a build's log (build id = deploy id)."""
    return f"{app}/{deploy_id}"


class BuildLogStream:
    def __init__(
        self,
        bus: Bus,
        *,
        app: str,
        deploy_id: str,
        attempt: int,
        scrubber: Scrubber,
        flush_interval_s: float = 0.1,
        flush_lines: int = 50,
        max_bytes: int = 8 * 1024 * 1024,
    ) -> None:
        self._bus = bus
        self.app = app
        self.deploy_id = deploy_id
        self.attempt = attempt
        self.scrubber = scrubber
        self._interval = flush_interval_s
        self._batch = max(1, flush_lines)
        self._max_bytes = max_bytes
        self.lines: list[str] = []  # the whole log, scrubbed
        self._bytes = 0
        self._truncated = False
        self._published = 0  # lines[:_published] went out as events
        self._wake = asyncio.Event()
        self._closing = False
        self._flusher_task: asyncio.Task[None] | None = None
        self.dropped_batches = 0

    def line(self, text: str) -> None:
        clean = self.scrubber.scrub(text.rstrip())
        size = len(clean.encode()) + 1
        if self._bytes + size > self._max_bytes:
            if not self._truncated:
                self._truncated = True
                self.lines.append(TRUNCATED.format(limit=self._max_bytes))
            return
        self._bytes += size
        self.lines.append(clean)
        if len(self.lines) - self._published >= self._batch:
            self._wake.set()

    def tail(self, n: int = 20) -> list[str]:
        return self.lines[-n:]

    def text(self) -> str:
        return "\n".join(self.lines) + ("\n" if self.lines else "")

    async def __aenter__(self) -> BuildLogStream:
        self._flusher_task = asyncio.create_task(
            self._flusher(), name=f"build-log:{self.deploy_id}:flusher")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        # The flusher is asked to finish rather than cancelled: a cancellation that lands
        # while a publish completes can be swallowed by asyncio.wait_for (Python 3.11),
        # which would leave it running.
        self._closing = True
        self._wake.set()
        task = self._flusher_task
        if task is not None:
            try:
                await task
            except asyncio.CancelledError:
                task.cancel()
                raise
            except Exception as exc:  # a crashed flusher must not hide the build's outcome
                log.warning("build log flusher failed", deploy_id=self.deploy_id,
                            error=repr(exc))
        # Whatever the flusher had not sent yet goes out now, in order.
        await self.flush()

    async def _flusher(self) -> None:
        while not self._closing:
            raise_if_cancelled()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        while self._published < len(self.lines):
            start = self._published
            batch = self.lines[start : start + self._batch]
            self._published = start + len(batch)
            event = BuildLog(app=self.app, deploy_id=self.deploy_id, build_id=self.deploy_id,
                             seq=start, lines=batch)
            try:
                await self._bus.publish_event(
                    event, msg_id=f"{self.deploy_id}:build.log:{self.attempt}:{start}"
                )
            except BackendUnavailable as exc:
                self.dropped_batches += 1
                log.warning("build log batch not published", deploy_id=self.deploy_id,
                            seq=start, error=str(exc))

    async def save(self, store: ObjectStore, *, note: str | None = None) -> bool:
        """Write the whole log (plus a closing note) to the object store; False on failure."""
        text = self.text() + (f"{self.scrubber.scrub(note)}\n" if note else "")
        try:
            await store.put(build_log_object(self.app, self.deploy_id), text.encode())
        except Exception as exc:  # the log is a by-product: losing it must not fail the build
            log.warning("build log not stored", deploy_id=self.deploy_id, error=repr(exc))
            return False
        return True
