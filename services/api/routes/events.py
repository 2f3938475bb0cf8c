"""GET /v1/events: the timeline as Server-Sent Events, resumable with Last-Event-ID.

`id:` is the event's JetStream sequence in SHAMAN_EVENTS; `data:` is the event's JSON
exactly as published (one object with `type`, `app`, `deploy_id`, `time`, ...). A
comment line is sent every `sse_keepalive_s` so proxies keep the connection open.
Without Last-Event-ID (or `?since=`) the stream starts with new events.

Comments mark the stream's phases: `: connected` once the client is attached to the
live follower (an event published after the client read it is delivered), then the
replayed history if any, then `: replay-complete` (at once when nothing is replayed);
every event after it is live. A client printing history (`shaman events` without -f)
stops there.
"""

from __future__ import annotations

import nats.errors
from aiohttp import web

from services.api.http_errors import field_error
from services.api.routing import Call, RouteSpec
from services.api.sse import SseClient, sse_frame
from services.api.stream_tail import read_range
from shared.bus.connection import UNAVAILABLE
from shared.errors import BackendUnavailable, NotFoundError
from shared.logging import get_logger
from shared.records import APP_NAME_RE
from shared.subjects import STREAM_EVENTS, app_events_filter

log = get_logger(__name__)

REPLAY_BATCH = 500
CONNECTED = b"retry: 2000\n: connected\n\n"
# A comment, so every SSE client that does not look for it ignores it.
REPLAY_COMPLETE = b": replay-complete\n\n"
_TYPE_PART_OK = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


def _resume_from(call: Call) -> int | None:
    for loc, raw in (("Last-Event-ID", call.request.headers.get("Last-Event-ID")),
                     ("since", call.request.query.get("since"))):
        if raw is None or raw == "":
            continue
        if not raw.isdigit():
            raise field_error(loc, "must be an event id (a non-negative integer)")
        return int(raw)
    return None


async def events(call: Call) -> web.StreamResponse:
    query = call.request.query
    app = query.get("app") or None
    event_type = query.get("type") or None
    if app is not None:
        if not APP_NAME_RE.match(app):
            raise field_error("app", "must be an app name")
        call.app = app
        entry = await call.ctx.apps.get(app)
        if entry is None or not call.principal.covers(entry.value.spec.team):
            raise NotFoundError(f"app {app} does not exist")
    if event_type is not None and (
        len(event_type) > 64 or not all(p and set(p) <= _TYPE_PART_OK
                                        for p in event_type.split("."))
    ):
        raise field_error("type", "must be an event type like rollout.healthy")
    after = _resume_from(call)
    filter_subject = app_events_filter(app, event_type)

    hub = call.ctx.hub
    transport = call.request.transport
    if transport is None:
        raise ConnectionResetError("the client went away")
    # Attached in buffering mode before the answer starts: the follower may deliver at
    # once, and nothing may reach the socket before the headers. A NATS failure here is
    # still a clean 503.
    client = SseClient(transport=transport,  # type: ignore[arg-type]
                       teams=None if call.principal.all_teams else call.principal.teams,
                       buffer=[])
    live_from = await hub.attach(filter_subject, client)
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream",
        "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",
        "X-Request-Id": call.request_id,
    })
    try:
        await response.prepare(call.request)
        # Only now, after attach(): whatever is published once a client has seen
        # `: connected` reaches it (buffered until go_live).
        await response.write(CONNECTED)
        last = live_from
        if after is not None:
            last = await _replay(call, response, client, filter_subject, after, live_from)
        # Everything up to here was history; what follows is live. Written before
        # go_live so it precedes every buffered live event on the socket.
        await response.write(REPLAY_COMPLETE)
        hub.go_live(client, last)
        await client.closed.wait()
    except (ConnectionError, BackendUnavailable, nats.errors.Error, *UNAVAILABLE) as exc:
        # The answer has started: a failure can only end the stream; the client
        # reconnects with Last-Event-ID.
        log.info("sse stream ended", error=repr(exc))
    finally:
        await hub.detach(filter_subject, client)
    return response


async def _replay(call: Call, response: web.StreamResponse, client: SseClient,
                  filter_subject: str, after: int, live_from: int) -> int:
    """Write history above `after` up to where the live follower took over; the last seq."""
    last = after
    while last < live_from:
        batch = await read_range(call.ctx.bus, STREAM_EVENTS, filter_subject, last,
                                 limit=REPLAY_BATCH, until_seq=live_from)
        if not batch:
            break
        for seq, subject, data in batch:
            if client.teams is None or (await call.ctx.teams.team_of(
                    subject.split(".", 3)[2])) in client.teams:
                await response.write(sse_frame(seq, data))
            last = seq
        if len(batch) < REPLAY_BATCH:
            break
    return max(last, live_from)


ROUTES = [
    RouteSpec(
        "GET", "/v1/events", events,
        "The timeline as Server-Sent Events; Last-Event-ID (or ?since=) resumes",
        responses={200: None}, tag="events", stream=True,
        query=(("app", "string", "only this app's events"),
               ("type", "string", "only this event type, e.g. rollout.healthy"),
               ("since", "integer", "resume after this event id (like Last-Event-ID)")),
        headers=(("Last-Event-ID", "resume after this event id"),),
    ),
]
