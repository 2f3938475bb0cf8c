"""NATS dies mid-test: the api answers 503 with Retry-After (never a 500 or a false 202),
then recovers by itself when NATS is back, SSE streams included."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from devstack.components.nats import NatsServer
from devstack.ports import free_port
from services.api.app import ApiService, create_app
from shared.events import DeployAccepted
from tests.conftest import VaultServer, running
from tests.integration.api.conftest import ADMIN_TOKEN, api_settings
from tests.integration.api.helpers import SseStream, uniq, wait_for


@pytest.fixture
def own_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path_factory.mktemp("outage-nats"), free_port(), free_port(),
                        name="outage-nats")
    with running(server):
        yield server


@pytest.fixture
async def service(own_nats: NatsServer, openbao: VaultServer) -> AsyncIterator[ApiService]:
    async with create_app(api_settings(own_nats.url, openbao)) as svc:
        yield svc


async def test_nats_outage_is_503_with_retry_after_then_recovers(
    own_nats: NatsServer, service: ApiService
) -> None:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with aiohttp.ClientSession(base_url=service.url, headers=headers) as http:
        app = uniq()
        async with http.post("/v1/apps", json={"name": app}) as resp:
            assert resp.status == 201
        sse = await http.get(f"/v1/events?app={app}",
                             timeout=aiohttp.ClientTimeout(total=None, sock_read=60))
        stream = SseStream(sse)
        await wait_for(lambda: service.ctx.hub.clients == 1, what="SSE client attached")
        await service.ctx.bus.publish_event(DeployAccepted(
            app=app, deploy_id="d-before", kind="deploy", source="x", requested_by="t"))
        _, before = await stream.next_event()
        assert before["deploy_id"] == "d-before"

        own_nats.stop(timeout_s=0)  # SIGTERM then SIGKILL without waiting: a crash
        await wait_for(lambda: not service.ctx.bus.connected, what="api notices NATS is gone")
        for method, path, body in (
            ("POST", f"/v1/apps/{app}/deploys", {"image": "r/a:1"}),
            ("POST", "/v1/apps", {"name": uniq()}),
            ("GET", f"/v1/apps/{app}", None),
            ("GET", "/v1/apps", None),
        ):
            async with http.request(method, path, json=body) as resp:
                assert resp.status == 503, (method, path, resp.status)
                assert int(resp.headers["Retry-After"]) >= 1
                error = (await resp.json())["error"]
                assert error["code"] == "backend_unavailable"
                assert "nats" in error["message"]
        async with http.get("/healthz") as resp:
            assert resp.status == 503

        own_nats.start()
        await wait_for(lambda: service.ctx.bus.connected, timeout=15, what="reconnect")
        async with http.post(f"/v1/apps/{app}/deploys", json={"image": "r/a:1"}) as resp:
            assert resp.status == 202, await resp.text()
            deploy = await resp.json()
        async with http.get(f"/v1/apps/{app}/deploys/{deploy['id']}") as resp:
            assert (await resp.json())["status"] == "pending"
        async with http.get("/healthz") as resp:
            assert resp.status == 200
        # The audit lines of the refused calls were kept and written once NATS was back.
        await wait_for(lambda: service.ctx.audit.pending == 0, what="audit backlog flushed")
        async with http.get(f"/v1/audit?app={app}") as resp:
            statuses = [e["status"] for e in (await resp.json())["entries"]]
        assert 503 in statuses  # the refused deploy
        # The SSE stream opened before the outage carries on with new events.
        _, after = await stream.next_event(timeout=20)
        assert after["type"] == "deploy.accepted" and after["deploy_id"] == deploy["id"]
        sse.close()


async def test_a_deploy_that_could_not_be_queued_is_failed_and_a_retry_takes_over(
    own_nats: NatsServer, service: ApiService
) -> None:
    """The KV write succeeded but the publish did not: the deploy ends failed with a reason,
    and a retry with the same Idempotency-Key gets a new, queued deploy (not the dead one)."""
    from services.api.intake import PUBLISH_ATTEMPTS, QUEUE_FAILED
    from shared.errors import BackendUnavailable

    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Idempotency-Key": "retry-me"}
    bus = service.ctx.bus
    real_publish = bus.publish
    calls = {"n": 0}

    async def failing_publish(subject: str, payload: bytes, **kw: object) -> object:
        # Every attempt of the first request fails; the retry's request then works.
        if subject.startswith("shaman.work.build.") and calls["n"] < PUBLISH_ATTEMPTS:
            calls["n"] += 1
            raise BackendUnavailable("nats", "publish not confirmed (test)")
        return await real_publish(subject, payload, **kw)  # type: ignore[arg-type]

    bus.publish = failing_publish  # type: ignore[method-assign]
    try:
        async with aiohttp.ClientSession(base_url=service.url, headers=headers) as http:
            app = uniq()
            async with http.post("/v1/apps", json={"name": app}) as resp:
                assert resp.status == 201
            async with http.post(f"/v1/apps/{app}/deploys", json={"image": "r/a:1"}) as resp:
                assert resp.status == 503
                assert "Retry-After" in resp.headers
            failed = [e.value for e in await _deploys(service, app)]
            assert [(d.status, d.reason) for d in failed] == [("failed", QUEUE_FAILED)]
            async with http.post(f"/v1/apps/{app}/deploys", json={"image": "r/a:1"}) as resp:
                assert resp.status == 202
                retried = await resp.json()
            assert retried["id"] != failed[0].id and retried["status"] == "pending"
    finally:
        bus.publish = real_publish  # type: ignore[method-assign]


async def _deploys(service: ApiService, app: str) -> list:  # type: ignore[type-arg]
    return [e for e in await service.ctx.deploys.values()
            if e.value.app == app]


async def test_an_unconfirmed_publish_is_retried_with_the_same_msg_id(
    own_nats: NatsServer, service: ApiService
) -> None:
    """Scenario 1 of reliability.md: the PubAck is lost after the message was stored; the
    retry with the same Nats-Msg-Id is a duplicate, the stream holds one message, the
    client gets one deploy."""
    from shared.errors import BackendUnavailable
    from shared.subjects import STREAM_BUILD_WORK, build_work_subject
    from tests.integration.api.helpers import stream_messages

    bus = service.ctx.bus
    real_publish = bus.publish
    acks: list[object] = []

    async def lost_ack(subject: str, payload: bytes, **kw: object) -> object:
        ack = await real_publish(subject, payload, **kw)  # type: ignore[arg-type]
        if subject.startswith("shaman.work.build."):
            acks.append(ack)
            if len(acks) == 1:
                raise BackendUnavailable("nats", "publish not confirmed (test)")
        return ack

    bus.publish = lost_ack  # type: ignore[method-assign]
    try:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        async with aiohttp.ClientSession(base_url=service.url, headers=headers) as http:
            app = uniq()
            async with http.post("/v1/apps", json={"name": app}) as resp:
                assert resp.status == 201
            async with http.post(f"/v1/apps/{app}/deploys", json={"image": "r/a:1"}) as resp:
                assert resp.status == 202, await resp.text()
                deploy = await resp.json()
    finally:
        bus.publish = real_publish  # type: ignore[method-assign]
    assert acks[1].duplicate is True  # type: ignore[attr-defined]
    work = await stream_messages(bus.js, STREAM_BUILD_WORK, build_work_subject(app))
    assert [m[3]["Nats-Msg-Id"] for m in work] == [f"{deploy['id']}:build"]
