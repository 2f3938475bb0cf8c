"""The watcher's decisions from snapshots of Nomad and the records: no I/O."""

from __future__ import annotations

from datetime import timedelta

from services.watcher.decide import (
    FailInNomad,
    MarkEnded,
    MarkFailed,
    MarkHealthy,
    PublishProgress,
    decide,
    resolve_rollback,
)
from services.watcher.notes import (
    STEP_FAILED,
    STEP_HEALTHY,
    STEP_ROLLBACK_COMMAND,
    STEP_ROLLBACK_STARTED,
    DeployNotes,
    step_finished,
)
from shared.records import RollbackState, StatusChange

from .builders import (
    NOW,
    POLICY,
    alloc,
    app_record,
    crash,
    deploy_record,
    deployment,
    event,
    healthy_record,
    observe,
)

FINISHED_HEALTHY = step_finished("healthy")


def kinds(decision: object) -> list[str]:
    return [type(a).__name__ for a in decision.actions]  # type: ignore[attr-defined]


def test_running_healthy_so_far_publishes_progress_and_watches_the_deadline() -> None:
    d = decide(observe(deployment(healthy=0), [alloc()]), POLICY)
    assert kinds(d) == ["PublishProgress"]
    progress = d.actions[0]
    assert isinstance(progress, PublishProgress)
    assert progress.percent == 0
    assert progress.groups[0].desired == 1 and progress.groups[0].placed == 1
    # progress deadline in 10 minutes, plus 60 s grace
    assert d.requeue_after_s is not None and 659 < d.requeue_after_s <= 660


def test_successful_deployment_makes_the_deploy_healthy() -> None:
    d = decide(observe(deployment("successful", healthy=1), [alloc(healthy=True)]), POLICY)
    assert kinds(d) == ["PublishProgress", "MarkHealthy"]
    assert d.actions[0].percent == 100  # type: ignore[union-attr]


def test_replayed_success_after_outcome_and_publishes_does_nothing() -> None:
    notes = DeployNotes(deploy_id="d-1", published=[STEP_HEALTHY, FINISHED_HEALTHY])
    obs = observe(deployment("successful", healthy=1), [alloc(healthy=True)],
                  deploy=healthy_record(NOW - timedelta(hours=1)), notes=notes)
    assert decide(obs, POLICY).actions == []


def test_success_written_but_not_published_is_published_again() -> None:
    notes = DeployNotes(deploy_id="d-1", published=[STEP_HEALTHY])
    obs = observe(deployment("successful", healthy=1), deploy=healthy_record(NOW), notes=notes)
    assert kinds(decide(obs, POLICY)) == ["MarkHealthy"]


def test_one_crash_is_not_enough_to_fail_early() -> None:
    d = decide(observe(deployment(), [alloc(crash())]), POLICY)
    assert kinds(d) == ["PublishProgress"]


def test_same_task_failing_twice_fails_the_deployment_early_naming_the_exit_code() -> None:
    events = crash(NOW - timedelta(seconds=2), 1) + crash(NOW, 1)
    d = decide(observe(deployment(), [alloc(events)]), POLICY)
    assert kinds(d) == ["PublishProgress", "FailInNomad"]
    fail = d.actions[1]
    assert isinstance(fail, FailInNomad)
    assert "task app exited with code 1 (2 times)" in fail.reason


def test_failures_count_across_replacement_allocations() -> None:
    allocs = [alloc(crash(NOW - timedelta(seconds=3), 3), alloc_id="a1", status="failed"),
              alloc(crash(NOW, 3), alloc_id="a2")]
    assert kinds(decide(observe(deployment(), allocs), POLICY))[-1] == "FailInNomad"


def test_a_task_that_failed_once_then_went_healthy_is_not_failed() -> None:
    events = crash(NOW - timedelta(seconds=5)) + crash(NOW - timedelta(seconds=3)) + [
        event("Started", NOW)]
    d = decide(observe(deployment(healthy=1), [alloc(events, healthy=True)]), POLICY)
    assert kinds(d) == ["PublishProgress"]


def test_image_pull_failure_fails_at_once() -> None:
    events = [event("Driver Failure", NOW,
                    "Failed to pull `registry/app@sha256:00`: manifest unknown",
                    DriverError="manifest unknown")]
    d = decide(observe(deployment(), [alloc(events)]), POLICY)
    fail = d.actions[-1]
    assert isinstance(fail, FailInNomad)
    assert "image could not be pulled" in fail.reason
    assert "no restart can fix" in fail.reason


def test_template_failure_fails_at_once() -> None:
    events = [event("Killing", NOW, "Template failed: vault.read(secret/x): permission denied",
                    FailsTask=True)]
    fail = decide(observe(deployment(), [alloc(events)]), POLICY).actions[-1]
    assert isinstance(fail, FailInNomad)
    assert "secrets could not be read" in fail.reason


def test_exec_format_error_fails_at_once() -> None:
    events = [event("Driver Failure", NOW, "failed to start: exec format error")]
    fail = decide(observe(deployment(), [alloc(events)]), POLICY).actions[-1]
    assert isinstance(fail, FailInNomad) and "exec format error" in fail.reason


def test_stop_by_nomad_is_not_a_failure() -> None:
    events = [event("Started", NOW - timedelta(seconds=2)),
              event("Killing", NOW - timedelta(seconds=1), "Sent interrupt"),
              event("Terminated", NOW, "Exit Code: 137", ExitCode=137),
              event("Killed", NOW)] * 2
    assert kinds(decide(observe(deployment(), [alloc(events)]), POLICY)) == ["PublishProgress"]


def test_already_failed_by_us_is_not_failed_again() -> None:
    notes = DeployNotes(deploy_id="d-1", failed_deployment="dep-1", fail_reason="x")
    events = crash(NOW - timedelta(seconds=2)) + crash(NOW)
    d = decide(observe(deployment(), [alloc(events)], notes=notes), POLICY)
    assert kinds(d) == ["PublishProgress"]


def test_platform_deadline_fails_a_stuck_deployment() -> None:
    dep = deployment(progress_by=NOW - timedelta(seconds=61), progress_deadline_s=600)
    d = decide(observe(dep, [alloc()]), POLICY)
    fail = d.actions[-1]
    assert isinstance(fail, FailInNomad)
    assert "progress deadline (600s) plus 60s grace" in fail.reason


def test_inside_the_grace_period_nothing_is_failed() -> None:
    dep = deployment(progress_by=NOW - timedelta(seconds=59))
    d = decide(observe(dep, [alloc()]), POLICY)
    assert kinds(d) == ["PublishProgress"]
    assert d.requeue_after_s is not None and d.requeue_after_s <= 1.01


def test_paused_deployment_has_no_deadline() -> None:
    dep = deployment("paused", desc="Deployment is paused",
                     progress_by=NOW - timedelta(hours=1))
    assert kinds(decide(observe(dep), POLICY)) == ["PublishProgress"]


def test_failed_deployment_fails_the_deploy_and_rolls_back_to_last_healthy() -> None:
    events = crash(NOW - timedelta(seconds=2), 1) + crash(NOW, 1)
    d = decide(observe(deployment("failed"), [alloc(events, healthy=False)]), POLICY)
    assert kinds(d) == ["PublishProgress", "MarkFailed"]
    fail = d.actions[1]
    assert isinstance(fail, MarkFailed)
    assert fail.rollback_to == 1
    assert fail.trigger == "allocations were unhealthy (Nomad)"
    assert fail.evidence.most_frequent() == (("web", "app"), 2)


def test_failed_by_us_keeps_our_reason() -> None:
    notes = DeployNotes(deploy_id="d-1", failed_deployment="dep-1",
                        fail_reason="failed early by Shaman")
    dep = deployment("failed", desc="Deployment marked as failed")
    fail = decide(observe(dep, notes=notes), POLICY).actions[-1]
    assert isinstance(fail, MarkFailed)
    assert fail.trigger == "failed early by Shaman"


def test_progress_deadline_failure_is_named() -> None:
    dep = deployment("failed", desc="Failed due to progress deadline")
    fail = decide(observe(dep), POLICY).actions[-1]
    assert isinstance(fail, MarkFailed)
    assert "progress deadline" in fail.trigger


def test_auto_rollback_off_means_no_rollback() -> None:
    fail = decide(observe(deployment("failed"), app=app_record(auto_rollback=False)),
                  POLICY).actions[-1]
    assert isinstance(fail, MarkFailed) and fail.rollback_to is None


def test_no_earlier_healthy_release_means_no_rollback() -> None:
    fail = decide(observe(deployment("failed"), app=app_record(last_healthy=None)),
                  POLICY).actions[-1]
    assert isinstance(fail, MarkFailed) and fail.rollback_to is None


def test_a_failed_rollback_is_never_rolled_back() -> None:
    rb = deploy_record(kind="rollback", automatic=True, rollback_for="d-0")
    fail = decide(observe(deployment("failed"), deploy=rb), POLICY).actions[-1]
    assert isinstance(fail, MarkFailed) and fail.rollback_to is None


def test_failed_and_fully_published_deploy_gives_nothing_on_replay() -> None:
    rec = deploy_record("failed", rollback=RollbackState(
        requested_at=NOW, reason="x", to_release=1, deploy_id="d-1-rollback"))
    notes = DeployNotes(deploy_id="d-1", published=[
        STEP_FAILED, STEP_ROLLBACK_COMMAND, STEP_ROLLBACK_STARTED])
    assert decide(observe(deployment("failed"), deploy=rec, notes=notes), POLICY).actions == []


def test_crash_loop_without_rollback_still_owes_its_failed_finish() -> None:
    # Healthy first (deploy.finished healthy published), then crash-looped with no
    # rollback: `deploy.finished` failed is a different step and must still go out.
    went_healthy = NOW - timedelta(seconds=60)
    rec = deploy_record("failed", history=[
        StatusChange(status="healthy", time=went_healthy),
        StatusChange(status="failed", time=NOW, reason="crash-looping")])
    notes = DeployNotes(deploy_id="d-1",
                        published=[STEP_HEALTHY, FINISHED_HEALTHY, STEP_FAILED])
    d = decide(observe(deployment("successful"), deploy=rec, notes=notes,
                       app=app_record(auto_rollback=False)), POLICY)
    assert kinds(d) == ["MarkFailed"]
    done = DeployNotes(deploy_id="d-1", published=[*notes.published, step_finished("failed")])
    assert decide(observe(deployment("successful"), deploy=rec, notes=done,
                          app=app_record(auto_rollback=False)), POLICY).actions == []


def test_failed_but_rollback_not_published_is_finished_keeping_the_first_target() -> None:
    rec = deploy_record("failed", rollback=RollbackState(
        requested_at=NOW, reason="x", to_release=1, deploy_id="d-1-rollback"))
    notes = DeployNotes(deploy_id="d-1", published=[STEP_FAILED])
    app = app_record(last_healthy=7)  # changed since: the first decision stands
    fail = decide(observe(deployment("failed"), deploy=rec, app=app, notes=notes),
                  POLICY).actions[-1]
    assert isinstance(fail, MarkFailed) and fail.rollback_to == 1


def test_out_of_order_running_snapshot_after_outcome_changes_nothing() -> None:
    # A late `running` event read back after the deploy is already healthy.
    obs = observe(deployment("running"), deploy=healthy_record(NOW))
    assert decide(obs, POLICY).actions == []


def test_cancelled_by_newer_version_supersedes() -> None:
    d = decide(observe(deployment("cancelled")), POLICY)
    end = d.actions[-1]
    assert isinstance(end, MarkEnded) and end.status == "superseded"


def test_cancelled_by_a_newer_version_of_the_same_deploy_ends_nothing() -> None:
    # A scale, a drift repair or a new rendering re-registers the same release: Nomad
    # cancels this deployment and starts another one for the same deploy, which decides.
    d = decide(observe(deployment("cancelled"), newer_is_same_deploy=True), POLICY)
    assert d.actions == []  # no MarkEnded, and no progress from the stale counters


def test_stopping_the_job_cancels_even_with_the_same_meta() -> None:
    # A stopped job's version keeps the deploy's Meta: it is still the end of the deploy.
    d = decide(observe(deployment("cancelled", desc="Cancelled because job is stopped"),
                       newer_is_same_deploy=True), POLICY)
    end = d.actions[-1]
    assert isinstance(end, MarkEnded) and end.status == "cancelled"


def test_cancelled_because_job_stopped_cancels() -> None:
    d = decide(observe(deployment("cancelled", desc="Cancelled because job is stopped")),
               POLICY)
    end = d.actions[-1]
    assert isinstance(end, MarkEnded) and end.status == "cancelled"


def test_cancelled_after_outcome_changes_nothing() -> None:
    assert decide(observe(deployment("cancelled"), deploy=healthy_record(NOW)),
                  POLICY).actions == []


def test_pending_deploy_is_looked_at_again_soon() -> None:
    d = decide(observe(deployment("successful"), deploy=deploy_record("pending")), POLICY)
    assert d.actions == [] and d.requeue_after_s == 1.0


def test_crash_loop_within_window_after_healthy_rolls_back_to_previous() -> None:
    went_healthy = NOW - timedelta(seconds=60)
    events = crash(went_healthy - timedelta(seconds=30)) + crash(NOW - timedelta(seconds=5)) + \
        crash(NOW)
    notes = DeployNotes(deploy_id="d-1", published=[STEP_HEALTHY, FINISHED_HEALTHY],
                        previous_healthy=1, previous_healthy_known=True)
    app = app_record(last_healthy=2)  # this release went healthy
    d = decide(observe(deployment("successful", healthy=1), [alloc(events, healthy=True)],
                       deploy=healthy_record(went_healthy), app=app, notes=notes), POLICY)
    fail = d.actions[-1]
    assert isinstance(fail, MarkFailed)
    assert fail.crash_loop and fail.rollback_to == 1
    # only failures after it went healthy count
    assert fail.evidence.most_frequent() == (("web", "app"), 2)


def test_one_crash_after_healthy_is_not_a_crash_loop() -> None:
    went_healthy = NOW - timedelta(seconds=60)
    notes = DeployNotes(deploy_id="d-1", published=[STEP_HEALTHY, FINISHED_HEALTHY])
    d = decide(observe(deployment("successful"), [alloc(crash(NOW), healthy=True)],
                       deploy=healthy_record(went_healthy), notes=notes), POLICY)
    assert d.actions == []


def test_crashes_after_the_window_are_not_rolled_back() -> None:
    went_healthy = NOW - timedelta(seconds=301)
    notes = DeployNotes(deploy_id="d-1", published=[STEP_HEALTHY, FINISHED_HEALTHY])
    events = crash(NOW - timedelta(seconds=1)) + crash(NOW)
    d = decide(observe(deployment("successful"), [alloc(events, healthy=True)],
                       deploy=healthy_record(went_healthy), notes=notes), POLICY)
    assert d.actions == []


def test_same_snapshot_twice_gives_the_same_decision() -> None:
    obs = observe(deployment(), [alloc(crash(NOW - timedelta(seconds=2)) + crash(NOW))])
    assert decide(obs, POLICY) == decide(obs, POLICY)


def test_mark_healthy_is_an_instance() -> None:
    assert isinstance(
        decide(observe(deployment("successful")), POLICY).actions[-1], MarkHealthy)


# -- a rollback's end ----------------------------------------------------------------------


def _parent() -> object:
    return deploy_record("failed", reason="task app exited with code 1",
                         rollback=RollbackState(requested_at=NOW, reason="exit 1",
                                                to_release=1, deploy_id="d-1-rollback"))


def test_rollback_healthy_rolls_the_original_back() -> None:
    child = deploy_record("healthy", kind="rollback", automatic=True, rollback_for="d-1")
    res = resolve_rollback(_parent(), child)  # type: ignore[arg-type]
    assert res is not None and res.status == "rolled_back" and res.outcome == "succeeded"
    assert "rolled back to v1" in res.reason


def test_rollback_failed_keeps_the_original_failed_with_both_reasons() -> None:
    child = deploy_record("failed", kind="rollback", reason="image could not be pulled")
    res = resolve_rollback(_parent(), child)  # type: ignore[arg-type]
    assert res is not None and res.status == "failed" and res.outcome == "failed"
    assert "exited with code 1" in res.reason and "image could not be pulled" in res.reason


def test_rollback_still_running_settles_nothing() -> None:
    assert resolve_rollback(_parent(), deploy_record("deploying")) is None  # type: ignore[arg-type]
    assert resolve_rollback(_parent(), None) is None  # type: ignore[arg-type]


def test_rollback_already_settled_settles_nothing() -> None:
    parent = _parent()
    parent.rollback.outcome = "succeeded"  # type: ignore[attr-defined]
    assert resolve_rollback(parent, deploy_record("healthy")) is None  # type: ignore[arg-type]
