"""One reconcile pass of one app: read Nomad and the records fresh, decide, act.

`Reconciler.reconcile(app)` reads the app's recent Nomad deployments (newest first),
maps each to its deploy through the job version's `Meta.shaman_deploy_id` (versions are
cached by (job, job create index, version): a version never changes), reads the deploy
record, the app record and the watcher's notes, asks decide.py what must happen, and
does it:

- outcomes are written with `shared.records.transition` + `TypedKV.mutate` (a stale or
  duplicate writer loses quietly), then published through the outbox with deterministic
  message ids;
- the automatic rollback is requested by a CAS on the deploy record's `rollback` field;
  only the writer that set it from None publishes the `Rollback` command (re-driven
  from the notes if that writer died before publishing);
- a rollback deploy's end settles the deploy it rolled back (`settle_rollback`).

It returns when to look at the app again (a deadline to watch), or None.
Not here: the order in which apps are looked at (workqueue.py, watcher.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

from services.watcher import metrics
from services.watcher.decide import (
    Decision,
    FailInNomad,
    MarkEnded,
    MarkFailed,
    MarkHealthy,
    Observation,
    Policy,
    PublishProgress,
    decide,
    healthy_since,
    is_rollback,
    resolve_rollback,
)
from services.watcher.explain import allocation_failure, complete_lines, failure_reason
from services.watcher.failures import task_failures
from services.watcher.nomad_checks import AllocationChecks
from services.watcher.nomad_model import Allocation, Deployment, JobVersion, convert
from services.watcher.notes import (
    STEP_FAILED,
    STEP_HEALTHY,
    STEP_ROLLBACK_COMMAND,
    STEP_ROLLBACK_FAILED,
    STEP_ROLLBACK_STARTED,
    STEP_ROLLBACK_SUCCEEDED,
    DeployNotes,
    msg_id,
    rollback_pending_key,
    step_finished,
)
from services.watcher.outbox import Outbox
from shared.bus import TypedKV
from shared.commands import Rollback
from shared.errors import NotFoundError, PermanentError, ShamanError
from shared.events.deploy import DeployFinished
from shared.events.rollout import (
    AllocationFailure,
    RollbackFailed,
    RollbackStarted,
    RollbackSucceeded,
    RolloutFailed,
    RolloutHealthy,
    RolloutProgress,
)
from shared.logging import get_logger
from shared.nomad import NomadClient
from shared.records import AppRecord, DeployRecord, RollbackState, StatusChange, transition
from shared.subjects import release_work_subject

log = get_logger(__name__)

# How many of an app's deployments, newest first, one pass looks at: the latest, plus
# older ones whose deploy may still wait for an outcome (a cancelled or missed one).
LOOKBACK = 3
VERSION_CACHE_SIZE = 20_000
SETTLED_CACHE_SIZE = 20_000
# After FailInNomad, look again soon: the status change's event may be lost.
AFTER_FAIL_REQUEUE_S = 0.5
NO_RECORD_REQUEUE_S = 5.0
_DEPLOY_ID = re.compile(r"^[A-Za-z0-9_-]{1,200}$")  # a KV key token (shared.subjects)
WATCHER = "shaman-watcher"


def _now() -> datetime:
    return datetime.now(UTC)


class Reconciler:
    def __init__(
        self,
        nomad: NomadClient,
        checks: AllocationChecks,
        apps: TypedKV[AppRecord],
        deploys: TypedKV[DeployRecord],
        outbox: Outbox,
        pending: TypedKV[str],
        policy: Policy,
        *,
        explain_max_allocs: int = 3,
        log_tail_bytes: int = 4096,
        rollback_republish_after_s: float = 30.0,
        crashpoint: str = "",
    ) -> None:
        self.nomad = nomad
        self.checks = checks
        self.apps = apps
        self.deploys = deploys
        self.outbox = outbox
        self.pending = pending
        self.policy = policy
        self.explain_max_allocs = explain_max_allocs
        self.log_tail_bytes = log_tail_bytes
        self.rollback_republish_after_s = rollback_republish_after_s
        self.crashpoint = crashpoint
        self._versions: OrderedDict[tuple[str, int, int], JobVersion] = OrderedDict()
        self._settled: OrderedDict[str, None] = OrderedDict()
        self._progress: dict[str, str] = {}  # deploy id → last published progress digest

    # -- entry points -------------------------------------------------------------------

    async def reconcile(self, app: str) -> float | None:
        app_entry = await self.apps.get(app)
        if app_entry is None:
            return None  # not an app Shaman manages
        raw = await self.nomad.get_job_deployments(app)
        deployments = sorted(
            (convert(d, Deployment) for d in raw), key=lambda d: d.CreateIndex, reverse=True
        )
        requeue: float | None = None
        for position, dep in enumerate(deployments[:LOOKBACK]):
            if dep.ID in self._settled:
                continue
            after = await self._reconcile_deployment(app_entry.value, dep, latest=position == 0)
            if after is not None:
                requeue = after if requeue is None else min(requeue, after)
        return requeue

    async def settle_pending_rollbacks(self) -> None:
        """Look at every deploy whose automatic rollback has no outcome yet (relist timer)."""
        for key in await self.pending.keys("rollback-pending"):
            deploy_id = key.split(".", 1)[1]
            try:
                await self.settle_rollback(deploy_id)
            except ShamanError as exc:
                log.warning("rollback settle failed; will retry", deploy_id=deploy_id,
                            error=str(exc))

    # -- one deployment ----------------------------------------------------------------

    async def _version(self, dep: Deployment) -> JobVersion | None:
        return await self._version_at(dep.JobID, dep.JobCreateIndex, dep.JobVersion)

    async def _version_at(self, job_id: str, create_index: int, number: int) -> JobVersion | None:
        key = (job_id, create_index, number)
        cached = self._versions.get(key)
        if cached is not None:
            return cached
        for raw in await self.nomad.get_versions(job_id):
            version = convert(raw, JobVersion)
            vkey = (version.ID, version.CreateIndex, version.Version)
            self._versions[vkey] = version
            self._versions.move_to_end(vkey)
            if not create_index and version.Version == number:
                self._versions[key] = version  # Nomad without JobCreateIndex
        while len(self._versions) > VERSION_CACHE_SIZE:
            self._versions.popitem(last=False)
        return self._versions.get(key)

    async def _replaced_by_same_deploy(self, dep: Deployment, deploy_id: str) -> bool:
        """Whether the job version right after a cancelled deployment's one belongs to the
        same deploy: the scheduler registers a release again on a scale, a drift repair or
        a change of its rendering, and Nomad cancels the running deployment for it."""
        if dep.Status != "cancelled":
            return False
        # Job versions are consecutive; the next one is what cancelled this deployment.
        newer = await self._version_at(dep.JobID, dep.JobCreateIndex, dep.JobVersion + 1)
        return newer is not None and newer.deploy_id == deploy_id

    def _settle(self, deployment_id: str) -> None:
        self._settled[deployment_id] = None
        while len(self._settled) > SETTLED_CACHE_SIZE:
            self._settled.popitem(last=False)

    async def _allocs(self, dep: Deployment, deploy: DeployRecord) -> list[Allocation]:
        if dep.Status == "successful" and deploy.status == "healthy":
            # Crash-loop watch: the job version's allocations, including replacements
            # placed after the deployment ended.
            raw = await self.nomad.get_job_allocations(dep.JobID)
            return [a for a in (convert(r, Allocation) for r in raw)
                    if a.JobVersion == dep.JobVersion]
        raw = await self.nomad.get_deployment_allocations(dep.ID)
        return [convert(r, Allocation) for r in raw]

    async def _reconcile_deployment(
        self, app: AppRecord, dep: Deployment, *, latest: bool
    ) -> float | None:
        version = await self._version(dep)
        deploy_id = version.deploy_id if version is not None else None
        if deploy_id is not None and not _DEPLOY_ID.match(deploy_id):
            deploy_id = None  # Meta is anyone's input: only ids Shaman could have made
        if deploy_id is None:
            if not dep.active:
                self._settle(dep.ID)  # not a Shaman rollout (or its version was pruned)
            return None
        entry = await self.deploys.get(deploy_id)
        if entry is None:
            # Not (yet) a deploy Shaman knows; the api writes the record before anything
            # reaches Nomad, so this is rare: look again later, not in a tight loop.
            return None if not dep.active else NO_RECORD_REQUEUE_S
        deploy = entry.value
        notes = await self.outbox.read(deploy_id)

        if not latest and not dep.active and deploy.terminal and self._quiet(deploy, notes, dep):
            self._settle(dep.ID)
            return None
        if dep.Status == "cancelled" and deploy.terminal:
            self._settle(dep.ID)
            return None

        allocs = await self._allocs(dep, deploy) if dep.Status != "cancelled" else []
        obs = Observation(deployment=dep, allocs=allocs, deploy=deploy, app=app, notes=notes,
                          now=_now(),
                          newer_is_same_deploy=await self._replaced_by_same_deploy(dep, deploy_id))
        decision = decide(obs, self.policy)
        requeue = await self._apply(decision, obs)

        # A rollback deploy that ended settles the deploy it rolled back; a deploy with a
        # requested rollback makes sure the command went out.
        fresh = await self.deploys.get(deploy_id)
        if fresh is not None:
            if fresh.value.rollback_for and fresh.value.terminal:
                await self.settle_rollback(fresh.value.rollback_for)
            if fresh.value.rollback is not None and fresh.value.rollback.outcome is None:
                await self.settle_rollback(fresh.value.id)
            if (not dep.active and fresh.value.terminal
                    and self._quiet(fresh.value, await self.outbox.read(deploy_id), dep)):
                self._settle(dep.ID)
        return requeue

    def _quiet(self, deploy: DeployRecord, notes: DeployNotes, dep: Deployment) -> bool:
        """Nothing left to do for this deployment, now or later."""
        if deploy.status == "healthy":
            since = healthy_since(deploy)
            in_window = since is not None and (
                (_now() - since).total_seconds() < self.policy.crash_loop_window_s)
            return not in_window and notes.all_done(STEP_HEALTHY, step_finished("healthy"))
        if deploy.rollback is not None and deploy.rollback.outcome is None:
            return False
        if deploy.status in ("failed", "rolled_back"):
            return notes.done(step_finished(deploy.status)) or dep.Status == "cancelled"
        return True

    # -- actions ------------------------------------------------------------------------

    async def _apply(self, decision: Decision, obs: Observation) -> float | None:
        requeue = decision.requeue_after_s
        for action in decision.actions:
            if isinstance(action, PublishProgress):
                await self._publish_progress(obs, action)
            elif isinstance(action, FailInNomad):
                await self._fail_in_nomad(obs, action)
                requeue = AFTER_FAIL_REQUEUE_S
            elif isinstance(action, MarkHealthy):
                await self._mark_healthy(obs)
            elif isinstance(action, MarkFailed):
                await self._mark_failed(obs, action)
            elif isinstance(action, MarkEnded):
                await self._mark_ended(obs, action)
        return requeue

    async def _publish_progress(self, obs: Observation, action: PublishProgress) -> None:
        deploy = obs.deploy
        digest_src = ";".join(
            f"{g.name}:{g.desired}:{g.placed}:{g.healthy}:{g.unhealthy}:{g.canaries}:"
            f"{int(g.promoted)}" for g in action.groups
        ) + f"|{obs.deployment.ID}"
        digest = hashlib.sha1(digest_src.encode()).hexdigest()[:12]
        if self._progress.get(deploy.id) == digest:
            return
        event = RolloutProgress(
            app=deploy.app, deploy_id=deploy.id, release=deploy.release,
            nomad_deployment_id=obs.deployment.ID, groups=action.groups,
            percent=action.percent,
        )
        await self.outbox.bus.publish_event(event, msg_id=msg_id(deploy.id, f"progress.{digest}"))
        self._progress[deploy.id] = digest
        if len(self._progress) > SETTLED_CACHE_SIZE:
            self._progress.pop(next(iter(self._progress)))

    async def _fail_in_nomad(self, obs: Observation, action: FailInNomad) -> None:
        dep = obs.deployment

        def note(notes: DeployNotes) -> bool:
            if notes.failed_deployment == dep.ID:
                return False
            notes.failed_deployment = dep.ID
            notes.fail_reason = action.trigger
            return True

        await self.outbox.update(obs.deploy.id, note)
        why = "deadline" if "deadline" in action.trigger else "fail_fast"
        log.info("failing nomad deployment", app=obs.deploy.app, deploy_id=obs.deploy.id,
                 deployment_id=dep.ID, reason=action.reason)
        try:
            await self.nomad.fail_deployment(dep.ID)
        except (PermanentError, NotFoundError) as exc:
            # Already terminal (Nomad got there first) or gone: the next pass reads it.
            log.info("nomad deployment not failed", deployment_id=dep.ID, error=str(exc))
            return
        metrics.NOMAD_FAILS.labels(why).inc()

    async def _mark_healthy(self, obs: Observation) -> None:
        deploy, dep = obs.deploy, obs.deployment
        notes = obs.notes
        if not notes.previous_healthy_known:
            previous = obs.app.last_healthy_release

            def remember(n: DeployNotes) -> bool:
                if n.previous_healthy_known:
                    return False
                n.previous_healthy = previous
                n.previous_healthy_known = True
                return True

            notes = await self.outbox.update(deploy.id, remember)

        def to_healthy(rec: DeployRecord) -> DeployRecord | None:
            if not transition(rec, "healthy", None):
                return None
            rec.nomad_deployment_id = dep.ID
            return rec

        entry = await self.deploys.mutate(deploy.id, to_healthy)
        if entry is not None:
            self._crash("after_healthy")
            metrics.OUTCOMES.labels("healthy").inc()
            log.info("deploy healthy", app=deploy.app, deploy_id=deploy.id,
                     release=deploy.release, deployment_id=dep.ID)
        current = entry.value if entry is not None else await self._deploy(deploy.id)
        if current is None or current.status != "healthy":
            return
        release = current.release

        def app_healthy(rec: AppRecord) -> AppRecord | None:
            changed = False
            if release is not None and (
                rec.last_healthy_release is None or release > rec.last_healthy_release
            ):
                rec.last_healthy_release = release
                changed = True
            if rec.active_deploy_id in (None, current.id) and rec.state != "running":
                rec.state = "running"
                changed = True
            return rec if changed else None

        await self.apps.mutate(current.app, app_healthy)
        await self.outbox.publish_event_once(notes, STEP_HEALTHY, RolloutHealthy(
            app=current.app, deploy_id=current.id, release=release,
            nomad_deployment_id=dep.ID,
        ))
        await self.outbox.publish_event_once(notes, step_finished("healthy"), DeployFinished(
            app=current.app, deploy_id=current.id, status="healthy", release=release,
            duration_s=_duration(current),
        ))

    async def _explain(
        self, obs: Observation, action: MarkFailed
    ) -> list[AllocationFailure]:
        """Explain the worst allocations: task events, failing check, log tail."""
        since = 0
        if action.crash_loop:
            healthy_at = healthy_since(obs.deploy)
            since = int(healthy_at.timestamp() * 1e9) if healthy_at else 0
        failed_ids = {f.alloc_id for f in action.evidence.failures}
        failed_ids |= {a.ID for a in action.evidence.unhealthy_allocs}
        candidates = [a for a in obs.allocs if a.ID in failed_ids]
        if not candidates:
            candidates = [a for a in obs.allocs if a.healthy is not True]
        candidates.sort(key=lambda a: a.CreateIndex, reverse=True)
        chosen = candidates[: self.explain_max_allocs]

        async def one(alloc: Allocation) -> AllocationFailure:
            failures = task_failures(alloc, since)
            task = failures[-1].task if failures else next(iter(sorted(alloc.tasks)), "app")
            checks, stderr, stdout = await asyncio.gather(
                self.checks.get(alloc.ID),
                self._log(alloc.ID, task, "stderr"),
                self._log(alloc.ID, task, "stdout"),
            )
            return allocation_failure(alloc, failures, checks, stderr, stdout, task=task)

        return list(await asyncio.gather(*(one(a) for a in chosen)))

    async def _log(self, alloc_id: str, task: str, kind: Any) -> str:
        try:
            text = await self.nomad.read_task_log(
                alloc_id, task, kind, origin="end", offset=self.log_tail_bytes)
        except ShamanError as exc:
            log.info("task log unavailable", alloc_id=alloc_id, task=task, error=str(exc))
            return ""
        return complete_lines(text, self.log_tail_bytes)

    async def _mark_failed(self, obs: Observation, action: MarkFailed) -> None:
        """Write `failed` (and the rollback request), send the rollback, then explain.

        The rollback goes out before the explanation is gathered: reading checks and logs
        costs a few Nomad round trips, and the app should be on its way back meanwhile.
        The deploy's reason is refined with the explanation afterwards.
        """
        deploy, dep = obs.deploy, obs.deployment
        suffix = ""
        if (action.rollback_to is None and obs.app.spec.auto_rollback
                and not is_rollback(deploy) and deploy.rollback is None):
            suffix = "; no earlier healthy release to roll back to"
        elif not obs.app.spec.auto_rollback:
            suffix = "; automatic rollback is off for this app"
        first_reason = failure_reason(action.trigger, action.evidence, []) + suffix
        won = False

        def to_failed(rec: DeployRecord) -> DeployRecord | None:
            nonlocal won
            won = False
            changed = False
            if rec.status in ("deploying", "healthy"):
                if not transition(rec, "failed", first_reason):
                    return None
                rec.nomad_deployment_id = dep.ID
                changed = True
            elif rec.status != "failed":
                return None  # superseded or cancelled meanwhile: not ours to fail
            if action.rollback_to is not None and rec.rollback is None:
                rec.rollback = RollbackState(
                    requested_at=_now(), reason=rec.reason or first_reason,
                    to_release=action.rollback_to, deploy_id=f"{rec.id}-rollback",
                )
                won = True
                changed = True
            return rec if changed else None

        entry = await self.deploys.mutate(deploy.id, to_failed)
        current = entry.value if entry is not None else await self._deploy(deploy.id)
        if current is None or current.status != "failed":
            return
        if entry is not None and deploy.status != "failed":
            metrics.OUTCOMES.labels("failed").inc()
            log.info("deploy failed", app=deploy.app, deploy_id=deploy.id, reason=first_reason,
                     rollback_to=action.rollback_to, crash_loop=action.crash_loop)
        self._crash("after_outcome")
        notes = await self.outbox.read(deploy.id)

        if won and action.crash_loop:
            bad = current.release
            previous = notes.previous_healthy

            def forget_bad(rec: AppRecord) -> AppRecord | None:
                if rec.last_healthy_release != bad:
                    return None
                rec.last_healthy_release = previous
                return rec

            await self.apps.mutate(current.app, forget_bad)
        rolling_back = current.rollback is not None and current.rollback.outcome is None
        if rolling_back:
            await self._send_rollback_command(current, notes, won=won)

        allocations = await self._explain(obs, action)
        reason = failure_reason(action.trigger, action.evidence, allocations) + suffix
        if reason != current.reason:
            current = await self._refine_reason(current, first_reason, reason)
        if current.rollback is None:
            await self._set_app_state(current, "failed")

        await self.outbox.publish_event_once(notes, STEP_FAILED, RolloutFailed(
            app=current.app, deploy_id=current.id, release=current.release,
            nomad_deployment_id=dep.ID, reason=current.reason or reason,
            allocations=allocations,
        ))
        if rolling_back:
            assert current.rollback is not None
            await self.outbox.publish_event_once(notes, STEP_ROLLBACK_STARTED, RollbackStarted(
                app=current.app, deploy_id=current.id, release=current.release,
                to_release=current.rollback.to_release, automatic=True,
                reason=current.rollback.reason,
            ))
        elif current.rollback is None:
            await self.outbox.publish_event_once(notes, step_finished("failed"), DeployFinished(
                app=current.app, deploy_id=current.id, status="failed",
                release=current.release, reason=current.reason, duration_s=_duration(current),
            ))

    async def _refine_reason(
        self, deploy: DeployRecord, first: str, better: str
    ) -> DeployRecord:
        """Replace the reason written before the explanation, unless someone changed it."""

        def refine(rec: DeployRecord) -> DeployRecord | None:
            if rec.status != "failed" or rec.reason != first:
                return None
            rec.reason = better
            last = rec.history[-1] if rec.history else None
            if last is not None and last.status == "failed" and last.reason == first:
                rec.history = [*rec.history[:-1], StatusChange(
                    status=last.status, time=last.time, reason=better)]
            if rec.rollback is not None and rec.rollback.reason == first:
                rec.rollback.reason = better
            return rec

        entry = await self.deploys.mutate(deploy.id, refine)
        if entry is not None:
            return entry.value
        return await self._deploy(deploy.id) or deploy

    async def _send_rollback_command(
        self, deploy: DeployRecord, notes: DeployNotes, *, won: bool
    ) -> None:
        rollback = deploy.rollback
        assert rollback is not None
        child_id = rollback.deploy_id or f"{deploy.id}-rollback"
        await self.pending.put(rollback_pending_key(deploy.id), child_id)
        if won:
            metrics.ROLLBACKS.inc()
            log.info("automatic rollback requested", app=deploy.app, deploy_id=deploy.id,
                     to_release=rollback.to_release, rollback_deploy_id=child_id)
        if not won and notes.done(STEP_ROLLBACK_COMMAND):
            return
        # The CAS winner publishes; a later pass re-drives only a command the winner never
        # noted (it died in between): same msg id, same deterministic deploy id.
        command = self._rollback_command(deploy)
        await self.outbox.bus.publish_command(
            release_work_subject(deploy.app), command,
            msg_id=msg_id(deploy.id, STEP_ROLLBACK_COMMAND))
        self._crash("after_rollback_command")
        updated = await self.outbox.mark(deploy.id, STEP_ROLLBACK_COMMAND)
        notes.published = updated.published

    async def _mark_ended(self, obs: Observation, action: MarkEnded) -> None:
        deploy = obs.deploy

        def end(rec: DeployRecord) -> DeployRecord | None:
            return rec if transition(rec, action.status, action.reason) else None

        entry = await self.deploys.mutate(deploy.id, end)
        if entry is None:
            return
        metrics.OUTCOMES.labels(action.status).inc()
        log.info("deploy ended by nomad", app=deploy.app, deploy_id=deploy.id,
                 status=action.status, reason=action.reason)
        notes = await self.outbox.read(deploy.id)
        await self.outbox.publish_event_once(notes, step_finished(action.status), DeployFinished(
            app=deploy.app, deploy_id=deploy.id, status=action.status,
            release=deploy.release, reason=action.reason, duration_s=_duration(entry.value),
        ))
        if entry.value.rollback_for:
            await self.settle_rollback(entry.value.rollback_for)

    # -- the automatic rollback's end -----------------------------------------------------

    async def settle_rollback(self, deploy_id: str) -> None:
        parent = await self._deploy(deploy_id)
        if parent is None or parent.rollback is None:
            await self.pending.delete(rollback_pending_key(deploy_id))
            return
        rollback = parent.rollback
        child_id = rollback.deploy_id or f"{deploy_id}-rollback"
        child = await self._deploy(child_id)
        resolution = resolve_rollback(parent, child)
        if resolution is not None:
            def settle(rec: DeployRecord) -> DeployRecord | None:
                if rec.rollback is None or rec.rollback.outcome is not None:
                    return None
                rec.rollback.outcome = resolution.outcome
                if resolution.status == "rolled_back":
                    if not transition(rec, "rolled_back", resolution.reason):
                        return None
                else:
                    rec.reason = resolution.reason
                    rec.updated_at = _now()
                return rec

            entry = await self.deploys.mutate(deploy_id, settle)
            if entry is not None:
                parent = entry.value
                metrics.OUTCOMES.labels(parent.status).inc()
                log.info("automatic rollback ended", app=parent.app, deploy_id=deploy_id,
                         outcome=resolution.outcome, status=parent.status)
            else:
                fresh = await self._deploy(deploy_id)
                if fresh is None:
                    return
                parent = fresh
        assert parent.rollback is not None
        outcome = parent.rollback.outcome
        notes = await self.outbox.read(deploy_id)
        if outcome is None:
            await self._redrive_rollback(parent, child, notes)
            return
        await self._publish_rollback_outcome(parent, child, notes)
        if notes.done(step_finished(parent.status)):
            await self.pending.delete(rollback_pending_key(deploy_id))

    async def _redrive_rollback(
        self, parent: DeployRecord, child: DeployRecord | None, notes: DeployNotes
    ) -> None:
        assert parent.rollback is not None
        if child is not None:
            return  # the scheduler has it
        age = (_now() - parent.rollback.requested_at).total_seconds()
        if not notes.done(STEP_ROLLBACK_COMMAND) or age >= self.rollback_republish_after_s:
            # Same msg id and deploy id: at worst a duplicate the stream or the scheduler
            # recognises, never a second rollback.
            if notes.done(STEP_ROLLBACK_COMMAND):
                log.warning("rollback command re-published: no rollback deploy yet",
                            deploy_id=parent.id, age_s=round(age, 1))
                await self.outbox.bus.publish_command(
                    release_work_subject(parent.app), self._rollback_command(parent),
                    msg_id=msg_id(parent.id, STEP_ROLLBACK_COMMAND))
            else:
                await self._send_rollback_command(parent, notes, won=False)

    def _rollback_command(self, parent: DeployRecord) -> Rollback:
        assert parent.rollback is not None
        return Rollback(
            deploy_id=parent.rollback.deploy_id or f"{parent.id}-rollback", app=parent.app,
            to_version=parent.rollback.to_release, automatic=True, created_by=WATCHER,
            reason=parent.rollback.reason, failed_deploy_id=parent.id,
        )

    async def _publish_rollback_outcome(
        self, parent: DeployRecord, child: DeployRecord | None, notes: DeployNotes
    ) -> None:
        rollback = parent.rollback
        assert rollback is not None
        if rollback.outcome == "succeeded":
            await self.outbox.publish_event_once(notes, STEP_ROLLBACK_SUCCEEDED, RollbackSucceeded(
                app=parent.app, deploy_id=parent.id, release=parent.release,
                to_release=rollback.to_release or 0,
                new_release=(child.release if child and child.release is not None else 0),
            ))
        else:
            await self.outbox.publish_event_once(notes, STEP_ROLLBACK_FAILED, RollbackFailed(
                app=parent.app, deploy_id=parent.id, release=parent.release,
                to_release=rollback.to_release,
                reason=(child.reason if child and child.reason else "rollback did not finish"),
                original_reason=rollback.reason,
            ))
            await self._set_app_state(parent, "failed")
        await self.outbox.publish_event_once(notes, step_finished(parent.status), DeployFinished(
            app=parent.app, deploy_id=parent.id, status=parent.status,
            release=parent.release, reason=parent.reason, duration_s=_duration(parent),
        ))

    # -- small helpers --------------------------------------------------------------------

    def _crash(self, point: str) -> None:
        """Die here, like kill -9, when a crash test armed this point (settings.crashpoint)."""
        if self.crashpoint and self.crashpoint == point:
            log.warning("crashpoint reached: exiting", point=point)
            os._exit(137)

    async def _deploy(self, deploy_id: str) -> DeployRecord | None:
        entry = await self.deploys.get(deploy_id)
        return entry.value if entry is not None else None

    async def _set_app_state(self, deploy: DeployRecord, state: str) -> None:
        def change(rec: AppRecord) -> AppRecord | None:
            if rec.active_deploy_id not in (None, deploy.id) or rec.state == state:
                return None
            rec.state = state
            return rec

        await self.apps.mutate(deploy.app, change)


def _duration(deploy: DeployRecord) -> float:
    return round((deploy.updated_at - deploy.created_at).total_seconds(), 3)
