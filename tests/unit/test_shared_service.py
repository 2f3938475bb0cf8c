"""shared.service: /healthz and /metrics, and run_service's signal-to-drain lifecycle."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import textwrap

import aiohttp
import prometheus_client
import pytest

import shared.service
from devstack.ports import free_port
from shared.service import parse_http_addr, serve_health

_REQUESTS = prometheus_client.Counter(
    "shaman_test_service_requests", "A counter only these tests register"
)


def test_parse_http_addr() -> None:
    assert parse_http_addr("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert parse_http_addr(":9000") == ("0.0.0.0", 9000)
    assert parse_http_addr("[::1]:81") == ("::1", 81)
    with pytest.raises(ValueError, match="host:port"):
        parse_http_addr("localhost")


async def test_healthz_ok_and_failing_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shared.service, "CHECK_TIMEOUT_S", 0.2)
    nats_ok = True

    async def slow() -> bool:
        await asyncio.Event().wait()
        return True

    def broken() -> bool:
        raise RuntimeError("secret-ish detail that must not be served")

    runner = await serve_health("127.0.0.1:0", {"nats": lambda: nats_ok, "loop": lambda: True})
    runner_bad = await serve_health("127.0.0.1:0", {"slow": slow, "broken": broken})
    try:
        port = runner.addresses[0][1]
        bad_port = runner_bad.addresses[0][1]
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                assert resp.status == 200
                assert await resp.json() == {"status": "ok", "checks": {"nats": "ok", "loop": "ok"}}
            nats_ok = False
            async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                assert resp.status == 503
                body = await resp.json()
                assert body["failed"] == ["nats"]
                assert body["checks"] == {"nats": "fail", "loop": "ok"}
            async with http.get(f"http://127.0.0.1:{bad_port}/healthz") as resp:
                assert resp.status == 503
                text = await resp.text()
                assert json.loads(text)["checks"] == {"slow": "timeout", "broken": "error"}
                assert "secret-ish" not in text
    finally:
        await runner.cleanup()
        await runner_bad.cleanup()


async def test_metrics_exposition_and_extra_routes() -> None:
    from aiohttp import web

    async def hello(_request: web.Request) -> web.Response:
        return web.Response(text="hi")

    _REQUESTS.inc()
    runner = await serve_health("127.0.0.1:0", {}, extra_routes=[web.get("/hello", hello)])
    try:
        port = runner.addresses[0][1]
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"].startswith("text/plain")
                assert "shaman_test_service_requests_total" in await resp.text()
            headers = {"Accept": "application/openmetrics-text; version=1.0.0"}
            async with http.get(f"http://127.0.0.1:{port}/metrics", headers=headers) as resp:
                assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
            async with http.get(f"http://127.0.0.1:{port}/hello") as resp:
                assert await resp.text() == "hi"
            async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                assert await resp.json() == {"status": "ok", "checks": {}}
    finally:
        await runner.cleanup()


_SERVICE_SCRIPT = textwrap.dedent(
    """
    import asyncio, contextlib, sys
    from dataclasses import dataclass
    from shared.service import run_service, serve_health

    @dataclass
    class Settings:
        http_addr: str
        log_level: str = "info"
        log_format: str = "json"

    @contextlib.asynccontextmanager
    async def create_app(settings):
        if sys.argv[2] == "fail":
            raise RuntimeError("cannot reach nats")
        runner = await serve_health(settings.http_addr, {"up": lambda: True})
        print("ready", flush=True)
        try:
            yield runner
        finally:
            await asyncio.sleep(0.05)  # in-flight work finishing
            await runner.cleanup()
            print("drained", flush=True)

    raise SystemExit(run_service("demo", create_app, Settings(http_addr=sys.argv[1])))
    """
)


async def _start(mode: str, port: int) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _SERVICE_SCRIPT,
        f"127.0.0.1:{port}",
        mode,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def test_run_service_drains_on_sigterm_and_exits_zero() -> None:
    port = free_port()
    proc = await _start("ok", port)
    assert proc.stdout is not None and proc.stderr is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        assert line.strip() == b"ready"
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/healthz") as resp,
        ):
            assert resp.status == 200
        proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0
    assert out.strip() == b"drained"
    events = [json.loads(x)["event"] for x in err.decode().splitlines() if x.startswith("{")]
    assert "service started" in events
    assert events.index("service stopping") < events.index("service stopped")


async def test_run_service_exits_one_when_startup_fails() -> None:
    proc = await _start("fail", free_port())
    _out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 1
    lines = [json.loads(x) for x in err.decode().splitlines() if x.startswith("{")]
    failed = [x for x in lines if x["event"] == "service failed to start"]
    assert failed and "cannot reach nats" in failed[0]["exception"]
    assert failed[0]["service"] == "demo"
