"""POST/GET deploys: sources, bad input, idempotency, latest wins, uploads, build logs."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from typing import Any

import pytest

from services.api.app import create_app
from shared.commands import BuildRequested, GitSource, UploadSource, build_decoder
from shared.records import DeployRecord, transition
from shared.subjects import (
    OBJECT_STORE_BUILD_LOGS,
    STREAM_BUILD_WORK,
    STREAM_EVENTS,
    build_work_subject,
)
from tests.integration.api.conftest import ADMIN_TOKEN, Api, api_settings
from tests.integration.api.helpers import stream_messages, uniq


async def deploys_of(api: Api, app: str) -> list[DeployRecord]:
    ctx = api.service.ctx
    return [e.value for e in await ctx.deploys.values()
            if e.value.app == app]


async def work_of(api: Api, app: str) -> list[tuple[int, str, bytes, dict[str, str]]]:
    return await stream_messages(api.nc.jetstream(), STREAM_BUILD_WORK, build_work_subject(app))


async def events_of(api: Api, app: str) -> list[dict[str, Any]]:
    msgs = await stream_messages(api.nc.jetstream(), STREAM_EVENTS, f"shaman.events.{app}.>")
    return [json.loads(m[2]) for m in msgs]


def tarball(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


async def test_git_deploy(api: Api) -> None:
    app = uniq()
    await api.create_app(app)
    async with api.http.post(f"/v1/apps/{app}/deploys", json={
            "git": {"url": "file:///srv/repos/web.git", "ref": "release/1.2"},
            "description": "first cut"}) as resp:
        assert resp.status == 202, await resp.text()
        deploy = await resp.json()
        assert resp.headers["Location"] == f"/v1/apps/{app}/deploys/{deploy['id']}"
    assert deploy["description"] == "first cut"
    assert deploy["source"] == "git file:///srv/repos/web.git@release/1.2"
    (_, _, data, _), = await work_of(api, app)
    command = build_decoder.decode(data)
    assert isinstance(command.source, GitSource)
    assert command.source.git.ref == "release/1.2"


async def test_empty_body_deploys_the_apps_own_source(api: Api) -> None:
    app = uniq()
    await api.create_app(app, git={"url": "https://git.example.com/a.git", "ref": "main"})
    async with api.http.post(f"/v1/apps/{app}/deploys", json={}) as resp:
        assert resp.status == 202, await resp.text()
    bare = uniq()
    await api.create_app(bare, image="example.com/x")  # a repository without tag
    async with api.http.post(f"/v1/apps/{bare}/deploys", json={}) as resp:
        assert resp.status == 422
        assert (await resp.json())["error"]["details"][0]["loc"] == "image"


BAD_DEPLOYS = [
    ({"image": "Bad Ref"}, "image"),
    ({"image": ""}, "image"),
    ({"image": "repo@sha256:abc"}, "image"),
    ({"image": 42}, "image"),
    ({"image": "a/b:1", "git": {"url": "https://h/x.git"}}, "git"),
    ({"git": {"ref": "main"}}, "git.url"),
    ({"git": {"url": "https://h/x.git", "ref": "-bad"}}, "git.ref"),
    ({"imag": "a/b:1"}, "imag"),
]


@pytest.mark.parametrize(("body", "loc"), BAD_DEPLOYS)
async def test_bad_deploys_name_the_field_write_and_publish_nothing(
    api: Api, body: dict[str, Any], loc: str
) -> None:
    app = uniq()
    await api.create_app(app)
    async with api.http.post(f"/v1/apps/{app}/deploys", json=body) as resp:
        assert resp.status == 422, await resp.text()
        error = (await resp.json())["error"]
    assert loc in [d["loc"] for d in error["details"]], error
    assert await deploys_of(api, app) == []
    assert await work_of(api, app) == []
    assert await events_of(api, app) == []


async def test_deploy_to_unknown_app_is_404_and_bad_json_400(api: Api) -> None:
    ghost = uniq()
    async with api.http.post(f"/v1/apps/{ghost}/deploys", json={"image": "a/b:1"}) as resp:
        assert resp.status == 404
    async with api.http.post(f"/v1/apps/{ghost}/deploys", data=b"{nope",
                             headers={"Content-Type": "application/json"}) as resp:
        assert resp.status == 400
    assert await deploys_of(api, ghost) == []
    async with api.http.get(f"/v1/apps/{ghost}/deploys/d-nothing") as resp:
        assert resp.status == 404


async def test_unknown_deploy_id_is_404(api: Api) -> None:
    app = uniq()
    await api.create_app(app)
    for deploy_id in ("d-000000000000aaaaaaaaaa", "bad.id", "x" * 300):
        async with api.http.get(f"/v1/apps/{app}/deploys/{deploy_id}") as resp:
            assert resp.status == 404, deploy_id


async def test_registry_allow_list(api: Api, api_nats: Any, openbao: Any) -> None:
    settings = api_settings(api_nats.url, openbao, allowed_registries="good.example.com")
    async with create_app(settings) as service:
        import aiohttp

        async with aiohttp.ClientSession(base_url=service.url, headers={
                "Authorization": f"Bearer {ADMIN_TOKEN}"}) as http:
            app = uniq()
            async with http.post("/v1/apps", json={"name": app}) as resp:
                assert resp.status == 201
            async with http.post(f"/v1/apps/{app}/deploys",
                                 json={"image": "evil.example.com/x:1"}) as resp:
                assert resp.status == 422
                assert "allow-list" in (await resp.json())["error"]["message"]
            async with http.post(f"/v1/apps/{app}/deploys",
                                 json={"image": "good.example.com/x:1"}) as resp:
                assert resp.status == 202


async def test_idempotency_key_returns_the_first_deploy(api: Api) -> None:
    app = uniq()
    await api.create_app(app)
    key = {"Idempotency-Key": "ci-run-1234"}
    body = {"image": "r.example.com/a:1"}
    async with api.http.post(f"/v1/apps/{app}/deploys", json=body, headers=key) as resp:
        assert resp.status == 202
        first = await resp.json()
    for _ in range(3):
        async with api.http.post(f"/v1/apps/{app}/deploys", json=body, headers=key) as resp:
            assert resp.status == 200
            assert (await resp.json())["id"] == first["id"]
    async with api.http.post(f"/v1/apps/{app}/deploys", json={"image": "r.example.com/a:2"},
                             headers=key) as resp:
        assert resp.status == 422
        assert (await resp.json())["error"]["details"][0]["loc"] == "Idempotency-Key"
    assert [d.id for d in await deploys_of(api, app)] == [first["id"]]
    assert len(await work_of(api, app)) == 1
    # The same key on another app is another request.
    other = uniq()
    await api.create_app(other)
    async with api.http.post(f"/v1/apps/{other}/deploys", json=body, headers=key) as resp:
        assert resp.status == 202


async def test_concurrent_requests_with_one_key_make_one_deploy(api: Api) -> None:
    import asyncio

    app = uniq()
    await api.create_app(app)

    async def post() -> tuple[int, str | None]:
        async with api.http.post(f"/v1/apps/{app}/deploys", json={"image": "r/a:1"},
                                 headers={"Idempotency-Key": "same"}) as resp:
            body = await resp.json()
            return resp.status, body.get("id")

    results = await asyncio.gather(*(post() for _ in range(8)))
    ids = {i for status, i in results if status in (200, 202)}
    assert len(ids) == 1
    assert all(status in (200, 202, 409) for status, _ in results)
    assert len(await deploys_of(api, app)) == 1
    assert len(await work_of(api, app)) == 1


async def test_latest_wins_supersedes_pending_and_building(api: Api) -> None:
    app = uniq()
    await api.create_app(app)
    ids = []
    for tag in ("1", "2"):
        async with api.http.post(f"/v1/apps/{app}/deploys",
                                 json={"image": f"r/a:{tag}"}) as resp:
            ids.append((await resp.json())["id"])
    # The builder moved the second one to building; a third deploy supersedes it too.
    deploys = api.service.ctx.deploys
    await deploys.mutate(ids[1], lambda d: d if transition(d, "building") else None)
    async with api.http.post(f"/v1/apps/{app}/deploys", json={"image": "r/a:3"}) as resp:
        ids.append((await resp.json())["id"])
    for old, new in ((ids[0], ids[1]), (ids[1], ids[2])):
        async with api.http.get(f"/v1/apps/{app}/deploys/{old}") as resp:
            view = await resp.json()
        assert view["status"] == "superseded"
        assert view["superseded_by"] == new
    async with api.http.get(f"/v1/apps/{app}") as resp:
        assert (await resp.json())["latest_deploy_id"] == ids[2]
    events = await events_of(api, app)
    superseded = [e["deploy_id"] for e in events if e["type"] == "deploy.superseded"]
    finished = [(e["deploy_id"], e["status"]) for e in events if e["type"] == "deploy.finished"]
    assert superseded == ids[:2]
    assert finished == [(ids[0], "superseded"), (ids[1], "superseded")]
    async with api.http.get(f"/v1/apps/{app}/deploys") as resp:
        listed = [d["id"] for d in (await resp.json())["deploys"]]
    assert listed == list(reversed(ids))  # newest first
    async with api.http.get(f"/v1/apps/{app}/deploys?limit=1") as resp:
        assert [d["id"] for d in (await resp.json())["deploys"]] == [ids[2]]
    async with api.http.get(f"/v1/apps/{app}/deploys?limit=0") as resp:
        assert resp.status == 422


async def test_deploying_deploys_are_not_superseded_by_the_api(api: Api) -> None:
    app = uniq()
    await api.create_app(app)
    async with api.http.post(f"/v1/apps/{app}/deploys", json={"image": "r/a:1"}) as resp:
        first = (await resp.json())["id"]
    await api.service.ctx.deploys.mutate(
        first, lambda d: d if transition(d, "deploying") else None)
    async with api.http.post(f"/v1/apps/{app}/deploys", json={"image": "r/a:2"}) as resp:
        assert resp.status == 202
    async with api.http.get(f"/v1/apps/{app}/deploys/{first}") as resp:
        assert (await resp.json())["status"] == "deploying"  # the scheduler's to decide


async def test_tarball_upload_is_stored_and_queued(api: Api) -> None:
    app = uniq()
    await api.create_app(app)
    data = tarball({"Containerfile": b"FROM scratch\n", "app.txt": b"hi"})
    async with api.http.post(f"/v1/apps/{app}/deploys", data=data,
                             headers={"Content-Type": "application/gzip",
                                      "Idempotency-Key": "upload-1"}) as resp:
        assert resp.status == 202, await resp.text()
        deploy = await resp.json()
    (_, _, raw, _), = await work_of(api, app)
    command = build_decoder.decode(raw)
    assert isinstance(command, BuildRequested)
    assert isinstance(command.source, UploadSource)
    store = api.service.ctx.sources
    stored = await store.get(command.source.object_name)
    assert stored.data == data
    assert command.source.size == len(data)
    assert command.source.object_name.startswith(f"{app}/")
    # The same upload again with the same key: the same deploy, nothing new.
    async with api.http.post(f"/v1/apps/{app}/deploys", data=data,
                             headers={"Content-Type": "application/gzip",
                                      "Idempotency-Key": "upload-1"}) as resp:
        assert resp.status == 200
        assert (await resp.json())["id"] == deploy["id"]


async def test_upload_too_large_is_413_before_storing(
    api: Api, api_nats: Any, openbao: Any
) -> None:
    import aiohttp

    settings = api_settings(api_nats.url, openbao, max_upload_bytes=10_000)
    async with create_app(settings) as service, aiohttp.ClientSession(
            base_url=service.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as http:
        app = uniq()
        async with http.post("/v1/apps", json={"name": app}) as resp:
            assert resp.status == 201
        big = gzip.compress(bytes(range(256)) * 200, compresslevel=0)
        assert len(big) > 10_000
        async with http.post(f"/v1/apps/{app}/deploys", data=big,
                             headers={"Content-Type": "application/gzip"}) as resp:
            assert resp.status == 413
        # streamed without Content-Length too
        async def chunks():  # type: ignore[no-untyped-def]
            for i in range(0, len(big), 4096):
                yield big[i:i + 4096]

        async with http.post(f"/v1/apps/{app}/deploys", data=chunks(),
                             headers={"Content-Type": "application/gzip"}) as resp:
            assert resp.status == 413
        async with http.post(f"/v1/apps/{app}/deploys", data=b"not gzip",
                             headers={"Content-Type": "application/gzip"}) as resp:
            assert resp.status == 422
    assert await deploys_of(api, app) == []
    assert await work_of(api, app) == []


async def test_build_log_is_404_until_written(api: Api) -> None:
    app = uniq()
    await api.create_app(app)
    async with api.http.post(f"/v1/apps/{app}/deploys", json={"image": "r/a:1"}) as resp:
        deploy_id = (await resp.json())["id"]
    async with api.http.get(f"/v1/apps/{app}/builds/{deploy_id}/log") as resp:
        assert resp.status == 404
    store = await api.nc.jetstream().object_store(OBJECT_STORE_BUILD_LOGS)
    await store.put(f"{app}/{deploy_id}", b"STEP 1/2: FROM scratch\nok\n")
    async with api.http.get(f"/v1/apps/{app}/builds/{deploy_id}/log") as resp:
        assert resp.status == 200
        assert resp.content_type == "text/plain"
        assert "STEP 1/2" in await resp.text()


async def test_team_build_cap(api: Api, api_nats: Any, openbao: Any) -> None:
    import aiohttp

    settings = api_settings(api_nats.url, openbao, team_build_cap=1)
    async with create_app(settings) as service, aiohttp.ClientSession(
            base_url=service.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as http:
        team = uniq("team")
        first, second, elsewhere = uniq(), uniq(), uniq()
        for name, t in ((first, team), (second, team), (elsewhere, "other")):
            async with http.post("/v1/apps", json={"name": name, "team": t}) as resp:
                assert resp.status == 201
        async with http.post(f"/v1/apps/{first}/deploys", json={"image": "r/a:1"}) as resp:
            assert resp.status == 202
            building = (await resp.json())["id"]
        async with http.post(f"/v1/apps/{second}/deploys", json={"image": "r/a:1"}) as resp:
            assert resp.status == 429
            assert int(resp.headers["Retry-After"]) >= 1
            assert (await resp.json())["error"]["code"] == "too_many_builds"
        # the same app may replace its own build (latest wins); other teams are not capped
        async with http.post(f"/v1/apps/{first}/deploys", json={"image": "r/a:2"}) as resp:
            assert resp.status == 202
            building = (await resp.json())["id"]
        async with http.post(f"/v1/apps/{elsewhere}/deploys", json={"image": "r/a:1"}) as resp:
            assert resp.status == 202
        await service.ctx.deploys.mutate(
            building, lambda d: d if transition(d, "deploying") else None)
        async with http.post(f"/v1/apps/{second}/deploys", json={"image": "r/a:1"}) as resp:
            assert resp.status == 202
    assert await deploys_of(api, second) != []
