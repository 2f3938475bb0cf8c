"""The watcher's decisions: from a snapshot of Nomad and the records, what must happen now.

Level-triggered and pure. `decide(observation, policy)` looks at one Nomad deployment,
its allocations, the deploy record, the app record and the watcher's notes, and returns
the actions that bring the records in line with what Nomad shows. It never asks which
event woke it up, so a replayed, duplicated, late or missing event changes nothing:
the same snapshot always gives the same actions, and once the records show the outcome
(and the notes show it was published) it gives none.

The rules (docs/decisions/0001-deploy-flow.md, step 4):
- a running deployment whose new tasks keep failing (`fail_fast_restarts` times) or fail
  in a way no restart can fix is failed in Nomad at once (`FailInNomad`); so is one past
  its progress deadline plus `deadline_grace_s`;
- `successful` → the deploy is `healthy`; `failed` → the deploy is `failed`, explained,
  with one automatic rollback when the app allows it and the deploy is not itself a
  rollback; `cancelled` → `superseded` (or `cancelled` when the job was stopped), unless
  the version that replaced it belongs to the same deploy: then the newer deployment
  decides the deploy's outcome and the cancelled one is ignored;
- a healthy release whose tasks start failing within `crash_loop_window_s` is failed and
  rolled back like a failed deployment;
- a rollback deploy's end settles the original deploy (`resolve_rollback`).

No I/O here: the reconciler fetches, calls these functions, and executes the actions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from services.watcher.explain import describe_evidence
from services.watcher.failures import Evidence, gather_evidence
from services.watcher.nomad_model import Allocation, Deployment, parse_time
from services.watcher.notes import (
    STEP_FAILED,
    STEP_HEALTHY,
    STEP_ROLLBACK_COMMAND,
    STEP_ROLLBACK_STARTED,
    DeployNotes,
    step_finished,
)
from shared.events.rollout import GroupProgress
from shared.records import AppRecord, DeployRecord

# A deploy the scheduler has not moved to `deploying` yet: look again shortly.
NOT_YET_DEPLOYING_RETRY_S = 1.0


@dataclass(frozen=True)
class Policy:
    fail_fast_restarts: int = 2
    crash_loop_window_s: float = 300.0
    deadline_grace_s: float = 60.0


@dataclass(frozen=True)
class Observation:
    deployment: Deployment
    allocs: Sequence[Allocation]  # the deployment's allocations (or its job version's)
    deploy: DeployRecord
    app: AppRecord
    notes: DeployNotes
    now: datetime
    # For a cancelled deployment: the job version that replaced it carries the same
    # `shaman_deploy_id` (a scale, a drift repair or a new rendering of the same release).
    newer_is_same_deploy: bool = False


# -- actions ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PublishProgress:
    groups: list[GroupProgress]
    percent: int


@dataclass(frozen=True)
class FailInNomad:
    """Fail the Nomad deployment now; `trigger` is remembered for the explanation."""

    trigger: str  # why the watcher did it: "failed early by Shaman", its own deadline
    cause: str | None = None  # the evidence, when there is some

    @property
    def reason(self) -> str:
        return f"{self.cause} ({self.trigger})" if self.cause else self.trigger


@dataclass(frozen=True)
class MarkHealthy:
    pass


@dataclass(frozen=True)
class MarkFailed:
    trigger: str  # who or what decided it failed, for the reason text
    evidence: Evidence
    rollback_to: int | None  # None: no automatic rollback
    crash_loop: bool = False


@dataclass(frozen=True)
class MarkEnded:
    """The Nomad deployment was cancelled: the deploy is superseded or cancelled."""

    status: Literal["superseded", "cancelled"]
    reason: str


Action = PublishProgress | FailInNomad | MarkHealthy | MarkFailed | MarkEnded


@dataclass(frozen=True)
class Decision:
    actions: list[Action] = field(default_factory=list)
    requeue_after_s: float | None = None


# -- helpers ----------------------------------------------------------------------------------


def progress(deployment: Deployment) -> PublishProgress:
    groups = [
        GroupProgress(
            name=name,
            desired=state.DesiredTotal,
            placed=state.PlacedAllocs,
            healthy=state.HealthyAllocs,
            unhealthy=state.UnhealthyAllocs,
            canaries=state.DesiredCanaries,
            promoted=state.Promoted,
        )
        for name, state in sorted(deployment.groups.items())
    ]
    desired = sum(g.desired for g in groups)
    healthy = sum(min(g.healthy, g.desired) for g in groups)
    if desired > 0:
        percent = (100 * healthy) // desired
    else:
        percent = 100 if deployment.Status == "successful" else 0
    return PublishProgress(groups=groups, percent=percent)


def deadline(deployment: Deployment) -> datetime | None:
    """When Nomad should have failed the deployment for lack of progress, if ever."""
    latest: datetime | None = None
    for state in deployment.groups.values():
        if state.ProgressDeadline <= 0:
            continue
        by = parse_time(state.RequireProgressBy)
        if by is None and deployment.CreateTime > 0:
            by = datetime.fromtimestamp(
                (deployment.CreateTime + state.ProgressDeadline) / 1e9, tz=UTC
            )
        if by is not None and (latest is None or by > latest):
            latest = by
    return latest


def is_rollback(deploy: DeployRecord) -> bool:
    return deploy.kind == "rollback" or deploy.automatic or deploy.rollback_for is not None


def rollback_target(
    deploy: DeployRecord, app: AppRecord, notes: DeployNotes, *, crash_loop: bool
) -> int | None:
    """The release an automatic rollback restores, or None when there must be none."""
    if not app.spec.auto_rollback or is_rollback(deploy):
        return None
    if deploy.rollback is not None:  # already requested: keep the first decision
        return deploy.rollback.to_release
    target = notes.previous_healthy if crash_loop else app.last_healthy_release
    if target is None or target == deploy.release:
        return None
    return target


def failure_trigger(deployment: Deployment, notes: DeployNotes) -> str:
    desc = deployment.StatusDescription
    if notes.failed_deployment == deployment.ID and notes.fail_reason:
        return notes.fail_reason
    if desc.startswith("Failed due to progress deadline"):
        return "no allocation became healthy before the progress deadline (Nomad)"
    if desc.startswith("Failed due to unhealthy allocations"):
        return "allocations were unhealthy (Nomad)"
    if desc.startswith("Deployment marked as failed"):
        return "the deployment was marked failed in Nomad"
    return f"Nomad: {desc}" if desc else "the deployment failed in Nomad"


def healthy_since(deploy: DeployRecord) -> datetime | None:
    for change in reversed(deploy.history):
        if change.status == "healthy":
            return change.time
    return None


def failed_outbox_done(deploy: DeployRecord, notes: DeployNotes) -> bool:
    if not notes.done(STEP_FAILED):
        return False
    if deploy.rollback is not None and deploy.rollback.outcome is None:
        return notes.all_done(STEP_ROLLBACK_COMMAND, STEP_ROLLBACK_STARTED)
    if deploy.rollback is None:
        return notes.done(step_finished(deploy.status))
    return True  # the rollback's outcome is settled by resolve_rollback


# -- the decision -----------------------------------------------------------------------------


def decide(obs: Observation, policy: Policy) -> Decision:
    dep = obs.deployment
    deploy = obs.deploy
    status = deploy.status

    if status in ("pending", "building"):
        # The scheduler records `deploying` right before it registers the job; Nomad can
        # be quicker to report than that write is to land.
        return Decision(requeue_after_s=NOT_YET_DEPLOYING_RETRY_S)

    actions: list[Action] = []
    if status == "deploying":
        actions.append(progress(dep))

    if dep.active:
        if status != "deploying":
            return Decision()
        return _decide_running(obs, policy, actions)

    if dep.Status == "successful":
        if status == "deploying" or (
            status == "healthy" and not obs.notes.all_done(STEP_HEALTHY, step_finished("healthy"))
        ):
            actions.append(MarkHealthy())
            return Decision(actions)
        if status == "healthy":
            return _decide_crash_loop(obs, policy)
        if status == "failed" and not failed_outbox_done(deploy, obs.notes):
            # Crash-looped after going healthy; finish what a crash interrupted.
            return Decision([_mark_failed(obs, crash_loop=True, trigger="crash loop")])
        return Decision()

    if dep.Status == "failed":
        if status == "deploying" or (
            status == "failed" and not failed_outbox_done(deploy, obs.notes)
        ):
            actions.append(_mark_failed(obs, crash_loop=False, trigger=failure_trigger(
                dep, obs.notes)))
        return Decision(actions)

    if dep.Status == "cancelled" and status == "deploying":
        if obs.newer_is_same_deploy and "stopped" not in dep.StatusDescription:
            # The same release registered again: its newer deployment carries the deploy
            # on. This one's counters are stale, so not even progress comes from it.
            return Decision()
        if "stopped" in dep.StatusDescription:
            actions.append(MarkEnded("cancelled", "the Nomad job was stopped"))
        else:
            actions.append(MarkEnded(
                "superseded", "a newer version of the job replaced this rollout"))
        return Decision(actions)
    return Decision(actions)


def _evidence(obs: Observation, *, since_ns: int = 0, skip_healthy: bool = True) -> Evidence:
    dep = obs.deployment
    mine = [a for a in obs.allocs
            if a.DeploymentID == dep.ID or (not a.DeploymentID and a.JobVersion == dep.JobVersion)]
    return gather_evidence(mine, since_ns=since_ns, skip_healthy=skip_healthy)


def _mark_failed(obs: Observation, *, crash_loop: bool, trigger: str) -> MarkFailed:
    since = 0
    if crash_loop:
        since_dt = healthy_since(obs.deploy)
        since = int(since_dt.timestamp() * 1e9) if since_dt else 0
    evidence = _evidence(obs, since_ns=since, skip_healthy=not crash_loop)
    return MarkFailed(
        trigger=trigger,
        evidence=evidence,
        rollback_to=rollback_target(obs.deploy, obs.app, obs.notes, crash_loop=crash_loop),
        crash_loop=crash_loop,
    )


def _decide_running(obs: Observation, policy: Policy, actions: list[Action]) -> Decision:
    dep = obs.deployment
    already_failing = obs.notes.failed_deployment == dep.ID
    evidence = _evidence(obs)
    if not already_failing:
        unfixable = evidence.unfixable
        top = evidence.most_frequent()
        if unfixable is not None:
            actions.append(FailInNomad("no restart can fix this; failed early by Shaman",
                                       describe_evidence(evidence)))
            return Decision(actions)
        if top is not None and top[1] >= max(1, policy.fail_fast_restarts):
            actions.append(FailInNomad("failed early by Shaman", describe_evidence(evidence)))
            return Decision(actions)

    if dep.Status == "paused" or "requires manual promotion" in dep.StatusDescription:
        return Decision(actions)  # Nomad's deadline clock is stopped too
    due = deadline(dep)
    if due is None:
        return Decision(actions)
    left_s = (due - obs.now).total_seconds() + policy.deadline_grace_s
    if left_s <= 0 and not already_failing:
        pd = max((s.ProgressDeadline for s in dep.groups.values()), default=0) / 1e9
        actions.append(FailInNomad(
            f"no progress within the progress deadline ({pd:g}s) plus {policy.deadline_grace_s:g}s"
            " grace; failed by Shaman's own deadline"))
        return Decision(actions)
    return Decision(actions, requeue_after_s=max(left_s, 0.05) if left_s > 0 else None)


def _decide_crash_loop(obs: Observation, policy: Policy) -> Decision:
    since = healthy_since(obs.deploy)
    if since is None:
        return Decision()
    window_left = policy.crash_loop_window_s - (obs.now - since).total_seconds()
    if window_left <= 0:
        return Decision()
    evidence = _evidence(obs, since_ns=int(since.timestamp() * 1e9), skip_healthy=False)
    top = evidence.most_frequent()
    if evidence.unfixable is not None or (
        top is not None and top[1] >= max(1, policy.fail_fast_restarts)
    ):
        return Decision([_mark_failed(
            obs, crash_loop=True,
            trigger=f"crash-looping within {policy.crash_loop_window_s:g}s of going healthy",
        )])
    return Decision()


# -- a rollback's end settles the deploy it rolled back ---------------------------------------


@dataclass(frozen=True)
class RollbackResolution:
    status: Literal["rolled_back", "failed"]
    outcome: Literal["succeeded", "failed"]
    reason: str


def resolve_rollback(parent: DeployRecord, child: DeployRecord | None) -> RollbackResolution | None:
    """What the original deploy becomes now that its automatic rollback ended (or None)."""
    if parent.rollback is None or parent.rollback.outcome is not None:
        return None
    if child is None or not child.terminal:
        return None
    target = parent.rollback.to_release
    to = f"v{target}" if target is not None else "the last healthy release"
    if child.status == "healthy":
        reason = f"{parent.reason or 'rollout failed'}; rolled back to {to}"
        return RollbackResolution("rolled_back", "succeeded", reason)
    why = child.reason or child.status
    original = parent.reason or "rollout failed"
    reason = f"{original}; automatic rollback to {to} {child.status}: {why}"
    return RollbackResolution("failed", "failed", reason)
