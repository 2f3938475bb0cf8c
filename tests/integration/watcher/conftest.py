"""Real servers for the watcher's integration tests, private to this package.

Each test gets a nats-server of its own (it starts in milliseconds), so the KV buckets
hold only what the test seeds and the watcher relists nothing else; the package shares
one localnomad (simulated runtime) whose control surface (`/_localnomad/`) the tests
drive: task behaviors, cut event streams, a paused deployment watcher. Apps have unique
names, so jobs of earlier tests are never in a later test's `shaman_apps`.

`Harness` plays the parts around the watcher: it writes app and deploy records the way
the api and the scheduler do, registers Nomad job versions carrying `Meta.shaman_deploy_id`
/ `Meta.shaman_release` (as the scheduler renders them), and reads back the timeline and
the work queue from JetStream.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import nomad
import pytest

from devstack.components.base import Component
from devstack.components.localnomad import LocalNomad
from devstack.components.nats import NatsServer
from devstack.podman import ContainerStorage
from devstack.ports import free_port
from services.watcher.app import WatcherApp, create_app
from shared import subjects
from shared.bus import Bus, TypedKV, connect_bus, provision
from shared.commands import ReleaseCommand, release_decoder
from shared.events import TimelineEvent, decode_event
from shared.records import AppRecord, AppSpec, DeployRecord, StatusChange
from shared.settings import CommonSettings, WatcherSettings

from .waiting import wait_for

_names = itertools.count(1)
S = 1_000_000_000
REPO = Path(__file__).resolve().parents[3]


@contextlib.contextmanager
def _running(component: Component) -> Iterator[Component]:
    try:
        component.start()
        yield component
    finally:
        component.stop()


@pytest.fixture(scope="module")
def nomad_addr(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("watcher-localnomad")
    server = LocalNomad(home, free_port(), runtime="simulated",
                        storage=ContainerStorage(home / "containers"))
    with _running(server):
        yield server.addr


@pytest.fixture
def nats_url(tmp_path: Path) -> Iterator[str]:
    server = NatsServer(tmp_path / "nats-home", free_port(), free_port())
    with _running(server):
        yield server.url


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def control(addr: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """Call localnomad's test-only control surface."""
    data = json.dumps(body or {}).encode() if method != "GET" else None
    req = urllib.request.Request(f"{addr}/_localnomad/{path}", data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read() or b"null")


def job_spec(
    app: str,
    deploy_id: str,
    release: int,
    *,
    count: int = 1,
    checks: bool = False,
    min_healthy_s: float = 0.2,
    healthy_deadline_s: float = 20.0,
    progress_deadline_s: float = 30.0,
    restart_attempts: int = 5,
    marker: str = "",
) -> dict[str, Any]:
    """A job as the scheduler renders it, with tiny timings."""
    group: dict[str, Any] = {
        "Name": "web",
        "Count": count,
        "Networks": [{"DynamicPorts": [{"Label": "http", "To": 8080}]}],
        "Update": {
            "MaxParallel": 1, "HealthCheck": "checks" if checks else "task_states",
            "MinHealthyTime": int(min_healthy_s * S),
            "HealthyDeadline": int(healthy_deadline_s * S),
            "ProgressDeadline": int(progress_deadline_s * S), "AutoRevert": False,
        },
        "RestartPolicy": {"Attempts": restart_attempts, "Interval": 600 * S,
                          "Delay": int(0.05 * S), "Mode": "fail"},
        "ReschedulePolicy": {"Attempts": 0, "Unlimited": False},
        "Tasks": [{
            "Name": "app", "Driver": "docker",
            "Config": {"image": f"registry.local/{app}@sha256:{release:064d}", "ports": ["http"]},
            "Env": {"PORT": "8080", "MARKER": marker or str(release)},
            "Resources": {"CPU": 100, "MemoryMB": 64},
        }],
    }
    if checks:
        group["Services"] = [{
            "Name": app, "PortLabel": "http", "Provider": "nomad",
            "Checks": [{"Name": f"{app}-http", "Type": "http", "Path": "/health",
                        "Interval": S, "Timeout": S}],
        }]
    return {
        "ID": app, "Name": app, "Type": "service", "Datacenters": ["*"],
        "Meta": {"shaman_app": app, "shaman_release": str(release),
                 "shaman_deploy_id": deploy_id},
        "TaskGroups": [group],
    }


@dataclass
class Harness:
    nats_url: str
    nomad_addr: str
    app: str
    bus: Bus
    apps: TypedKV[AppRecord]
    deploys: TypedKV[DeployRecord]
    nomad: nomad.Nomad
    watchers: list[WatcherApp] = field(default_factory=list)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _stack: AsyncExitStack = field(default_factory=AsyncExitStack)

    def settings(self, **overrides: Any) -> WatcherSettings:
        values: dict[str, Any] = {
            "nats_url": self.nats_url, "nomad_addr": self.nomad_addr,
            "http_addr": "127.0.0.1:0", "relist_interval_s": 1.0,
            "fail_fast_restarts": 2, "crash_loop_window_s": 5.0, "deadline_grace_s": 0.5,
            "checkpoint_interval_s": 0.1, "stream_backoff_max_s": 0.5,
            "rollback_republish_after_s": 2.0, "nomad_timeout_s": 5.0,
        }
        values.update(overrides)
        return WatcherSettings(**values)

    async def start_watcher(self, **overrides: Any) -> WatcherApp:
        app = await self._stack.enter_async_context(create_app(self.settings(**overrides)))
        self.watchers.append(app)
        return app

    async def close(self) -> None:
        await self._stack.aclose()
        for proc in self.processes:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)

    def spawn_watcher(self, log_path: Path, **overrides: Any) -> subprocess.Popen[bytes]:
        """`python -m services.watcher` as its own process, configured by the environment
        exactly as in production, so a test can SIGKILL it. Returns once it is healthy."""
        env = dict(os.environ)
        port = free_port()
        settings = self.settings(http_addr=f"127.0.0.1:{port}", **overrides)
        env.update({
            "NATS_URL": self.nats_url, "NOMAD_ADDR": self.nomad_addr,
            "SHAMAN_LOG_FORMAT": "console",
        })
        for name in ("http_addr", "relist_interval_s", "fail_fast_restarts",
                     "crash_loop_window_s", "deadline_grace_s", "checkpoint_interval_s",
                     "stream_backoff_max_s", "rollback_republish_after_s", "crashpoint"):
            env[f"SHAMAN_{name.upper()}"] = str(getattr(settings, name))
        with log_path.open("ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", "services.watcher"], env=env,
                                    stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        self.processes.append(proc)
        deadline = time.monotonic() + 30
        while not _healthy(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"watcher did not come up: {log_path.read_text()[-3000:]}")
            time.sleep(0.02)  # polling interval of the condition above
        return proc

    # -- records, as the api and the scheduler write them ------------------------------

    async def seed_app(self, *, auto_rollback: bool = True, last_healthy: int | None = 1,
                       current: int = 2, active: str | None = None) -> None:
        await self.apps.create(self.app, AppRecord(
            spec=AppSpec(name=self.app, auto_rollback=auto_rollback),
            last_healthy_release=last_healthy, current_release=current,
            next_release=current + 1, active_deploy_id=active, state="deploying",
        ))

    async def seed_deploy(self, deploy_id: str, release: int, *, status: str = "deploying",
                          **kw: Any) -> None:
        from shared.events.base import now

        await self.deploys.create(deploy_id, DeployRecord(
            id=deploy_id, app=self.app, kind=kw.pop("kind", "deploy"),
            status=status,  # type: ignore[arg-type]
            release=release, history=[StatusChange(status=status, time=now())], **kw,
        ))

    def register(self, deploy_id: str, release: int, **kw: Any) -> dict[str, Any]:
        job = job_spec(self.app, deploy_id, release, **kw)
        return dict(self.nomad.job.register_job(self.app, {"Job": job}))

    def behave(self, **behavior: Any) -> None:
        control(self.nomad_addr, "POST", "behaviors", {"job": self.app, **behavior})

    async def deploy(self, deploy_id: str) -> DeployRecord:
        entry = await self.deploys.get(deploy_id)
        assert entry is not None, deploy_id
        return entry.value

    async def app_record(self) -> AppRecord:
        entry = await self.apps.get(self.app)
        assert entry is not None
        return entry.value

    async def wait_app(self, what: str, predicate: Callable[[AppRecord], bool],
                       timeout: float = 20.0) -> AppRecord:
        """The app record once `predicate` holds: the watcher writes the deploy record
        first and the app record after it, so reading it right after a status races."""
        async def holds() -> AppRecord | None:
            record = await self.app_record()
            return record if predicate(record) else None

        return await wait_for(holds, timeout, f"app record: {what}")

    async def wait_status(
        self, deploy_id: str, *statuses: str, timeout: float = 20.0
    ) -> DeployRecord:
        async def done() -> DeployRecord | None:
            entry = await self.deploys.get(deploy_id)
            return entry.value if entry and entry.value.status in statuses else None

        return await wait_for(done, timeout, f"deploy {deploy_id} to be {statuses}")

    # -- what was published -------------------------------------------------------------

    async def _stored(self, stream: str, subject_prefix: str) -> list[tuple[str, bytes]]:
        info = await self.bus.js.stream_info(stream)
        out: list[tuple[str, bytes]] = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            try:
                msg = await self.bus.js.get_msg(stream, seq)
            except Exception:  # deleted or acked from a work queue
                continue
            if msg.subject and msg.subject.startswith(subject_prefix):
                out.append((msg.subject, msg.data or b""))
        return out

    async def everything_published(self) -> bytes:
        """Every stored message of the test's NATS the watcher writes to: the timeline,
        the commands, and every kept revision of the app, deploy and watcher records, as
        raw bytes: what a search for a leaked value has to look through."""
        stored = [
            *await self._stored(subjects.STREAM_EVENTS, f"{subjects.EVENTS_ROOT}.{self.app}."),
            *await self._stored(subjects.STREAM_RELEASE_WORK,
                                subjects.release_work_subject(self.app)),
        ]
        for bucket in (subjects.KV_APPS, subjects.KV_DEPLOYS, subjects.KV_WATCHER):
            stored += await self._stored(f"KV_{bucket}", f"$KV.{bucket}.")
        return b"\n".join(data for _, data in stored)

    async def events(self, type_: str | None = None) -> list[TimelineEvent]:
        stored = await self._stored(subjects.STREAM_EVENTS, f"{subjects.EVENTS_ROOT}.{self.app}.")
        events = [decode_event(data) for _, data in stored]
        if type_ is not None:
            events = [e for e in events if e.__struct_config__.tag == type_]
        return events

    async def commands(self) -> list[ReleaseCommand]:
        stored = await self._stored(subjects.STREAM_RELEASE_WORK,
                                    subjects.release_work_subject(self.app))
        return [release_decoder.decode(data) for _, data in stored]

    async def wait_event(self, type_: str, timeout: float = 20.0, count: int = 1) -> list[Any]:
        async def seen() -> list[Any] | None:
            found = await self.events(type_)
            return found if len(found) >= count else None

        return await wait_for(seen, timeout, f"{count} {type_} event(s) for {self.app}")


@pytest.fixture
async def harness(nats_url: str, nomad_addr: str) -> AsyncIterator[Harness]:
    app = f"w{next(_names)}-{int(time.time() * 1000) % 1_000_000}"
    bus = await connect_bus(CommonSettings(nats_url=nats_url), "watcher-test")  # type: ignore[call-arg]
    await provision(bus.js)
    h = Harness(
        nats_url=nats_url, nomad_addr=nomad_addr, app=app, bus=bus,
        apps=TypedKV(await bus.js.key_value(subjects.KV_APPS), AppRecord),
        deploys=TypedKV(await bus.js.key_value(subjects.KV_DEPLOYS), DeployRecord),
        nomad=nomad.Nomad(address=nomad_addr, timeout=5),
    )
    try:
        yield h
    finally:
        await h.close()
        with contextlib.suppress(Exception):
            h.nomad.job.deregister_job(app, purge=True)
        with contextlib.suppress(Exception):
            control(nomad_addr, "DELETE", "behaviors")
        await bus.close()


def decode(data: bytes) -> Any:
    return msgspec.json.decode(data)
