"""Rollbacks: the whole release comes back (image, config, secret version), once."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from services.scheduler.app import SchedulerApp, create_app
from shared.commands import ChangeConfig, ChangeSecrets, Rollback
from shared.records import transition
from tests.integration.scheduler.conftest import Harness, scheduler_settings

DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64


def image(app: str, digest: str, registry: str = "127.0.0.1:5999") -> str:
    return f"{registry}/{app}@{digest}"


def task_of(job: dict) -> dict:  # type: ignore[type-arg]
    return job["TaskGroups"][0]["Tasks"][0]  # type: ignore[no-any-return]


async def build_history(h: Harness, app: str) -> None:
    """v1 image A; v2 secrets v1; v3 config X=1; v4 secrets v2; v5 image B."""
    await h.create_app(app)
    await h.deploy_image(app, f"{app}-d1", image(app, DIGEST_A))
    await h.wait_submitted(f"{app}-d1")
    steps: list[ChangeSecrets | ChangeConfig] = [
        ChangeSecrets(deploy_id=f"{app}-s1", app=app, version=1, keys=["DB_PASSWORD"],
                      description="", created_by="t"),
        ChangeConfig(deploy_id=f"{app}-c1", app=app, set={"X": "1"}, unset=[], created_by="t"),
        ChangeSecrets(deploy_id=f"{app}-s2", app=app, version=2, keys=["DB_PASSWORD", "TOKEN"],
                      description="", created_by="t"),
    ]
    for step in steps:
        await h.create_deploy(step.deploy_id, app, kind="config")
        await h.publish(step, f"{step.deploy_id}:release")
        await h.wait_submitted(step.deploy_id)
    await h.deploy_image(app, f"{app}-d2", image(app, DIGEST_B))
    await h.wait_submitted(f"{app}-d2")


async def test_rollback_restores_image_config_and_secret_version(
    harness: Harness, scheduler: SchedulerApp
) -> None:
    app = harness.unique("rollback")
    await build_history(harness, app)
    job = await harness.job(app)
    assert job is not None and task_of(job)["Env"]["X"] == "1"
    assert "version=2" in task_of(job)["Templates"][0]["EmbeddedTmpl"]

    await harness.create_deploy(f"{app}-r1", app, kind="rollback")
    await harness.publish(Rollback(deploy_id=f"{app}-r1", app=app, to_version=2,
                                   automatic=False, created_by="erin"), f"{app}-r1:release")
    deploy = await harness.wait_submitted(f"{app}-r1")
    assert deploy.release == 6

    release = await harness.release(app, 6)
    assert release is not None
    assert release.kind == "rollback" and release.rollback_of == 2
    assert release.description == "Rollback to v2"
    v2 = await harness.release(app, 2)
    assert v2 is not None
    assert (release.image, release.config, release.secrets) == (v2.image, v2.config, v2.secrets)

    job = await harness.job(app)
    assert job is not None
    task = task_of(job)
    assert task["Config"]["image"] == image(app, DIGEST_A)
    assert "X" not in task["Env"]
    template = task["Templates"][0]["EmbeddedTmpl"]
    assert "?version=1" in template and "TOKEN" not in template
    assert job["Meta"]["shaman_release"] == "6"
    assert (await harness.deploy(f"{app}-d2")).status == "superseded"


async def test_rollback_without_version_goes_to_the_last_healthy_release(
    harness: Harness, scheduler: SchedulerApp
) -> None:
    app = harness.unique("lasthealthy")
    await harness.create_app(app)
    await harness.deploy_image(app, f"{app}-d1", image(app, DIGEST_A))
    await harness.wait_submitted(f"{app}-d1")

    # What the watcher does when v1's rollout succeeds.
    def healthy(record):  # type: ignore[no-untyped-def]
        return record if transition(record, "healthy") else None

    await harness.stores.deploys.mutate(f"{app}-d1", healthy)

    def last_healthy(record):  # type: ignore[no-untyped-def]
        record.last_healthy_release = 1
        return record

    await harness.stores.apps.mutate(app, last_healthy)

    await harness.deploy_image(app, f"{app}-d2", image(app, DIGEST_B))
    await harness.wait_submitted(f"{app}-d2")

    await harness.create_deploy(f"{app}-r1", app, kind="rollback")
    await harness.publish(Rollback(deploy_id=f"{app}-r1", app=app, to_version=None,
                                   automatic=False, created_by="erin"), f"{app}-r1:release")
    await harness.wait_submitted(f"{app}-r1")
    release = await harness.release(app, 3)
    assert release is not None and release.rollback_of == 1
    job = await harness.job(app)
    assert job is not None and task_of(job)["Config"]["image"] == image(app, DIGEST_A)


async def test_automatic_rollback_creates_its_deploy_record_once(
    harness: Harness, scheduler: SchedulerApp
) -> None:
    app = harness.unique("autorollback")
    await harness.create_app(app)
    await harness.deploy_image(app, f"{app}-d1", image(app, DIGEST_A))
    await harness.wait_submitted(f"{app}-d1")

    def last_healthy(record):  # type: ignore[no-untyped-def]
        record.last_healthy_release = 1
        return record

    await harness.stores.apps.mutate(app, last_healthy)
    await harness.deploy_image(app, f"{app}-d2", image(app, DIGEST_B))
    await harness.wait_submitted(f"{app}-d2")

    # The watcher's request, published twice (a redelivery or a second watcher).
    command = Rollback(deploy_id=f"{app}-d2-rollback", app=app, to_version=None,
                       automatic=True, created_by="watcher", reason="unhealthy allocations",
                       failed_deploy_id=f"{app}-d2")
    await harness.publish(command, f"{app}-d2:rollback")
    await harness.publish(command, f"{app}-d2:rollback:again")
    deploy = await harness.wait_submitted(f"{app}-d2-rollback")
    assert deploy.kind == "rollback" and deploy.automatic
    assert deploy.rollback_for == f"{app}-d2" and deploy.release == 3
    await harness.wait_event(app, "deploy.accepted")
    # The failed deploy keeps its own outcome for the watcher to decide (rolled_back).
    assert (await harness.deploy(f"{app}-d2")).status == "deploying"
    assert [r.version for r in await harness.releases(app)] == [1, 2, 3]
    versions = await harness.versions(app)
    assert sorted(v["Meta"]["shaman_release"] for v in versions) == ["1", "2", "3"]
    # Listed with the app's deploys (GET /v1/apps/{app}/deploys reads this), once.
    record = await harness.stores.apps.get(app)
    assert record is not None
    assert record.value.recent_deploys.count(f"{app}-d2-rollback") == 1


async def test_automatic_rollback_of_a_release_no_longer_current_is_cancelled(
    harness: Harness, scheduler: SchedulerApp
) -> None:
    app = harness.unique("moot")
    await harness.create_app(app)
    await harness.deploy_image(app, f"{app}-d1", image(app, DIGEST_A))
    await harness.wait_submitted(f"{app}-d1")
    await harness.deploy_image(app, f"{app}-d2", image(app, DIGEST_B))
    await harness.wait_submitted(f"{app}-d2")
    command = Rollback(deploy_id=f"{app}-d1-rollback", app=app, to_version=None,
                       automatic=True, created_by="watcher", failed_deploy_id=f"{app}-d1")
    await harness.publish(command, f"{app}-d1:rollback")
    deploy = await harness.wait_deploy(f"{app}-d1-rollback", lambda d: d.terminal)
    assert deploy.status == "cancelled" and "no longer current" in (deploy.reason or "")
    assert [r.version for r in await harness.releases(app)] == [1, 2]


async def test_rollback_to_a_missing_release_fails_with_a_reason(
    harness: Harness, scheduler: SchedulerApp
) -> None:
    app = harness.unique("norelease")
    await harness.create_app(app)
    await harness.deploy_image(app, f"{app}-d1", image(app, DIGEST_A))
    await harness.wait_submitted(f"{app}-d1")
    await harness.create_deploy(f"{app}-r1", app, kind="rollback")
    await harness.publish(Rollback(deploy_id=f"{app}-r1", app=app, to_version=9,
                                   automatic=False, created_by="erin"), f"{app}-r1:release")
    deploy = await harness.wait_deploy(f"{app}-r1", lambda d: d.terminal)
    assert deploy.status == "failed" and deploy.reason is not None
    assert "v9" in deploy.reason and "does not exist" in deploy.reason
    (finished,) = await harness.wait_event(app, "deploy.finished")
    assert finished.status == "failed"


@pytest.fixture
async def checking_scheduler(
    sched_nats: str, sched_nomad: str, registry: str
) -> AsyncIterator[SchedulerApp]:
    settings = scheduler_settings(sched_nats, sched_nomad, check_rollback_image=True,
                                  registry=registry)
    async with create_app(settings) as app:
        yield app


async def test_rollback_to_a_release_whose_image_is_gone_fails(
    harness: Harness, checking_scheduler: SchedulerApp, registry: str
) -> None:
    app = harness.unique("imagegone")
    await harness.create_app(app)
    # Nothing was ever pushed under this name: the registry answers 404 for the manifest.
    await harness.deploy_image(app, f"{app}-d1", image(app, DIGEST_A, registry))
    await harness.wait_submitted(f"{app}-d1")
    await harness.deploy_image(app, f"{app}-d2", image(app, DIGEST_B, registry))
    await harness.wait_submitted(f"{app}-d2")
    await harness.create_deploy(f"{app}-r1", app, kind="rollback")
    await harness.publish(Rollback(deploy_id=f"{app}-r1", app=app, to_version=1,
                                   automatic=False, created_by="erin"), f"{app}-r1:release")
    deploy = await harness.wait_deploy(f"{app}-r1", lambda d: d.terminal)
    assert deploy.status == "failed"
    assert deploy.reason is not None and "no longer in the registry" in deploy.reason
    assert [r.version for r in await harness.releases(app)] == [1, 2]
