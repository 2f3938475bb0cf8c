"""The watcher against a real nats-server and localnomad (simulated runtime).

Jobs are registered directly with python-nomad, carrying the Meta the scheduler
renders; app and deploy records are seeded as the api and the scheduler write them.
No scheduler runs: where a rollback is executed, the test plays the scheduler.
"""

from __future__ import annotations

from shared.commands import Rollback
from shared.events import (
    DeployFinished,
    RollbackStarted,
    RollbackSucceeded,
    RolloutFailed,
    RolloutHealthy,
    RolloutProgress,
)

from .conftest import Harness
from .waiting import stays, wait_for


async def test_healthy_rollout_makes_the_deploy_healthy(harness: Harness) -> None:
    h = harness
    await h.seed_app(last_healthy=None, current=1, active="d-ok")
    await h.seed_deploy("d-ok", 1)
    await h.start_watcher()
    h.register("d-ok", 1, count=2)

    deploy = await h.wait_status("d-ok", "healthy")
    assert deploy.nomad_deployment_id
    [healthy] = await h.wait_event("rollout.healthy")
    assert isinstance(healthy, RolloutHealthy)
    assert healthy.deploy_id == "d-ok" and healthy.release == 1
    [finished] = await h.wait_event("deploy.finished")
    assert isinstance(finished, DeployFinished) and finished.status == "healthy"
    app = await h.app_record()
    assert app.last_healthy_release == 1 and app.state == "running"
    progress = [e for e in await h.events("rollout.progress") if isinstance(e, RolloutProgress)]
    assert progress and progress[-1].percent == 100
    assert progress[-1].groups[0].desired == 2
    # each percentage once: progress is published only when it changes
    assert len({(p.percent, p.groups[0].placed, p.groups[0].healthy) for p in progress}) == len(
        progress)


async def test_task_exiting_1_fails_fast_and_rolls_back_once(harness: Harness) -> None:
    h = harness
    await h.seed_app(last_healthy=1, current=2, active="d-bad")
    await h.seed_deploy("d-bad", 2)
    h.behave(job_version=0, crash_on_start=1)
    await h.start_watcher()
    h.register("d-bad", 2)  # job version 0 here: crashes on start

    deploy = await h.wait_status("d-bad", "failed")
    assert deploy.reason is not None and "exited with code 1" in deploy.reason
    assert deploy.rollback is not None and deploy.rollback.to_release == 1
    [failed] = await h.wait_event("rollout.failed")
    assert isinstance(failed, RolloutFailed)
    assert "exited with code 1" in failed.reason
    assert failed.allocations and failed.allocations[0].exit_code == 1
    assert any("Terminated" in line for line in failed.allocations[0].task_events)
    [started] = await h.wait_event("rollback.started")
    assert isinstance(started, RollbackStarted) and started.to_release == 1

    async def one_rollback() -> list[Rollback] | None:
        cmds = [c for c in await h.commands() if isinstance(c, Rollback)]
        return cmds or None

    [command] = await wait_for(one_rollback, 10, "the rollback command")
    assert command.deploy_id == "d-bad-rollback" and command.automatic
    assert command.failed_deploy_id == "d-bad" and command.to_version == 1
    # the scheduler executes it: a rollback deploy and a job version with v1's content
    await h.seed_deploy("d-bad-rollback", 3, kind="rollback", automatic=True,
                        rollback_for="d-bad")
    h.register("d-bad-rollback", 3, marker="1")

    rolled = await h.wait_status("d-bad", "rolled_back")
    assert rolled.rollback is not None and rolled.rollback.outcome == "succeeded"
    assert (await h.deploy("d-bad-rollback")).status == "healthy"
    [succeeded] = await h.wait_event("rollback.succeeded")
    assert isinstance(succeeded, RollbackSucceeded) and succeeded.new_release == 3
    finished = [e for e in await h.wait_event("deploy.finished", count=2)
                if isinstance(e, DeployFinished)]
    assert sorted((f.deploy_id, f.status) for f in finished) == [
        ("d-bad", "rolled_back"), ("d-bad-rollback", "healthy")]
    await h.wait_app("last healthy release 3", lambda a: a.last_healthy_release == 3)

    async def still_one() -> bool:
        return len([c for c in await h.commands() if isinstance(c, Rollback)]) == 1

    await stays(still_one, 1.5, "exactly one rollback command (relists included)")
