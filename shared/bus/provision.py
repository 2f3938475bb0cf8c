"""Create or update every stream, KV bucket and object store Shaman needs.

Idempotent and safe to run from every service at start: an existing stream
is updated to the declared config, never recreated, so no data is lost.
Settings are explicit (retention, limits, duplicate window) rather than
left to server defaults; docs/operations.md explains the production values.
"""

from __future__ import annotations

import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import (
    DiscardPolicy,
    KeyValueConfig,
    ObjectStoreConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from shared import subjects as s
from shared.logging import get_logger

log = get_logger(__name__)

DAY_S = 24 * 3600.0
# JetStream dedupes on Nats-Msg-Id within this window; longer-lived
# idempotency (Idempotency-Key for 24 h) lives in the shaman_idempotency bucket.
DUPLICATE_WINDOW_S = 300.0


def stream_configs(replicas: int) -> list[StreamConfig]:
    def cfg(name: str, subject: str, retention: RetentionPolicy, **kw: object) -> StreamConfig:
        return StreamConfig(
            name=name,
            subjects=[subject],
            retention=retention,
            storage=StorageType.FILE,
            num_replicas=replicas,
            duplicate_window=DUPLICATE_WINDOW_S,
            **kw,  # type: ignore[arg-type]
        )

    return [
        # The public timeline: kept for SSE replay and dashboards.
        cfg(s.STREAM_EVENTS, s.EVENTS_ALL, RetentionPolicy.LIMITS,
            max_age=7 * DAY_S, max_bytes=2 * 1024**3, discard=DiscardPolicy.OLD),
        # Deploy requests from any NATS client, consumed once by the api.
        cfg(s.STREAM_REQUESTS, s.REQUESTS_ALL, RetentionPolicy.WORK_QUEUE, max_age=DAY_S),
        cfg(s.STREAM_BUILD_WORK, s.BUILD_WORK_ALL, RetentionPolicy.WORK_QUEUE, max_age=DAY_S),
        cfg(s.STREAM_RELEASE_WORK, s.RELEASE_WORK_ALL, RetentionPolicy.WORK_QUEUE, max_age=DAY_S),
        cfg(s.STREAM_AUDIT, s.AUDIT_ALL, RetentionPolicy.LIMITS, max_age=365 * DAY_S),
        cfg(s.STREAM_DEAD_LETTER, s.DEAD_LETTER_ALL, RetentionPolicy.LIMITS, max_age=30 * DAY_S),
    ]


def kv_configs(replicas: int) -> list[KeyValueConfig]:
    def cfg(bucket: str, history: int = 1, ttl: float | None = None) -> KeyValueConfig:
        return KeyValueConfig(
            bucket=bucket, history=history, ttl=ttl, storage=StorageType.FILE,
            replicas=replicas, direct=True,
        )

    return [
        cfg(s.KV_APPS, history=10),
        cfg(s.KV_RELEASES),
        cfg(s.KV_DEPLOYS, history=5),
        cfg(s.KV_IDEMPOTENCY, ttl=DAY_S),
        cfg(s.KV_TOKENS),
        cfg(s.KV_WATCHER),
    ]


async def provision(js: JetStreamContext, replicas: int = 1) -> None:
    """Make the streams, buckets and object stores exist with the declared config."""
    for config in stream_configs(replicas):
        try:
            await js.add_stream(config)
        except nats.js.errors.BadRequestError as exc:
            # 10058: a stream with this name exists with a different config.
            if exc.err_code != 10058:
                raise
            await js.update_stream(config)
    for kv in kv_configs(replicas):
        await js.create_key_value(kv)
    object_stores = ((s.OBJECT_STORE_SOURCES, 7 * DAY_S), (s.OBJECT_STORE_BUILD_LOGS, 30 * DAY_S))
    for bucket, ttl in object_stores:
        await js.create_object_store(
            bucket, config=ObjectStoreConfig(bucket=bucket, ttl=ttl, storage=StorageType.FILE,
                                             replicas=replicas)
        )
    log.info("jetstream provisioned", replicas=replicas)
