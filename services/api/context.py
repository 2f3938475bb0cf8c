"""What every handler can reach: the service's resources, built once in create_app."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web
from nats.js.object_store import ObjectStore

from services.api.audit import AuditLog
from services.api.auth import TokenStore
from services.api.intake import DeployIntake
from services.api.ratelimit import RateLimiter
from services.api.registry_check import ImageChecker
from services.api.sse import SseHub
from services.api.task_logs import LogReader
from services.api.teams import TeamCache
from shared.bus.connection import Bus
from shared.bus.kv import TypedKV
from shared.records import AppRecord, DeployRecord, ReleaseRecord
from shared.settings import ApiSettings
from shared.vault import VaultClient


@dataclass
class ApiContext:
    settings: ApiSettings
    bus: Bus
    apps: TypedKV[AppRecord]
    deploys: TypedKV[DeployRecord]
    releases: TypedKV[ReleaseRecord]
    tokens: TokenStore
    intake: DeployIntake
    vault: VaultClient | None
    sources: ObjectStore
    build_logs: ObjectStore
    limiter: RateLimiter
    audit: AuditLog
    hub: SseHub
    teams: TeamCache
    images: ImageChecker  # rollback targets' images still in their registry?
    logs: LogReader  # the apps' task logs, from Nomad


CONTEXT = web.AppKey("shaman_api_context", ApiContext)
