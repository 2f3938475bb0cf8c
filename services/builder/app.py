"""The builder service: `create_app(settings)` wires NATS, the work consumer and /healthz.

Entering the context: connect to NATS and provision the streams and buckets, open the
HTTP session for the registry API, prepare the buildah storage, start a `WorkConsumer`
on SHAMAN_BUILD_WORK (durable `builders`, shared by every builder copy, so each build is
done by exactly one; `builder_concurrency` builds at a time here; in_progress heartbeats
every ack_wait/3 while a build runs), serve /healthz and /metrics, and run the periodic
image retention. Leaving it: stop the health endpoint, stop fetching and let running
builds finish, then drain NATS.

Not here: what a build does (pipeline), how outcomes are recorded (worker).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web

from services.builder.crashpoints import Crashpoints
from services.builder.credentials import CredentialStore
from services.builder.pipeline import ImagePipeline
from services.builder.registry import RegistryClient
from services.builder.retention import ImageRetention
from services.builder.worker import BuildWorker
from shared import subjects
from shared.bus import Bus, ConsumerSpec, TypedKV, WorkConsumer, connect_bus, provision
from shared.containers import ContainerStorage
from shared.logging import get_logger
from shared.records import AppRecord, DeployRecord, ReleaseRecord
from shared.service import serve_health
from shared.settings import BuilderSettings
from shared.tasks import BackgroundTasks

log = get_logger(__name__)

DRAIN_TIMEOUT_S = 3


@dataclass
class BuilderApp:
    settings: BuilderSettings
    bus: Bus
    consumer: WorkConsumer
    worker: BuildWorker
    retention: ImageRetention
    health: web.AppRunner

    @property
    def health_port(self) -> int:
        for address in self.health.addresses:
            return int(address[1])
        raise RuntimeError("health endpoint has no address")


def storage_base(settings: BuilderSettings) -> Path:
    """The builder's containers storage directory, absolute (buildah needs it so)."""
    return Path(settings.builder_storage).absolute()


def consumer_spec(settings: BuilderSettings) -> ConsumerSpec:
    return ConsumerSpec(
        stream=subjects.STREAM_BUILD_WORK,
        durable=subjects.CONSUMER_BUILDERS,
        filter_subject=subjects.BUILD_WORK_ALL,
        ack_wait_s=settings.ack_wait_s,
        max_deliver=settings.max_deliver,
        # A builder takes only what it can start now: the rest waits for other copies.
        fetch_batch=max(1, settings.builder_concurrency),
    )


@asynccontextmanager
async def create_app(settings: BuilderSettings) -> AsyncIterator[BuilderApp]:
    crashpoints = Crashpoints(settings.crashpoint)  # a misspelt point fails the start
    async with AsyncExitStack() as stack:
        # A short drain: everything this service publishes is confirmed (PubAck) before
        # a handler returns, and nats-py's pull subscriptions can leave drain waiting for
        # its full default of 30 s (a message taken by fetch's get_nowait is never marked
        # done in the subscription's queue).
        bus = await connect_bus(settings, f"builder:{settings.instance_id}",
                                drain_timeout=DRAIN_TIMEOUT_S)
        stack.push_async_callback(bus.close)
        await provision(bus.js, settings.stream_replicas)

        deploys = TypedKV(await bus.js.key_value(subjects.KV_DEPLOYS), DeployRecord)
        apps = TypedKV(await bus.js.key_value(subjects.KV_APPS), AppRecord)
        releases = TypedKV(await bus.js.key_value(subjects.KV_RELEASES), ReleaseRecord)
        sources = await bus.js.object_store(subjects.OBJECT_STORE_SOURCES)
        build_logs = await bus.js.object_store(subjects.OBJECT_STORE_BUILD_LOGS)

        session = await stack.enter_async_context(aiohttp.ClientSession())
        registry = RegistryClient(session, settings.insecure_registries.split(","))
        storage = ContainerStorage(storage_base(settings)).prepare()
        pipeline = ImagePipeline(settings, storage, registry, CredentialStore(settings), sources)
        worker = BuildWorker(settings, bus, deploys, apps, build_logs, pipeline, crashpoints)
        retention = ImageRetention(settings.registry, registry, apps, releases, deploys,
                                   settings.keep_releases)

        # Working containers and source checkouts left by a builder that died here before
        # (SIGKILL mid-build). The storage is this copy's own, so nothing in it is live.
        await pipeline.remove_working_containers()
        await asyncio.to_thread(worker.remove_leftover_workdirs)

        consumer = WorkConsumer(
            bus, consumer_spec(settings), worker.handle,
            concurrency=settings.builder_concurrency, on_dead_letter=worker.on_dead_letter,
        )
        await consumer.start()
        stack.push_async_callback(consumer.stop)

        tasks = BackgroundTasks("builder")
        stack.push_async_callback(tasks.close)
        if settings.retention_interval_s > 0:
            tasks.spawn("image-retention", retention.run_forever(settings.retention_interval_s))

        health = await serve_health(settings.http_addr, {
            "nats": lambda: bus.connected,
            "tasks": lambda: not tasks.crashed and not consumer._tasks.crashed,
        })
        stack.push_async_callback(health.cleanup)
        log.info("builder ready", durable=subjects.CONSUMER_BUILDERS,
                 concurrency=settings.builder_concurrency, registry=settings.registry)
        yield BuilderApp(settings, bus, consumer, worker, retention, health)
