"""The watcher service's factory: `create_app(settings)` enters its resources in order.

NATS (connect + provision the streams and buckets), the Nomad client (python-nomad off
the loop), one aiohttp session (event stream, check results), the reconciler, the stream
follower, the reconcile workers, and /healthz + /metrics. They sit on an AsyncExitStack,
so leaving the context undoes exactly what started, in reverse: the health endpoint goes
first, then the watcher stops (stream, timers, in-flight reconciles, checkpoint), then
the HTTP clients close and NATS drains.

Nothing opens at import time. Not here: the decisions (decide.py) and their effects
(reconciler.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from services.watcher.checkpoint import Checkpoint
from services.watcher.decide import Policy
from services.watcher.nomad_checks import AllocationChecks
from services.watcher.notes import DeployNotes
from services.watcher.outbox import Outbox
from services.watcher.reconciler import Reconciler
from services.watcher.stream import TOPICS, StreamFollower
from services.watcher.watcher import Watcher
from services.watcher.workqueue import KeyedQueue
from shared.bus import Bus, TypedKV, connect_bus, provision
from shared.nomad import NomadClient
from shared.nomad.client import secret_value
from shared.nomad.event_stream import NomadEventStream
from shared.records import AppRecord, DeployRecord
from shared.service import serve_health
from shared.settings import WatcherSettings
from shared.subjects import KV_APPS, KV_DEPLOYS, KV_WATCHER


@dataclass
class WatcherApp:
    """What a running watcher exposes to its tests and to `__main__`."""

    settings: WatcherSettings
    bus: Bus
    nomad: NomadClient
    watcher: Watcher
    health: web.AppRunner

    @property
    def http_port(self) -> int:
        for addr in self.health.addresses:
            return int(addr[1])
        return 0


def policy_from(settings: WatcherSettings) -> Policy:
    return Policy(
        fail_fast_restarts=settings.fail_fast_restarts,
        crash_loop_window_s=settings.crash_loop_window_s,
        deadline_grace_s=settings.deadline_grace_s,
    )


@asynccontextmanager
async def create_app(settings: WatcherSettings) -> AsyncIterator[WatcherApp]:
    async with AsyncExitStack() as stack:
        bus = await connect_bus(settings, f"watcher-{settings.instance_id}")
        stack.push_async_callback(bus.close)
        await provision(bus.js, settings.stream_replicas)
        apps = TypedKV(await bus.js.key_value(KV_APPS), AppRecord)
        deploys = TypedKV(await bus.js.key_value(KV_DEPLOYS), DeployRecord)
        watcher_bucket = await bus.js.key_value(KV_WATCHER)
        notes = TypedKV(watcher_bucket, DeployNotes)
        pending = TypedKV(watcher_bucket, str)
        checkpoints = TypedKV(watcher_bucket, Checkpoint)

        token = secret_value(settings.nomad_token)
        nomad = NomadClient.from_settings(settings)
        stack.push_async_callback(nomad.aclose)
        session = aiohttp.ClientSession()
        stack.push_async_callback(session.close)

        queue = KeyedQueue()
        reconciler = Reconciler(
            nomad,
            AllocationChecks(session, settings.nomad_addr, token=token,
                             namespace=settings.nomad_namespace,
                             timeout_s=settings.nomad_timeout_s),
            apps, deploys, Outbox(bus, notes), pending, policy_from(settings),
            explain_max_allocs=settings.explain_max_allocs,
            log_tail_bytes=settings.log_tail_bytes,
            rollback_republish_after_s=settings.rollback_republish_after_s,
            crashpoint=settings.crashpoint,
        )
        stream = NomadEventStream.from_settings(
            settings, TOPICS, session=session, sock_read_s=settings.stream_read_timeout_s,
        )
        watcher: Watcher | None = None

        def relist() -> None:
            if watcher is not None:
                watcher.request_relist()

        follower = StreamFollower(
            stream, checkpoints, queue, relist,
            backoff_max_s=settings.stream_backoff_max_s,
            checkpoint_interval_s=settings.checkpoint_interval_s,
        )
        watcher = Watcher(
            reconciler, follower, apps, queue,
            concurrency=settings.reconcile_concurrency,
            relist_interval_s=settings.relist_interval_s,
        )
        await watcher.start()
        stack.push_async_callback(watcher.stop)

        health = await serve_health(
            settings.http_addr,
            {"nats": lambda: bus.connected, "tasks": watcher.healthy},
        )
        stack.push_async_callback(health.cleanup)
        yield WatcherApp(settings=settings, bus=bus, nomad=nomad, watcher=watcher,
                         health=health)
