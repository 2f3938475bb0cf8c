"""Tokens, roles and teams, audit and rate limits, across the routes."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from services.api.app import create_app
from shared.subjects import STREAM_AUDIT
from tests.integration.api.conftest import ADMIN_TOKEN, Api, api_settings
from tests.integration.api.helpers import stream_messages, uniq, wait_for

# (method, path template, json body) for every app route; {app} is filled per test.
READS = [
    ("GET", "/v1/apps/{app}", None),
    ("GET", "/v1/apps/{app}/deploys", None),
    ("GET", "/v1/apps/{app}/deploys/d-000000000000aaaaaaaaaa", None),
    ("GET", "/v1/apps/{app}/builds/d-000000000000aaaaaaaaaa/log", None),
    ("GET", "/v1/apps/{app}/releases", None),
    ("GET", "/v1/apps/{app}/releases/1", None),
    ("GET", "/v1/apps/{app}/config", None),
    ("GET", "/v1/apps/{app}/secrets", None),
]
WRITES = [
    ("PATCH", "/v1/apps/{app}", {"auto_rollback": False}),
    ("POST", "/v1/apps/{app}/deploys", {"image": "r/a:1"}),
    ("PATCH", "/v1/apps/{app}/config", {"A": "1"}),
    ("PUT", "/v1/apps/{app}/secrets", {"S": "v"}),
    ("DELETE", "/v1/apps/{app}/secrets/S", None),
    ("POST", "/v1/apps/{app}/rollback", {}),
    ("POST", "/v1/apps/{app}/scale", {"instances": 2}),
]
ADMIN_ONLY = [("DELETE", "/v1/apps/{app}", None)]
# Reads that reach Nomad (no Nomad here: only the 404 for another team is checked;
# test_logs.py reads them for real).
NOMAD_READS = [("GET", "/v1/apps/{app}/logs", None)]
NOT_FOUND_STATUSES = {404}


async def call(http: aiohttp.ClientSession, method: str, path: str,
               body: Any) -> tuple[int, dict[str, Any]]:
    async with http.request(method, path, json=body) as resp:
        data = await resp.json() if resp.content_type == "application/json" else {}
        return resp.status, data


@pytest.fixture
async def teams(api: Api) -> dict[str, Any]:
    red, blue = uniq("red"), uniq("blue")
    await api.create_app(red, team="red")
    await api.create_app(blue, team="blue")
    tokens = {
        role: await api.token(role, ["red"]) for role in ("admin", "deployer", "viewer")
    }
    return {"red": red, "blue": blue, "tokens": tokens}


@pytest.mark.parametrize("role", ["admin", "deployer", "viewer"])
async def test_other_teams_apps_are_404_for_every_route(
    api: Api, teams: dict[str, Any], role: str
) -> None:
    blue = teams["blue"]
    async with api.client(teams["tokens"][role]) as http:
        for method, path, body in READS + NOMAD_READS + WRITES + ADMIN_ONLY:
            status, data = await call(http, method, path.format(app=blue), body)
            assert status == 404, (role, method, path, status, data)
            assert data["error"]["code"] == "not_found"
        status, data = await call(http, "GET", "/v1/apps", None)
        names = [a["name"] for a in data["apps"]]
        assert blue not in names and teams["red"] in names
        status, _ = await call(http, "GET", f"/v1/events?app={blue}", None)
        assert status == 404


async def test_viewer_reads_but_gets_403_on_every_mutation(
    api: Api, teams: dict[str, Any]
) -> None:
    red = teams["red"]
    async with api.client(teams["tokens"]["viewer"]) as http:
        for method, path, body in READS:
            status, _ = await call(http, method, path.format(app=red), body)
            assert status in (200, 404), (method, path, status)  # 404: no such deploy/log
        for method, path, body in WRITES + ADMIN_ONLY:
            status, data = await call(http, method, path.format(app=red), body)
            assert status == 403, (method, path, status, data)
            assert data["error"]["code"] == "forbidden"
        status, _ = await call(http, "POST", "/v1/apps", {"name": uniq(), "team": "red"})
        assert status == 403
        for method, path in (("GET", "/v1/tokens"), ("POST", "/v1/tokens"),
                             ("GET", "/v1/audit")):
            status, _ = await call(http, method, path, {"name": "x", "role": "viewer",
                                                        "teams": ["red"]}
                                   if method == "POST" else None)
            assert status == 403, path


async def test_deployer_may_change_but_not_destroy_or_move_teams(
    api: Api, teams: dict[str, Any]
) -> None:
    red = teams["red"]
    async with api.client(teams["tokens"]["deployer"]) as http:
        status, _ = await call(http, "POST", f"/v1/apps/{red}/deploys", {"image": "r/a:1"})
        assert status == 202
        status, _ = await call(http, "POST", f"/v1/apps/{red}/scale", {"instances": 2})
        assert status == 202
        status, _ = await call(http, "PATCH", f"/v1/apps/{red}", {"team": "blue"})
        assert status == 403
        status, _ = await call(http, "DELETE", f"/v1/apps/{red}", None)
        assert status == 403
        created = uniq()
        status, data = await call(http, "POST", "/v1/apps", {"name": created})
        assert status == 201 and data["team"] == "red"  # the token's only team
        status, _ = await call(http, "POST", "/v1/apps", {"name": uniq(), "team": "blue"})
        assert status == 403


async def test_team_admin_manages_its_team_only(api: Api, teams: dict[str, Any]) -> None:
    async with api.client(teams["tokens"]["admin"]) as http:
        status, _ = await call(http, "POST", "/v1/tokens",
                                  {"name": "ci", "role": "deployer", "teams": ["blue"]})
        assert status == 403
        status, _ = await call(http, "POST", "/v1/tokens",
                                  {"name": "all", "role": "viewer", "teams": ["*"]})
        assert status == 403
        status, _ = await call(http, "POST", "/v1/tokens",
                                  {"name": "ci", "role": "deployer", "teams": ["red"]})
        assert status == 201
        status, _ = await call(http, "PATCH", f"/v1/apps/{teams['red']}", {"team": "blue"})
        assert status == 403  # moving into a team it does not cover
        status, _ = await call(http, "DELETE", f"/v1/apps/{teams['red']}", None)
        assert status == 202


async def test_token_lifecycle_secret_shown_once_and_revocation_is_immediate(
    api: Api,
) -> None:
    app = uniq()
    await api.create_app(app, team="green")
    status, created = await call(api.http, "POST", "/v1/tokens",
                                 {"name": "ci-bot", "role": "deployer", "teams": ["green"],
                                  "expires_in_s": 3600})
    assert status == 201
    secret = created["token"]
    assert secret.startswith("shm_") and created["expires_at"]
    status, listed = await call(api.http, "GET", "/v1/tokens", None)
    mine = [t for t in listed["tokens"] if t["id"] == created["id"]]
    assert mine and "token" not in mine[0]
    assert secret not in str(listed)
    # only the hash is stored
    ctx = api.service.ctx
    stored = await ctx.tokens.kv.values()
    assert all(secret not in str(e.value) and secret != e.key for e in stored)
    async with api.client(secret) as http:
        status, _ = await call(http, "GET", f"/v1/apps/{app}", None)
        assert status == 200
        status, revoked = await call(api.http, "DELETE", f"/v1/tokens/{created['id']}", None)
        assert status == 200 and revoked["id"] == created["id"]
        status, data = await call(http, "GET", f"/v1/apps/{app}", None)
        assert status == 401 and data["error"]["code"] == "unauthorized"
    status, _ = await call(api.http, "DELETE", f"/v1/tokens/{created['id']}", None)
    assert status == 404


async def test_expired_token_is_401(api: Api) -> None:
    status, created = await call(api.http, "POST", "/v1/tokens",
                                 {"name": "short", "role": "viewer", "teams": ["x"],
                                  "expires_in_s": 0.2})
    assert status == 201

    async def expired() -> bool:
        async with api.client(created["token"]) as http:
            status, _ = await call(http, "GET", "/v1/apps", None)
            return status == 401

    await wait_for(expired, timeout=5, what="token expiry")


async def test_bad_token_bodies(api: Api) -> None:
    for body, loc in (({"name": "x", "role": "root", "teams": ["a"]}, "role"),
                      ({"name": "x", "role": "viewer", "teams": []}, "teams"),
                      ({"name": "x", "role": "viewer", "teams": ["Bad Team"]}, "teams.0"),
                      ({"role": "viewer", "teams": ["a"]}, "name")):
        status, data = await call(api.http, "POST", "/v1/tokens", body)
        assert status == 422, body
        assert data["error"]["details"][0]["loc"] == loc


async def test_audit_records_mutations_without_secrets_or_tokens(api: Api) -> None:
    app = uniq()
    marker = "s3cr3t-" + uniq("marker")
    await api.create_app(app)
    await call(api.http, "PUT", f"/v1/apps/{app}/secrets", {"DB_PASSWORD": marker})
    async with api.client("shm_wrong") as http:
        await call(http, "POST", f"/v1/apps/{app}/deploys", {"image": "r/a:1"})
    await call(api.http, "POST", f"/v1/apps/{app}/deploys", {"image": "r/a:1"})
    status, data = await call(api.http, "GET", f"/v1/audit?app={app}", None)
    assert status == 200
    entries = data["entries"]
    actions = [(e["action"], e["status"], e["outcome"]) for e in entries]
    assert ("deploy.create", 202, "ok") in actions
    assert ("deploy.create", 401, "denied") in actions
    assert ("app.create", 201, "ok") in actions
    assert any(a == "secrets.set" for a, _, _ in actions)
    deploy_entry = next(e for e in entries if e["action"] == "deploy.create" and
                        e["status"] == 202)
    assert deploy_entry["deploy_id"].startswith("d-")
    assert deploy_entry["remote"] == "127.0.0.1"
    assert deploy_entry["actor"].startswith("bootstrap-admin")
    raw = await stream_messages(api.nc.jetstream(), STREAM_AUDIT, "shaman.audit.>")
    blob = b"".join(m[2] for m in raw)
    assert marker.encode() not in blob
    assert ADMIN_TOKEN.encode() not in blob and b"shm_wrong" not in blob
    assert entries == sorted(entries, key=lambda e: e["seq"], reverse=True)


async def test_rate_limit_is_per_token_with_retry_after(api_nats: Any, openbao: Any) -> None:
    settings = api_settings(api_nats.url, openbao, rate_limit_per_s=0.5, rate_limit_burst=3)
    async with create_app(settings) as service:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        async with aiohttp.ClientSession(base_url=service.url, headers=headers) as http:
            async with http.post("/v1/tokens", json={"name": "o", "role": "viewer",
                                                     "teams": ["x"]}) as resp:
                other = (await resp.json())["token"]
            statuses = []
            for _ in range(4):
                async with http.get("/v1/apps") as resp:
                    statuses.append(resp.status)
                    if resp.status == 429:
                        assert int(resp.headers["Retry-After"]) >= 1
                        assert resp.headers["RateLimit-Remaining"] == "0"
                        assert (await resp.json())["error"]["code"] == "rate_limited"
                    else:
                        assert "RateLimit-Remaining" in resp.headers
            assert statuses[:2] == [200, 200] and statuses[2:] == [429, 429]
        # Another token has a bucket of its own.
        async with aiohttp.ClientSession(base_url=service.url, headers={
                "Authorization": f"Bearer {other}"}) as http, http.get("/v1/apps") as resp:
            assert resp.status == 200
