"""The route table's runtime: auth, rate limit, body validation, errors and audit, once.

Each route is a `RouteSpec` (method, path, handler, request model, response models,
the role it needs, the audit action). `install()` registers them on the aiohttp app
wrapped in one function that: checks NATS is reachable (else 503 + Retry-After, fast,
instead of hanging on a dead connection), authenticates the bearer token, applies the
per-token rate limit, runs the handler with a `Call`, turns every error into the JSON
error body, and appends an audit entry for mutating calls. The same table feeds
`GET /v1/openapi.json` (openapi.py), so documentation and behaviour cannot drift.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web
from prometheus_client import Counter, Histogram
from pydantic import BaseModel, ValidationError

from services.api.audit import AuditEntry, outcome_of
from services.api.auth import Principal, Role, parse_bearer, require_role
from services.api.context import CONTEXT, ApiContext
from services.api.http_errors import (
    InvalidJson,
    PayloadTooLarge,
    RateLimited,
    RequestInvalid,
    error_response,
    shaman_error_response,
)
from services.api.ids import new_request_id
from shared.bus.kv import Entry
from shared.errors import BackendUnavailable, ShamanError
from shared.logging import bind_context, get_logger
from shared.records import AppRecord

log = get_logger(__name__)

M = TypeVar("M", bound=BaseModel)

REQUESTS = Counter("shaman_api_requests_total", "HTTP requests", ["route", "status"])
LATENCY = Histogram("shaman_api_request_seconds", "HTTP request latency", ["route"],
                    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))

REQUEST_ID_HEADER = "X-Request-Id"


@dataclass
class Call:
    """One authorised request, handed to a handler."""

    request: web.Request
    ctx: ApiContext
    principal: Principal
    request_id: str
    need: Role = "viewer"
    # What the audit entry says about this call; handlers fill it in as they learn it.
    app: str | None = None
    team: str | None = None
    target: str | None = None
    deploy_id: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def settings(self) -> Any:
        return self.ctx.settings

    def path_param(self, name: str) -> str:
        return self.request.match_info[name]

    async def load_app(self, need: Role | None = None) -> Entry[AppRecord]:
        """The path's app, if this caller may act on it (404 / 403 otherwise)."""
        name = self.request.match_info["app"]
        self.app = name
        entry = await self.ctx.intake.load_app(self.principal, name, need or self.need)
        self.team = entry.value.spec.team
        return entry

    async def read_body(self, limit: int) -> bytes:
        length = self.request.content_length
        if length is not None and length > limit:
            raise PayloadTooLarge(f"request body exceeds {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        async for piece in self.request.content.iter_chunked(64 * 1024):
            size += len(piece)
            if size > limit:
                raise PayloadTooLarge(f"request body exceeds {limit} bytes")
            chunks.append(piece)
        return b"".join(chunks)

    async def json_body(self, model: type[M]) -> M:
        # Any content type is read as JSON: `curl -d` says form-urlencoded, and a
        # clear "not valid JSON" helps more than a 415.
        raw = await self.read_body(self.ctx.settings.max_body_bytes)
        return parse_json(raw, model)


def parse_json(raw: bytes, model: type[M]) -> M:
    if not raw.strip():
        raise InvalidJson("the request body is empty; send a JSON object")
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False, include_context=False)
        if errors and errors[0]["type"] == "json_invalid":
            raise InvalidJson("the request body is not valid JSON") from None
        raise RequestInvalid.from_pydantic(exc) from None


def json_response(model: BaseModel, status: int = 200,
                  headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=model.model_dump_json().encode(), status=status,
                        content_type="application/json", headers=headers)


Handler = Callable[[Call], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class RouteSpec:
    method: str
    path: str
    handler: Handler
    summary: str
    role: Role = "viewer"
    body: type[BaseModel] | None = None
    # Extra request content types (e.g. a tarball upload) besides JSON: type → description.
    body_alternatives: dict[str, str] = field(default_factory=dict)
    responses: dict[int, type[BaseModel] | None] = field(default_factory=dict)
    errors: tuple[int, ...] = (400, 401, 403, 404, 422, 429, 503)
    action: str | None = None  # audit action; set on every mutating route
    tag: str = "apps"
    query: tuple[tuple[str, str, str], ...] = ()  # (name, type, description)
    headers: tuple[tuple[str, str], ...] = ()  # (request header, description)
    stream: bool = False  # answers text/event-stream

    @property
    def name(self) -> str:
        return f"{self.method} {self.path}"


def _remote(request: web.Request) -> str | None:
    return request.remote


def _wrap(spec: RouteSpec) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        ctx = request.app[CONTEXT]
        request_id = new_request_id()
        bind_context(request_id=request_id)
        started = time.monotonic()
        principal: Principal | None = None
        call: Call | None = None
        response: web.StreamResponse
        try:
            if not ctx.bus.connected:
                raise BackendUnavailable("nats", "not connected")
            token = parse_bearer(request.headers.get("Authorization"))
            principal = await ctx.tokens.authenticate(token)
            decision = ctx.limiter.take(principal.token_id)
            if not decision.allowed:
                raise RateLimited("too many requests for this token; slow down",
                                  decision.retry_after_s)
            if "{app}" not in spec.path:
                # App routes check the role after the team (another team's app is a 404).
                require_role(principal, spec.role)
            call = Call(request=request, ctx=ctx, principal=principal, request_id=request_id,
                        need=spec.role)
            response = await spec.handler(call)
            if not response.prepared:
                response.headers["RateLimit-Remaining"] = str(decision.remaining)
        except ShamanError as exc:
            response = shaman_error_response(exc)
            if isinstance(exc, RateLimited):
                response.headers["RateLimit-Remaining"] = "0"
            if exc.http_status >= 500 or isinstance(exc, BackendUnavailable):
                log.warning("request failed: backend", route=spec.name, error=str(exc))
        except web.HTTPException:
            raise
        except Exception:
            log.exception("request failed: unexpected", route=spec.name)
            response = error_response(500, "internal", "internal error; the server log "
                                      f"has the details (request {request_id})")
        if not response.prepared:
            response.headers[REQUEST_ID_HEADER] = request_id
        REQUESTS.labels(spec.name, str(response.status)).inc()
        LATENCY.labels(spec.name).observe(time.monotonic() - started)
        if spec.action is not None:
            await ctx.audit.append(AuditEntry(
                action=spec.action,
                actor=principal.actor if principal else "anonymous",
                token_id=principal.token_id if principal else None,
                team_scope=sorted(principal.teams) if principal else [],
                method=request.method, path=request.path, status=response.status,
                outcome=outcome_of(response.status), request_id=request_id,
                app=call.app if call else request.match_info.get("app"),
                team=call.team if call else None,
                target=call.target if call else None,
                deploy_id=call.deploy_id if call else None,
                remote=_remote(request),
            ))
        return response

    return handle


def install(app: web.Application, routes: list[RouteSpec]) -> None:
    for spec in routes:
        app.router.add_route(spec.method, spec.path, _wrap(spec), name=None)


@web.middleware
async def json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """aiohttp's own 404/405/413 answers as JSON error bodies, like every other error."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed",
                413: "payload_too_large"}.get(exc.status, "http_error")
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return error_response(exc.status, code, exc.reason, headers=headers)
