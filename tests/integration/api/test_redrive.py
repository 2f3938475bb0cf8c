"""The re-drive sweep: a pending source deploy whose build message was lost is queued again.

Reliability scenario 10: the deploy record says `pending` with its command on it, but
SHAMAN_BUILD_WORK holds nothing (the broker lost it, or the api died before queueing).
The tests plant exactly that state and publish nothing. A private nats-server: the real
builder here must not meet other tests' work.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bench.tiny_image import push_tiny_image
from devstack.components.nats import NatsServer
from devstack.ports import free_port
from services.api.app import ApiService, create_app
from services.api.ids import new_deploy_id
from services.api.redrive import BuildRedrive
from services.builder.app import create_app as create_builder
from shared.commands import (
    BuildRequested,
    DeployImage,
    ImageSource,
    build_decoder,
    release_decoder,
)
from shared.events.base import now
from shared.records import AppRecord, DeployRecord, StatusChange, transition
from shared.settings import BuilderSettings
from shared.subjects import (
    STREAM_BUILD_WORK,
    STREAM_RELEASE_WORK,
    build_work_subject,
    release_work_subject,
)
from tests.conftest import running
from tests.integration.api.conftest import ADMIN_TOKEN, api_settings
from tests.integration.api.helpers import stream_messages, uniq, wait_for

INTERVAL_S = 0.3


@pytest.fixture(scope="module")
def own_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path_factory.mktemp("redrive-nats"), free_port(), free_port(),
                        name="redrive-nats")
    with running(server):
        yield server


@pytest.fixture
async def service(own_nats: NatsServer) -> AsyncIterator[ApiService]:
    async with create_app(api_settings(own_nats.url, None,
                                       redrive_interval_s=INTERVAL_S)) as svc:
        yield svc


async def _plant(service: ApiService, app: str, image: str = "r.example.com/a:1",
                 age_s: float = 5.0) -> DeployRecord:
    """A deploy as the api writes it, but older and never queued: the lost message."""
    deploy_id = new_deploy_id()
    created = now() - timedelta(seconds=age_s)
    record = DeployRecord(
        id=deploy_id, app=app, kind="deploy", source=image, requested_by="t",
        created_at=created, updated_at=created,
        history=[StatusChange(status="pending", time=created)],
        build_request=BuildRequested(deploy_id=deploy_id, app=app,
                                     source=ImageSource(image=image), requested_by="t"),
    )
    await service.ctx.deploys.create(deploy_id, record)

    def latest(app_record: AppRecord) -> AppRecord:
        app_record.latest_deploy_id = deploy_id
        app_record.recent_deploys = [deploy_id, *app_record.recent_deploys]
        return app_record

    assert await service.ctx.apps.mutate(app, latest) is not None
    return record


async def _create_app(service: ApiService, name: str, **fields: Any) -> None:
    async with aiohttp.ClientSession(base_url=service.url, headers={
            "Authorization": f"Bearer {ADMIN_TOKEN}"}) as http, \
            http.post("/v1/apps", json={"name": name, **fields}) as resp:
        assert resp.status == 201, await resp.text()


async def _build_work(service: ApiService, app: str) -> list[tuple[int, str, bytes,
                                                                     dict[str, str]]]:
    return await stream_messages(service.ctx.bus.js, STREAM_BUILD_WORK, build_work_subject(app))


async def test_a_source_deploy_record_carries_exactly_the_queued_command(
    own_nats: NatsServer,
) -> None:
    async with create_app(api_settings(own_nats.url, None, redrive_interval_s=0)) as service, \
            aiohttp.ClientSession(base_url=service.url, headers={
                "Authorization": f"Bearer {ADMIN_TOKEN}"}) as http:
        app = uniq("redrive")
        await _create_app(service, app)
        ids = []
        for path, method, body in (("deploys", "POST", {"image": "r.example.com/a:1"}),
                                   ("config", "PATCH", {"A": "1"})):
            async with http.request(method, f"/v1/apps/{app}/{path}", json=body) as resp:
                assert resp.status == 202, await resp.text()
                ids.append((await resp.json())["id"])
        source, config = [await service.ctx.deploys.get(i) for i in ids]
        queued = await _build_work(service, app)
        assert source is not None and len(queued) == 1
        assert source.value.build_request == build_decoder.decode(queued[0][2])
        assert config is not None and config.value.build_request is None


async def test_a_lost_build_message_is_queued_again_once(service: ApiService) -> None:
    app = uniq("redrive")
    await _create_app(service, app)
    deploy = await _plant(service, app)
    # The api's own periodic sweep finds it.
    msgs = await wait_for(lambda: _build_work(service, app), timeout=10,
                          what="the build message re-queued")
    assert [m[3]["Nats-Msg-Id"] for m in msgs] == [f"{deploy.id}:build"]
    assert build_decoder.decode(msgs[0][2]) == deploy.build_request
    stored = await service.ctx.deploys.get(deploy.id)
    assert stored is not None and stored.value.redriven_at is not None
    assert stored.value.status == "pending"
    # Later rounds see it queued (no builder takes it here) and add nothing.
    sweeper = BuildRedrive(service.ctx.bus, service.ctx.apps, service.ctx.deploys, 0.001)
    for _ in range(3):
        await asyncio.sleep(0.002)  # past the sweeper's (tiny) interval
        assert deploy.id not in await sweeper.sweep_once()
    assert len(await _build_work(service, app)) == 1


async def test_copies_sweeping_at_once_queue_it_once(own_nats: NatsServer) -> None:
    async with create_app(api_settings(own_nats.url, None, redrive_interval_s=0)) as service:
        app = uniq("redrive")
        await _create_app(service, app)
        deploy = await _plant(service, app)
        sweepers = [BuildRedrive(service.ctx.bus, service.ctx.apps, service.ctx.deploys, 1.0)
                    for _ in range(4)]
        rounds = await asyncio.gather(*(s.sweep_once() for s in sweepers))
        assert sum(r.count(deploy.id) for r in rounds) == 1
        assert len(await _build_work(service, app)) == 1


async def test_what_is_not_redriven(own_nats: NatsServer) -> None:
    async with create_app(api_settings(own_nats.url, None, redrive_interval_s=0)) as service:
        ctx = service.ctx
        sweeper = BuildRedrive(ctx.bus, ctx.apps, ctx.deploys, 2.0)
        apps = [uniq("keep") for _ in range(4)]
        for name in apps:
            await _create_app(service, name)
        young = await _plant(service, apps[0], age_s=0.1)  # younger than one interval
        building = await _plant(service, apps[1])

        def build(record: DeployRecord) -> DeployRecord:
            assert transition(record, "building")
            return record

        await ctx.deploys.mutate(building.id, build)
        queued = await _plant(service, apps[2])  # its message is only waiting for a builder
        assert queued.build_request is not None
        await ctx.bus.publish_command(build_work_subject(apps[2]), queued.build_request,
                                      msg_id=f"{queued.id}:build")
        older = await _plant(service, apps[3])  # no longer the app's latest: superseded in
        await _plant(service, apps[3], age_s=0.1)  # intent by a newer one (still young)
        planted = {young.id, building.id, queued.id, older.id}
        assert not planted & set(await sweeper.sweep_once())
        assert [len(await _build_work(service, a)) for a in apps] == [0, 0, 1, 0]
        stored = await ctx.deploys.get(older.id)
        assert stored is not None and stored.value.redriven_at is None


@pytest.fixture
def fresh_nats(tmp_path: Path) -> Iterator[NatsServer]:
    """Nobody else's work queued: the builder takes only this test's deploy."""
    server = NatsServer(tmp_path / "nats", free_port(), free_port(), name="redrive-fresh")
    with running(server):
        yield server


async def test_the_redriven_deploy_goes_on_with_a_real_builder(
    fresh_nats: NatsServer, registry: str, tmp_path: Path,
) -> None:
    repo = f"redrive-{uniq('img')}"
    digest = await asyncio.to_thread(push_tiny_image, registry, repo, "v1")
    image = f"{registry}/{repo}:v1"
    async with create_app(api_settings(fresh_nats.url, None,
                                       redrive_interval_s=INTERVAL_S)) as service:
        js = service.ctx.bus.js
        app = uniq("redrive")
        await _create_app(service, app)
        deploy = await _plant(service, app, image=image)
        builder = BuilderSettings(
            nats_url=fresh_nats.url, registry=registry, builder_storage=str(tmp_path / "b"),
            http_addr="127.0.0.1:0", instance_id="redrive-builder", ack_wait_s=3.0,
            retention_interval_s=0, vault_token=None, log_format="console",
        )  # type: ignore[call-arg]
        async with create_builder(builder):

            async def resolved() -> DeployRecord | None:
                entry = await service.ctx.deploys.get(deploy.id)
                return entry.value if entry is not None and entry.value.digest else None

            record = await wait_for(resolved, timeout=30, what="the builder resolved it")
            releases = await wait_for(
                lambda: stream_messages(js, STREAM_RELEASE_WORK, release_work_subject(app)),
                timeout=10, what="DeployImage queued")
        assert record.status == "building" and record.digest == digest
        assert record.redriven_at is not None
        assert [m[3]["Nats-Msg-Id"] for m in releases] == [f"{deploy.id}:release"]
        command = release_decoder.decode(releases[0][2])
        assert isinstance(command, DeployImage) and command.deploy_id == deploy.id
        # The builder acked it: nothing is left in the build queue.
        assert await _build_work(service, app) == []
