"""GET /v1/audit: recent audit entries, newest first, for admins."""

from __future__ import annotations

from aiohttp import web

from services.api.http_errors import field_error
from services.api.models import AuditEntryView, AuditList
from services.api.routing import Call, RouteSpec, json_response

MAX_LIMIT = 1000


async def list_audit(call: Call) -> web.StreamResponse:
    query = call.request.query
    raw_limit = query.get("limit", "100")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_LIMIT:
        raise field_error("limit", f"must be an integer from 1 to {MAX_LIMIT}")
    limit = int(raw_limit)
    app = query.get("app") or None
    action = query.get("action") or None
    principal = call.principal
    entries = await call.ctx.audit.recent(limit)
    out: list[AuditEntryView] = []
    for seq, entry in reversed(entries):
        if app is not None and entry.app != app:
            continue
        if action is not None and entry.action != action:
            continue
        # A team admin sees entries about its teams' apps and its own calls.
        if not principal.all_teams and not (
            (entry.team is not None and principal.covers(entry.team))
            or entry.token_id == principal.token_id
        ):
            continue
        out.append(AuditEntryView(
            seq=seq, time=entry.time, action=entry.action, actor=entry.actor,
            token_id=entry.token_id, app=entry.app, target=entry.target, method=entry.method,
            path=entry.path, status=entry.status, outcome=entry.outcome, remote=entry.remote,
            request_id=entry.request_id, deploy_id=entry.deploy_id,
        ))
        if len(out) >= limit:
            break
    return json_response(AuditList(entries=out))


ROUTES = [
    RouteSpec("GET", "/v1/audit", list_audit, "Recent audit entries, newest first (admins)",
              role="admin", responses={200: AuditList}, tag="audit",
              query=(("limit", "integer", "at most this many (1-1000, default 100)"),
                     ("app", "string", "only entries about this app"),
                     ("action", "string", "only this action, e.g. deploy.create"))),
]
