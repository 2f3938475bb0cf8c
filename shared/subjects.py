"""Every NATS subject, stream, consumer and bucket name Shaman uses, in one place.

Call sites never build subjects with f-strings: they ask this module. The
public part of this module (the timeline and the deploy-request subjects) is a
contract with dashboards and CI systems (docs/events.md); it changes only by
adding. Everything else is internal to the platform.

This module knows names only; it does not talk to NATS.
"""

from __future__ import annotations

import re
from typing import Final

PREFIX: Final = "shaman"

# -- public: the timeline -------------------------------------------------------
# One message per event on shaman.events.<app>.<type>; <type> is dotted
# ("rollout.healthy"), so a subscriber to one app uses shaman.events.<app>.>.
EVENTS_ROOT: Final = f"{PREFIX}.events"
EVENTS_ALL: Final = f"{EVENTS_ROOT}.>"

# -- public: deploy requests from any NATS client --------------------------------
# A client publishes a DeployRequested (shared.events.deploy) here with a
# Nats-Msg-Id header and a Shaman-Token header; the api service validates and
# authorises it exactly like POST /v1/apps/{app}/deploys.
REQUESTS_ROOT: Final = f"{PREFIX}.requests"
REQUESTS_ALL: Final = f"{REQUESTS_ROOT}.>"

# -- internal: work queues --------------------------------------------------------
WORK_ROOT: Final = f"{PREFIX}.work"
BUILD_WORK_ALL: Final = f"{WORK_ROOT}.build.>"
RELEASE_WORK_ALL: Final = f"{WORK_ROOT}.release.>"

# -- internal: audit and dead letters ---------------------------------------------
AUDIT_ROOT: Final = f"{PREFIX}.audit"
AUDIT_ALL: Final = f"{AUDIT_ROOT}.>"
DEAD_LETTER_ROOT: Final = f"{PREFIX}.deadletter"
DEAD_LETTER_ALL: Final = f"{DEAD_LETTER_ROOT}.>"
MAX_DELIVERIES_ADVISORY: Final = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.>"

# -- reply inboxes --------------------------------------------------------------------
# A connection with a NATS user gets its replies (PubAcks, KV reads, pulled messages) on
# an inbox of its own, `_INBOX_<user>.…`, so NATS permissions can keep every other user
# from subscribing to them (docs/nats-permissions.md). Anonymous connections use `_INBOX`.
INBOX_ROOT: Final = "_INBOX"

# -- streams ------------------------------------------------------------------------
STREAM_EVENTS: Final = "SHAMAN_EVENTS"
STREAM_REQUESTS: Final = "SHAMAN_REQUESTS"
STREAM_BUILD_WORK: Final = "SHAMAN_BUILD_WORK"
STREAM_RELEASE_WORK: Final = "SHAMAN_RELEASE_WORK"
STREAM_AUDIT: Final = "SHAMAN_AUDIT"
STREAM_DEAD_LETTER: Final = "SHAMAN_DEAD_LETTER"

# -- durable consumers (stable names, never derived from function names) --------------
CONSUMER_BUILDERS: Final = "builders"
CONSUMER_SCHEDULER: Final = "scheduler"
CONSUMER_API_REQUESTS: Final = "api-requests"

# -- key-value buckets and object store ------------------------------------------------
KV_APPS: Final = "shaman_apps"
KV_RELEASES: Final = "shaman_releases"
KV_DEPLOYS: Final = "shaman_deploys"
KV_IDEMPOTENCY: Final = "shaman_idempotency"
KV_TOKENS: Final = "shaman_tokens"
KV_WATCHER: Final = "shaman_watcher"
OBJECT_STORE_BUILD_LOGS: Final = "shaman_build_logs"
OBJECT_STORE_SOURCES: Final = "shaman_sources"

_TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")


def _token(value: str, what: str) -> str:
    """A single subject token: no dots, spaces or wildcards, so one app can
    never publish into another app's subjects."""
    if not _TOKEN.match(value):
        raise ValueError(f"{what} {value!r} cannot be used in a NATS subject")
    return value


def event_subject(app: str, event_type: str) -> str:
    """shaman.events.<app>.<type>, the public timeline subject of one event."""
    parts = event_type.split(".")
    for part in parts:
        _token(part, "event type")
    return f"{EVENTS_ROOT}.{_token(app, 'app name')}.{event_type}"


def app_events_filter(app: str | None = None, event_type: str | None = None) -> str:
    """A subscription filter for the timeline: all apps, one app, one type."""
    app_part = "*" if app is None else _token(app, "app name")
    if event_type is None:
        return f"{EVENTS_ROOT}.{app_part}.>"
    for part in event_type.split("."):
        _token(part, "event type")
    return f"{EVENTS_ROOT}.{app_part}.{event_type}"


def deploy_request_subject(app: str) -> str:
    """Where any NATS client publishes a deploy request for an app."""
    return f"{REQUESTS_ROOT}.{_token(app, 'app name')}.deploy"


def build_work_subject(app: str) -> str:
    return f"{WORK_ROOT}.build.{_token(app, 'app name')}"


def release_work_subject(app: str) -> str:
    return f"{WORK_ROOT}.release.{_token(app, 'app name')}"


def audit_subject(action: str) -> str:
    return f"{AUDIT_ROOT}.{_token(action.replace('.', '_'), 'audit action')}"


def dead_letter_subject(stream: str, consumer: str) -> str:
    return f"{DEAD_LETTER_ROOT}.{_token(stream, 'stream')}.{_token(consumer, 'consumer')}"


def kv_key(*parts: str) -> str:
    """A KV key from tokens (apps, versions, ids), joined with dots."""
    return ".".join(_token(p, "key part") for p in parts)


def inbox_prefix(user: str | None) -> str:
    """The reply-inbox prefix of a NATS user (no trailing dot): `_INBOX_<user>`."""
    if not user:
        return INBOX_ROOT
    return f"{INBOX_ROOT}_{_token(user, 'NATS user')}"
