"""Bearer tokens, roles and team scoping.

Tokens are random strings (`shm_…`) shown once at creation; the `shaman_tokens` bucket
stores only their sha256 (the KV key) and what they may do. Every request looks its
token up again, so a revocation takes effect on the very next request (no cache).

Roles: `viewer` reads; `deployer` also changes apps (deploys, config, secrets,
rollback, scale, create); `admin` also manages tokens, reads the audit log, moves apps
between teams and destroys apps. A token is scoped to teams (`*` = all teams). An app
of a team the token does not cover answers 404, never 403, so the existence of other
teams' apps does not leak (OWASP API1).

This module does not log tokens or hashes and does not rate-limit (see ratelimit.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import msgspec

from services.api.http_errors import Forbidden, Unauthorized
from shared.bus.connection import Bus
from shared.bus.kv import TypedKV
from shared.errors import ConflictError, NotFoundError
from shared.events.base import now

Role = Literal["admin", "deployer", "viewer"]
ALL_TEAMS = "*"
TOKEN_PREFIX = "shm_"
BOOTSTRAP_NAME = "bootstrap-admin"
_RANK = {"viewer": 0, "deployer": 1, "admin": 2}


class TokenRecord(msgspec.Struct, kw_only=True):
    """What a token may do (key: sha256 hex of the token). Never holds the token itself."""

    id: str
    name: str
    role: Role
    teams: list[str]
    created_at: datetime = msgspec.field(default_factory=now)
    created_by: str = ""
    expires_at: datetime | None = None


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_id_for(token_hash: str) -> str:
    # Derived from the hash, so revocation by id needs no second index; 64 bits of a
    # sha256 of 256 random bits reveal nothing usable about the token.
    return f"tok_{token_hash[:16]}"


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Principal:
    """Who is calling, as far as authorisation is concerned."""

    token_id: str
    name: str
    role: Role
    teams: frozenset[str]

    @property
    def actor(self) -> str:
        return f"{self.name} ({self.token_id})"

    @property
    def all_teams(self) -> bool:
        return ALL_TEAMS in self.teams

    def covers(self, team: str) -> bool:
        return self.all_teams or team in self.teams

    def at_least(self, role: Role) -> bool:
        return _RANK[self.role] >= _RANK[role]

    def default_team(self) -> str:
        named = sorted(t for t in self.teams if t != ALL_TEAMS)
        return named[0] if len(named) == 1 and not self.all_teams else "default"


def check_app_access(principal: Principal, app: str, team: str, need: Role) -> None:
    """404 when the app is not the caller's to see; 403 when they see it but may not act."""
    if not principal.covers(team):
        raise NotFoundError(f"app {app} does not exist")
    if not principal.at_least(need):
        raise Forbidden(f"role {principal.role} may not do this; it needs {need}")


def require_role(principal: Principal, need: Role) -> None:
    if not principal.at_least(need):
        raise Forbidden(f"role {principal.role} may not do this; it needs {need}")


def parse_bearer(header: str | None) -> str:
    if not header:
        raise Unauthorized("missing Authorization header: send 'Authorization: Bearer <token>'")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise Unauthorized("the Authorization header must be 'Bearer <token>'")
    return value.strip()


class TokenStore:
    def __init__(self, kv: TypedKV[TokenRecord], bus: Bus) -> None:
        self.kv = kv
        self.bus = bus

    async def authenticate(self, token: str) -> Principal:
        if len(token) > 512:
            raise Unauthorized("invalid or revoked token")
        token_hash = hash_token(token)
        entry = await self.kv.get(token_hash)
        # compare_digest on the hash keeps a lookup hit/miss from being the only signal,
        # and guards against a KV key normalisation surprise.
        if entry is None or not hmac.compare_digest(entry.key, token_hash):
            raise Unauthorized("invalid or revoked token")
        record = entry.value
        if record.expires_at is not None and record.expires_at <= now():
            raise Unauthorized("token expired")
        return Principal(token_id=record.id, name=record.name, role=record.role,
                         teams=frozenset(record.teams))

    async def ensure_bootstrap(self, token: str) -> None:
        """Make the configured admin token valid (idempotent, safe from every api copy)."""
        token_hash = hash_token(token)
        record = TokenRecord(id=token_id_for(token_hash), name=BOOTSTRAP_NAME, role="admin",
                             teams=[ALL_TEAMS], created_by="settings")
        with contextlib.suppress(ConflictError):
            await self.kv.create(token_hash, record)

    async def create(
        self, *, name: str, role: Role, teams: list[str], created_by: str,
        expires_in_s: float | None,
    ) -> tuple[str, TokenRecord]:
        token = new_token()
        token_hash = hash_token(token)
        expires_at = now() + timedelta(seconds=expires_in_s) if expires_in_s else None
        record = TokenRecord(id=token_id_for(token_hash), name=name, role=role,
                             teams=sorted(set(teams)), created_by=created_by,
                             expires_at=expires_at)
        await self.kv.create(token_hash, record)
        return token, record

    async def list(self) -> list[TokenRecord]:
        entries = await self.kv.values()
        return sorted((e.value for e in entries), key=lambda r: r.created_at)

    async def revoke(self, token_id: str) -> TokenRecord:
        if not token_id.startswith("tok_") or len(token_id) != 20:
            raise NotFoundError(f"token {token_id} does not exist")
        prefix = token_id[4:]
        for key in await self.kv.keys():
            if key.startswith(prefix):
                entry = await self.kv.get(key)
                if entry is not None:
                    await self.kv.delete(key)
                    return entry.value
        raise NotFoundError(f"token {token_id} does not exist")
