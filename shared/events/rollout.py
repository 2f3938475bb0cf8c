"""Rollout events from the watcher and the scheduler: progress, outcome, rollback."""

from __future__ import annotations

import msgspec

from shared.events.base import Event


class GroupProgress(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    desired: int
    placed: int
    healthy: int
    unhealthy: int
    canaries: int = 0
    promoted: bool = False


class AllocationFailure(msgspec.Struct, frozen=True, kw_only=True):
    """Why one allocation failed, in words a developer can act on."""

    alloc_id: str
    task: str
    summary: str  # e.g. "exited with code 1", "image not found", "check /health failed"
    exit_code: int | None = None
    task_events: list[str] = []
    check_output: str | None = None
    log_tail: list[str] = []


class RolloutSubmitted(Event, frozen=True, kw_only=True, tag="rollout.submitted"):
    release: int
    job_version: int | None = None
    job_modify_index: int
    outcome: str  # created | updated | unchanged


class RolloutProgress(Event, frozen=True, kw_only=True, tag="rollout.progress"):
    release: int | None
    nomad_deployment_id: str
    groups: list[GroupProgress]
    percent: int  # healthy / desired over all groups, 0..100


class RolloutHealthy(Event, frozen=True, kw_only=True, tag="rollout.healthy"):
    release: int | None
    nomad_deployment_id: str


class RolloutFailed(Event, frozen=True, kw_only=True, tag="rollout.failed"):
    release: int | None
    nomad_deployment_id: str
    reason: str
    allocations: list[AllocationFailure] = []


class RollbackStarted(Event, frozen=True, kw_only=True, tag="rollback.started"):
    release: int | None  # the failed release
    to_release: int | None  # the release being restored
    automatic: bool
    reason: str


class RollbackSucceeded(Event, frozen=True, kw_only=True, tag="rollback.succeeded"):
    release: int | None  # the failed release
    to_release: int
    new_release: int  # the release created by the rollback


class RollbackFailed(Event, frozen=True, kw_only=True, tag="rollback.failed"):
    release: int | None
    to_release: int | None
    reason: str
    original_reason: str
