"""Real servers for the scheduler's integration tests, private to this package.

A nats-server and a localnomad (simulated runtime, templates read from the session's
OpenBao) of their own, so that the scheduler's durable consumer never takes work
queued by other packages' tests on the shared servers, and the fault knobs of
localnomad never hit another package. Tests use unique app names.

`Harness` plays the parts around the scheduler: it writes app and deploy records the
way the api does, publishes commands the way the api and the builder do, records the
timeline, and reads Nomad.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import msgspec
import pytest
from nats.js.api import DeliverPolicy

from devstack.components.base import Component
from devstack.components.localnomad import LocalNomad
from devstack.components.nats import NatsServer
from devstack.podman import ContainerStorage
from devstack.ports import free_port
from services.scheduler.app import SchedulerApp, create_app
from services.scheduler.store import Stores
from shared import subjects
from shared.bus import Bus, connect_bus, provision
from shared.commands import DeployImage, encode_command
from shared.events import decode_event
from shared.nomad import NomadClient
from shared.records import (
    AppRecord,
    AppSpec,
    DeployRecord,
    HealthCheck,
    ProcessSpec,
    ReleaseRecord,
    RolloutPolicy,
    release_key,
)
from shared.settings import CommonSettings, SchedulerSettings
from tests.unit.scheduler.waiting import wait_for

_names = itertools.count(1)


@contextlib.contextmanager
def _running(component: Component) -> Iterator[Component]:
    try:
        component.start()
        yield component
    finally:
        component.stop()


@pytest.fixture(scope="package")
def sched_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = NatsServer(tmp_path_factory.mktemp("sched-nats"), free_port(), free_port())
    with _running(server):
        yield server.url


@pytest.fixture(scope="package")
def sched_nomad(
    tmp_path_factory: pytest.TempPathFactory,
    container_storage: ContainerStorage,
    openbao: Any,  # tests.conftest.VaultServer
) -> Iterator[str]:
    server = LocalNomad(
        tmp_path_factory.mktemp("sched-localnomad"), free_port(), runtime="simulated",
        storage=container_storage, vault_addr=openbao.addr, vault_token=openbao.token,
    )
    with _running(server):
        yield server.addr


def localnomad_control(addr: str, path: str, body: dict[str, Any] | None = None,
                       method: str = "POST") -> Any:
    data = json.dumps(body or {}).encode()
    request = urllib.request.Request(f"{addr}/_localnomad/{path}", data=data, method=method)
    with urllib.request.urlopen(request, timeout=5) as resp:
        return json.loads(resp.read() or b"null")


def scheduler_settings(nats_url: str, nomad_addr: str, **overrides: Any) -> SchedulerSettings:
    values: dict[str, Any] = {
        "nats_url": nats_url,
        "nomad_addr": nomad_addr,
        "http_addr": "127.0.0.1:0",
        "resync_interval_s": 30.0,
        "redrive_interval_s": 30.0,
        "requeue_initial_s": 0.05,
        "requeue_max_s": 1.0,
        "command_reconcile_wait_s": 10.0,
        "ack_wait_s": 2.0,
        "check_rollback_image": False,
        "nomad_timeout_s": 3.0,
        "log_format": "console",
    }
    values.update(overrides)
    return SchedulerSettings(**values)


class Harness:
    """The world around the scheduler: records, commands, the timeline, Nomad."""

    def __init__(self, bus: Bus, stores: Stores, nomad: NomadClient, nomad_addr: str,
                 nats_url: str) -> None:
        self.bus = bus
        self.stores = stores
        self.nomad = nomad
        self.nomad_addr = nomad_addr
        self.nats_url = nats_url
        self.events: list[Any] = []
        self._sub: Any = None

    async def start(self) -> None:
        async def on_event(msg: Any) -> None:
            self.events.append(decode_event(msg.data))

        # Read the timeline from the stream, as dashboards and the SSE endpoint do: a
        # publish JetStream deduplicated (same Nats-Msg-Id) is not in it, although a core
        # subscriber would still see it.
        self._sub = await self.bus.js.subscribe(
            subjects.EVENTS_ALL, cb=on_event, ordered_consumer=True,
            deliver_policy=DeliverPolicy.NEW,
        )

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()

    # -- names ------------------------------------------------------------------------

    @staticmethod
    def unique(prefix: str) -> str:
        return f"{prefix}-{next(_names)}"

    # -- records (what the api writes) ----------------------------------------------------

    async def create_app(self, name: str, *, instances: int = 1, **spec: Any) -> AppRecord:
        process = ProcessSpec(
            port=8080, health=HealthCheck(path="/health", interval_s=1.0, timeout_s=1.0),
            rollout=RolloutPolicy(min_healthy_time_s=0.2, healthy_deadline_s=10,
                                  progress_deadline_s=20),
        )
        record = AppRecord(spec=AppSpec(name=name, instances=instances, process=process,
                                        **spec))
        await self.stores.apps.create(name, record)
        return record

    async def create_deploy(self, deploy_id: str, app: str, kind: str = "deploy",
                            status: str = "pending") -> DeployRecord:
        record = DeployRecord(id=deploy_id, app=app, kind=kind, status=status)  # type: ignore[arg-type]
        await self.stores.deploys.create(deploy_id, record)
        return record

    async def publish(self, command: msgspec.Struct, msg_id: str) -> None:
        app = command.app  # type: ignore[attr-defined]
        await self.bus.publish(subjects.release_work_subject(app), encode_command(command),
                               msg_id=msg_id)

    async def deploy_image(self, app: str, deploy_id: str, image: str, *,
                           create_record: bool = True, msg_id: str | None = None) -> None:
        if create_record:
            await self.create_deploy(deploy_id, app)
        digest = image.split("@", 1)[1]
        await self.publish(
            DeployImage(deploy_id=deploy_id, app=app, image=image, digest=digest,
                        description="", created_by="tester"),
            msg_id or f"{deploy_id}:release",
        )

    # -- reading state ---------------------------------------------------------------------

    async def app(self, name: str) -> AppRecord:
        entry = await self.stores.apps.get(name)
        assert entry is not None
        return entry.value

    async def deploy(self, deploy_id: str) -> DeployRecord:
        entry = await self.stores.deploys.get(deploy_id)
        assert entry is not None, deploy_id
        return entry.value

    async def release(self, app: str, version: int) -> ReleaseRecord | None:
        entry = await self.stores.releases.get(release_key(app, version))
        return entry.value if entry is not None else None

    async def releases(self, app: str) -> list[ReleaseRecord]:
        # TypedKV.keys(prefix) cannot be used: nats-py's key filters are substring matches.
        keys = [k for k in await self.stores.releases.keys() if k.startswith(f"{app}.")]
        found = [await self.release(app, int(k.rsplit(".", 1)[1])) for k in keys]
        return sorted((r for r in found if r is not None), key=lambda r: r.version)

    async def wait_deploy(self, deploy_id: str, check: Callable[[DeployRecord], bool],
                          timeout: float = 15.0) -> DeployRecord:
        async def ok() -> bool:
            entry = await self.stores.deploys.get(deploy_id)
            return entry is not None and check(entry.value)

        await wait_for(ok, timeout, interval=0.05, message=f"deploy {deploy_id} condition")
        return await self.deploy(deploy_id)

    async def wait_submitted(self, deploy_id: str, timeout: float = 15.0) -> DeployRecord:
        return await self.wait_deploy(
            deploy_id, lambda d: d.job_modify_index is not None, timeout)

    async def job(self, name: str) -> dict[str, Any] | None:
        return await self.nomad.get_job(name)

    async def wait_job(self, name: str, check: Callable[[dict[str, Any]], bool],
                       timeout: float = 15.0) -> dict[str, Any]:
        async def ok() -> bool:
            job = await self.nomad.get_job(name)
            return job is not None and check(job)

        await wait_for(ok, timeout, interval=0.05, message=f"job {name} condition")
        job = await self.nomad.get_job(name)
        assert job is not None
        return job

    async def versions(self, name: str) -> list[dict[str, Any]]:
        return await self.nomad.get_versions(name)

    def events_of(self, app: str, type_: str) -> list[Any]:
        return [e for e in self.events if e.app == app
                and type(e).__struct_config__.tag == type_]

    async def wait_event(self, app: str, type_: str, count: int = 1,
                         timeout: float = 10.0) -> list[Any]:
        await wait_for(lambda: len(self.events_of(app, type_)) >= count, timeout,
                       message=f"{count} {type_} event(s) for {app}")
        return self.events_of(app, type_)


@pytest.fixture
async def harness(sched_nats: str, sched_nomad: str) -> AsyncIterator[Harness]:
    bus = await connect_bus(CommonSettings(nats_url=sched_nats), "scheduler-test")  # type: ignore[call-arg]
    await provision(bus.js)
    nomad = NomadClient(sched_nomad, timeout_s=5.0)
    h = Harness(bus, await Stores.open(bus), nomad, sched_nomad, sched_nats)
    await h.start()
    try:
        yield h
    finally:
        await h.stop()
        await nomad.aclose()
        await bus.close()


@pytest.fixture
async def scheduler(sched_nats: str, sched_nomad: str) -> AsyncIterator[SchedulerApp]:
    async with create_app(scheduler_settings(sched_nats, sched_nomad)) as app:
        yield app


async def drain(app: SchedulerApp, timeout: float = 10.0) -> None:
    """Wait until the scheduler has nothing queued or running."""
    await wait_for(lambda: app.queue.is_idle(), timeout, message="scheduler queue idle")
