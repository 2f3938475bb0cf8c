"""One scenario's world: the stack, the recorded client, the observers, the nemesis.

`World` is what a chaos test talks to. Entering it starts the tap (every NATS message),
the Nomad recorder (every job version), the history and the api client; leaving it stops
them and writes the history (JSON lines) and the verdict next to the test's temp files.

- apps: `create_app()` pushes a tiny image and creates an app with tiny Nomad timings;
  `deploy()` deploys an image tag; `make_bad(app, mode)` makes the app's *next* job
  version a bad release (a task that crashes at start, or a failing check) through
  localnomad's simulated runtime.
- faults: `kill`, `pause`, `resume`, `start`, `restart` act on one process of the stack and
  are recorded as nemesis events; Nomad faults go through `world.nomad` (observe.LocalNomad)
  and are recorded with `world.fault(...)`.
- the end: `settle()` waits (with a deadline) until every deploy of the scenario's apps is
  terminal and every automatic rollback has an outcome; `verdict()` reads everything back
  and checks the invariants (invariants.py); `assert_invariants()` fails the test with the
  full report.

Not here: the processes (stack.py), the checks (invariants.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import secrets
from pathlib import Path
from typing import Any, Literal

import nats
from nats.aio.client import Client
from nats.js.api import PubAck

from shared import subjects
from shared.bus import TypedKV
from shared.events.deploy import TERMINAL_STATUSES
from shared.records import DeployRecord
from tests.chaos.client import ShamanClient
from tests.chaos.history import History, Op
from tests.chaos.images import push_image
from tests.chaos.invariants import RunData, Verdict, check
from tests.chaos.observe import LocalNomad, NomadRecorder, Tap
from tests.chaos.snapshot import Snapshot, take_snapshot
from tests.chaos.stack import ChaosStack
from tests.chaos.waiting import wait_for

#: Nomad timings of every chaos app: a good release is healthy in well under a second,
#: a failing check is found unhealthy after 3 s, nothing waits on 10-minute defaults.
APP_DEFAULTS: dict[str, Any] = {
    "port": 8080,
    # Nomad refuses check intervals and timeouts below 1 s.
    "health": {"path": "/health", "interval_s": 1, "timeout_s": 1},
    "rollout": {"min_healthy_time_s": 0.2, "healthy_deadline_s": 3, "progress_deadline_s": 8},
    "auto_rollback": True,
}

BadMode = Literal["crash", "checks", "hang"]
_BAD_EFFECTS: dict[str, dict[str, Any]] = {
    "crash": {"crash_on_start": 1},  # the task exits with 1 right after it starts
    "checks": {"checks": "failing"},  # runs, but its HTTP check never passes
    "hang": {"hang": True},  # never starts (stuck pulling, say)
}
_names = itertools.count(1)


class World:
    def __init__(self, stack: ChaosStack, artifacts: Path, name: str = "chaos") -> None:
        self.stack = stack
        self.artifacts = artifacts
        self.name = name
        self.history = History()
        self.client = ShamanClient(stack.api_url, stack.admin_token, self.history)
        self.tap = Tap(stack.nats_url, stack.nats_options())
        self.recorder = NomadRecorder(stack.nomad_addr)
        self.nomad = LocalNomad(stack.nomad_addr)
        self.apps: set[str] = set()
        self.markers: list[str] = []
        self._nc: Client | None = None
        self._deploys: TypedKV[DeployRecord] | None = None
        self._exit = contextlib.AsyncExitStack()
        self.last_verdict: Verdict | None = None
        self._log_offsets: dict[Path, int] = {}
        self._connecting = asyncio.Lock()

    async def __aenter__(self) -> World:
        # Service logs accumulate over a module: scenarios read only what follows this.
        self._log_offsets = {p: p.stat().st_size for p in self.stack.log_files()}
        try:
            await self._exit.enter_async_context(self.client)
            await self._exit.enter_async_context(self.nomad)
            await self.tap.start()
            self._exit.push_async_callback(self.tap.stop)
            await self.recorder.start()
            self._exit.push_async_callback(self.recorder.stop)
            self._exit.push_async_callback(self._close_nats)
        except BaseException:
            await self._exit.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self._heal()
            await self._exit.aclose()
        finally:
            self.history.dump(self.artifacts / f"{self.name}-history.jsonl")

    async def _heal(self) -> None:
        """Leave the module's stack as the next scenario expects it, whatever happened."""
        with contextlib.suppress(Exception):
            await self.nomad.clear_faults()
            await self.nomad.control("POST", "watcher", {"paused": False})
        for name in await asyncio.to_thread(self.stack.heal):
            self.fault("heal", name, "started again after the scenario")

    async def _close_nats(self) -> None:
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()
            self._nc = None
            self._deploys = None

    # -- apps and deploys ---------------------------------------------------------------

    def new_name(self, prefix: str = "app") -> str:
        return f"{prefix}-{next(_names)}-{secrets.token_hex(2)}"

    def image(self, app: str, tag: str) -> str:
        return f"{self.stack.registry}/chaos/{app}:{tag}"

    async def push(self, app: str, tag: str, content: str | None = None) -> str:
        """Push `chaos/<app>:<tag>`; return its digest."""
        return await asyncio.to_thread(push_image, self.stack.registry, f"chaos/{app}", tag,
                                       content or f"{app}:{tag}")

    async def create_app(self, name: str | None = None, *, tags: tuple[str, ...] = ("v1",),
                         **spec: Any) -> str:
        name = name or self.new_name()
        for tag in tags:
            await self.push(name, tag)
        body = {**APP_DEFAULTS, "name": name, "image": f"{self.stack.registry}/chaos/{name}",
                **spec}
        op = await self.client.create_app(body)
        assert op.status == 201, f"creating {name}: {op.status} {op.text[:300]}"
        self.apps.add(name)
        return name

    async def deploy(self, app: str, tag: str = "v1", *, key: str | None = None,
                     process: str = "client") -> Op:
        return await self.client.deploy(app, self.image(app, tag), idempotency_key=key,
                                        process=process)

    async def deploy_ok(self, app: str, tag: str = "v1", **kw: Any) -> str:
        op = await self.deploy(app, tag, **kw)
        assert op.status == 202 and op.deploy_id, f"deploy {app}:{tag}: {op.status} {op.text}"
        return op.deploy_id

    async def next_job_version(self, app: str) -> int:
        job = await self.nomad.job(app)
        return int(job["Version"]) + 1 if job else 0

    async def make_bad(self, app: str, mode: BadMode = "crash") -> int:
        """Make the app's next Nomad job version bad; return that version number.

        Only right while nothing else registers a version of this app in between, so
        scenarios call it when the app has no rollout in flight.
        """
        version = await self.next_job_version(app)
        await self.nomad.behave(job=app, job_version=version, **_BAD_EFFECTS[mode])
        self.fault("bad-release", app, f"job version {version}: {mode}")
        return version

    # -- records ----------------------------------------------------------------------------

    async def deploys_kv(self) -> TypedKV[DeployRecord]:
        # One connection for the whole world: many waiters ask at once on first use, and
        # a second connection made in that race would never be closed.
        async with self._connecting:
            if self._deploys is None:
                async def quiet(_exc: Exception) -> None:
                    return None

                if self._nc is None:
                    self._nc = await nats.connect(
                        self.stack.nats_url, name="chaos-world", max_reconnect_attempts=-1,
                        reconnect_time_wait=0.2, error_cb=quiet,
                        **self.stack.nats_options())  # type: ignore[arg-type]
                js = self._nc.jetstream(timeout=5)
                self._deploys = TypedKV(await js.key_value(subjects.KV_DEPLOYS), DeployRecord)
            return self._deploys

    async def publish(self, subject: str, data: bytes, *, msg_id: str | None = None,
                      headers: dict[str, str] | None = None) -> PubAck:
        """Publish into a stream as any NATS client could (duplicates, poison)."""
        await self.deploys_kv()
        assert self._nc is not None
        hdrs = dict(headers or {})
        if msg_id is not None:
            hdrs["Nats-Msg-Id"] = msg_id
        ack = await self._nc.jetstream(timeout=5).publish(subject, data, headers=hdrs or None)
        self.fault("publish", subject, f"msg id {msg_id}: {data[:120]!r} → seq {ack.seq}"
                   f"{' (duplicate)' if ack.duplicate else ''}")
        return ack

    async def record(self, deploy_id: str) -> DeployRecord | None:
        kv = await self.deploys_kv()
        entry = await kv.get(deploy_id)
        return entry.value if entry is not None else None

    async def app_deploys(self) -> list[DeployRecord]:
        kv = await self.deploys_kv()
        return [e.value for e in await kv.values() if e.value.app in self.apps]

    async def wait_status(self, deploy_id: str, *statuses: str,
                          timeout: float = 60.0) -> DeployRecord:
        wanted = set(statuses) or set(TERMINAL_STATUSES)

        async def reached() -> DeployRecord | None:
            try:
                record = await self.record(deploy_id)
            except Exception:
                return None  # NATS may be the thing that is down right now
            return record if record is not None and record.status in wanted else None

        return await wait_for(reached, timeout, f"deploy {deploy_id} to be {sorted(wanted)}")

    async def wait_outcome(self, deploy_id: str, timeout: float = 90.0) -> DeployRecord:
        """The deploy's final outcome: terminal, and its automatic rollback (if any) ended
        (a deploy is `failed` while its rollback runs, then `rolled_back` or `failed`)."""

        async def final() -> DeployRecord | None:
            try:
                record = await self.record(deploy_id)
            except Exception:
                return None
            if record is None or record.status not in TERMINAL_STATUSES:
                return None
            if record.rollback is not None and record.rollback.outcome is None:
                return None
            return record

        return await wait_for(final, timeout, f"deploy {deploy_id} to reach its outcome")

    async def settle(self, timeout: float = 90.0) -> list[DeployRecord]:
        """Wait until every deploy of the scenario's apps has its final outcome."""

        async def settled() -> list[DeployRecord] | None:
            try:
                records = await self.app_deploys()
            except Exception:
                return None
            for record in records:
                if record.status not in TERMINAL_STATUSES:
                    return None
                if record.rollback is not None and record.rollback.outcome is None:
                    return None
            finished = {e.get("deploy_id") for e in self.tap.find(type="deploy.finished")}
            if any(r.id not in finished for r in records):
                return None
            return records or None

        try:
            return await wait_for(settled, timeout, "every deploy to reach its outcome")
        except AssertionError:
            # Not fatal here: the verdict names what did not settle, with evidence.
            return []

    # -- the nemesis --------------------------------------------------------------------------

    def fault(self, action: str, target: str, detail: str = "") -> None:
        self.history.fault(action, target, detail)

    async def kill(self, name: str) -> None:
        self.fault("kill", name, "SIGKILL")
        await asyncio.to_thread(self.stack.kill, name)

    async def pause(self, name: str) -> None:
        self.fault("pause", name, "SIGSTOP")
        await asyncio.to_thread(self.stack.pause, name)

    async def resume(self, name: str) -> None:
        self.fault("resume", name, "SIGCONT")
        await asyncio.to_thread(self.stack.resume, name)

    async def start(self, name: str, **env: str) -> None:
        self.fault("start", name, json.dumps(env) if env else "")
        await asyncio.to_thread(self.stack.start, name, **env)
        self.fault("started", name)

    async def add_builder(self, name: str = "builder-2") -> None:
        """Start a second builder copy (it shares the `builders` durable)."""
        self.fault("start", name, "a second builder copy")
        await asyncio.to_thread(self.stack.add_builder, name)
        self.fault("started", name)

    async def restart(self, name: str, **env: str) -> None:
        await self.kill(name)
        await self.start(name, **env)

    async def wait_crashed(self, name: str, timeout: float = 60.0) -> None:
        """Wait until a service armed with a crash point has exited by itself."""
        await wait_for(lambda: not self.stack.running(name), timeout,
                       f"{name} to reach its crash point and exit")
        self.fault("crashed", name, "crash point reached")

    def log_lines(self, service: str) -> list[str]:
        """The service's log lines written since this world started."""
        path = self.stack.component(service).log_path
        try:
            with path.open("rb") as log:
                log.seek(self._log_offsets.get(path, 0))
                return log.read().decode(errors="replace").splitlines()
        except OSError:
            return []

    async def stack_log_has(self, service: str, *parts: str, timeout: float = 30.0) -> str:
        """Wait for a line of the service's log holding every one of `parts`."""

        def found() -> str | None:
            return next((line for line in self.log_lines(service)
                         if all(p in line for p in parts)), None)

        return await wait_for(found, timeout, f"{service} log line with {parts}")

    # -- the verdict -------------------------------------------------------------------------

    async def snapshot(self) -> Snapshot:
        return await take_snapshot(self.stack.nats_url, **self.stack.nats_options())

    async def verdict(self) -> Verdict:
        with contextlib.suppress(Exception):
            await self.recorder.relist()
        snapshot = await self.snapshot()
        jobs = {app: await self.nomad.job(app) for app in sorted(self.apps)}
        text = {}
        if self.markers:
            for app in sorted(self.apps):
                text[app] = await self.nomad.job_text(app)
                for alloc in await self.nomad.allocations(app):
                    text[app] += "\n" + await self.nomad.allocation_text(alloc["ID"])
        run = RunData(
            history=self.history, snapshot=snapshot, apps=set(self.apps),
            nomad_versions=self.recorder.versions, nomad_jobs=jobs, nomad_text=text,
            captured=list(self.tap.messages), logs=self.stack.log_files(),
            markers=list(self.markers),
        )
        verdict = check(run)
        self.last_verdict = verdict
        self.artifacts.mkdir(parents=True, exist_ok=True)
        (self.artifacts / f"{self.name}-verdict.txt").write_text(
            verdict.report() + "\ndeploys:\n" + "\n".join(verdict.deploys) + "\n")
        return verdict

    async def assert_invariants(self, settle_timeout: float = 90.0) -> Verdict:
        await self.settle(settle_timeout)
        verdict = await self.verdict()
        assert verdict.ok, verdict.report()
        return verdict
