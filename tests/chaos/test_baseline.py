"""No faults: a good deploy, a bad one rolled back. The harness's own sanity check."""

from __future__ import annotations

import pytest

from tests.chaos.world import World

pytestmark = pytest.mark.chaos


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
