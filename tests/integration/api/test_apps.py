"""/v1/apps: happy paths and bad input; a bad request writes nothing and publishes nothing."""

from __future__ import annotations

from typing import Any

import pytest

from shared.records import AppRecord
from shared.subjects import (
    STREAM_RELEASE_WORK,
    release_work_subject,
)
from tests.integration.api.conftest import Api
from tests.integration.api.helpers import stream_messages, uniq


async def app_keys(api: Api) -> set[str]:
    return {e.key for e in await api.service.ctx.apps.values()}


async def error_of(resp: Any) -> dict[str, Any]:
    body: dict[str, Any] = await resp.json()
    assert set(body) == {"error"}, body
    assert {"code", "message"} <= set(body["error"])
    return body["error"]  # type: ignore[no-any-return]


async def test_create_with_every_field(api: Api) -> None:
    name = uniq()
    body = {
        "name": name, "team": "core", "image": "registry.example.com:5000/team/web:1.2",
        "port": 9000, "instances": 3, "cpu_mhz": 250, "memory_mb": 256,
        "command": "/bin/server", "args": ["--port", "9000"],
        "health": {"path": "/ready", "interval_s": 1.5, "timeout_s": 1.0},
        "rollout": {"canaries": 1, "max_parallel": 2, "min_healthy_time_s": 0.2,
                    "healthy_deadline_s": 5, "progress_deadline_s": 10},
        "domains": ["web.example.com"], "auto_rollback": False,
        "git": {"url": "https://git.example.com/web.git", "ref": "v1.2"},
        "dockerfile": "docker/Containerfile",
    }
    async with api.http.post("/v1/apps", json=body) as resp:
        assert resp.status == 201, await resp.text()
        view = await resp.json()
    for key, value in body.items():
        assert view[key] == value, key
    stored = await api.service.ctx.apps.get(name)
    assert stored is not None and isinstance(stored.value, AppRecord)
    assert stored.value.spec.process.rollout.min_healthy_time_s == 0.2
    assert stored.value.created_by.startswith("bootstrap-admin")


async def test_duplicate_name_is_409(api: Api) -> None:
    name = uniq()
    await api.create_app(name)
    async with api.http.post("/v1/apps", json={"name": name}) as resp:
        assert resp.status == 409
        assert (await error_of(resp))["code"] == "already_exists"


BAD_BODIES = [
    ({"name": "Not_A_Label"}, "name"),
    ({"name": "-x"}, "name"),
    ({"name": "a" * 64}, "name"),
    ({}, "name"),
    ({"name": "ok", "port": "80"}, "port"),  # wrong type: no coercion
    ({"name": "ok", "port": 0}, "port"),
    ({"name": "ok", "instances": 1000}, "instances"),
    ({"name": "ok", "memory_mb": 1}, "memory_mb"),
    ({"name": "ok", "image": "UPPER/case"}, "image"),
    ({"name": "ok", "image": "nginx@sha256:short"}, "image"),
    ({"name": "ok", "image": "nginx:"}, "image"),
    ({"name": "ok", "health": {"path": "no-slash"}}, "health.path"),
    ({"name": "ok", "health": {"interval_s": 1, "timeout_s": 5}}, "health.timeout_s"),
    # Nomad's minimums for checks: 1 s interval, 1 s timeout.
    ({"name": "ok", "health": {"interval_s": 0.5}}, "health.interval_s"),
    ({"name": "ok", "health": {"interval_s": 5, "timeout_s": 0.5}}, "health.timeout_s"),
    # Nomad's update block: min_healthy_time < healthy_deadline < progress_deadline (or 0).
    ({"name": "ok", "rollout": {"min_healthy_time_s": 400}}, "rollout.healthy_deadline_s"),
    ({"name": "ok", "rollout": {"healthy_deadline_s": 700}}, "rollout.progress_deadline_s"),
    ({"name": "ok", "rollout": {"healthy_deadline_s": 0}}, "rollout.healthy_deadline_s"),
    ({"name": "ok", "rollout": {"max_parallel": 0}}, "rollout.max_parallel"),
    ({"name": "ok", "rollout": {"canaries": -1}}, "rollout.canaries"),
    ({"name": "ok", "git": {"url": "ftp://x/y"}}, "git.url"),
    ({"name": "ok", "git": {"url": "http://169.254.169.254/x"}}, "git.url"),
    ({"name": "ok", "git": {"url": "https://user:pw@host/x.git"}}, "git.url"),
    ({"name": "ok", "git": {"url": "https://h/x.git", "ref": "../etc"}}, "git.ref"),
    ({"name": "ok", "domains": ["Bad Domain"]}, "domains.0"),
    ({"name": "ok", "dockerfile": "../Containerfile"}, "dockerfile"),
    ({"name": "ok", "privileged": True}, "privileged"),  # unknown fields are refused
    ({"name": "ok", "health": {"path": "/", "script": "x"}}, "health.script"),
]


@pytest.mark.parametrize(("body", "loc"), BAD_BODIES)
async def test_bad_app_bodies_name_the_field_and_write_nothing(
    api: Api, body: dict[str, Any], loc: str
) -> None:
    if body.get("name") == "ok":
        body = {**body, "name": uniq("bad")}
    before = await app_keys(api)
    async with api.http.post("/v1/apps", json=body) as resp:
        assert resp.status == 422, await resp.text()
        error = await error_of(resp)
    assert error["code"] == "validation_failed"
    assert loc in [d["loc"] for d in error["details"]], error
    assert await app_keys(api) == before


async def test_malformed_json_and_empty_body_are_400(api: Api) -> None:
    before = await app_keys(api)
    for raw in (b"{not json", b"", b"[1, 2"):
        async with api.http.post("/v1/apps", data=raw,
                                 headers={"Content-Type": "application/json"}) as resp:
            assert resp.status == 400
            error = await error_of(resp)
            assert error["code"] == "invalid_json"
            assert error["details"][0]["loc"] == "body"
    async with api.http.post("/v1/apps", json=[1, 2]) as resp:
        assert resp.status == 422
    assert await app_keys(api) == before


async def test_oversized_json_is_413(api: Api) -> None:
    huge = {"name": uniq(), "args": ["x" * 4000] * 400}
    async with api.http.post("/v1/apps", json=huge) as resp:
        assert resp.status == 413
        assert (await error_of(resp))["code"] == "payload_too_large"


async def test_missing_or_bad_token_is_401_and_writes_nothing(api: Api) -> None:
    before = await app_keys(api)
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic abc"}):
        async with api.client(None) as http, \
                http.post("/v1/apps", json={"name": uniq()}, headers=headers) as resp:
            assert resp.status == 401
            assert (await error_of(resp))["code"] == "unauthorized"
    assert await app_keys(api) == before


async def test_unknown_app_and_unknown_route_are_404_json(api: Api) -> None:
    async with api.http.get(f"/v1/apps/{uniq()}") as resp:
        assert resp.status == 404
        assert (await error_of(resp))["code"] == "not_found"
    async with api.http.get("/v1/nothing-here") as resp:
        assert resp.status == 404
        assert (await error_of(resp))["code"] == "not_found"
    async with api.http.put("/v1/apps") as resp:
        assert resp.status == 405
        assert (await error_of(resp))["code"] == "method_not_allowed"


async def test_patch_non_process_fields_is_200_without_deploy(api: Api) -> None:
    name = uniq()
    await api.create_app(name)
    async with api.http.patch(f"/v1/apps/{name}", json={"auto_rollback": False,
                                                        "image": "x.io/a/b"}) as resp:
        assert resp.status == 200, await resp.text()
        body = await resp.json()
    assert body["deploy"] is None
    assert body["app"]["auto_rollback"] is False
    assert body["app"]["image"] == "x.io/a/b"


async def test_patch_process_fields_of_a_released_app_starts_a_process_deploy(api: Api) -> None:
    name = uniq()
    await api.create_app(name)
    await _pretend_released(api, name)
    async with api.http.patch(f"/v1/apps/{name}", json={"port": 9090,
                                                        "health": {"path": "/hz"}}) as resp:
        assert resp.status == 202, await resp.text()
        body = await resp.json()
    assert body["app"]["port"] == 9090
    assert body["deploy"]["kind"] == "process"
    msgs = await stream_messages(api.nc.jetstream(), STREAM_RELEASE_WORK,
                                 release_work_subject(name))
    assert [m[3]["Nats-Msg-Id"] for m in msgs] == [f"{body['deploy']['id']}:release"]


async def _pretend_released(api: Api, name: str) -> None:
    """Write release v1 and point the app at it, as the scheduler would."""
    from shared.records import ReleaseRecord, release_key

    app = await api.service.ctx.apps.get(name)
    assert app is not None
    await api.service.ctx.releases.create(release_key(name, 1), ReleaseRecord(
        app=name, version=1, kind="deploy", description="Deploy x", created_by="t",
        deploy_id="d-x", image="r/x@sha256:" + "0" * 64, digest="sha256:" + "0" * 64,
        process=app.value.spec.process, config={"A": "1"}))

    def point(record: AppRecord) -> AppRecord:
        record.current_release = 1
        record.last_healthy_release = 1
        record.next_release = 2
        return record

    await api.service.ctx.apps.mutate(name, point)


async def test_patch_instances_sends_scale(api: Api) -> None:
    name = uniq()
    await api.create_app(name)
    async with api.http.patch(f"/v1/apps/{name}", json={"instances": 4}) as resp:
        assert resp.status == 200
    msgs = await stream_messages(api.nc.jetstream(), STREAM_RELEASE_WORK,
                                 release_work_subject(name))
    assert len(msgs) == 1 and b'"scale"' in msgs[0][2]


async def test_patch_bad_input(api: Api) -> None:
    name = uniq()
    await api.create_app(name)
    before = await api.service.ctx.apps.get(name)
    for body, loc in (({"port": None}, "port"), ({"name": "x"}, "name"),
                      ({"instances": -1}, "instances"),
                      ({"health": {"interval_s": 0.2}}, "health.interval_s"),
                      ({"health": {"timeout_s": 0.2}}, "health.timeout_s"),
                      ({"rollout": {"healthy_deadline_s": 30, "progress_deadline_s": 20}},
                       "rollout.progress_deadline_s")):
        async with api.http.patch(f"/v1/apps/{name}", json=body) as resp:
            assert resp.status == 422, body
            assert (await error_of(resp))["details"][0]["loc"] == loc
    after = await api.service.ctx.apps.get(name)
    assert before is not None and after is not None and after.revision == before.revision


async def test_delete_marks_destroyed_asks_scheduler_and_removes_records(api: Api) -> None:
    name = uniq()
    await api.create_app(name)
    await _pretend_released(api, name)
    async with api.http.post(f"/v1/apps/{name}/deploys", json={"image": "r/x:1"}) as resp:
        assert resp.status == 202
    async with api.http.delete(f"/v1/apps/{name}") as resp:
        assert resp.status == 202, await resp.text()
        assert (await resp.json()) == {"app": name, "state": "destroyed"}
    ctx = api.service.ctx
    tombstone = await ctx.apps.get(name)
    assert tombstone is not None and tombstone.value.state == "destroyed"
    assert await ctx.releases.values(name) == []
    assert [e for e in await ctx.deploys.values()
            if e.value.app == name] == []
    msgs = await stream_messages(api.nc.jetstream(), STREAM_RELEASE_WORK,
                                 release_work_subject(name))
    assert any(b'"reconcile"' in m[2] and b"destroyed" in m[2] for m in msgs)
    async with api.http.get(f"/v1/apps/{name}") as resp:
        assert resp.status == 404
    async with api.http.get("/v1/apps") as resp:
        assert name not in [a["name"] for a in (await resp.json())["apps"]]
    async with api.http.post(f"/v1/apps/{name}/deploys", json={"image": "r/x:2"}) as resp:
        assert resp.status == 404
    async with api.http.delete(f"/v1/apps/{name}") as resp:
        assert resp.status == 404
    recreated = await api.create_app(name)  # the name is free again
    assert recreated["state"] == "new" and recreated["current_release"] is None
