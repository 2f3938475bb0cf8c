"""Following the timeline across dropped connections, as a browser's EventSource does.

`follow_events` keeps one SSE connection to `GET /v1/events` open and, when it drops or
the server ends it, reconnects with `Last-Event-ID` set to the last id it handed out, so
the API resumes right after it: nothing missed, nothing repeated (ids are stream
sequences; any id at or below the last one is dropped, in case a server replays).
Reconnects back off (capped exponential with jitter), and the backoff starts over once a
connection delivered something. After `give_up_after_s` of
failing to reconnect it raises the last error; an error answer that retrying cannot fix
(401, 403, 404, 4xx) is raised at once.

Why not tenacity here, as for single requests: a stream's backoff must reset after every
healthy stretch, which is EventSource's own reconnect loop, a few lines, not a retry policy.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable

from cli.client import ShamanClient, StreamedEvent
from cli.errors import ApiError, ApiUnreachable

INITIAL_DELAY_S = 0.5
MAX_DELAY_S = 10.0


def _numeric(event_id: str | None) -> int | None:
    if event_id is None:
        return None
    try:
        return int(event_id)
    except ValueError:
        return None


def _reconnectable(error: Exception) -> bool:
    if isinstance(error, ApiError):
        return error.status in (502, 503, 504)
    return isinstance(error, ApiUnreachable)


async def follow_events(
    client: ShamanClient,
    *,
    app: str | None,
    types: list[str] | None = None,
    last_event_id: str | None = None,
    connected: asyncio.Event | None = None,
    give_up_after_s: float = 120.0,
    on_reconnecting: Callable[[Exception, float], None] | None = None,
) -> AsyncIterator[StreamedEvent]:
    """Timeline events for `app` (all apps when None), live, until the caller stops."""
    last_id = last_event_id
    failures = 0
    failing_since: float | None = None
    while True:
        delivered = False
        try:
            async for event in client.events(
                app=app, types=types, last_event_id=last_id, connected=connected
            ):
                number, last_number = _numeric(event.id), _numeric(last_id)
                if number is not None and last_number is not None and number <= last_number:
                    continue
                if event.id is not None:
                    last_id = event.id
                delivered = True
                failures, failing_since = 0, None
                yield event
            error: Exception | None = None
        except (ApiError, ApiUnreachable) as failure:
            if not _reconnectable(failure):
                raise
            error = failure
        if delivered:
            failures, failing_since = 0, None
        now = time.monotonic()
        failing_since = failing_since if failing_since is not None else now
        if error is not None and now - failing_since >= give_up_after_s:
            raise error
        delay = min(MAX_DELAY_S, INITIAL_DELAY_S * 2**failures) * random.uniform(0.5, 1.0)
        failures += 1
        if on_reconnecting is not None and error is not None:
            on_reconnecting(error, delay)
        await asyncio.sleep(delay)
