"""Helpers for the api's integration tests: waiting, unique names, reading NATS state."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext


def uniq(prefix: str = "app") -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


async def wait_for(
    predicate: Callable[[], Any | Awaitable[Any]], timeout: float = 10.0, interval: float = 0.02,
    what: str = "condition",
) -> Any:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


async def stream_messages(
    js: JetStreamContext, stream: str, subject_filter: str, limit: int = 10_000
) -> list[tuple[int, str, bytes, dict[str, str]]]:
    """Messages of `stream` matching the filter, oldest first: (seq, subject, data, headers).

    Reads with direct gets, so it consumes nothing (work queues keep their messages).
    """
    out: list[tuple[int, str, bytes, dict[str, str]]] = []
    seq = 1
    while len(out) < limit:
        try:
            msg = await js.get_msg(stream, seq=seq, subject=subject_filter, next=True)
        except nats.js.errors.NotFoundError:
            break
        out.append((msg.seq or 0, msg.subject or "", msg.data or b"", dict(msg.headers or {})))
        seq = (msg.seq or 0) + 1
    return out


class SseStream:
    """A minimal SSE reader over an aiohttp response: events as (id, data-dict).

    Comment lines are counted and kept (`comment_lines`); `until_comment` reads up to one.
    """

    def __init__(self, response: Any) -> None:
        self.response = response
        self.comments = 0
        self.comment_lines: list[str] = []

    async def next_event(self, timeout: float = 10.0) -> tuple[int, dict[str, Any]]:
        return await asyncio.wait_for(self._next(), timeout)

    async def until_comment(self, text: str, timeout: float = 10.0
                            ) -> list[tuple[int, dict[str, Any]]]:
        """Read up to the comment `: <text>`; the events that came before it."""
        return await asyncio.wait_for(self._until(text), timeout)

    async def _until(self, text: str) -> list[tuple[int, dict[str, Any]]]:
        events: list[tuple[int, dict[str, Any]]] = []
        while True:
            item = await self._read(stop_at_comment=text)
            if item is None:
                return events
            events.append(item)

    async def _next(self) -> tuple[int, dict[str, Any]]:
        item = await self._read()
        assert item is not None
        return item

    async def _read(self, stop_at_comment: str | None = None
                    ) -> tuple[int, dict[str, Any]] | None:
        event_id: int | None = None
        data: list[str] = []
        while True:
            raw = await self.response.content.readline()
            if not raw:
                raise EOFError("the event stream ended")
            line = raw.decode().rstrip("\n")
            if line == "":
                if data:
                    assert event_id is not None, "every event carries an id"
                    return event_id, json.loads("\n".join(data))
                continue
            if line.startswith(":"):
                self.comments += 1
                self.comment_lines.append(line[1:].strip())
                if stop_at_comment is not None and line[1:].strip() == stop_at_comment:
                    assert not data, "a comment inside an event"
                    return None
            elif line.startswith("id: "):
                event_id = int(line[4:])
            elif line.startswith("data: "):
                data.append(line[6:])

    async def events(self, count: int, timeout: float = 10.0) -> list[tuple[int, dict[str, Any]]]:
        return [await self.next_event(timeout) for _ in range(count)]
