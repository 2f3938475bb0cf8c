"""GET /v1/events: live events, filters, Last-Event-ID resume, many subscribers, teams."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp

from shared.bus.connection import Bus
from shared.events import AppScaled, DeployAccepted, RolloutHealthy
from tests.integration.api.conftest import Api
from tests.integration.api.helpers import SseStream, uniq, wait_for


def bus_of(api: Api) -> Bus:
    return api.service.ctx.bus


async def publish_accepted(api: Api, app: str, n: int) -> list[str]:
    ids = []
    for i in range(n):
        deploy_id = f"d-test{i:04d}"
        await bus_of(api).publish_event(DeployAccepted(
            app=app, deploy_id=deploy_id, kind="deploy", source="x", requested_by="t"))
        ids.append(deploy_id)
    return ids


async def open_stream(api: Api, http: aiohttp.ClientSession, query: str = "",
                      headers: dict[str, str] | None = None) -> tuple[aiohttp.ClientResponse,
                                                                     SseStream]:
    resp = await http.get(f"/v1/events{query}", headers=headers,
                          timeout=aiohttp.ClientTimeout(total=None, sock_read=30))
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    return resp, SseStream(resp)


async def test_live_events_of_one_app_in_order(api: Api) -> None:
    app, other = uniq(), uniq()
    await api.create_app(app)
    await api.create_app(other)
    resp, stream = await open_stream(api, api.http, f"?app={app}")
    async with resp:
        await wait_for(lambda: api.service.ctx.hub.clients >= 1, what="client attached")
        await publish_accepted(api, other, 1)
        ids = await publish_accepted(api, app, 3)
        got = await stream.events(3)
    assert [e["deploy_id"] for _, e in got] == ids
    assert all(e["app"] == app and e["type"] == "deploy.accepted" for _, e in got)
    seqs = [s for s, _ in got]
    assert seqs == sorted(seqs)


async def test_type_filter_and_keepalive(api: Api) -> None:
    app = uniq()
    await api.create_app(app)
    resp, stream = await open_stream(api, api.http, f"?app={app}&type=rollout.healthy")
    async with resp:
        await wait_for(lambda: api.service.ctx.hub.clients >= 1, what="client attached")
        await publish_accepted(api, app, 2)
        await bus_of(api).publish_event(
            RolloutHealthy(app=app, deploy_id="d-x", release=1, nomad_deployment_id="n1"))
        _, event = await stream.next_event()
        assert event["type"] == "rollout.healthy"
        # keep-alive comments arrive every sse_keepalive_s (0.5 s in these tests)
        await wait_for(lambda: _read_comment(stream), timeout=5, what="keep-alive comment")


async def _read_comment(stream: SseStream) -> bool:
    before = stream.comments
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stream.next_event(), timeout=0.7)
    return stream.comments > before


async def test_last_event_id_resumes_from_history_without_gaps_or_repeats(api: Api) -> None:
    app = uniq()
    await api.create_app(app)
    resp, stream = await open_stream(api, api.http, f"?app={app}")
    async with resp:
        await wait_for(lambda: api.service.ctx.hub.clients >= 1, what="client attached")
        first = await publish_accepted(api, app, 2)
        got = await stream.events(2)
    assert [e["deploy_id"] for _, e in got] == first
    last_id = got[0][0]  # resume after the first one: the second must come again
    more = await publish_accepted(api, app, 3)  # published while disconnected
    resp, stream = await open_stream(api, api.http, f"?app={app}",
                                     headers={"Last-Event-ID": str(last_id)})
    async with resp:
        replayed = await stream.events(4)
        live = await publish_accepted(api, app, 1)
        after = await stream.next_event()
    assert [e["deploy_id"] for _, e in replayed] == [first[1], *more]
    assert after[1]["deploy_id"] == live[0]
    assert after[0] > replayed[-1][0]


async def test_an_event_published_once_connected_is_read_is_delivered(api: Api) -> None:
    # A new app per round: each stream starts a new follower, the path with the race.
    for _ in range(10):
        app = uniq()
        await api.create_app(app)
        resp, stream = await open_stream(api, api.http, f"?app={app}")
        async with resp:
            assert await stream.until_comment("connected") == []
            ids = await publish_accepted(api, app, 1)  # no waiting for the hub
            assert await stream.until_comment("replay-complete") == []
            _, event = await stream.next_event(timeout=5)
        assert event["deploy_id"] == ids[0]


async def test_replay_complete_comes_after_the_history_and_before_live_events(
    api: Api,
) -> None:
    app = uniq()
    await api.create_app(app)
    info = await api.nc.jetstream().stream_info("SHAMAN_EVENTS")
    history = await publish_accepted(api, app, 3)
    resp, stream = await open_stream(api, api.http,
                                     f"?app={app}&since={info.state.last_seq}")
    async with resp:
        replayed = await stream.until_comment("replay-complete")
        live = await publish_accepted(api, app, 1)
        _, after = await stream.next_event()
    assert [e["deploy_id"] for _, e in replayed] == history
    assert after["deploy_id"] == live[0]
    assert stream.comment_lines[:2] == ["connected", "replay-complete"]


async def test_since_query_resumes_too(api: Api) -> None:
    app = uniq()
    await api.create_app(app)
    info = await api.nc.jetstream().stream_info("SHAMAN_EVENTS")
    ids = await publish_accepted(api, app, 2)
    resp, stream = await open_stream(api, api.http,
                                     f"?app={app}&since={info.state.last_seq}")
    async with resp:
        got = await stream.events(2)
    assert [e["deploy_id"] for _, e in got] == ids


async def test_200_concurrent_subscribers_all_receive_everything(api: Api) -> None:
    app = uniq()
    await api.create_app(app)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(base_url=api.url, connector=connector,
                                     headers=dict(api.http.headers)) as http:
        opened = await asyncio.gather(*(open_stream(api, http, f"?app={app}")
                                        for _ in range(200)))
        try:
            hub = api.service.ctx.hub
            await wait_for(lambda: hub.clients >= 200, what="200 clients attached")
            assert hub.followers == 1  # one JetStream follower for one filter
            ids = await publish_accepted(api, app, 5)
            results = await asyncio.gather(*(s.events(5, timeout=20) for _, s in opened))
        finally:
            for resp, _ in opened:
                resp.close()
    for got in results:
        assert [e["deploy_id"] for _, e in got] == ids
    hub = api.service.ctx.hub
    await wait_for(lambda: hub.clients == 0 and hub.followers == 0,
                   what="clients detached and the follower stopped")


async def test_team_scoped_token_sees_only_its_teams_events(api: Api) -> None:
    mine, theirs = uniq(), uniq()
    await api.create_app(mine, team="red")
    await api.create_app(theirs, team="blue")
    token = await api.token("viewer", ["red"])
    async with api.client(token) as http:
        async with http.get(f"/v1/events?app={theirs}") as resp:
            assert resp.status == 404
        resp, stream = await open_stream(api, http)
        async with resp:
            await wait_for(lambda: api.service.ctx.hub.clients >= 1, what="client attached")
            await bus_of(api).publish_event(AppScaled(app=theirs, instances=2, previous=1,
                                                      requested_by="x"))
            await bus_of(api).publish_event(AppScaled(app=mine, instances=3, previous=1,
                                                      requested_by="x"))
            _, event = await stream.next_event()
    assert event["app"] == mine


async def test_bad_filters_are_field_errors(api: Api) -> None:
    for query, loc in (("?app=Not_An_App", "app"), ("?type=a..b", "type"),
                       ("?since=abc", "since")):
        async with api.http.get(f"/v1/events{query}") as resp:
            assert resp.status == 422, query
            body = await resp.json()
            assert body["error"]["details"][0]["loc"] == loc
    async with api.http.get("/v1/events", headers={"Last-Event-ID": "x"}) as resp:
        assert resp.status == 422
    async with api.http.get(f"/v1/events?app={uniq()}") as resp:
        assert resp.status == 404


async def test_the_cli_reads_history_up_to_the_marker_and_stops(api: Api) -> None:
    from cli.client import ShamanClient
    from cli.settings import Credentials
    from tests.integration.api.conftest import ADMIN_TOKEN

    app = uniq()
    await api.create_app(app)
    info = await api.nc.jetstream().stream_info("SHAMAN_EVENTS")
    ids = await publish_accepted(api, app, 3)
    async with ShamanClient(Credentials(api_url=api.url, token=ADMIN_TOKEN)) as client:
        got = [e async for e in client.events(app=app, last_event_id=str(info.state.last_seq),
                                              until_replayed=True)]
        # No history at all: the marker comes at once, nothing is waited for.
        none = [e async for e in client.events(app=app, until_replayed=True)]
    assert [e.data["deploy_id"] for e in got] == ids
    assert none == []
