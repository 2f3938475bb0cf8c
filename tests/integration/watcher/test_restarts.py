"""A watcher killed mid-rollout, two copies at once, a cut event stream: still exactly one
outcome and at most one rollback (the CAS on the deploy record, deterministic message
ids and the notes' outbox make this true; these tests check it on real servers)."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from shared.commands import Rollback

from .conftest import Harness, control
from .waiting import stays, wait_for


async def _rollbacks(h: Harness) -> list[Rollback]:
    return [c for c in await h.commands() if isinstance(c, Rollback)]


async def _assert_once(h: Harness, deploy_id: str) -> None:
    """One outcome on the timeline, one rollback command, and it stays that way."""

    async def exactly_once() -> bool:
        types = [e.__struct_config__.tag for e in await h.events() if e.deploy_id == deploy_id]
        return (types.count("rollout.failed") == 1 and types.count("rollback.started") == 1
                and len(await _rollbacks(h)) == 1)

    await wait_for(exactly_once, 20, "one rollout.failed, one rollback.started, one Rollback")
    await stays(exactly_once, 1.5, "still exactly once after relists")


async def _process_exits(proc: object, timeout: float = 20.0) -> int:
    async def exited() -> int | None:
        return proc.poll()  # type: ignore[attr-defined, no-any-return]

    return await wait_for(exited, timeout, "the watcher process to exit")


@pytest.mark.parametrize("point", ["after_outcome", "after_rollback_command"])
async def test_killed_at_a_crashpoint_the_next_watcher_finishes_once(
    harness: Harness, tmp_path: Path, point: str
) -> None:
    h = harness
    await h.seed_app(last_healthy=1, current=2, active="d-crash")
    await h.seed_deploy("d-crash", 2)
    h.behave(job_version=0, crash_on_start=1)
    first = h.spawn_watcher(tmp_path / "w1.log", crashpoint=point)
    h.register("d-crash", 2)
    assert await _process_exits(first) == 137, (tmp_path / "w1.log").read_text()[-3000:]
    deploy = await h.deploy("d-crash")
    assert deploy.status == "failed" and deploy.rollback is not None  # written before the crash

    h.spawn_watcher(tmp_path / "w2.log")
    await _assert_once(h, "d-crash")
    [command] = await _rollbacks(h)
    assert command.deploy_id == "d-crash-rollback"


async def test_sigkill_mid_rollout_and_two_copies_give_one_outcome(
    harness: Harness, tmp_path: Path
) -> None:
    h = harness
    await h.seed_app(last_healthy=1, current=2, active="d-kill")
    await h.seed_deploy("d-kill", 2)
    # slow to start, then crash: time to kill the watcher while the rollout runs
    h.behave(job_version=0, start_delay_s=0.8, crash_on_start=1)
    first = h.spawn_watcher(tmp_path / "w1.log")
    h.register("d-kill", 2)
    await h.wait_event("rollout.progress", timeout=20)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    assert (await h.deploy("d-kill")).status == "deploying"

    # two copies at once from now on: a process and one in this test
    h.spawn_watcher(tmp_path / "w2.log")
    await h.start_watcher()
    deploy = await h.wait_status("d-kill", "failed", timeout=30)
    assert deploy.reason is not None and "exited with code 1" in deploy.reason
    await _assert_once(h, "d-kill")


async def test_cut_event_streams_still_give_one_outcome(harness: Harness) -> None:
    h = harness
    await h.seed_app(last_healthy=None, current=1, active="d-cut")
    await h.seed_deploy("d-cut", 1)
    h.behave(start_delay_s=0.3)
    app = await h.start_watcher()
    follower = app.watcher.follower
    h.register("d-cut", 1, count=3, min_healthy_s=0.3)
    # cut every subscription and drop Nomad's event buffer while the rollout runs
    for _ in range(3):
        connects = follower.connects
        control(h.nomad_addr, "POST", "events/cut")
        control(h.nomad_addr, "POST", "events/drop-buffer")

        async def reconnected(before: int = connects) -> bool:
            return follower.connects > before

        await wait_for(reconnected, 10, "the watcher to resubscribe")
    await h.wait_status("d-cut", "healthy", timeout=30)

    async def exactly_once() -> bool:
        types = [e.__struct_config__.tag for e in await h.events()]
        return types.count("rollout.healthy") == 1 and types.count("deploy.finished") == 1

    await wait_for(exactly_once, 10, "one rollout.healthy and one deploy.finished")
    await stays(exactly_once, 1.0, "still exactly once")


async def test_restart_resumes_from_the_checkpoint(harness: Harness) -> None:
    h = harness
    await h.seed_app(last_healthy=None, current=1, active="d-cp")
    await h.seed_deploy("d-cp", 1)
    app = await h.start_watcher()
    h.register("d-cp", 1)
    await h.wait_status("d-cp", "healthy")

    async def stored() -> int | None:
        entry = await app.watcher.follower.checkpoints.get("checkpoint")
        return entry.value.index if entry and entry.value.index > 0 else None

    index = await wait_for(stored, 10, "a stored checkpoint")
    await h.close()
    second = await h.start_watcher()
    assert second.watcher.follower.position.index >= index
    await asyncio.wait_for(second.watcher.queue.wait_idle(), 10)
    types = [e.__struct_config__.tag for e in await h.events()]
    assert types.count("rollout.healthy") == 1
