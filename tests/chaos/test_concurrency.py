"""Concurrent deploys of one app (reliability.md scenario 12): latest wins.

Eight deploys of one app race through the api at once. The api makes each the app's
`latest_deploy_id` in turn and supersedes the previous one while it is still pending or
building; one that got further is superseded by the scheduler when a newer release
becomes current. Exactly one ends healthy, the latest; every other one ends superseded
(or, had it finished before the latest was even accepted, healthy); Nomad runs the
winner's release and never saw a version twice.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.chaos.world import World

pytestmark = pytest.mark.chaos

RACERS = 8


async def test_concurrent_deploys_of_one_app_latest_wins(world: World) -> None:
    tags = tuple(f"v{i}" for i in range(1, RACERS + 1))
    app = await world.create_app(tags=tags)
    ops = await asyncio.gather(*(world.deploy(app, tag, process=f"racer-{tag}")
                                 for tag in tags))
    assert all(op.status == 202 for op in ops), [(op.status, op.text) for op in ops]
    verdict = await world.assert_invariants()

    snap = await world.snapshot()
    winner = snap.apps[app].latest_deploy_id
    ids = {op.deploy_id for op in ops}
    assert winner is not None and winner in ids
    outcomes = {d: snap.deploys[d].status for d in ids if d is not None}
    assert outcomes[winner] == "healthy", outcomes
    accepted_seq = {e["deploy_id"]: e["_seq"] for e in snap.timeline
                    if e.get("type") == "deploy.accepted"}
    finished_seq = {e["deploy_id"]: e["_seq"] for e in snap.timeline
                    if e.get("type") == "deploy.finished"}
    for deploy_id, status in outcomes.items():
        if deploy_id == winner:
            continue
        if status == "healthy":
            # Only a deploy that was done before the winner existed may stay healthy.
            assert finished_seq[deploy_id] < accepted_seq[winner], (deploy_id, outcomes)
        else:
            assert status == "superseded", (deploy_id, status, outcomes)
    job = await world.nomad.job(app)
    assert job is not None
    assert job["Meta"]["shaman_deploy_id"] == winner
    assert verdict.stats["nomad"][app]["releases_in_nomad"] <= RACERS


async def test_a_deploy_superseded_while_it_rolls_out_ends_once(world: World) -> None:
    """The scheduler's side of latest wins: deploy A is already rolling out (its task is
    slow to start) when B's release becomes current. A ends superseded, once, with one
    `deploy.finished`; B ends healthy; Nomad runs B."""
    app = await world.create_app(tags=("v1", "v2", "v3"))
    assert (await world.wait_outcome(await world.deploy_ok(app, "v1"))).status == "healthy"
    version = await world.next_job_version(app)
    await world.nomad.behave(job=app, job_version=version, start_delay_s=5)
    world.fault("slow-start", app, f"job version {version} starts after 5 s")
    first = await world.deploy_ok(app, "v2")
    await world.tap.wait_event(type="rollout.submitted", deploy_id=first)
    second = await world.deploy_ok(app, "v3")
    assert (await world.wait_outcome(second)).status == "healthy"
    assert (await world.wait_outcome(first)).status == "superseded"
    await world.assert_invariants()
    job = await world.nomad.job(app)
    assert job is not None and job["Meta"]["shaman_deploy_id"] == second
