"""Idempotency keys for deploy-creating calls, kept 24 h in the `shaman_idempotency` bucket.

A client retrying `POST /deploys` (or a config change, a rollback, a secrets write)
with the same `Idempotency-Key`, or a NATS deploy request redelivered with the same
`Nats-Msg-Id`, gets the first deploy back instead of a second one, long after
JetStream's few-minute duplicate window has passed (reliability.md scenario 2).

The key is claimed with KV `create` before anything else is written, so two racing
requests cannot both win. The entry also stores the request's fingerprint (the same
key with a different request is refused) and the command that was queued, so a
replay that finds the deploy still `pending` shortly after a crash can list it on the
app and re-publish it with the same `Nats-Msg-Id` (stored once by JetStream).

An entry whose deploy never got queued (NATS failed mid-request, or the api died
before writing the deploy) is taken over by the retry, so a retry after a 503 is
not answered with a dead deploy.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass
from datetime import datetime

import msgspec

from shared.bus.kv import Entry, TypedKV
from shared.errors import ConflictError
from shared.events.base import now
from shared.subjects import kv_key


class IdempotencyEntry(msgspec.Struct, kw_only=True):
    deploy_id: str
    fingerprint: str
    created_at: datetime = msgspec.field(default_factory=now)
    subject: str = ""  # where the command went (empty until queued)
    command: bytes = b""  # the encoded command, to re-publish after a crash
    msg_id: str = ""


def idempotency_key(app: str, key: str) -> str:
    return kv_key(app, hashlib.sha256(key.encode()).hexdigest()[:40])


def fingerprint(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()


@dataclass
class Claim:
    key: str
    revision: int
    existing: IdempotencyEntry | None  # set when someone claimed the key before us


class IdempotencyStore:
    def __init__(self, kv: TypedKV[IdempotencyEntry]) -> None:
        self.kv = kv

    async def claim(self, app: str, key: str, fp: str, deploy_id: str) -> Claim:
        kv_k = idempotency_key(app, key)
        entry = IdempotencyEntry(deploy_id=deploy_id, fingerprint=fp)
        try:
            rev = await self.kv.create(kv_k, entry)
            return Claim(kv_k, rev, None)
        except ConflictError:
            current: Entry[IdempotencyEntry] | None = await self.kv.get(kv_k)
            if current is None:
                # Expired or deleted between our create and get: claim again.
                rev = await self.kv.create(kv_k, entry)
                return Claim(kv_k, rev, None)
            return Claim(kv_k, current.revision, current.value)

    async def take_over(self, claim: Claim, fp: str, deploy_id: str) -> Claim:
        """Point a stale claim at a new deploy; ConflictError if another retry did first."""
        entry = IdempotencyEntry(deploy_id=deploy_id, fingerprint=fp)
        rev = await self.kv.update(claim.key, entry, last=claim.revision)
        return Claim(claim.key, rev, None)

    async def record_command(
        self, claim: Claim, entry: IdempotencyEntry, subject: str, command: bytes, msg_id: str
    ) -> None:
        entry.subject, entry.command, entry.msg_id = subject, command, msg_id
        claim.revision = await self.kv.update(claim.key, entry, last=claim.revision)

    async def release(self, claim: Claim) -> None:
        """Give the key back after a request failed before writing anything."""
        with contextlib.suppress(ConflictError):
            await self.kv.delete(claim.key, last=claim.revision)
