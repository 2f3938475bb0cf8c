"""Nomad's event stream (`GET /v1/event/stream`) read with aiohttp, as typed envelopes.

`NomadEventStream.envelopes(index)` opens one subscription and yields `Envelope`s until
the connection ends, then raises `TemporaryError` so the caller reconnects; it never
ends quietly. Framing follows nomad-api.md §7: NDJSON, one envelope per line, `{}`
heartbeats (one on connect, then every 30 s; counted, reported through `on_heartbeat`,
never yielded). Lines are split here from `resp.content.iter_any()` because a single
Job or PlanResult line can be larger than aiohttp's line limit. A read timeout
(`sock_read_s`, default 90 s = three missed heartbeats) detects a silent half-open
connection. A stream that ends before its first line is an error too: recent Nomad
answers a forbidden topic with 200 and EOF.

`reconnecting_envelopes()` wraps it in the reconnect loop: resume at
`start_index_fn()` (Nomad's `index` is inclusive, so the last envelope comes again),
back off with capped exponential delay and jitter between failed attempts (reset once a
connection delivers its first line), and call `on_connect` after every subscription so
the caller can relist state and close any gap.

Deliberately not here: de-duplication, checkpoints and gap handling (the watcher owns
that policy), interpreting events, and python-nomad's stream helper (no backoff, stuck
index, silent thread death: nomad-api.md §11).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterable, Callable, Sequence
from typing import Any

import aiohttp
import msgspec

from shared.errors import BackendUnavailable, PermanentError, ShamanError, TemporaryError
from shared.logging import get_logger
from shared.nomad.client import NomadSettingsLike, secret_value
from shared.nomad.errors import error_for_status, parse_retry_after
from shared.tasks import backoff_delay

__all__ = [
    "DEFAULT_MAX_LINE_BYTES",
    "Envelope",
    "NomadEvent",
    "NomadEventStream",
    "iter_lines",
    "reconnecting_envelopes",
]

log = get_logger(__name__)

# A guard against unbounded memory, far above any real envelope (a PlanResult batch of a
# few hundred allocations is a few MiB).
DEFAULT_MAX_LINE_BYTES = 128 * 1024 * 1024


class NomadEvent(msgspec.Struct, frozen=True):
    """One event as Nomad sends it; `Payload` holds one object keyed by its kind."""

    Topic: str
    Type: str
    Key: str = ""
    Namespace: str = ""
    FilterKeys: list[str] | None = None
    Index: int = 0
    Payload: dict[str, Any] = msgspec.field(default_factory=dict)

    @property
    def object(self) -> dict[str, Any] | None:
        """The payload object: `Payload["Deployment"]` for a Deployment event, and so on."""
        obj = self.Payload.get(self.Topic)
        return obj if isinstance(obj, dict) else None

    @property
    def dedupe_key(self) -> tuple[int, str, str, str]:
        """(Index, Topic, Key, Type): equal for a replayed copy of the same event."""
        return (self.Index, self.Topic, self.Key, self.Type)


class Envelope(msgspec.Struct, frozen=True):
    """One state-store transaction's events; consecutive envelopes may share an Index."""

    Index: int
    Events: list[NomadEvent] = msgspec.field(default_factory=list)


class _Line(msgspec.Struct):
    # Lenient shape for one line: an envelope, a heartbeat-like object, or an error report.
    Index: int = -1
    Events: list[NomadEvent] | None = None
    Error: str | None = None


_decoder = msgspec.json.Decoder(_Line)


async def iter_lines(
    chunks: AsyncIterable[bytes], max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
) -> AsyncGenerator[bytes, None]:
    """Split a byte stream into `\\n`-terminated lines of any length (without the `\\n`).

    Empty lines are skipped and a trailing `\\r` is dropped. Bytes after the last newline
    when the stream ends are an incomplete line and are discarded: a complete NDJSON
    line always ends with `\\n`. A line longer than `max_line_bytes` raises PermanentError.
    """
    buf = bytearray()
    scanned = 0  # bytes of buf already known to contain no newline
    async for chunk in chunks:
        if not chunk:
            continue
        buf += chunk
        start = 0
        while (nl := buf.find(b"\n", max(start, scanned))) != -1:
            line = bytes(buf[start:nl]).rstrip(b"\r")
            start = nl + 1
            scanned = start
            if line:
                yield line
        if start:
            del buf[:start]
        scanned = len(buf)
        if scanned > max_line_bytes:
            raise PermanentError(
                f"nomad event stream line exceeds {max_line_bytes} bytes; "
                "raise max_line_bytes or narrow the topics"
            )
    if buf:
        log.debug("nomad event stream dropped a partial line", bytes=len(buf))


def _is_heartbeat(line: bytes) -> bool:
    return line.strip() == b"{}"


class NomadEventStream:
    """Subscribes to Nomad's event stream for some topics in one namespace.

    `topics` are `Topic` or `Topic:FilterKey` strings (e.g. `Deployment:web`); no topics
    means every topic, which needs a management token. Pass the service's
    `aiohttp.ClientSession` (it is not closed here); without one, each subscription
    opens and closes its own.

    Counters for metrics and health: `heartbeats`, `envelopes_received`, `decode_errors`,
    `last_line_at` (time.monotonic() of the last line, heartbeats included).
    """

    def __init__(
        self,
        address: str,
        *,
        token: str | None = None,
        namespace: str = "default",
        topics: Sequence[str] = (),
        session: aiohttp.ClientSession | None = None,
        sock_read_s: float = 90.0,
        connect_timeout_s: float = 10.0,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        on_heartbeat: Callable[[], None] | None = None,
    ) -> None:
        self.url = address.rstrip("/") + "/v1/event/stream"
        self._token = token or None
        self.namespace = namespace
        self.topics = list(topics)
        self._session = session
        self.timeout = aiohttp.ClientTimeout(
            total=None,
            connect=connect_timeout_s,
            sock_connect=connect_timeout_s,
            sock_read=sock_read_s,
        )
        self.max_line_bytes = max_line_bytes
        self.on_heartbeat = on_heartbeat
        self.heartbeats = 0
        self.envelopes_received = 0
        self.decode_errors = 0
        self.last_line_at: float | None = None

    @classmethod
    def from_settings(
        cls,
        settings: NomadSettingsLike,
        topics: Sequence[str],
        *,
        session: aiohttp.ClientSession | None = None,
        sock_read_s: float = 90.0,
        on_heartbeat: Callable[[], None] | None = None,
    ) -> NomadEventStream:
        """A stream for NOMAD_ADDR / NOMAD_TOKEN / NOMAD_NAMESPACE as the settings read them."""
        return cls(
            settings.nomad_addr,
            token=secret_value(settings.nomad_token),
            namespace=settings.nomad_namespace,
            topics=topics,
            session=session,
            sock_read_s=sock_read_s,
            on_heartbeat=on_heartbeat,
        )

    def __repr__(self) -> str:
        return (
            f"NomadEventStream(url={self.url!r}, namespace={self.namespace!r}, "
            f"topics={self.topics!r})"
        )

    def _params(self, index: int) -> list[tuple[str, str]]:
        params = [("index", str(index)), ("namespace", self.namespace)]
        params += [("topic", t) for t in self.topics]
        return params

    async def envelopes(
        self, index: int = 0, *, on_subscribed: Callable[[], None] | None = None
    ) -> AsyncGenerator[Envelope, None]:
        """Yield envelopes from `index` (inclusive) until the stream ends, then raise.

        Raises TemporaryError (or BackendUnavailable) on any disconnect, a read timeout, a
        5xx, or an EOF before the first line; PermanentError on 400/403 (a bad topic or a
        token without `read-job`). `on_subscribed` runs once, at the first line (Nomad's
        initial heartbeat), when the subscription is known to be live. Close the
        generator (`contextlib.aclosing`) to hang up early.
        """
        headers = {"Accept": "application/json"}
        if self._token:
            headers["X-Nomad-Token"] = self._token
        own_session = self._session is None
        session = self._session or aiohttp.ClientSession()
        lines = 0
        try:
            async with session.get(
                self.url, params=self._params(index), headers=headers, timeout=self.timeout
            ) as resp:
                if resp.status != 200:
                    text = (await resp.content.read(64 * 1024)).decode("utf-8", "replace")
                    raise error_for_status(
                        resp.status,
                        text,
                        "event stream",
                        retry_after_s=parse_retry_after(resp.headers.get("Retry-After")),
                    )
                async for line in iter_lines(resp.content.iter_any(), self.max_line_bytes):
                    lines += 1
                    self.last_line_at = time.monotonic()
                    if lines == 1 and on_subscribed is not None:
                        on_subscribed()
                    if _is_heartbeat(line):
                        self.heartbeats += 1
                        if self.on_heartbeat is not None:
                            self.on_heartbeat()
                        continue
                    envelope = self._decode(line)
                    if envelope is not None:
                        self.envelopes_received += 1
                        yield envelope
        except ShamanError:
            raise
        except aiohttp.ServerTimeoutError as exc:
            raise TemporaryError(
                f"nomad event stream silent for {self.timeout.sock_read}s "
                f"(heartbeats come every 30s): reconnecting ({type(exc).__name__})"
            ) from exc
        except aiohttp.ClientConnectorError as exc:
            raise BackendUnavailable("nomad", f"event stream: cannot connect ({exc})") from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TemporaryError(f"nomad event stream broke: {type(exc).__name__}: {exc}") from exc
        finally:
            if own_session:
                await session.close()
        if lines == 0:
            raise TemporaryError(
                "nomad event stream closed before its first heartbeat; the token may lack "
                "read-job on a topic (probe with a normal request)"
            )
        raise TemporaryError("nomad event stream ended; resubscribe")

    def _decode(self, line: bytes) -> Envelope | None:
        try:
            parsed = _decoder.decode(line)
        except msgspec.DecodeError as exc:
            # The stream is a hint, relisting repairs what a skipped line loses, and the
            # same index would replay the same line: skip it rather than reconnect.
            self.decode_errors += 1
            log.warning("nomad event line undecodable", bytes=len(line), error=str(exc))
            return None
        if parsed.Error:
            raise TemporaryError(f"nomad event stream closed by server: {parsed.Error}")
        if parsed.Index < 0 or not parsed.Events:
            self.decode_errors += 1
            log.warning("nomad event line not an envelope", bytes=len(line))
            return None
        return Envelope(Index=parsed.Index, Events=parsed.Events)


async def reconnecting_envelopes(
    stream: NomadEventStream,
    start_index_fn: Callable[[], int],
    *,
    on_connect: Callable[[], None] | None = None,
    on_disconnect: Callable[[TemporaryError], None] | None = None,
    initial_backoff_s: float = 0.5,
    max_backoff_s: float = 30.0,
    jitter_s: float = 1.0,
) -> AsyncGenerator[Envelope, None]:
    """Envelopes forever, resubscribing after every disconnect.

    Each subscription starts at `start_index_fn()` (read at reconnect time: the last
    index the caller fully processed). `on_connect` runs when a subscription is live;
    relist there (or schedule it) because events may have been missed while
    disconnected. `on_disconnect` runs with the error each time a subscription fails or
    ends (before the backoff sleep). Failed attempts back off `initial_backoff_s · 2ⁿ` up to
    `max_backoff_s`, plus jitter; the count resets once a connection delivers data.
    PermanentError (bad topic, forbidden) is raised to the caller: retrying cannot help.
    """
    failures = 0
    index = 0
    subscribed = False

    def mark_subscribed() -> None:
        nonlocal subscribed
        subscribed = True
        log.info("nomad event stream subscribed", index=index, topics=stream.topics)
        if on_connect is not None:
            on_connect()

    while True:
        index = start_index_fn()
        subscribed = False
        try:
            async with contextlib.aclosing(
                stream.envelopes(index, on_subscribed=mark_subscribed)
            ) as envelopes:
                async for envelope in envelopes:
                    yield envelope
        except TemporaryError as exc:
            if on_disconnect is not None:
                on_disconnect(exc)
            failures = 1 if subscribed else failures + 1
            delay = backoff_delay(failures, initial_backoff_s, max_backoff_s, jitter_s)
            if exc.retry_after_s is not None:
                delay = max(delay, exc.retry_after_s)
            log.warning(
                "nomad event stream disconnected",
                error=str(exc),
                index=index,
                failures=failures,
                retry_in_s=round(delay, 2),
            )
            await asyncio.sleep(delay)
