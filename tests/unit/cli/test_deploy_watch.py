"""The deploy watcher's decisions (when it is over, which code, which reason), on scripted
records and events from an in-memory stand-in for the API client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from cli.client import StreamedEvent
from cli.deploy_watch import DeployWatcher
from cli.errors import ApiUnreachable

D = "d-0193f0a1c2e3aa"
PENDING_ROLLBACK = {"requested_at": "t", "reason": "exit 1", "outcome": None}


class ScriptedClient:
    """Answers each GET of the deploy with the next record of a script (the last repeats)
    and streams whatever the test puts on `events_queue`."""

    api_url = "http://scripted"

    def __init__(self, records: list[dict[str, Any] | Exception]) -> None:
        self.records = records
        self.polls = 0
        self.events_queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._seq = 0

    async def request(self, method: str, path: str, **_: Any) -> Any:
        assert (method, path) == ("GET", f"/v1/apps/hello/deploys/{D}")
        record = self.records[min(self.polls, len(self.records) - 1)]
        self.polls += 1
        if isinstance(record, Exception):
            raise record
        return {"id": D, **record}

    async def events(
        self, *, app: str | None, types: list[str] | None = None,
        last_event_id: str | None = None, connected: asyncio.Event | None = None,
        **_: Any,
    ) -> AsyncIterator[StreamedEvent]:
        assert app == "hello"
        if connected is not None:
            connected.set()
        while True:
            event = await self.events_queue.get()
            self._seq += 1
            yield StreamedEvent(id=str(self._seq), data=event)


class RecordingView:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.statuses: list[str] = []
        self.warnings: list[str] = []

    def event(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def status(self, deploy: dict[str, Any]) -> None:
        self.statuses.append(str(deploy.get("status")))

    def warning(self, message: str) -> None:
        self.warnings.append(message)

    def close(self) -> None:
        return None


def ev(kind: str, deploy_id: str = D, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "app": "hello", "deploy_id": deploy_id, "time": "t", **fields}


async def watch(client: ScriptedClient, view: RecordingView, *, events: list[dict[str, Any]],
                timeout_s: float = 30.0, grace_s: float = 30.0) -> Any:
    watcher = DeployWatcher(client, "hello", view, timeout_s=timeout_s,  # type: ignore[arg-type]
                            poll_interval_s=0.01, unreachable_grace_s=grace_s)
    async with watcher.following():
        for event in events:
            client.events_queue.put_nowait(event)
        return await watcher.watch(D, {"id": D, "status": "pending"})


async def test_healthy_deploy_exits_0_and_shows_only_its_own_events() -> None:
    client = ScriptedClient([{"status": "building"}, {"status": "deploying"},
                             {"status": "deploying"}, {"status": "healthy", "release": 2}])
    view = RecordingView()
    result = await watch(client, view, events=[
        ev("build.log", lines=["STEP 1/2"]),
        ev("build.log", deploy_id="d-someone-else", lines=["not ours"]),
        ev("rollout.progress", groups=[{"name": "web", "desired": 1, "healthy": 1}]),
    ])
    assert result.exit_code == 0
    assert result.status == "healthy" and result.settled
    assert result.to_json()["outcome"] == "healthy"
    assert result.to_json()["reason"] is None
    assert "d-someone-else" not in {e["deploy_id"] for e in view.events}
    assert view.statuses[:2] == ["pending", "building"]


async def test_failed_then_rolled_back_waits_for_the_rollback_and_exits_2() -> None:
    failed = ev("rollout.failed", release=2, reason="task app exited with code 1",
                allocations=[{"alloc_id": "abc", "task": "app", "summary": "exited with code 1",
                              "exit_code": 1, "log_tail": ["boom"]}])
    client = ScriptedClient([
        {"status": "deploying", "release": 2},
        {"status": "failed", "release": 2, "reason": "task app exited with code 1",
         "rollback": PENDING_ROLLBACK},
        {"status": "failed", "release": 2, "reason": "task app exited with code 1",
         "rollback": PENDING_ROLLBACK},
        {"status": "rolled_back", "release": 2, "reason": "task app exited with code 1",
         "rollback": {**PENDING_ROLLBACK, "outcome": "succeeded"}},
    ])
    view = RecordingView()
    result = await watch(client, view, events=[
        failed,
        ev("rollback.started", to_release=1, automatic=True, reason="exit 1"),
        ev("rollout.progress", deploy_id=f"{D}-rollback", groups=[{"name": "web"}]),
        ev("rollback.succeeded", to_release=1, new_release=3),
    ])
    assert result.exit_code == 2
    assert result.status == "rolled_back"
    assert result.failure == failed
    assert result.reason() == "task app exited with code 1"
    assert f"{D}-rollback" in {e["deploy_id"] for e in view.events}  # the rollback is shown
    assert "failed" in view.statuses  # it did not stop at the intermediate failed


async def test_failed_without_rollback_exits_1_with_the_failure_event_reason() -> None:
    client = ScriptedClient([{"status": "deploying"}, {"status": "failed", "reason": None}])
    failed = ev("build.failed", reason="step 3/4 failed: RUN make: exit status 2",
                step="RUN make", log_tail=["make: ***"])
    result = await watch(client, RecordingView(), events=[failed])
    assert result.exit_code == 1
    assert result.reason() == "step 3/4 failed: RUN make: exit status 2"


async def test_superseded_exits_3() -> None:
    client = ScriptedClient([{"status": "building"},
                             {"status": "superseded", "superseded_by": "d-newer"}])
    result = await watch(client, RecordingView(), events=[])
    assert result.exit_code == 3


async def test_a_lagging_record_yields_to_deploy_finished() -> None:
    client = ScriptedClient([{"status": "deploying"}])  # never catches up
    result = await watch(client, RecordingView(), events=[
        ev("deploy.finished", status="healthy", release=4)])
    assert result.exit_code == 0
    assert result.deploy["status"] == "healthy"


async def test_timeout_gives_up_with_4_and_says_where_it_was() -> None:
    client = ScriptedClient([{"status": "deploying"}])
    result = await watch(client, RecordingView(), events=[], timeout_s=0.1)
    assert result.exit_code == 4
    assert not result.settled
    assert result.gave_up is not None and "still deploying" in result.gave_up
    assert result.to_json()["outcome"] is None


async def test_api_gone_for_longer_than_the_grace_gives_up_with_4() -> None:
    client = ScriptedClient([{"status": "deploying"},
                             ApiUnreachable("cannot reach the Shaman API at x")])
    result = await watch(client, RecordingView(), events=[], grace_s=0.05)
    assert result.exit_code == 4
    assert result.gave_up == "cannot reach the Shaman API at x"


async def test_a_short_api_outage_is_ridden_out() -> None:
    gone = ApiUnreachable("cannot reach")
    client = ScriptedClient([{"status": "deploying"}, gone, gone, {"status": "healthy"}])
    result = await watch(client, RecordingView(), events=[])
    assert result.exit_code == 0
