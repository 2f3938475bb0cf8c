"""The scheduler against real NATS and localnomad: releases, rendering, submission."""

from __future__ import annotations

import aiohttp
import msgspec

from services.scheduler.app import SchedulerApp
from shared import subjects
from shared.commands import ChangeConfig, Scale
from tests.integration.scheduler.conftest import Harness, drain
from tests.unit.scheduler.waiting import wait_for

DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64


def image(app: str, digest: str) -> str:
    return f"127.0.0.1:5999/{app}@{digest}"


async def test_deploy_image_creates_v1_and_registers_the_job(
    harness: Harness, scheduler: SchedulerApp
) -> None:
    app = harness.unique("skeleton")
    await harness.create_app(app)
    await harness.deploy_image(app, f"{app}-d1", image(app, DIGEST_A))

    deploy = await harness.wait_submitted(f"{app}-d1")
    assert deploy.status == "deploying" and deploy.release == 1
    assert deploy.job_version == 0

    release = await harness.release(app, 1)
    assert release is not None
    assert release.image == image(app, DIGEST_A) and release.description == "Deploy aaaaaaa"
    record = await harness.app(app)
    assert (record.current_release, record.next_release, record.active_deploy_id) == (
        1, 2, f"{app}-d1")

    job = await harness.job(app)
    assert job is not None
    assert job["Meta"]["shaman_release"] == "1"
    assert job["Meta"]["shaman_deploy_id"] == f"{app}-d1"
    assert job["TaskGroups"][0]["Tasks"][0]["Config"]["image"] == image(app, DIGEST_A)
    assert deploy.job_modify_index == job["JobModifyIndex"]

    (created,) = await harness.wait_event(app, "release.created")
    assert created.release == 1 and created.deploy_id == f"{app}-d1"
    (submitted,) = await harness.wait_event(app, "rollout.submitted")
    assert submitted.outcome == "created" and submitted.release == 1


async def test_reconciling_again_registers_nothing(
    harness: Harness, scheduler: SchedulerApp
) -> None:
    app = harness.unique("steady")
    await harness.create_app(app)
    await harness.deploy_image(app, f"{app}-d1", image(app, DIGEST_A))
    await harness.wait_submitted(f"{app}-d1")
    before = await harness.job(app)
    assert before is not None

    for _ in range(3):
        await scheduler.queue.run(app, timeout_s=10)

    after = await harness.job(app)
    assert after is not None
    assert after["Version"] == before["Version"] == 0
    assert after["JobModifyIndex"] == before["JobModifyIndex"]
    assert len(await harness.versions(app)) == 1
    assert len(harness.events_of(app, "rollout.submitted")) == 1


async def test_second_deploy_rolls_out_as_v2_and_supersedes_nothing_finished(
    harness: Harness, scheduler: SchedulerApp
) -> None:
    app = harness.unique("second")
    await harness.create_app(app)
    await harness.deploy_image(app, f"{app}-d1", image(app, DIGEST_A))
    await harness.wait_submitted(f"{app}-d1")
    await harness.deploy_image(app, f"{app}-d2", image(app, DIGEST_B))
    d2 = await harness.wait_submitted(f"{app}-d2")
    assert d2.release == 2 and d2.job_version == 1
    # The first deploy was still rolling out (no watcher here): latest wins.
    d1 = await harness.deploy(f"{app}-d1")
    assert d1.status == "superseded" and d1.superseded_by == f"{app}-d2"
    (event,) = await harness.wait_event(app, "deploy.superseded")
    assert event.deploy_id == f"{app}-d1"


async def test_config_change_creates_v2_with_env(
    harness: Harness, scheduler: SchedulerApp
) -> None:
    app = harness.unique("config")
    await harness.create_app(app)
    await harness.deploy_image(app, f"{app}-d1", image(app, DIGEST_A))
    await harness.wait_submitted(f"{app}-d1")

    await harness.create_deploy(f"{app}-c1", app, kind="config")
    await harness.publish(
        ChangeConfig(deploy_id=f"{app}-c1", app=app, set={"LOG_LEVEL": "debug"}, unset=[],
                     created_by="carol"),
        f"{app}-c1:release",
    )
    deploy = await harness.wait_submitted(f"{app}-c1")
    assert deploy.release == 2
    release = await harness.release(app, 2)
    assert release is not None
    assert release.config == {"LOG_LEVEL": "debug"} and release.kind == "config"
    assert release.description == "Set LOG_LEVEL" and release.created_by == "carol"
    assert release.image == image(app, DIGEST_A)
    job = await harness.job(app)
    assert job is not None
    assert job["TaskGroups"][0]["Tasks"][0]["Env"]["LOG_LEVEL"] == "debug"
    assert job["Meta"]["shaman_release"] == "2"


async def test_scale_changes_the_count_without_a_release(
    harness: Harness, scheduler: SchedulerApp
) -> None:
    app = harness.unique("scale")
    await harness.create_app(app)
    await harness.deploy_image(app, f"{app}-d1", image(app, DIGEST_A))
    await harness.wait_submitted(f"{app}-d1")

    # What the api does: the count on the app record, then the command.
    def three(record):  # type: ignore[no-untyped-def]
        record.spec = msgspec.structs.replace(record.spec, instances=3)
        return record

    await harness.stores.apps.mutate(app, three)
    await harness.publish(Scale(app=app, instances=3, previous=1, requested_by="dave",
                                request_id=f"{app}-s1"), f"{app}-s1:scale")
    (scaled,) = await harness.wait_event(app, "app.scaled")
    assert scaled.instances == 3 and scaled.previous == 1
    job = await harness.wait_job(app, lambda j: j["TaskGroups"][0]["Count"] == 3)
    await drain(scheduler)
    assert job["Meta"]["shaman_release"] == "1"
    assert [r.version for r in await harness.releases(app)] == [1]
    assert (await harness.app(app)).spec.instances == 3
    assert not harness.events_of(app, "drift.detected")


async def test_command_for_an_unknown_app_fails_its_deploy(
    harness: Harness, scheduler: SchedulerApp
) -> None:
    app = harness.unique("ghost")
    await harness.deploy_image(app, f"{app}-d1", image(app, DIGEST_A))
    deploy = await harness.wait_deploy(f"{app}-d1", lambda d: d.terminal)
    assert deploy.status == "failed" and deploy.reason == f"app {app} does not exist"
    assert await harness.job(app) is None


async def test_poison_message_is_dead_lettered_and_the_next_one_flows(
    harness: Harness, scheduler: SchedulerApp
) -> None:
    app = harness.unique("poison")
    await harness.create_app(app)
    await harness.bus.publish(subjects.release_work_subject(app), b"{not json", msg_id="poison")
    await harness.deploy_image(app, f"{app}-d1", image(app, DIGEST_A))
    await harness.wait_submitted(f"{app}-d1")
    await wait_for(lambda: scheduler.consumer.dead_lettered >= 1, 10)


async def test_health_and_metrics_endpoints(scheduler: SchedulerApp) -> None:
    base = f"http://127.0.0.1:{scheduler.http_port}"
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/healthz") as resp:
            assert resp.status == 200
            assert (await resp.json())["status"] == "ok"
        async with session.get(f"{base}/metrics") as resp:
            assert resp.status == 200
            assert "shaman_scheduler_reconcile_passes_total" in await resp.text()
