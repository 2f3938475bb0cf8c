"""The event broker behind `GET /v1/event/stream`: an in-memory ring of envelopes.

One envelope per state-store transaction part (so two envelopes can share an Index),
the last `size` envelopes kept (Nomad's event_buffer_size, default 100), nothing
persisted. Each event is encoded once at publish time; a subscriber's line is the
concatenation of the events its topics match, and the all-matching line is cached,
so a write to many subscribers costs one encode. Publishing hands each envelope to
every open stream at once (no per-subscriber queues or tasks); a new stream replays
from the ring by sequence number. HTTP framing lives in http_api.py.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

_encoder = msgspec.json.Encoder()


@dataclass(slots=True)
class Event:
    topic: str
    type: str
    key: str
    namespace: str
    filter_keys: list[str] | None
    payload: dict[str, Any]
    encoded: bytes = b""

    def encode(self, index: int) -> None:
        self.encoded = _encoder.encode({
            "Topic": self.topic, "Type": self.type, "Key": self.key,
            "Namespace": self.namespace, "FilterKeys": self.filter_keys,
            "Index": index, "Payload": self.payload,
        })
        self.payload = {}  # the bytes are what is kept; drop the object references


@dataclass(slots=True)
class Envelope:
    index: int
    seq: int
    events: list[Event]
    _all_line: bytes | None = None

    def line_for(self, sub: Subscription) -> bytes | None:
        if sub.matches_everything:
            if self._all_line is None:
                self._all_line = self._frame(self.events)
            return self._all_line
        chosen = [e for e in self.events if sub.matches(e)]
        if not chosen:
            return None  # Nomad never sends an empty envelope
        if len(chosen) == len(self.events):
            return self.line_for_all()
        return self._frame(chosen)

    def line_for_all(self) -> bytes:
        if self._all_line is None:
            self._all_line = self._frame(self.events)
        return self._all_line

    def _frame(self, events: list[Event]) -> bytes:
        return (b'{"Index":' + str(self.index).encode() + b',"Events":['
                + b",".join(e.encoded for e in events) + b"]}\n")


@dataclass
class Subscription:
    """Parsed `topic=` and `namespace=` query parameters."""

    topics: dict[str, set[str]] = field(default_factory=dict)
    namespace: str = "default"

    @property
    def matches_everything(self) -> bool:
        return self.namespace == "*" and "*" in self.topics.get("*", set())

    def matches(self, ev: Event) -> bool:
        if self.namespace != "*" and ev.namespace not in ("", self.namespace):
            return False
        keys = self.topics.get(ev.topic)
        wildcard = self.topics.get("*")
        for ks in (keys, wildcard):
            if ks is None:
                continue
            if "*" in ks or ev.key in ks:
                return True
            if ev.filter_keys and any(k in ks for k in ev.filter_keys):
                return True
        return False


def parse_topics(values: list[str]) -> dict[str, set[str]]:
    """`Job:web`, `Deployment`, `*` -> {topic: keys}. Raises ValueError on a bad topic."""
    topics: dict[str, set[str]] = {}
    if not values:
        return {"*": {"*"}}
    for raw in values:
        parts = raw.split(":")
        if len(parts) > 2 or not parts[0]:
            raise ValueError(f"Invalid topic query: {raw}")
        key = parts[1] if len(parts) == 2 and parts[1] else "*"
        topics.setdefault(parts[0], set()).add(key)
    return topics


class Sink(Protocol):
    """An open stream: gets each envelope synchronously as it is published."""

    def deliver(self, env: Envelope) -> None: ...

    def close(self) -> None: ...


class EventBroker:
    def __init__(self, size: int = 100) -> None:
        self.size = size
        self.buffer: deque[Envelope] = deque(maxlen=size)
        self.last_seq = 0
        self.sinks: set[Sink] = set()

    def publish(self, index: int, events: list[Event]) -> None:
        if not events:
            return
        for ev in events:
            ev.encode(index)
        self.last_seq += 1
        env = Envelope(index=index, seq=self.last_seq, events=events)
        self.buffer.append(env)
        # Written straight to every open stream's transport: no queue, no task per
        # subscriber, one encode for all of them.
        for sink in list(self.sinks):
            sink.deliver(env)

    def start_cursor(self, index: int) -> int:
        """The seq after which a subscription starting at `index` reads (inclusive resume)."""
        if not self.buffer:
            return self.last_seq
        if index <= 0:
            return self.buffer[0].seq - 1
        for env in self.buffer:
            if env.index >= index:
                return env.seq - 1  # older than the oldest silently starts at the oldest
        return self.last_seq

    def since(self, cursor: int) -> list[Envelope]:
        if not self.buffer or self.buffer[-1].seq <= cursor:
            return []
        first = self.buffer[0].seq
        start = max(0, cursor + 1 - first)
        return list(self.buffer)[start:]

    def drop_buffer(self) -> None:
        """As after a server restart: the ring is empty, indexes go on."""
        self.buffer.clear()

    def cut_connections(self) -> None:
        for sink in list(self.sinks):
            sink.close()
