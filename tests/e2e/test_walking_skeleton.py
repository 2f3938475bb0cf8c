"""The walking skeleton (issue 3): an image deploy requested over HTTP ends as a healthy
rollout on Nomad that anyone can watch, a second image rolls out as v2, and a duplicated
deploy message creates nothing twice.

The whole stack as `make run` starts it (tests/conftest.py `shaman_stack`): the four services
as separate processes, localnomad running real podman containers, a real registry.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import nats
import pytest

from devstack.images import build, push
from shared import subjects
from shared.commands import BuildRequested, ImageSource

if TYPE_CHECKING:
    from tests.conftest import ShamanStack

pytestmark = [pytest.mark.e2e, pytest.mark.podman]

REPO = Path(__file__).resolve().parents[2]
HELLO = REPO / "examples" / "hello"
APP = "skeleton"


def api(stack: ShamanStack, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"{stack.api_url}{path}", data=data, method=method,
        headers={"Authorization": f"Bearer {stack.admin_token}",
                 "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def wait_for(what: str, check: Callable[[], Any], timeout_s: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


async def admin_nats(stack: ShamanStack) -> nats.aio.client.Client:
    """The devstack's NATS requires a login: the tests act as its operator user."""
    # Its own inbox prefix: the `client` user may read _INBOX.>, so replies to the
    # operator must not go there.
    return await nats.connect(stack.nats_url, user="admin",
                              password=stack.config.nats_password("admin"),
                              inbox_prefix=b"_INBOX_admin")


def nomad(stack: ShamanStack, path: str) -> Any:
    with urllib.request.urlopen(f"{stack.nomad_addr}{path}", timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def images(shaman_stack: ShamanStack, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Two different images of examples/hello in the stack's registry."""
    refs = []
    log = tmp_path_factory.mktemp("skeleton-build") / "build.log"
    for greeting in ("v1 says hello", "v2 says hello"):
        context = tmp_path_factory.mktemp("ctx")
        shutil.copytree(HELLO, context, dirs_exist_ok=True)
        containerfile = (context / "Containerfile").read_text()
        (context / "Containerfile").write_text(
            containerfile.replace('GREETING="Hello from Shaman"', f'GREETING="{greeting}"'))
        ref = f"{shaman_stack.registry}/{APP}:{greeting.split()[0]}"
        build(shaman_stack.storage, context, ref, log,
              build_args={"REGISTRY": shaman_stack.registry})
        push(shaman_stack.storage, ref, log)
        refs.append(ref)
    return refs


def deploy_and_wait(stack: ShamanStack, image: str) -> dict[str, Any]:
    status, accepted = api(stack, "POST", f"/v1/apps/{APP}/deploys", {"image": image})
    assert status == 202, accepted
    assert accepted["status"] in ("pending", "building")

    def finished() -> dict[str, Any] | None:
        _, record = api(stack, "GET", f"/v1/apps/{APP}/deploys/{accepted['id']}")
        return record if record["status"] in ("healthy", "failed", "rolled_back") else None

    record = wait_for(f"deploy {accepted['id']} to finish", finished, timeout_s=180)
    assert record["status"] == "healthy", record
    return record


async def timeline(stack: ShamanStack, deploy_id: str) -> list[dict[str, Any]]:
    """Every event of one deploy, read back from the SHAMAN_EVENTS stream."""
    nc = await admin_nats(stack)
    try:
        js = nc.jetstream()
        sub = await js.subscribe(subjects.app_events_filter(APP), ordered_consumer=True)
        events: list[dict[str, Any]] = []
        while True:
            try:
                msg = await sub.next_msg(timeout=1.0)
            except nats.errors.TimeoutError:
                break
            event = json.loads(msg.data)
            if event["deploy_id"] == deploy_id:
                events.append(event)
        await sub.unsubscribe()
        return events
    finally:
        await nc.close()


def test_image_deploys_roll_out_as_v1_then_v2(
    shaman_stack: ShamanStack, images: list[str]
) -> None:
    status, body = api(shaman_stack, "POST", "/v1/apps",
                       {"name": APP, "port": 8080, "health": {"path": "/health"}})
    assert status == 201, body

    first = deploy_and_wait(shaman_stack, images[0])
    assert first["release"] == 1
    job = nomad(shaman_stack, f"/v1/job/{APP}")
    assert job["Meta"]["shaman_release"] == "1"
    assert job["Meta"]["shaman_deploy_id"] == first["id"]
    assert job["TaskGroups"][0]["Update"]["AutoRevert"] is False

    events = asyncio.run(timeline(shaman_stack, first["id"]))
    types = [e["type"] for e in events]
    for expected in ("deploy.accepted", "build.succeeded", "release.created",
                     "rollout.submitted", "rollout.healthy", "deploy.finished"):
        assert expected in types, types
    assert types.index("rollout.submitted") < types.index("rollout.healthy")
    healthy = next(e for e in events if e["type"] == "rollout.healthy")
    assert healthy["release"] == 1 and healthy["app"] == APP and healthy["time"]

    second = deploy_and_wait(shaman_stack, images[1])
    assert second["release"] == 2
    job = nomad(shaman_stack, f"/v1/job/{APP}")
    assert job["Meta"]["shaman_release"] == "2"
    # The app really serves the second image.
    services = nomad(shaman_stack, f"/v1/service/{APP}")
    address = f"http://{services[0]['Address']}:{services[0]['Port']}/"

    def serves_v2() -> bool:
        try:
            with urllib.request.urlopen(address, timeout=5) as response:
                return b"v2 says hello" in response.read()
        except OSError:
            return False

    wait_for("the app to serve v2", serves_v2, timeout_s=60)
    _, releases = api(shaman_stack, "GET", f"/v1/apps/{APP}/releases")
    assert [r["version"] for r in releases["releases"]] == [2, 1]


def test_a_duplicated_deploy_message_creates_nothing_twice(
    shaman_stack: ShamanStack, images: list[str]
) -> None:
    _, before_releases = api(shaman_stack, "GET", f"/v1/apps/{APP}/releases")
    versions_before = nomad(shaman_stack, f"/v1/job/{APP}/versions")["Versions"]
    _, deploys = api(shaman_stack, "GET", f"/v1/apps/{APP}/deploys")
    latest = deploys["deploys"][0]
    assert latest["status"] == "healthy"

    async def republish() -> None:
        nc = await admin_nats(shaman_stack)
        try:
            js = nc.jetstream()
            command = BuildRequested(deploy_id=latest["id"], app=APP,
                                     source=ImageSource(image=images[1]), requested_by="test")
            # A new message id defeats JetStream's dedupe: the services must see it as done.
            await js.publish(subjects.build_work_subject(APP), msgspec.json.encode(command),
                             headers={"Nats-Msg-Id": f"{latest['id']}:build:replayed"})
        finally:
            await nc.close()

    asyncio.run(republish())

    def work_queues_empty() -> bool:
        async def check() -> bool:
            nc = await admin_nats(shaman_stack)
            try:
                js = nc.jetstream()
                build = await js.stream_info(subjects.STREAM_BUILD_WORK)
                release = await js.stream_info(subjects.STREAM_RELEASE_WORK)
                return build.state.messages == 0 and release.state.messages == 0
            finally:
                await nc.close()
        return asyncio.run(check())

    wait_for("the replayed message to be consumed", work_queues_empty, timeout_s=60)
    _, after_releases = api(shaman_stack, "GET", f"/v1/apps/{APP}/releases")
    assert after_releases == before_releases
    versions_after = nomad(shaman_stack, f"/v1/job/{APP}/versions")["Versions"]
    assert len(versions_after) == len(versions_before)
    _, record = api(shaman_stack, "GET", f"/v1/apps/{APP}/deploys/{latest['id']}")
    assert record["status"] == "healthy" and record["release"] == latest["release"]
