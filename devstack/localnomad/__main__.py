"""`shaman-localnomad`: run the Nomad stand-in until interrupted.

Parses the command line, builds the app (app.py), binds the address, prints one
ready line, and serves. Shutdown on SIGINT/SIGTERM leaves podman containers
running so a restart with the same --data-dir re-adopts them.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import sys
from pathlib import Path

from aiohttp import web

from .app import Settings, create_app


def parse_args(argv: list[str] | None = None) -> Settings:
    p = argparse.ArgumentParser(prog="shaman-localnomad",
                                description="A single-node stand-in for Nomad's HTTP API.")
    p.add_argument("--addr", default="127.0.0.1:4646", help="HOST:PORT to listen on")
    p.add_argument("--runtime", choices=("simulated", "podman"), default="simulated")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="persist state here (default: a temporary directory, not kept)")
    p.add_argument("--vault-addr", default=None, help="Vault/OpenBao address for templates")
    p.add_argument("--vault-token", default=None, help="token for --vault-addr")
    p.add_argument("--podman-root", type=Path, default=None,
                   help="containers storage base for the podman runtime")
    p.add_argument("--registry-insecure", action="append", default=[],
                   help="extra registry host:port to pull from over plain HTTP")
    p.add_argument("--heartbeat-s", type=float, default=30.0,
                   help="event stream heartbeat interval in seconds (Nomad: 30)")
    p.add_argument("--event-buffer-size", type=int, default=100)
    p.add_argument("--max-body-mb", type=float, default=16.0)
    p.add_argument("--no-control", action="store_true",
                   help="disable the test-only /_localnomad/ routes")
    p.add_argument("--log-level", default="WARNING")
    a = p.parse_args(argv)
    host, _, port = a.addr.rpartition(":")
    logging.basicConfig(level=a.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    return Settings(host=host or "127.0.0.1", port=int(port), runtime=a.runtime,
                    data_dir=a.data_dir, vault_addr=a.vault_addr, vault_token=a.vault_token,
                    podman_root=a.podman_root, registry_insecure=tuple(a.registry_insecure),
                    heartbeat_s=a.heartbeat_s, event_buffer_size=a.event_buffer_size,
                    max_body_bytes=int(a.max_body_mb * 1024 * 1024),
                    control=not a.no_control)


async def serve(settings: Settings) -> None:
    app = create_app(settings)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port, reuse_address=True)
    await site.start()
    # Objects alive now (imports, the app) never become garbage: keep them out of the
    # collector's full passes, which otherwise grow with them and stall the loop.
    gc.freeze()
    print(f"localnomad ready addr=http://{settings.host}:{settings.port} "
          f"runtime={settings.runtime}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    settings = parse_args(argv)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
