"""Builder benchmark: builds per minute with 1 and 2 builder copies, and a cached rebuild.

    python -m bench.builder_bench [--builds 10]

Starts its own nats-server and registry (devstack components, temp directories, free
ports), seeds the offline busybox base, then:
1. queues N small git builds (N apps, each a distinct commit: COPY + RUN re-run, base
   image already in each builder's storage) and starts 1 builder: builds/minute = N over
   the time from the builder's start to the last image recorded;
2. the same with 2 builder copies (fresh storages, N other apps), and the ratio;
3. examples/hello (or an equivalent app when absent) built once, then again from the
   same commit: the second build's total time (fetch, bud, push) and its `buildah bud` time.
Prints one JSON object. The machine is shared: compare the ratio, not absolute times.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from devstack.components.nats import NatsServer
from devstack.components.registry import Registry
from devstack.podman import ContainerStorage
from devstack.ports import free_port
from devstack.seed import busybox_ref, ensure_busybox
from services.builder.app import create_app
from shared.bus import connect_bus, provision
from shared.events import BuildSucceeded
from shared.settings import BuilderSettings
from tests.integration.builder.helpers import (
    HELLO_CONTAINERFILE,
    Platform,
    Timeline,
    git_source,
    make_git_repo,
    wait_for,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
_BUD_TIME = re.compile(r"^built \S+ in ([0-9.]+)s$")


def settings(nats_url: str, registry: str, storage: Path, name: str) -> BuilderSettings:
    return BuilderSettings(  # type: ignore[call-arg]
        nats_url=nats_url, registry=registry, builder_storage=str(storage),
        http_addr="127.0.0.1:0", instance_id=name, retention_interval_s=0,
        vault_token=None, log_level="warning", ack_wait_s=30.0,
    )


def warm(storage: Path, registry: str) -> None:
    """Pull the base image into a builder's storage, so runs time builds, not the first pull."""
    buildah = ContainerStorage(storage).prepare()
    subprocess.run(buildah.buildah("pull", "--tls-verify=false", "-q", busybox_ref(registry)),
                   env=buildah.env(), check=True, capture_output=True)


async def queued_builds(
    platform: Platform, nats_url: str, registry: str, work: Path, copies: int, count: int
) -> float:
    """Seconds for `copies` builders to finish `count` builds queued before they start."""
    deploys = []
    for n in range(count):
        app = f"bench-{copies}c-{n}"
        url, _ = make_git_repo(work / app, {
            "Containerfile": HELLO_CONTAINERFILE, "index.html": f"{app}\n",
        })
        await platform.create_app(app)
        deploys.append(await platform.deploy(app, git_source(url, "main")))
    storages = [work / f"storage-{copies}-{i}" for i in range(copies)]
    for storage in storages:
        warm(storage, registry)
    started = time.monotonic()
    async with AsyncExitStack() as stack:
        for i, storage in enumerate(storages):
            await stack.enter_async_context(
                create_app(settings(nats_url, registry, storage, f"bench-{copies}-{i}")))
        for deploy_id in deploys:
            await platform.wait_image(deploy_id, timeout=600)
        elapsed = time.monotonic() - started
    for storage in storages:
        shutil.rmtree(storage, ignore_errors=True)
    return elapsed


def remove_working_containers(work: Path) -> None:
    for storage in work.glob("storage-*"):
        buildah = ContainerStorage(storage)
        subprocess.run(buildah.buildah("rm", "--all"), env=buildah.env(), capture_output=True,
                       check=False)


def hello_files() -> dict[str, str]:
    hello = REPO_ROOT / "examples" / "hello"
    if (hello / "Containerfile").exists():
        return {p.name: p.read_text() for p in hello.iterdir() if p.is_file()}
    return {"Containerfile": HELLO_CONTAINERFILE, "index.html": "hello\n"}


async def cached_rebuild(
    platform: Platform, nats_url: str, registry: str, work: Path
) -> dict[str, Any]:
    app = "bench-hello"
    url, _ = make_git_repo(work / app, hello_files())
    await platform.create_app(app)
    storage = work / "storage-hello"
    warm(storage, registry)
    async with (
        Timeline(platform.bus, app) as timeline,
        create_app(settings(nats_url, registry, storage, "bench-hello")),
    ):
        first = await platform.deploy(app, git_source(url, "main"))
        await platform.wait_image(first)
        second = await platform.deploy(app, git_source(url, "main"))
        await platform.wait_image(second)
        events = await wait_for(
            lambda: len(timeline.of(BuildSucceeded)) == 2 and timeline.of(BuildSucceeded), 30)
    by_id = {e.deploy_id: e for e in events}
    log = await platform.build_log(app, second)
    bud = [float(m.group(1)) for line in log.splitlines() if (m := _BUD_TIME.match(line))]
    return {
        "first_build_s": by_id[first].duration_s,
        "cached_rebuild_s": by_id[second].duration_s,
        "cached_rebuild_bud_s": bud[0] if bud else None,
        "cached": by_id[second].cached,
        "example": "examples/hello" if (REPO_ROOT / "examples/hello/Containerfile").exists()
        else "fixture",
    }


async def run(count: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="shaman-builder-bench-") as tmp:
        work = Path(tmp)
        nats = NatsServer(work / "nats-home", free_port(), free_port())
        registry = Registry(work / "registry-home", free_port())
        nats.start()
        try:
            registry.start()
            try:
                ensure_busybox(registry.address, ContainerStorage(work / "seed"),
                               work / "seed.log")
                base = settings(nats.url, registry.address, work / "unused", "bench")
                bus = await connect_bus(base, "builder-bench")
                try:
                    await provision(bus.js)
                    platform = await Platform(bus).open()
                    one = await queued_builds(platform, nats.url, registry.address, work, 1, count)
                    two = await queued_builds(platform, nats.url, registry.address, work, 2, count)
                    hello = await cached_rebuild(platform, nats.url, registry.address, work)
                finally:
                    await bus.close()
            finally:
                registry.stop()
        finally:
            nats.stop()
            remove_working_containers(work)
    return {
        "benchmark": "builder",
        "queued_builds": count,
        "builds_per_minute_1_builder": round(count / one * 60, 2),
        "builds_per_minute_2_builders": round(count / two * 60, 2),
        "ratio_2_to_1": round(one / two, 2),
        "seconds_1_builder": round(one, 2),
        "seconds_2_builders": round(two, 2),
        **hello,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--builds", type=int, default=10)
    args = parser.parse_args(argv)
    from shared.logging import configure_logging

    configure_logging("warning", "console", "builder-bench")
    print(json.dumps(asyncio.run(run(args.builds))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
