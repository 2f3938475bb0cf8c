"""Deploy requests published on NATS: same validation and auth as HTTP; rejections on the
timeline; redeliveries and re-publishes make one deploy."""

from __future__ import annotations

import json
from typing import Any

from services.api.nats_requests import DeployRequestHandler
from shared.bus.consumer import Delivery
from shared.events import DeployRequested, encode_event
from shared.events.deploy import GitRef
from shared.subjects import (
    STREAM_AUDIT,
    STREAM_BUILD_WORK,
    STREAM_EVENTS,
    build_work_subject,
    deploy_request_subject,
)
from tests.integration.api.conftest import ADMIN_TOKEN, Api
from tests.integration.api.helpers import stream_messages, uniq, wait_for


async def request(api: Api, app: str, payload: bytes, *, token: str | None = ADMIN_TOKEN,
                  msg_id: str | None = None) -> None:
    headers = {}
    if token is not None:
        headers["Shaman-Token"] = token
    if msg_id is not None:
        headers["Nats-Msg-Id"] = msg_id
    await api.nc.jetstream().publish(deploy_request_subject(app), payload,
                                     headers=headers or None)


async def timeline(api: Api, app: str) -> list[dict[str, Any]]:
    msgs = await stream_messages(api.nc.jetstream(), STREAM_EVENTS, f"shaman.events.{app}.>")
    return [json.loads(m[2]) for m in msgs]


async def deploys(api: Api, app: str) -> list[Any]:
    ctx = api.service.ctx
    return [e.value for e in await ctx.deploys.values()
            if e.value.app == app]


async def test_nats_request_becomes_a_deploy(api: Api) -> None:
    app = uniq()
    await api.create_app(app)
    await request(api, app, encode_event(DeployRequested(app=app, image="r.example.com/a:9")),
                  msg_id="ci-42")
    js = api.nc.jetstream()

    async def audited() -> bool:
        audit = await stream_messages(js, STREAM_AUDIT, "shaman.audit.deploy_request")
        return any(json.loads(m[2])["app"] == app for m in audit)

    await wait_for(audited, what="the audit entry, written last")
    (found,) = await deploys(api, app)
    assert found.source == "r.example.com/a:9"
    work = await stream_messages(js, STREAM_BUILD_WORK, build_work_subject(app))
    assert len(work) == 1
    events = await timeline(api, app)
    assert [e["type"] for e in events] == ["deploy.accepted"]


async def test_republished_request_beyond_the_dedupe_window_makes_one_deploy(api: Api) -> None:
    app = uniq()
    await api.create_app(app)
    payload = encode_event(DeployRequested(app=app, git=GitRef(url="https://h/x.git")))
    await request(api, app, payload, msg_id="same-1")
    await wait_for(lambda: deploys(api, app), what="the deploy")
    # Beyond JetStream's duplicate window the same Nats-Msg-Id would be stored again:
    # hand the handler that second copy directly; the api's 24 h idempotency record maps
    # it to the first deploy.
    handler = DeployRequestHandler(api.service.ctx)
    late_copy = Delivery(
        msg=None, subject=deploy_request_subject(app), data=payload,  # type: ignore[arg-type]
        headers={"Shaman-Token": ADMIN_TOKEN, "Nats-Msg-Id": "same-1"},
        num_delivered=1, stream_seq=10**9, last_attempt=False,
    )
    await handler(late_copy)
    await handler(late_copy)  # and a redelivery of it
    assert len(await deploys(api, app)) == 1
    await request(api, app, payload, msg_id="other-2")  # a new request
    await wait_for(lambda: _count(api, app, 2), what="two deploys")
    assert len(await deploys(api, app)) == 2


async def _count(api: Api, app: str, n: int) -> bool:
    return len(await deploys(api, app)) >= n


async def test_rejections_are_published_on_the_timeline(api: Api) -> None:
    app = uniq()
    other_team_app = uniq()
    await api.create_app(app)
    await api.create_app(other_team_app, team="blue")
    viewer = await api.token("viewer", ["default"])
    red = await api.token("deployer", ["red"])
    good = encode_event(DeployRequested(app=app, image="r/a:1"))
    cases = [
        (app, good, None, "m1", "unauthorized"),
        (app, good, "shm_invalid", "m2", "unauthorized"),
        (app, good, viewer, "m3", "forbidden"),
        (app, encode_event(DeployRequested(app=app, image="BAD REF")), ADMIN_TOKEN, "m4",
         "validation_failed"),
        (app, encode_event(DeployRequested(app=app)), ADMIN_TOKEN, "m5", "validation_failed"),
        (app, b"{not json", ADMIN_TOKEN, "m6", "validation_failed"),
        (app, encode_event(DeployRequested(app="someone-else", image="r/a:1")), ADMIN_TOKEN,
         "m7", "validation_failed"),
        (other_team_app, encode_event(DeployRequested(app=other_team_app, image="r/a:1")),
         red, "m8", "not_found"),
    ]
    for target, payload, token, msg_id, _ in cases:
        await request(api, target, payload, token=token, msg_id=msg_id)

    async def rejected() -> list[tuple[str, str]]:
        out = []
        for target in (app, other_team_app):
            for e in await timeline(api, target):
                if e["type"] == "deploy.rejected":
                    out.append((e["request_id"], e["code"]))
        return out if len(out) >= len(cases) else []

    got = dict(await wait_for(rejected, what="every rejection on the timeline"))
    assert got == {msg_id: code for _, _, _, msg_id, code in cases}
    assert await deploys(api, app) == []
    assert await deploys(api, other_team_app) == []
    for _, _, token, _, _ in cases:
        if token:
            for e in await timeline(api, app):
                assert token not in json.dumps(e)
