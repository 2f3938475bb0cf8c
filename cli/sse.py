"""An incremental Server-Sent Events parser (the WHATWG "event stream" grammar).

Feed it the bytes of a `text/event-stream` body in whatever chunks the network delivers;
it yields one `SseEvent` per dispatched event. It handles `\\n`, `\\r\\n` and `\\r` line ends
(also when a `\\r\\n` pair is split across chunks), multi-line `data:`, comment lines
(`: keep-alive`; yielded as `SseComment` when asked for), fields without a colon, the one
optional space after the colon, and the `id:` field that persists as the last event id
(what a reconnect sends as `Last-Event-ID`).

Not here: any I/O or reconnecting (cli/client.py and cli/streams.py do that), nor decoding
the `data` payload (the timeline's events are JSON objects; cli/timeline.py reads them).
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator
from dataclasses import dataclass

_LINE_END = re.compile(r"[\r\n]")


@dataclass(frozen=True)
class SseEvent:
    data: str
    event: str = "message"
    id: str | None = None  # the last event id in force when this event was dispatched


@dataclass(frozen=True)
class SseComment:
    """A comment line (`: text`), yielded in stream order only by `SseParser(comments=True)`
    (the Shaman API marks the end of a replay with `: replay-complete`)."""

    text: str


class SseParser:
    """Turns a byte stream into events; keep one parser per connection."""

    def __init__(self, *, comments: bool = False) -> None:
        self._comments = comments
        self._buffer = ""
        self._pending_cr = False  # the previous chunk ended in "\r": a "\n" next is its pair
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._started = False
        self._data: list[str] = []
        self._event = ""
        self.last_event_id: str | None = None
        self.retry_ms: int | None = None  # the server's requested reconnection delay

    def feed(self, chunk: bytes) -> Iterator[SseEvent | SseComment]:
        """Parse a chunk; yield every event it completes (and comments, if asked)."""
        text = self._decode(chunk)
        if self._pending_cr and text:
            text = text.removeprefix("\n")
            self._pending_cr = False
        self._buffer += text
        while True:
            line, found = self._next_line()
            if not found:
                return
            event = self._process_line(line)
            if event is not None:
                yield event

    def _decode(self, chunk: bytes) -> str:
        # The incremental decoder keeps a UTF-8 sequence that straddles two chunks.
        text = self._decoder.decode(chunk)
        if not self._started and text:
            self._started = True
            text = text.removeprefix("\ufeff")  # a byte order mark may open the stream only
        return text

    def _next_line(self) -> tuple[str, bool]:
        match = _LINE_END.search(self._buffer)
        if match is None:
            return "", False
        index = match.start()
        line = self._buffer[:index]
        if self._buffer[index] == "\n":
            self._buffer = self._buffer[index + 1 :]
        elif index + 1 < len(self._buffer):
            skip = 2 if self._buffer[index + 1] == "\n" else 1
            self._buffer = self._buffer[index + skip :]
        else:
            # "\r" at the very end: the line is complete, its "\n" may come in the next chunk.
            self._buffer = ""
            self._pending_cr = True
        return line, True

    def _process_line(self, line: str) -> SseEvent | SseComment | None:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            # A comment, e.g. the server's keep-alive.
            return SseComment(line[1:].strip()) if self._comments else None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self.last_event_id = value
        elif name == "retry" and value.isdigit():
            self.retry_ms = int(value)
        # Unknown field names are ignored, as the specification says.
        return None

    def _dispatch(self) -> SseEvent | None:
        data, event = self._data, self._event
        self._data, self._event = [], ""
        if not data:
            return None  # an id- or event-only block dispatches nothing
        return SseEvent(data="\n".join(data), event=event or "message", id=self.last_event_id)
