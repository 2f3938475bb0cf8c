"""Release and app events: a new numbered release, scaling, drift put right."""

from __future__ import annotations

from shared.events.base import Event


class ReleaseCreated(Event, frozen=True, kw_only=True, tag="release.created"):
    release: int
    kind: str  # deploy | config | secrets | rollback | process
    description: str  # "Deploy 3f2c1a9", "Set LOG_LEVEL", "Rollback to v7"
    created_by: str
    image: str


class AppScaled(Event, frozen=True, kw_only=True, tag="app.scaled"):
    instances: int
    previous: int
    requested_by: str


class DriftDetected(Event, frozen=True, kw_only=True, tag="drift.detected"):
    """The Nomad job differed from the app's current release and was put back."""

    release: int | None
    description: str  # what was found, e.g. "job stopped outside Shaman"
