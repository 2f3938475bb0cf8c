"""Build events: the builder's progress, its log lines and the resulting image."""

from __future__ import annotations

from shared.events.base import Event


class BuildStarted(Event, frozen=True, kw_only=True, tag="build.started"):
    build_id: str
    builder: str  # which builder copy took the work
    source: str
    attempt: int = 1


class BuildLog(Event, frozen=True, kw_only=True, tag="build.log"):
    """A batch of build log lines (secret values already scrubbed)."""

    build_id: str
    seq: int  # position of the first line in the whole log, from 0
    lines: list[str]


class BuildSucceeded(Event, frozen=True, kw_only=True, tag="build.succeeded"):
    build_id: str
    image: str  # repository:tag as pushed
    digest: str  # sha256:..., what the release pins
    duration_s: float
    cached: bool = False


class BuildFailed(Event, frozen=True, kw_only=True, tag="build.failed"):
    build_id: str
    reason: str
    step: str | None = None  # the Containerfile step that failed, e.g. "RUN make"
    log_tail: list[str] = []
