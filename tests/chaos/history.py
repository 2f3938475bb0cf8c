"""A Jepsen-style history: every operation's invoke and completion, with timestamps.

Each client call is one `Op`: it is *invoked* (time, process, function, arguments) and
then *completes* exactly once as

- `ok`: the server answered 2xx (for a deploy: 202 accepted, or 200 replayed);
- `fail`: a definite refusal (4xx, or 503: the api promises nothing was queued);
- `info`: the outcome is unknown (connection reset, timeout, the api died mid-call).

`info` is kept apart from `fail` (reliability.md §7): an unknown deploy may or may not
exist, and the checker must not count it as lost or as failed. Faults are recorded in the
same history as operations of the `nemesis` process, so the checker knows, for example,
when NATS was down. `dump()` writes the whole history as JSON lines, one record per
invoke/complete/nemesis event, which is what a failing test leaves behind to replay.

Not here: issuing calls (client.py) or judging them (invariants.py).
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

Outcome = Literal["ok", "fail", "info"]
#: Calls that start a deploy (their 202 body is the deploy).
DEPLOY_CALLS = frozenset({"deploy", "set_config", "put_secrets", "rollback"})


@dataclass
class Op:
    index: int
    process: str
    f: str  # what was called: deploy, create_app, put_secrets, ...
    app: str | None
    value: dict[str, Any]
    invoke_t: float  # seconds since the history started (monotonic)
    invoke_wall: datetime
    outcome: Outcome | None = None
    complete_t: float | None = None
    status: int | None = None  # HTTP status when there was an answer
    body: Any = None
    text: str = ""  # the raw response body (secret sinks are grepped in it)
    error: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def deploy_id(self) -> str | None:
        if isinstance(self.body, dict) and isinstance(self.body.get("id"), str):
            return str(self.body["id"])
        return None

    @property
    def accepted(self) -> bool:
        """A deploy the api took responsibility for (202 new, or 200 replay)."""
        return (self.f in DEPLOY_CALLS and self.outcome == "ok" and self.status in (200, 202)
                and self.deploy_id is not None)


@dataclass
class NemesisEvent:
    t: float
    wall: datetime
    action: str  # "kill", "pause", "resume", "start", "fault", "heal", ...
    target: str
    detail: str = ""


class History:
    def __init__(self) -> None:
        self._t0 = time.monotonic()
        self._index = itertools.count()
        self.ops: list[Op] = []
        self.nemesis: list[NemesisEvent] = []

    def now(self) -> float:
        return time.monotonic() - self._t0

    def invoke(self, process: str, f: str, app: str | None, value: dict[str, Any]) -> Op:
        op = Op(next(self._index), process, f, app, value, self.now(), datetime.now(UTC))
        self.ops.append(op)
        return op

    def complete(
        self, op: Op, outcome: Outcome, *, status: int | None = None, body: Any = None,
        text: str = "", error: str | None = None, headers: dict[str, str] | None = None,
    ) -> Op:
        assert op.outcome is None, f"op {op.index} completed twice"
        op.outcome, op.complete_t = outcome, self.now()
        op.status, op.body, op.text, op.error = status, body, text, error
        op.headers = dict(headers or {})
        return op

    def fault(self, action: str, target: str, detail: str = "") -> NemesisEvent:
        event = NemesisEvent(self.now(), datetime.now(UTC), action, target, detail)
        self.nemesis.append(event)
        return event

    def windows(self, start: str, end: str, target: str) -> list[tuple[float, float]]:
        """(from, to) pairs between a nemesis `start` and the next `end` on `target`."""
        out: list[tuple[float, float]] = []
        opened: float | None = None
        for event in self.nemesis:
            if event.target != target:
                continue
            if event.action == start and opened is None:
                opened = event.t
            elif event.action == end and opened is not None:
                out.append((opened, event.t))
                opened = None
        if opened is not None:
            out.append((opened, self.now()))
        return out

    def deploys(self, apps: set[str] | None = None) -> list[Op]:
        return [op for op in self.ops
                if op.f in DEPLOY_CALLS and (apps is None or op.app in apps)]

    def dump(self, path: Path) -> None:
        """JSON lines: invoke and completion of every op, and every nemesis event."""
        records: list[tuple[float, dict[str, Any]]] = []
        for op in self.ops:
            records.append((op.invoke_t, {
                "type": "invoke", "index": op.index, "time": round(op.invoke_t, 4),
                "process": op.process, "f": op.f, "app": op.app, "value": op.value,
            }))
            if op.outcome is not None and op.complete_t is not None:
                records.append((op.complete_t, {
                    "type": op.outcome, "index": op.index, "time": round(op.complete_t, 4),
                    "process": op.process, "f": op.f, "app": op.app, "status": op.status,
                    "deploy_id": op.deploy_id, "error": op.error,
                }))
        for event in self.nemesis:
            records.append((event.t, {
                "type": "nemesis", "time": round(event.t, 4), "action": event.action,
                "target": event.target, "detail": event.detail,
            }))
        records.sort(key=lambda r: r[0])
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w") as out:
            for _, record in records:
                out.write(json.dumps(record, default=str) + "\n")
