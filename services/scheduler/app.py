"""The scheduler service: wiring, start-up order and shutdown.

`create_app(settings)` returns an async context manager. Entering it connects to NATS
(and provisions the streams and buckets), opens the Nomad client, starts the reconcile
work queue, the consumer of `SHAMAN_RELEASE_WORK` (durable `scheduler`), the resync and
re-drive loops, and /healthz + /metrics; all of it on one AsyncExitStack, so leaving
the context undoes exactly what started, in reverse: stop serving health, stop
consuming (in-flight commands finish), stop the loops and the queue, close Nomad,
drain NATS.

No connection is opened at import time. The logic lives in release_commands.py
(commands → releases) and reconciler.py (releases → Nomad job).
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType

import aiohttp
from aiohttp import web

from services.scheduler import metrics
from services.scheduler.crashpoints import Crashpoints
from services.scheduler.reconciler import Reconciler
from services.scheduler.registry import RegistryChecker
from services.scheduler.release_commands import ReleaseCommandHandler
from services.scheduler.renderer import JobRenderer, RenderSettings
from services.scheduler.store import Stores
from services.scheduler.sweeper import redrive_loop, resync_loop
from services.scheduler.workqueue import WorkQueue
from shared import subjects
from shared.bus import Bus, ConsumerSpec, WorkConsumer, connect_bus, provision
from shared.logging import get_logger
from shared.nomad import NomadClient
from shared.service import serve_health
from shared.settings import SchedulerSettings
from shared.tasks import BackgroundTasks

log = get_logger(__name__)


def render_settings(settings: SchedulerSettings) -> RenderSettings:
    datacenters = tuple(d.strip() for d in settings.nomad_datacenters.split(",") if d.strip())
    return RenderSettings(
        namespace=settings.nomad_namespace,
        datacenters=datacenters or ("*",),
        traefik_rule_template=settings.traefik_rule_template,
        default_domain_template=settings.default_domain_template,
        vault_mount=settings.vault_mount,
        vault_role=settings.vault_role,
        restart_attempts=settings.task_restart_attempts,
        restart_delay_s=settings.task_restart_delay_s,
        restart_interval_s=settings.task_restart_interval_s,
    )


class SchedulerApp:
    """The running service; its parts are attributes so tests can look inside."""

    bus: Bus
    stores: Stores
    nomad: NomadClient
    queue: WorkQueue
    reconciler: Reconciler
    handler: ReleaseCommandHandler
    consumer: WorkConsumer
    tasks: BackgroundTasks
    runner: web.AppRunner

    def __init__(self, settings: SchedulerSettings) -> None:
        self.settings = settings
        self._stack = contextlib.AsyncExitStack()

    @property
    def http_port(self) -> int:
        """The port /healthz listens on (useful with SHAMAN_HTTP_ADDR=127.0.0.1:0)."""
        return int(self.runner.addresses[0][1])

    async def __aenter__(self) -> SchedulerApp:
        try:
            await self._start()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.aclose()

    async def _start(self) -> None:
        s = self.settings
        stack = self._stack

        # A short drain timeout: WorkConsumer.stop leaves its pull subscription open, and a
        # fetch reply arriving after the loop stopped is never consumed, so drain() would
        # otherwise wait its default 30 s for it (reported to the bus owner).
        self.bus = await connect_bus(s, f"scheduler-{s.instance_id}", drain_timeout=2)
        stack.push_async_callback(self.bus.close)
        await provision(self.bus.js, s.stream_replicas)
        self.stores = await Stores.open(self.bus)

        self.nomad = NomadClient(
            s.nomad_addr,
            token=s.nomad_token.get_secret_value() if s.nomad_token else None,
            namespace=s.nomad_namespace,
            timeout_s=s.nomad_timeout_s,
        )
        stack.push_async_callback(self.nomad.aclose)

        registry: RegistryChecker | None = None
        if s.check_rollback_image:
            session = aiohttp.ClientSession()
            stack.push_async_callback(session.close)
            registry = RegistryChecker(session, s.registry, s.registry_timeout_s)

        crashpoints = Crashpoints(s.crashpoint)
        self.reconciler = Reconciler(
            self.bus, self.stores, self.nomad, JobRenderer(render_settings(s)),
            nomad_retry_deadline_s=s.nomad_retry_deadline_s, crashpoints=crashpoints,
            stale_requeue_s=s.requeue_initial_s,
        )
        self.queue = WorkQueue(
            self.reconciler.reconcile,
            concurrency=s.reconcile_concurrency,
            backoff_initial_s=s.requeue_initial_s,
            backoff_max_s=s.requeue_max_s,
        )
        await self.queue.start()
        stack.push_async_callback(self.queue.stop)

        self.handler = ReleaseCommandHandler(
            self.bus, self.stores, self.queue, registry=registry,
            reconcile_wait_s=s.command_reconcile_wait_s, crashpoints=crashpoints,
        )

        self.tasks = BackgroundTasks("scheduler")
        stack.push_async_callback(self.tasks.close)
        stopping = asyncio.Event()
        stack.callback(stopping.set)  # runs before tasks.close (the stack unwinds LIFO)
        self.tasks.spawn("resync", resync_loop(self.stores, self.queue, s.resync_interval_s,
                                               stopping))
        self.tasks.spawn("redrive", redrive_loop(self.stores, self.queue, s.redrive_interval_s,
                                                 s.stuck_deploy_after_s, stopping))

        self.consumer = WorkConsumer(
            self.bus,
            ConsumerSpec(
                stream=subjects.STREAM_RELEASE_WORK,
                durable=subjects.CONSUMER_SCHEDULER,
                filter_subject=subjects.RELEASE_WORK_ALL,
                ack_wait_s=s.ack_wait_s,
                max_deliver=s.max_deliver,
            ),
            self.handler.handle,
            concurrency=s.command_concurrency,
            on_dead_letter=self.handler.on_dead_letter,
        )
        await self.consumer.start()
        stack.push_async_callback(self.consumer.stop)

        metrics.QUEUE_DEPTH.set_function(lambda: float(self.queue.depth()))
        self.runner = await serve_health(s.http_addr, {
            "nats": lambda: self.bus.connected,
            "tasks": lambda: self.tasks.healthy() and self.queue.healthy(),
        })
        stack.push_async_callback(self.runner.cleanup)
        log.info("scheduler ready", nomad=s.nomad_addr, namespace=s.nomad_namespace,
                 reconcile_concurrency=s.reconcile_concurrency)


def create_app(settings: SchedulerSettings) -> SchedulerApp:
    return SchedulerApp(settings)
