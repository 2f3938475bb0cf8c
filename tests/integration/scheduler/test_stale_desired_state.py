"""A reconcile pass that read the desired state before another copy moved it on.

With two schedulers, one copy's resync pass can read `current_release = N` while the
other adopts N+1 and registers it. The stale pass must not register N over N+1 (an
extra job version running old code, the newer Nomad deployment cancelled, a false
drift report): release numbers only grow, rollbacks included, so a job carrying a
newer release of the app always wins, and the stale pass is requeued to read again.
"""

from __future__ import annotations

from typing import Any, cast

import msgspec

from services.scheduler.app import SchedulerApp
from services.scheduler.reconciler import Reconciler
from services.scheduler.store import Stores
from shared.bus import TypedKV
from shared.records import AppRecord
from tests.integration.scheduler.conftest import Harness


def image(app: str, n: int) -> str:
    return f"127.0.0.1:5999/{app}@sha256:{n:064x}"


class FrozenApps:
    """The app bucket as a stale reader saw it: the same old entry, `reads` times
    (always when None), then the real bucket."""

    def __init__(self, entry: Any, real: Any = None, reads: int | None = None) -> None:
        self.entry = entry
        self.real = real
        self.reads = reads

    async def get(self, key: str) -> Any:
        if self.reads is None:
            return self.entry
        if self.reads > 0:
            self.reads -= 1
            return self.entry
        return await self.real.get(key)


async def test_stale_pass_never_registers_an_older_release(
    harness: Harness, scheduler: SchedulerApp
) -> None:
    app = harness.unique("stale")
    await harness.create_app(app)
    await harness.deploy_image(app, f"{app}-d1", image(app, 1))
    await harness.wait_submitted(f"{app}-d1")
    before = await harness.stores.apps.get(app)  # what the stale copy read: v1 current
    assert before is not None and before.value.current_release == 1

    await harness.deploy_image(app, f"{app}-d2", image(app, 2))
    await harness.wait_submitted(f"{app}-d2")
    job = await harness.job(app)
    assert job is not None and job["Meta"]["shaman_release"] == "2"
    versions = await harness.versions(app)

    # The other copy's pass, still holding v1 as the desired state.
    stale = Reconciler(
        scheduler.bus,
        Stores(apps=cast(TypedKV[AppRecord], FrozenApps(before)),
               releases=scheduler.stores.releases, deploys=scheduler.stores.deploys),
        scheduler.nomad, scheduler.reconciler.renderer, nomad_retry_deadline_s=900,
    )
    result = await stale.reconcile(app)

    assert result.requeue_after is not None  # read again soon, from fresh state
    assert len(await harness.versions(app)) == len(versions)  # no new job version
    job = await harness.job(app)
    assert job is not None and job["Meta"]["shaman_release"] == "2"
    assert job["Meta"]["shaman_deploy_id"] == f"{app}-d2"
    assert harness.events_of(app, "drift.detected") == []
    d2 = await harness.deploy(f"{app}-d2")
    assert d2.status == "deploying"


async def test_stale_pass_rereads_the_app_before_registering(
    harness: Harness, scheduler: SchedulerApp
) -> None:
    # Same release, older spec: the job's meta cannot tell, the fresh app record can.
    app = harness.unique("stale-scale")
    await harness.create_app(app)
    await harness.deploy_image(app, f"{app}-d1", image(app, 1))
    await harness.wait_submitted(f"{app}-d1")
    before = await harness.stores.apps.get(app)
    assert before is not None

    def scaled(record: AppRecord) -> AppRecord:
        record.spec = msgspec.structs.replace(record.spec, instances=3)
        return record

    await harness.stores.apps.mutate(app, scaled)
    await scheduler.queue.run(app, timeout_s=10)
    await harness.wait_job(app, lambda j: j["TaskGroups"][0]["Count"] == 3)
    versions = await harness.versions(app)

    stale = Reconciler(
        scheduler.bus,
        Stores(apps=cast(TypedKV[AppRecord], FrozenApps(before, scheduler.stores.apps, 1)),
               releases=scheduler.stores.releases, deploys=scheduler.stores.deploys),
        scheduler.nomad, scheduler.reconciler.renderer, nomad_retry_deadline_s=900,
    )
    result = await stale.reconcile(app)

    assert result.requeue_after is not None
    assert len(await harness.versions(app)) == len(versions)
    job = await harness.job(app)
    assert job is not None and job["TaskGroups"][0]["Count"] == 3
