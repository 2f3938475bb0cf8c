"""Where the watcher is in Nomad's event stream, and which replayed events to skip.

Nomad's `index` is inclusive: resuming at the last processed index sends that envelope
again, and two envelopes may share an Index. `StreamPosition` remembers the highest
Index fully handled and the (Topic, Key, Type) of the events handled at that Index, so a
replayed copy is recognised and skipped (nomad-api.md §7). An Index lower than the
position means Nomad's raft index went backwards (a restored cluster): the position is
reset to it, as Consul's blocking-query guidance says, and the caller relists.

The position is stored in KV `shaman_watcher` under `checkpoint` (single writer per
watcher copy; last writer wins is fine because replays are harmless: every event only
asks for a reconcile). This module holds the logic; stream.py does the I/O.
"""

from __future__ import annotations

from typing import Literal

import msgspec

# At most this many keys remembered for the current Index: one transaction rarely
# touches more, and forgetting some only costs a harmless extra reconcile.
MAX_SEEN = 4096


class Checkpoint(msgspec.Struct, kw_only=True):
    index: int = 0
    seen: list[str] = []  # "Topic|Key|Type" of events handled at `index`


def event_key(topic: str, key: str, type_: str) -> str:
    return f"{topic}|{key}|{type_}"


Verdict = Literal["new", "duplicate", "regressed"]


class StreamPosition:
    def __init__(self, checkpoint: Checkpoint | None = None) -> None:
        cp = checkpoint or Checkpoint()
        self.index = cp.index
        self._seen: set[str] = set(cp.seen)
        self.regressions = 0
        self.duplicates = 0

    def classify(self, index: int, topic: str, key: str, type_: str) -> Verdict:
        """Is this event new, a replayed copy, or proof that the index went backwards?"""
        if index > self.index:
            return "new"
        if index == self.index:
            if event_key(topic, key, type_) in self._seen:
                self.duplicates += 1
                return "duplicate"
            return "new"
        return "regressed"

    def reset(self, index: int) -> None:
        """Nomad's index went backwards: forget everything above `index`."""
        self.regressions += 1
        self.index = index
        self._seen = set()

    def mark(self, index: int, topic: str, key: str, type_: str) -> None:
        """Record one event as handled."""
        if index > self.index:
            self.index = index
            self._seen = set()
        if len(self._seen) < MAX_SEEN:
            self._seen.add(event_key(topic, key, type_))

    def checkpoint(self) -> Checkpoint:
        return Checkpoint(index=self.index, seen=sorted(self._seen))
