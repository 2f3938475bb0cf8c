"""Every deploy the scheduler ends has exactly one `deploy.finished` on the timeline.

`deploy.finished` is the one honest outcome of a deploy; the api, the builder and the
watcher publish it for what they end, and so does the scheduler: for deploys it fails,
supersedes (latest release wins) or cancels (an automatic rollback with nothing left to
roll back). Msg id `<deploy_id>:finished.<status>` (shared.events.deploy.finished_msg_id),
as everywhere.
"""

from __future__ import annotations

from services.scheduler.app import SchedulerApp
from shared import subjects
from shared.commands import Rollback
from tests.integration.scheduler.conftest import Harness
from tests.unit.scheduler.waiting import wait_for


def image(app: str, n: int) -> str:
    return f"127.0.0.1:5999/{app}@sha256:{n:064x}"


async def work_queue_empty(h: Harness) -> bool:
    info = await h.bus.js.consumer_info(subjects.STREAM_RELEASE_WORK,
                                        subjects.CONSUMER_SCHEDULER)
    return info.num_pending == 0 and info.num_ack_pending == 0


def finished(h: Harness, app: str, deploy_id: str) -> list[object]:
    return [e for e in h.events_of(app, "deploy.finished") if e.deploy_id == deploy_id]


async def test_deploy_superseded_by_a_newer_release_finishes_once(
    harness: Harness, scheduler: SchedulerApp
) -> None:
    app = harness.unique("fin-super")
    await harness.create_app(app)
    await harness.deploy_image(app, f"{app}-d1", image(app, 1))
    await harness.wait_submitted(f"{app}-d1")
    await harness.deploy_image(app, f"{app}-d2", image(app, 2))
    await harness.wait_submitted(f"{app}-d2")
    # The same command again (a redelivery after the dedupe window): no second event.
    await harness.deploy_image(app, f"{app}-d2", image(app, 2), create_record=False,
                               msg_id="again")

    await wait_for(lambda: len(finished(harness, app, f"{app}-d1")) >= 1, 10,
                   message="deploy.finished for d1")
    await wait_for(lambda: work_queue_empty(harness), 15, message="commands acked")
    (event,) = finished(harness, app, f"{app}-d1")
    assert event.status == "superseded"  # type: ignore[attr-defined]
    assert event.reason == f"superseded by {app}-d2"  # type: ignore[attr-defined]
    assert finished(harness, app, f"{app}-d2") == []  # still rolling out


async def test_deploy_whose_release_lost_to_a_newer_one_finishes_superseded(
    harness: Harness, scheduler: SchedulerApp
) -> None:
    app = harness.unique("fin-lost")
    await harness.create_app(app)
    await harness.deploy_image(app, f"{app}-d1", image(app, 1))
    await harness.wait_submitted(f"{app}-d1")
    # d2's release v2 is made by another copy that stops before adopting it...
    old = await harness.create_deploy(f"{app}-d2", app)
    cmd = Rollback(deploy_id=f"{app}-d2", app=app, to_version=1, automatic=False,
                   created_by="tester", failed_deploy_id=None)
    assert await scheduler.handler._claim(old)
    target = await harness.release(app, 1)
    release = await scheduler.handler._create_release(cmd, old, target)
    # ...while d3 makes v3 current; then d2's copy resumes and finds v3 current.
    await harness.deploy_image(app, f"{app}-d3", image(app, 3))
    await harness.wait_submitted(f"{app}-d3")
    assert not await scheduler.handler._adopt(release, old)

    await wait_for(lambda: len(finished(harness, app, f"{app}-d2")) >= 1, 10,
                   message="deploy.finished for d2")
    (event,) = finished(harness, app, f"{app}-d2")
    assert event.status == "superseded" and event.release == 2  # type: ignore[attr-defined]


async def test_cancelled_automatic_rollback_finishes_once(
    harness: Harness, scheduler: SchedulerApp
) -> None:
    app = harness.unique("fin-cancel")
    await harness.create_app(app)
    await harness.deploy_image(app, f"{app}-d1", image(app, 1))
    await harness.wait_submitted(f"{app}-d1")
    await harness.deploy_image(app, f"{app}-d2", image(app, 2))
    await harness.wait_submitted(f"{app}-d2")
    command = Rollback(deploy_id=f"{app}-d1-rollback", app=app, to_version=None,
                       automatic=True, created_by="watcher", failed_deploy_id=f"{app}-d1")
    await harness.publish(command, f"{app}-d1:rollback")
    await harness.publish(command, "again")  # redelivered: no second event

    await wait_for(lambda: len(finished(harness, app, f"{app}-d1-rollback")) >= 1, 10,
                   message="deploy.finished for the rollback")
    await wait_for(lambda: work_queue_empty(harness), 15, message="commands acked")
    (event,) = finished(harness, app, f"{app}-d1-rollback")
    assert event.status == "cancelled"  # type: ignore[attr-defined]
    assert "no longer current" in (event.reason or "")  # type: ignore[attr-defined]
