"""GET /v1/apps/{app}/logs against localnomad (simulated runtime): jobs registered here
directly, as the scheduler would, with the test-only `stdout` behavior as the output."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import requests

from devstack.ports import free_port
from services.api.app import ApiService, create_app
from shared.nomad import NomadClient
from tests.conftest import VaultServer
from tests.integration.api.conftest import ADMIN_TOKEN, Api, api_settings
from tests.integration.api.helpers import uniq, wait_for

TIMEOUT = aiohttp.ClientTimeout(total=30)


def job(app: str, count: int = 1) -> dict[str, Any]:
    return {
        "ID": app, "Name": app, "Type": "service", "Datacenters": ["*"],
        "TaskGroups": [{
            "Name": "web", "Count": count,
            "RestartPolicy": {"Attempts": 3, "Interval": 60_000_000_000, "Delay": 200_000_000,
                              "Mode": "fail"},
            "Update": {"MaxParallel": count, "HealthCheck": "task_states",
                       "MinHealthyTime": 100_000_000, "HealthyDeadline": 60_000_000_000,
                       "ProgressDeadline": 120_000_000_000, "AutoRevert": False},
            "Tasks": [{"Name": "app", "Driver": "docker",
                       "Config": {"image": "r.example.com/x:1"},
                       "Resources": {"CPU": 100, "MemoryMB": 64}}],
        }],
    }


def behave(nomad_addr: str, app: str, **effects: Any) -> None:
    resp = requests.post(f"{nomad_addr}/_localnomad/behaviors", json={"job": app, **effects},
                         timeout=10)
    resp.raise_for_status()


def exit_task(nomad_addr: str, alloc_id: str) -> None:
    requests.post(f"{nomad_addr}/_localnomad/allocs/{alloc_id}/exit", json={"code": 1},
                  timeout=10).raise_for_status()


@pytest.fixture
async def nomad(localnomad_simulated: str) -> AsyncIterator[NomadClient]:
    async with NomadClient(localnomad_simulated) as client:
        yield client


@pytest.fixture
async def api_nomad(api_nats: Any, openbao: VaultServer, localnomad_simulated: str
                    ) -> AsyncIterator[Api]:
    import nats

    settings = api_settings(api_nats.url, openbao, nomad_addr=localnomad_simulated,
                            logs_relist_s=0.2)
    async with create_app(settings) as service:
        nc = await nats.connect(api_nats.url)
        try:
            async with aiohttp.ClientSession(
                base_url=service.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
            ) as http:
                yield Api(service=service, http=http, nc=nc)
        finally:
            await nc.drain()


async def running(nomad: NomadClient, app: str, count: int) -> list[str]:
    async def check() -> list[str] | None:
        allocs = [a for a in await nomad.get_job_allocations(app)
                  if a["ClientStatus"] == "running"]
        return [a["ID"] for a in allocs] if len(allocs) >= count else None

    ids: list[str] = await wait_for(check, timeout=20, what=f"{count} running allocations")
    return ids


async def logs(api: Api, app: str, query: str = "", token: str | None = None
               ) -> tuple[int, str, str]:
    http = api.client(token) if token else None
    session = http or api.http
    try:
        async with session.get(f"/v1/apps/{app}/logs{query}", timeout=TIMEOUT) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), await resp.text()
    finally:
        if http is not None:
            await http.close()


async def deployed(api: Api, nomad: NomadClient, nomad_addr: str, count: int = 2,
                   team: str | None = None) -> tuple[str, list[str]]:
    app = uniq("logs")
    await api.create_app(app, **({"team": team} if team else {}))
    await asyncio.to_thread(behave, nomad_addr, app,
                            stdout="first line of $NOMAD_ALLOC_ID\nsecond, café ✓\n")
    await nomad.register_job(job(app, count), enforce_index=None)
    return app, await running(nomad, app, count)


async def test_the_running_allocations_output_merged_with_short_ids(
    api_nomad: Api, nomad: NomadClient, localnomad_simulated: str,
) -> None:
    app, allocs = await deployed(api_nomad, nomad, localnomad_simulated)
    status, ctype, body = await logs(api_nomad, app)
    assert status == 200 and ctype == "text/plain; charset=utf-8"
    lines = body.splitlines()
    for alloc in allocs:
        mine = [line for line in lines if line.startswith(f"[{alloc[:8]} stdout] ")]
        assert [line.split("] ", 1)[1] for line in mine] == [
            f"first line of {alloc}", "second, café ✓"], body
    assert len(lines) == 4

    status, _, body = await logs(api_nomad, app, "?type=stdout&lines=1")
    assert status == 200
    assert sorted(body.splitlines()) == sorted(f"[{a[:8]}] second, café ✓" for a in allocs)
    status, _, body = await logs(api_nomad, app, "?type=stderr")
    assert (status, body) == (200, "")


async def test_who_may_read_and_bad_parameters(
    api_nomad: Api, nomad: NomadClient, localnomad_simulated: str,
) -> None:
    app, _ = await deployed(api_nomad, nomad, localnomad_simulated, count=1, team="red")
    viewer = await api_nomad.token("viewer", ["red"])
    other = await api_nomad.token("admin", ["blue"])
    status, _, body = await logs(api_nomad, app, token=viewer)
    assert status == 200 and "second, café" in body
    status, _, body = await logs(api_nomad, app, token=other)
    assert status == 404 and "not_found" in body
    for query, loc in (("?lines=-1", "lines"), ("?lines=x", "lines"),
                       ("?lines=10001", "lines"), ("?type=all", "type"),
                       ("?follow=maybe", "follow")):
        status, _, body = await logs(api_nomad, app, query)
        assert status == 422 and f'"loc": "{loc}"' in body.replace('":"', '": "'), (query, body)


async def test_no_job_is_an_empty_answer_and_a_crashed_app_shows_its_last_words(
    api_nomad: Api, nomad: NomadClient, localnomad_simulated: str,
) -> None:
    app = uniq("logs")
    await api_nomad.create_app(app)
    assert await logs(api_nomad, app) == (200, "text/plain; charset=utf-8", "")
    await asyncio.to_thread(behave, localnomad_simulated, app,
                            stdout="cannot start: MISSING_SETTING is not set\n",
                            crash_on_start=1)
    crashing = job(app)
    crashing["TaskGroups"][0]["RestartPolicy"] = {"Attempts": 0, "Mode": "fail",
                                                  "Interval": 60_000_000_000,
                                                  "Delay": 1_000_000_000}
    crashing["TaskGroups"][0]["ReschedulePolicy"] = {"Attempts": 0, "Unlimited": False}
    await nomad.register_job(crashing, enforce_index=None)

    async def failed() -> bool:
        allocs = await nomad.get_job_allocations(app)
        return bool(allocs) and all(a["ClientStatus"] == "failed" for a in allocs)

    await wait_for(failed, timeout=20, what="the allocation failed")
    status, _, body = await logs(api_nomad, app)
    assert status == 200 and "cannot start: MISSING_SETTING is not set" in body


async def test_follow_streams_new_allocations_and_restarted_tasks(
    api_nomad: Api, nomad: NomadClient, localnomad_simulated: str,
) -> None:
    app, allocs = await deployed(api_nomad, nomad, localnomad_simulated, count=1)
    seen: list[str] = []
    async with api_nomad.http.get(
            f"/v1/apps/{app}/logs?follow=true&lines=1&type=stdout",
            timeout=aiohttp.ClientTimeout(total=60, sock_read=30)) as resp:
        assert resp.status == 200

        async def read_until(text: str) -> None:
            while not any(text in line for line in seen):
                raw = await resp.content.readline()
                assert raw, "the stream ended"
                seen.append(raw.decode())

        await asyncio.wait_for(read_until("second, café"), 10)
        assert seen == [f"[{allocs[0][:8]}] second, café ✓\n"]  # the last line only
        # The task restarts (same allocation): its new output comes, nothing repeated.
        await asyncio.to_thread(exit_task, localnomad_simulated, allocs[0])
        await asyncio.wait_for(read_until(f"first line of {allocs[0]}"), 20)
        # A new allocation (scaled up) is followed from its start.
        await nomad.register_job(job(app, 2), enforce_index=None)
        new = next(a for a in await running(nomad, app, 2) if a != allocs[0])
        await asyncio.wait_for(read_until(f"first line of {new}"), 20)
    assert seen.count(f"[{allocs[0][:8]}] first line of {allocs[0]}\n") == 1
    assert f"[{new[:8]}] first line of {new}\n" in seen


async def test_nomad_unreachable_is_503_before_anything_is_sent(
    api_nats: Any, openbao: VaultServer,
) -> None:
    settings = api_settings(api_nats.url, openbao,
                            nomad_addr=f"http://127.0.0.1:{free_port()}", nomad_timeout_s=1.0)
    service: ApiService
    async with create_app(settings) as service, aiohttp.ClientSession(
            base_url=service.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as http:
        app = uniq("logs")
        async with http.post("/v1/apps", json={"name": app}) as resp:
            assert resp.status == 201
        async with http.get(f"/v1/apps/{app}/logs", timeout=TIMEOUT) as resp:
            assert resp.status == 503
            assert "Retry-After" in resp.headers
            assert (await resp.json())["error"]["message"] == "nomad is unavailable; retry later"
