"""The parts of Nomad's objects the watcher reads, as msgspec Structs.

Nomad answers with large JSON objects; the watcher needs a few fields of deployments,
allocation stubs and task events, and the `Meta` of job versions. These Structs name
exactly those fields (everything else is ignored on decode), so the decision code is
typed and `from_json` stays cheap. Field names are Nomad's (`nomad-api.md` §3, §4).

This module converts and interprets timestamps; it does no I/O and decides nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, TypeVar

import msgspec

T = TypeVar("T")

ACTIVE_DEPLOYMENT = frozenset(
    {"running", "paused", "pending", "blocked", "unblocking", "initializing"}
)
TERMINAL_DEPLOYMENT = frozenset({"successful", "failed", "cancelled"})

META_DEPLOY_ID = "shaman_deploy_id"
META_RELEASE = "shaman_release"


class DeploymentState(msgspec.Struct, frozen=True):
    """One task group's counters in a deployment."""

    DesiredTotal: int = 0
    DesiredCanaries: int = 0
    PlacedAllocs: int = 0
    HealthyAllocs: int = 0
    UnhealthyAllocs: int = 0
    Promoted: bool = False
    AutoPromote: bool = False
    ProgressDeadline: int = 0  # nanoseconds
    RequireProgressBy: str | None = None  # RFC 3339; Go's zero time when unset
    PlacedCanaries: list[str] | None = None


class Deployment(msgspec.Struct, frozen=True):
    ID: str
    JobID: str
    JobVersion: int = 0
    Namespace: str = "default"
    JobCreateIndex: int = 0
    JobModifyIndex: int = 0
    Status: str = ""
    StatusDescription: str = ""
    TaskGroups: dict[str, DeploymentState] | None = None
    CreateIndex: int = 0
    ModifyIndex: int = 0
    CreateTime: int = 0  # unix nanoseconds

    @property
    def active(self) -> bool:
        return self.Status in ACTIVE_DEPLOYMENT

    @property
    def groups(self) -> dict[str, DeploymentState]:
        return self.TaskGroups or {}


class TaskEvent(msgspec.Struct, frozen=True):
    Type: str
    Time: int = 0  # unix nanoseconds
    DisplayMessage: str = ""
    Message: str = ""
    Details: dict[str, str] | None = None
    FailsTask: bool = False
    RestartReason: str = ""
    SetupError: str = ""
    DriverError: str = ""
    ExitCode: int = 0
    Signal: int = 0
    KillReason: str = ""
    KillError: str = ""
    ValidationError: str = ""
    DownloadError: str = ""
    VaultError: str = ""

    @property
    def text(self) -> str:
        """The most specific human text the event carries."""
        for candidate in (self.DisplayMessage, self.DriverError, self.SetupError,
                          self.KillReason, self.ValidationError, self.DownloadError,
                          self.VaultError, self.Message, self.RestartReason):
            if candidate:
                return candidate
        return self.Type

    def detail(self, key: str) -> str:
        return (self.Details or {}).get(key, "")

    @property
    def oom_killed(self) -> bool:
        return (self.detail("oom_killed").lower() == "true"
                or self.detail("OOMKilled").lower() == "true"
                or "oom killed" in self.DisplayMessage.lower())


class TaskState(msgspec.Struct, frozen=True):
    State: str = "pending"
    Failed: bool = False
    Restarts: int = 0
    Events: list[TaskEvent] | None = None

    @property
    def events(self) -> list[TaskEvent]:
        return self.Events or []


class AllocDeploymentStatus(msgspec.Struct, frozen=True):
    Healthy: bool | None = None
    Canary: bool = False
    Timestamp: str | None = None


class Allocation(msgspec.Struct, frozen=True):
    """An allocation stub (`/v1/deployment/allocations/:id`, `/v1/job/:id/allocations`)."""

    ID: str
    JobID: str = ""
    JobVersion: int = 0
    TaskGroup: str = ""
    Name: str = ""
    DeploymentID: str = ""
    ClientStatus: str = ""
    ClientDescription: str = ""
    DesiredStatus: str = ""
    DesiredDescription: str = ""
    DeploymentStatus: AllocDeploymentStatus | None = None
    TaskStates: dict[str, TaskState] | None = None
    CreateIndex: int = 0
    CreateTime: int = 0  # unix nanoseconds

    @property
    def healthy(self) -> bool | None:
        return self.DeploymentStatus.Healthy if self.DeploymentStatus else None

    @property
    def tasks(self) -> dict[str, TaskState]:
        return self.TaskStates or {}


class JobVersion(msgspec.Struct, frozen=True):
    """One entry of `GET /v1/job/:id/versions` (only what maps it to a deploy)."""

    ID: str
    Version: int = 0
    CreateIndex: int = 0
    JobModifyIndex: int = 0
    Stable: bool = False
    Meta: dict[str, str] | None = None

    @property
    def deploy_id(self) -> str | None:
        return (self.Meta or {}).get(META_DEPLOY_ID) or None

    @property
    def release(self) -> int | None:
        raw = (self.Meta or {}).get(META_RELEASE, "")
        try:
            return int(raw.lstrip("v")) if raw else None
        except ValueError:
            return None


class CheckResult(msgspec.Struct, frozen=True):
    """One Nomad-provider check result (`GET /v1/allocation/:id/checks`)."""

    Check: str = ""
    Status: str = ""  # success | failure | pending
    Output: str = ""
    StatusCode: int = 0
    Task: str = ""
    Service: str = ""


def convert(obj: Any, type_: type[T]) -> T:
    """A dict from python-nomad to one of these Structs (unknown fields dropped)."""
    return msgspec.convert(obj, type_, strict=False)


_ZERO_TIME_PREFIX = "0001-01-01"


def parse_time(value: str | None) -> datetime | None:
    """An RFC 3339 time from Nomad (nanosecond fractions allowed); None for Go's zero time."""
    if not value or value.startswith(_ZERO_TIME_PREFIX):
        return None
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    # Python parses at most microseconds: cut a longer fraction.
    if "." in text:
        head, _, rest = text.partition(".")
        digits = ""
        for ch in rest:
            if ch.isdigit():
                digits += ch
            else:
                break
        text = f"{head}.{digits[:6]}{rest[len(digits):]}"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def from_unix_ns(value: int) -> datetime | None:
    return datetime.fromtimestamp(value / 1e9, UTC) if value > 0 else None
