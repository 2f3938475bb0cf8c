"""Durable pull consumers: the ack / nak(delay) / term mapping, done once.

A handler is `async def handle(delivery) -> None`:
- it returns                      → ack (the work is done);
- it raises TemporaryError (or any unexpected exception)
                                  → nak with a capped delay, redelivered later;
- it raises PermanentError, or the payload cannot be decoded
                                  → term, copied to the dead-letter stream,
                                    and `on_dead_letter` is told why;
- the last allowed delivery fails → the same as permanent.
While a handler runs, the runtime sends `in_progress` every ack_wait/3, so
long work (a build) is not redelivered to another copy; a process that stops
(SIGSTOP, SIGKILL) stops heartbeating and its message goes to another copy
after ack_wait. Handlers are idempotent: JetStream is at-least-once, and an
ack is no proof of being the only processor (reliability.md §1).

Messages that run out of deliveries without a decision (the process died on
each try) are caught through the MAX_DELIVERIES advisory and dead-lettered too.

Every message this process dead-letters counts once in `shaman_dead_letters_total`
(shared.bus.metrics), by stream, durable and reason; a dead-letter copy the stream's
dedupe window drops (another copy, or an earlier try of this one, stored it already)
does not count again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import msgspec
import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from shared.bus import metrics
from shared.bus.connection import UNAVAILABLE, Bus
from shared.errors import PermanentError, TemporaryError
from shared.logging import get_logger
from shared.subjects import dead_letter_subject
from shared.tasks import BackgroundTasks, raise_if_cancelled

log = get_logger(__name__)

# The idle long poll (a stop is noticed at least this often) and the top-up fetch of
# messages already pending (see WorkConsumer._fetch).
FETCH_WAIT_S = 1.0
TOP_UP_WAIT_S = 0.1


@dataclass(frozen=True)
class ConsumerSpec:
    stream: str
    durable: str
    filter_subject: str
    ack_wait_s: float = 30.0
    max_deliver: int = 5
    max_ack_pending: int = 1000
    # nak delay before the n-th redelivery (the last value repeats): capped backoff.
    retry_delays_s: tuple[float, ...] = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
    # ack as a request/reply, so the server has processed it before we go on.
    double_ack: bool = True
    fetch_batch: int = 100


@dataclass
class Delivery:
    """One delivery of a message to this process."""

    msg: Msg
    subject: str
    data: bytes
    headers: dict[str, str]
    num_delivered: int
    stream_seq: int
    last_attempt: bool
    _heartbeats: int = field(default=0, repr=False)

    @property
    def msg_id(self) -> str | None:
        return self.headers.get("Nats-Msg-Id")

    async def in_progress(self) -> None:
        """Tell the server the work goes on (resets its ack_wait timer)."""
        self._heartbeats += 1
        await self.msg.in_progress()


Handler = Callable[[Delivery], Awaitable[None]]
DeadLetterHook = Callable[[bytes, str, dict[str, str]], Awaitable[None]]


class WorkConsumer:
    """Runs a handler over a durable pull consumer with bounded concurrency."""

    def __init__(
        self,
        bus: Bus,
        spec: ConsumerSpec,
        handler: Handler,
        *,
        concurrency: int = 1,
        on_dead_letter: DeadLetterHook | None = None,
    ) -> None:
        self.bus = bus
        self.spec = spec
        self.handler = handler
        self.concurrency = max(1, concurrency)
        self.on_dead_letter = on_dead_letter
        self._slots = asyncio.Semaphore(self.concurrency)
        self._inflight: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self._tasks = BackgroundTasks(f"consumer:{spec.durable}")
        self._psub: JetStreamContext.PullSubscription | None = None
        self.handled = 0
        # Dead-letter decisions of this consumer (the metric counts stored copies instead).
        self.dead_lettered = 0
        metrics.declare_consumer(spec.stream, spec.durable)

    def consumer_config(self) -> ConsumerConfig:
        return ConsumerConfig(
            durable_name=self.spec.durable,
            filter_subject=self.spec.filter_subject,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=self.spec.ack_wait_s,
            max_deliver=self.spec.max_deliver,
            max_ack_pending=self.spec.max_ack_pending,
        )

    async def ensure_consumer(self) -> None:
        config = self.consumer_config()
        try:
            await self.bus.js.add_consumer(self.spec.stream, config)
        except nats.js.errors.BadRequestError as exc:
            # The durable exists with other settings (e.g. an older ack_wait):
            # update what may be updated, keep its position.
            log.warning("consumer config differs; updating", durable=self.spec.durable,
                        error=exc.description)
            await self.bus.js.add_consumer(self.spec.stream, config)

    async def start(self) -> None:
        await self.ensure_consumer()
        advisory = (
            f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{self.spec.stream}.{self.spec.durable}"
        )
        # A queue group: one copy of the service handles each advisory.
        await self.bus.nc.subscribe(advisory, queue=f"dlq-{self.spec.durable}",
                                    cb=self._on_max_deliveries)
        self._tasks.spawn("fetch-loop", self._fetch_loop())

    async def stop(self) -> None:
        """Stop fetching, then let in-flight handlers finish (graceful shutdown)."""
        self._stopping.set()
        # First end the fetch loop, so no handler starts after the wait below.
        await self._tasks.close()
        while self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)
        # Unsubscribe so a later drain() does not wait for the pull inbox
        # (nats-py never marks fetched messages as processed there).
        if self._psub is not None:
            with contextlib.suppress(Exception):
                await self._psub.unsubscribe()
            self._psub = None

    async def _fetch_loop(self) -> None:
        while not self._stopping.is_set():
            raise_if_cancelled()
            try:
                if self._psub is None:
                    self._psub = await self.bus.js.pull_subscribe_bind(
                        durable=self.spec.durable, stream=self.spec.stream
                    )
                psub = self._psub
                free = self.concurrency - len(self._inflight)
                if free <= 0:
                    await asyncio.wait(self._inflight, return_when=asyncio.FIRST_COMPLETED)
                    continue
                msgs = await self._fetch(psub, free)
            except nats.errors.TimeoutError:
                continue
            except (nats.js.errors.NotFoundError, *UNAVAILABLE) as exc:
                # NATS restarting, or the consumer vanished: wait a little, rebind.
                log.warning("fetch failed; retrying", durable=self.spec.durable, error=repr(exc))
                self._psub = None
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=0.5)
                with contextlib.suppress(Exception):
                    await self.ensure_consumer()
                continue
            if self._stopping.is_set():
                # Fetched while shutting down: hand them back for another copy now.
                for msg in msgs:
                    with contextlib.suppress(*UNAVAILABLE):
                        await msg.nak()
                break
            for msg in msgs:
                task = asyncio.create_task(self._handle(msg), name=f"{self.spec.durable}-handler")
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)

    async def _fetch(self, psub: JetStreamContext.PullSubscription, free: int) -> list[Msg]:
        """One message by long poll, then whatever else is already waiting, in one batch.

        nats-py's fetch of a batch larger than one can hold a message back for hundreds
        of milliseconds after it arrived (measured here: 2 of 40 lone messages waited
        100-390 ms with batch 10, none with batch 1), and that lands on every deploy's
        and rollback's latency. So the idle wait asks for one message; its metadata says
        how many more the consumer has pending, and only then is a batch fetched (those
        are available at once, so its short timeout is never waited out).
        """
        msgs = await psub.fetch(1, timeout=FETCH_WAIT_S)
        pending = (msgs[-1].metadata.num_pending or 0) if msgs else 0
        room = min(free - 1, self.spec.fetch_batch - 1, pending)
        if room > 0:
            with contextlib.suppress(nats.errors.TimeoutError):
                msgs += await psub.fetch(room, timeout=TOP_UP_WAIT_S)
        return msgs

    def _delivery(self, msg: Msg) -> Delivery:
        meta = msg.metadata
        num = meta.num_delivered or 1
        return Delivery(
            msg=msg,
            subject=msg.subject,
            data=msg.data,
            headers=dict(msg.headers or {}),
            num_delivered=num,
            stream_seq=meta.sequence.stream,
            last_attempt=num >= self.spec.max_deliver > 0,
        )

    def _retry_delay(self, num_delivered: int) -> float:
        delays = self.spec.retry_delays_s
        return delays[min(num_delivered, len(delays)) - 1]

    async def _heartbeat(self, delivery: Delivery) -> None:
        interval = max(self.spec.ack_wait_s / 3, 0.1)
        while True:
            raise_if_cancelled()
            await asyncio.sleep(interval)
            with contextlib.suppress(*UNAVAILABLE):
                await delivery.in_progress()

    async def _handle(self, msg: Msg) -> None:
        delivery = self._delivery(msg)
        heartbeat = asyncio.create_task(self._heartbeat(delivery), name="heartbeat")
        try:
            await self.handler(delivery)
        except asyncio.CancelledError:
            raise
        except (PermanentError, msgspec.DecodeError, msgspec.ValidationError) as exc:
            kind: metrics.DeadLetterReason = (
                "permanent_error" if isinstance(exc, PermanentError) else "undecodable"
            )
            await self._dead_letter(delivery, _reason(exc), kind)
        except Exception as exc:
            if delivery.last_attempt:
                await self._dead_letter(
                    delivery,
                    f"gave up after {delivery.num_delivered} deliveries: {_reason(exc)}",
                    "max_deliveries",
                )
            else:
                delay = self._retry_delay(delivery.num_delivered)
                if isinstance(exc, TemporaryError) and exc.retry_after_s:
                    delay = max(delay, exc.retry_after_s)
                log_fn = log.warning if isinstance(exc, TemporaryError) else log.exception
                log_fn("handler failed; will retry", durable=self.spec.durable,
                       subject=delivery.subject, attempt=delivery.num_delivered,
                       retry_in_s=delay, error=_reason(exc))
                with contextlib.suppress(*UNAVAILABLE):
                    await msg.nak(delay=delay)
        else:
            self.handled += 1
            try:
                if self.spec.double_ack:
                    await msg.ack_sync(timeout=2.0)
                else:
                    await msg.ack()
            except UNAVAILABLE as exc:
                # The work is done and idempotent: a redelivery will find it done.
                log.warning("ack not confirmed", durable=self.spec.durable, error=repr(exc))
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat

    async def _dead_letter(
        self, delivery: Delivery, reason: str, kind: metrics.DeadLetterReason
    ) -> None:
        self.dead_lettered += 1
        log.error("message dead-lettered", durable=self.spec.durable, subject=delivery.subject,
                  stream_seq=delivery.stream_seq, reason=reason)
        headers = {
            "Shaman-Original-Subject": delivery.subject,
            "Shaman-Original-Seq": str(delivery.stream_seq),
            "Shaman-Reason": reason[:1000],
            "Shaman-Deliveries": str(delivery.num_delivered),
        }
        ack = await self.bus.publish(
            dead_letter_subject(self.spec.stream, self.spec.durable),
            delivery.data,
            msg_id=f"dlq:{self.spec.stream}:{delivery.stream_seq}",
            headers=headers,
        )
        self._count(kind, duplicate=bool(ack.duplicate))
        if self.on_dead_letter is not None:
            try:
                await self.on_dead_letter(delivery.data, reason, delivery.headers)
            except Exception:
                log.exception("dead-letter hook failed", durable=self.spec.durable)
        with contextlib.suppress(*UNAVAILABLE):
            await delivery.msg.term()

    async def _on_max_deliveries(self, msg: Msg) -> None:
        """A message ran out of deliveries with no decision: dead-letter it."""
        try:
            advisory = msgspec.json.decode(msg.data)
            seq = int(advisory["stream_seq"])
            raw = await self.bus.js.get_msg(self.spec.stream, seq)
        except Exception as exc:
            log.warning("max-deliveries advisory not handled", error=repr(exc))
            return
        reason = f"no outcome after {self.spec.max_deliver} deliveries (worker died each time)"
        headers = {
            "Shaman-Original-Subject": raw.subject or "",
            "Shaman-Original-Seq": str(seq),
            "Shaman-Reason": reason,
        }
        ack = await self.bus.publish(
            dead_letter_subject(self.spec.stream, self.spec.durable),
            raw.data or b"",
            msg_id=f"dlq:{self.spec.stream}:{seq}",
            headers=headers,
        )
        self._count("max_deliveries_advisory", duplicate=bool(ack.duplicate))
        if self.on_dead_letter is not None:
            try:
                await self.on_dead_letter(raw.data or b"", reason, dict(raw.headers or {}))
            except Exception:
                log.exception("dead-letter hook failed", durable=self.spec.durable)
        with contextlib.suppress(Exception):
            await self.bus.js.delete_msg(self.spec.stream, seq)
        self.dead_lettered += 1

    def _count(self, kind: metrics.DeadLetterReason, *, duplicate: bool) -> None:
        # Counted once the dead-letter copy is stored (a publish that fails raises before
        # this, and the message is redelivered). A duplicate means the copy was stored
        # already, by another copy of the service or by an earlier try of this one that
        # died before its term: counting it again would count one message twice.
        if duplicate:
            log.info("dead letter already stored", durable=self.spec.durable, reason=kind)
            return
        metrics.count_dead_letter(self.spec.stream, self.spec.durable, kind)


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text[:2000]
