"""Identifiers the api hands out: deploy ids, request ids, token ids.

Deploy ids are `d-` + 12 hex digits of milliseconds since the epoch + 10 random hex
digits, so they sort by creation time as strings (lists need no extra index) and are
valid NATS subject tokens and KV keys. They are not secret and carry no meaning beyond
time and uniqueness.
"""

from __future__ import annotations

import secrets
import time

DEPLOY_PREFIX = "d-"


def new_deploy_id(now_ms: int | None = None) -> str:
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    return f"{DEPLOY_PREFIX}{ms:012x}{secrets.token_hex(5)}"


def new_request_id() -> str:
    return f"r-{int(time.time() * 1000):012x}{secrets.token_hex(4)}"
