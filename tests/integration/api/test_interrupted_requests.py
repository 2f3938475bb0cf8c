"""A deploy request that died half-way, then retried with its Idempotency-Key.

The api's crash points (services.api.crashpoints) end the process; here the armed point
raises instead, so the request stops at exactly that step and leaves what a kill there
leaves (the claim with its command, the deploy record), while the api stays up for the
retry. tests/chaos/test_kills.py does the same with a real kill.
"""

from __future__ import annotations

from typing import Any

from services.api.crashpoints import Crashpoints
from services.api.intake import ORPHANED
from services.api.redrive import BuildRedrive
from shared.commands import build_decoder
from tests.integration.api.conftest import Api
from tests.integration.api.helpers import uniq
from tests.integration.api.test_deploys import deploys_of, events_of, work_of


class StopsAt(Crashpoints):
    """Stops the request at the armed point with an exception (a kill, minus the exit)."""

    def reach(self, name: str) -> None:
        if name == self.armed:
            raise RuntimeError(f"stopped at {name}")


async def _dies_at(api: Api, point: str, app: str, body: dict[str, Any], key: str) -> str:
    """POST a deploy that stops at `point`; return the id of the deploy it left behind."""
    intake = api.service.ctx.intake
    before = {d.id for d in await deploys_of(api, app)}
    intake.crashpoints = StopsAt(point)
    try:
        async with api.http.post(f"/v1/apps/{app}/deploys", json=body,
                                 headers={"Idempotency-Key": key}) as resp:
            assert resp.status == 500, await resp.text()
    finally:
        intake.crashpoints = Crashpoints()
    (left,) = [d for d in await deploys_of(api, app) if d.id not in before]
    assert left.status == "pending"
    return left.id


async def _listed(api: Api, app: str) -> list[str]:
    async with api.http.get(f"/v1/apps/{app}/deploys") as resp:
        return [d["id"] for d in (await resp.json())["deploys"]]


async def _accepted(api: Api, app: str, deploy_id: str) -> int:
    return sum(1 for e in await events_of(api, app)
               if e["type"] == "deploy.accepted" and e["deploy_id"] == deploy_id)


async def _latest(api: Api, app: str) -> str | None:
    async with api.http.get(f"/v1/apps/{app}") as resp:
        latest: str | None = (await resp.json())["latest_deploy_id"]
        return latest


async def test_a_retry_lists_and_queues_a_deploy_whose_request_died_after_its_record(
    api: Api,
) -> None:
    app = uniq()
    await api.create_app(app)
    body = {"image": "r.example.com/a:1"}
    async with api.http.post(f"/v1/apps/{app}/deploys", json={"image": "r.example.com/a:0"}
                             ) as resp:
        previous = (await resp.json())["id"]  # pending: the died one would supersede it
    died = await _dies_at(api, "after_deploy_record", app, body, "k-1")
    assert await _listed(api, app) == [previous]  # what the kill left: not on the app
    assert len(await work_of(api, app)) == 1

    async with api.http.post(f"/v1/apps/{app}/deploys", json=body,
                             headers={"Idempotency-Key": "k-1"}) as resp:
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["id"] == died
    assert await _listed(api, app) == [died, previous]
    assert await _latest(api, app) == died
    queued = [build_decoder.decode(m[2]).deploy_id for m in await work_of(api, app)]
    assert queued == [previous, died]
    async with api.http.get(f"/v1/apps/{app}/deploys/{previous}") as resp:
        view = await resp.json()
    assert (view["status"], view["superseded_by"]) == ("superseded", died)
    assert await _accepted(api, app, died) == 1

    # Retried again: nothing more is written or queued.
    async with api.http.post(f"/v1/apps/{app}/deploys", json=body,
                             headers={"Idempotency-Key": "k-1"}) as resp:
        assert resp.status == 200
    assert await _listed(api, app) == [died, previous]
    assert len(await work_of(api, app)) == 2
    assert await _accepted(api, app, died) == 1


async def test_a_retry_after_a_newer_deploy_supersedes_the_died_one_instead_of_queueing_it(
    api: Api,
) -> None:
    app = uniq()
    await api.create_app(app)
    body = {"image": "r.example.com/a:1"}
    died = await _dies_at(api, "after_deploy_record", app, body, "k-2")
    async with api.http.post(f"/v1/apps/{app}/deploys", json={"image": "r.example.com/a:2"}
                             ) as resp:
        assert resp.status == 202
        newer = (await resp.json())["id"]

    async with api.http.post(f"/v1/apps/{app}/deploys", json=body,
                             headers={"Idempotency-Key": "k-2"}) as resp:
        assert resp.status == 200, await resp.text()
        view = await resp.json()
    assert (view["id"], view["status"], view["superseded_by"]) == (died, "superseded", newer)
    assert await _latest(api, app) == newer
    assert await _listed(api, app) == [newer, died]
    queued = [build_decoder.decode(m[2]).deploy_id for m in await work_of(api, app)]
    assert queued == [newer]  # the died one never runs: latest wins
    steps = [(e["type"], e["deploy_id"]) for e in await events_of(api, app)
             if e["type"] in ("deploy.accepted", "deploy.superseded", "deploy.finished")]
    assert steps == [("deploy.accepted", newer), ("deploy.accepted", died),
                     ("deploy.superseded", died), ("deploy.finished", died)]


async def test_a_retry_after_the_publish_announces_the_deploy_once(api: Api) -> None:
    app = uniq()
    await api.create_app(app)
    body = {"image": "r.example.com/a:1"}
    died = await _dies_at(api, "after_publish", app, body, "k-3")
    assert await _listed(api, app) == [died]
    assert await _accepted(api, app, died) == 0  # what the kill left: queued, unannounced
    for _ in range(2):
        async with api.http.post(f"/v1/apps/{app}/deploys", json=body,
                                 headers={"Idempotency-Key": "k-3"}) as resp:
            assert resp.status == 200, await resp.text()
            assert (await resp.json())["id"] == died
    assert await _listed(api, app) == [died]
    assert len(await work_of(api, app)) == 1  # the same msg id: stored once
    assert await _accepted(api, app, died) == 1


async def test_a_died_request_never_retried_is_ended_failed_and_a_late_retry_is_new(
    api: Api,
) -> None:
    app, other = uniq(), uniq()
    await api.create_app(app)
    await api.create_app(other)
    async with api.http.post(f"/v1/apps/{other}/deploys", json={"image": "r.example.com/b:1"}
                             ) as resp:
        accepted = (await resp.json())["id"]  # pending and queued: not an orphan
    body = {"image": "r.example.com/a:1"}
    died = await _dies_at(api, "after_deploy_record", app, body, "k-4")

    ctx = api.service.ctx
    # orphan_after_s=0 stands for "the replay window has passed".
    sweeper = BuildRedrive(ctx.bus, ctx.apps, ctx.deploys, 0.001, orphan_after_s=0)
    ended = await sweeper.end_orphans()
    assert died in ended and accepted not in ended
    record = await ctx.deploys.get(died)
    assert record is not None
    assert (record.value.status, record.value.reason) == ("failed", ORPHANED)
    accepted_record = await ctx.deploys.get(accepted)
    assert accepted_record is not None and accepted_record.value.status == "pending"
    assert died not in await sweeper.end_orphans()  # once
    assert await work_of(api, app) == []  # nothing was queued for it

    async with api.http.post(f"/v1/apps/{app}/deploys", json=body,
                             headers={"Idempotency-Key": "k-4"}) as resp:
        assert resp.status == 202, await resp.text()
        retried = (await resp.json())["id"]
    assert retried != died
    queued = [build_decoder.decode(m[2]).deploy_id for m in await work_of(api, app)]
    assert queued == [retried]
