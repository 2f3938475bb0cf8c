"""Following Nomad's event stream: which apps to look at, and the checkpoint.

Every event only says "look at app X now" (level-triggered): `apps_to_reconcile` maps an
envelope to the job IDs it touches, skipping replayed copies, and the follower adds those
apps to the work queue. The follower also:
- resumes from the checkpoint (inclusive, shared.nomad.event_stream reconnects with
  capped backoff and jitter) and asks for a relist after every (re)connect, because the
  stream loses events (Nomad restarts, a slow reader, a gap in the ring buffer);
- resets the position when Nomad's index goes backwards, and relists then too;
- writes the checkpoint when the queue has drained what the stream fed it (so the
  stored index is "fully processed"), at most every `checkpoint_interval_s`, or after
  `checkpoint_max_lag_s` at the latest under constant load (the relist on restart covers
  whatever the newer index skips).

Not here: what a reconcile does (reconciler.py), reading the stream's bytes
(shared.nomad.event_stream).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from services.watcher import metrics
from services.watcher.checkpoint import Checkpoint, StreamPosition
from services.watcher.notes import CHECKPOINT_KEY
from services.watcher.workqueue import KeyedQueue
from shared.bus import TypedKV
from shared.errors import ShamanError
from shared.logging import get_logger
from shared.nomad.event_stream import Envelope, NomadEventStream, reconnecting_envelopes
from shared.tasks import raise_if_cancelled

log = get_logger(__name__)

TOPICS = ("Deployment", "Allocation", "Job", "Evaluation")


def job_id_of(topic: str, key: str, filter_keys: list[str] | None) -> str | None:
    """The job an event is about: the Key of a Job event, else the first FilterKey."""
    if topic == "Job":
        return key or None
    if filter_keys:
        return filter_keys[0] or None
    return None


def apps_to_reconcile(envelope: Envelope, position: StreamPosition) -> tuple[set[str], bool]:
    """The job IDs an envelope asks to look at, and whether the index went backwards.

    Marks each new event as handled in `position`; the caller enqueues the apps before it
    reads the next envelope, so "handled" means "its reconcile is queued".
    """
    apps: set[str] = set()
    regressed = False
    for event in envelope.Events:
        index = event.Index or envelope.Index
        verdict = position.classify(index, event.Topic, event.Key, event.Type)
        if verdict == "duplicate":
            continue
        if verdict == "regressed":
            position.reset(index)
            regressed = True
        position.mark(index, event.Topic, event.Key, event.Type)
        job = job_id_of(event.Topic, event.Key, event.FilterKeys)
        if job is not None:
            apps.add(job)
    return apps, regressed


class StreamFollower:
    def __init__(
        self,
        stream: NomadEventStream,
        checkpoints: TypedKV[Checkpoint],
        queue: KeyedQueue,
        on_connect: Callable[[], None],
        *,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        checkpoint_interval_s: float = 1.0,
        checkpoint_max_lag_s: float = 10.0,
    ) -> None:
        self.stream = stream
        self.checkpoints = checkpoints
        self.queue = queue
        self.on_connect = on_connect
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.checkpoint_interval_s = checkpoint_interval_s
        self.checkpoint_max_lag_s = checkpoint_max_lag_s
        self.position = StreamPosition()
        self.connected = False
        self.connects = 0
        self._stored_index = -1
        self._stored_at = time.monotonic()

    async def load(self) -> None:
        entry = await self.checkpoints.get(CHECKPOINT_KEY)
        if entry is not None:
            self.position = StreamPosition(entry.value)
            self._stored_index = entry.value.index
        log.info("watcher checkpoint loaded", index=self.position.index)

    def _connected(self) -> None:
        self.connected = True
        self.connects += 1
        metrics.STREAM_CONNECTS.inc()
        self.on_connect()

    async def run(self) -> None:
        """Follow the stream forever (cancel to stop)."""
        envelopes = reconnecting_envelopes(
            self.stream,
            lambda: self.position.index,
            on_connect=self._connected,
            initial_backoff_s=self.backoff_initial_s,
            max_backoff_s=self.backoff_max_s,
        )
        try:
            async for envelope in envelopes:
                metrics.STREAM_ENVELOPES.inc()
                metrics.STREAM_EVENTS.inc(len(envelope.Events))
                apps, regressed = apps_to_reconcile(envelope, self.position)
                if regressed:
                    log.warning("nomad index went backwards; checkpoint reset and relisting",
                                index=self.position.index)
                    metrics.STREAM_REGRESSIONS.inc()
                    self.on_connect()
                for app in apps:
                    self.queue.add(app)
        finally:
            self.connected = False
            await envelopes.aclose()

    async def flush_loop(self) -> None:
        """Store the position when the queue has caught up (see the module docstring)."""
        while True:
            raise_if_cancelled()
            await asyncio.sleep(self.checkpoint_interval_s)
            lag = time.monotonic() - self._stored_at
            if self.queue.idle or lag >= self.checkpoint_max_lag_s:
                await self.flush()

    async def flush(self) -> None:
        if self.position.index == self._stored_index:
            self._stored_at = time.monotonic()
            return
        checkpoint = self.position.checkpoint()
        try:
            await self.checkpoints.put(CHECKPOINT_KEY, checkpoint)
        except ShamanError as exc:
            log.warning("watcher checkpoint not stored", error=str(exc))
            return
        self._stored_index = checkpoint.index
        self._stored_at = time.monotonic()
