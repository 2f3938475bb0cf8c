"""Nomad misbehaving, through localnomad's fault knobs (reliability.md scenarios 16, 18, 19).

5xx answers for the next N requests, every answer slow, the event stream cut again and
again with its buffer dropped (as after a server restart), a deployment that never ends,
and a register that commits but is answered only after the scheduler's timeout. Each
time the deploys still reach exactly one outcome, with one job version per release and
at most one rollback.
"""

from __future__ import annotations

import asyncio

import pytest

from shared.records import DeployRecord
from tests.chaos.conftest import slow
from tests.chaos.waiting import wait_for
from tests.chaos.world import World

pytestmark = pytest.mark.chaos


async def _healthy_app(world: World, *tags: str) -> str:
    app = await world.create_app(tags=("v1", *tags))
    assert (await world.wait_outcome(await world.deploy_ok(app, "v1"))).status == "healthy"
    return app


@pytest.mark.parametrize("status", [500, 503])
async def test_nomad_5xx_for_the_next_requests(world: World, status: int) -> None:
    app = await _healthy_app(world, "v2")
    # The scheduler's plan/register path gets the errors first (500 is Nomad's answer for
    # most failures; an unexplained one must be taken as temporary), then everyone's.
    await world.nomad.fault(prefix=f"/v1/job/{app}", method="POST", fail_next=4, status=status)
    await world.nomad.fault(prefix="/v1/", fail_next=12, status=status)
    world.fault("fault", "nomad", f"next 4 POSTs to the job, then 12 requests: {status}")
    deploy = await world.deploy_ok(app, "v2")
    record = await world.wait_outcome(deploy)
    await world.nomad.clear_faults()
    world.fault("heal", "nomad")
    assert record.status == "healthy", record.reason
    await world.assert_invariants()


async def test_nomad_slow_answers(world: World) -> None:
    app = await _healthy_app(world, "v2")
    await world.nomad.fault(prefix="/v1/", latency_ms=700)
    world.fault("fault", "nomad", "every answer 0.7 s late")
    try:
        deploy = await world.deploy_ok(app, "v2")
        record = await world.wait_outcome(deploy, timeout=120)
    finally:
        await world.nomad.clear_faults()
        world.fault("heal", "nomad")
    assert record.status == "healthy", record.reason
    await world.assert_invariants()


@slow
async def test_nomad_slow_answers_during_a_rollback(world: World) -> None:
    app = await _healthy_app(world, "v2")
    await world.nomad.fault(prefix="/v1/", latency_ms=1500)
    world.fault("fault", "nomad", "every answer 1.5 s late")
    try:
        await world.make_bad(app, "checks")
        deploy = await world.deploy_ok(app, "v2")
        record = await world.wait_outcome(deploy, timeout=150)
    finally:
        await world.nomad.clear_faults()
        world.fault("heal", "nomad")
    assert record.status == "rolled_back", record.reason
    await world.assert_invariants(settle_timeout=120)


async def test_event_stream_cut_and_buffer_dropped_during_rollouts(world: World) -> None:
    bad = await _healthy_app(world, "v2")
    good = await _healthy_app(world, "v2")
    await world.make_bad(bad, "crash")
    deploys = [await world.deploy_ok(bad, "v2"), await world.deploy_ok(good, "v2")]
    cuts = 0
    outcome = asyncio.gather(*(world.wait_outcome(d) for d in deploys))
    while not outcome.done() and cuts < 100:
        await world.nomad.cut_streams()
        await world.nomad.drop_buffer()
        world.fault("cut", "nomad-events", "streams cut, event buffer dropped")
        cuts += 1
        # The next cut after the watcher had a moment to reconnect and relist.
        await asyncio.wait([outcome], timeout=0.3)
    first, second = await outcome
    assert (first.status, second.status) == ("rolled_back", "healthy"), (first, second)
    assert cuts >= 2
    await world.assert_invariants()


@slow
async def test_deployment_that_never_ends_is_failed_by_the_platform(world: World) -> None:
    """Nomad's deployment watcher frozen (Nomad #11267) and a new allocation that never
    starts: Nomad never fails the deployment. Shaman's own deadline (progress deadline +
    grace) fails it and rolls back once.

    The watcher runs with its default fail-fast threshold here (2): with the chaos stack's
    1, the single unhealthy allocation would fail the deploy long before any deadline.
    """
    app = await _healthy_app(world, "v2")
    await world.restart("watcher", SHAMAN_FAIL_FAST_RESTARTS="2")
    await world.nomad.control("POST", "watcher", {"paused": True})
    world.fault("pause", "nomad-deployment-watcher")
    try:
        await world.make_bad(app, "hang")
        deploy = await world.deploy_ok(app, "v2")
        failed = await world.wait_status(deploy, "failed", timeout=60)
        assert "deadline" in (failed.reason or ""), failed.reason
        record = await world.wait_outcome(deploy)
        assert record.status == "rolled_back", record.reason
        await world.assert_invariants()
    finally:
        await world.nomad.control("POST", "watcher", {"paused": False})
        world.fault("resume", "nomad-deployment-watcher")
        await world.restart("watcher")


@slow
async def test_register_that_commits_after_the_scheduler_gave_up(world: World) -> None:
    """A register whose answer comes after the scheduler's timeout (an unknown outcome): the
    next pass must find the job registered (plan diff None) and record it, not register a
    second version.

    localnomad's hold rule runs the register (the version is committed at once) and sends
    the answer 7 s later, past the scheduler's 5 s Nomad timeout; only the first register
    is held, the plan (`/v1/job/:id/plan`) and every read are answered at once.
    """
    app = await _healthy_app(world, "v2")
    await world.nomad.fault(path=f"/v1/job/{app}", method="POST", respond_after_ms=7000,
                            times=1)
    world.fault("fault", "nomad", "the next register answered 7 s late (client timeout 5 s)")
    try:
        deploy = await world.deploy_ok(app, "v2")
        await world.stack_log_has("scheduler", f"register job {app}", "timed out", timeout=30)
        # The write the scheduler gave up on is in Nomad: version 1, carrying this deploy.
        job = await world.nomad.job(app)
        assert job is not None and job["Version"] == 1, job
        assert job["Meta"]["shaman_deploy_id"] == deploy, job["Meta"]
    finally:
        await world.nomad.clear_faults()
        world.fault("heal", "nomad")
    record = await world.wait_outcome(deploy)
    assert record.status == "healthy", record.reason

    # The watcher may call it healthy before the scheduler's next pass records the
    # submission it never got an answer for: wait for that record, then check it.
    async def submitted() -> DeployRecord | None:
        current = await world.record(deploy)
        return current if current is not None and current.job_version is not None else None

    record = await wait_for(submitted, 30, f"deploy {deploy} to record its submission")
    assert (record.job_version, record.job_modify_index) == (1, job["JobModifyIndex"]), record
    verdict = await world.assert_invariants()
    assert verdict.stats["nomad"][app]["job_versions"] == 2
