"""The service chassis the four services share: health/metrics HTTP and the `__main__` loop.

`run_service()` is each console script's body:

```
def main() -> int:
    return run_service("watcher", create_app, WatcherSettings())
```

It configures logging, runs the app's async context manager (`create_app(settings)`,
which enters its resources on an AsyncExitStack), waits for SIGTERM/SIGINT, then leaves
the context so the app stops consuming, finishes in-flight work and drains in its own
`__aexit__`. A second signal while draining gives up waiting (exit code 1).

`serve_health()` / `add_health_routes()` serve `/healthz` (each named check must pass)
and `/metrics` (prometheus_client's default registry, content-negotiated). The api
service mounts the same routes on its own application with `add_health_routes()`.

This module opens nothing at import time and knows nothing of NATS, Nomad or Vault:
services pass their checks in as callables.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, TypeVar

import prometheus_client
from aiohttp import web
from prometheus_client import exposition

from shared.logging import configure_logging, get_logger

__all__ = [
    "HealthCheck",
    "ServiceSettings",
    "add_health_routes",
    "parse_http_addr",
    "run_service",
    "serve_health",
]

log = get_logger(__name__)

HealthCheck = Callable[[], Awaitable[bool] | bool]

# A check slower than this counts as failed: /healthz must answer quickly for probes.
CHECK_TIMEOUT_S = 2.0


class ServiceSettings(Protocol):
    """What the chassis needs from a settings object (shared.settings.CommonSettings has it)."""

    @property
    def http_addr(self) -> str: ...

    @property
    def log_level(self) -> str: ...

    @property
    def log_format(self) -> str: ...


S = TypeVar("S", bound=ServiceSettings)


def parse_http_addr(addr: str) -> tuple[str, int]:
    """`host:port`, `:port` (all interfaces) or `[v6]:port` → (host, port)."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"http address {addr!r} must look like host:port (e.g. 127.0.0.1:8080)")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


async def _run_check(check: HealthCheck) -> str:
    try:
        result = check()
        if isinstance(result, Awaitable):
            result = await asyncio.wait_for(result, CHECK_TIMEOUT_S)
    except TimeoutError:
        return "timeout"
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        # The exception text may name hosts or paths; the type is enough for a probe and
        # the log line has the rest.
        log.warning("health check raised", error=type(exc).__name__, exc_info=exc)
        return "error"
    return "ok" if result else "fail"


def add_health_routes(app: web.Application, checks: Mapping[str, HealthCheck]) -> None:
    """Add GET /healthz and GET /metrics to `app`."""
    checks = dict(checks)

    async def healthz(_request: web.Request) -> web.Response:
        names = list(checks)
        results = await asyncio.gather(*(_run_check(checks[n]) for n in names))
        outcome = dict(zip(names, results, strict=True))
        failed = [n for n, r in outcome.items() if r != "ok"]
        if failed:
            return web.json_response(
                {"status": "fail", "checks": outcome, "failed": failed}, status=503
            )
        return web.json_response({"status": "ok", "checks": outcome})

    async def metrics(request: web.Request) -> web.Response:
        encoder, content_type = exposition.choose_encoder(request.headers.get("Accept", ""))
        body = encoder(prometheus_client.REGISTRY)
        return web.Response(body=body, headers={"Content-Type": content_type})

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)


async def serve_health(
    settings_http_addr: str,
    checks: Mapping[str, HealthCheck],
    extra_routes: Iterable[web.AbstractRouteDef] | None = None,
) -> web.AppRunner:
    """Serve /healthz and /metrics (plus `extra_routes`) on `host:port`; return the runner.

    The caller owns the runner: `await runner.cleanup()` on shutdown (push it on the
    exit stack). With port 0 the OS picks one; read it from `runner.addresses`.
    """
    host, port = parse_http_addr(settings_http_addr)
    app = web.Application()
    add_health_routes(app, checks)
    if extra_routes:
        app.router.add_routes(list(extra_routes))
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    log.info("health endpoint listening", addr=f"{host}:{port}", checks=sorted(checks))
    return runner


def _install_uvloop(settings: object) -> bool:
    # Opt-in: SHAMAN_UVLOOP=1 via the settings object (field `uvloop`), and only if installed.
    if not getattr(settings, "uvloop", False):
        return False
    try:
        import uvloop  # type: ignore[import-not-found]
    except ImportError:
        log.warning("uvloop requested but not installed; using asyncio's loop")
        return False
    uvloop.install()
    return True


async def _serve(
    name: str,
    create_app: Callable[[S], AbstractAsyncContextManager[Any]],
    settings: S,
    shutdown_timeout_s: float | None,
) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    main_task = asyncio.current_task()
    received: list[str] = []

    def on_signal(sig: signal.Signals) -> None:
        received.append(sig.name)
        if not stop.is_set():
            stop.set()
        elif main_task is not None:
            # Second signal: the operator does not want to wait for the drain.
            log.warning(
                "second signal while stopping: giving up on graceful drain", signal=sig.name
            )
            main_task.cancel()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    started = time.monotonic()
    try:
        try:
            app_cm = create_app(settings)
            await app_cm.__aenter__()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("service failed to start", service=name)
            return 1
        log.info("service started", service=name, startup_s=round(time.monotonic() - started, 3))
        try:
            await stop.wait()
        finally:
            log.info("service stopping", service=name, signal=received[0] if received else None)
            stopping = time.monotonic()
            exit_cm = app_cm.__aexit__(None, None, None)
            if shutdown_timeout_s is not None:
                await asyncio.wait_for(exit_cm, shutdown_timeout_s)
            else:
                await exit_cm
            log.info("service stopped", service=name, drain_s=round(time.monotonic() - stopping, 3))
        return 0
    except asyncio.CancelledError:
        log.error("service stopped without draining", service=name)
        return 1
    except TimeoutError:
        log.error("service drain timed out", service=name, timeout_s=shutdown_timeout_s)
        return 1
    except Exception:
        log.exception("service failed while stopping", service=name)
        return 1
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)


def run_service(
    name: str,
    create_app: Callable[[S], AbstractAsyncContextManager[Any]],
    settings: S,
    *,
    shutdown_timeout_s: float | None = None,
) -> int:
    """Run one service until SIGTERM/SIGINT and return its exit code (0 after a clean drain).

    `create_app(settings)` returns an async context manager: entering it starts the
    service (connections, consumers, the health endpoint); leaving it stops consuming,
    finishes in-flight work and drains. A failure to start returns 1 after logging why.
    """
    configure_logging(settings.log_level, settings.log_format, name)
    _install_uvloop(settings)
    return asyncio.run(_serve(name, create_app, settings, shutdown_timeout_s))
