"""A builder paused past its ack wait, then resumed (reliability.md scenario 4).

Builder 1 takes the build; the registry is paused so the build (its image lookup) is in
flight, and builder 1 is then stopped (SIGSTOP) with the lookup sent. The image tag is
pushed again with new content, and builder 2 starts. Once the ack wait has passed without
heartbeats the message is delivered to builder 2 (attempt 2), which resolves the *new*
digest, records it and releases it. Builder 1 then resumes (SIGCONT) holding the *old*
digest: its result must lose the compare-and-set on the deploy record and be discarded,
even though its late ack may be accepted. The release and the Nomad job pin builder 2's
digest; there is one release, one job version, one outcome.
"""

from __future__ import annotations

import pytest

from tests.chaos.world import World

pytestmark = pytest.mark.chaos


async def test_paused_builder_loses_to_the_second_delivery(world: World) -> None:
    app = await world.create_app()
    first_digest = await world.push(app, "v1", "first content")
    await world.pause("registry")
    try:
        deploy = await world.deploy_ok(app)
        started = await world.tap.wait_event(type="build.started", deploy_id=deploy)
        assert started["builder"] == "builder-1" and started["attempt"] == 1
        # Builder 1 sends its lookup right after build.started; let it reach the registry.
        await world.stack_log_has("builder", deploy, "build started")
        await world.pause("builder")
    finally:
        await world.resume("registry")
    second_digest = await world.push(app, "v1", "second content")
    assert second_digest != first_digest
    world.fault("retag", f"chaos/{app}:v1", f"{first_digest} → {second_digest}")

    try:
        await world.add_builder("builder-2")
        redelivered = await world.tap.wait_event(type="build.started", deploy_id=deploy,
                                                 attempt=2, timeout=60)
        assert redelivered["builder"] == "builder-2"
        record = await world.wait_outcome(deploy)
    finally:
        await world.resume("builder")
    assert record.status == "healthy", record.reason
    assert record.digest == second_digest

    # Builder 1 comes back with the stale lookup (or none): it must not change anything.
    await world.stack_log_has("builder", deploy, "no longer wanted", timeout=60)
    verdict = await world.assert_invariants()
    snap = await world.snapshot()
    [release] = [r for r in snap.releases.values() if r.app == app]
    assert release.digest == second_digest and first_digest not in release.image
    job = await world.nomad.job(app)
    assert job is not None
    assert second_digest in job["TaskGroups"][0]["Tasks"][0]["Config"]["image"]
    assert verdict.stats["nomad"][app]["job_versions"] == 1

