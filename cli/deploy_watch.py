"""Waiting for one deploy to end, with its timeline shown live.

Two sources, each for what it is good at:

- the timeline (SSE, `GET /v1/events?app=`) makes the view live: build log lines, release,
  rollout progress per task group, the failure explanation, the automatic rollback. The
  stream is opened *before* the deploy is requested (`following()`), because a fresh
  connection only delivers new events; events are kept until the deploy id is known.
- the deploy record (`GET /v1/apps/{app}/deploys/{id}`) is the truth about the outcome. It
  is read every `poll_interval_s` and at once when an event suggests a change, so the
  outcome is right even when the stream is unavailable or lost an event.

A deploy is over when its record is settled (cli/outcome.py: a `failed` deploy whose
automatic rollback is still running is not). Events of the deploy's automatic rollback
(`<id>-rollback`) are shown with it. The watcher gives up after `timeout_s`, or when the
API stays unreachable for `unreachable_grace_s`, with exit code 4: the deploy goes on.

Not here: printing (a `DeployView` does that) and requesting the deploy (commands).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from cli.client import ShamanClient, StreamedEvent
from cli.errors import ApiUnreachable
from cli.outcome import EXIT_GAVE_UP, exit_code_for, is_settled
from cli.streams import follow_events

#: Events after which the record has probably changed: read it now rather than at the tick.
STATUS_HINTS = frozenset({
    "build.succeeded", "build.failed", "release.created", "rollout.healthy", "rollout.failed",
    "rollback.started", "rollback.succeeded", "rollback.failed", "deploy.finished",
    "deploy.superseded", "deploy.cancelled",
})
CONNECT_WAIT_S = 5.0


# How long a deploy whose record is terminal waits for its deploy.finished (and the
# rollout.failed before it) on the timeline.
FINISH_GRACE_S = 5.0

class DeployView(Protocol):
    def event(self, event: dict[str, Any]) -> None: ...

    def status(self, deploy: dict[str, Any]) -> None: ...

    def warning(self, message: str) -> None: ...

    def close(self) -> None: ...


@dataclass
class WatchResult:
    deploy: dict[str, Any]
    exit_code: int
    settled: bool
    failure: dict[str, Any] | None = None  # the rollout.failed or build.failed event
    rollback_failure: dict[str, Any] | None = None  # the rollback.failed event
    gave_up: str | None = None  # why the CLI stopped waiting, when it did
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def status(self) -> str | None:
        status = self.deploy.get("status")
        return str(status) if status is not None else None

    def reason(self) -> str | None:
        """Why it did not end healthy: the record's reason, else the failure event's."""
        reason = self.deploy.get("reason")
        if reason:
            return str(reason)
        for event in (self.rollback_failure, self.failure):
            if event is not None and event.get("reason"):
                return str(event["reason"])
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "deploy": self.deploy,
            "outcome": self.status if self.settled else None,
            "exit_code": self.exit_code,
            "reason": self.reason() if self.status != "healthy" else None,
            "failure": self.failure,
            "rollback_failure": self.rollback_failure,
            "gave_up": self.gave_up,
        }


class DeployWatcher:
    def __init__(
        self,
        client: ShamanClient,
        app: str,
        view: DeployView,
        *,
        timeout_s: float,
        poll_interval_s: float = 2.0,
        unreachable_grace_s: float = 60.0,
    ) -> None:
        self.client = client
        self.app = app
        self.view = view
        self.timeout_s = timeout_s
        self.poll_interval_s = poll_interval_s
        self.unreachable_grace_s = unreachable_grace_s
        self._queue: asyncio.Queue[StreamedEvent] = asyncio.Queue()
        self._stream_error: Exception | None = None

    @contextlib.asynccontextmanager
    async def following(self) -> AsyncIterator[DeployWatcher]:
        """Follow the app's timeline for the duration; returns once the stream is open."""
        connected = asyncio.Event()
        task = asyncio.create_task(self._pump(connected), name=f"timeline:{self.app}")
        try:
            # A stream that cannot be opened must not block the deploy: polling still works.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(connected.wait(), timeout=CONNECT_WAIT_S)
            if task.done() and self._stream_error is not None:
                self.view.warning(
                    f"live view unavailable ({self._stream_error}); waiting on the deploy record"
                )
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _pump(self, connected: asyncio.Event) -> None:
        try:
            async for event in follow_events(self.client, app=self.app, connected=connected):
                self._queue.put_nowait(event)
        except Exception as error:
            # The live view is a nicety; the deploy record still tells the outcome.
            self._stream_error = error

    async def watch(self, deploy_id: str, first: dict[str, Any] | None = None) -> WatchResult:
        """Show the deploy's events until its record is settled, or give up."""
        ours = {deploy_id, f"{deploy_id}-rollback"}
        result = WatchResult(deploy=dict(first or {"id": deploy_id}), exit_code=EXIT_GAVE_UP,
                             settled=False)
        self.view.status(result.deploy)
        deadline = time.monotonic() + self.timeout_s
        unreachable_since: float | None = None
        finished_status: str | None = None  # from deploy.finished, in case the record lags
        polls_after_finished = 0
        settled_at: float | None = None  # when the record was first seen terminal
        next_poll = time.monotonic()
        while True:
            now = time.monotonic()
            if now >= next_poll:
                try:
                    record = await self.client.request(
                        "GET", f"/v1/apps/{self.app}/deploys/{deploy_id}"
                    )
                    unreachable_since = None
                except ApiUnreachable as error:
                    unreachable_since = unreachable_since or now
                    if now - unreachable_since >= self.unreachable_grace_s:
                        result.gave_up = str(error)
                        return result
                    record = None
                if isinstance(record, dict):
                    if record.get("status") != result.deploy.get("status"):
                        self.view.status(record)
                    result.deploy = record
                    if is_settled(record):
                        result.settled = True
                        result.exit_code = exit_code_for(record.get("status"))
                        # The record turns terminal before the timeline has told why
                        # (rollout.failed, then deploy.finished, follow it): read on until
                        # deploy.finished, for at most FINISH_GRACE_S.
                        if finished_status is not None or (settled_at is not None and (
                                now - settled_at >= FINISH_GRACE_S)):
                            return result
                        settled_at = settled_at or now
                    if finished_status is not None:
                        polls_after_finished += 1
                        if polls_after_finished >= 3:
                            # The timeline said it is over; the record is behind. Believe
                            # the timeline rather than wait for nothing.
                            result.deploy = {**record, "status": finished_status}
                            result.settled = True
                            result.exit_code = exit_code_for(finished_status)
                            return result
                next_poll = time.monotonic() + self.poll_interval_s
            if time.monotonic() >= deadline:
                result.gave_up = (
                    f"gave up waiting after {self.timeout_s:.0f}s; the deploy is still "
                    f"{result.deploy.get('status', 'unknown')}"
                )
                return result
            wait_s = max(0.0, min(next_poll, deadline) - time.monotonic())
            try:
                streamed = await asyncio.wait_for(self._queue.get(), timeout=wait_s)
            except TimeoutError:
                continue
            event = streamed.data
            if event.get("deploy_id") not in ours:
                continue
            result.events.append(event)
            kind = event.get("type")
            if kind in ("rollout.failed", "build.failed") and event.get("deploy_id") == deploy_id:
                result.failure = event
            elif kind == "rollback.failed":
                result.rollback_failure = event
            elif kind == "deploy.finished" and event.get("deploy_id") == deploy_id:
                finished_status = str(event.get("status"))
            self.view.event(event)
            if settled_at is not None and finished_status is not None:
                return result
            if kind in STATUS_HINTS:
                next_poll = time.monotonic()
