"""The safety nets that do not depend on any message arriving.

- `resync_loop`: every `resync_interval_s` (and once at start) every app is enqueued,
  so a lost message, a crash between steps, or a job changed by hand in Nomad is
  corrected within one interval (controller-runtime's periodic resync).
- `redrive_loop`: every `redrive_interval_s` the deploy records are swept (reliability
  scenario 10): a deploy `deploying` whose job was never submitted
  (`job_modify_index` unset) has its app enqueued again; deploys `pending`/`building`
  with no change for `stuck_deploy_after_s` are reported (log + gauge). Re-publishing
  their build work is not done here yet (a later issue).

Both loops survive failures (NATS down): they log, wait for the next round, and go on.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

from services.scheduler import metrics
from services.scheduler.store import Stores
from services.scheduler.workqueue import WorkQueue
from shared.errors import ShamanError
from shared.events import now
from shared.logging import get_logger

log = get_logger(__name__)


async def resync_once(stores: Stores, queue: WorkQueue) -> int:
    keys = await stores.apps.keys()
    for key in keys:
        queue.add(key)
    metrics.QUEUE_DEPTH.set(queue.depth())
    return len(keys)


async def _pause(stopping: asyncio.Event, seconds: float) -> None:
    """Wait `seconds`, or less if the service is stopping."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), seconds)


# Both loops also check `stopping`, not only cancellation: Python 3.11's asyncio.wait_for
# (used throughout nats-py) can swallow a cancel that races a reply, and a loop that
# lost its cancel must still end when the service stops.


async def resync_loop(
    stores: Stores, queue: WorkQueue, interval_s: float, stopping: asyncio.Event
) -> None:
    while not stopping.is_set():
        try:
            count = await resync_once(stores, queue)
            log.debug("resync enqueued apps", apps=count)
        except (ShamanError, OSError) as exc:
            log.warning("resync failed; next round will retry", error=str(exc))
        await _pause(stopping, interval_s)


async def redrive_once(stores: Stores, queue: WorkQueue, stuck_after_s: float) -> int:
    """Enqueue apps with unsubmitted deploys; return how many deploys were re-driven."""
    redriven = 0
    stuck = 0
    cutoff = now() - timedelta(seconds=stuck_after_s)
    for entry in await stores.deploys.values():
        deploy = entry.value
        if deploy.status == "deploying" and deploy.job_modify_index is None:
            queue.add(deploy.app)
            redriven += 1
        elif deploy.status in ("pending", "building") and deploy.updated_at < cutoff:
            stuck += 1
            log.warning("deploy stuck before release", app=deploy.app, deploy_id=deploy.id,
                        status=deploy.status, since=deploy.updated_at.isoformat())
    metrics.STUCK_DEPLOYS.set(stuck)
    if redriven:
        log.info("re-drove unsubmitted deploys", deploys=redriven)
    return redriven


async def redrive_loop(
    stores: Stores, queue: WorkQueue, interval_s: float, stuck_after_s: float,
    stopping: asyncio.Event,
) -> None:
    while not stopping.is_set():
        await _pause(stopping, interval_s)
        if stopping.is_set():
            return
        try:
            await redrive_once(stores, queue, stuck_after_s)
        except (ShamanError, OSError) as exc:
            log.warning("re-drive sweep failed; next round will retry", error=str(exc))
