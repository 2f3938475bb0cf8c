"""SIGKILL of each service at chosen points of a deploy (reliability.md scenarios 3, 5, 6, 16).

Where a service has named crash points (`SHAMAN_CRASHPOINT`: the scheduler's
after_release_created / after_app_updated / after_nomad_register, the builder's
after_build_recorded / after_release_command, the api's after_deploy_record /
after_publish, the watcher's after_healthy / after_outcome / after_rollback_command) the
service is restarted armed and exits with 137 at exactly that point; elsewhere the kill
is timed on the timeline event (or work message) that precedes the step. Every scenario
then restarts the service and checks the invariants over the whole run: one outcome per
deploy, one job version per release, at most one rollback.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.chaos.waiting import wait_for
from tests.chaos.world import World

pytestmark = pytest.mark.chaos


async def _healthy_app(world: World, *tags: str) -> str:
    """An app whose v1 is deployed and healthy (a rollback target)."""
    app = await world.create_app(tags=("v1", *tags))
    first = await world.deploy_ok(app, "v1")
    assert (await world.wait_outcome(first)).status == "healthy"
    return app


# -- no fault: the control ---------------------------------------------------------------


async def test_good_then_bad_release_is_rolled_back_once(world: World) -> None:
    app = await world.create_app(tags=("v1", "v2"))
    first = await world.deploy_ok(app, "v1")
    assert (await world.wait_outcome(first)).status == "healthy"
    await world.make_bad(app, "crash")
    second = await world.deploy_ok(app, "v2")
    record = await world.wait_outcome(second)
    verdict = await world.assert_invariants()
    assert record.rollback is not None
    assert (await world.record(second)).status == "rolled_back"  # type: ignore[union-attr]
    assert verdict.stats["automatic_rollbacks"] == 1


# -- scheduler -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "point", ["after_release_created", "after_app_updated", "after_nomad_register"])
async def test_scheduler_crash_point_gives_one_release_and_one_job_version(
    world: World, point: str
) -> None:
    app = await world.create_app()
    await world.restart("scheduler", SHAMAN_CRASHPOINT=point)
    deploy = await world.deploy_ok(app)
    await world.wait_crashed("scheduler")
    await world.start("scheduler")
    assert (await world.wait_outcome(deploy)).status == "healthy"
    verdict = await world.assert_invariants()
    nomad = verdict.stats["nomad"][app]
    assert (nomad["job_versions"], nomad["releases_in_nomad"], nomad["releases"]) == (1, 1, 1)


async def test_scheduler_crash_after_registering_a_bad_release(world: World) -> None:
    """The scheduler dies right after registering a release that then fails; the watcher
    fails it and asks for the rollback while the scheduler is down. Back up, the scheduler
    must still record the failed deploy's submission (its release ran as a job version)
    as well as roll back once."""
    app = await _healthy_app(world, "v2")
    await world.restart("scheduler", SHAMAN_CRASHPOINT="after_nomad_register")
    await world.make_bad(app, "crash")
    deploy = await world.deploy_ok(app, "v2")
    await world.wait_crashed("scheduler")
    failed = await world.wait_status(deploy, "failed", timeout=60)
    assert failed.rollback is not None
    await world.start("scheduler")
    record = await world.wait_outcome(deploy)
    assert record.status == "rolled_back", record.reason
    await world.assert_invariants()


async def test_scheduler_killed_when_the_release_command_arrives(world: World) -> None:
    app = await _healthy_app(world, "v2")
    await world.make_bad(app, "checks")
    deploy = await world.deploy_ok(app, "v2")
    subject = f"shaman.work.release.{app}"
    await world.tap.wait_message(lambda m: m.subject == subject and deploy.encode() in m.data,
                                 30, "the DeployImage command")
    await world.kill("scheduler")
    await world.start("scheduler")
    record = await world.wait_outcome(deploy)
    assert record.status == "rolled_back", record.reason
    await world.assert_invariants()


# -- builder -------------------------------------------------------------------------------


async def test_builder_killed_mid_build_rebuilds_once(world: World) -> None:
    app = await world.create_app()
    # A paused registry holds the build (the image lookup) in flight: the kill lands
    # mid-build for certain, not after a build that took a millisecond.
    await world.pause("registry")
    try:
        deploy = await world.deploy_ok(app)
        await world.tap.wait_event(type="build.started", deploy_id=deploy)
        await world.kill("builder")
    finally:
        await world.resume("registry")
    await world.start("builder")
    record = await world.wait_outcome(deploy)
    assert record.status == "healthy", record.reason
    assert [h.status for h in record.history].count("building") == 1
    attempts = [e.get("attempt") for e in world.tap.find(type="build.started",
                                                          deploy_id=deploy)]
    assert attempts == [1, 2], attempts
    await world.assert_invariants()


async def test_builder_killed_after_the_build_succeeded(world: World) -> None:
    app = await world.create_app()
    deploy = await world.deploy_ok(app)
    await world.tap.wait_event(type="build.succeeded", deploy_id=deploy)
    await world.kill("builder")
    await world.start("builder")
    assert (await world.wait_outcome(deploy)).status == "healthy"
    await world.assert_invariants()


@pytest.mark.parametrize("point", ["after_build_recorded", "after_release_command"])
async def test_builder_crash_point_gives_one_release_and_one_job_version(
    world: World, point: str
) -> None:
    """The builder dies with the image recorded on the deploy but nothing published, or
    with DeployImage published but the build message not acked. The message comes back
    to the restarted builder, which must release the recorded image (not build again)
    and queue DeployImage at most once."""
    app = await world.create_app()
    await world.restart("builder", SHAMAN_CRASHPOINT=point)
    deploy = await world.deploy_ok(app)
    await world.wait_crashed("builder")
    crashed = await world.record(deploy)
    assert crashed is not None and crashed.digest is not None, crashed
    await world.start("builder")
    record = await world.wait_outcome(deploy)
    assert record.status == "healthy", record.reason
    assert record.digest == crashed.digest  # the recorded image is the one released
    assert [h.status for h in record.history].count("building") == 1
    # One build ran: the redelivery found the image on the record and only released it.
    attempts = [e.get("attempt") for e in world.tap.find(type="build.started",
                                                          deploy_id=deploy)]
    assert attempts == [1], attempts
    verdict = await world.assert_invariants()
    nomad = verdict.stats["nomad"][app]
    assert (nomad["job_versions"], nomad["releases_in_nomad"], nomad["releases"]) == (1, 1, 1)
    # The redelivery's build.succeeded is deduplicated by its message id.
    succeeded = (await world.snapshot()).events_of(deploy, "build.succeeded")
    assert len(succeeded) == 1, succeeded
    # The one build's log was stored before the kill: the redelivery builds nothing.
    build_log = await world.client.call("build_log", "GET",
                                        f"/v1/apps/{app}/builds/{deploy}/log", app=app)
    assert build_log.status == 200, build_log.text


# -- watcher -------------------------------------------------------------------------------


@pytest.mark.parametrize("point", ["after_healthy", "after_outcome", "after_rollback_command"])
async def test_watcher_crash_point_gives_one_outcome_and_one_rollback(
    world: World, point: str
) -> None:
    app = await _healthy_app(world, "v2")
    await world.restart("watcher", SHAMAN_CRASHPOINT=point)
    if point != "after_healthy":
        await world.make_bad(app, "crash")
    deploy = await world.deploy_ok(app, "v2")
    await world.wait_crashed("watcher")
    await world.start("watcher")
    want = "healthy" if point == "after_healthy" else "rolled_back"
    record = await world.wait_outcome(deploy)
    assert record.status == want, record.reason
    verdict = await world.assert_invariants()
    assert verdict.stats["automatic_rollbacks"] == (0 if point == "after_healthy" else 1)


async def test_watcher_killed_once_the_rollout_is_submitted(world: World) -> None:
    app = await _healthy_app(world, "v2")
    await world.make_bad(app, "crash")
    deploy = await world.deploy_ok(app, "v2")
    await world.tap.wait_event(type="rollout.submitted", deploy_id=deploy)
    await world.kill("watcher")
    await world.start("watcher")
    record = await world.wait_outcome(deploy)
    assert record.status == "rolled_back", record.reason
    await world.assert_invariants()


# -- api -----------------------------------------------------------------------------------


async def test_api_killed_during_a_burst_of_deploys(world: World) -> None:
    """Clients with Idempotency-Keys retry every call whose outcome they do not know; after
    the api comes back each key names exactly one deploy, and it reaches its outcome."""
    apps = [await world.create_app() for _ in range(8)]
    api_back = asyncio.Event()

    async def client(name: str, mine: list[str]) -> None:
        for app in mine:
            key = f"key-{app}"
            for _ in range(60):  # bounded: a definite answer comes once the api is back
                op = await world.deploy(app, key=key, process=name)
                if op.outcome == "ok":
                    break
                if op.outcome == "info" or op.status in (409, 503):
                    # Unknown, or the first try's claim is still in flight: retry the same
                    # key once the api answers again.
                    await wait_for(api_back.is_set, 60, "the api to be back")
                    # As a client would: honour the answer's Retry-After before retrying.
                    await asyncio.sleep(min(float(op.headers.get("Retry-After", 0.2)), 2.0))
                    continue
                raise AssertionError(f"{app}: {op.status} {op.text}")

    clients = [asyncio.create_task(client(f"client-{i}", apps[i::3])) for i in range(3)]
    await world.tap.wait_event(type="deploy.accepted", timeout=30)
    await world.kill("api")
    await world.start("api")
    api_back.set()
    await asyncio.gather(*clients)
    verdict = await world.assert_invariants()
    assert verdict.stats["accepted"] == len(apps)
    assert verdict.stats["healthy"] == len(apps)


@pytest.mark.parametrize("point", ["after_deploy_record", "after_publish"])
async def test_api_crash_point_with_a_client_retrying_its_key(world: World, point: str) -> None:
    """The api dies with the deploy record written but nothing queued, or with the
    command queued but no answer sent. The client does not know the outcome and retries
    with the same Idempotency-Key once the api is back: the key names exactly one deploy,
    it is listed on the app, and it reaches its outcome with one release."""
    app = await world.create_app()
    await world.restart("api", SHAMAN_CRASHPOINT=point)
    key = f"key-{app}"
    first = await world.deploy(app, key=key)
    assert first.outcome == "info", f"the api answered {first.status} {first.text}"
    await world.wait_crashed("api")
    await world.start("api")
    retry = await world.deploy(app, key=key)
    assert retry.status == 200 and retry.deploy_id, f"{retry.status} {retry.text}"
    record = await world.wait_outcome(retry.deploy_id)
    assert record.status == "healthy", record.reason
    listed = await world.client.call("list_deploys", "GET", f"/v1/apps/{app}/deploys",
                                     app=app)
    assert listed.status == 200, listed.text
    ids = [d["id"] for d in listed.body["deploys"]]
    assert ids == [retry.deploy_id], ids
    verdict = await world.assert_invariants()
    assert verdict.stats["accepted"] == 1
    nomad = verdict.stats["nomad"][app]
    assert (nomad["job_versions"], nomad["releases_in_nomad"], nomad["releases"]) == (1, 1, 1)
