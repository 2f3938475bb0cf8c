"""shared.nomad.event_stream: NDJSON splitting, heartbeats, envelopes, disconnects, reconnects.

The splitting tests are pure; the stream tests serve NDJSON from an in-process aiohttp
server on a free port, so the real client code (timeouts, status handling, iter_any) runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable

import pytest
from aiohttp import web

from shared.errors import BackendUnavailable, PermanentError, TemporaryError
from shared.nomad.event_stream import (
    Envelope,
    NomadEventStream,
    iter_lines,
    reconnecting_envelopes,
)


async def _chunks(parts: Iterable[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def _collect(parts: Iterable[bytes], **kw: int) -> list[bytes]:
    return [line async for line in iter_lines(_chunks(parts), **kw)]


async def test_lines_split_across_and_within_chunks() -> None:
    parts = [b'{"a":', b"1}\n{}\n", b'{"b":2}\n{"c"', b":3}\n"]
    assert await _collect(parts) == [b'{"a":1}', b"{}", b'{"b":2}', b'{"c":3}']


async def test_a_line_larger_than_one_mib_split_over_many_chunks() -> None:
    payload = {
        "Index": 7,
        "Events": [
            {
                "Topic": "Job",
                "Type": "JobRegistered",
                "Key": "web",
                "Payload": {"Job": {"Blob": "x" * (3 * 1024 * 1024)}},
            }
        ],
    }
    big = json.dumps(payload).encode()
    assert len(big) > 1024 * 1024
    data = b"{}\n" + big + b"\n{}\n"
    parts = [data[i : i + 65536] for i in range(0, len(data), 65536)]
    lines = await _collect(parts)
    assert lines == [b"{}", big, b"{}"]


async def test_crlf_empty_lines_and_a_partial_tail() -> None:
    lines = await _collect([b"one\r\n\n\ntwo\n", b"incomplete-no-newline"])
    assert lines == [b"one", b"two"]


async def test_a_line_over_the_cap_is_refused() -> None:
    with pytest.raises(PermanentError, match="exceeds 10 bytes"):
        await _collect([b"0123456789", b"abcdef"], max_line_bytes=10)


# -- the stream against an in-process HTTP server -------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@contextlib.asynccontextmanager
async def _server(handler: Handler) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/v1/event/stream", handler)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


def _envelope(index: int, key: str = "web") -> bytes:
    env = {
        "Index": index,
        "Events": [
            {
                "Topic": "Deployment",
                "Type": "PlanResult",
                "Key": f"dep-{index}",
                "Namespace": "default",
                "FilterKeys": [key],
                "Index": index,
                "Payload": {
                    "Deployment": {"ID": f"dep-{index}", "JobID": key, "Status": "running"}
                },
            }
        ],
    }
    return json.dumps(env).encode() + b"\n"


async def test_envelopes_heartbeats_and_request_shape() -> None:
    seen: list[web.Request] = []
    release = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append(request)
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(b"{}\n")
        env = _envelope(11)
        await resp.write(env[:20])  # one envelope split across writes
        await resp.write(env[20:] + b"{}\n" + _envelope(12))
        await release.wait()
        return resp

    beats: list[int] = []
    async with _server(handler) as addr:
        stream = NomadEventStream(
            addr,
            token="tok-123",
            namespace="apps",
            topics=["Deployment:web", "Allocation:web"],
            on_heartbeat=lambda: beats.append(1),
        )
        got: list[Envelope] = []
        async with contextlib.aclosing(stream.envelopes(index=10)) as envelopes:
            async for env in envelopes:
                got.append(env)
                if len(got) == 2:
                    break
        release.set()

    assert [e.Index for e in got] == [11, 12]
    event = got[0].Events[0]
    assert (event.Topic, event.Type, event.Key, event.FilterKeys) == (
        "Deployment",
        "PlanResult",
        "dep-11",
        ["web"],
    )
    assert event.object == {"ID": "dep-11", "JobID": "web", "Status": "running"}
    assert event.dedupe_key == (11, "Deployment", "dep-11", "PlanResult")
    assert stream.heartbeats == 2 and len(beats) == 2
    request = seen[0]
    assert request.query.getall("topic") == ["Deployment:web", "Allocation:web"]
    assert request.query["index"] == "10"
    assert request.query["namespace"] == "apps"
    assert request.headers["X-Nomad-Token"] == "tok-123"


async def test_server_closing_the_stream_raises_temporary_error() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(b"{}\n" + _envelope(5))
        return resp  # the handler returning ends the chunked body

    async with _server(handler) as addr:
        stream = NomadEventStream(addr)
        got = []
        with pytest.raises(TemporaryError, match="ended"):
            async for env in stream.envelopes(0):
                got.append(env.Index)
    assert got == [5]


async def test_immediate_eof_without_any_line_is_an_error() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        return resp

    async with _server(handler) as addr:
        with pytest.raises(TemporaryError, match="before its first heartbeat"):
            async for _ in NomadEventStream(addr).envelopes(0):
                pass


async def test_a_silent_connection_times_out() -> None:
    release = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(b"{}\n")
        await release.wait()
        return resp

    async with _server(handler) as addr:
        stream = NomadEventStream(addr, sock_read_s=0.3)
        with pytest.raises(TemporaryError, match="silent"):
            async for _ in stream.envelopes(0):
                pass
        release.set()


async def test_forbidden_and_bad_requests_are_permanent() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        if request.query.get("topic") == "Bad:a:b":
            return web.Response(status=400, text="Invalid topic query: Bad:a:b")
        return web.Response(status=403, text="Permission denied")

    async with _server(handler) as addr:
        with pytest.raises(PermanentError, match="permission denied"):
            async for _ in NomadEventStream(addr, topics=["Job:web"]).envelopes(0):
                pass
        with pytest.raises(PermanentError, match="Invalid topic"):
            async for _ in NomadEventStream(addr, topics=["Bad:a:b"]).envelopes(0):
                pass


async def test_server_errors_are_temporary_and_an_error_line_too() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        if request.query["index"] == "1":
            return web.Response(status=500, text="No cluster leader")
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(
            b'{}\n{"Error":"subscription closed by server, client should resubscribe"}\n'
        )
        return resp

    async with _server(handler) as addr:
        with pytest.raises(TemporaryError, match="No cluster leader"):
            async for _ in NomadEventStream(addr).envelopes(1):
                pass
        with pytest.raises(TemporaryError, match="should resubscribe"):
            async for _ in NomadEventStream(addr).envelopes(2):
                pass


async def test_connection_refused_is_backend_unavailable() -> None:
    from devstack.ports import free_port

    stream = NomadEventStream(f"http://127.0.0.1:{free_port()}", connect_timeout_s=2)
    with pytest.raises(BackendUnavailable, match="nomad is unavailable"):
        async for _ in stream.envelopes(0):
            pass


async def test_undecodable_lines_are_skipped_and_counted() -> None:
    release = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(b'{}\n{"Index": "not-a-number"}\nnot json\n' + _envelope(3))
        await release.wait()
        return resp

    async with _server(handler) as addr:
        stream = NomadEventStream(addr)
        async with contextlib.aclosing(stream.envelopes(0)) as envelopes:
            first = await anext(envelopes)
        release.set()
    assert first.Index == 3
    assert stream.decode_errors == 2


async def test_reconnecting_resumes_from_the_callers_index_and_reports_each_connect() -> None:
    indexes: list[str] = []
    release = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        indexes.append(request.query["index"])
        n = len(indexes)
        if n == 2:
            return web.Response(status=503, text="server unavailable")
        resp = web.StreamResponse()
        await resp.prepare(request)
        if n == 1:
            await resp.write(b"{}\n" + _envelope(20) + _envelope(21))
            return resp  # disconnect after two envelopes
        await resp.write(b"{}\n" + _envelope(21) + _envelope(22))  # inclusive resume
        await release.wait()
        return resp

    processed = 0
    connects = 0
    disconnects: list[TemporaryError] = []

    def on_connect() -> None:
        nonlocal connects
        connects += 1

    async with _server(handler) as addr:
        stream = NomadEventStream(addr)
        got: list[int] = []
        gen = reconnecting_envelopes(
            stream,
            lambda: processed,
            on_connect=on_connect,
            on_disconnect=disconnects.append,
            initial_backoff_s=0.01,
            max_backoff_s=0.05,
            jitter_s=0.01,
        )
        async with contextlib.aclosing(gen):
            async for env in gen:
                got.append(env.Index)
                processed = env.Index
                if env.Index == 22:
                    break
        release.set()

    assert got == [20, 21, 21, 22]
    assert indexes == ["0", "21", "21"]
    assert connects == 2
    assert len(disconnects) == 2  # the clean end of the first stream, then the 503
    assert "server unavailable" in str(disconnects[1])
