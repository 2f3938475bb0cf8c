"""The SSE fan-out's batching and filtering, with in-memory transports (no sockets)."""

from __future__ import annotations

import asyncio
from typing import Any

from services.api.sse import SseClient, SseHub, _Channel, chunk, sse_frame


class FakeTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def get_write_buffer_size(self) -> int:
        return 0

    def close(self) -> None:
        self.closed = True


async def team_of(app: str) -> str | None:
    return {"red-app": "red", "blue-app": "blue"}.get(app)


def channel() -> _Channel:
    hub = SseHub(bus=None, team_of=team_of, keepalive_s=60)  # type: ignore[arg-type]
    return _Channel(hub, "shaman.events.*.>")


def client(teams: frozenset[str] | None = None, **kw: Any) -> tuple[SseClient, FakeTransport]:
    transport = FakeTransport()
    return SseClient(transport=transport, teams=teams, **kw), transport  # type: ignore[arg-type]


def frame(seq: int, app: str) -> bytes:
    return chunk(sse_frame(seq, b'{"app":"%s"}' % app.encode()))


async def dispatch_all(ch: _Channel, events: list[tuple[int, str]]) -> None:
    for seq, app in events:
        await ch.dispatch(seq, f"shaman.events.{app}.deploy.accepted",
                          b'{"app":"%s"}' % app.encode())
    await asyncio.sleep(0)  # the flush runs on the next loop turn


async def test_events_of_one_loop_turn_go_out_in_one_write_per_client() -> None:
    ch = channel()
    everyone, t1 = client()
    red_only, t2 = client(frozenset({"red"}))
    ch.clients |= {everyone, red_only}
    await dispatch_all(ch, [(1, "red-app"), (2, "blue-app"), (3, "red-app")])
    assert t1.writes == [frame(1, "red-app") + frame(2, "blue-app") + frame(3, "red-app")]
    assert t2.writes == [frame(1, "red-app") + frame(3, "red-app")]
    await dispatch_all(ch, [(4, "blue-app")])
    assert len(t1.writes) == 2 and len(t2.writes) == 1  # nothing visible: no write at all


async def test_replaying_clients_buffer_and_go_live_without_repeats() -> None:
    ch = channel()
    resuming, transport = client(buffer=[])
    ch.clients.add(resuming)
    await dispatch_all(ch, [(5, "red-app"), (6, "red-app")])
    assert transport.writes == []
    assert [seq for seq, _ in resuming.buffer or []] == [5, 6]
    ch.hub.go_live(resuming, after_seq=5)  # the replay already sent up to 5
    assert transport.writes == [frame(6, "red-app")]
    await dispatch_all(ch, [(7, "red-app")])
    assert transport.writes[-1] == frame(7, "red-app")


async def test_closed_clients_are_dropped() -> None:
    ch = channel()
    gone, transport = client()
    transport.closed = True
    ch.clients.add(gone)
    await dispatch_all(ch, [(1, "red-app")])
    assert gone.closed.is_set() and gone not in ch.clients
