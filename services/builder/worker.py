"""The builder's message handler: one `BuildRequested` → one deploy moved along.

Per docs/decisions/0001-deploy-flow.md step 2, for each delivery:
1. skip (ack) when the deploy is terminal (superseded, cancelled, failed...);
2. if an earlier delivery already recorded the image on the deploy (it died after the
   push), publish `build.succeeded` and `DeployImage` again (both deduplicated by their
   message ids) and stop: the build is not run twice;
3. `pending → building`, `build.started`, then run the pipeline while a watcher rereads
   the deploy record every `deploy_check_interval_s`: superseded/cancelled → the running
   command's process group is killed, the partial log kept, the message acked and the
   record left alone. A build past `build_timeout_s` is stopped and fails.
4. success: record `image` (`repo@sha256:…`) and `digest` on the deploy (first writer
   wins, so a racing copy cannot change what a release pins), `build.succeeded`, then
   `DeployImage` on `shaman.work.release.<app>` with msg id `<deploy_id>:release`;
   failure: `failed` with the step and log tail, `build.failed` + `deploy.finished`.
The two gaps a redelivery must cover (image recorded, nothing published; all
published, nothing acked) are crash points (services.builder.crashpoints).
Temporary trouble (registry, Vault or NATS down) raises TemporaryError: the runtime naks
and another delivery (maybe another copy) retries; when deliveries run out the
dead-letter hook fails the deploy. A build failure never touches what is running: only
the scheduler writes releases and Nomad jobs.

This module decides outcomes and writes records and events; it does not know how a
build is done (services.builder.pipeline).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import msgspec
from nats.js.object_store import ObjectStore
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_fixed

from services.builder import metrics
from services.builder.crashpoints import Crashpoints
from services.builder.logstream import BuildLogStream
from services.builder.pipeline import BuildFailed, BuiltImage, ImagePipeline, source_label
from services.builder.scrub import Scrubber
from shared.bus import Bus, Delivery, TypedKV
from shared.commands import BuildRequested, DeployImage, ImageSource, build_decoder
from shared.errors import BackendUnavailable, PermanentError
from shared.events import (
    BuildFailed as BuildFailedEvent,
)
from shared.events import (
    BuildStarted,
    BuildSucceeded,
    DeployFinished,
    Event,
    now,
)
from shared.events.deploy import finished_msg_id
from shared.logging import get_logger
from shared.records import AppRecord, DeployRecord, transition
from shared.settings import BuilderSettings
from shared.subjects import release_work_subject

log = get_logger(__name__)

REASON_MAX_CHARS = 4000


class Superseded(Exception):
    """The deploy became terminal (superseded, cancelled) while its build ran."""

    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


class BuildTimedOut(Exception):
    """The build ran longer than build_timeout_s and was stopped."""


class BuildWorker:
    def __init__(
        self,
        settings: BuilderSettings,
        bus: Bus,
        deploys: TypedKV[DeployRecord],
        apps: TypedKV[AppRecord],
        build_logs: ObjectStore,
        pipeline: ImagePipeline,
        crashpoints: Crashpoints | None = None,
    ) -> None:
        self.settings = settings
        self.crashpoints = crashpoints or Crashpoints()
        self.bus = bus
        self.deploys = deploys
        self.apps = apps
        self.build_logs = build_logs
        self.pipeline = pipeline
        self.workroot = Path(settings.builder_storage) / "work"
        self._running = 0

    def remove_leftover_workdirs(self) -> list[str]:
        """Delete the working directories of builds a killed process left (startup only:
        each builder copy has storage of its own, so none of them is in use)."""
        if not self.workroot.is_dir():
            return []
        removed = sorted(p.name for p in self.workroot.iterdir())
        for name in removed:
            shutil.rmtree(self.workroot / name, ignore_errors=True)
        if removed:
            log.info("removed leftover build directories", count=len(removed))
        return removed

    # -- the handler ------------------------------------------------------------------

    async def handle(self, delivery: Delivery) -> None:
        command = build_decoder.decode(delivery.data)
        entry = await self.deploys.get(command.deploy_id)
        if entry is None:
            raise PermanentError(f"deploy {command.deploy_id} has no record")
        record = entry.value
        if record.terminal:
            log.info("build skipped: deploy is terminal", app=command.app,
                     deploy_id=command.deploy_id, status=record.status)
            metrics.BUILDS.labels("skipped").inc()
            return
        if record.image and record.digest:
            log.info("build already done by an earlier delivery; releasing",
                     app=command.app, deploy_id=command.deploy_id)
            await self._release(command, record, image=record.image, cached=True, started=None,
                                description=record.description or f"Deploy {record.image}")
            return
        app_entry = await self.apps.get(command.app)
        if app_entry is None:
            await self._fail(command, f"app {command.app} does not exist", step=None, tail=[])
            return
        building = await self._mark_building(command)
        if building is None:
            metrics.BUILDS.labels("skipped").inc()
            return
        await self._build(command, building, app_entry.value, delivery.num_delivered)

    async def _build(
        self, command: BuildRequested, record: DeployRecord, app: AppRecord, attempt: int
    ) -> None:
        started = time.monotonic()
        scrubber = Scrubber()
        workdir = self.workroot / f"{command.deploy_id}-{attempt}"
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        stream = BuildLogStream(
            self.bus, app=command.app, deploy_id=command.deploy_id, attempt=attempt,
            scrubber=scrubber, flush_interval_s=self.settings.log_flush_interval_s,
            flush_lines=self.settings.log_flush_lines, max_bytes=self.settings.max_log_bytes,
        )
        await self._publish(BuildStarted(
            app=command.app, deploy_id=command.deploy_id, build_id=command.deploy_id,
            builder=self.settings.instance_id, source=record.source or source_label(command.source),
            attempt=attempt,
        ), msg_id=f"{command.deploy_id}:build.started:{attempt}")
        log.info("build started", app=command.app, deploy_id=command.deploy_id, attempt=attempt)
        metrics.RUNNING.inc()
        self._running += 1
        stopped = False
        saved = False
        try:
            async with stream:
                stream.line(f"build {command.deploy_id} attempt {attempt} on "
                            f"{self.settings.instance_id}: {source_label(command.source)}")
                try:
                    built = await self._supervised(
                        command.deploy_id,
                        lambda: self.pipeline.run(command, app.spec, workdir, stream),
                    )
                except Superseded as exc:
                    stopped = True
                    stream.line(f"build stopped: the deploy is {exc.status}")
                    metrics.BUILDS.labels("superseded").inc()
                    log.info("build stopped: deploy no longer wanted", app=command.app,
                             deploy_id=command.deploy_id, status=exc.status)
                    return
                except BuildTimedOut:
                    stopped = True
                    reason = f"build timed out after {self.settings.build_timeout_s:g}s"
                    stream.line(reason)
                    metrics.BUILDS.labels("timed_out").inc()
                    await self._fail(command, reason, step=None, tail=stream.tail())
                    return
                except PermanentError as exc:
                    step = exc.step if isinstance(exc, BuildFailed) else None
                    reason = scrubber.scrub(str(exc))
                    stream.line(reason.split("\n--- log tail ---")[0])
                    metrics.BUILDS.labels("failed").inc()
                    await self._fail(command, reason, step=step, tail=stream.tail())
                    return
                except BaseException as exc:
                    stopped = True
                    if not isinstance(exc, asyncio.CancelledError):
                        why = scrubber.scrub(str(exc))
                        stream.line(f"build interrupted, will be retried: {why}")
                        metrics.BUILDS.labels("retried").inc()
                    raise
            metrics.BUILDS.labels("succeeded").inc()
            metrics.BUILD_SECONDS.observe(time.monotonic() - started)
            # Stored before the image is recorded: a builder that dies after that point is
            # followed by a delivery that only releases (step 2), so a log not written
            # now would never be written (crash point after_build_recorded).
            saved = await stream.save(self.build_logs)
            await self._succeed(command, built, started)
        finally:
            metrics.RUNNING.dec()
            self._running -= 1
            if not saved:
                await stream.save(self.build_logs)
            shutil.rmtree(workdir, ignore_errors=True)
            if stopped and self._running == 0:
                # A killed buildah leaves its working container mounted; with no other
                # build running here, every working container in our storage is litter.
                await self.pipeline.remove_working_containers()

    async def _supervised(
        self, deploy_id: str, build: Callable[[], Coroutine[Any, Any, BuiltImage]]
    ) -> BuiltImage:
        """Run the build until it ends, the deploy stops being wanted, or time runs out."""
        stop_watching = asyncio.Event()
        build_task = asyncio.create_task(build(), name=f"build:{deploy_id}")
        watch_task = asyncio.create_task(self._watch(deploy_id, stop_watching),
                                         name=f"watch:{deploy_id}")
        try:
            done, _ = await asyncio.wait(
                {build_task, watch_task}, timeout=self.settings.build_timeout_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            # The watcher also ends by itself: a cancellation swallowed inside a NATS
            # call (asyncio.wait_for in 3.11) must not leave it polling forever.
            stop_watching.set()
            if not build_task.done() or not watch_task.done():
                for task in (build_task, watch_task):
                    task.cancel()
                # Cancelling the build kills its process group; wait until it is gone.
                await asyncio.wait({build_task, watch_task})
        if build_task in done:
            return build_task.result()
        if watch_task in done and watch_task.result() is not None:
            raise Superseded(str(watch_task.result()))
        raise BuildTimedOut

    async def _watch(self, deploy_id: str, stop: asyncio.Event) -> str | None:
        """Return the deploy's status once it is terminal (checked every interval);
        None once asked to stop."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.deploy_check_interval_s)
            if stop.is_set():
                break
            try:
                entry = await self.deploys.get(deploy_id)
            except BackendUnavailable:
                continue  # NATS blinking is no reason to stop a build
            if entry is None:
                return "deleted"
            if entry.value.terminal:
                return entry.value.status
        return None

    # -- records and events ---------------------------------------------------------------

    async def _mark_building(self, command: BuildRequested) -> DeployRecord | None:
        def change(record: DeployRecord) -> DeployRecord | None:
            if record.terminal:
                return None
            changed = transition(record, "building")
            if record.build_id is None:
                record.build_id = record.id
                changed = True
            return record if changed else None

        await self.deploys.mutate(command.deploy_id, change)
        entry = await self.deploys.get(command.deploy_id)
        if entry is None or entry.value.terminal or entry.value.status != "building":
            return None
        return entry.value

    async def _succeed(self, command: BuildRequested, built: BuiltImage, started: float) -> None:
        def change(record: DeployRecord) -> DeployRecord | None:
            if record.terminal or record.digest is not None:
                return None
            record.image, record.digest = built.pinned, built.digest
            record.updated_at = now()
            if not record.description:
                record.description = built.description
            return record

        await self.deploys.mutate(command.deploy_id, change)
        self.crashpoints.reach("after_build_recorded")
        entry = await self.deploys.get(command.deploy_id)
        if entry is None or entry.value.terminal or not entry.value.image:
            log.info("build finished but the deploy is no longer wanted", app=command.app,
                     deploy_id=command.deploy_id)
            return
        log.info("build succeeded", app=command.app, deploy_id=command.deploy_id,
                 image=built.image, digest=entry.value.digest,
                 duration_s=round(time.monotonic() - started, 3))
        # A build's release says which commit or upload it is ("Deploy 3f2c1a9"); an
        # image deploy keeps the deploy's own description.
        built_from_source = not isinstance(command.source, ImageSource)
        description = built.description if built_from_source else (
            entry.value.description or built.description)
        await self._release(command, entry.value, image=built.image, cached=built.cached,
                            started=started, description=description)

    async def _release(
        self, command: BuildRequested, record: DeployRecord, *, image: str, cached: bool,
        started: float | None, description: str,
    ) -> None:
        assert record.image is not None and record.digest is not None
        duration = time.monotonic() - started if started is not None else 0.0
        await self._publish(BuildSucceeded(
            app=command.app, deploy_id=command.deploy_id, build_id=command.deploy_id,
            image=image, digest=record.digest, duration_s=round(duration, 3), cached=cached,
        ), msg_id=f"{command.deploy_id}:build.succeeded")
        release = DeployImage(
            deploy_id=command.deploy_id, app=command.app, image=record.image,
            digest=record.digest, description=description,
            created_by=command.requested_by,
        )
        await self._retrying(lambda: self.bus.publish_command(
            release_work_subject(command.app), release, msg_id=f"{command.deploy_id}:release"))
        self.crashpoints.reach("after_release_command")

    async def _fail(
        self, command: BuildRequested, reason: str, *, step: str | None, tail: list[str]
    ) -> None:
        reason = reason[:REASON_MAX_CHARS]

        def change(record: DeployRecord) -> DeployRecord | None:
            return record if transition(record, "failed", reason) else None

        entry = await self.deploys.mutate(command.deploy_id, change)
        if entry is None:
            log.info("build failed but the deploy was already decided", app=command.app,
                     deploy_id=command.deploy_id)
            return
        log.warning("build failed", app=command.app, deploy_id=command.deploy_id,
                    step=step, reason=reason.split("\n")[0])
        await self._publish(BuildFailedEvent(
            app=command.app, deploy_id=command.deploy_id, build_id=command.deploy_id,
            reason=reason.split("\n--- log tail ---")[0], step=step, log_tail=tail,
        ), msg_id=f"{command.deploy_id}:build.failed")
        duration = (now() - entry.value.created_at).total_seconds()
        await self._publish(DeployFinished(
            app=command.app, deploy_id=command.deploy_id, status="failed", reason=reason,
            duration_s=round(duration, 3),
        ), msg_id=finished_msg_id(command.deploy_id, "failed"))

    async def _publish(self, event: Event, *, msg_id: str) -> None:
        await self._retrying(lambda: self.bus.publish_event(event, msg_id=msg_id))

    async def _retrying(self, publish: Callable[[], Awaitable[object]]) -> None:
        # A few quick tries: after the record is written, a lost outcome event would
        # not be repeated by a redelivery (the deploy is terminal by then).
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(4), wait=wait_fixed(0.5),
            retry=retry_if_exception_type(BackendUnavailable), reraise=True,
        ):
            with attempt:
                await publish()

    async def on_dead_letter(self, data: bytes, reason: str, _headers: dict[str, str]) -> None:
        """A build message gave up (or was poison): the deploy fails with the reason."""
        try:
            command = build_decoder.decode(data)
        except msgspec.MsgspecError:
            return  # nothing to attach it to; the dead-letter stream keeps the bytes
        with contextlib.suppress(BackendUnavailable):
            await self._fail(command, f"build could not be completed: {reason}", step=None,
                             tail=[])
