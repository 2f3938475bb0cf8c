"""`shaman events [-f]` (the timeline) and `shaman logs [-f]` (the app's task logs).

`events -f` follows the timeline live (from `--since ID` when given), reconnecting with
`Last-Event-ID` (cli/streams.py). Without `-f` it prints the recorded history (the last
`--limit` events, from `--since`, default the start of the retained timeline) and stops
at the API's `: replay-complete` comment, which ends the replayed history.

`logs` reads `GET /v1/apps/{app}/logs?follow=` (a plain-text streaming body) and copies it
to stdout; with `--json`, one `{"line": ...}` object per line.
"""

from __future__ import annotations

import codecs
import sys
from collections import deque
from collections.abc import AsyncIterator
from typing import Annotated, Any

import typer

from cli.client import ShamanClient, StreamedEvent
from cli.common import AppOption, JsonOption, app_name, connect, run
from cli.errors import ApiError, SettingsError
from cli.output import Output
from cli.settings import resolve_app
from cli.streams import follow_events
from cli.timeline import event_line, failure_details

FollowOption = Annotated[bool, typer.Option("--follow", "-f", help="Keep streaming.")]


def events(
    app: AppOption = None,
    follow: FollowOption = False,
    type_: Annotated[
        str | None,
        typer.Option("--type", metavar="TYPE", help="Only this event type, e.g. rollout.failed."),
    ] = None,
    since: Annotated[
        int | None, typer.Option(help="Start after this event id (the SSE id).")
    ] = None,
    limit: Annotated[
        int, typer.Option(help="Without -f: print at most the last N events (0: all).")
    ] = 100,
    json_output: JsonOption = False,
) -> None:
    """Show an app's timeline (all your apps when no app is known); -f follows it live."""

    async def body(out: Output) -> None:
        try:
            name: str | None = resolve_app(app)
        except SettingsError:
            name = None  # no app anywhere: the timeline of every app the token can see
        types = [type_] if type_ else None
        async with connect() as client:
            if follow:
                start = str(since) if since is not None else None
                async for streamed in follow_events(
                    client, app=name, types=types, last_event_id=start,
                    on_reconnecting=lambda error, delay: out.note(
                        f"stream lost ({error}); reconnecting in {delay:.1f}s"),
                ):
                    _print_event(out, streamed, with_app=name is None)
                return
            kept: deque[StreamedEvent] = deque(maxlen=limit if limit > 0 else None)
            async for streamed in _history(client, name, types, since or 0):
                kept.append(streamed)
            for streamed in kept:
                _print_event(out, streamed, with_app=name is None)

    run(json_output, body)


async def _history(
    client: ShamanClient, app: str | None, types: list[str] | None, since: int
) -> AsyncIterator[StreamedEvent]:
    stream = client.events(app=app, types=types, last_event_id=str(since), until_replayed=True)
    try:
        async for streamed in stream:
            yield streamed
    finally:
        await stream.aclose()


def _print_event(out: Output, streamed: StreamedEvent, with_app: bool) -> None:
    event = streamed.data
    if out.json_mode:
        out.record({"id": streamed.id, "event": event})
        return
    kind = event.get("type")
    if kind == "build.log":
        prefix = f"{event.get('time', '')}" + (f" {event.get('app', '')}" if with_app else "")
        for line in event.get("lines") or []:
            out.text(f"{prefix} build.log: {line}")
        return
    style = "red" if kind in ("build.failed", "rollout.failed", "rollback.failed",
                              "deploy.rejected") else None
    out.text(event_line(event, with_app=with_app), style=style)
    if kind in ("build.failed", "rollout.failed"):
        for line in failure_details(event):
            out.text(line)


async def _prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async for chunk in rest:
        yield chunk


def logs(
    app: AppOption = None,
    follow: FollowOption = False,
    lines: Annotated[
        int | None, typer.Option("--lines", "-n", help="How many recent lines to start with.")
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Show the app's task logs; -f keeps streaming them."""

    async def body(out: Output) -> None:
        name = app_name(app)
        params: dict[str, Any] = {"follow": "true" if follow else "false"}
        if lines is not None:
            params["lines"] = str(lines)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pending = ""
        async with connect() as client:
            # The app first: a 404 from the logs route then means the route, not the app.
            await client.request("GET", f"/v1/apps/{name}")
            stream = client.text_stream(
                f"/v1/apps/{name}/logs", params, read_timeout_s=None if follow else 60.0
            )
            try:
                try:
                    first = await anext(stream)
                except StopAsyncIteration:
                    return
                except ApiError as error:
                    if error.status in (404, 405):
                        raise ApiError(error.status, "logs_unsupported",
                                       f"the Shaman API at {client.api_url} has no "
                                       "GET /v1/apps/{app}/logs (an older API)") from None
                    raise
                async for chunk in _prepend(first, stream):
                    if not out.json_mode:
                        sys.stdout.write(decoder.decode(chunk))
                        sys.stdout.flush()
                        continue
                    pending += decoder.decode(chunk)
                    *complete, pending = pending.split("\n")
                    for line in complete:
                        out.record({"line": line})
            finally:
                await stream.aclose()
        tail = decoder.decode(b"", final=True)
        if out.json_mode and (pending + tail):
            out.record({"line": pending + tail})
        elif tail:
            sys.stdout.write(tail)

    run(json_output, body)
