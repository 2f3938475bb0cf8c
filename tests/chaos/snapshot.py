"""Everything the platform wrote, read back once a scenario has settled.

`take_snapshot(nats_url)` reads, over a fresh NATS connection:
- the live deploy, release and app records (decoded with shared.records);
- every message of every stream, KV history revisions and object-store chunks included
  (raw bytes, for the secret grep): limits streams through an ephemeral pull consumer,
  work-queue streams (which allow no second consumer) message by message;
- the timeline (SHAMAN_EVENTS) decoded as dicts, in stream order, and the dead letters.

Not here: Nomad's side (observe.NomadRecorder) or any judgement (invariants.py).
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from typing import Any

import nats
import nats.js.errors
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, RetentionPolicy

from shared import subjects
from shared.bus import TypedKV
from shared.records import AppRecord, DeployRecord, ReleaseRecord

FETCH = 512


@dataclass(frozen=True)
class StoredMessage:
    stream: str
    seq: int
    subject: str
    data: bytes
    headers: dict[str, str]


@dataclass
class Snapshot:
    deploys: dict[str, DeployRecord] = field(default_factory=dict)
    releases: dict[str, ReleaseRecord] = field(default_factory=dict)  # key: app.version
    apps: dict[str, AppRecord] = field(default_factory=dict)
    messages: list[StoredMessage] = field(default_factory=list)  # every stream, raw

    @property
    def timeline(self) -> list[dict[str, Any]]:
        out = []
        for m in self.messages:
            if m.stream != subjects.STREAM_EVENTS:
                continue
            with contextlib.suppress(ValueError):
                event = json.loads(m.data)
                if isinstance(event, dict):
                    event["_seq"] = m.seq
                    out.append(event)
        return out

    @property
    def dead_letters(self) -> list[StoredMessage]:
        return [m for m in self.messages if m.stream == subjects.STREAM_DEAD_LETTER]

    def events_of(self, deploy_id: str, event_type: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.timeline if e.get("deploy_id") == deploy_id
                and (event_type is None or e.get("type") == event_type)]


async def _read_stream(js: Any, name: str, work_queue: bool) -> list[StoredMessage]:
    info = await js.stream_info(name)
    first, last = info.state.first_seq, info.state.last_seq
    if info.state.messages == 0 or last < first:
        return []
    out: list[StoredMessage] = []
    if work_queue:
        for seq in range(first, last + 1):
            try:
                raw = await js.get_msg(name, seq)
            except nats.js.errors.NotFoundError:
                continue  # acked and removed
            out.append(StoredMessage(name, seq, raw.subject or "", raw.data or b"",
                                     dict(raw.headers or {})))
        return out
    psub = await js.pull_subscribe(
        "", stream=name,
        config=ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL,
                              inactive_threshold=30.0, mem_storage=True),
    )
    try:
        while True:
            try:
                batch = await psub.fetch(FETCH, timeout=1.0)
            except nats.errors.TimeoutError:
                break
            for msg in batch:
                meta = msg.metadata
                out.append(StoredMessage(name, meta.sequence.stream, msg.subject, msg.data,
                                         dict(msg.headers or {})))
            if out and out[-1].seq >= last:
                break
    finally:
        with contextlib.suppress(Exception):
            await psub.unsubscribe()
    return out


async def take_snapshot(nats_url: str, **options: str) -> Snapshot:
    nc = await nats.connect(nats_url, name="chaos-snapshot", connect_timeout=5,
                            **options)  # type: ignore[arg-type]
    try:
        js = nc.jetstream(timeout=10)
        snap = Snapshot()
        for entry in await TypedKV(await js.key_value(subjects.KV_DEPLOYS),
                                   DeployRecord).values():
            snap.deploys[entry.key] = entry.value
        for rel in await TypedKV(await js.key_value(subjects.KV_RELEASES),
                                 ReleaseRecord).values():
            snap.releases[rel.key] = rel.value
        for app in await TypedKV(await js.key_value(subjects.KV_APPS), AppRecord).values():
            snap.apps[app.key] = app.value
        for stream in await js.streams_info():
            work_queue = stream.config.retention == RetentionPolicy.WORK_QUEUE
            snap.messages.extend(await _read_stream(js, stream.config.name or "", work_queue))
        return snap
    finally:
        await nc.close()
