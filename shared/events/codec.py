"""Encoding and decoding of timeline events; one decoder, built once."""

from __future__ import annotations

import msgspec

from shared.events.build import BuildFailed, BuildLog, BuildStarted, BuildSucceeded
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
    RollbackFailed,
    RollbackStarted,
    RollbackSucceeded,
    RolloutFailed,
    RolloutHealthy,
    RolloutProgress,
    RolloutSubmitted,
)

TimelineEvent = (
    DeployRequested
    | DeployAccepted
    | DeployRejected
    | DeploySuperseded
    | DeployCancelled
    | DeployFinished
    | BuildStarted
    | BuildLog
    | BuildSucceeded
    | BuildFailed
    | ReleaseCreated
    | AppScaled
    | DriftDetected
    | RolloutSubmitted
    | RolloutProgress
    | RolloutHealthy
    | RolloutFailed
    | RollbackStarted
    | RollbackSucceeded
    | RollbackFailed
)

ALL_EVENT_TYPES: tuple[type, ...] = TimelineEvent.__args__  # type: ignore[attr-defined]

_encoder = msgspec.json.Encoder()
_decoder: msgspec.json.Decoder[TimelineEvent] = msgspec.json.Decoder(TimelineEvent)


def encode_event(event: msgspec.Struct) -> bytes:
    return _encoder.encode(event)


def decode_event(data: bytes) -> TimelineEvent:
    """Decode and validate one timeline event; raises msgspec.ValidationError."""
    return _decoder.decode(data)
