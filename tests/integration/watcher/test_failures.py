"""Failed rollouts: why, and what the watcher does about it (one rollback at most)."""

from __future__ import annotations

from shared.commands import Rollback
from shared.events import DeployFinished, RollbackFailed, RolloutFailed

from .conftest import Harness, control
from .waiting import stays, wait_for


async def _rollbacks(h: Harness) -> list[Rollback]:
    return [c for c in await h.commands() if isinstance(c, Rollback)]


async def test_failing_check_is_explained_with_its_output(harness: Harness) -> None:
    h = harness
    await h.seed_app(last_healthy=1, current=2, active="d-chk")
    await h.seed_deploy("d-chk", 2)
    h.behave(checks="failing")
    await h.start_watcher()
    h.register("d-chk", 2, checks=True, healthy_deadline_s=1.5, progress_deadline_s=2.0)

    await h.wait_status("d-chk", "failed")
    [failed] = await h.wait_event("rollout.failed")  # the reason is refined before it
    deploy = await h.deploy("d-chk")
    assert deploy.reason is not None and "health check" in deploy.reason
    assert "simulated check failing" in deploy.reason
    assert isinstance(failed, RolloutFailed)
    assert failed.allocations and failed.allocations[0].check_output == "simulated check failing"
    assert (await wait_for(lambda: _rollbacks(h), 10, "rollback"))[0].to_version == 1


async def test_progress_deadline_stall_ends_failed(harness: Harness) -> None:
    h = harness
    await h.seed_app(auto_rollback=False, active="d-stall")
    await h.seed_deploy("d-stall", 2)
    h.behave(hang=True)  # the task never starts
    await h.start_watcher()
    h.register("d-stall", 2, healthy_deadline_s=0.5, progress_deadline_s=1.0)

    deploy = await h.wait_status("d-stall", "failed")
    assert deploy.reason is not None
    assert "progress deadline" in deploy.reason or "healthy" in deploy.reason
    assert "automatic rollback is off" in deploy.reason
    [finished] = await h.wait_event("deploy.finished")
    assert isinstance(finished, DeployFinished) and finished.status == "failed"
    assert await _rollbacks(h) == []


async def test_platform_deadline_fails_what_nomad_leaves_running(harness: Harness) -> None:
    h = harness
    await h.seed_app(auto_rollback=False, active="d-stuck")
    await h.seed_deploy("d-stuck", 2)
    h.behave(hang=True)
    # Nomad's deployment watcher stuck (hashicorp/nomad#11267): nothing fails it on time.
    control(h.nomad_addr, "POST", "watcher", {"paused": True})
    try:
        await h.start_watcher(deadline_grace_s=0.5)
        h.register("d-stuck", 2, healthy_deadline_s=0.5, progress_deadline_s=1.0)
        deploy = await h.wait_status("d-stuck", "failed", timeout=20)
    finally:
        control(h.nomad_addr, "POST", "watcher", {"paused": False})
    assert deploy.reason is not None and "Shaman's own deadline" in deploy.reason
    latest = h.nomad.job.get_deployment(h.app)
    assert latest["Status"] == "failed"


async def test_auto_rollback_off_ends_failed_and_leaves_nomad_alone(harness: Harness) -> None:
    h = harness
    await h.seed_app(auto_rollback=False, active="d-off")
    await h.seed_deploy("d-off", 2)
    h.behave(crash_on_start=3)
    await h.start_watcher()
    h.register("d-off", 2)

    deploy = await h.wait_status("d-off", "failed")
    assert deploy.rollback is None
    assert deploy.reason is not None and "exited with code 3" in deploy.reason
    await h.wait_event("deploy.finished")
    await h.wait_app("state failed", lambda a: a.state == "failed")

    async def nothing_rolled_back() -> bool:
        return await _rollbacks(h) == [] and not await h.events("rollback.started")

    await stays(nothing_rolled_back, 1.5, "no rollback for an app with auto_rollback off")


async def test_image_that_cannot_be_pulled_fails_at_once(harness: Harness) -> None:
    h = harness
    await h.seed_app(active="d-img")
    await h.seed_deploy("d-img", 2)
    h.behave(start_error="Failed to pull `registry.local/x@sha256:00`: manifest unknown")
    await h.start_watcher(fail_fast_restarts=5)  # a count would not trigger: the kind does
    h.register("d-img", 2)

    deploy = await h.wait_status("d-img", "failed")
    assert deploy.reason is not None and "image could not be pulled" in deploy.reason
    assert "no restart can fix" in deploy.reason
    assert len(await wait_for(lambda: _rollbacks(h), 10, "rollback")) == 1


async def test_rollback_that_fails_too_ends_failed_with_both_reasons(harness: Harness) -> None:
    h = harness
    await h.seed_app(active="d-two")
    await h.seed_deploy("d-two", 2)
    h.behave(crash_on_start=1)  # every version crashes: the rollback target too
    await h.start_watcher()
    h.register("d-two", 2)
    await h.wait_status("d-two", "failed")
    await wait_for(lambda: _rollbacks(h), 10, "rollback command")
    # the scheduler executes it; the restored release crashes as well
    await h.seed_deploy("d-two-rollback", 3, kind="rollback", automatic=True,
                        rollback_for="d-two")
    h.register("d-two-rollback", 3, marker="1")

    await h.wait_status("d-two-rollback", "failed")

    async def settled() -> bool:
        d = await h.deploy("d-two")
        return bool(d.rollback and d.rollback.outcome == "failed")

    await wait_for(settled, 20, "the original deploy to record the failed rollback")
    original = await h.deploy("d-two")
    assert original.status == "failed"
    assert original.reason is not None
    assert original.reason.count("exited with code 1") == 2  # its own and the rollback's
    assert "automatic rollback to v1 failed" in original.reason
    [rb_failed] = await h.wait_event("rollback.failed")
    assert isinstance(rb_failed, RollbackFailed) and rb_failed.to_release == 1
    finished = {(e.deploy_id, e.status) for e in await h.wait_event("deploy.finished", count=2)
                if isinstance(e, DeployFinished)}
    assert finished == {("d-two", "failed"), ("d-two-rollback", "failed")}

    async def no_second_rollback() -> bool:
        return len(await _rollbacks(h)) == 1

    await stays(no_second_rollback, 2.0, "nothing loops: one rollback only")


async def test_crash_loop_after_healthy_is_rolled_back(harness: Harness) -> None:
    h = harness
    await h.seed_app(last_healthy=1, current=2, active="d-loop")
    await h.seed_deploy("d-loop", 2)
    await h.start_watcher(crash_loop_window_s=30.0)
    h.register("d-loop", 2)
    await h.wait_status("d-loop", "healthy")
    await h.wait_app("last healthy release 2", lambda a: a.last_healthy_release == 2)
    # now the release starts crash-looping
    h.behave(exit_code=1, exit_after_s=0.05)

    deploy = await h.wait_status("d-loop", "failed")
    assert deploy.reason is not None and "crash-looping" in deploy.reason
    [command] = await wait_for(lambda: _rollbacks(h), 10, "rollback")
    assert command.to_version == 1
    await h.wait_app("last healthy release 1", lambda a: a.last_healthy_release == 1)
    # the scheduler executes the rollback; the restored release runs fine
    h.behave(exit_code=0, exit_after_s=3600)
    await h.seed_deploy("d-loop-rollback", 3, kind="rollback", automatic=True,
                        rollback_for="d-loop")
    h.register("d-loop-rollback", 3, marker="1")
    await h.wait_status("d-loop", "rolled_back")

    async def finished_rolled_back() -> list[str] | None:
        mine: list[str] = [e.status for e in await h.events("deploy.finished")
                if isinstance(e, DeployFinished) and e.deploy_id == "d-loop"]
        return mine if mine and mine[-1] == "rolled_back" else None

    # The timeline's last word on the deploy is its final status, each status said once.
    statuses = await wait_for(finished_rolled_back, 10, "deploy.finished rolled_back")
    assert statuses == ["healthy", "rolled_back"]

    async def once_per_status() -> bool:
        return [e.status for e in await h.events("deploy.finished")
                if isinstance(e, DeployFinished) and e.deploy_id == "d-loop"] == statuses

    await stays(once_per_status, 1.5, "one deploy.finished per status (relists included)")


async def test_newer_version_supersedes_a_running_rollout(harness: Harness) -> None:
    h = harness
    await h.seed_app(active="d-old")
    await h.seed_deploy("d-old", 2)
    await h.seed_deploy("d-new", 3)
    h.behave(job_version=0, hang=True)
    await h.start_watcher()
    h.register("d-old", 2)

    async def has_deployment() -> bool:
        return bool(h.nomad.job.get_deployment(h.app))

    await wait_for(has_deployment, 10, "the first deployment")
    h.register("d-new", 3)
    assert (await h.wait_status("d-old", "superseded")).status == "superseded"
    assert (await h.wait_status("d-new", "healthy")).status == "healthy"


async def _same_deploy_rescaled(h: Harness, deploy_id: str) -> None:
    """Register the deploy's release, then re-register it with another count while its
    first deployment still runs (what the scheduler does on a scale or a drift repair)."""
    h.register(deploy_id, 2)

    async def has_deployment() -> bool:
        return bool(h.nomad.job.get_deployment(h.app))

    await wait_for(has_deployment, 10, "the first deployment")
    first = h.nomad.job.get_deployment(h.app)["ID"]
    h.register(deploy_id, 2, count=2)

    async def replaced() -> bool:
        return bool(h.nomad.job.get_deployment(h.app)["ID"] != first)

    await wait_for(replaced, 10, "a second deployment of the same deploy")
    statuses = {d["ID"]: d["Status"] for d in h.nomad.job.get_deployments(h.app)}
    assert statuses[first] == "cancelled"


async def test_same_deploy_registered_again_is_not_superseded(harness: Harness) -> None:
    h = harness
    await h.seed_app(active="d-rescale")
    await h.seed_deploy("d-rescale", 2)
    h.behave(job_version=0, start_delay_s=1.0)  # the first deployment is still running
    await h.start_watcher()
    await _same_deploy_rescaled(h, "d-rescale")

    deploy = await h.wait_status("d-rescale", "healthy", "superseded")
    assert deploy.status == "healthy"
    latest = h.nomad.job.get_deployment(h.app)
    assert latest["Status"] == "successful" and deploy.nomad_deployment_id == latest["ID"]
    await h.wait_app("last healthy release 2", lambda a: a.last_healthy_release == 2)
    [finished] = await h.wait_event("deploy.finished")
    assert isinstance(finished, DeployFinished) and finished.status == "healthy"


async def test_same_deploy_registered_again_and_failing_is_rolled_back(
    harness: Harness
) -> None:
    h = harness
    await h.seed_app(last_healthy=1, current=2, active="d-refail")
    await h.seed_deploy("d-refail", 2)
    h.behave(job_version=0, start_delay_s=1.0)
    h.behave(job_version=1, crash_on_start=1)  # the second deployment's allocs crash
    await h.start_watcher()
    await _same_deploy_rescaled(h, "d-refail")

    deploy = await h.wait_status("d-refail", "failed", "superseded")
    assert deploy.status == "failed"
    assert deploy.rollback is not None and deploy.rollback.to_release == 1
    [command] = await wait_for(lambda: _rollbacks(h), 10, "rollback")
    assert command.failed_deploy_id == "d-refail" and command.to_version == 1
