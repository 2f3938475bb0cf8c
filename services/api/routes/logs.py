"""GET /v1/apps/{app}/logs: the app's task output, merged, as plain text.

Every line is prefixed with the allocation's short id (`[a1b2c3d4] `; with both streams
also the stream: `[a1b2c3d4 stderr] `), so the output of several instances stays
readable when merged. `lines=N` (default 100) starts with each stream's last N lines;
`follow=true` then keeps the answer open and streams new lines as the tasks write them:
a stream that ends (the task restarted) is resumed where it stopped, and allocations
that appear later (a new release, a reschedule) are picked up every `logs_relist_s`.

The answer starts only once Nomad has answered the allocation list (and, without follow,
every tail read), so Nomad trouble is a clean 503 JSON error; afterwards a failure can
only end the stream. Viewers may read logs; another team's app is 404 like everywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from aiohttp import web

from services.api.http_errors import field_error
from services.api.routing import Call, RouteSpec
from services.api.task_logs import (
    Chunk,
    LogReader,
    Stream,
    is_terminal,
    pick_allocations,
    short_id,
)
from shared.errors import BackendUnavailable
from shared.logging import get_logger

log = get_logger(__name__)

DEFAULT_LINES = 100
MAX_LINES = 10_000
# A line longer than this is passed on in pieces rather than held in memory.
MAX_LINE_BYTES = 64 * 1024
# How often a follower with nothing to write checks that its client is still there.
IDLE_CHECK_S = 1.0
STREAMS: dict[str, tuple[Stream, ...]] = {
    "stdout": ("stdout",), "stderr": ("stderr",), "both": ("stdout", "stderr"),
}
_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no", ""})


def _params(call: Call) -> tuple[bool, int, tuple[Stream, ...]]:
    query = call.request.query
    follow = query.get("follow", "false").lower()
    if follow not in _TRUE | _FALSE:
        raise field_error("follow", "must be true or false")
    raw_lines = query.get("lines", str(DEFAULT_LINES))
    if not raw_lines.isdigit() or int(raw_lines) > MAX_LINES:
        raise field_error("lines", f"must be an integer from 0 to {MAX_LINES}")
    kind = query.get("type", "both")
    if kind not in STREAMS:
        raise field_error("type", "must be stdout, stderr or both")
    return follow in _TRUE, int(raw_lines), STREAMS[kind]


def _prefix(alloc_id: str, stream: Stream, both: bool) -> bytes:
    return (f"[{short_id(alloc_id)} {stream}] " if both else f"[{short_id(alloc_id)}] ").encode()


def _text(data: bytes) -> bytes:
    """Valid UTF-8 whatever the task wrote: the answer says charset=utf-8."""
    return data.decode("utf-8", errors="replace").encode()


def _prefixed(prefix: bytes, lines: list[bytes]) -> bytes:
    return b"".join(prefix + _text(line) + b"\n" for line in lines)


class LineSplitter:
    """Bytes in, complete lines out; a partial line waits (up to MAX_LINE_BYTES)."""

    def __init__(self) -> None:
        self._partial = b""

    def feed(self, data: bytes) -> list[bytes]:
        *lines, self._partial = (self._partial + data).split(b"\n")
        while len(self._partial) > MAX_LINE_BYTES:
            lines.append(self._partial[:MAX_LINE_BYTES])
            self._partial = self._partial[MAX_LINE_BYTES:]
        return lines

    def flush(self) -> list[bytes]:
        rest, self._partial = self._partial, b""
        return [rest] if rest else []


def _lines(tail: bytes) -> list[bytes]:
    """A tail as lines (its last line may lack the newline: the task is still writing)."""
    return (tail[:-1] if tail.endswith(b"\n") else tail).split(b"\n") if tail else []


async def logs(call: Call) -> web.StreamResponse:
    follow, lines, streams = _params(call)
    entry = await call.load_app()
    app = entry.value.spec.name
    reader: LogReader = call.ctx.logs
    chosen = pick_allocations(await reader.allocations(app))
    pairs = [(a["ID"], s) for a in chosen for s in streams]
    # Each stream's last N lines, before the answer starts: Nomad trouble is still a 503.
    tails = await asyncio.gather(*(reader.tail(alloc_id, s, lines) for alloc_id, s in pairs))
    response = _response(call)
    await response.prepare(call.request)
    if not follow:
        both = len(streams) > 1
        for (alloc_id, stream), tail in zip(pairs, tails, strict=True):
            if tail:
                await response.write(_prefixed(_prefix(alloc_id, stream, both), _lines(tail)))
        await response.write_eof()
        return response
    return await _follow(call, response, reader, app, streams,
                         [(alloc_id, s, len(tail))
                          for (alloc_id, s), tail in zip(pairs, tails, strict=True)])


def _response(call: Call) -> web.StreamResponse:
    response = web.StreamResponse(headers={
        "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",
        "X-Request-Id": call.request_id,
        "X-Content-Type-Options": "nosniff",
    })
    response.content_type = "text/plain"
    response.charset = "utf-8"
    return response


@dataclass
class _Source:
    """One followed (allocation, stream): where it got to, and its reader task."""

    alloc_id: str
    stream: Stream
    prefix: bytes
    offset: int | None = None  # the file offset reached, when Nomad said
    task: asyncio.Task[None] | None = None
    splitter: LineSplitter = field(default_factory=LineSplitter)

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()


Start = Callable[[str, Stream, Literal["start", "end"], int], None]


async def _follow(call: Call, response: web.StreamResponse, reader: LogReader, app: str,
                  streams: tuple[Stream, ...], first: list[tuple[str, Stream, int]]
                  ) -> web.StreamResponse:
    """Stream every followed source's lines until the client leaves or the api stops.

    `first`: (allocation, stream, bytes before the end to start at: its last N lines).
    """
    both = len(streams) > 1
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    sources: dict[tuple[str, Stream], _Source] = {}

    async def pump(source: _Source, origin: Literal["start", "end"], offset: int) -> None:
        try:
            async for chunk in reader.follow(source.alloc_id, source.stream,
                                             origin=origin, offset=offset):
                _take(source, chunk, queue)
        except BackendUnavailable as exc:
            log.info("log stream ended", app=app, alloc=source.alloc_id, error=str(exc))
        finally:
            rest = source.splitter.flush()
            if rest:
                queue.put_nowait(_prefixed(source.prefix, rest))

    def start(alloc_id: str, stream: Stream, origin: Literal["start", "end"],
              offset: int) -> None:
        source = sources.get((alloc_id, stream))
        if source is None:
            source = _Source(alloc_id, stream, _prefix(alloc_id, stream, both))
            sources[(alloc_id, stream)] = source
        source.task = asyncio.create_task(pump(source, origin, offset),
                                          name=f"logs:{app}:{short_id(alloc_id)}:{stream}")

    for alloc_id, stream, before_end in first:
        start(alloc_id, stream, "end", before_end)
    transport = call.request.transport
    loop = asyncio.get_running_loop()
    next_relist = loop.time() + reader.relist_s
    try:
        while not reader.closing.is_set():
            if transport is None or transport.is_closing():
                break  # the client left (aiohttp does not cancel the handler)
            with contextlib.suppress(TimeoutError):
                batch = [await asyncio.wait_for(queue.get(), IDLE_CHECK_S)]
                while not queue.empty():
                    batch.append(queue.get_nowait())
                await response.write(b"".join(batch))
            if loop.time() >= next_relist:
                next_relist = loop.time() + reader.relist_s
                await _relist(reader, app, streams, sources, start)
    except ConnectionError as exc:
        log.info("log follow ended: client gone", app=app, error=repr(exc))
    finally:
        tasks = [s.task for s in sources.values() if s.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return response


def _take(source: _Source, chunk: Chunk, queue: asyncio.Queue[bytes]) -> None:
    if chunk.offset is not None:
        source.offset = chunk.offset
    complete = source.splitter.feed(chunk.data)
    if complete:
        queue.put_nowait(_prefixed(source.prefix, complete))


async def _relist(reader: LogReader, app: str, streams: tuple[Stream, ...],
                  sources: dict[tuple[str, Stream], _Source], start: Start) -> None:
    """New running allocations are followed from their start; a stream of a still running
    allocation that ended (its task restarted) is resumed where it stopped."""
    try:
        allocs = await reader.allocations(app)
    except BackendUnavailable:
        return  # the next round tries again
    for alloc in allocs:
        if is_terminal(alloc):
            continue
        for stream in streams:
            source = sources.get((alloc["ID"], stream))
            if source is None:
                start(alloc["ID"], stream, "start", 0)  # new: everything it wrote
            elif not source.running:
                if source.offset is not None:
                    start(alloc["ID"], stream, "start", source.offset)
                else:  # Nomad never said where it got to: only what comes next
                    start(alloc["ID"], stream, "end", 0)


ROUTES = [
    RouteSpec(
        "GET", "/v1/apps/{app}/logs", logs,
        "The app's task logs (stdout and stderr of every running instance), merged; each "
        "line is prefixed with its allocation's short id",
        responses={200: None}, tag="apps",
        errors=(400, 401, 403, 404, 422, 429, 503),
        query=(("follow", "boolean", "keep streaming new lines (default false)"),
               ("lines", "integer", f"start with each stream's last N lines (0-{MAX_LINES}, "
                                    f"default {DEFAULT_LINES})"),
               ("type", "string", "stdout, stderr or both (default both)")),
    ),
]
