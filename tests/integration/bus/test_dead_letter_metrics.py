"""`shaman_dead_letters_total` against a real nats-server: one count per message dead-lettered.

Each test uses its own subject and durable, and reads the counter from prometheus_client's
default registry before and after (other tests in the process may count on other labels).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import msgspec
import pytest
from prometheus_client import REGISTRY

from shared import subjects
from shared.bus import Bus, ConsumerSpec, Delivery, WorkConsumer, connect_bus, provision
from shared.bus.metrics import DEAD_LETTER_REASONS
from shared.errors import PermanentError, TemporaryError
from shared.settings import CommonSettings

STREAM = subjects.STREAM_RELEASE_WORK
_ids = itertools.count()


class _Command(msgspec.Struct):
    app: str


async def wait_for(pred: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def dead_letters(durable: str, reason: str) -> float | None:
    return REGISTRY.get_sample_value(
        "shaman_dead_letters_total", {"stream": STREAM, "durable": durable, "reason": reason}
    )


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    b = await connect_bus(CommonSettings(nats_url=nats_url), "test-dlq-metrics")
    await provision(b.js)
    yield b
    await b.close()


@pytest.fixture
def names() -> tuple[str, str]:
    """(subject, durable) of this test alone."""
    n = next(_ids)
    return subjects.release_work_subject(f"dlq-metrics-{n}"), f"dlq-metrics-{n}"


async def _run(
    bus: Bus,
    spec: ConsumerSpec,
    handler: Callable[[Delivery], Awaitable[None]],
    until: Callable[[], bool],
    *,
    consumer_hook: Callable[[WorkConsumer], None] | None = None,
) -> WorkConsumer:
    """Run a consumer until `until()` holds and nothing is left pending or unacked."""
    consumer = WorkConsumer(bus, spec, handler, concurrency=4)
    if consumer_hook is not None:
        consumer_hook(consumer)
    await consumer.start()
    try:
        await wait_for(until)

        async def settled() -> bool:
            info = await bus.js.consumer_info(spec.stream, spec.durable)
            return info.num_ack_pending == 0 and info.num_pending == 0

        deadline = time.monotonic() + 15
        while not await settled():
            assert time.monotonic() < deadline, "messages left on the work stream"
            await asyncio.sleep(0.05)
    finally:
        await consumer.stop()
        await bus.js.delete_consumer(spec.stream, spec.durable)
    return consumer


async def test_series_exist_at_zero_once_a_consumer_is_built(
    bus: Bus, names: tuple[str, str]
) -> None:
    subject, durable = names

    async def handler(d: Delivery) -> None:
        return None

    WorkConsumer(bus, ConsumerSpec(STREAM, durable, subject), handler)
    assert [dead_letters(durable, r) for r in DEAD_LETTER_REASONS] == [0.0] * 4


async def test_each_reason_counts_once_per_message(bus: Bus, names: tuple[str, str]) -> None:
    subject, durable = names
    before = {r: dead_letters(durable, r) or 0.0 for r in DEAD_LETTER_REASONS}
    dead: list[bytes] = []

    async def handler(d: Delivery) -> None:
        if d.data == b"poison":
            raise PermanentError("cannot ever work")
        if d.data == b"always-fails":
            raise TemporaryError("still down")
        msgspec.json.decode(d.data, type=_Command)  # b"not json" fails here

    async def on_dead(data: bytes, reason: str, headers: dict[str, str]) -> None:
        dead.append(data)

    spec = ConsumerSpec(STREAM, durable, subject, ack_wait_s=2, max_deliver=2,
                        retry_delays_s=(0.05,))
    for i, body in enumerate([b"poison", b"not json", b"always-fails", b'{"app": "ok"}']):
        await bus.publish(subject, body, msg_id=f"{durable}:{i}")

    def hook(consumer: WorkConsumer) -> None:
        consumer.on_dead_letter = on_dead

    consumer = await _run(bus, spec, handler, lambda: len(dead) == 3, consumer_hook=hook)
    assert consumer.handled == 1
    after = {r: dead_letters(durable, r) for r in DEAD_LETTER_REASONS}
    assert after == {
        "permanent_error": before["permanent_error"] + 1,
        "undecodable": before["undecodable"] + 1,
        "max_deliveries": before["max_deliveries"] + 1,
        "max_deliveries_advisory": before["max_deliveries_advisory"],
    }


async def test_a_dead_letter_the_dedupe_window_drops_is_not_counted_again(
    bus: Bus, names: tuple[str, str]
) -> None:
    subject, durable = names
    ack = await bus.publish(subject, b"poison", msg_id=f"{durable}:poison")
    # An earlier try (another copy, or this one before it died) stored the dead letter
    # but never termed the message: the copy this try publishes is a duplicate.
    stored = await bus.publish(
        subjects.dead_letter_subject(STREAM, durable), b"poison", msg_id=f"dlq:{STREAM}:{ack.seq}"
    )
    assert not stored.duplicate
    handled: list[int] = []

    async def handler(d: Delivery) -> None:
        handled.append(d.stream_seq)
        raise PermanentError("cannot ever work")

    spec = ConsumerSpec(STREAM, durable, subject, ack_wait_s=2, max_deliver=2)
    before = dead_letters(durable, "permanent_error") or 0.0
    consumer = await _run(bus, spec, handler, lambda: len(handled) == 1)
    assert consumer.dead_lettered == 1  # decided (and termed) here ...
    assert dead_letters(durable, "permanent_error") == before  # ... but stored already


async def test_a_message_no_delivery_decided_counts_through_the_advisory(
    bus: Bus, names: tuple[str, str]
) -> None:
    subject, durable = names
    release = asyncio.Event()
    deliveries: list[int] = []

    async def handler(d: Delivery) -> None:
        # Hangs without heartbeats, as a process that died would: every delivery
        # times out, and after the last one the server sends MAX_DELIVERIES.
        deliveries.append(d.num_delivered)
        await release.wait()

    async def no_heartbeat(delivery: Delivery) -> None:
        return None

    def hook(consumer: WorkConsumer) -> None:
        consumer._heartbeat = no_heartbeat  # type: ignore[method-assign]

    spec = ConsumerSpec(STREAM, durable, subject, ack_wait_s=0.5, max_deliver=2)
    before = {r: dead_letters(durable, r) or 0.0 for r in DEAD_LETTER_REASONS}
    await bus.publish(subject, b"work", msg_id=f"{durable}:work")
    consumer: WorkConsumer | None = None

    def advisory_counted() -> bool:
        return dead_letters(durable, "max_deliveries_advisory") == (
            before["max_deliveries_advisory"] + 1
        )

    async def release_when_counted() -> None:
        try:
            await wait_for(advisory_counted)
        finally:
            release.set()  # also when the count never comes: stop() waits for handlers

    releaser = asyncio.create_task(release_when_counted())
    try:
        consumer = await _run(bus, spec, handler, advisory_counted, consumer_hook=hook)
    finally:
        release.set()
        releaser.cancel()
        with contextlib.suppress(asyncio.CancelledError, AssertionError):
            await releaser
    assert deliveries == [1, 2]
    assert consumer.dead_lettered == 1
    assert {r: dead_letters(durable, r) for r in DEAD_LETTER_REASONS} == {
        **before, "max_deliveries_advisory": before["max_deliveries_advisory"] + 1,
    }
