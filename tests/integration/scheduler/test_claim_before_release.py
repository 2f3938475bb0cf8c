"""A deploy superseded while the scheduler handles its command gets no release.

The api supersedes a `pending`/`building` deploy when a newer source deploy comes in.
If that happens after the scheduler read the deploy as `building` but before it made
the release current, the superseded deploy's image must not become the app's current
release (unmonitored, with a deploy record that can no longer move). The scheduler
claims the deploy (`→ deploying`, CAS) before creating the release, so one of the two
writers wins cleanly.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from services.scheduler.app import SchedulerApp
from services.scheduler.release_commands import ReleaseCommandHandler
from services.scheduler.store import Stores
from shared.bus import Delivery, TypedKV
from shared.commands import DeployImage, encode_command
from shared.records import DeployRecord, transition
from tests.integration.scheduler.conftest import Harness


class SupersededAfterRead:
    """The deploy bucket, where the api supersedes `deploy_id` right after the scheduler
    first reads it (the scheduler keeps the `building` record it read)."""

    def __init__(self, real: TypedKV[DeployRecord], deploy_id: str, by: str) -> None:
        self.real = real
        self.deploy_id = deploy_id
        self.by = by
        self.done = False

    async def get(self, key: str) -> Any:
        entry = await self.real.get(key)
        if key == self.deploy_id and not self.done:
            self.done = True

            def supersede(record: DeployRecord) -> DeployRecord | None:
                # What services/api/intake.py does for the previous latest deploy.
                if record.status not in ("pending", "building"):
                    return None
                if not transition(record, "superseded", f"superseded by {self.by}"):
                    return None
                record.superseded_by = self.by
                return record

            await self.real.mutate(key, supersede)
        return entry

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


async def test_deploy_superseded_after_it_was_read_gets_no_release(
    harness: Harness, scheduler: SchedulerApp
) -> None:
    app = harness.unique("claim")
    await harness.create_app(app)
    deploy_a, deploy_b = f"{app}-a", f"{app}-b"
    await harness.create_deploy(deploy_a, app, status="building")
    deploys = SupersededAfterRead(scheduler.stores.deploys, deploy_a, deploy_b)
    handler = ReleaseCommandHandler(
        scheduler.bus,
        Stores(apps=scheduler.stores.apps, releases=scheduler.stores.releases,
               deploys=cast(TypedKV[DeployRecord], deploys)),
        scheduler.queue, registry=None, reconcile_wait_s=5,
    )
    digest = f"sha256:{1:064x}"
    command = DeployImage(deploy_id=deploy_a, app=app, image=f"127.0.0.1:5999/{app}@{digest}",
                          digest=digest, description="", created_by="tester")

    await handler.handle(cast(Delivery, SimpleNamespace(data=encode_command(command))))

    assert deploys.done
    assert await harness.releases(app) == []
    record = await harness.app(app)
    assert record.current_release is None and record.active_deploy_id is None
    assert await harness.job(app) is None
    a = await harness.deploy(deploy_a)
    assert a.status == "superseded" and a.superseded_by == deploy_b and a.release is None
    assert harness.events_of(app, "release.created") == []
