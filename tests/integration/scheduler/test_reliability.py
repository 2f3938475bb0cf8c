"""Nothing lost, nothing doubled: redeliveries, races, kill -9, drift, Nomad trouble."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from services.scheduler.app import SchedulerApp, create_app, render_settings
from services.scheduler.reconciler import Reconciler
from services.scheduler.renderer import JobRenderer
from services.scheduler.sweeper import redrive_once
from services.scheduler.workqueue import Result, WorkQueue
from shared import subjects
from shared.commands import DeployImage, Reconcile, Rollback
from shared.records import AppRecord, DeployRecord, release_key, transition
from tests.integration.scheduler.conftest import (
    Harness,
    localnomad_control,
    scheduler_settings,
)
from tests.unit.scheduler.waiting import wait_for

ROOT = Path(__file__).resolve().parents[3]


def image(app: str, n: int) -> str:
    return f"127.0.0.1:5999/{app}@sha256:{n:064x}"


def release_metas(versions: list[dict[str, Any]]) -> list[str]:
    return [v["Meta"]["shaman_release"] for v in versions]


async def work_queue_empty(h: Harness) -> bool:
    info = await h.bus.js.consumer_info(subjects.STREAM_RELEASE_WORK,
                                        subjects.CONSUMER_SCHEDULER)
    return info.num_pending == 0 and info.num_ack_pending == 0


# -- duplicates and races ------------------------------------------------------------------


async def test_duplicate_deploy_command_makes_one_release_and_one_job_version(
    harness: Harness, scheduler: SchedulerApp
) -> None:
    app = harness.unique("dup")
    await harness.create_app(app)
    await harness.create_deploy(f"{app}-d1", app)
    command = DeployImage(deploy_id=f"{app}-d1", app=app, image=image(app, 1),
                          digest=f"sha256:{1:064x}", description="", created_by="t")
    # Different msg ids: JetStream stores both, as after a dedupe window passed.
    await harness.publish(command, "first")
    await harness.publish(command, "second")
    await harness.wait_submitted(f"{app}-d1")
    await wait_for(lambda: work_queue_empty(harness), 15, message="both deliveries acked")
    assert [r.version for r in await harness.releases(app)] == [1]
    assert release_metas(await harness.versions(app)) == ["1"]
    assert len(harness.events_of(app, "release.created")) == 1
    assert len(harness.events_of(app, "rollout.submitted")) == 1


async def test_two_concurrent_deploys_one_winner_one_superseded(
    harness: Harness, scheduler: SchedulerApp
) -> None:
    app = harness.unique("race")
    await harness.create_app(app)
    await harness.create_deploy(f"{app}-d1", app)
    await harness.create_deploy(f"{app}-d2", app)
    await asyncio.gather(
        harness.deploy_image(app, f"{app}-d1", image(app, 1), create_record=False),
        harness.deploy_image(app, f"{app}-d2", image(app, 2), create_record=False),
    )
    await harness.wait_deploy(f"{app}-d1", lambda d: d.terminal or d.job_modify_index is not None)
    await harness.wait_deploy(f"{app}-d2", lambda d: d.terminal or d.job_modify_index is not None)
    await wait_for(lambda: work_queue_empty(harness), 15, message="commands acked")
    d1, d2 = await harness.deploy(f"{app}-d1"), await harness.deploy(f"{app}-d2")
    winner, loser = (d2, d1) if d2.release == 2 else (d1, d2)
    assert winner.status == "deploying" and winner.job_modify_index is not None
    assert loser.status == "superseded" and loser.superseded_by == winner.id
    record = await harness.app(app)
    assert record.current_release == 2 and record.active_deploy_id == winner.id
    metas = release_metas(await harness.versions(app))
    # At most one job version per release, and the job runs the winner.
    assert len(metas) == len(set(metas)) and metas[0] == "2"
    job = await harness.job(app)
    assert job is not None and job["Meta"]["shaman_deploy_id"] == winner.id


@pytest.fixture
async def second_scheduler(sched_nats: str, sched_nomad: str) -> AsyncIterator[SchedulerApp]:
    async with create_app(scheduler_settings(sched_nats, sched_nomad)) as app:
        yield app


async def test_many_deploys_across_two_schedulers_stay_consistent(
    harness: Harness, scheduler: SchedulerApp, second_scheduler: SchedulerApp
) -> None:
    app = harness.unique("storm")
    await harness.create_app(app)
    ids = [f"{app}-d{i}" for i in range(1, 7)]
    for deploy_id in ids:
        await harness.create_deploy(deploy_id, app)
    await asyncio.gather(*(harness.deploy_image(app, d, image(app, i), create_record=False)
                           for i, d in enumerate(ids, 1)))
    for deploy_id in ids:
        await harness.wait_deploy(deploy_id, lambda d: d.release is not None and (
            d.terminal or d.job_modify_index is not None), timeout=30)
    await wait_for(lambda: work_queue_empty(harness), 30, message="commands acked")

    deploys = [await harness.deploy(d) for d in ids]
    releases = await harness.releases(app)
    # One release per deploy, numbered without gaps or doubles.
    assert sorted(r.version for r in releases) == list(range(1, 7))
    assert sorted(r.deploy_id for r in releases) == sorted(ids)
    assert sorted(d.release for d in deploys if d.release) == list(range(1, 7))
    active = [d for d in deploys if d.status == "deploying"]
    assert len(active) == 1 and active[0].release == 6
    assert all(d.status == "superseded" for d in deploys if d is not active[0])
    metas = release_metas(await harness.versions(app))
    assert len(metas) == len(set(metas)) and metas[0] == "6"


# -- kill -9 at the two crash points ------------------------------------------------------------


def start_crashing_scheduler(h: Harness, crashpoint: str, tmp: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "NATS_URL": h.nats_url,
        "NOMAD_ADDR": h.nomad_addr,
        "SHAMAN_HTTP_ADDR": "127.0.0.1:0",
        "SHAMAN_ACK_WAIT_S": "2",
        "SHAMAN_CRASHPOINT": crashpoint,
        "SHAMAN_CHECK_ROLLBACK_IMAGE": "false",
        "SHAMAN_LOG_FORMAT": "console",
    }
    log = (tmp / f"scheduler-{crashpoint}.log").open("wb")
    return subprocess.Popen([sys.executable, "-m", "services.scheduler"], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT)


@pytest.mark.parametrize(
    "crashpoint", ["after_release_created", "after_app_updated", "after_nomad_register"])
async def test_kill_9_then_restart_submits_exactly_once(
    harness: Harness, sched_nats: str, sched_nomad: str, crashpoint: str, tmp_path: Path
) -> None:
    app = harness.unique("crash")
    await harness.create_app(app)
    await harness.deploy_image(app, f"{app}-d1", image(app, 1))

    proc = start_crashing_scheduler(harness, crashpoint, tmp_path)
    try:
        code = await asyncio.to_thread(proc.wait, 60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 137, (tmp_path / f"scheduler-{crashpoint}.log").read_text()[-3000:]
    deploy = await harness.deploy(f"{app}-d1")
    assert deploy.job_modify_index is None  # it died before recording anything more

    async with create_app(scheduler_settings(sched_nats, sched_nomad)):
        submitted = await harness.wait_submitted(f"{app}-d1", timeout=30)
        await wait_for(lambda: work_queue_empty(harness), 30, message="redelivery acked")
    assert submitted.release == 1 and submitted.status == "deploying"
    assert [r.version for r in await harness.releases(app)] == [1]
    assert release_metas(await harness.versions(app)) == ["1"]
    job = await harness.job(app)
    assert job is not None and job["Version"] == 0
    assert submitted.job_modify_index == job["JobModifyIndex"]
    assert len(harness.events_of(app, "rollout.submitted")) == 1


# -- drift ----------------------------------------------------------------------------------


@pytest.fixture
async def resyncing_scheduler(sched_nats: str, sched_nomad: str) -> AsyncIterator[SchedulerApp]:
    settings = scheduler_settings(sched_nats, sched_nomad, resync_interval_s=0.3)
    async with create_app(settings) as app:
        yield app


async def test_job_stopped_by_hand_is_put_back_and_reported(
    harness: Harness, resyncing_scheduler: SchedulerApp
) -> None:
    app = harness.unique("drift-stop")
    await harness.create_app(app)
    await harness.deploy_image(app, f"{app}-d1", image(app, 1))
    await harness.wait_submitted(f"{app}-d1")

    await harness.nomad.deregister_job(app)  # `nomad job stop`, by hand
    (drift,) = await harness.wait_event(app, "drift.detected")
    assert drift.description == "job stopped outside Shaman" and drift.release == 1
    job = await harness.wait_job(app, lambda j: not j.get("Stop"))
    assert job["Meta"]["shaman_release"] == "1"


async def test_job_purged_or_edited_by_hand_is_put_back(
    harness: Harness, resyncing_scheduler: SchedulerApp
) -> None:
    app = harness.unique("drift-edit")
    await harness.create_app(app)
    await harness.deploy_image(app, f"{app}-d1", image(app, 1))
    await harness.wait_submitted(f"{app}-d1")

    job = await harness.job(app)
    assert job is not None
    job["TaskGroups"][0]["Tasks"][0]["Env"]["HACK"] = "1"
    await harness.nomad.register_job(job, enforce_index=None)
    (edited,) = await harness.wait_event(app, "drift.detected")
    assert edited.description == "job edited outside Shaman"
    await harness.wait_job(app, lambda j: "HACK" not in j["TaskGroups"][0]["Tasks"][0]["Env"])

    await harness.nomad.deregister_job(app, purge=True)
    events = await harness.wait_event(app, "drift.detected", count=2)
    assert "deleted" in events[1].description
    await harness.wait_job(app, lambda j: j["Meta"]["shaman_release"] == "1")


# -- Nomad trouble ---------------------------------------------------------------------------


async def test_nomad_failing_its_next_requests_still_ends_in_one_job_version(
    harness: Harness, scheduler: SchedulerApp
) -> None:
    app = harness.unique("flaky")
    await harness.create_app(app)
    localnomad_control(harness.nomad_addr, "faults",
                       {"prefix": "/v1/job", "fail_next": 5, "status": 503})
    try:
        await harness.deploy_image(app, f"{app}-d1", image(app, 1))
        deploy = await harness.wait_submitted(f"{app}-d1", timeout=30)
    finally:
        localnomad_control(harness.nomad_addr, "faults", method="DELETE")
    assert deploy.status == "deploying"
    assert release_metas(await harness.versions(app)) == ["1"]
    assert len(harness.events_of(app, "rollout.submitted")) == 1


async def test_nomad_down_past_the_deadline_fails_the_deploy(
    harness: Harness, sched_nats: str
) -> None:
    app = harness.unique("nonomad")
    await harness.create_app(app)
    dead = f"http://127.0.0.1:{_closed_port()}"
    settings = scheduler_settings(sched_nats, dead, nomad_retry_deadline_s=1.0,
                                  command_reconcile_wait_s=1.0, nomad_timeout_s=0.5)
    async with create_app(settings) as scheduler:
        await harness.deploy_image(app, f"{app}-d1", image(app, 1))
        deploy = await harness.wait_deploy(f"{app}-d1", lambda d: d.terminal, timeout=30)
        # The service stays responsive meanwhile.
        assert scheduler.tasks.healthy()
    assert deploy.status == "failed" and deploy.release == 1
    assert deploy.reason is not None and "nomad" in deploy.reason.lower()
    (finished,) = await harness.wait_event(app, "deploy.finished")
    assert finished.status == "failed"


def _closed_port() -> int:
    from devstack.ports import free_port

    return free_port()  # nothing listens there: connections are refused


# -- destroy and re-drive ----------------------------------------------------------------------


async def test_destroyed_app_has_its_job_purged(
    harness: Harness, scheduler: SchedulerApp
) -> None:
    app = harness.unique("destroy")
    await harness.create_app(app)
    await harness.deploy_image(app, f"{app}-d1", image(app, 1))
    await harness.wait_submitted(f"{app}-d1")

    def destroyed(record):  # type: ignore[no-untyped-def]
        record.state = "destroyed"
        return record

    await harness.stores.apps.mutate(app, destroyed)
    await harness.publish(Reconcile(app=app, reason="destroyed"), f"{app}:destroy")

    async def gone() -> bool:
        return await harness.job(app) is None

    await wait_for(gone, 15, message="job purged")


async def test_redrive_sweep_enqueues_apps_with_unsubmitted_deploys(harness: Harness) -> None:
    app = harness.unique("redrive")
    await harness.create_app(app)
    await harness.create_deploy(f"{app}-d1", app, status="pending")

    def deploying(record):  # type: ignore[no-untyped-def]
        record.status = "deploying"
        record.release = 1
        return record

    await harness.stores.deploys.mutate(f"{app}-d1", deploying)
    seen: list[str] = []

    async def record(key: str) -> Result:
        seen.append(key)
        return Result()

    queue = WorkQueue(record, concurrency=1)
    await queue.start()
    try:
        assert await redrive_once(harness.stores, queue, stuck_after_s=600) >= 1
        await wait_for(lambda: app in seen, 5)
    finally:
        await queue.stop()


async def test_automatic_rollback_killed_after_becoming_current_still_rolls_back(
    harness: Harness, sched_nats: str, sched_nomad: str, tmp_path: Path
) -> None:
    app = harness.unique("crashrb")
    await harness.create_app(app)
    async with create_app(scheduler_settings(sched_nats, sched_nomad)):
        await harness.deploy_image(app, f"{app}-d1", image(app, 1))
        await harness.wait_submitted(f"{app}-d1")
        await harness.deploy_image(app, f"{app}-d2", image(app, 2))
        await harness.wait_submitted(f"{app}-d2")
        await wait_for(lambda: work_queue_empty(harness), 15, message="commands acked")

    await harness.publish(Rollback(deploy_id=f"{app}-d2-rollback", app=app, to_version=1,
                                   automatic=True, created_by="watcher",
                                   failed_deploy_id=f"{app}-d2"), f"{app}-d2:rollback")
    proc = start_crashing_scheduler(harness, "after_app_updated", tmp_path)
    try:
        assert await asyncio.to_thread(proc.wait, 60) == 137
    finally:
        if proc.poll() is None:
            proc.kill()
    # The rollback's release is current now; the restarted scheduler must not take that
    # for "the failed release is no longer current" and cancel it.
    async with create_app(scheduler_settings(sched_nats, sched_nomad)):
        deploy = await harness.wait_deploy(
            f"{app}-d2-rollback", lambda d: d.terminal or d.job_modify_index is not None, 30)
    assert deploy.status == "deploying" and deploy.release == 3
    assert [r.version for r in await harness.releases(app)] == [1, 2, 3]
    assert release_metas(await harness.versions(app)) == ["3", "2", "1"]


async def test_failed_deploy_registered_by_a_killed_pass_is_recorded_before_its_rollback(
    harness: Harness, sched_nats: str, sched_nomad: str, tmp_path: Path
) -> None:
    """Killed between register and record; while the scheduler was down the watcher failed
    the deploy and its automatic rollback became current. The pass that registers the
    rollback is the last one to see the failed deploy's version: it records it first."""
    app = harness.unique("crashfail")
    await harness.create_app(app)
    async with create_app(scheduler_settings(sched_nats, sched_nomad)):
        await harness.deploy_image(app, f"{app}-d1", image(app, 1))
        await harness.wait_submitted(f"{app}-d1")
        await wait_for(lambda: work_queue_empty(harness), 15, message="commands acked")
    await harness.deploy_image(app, f"{app}-d2", image(app, 2))
    proc = start_crashing_scheduler(harness, "after_nomad_register", tmp_path)
    try:
        assert await asyncio.to_thread(proc.wait, 60) == 137
    finally:
        if proc.poll() is None:
            proc.kill()
    assert (await harness.deploy(f"{app}-d2")).job_modify_index is None

    # What the watcher and the rollback's command did meanwhile, written directly so that
    # no pass of the failed release's can run in between (a whole scheduler would resync
    # at start and record it the ordinary way).
    def failed(rec: DeployRecord) -> DeployRecord | None:
        return rec if transition(rec, "failed", "tasks crashed") else None

    await harness.stores.deploys.mutate(f"{app}-d2", failed)
    first = await harness.release(app, 1)
    assert first is not None
    rollback_id = f"{app}-d2-rollback"
    await harness.stores.releases.create(release_key(app, 3), msgspec.structs.replace(
        first, version=3, kind="rollback", deploy_id=rollback_id, rollback_of=1))
    await harness.stores.deploys.create(rollback_id, DeployRecord(
        id=rollback_id, app=app, kind="rollback", status="deploying", release=3))

    def rolled(rec: AppRecord) -> AppRecord:
        rec.current_release, rec.active_deploy_id = 3, rollback_id
        return rec

    await harness.stores.apps.mutate(app, rolled)

    settings = scheduler_settings(sched_nats, sched_nomad)
    reconciler = Reconciler(harness.bus, harness.stores, harness.nomad,
                            JobRenderer(render_settings(settings)), nomad_retry_deadline_s=900)
    await reconciler.reconcile(app)

    d2 = await harness.deploy(f"{app}-d2")
    assert d2.status == "failed" and d2.job_version == 1 and d2.job_modify_index is not None
    assert (await harness.deploy(rollback_id)).job_version == 2
    assert release_metas(await harness.versions(app)) == ["3", "2", "1"]
    submitted = await harness.wait_event(app, "rollout.submitted", count=3)
    assert sorted((e.deploy_id, e.job_version) for e in submitted) == [
        (f"{app}-d1", 0), (f"{app}-d2", 1), (rollback_id, 2)]
