"""Benchmark of the scheduler against nats-server and localnomad; prints one JSON object.

Run as `python -m bench.scheduler_bench`. Starts a nats-server and a localnomad
(simulated runtime) on free ports, runs the scheduler in-process, and measures:
- command → job submitted: a `DeployImage` published on the release work queue until
  its `rollout.submitted` event arrives (release created, app CAS, render, plan,
  register, deploy recorded), one app at a time (p50/p99 ms);
- the same for `--parallel` apps at once (deploys per second);
- a no-op reconcile pass (app + release + deploy read from KV, render, plan, job read;
  nothing registered) (p50/p99 ms);
- rendering one job (µs, median).
The machine is shared and noisy: compare medians and ratios within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from devstack.components.base import Component
from devstack.components.localnomad import LocalNomad
from devstack.components.nats import NatsServer
from devstack.podman import ContainerStorage
from devstack.ports import free_port
from services.scheduler.app import create_app
from services.scheduler.renderer import JobRenderer
from shared import subjects
from shared.bus import connect_bus
from shared.commands import DeployImage, encode_command
from shared.events import decode_event
from shared.logging import configure_logging
from shared.records import AppRecord, AppSpec, DeployRecord, ReleaseRecord
from shared.settings import CommonSettings, SchedulerSettings


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))], 3)


def render_us(samples: int = 2000) -> float:
    renderer = JobRenderer()
    app = AppRecord(spec=AppSpec(name="bench"))
    release = ReleaseRecord(app="bench", version=1, kind="deploy", description="d",
                            created_by="b", deploy_id="d1", image="r/bench@sha256:" + "0" * 64,
                            digest="sha256:" + "0" * 64, config={f"K{i}": "v" for i in range(20)})
    times = []
    for _ in range(samples):
        t = time.perf_counter()
        renderer.render(app, release)
        times.append((time.perf_counter() - t) * 1e6)
    return round(statistics.median(times), 1)


async def run(sequential: int, parallel: int, noop: int, nats_url: str,
              nomad_addr: str) -> dict[str, Any]:
    bus = await connect_bus(CommonSettings(nats_url=nats_url), "bench")  # type: ignore[call-arg]
    settings = SchedulerSettings(  # type: ignore[call-arg]
        nats_url=nats_url, nomad_addr=nomad_addr, http_addr="127.0.0.1:0",
        check_rollback_image=False, log_level="warning", reconcile_concurrency=8,
    )
    submitted: dict[str, asyncio.Future[float]] = {}

    async def on_event(msg: Any) -> None:
        event = decode_event(msg.data)
        fut = submitted.get(event.deploy_id)
        if type(event).__struct_config__.tag == "rollout.submitted" and fut and not fut.done():
            fut.set_result(time.perf_counter())

    sub = await bus.nc.subscribe(subjects.EVENTS_ALL, cb=on_event)
    try:
        async with create_app(settings) as scheduler:
            stores = scheduler.stores

            async def deploy(app: str) -> float:
                await stores.apps.create(app, AppRecord(spec=AppSpec(name=app)))
                deploy_id = f"{app}-d1"
                await stores.deploys.create(deploy_id, DeployRecord(id=deploy_id, app=app,
                                                                    kind="deploy"))
                submitted[deploy_id] = asyncio.get_running_loop().create_future()
                digest = "sha256:" + "1" * 64
                started = time.perf_counter()
                await bus.publish(
                    subjects.release_work_subject(app),
                    encode_command(DeployImage(deploy_id=deploy_id, app=app,
                                               image=f"r/{app}@{digest}", digest=digest,
                                               description="", created_by="bench")),
                    msg_id=f"{deploy_id}:release",
                )
                done = await asyncio.wait_for(submitted[deploy_id], 30)
                return (done - started) * 1000

            stamp = int(time.time())
            seq_ms = [await deploy(f"b{stamp}-s{i}") for i in range(sequential)]
            t0 = time.perf_counter()
            await asyncio.gather(*(deploy(f"b{stamp}-p{i}") for i in range(parallel)))
            par_s = time.perf_counter() - t0

            noop_ms = []
            for i in range(noop):
                app = f"b{stamp}-s{i % max(1, sequential)}"
                t = time.perf_counter()
                await scheduler.queue.run(app, timeout_s=30)
                noop_ms.append((time.perf_counter() - t) * 1000)
    finally:
        await sub.unsubscribe()
        await bus.close()
    return {
        "command_to_submitted_ms": {"p50": pct(seq_ms, 0.5), "p99": pct(seq_ms, 0.99),
                                    "n": len(seq_ms)},
        "parallel_deploys_per_s": round(parallel / par_s, 1) if par_s else None,
        "parallel_apps": parallel,
        "noop_reconcile_ms": {"p50": pct(noop_ms, 0.5), "p99": pct(noop_ms, 0.99),
                              "n": len(noop_ms)},
        "render_us_median": render_us(),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sequential", type=int, default=30)
    p.add_argument("--parallel", type=int, default=30)
    p.add_argument("--noop", type=int, default=100)
    p.add_argument("--quick", action="store_true", help="small counts, for CI")
    args = p.parse_args(argv)
    configure_logging("warning", "console", "scheduler-bench")
    if args.quick:
        args.sequential, args.parallel, args.noop = 10, 10, 30
    with tempfile.TemporaryDirectory(prefix="scheduler-bench-") as tmp:
        home = Path(tmp)
        nats = NatsServer(home / "nats", free_port(), free_port())
        nomad = LocalNomad(home / "localnomad", free_port(), runtime="simulated",
                           storage=ContainerStorage(home / "containers").prepare())
        started: list[Component] = []
        try:
            parts: tuple[Component, ...] = (nats, nomad)
            for part in parts:
                part.start()
                started.append(part)
            result = asyncio.run(run(args.sequential, args.parallel, args.noop, nats.url,
                                     nomad.addr))
        finally:
            for part in reversed(started):
                part.stop()
    print(json.dumps({"bench": "scheduler", **result}))


if __name__ == "__main__":
    main()
