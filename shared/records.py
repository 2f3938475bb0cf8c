"""The platform's state records, as stored in NATS KV buckets.

Apps, releases and deploys are msgspec Structs encoded as JSON. Every write
that can race goes through a KV revision (see shared.bus.kv.TypedKV).
This module defines shapes, defaults, bounds and the deploy state machine;
it does no I/O.

Units are in the names: `*_s` seconds, `memory_mb` MiB, `cpu_mhz` MHz.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal

import msgspec

from shared.commands import BuildRequested
from shared.events.base import now
from shared.events.deploy import TERMINAL_STATUSES, DeployStatus, GitRef

RECENT_DEPLOYS_MAX = 100
APP_NAME_RE = re.compile(r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")  # a DNS label
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
TEAM_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")

ReleaseKind = Literal["deploy", "config", "secrets", "rollback", "process"]


class HealthCheck(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    path: str = "/health"
    interval_s: float = 10.0
    timeout_s: float = 2.0


class RolloutPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Nomad's update block, in the app's words. `auto_revert` is always false
    in the rendered job: the platform decides rollback (architecture.md §4)."""

    canaries: int = 0
    max_parallel: int = 1
    min_healthy_time_s: float = 10.0
    healthy_deadline_s: float = 300.0
    progress_deadline_s: float = 600.0


class ProcessSpec(msgspec.Struct, frozen=True, kw_only=True):
    """How the app's process runs; pinned by each release."""

    port: int = 8080
    command: str | None = None
    args: list[str] = []
    cpu_mhz: int = 100
    memory_mb: int = 128
    health: HealthCheck = HealthCheck()
    rollout: RolloutPolicy = RolloutPolicy()
    domains: list[str] = []


class AppSpec(msgspec.Struct, frozen=True, kw_only=True):
    """What a developer fills in: the form's fields. All but the name have defaults."""

    name: str
    team: str = "default"
    image: str | None = None  # image repository for image deploys
    git: GitRef | None = None  # default git source for source deploys
    dockerfile: str = "Containerfile"  # path inside the source; Dockerfile also found
    instances: int = 1
    auto_rollback: bool = True
    process: ProcessSpec = ProcessSpec()


class AppRecord(msgspec.Struct, kw_only=True):
    """An app and what the platform knows of it now (key: app name)."""

    spec: AppSpec
    created_at: datetime = msgspec.field(default_factory=now)
    created_by: str = ""
    next_release: int = 1  # the number the next release gets (CAS on this record)
    current_release: int | None = None  # the release the Nomad job should run
    last_healthy_release: int | None = None
    active_deploy_id: str | None = None  # the deploy that owns the app's rollout now
    latest_deploy_id: str | None = None  # the newest source deploy (latest wins for builds)
    state: str = "new"  # new | deploying | running | failed | destroyed
    # Ids of the deploys the api accepted for this app, newest first, at most
    # RECENT_DEPLOYS_MAX (api, in the CAS write it makes when accepting a deploy): what
    # `GET /v1/apps/{app}/deploys` lists, so listing never scans the deploy bucket.
    recent_deploys: list[str] = []


class SecretsPin(msgspec.Struct, frozen=True, kw_only=True):
    """Which Vault KV v2 version of the app's secrets a release uses; names only."""

    version: int
    keys: list[str]


class ReleaseRecord(msgspec.Struct, frozen=True, kw_only=True):
    """An immutable, numbered release (key: <app>.<version>)."""

    app: str
    version: int
    kind: ReleaseKind
    description: str
    created_by: str
    deploy_id: str
    image: str  # repository@sha256:digest, what Nomad pulls
    digest: str
    config: dict[str, str] = {}
    secrets: SecretsPin | None = None
    process: ProcessSpec = ProcessSpec()
    rollback_of: int | None = None  # for rollbacks: the release whose content was restored
    created_at: datetime = msgspec.field(default_factory=now)


class StatusChange(msgspec.Struct, frozen=True, kw_only=True):
    status: str
    time: datetime
    reason: str | None = None


class RollbackState(msgspec.Struct, kw_only=True):
    """The one automatic rollback a deploy may have (CAS-guarded)."""

    requested_at: datetime
    reason: str
    to_release: int | None = None
    deploy_id: str | None = None  # the rollback's own deploy record
    outcome: str | None = None  # succeeded | failed


class DeployRecord(msgspec.Struct, kw_only=True):
    """One request to get a release running (key: deploy id)."""

    id: str
    app: str
    kind: ReleaseKind
    status: DeployStatus = "pending"
    source: str = ""
    requested_by: str = ""
    description: str = ""
    release: int | None = None
    reason: str | None = None
    created_at: datetime = msgspec.field(default_factory=now)
    updated_at: datetime = msgspec.field(default_factory=now)
    image: str | None = None
    digest: str | None = None
    build_id: str | None = None
    job_modify_index: int | None = None
    job_version: int | None = None
    nomad_deployment_id: str | None = None
    superseded_by: str | None = None
    automatic: bool = False  # an automatic rollback created by the platform
    rollback_for: str | None = None  # for rollback deploys: the deploy that failed
    rollback: RollbackState | None = None
    history: list[StatusChange] = []
    # Source deploys: the build command exactly as the api queued it (references and
    # names, never secret values), so the api's re-drive sweep can queue it again with
    # the same msg id when the message was lost (reliability.md scenario 10).
    build_request: BuildRequested | None = None
    # When an api copy last re-queued `build_request` (CAS: one copy per deploy and sweep).
    redriven_at: datetime | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


# pending → building → deploying → healthy | failed | rolled_back; superseded and
# cancelled from any state before the outcome. A rollback is a new deploy; the
# failed one moves deploying → rolled_back (or failed) when it ends.
_ALLOWED: dict[str, frozenset[str]] = {
    "pending": frozenset({"building", "deploying", "failed", "superseded", "cancelled"}),
    "building": frozenset({"deploying", "failed", "superseded", "cancelled"}),
    "deploying": frozenset({"healthy", "failed", "rolled_back", "superseded", "cancelled"}),
    "healthy": frozenset({"failed", "rolled_back"}),  # crash-loop after healthy
    "failed": frozenset({"rolled_back"}),  # the automatic rollback finished later
}


def can_transition(current: str, new: str) -> bool:
    return new in _ALLOWED.get(current, frozenset())


def transition(record: DeployRecord, status: DeployStatus, reason: str | None = None) -> bool:
    """Move a deploy to `status` if the state machine allows it; False if not.

    Callers write the record back with its KV revision, so two services moving
    the same deploy can never both win.
    """
    if record.status == status or not can_transition(record.status, status):
        return False
    t = now()
    record.status = status
    if reason is not None:
        record.reason = reason
    record.updated_at = t
    record.history = [*record.history, StatusChange(status=status, time=t, reason=reason)]
    return True


def remember_deploy(recent: list[str], deploy_id: str) -> list[str]:
    """`AppRecord.recent_deploys` with `deploy_id` added: newest first (deploy ids sort by
    creation time, so concurrent writers agree on the order), no repeats, bounded."""
    return sorted({deploy_id, *recent}, reverse=True)[:RECENT_DEPLOYS_MAX]


def release_key(app: str, version: int) -> str:
    return f"{app}.{version}"
