"""NATS permissions on the devstack's nats-server: each user can do its job and nothing else.

Two halves:

- **The table, operation by operation** (no containers): a nats-server started by the
  devstack's own component with the generated users (`devstack/nats_permissions.py`), and
  `shared.bus` (and the api's stream followers) run as each user: provisioning on an empty
  server, each work consumer's fetch / ack / dead-letter, each bucket and object store read
  or written, the api following and replaying its streams. Nothing may be refused.
- **The whole stack** (`shaman_stack`: the four services logged in as their own users): a
  source upload is built and deployed through the API, its build log, audit entries and
  timeline (SSE) are read back, and the `client` user requests a deploy over NATS and follows
  it on the live timeline; afterwards the server has logged no permission violation for any
  service connection. Then what users must not do is tried on that same server, each with a
  connection of our own named TEST_CLIENT, and the server's refusal is asserted: the
  `Permissions Violation` the client is told, and the request that gets no answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import json
import tarfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import msgspec
import nats
import nats.errors
import pytest
from nats.aio.client import Client

from devstack.components.base import http_request
from devstack.components.nats import NatsServer
from devstack.nats_permissions import ACCESS, SERVICE_USERS, USERS, authorization_block
from devstack.ports import free_port
from services.api.stream_tail import StreamTail, read_range
from shared import subjects as s
from shared.bus import Bus, ConsumerSpec, Delivery, TypedKV, WorkConsumer, connect_bus, provision
from shared.bus.provision import stream_configs
from shared.errors import PermanentError
from shared.events import DeployRequested, encode_event
from shared.settings import CommonSettings

if TYPE_CHECKING:
    from tests.conftest import ShamanStack

REPO = Path(__file__).resolve().parents[2]
HELLO_DIR = REPO / "examples" / "hello"
TEST_CLIENT = "permissions-test"
DEPLOY_TIMEOUT_S = 240.0
REFUSAL_TIMEOUT_S = 0.5  # a refused request is never answered; don't wait long for it
TERMINAL = {"healthy", "failed", "rolled_back", "superseded", "cancelled"}

Doc = dict[str, Any]


async def wait_for(
    check: Callable[[], Awaitable[Any]], what: str, timeout: float = 10.0
) -> Any:
    """The first truthy result of `check`, polled until the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.1)


def uniq(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# -- logging in ------------------------------------------------------------------------------


@dataclass
class Login:
    """One connection of ours as some user, with every error the server sent it."""

    nc: Client
    errors: list[Exception] = field(default_factory=list)

    async def refused(self, kind: str, subject: str) -> None:
        """The server told us it refused to `kind` ("publish", "subscription") `subject`."""
        # nats-py lower-cases the server's whole -ERR line, subject included.
        text = f'permissions violation for {kind} to "{subject}"'.lower()

        async def told() -> bool:
            return any(text in str(error).lower() for error in self.errors)

        await wait_for(told, text, timeout=5.0)

    async def refuses_request(self, subject: str, payload: bytes = b"") -> None:
        with pytest.raises(nats.errors.TimeoutError):
            await self.nc.request(subject, payload, timeout=REFUSAL_TIMEOUT_S)
        await self.refused("publish", subject)

    async def refuses_subscription(self, subject: str) -> None:
        sub = await self.nc.subscribe(subject)
        await self.nc.flush()
        await self.refused("subscription", subject)
        with contextlib.suppress(Exception):
            await sub.unsubscribe()

    def violations(self) -> list[str]:
        return [str(error) for error in self.errors if "violation" in str(error).lower()]


@contextlib.asynccontextmanager
async def login(url: str, user: str | None, password: str | None) -> AsyncIterator[Login]:
    errors: list[Exception] = []

    async def on_error(error: Exception) -> None:
        errors.append(error)

    options: dict[str, Any] = {}
    if user is not None and ACCESS[user].private_inbox:
        options["inbox_prefix"] = s.inbox_prefix(user)
    nc = await nats.connect(
        url, user=user, password=password, name=TEST_CLIENT, error_cb=on_error,
        allow_reconnect=False, connect_timeout=2, **options,
    )
    try:
        yield Login(nc, errors)
    finally:
        await nc.close()


@contextlib.asynccontextmanager
async def service_bus(url: str, user: str, password: str) -> AsyncIterator[tuple[Bus, Login]]:
    """Connected the way the service is: shared.bus.connect_bus with its user (and so its
    private inbox); the server's errors are collected instead of only logged."""
    errors: list[Exception] = []

    async def on_error(error: Exception) -> None:
        errors.append(error)

    settings = CommonSettings(nats_url=url, nats_user=user, nats_password=password)  # type: ignore[call-arg]
    bus = await connect_bus(settings, f"{TEST_CLIENT}-{user}", error_cb=on_error,
                            allow_reconnect=False)
    try:
        yield bus, Login(bus.nc, errors)
    finally:
        await bus.close()


# -- the table, operation by operation, on a server of its own ------------------------------


@dataclass(frozen=True)
class AuthServer:
    url: str
    passwords: dict[str, str]
    log_path: Path


def start_auth_server(home: Path) -> tuple[NatsServer, AuthServer]:
    passwords = {user: f"{user}-{uuid.uuid4().hex}" for user in USERS}
    server = NatsServer(home, free_port(), free_port(),
                        authorization=authorization_block(passwords))
    server.start()
    return server, AuthServer(server.url, passwords, server.log_path)


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServer]:
    """Provisioned once by the api user (the provisioning owner)."""
    server, auth = start_auth_server(tmp_path_factory.mktemp("nats-auth"))
    try:
        async def provision_as_api() -> None:
            async with service_bus(auth.url, "api", auth.passwords["api"]) as (bus, _):
                await provision(bus.js)

        asyncio.run(provision_as_api())
        yield auth
    finally:
        server.stop()


@pytest.fixture
def empty_auth_server(tmp_path: Path) -> Iterator[AuthServer]:
    server, auth = start_auth_server(tmp_path / "nats")
    try:
        yield auth
    finally:
        server.stop()


async def test_any_service_can_provision_first_but_only_the_api_changes_a_stream(
    empty_auth_server: AuthServer,
) -> None:
    srv = empty_auth_server
    for user in ("builder", "scheduler", "watcher", "api"):  # the builder first, on nothing
        async with service_bus(srv.url, user, srv.passwords[user]) as (bus, me):
            await provision(bus.js)
            assert me.violations() == [], user

    # A stream left with another config (an older release's limits):
    async with login(srv.url, "admin", srv.passwords["admin"]) as admin:
        audit = next(c for c in stream_configs(1) if c.name == s.STREAM_AUDIT)
        await admin.nc.jetstream().update_stream(dataclasses.replace(audit, max_age=3600.0))

        # ... a builder may not bring it up to date: its update is refused ...
        async with service_bus(srv.url, "builder", srv.passwords["builder"]) as (bus, me):
            with pytest.raises(nats.errors.TimeoutError):
                await provision(bus.nc.jetstream(timeout=REFUSAL_TIMEOUT_S))
            await me.refused("publish", f"$JS.API.STREAM.UPDATE.{s.STREAM_AUDIT}")
        # ... the api does, and then the builder starts again.
        async with service_bus(srv.url, "api", srv.passwords["api"]) as (bus, me):
            await provision(bus.js)
            assert me.violations() == []
        info = await admin.nc.jetstream().stream_info(s.STREAM_AUDIT)
        assert info.config.max_age == pytest.approx(audit.max_age)
        async with service_bus(srv.url, "builder", srv.passwords["builder"]) as (bus, me):
            await provision(bus.js)
            assert me.violations() == []


CONSUMERS = [(user, stream, durable) for user, access in ACCESS.items()
             for stream, durable in access.consume]
WORK_SUBJECT = {
    s.STREAM_REQUESTS: s.deploy_request_subject,
    s.STREAM_BUILD_WORK: s.build_work_subject,
    s.STREAM_RELEASE_WORK: s.release_work_subject,
}
FILTER = {s.STREAM_REQUESTS: s.REQUESTS_ALL, s.STREAM_BUILD_WORK: s.BUILD_WORK_ALL,
          s.STREAM_RELEASE_WORK: s.RELEASE_WORK_ALL}


@pytest.mark.parametrize(("user", "stream", "durable"), CONSUMERS)
async def test_each_work_consumer_handles_and_dead_letters_under_its_user(
    auth_server: AuthServer, user: str, stream: str, durable: str
) -> None:
    srv = auth_server
    dead: list[str] = []

    async def handle(delivery: Delivery) -> None:
        if delivery.data == b"bad":
            raise PermanentError("not a command")

    async def on_dead_letter(_data: bytes, reason: str, _headers: dict[str, str]) -> None:
        dead.append(reason)

    async with service_bus(srv.url, user, srv.passwords[user]) as (bus, me):
        consumer = WorkConsumer(bus, ConsumerSpec(stream, durable, FILTER[stream], ack_wait_s=5),
                                handle, on_dead_letter=on_dead_letter)
        await consumer.start()
        try:
            async with login(srv.url, "admin", srv.passwords["admin"]) as admin:
                js = admin.nc.jetstream()
                subject = WORK_SUBJECT[stream](uniq("app"))
                await js.publish(subject, b"good")
                await js.publish(subject, b"bad")

                async def both_done() -> bool:
                    return consumer.handled == 1 and consumer.dead_lettered == 1

                await wait_for(both_done, "one handled and one dead-lettered message")
                letter = await js.get_last_msg(s.STREAM_DEAD_LETTER,
                                               s.dead_letter_subject(stream, durable))
                assert letter.data == b"bad"
                assert dead == ["not a command"]

                async def queue_empty() -> bool:
                    pending = await js.consumer_info(stream, durable)
                    return pending.num_ack_pending == 0 and pending.num_pending == 0

                await wait_for(queue_empty, "both messages acked or termed")
        finally:
            await consumer.stop()
        assert me.violations() == []


BIG_OBJECT = b"0123456789abcdef" * (512 * 1024)  # 8 MiB


class Note(msgspec.Struct):
    text: str


@pytest.mark.parametrize("user", SERVICE_USERS)
async def test_each_service_uses_its_buckets_and_object_stores(
    auth_server: AuthServer, user: str
) -> None:
    srv = auth_server
    access = ACCESS[user]
    key = s.kv_key("permissions", uniq(user))
    async with login(srv.url, "admin", srv.passwords["admin"]) as admin:
        admin_js = admin.nc.jetstream()
        for bucket in access.kv_read:
            await (await admin_js.key_value(bucket)).put(key, msgspec.json.encode(Note(text="r")))
        for bucket in access.objects_read:
            await (await admin_js.object_store(bucket)).put(key, b"source bytes")

        async with service_bus(srv.url, user, srv.passwords[user]) as (bus, me):
            for bucket in access.kv_write:
                kv = TypedKV(await bus.js.key_value(bucket), Note)
                revision = await kv.create(key, Note(text="one"))
                await kv.update(key, Note(text="two"), last=revision)
                entry = await kv.get(key)
                assert entry is not None and entry.value.text == "two"
                assert key in await kv.keys("permissions")
                await kv.delete(key)
                assert await kv.get(key) is None
            for bucket in access.kv_read:
                kv = TypedKV(await bus.js.key_value(bucket), Note)
                entry = await kv.get(key)
                assert entry is not None and entry.value.text == "r"
                assert key in await kv.keys("permissions")
            for bucket in access.objects_write:
                store = await bus.js.object_store(bucket)
                await store.put(key, b"first")
                # Replacing purges the first one's chunks; reading this many chunks makes
                # the server ask for flow control.
                await store.put(key, BIG_OBJECT)
                assert (await store.get(key)).data == BIG_OBJECT
            for bucket in access.objects_read:
                store = await bus.js.object_store(bucket)
                assert (await store.get(key)).data == b"source bytes"
            await bus.publish_event(_event_for(user))
            assert me.violations() == []


def _event_for(user: str) -> Any:
    from shared.events.deploy import DeployAccepted

    return DeployAccepted(app=uniq(user), deploy_id="d-permissions", kind="deploy",
                          source="test", requested_by=TEST_CLIENT)


async def test_the_api_follows_and_replays_its_streams(auth_server: AuthServer) -> None:
    srv = auth_server
    app = uniq("tail")
    seen: list[str] = []

    async def on_message(_seq: int, subject: str, _data: bytes) -> None:
        seen.append(subject)

    async with service_bus(srv.url, "api", srv.passwords["api"]) as (bus, me):
        tail = StreamTail(bus, s.STREAM_EVENTS, s.app_events_filter(app), on_message,
                          heartbeat_s=0.5)
        await tail.start(after_seq=0)
        try:
            subject = s.event_subject(app, "deploy.accepted")
            await bus.publish(subject, b"{}")

            async def delivered() -> bool:
                return subject in seen

            await wait_for(delivered, "the live tail to deliver the event")
        finally:
            await tail.stop()
        await bus.publish(s.audit_subject(f"{app}.check"), b"{}")
        replay = await read_range(bus, s.STREAM_AUDIT, s.AUDIT_ALL, 0, limit=10_000)
        assert s.audit_subject(f"{app}.check") in [entry[1] for entry in replay]
        assert me.violations() == []


# -- the whole stack -------------------------------------------------------------------------


@dataclass(frozen=True)
class StackNats:
    url: str
    passwords: dict[str, str]
    log_path: Path
    monitor: str


@pytest.fixture
def stack_nats(shaman_stack: ShamanStack) -> StackNats:
    config = shaman_stack.config
    return StackNats(
        url=config.nats_url, passwords=config.nats_passwords(),
        log_path=config.home / "logs" / "nats.log",
        monitor=f"http://{config.host}:{config.ports['nats_monitor']}",
    )


def service_violations(log_path: Path) -> list[str]:
    """The server's log lines about a service user refused something, except those of our
    own test connections (`... "v2.16.0:python3:NAME" - "$G/user:builder" - Publish
    Violation - Subject "..."`)."""
    users = tuple(f'"$G/user:{user}"' for user in SERVICE_USERS)
    return [line for line in log_path.read_text(errors="replace").splitlines()
            if "Violation" in line and TEST_CLIENT not in line and any(u in line for u in users)]


@pytest.mark.e2e
@pytest.mark.podman
def test_each_service_is_logged_in_as_its_own_user(stack_nats: StackNats) -> None:
    response = http_request(f"{stack_nats.monitor}/connz?auth=true&limit=1024")
    assert response is not None and response.status == 200
    connections = response.json()["connections"]
    users: dict[str, set[str]] = {}
    for conn in connections:
        name = conn.get("name", "")
        for service in SERVICE_USERS:
            if name.startswith((f"{service}-", f"{service}:")):
                users.setdefault(service, set()).add(conn.get("authorized_user", ""))
    assert users == {service: {service} for service in SERVICE_USERS}


def hello_tarball() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(HELLO_DIR.iterdir()):
            tar.add(path, arcname=path.name)
    return buffer.getvalue()


class Api:
    def __init__(self, session: aiohttp.ClientSession, stack: ShamanStack) -> None:
        self.session = session
        self.url = stack.api_url
        self.headers = {"Authorization": f"Bearer {stack.admin_token}"}

    async def call(self, method: str, path: str, *, json_body: Any = None,
                   data: bytes | None = None, content_type: str | None = None) -> tuple[int, Any]:
        headers = dict(self.headers)
        if content_type:
            headers["Content-Type"] = content_type
        async with self.session.request(method, self.url + path, json=json_body, data=data,
                                        headers=headers) as response:
            text = await response.text()
            try:
                return response.status, json.loads(text)
            except ValueError:
                return response.status, text

    async def finished(self, app: str, deploy_id: str) -> Doc:
        async def terminal() -> Doc | None:
            status, deploy = await self.call("GET", f"/v1/apps/{app}/deploys/{deploy_id}")
            assert status == 200, deploy
            return deploy if deploy["status"] in TERMINAL else None

        return await wait_for(terminal, f"deploy {deploy_id} to finish", DEPLOY_TIMEOUT_S)  # type: ignore[no-any-return]

    async def timeline(self, app: str, until_type: str) -> list[Doc]:
        """SSE from the start of the app's timeline until an event of `until_type`."""
        events: list[Doc] = []
        async with self.session.get(f"{self.url}/v1/events", params={"app": app, "since": "0"},
                                    headers=self.headers,
                                    timeout=aiohttp.ClientTimeout(total=30)) as response:
            assert response.status == 200
            async for raw in response.content:
                line = raw.decode().strip()
                if line.startswith("data:"):
                    events.append(json.loads(line[len("data:"):]))
                    if events[-1]["type"] == until_type:
                        break
        return events


@pytest.mark.e2e
@pytest.mark.podman
async def test_the_services_build_and_deploy_under_their_permissions(
    shaman_stack: ShamanStack, stack_nats: StackNats
) -> None:
    app = uniq("perms")
    async with aiohttp.ClientSession() as session:
        api = Api(session, shaman_stack)
        status, body = await api.call("POST", "/v1/apps", json_body={
            "name": app, "port": 8080,
            "health": {"path": "/health", "interval_s": 1, "timeout_s": 1},
            "rollout": {"min_healthy_time_s": 0.2, "healthy_deadline_s": 30,
                        "progress_deadline_s": 60},
        })
        assert status == 201, body

        # api: upload into shaman_sources; builder: read it, build, write the build log.
        status, body = await api.call("POST", f"/v1/apps/{app}/deploys", data=hello_tarball(),
                                      content_type="application/gzip")
        assert status == 202, body
        deploy = await api.finished(app, body["id"])
        assert deploy["status"] == "healthy", deploy
        status, build_log = await api.call("GET", f"/v1/apps/{app}/builds/{deploy['id']}/log")
        assert status == 200 and build_log, build_log
        status, audit = await api.call("GET", f"/v1/audit?app={app}")
        assert status == 200 and audit, audit
        types = [event["type"] for event in await api.timeline(app, "deploy.finished")]
        assert "build.succeeded" in types and "rollout.healthy" in types, types

        # The client user asks for a deploy of that image over NATS and follows it live.
        async with login(stack_nats.url, "client", stack_nats.passwords["client"]) as client:
            events: list[Doc] = []

            async def on_event(msg: Any) -> None:
                events.append(json.loads(msg.data))

            await client.nc.subscribe(s.app_events_filter(app), cb=on_event)
            request = DeployRequested(app=app, image=deploy["image"])
            ack = await client.nc.jetstream().publish(
                s.deploy_request_subject(app), encode_event(request),
                headers={"Shaman-Token": shaman_stack.admin_token,
                         "Nats-Msg-Id": uniq("request")})
            assert ack.stream == s.STREAM_REQUESTS

            async def finished() -> Doc | None:
                return next((e for e in events if e["type"] == "deploy.finished"), None)

            done = await wait_for(finished, "the requested deploy to finish", DEPLOY_TIMEOUT_S)
            assert done["status"] == "healthy", events
            assert "deploy.accepted" in [e["type"] for e in events]
            assert client.violations() == []

    assert service_violations(stack_nats.log_path) == []


@pytest.mark.e2e
@pytest.mark.podman
async def test_the_watcher_cannot_queue_builds(stack_nats: StackNats) -> None:
    async with login(stack_nats.url, "watcher", stack_nats.passwords["watcher"]) as watcher:
        js = watcher.nc.jetstream(timeout=REFUSAL_TIMEOUT_S)
        with pytest.raises(nats.errors.TimeoutError):
            await js.publish("shaman.work.build.x", b"{}", timeout=REFUSAL_TIMEOUT_S)
        await watcher.refused("publish", "shaman.work.build.x")
        # ... nor take the builders' work, nor write the audit log.
        await watcher.refuses_request(
            f"$JS.API.CONSUMER.MSG.NEXT.{s.STREAM_BUILD_WORK}.{s.CONSUMER_BUILDERS}")
        await watcher.refuses_request(s.audit_subject("forged"))


@pytest.mark.e2e
@pytest.mark.podman
async def test_the_builder_cannot_read_tokens(stack_nats: StackNats) -> None:
    async with login(stack_nats.url, "builder", stack_nats.passwords["builder"]) as builder:
        js = builder.nc.jetstream(timeout=REFUSAL_TIMEOUT_S)
        with pytest.raises(nats.errors.TimeoutError):
            await js.key_value(s.KV_TOKENS)
        await builder.refused("publish", f"$JS.API.STREAM.INFO.KV_{s.KV_TOKENS}")
        await builder.refuses_request(
            f"$JS.API.DIRECT.GET.KV_{s.KV_TOKENS}.$KV.{s.KV_TOKENS}.anything")
        await builder.refuses_request(f"$JS.API.STREAM.MSG.GET.KV_{s.KV_TOKENS}")
        await builder.refuses_subscription(f"$KV.{s.KV_TOKENS}.>")
        # Nor another service's replies (the api's token lookups arrive there).
        await builder.refuses_subscription(f"{s.inbox_prefix('api')}.>")
        await builder.refuses_subscription("_INBOX.>")
        # Nor change a stream (it may only create what exists with the same config).
        await builder.refuses_request(f"$JS.API.STREAM.UPDATE.{s.STREAM_AUDIT}")
        await builder.refuses_request(f"$JS.API.STREAM.DELETE.{s.STREAM_AUDIT}")


@pytest.mark.e2e
@pytest.mark.podman
async def test_the_client_may_only_request_deploys_and_follow_events(
    stack_nats: StackNats,
) -> None:
    async with login(stack_nats.url, "client", stack_nats.passwords["client"]) as client:
        js = client.nc.jetstream(timeout=REFUSAL_TIMEOUT_S)
        for subject in ("shaman.work.build.x", "shaman.work.release.x"):
            with pytest.raises(nats.errors.TimeoutError):
                await js.publish(subject, b"{}", timeout=REFUSAL_TIMEOUT_S)
            await client.refused("publish", subject)
        with pytest.raises(nats.errors.TimeoutError):
            await js.key_value(s.KV_APPS)
        await client.refused("publish", f"$JS.API.STREAM.INFO.KV_{s.KV_APPS}")
        await client.refuses_request(f"$JS.API.DIRECT.GET.KV_{s.KV_APPS}.$KV.{s.KV_APPS}.x")
        await client.refuses_request(f"$JS.API.CONSUMER.CREATE.{s.STREAM_EVENTS}")
        await client.refuses_subscription("shaman.work.>")
        await client.refuses_subscription(f"{s.inbox_prefix('api')}.>")
        # What it may do: a deploy request (answered by the stream) and the live timeline.
        refusals = len(client.violations())
        await client.nc.subscribe(s.EVENTS_ALL)
        ack = await js.publish(s.deploy_request_subject(uniq("nosuchapp")), b"{}",
                               headers={"Nats-Msg-Id": uniq("request")})
        assert ack.stream == s.STREAM_REQUESTS
        await client.nc.flush()
        assert len(client.violations()) == refusals


@pytest.mark.e2e
@pytest.mark.podman
@pytest.mark.parametrize(("user", "password"), [(None, None), ("api", "wrong"), ("nobody", "x")])
async def test_a_login_without_a_valid_password_is_refused(
    stack_nats: StackNats, user: str | None, password: str | None
) -> None:
    with pytest.raises(nats.errors.Error, match=r"(?i)authorization violation"):
        await nats.connect(stack_nats.url, user=user, password=password, name=TEST_CLIENT,
                           allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=2)
