"""Connecting to NATS, publishing with dedupe ids, draining on shutdown."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec
import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import PubAck

from shared.errors import BackendUnavailable
from shared.events.base import Event, event_type
from shared.events.codec import encode_event
from shared.logging import get_logger
from shared.settings import CommonSettings
from shared.subjects import event_subject, inbox_prefix

log = get_logger(__name__)

MSG_ID = "Nats-Msg-Id"
PUBLISH_TIMEOUT_S = 5.0

# Errors that mean "NATS could not take the message right now": the caller
# answers 503 (api) or retries later (workers). A timeout leaves the outcome
# unknown, which is why every publish carries a Nats-Msg-Id.
UNAVAILABLE = (
    nats.errors.TimeoutError,
    nats.errors.NoServersError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.StaleConnectionError,
    nats.js.errors.NoStreamResponseError,
    nats.js.errors.ServiceUnavailableError,
    asyncio.TimeoutError,
    ConnectionError,
    OSError,
)


ERROR_LOG_INTERVAL_S = 10.0


class _ErrorLogThrottle:
    """Lets one log line through per interval; counts the ones it holds back."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.last: float | None = None
        self.held = 0

    def should_log(self) -> int | None:
        """None to stay quiet, else how many were held back since the last line."""
        now = time.monotonic()
        if self.last is not None and now - self.last < self.interval_s:
            self.held += 1
            return None
        held, self.held, self.last = self.held, 0, now
        return held

    def reset(self) -> None:
        self.last, self.held = None, 0


class Bus:
    """One service's connection to NATS and JetStream."""

    def __init__(self, nc: Client, js: JetStreamContext, name: str) -> None:
        self.nc = nc
        self.js = js
        self.name = name

    @property
    def connected(self) -> bool:
        return bool(self.nc.is_connected)

    async def publish(
        self,
        subject: str,
        payload: bytes,
        *,
        msg_id: str | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = PUBLISH_TIMEOUT_S,
    ) -> PubAck:
        """Publish to a stream and wait for the PubAck (durable once it returns).

        Raises BackendUnavailable when NATS cannot confirm; retrying with the
        same msg_id is then safe: the stream stores the message once.
        """
        hdrs = dict(headers or {})
        if msg_id is not None:
            hdrs[MSG_ID] = msg_id
        try:
            return await self.js.publish(subject, payload, timeout=timeout, headers=hdrs or None)
        except UNAVAILABLE as exc:
            detail = f"publish to {subject} not confirmed: {exc!r}"
            raise BackendUnavailable("nats", detail) from exc

    async def publish_event(self, event: Event, *, msg_id: str | None = None) -> PubAck:
        """Publish a timeline event on shaman.events.<app>.<type>."""
        subject = event_subject(event.app, event_type(event))
        return await self.publish(subject, encode_event(event), msg_id=msg_id)

    async def publish_command(
        self, subject: str, command: msgspec.Struct, msg_id: str
    ) -> PubAck:
        """Publish a work command; msg_id must be deterministic (<deploy_id>:<step>)."""
        return await self.publish(subject, msgspec.json.encode(command), msg_id=msg_id)

    async def close(self) -> None:
        """Drain: finish pending publishes and subscriptions, then close."""
        if self.nc.is_closed:
            return
        try:
            await self.nc.drain()
        except Exception as exc:  # draining a broken connection must not stop shutdown
            log.warning("nats drain failed", error=repr(exc))
            await self.nc.close()


async def connect_bus(settings: CommonSettings, name: str, **options: Any) -> Bus:
    """Connect to NATS; keeps reconnecting forever, quickly, after a restart."""

    async def on_disconnect() -> None:
        log.warning("nats disconnected", client=name)

    async def on_reconnect() -> None:
        log.info("nats reconnected", client=name)

    # While NATS is down the client reports a failed reconnect every
    # reconnect_time_wait (~4 per second): log the first of a run and then at most
    # one line per ERROR_LOG_INTERVAL_S, with how many were folded in.
    errors = _ErrorLogThrottle(ERROR_LOG_INTERVAL_S)

    async def on_error(exc: Exception) -> None:
        folded = errors.should_log()
        if folded is not None:
            log.warning("nats error", client=name, error=repr(exc), similar_since_last=folded)

    async def on_reconnect_reset() -> None:
        errors.reset()
        await on_reconnect()

    kwargs: dict[str, Any] = {
        "servers": [s.strip() for s in settings.nats_url.split(",")],
        "name": name,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": settings.nats_reconnect_wait_s,
        "connect_timeout": 2,
        "allow_reconnect": True,
        "disconnected_cb": on_disconnect,
        "reconnected_cb": on_reconnect_reset,
        "error_cb": on_error,
    }
    if settings.nats_user:
        kwargs["user"] = settings.nats_user
        # Replies on an inbox only this user may subscribe to (docs/nats-permissions.md).
        kwargs["inbox_prefix"] = inbox_prefix(settings.nats_user)
        if settings.nats_password is not None:
            kwargs["password"] = settings.nats_password.get_secret_value()
    kwargs.update(options)
    try:
        nc = await nats.connect(**kwargs)
    except UNAVAILABLE as exc:
        raise BackendUnavailable("nats", f"cannot connect to {settings.nats_url}: {exc!r}") from exc
    return Bus(nc, nc.jetstream(), name)
