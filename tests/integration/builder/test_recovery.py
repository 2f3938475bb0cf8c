"""Redeliveries and give-ups: nothing built twice, nothing left hanging."""

from __future__ import annotations

import aiohttp
import pytest

from devstack.ports import free_port
from shared import subjects
from shared.commands import BuildRequested, ImageSource
from shared.events import BuildStarted, BuildSucceeded, DeployFinished
from shared.records import DeployRecord
from tests.integration.builder.helpers import Platform, Timeline, unique, wait_for

pytestmark = pytest.mark.podman

DIGEST = "sha256:" + "c" * 64


async def test_a_build_recorded_before_a_crash_is_released_not_rebuilt(
    builder, platform: Platform, seeded_registry: str
) -> None:
    """The copy died after recording the image and before publishing DeployImage."""
    app = unique("rec")
    await platform.create_app(app)
    deploy_id = unique("d")
    assert platform.deploys is not None
    image = f"{seeded_registry}/{app}@{DIGEST}"
    await platform.deploys.create(deploy_id, DeployRecord(
        id=deploy_id, app=app, kind="deploy", status="building", image=image, digest=DIGEST,
        description="Deploy abc1234",
    ))
    command = BuildRequested(deploy_id=deploy_id, app=app, requested_by="t",
                             source=ImageSource(image=f"{seeded_registry}/{app}:nope"))
    async with Timeline(platform.bus, app) as timeline, builder():
        await platform.bus.publish_command(subjects.build_work_subject(app), command,
                                           msg_id=f"{deploy_id}:build")
        releases = await wait_for(lambda: platform.release_commands(app), 20, what="release")
        await wait_for(lambda: timeline.of(BuildSucceeded), 10, what="build.succeeded")
    assert [(r.image, r.digest, r.description) for r in releases] == [
        (image, DIGEST, "Deploy abc1234")]
    assert timeline.of(BuildStarted) == []  # nothing was built or resolved again


async def test_an_unreachable_registry_is_retried_then_the_deploy_fails(
    builder, platform: Platform
) -> None:
    app = unique("down")
    await platform.create_app(app)
    nowhere = f"127.0.0.1:{free_port()}/{app}:v1"
    async with Timeline(platform.bus, app) as timeline, builder(max_deliver=2) as running:
        deploy_id = await platform.deploy(app, ImageSource(image=nowhere))
        record = await platform.wait_status(deploy_id, "failed", timeout=30)
        await wait_for(lambda: timeline.of(DeployFinished), 10, what="deploy.finished")
        assert running.consumer.dead_lettered == 1
    assert [e.attempt for e in timeline.of(BuildStarted)] == [1, 2]
    assert (record.reason or "").startswith("build could not be completed: gave up after 2")
    assert "registry is unavailable" in (record.reason or "")


async def test_health_and_metrics(builder) -> None:
    async with builder() as running, aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{running.health_port}"
        async with http.get(f"{base}/healthz") as response:
            assert response.status == 200
            assert (await response.json())["status"] == "ok"
        async with http.get(f"{base}/metrics") as response:
            assert "shaman_builder_builds_running" in await response.text()
