"""Following a JetStream stream in order, from a sequence on, across NATS restarts.

`StreamTail` is an ordered push consumer managed by hand: an ephemeral, in-memory,
no-ack consumer delivering to an inbox, with idle heartbeats and flow control. It
checks the consumer sequence of every message; on a gap, or when heartbeats stop
(NATS restarted and the ephemeral consumer is gone), it recreates the consumer from
the last stream sequence it handed out plus one. So a follower misses nothing and
repeats nothing, even when the server it talked to was restarted.

Why not nats-py's `ordered_consumer=True`: its reset restarts from sequence 1 when no
message has arrived yet (it tracks the last sequence only from deliveries), which would
replay the whole timeline to every SSE client after a NATS restart on a quiet system.

This module knows nothing of SSE or HTTP; `on_message(seq, subject, data)` is the
caller's.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from shared.bus.connection import UNAVAILABLE, Bus
from shared.logging import get_logger
from shared.tasks import BackgroundTasks

log = get_logger(__name__)

OnMessage = Callable[[int, str, bytes], Awaitable[None]]
_STATUS = "Status"
_CONSUMER_STALLED = "Nats-Consumer-Stalled"
_LAST_CONSUMER = "Nats-Last-Consumer"


class StreamTail:
    def __init__(
        self,
        bus: Bus,
        stream: str,
        filter_subject: str,
        on_message: OnMessage,
        *,
        heartbeat_s: float = 1.0,
        name: str = "tail",
    ) -> None:
        self.bus = bus
        self.stream = stream
        self.filter_subject = filter_subject
        self.on_message = on_message
        self.heartbeat_s = heartbeat_s
        self.name = name
        self.last_seq = 0  # the last stream sequence handed to on_message (or skipped)
        self._expected_cseq = 1
        self._generation = 0
        self._sub: Subscription | None = None
        self._consumer: str | None = None
        self._last_activity = time.monotonic()
        self._needs_reset = asyncio.Event()
        self._tasks = BackgroundTasks(f"stream-tail:{name}")

    async def start(self, after_seq: int | None = None) -> None:
        """Follow messages with a sequence above `after_seq` (None: only new ones)."""
        if after_seq is None:
            info = await self.bus.js.stream_info(self.stream)
            after_seq = info.state.last_seq
        self.last_seq = after_seq
        await self._subscribe()
        self._tasks.spawn("watchdog", self._watchdog())

    async def stop(self) -> None:
        await self._tasks.close()
        await self._unsubscribe()

    async def _subscribe(self) -> None:
        nc = self.bus.nc
        inbox = nc.new_inbox()
        self._expected_cseq = 1
        self._generation += 1
        generation = self._generation

        async def deliver(msg: Msg) -> None:
            # Deliveries to a subscription we already replaced are dropped.
            if generation == self._generation:
                await self._on_msg(msg)

        self._sub = await nc.subscribe(inbox, cb=deliver)
        config = ConsumerConfig(
            deliver_subject=inbox,
            filter_subject=self.filter_subject,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=self.last_seq + 1,
            ack_policy=AckPolicy.NONE,
            max_deliver=1,
            flow_control=True,
            idle_heartbeat=self.heartbeat_s,
            mem_storage=True,
            num_replicas=1,
            # The server reaps it soon after we stop listening (crash, restart).
            inactive_threshold=max(5.0, self.heartbeat_s * 10),
        )
        try:
            info = await self.bus.js.add_consumer(self.stream, config)
        except BaseException:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None
            raise
        self._consumer = info.name
        self._last_activity = time.monotonic()

    async def _unsubscribe(self) -> None:
        sub, consumer = self._sub, self._consumer
        self._sub = None
        self._consumer = None
        self._generation += 1
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        if consumer is not None and self.bus.connected:
            with contextlib.suppress(Exception):
                await self.bus.js.delete_consumer(self.stream, consumer)

    async def _on_msg(self, msg: Msg) -> None:
        self._last_activity = time.monotonic()
        headers = msg.headers or {}
        if headers.get(_STATUS) == "100":
            # Flow control request (has a reply) or idle heartbeat (may name a stalled FC).
            reply = msg.reply or headers.get(_CONSUMER_STALLED)
            if reply:
                with contextlib.suppress(*UNAVAILABLE):
                    await self.bus.nc.publish(reply, b"")
            last = headers.get(_LAST_CONSUMER)
            if last is not None and int(last) != self._expected_cseq - 1:
                self._needs_reset.set()
            return
        try:
            meta = msg.metadata
        except Exception:
            return
        if meta.sequence.consumer != self._expected_cseq:
            self._needs_reset.set()
            return
        self._expected_cseq += 1
        seq = meta.sequence.stream
        if seq <= self.last_seq:
            return
        self.last_seq = seq
        try:
            await self.on_message(seq, msg.subject, msg.data)
        except Exception:
            log.exception("stream tail handler failed", tail=self.name, seq=seq)

    async def _watchdog(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._needs_reset.wait(), timeout=self.heartbeat_s)
            silent_for = time.monotonic() - self._last_activity
            if not self._needs_reset.is_set() and silent_for < 3 * self.heartbeat_s:
                continue
            if not self.bus.connected:
                continue
            self._needs_reset.clear()
            log.info("stream tail resetting", tail=self.name, after_seq=self.last_seq,
                     silent_s=round(silent_for, 2))
            await self._unsubscribe()
            try:
                await self._subscribe()
            except (nats.js.errors.Error, *UNAVAILABLE) as exc:
                log.warning("stream tail resubscribe failed", tail=self.name, error=repr(exc))
                self._needs_reset.set()
                await asyncio.sleep(self.heartbeat_s)


async def read_range(
    bus: Bus,
    stream: str,
    filter_subject: str,
    after_seq: int,
    *,
    limit: int,
    until_seq: int | None = None,
    batch: int = 256,
) -> list[tuple[int, str, bytes]]:
    """Up to `limit` messages with sequence above `after_seq` (and at most `until_seq`).

    A bounded read with an ephemeral pull consumer, for replays and the audit log;
    stops when the consumer has nothing pending.
    """
    config = ConsumerConfig(
        deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
        opt_start_seq=after_seq + 1,
        ack_policy=AckPolicy.NONE,
        mem_storage=True,
        num_replicas=1,
        inactive_threshold=10.0,
    )
    psub = await bus.js.pull_subscribe(filter_subject, stream=stream, config=config)
    out: list[tuple[int, str, bytes]] = []
    try:
        while len(out) < limit:
            try:
                msgs = await psub.fetch(min(batch, limit - len(out)), timeout=0.5)
            except nats.errors.TimeoutError:
                break
            done = False
            for msg in msgs:
                meta = msg.metadata
                seq = meta.sequence.stream
                if until_seq is not None and seq > until_seq:
                    done = True
                    break
                out.append((seq, msg.subject, msg.data))
                if meta.num_pending == 0:
                    done = True
            if done or not msgs:
                break
    finally:
        with contextlib.suppress(Exception):
            await psub.unsubscribe()
        with contextlib.suppress(Exception):
            if config.name:
                await bus.js.delete_consumer(stream, config.name)
    return out
