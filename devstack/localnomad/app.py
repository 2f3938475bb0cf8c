"""Assembling localnomad: settings, runtime, server, HTTP app, persistence, shutdown.

`create_app(settings)` builds everything on an AsyncExitStack-like cleanup list so
that shutdown undoes exactly what started; `__main__` parses arguments and runs it.
Nothing here knows Nomad semantics.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from . import persistence
from .control import add_control_routes
from .faults import fault_injection
from .http_api import HEARTBEAT_KEY, SERVER_KEY, add_routes, nomad_errors
from .runtime import Runtime
from .server import Server, ServerSettings


@dataclass
class Settings:
    host: str = "127.0.0.1"
    port: int = 4646
    runtime: str = "simulated"  # simulated | podman
    data_dir: Path | None = None  # None: a temporary directory, nothing persisted
    vault_addr: str | None = None
    vault_token: str | None = None
    podman_root: Path | None = None
    registry_insecure: tuple[str, ...] = ()
    heartbeat_s: float = 30.0
    event_buffer_size: int = 100
    max_body_bytes: int = 16 * 1024 * 1024
    control: bool = True


def make_runtime(settings: Settings, data_dir: Path) -> Runtime:
    if settings.runtime == "simulated":
        from .runtime_simulated import SimulatedRuntime

        return SimulatedRuntime()
    if settings.runtime == "podman":
        from .runtime_podman import PodmanRuntime

        return PodmanRuntime(settings.podman_root or data_dir / "podman",
                             insecure_registries=settings.registry_insecure)
    raise ValueError(f"unknown runtime {settings.runtime!r}")


SNAPSHOT_KEY: web.AppKey[persistence.Snapshotter | None] = web.AppKey("snapshotter")


def create_app(settings: Settings) -> web.Application:
    persistent = settings.data_dir is not None
    if settings.data_dir is None:
        data_dir = Path(tempfile.mkdtemp(prefix="localnomad-"))
    else:
        data_dir = settings.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    # Fault injection is part of the control surface: without it, no middleware either.
    middlewares = [fault_injection, nomad_errors] if settings.control else [nomad_errors]
    app = web.Application(middlewares=middlewares, client_max_size=settings.max_body_bytes)
    app[HEARTBEAT_KEY] = settings.heartbeat_s
    add_routes(app)
    if settings.control:
        add_control_routes(app)

    async def lifecycle(app: web.Application):  # type: ignore[no-untyped-def]
        runtime = make_runtime(settings, data_dir)
        server_settings = ServerSettings(
            data_dir=data_dir, event_buffer_size=settings.event_buffer_size,
            vault_addr=settings.vault_addr, vault_token=settings.vault_token)
        server = Server(server_settings, runtime)
        restored = False
        if persistent:
            node_id = persistence.load(data_dir, server.state)
            if node_id:
                server.node_id = node_id
                restored = True
        app[SERVER_KEY] = server
        snapshotter = None
        if persistent:
            snapshotter = persistence.Snapshotter(data_dir, server.state, server.node_id)
            snapshotter.start()
        app[SNAPSHOT_KEY] = snapshotter
        server.start(restored=restored)
        yield
        await server.close()
        if snapshotter is not None:
            await snapshotter.close()
        await runtime.close()

    app.cleanup_ctx.append(lifecycle)
    return app
