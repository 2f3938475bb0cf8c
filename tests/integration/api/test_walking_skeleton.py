"""The walking skeleton through the api: create an app, deploy an image, read the deploy."""

from __future__ import annotations

import json

import msgspec

from shared.commands import BuildRequested, ImageSource, build_decoder
from shared.subjects import STREAM_BUILD_WORK, STREAM_EVENTS, build_work_subject
from tests.integration.api.conftest import Api
from tests.integration.api.helpers import stream_messages, uniq


async def test_create_then_read_app(api: Api) -> None:
    name = uniq()
    created = await api.create_app(name, image="127.0.0.1:5000/hello", port=8000,
                                   health={"path": "/health"})
    assert created["name"] == name
    assert created["port"] == 8000
    assert created["team"] == "default"
    assert created["state"] == "new"
    async with api.http.get(f"/v1/apps/{name}") as resp:
        assert resp.status == 200
        assert (await resp.json())["health"]["path"] == "/health"
    async with api.http.get("/v1/apps") as resp:
        names = [a["name"] for a in (await resp.json())["apps"]]
    assert name in names


async def test_image_deploy_is_recorded_and_queued(api: Api) -> None:
    name = uniq()
    await api.create_app(name)
    async with api.http.post(f"/v1/apps/{name}/deploys",
                             json={"image": "127.0.0.1:5000/hello:v1"}) as resp:
        assert resp.status == 202, await resp.text()
        deploy = await resp.json()
    assert deploy["status"] == "pending"
    assert deploy["app"] == name
    assert deploy["kind"] == "deploy"
    assert deploy["release"] is None
    assert deploy["id"].startswith("d-")

    async with api.http.get(f"/v1/apps/{name}/deploys/{deploy['id']}") as resp:
        assert resp.status == 200
        assert (await resp.json())["status"] == "pending"
    async with api.http.get(f"/v1/apps/{name}") as resp:
        assert (await resp.json())["latest_deploy_id"] == deploy["id"]

    js = api.nc.jetstream()
    work = await stream_messages(js, STREAM_BUILD_WORK, build_work_subject(name))
    assert len(work) == 1
    _, _, data, headers = work[0]
    command = build_decoder.decode(data)
    assert isinstance(command, BuildRequested)
    assert command.deploy_id == deploy["id"]
    assert command.source == ImageSource(image="127.0.0.1:5000/hello:v1")
    assert headers["Nats-Msg-Id"] == f"{deploy['id']}:build"

    events = await stream_messages(js, STREAM_EVENTS, f"shaman.events.{name}.>")
    types = [json.loads(d)["type"] for _, _, d, _ in events]
    assert types == ["deploy.accepted"]
    accepted = msgspec.json.decode(events[0][2])
    assert accepted["deploy_id"] == deploy["id"]
