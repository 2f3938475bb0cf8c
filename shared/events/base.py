"""The fields every timeline event carries, and helpers for tags and time."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec


def now() -> datetime:
    """The current time in UTC; events carry aware datetimes (RFC 3339 on the wire)."""
    return datetime.now(UTC)


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Base of every timeline event.

    `type` (the tag) is written by msgspec; `deploy_id` is "" for events that
    belong to no deploy (a scale, a drift report).
    """

    app: str
    deploy_id: str = ""
    time: datetime = msgspec.field(default_factory=now)


def event_type(event: Event | type[Event]) -> str:
    """The stable tag of an event (its `type` on the wire)."""
    cls = event if isinstance(event, type) else type(event)
    tag = cls.__struct_config__.tag
    if not isinstance(tag, str):
        raise TypeError(f"{cls.__name__} has no explicit string tag")
    return tag
