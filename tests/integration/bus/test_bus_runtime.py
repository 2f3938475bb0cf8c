"""The bus runtime against a real nats-server: CAS, dedupe, ack/nak/term, dead letters."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import msgspec
import pytest

from shared import subjects
from shared.bus import Bus, ConsumerSpec, Delivery, TypedKV, WorkConsumer, connect_bus, provision
from shared.errors import ConflictError, PermanentError, TemporaryError
from shared.records import AppRecord, AppSpec
from shared.settings import CommonSettings


async def wait_for(pred: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    b = await connect_bus(CommonSettings(nats_url=nats_url), "test")
    await provision(b.js)
    yield b
    await b.close()


async def test_provision_is_idempotent(bus: Bus) -> None:
    await provision(bus.js)
    info = await bus.js.stream_info(subjects.STREAM_EVENTS)
    assert info.config.subjects == [subjects.EVENTS_ALL]


async def test_kv_compare_and_set(bus: Bus) -> None:
    kv = TypedKV(await bus.js.key_value(subjects.KV_APPS), AppRecord)
    rev = await kv.create("cas-app", AppRecord(spec=AppSpec(name="cas-app")))
    with pytest.raises(ConflictError):
        await kv.create("cas-app", AppRecord(spec=AppSpec(name="cas-app")))
    await kv.update("cas-app", AppRecord(spec=AppSpec(name="cas-app"), next_release=2), last=rev)
    with pytest.raises(ConflictError):
        await kv.update("cas-app", AppRecord(spec=AppSpec(name="cas-app")), last=rev)

    def bump(rec: AppRecord) -> AppRecord:
        rec.next_release += 1
        return rec

    results = await asyncio.gather(*(kv.mutate("cas-app", bump) for _ in range(10)))
    assert all(r is not None for r in results)
    final = await kv.get("cas-app")
    assert final is not None and final.value.next_release == 12


async def test_publish_dedupes_on_msg_id(bus: Bus) -> None:
    subject = subjects.build_work_subject("dedupe")
    first = await bus.publish(subject, b"x", msg_id="d1:build")
    second = await bus.publish(subject, b"x", msg_id="d1:build")
    assert not first.duplicate and second.duplicate and first.seq == second.seq


async def test_consumer_ack_retry_and_dead_letter(bus: Bus) -> None:
    subject = subjects.release_work_subject("consumer-app")
    seen: dict[bytes, int] = {}
    dead: list[tuple[bytes, str]] = []

    async def handler(d: Delivery) -> None:
        seen[d.data] = seen.get(d.data, 0) + 1
        if d.data == b"flaky" and d.num_delivered < 2:
            raise TemporaryError("try again")
        if d.data == b"poison":
            raise PermanentError("cannot ever work")
        if d.data == b"always-fails":
            raise TemporaryError("still down")

    async def on_dead(data: bytes, reason: str, headers: dict[str, str]) -> None:
        dead.append((data, reason))

    spec = ConsumerSpec(
        stream=subjects.STREAM_RELEASE_WORK, durable="test-consumer", filter_subject=subject,
        ack_wait_s=2, max_deliver=3, retry_delays_s=(0.05,),
    )
    consumer = WorkConsumer(bus, spec, handler, concurrency=4, on_dead_letter=on_dead)
    await consumer.start()
    try:
        for i, body in enumerate([b"ok", b"flaky", b"poison", b"always-fails"]):
            await bus.publish(subject, body, msg_id=f"m{i}")
        await wait_for(lambda: len(dead) == 2 and seen.get(b"flaky") == 2)
        assert seen[b"ok"] == 1
        assert seen[b"poison"] == 1
        assert seen[b"always-fails"] == 3
        assert {d for d, _ in dead} == {b"poison", b"always-fails"}
        # Dead letters are kept with their reason.
        dlq = await bus.js.stream_info(subjects.STREAM_DEAD_LETTER)
        assert dlq.state.messages >= 2
        # Nothing is left on the work queue.
        await wait_for(lambda: consumer.handled == 2)
    finally:
        await consumer.stop()
    info = await bus.js.consumer_info(subjects.STREAM_RELEASE_WORK, "test-consumer")
    assert info.num_ack_pending == 0


async def test_heartbeats_keep_long_work_from_redelivery(bus: Bus) -> None:
    subject = subjects.build_work_subject("slow-app")
    deliveries: list[int] = []
    release = asyncio.Event()

    async def handler(d: Delivery) -> None:
        deliveries.append(d.num_delivered)
        await release.wait()

    spec = ConsumerSpec(stream=subjects.STREAM_BUILD_WORK, durable="slow-builders",
                        filter_subject=subject, ack_wait_s=0.6, max_deliver=3)
    consumer = WorkConsumer(bus, spec, handler, concurrency=2)
    await consumer.start()
    try:
        await bus.publish(subject, msgspec.json.encode({"n": 1}), msg_id="slow-1")
        await wait_for(lambda: len(deliveries) == 1)
        # Three ack_waits pass; heartbeats must prevent a second delivery.
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            assert len(deliveries) == 1
            await asyncio.sleep(0.1)
        release.set()
        await wait_for(lambda: consumer.handled == 1)
    finally:
        await consumer.stop()


async def test_kv_keys_by_prefix_skip_nothing_and_values_skip_deleted(bus: Bus) -> None:
    kv = TypedKV(await bus.js.key_value(subjects.KV_RELEASES), AppRecord)
    for key in ("pfx.1", "pfx.2", "pfx.10", "pfxother.1", "zzz.1"):
        await kv.put(key, AppRecord(spec=AppSpec(name="pfx")))
    assert await kv.keys("pfx") == ["pfx.1", "pfx.10", "pfx.2"]
    await kv.delete("pfx.2")
    assert [e.key for e in await kv.values("pfx")] == ["pfx.1", "pfx.10"]
    assert {"pfx.1", "pfxother.1", "zzz.1"} <= set(await kv.keys())
