"""The re-drive sweep: queue a source deploy's build again when its message was lost.

reliability.md scenario 10: after a broker power loss (or an api crash between writing a
deploy and queueing it) a deploy can be recorded `pending` while its `BuildRequested`
is in no stream, and nothing would ever move it. Every `redrive_interval_s` each api
copy looks at every app's latest source deploy (latest wins, so an app has at most one
build that can still be waiting) and, for one that is still `pending` after a whole
interval, with its command on the record (`build_request`):

1. checks that SHAMAN_BUILD_WORK holds no message for the app (a queued or in-flight
   one is not lost: builders may just be busy). A delivered message stays in the work
   queue until the builder acks it, and the builder moves the deploy off `pending`
   before that, so "pending and nothing queued" means the message is gone;
2. claims the deploy with a CAS write of `redriven_at` (still pending, not re-driven
   within the last interval): of several api copies sweeping at once, one wins;
3. publishes the stored command with the same msg id, `<deploy_id>:build` (JetStream
   drops it if the original is still inside its duplicate window).

So the builder never sees two messages for one deploy: step 1 only re-queues when there
is none. Not here: builds stuck in `building` (the builder's redelivery covers those)
and release commands (the scheduler's own sweep covers submitted deploys).

Orphans: a request that died between writing its deploy record and writing the app
record (crash point `after_deploy_record`) leaves a `pending` deploy that no app names
and nothing queued. Its client got no answer; a retry with the same Idempotency-Key
finishes it (intake's replay) while JetStream still dedupes the command's msg id. Past
that window (`orphan_after_s`, REPUBLISH_WINDOW by default) nothing can finish it any
more, so the sweep ends it `failed` (ORPHANED: the reason says to deploy again), after
checking that no app names it and no work message for its app is queued. No
`deploy.finished` is published: it was never accepted, like a deploy that got a 503.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta

import nats.errors
from prometheus_client import Counter

from services.api.intake import ORPHANED, REPUBLISH_WINDOW
from shared import subjects as s
from shared.bus.connection import UNAVAILABLE, Bus
from shared.bus.kv import Entry, TypedKV
from shared.commands import encode_command
from shared.errors import BackendUnavailable, ShamanError
from shared.events.base import now
from shared.logging import get_logger
from shared.records import AppRecord, DeployRecord, transition

log = get_logger(__name__)

REDRIVEN = Counter("shaman_api_redriven_builds_total",
                   "Source deploys whose lost build message the api queued again")
ORPHANS = Counter("shaman_api_orphaned_deploys_total",
                  "Deploys whose request died before queueing them, ended failed")


class BuildRedrive:
    def __init__(
        self,
        bus: Bus,
        apps: TypedKV[AppRecord],
        deploys: TypedKV[DeployRecord],
        interval_s: float,
        orphan_after_s: float = REPUBLISH_WINDOW.total_seconds(),
    ) -> None:
        self.bus = bus
        self.apps = apps
        self.deploys = deploys
        self.interval = timedelta(seconds=interval_s)
        self.orphan_after = timedelta(seconds=orphan_after_s)
        # Orphans are rare and only due after orphan_after, and finding them reads every
        # deploy record: a quarter of that period between scans is soon enough.
        self.orphan_scan_every = max(self.interval, self.orphan_after / 4)
        self._orphans_scanned_at: datetime | None = None

    async def run(self, stopping: asyncio.Event) -> None:
        """Sweep every interval until `stopping` is set; failures wait for the next round."""
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), self.interval.total_seconds())
            if stopping.is_set():
                return
            try:
                await self.sweep_once()
            except (ShamanError, nats.errors.Error, *UNAVAILABLE) as exc:
                log.warning("re-drive sweep failed; next round will retry", error=repr(exc))

    async def sweep_once(self) -> list[str]:
        """One round; the ids of the deploys this copy queued again."""
        cutoff = now() - self.interval
        latest = [e.value.latest_deploy_id for e in await self.apps.values()
                  if e.value.state != "destroyed" and e.value.latest_deploy_id]
        entries = await asyncio.gather(*(self.deploys.get(i) for i in latest if i))
        redriven: list[str] = []
        for entry in entries:
            if entry is not None and _waiting(entry.value, cutoff):
                try:
                    if await self.redrive(entry, cutoff):
                        redriven.append(entry.key)
                except (ShamanError, nats.errors.Error, *UNAVAILABLE) as exc:
                    log.warning("re-drive of a deploy failed; next round will retry",
                                app=entry.value.app, deploy_id=entry.key, error=repr(exc))
        if (self._orphans_scanned_at is None
                or now() - self._orphans_scanned_at >= self.orphan_scan_every):
            self._orphans_scanned_at = now()
            await self.end_orphans()
        return redriven

    async def end_orphans(self) -> list[str]:
        """End `failed` the deploys a dead request left behind (module docstring)."""
        cutoff = now() - self.orphan_after
        old_pending = [e.value for e in await self.deploys.values()
                       if e.value.status == "pending" and e.value.created_at <= cutoff]
        ended: list[str] = []
        apps: dict[str, AppRecord | None] = {}
        for deploy in old_pending:
            if deploy.app not in apps:
                entry = await self.apps.get(deploy.app)
                apps[deploy.app] = entry.value if entry is not None else None
            app = apps[deploy.app]
            if app is not None and deploy.id in (app.latest_deploy_id, app.active_deploy_id,
                                                 *app.recent_deploys):
                continue  # accepted: it waits in a queue, or the other sweeps cover it
            work = (s.build_work_subject(deploy.app) if deploy.build_request is not None
                    else s.release_work_subject(deploy.app))
            stream = (s.STREAM_BUILD_WORK if deploy.build_request is not None
                      else s.STREAM_RELEASE_WORK)
            if await self._queued_on(stream, work):
                continue

            def orphaned(record: DeployRecord) -> DeployRecord | None:
                if record.status != "pending" or record.created_at > cutoff:
                    return None
                return record if transition(record, "failed", ORPHANED) else None

            if await self.deploys.mutate(deploy.id, orphaned) is not None:
                ORPHANS.inc()
                ended.append(deploy.id)
                log.warning("deploy ended: its request died before queueing it",
                            app=deploy.app, deploy_id=deploy.id,
                            created_at=deploy.created_at.isoformat())
        return ended

    async def redrive(self, entry: Entry[DeployRecord], cutoff: datetime) -> bool:
        deploy = entry.value
        command = deploy.build_request
        assert command is not None
        if await self._queued(deploy.app):
            return False
        claimed = await self.deploys.mutate(entry.key, lambda record: _claim(record, cutoff))
        if claimed is None:
            return False  # no longer pending, or another api copy claimed it this round
        ack = await self.bus.publish(s.build_work_subject(deploy.app), encode_command(command),
                                     msg_id=f"{deploy.id}:build")
        REDRIVEN.inc()
        log.warning("build message re-queued: the deploy was pending with none queued",
                    app=deploy.app, deploy_id=deploy.id, duplicate=bool(ack.duplicate),
                    pending_since=deploy.created_at.isoformat())
        return True

    async def _queued(self, app: str) -> bool:
        """Whether SHAMAN_BUILD_WORK holds any message for `app` (queued or in flight)."""
        return await self._queued_on(s.STREAM_BUILD_WORK, s.build_work_subject(app))

    async def _queued_on(self, stream: str, subject: str) -> bool:
        try:
            info = await self.bus.js.stream_info(stream, subjects_filter=subject)
        except UNAVAILABLE as exc:
            raise BackendUnavailable("nats", f"reading the {stream} queue failed: {exc!r}") \
                from exc
        return bool((info.state.subjects or {}).get(subject))


def _waiting(deploy: DeployRecord, cutoff: datetime) -> bool:
    """Pending for a whole interval, with a command to re-queue, not re-queued lately."""
    return (deploy.status == "pending" and deploy.build_request is not None
            and deploy.created_at <= cutoff
            and (deploy.redriven_at is None or deploy.redriven_at <= cutoff))


def _claim(record: DeployRecord, cutoff: datetime) -> DeployRecord | None:
    if not _waiting(record, cutoff):
        return None
    record.redriven_at = now()
    return record
