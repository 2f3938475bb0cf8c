"""Config, secrets, rollback, scale and release history through the api."""

from __future__ import annotations

from typing import Any

import hvac
import pytest

from shared.commands import ChangeConfig, ChangeSecrets, Rollback, Scale, release_decoder
from shared.records import ReleaseRecord, release_key
from shared.subjects import (
    KV_APPS,
    KV_DEPLOYS,
    KV_IDEMPOTENCY,
    STREAM_RELEASE_WORK,
    release_work_subject,
)
from tests.conftest import VaultServer
from tests.integration.api.conftest import Api
from tests.integration.api.helpers import stream_messages, uniq
from tests.integration.api.test_apps import _pretend_released


async def release_commands(api: Api, app: str) -> list[Any]:
    msgs = await stream_messages(api.nc.jetstream(), STREAM_RELEASE_WORK,
                                 release_work_subject(app))
    return [release_decoder.decode(m[2]) for m in msgs]


async def test_config_change_is_a_config_deploy_with_one_command(api: Api) -> None:
    app = uniq()
    await api.create_app(app)
    async with api.http.patch(f"/v1/apps/{app}/config",
                              json={"LOG_LEVEL": "debug", "OLD": None}) as resp:
        assert resp.status == 202, await resp.text()
        deploy = await resp.json()
    assert deploy["kind"] == "config"
    assert deploy["description"] == "Set LOG_LEVEL; Unset OLD"
    (command,) = await release_commands(api, app)
    assert isinstance(command, ChangeConfig)
    assert command.set == {"LOG_LEVEL": "debug"} and command.unset == ["OLD"]
    assert command.deploy_id == deploy["id"]


async def test_bad_config_names_and_values(api: Api) -> None:
    app = uniq()
    await api.create_app(app)
    for body, loc in (({"1BAD": "x"}, "1BAD"), ({"OK": 5}, "OK"), ({}, "body"),
                      ({"A-B": "x"}, "A-B")):
        async with api.http.patch(f"/v1/apps/{app}/config", json=body) as resp:
            assert resp.status == 422, body
            locs = [d["loc"] for d in (await resp.json())["error"]["details"]]
            assert any(loc in x for x in locs), (body, locs)
    assert await release_commands(api, app) == []


async def test_get_config_reads_the_current_release(api: Api) -> None:
    app = uniq()
    await api.create_app(app)
    async with api.http.get(f"/v1/apps/{app}/config") as resp:
        assert await resp.json() == {"app": app, "release": None, "config": {}}
    await _pretend_released(api, app)
    async with api.http.get(f"/v1/apps/{app}/config") as resp:
        assert await resp.json() == {"app": app, "release": 1, "config": {"A": "1"}}


async def test_secrets_are_write_only_and_never_leave_vault(
    api: Api, openbao: VaultServer, capfd: pytest.CaptureFixture[str]
) -> None:
    app = uniq()
    marker = "MARKER-" + uniq("secret")
    await api.create_app(app)
    async with api.http.put(f"/v1/apps/{app}/secrets",
                            json={"DB_PASSWORD": marker, "API_KEY": marker + "2"},
                            headers={"Idempotency-Key": "sec-1"}) as resp:
        assert resp.status == 202, await resp.text()
        text = await resp.text()
        deploy = await resp.json()
    assert marker not in text
    assert deploy["kind"] == "secrets"
    (command,) = await release_commands(api, app)
    assert isinstance(command, ChangeSecrets)
    assert command.keys == ["API_KEY", "DB_PASSWORD"] and command.version == 1
    async with api.http.get(f"/v1/apps/{app}/secrets") as resp:
        listed = await resp.json()
    assert listed == {"app": app, "version": 1, "keys": ["API_KEY", "DB_PASSWORD"]}
    # the value is in Vault, where the release pins it
    vault = hvac.Client(url=openbao.addr, token=openbao.token)
    stored = vault.secrets.kv.v2.read_secret_version(path=f"shaman/apps/{app}",
                                                     mount_point="secret")
    assert stored["data"]["data"]["DB_PASSWORD"] == marker
    # ... and nowhere else: every stream and every bucket the api writes
    js = api.nc.jetstream()
    for stream in ("SHAMAN_EVENTS", "SHAMAN_AUDIT", "SHAMAN_RELEASE_WORK",
                   "SHAMAN_BUILD_WORK", "SHAMAN_REQUESTS", "SHAMAN_DEAD_LETTER",
                   f"KV_{KV_APPS}", f"KV_{KV_DEPLOYS}", f"KV_{KV_IDEMPOTENCY}",
                   "KV_shaman_tokens", "KV_shaman_releases"):
        for _, _, data, headers in await stream_messages(js, stream, ">"):
            assert marker.encode() not in data, stream
            assert marker not in str(headers), stream
    # A retry with the same key returns the first deploy and writes no new version.
    async with api.http.put(f"/v1/apps/{app}/secrets",
                            json={"DB_PASSWORD": marker, "API_KEY": marker + "2"},
                            headers={"Idempotency-Key": "sec-1"}) as resp:
        assert resp.status == 200
        assert (await resp.json())["id"] == deploy["id"]
    async with api.http.get(f"/v1/apps/{app}/secrets") as resp:
        assert (await resp.json())["version"] == 1
    # Delete one key: a new version, a new deploy; unknown keys are 404.
    async with api.http.delete(f"/v1/apps/{app}/secrets/API_KEY") as resp:
        assert resp.status == 202
    async with api.http.get(f"/v1/apps/{app}/secrets") as resp:
        assert await resp.json() == {"app": app, "version": 2, "keys": ["DB_PASSWORD"]}
    async with api.http.delete(f"/v1/apps/{app}/secrets/API_KEY") as resp:
        assert resp.status == 404
    commands = await release_commands(api, app)
    assert [c.version for c in commands] == [1, 2]
    # ... nor in anything the api logged
    out, err = capfd.readouterr()
    assert app in out + err  # the log did capture this test's lines
    assert marker not in out + err


async def test_bad_secret_bodies_never_echo_values(api: Api) -> None:
    app = uniq()
    marker = "ECHO-" + uniq("x")
    await api.create_app(app)
    for body in ({"bad name": marker}, {"OK": 12345}, {"OK": {"nested": marker}}, {}):
        async with api.http.put(f"/v1/apps/{app}/secrets", json=body) as resp:
            assert resp.status == 422, body
            assert marker not in await resp.text()
    async with api.http.get(f"/v1/apps/{app}/secrets") as resp:
        assert await resp.json() == {"app": app, "version": None, "keys": []}


async def test_rollback_to_an_existing_release(api: Api) -> None:
    app = uniq()
    await api.create_app(app)
    async with api.http.post(f"/v1/apps/{app}/rollback", json={}) as resp:
        assert resp.status == 422  # nothing released yet
        assert (await resp.json())["error"]["details"][0]["loc"] == "version"
    await _pretend_released(api, app)
    async with api.http.post(f"/v1/apps/{app}/rollback", json={"version": 7}) as resp:
        assert resp.status == 422
    async with api.http.post(f"/v1/apps/{app}/rollback", json={"version": "1"}) as resp:
        assert resp.status == 422  # strict types
    async with api.http.post(f"/v1/apps/{app}/rollback", json={"version": 1}) as resp:
        assert resp.status == 202, await resp.text()
        deploy = await resp.json()
    async with api.http.post(f"/v1/apps/{app}/rollback", json={}) as resp:
        assert resp.status == 202
    first, second = await release_commands(api, app)
    assert isinstance(first, Rollback) and first.to_version == 1 and not first.automatic
    assert first.deploy_id == deploy["id"] and deploy["kind"] == "rollback"
    assert isinstance(second, Rollback) and second.to_version is None


async def test_scale_updates_instances_and_sends_scale(api: Api) -> None:
    app = uniq()
    await api.create_app(app, instances=1)
    async with api.http.post(f"/v1/apps/{app}/scale", json={"instances": 3}) as resp:
        assert resp.status == 202
        body = await resp.json()
    assert body["instances"] == 3 and body["previous"] == 1
    async with api.http.get(f"/v1/apps/{app}") as resp:
        assert (await resp.json())["instances"] == 3
    (command,) = await release_commands(api, app)
    assert isinstance(command, Scale) and command.instances == 3 and command.previous == 1
    for bad in ({"instances": -1}, {"instances": "3"}, {}, {"instances": 3, "x": 1}):
        async with api.http.post(f"/v1/apps/{app}/scale", json=bad) as resp:
            assert resp.status == 422, bad
    assert len(await release_commands(api, app)) == 1


async def test_release_history(api: Api) -> None:
    app = uniq()
    await api.create_app(app)
    async with api.http.get(f"/v1/apps/{app}/releases") as resp:
        assert await resp.json() == {"releases": []}
    await _pretend_released(api, app)
    entry = await api.service.ctx.releases.get(release_key(app, 1))
    assert entry is not None
    v2 = ReleaseRecord(**{**{f: getattr(entry.value, f) for f in entry.value.__struct_fields__},
                          "version": 2, "description": "Set A"})
    await api.service.ctx.releases.create(release_key(app, 2), v2)
    async with api.http.get(f"/v1/apps/{app}/releases") as resp:
        versions = [r["version"] for r in (await resp.json())["releases"]]
    assert versions == [2, 1]
    for ref in ("2", "v2"):
        async with api.http.get(f"/v1/apps/{app}/releases/{ref}") as resp:
            assert resp.status == 200
            assert (await resp.json())["description"] == "Set A"
    async with api.http.get(f"/v1/apps/{app}/releases/9") as resp:
        assert resp.status == 404
    async with api.http.get(f"/v1/apps/{app}/releases/x") as resp:
        assert resp.status == 422
    # other apps' releases never show (prefix listing)
    other = uniq()
    await api.create_app(other)
    async with api.http.get(f"/v1/apps/{other}/releases") as resp:
        assert await resp.json() == {"releases": []}
    assert len(await api.service.ctx.releases.values(app)) == 2
