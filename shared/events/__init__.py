"""The public timeline: typed events, one module per family.

Every event is a frozen, keyword-only msgspec Struct with an explicit, stable
tag (its `type`, e.g. "rollout.healthy"). It travels as one JSON object on
shaman.events.<app>.<type> (see shared.subjects.event_subject). Changes are
additive: new fields get defaults; a breaking change gets a new tag.
docs/events.md is generated from the golden examples in shared.events.examples
and is the contract for dashboards.

This package defines shapes and encoding only; publishing is shared.bus's job.
"""

from shared.events.base import Event, event_type, now
from shared.events.build import BuildFailed, BuildLog, BuildStarted, BuildSucceeded
from shared.events.codec import TimelineEvent, decode_event, encode_event
from shared.events.deploy import (
    DeployAccepted,
    DeployCancelled,
    DeployFinished,
    DeployRejected,
    DeployRequested,
    DeploySuperseded,
)
from shared.events.release import AppScaled, DriftDetected, ReleaseCreated
from shared.events.rollout import (
    AllocationFailure,
    GroupProgress,
    RollbackFailed,
    RollbackStarted,
    RollbackSucceeded,
    RolloutFailed,
    RolloutHealthy,
    RolloutProgress,
    RolloutSubmitted,
)

__all__ = [
    "AllocationFailure",
    "AppScaled",
    "BuildFailed",
    "BuildLog",
    "BuildStarted",
    "BuildSucceeded",
    "DeployAccepted",
    "DeployCancelled",
    "DeployFinished",
    "DeployRejected",
    "DeployRequested",
    "DeploySuperseded",
    "DriftDetected",
    "Event",
    "GroupProgress",
    "ReleaseCreated",
    "RollbackFailed",
    "RollbackStarted",
    "RollbackSucceeded",
    "RolloutFailed",
    "RolloutHealthy",
    "RolloutProgress",
    "RolloutSubmitted",
    "TimelineEvent",
    "decode_event",
    "encode_event",
    "event_type",
    "now",
]
