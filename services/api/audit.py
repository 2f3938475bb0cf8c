"""The audit log: one entry per mutating call, appended to `shaman.audit.<action>`.

Who (token name and id, never the token), what (action, method, path, target), which
app, from where (remote address), when, and the outcome (status code). Entries never
carry request bodies, so secret values cannot reach them. They live in the
SHAMAN_AUDIT stream (a year, append-only by subject design) and admins read them with
`GET /v1/audit`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from datetime import datetime

import msgspec

from services.api.stream_tail import read_range
from shared.bus.connection import Bus
from shared.events.base import now
from shared.logging import get_logger
from shared.subjects import AUDIT_ALL, STREAM_AUDIT, audit_subject
from shared.tasks import BackgroundTasks, raise_if_cancelled

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
    """Appends entries; while NATS is unreachable they wait in memory (bounded) and are
    written, in order, once it is back, so an outage neither blocks requests nor loses
    their audit lines (unless this process dies before NATS returns)."""

    def __init__(self, bus: Bus, *, max_pending: int = 10_000, timeout_s: float = 2.0) -> None:
        self.bus = bus
        self.timeout_s = timeout_s
        self._pending: deque[AuditEntry] = deque(maxlen=max_pending)
        self._tasks = BackgroundTasks("audit")
        self._wake = asyncio.Event()

    async def start(self) -> None:
        self._tasks.spawn("flush", self._flush_loop())

    async def close(self) -> None:
        await self._tasks.close()
        if self._pending:
            await self._flush()
        if self._pending:
            log.error("audit entries not written at shutdown", count=len(self._pending))

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def append(self, entry: AuditEntry) -> None:
        if self._pending or not self.bus.connected:
            self._queue(entry)
            return
        try:
            await self._publish(entry)
        except Exception as exc:
            log.warning("audit entry delayed", action=entry.action, request_id=entry.request_id,
                        error=repr(exc))
            self._queue(entry)

    def _queue(self, entry: AuditEntry) -> None:
        if len(self._pending) == self._pending.maxlen:
            log.error("audit backlog full; dropping the oldest entry",
                      request_id=self._pending[0].request_id)
        self._pending.append(entry)
        self._wake.set()

    async def _publish(self, entry: AuditEntry) -> None:
        await self.bus.publish(audit_subject(entry.action), msgspec.json.encode(entry),
                               msg_id=f"audit:{entry.request_id}", timeout=self.timeout_s)

    async def _flush(self) -> None:
        while self._pending and self.bus.connected:
            try:
                await self._publish(self._pending[0])
            except Exception as exc:
                log.warning("audit flush failed; will retry", error=repr(exc))
                return
            self._pending.popleft()

    async def _flush_loop(self) -> None:
        while True:
            raise_if_cancelled()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=0.5)
            self._wake.clear()
            await self._flush()

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
