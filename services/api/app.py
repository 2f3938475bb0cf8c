"""The api service's factory: `create_app(settings)` starts it, leaving the context stops it.

Resources are entered on one AsyncExitStack in dependency order (NATS and its
streams/buckets, Vault, the bootstrap token, the SSE hub, outbound HTTP and the Nomad
client for task logs, the HTTP server, the NATS deploy-request consumer, the re-drive
sweep) and undone in reverse: stop sweeping and taking NATS requests, end SSE streams
and log follows, let in-flight HTTP requests finish, then drain NATS. No connection
opens at import time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from services.api.audit import AuditLog
from services.api.auth import TokenRecord, TokenStore
from services.api.context import CONTEXT, ApiContext
from services.api.crashpoints import Crashpoints
from services.api.idempotency import IdempotencyEntry, IdempotencyStore
from services.api.intake import DeployIntake
from services.api.nats_requests import DeployRequestHandler, consumer_spec
from services.api.openapi import render
from services.api.ratelimit import RateLimiter
from services.api.redrive import BuildRedrive
from services.api.registry_check import ImageChecker
from services.api.routes import all_routes
from services.api.routing import install, json_errors
from services.api.sse import SseHub
from services.api.task_logs import LogReader
from services.api.teams import TeamCache
from services.api.ui import setup_ui
from shared import subjects as s
from shared.bus import TypedKV, WorkConsumer, connect_bus, provision
from shared.logging import get_logger
from shared.nomad import NomadClient, ReadRetry
from shared.records import AppRecord, DeployRecord, ReleaseRecord
from shared.service import add_health_routes, parse_http_addr
from shared.settings import ApiSettings
from shared.tasks import BackgroundTasks
from shared.vault import VaultClient

log = get_logger(__name__)


@dataclass
class ApiService:
    """A running api: its context and where it listens."""

    ctx: ApiContext
    app: web.Application
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def build_web_app(ctx: ApiContext) -> web.Application:
    settings = ctx.settings
    app = web.Application(
        middlewares=[json_errors],
        client_max_size=max(settings.max_body_bytes, settings.max_upload_bytes) + 1,
    )
    app[CONTEXT] = ctx
    routes = all_routes()
    install(app, routes)
    spec = render(routes)

    async def openapi(_request: web.Request) -> web.Response:
        return web.Response(body=spec, content_type="application/json")

    app.router.add_get("/v1/openapi.json", openapi)
    add_health_routes(app, {"nats": lambda: ctx.bus.connected})
    setup_ui(app)
    return app


async def _start_redrive(stack: AsyncExitStack, redrive: BuildRedrive) -> None:
    stopping = asyncio.Event()
    tasks = BackgroundTasks("api-redrive")
    tasks.spawn("redrive", redrive.run(stopping))

    async def stop() -> None:
        stopping.set()
        await tasks.close()

    stack.push_async_callback(stop)


@asynccontextmanager
async def create_app(settings: ApiSettings) -> AsyncIterator[ApiService]:
    crashpoints = Crashpoints(settings.crashpoint)  # a misspelt point fails the start
    async with AsyncExitStack() as stack:
        # drain_timeout: a pull subscription that ever saw a stale status message keeps
        # an unfinished queue item in nats-py and would hold drain() for the default 30 s.
        bus = await connect_bus(settings, f"api-{settings.instance_id}", drain_timeout=3)
        stack.push_async_callback(bus.close)
        await provision(bus.js, settings.stream_replicas)
        js = bus.js
        apps = TypedKV(await js.key_value(s.KV_APPS), AppRecord)
        tokens = TokenStore(TypedKV(await js.key_value(s.KV_TOKENS), TokenRecord), bus)
        if settings.admin_token is not None:
            await tokens.ensure_bootstrap(settings.admin_token.get_secret_value())
        deploys = TypedKV(await js.key_value(s.KV_DEPLOYS), DeployRecord)
        releases = TypedKV(await js.key_value(s.KV_RELEASES), ReleaseRecord)
        idempotency = IdempotencyStore(
            TypedKV(await js.key_value(s.KV_IDEMPOTENCY), IdempotencyEntry))
        vault = None
        if settings.vault_token is not None:
            vault = VaultClient(settings.vault_addr, settings.vault_token.get_secret_value(),
                                settings.vault_mount)
            stack.push_async_callback(vault.aclose)
        audit = AuditLog(bus)
        await audit.start()
        stack.push_async_callback(audit.close)
        teams = TeamCache(apps)
        # Outbound HTTP (registries, Nomad's log streams) from handlers; one pool.
        http = aiohttp.ClientSession()
        stack.push_async_callback(http.close)
        # Reads in a request: a short retry, then 503 (nobody waits 20 s for logs).
        nomad = NomadClient.from_settings(
            settings, read_retry=ReadRetry(attempts=2, deadline_s=settings.nomad_timeout_s))
        stack.push_async_callback(nomad.aclose)
        logs = LogReader.from_settings(nomad, http, settings)
        hub = SseHub(bus, teams.team_of, keepalive_s=settings.sse_keepalive_s,
                     heartbeat_s=settings.sse_heartbeat_s)
        await hub.start()
        stack.push_async_callback(hub.close)
        ctx = ApiContext(
            settings=settings, bus=bus, apps=apps, deploys=deploys, releases=releases,
            tokens=tokens, intake=DeployIntake(bus, apps, deploys, idempotency,
                                publish_timeout_s=settings.nats_request_timeout_s / 2,
                                crashpoints=crashpoints),
            vault=vault,
            sources=await js.object_store(s.OBJECT_STORE_SOURCES),
            build_logs=await js.object_store(s.OBJECT_STORE_BUILD_LOGS),
            limiter=RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst),
            audit=audit, hub=hub, teams=teams,
            images=ImageChecker(http, settings.registry, settings.registry_timeout_s),
            logs=logs,
        )
        web_app = build_web_app(ctx)
        runner = web.AppRunner(web_app, access_log=None, handle_signals=False,
                               shutdown_timeout=5.0)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        host, port = parse_http_addr(settings.http_addr)
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
        # Run before runner.cleanup: SSE and log-follow handlers return once released.
        stack.push_async_callback(hub.release_clients)
        stack.push_async_callback(logs.close)
        bound = runner.addresses[0]
        actual_port = int(bound[1])
        consumer = WorkConsumer(bus, consumer_spec(), DeployRequestHandler(ctx), concurrency=8)
        await consumer.start()
        stack.push_async_callback(consumer.stop)
        if settings.redrive_interval_s > 0:
            await _start_redrive(stack, BuildRedrive(bus, apps, deploys,
                                                     settings.redrive_interval_s))
        log.info("api listening", addr=f"{host}:{actual_port}", vault=vault is not None)
        yield ApiService(ctx=ctx, app=web_app, host=host, port=actual_port)
