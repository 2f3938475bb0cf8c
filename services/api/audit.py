"""The audit log: one entry per mutating call, appended to `shaman.audit.<action>`.

Who (token name and id, never the token), what (action, method, path, target), which
app, from where (remote address), when, and the outcome (status code). Entries never
carry request bodies, so secret values cannot reach them. They live in the
SHAMAN_AUDIT stream (a year, append-only by subject design) and admins read them with
`GET /v1/audit`.
"""

from __future__ import annotations

from datetime import datetime

import msgspec

from services.api.stream_tail import read_range
from shared.bus.connection import Bus
from shared.events.base import now
from shared.logging import get_logger
from shared.subjects import AUDIT_ALL, STREAM_AUDIT, audit_subject

log = get_logger(__name__)


class AuditEntry(msgspec.Struct, kw_only=True):
    action: str  # e.g. "deploy.create"
    actor: str  # "name (tok_…)" or "anonymous"
    method: str
    path: str
    status: int
    outcome: str  # ok | denied | invalid | unavailable | error
    request_id: str
    time: datetime = msgspec.field(default_factory=now)
    token_id: str | None = None
    team_scope: list[str] = []
    app: str | None = None
    team: str | None = None
    target: str | None = None
    deploy_id: str | None = None
    remote: str | None = None


_decoder = msgspec.json.Decoder(AuditEntry)


def outcome_of(status: int) -> str:
    if status < 400:
        return "ok"
    if status in (401, 403, 404):
        return "denied"
    if status == 503:
        return "unavailable"
    if status < 500:
        return "invalid"
    return "error"


class AuditLog:
    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    async def append(self, entry: AuditEntry) -> None:
        try:
            await self.bus.publish(audit_subject(entry.action), msgspec.json.encode(entry),
                                   msg_id=f"audit:{entry.request_id}")
        except Exception as exc:
            # The call itself already happened; losing its audit line is logged loudly.
            log.error("audit entry not written", action=entry.action, app=entry.app,
                      request_id=entry.request_id, status=entry.status, error=repr(exc))

    async def recent(self, limit: int, *, scan: int = 5000) -> list[tuple[int, AuditEntry]]:
        """The last `scan` entries (newest last), decoded; the caller filters."""
        info = await self.bus.js.stream_info(STREAM_AUDIT)
        last = info.state.last_seq
        start = max(info.state.first_seq, last - scan + 1, 1)
        raw = await read_range(self.bus, STREAM_AUDIT, AUDIT_ALL, start - 1,
                               limit=scan, until_seq=last)
        out: list[tuple[int, AuditEntry]] = []
        for seq, _subject, data in raw:
            try:
                out.append((seq, _decoder.decode(data)))
            except msgspec.DecodeError:
                continue
        return out
