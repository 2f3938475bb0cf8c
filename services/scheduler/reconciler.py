"""The operator: make one app's Nomad job match the app's current release.

`Reconciler.reconcile(app) -> Result` is level-triggered. Each pass reads the desired
state (the app record and its current release) and the actual state (the Nomad job)
fresh, and never asks what woke it: a command, the periodic resync, the re-drive
sweep, a retry. It renders the job deterministically, plans it, and registers it only
when the plan shows a diff (or the job is stopped or missing), with `EnforceIndex` =
the plan's `JobModifyIndex`, so two writers can never both register over one another
and a resubmission after a crash registers nothing. The outcome is logged as
`unchanged | created | updated`.

For the app's active deploy it then records `job_modify_index` / `job_version` (once;
the deploy record's CAS decides) and publishes `rollout.submitted` (deduplicated by
msg id). A job changed or stopped outside Shaman is put back and reported as
`drift.detected`. An app marked destroyed has its job purged.

A pass that read the desired state before another copy of the scheduler moved it on
must not undo that copy's work. Release numbers only grow (rollbacks make new ones), so
a job carrying a newer release of this app (one whose release record exists with the
job's deploy id) is never replaced by an older one; and the app record is read again
right before registering. Either way the pass registers nothing and is requeued
(`stale_requeue_s`) to start over from fresh reads.

Failures: a Nomad or NATS hiccup (TemporaryError) propagates, and the work queue
retries the pass with capped backoff; past `nomad_retry_deadline_s` since the deploy
was accepted, a deploy still waiting to be submitted ends `failed` with the reason.
A job Nomad rejects (PermanentError) fails the waiting deploy; it is tried again on
the next resync. A lost CAS (ConflictError) propagates and the pass is retried on
fresh reads.

Not here: creating releases (release_commands.py), deciding rollouts' outcomes (the
watcher).
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

from services.scheduler import metrics
from services.scheduler.crashpoints import Crashpoints
from services.scheduler.drift import drift_reason
from services.scheduler.renderer import (
    META_APP,
    META_DEPLOY,
    META_RELEASE,
    JobRenderer,
    RenderError,
)
from services.scheduler.store import Stores, fail_deploy
from services.scheduler.workqueue import Result
from shared.bus import Bus
from shared.errors import PermanentError, TemporaryError
from shared.events import DriftDetected, RolloutSubmitted, now
from shared.logging import get_logger
from shared.nomad import NomadClient
from shared.records import AppRecord, DeployRecord, ReleaseRecord, release_key

log = get_logger(__name__)


def _modify_index(job: dict[str, Any] | None) -> int:
    """The job's JobModifyIndex; 0 for no job (what a plan of a new job answers)."""
    return int(job.get("JobModifyIndex") or 0) if job is not None else 0


class Reconciler:
    def __init__(
        self,
        bus: Bus,
        stores: Stores,
        nomad: NomadClient,
        renderer: JobRenderer,
        *,
        nomad_retry_deadline_s: float,
        crashpoints: Crashpoints | None = None,
        stale_requeue_s: float = 0.2,
    ) -> None:
        self.crashpoints = crashpoints or Crashpoints()
        self.stale_requeue_s = stale_requeue_s
        self.bus = bus
        self.stores = stores
        self.nomad = nomad
        self.renderer = renderer
        self.nomad_retry_deadline_s = nomad_retry_deadline_s

    async def reconcile(self, app_name: str) -> Result:
        started = time.monotonic()
        outcome = "error"
        try:
            outcome = await self._reconcile(app_name)
            if outcome == "stale":
                return Result(requeue_after=self.stale_requeue_s)
            return Result()
        finally:
            metrics.RECONCILE_PASSES.labels(outcome=outcome).inc()
            metrics.RECONCILE_SECONDS.observe(time.monotonic() - started)

    async def _reconcile(self, app_name: str) -> str:
        entry = await self.stores.apps.get(app_name)
        if entry is None:
            # Never purge on a missing record: an empty bucket must not take apps down.
            log.info("reconcile skipped: no such app", app=app_name)
            return "idle"
        app = entry.value
        if app.state == "destroyed":
            return await self._destroy(app_name)
        if app.current_release is None:
            return "idle"
        rel = await self.stores.releases.get(release_key(app_name, app.current_release))
        if rel is None:
            log.error("current release record missing", app=app_name,
                      release=app.current_release)
            return "idle"
        release = rel.value
        deploy = await self._active_deploy(app)
        # The active deploy still waits for its job to be submitted (first pass after the
        # release was made current, or a retry after Nomad trouble or a crash).
        # A deploy whose release is current but whose record does not name it yet (the
        # scheduler died between making it current and writing the deploy) is just as
        # unsubmitted: the release says whose it is.
        unsubmitted = (
            deploy is not None
            and deploy.job_modify_index is None
            and (
                deploy.release == release.version
                or (deploy.release is None and release.deploy_id == deploy.id)
            )
        )
        awaiting = unsubmitted and deploy is not None and deploy.status == "deploying"
        if not release.image:
            return "idle"  # config or secrets set before the first image: nothing to run
        try:
            desired = self.renderer.render(app, release)
        except RenderError as exc:
            log.error("release cannot be rendered", app=app_name, release=release.version,
                      error=str(exc))
            if awaiting and deploy is not None:
                await fail_deploy(self.bus, self.stores, deploy.id, f"cannot render job: {exc}")
                metrics.DEPLOYS_FAILED.labels(cause="render").inc()
            return "error"
        try:
            # The submission is recorded even when the watcher already saw the rollout end
            # (a scheduler killed between register and record, restarted after it).
            return await self._converge(app, release, deploy, desired, awaiting=unsubmitted,
                                        submitted=not unsubmitted)
        except TemporaryError as exc:
            if awaiting and deploy is not None:
                await self._fail_if_past_deadline(deploy, exc)
            raise
        except PermanentError as exc:
            log.error("nomad rejected the job", app=app_name, release=release.version,
                      error=str(exc))
            if awaiting and deploy is not None:
                await fail_deploy(self.bus, self.stores, deploy.id, str(exc))
                metrics.DEPLOYS_FAILED.labels(cause="nomad_rejected").inc()
            return "error"

    async def _active_deploy(self, app: AppRecord) -> DeployRecord | None:
        if not app.active_deploy_id:
            return None
        entry = await self.stores.deploys.get(app.active_deploy_id)
        return entry.value if entry is not None else None

    async def _converge(
        self,
        app: AppRecord,
        release: ReleaseRecord,
        deploy: DeployRecord | None,
        desired: dict[str, Any],
        *,
        awaiting: bool,
        submitted: bool,
    ) -> str:
        name = app.spec.name
        # The plan and the job are read at once (two round trips in the time of one, on
        # every deploy and rollback). A register only goes ahead when both saw the same
        # job: the plan's JobModifyIndex equal to the job's. Then `actual` is exactly
        # what the register's CAS replaces, so a newer writer's release (_stale) or a
        # change made by hand (drift) cannot slip between the two reads.
        plan, actual = await asyncio.gather(self.nomad.plan_job(name, desired),
                                            self.nomad.get_job(name))
        diff_type = str(((plan.get("Diff") or {}).get("Type")) or "None")
        stopped = bool(actual and actual.get("Stop"))
        must_register = actual is None or stopped or diff_type != "None"
        drift = drift_reason(desired, actual, diff_type, submitted=submitted)
        enforce = int(plan.get("JobModifyIndex") or 0)
        known_version: int | None = None

        if must_register and enforce != _modify_index(actual):
            log.info("stale pass: the job changed between plan and read; requeued",
                     app=name, release=release.version, plan_index=enforce,
                     job_index=_modify_index(actual))
            return "stale"
        if must_register and await self._stale(app, release, actual):
            return "stale"
        if must_register and actual is not None:
            await self._record_predecessor(name, actual, deploy)
        if must_register:
            answer = await self.nomad.register_job(desired, enforce_index=enforce)
            self.crashpoints.reach("after_nomad_register")
            outcome = "created" if actual is None else "updated"
            job_modify_index = int(answer.get("JobModifyIndex") or 0)
            if actual is not None and not stopped:
                # A spec change (the plan's diff) stores version previous + 1, and the
                # CAS proved `actual` was the previous one (nomad-api.md §1.3).
                known_version = int(actual.get("Version") or 0) + 1
        else:
            outcome = "unchanged"
            assert actual is not None
            job_modify_index = int(actual.get("JobModifyIndex") or 0)
            known_version = int(actual.get("Version") or 0)
        log.info("job reconciled", app=name, release=release.version, outcome=outcome,
                 job_modify_index=job_modify_index, diff=diff_type)

        if drift is not None and must_register:
            metrics.DRIFT_DETECTED.inc()
            log.warning("drift put back", app=name, release=release.version, reason=drift)
            found = (actual or {}).get("JobModifyIndex", "missing")
            await self.bus.publish_event(
                DriftDetected(app=name, deploy_id=deploy.id if deploy else "",
                              release=release.version, description=drift),
                msg_id=f"drift:{name}:{release.version}:{found}:{job_modify_index}",
            )

        if awaiting and deploy is not None:
            await self._record_submission(name, release, deploy, job_modify_index, outcome,
                                          known_version)
        return outcome

    async def _record_predecessor(self, name: str, actual: dict[str, Any],
                                  deploy: DeployRecord | None) -> None:
        """Record the submission of the deploy whose version the job carries now, if that
        deploy never recorded it, before a register replaces it.

        The scheduler is the only writer of the job, so a version nobody recorded was
        registered by a pass that died before recording it (killed right after the
        register). Usually the next pass records it; but when that deploy failed and its
        automatic rollback became current meanwhile, the next pass works for the rollback
        and this is the last moment the job still names the failed deploy's release.
        """
        meta = actual.get("Meta") or {}
        owner = meta.get(META_DEPLOY)
        if meta.get(META_APP) != name or not owner or (deploy and owner == deploy.id):
            return
        entry = await self.stores.deploys.get(owner)
        if entry is None or entry.value.job_modify_index is not None:
            return
        try:
            carried = int(meta.get(META_RELEASE) or -1)
        except ValueError:
            return
        rel = await self.stores.releases.get(release_key(name, carried))
        if rel is None or rel.value.deploy_id != owner:
            return  # Meta edited by hand, or left by an earlier app of this name
        version = int(actual.get("Version") or 0)
        log.info("recording a submission a crashed pass left unrecorded", app=name,
                 deploy_id=owner, release=carried, job_version=version)
        await self._record_submission(name, rel.value, entry.value,
                                      int(actual.get("JobModifyIndex") or 0),
                                      "created" if version == 0 else "updated", version)

    async def _stale(self, app: AppRecord, release: ReleaseRecord,
                     actual: dict[str, Any] | None) -> bool:
        """Was the desired state read before another writer moved it on?

        Checked only before a register, so it costs nothing on the usual no-op pass.
        """
        name = app.spec.name
        meta = (actual or {}).get("Meta") or {}
        if meta.get(META_APP) == name:
            try:
                running = int(meta.get(META_RELEASE) or 0)
            except ValueError:
                running = 0
            if running > release.version:
                # Only a job that really carries that newer release of this app counts:
                # meta edited by hand, or left from an earlier app of the same name,
                # must not keep the current release off Nomad forever.
                newer = await self.stores.releases.get(release_key(name, running))
                if newer is not None and newer.value.deploy_id == meta.get(META_DEPLOY):
                    log.info("stale pass: the job runs a newer release; requeued",
                             app=name, release=release.version, job_release=running)
                    return True
        fresh = await self.stores.apps.get(name)
        if fresh is not None and (
            fresh.value.current_release != app.current_release
            or fresh.value.state != app.state
            or fresh.value.spec != app.spec
        ):
            log.info("stale pass: the app changed since it was read; requeued", app=name,
                     release=release.version, current_release=fresh.value.current_release)
            return True
        return False

    async def _record_submission(
        self,
        name: str,
        release: ReleaseRecord,
        deploy: DeployRecord,
        job_modify_index: int,
        outcome: str,
        version: int | None,
    ) -> None:
        if version is None:
            # A new job (or one brought back from stopped): read what Nomad stored.
            job = await self.nomad.get_job(name)
            if job is not None and int(job.get("JobModifyIndex") or -1) == job_modify_index:
                version = int(job.get("Version") or 0)
        # Published before the record is written: a crash in between is repaired by the
        # next pass, and the msg id keeps the event single.
        await self.bus.publish_event(
            RolloutSubmitted(app=name, deploy_id=deploy.id, release=release.version,
                             job_version=version, job_modify_index=job_modify_index,
                             outcome=outcome),
            msg_id=f"{deploy.id}:rollout.submitted",
        )

        def change(record: DeployRecord) -> DeployRecord | None:
            if record.job_modify_index is not None or record.release not in (
                None, release.version
            ):
                return None
            record.release = release.version
            record.job_modify_index = job_modify_index
            record.job_version = version
            record.updated_at = now()
            return record

        await self.stores.deploys.mutate(deploy.id, change)
        log.info("rollout submitted", app=name, deploy_id=deploy.id, release=release.version,
                 job_version=version, job_modify_index=job_modify_index, outcome=outcome)

    async def _fail_if_past_deadline(self, deploy: DeployRecord, exc: Exception) -> None:
        age = now() - deploy.created_at
        if age <= timedelta(seconds=self.nomad_retry_deadline_s):
            return
        reason = (f"could not submit the job to Nomad for {int(age.total_seconds())} s "
                  f"(deadline {int(self.nomad_retry_deadline_s)} s): {exc}")
        if await fail_deploy(self.bus, self.stores, deploy.id, reason):
            metrics.DEPLOYS_FAILED.labels(cause="nomad_unavailable").inc()

    async def _destroy(self, name: str) -> str:
        actual = await self.nomad.get_job(name)
        if actual is None:
            return "idle"
        owner = (actual.get("Meta") or {}).get(META_APP)
        if owner not in (None, name):
            log.warning("job not deregistered: not Shaman's", app=name, owner=owner)
            return "idle"
        await self.nomad.deregister_job(name, purge=True)
        log.info("job deregistered", app=name, purge=True)
        return "deregistered"
