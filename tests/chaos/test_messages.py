"""Duplicate and poison messages on the work queues (reliability.md scenarios 1 and 7).

Duplicates: the same command published again with the same `Nats-Msg-Id` is dropped by
JetStream's dedupe window; with a new id it is delivered again, even while the first copy
is being worked on, and the handlers' CAS on the deploy record keeps it to one release,
one job version, one rollback. Poison (bytes that are no command, a command that fails
its schema, a command for a deploy that does not exist): dead-lettered with a reason, and
the next message on the same consumer is processed. A garbage deploy request from a NATS
client is refused on the app's timeline (`deploy.rejected`); one on a subject that names
no app is dead-lettered.
"""

from __future__ import annotations

import pytest

from shared import subjects
from shared.commands import BuildRequested, DeployImage, ImageSource, Rollback, encode_command
from tests.chaos.waiting import wait_for
from tests.chaos.world import World

pytestmark = pytest.mark.chaos


async def test_duplicate_commands_make_one_release_one_version_one_rollback(
    world: World,
) -> None:
    app = await world.create_app(tags=("v1", "v2", "v3"))
    assert (await world.wait_outcome(await world.deploy_ok(app, "v1"))).status == "healthy"

    # A build command twice more while the first copy is queued or running.
    deploy = await world.deploy_ok(app, "v2")
    build = encode_command(BuildRequested(
        deploy_id=deploy, app=app, source=ImageSource(image=world.image(app, "v2")),
        requested_by="chaos"))
    again = await world.publish(subjects.build_work_subject(app), build,
                                msg_id=f"{deploy}:build")
    assert again.duplicate, "the same msg id inside the dedupe window must be dropped"
    await world.publish(subjects.build_work_subject(app), build, msg_id=f"{deploy}:build:2")
    record = await world.wait_outcome(deploy)
    assert record.status == "healthy", record.reason
    assert record.image is not None and record.digest is not None

    # The release command again, with a new id, after the deploy is done.
    release = encode_command(DeployImage(
        deploy_id=deploy, app=app, image=record.image, digest=record.digest,
        description="duplicate", created_by="chaos"))
    await world.publish(subjects.release_work_subject(app), release,
                        msg_id=f"{deploy}:release:2")

    # A bad release, rolled back; then its Rollback command twice more.
    await world.make_bad(app, "crash")
    bad = await world.deploy_ok(app, "v3")
    outcome = await world.wait_outcome(bad)
    assert outcome.status == "rolled_back", outcome.reason
    assert outcome.rollback is not None
    rollback = encode_command(Rollback(
        deploy_id=f"{bad}-rollback", app=app, to_version=outcome.rollback.to_release,
        automatic=True, created_by="chaos", failed_deploy_id=bad))
    for msg_id in (f"{bad}:rollback", f"{bad}:rollback:2", f"{bad}:rollback:3"):
        await world.publish(subjects.release_work_subject(app), rollback, msg_id=msg_id)
    await world.stack_log_has("scheduler", "command skipped", f"{bad}-rollback")

    verdict = await world.assert_invariants()
    assert verdict.stats["nomad"][app]["job_versions"] == 4  # v1, v2, v3 (bad), rollback
    assert verdict.stats["automatic_rollbacks"] == 1


async def test_poison_messages_are_dead_lettered_and_the_next_message_flows(
    world: World,
) -> None:
    app = await world.create_app()
    build, release = subjects.build_work_subject(app), subjects.release_work_subject(app)
    poison = [
        (build, b"\x00\xffnot a command"),
        (build, b'{"tag": "build", "deploy_id": 7}'),
        (build, encode_command(BuildRequested(
            deploy_id="d-000000000000nosuchdeploy", app=app,
            source=ImageSource(image=world.image(app, "v1")), requested_by="chaos"))),
        (release, b"{{{"),
        (release, b'{"tag": "deploy_image", "deploy_id": ["x"]}'),
    ]
    sent = []
    for subject, data in poison:
        sent.append((subject, (await world.publish(subject, data)).seq))

    # Deploy requests from any NATS client: garbage is refused on the app's timeline; one
    # whose subject names no app cannot be answered anywhere and is dead-lettered.
    requests = subjects.deploy_request_subject(app)
    await world.publish(requests, b"\x00garbage", msg_id="chaos-garbage-request")
    nowhere = "shaman.requests.Not_An_App.deploy"
    sent.append((nowhere, (await world.publish(nowhere, b"{}", msg_id="chaos-nowhere")).seq))

    deploy = await world.deploy_ok(app)
    assert (await world.wait_outcome(deploy, timeout=60)).status == "healthy"
    rejected = await world.tap.wait_event(type="deploy.rejected", app=app,
                                          request_id="chaos-garbage-request")
    assert rejected["code"], rejected

    async def dead_lettered() -> list[dict[str, str]] | None:
        snap = await world.snapshot()
        found = {(m.headers.get("Shaman-Original-Subject"),
                  int(m.headers.get("Shaman-Original-Seq", -1))): m.headers
                 for m in snap.dead_letters}
        return [found[s] for s in sent] if all(s in found for s in sent) else None

    letters = await wait_for(dead_lettered, 30, "every poison message in the dead letters")
    assert all(h.get("Shaman-Reason") for h in letters), letters
    await world.assert_invariants()
