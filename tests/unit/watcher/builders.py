"""Snapshots for the watcher's pure tests: Nomad objects and records in a few words."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from services.watcher.decide import Observation, Policy
from services.watcher.nomad_model import (
    Allocation,
    AllocDeploymentStatus,
    Deployment,
    DeploymentState,
    TaskEvent,
    TaskState,
)
from services.watcher.notes import DeployNotes
from shared.records import AppRecord, AppSpec, DeployRecord, StatusChange

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
S = 1_000_000_000


def ns(at: datetime) -> int:
    return int(at.timestamp() * S)


def rfc(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def deployment(
    status: str = "running",
    *,
    desc: str = "",
    desired: int = 1,
    placed: int = 1,
    healthy: int = 0,
    unhealthy: int = 0,
    progress_by: datetime | None = None,
    progress_deadline_s: float = 600,
    dep_id: str = "dep-1",
    version: int = 1,
) -> Deployment:
    return Deployment(
        ID=dep_id, JobID="web", JobVersion=version, Status=status,
        StatusDescription=desc or {"running": "Deployment is running",
                                   "successful": "Deployment completed successfully",
                                   "failed": "Failed due to unhealthy allocations",
                                   "cancelled": "Cancelled due to newer version of job"}.get(
                                       status, ""),
        TaskGroups={"web": DeploymentState(
            DesiredTotal=desired, PlacedAllocs=placed, HealthyAllocs=healthy,
            UnhealthyAllocs=unhealthy, ProgressDeadline=int(progress_deadline_s * S),
            RequireProgressBy=rfc(progress_by or NOW + timedelta(minutes=10)),
        )},
        CreateIndex=10, CreateTime=ns(NOW - timedelta(seconds=30)),
    )


def event(type_: str, at: datetime = NOW, msg: str = "", **kw: Any) -> TaskEvent:
    return TaskEvent(Type=type_, Time=ns(at), DisplayMessage=msg, **kw)


def crash(at: datetime = NOW, code: int = 1) -> list[TaskEvent]:
    return [event("Started", at - timedelta(seconds=1), "Task started by client"),
            event("Terminated", at, f"Exit Code: {code}", ExitCode=code),
            event("Restarting", at, "Task restarting in 1s")]


def alloc(
    events: list[TaskEvent] | None = None,
    *,
    alloc_id: str = "a1",
    healthy: bool | None = None,
    status: str = "running",
    dep_id: str = "dep-1",
    version: int = 1,
    task: str = "app",
) -> Allocation:
    return Allocation(
        ID=alloc_id, JobID="web", JobVersion=version, TaskGroup="web", DeploymentID=dep_id,
        ClientStatus=status,
        DeploymentStatus=AllocDeploymentStatus(Healthy=healthy),
        TaskStates={task: TaskState(State="running", Events=events or [])},
        CreateIndex=11,
    )


def deploy_record(status: str = "deploying", **kw: Any) -> DeployRecord:
    history = kw.pop("history", [])
    rec = DeployRecord(id="d-1", app="web", kind=kw.pop("kind", "deploy"), status=status,  # type: ignore[arg-type]
                       release=kw.pop("release", 2), history=history,
                       created_at=NOW - timedelta(minutes=1), **kw)
    return rec


def healthy_record(at: datetime) -> DeployRecord:
    return deploy_record("healthy", history=[StatusChange(status="healthy", time=at)])


def app_record(auto_rollback: bool = True, last_healthy: int | None = 1) -> AppRecord:
    return AppRecord(spec=AppSpec(name="web", auto_rollback=auto_rollback),
                     last_healthy_release=last_healthy, current_release=2,
                     active_deploy_id="d-1")


def observe(
    dep: Deployment,
    allocs: list[Allocation] | None = None,
    deploy: DeployRecord | None = None,
    app: AppRecord | None = None,
    notes: DeployNotes | None = None,
    now: datetime = NOW,
    newer_is_same_deploy: bool = False,
) -> Observation:
    return Observation(
        deployment=dep, allocs=allocs or [], deploy=deploy or deploy_record(),
        app=app or app_record(), notes=notes or DeployNotes(deploy_id="d-1"), now=now,
        newer_is_same_deploy=newer_is_same_deploy,
    )


POLICY = Policy(fail_fast_restarts=2, crash_loop_window_s=300, deadline_grace_s=60)
