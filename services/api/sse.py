"""Server-Sent Events of the timeline: one JetStream follower per filter, many clients.

`SseHub` keeps one `StreamTail` per distinct subject filter (all apps, one app, one
type) however many clients watch it. Each event is framed once (the SSE text and its
HTTP/1.1 chunk header) and the same bytes are written to every client's transport
(performance.md: a queue and a task per subscriber lose events under load). A client
whose socket is not keeping up (write buffer above `max_buffer_bytes`) is dropped
rather than allowed to slow the others or grow memory; it reconnects with
Last-Event-ID and resumes from JetStream history.

Resuming (`Last-Event-ID` / `?since=`): the client attaches to the live follower in
buffering mode first, replays history from JetStream until it has caught up, then
flushes the buffered live events with a higher sequence and switches to direct
writes. Nothing published in between is lost or sent twice.

Visibility: a token scoped to teams sees only events of its teams' apps; the hub
looks an app's team up once per event (cached briefly), not once per client.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import nats.errors
from prometheus_client import Gauge, Histogram

from services.api.stream_tail import StreamTail
from shared.bus.connection import UNAVAILABLE, Bus
from shared.errors import BackendUnavailable
from shared.logging import get_logger
from shared.subjects import EVENTS_ROOT, STREAM_EVENTS
from shared.tasks import BackgroundTasks, raise_if_cancelled

log = get_logger(__name__)

SSE_CLIENTS = Gauge("shaman_api_sse_clients", "Connected Server-Sent Events clients")
SSE_FOLLOWERS = Gauge("shaman_api_sse_followers", "JetStream followers serving SSE clients")
SSE_FANOUT = Histogram(
    "shaman_api_sse_fanout_seconds",
    "Time to write one batch of events (usually one) to every client of a follower",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1),
)
MAX_REPLAY_BUFFER = 10_000

TeamOf = Callable[[str], Awaitable[str | None]]


def chunk(payload: bytes) -> bytes:
    """One HTTP/1.1 chunk: the framing aiohttp's chunked writer would add."""
    return f"{len(payload):x}\r\n".encode() + payload + b"\r\n"


def sse_frame(seq: int, data: bytes) -> bytes:
    return b"id: " + str(seq).encode() + b"\ndata: " + data.replace(b"\n", b"") + b"\n\n"


KEEPALIVE = chunk(b": keep-alive\n\n")


def app_of(subject: str) -> str:
    # shaman.events.<app>.<type...>
    return subject[len(EVENTS_ROOT) + 1 :].split(".", 1)[0]


@dataclass(eq=False)
class SseClient:
    """One connected client; the hub writes to its transport directly."""

    transport: asyncio.Transport
    teams: frozenset[str] | None  # None: sees every app
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    # While replaying history: live events wait here as (seq, bytes).
    buffer: list[tuple[int, bytes]] | None = None
    # Events up to this sequence were already sent (by the replay).
    after_seq: int = 0

    def sees(self, team: str | None) -> bool:
        return self.teams is None or (team is not None and team in self.teams)

    def write(self, data: bytes, max_buffer_bytes: int) -> None:
        if self.closed.is_set():
            return
        if self.transport.is_closing():
            self.closed.set()
            return
        if self.transport.get_write_buffer_size() > max_buffer_bytes:
            log.warning("sse client too slow; disconnecting")
            self.transport.close()
            self.closed.set()
            return
        self.transport.write(data)


class _Channel:
    """One follower and its clients.

    Events are framed as they arrive and written on the next turn of the event loop, all
    that arrived meanwhile in one write per client. nats-py hands a subscription's queued
    messages to `dispatch` without yielding in between, so when the fan-out falls behind
    (a burst of build logs, a slow machine) the batches grow by themselves: the cost per
    client stays one write per loop turn instead of one per event, and latency stays
    bounded instead of queueing up. When events arrive one at a time nothing waits.
    """

    def __init__(self, hub: SseHub, filter_subject: str) -> None:
        self.filter_subject = filter_subject
        self.clients: set[SseClient] = set()
        self.tail = StreamTail(hub.bus, STREAM_EVENTS, filter_subject, self.dispatch,
                               heartbeat_s=hub.heartbeat_s, name=f"sse:{filter_subject}")
        self.hub = hub
        self._pending: list[tuple[int, bytes, str | None]] = []
        self._flush_scheduled = False

    async def dispatch(self, seq: int, subject: str, data: bytes) -> None:
        team: str | None = None
        if any(c.teams is not None for c in self.clients):
            team = await self.hub.team_of(app_of(subject))
        self._pending.append((seq, chunk(sse_frame(seq, data)), team))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        batch, self._pending = self._pending, []
        if not batch:
            return
        started = time.perf_counter()
        first_seq = batch[0][0]
        everything = b"".join(frame for _, frame, _ in batch)
        limit = self.hub.max_buffer_bytes
        for client in list(self.clients):
            if client.buffer is None and client.teams is None and client.after_seq < first_seq:
                # The common case, the same bytes for all; inlined (the loop runs once
                # per client per batch, and every call shows at 1,000 clients).
                transport = client.transport
                if (transport.get_write_buffer_size() <= limit and not transport.is_closing()
                        and not client.closed.is_set()):
                    transport.write(everything)
                    continue
                client.write(everything, limit)  # too slow or gone: SseClient decides
            else:
                frames = [(seq, frame) for seq, frame, team in batch
                          if seq > client.after_seq and client.sees(team)]
                if client.buffer is not None:
                    client.buffer.extend(frames)
                    if len(client.buffer) > MAX_REPLAY_BUFFER:
                        client.transport.close()
                        client.closed.set()
                elif frames:
                    client.write(b"".join(frame for _, frame in frames), limit)
            if client.closed.is_set():
                self.clients.discard(client)
        SSE_FANOUT.observe(time.perf_counter() - started)


class SseHub:
    def __init__(
        self,
        bus: Bus,
        team_of: TeamOf,
        *,
        keepalive_s: float,
        heartbeat_s: float = 1.0,
        max_buffer_bytes: int = 1024 * 1024,
    ) -> None:
        self.bus = bus
        self.team_of = team_of
        self.keepalive_s = keepalive_s
        self.heartbeat_s = heartbeat_s
        self.max_buffer_bytes = max_buffer_bytes
        self._channels: dict[str, _Channel] = {}
        self._lock = asyncio.Lock()
        self._tasks = BackgroundTasks("sse-hub")
        self._closing = False

    async def start(self) -> None:
        self._tasks.spawn("keepalive", self._keepalive())

    async def release_clients(self) -> None:
        """End every client's stream (shutdown): their handlers return and detach."""
        self._closing = True
        for channel in list(self._channels.values()):
            for client in channel.clients:
                client.closed.set()

    async def close(self) -> None:
        await self.release_clients()
        await self._tasks.close()
        async with self._lock:
            for channel in self._channels.values():
                await channel.tail.stop()
            self._channels.clear()
        SSE_FOLLOWERS.set(0)

    @property
    def clients(self) -> int:
        return sum(len(c.clients) for c in self._channels.values())

    @property
    def followers(self) -> int:
        return len(self._channels)

    async def attach(self, filter_subject: str, client: SseClient) -> int:
        """Add a client to the follower of `filter_subject`; returns the follower's position.

        Events above the returned sequence will reach the client (or its buffer).
        """
        async with self._lock:
            if self._closing:
                raise RuntimeError("the SSE hub is shutting down")
            channel = self._channels.get(filter_subject)
            if channel is None:
                channel = _Channel(self, filter_subject)
                try:
                    await channel.tail.start()
                except (nats.errors.Error, *UNAVAILABLE) as exc:
                    await channel.tail.stop()
                    raise BackendUnavailable("nats", f"cannot follow the timeline: {exc!r}") \
                        from exc
                self._channels[filter_subject] = channel
                SSE_FOLLOWERS.set(len(self._channels))
            channel.clients.add(client)
            SSE_CLIENTS.inc()
            return channel.tail.last_seq

    async def detach(self, filter_subject: str, client: SseClient) -> None:
        SSE_CLIENTS.dec()
        async with self._lock:
            channel = self._channels.get(filter_subject)
            if channel is None:
                return
            channel.clients.discard(client)
            if not channel.clients:
                del self._channels[filter_subject]
                SSE_FOLLOWERS.set(len(self._channels))
                await channel.tail.stop()

    def go_live(self, client: SseClient, after_seq: int) -> None:
        """End a client's replay: write buffered live events above `after_seq`, then go direct."""
        buffered, client.buffer = client.buffer or [], None
        client.after_seq = after_seq
        frames = [frame for seq, frame in buffered if seq > after_seq]
        if frames:
            client.write(b"".join(frames), self.max_buffer_bytes)

    async def _keepalive(self) -> None:
        while True:
            raise_if_cancelled()
            await asyncio.sleep(self.keepalive_s)
            started = time.monotonic()
            for channel in list(self._channels.values()):
                for client in list(channel.clients):
                    client.write(KEEPALIVE, self.max_buffer_bytes)
                    if client.closed.is_set():
                        channel.clients.discard(client)
            with contextlib.suppress(Exception):
                log.debug("sse keepalive sent", clients=self.clients,
                          took_ms=round((time.monotonic() - started) * 1000, 2))
