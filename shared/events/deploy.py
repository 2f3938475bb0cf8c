"""Deploy lifecycle events: requested, accepted, rejected, superseded, finished."""

from __future__ import annotations

from typing import Literal

import msgspec

from shared.events.base import Event

DeployStatus = Literal[
    "pending", "building", "deploying", "healthy", "failed", "rolled_back", "superseded",
    "cancelled",
]
TERMINAL_STATUSES: frozenset[str] = frozenset(
    {"healthy", "failed", "rolled_back", "superseded", "cancelled"}
)


def finished_msg_id(deploy_id: str, status: str) -> str:
    """The Nats-Msg-Id of a deploy's `deploy.finished` with this status, the same in every
    service: whichever publishes it (after winning the record's CAS), a retry or a
    replay is stored once, and a later outcome (healthy, then rolled_back after a crash
    loop) is a different message."""
    return f"{deploy_id}:finished.{status}"


class GitRef(msgspec.Struct, frozen=True, kw_only=True):
    url: str
    ref: str = "main"


class DeployRequested(Event, frozen=True, kw_only=True, tag="deploy.requested"):
    """A deploy request published by any NATS client on shaman.requests.<app>.deploy.

    Exactly one of `image` and `git` is set. The request carries a token in the
    `Shaman-Token` header and an idempotency key in `Nats-Msg-Id`; it gets the
    same validation and authorisation as POST /v1/apps/{app}/deploys.
    `deploy_id` is ignored: the platform assigns it.
    """

    image: str | None = None
    git: GitRef | None = None
    description: str | None = None


class DeployAccepted(Event, frozen=True, kw_only=True, tag="deploy.accepted"):
    """The platform recorded a deploy and queued its work."""

    kind: str  # deploy | config | secrets | rollback | process
    source: str  # what is being deployed, for people: an image ref, "git <url>@<ref>", ...
    requested_by: str
    description: str = ""


class DeployRejected(Event, frozen=True, kw_only=True, tag="deploy.rejected"):
    """A deploy request published on NATS was refused (bad input or not allowed)."""

    code: str  # validation_failed | unauthorized | forbidden | not_found
    message: str
    request_id: str = ""  # the request's Nats-Msg-Id


class DeploySuperseded(Event, frozen=True, kw_only=True, tag="deploy.superseded"):
    """A newer deploy of the same app replaced this one before it rolled out."""

    superseded_by: str


class DeployCancelled(Event, frozen=True, kw_only=True, tag="deploy.cancelled"):
    reason: str


class DeployFinished(Event, frozen=True, kw_only=True, tag="deploy.finished"):
    """The one honest outcome of a deploy: its terminal status and why."""

    status: DeployStatus
    release: int | None = None
    reason: str | None = None
    duration_s: float | None = None
