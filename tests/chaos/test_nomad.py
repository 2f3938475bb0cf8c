"""Nomad misbehaving, through localnomad's fault knobs (reliability.md scenarios 16, 18, 19).

5xx answers for the next N requests, every answer slow, the event stream cut again and
again with its buffer dropped (as after a server restart), and a deployment that never
ends. Each time the deploys still reach exactly one outcome, with one job version per
release and at most one rollback.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.chaos.conftest import slow
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
@pytest.mark.xfail(strict=True, reason=(
    "needs a localnomad knob that runs a request and then holds its answer (e.g. faults "
    "{'path': exact, 'respond_after_ms': N}); prefix rules delay before the handler and "
    "cannot tell register (POST /v1/job/:id) from plan (POST /v1/job/:id/plan)"))
async def test_register_that_commits_after_the_scheduler_gave_up(world: World) -> None:
    """A register whose answer comes after the scheduler's timeout (an unknown outcome): the
    next pass must find the job registered (plan diff None) and record it, not register a
    second version."""
    app = await _healthy_app(world, "v2")
    await world.nomad.fault(path=f"/v1/job/{app}", method="POST", respond_after_ms=7000)
    world.fault("fault", "nomad", "register answered after the client's timeout")
    deploy = await world.deploy_ok(app, "v2")
    try:
        await world.stack_log_has("scheduler", "register job", "timed out", timeout=30)
    finally:
        await world.nomad.clear_faults()
    assert (await world.wait_outcome(deploy)).status == "healthy"
    verdict = await world.assert_invariants()
    assert verdict.stats["nomad"][app]["job_versions"] == 2
