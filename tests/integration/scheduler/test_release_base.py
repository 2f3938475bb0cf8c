"""A new release is built on the newest release, not on a stale current one.

With two schedulers: one handles a config change and creates v2 from v1; the other
handles a deploy, finds v2 taken, moves to v3, and must not build v3 from v1 (the
app's current release until v2 is adopted), or the config change is lost when v3
wins. It waits (TemporaryError: the message is nak'ed and retried shortly) while v2 is
in flight, and builds on v2 once adopted. A release whose deploy ended without it
ever becoming current is history and does not hold the next one up.
"""

from __future__ import annotations

import pytest

from services.scheduler.app import SchedulerApp
from shared.commands import ChangeConfig, DeployImage, encode_command
from shared.errors import TemporaryError
from tests.integration.scheduler.conftest import Harness


def image(app: str, n: int) -> str:
    return f"127.0.0.1:5999/{app}@sha256:{n:064x}"


def deploy_image(app: str, deploy_id: str, n: int) -> DeployImage:
    return DeployImage(deploy_id=deploy_id, app=app, image=image(app, n),
                       digest=f"sha256:{n:064x}", description="", created_by="tester")


async def start_config_change(harness: Harness, scheduler: SchedulerApp, app: str,
                              deploy_id: str) -> ChangeConfig:
    """The other copy, halfway: deploy claimed, release v2 created, not adopted yet."""
    command = ChangeConfig(deploy_id=deploy_id, app=app, set={"FOO": "bar"}, unset=[],
                           created_by="tester")
    deploy = await harness.create_deploy(deploy_id, app, kind="config")
    assert await scheduler.handler._claim(deploy)
    release = await scheduler.handler._create_release(command, deploy, None)
    assert release.version == 2 and release.config == {"FOO": "bar"}
    return command


async def test_release_waits_for_the_newer_one_in_flight_and_builds_on_it(
    harness: Harness, scheduler: SchedulerApp
) -> None:
    app = harness.unique("base")
    await harness.create_app(app)
    await harness.deploy_image(app, f"{app}-d1", image(app, 1))
    await harness.wait_submitted(f"{app}-d1")
    config = await start_config_change(harness, scheduler, app, f"{app}-config")

    await harness.create_deploy(f"{app}-d2", app)
    with pytest.raises(TemporaryError):
        await scheduler.handler._release(deploy_image(app, f"{app}-d2", 2))
    assert [r.version for r in await harness.releases(app)] == [1, 2]

    # The config change's copy finishes (its command's redelivery adopts v2)...
    await harness.publish(config, f"{app}-config:release")
    await harness.wait_submitted(f"{app}-config")
    # ...and the deploy, retried, builds v3 on it.
    await harness.publish(deploy_image(app, f"{app}-d2", 2), f"{app}-d2:release")
    d2 = await harness.wait_submitted(f"{app}-d2")

    assert d2.release == 3
    v3 = await harness.release(app, 3)
    assert v3 is not None and v3.config == {"FOO": "bar"} and v3.image == image(app, 2)
    job = await harness.job(app)
    assert job is not None and job["Meta"]["shaman_release"] == "3"
    assert job["TaskGroups"][0]["Tasks"][0]["Env"]["FOO"] == "bar"


async def test_release_of_an_ended_deploy_does_not_hold_the_next_one_up(
    harness: Harness, scheduler: SchedulerApp
) -> None:
    app = harness.unique("base-orphan")
    await harness.create_app(app)
    await harness.deploy_image(app, f"{app}-d1", image(app, 1))
    await harness.wait_submitted(f"{app}-d1")
    config = await start_config_change(harness, scheduler, app, f"{app}-config")
    # Its command was dead-lettered: the deploy failed, v2 never became current.
    await scheduler.handler.on_dead_letter(encode_command(config), "gave up", {})
    assert (await harness.deploy(f"{app}-config")).status == "failed"

    await harness.deploy_image(app, f"{app}-d2", image(app, 2))
    d2 = await harness.wait_submitted(f"{app}-d2")

    assert d2.release == 3
    v3 = await harness.release(app, 3)
    assert v3 is not None and v3.config == {}  # built on v1, the last current one


async def test_image_deploys_in_a_burst_do_not_wait_for_each_other(
    harness: Harness, scheduler: SchedulerApp
) -> None:
    app = harness.unique("base-burst")
    await harness.create_app(app)
    await harness.deploy_image(app, f"{app}-d1", image(app, 1))
    await harness.wait_submitted(f"{app}-d1")
    # Another copy made v2 (an image deploy) and has not adopted it yet.
    other = deploy_image(app, f"{app}-d2", 2)
    d2 = await harness.create_deploy(f"{app}-d2", app)
    assert await scheduler.handler._claim(d2)
    await scheduler.handler._create_release(other, d2, None)

    await harness.create_deploy(f"{app}-d3", app)
    assert await scheduler.handler._release(deploy_image(app, f"{app}-d3", 3))  # no wait
    v3 = await harness.release(app, 3)
    assert v3 is not None and v3.image == image(app, 3)
