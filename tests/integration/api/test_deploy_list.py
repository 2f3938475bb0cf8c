"""GET /v1/apps/{app}/deploys reads the app record's `recent_deploys`, never the bucket."""

from __future__ import annotations

from datetime import timedelta

from services.api.ids import new_deploy_id
from shared.events.base import now
from shared.records import (
    RECENT_DEPLOYS_MAX,
    AppRecord,
    DeployRecord,
    RollbackState,
    remember_deploy,
)
from tests.integration.api.conftest import Api
from tests.integration.api.helpers import uniq


async def _ids(api: Api, app: str, query: str = "") -> list[str]:
    async with api.http.get(f"/v1/apps/{app}/deploys{query}") as resp:
        assert resp.status == 200, await resp.text()
        return [d["id"] for d in (await resp.json())["deploys"]]


async def test_every_deploy_kind_is_listed_newest_first_from_the_app_record(api: Api) -> None:
    app = uniq()
    await api.create_app(app)
    accepted: list[str] = []
    for method, path, body in (
        ("POST", "deploys", {"image": "r.example.com/a:1"}),
        ("PATCH", "config", {"A": "1"}),
        ("POST", "deploys", {"image": "r.example.com/a:2"}),
        ("PATCH", "config", {"A": None}),
    ):
        async with api.http.request(method, f"/v1/apps/{app}/{path}", json=body) as resp:
            assert resp.status == 202, await resp.text()
            accepted.append((await resp.json())["id"])
    newest_first = accepted[::-1]
    stored = await api.service.ctx.apps.get(app)
    assert stored is not None and stored.value.recent_deploys == newest_first
    assert await _ids(api, app) == newest_first
    assert await _ids(api, app, "?limit=2") == newest_first[:2]

    # A record of this app that the api never accepted is not found: no bucket scan.
    stray = new_deploy_id()
    await api.service.ctx.deploys.create(stray, DeployRecord(id=stray, app=app, kind="deploy"))
    assert await _ids(api, app) == newest_first


async def test_an_automatic_rollback_is_listed_beside_its_failed_deploy(api: Api) -> None:
    app = uniq()
    await api.create_app(app)
    async with api.http.post(f"/v1/apps/{app}/deploys", json={"image": "r.example.com/a:1"}) \
            as resp:
        failed_id = (await resp.json())["id"]
    # As the scheduler and the watcher would: the rollback deploy is created outside the
    # api and linked from the failed deploy's record.
    rollback_id = f"{failed_id}-rollback"
    later = now() + timedelta(seconds=1)
    await api.service.ctx.deploys.create(rollback_id, DeployRecord(
        id=rollback_id, app=app, kind="rollback", automatic=True, rollback_for=failed_id,
        created_at=later, updated_at=later))

    def link(record: DeployRecord) -> DeployRecord:
        record.rollback = RollbackState(requested_at=later, reason="crashed",
                                        deploy_id=rollback_id)
        return record

    await api.service.ctx.deploys.mutate(failed_id, link)
    assert await _ids(api, app) == [rollback_id, failed_id]
    assert await _ids(api, app, "?limit=1") == [rollback_id]


async def test_an_app_record_from_before_the_field_lists_nothing(api: Api) -> None:
    app = uniq()
    await api.create_app(app)
    old = new_deploy_id()
    await api.service.ctx.deploys.create(old, DeployRecord(id=old, app=app, kind="deploy"))

    def forget(record: AppRecord) -> AppRecord:
        record.latest_deploy_id = old
        record.recent_deploys = []
        return record

    await api.service.ctx.apps.mutate(app, forget)
    assert await _ids(api, app) == []


def test_remember_deploy_keeps_the_newest_bounded_and_unique() -> None:
    ids = [new_deploy_id(now_ms=1_700_000_000_000 + i) for i in range(RECENT_DEPLOYS_MAX + 5)]
    recent: list[str] = []
    for deploy_id in ids:
        recent = remember_deploy(recent, deploy_id)
    assert recent == ids[::-1][:RECENT_DEPLOYS_MAX]
    # Two writers racing may add out of order; the list still comes out newest first.
    assert remember_deploy([ids[5]], ids[6]) == [ids[6], ids[5]]
    assert remember_deploy([ids[6]], ids[5]) == [ids[6], ids[5]]
    assert remember_deploy([ids[6], ids[5]], ids[6]) == [ids[6], ids[5]]
