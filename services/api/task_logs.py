"""Reading an app's task logs from Nomad, for `GET /v1/apps/{app}/logs`.

Which allocations: those of the app's job (`GET /v1/job/<app>/allocations`, through
shared.nomad's NomadClient) that are not terminal, plus the latest failed one of a running
job version (Nomad replaced it); when none is running, the most recent one. Either way a
crashed app still shows its last words. The task is always `app`
(docs/decisions/0001-deploy-flow.md, rendering conventions).

How: Nomad's `GET /v1/client/fs/logs/<alloc>?task=app&type=stdout|stderr`, read here
with aiohttp in Nomad's framed form (JSON frames with base64 `Data` and the file
`Offset` after it): `tail` reads the last bytes once (`origin=end`) and keeps the last
N lines; `follow` streams (`follow=true`) and reports the offset reached with every
chunk, so a stream that ended (the task restarted, Nomad blinked) can be resumed exactly
where it stopped (`origin=start&offset=<reached>`). python-nomad's reader is not used:
it decodes the body as ISO-8859-1 text and cannot stream.

Nomad's answers become shared errors the HTTP layer understands: a gone allocation or
log is empty, anything else that fails is `BackendUnavailable("nomad")` (503), whatever
Nomad said goes to the log only.

Not here: HTTP, merging and prefixing lines (services/api/routes/logs.py).
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp

from shared.errors import BackendUnavailable, NotFoundError, ShamanError
from shared.logging import get_logger
from shared.nomad import JSON, NomadClient
from shared.nomad.client import secret_value
from shared.settings import ApiSettings

log = get_logger(__name__)

TASK = "app"
Stream = Literal["stdout", "stderr"]
SHORT_ID = 8
# How many bytes `tail` reads for N lines: generous per line, bounded overall.
BYTES_PER_LINE = 512
MIN_TAIL_BYTES = 64 * 1024
MAX_TAIL_BYTES = 4 * 1024 * 1024
# A frame is at most 64 KiB of data (~87 KiB in base64); anything far larger is not Nomad.
MAX_FRAME_BYTES = 1024 * 1024
_TERMINAL_CLIENT = frozenset({"complete", "failed", "lost"})
_TERMINAL_DESIRED = frozenset({"stop", "evict"})


def short_id(alloc_id: str) -> str:
    return alloc_id[:SHORT_ID]


def is_terminal(alloc: JSON) -> bool:
    """Nomad's Allocation.TerminalStatus: stopped or evicted, or finished on the client."""
    return (alloc.get("DesiredStatus") in _TERMINAL_DESIRED
            or alloc.get("ClientStatus") in _TERMINAL_CLIENT)


def _latest(allocs: list[JSON]) -> JSON:
    return max(allocs, key=lambda a: (a.get("ModifyIndex", 0), a.get("ID", "")))


def pick_allocations(allocs: list[JSON]) -> list[JSON]:
    """The running allocations, oldest first, after the latest failed allocation of a
    job version that is running (a crash-looping instance Nomad replaced: its last words
    are what the developer is looking for); with nothing running, the most recent one."""
    running = sorted((a for a in allocs if not is_terminal(a)),
                     key=lambda a: (a.get("CreateIndex", 0), a.get("ID", "")))
    if not running:
        return [_latest(allocs)] if allocs else []
    versions = {a.get("JobVersion") for a in running}
    failed = [a for a in allocs if is_terminal(a) and a.get("ClientStatus") == "failed"
              and a.get("JobVersion") in versions]
    return ([_latest(failed)] if failed else []) + running


def last_lines(data: bytes, count: int) -> bytes:
    """The last `count` lines of `data`, as they are in the file (a partial last line
    counts as a line; a cut first line does not)."""
    if count <= 0 or not data:
        return b""
    body = data[:-1] if data.endswith(b"\n") else data
    cut = len(body)
    for _ in range(count):
        cut = body.rfind(b"\n", 0, cut)
        if cut < 0:
            return data
    return data[cut + 1:]


class FrameDecoder:
    """Nomad's framed log stream: JSON objects one after another (heartbeats are `{}`)."""

    def __init__(self) -> None:
        self._buffer = ""
        self._decoder = json.JSONDecoder()

    def feed(self, chunk: bytes) -> list[dict[str, Any]]:
        # Frames are ASCII JSON (the data is base64), so decoding per chunk is safe.
        self._buffer += chunk.decode("ascii", errors="replace")
        frames: list[dict[str, Any]] = []
        while True:
            text = self._buffer.lstrip()
            if not text:
                self._buffer = ""
                return frames
            try:
                obj, end = self._decoder.raw_decode(text)
            except json.JSONDecodeError:
                if len(text) > MAX_FRAME_BYTES:
                    raise BackendUnavailable("nomad", "log stream is not Nomad's framing") \
                        from None
                self._buffer = text  # an incomplete frame: wait for the rest
                return frames
            self._buffer = text[end:]
            if isinstance(obj, dict):
                frames.append(obj)


@dataclass
class Chunk:
    data: bytes
    offset: int | None  # the file offset after `data`, when Nomad said


@dataclass
class LogReader:
    """What the logs route needs from Nomad; built once in create_app."""

    nomad: NomadClient
    session: aiohttp.ClientSession
    address: str
    token: str | None
    namespace: str
    timeout_s: float
    relist_s: float
    closing: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    def from_settings(cls, nomad: NomadClient, session: aiohttp.ClientSession,
                      settings: ApiSettings) -> LogReader:
        return cls(nomad=nomad, session=session, address=settings.nomad_addr.rstrip("/"),
                   token=secret_value(settings.nomad_token),
                   namespace=settings.nomad_namespace, timeout_s=settings.nomad_timeout_s,
                   relist_s=settings.logs_relist_s)

    async def close(self) -> None:
        """Shutdown: followed streams end, so their requests finish."""
        self.closing.set()

    async def allocations(self, app: str) -> list[JSON]:
        try:
            return await self.nomad.get_job_allocations(app)
        except NotFoundError:
            return []
        except ShamanError as exc:
            log.warning("nomad allocations unreadable", app=app, error=str(exc))
            raise BackendUnavailable("nomad", "listing the app's allocations failed") from exc

    async def tail(self, alloc_id: str, stream: Stream, lines: int) -> bytes:
        """The last `lines` lines the task wrote to `stream` (b"" when none or gone)."""
        if lines <= 0:
            return b""
        want = min(MAX_TAIL_BYTES, max(MIN_TAIL_BYTES, lines * BYTES_PER_LINE))
        parts = [c.data async for c in self._read(alloc_id, stream, follow=False,
                                                  origin="end", offset=want)]
        return last_lines(b"".join(parts), lines)

    def follow(self, alloc_id: str, stream: Stream, *, origin: Literal["start", "end"],
               offset: int) -> AsyncIterator[Chunk]:
        """New output as it is written, from `offset` bytes before the end (origin end) or
        after the start (origin start); ends when Nomad ends the stream (task dead)."""
        return self._read(alloc_id, stream, follow=True, origin=origin, offset=offset)

    async def _read(self, alloc_id: str, stream: Stream, *, follow: bool,
                    origin: Literal["start", "end"], offset: int) -> AsyncIterator[Chunk]:
        params = {"task": TASK, "type": stream, "origin": origin, "offset": str(offset),
                  "follow": "true" if follow else "false", "namespace": self.namespace}
        headers = {"X-Nomad-Token": self.token} if self.token else {}
        timeout = aiohttp.ClientTimeout(total=None if follow else self.timeout_s,
                                        connect=self.timeout_s)
        url = f"{self.address}/v1/client/fs/logs/{alloc_id}"
        what = f"{stream} of {short_id(alloc_id)}"
        try:
            async with self.session.get(url, params=params, headers=headers,
                                        timeout=timeout) as resp:
                if resp.status == 404:
                    return  # the allocation (or its log) is gone: nothing to show
                if resp.status != 200:
                    body = (await resp.text())[:300]
                    log.warning("nomad log read refused", alloc=alloc_id, stream=stream,
                                status=resp.status, answer=body)
                    raise BackendUnavailable("nomad", f"reading the {what} log: "
                                                      f"HTTP {resp.status}")
                decoder = FrameDecoder()
                async for raw in resp.content.iter_any():
                    for frame in decoder.feed(raw):
                        data = frame.get("Data")
                        if not data:
                            continue  # a heartbeat or a file event
                        position = frame.get("Offset")
                        yield Chunk(base64.b64decode(data),
                                    position if isinstance(position, int) else None)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise BackendUnavailable("nomad", f"reading the {what} log: "
                                              f"{type(exc).__name__}") from exc
