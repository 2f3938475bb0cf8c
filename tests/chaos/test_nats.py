"""NATS killed (-9) and started again under a load of deploys (reliability.md scenario 9).

While NATS is down the api must answer every call with 503 and Retry-After (never a 500,
never a 202 for work that was not queued); once it is back, every deploy it did accept
reaches exactly one outcome, the durable consumers resume from their ack floor and
in-flight work is redelivered without a second release or job version.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from tests.chaos.waiting import wait_for
from tests.chaos.world import World

pytestmark = pytest.mark.chaos

PACE_S = 0.25  # each client's think time between calls: the load's shape, not a wait


async def _load(world: World, app: str, stop: asyncio.Event) -> None:
    """Deploy v1, v2, v3, v1, ... and read the app back, until told to stop."""
    n = 0
    while not stop.is_set():
        await world.deploy(app, f"v{n % 3 + 1}", process=f"load-{app}")
        await world.client.get_app(app, process=f"load-{app}")
        n += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), PACE_S)


def _answers(world: World, status: int, after: float) -> int:
    return sum(1 for op in world.history.ops
               if op.status == status and op.invoke_t > after)


async def test_nats_killed_and_restarted_under_load(world: World) -> None:
    apps = [await world.create_app(tags=("v1", "v2", "v3")) for _ in range(4)]
    stop = asyncio.Event()
    load = [asyncio.create_task(_load(world, app, stop)) for app in apps]
    try:
        await wait_for(lambda: _answers(world, 202, 0) >= 6, 30, "deploys before the outage")
        down_at = world.history.now()
        await world.kill("nats")
        await wait_for(lambda: _answers(world, 503, down_at + 1.0) >= 8, 30,
                       "503s while NATS is down")
        await world.start("nats")
        up_at = world.history.now()
        await wait_for(lambda: _answers(world, 202, up_at) >= 6, 60,
                       "deploys after the restart")
    finally:
        stop.set()
        await asyncio.gather(*load)
    verdict = await world.assert_invariants(settle_timeout=120)
    assert verdict.stats["lost"] == 0 and verdict.stats["duplicated"] == 0
